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
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use dagg_model::spec::connector::{DatabaseConfig, Engine, SslMode};
use dagg_model::{Record, Value};
use futures_util::TryStreamExt;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode, PgTypeKind, PgValueFormat};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Column, ConnectOptions, Connection, Postgres, Row, TypeInfo, ValueRef};
use tokio::sync::mpsc;

use crate::secrets;
use crate::sql::{self, Backend, Dialect, Param, SqlSink, SqlSource, StreamMsg, db_error, float_value, rfc3339, rfc3339_naive};
use crate::{ConnectorError, SinkConnector, SourceConnector};

/// The PostgreSQL side of [`crate::sql`].
pub(crate) struct PgBackend {
    pool: PgPool,
    options: PgConnectOptions,
    target: String,
    timeout: Duration,
}

impl PgBackend {
    /// Builds the pool without connecting (the first statement connects).
    pub fn new(c: &DatabaseConfig, base_dir: &Path) -> Result<PgBackend, ConnectorError> {
        let target = sql::target_name(c, Engine::Postgres);
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(&c.host)
            .port(c.port.unwrap_or(Engine::Postgres.default_port()))
            .database(&c.database)
            .username(&c.username)
            .application_name("dagg")
            .ssl_mode(match c.ssl_mode {
                SslMode::Disable => PgSslMode::Disable,
                SslMode::Prefer => PgSslMode::Prefer,
                SslMode::Require => PgSslMode::Require,
                SslMode::VerifyCa => PgSslMode::VerifyCa,
                SslMode::VerifyFull => PgSslMode::VerifyFull,
            });
        if let Some(p) = &c.password {
            let pw = secrets::reveal(p).map_err(|e| ConnectorError::Config(format!("{target}: password: {e}")))?;
            options = options.password(&pw);
        }
        if let Some(ca) = &c.ssl_root_cert {
            options = options.ssl_root_cert(sql::resolve(base_dir, ca));
        }
        if let Some(schema) = &c.schema {
            // Unqualified names (and the marker table) resolve in the configured schema.
            options = options.options([("search_path", schema.as_str())]);
        }
        let timeout = Duration::from_secs(c.connect_timeout);
        let pool = PgPoolOptions::new()
            .max_connections(c.connection_pool_size + c.max_overflow)
            .min_connections(0)
            .acquire_timeout(timeout)
            .idle_timeout(Duration::from_secs(600))
            .connect_lazy_with(options.clone());
        Ok(PgBackend { pool, options, target, timeout })
    }
}

fn bind(mut q: Query<'_, Postgres, PgArguments>, params: Vec<Param>) -> Query<'_, Postgres, PgArguments> {
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

fn query(sql: String, params: Vec<Param>) -> Query<'static, Postgres, PgArguments> {
    bind(sqlx::query(AssertSqlSafe(sql)), params)
}

/// A row as a record, or why a column cannot be read.
fn decode_row(row: &PgRow) -> Result<Record, String> {
    let mut r = sql::record_with(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let v = decode(row, i).map_err(|e| format!("column `{}` ({}): {e}", col.name(), col.type_info().name()))?;
        r.push_unchecked(col.name(), v);
    }
    Ok(r)
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

#[async_trait::async_trait]
impl Backend for PgBackend {
    type Tx = sqlx::Transaction<'static, Postgres>;

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
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
            let row = sqlx::query("SELECT version()").fetch_one(&mut conn).await?;
            let v: String = row.try_get(0)?;
            let _ = conn.close().await;
            Ok::<_, sqlx::Error>(v)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(v)) => Ok(v),
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
                    // Do not drain the rest of the result into a pooled connection.
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
        // SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation),
        // and 42804 (a value of the wrong type for its column).
        match e {
            sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c == "42804"),
            _ => false,
        }
    }
}

/// The `postgresql` source.
pub fn source(c: &DatabaseConfig, base_dir: &Path) -> Result<Box<dyn SourceConnector>, ConnectorError> {
    Ok(Box::new(SqlSource::new(Arc::new(PgBackend::new(c, base_dir)?), c)))
}

/// The `postgresql` sink.
pub fn sink(c: &DatabaseConfig, base_dir: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError> {
    Ok(Box::new(SqlSink::new(Arc::new(PgBackend::new(c, base_dir)?), c)))
}

/// Connects, and checks the table or query.
pub async fn test_connection(c: &DatabaseConfig, base_dir: &Path) -> Result<String, ConnectorError> {
    sql::test_connection(&PgBackend::new(c, base_dir)?, c).await
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
