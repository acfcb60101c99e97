//! `connector_type: postgresql` — a table or a query as a source, a table as a
//! destination, over `sqlx` with a lazily connected pool.
//!
//! The source and the sink are the shared ones of [`crate::sql`] (its docs hold the
//! checkpoint and exactly-once contracts); this module connects, decodes rows and binds
//! parameters. Values: `int2/4/8` → integers; `float4/8` and `numeric` → floats (`numeric`
//! is rounded to the nearest 64-bit float); text types, `uuid` and enums → strings; `bool`;
//! `json`/`jsonb` → nested values; `timestamptz`/`timestamp` → RFC 3339 strings in UTC
//! (a `timestamp` without zone is taken as UTC); `date` → `YYYY-MM-DD`; `time` →
//! `HH:MM:SS[.f]`; `bytea` → base64; arrays of those → arrays; NULL → null. Other types
//! fail the read with the column's name: cast them in a `query` (`col::text`).
//!
//! Statements pass every value as text and `CAST` it to the column's type, so the server
//! parses a value exactly as it parses a literal (`'2025-01-15T10:30:00Z'` into a
//! `timestamptz`, `'{"a":1}'` into `jsonb`).

use std::path::Path;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use dagg_model::spec::connector::{DatabaseConfig, Engine, SslMode};
use dagg_model::Value;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow, PgTypeKind, PgValueFormat};
use sqlx::{AssertSqlSafe, Postgres, Row, TypeInfo, ValueRef};

use crate::sql::pooled::{Driver, bind_params};
use crate::sql::{self, Dialect, Param, float_value, rfc3339, rfc3339_naive};
use crate::{ConnectorError, SinkConnector, SourceConnector};

impl Driver for Postgres {
    const DIALECT: Dialect = Dialect::Postgres;
    const VERSION_SQL: &'static str = "SELECT version()";
    const VERSION_PREFIX: &'static str = "";

    fn options(c: &DatabaseConfig, base_dir: &Path) -> Result<(PgConnectOptions, String), ConnectorError> {
        let target = sql::target_name(c, Engine::Postgres);
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(&c.host)
            .port(c.port.unwrap_or(Engine::Postgres.default_port()))
            .database(&c.database)
            .username(&c.username)
            .application_name("dagg")
            .ssl_mode(match c.ssl_mode {
                SslMode::Disable => sqlx::postgres::PgSslMode::Disable,
                SslMode::Prefer => sqlx::postgres::PgSslMode::Prefer,
                SslMode::Require => sqlx::postgres::PgSslMode::Require,
                SslMode::VerifyCa => sqlx::postgres::PgSslMode::VerifyCa,
                SslMode::VerifyFull => sqlx::postgres::PgSslMode::VerifyFull,
            });
        if let Some(pw) = sql::pooled::password(c, &target)? {
            options = options.password(&pw);
        }
        if let Some(ca) = &c.ssl_root_cert {
            options = options.ssl_root_cert(sql::resolve(base_dir, ca));
        }
        if let Some(schema) = &c.schema {
            // Unqualified names (and the marker table) resolve in the configured schema.
            options = options.options([("search_path", schema.as_str())]);
        }
        Ok((options, target))
    }

    fn decode(row: &PgRow, i: usize) -> Result<Value, String> {
        decode(row, i)
    }

    fn is_data_error(e: &sqlx::Error) -> bool {
        // SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation),
        // and 42804 (a value of the wrong type for its column).
        match e {
            sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c == "42804"),
            _ => false,
        }
    }

    fn fetch<'c>(conn: &'c mut PgConnection, sql: String, params: Vec<Param>) -> BoxStream<'c, Result<PgRow, sqlx::Error>> {
        bind_params!(sqlx::query(AssertSqlSafe(sql)), params).fetch(conn)
    }

    fn execute<'c>(conn: &'c mut PgConnection, sql: String, params: Vec<Param>) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
        Box::pin(async move { Ok(bind_params!(sqlx::query(AssertSqlSafe(sql)), params).execute(conn).await?.rows_affected()) })
    }
}

type Res<T> = Result<T, String>;

fn get<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(row: &'r PgRow, i: usize) -> Res<T> {
    row.try_get::<T, _>(i).map_err(|e| e.to_string())
}

fn opt_array<T, F: Fn(T) -> Value>(v: Vec<Option<T>>, f: F) -> Value {
    Value::Array(v.into_iter().map(|x| x.map_or(Value::Null, &f)).collect())
}

fn decode(row: &PgRow, i: usize) -> Res<Value> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let info = raw.type_info().into_owned();
    Ok(match info.name() {
        "BOOL" => Value::Bool(get(row, i)?),
        "INT2" => Value::Int(get::<i16>(row, i)?.into()),
        "INT4" => Value::Int(get::<i32>(row, i)?.into()),
        "INT8" => Value::Int(get(row, i)?),
        "OID" => Value::Int(get::<sqlx::postgres::types::Oid>(row, i)?.0.into()),
        "FLOAT4" => float_value(get::<f32>(row, i)?.into()),
        "FLOAT8" => float_value(get(row, i)?),
        "NUMERIC" => {
            let bytes = raw.as_bytes().map_err(|e| e.to_string())?;
            match raw.format() {
                PgValueFormat::Binary => numeric(bytes)?,
                PgValueFormat::Text => float_value(std::str::from_utf8(bytes).map_err(|e| e.to_string())?.parse().map_err(|_| "not a number")?),
            }
        }
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" | "XML" => Value::from(get::<String>(row, i)?),
        "UUID" => {
            let bytes = raw.as_bytes().map_err(|e| e.to_string())?;
            match raw.format() {
                PgValueFormat::Binary if bytes.len() == 16 => Value::from(uuid::Uuid::from_slice(bytes).map_err(|e| e.to_string())?.hyphenated().to_string()),
                _ => Value::from(std::str::from_utf8(bytes).map_err(|e| e.to_string())?),
            }
        }
        "JSON" | "JSONB" => Value::from(&get::<serde_json::Value>(row, i)?),
        "TIMESTAMPTZ" => Value::from(rfc3339(get::<DateTime<Utc>>(row, i)?)),
        "TIMESTAMP" => Value::from(rfc3339_naive(get::<NaiveDateTime>(row, i)?)),
        "DATE" => Value::from(get::<NaiveDate>(row, i)?.format("%Y-%m-%d").to_string()),
        "TIME" => Value::from(get::<NaiveTime>(row, i)?.format("%H:%M:%S%.f").to_string()),
        "BYTEA" => Value::from(base64::engine::general_purpose::STANDARD.encode(get::<Vec<u8>>(row, i)?)),
        "BOOL[]" => opt_array(get::<Vec<Option<bool>>>(row, i)?, Value::Bool),
        "INT2[]" => opt_array(get::<Vec<Option<i16>>>(row, i)?, |x| Value::Int(x.into())),
        "INT4[]" => opt_array(get::<Vec<Option<i32>>>(row, i)?, |x| Value::Int(x.into())),
        "INT8[]" => opt_array(get::<Vec<Option<i64>>>(row, i)?, Value::Int),
        "FLOAT4[]" => opt_array(get::<Vec<Option<f32>>>(row, i)?, |x| float_value(x.into())),
        "FLOAT8[]" => opt_array(get::<Vec<Option<f64>>>(row, i)?, float_value),
        "TEXT[]" | "VARCHAR[]" | "BPCHAR[]" | "NAME[]" => opt_array(get::<Vec<Option<String>>>(row, i)?, Value::from),
        "JSON[]" | "JSONB[]" => opt_array(get::<Vec<Option<serde_json::Value>>>(row, i)?, |j| Value::from(&j)),
        "TIMESTAMPTZ[]" => opt_array(get::<Vec<Option<DateTime<Utc>>>>(row, i)?, |t| Value::from(rfc3339(t))),
        "TIMESTAMP[]" => opt_array(get::<Vec<Option<NaiveDateTime>>>(row, i)?, |t| Value::from(rfc3339_naive(t))),
        "DATE[]" => opt_array(get::<Vec<Option<NaiveDate>>>(row, i)?, |d| Value::from(d.format("%Y-%m-%d").to_string())),
        _ => {
            // Enums (and types whose wire form is their text) read as strings.
            let bytes = raw.as_bytes().map_err(|e| e.to_string())?;
            let textual = matches!(info.kind(), PgTypeKind::Enum(_)) || raw.format() == PgValueFormat::Text;
            match std::str::from_utf8(bytes) {
                Ok(s) if textual || !s.chars().any(char::is_control) => Value::from(s),
                _ => return Err("dagg cannot read this type; cast it in a `query` (for example `col::text`)".into()),
            }
        }
    })
}

/// PostgreSQL's binary `numeric` (base-10000 digits) as the nearest float.
fn numeric(b: &[u8]) -> Res<Value> {
    let word = |i: usize| -> Res<u16> { b.get(i..i + 2).map(|s| u16::from_be_bytes([s[0], s[1]])).ok_or_else(|| "truncated numeric".to_string()) };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i64;
    let sign = word(4)?;
    match sign {
        0xC000 => return Ok(Value::from("NaN")),
        0xD000 => return Ok(Value::from("Infinity")),
        0xF000 => return Ok(Value::from("-Infinity")),
        _ => {}
    }
    if ndigits == 0 {
        return Ok(Value::Float(0.0));
    }
    let mut text = String::with_capacity(ndigits * 4 + 8);
    if sign == 0x4000 {
        text.push('-');
    }
    for d in 0..ndigits {
        text.push_str(&format!("{:04}", word(8 + 2 * d)?));
    }
    let exp = 4 * (weight + 1 - ndigits as i64);
    text.push_str(&format!("e{exp}"));
    text.parse::<f64>().map(float_value).map_err(|e| e.to_string())
}

/// The `postgresql` source.
pub fn source(c: &DatabaseConfig, base_dir: &Path) -> Result<Box<dyn SourceConnector>, ConnectorError> {
    sql::pooled::source::<Postgres>(c, base_dir)
}

/// The `postgresql` sink.
pub fn sink(c: &DatabaseConfig, base_dir: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError> {
    sql::pooled::sink::<Postgres>(c, base_dir)
}

/// Connects, and checks the table or query.
pub async fn test_connection(c: &DatabaseConfig, base_dir: &Path) -> Result<String, ConnectorError> {
    sql::pooled::test_connection::<Postgres>(c, base_dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(ndigits: u16, weight: i16, sign: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, 0] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_decode_to_the_nearest_float() {
        assert_eq!(numeric(&num(2, 0, 0, &[1, 2345])).unwrap(), Value::Float(1.2345));
        assert_eq!(numeric(&num(1, 1, 0x4000, &[12])).unwrap(), Value::Float(-120000.0));
        assert_eq!(numeric(&num(1, -1, 0, &[5000])).unwrap(), Value::Float(0.5));
        assert_eq!(numeric(&num(0, 0, 0, &[])).unwrap(), Value::Float(0.0));
        assert_eq!(numeric(&num(0, 0, 0xC000, &[])).unwrap(), Value::from("NaN"));
    }
}
