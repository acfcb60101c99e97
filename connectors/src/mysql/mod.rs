//! `connector_type: mysql` — MySQL and MariaDB: a table or a query as a source, a table as
//! a destination, over `sqlx` with a lazily connected pool.
//!
//! The source and the sink are the shared ones of [`crate::sql`] (its docs hold the
//! checkpoint and exactly-once contracts); this module connects, decodes rows and binds
//! parameters. Sessions use UTC (`time_zone = '+00:00'`) and `utf8mb4`. Values: integer
//! types, `YEAR` and `BIT` → integers (an unsigned `BIGINT` above 2^63-1 → a float);
//! `FLOAT`/`DOUBLE`/`DECIMAL` → floats (`DECIMAL` rounded to the nearest 64-bit float);
//! `TINYINT(1)` → booleans; text types, `ENUM` and `SET` → strings; MySQL's `JSON` → nested
//! values (MariaDB's `JSON` is a text column and reads as a string); `DATETIME`/`TIMESTAMP`
//! → RFC 3339 strings in UTC; `DATE` → `YYYY-MM-DD`; `TIME` → `HH:MM:SS[.f]`; binary types →
//! base64 (and base64 strings written to them are decoded); NULL → null.

use std::path::Path;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use dagg_model::spec::connector::{DatabaseConfig, Engine, SslMode};
use dagg_model::Value;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlRow, MySqlSslMode};
use sqlx::{AssertSqlSafe, Row, TypeInfo, ValueRef};

use crate::sql::pooled::{Driver, bind_params};
use crate::sql::{self, Dialect, Param, float_value, rfc3339, rfc3339_naive};
use crate::{ConnectorError, SinkConnector, SourceConnector};

impl Driver for MySql {
    const DIALECT: Dialect = Dialect::Mysql;
    const VERSION_SQL: &'static str = "SELECT CAST(VERSION() AS CHAR)";
    const VERSION_PREFIX: &'static str = "MySQL ";

    fn options(c: &DatabaseConfig, base_dir: &Path) -> Result<(MySqlConnectOptions, String), ConnectorError> {
        let target = sql::target_name(c, Engine::Mysql);
        let mut options = MySqlConnectOptions::new()
            .host(&c.host)
            .port(c.port.unwrap_or(Engine::Mysql.default_port()))
            .database(&c.database)
            .username(&c.username)
            .charset("utf8mb4")
            .timezone(Some("+00:00".to_string()))
            .ssl_mode(match c.ssl_mode {
                SslMode::Disable => MySqlSslMode::Disabled,
                SslMode::Prefer => MySqlSslMode::Preferred,
                SslMode::Require => MySqlSslMode::Required,
                SslMode::VerifyCa => MySqlSslMode::VerifyCa,
                SslMode::VerifyFull => MySqlSslMode::VerifyIdentity,
            });
        if let Some(pw) = sql::pooled::password(c, &target)? {
            options = options.password(&pw);
        }
        if let Some(ca) = &c.ssl_root_cert {
            options = options.ssl_ca(sql::resolve(base_dir, ca));
        }
        Ok((options, target))
    }

    fn decode(row: &MySqlRow, i: usize) -> Result<Value, String> {
        decode(row, i)
    }

    fn is_data_error(e: &sqlx::Error) -> bool {
        let sqlx::Error::Database(d) = e else { return false };
        if d.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")) {
            return true;
        }
        // Errors MySQL files under the general SQLSTATE HY000 that are about a row's data.
        d.try_downcast_ref::<MySqlDatabaseError>().is_some_and(|m| {
            matches!(m.number(), 1048 | 1062 | 1264 | 1265 | 1292 | 1364 | 1366 | 1406 | 1451 | 1452 | 3140 | 3819 | 4025)
        })
    }

    fn fetch<'c>(conn: &'c mut MySqlConnection, sql: String, params: Vec<Param>) -> BoxStream<'c, Result<MySqlRow, sqlx::Error>> {
        bind_params!(sqlx::query(AssertSqlSafe(sql)), params).fetch(conn)
    }

    fn execute<'c>(conn: &'c mut MySqlConnection, sql: String, params: Vec<Param>) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
        Box::pin(async move { Ok(bind_params!(sqlx::query(AssertSqlSafe(sql)), params).execute(conn).await?.rows_affected()) })
    }
}

type Res<T> = Result<T, String>;

fn get<'r, T: sqlx::Decode<'r, MySql> + sqlx::Type<MySql>>(row: &'r MySqlRow, i: usize) -> Res<T> {
    row.try_get::<T, _>(i).map_err(|e| e.to_string())
}

fn raw_bytes(row: &MySqlRow, i: usize) -> Res<Vec<u8>> {
    row.try_get_unchecked::<Vec<u8>, _>(i).map_err(|e| e.to_string())
}

fn decode(row: &MySqlRow, i: usize) -> Res<Value> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let name = raw.type_info().name().to_string();
    Ok(match name.as_str() {
        "BOOLEAN" => Value::Bool(get(row, i)?),
        "TINYINT" | "SMALLINT" | "INT" | "MEDIUMINT" | "BIGINT" => Value::Int(get(row, i)?),
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "INT UNSIGNED" | "MEDIUMINT UNSIGNED" | "BIGINT UNSIGNED" | "YEAR" | "BIT" => {
            let u: u64 = get(row, i)?;
            i64::try_from(u).map(Value::Int).unwrap_or(Value::Float(u as f64))
        }
        "FLOAT" => float_value(get::<f32>(row, i)?.into()),
        "DOUBLE" => float_value(get(row, i)?),
        "DECIMAL" => {
            let text = String::from_utf8(raw_bytes(row, i)?).map_err(|e| e.to_string())?;
            float_value(text.trim().parse().map_err(|_| format!("`{text}` is not a number"))?)
        }
        "DATETIME" => Value::from(rfc3339_naive(get::<NaiveDateTime>(row, i)?)),
        // The session is in UTC, so a TIMESTAMP comes as UTC.
        "TIMESTAMP" => Value::from(rfc3339(get::<DateTime<Utc>>(row, i)?)),
        "DATE" => Value::from(get::<NaiveDate>(row, i)?.format("%Y-%m-%d").to_string()),
        "TIME" => Value::from(get::<NaiveTime>(row, i)?.format("%H:%M:%S%.f").to_string()),
        "JSON" => {
            let bytes = raw_bytes(row, i)?;
            Value::from(&serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| format!("invalid JSON: {e}"))?)
        }
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            Value::from(String::from_utf8(raw_bytes(row, i)?).map_err(|e| e.to_string())?)
        }
        // A text column with a `_bin` collation is flagged binary too: the collation tells.
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" | "GEOMETRY" => match get::<String>(row, i) {
            Ok(s) => Value::from(s),
            Err(_) => Value::from(base64::engine::general_purpose::STANDARD.encode(raw_bytes(row, i)?)),
        },
        "NULL" => Value::Null,
        other => return Err(format!("dagg cannot read type {other}; cast it in a `query` (for example `CAST(col AS CHAR)`)")),
    })
}

/// The `mysql` source.
pub fn source(c: &DatabaseConfig, base_dir: &Path) -> Result<Box<dyn SourceConnector>, ConnectorError> {
    sql::pooled::source::<MySql>(c, base_dir)
}

/// The `mysql` sink.
pub fn sink(c: &DatabaseConfig, base_dir: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError> {
    sql::pooled::sink::<MySql>(c, base_dir)
}

/// Connects, and checks the table or query.
pub async fn test_connection(c: &DatabaseConfig, base_dir: &Path) -> Result<String, ConnectorError> {
    sql::pooled::test_connection::<MySql>(c, base_dir).await
}
