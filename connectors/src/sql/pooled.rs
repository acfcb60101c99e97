//! The [`Backend`] both engines use: a lazily connected `sqlx` pool, generic over the
//! engine. An engine supplies a [`Driver`] — its dialect, how a row decodes into a record,
//! which errors are about the data, and the two calls that need its concrete types (running
//! a statement for rows and for a count) — and builds its connect options.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dagg_model::{Record, Value};
use dagg_model::spec::connector::{DatabaseConfig, Engine};
use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::pool::PoolOptions;
use sqlx::{Column, ConnectOptions, Connection, Pool, Row, TypeInfo};
use tokio::sync::mpsc;

use super::{Backend, Dialect, Param, SqlSink, SqlSource, StreamMsg, db_error};
use crate::{ConnectorError, SinkConnector, SourceConnector};

/// What one engine adds to [`Pooled`].
pub(crate) trait Driver: sqlx::Database {
    const DIALECT: Dialect;
    /// A statement whose one row's first column is the server's version, and what to put
    /// before it (PostgreSQL's names itself, MySQL's is a bare number).
    const VERSION_SQL: &'static str;
    const VERSION_PREFIX: &'static str;
    /// Engine, connect options and `target` name from a config.
    fn options(c: &DatabaseConfig, base_dir: &Path) -> Result<(<Self::Connection as Connection>::Options, String), ConnectorError>;
    /// Column `i` of a row as a value, or why it cannot be read.
    fn decode(row: &Self::Row, i: usize) -> Result<Value, String>;

    /// A row as a record, or which column cannot be read and why.
    fn decode_row(row: &Self::Row) -> Result<Record, String> {
        let mut r = super::record_with(row.len());
        for (i, col) in row.columns().iter().enumerate() {
            let v = Self::decode(row, i).map_err(|e| format!("column `{}` ({}): {e}", col.name(), col.type_info().name()))?;
            r.push_unchecked(col.name(), v);
        }
        Ok(r)
    }
    /// Whether a database error is about the rows' data (see [`Backend::is_data_error`]).
    fn is_data_error(e: &sqlx::Error) -> bool;
    /// `sql` with `params` bound, its rows as they come.
    fn fetch<'c>(conn: &'c mut Self::Connection, sql: String, params: Vec<Param>) -> BoxStream<'c, Result<Self::Row, sqlx::Error>>;
    /// `sql` with `params` bound, run for its count of affected rows.
    fn execute<'c>(conn: &'c mut Self::Connection, sql: String, params: Vec<Param>) -> BoxFuture<'c, Result<u64, sqlx::Error>>;
}

/// Binds [`Param`]s to a `sqlx` query of any engine whose types cover them.
macro_rules! bind_params {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
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
    }};
}
pub(crate) use bind_params;

/// A pool of one engine's connections, with the options to open one outside it.
pub(crate) struct Pooled<D: Driver> {
    pool: Pool<D>,
    options: <D::Connection as Connection>::Options,
    target: String,
    timeout: Duration,
    gate: Arc<Gate>,
}

/// The server's host and port, checked against the egress policy once, before the first
/// connection.
struct Gate {
    host: String,
    port: u16,
    verdict: tokio::sync::OnceCell<Result<(), String>>,
}

impl Gate {
    /// Whether the egress policy lets the pool reach its server: `Err` says why not.
    async fn admit(&self) -> Result<(), String> {
        self.verdict
            .get_or_init(|| async {
                crate::egress::resolve_checked(&self.host, self.port).await.map(|_| ()).map_err(|e| match e {
                    ConnectorError::Connect { reason, .. } => reason,
                    other => other.to_string(),
                })
            })
            .await
            .clone()
    }
}

impl<D: Driver> Pooled<D> {
    /// Builds the pool without connecting (the first statement connects).
    pub fn new(c: &DatabaseConfig, base_dir: &Path) -> Result<Pooled<D>, ConnectorError> {
        let (options, target) = D::options(c, base_dir)?;
        let timeout = Duration::from_secs(c.connect_timeout);
        let pool = PoolOptions::<D>::new()
            .max_connections(c.connection_pool_size + c.max_overflow)
            .min_connections(0)
            .acquire_timeout(timeout)
            .idle_timeout(Duration::from_secs(600))
            .connect_lazy_with(options.clone());
        let engine = match D::DIALECT {
            Dialect::Postgres => Engine::Postgres,
            Dialect::Mysql => Engine::Mysql,
        };
        let port = c.port.unwrap_or(engine.default_port());
        let gate = Arc::new(Gate { host: c.host.clone(), port, verdict: tokio::sync::OnceCell::new() });
        Ok(Pooled { pool, options, target, timeout, gate })
    }

    /// [`Gate::admit`] as a database error.
    async fn admit(&self) -> Result<(), sqlx::Error> {
        self.gate.admit().await.map_err(|reason| sqlx::Error::Configuration(reason.into()))
    }
}

/// The config's password, decrypted. An empty password means none, as with the `mysql` and
/// `psql` clients: sent as a password it would be refused by a password-less account
/// (MariaDB's root: "using password: YES").
pub(crate) fn password(c: &DatabaseConfig, target: &str) -> Result<Option<String>, ConnectorError> {
    let pw = c.password.as_ref().map(|p| crate::secrets::reveal(p).map_err(|e| ConnectorError::Config(format!("{target}: password: {e}")))).transpose()?;
    Ok(pw.filter(|p| !p.is_empty()))
}

/// The engine's source, sink and connection test for a config.
pub(crate) fn source<D: Driver>(c: &DatabaseConfig, base_dir: &Path) -> Result<Box<dyn SourceConnector>, ConnectorError> {
    Ok(Box::new(SqlSource::new(Arc::new(Pooled::<D>::new(c, base_dir)?), c)))
}

pub(crate) fn sink<D: Driver>(c: &DatabaseConfig, base_dir: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError> {
    Ok(Box::new(SqlSink::new(Arc::new(Pooled::<D>::new(c, base_dir)?), c)))
}

pub(crate) async fn test_connection<D: Driver>(c: &DatabaseConfig, base_dir: &Path) -> Result<String, ConnectorError> {
    super::test_connection(&Pooled::<D>::new(c, base_dir)?, c).await
}

/// Reads `sql`'s rows on `conn` and sends them in chunks; `Ok(false)` when the receiver left.
async fn send_rows<D: Driver>(conn: &mut D::Connection, sql: String, params: Vec<Param>, cursor_field: Option<String>, size: usize, target: &str, timeout: Duration, out: &mpsc::Sender<StreamMsg>) -> Result<bool, ConnectorError> {
    let mut rows = D::fetch(conn, sql, params);
    let mut chunk = Vec::with_capacity(size);
    let mut cursor_type = None;
    let mut first = true;
    while let Some(row) = rows.try_next().await.map_err(|e| db_error(target, timeout, e))? {
        if first {
            first = false;
            cursor_type = cursor_field.as_deref().and_then(|f| row.columns().iter().find(|c| c.name() == f)).map(|c| c.type_info().name().to_string());
        }
        chunk.push(D::decode_row(&row).map_err(|reason| ConnectorError::Query { target: target.to_string(), reason })?);
        if chunk.len() >= size {
            let records = std::mem::replace(&mut chunk, Vec::with_capacity(size));
            if out.send(StreamMsg::Rows { records, cursor_type: cursor_type.take() }).await.is_err() {
                return Ok(false);
            }
        }
    }
    Ok(chunk.is_empty() || out.send(StreamMsg::Rows { records: chunk, cursor_type }).await.is_ok())
}

#[async_trait::async_trait]
impl<D: Driver> Backend for Pooled<D> {
    type Tx = sqlx::Transaction<'static, D>;

    fn dialect(&self) -> Dialect {
        D::DIALECT
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn connect_timeout(&self) -> Duration {
        self.timeout
    }

    async fn probe(&self) -> Result<String, ConnectorError> {
        let attempt = async {
            self.admit().await?;
            let mut conn = self.options.connect().await?;
            let row = D::fetch(&mut conn, D::VERSION_SQL.to_string(), vec![]).try_next().await?;
            let record = row.as_ref().map(D::decode_row).transpose().map_err(|e| sqlx::Error::Decode(e.into()))?;
            let _ = conn.close().await;
            Ok::<_, sqlx::Error>(record.and_then(|r| r.iter().next().map(|(_, v)| v.to_text().to_string())).unwrap_or_default())
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(v)) => Ok(format!("{}{v}", D::VERSION_PREFIX)),
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
        let gate = self.gate.clone();
        let target = self.target.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            let result = async {
                gate.admit().await.map_err(|reason| ConnectorError::Connect { target: target.clone(), reason })?;
                let mut conn = pool.acquire().await.map_err(|e| db_error(&target, timeout, e))?;
                let finished = send_rows::<D>(&mut *conn, sql, params, cursor_field, size, &target, timeout, &out).await?;
                if !finished {
                    // Do not drain the rest of the result into a pooled connection.
                    conn.close_on_drop();
                }
                Ok::<bool, ConnectorError>(finished)
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
        self.admit().await?;
        let mut conn = self.pool.acquire().await?;
        let rows: Vec<D::Row> = D::fetch(&mut conn, sql.to_string(), params).try_collect().await?;
        rows.iter().map(|r| D::decode_row(r).map_err(|e| sqlx::Error::Decode(e.into()))).collect()
    }

    async fn begin(&self) -> Result<Self::Tx, sqlx::Error> {
        self.admit().await?;
        self.pool.begin().await
    }

    async fn execute(&self, tx: &mut Self::Tx, sql: &str, params: Vec<Param>) -> Result<u64, sqlx::Error> {
        D::execute(&mut **tx, sql.to_string(), params).await
    }

    async fn commit(&self, tx: Self::Tx) -> Result<(), sqlx::Error> {
        tx.commit().await
    }

    async fn rollback(&self, tx: Self::Tx) -> Result<(), sqlx::Error> {
        tx.rollback().await
    }

    fn is_data_error(&self, e: &sqlx::Error) -> bool {
        D::is_data_error(e)
    }
}
