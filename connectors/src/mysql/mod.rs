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
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use dagg_model::spec::connector::{DatabaseConfig, Engine, SslMode};
use dagg_model::{Record, Value};
use futures_util::TryStreamExt;
use sqlx::mysql::{MySql, MySqlArguments, MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlRow, MySqlSslMode};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Column, ConnectOptions, Connection, Row, TypeInfo, ValueRef};
use tokio::sync::mpsc;

use crate::secrets;
use crate::sql::{self, Backend, Dialect, Param, SqlSink, SqlSource, StreamMsg, db_error, float_value, rfc3339, rfc3339_naive};
use crate::{ConnectorError, SinkConnector, SourceConnector};

/// The MySQL side of [`crate::sql`].
pub(crate) struct MyBackend {
    pool: MySqlPool,
    options: MySqlConnectOptions,
    target: String,
    timeout: Duration,
}

impl MyBackend {
    /// Builds the pool without connecting (the first statement connects).
    pub fn new(c: &DatabaseConfig, base_dir: &Path) -> Result<MyBackend, ConnectorError> {
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
        if let Some(p) = &c.password {
            let pw = secrets::reveal(p).map_err(|e| ConnectorError::Config(format!("{target}: password: {e}")))?;
            options = options.password(&pw);
        }
        if let Some(ca) = &c.ssl_root_cert {
            options = options.ssl_ca(sql::resolve(base_dir, ca));
        }
        let timeout = Duration::from_secs(c.connect_timeout);
        let pool = MySqlPoolOptions::new()
            .max_connections(c.connection_pool_size + c.max_overflow)
            .min_connections(0)
            .acquire_timeout(timeout)
            .idle_timeout(Duration::from_secs(600))
            .connect_lazy_with(options.clone());
        Ok(MyBackend { pool, options, target, timeout })
    }
}

fn bind(mut q: Query<'_, MySql, MySqlArguments>, params: Vec<Param>) -> Query<'_, MySql, MySqlArguments> {
    for p in params {
        q = match p {
            Param::Null => q.bind(None::<String>),
            Param::Bool(b) => q.bind(b),
            Param::Int(i) => q.bind(i),
            Param::Float(f) => q.bind(f),
            Param::Text(s) => q.bind(s),
            Param::Timestamp(t) => q.bind(t),
            Param::Bytes(b) => q.bind(b),
        };
    }
    q
}

fn query(sql: String, params: Vec<Param>) -> Query<'static, MySql, MySqlArguments> {
    bind(sqlx::query(AssertSqlSafe(sql)), params)
}

fn decode_row(row: &MySqlRow) -> Result<Record, String> {
    let mut r = sql::record_with(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let v = decode(row, i).map_err(|e| format!("column `{}` ({}): {e}", col.name(), col.type_info().name()))?;
        r.push_unchecked(col.name(), v);
    }
    Ok(r)
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

#[async_trait::async_trait]
impl Backend for MyBackend {
    type Tx = sqlx::Transaction<'static, MySql>;

    fn dialect(&self) -> Dialect {
        Dialect::Mysql
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn connect_timeout(&self) -> Duration {
        self.timeout
    }

    async fn probe(&self) -> Result<String, ConnectorError> {
        let attempt = async {
            let mut conn = self.options.connect().await?;
            let row = sqlx::query("SELECT CAST(VERSION() AS CHAR)").fetch_one(&mut conn).await?;
            let v: String = row.try_get(0)?;
            let _ = conn.close().await;
            Ok::<_, sqlx::Error>(v)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(v)) => Ok(format!("MySQL {v}")),
            Ok(Err(e)) => Err(ConnectorError::Connect { target: self.target.clone(), reason: e.to_string() }),
            Err(_) => Err(ConnectorError::Timeout {
                target: self.target.clone(),
                seconds: self.timeout.as_secs(),
                reason: "the server did not complete the connection".into(),
            }),
        }
    }

    fn stream(&self, sql: String, params: Vec<Param>, cursor_field: Option<String>, size: usize, out: mpsc::Sender<StreamMsg>) {
        let pool = self.pool.clone();
        let target = self.target.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            let result = async {
                let mut conn = pool.acquire().await.map_err(|e| db_error(&target, timeout, e))?;
                let mut abandoned = false;
                {
                    let mut rows = query(sql, params).fetch(&mut *conn);
                    let mut chunk = Vec::with_capacity(size);
                    let mut cursor_type = None;
                    let mut first = true;
                    while let Some(row) = rows.try_next().await.map_err(|e| db_error(&target, timeout, e))? {
                        if first {
                            first = false;
                            cursor_type = cursor_field.as_deref().and_then(|f| row.try_column(f).ok()).map(|c| c.type_info().name().to_string());
                        }
                        chunk.push(decode_row(&row).map_err(|reason| ConnectorError::Query { target: target.clone(), reason })?);
                        if chunk.len() >= size {
                            let records = std::mem::replace(&mut chunk, Vec::with_capacity(size));
                            if out.send(StreamMsg::Rows { records, cursor_type: cursor_type.take() }).await.is_err() {
                                abandoned = true;
                                break;
                            }
                        }
                    }
                    if !abandoned && !chunk.is_empty() && out.send(StreamMsg::Rows { records: chunk, cursor_type }).await.is_err() {
                        abandoned = true;
                    }
                }
                if abandoned {
                    conn.close_on_drop();
                }
                Ok::<bool, ConnectorError>(!abandoned)
            }
            .await;
            match result {
                Ok(true) => {
                    let _ = out.send(StreamMsg::End).await;
                }
                Ok(false) => {}
                Err(e) => {
                    let _ = out.send(StreamMsg::Failed(e)).await;
                }
            }
        });
    }

    async fn fetch_all(&self, sql: &str, params: Vec<Param>) -> Result<Vec<Record>, sqlx::Error> {
        let rows = query(sql.to_string(), params).fetch_all(&self.pool).await?;
        rows.iter().map(|r| decode_row(r).map_err(|e| sqlx::Error::Decode(e.into()))).collect()
    }

    async fn begin(&self) -> Result<Self::Tx, sqlx::Error> {
        self.pool.begin().await
    }

    async fn execute(&self, tx: &mut Self::Tx, sql: &str, params: Vec<Param>) -> Result<u64, sqlx::Error> {
        Ok(query(sql.to_string(), params).execute(&mut **tx).await?.rows_affected())
    }


    async fn commit(&self, tx: Self::Tx) -> Result<(), sqlx::Error> {
        tx.commit().await
    }

    async fn rollback(&self, tx: Self::Tx) -> Result<(), sqlx::Error> {
        tx.rollback().await
    }

    fn is_data_error(&self, e: &sqlx::Error) -> bool {
        let sqlx::Error::Database(d) = e else { return false };
        if d.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")) {
            return true;
        }
        // Errors MySQL files under the general SQLSTATE HY000 that are about a row's data.
        d.try_downcast_ref::<MySqlDatabaseError>().is_some_and(|m| {
            matches!(m.number(), 1048 | 1062 | 1264 | 1265 | 1292 | 1364 | 1366 | 1406 | 1451 | 1452 | 3140 | 3819 | 4025)
        })
    }
}

/// The `mysql` source.
pub fn source(c: &DatabaseConfig, base_dir: &Path) -> Result<Box<dyn SourceConnector>, ConnectorError> {
    Ok(Box::new(SqlSource::new(Arc::new(MyBackend::new(c, base_dir)?), c)))
}

/// The `mysql` sink.
pub fn sink(c: &DatabaseConfig, base_dir: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError> {
    Ok(Box::new(SqlSink::new(Arc::new(MyBackend::new(c, base_dir)?), c)))
}

/// Connects, and checks the table or query.
pub async fn test_connection(c: &DatabaseConfig, base_dir: &Path) -> Result<String, ConnectorError> {
    sql::test_connection(&MyBackend::new(c, base_dir)?, c).await
}
