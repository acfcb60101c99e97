//! What the `postgresql` and `mysql` connectors share: the SQL they generate, the mapping
//! of record values to statement parameters, the streaming source and the transactional
//! sink, and the pooled [`Backend`] ([`pooled::Pooled`]). Each engine's folder supplies a
//! [`pooled::Driver`]: its connect options, how rows decode into records, which errors are
//! about the data.
//!
//! # Source: positions and checkpoints
//! Rows are streamed (the engine's cursor over the wire, a bounded channel of chunks to the
//! source), never collected. A record's [`Position`](dagg_model::Position) is `seq` = its
//! 1-based row number in the run. The checkpoint is
//! `{"version": 1, "rows", "done", "cursor", "cursor_type", "seen"}`:
//! - without `incremental`, a resume skips `rows` rows of the same statement (a `table` is
//!   read `ORDER BY` its primary key so that the order is stable; a `query` should have an
//!   `ORDER BY` of its own). A checkpoint with `done` starts the next run from the top.
//! - with `incremental`, rows are read `ORDER BY` the cursor column (then the primary key)
//!   and `cursor` is the last one's value: a resume reads `cursor >= value` and skips the
//!   `seen` rows that had that value; after a `done` checkpoint (the next run) it reads
//!   `cursor > value`. Rows whose cursor is NULL are never read.
//!
//! # Sink: exactly once
//! Rows of an epoch (the writes between two [`pre_commit`](crate::SinkConnector::pre_commit)s)
//! go into one open transaction. `pre_commit(e)` commits it together with a row of
//! `_dagg_sink_epochs` (`sink_id`, `epoch`, `records`, `refused`) saying that epoch `e`
//! holds the output of `records` input records. After a crash the runtime calls
//! `recover(token, c)` with its last checkpoint `c` and replays the input from there; if the
//! marker says epoch `c + 1` was committed (the crash came after the commit, before the
//! checkpoint was recorded), the first `records` replayed records are skipped — they are in
//! the table — and the refusals recorded for them are returned again, so the dead letter
//! gets them once too. Skipping counts records, not batches, so it is exact however the
//! replay's barriers fall. `commit()` (the end of a run) commits and deletes the marker.
//! `sink_id` comes from the config key, else a fresh id per run (`<table>-<uuid>`) that the
//! checkpoint token carries into the resumed run.

pub(crate) mod pooled;
mod sink;
mod source;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use dagg_model::spec::connector::{DatabaseConfig, Engine};
use dagg_model::{Map, Record, Value};

pub(crate) use sink::SqlSink;
pub(crate) use source::SqlSource;

use crate::ConnectorError;

/// A statement parameter. PostgreSQL statements take every value as text and `CAST` it to
/// the column's type (so the server parses it exactly as it parses literals); MySQL's take
/// typed values and convert them itself.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Timestamp(NaiveDateTime),
    Bytes(Vec<u8>),
}

/// What a streaming query sends to its source.
pub(crate) enum StreamMsg {
    /// Rows in order; `cursor_type` (the cursor column's type name) rides on the first.
    Rows { records: Vec<Record>, cursor_type: Option<String> },
    End,
    Failed(ConnectorError),
}

/// A column of a table: its name and its type as the server names it.
#[derive(Clone, Debug)]
pub(crate) struct Column {
    pub name: String,
    pub type_name: String,
}

/// One engine's access: a lazily connected pool, row decoding, parameter binding.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// An open transaction on one connection.
    type Tx: Send + 'static;

    fn dialect(&self) -> Dialect;
    /// `postgresql://user@host:port/database`: how messages name the server.
    fn target(&self) -> &str;
    fn connect_timeout(&self) -> Duration;
    /// Opens one connection directly (not through the pool, whose retries hide the cause),
    /// within the connect timeout, and returns the server's version.
    async fn probe(&self) -> Result<String, ConnectorError>;
    /// Runs `sql` on a pooled connection of its own task and sends its rows in chunks of
    /// `size`, then `End` (or `Failed`). Stops when `out` is closed.
    fn stream(&self, sql: String, params: Vec<Param>, cursor_field: Option<String>, size: usize, out: tokio::sync::mpsc::Sender<StreamMsg>);
    /// A small query's rows, on a pooled connection.
    async fn fetch_all(&self, sql: &str, params: Vec<Param>) -> Result<Vec<Record>, sqlx::Error>;
    async fn begin(&self) -> Result<Self::Tx, sqlx::Error>;
    async fn execute(&self, tx: &mut Self::Tx, sql: &str, params: Vec<Param>) -> Result<u64, sqlx::Error>;
    async fn commit(&self, tx: Self::Tx) -> Result<(), sqlx::Error>;
    async fn rollback(&self, tx: Self::Tx) -> Result<(), sqlx::Error>;
    /// Whether a database error is about the data of the rows (a refusal), rather than the
    /// connection, the schema or the server (a failure).
    fn is_data_error(&self, e: &sqlx::Error) -> bool;
}

/// How an engine spells SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Mysql,
}

/// The name of the commit-marker table.
pub(crate) const EPOCH_TABLE: &str = "_dagg_sink_epochs";

impl Dialect {
    pub fn engine(self) -> Engine {
        match self {
            Dialect::Postgres => Engine::Postgres,
            Dialect::Mysql => Engine::Mysql,
        }
    }

    /// An identifier, quoted so any name works and none can inject SQL.
    pub fn quote(self, ident: &str) -> String {
        match self {
            Dialect::Postgres => format!("\"{}\"", ident.replace('"', "\"\"")),
            Dialect::Mysql => format!("`{}`", ident.replace('`', "``")),
        }
    }

    pub fn table_ref(self, qualifier: Option<&str>, name: &str) -> String {
        match qualifier {
            Some(q) => format!("{}.{}", self.quote(q), self.quote(name)),
            None => self.quote(name),
        }
    }

    /// The `n`th (1-based) parameter's placeholder.
    pub fn ph(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Mysql => "?".to_string(),
        }
    }

    /// A placeholder for a value going into a column of `type_name`.
    pub fn value_ph(self, n: usize, type_name: &str) -> String {
        match self {
            // `character` and `bit` without a length mean length 1, and an explicit cast
            // truncates silently: cast to the unbounded type and let the column check.
            Dialect::Postgres => match type_name {
                "character" => format!("CAST(${n} AS bpchar)"),
                "bit" => format!("CAST(${n} AS varbit)"),
                _ => format!("CAST(${n} AS {type_name})"),
            },
            Dialect::Mysql => "?".to_string(),
        }
    }

    /// `OFFSET n` (MySQL needs a `LIMIT` before it).
    pub fn offset(self, n: u64) -> String {
        match self {
            Dialect::Postgres => format!(" OFFSET {n}"),
            Dialect::Mysql => format!(" LIMIT 18446744073709551615 OFFSET {n}"),
        }
    }

    /// Columns of a table, in order: `name`, `type` (the qualifier and name as `$1`, `$2`;
    /// a NULL qualifier means the current schema or database).
    pub fn columns_sql(self) -> &'static str {
        match self {
            Dialect::Postgres => {
                "SELECT a.attname::text AS name, format_type(a.atttypid, NULL) AS type \
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = COALESCE($1, current_schema()) AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum"
            }
            Dialect::Mysql => {
                "SELECT CAST(COLUMN_NAME AS CHAR) AS name, CAST(DATA_TYPE AS CHAR) AS type FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION"
            }
        }
    }

    /// Unique indexes of a table (the primary key first): `idx`, `name`, `pk`.
    pub fn unique_keys_sql(self) -> &'static str {
        match self {
            Dialect::Postgres => {
                "SELECT i.indexrelid::oid::bigint AS idx, a.attname::text AS name, i.indisprimary AS pk \
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) \
                 WHERE n.nspname = COALESCE($1, current_schema()) AND c.relname = $2 AND i.indisunique AND i.indpred IS NULL \
                 ORDER BY i.indisprimary DESC, i.indexrelid, array_position(i.indkey::int2[], a.attnum)"
            }
            Dialect::Mysql => {
                "SELECT CAST(INDEX_NAME AS CHAR) AS idx, CAST(COLUMN_NAME AS CHAR) AS name, INDEX_NAME = 'PRIMARY' AS pk \
                 FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
                 ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX"
            }
        }
    }

    pub fn create_epoch_table_sql(self, qualifier: Option<&str>) -> String {
        let t = self.table_ref(qualifier, EPOCH_TABLE);
        match self {
            Dialect::Postgres => format!(
                "CREATE TABLE IF NOT EXISTS {t} (sink_id TEXT PRIMARY KEY, epoch BIGINT NOT NULL, records BIGINT NOT NULL, \
                 refused TEXT, updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            ),
            Dialect::Mysql => format!(
                "CREATE TABLE IF NOT EXISTS {t} (sink_id VARCHAR(255) NOT NULL PRIMARY KEY, epoch BIGINT NOT NULL, \
                 records BIGINT NOT NULL, refused LONGTEXT, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
            ),
        }
    }

    pub fn read_epoch_sql(self, qualifier: Option<&str>) -> String {
        format!("SELECT epoch, records, refused FROM {} WHERE sink_id = {}", self.table_ref(qualifier, EPOCH_TABLE), self.ph(1))
    }

    pub fn write_epoch_sql(self, qualifier: Option<&str>) -> String {
        let t = self.table_ref(qualifier, EPOCH_TABLE);
        match self {
            Dialect::Postgres => format!(
                "INSERT INTO {t} (sink_id, epoch, records, refused, updated_at) VALUES ($1, $2, $3, $4, now()) \
                 ON CONFLICT (sink_id) DO UPDATE SET epoch = EXCLUDED.epoch, records = EXCLUDED.records, \
                 refused = EXCLUDED.refused, updated_at = now()"
            ),
            Dialect::Mysql => format!(
                "INSERT INTO {t} (sink_id, epoch, records, refused, updated_at) VALUES (?, ?, ?, ?, CURRENT_TIMESTAMP(6)) \
                 ON DUPLICATE KEY UPDATE epoch = VALUES(epoch), records = VALUES(records), refused = VALUES(refused), \
                 updated_at = VALUES(updated_at)"
            ),
        }
    }

    pub fn delete_epoch_sql(self, qualifier: Option<&str>) -> String {
        format!("DELETE FROM {} WHERE sink_id = {}", self.table_ref(qualifier, EPOCH_TABLE), self.ph(1))
    }

    /// The parameter for a record value going into a column of `type_name` (the server
    /// says so when the value does not fit).
    pub fn param(self, v: &Value, type_name: &str) -> Param {
        let t = type_name.to_ascii_lowercase();
        match self {
            Dialect::Postgres => match v {
                Value::Null => Param::Null,
                // Binary columns read as base64, and write from it.
                Value::String(s) if t == "bytea" => match B64.decode(s.as_bytes()) {
                    Ok(bytes) => Param::Text(format!("\\x{}", hex::encode(bytes))),
                    Err(_) => Param::Text(s.to_string()),
                },
                Value::String(s) => Param::Text(s.to_string()),
                Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 && is_pg_integer(&t) => Param::Text(format!("{}", *f as i64)),
                Value::Array(items) if t.ends_with("[]") => Param::Text(pg_array_literal(items)),
                other => Param::Text(other.to_text()),
            },
            Dialect::Mysql => match v {
                Value::Null => Param::Null,
                Value::Bool(b) => Param::Bool(*b),
                Value::Int(i) => Param::Int(*i),
                Value::Float(f) => Param::Float(*f),
                Value::String(s) if t == "datetime" || t == "timestamp" => match DateTime::parse_from_rfc3339(s) {
                    Ok(ts) => Param::Timestamp(ts.naive_utc()),
                    Err(_) => Param::Text(s.to_string()),
                },
                Value::String(s) if t.ends_with("binary") || t.ends_with("blob") => match B64.decode(s.as_bytes()) {
                    Ok(bytes) => Param::Bytes(bytes),
                    Err(_) => Param::Text(s.to_string()),
                },
                Value::String(s) => Param::Text(s.to_string()),
                other => Param::Text(other.to_json()),
            },
        }
    }
}

fn is_pg_integer(t: &str) -> bool {
    matches!(t, "smallint" | "integer" | "bigint" | "int2" | "int4" | "int8")
}

/// A PostgreSQL array literal (`{1,"a b",NULL,{2,3}}`) for an array column.
fn pg_array_literal(items: &[Value]) -> String {
    let mut out = String::from("{");
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match v {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => out.push_str(&pg_array_literal(inner)),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => out.push_str(&v.to_text()),
            other => {
                out.push('"');
                for c in other.to_text().chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    out
}

/// A timestamp as dagg writes it: RFC 3339 in UTC, with as many fraction digits as needed.
pub(crate) fn rfc3339(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A timestamp without a zone, taken as UTC.
pub(crate) fn rfc3339_naive(ts: NaiveDateTime) -> String {
    rfc3339(ts.and_utc())
}

/// A float as a record value: NaN and infinities, which JSON cannot hold, become strings.
pub(crate) fn float_value(f: f64) -> Value {
    if f.is_finite() { Value::Float(f) } else { Value::from(f.to_string()) }
}

/// A configured file path (`ssl_root_cert`), resolved against the pipeline's folder.
pub(crate) fn resolve(base_dir: &std::path::Path, path: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(path);
    if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) }
}

/// How messages name a server: `postgresql://user@host:port/database` (never a password).
pub(crate) fn target_name(c: &DatabaseConfig, engine: Engine) -> String {
    format!("{}://{}@{}:{}/{}", engine.connector_type(), c.username, c.host, c.port.unwrap_or(engine.default_port()), c.database)
}

/// A `sqlx` error as a connector error naming the server.
pub(crate) fn db_error(target: &str, timeout: Duration, e: sqlx::Error) -> ConnectorError {
    match e {
        sqlx::Error::PoolTimedOut => ConnectorError::Timeout {
            target: target.to_string(),
            seconds: timeout.as_secs(),
            reason: "no connection could be opened (is the server up and reachable?)".into(),
        },
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed | sqlx::Error::Configuration(_) | sqlx::Error::Protocol(_) => {
            ConnectorError::Connect { target: target.to_string(), reason: e.to_string() }
        }
        other => ConnectorError::Query { target: target.to_string(), reason: other.to_string() },
    }
}

/// Reads a text column of an introspection row.
pub(crate) fn text_field(r: &Record, key: &str) -> String {
    match r.get(key) {
        Some(Value::String(s)) => s.to_string(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_text(),
    }
}

/// The columns of a table (empty when it does not exist).
pub(crate) async fn table_columns<B: Backend>(b: &B, qualifier: Option<&str>, table: &str) -> Result<Vec<Column>, ConnectorError> {
    let d = b.dialect();
    let params = vec![qualifier.map_or(Param::Null, |q| Param::Text(q.into())), Param::Text(table.into())];
    let rows = b.fetch_all(d.columns_sql(), params).await.map_err(|e| db_error(b.target(), b.connect_timeout(), e))?;
    Ok(rows.iter().map(|r| Column { name: text_field(r, "name"), type_name: text_field(r, "type") }).collect())
}

/// The unique keys of a table, the primary key first when there is one (its columns in
/// index order), and whether the first is the primary key.
pub(crate) async fn unique_keys<B: Backend>(b: &B, qualifier: Option<&str>, table: &str) -> Result<(Vec<Vec<String>>, bool), ConnectorError> {
    let d = b.dialect();
    let params = vec![qualifier.map_or(Param::Null, |q| Param::Text(q.into())), Param::Text(table.into())];
    let rows = b.fetch_all(d.unique_keys_sql(), params).await.map_err(|e| db_error(b.target(), b.connect_timeout(), e))?;
    let mut keys: Vec<(String, Vec<String>)> = Vec::new();
    let mut first_is_pk = false;
    for (i, r) in rows.iter().enumerate() {
        let idx = text_field(r, "idx");
        if i == 0 {
            first_is_pk = matches!(r.get("pk"), Some(Value::Bool(true)) | Some(Value::Int(1)));
        }
        match keys.last_mut() {
            Some((last, cols)) if *last == idx => cols.push(text_field(r, "name")),
            _ => keys.push((idx, vec![text_field(r, "name")])),
        }
    }
    Ok((keys.into_iter().map(|(_, c)| c).collect(), first_is_pk))
}

/// A table's qualifier and name as configured, and how messages show it.
pub(crate) fn table_label(q: Option<&str>, name: &str) -> String {
    match q {
        Some(q) => format!("{q}.{name}"),
        None => name.to_string(),
    }
}

/// Reads the `ok` message of a probe: the server's version's first words.
pub(crate) fn short_version(v: &str) -> String {
    v.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// What [`crate::test_connection`] checks for a database connector: the server answers and
/// the table (or query) is there.
pub(crate) async fn test_connection<B: Backend>(b: &B, c: &DatabaseConfig) -> Result<String, ConnectorError> {
    let version = b.probe().await?;
    let mut msg = format!("connected to {} ({})", b.target(), short_version(&version));
    if let Some((q, name)) = c.table_parts() {
        let cols = table_columns(b, q, name).await?;
        if cols.is_empty() {
            return Err(ConnectorError::Config(format!("{}: table `{}` does not exist", b.target(), table_label(q, name))));
        }
        msg.push_str(&format!("; table `{}` has {} columns", table_label(q, name), cols.len()));
        if let Some(keys) = c.key_fields.as_deref() {
            let (uniques, _) = unique_keys(b, q, name).await?;
            sink::check_key_fields(keys, &uniques, &table_label(q, name), b.target())?;
        }
    }
    if let Some(query) = &c.query {
        let sql = format!("SELECT * FROM ({}) AS _dagg_src LIMIT 0", trim_query(query));
        b.fetch_all(&sql, source::query_params(&c.query_params)).await.map_err(|e| db_error(b.target(), b.connect_timeout(), e))?;
        msg.push_str("; the query runs");
    }
    Ok(msg)
}

/// A query without the trailing `;` and white space, so it can stand in a subquery.
pub(crate) fn trim_query(q: &str) -> &str {
    q.trim().trim_end_matches(';').trim_end()
}

/// An empty record with room for `n` fields.
pub(crate) fn record_with(n: usize) -> Record {
    Map::with_capacity(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_defeats_injection() {
        assert_eq!(Dialect::Postgres.quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(Dialect::Mysql.quote("a`b"), "`a``b`");
        assert_eq!(Dialect::Postgres.table_ref(Some("s"), "t"), "\"s\".\"t\"");
    }

    #[test]
    fn postgres_params_are_text_cast_by_the_server() {
        let d = Dialect::Postgres;
        assert_eq!(d.param(&Value::Float(3.0), "integer"), Param::Text("3".into()));
        assert_eq!(d.param(&Value::Float(3.5), "numeric"), Param::Text("3.5".into()));
        assert_eq!(d.param(&Value::Bool(true), "boolean"), Param::Text("true".into()));
        let arr = Value::Array(vec![Value::Int(1), Value::from("a \"b\""), Value::Null]);
        assert_eq!(d.param(&arr, "text[]"), Param::Text("{1,\"a \\\"b\\\"\",NULL}".into()));
        assert_eq!(d.param(&arr, "jsonb"), Param::Text("[1,\"a \\\"b\\\"\",null]".into()));
        assert_eq!(d.value_ph(2, "integer"), "CAST($2 AS integer)");
    }

    #[test]
    fn mysql_params_are_typed() {
        let d = Dialect::Mysql;
        assert_eq!(d.param(&Value::Int(3), "int"), Param::Int(3));
        let ts = d.param(&Value::from("2025-01-15T10:30:00.5+01:00"), "datetime");
        assert_eq!(ts, Param::Timestamp(chrono::NaiveDate::from_ymd_opt(2025, 1, 15).unwrap().and_hms_milli_opt(9, 30, 0, 500).unwrap()));
        assert_eq!(d.param(&Value::from("x"), "datetime"), Param::Text("x".into()));
    }

    #[test]
    fn timestamps_keep_their_precision() {
        let ts = chrono::NaiveDate::from_ymd_opt(2025, 1, 15).unwrap().and_hms_micro_opt(10, 30, 0, 123456).unwrap();
        assert_eq!(rfc3339_naive(ts), "2025-01-15T10:30:00.123456Z");
        let whole = chrono::NaiveDate::from_ymd_opt(2025, 1, 15).unwrap().and_hms_opt(10, 30, 0).unwrap();
        assert_eq!(rfc3339_naive(whole), "2025-01-15T10:30:00Z");
    }
}
