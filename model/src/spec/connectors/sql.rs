//! What `postgresql` and `mysql` share: [`DatabaseConfig`] and its checks, which differ by
//! [`Engine`] only where the engines do.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::SpecErrors;
use crate::spec::connector::Role;
use crate::spec::connectors::ConnectorConfig;
use crate::spec::connectors::common::{Secret, default_connect_timeout, word_enum};
use crate::spec::reader::parse_json;

word_enum! {
    /// TLS to a database, as libpq names the modes.
    SslMode {
        /// Never TLS.
        Disable = "disable" | "disabled",
        /// TLS when the server offers it (the default), unverified.
        Prefer = "prefer" | "preferred",
        /// TLS or fail; the certificate is not verified.
        Require = "require" | "required",
        /// TLS with a certificate signed by a trusted CA (`ssl_root_cert`, else the system's).
        VerifyCa = "verify-ca" | "verify_ca",
        /// As `verify-ca`, and the certificate must name `host`.
        VerifyFull = "verify-full" | "verify_full" | "verify_identity",
    }
}

word_enum! {
    /// How a database destination writes.
    WriteMode {
        /// Plain `INSERT`; a row that breaks a constraint is refused (dead-lettered).
        Insert = "insert",
        /// Insert, or update the row with the same `key_fields`.
        Upsert = "upsert",
    }
}

/// `incremental` of a database source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlIncremental {
    /// The column whose values only grow (`updated_at`, an id): rows are read in its order,
    /// and a later run reads only rows whose value is greater than the last one read.
    pub cursor_field: String,
}

/// `connector_type: postgresql` or `mysql` — a table or a query as a source, a table as a
/// destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The server's host name or IP address.
    pub host: String,
    /// The server's port (default 5432 for PostgreSQL, 3306 for MySQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The database to use.
    pub database: String,
    /// The user to log in as.
    pub username: String,
    /// The user's password (absent for trust or peer authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// `disable`, `prefer` (default), `require`, `verify-ca` or `verify-full`.
    #[serde(default = "default_ssl_mode")]
    pub ssl_mode: SslMode,
    /// A PEM file of CA certificates to verify the server with (`verify-ca`, `verify-full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_root_cert: Option<String>,
    /// Connections kept open (default 5).
    #[serde(default = "default_connection_pool_size")]
    pub connection_pool_size: u32,
    /// Connections that may be opened beyond `connection_pool_size` under load (default 0).
    #[serde(default)]
    pub max_overflow: u32,
    /// Seconds to wait for a connection (default 10).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// PostgreSQL only: the schema of `table` (default `public`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// A source reads the whole table; a destination writes to it. `name` or
    /// `schema.name` (for MySQL `database.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Source: a `SELECT` whose rows are the records (instead of `table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Source, with `query`: values for the query's placeholders (`$1`, `$2`, … in
    /// PostgreSQL, `?` in MySQL, in order), sent as bind parameters and never pasted into the
    /// SQL. An event trigger's `${event.field}` in `query` becomes one of these. PostgreSQL
    /// types a parameter from its JSON type (number, text, boolean): cast where the column's
    /// type differs (`CAST($1 AS date)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<serde_json::Value>,
    /// Source: read only rows past the last run's high-water mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<SqlIncremental>,
    /// Destination: `insert` (default) or `upsert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WriteMode>,
    /// Destination, `upsert`: the columns that identify a row (a primary key or unique
    /// index of the table must cover exactly these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fields: Option<Vec<String>>,
    /// Destination: rows per `INSERT` statement (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Destination: the name this destination's commit marker has in the table
    /// `_dagg_sink_epochs`. When absent, each run picks a unique one and keeps it in its
    /// checkpoints; set it only to recognise the marker yourself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_id: Option<String>,
}

fn default_ssl_mode() -> SslMode {
    SslMode::Prefer
}
fn default_connection_pool_size() -> u32 {
    5
}
/// Rows per statement of a database destination when `batch_size` is absent.
pub fn default_sql_batch_size() -> usize {
    500
}

impl DatabaseConfig {
    pub fn mode(&self) -> WriteMode {
        self.mode.unwrap_or(WriteMode::Insert)
    }

    pub fn key_fields(&self) -> &[String] {
        self.key_fields.as_deref().unwrap_or(&[])
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or_else(default_sql_batch_size)
    }

    /// `table` split into its qualifier (schema or database) and its name; the qualifier
    /// falls back to `schema`.
    pub fn table_parts(&self) -> Option<(Option<&str>, &str)> {
        let t = self.table.as_deref()?;
        Some(match t.split_once('.') {
            Some((q, n)) => (Some(q), n),
            None => (self.schema.as_deref(), t),
        })
    }
}
/// The database engines behind [`DatabaseConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    pub fn default_port(self) -> u16 {
        match self {
            Engine::Postgres => 5432,
            Engine::Mysql => 3306,
        }
    }

    /// The `connector_type` that names it.
    pub fn connector_type(self) -> &'static str {
        match self {
            Engine::Postgres => "postgresql",
            Engine::Mysql => "mysql",
        }
    }
}

/// Reads a `postgresql` or `mysql` config.
pub(crate) fn parse(engine: Engine, config: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorConfig> {
    let c: DatabaseConfig = parse_json(config, path, errs)?;
    check_database(&c, engine, path, role, errs)?;
    Some(match engine {
        Engine::Postgres => ConnectorConfig::Postgres(c),
        Engine::Mysql => ConnectorConfig::Mysql(c),
    })
}

pub fn check_database(c: &DatabaseConfig, engine: Engine, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    let at = |key: &str| format!("{path}.{key}");
    for (key, v) in [("host", &c.host), ("database", &c.database), ("username", &c.username)] {
        if v.trim().is_empty() {
            errs.push(at(key), "may not be empty");
        }
    }
    if c.port == Some(0) {
        errs.push(at("port"), "0 is not a port; expected 1 to 65535");
    }
    if !(1..=1000).contains(&c.connection_pool_size) {
        errs.push(at("connection_pool_size"), format!("{} is out of range; expected 1 to 1000", c.connection_pool_size));
    }
    if c.max_overflow > 1000 {
        errs.push(at("max_overflow"), format!("{} is out of range; expected 0 to 1000", c.max_overflow));
    }
    if !(1..=3600).contains(&c.connect_timeout) {
        errs.push(at("connect_timeout"), format!("{} is out of range; expected seconds from 1 to 3600", c.connect_timeout));
    }
    if engine == Engine::Mysql && c.schema.is_some() {
        errs.push(at("schema"), "MySQL has no schemas inside a database; name the database in `database` (or write `table` as `database.table`)");
    }
    if let Some(s) = &c.schema
        && s.trim().is_empty()
    {
        errs.push(at("schema"), "may not be empty");
    }
    if let Some(t) = &c.table {
        let parts: Vec<&str> = t.split('.').collect();
        if parts.len() > 2 || parts.iter().any(|p| p.trim().is_empty()) {
            errs.push(at("table"), format!("`{t}` is not a table name; write `name` or `schema.name`"));
        } else if parts.len() == 2 && c.schema.is_some() {
            errs.push(at("table"), format!("`{t}` names its schema and `schema` is set too; give one of them"));
        }
    }
    if let Some(q) = &c.query
        && q.trim().is_empty()
    {
        errs.push(at("query"), "may not be empty");
    }
    if c.table.is_some() && c.query.is_some() {
        errs.push(at("query"), "give `query` or `table`, not both");
    }
    if !c.query_params.is_empty() && c.query.is_none() {
        errs.push(at("query_params"), "`query_params` are the values of a `query`'s placeholders; there is no `query`");
    }
    if let Some(inc) = &c.incremental
        && inc.cursor_field.trim().is_empty()
    {
        errs.push(format!("{path}.incremental.cursor_field"), "may not be empty");
    }
    match (c.mode(), c.key_fields.as_deref()) {
        (WriteMode::Upsert, None | Some([])) => errs.push(at("key_fields"), "mode `upsert` needs `key_fields`, the columns that identify a row"),
        (WriteMode::Insert, Some(_)) => errs.push(at("key_fields"), "`key_fields` applies only to mode `upsert`"),
        (_, Some(keys)) => {
            for (i, k) in keys.iter().enumerate() {
                if k.trim().is_empty() {
                    errs.push(format!("{path}.key_fields[{i}]"), "may not be empty");
                } else if keys[..i].contains(k) {
                    errs.push(format!("{path}.key_fields[{i}]"), format!("`{k}` is listed twice"));
                }
            }
        }
        _ => {}
    }
    if c.batch_size == Some(0) {
        errs.push(at("batch_size"), "must be at least 1");
    }
    if let Some(id) = &c.sink_id
        && (id.is_empty() || id.len() > 200)
    {
        errs.push(at("sink_id"), "must be 1 to 200 characters");
    }
    match role {
        Role::Source => {
            if c.table.is_none() && c.query.is_none() {
                errs.push(path, format!("a {} source needs `query` or `table`", engine.connector_type()));
            }
            for (key, set) in [
                ("mode", c.mode.is_some()),
                ("key_fields", c.key_fields.is_some()),
                ("batch_size", c.batch_size.is_some()),
                ("sink_id", c.sink_id.is_some()),
            ] {
                if set {
                    errs.push(at(key), format!("`{key}` applies only to a destination"));
                }
            }
        }
        Role::Sink => {
            if c.query.is_some() {
                errs.push(at("query"), "a destination writes to a `table`; `query` applies only to a source");
            } else if c.table.is_none() {
                errs.push(at("table"), "required field `table` is missing (the table to write to)");
            }
            if c.incremental.is_some() {
                errs.push(at("incremental"), "`incremental` applies only to a source");
            }
        }
        Role::Any => {}
    }
    (errs.len() == before).then_some(())
}
