//! dagg's sources and sinks behind two traits, one folder per connector, one registry
//! ([`open_source`], [`open_sink`]) that builds them from a [`ConnectorSpec`].
//!
//! # The source contract
//! - A source hands out [`SourceBatch`]es: records in input order, each with the
//!   [`Position`] it came from (`unit` names a file or partition in `Batch::units`, `seq` a
//!   line number or offset), plus the inputs it could not turn into records ([`BadInput`]),
//!   which the runtime sends to the dead letter destination. A bad input is never dropped.
//! - [`SourceConnector::checkpoint`] is a small JSON value that says where to continue so
//!   that the next record read is the first one not yet returned: it covers exactly what
//!   `next_batch` has returned, never what the connector has read ahead. The runtime
//!   persists it with its own state; [`SourceConnector::seek`] in any later process (same
//!   spec) continues from it. Replaying from a checkpoint therefore gives at-least-once
//!   reading, and exactly-once when the sink commits in step with the checkpoint.
//! - Reading must not block the async executor: connectors that do blocking I/O do it on
//!   their own thread and hand over batches through a small bounded channel, so a slow
//!   consumer slows the reader and memory stays flat.
//! - A fatal error (the rest of the input cannot be read) comes after every record before
//!   it has been returned. Calling `next_batch` again retries from the last checkpoint.
//! - An *unbounded* source ([`SourceConnector::unbounded`]: a message stream) never returns
//!   `Ok(None)`; the run goes on until it is stopped. Such a source returns from
//!   `next_batch` at least every second or so, with an empty batch when nothing arrived, so
//!   that checkpoints and a stop are taken while the stream is idle.
//! - A broker that keeps messages until they are acknowledged (JetStream, Kafka consumer
//!   groups, RabbitMQ, Redis stream consumer groups) hears about them only through
//!   [`SourceCommitter`]: the runtime calls it with a checkpoint's source position once that
//!   checkpoint has **completed** (every destination pre-committed, the checkpoint recorded
//!   durably), never earlier, and again after a restart for the checkpoint it resumes from.
//!   So an acknowledged message is always covered by a recorded checkpoint, and a crash
//!   before the ack only means the broker offers again what the checkpoint already says to
//!   skip.
//!
//! # The sink contract
//! - [`SinkConnector::write`] takes records and returns the ones the sink refuses (with the
//!   reason); those go to the dead letter destination, the rest are written — but nothing
//!   written is visible or durable until [`SinkConnector::commit`].
//! - `commit` makes everything written so far durable and visible at once (a file sink:
//!   flush, fsync, atomic rename). The runtime commits after a checkpoint completes, so a
//!   crash never leaves half a batch visible. [`SinkConnector::abort`] discards everything
//!   since the last commit. A sink dropped without a commit behaves as if aborted.

use std::path::Path;

use dagg_model::spec::connector::{ConnectorConfig, ConnectorSpec, Role};
use dagg_model::{Batch, Position, Record, Value};

pub mod egress;
mod epoch;
pub mod file;
pub mod kafka;
pub mod mysql;
pub mod nats;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod rest;
pub mod s3;
pub mod secrets;
mod sql;

/// Why a connector operation failed. Every message names the file (or endpoint) involved.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A file, or the folder of a destination, could not be opened or created.
    #[error("cannot open `{path}`: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A source's glob matched nothing.
    #[error("no file matches `{pattern}`")]
    NoMatch { pattern: String },
    /// Reading failed below the format (I/O, a corrupt gzip stream).
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The input is malformed in a way that makes the rest of it unreadable.
    #[error("cannot read `{path}` at line {line}: {reason}")]
    Decode { path: String, line: u64, reason: String },
    /// Writing to a destination failed.
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Making written data durable and visible failed; nothing since the last commit is
    /// visible.
    #[error("cannot commit `{path}`: {source}")]
    Commit {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint that cannot be resumed from (from another spec, or the input changed).
    #[error("cannot resume from checkpoint: {0}")]
    Seek(String),
    /// A connector spec this build cannot open.
    #[error("{0}")]
    Config(String),
    /// A server could not be reached, or refused the connection or the login. `target`
    /// names it (`postgresql://user@host:5432/db`, a URL) — never with a password.
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    /// A statement failed on the server.
    #[error("{target}: {reason}")]
    Query { target: String, reason: String },
    /// An HTTP request failed for good (after its retries), or its answer was unusable.
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    /// No answer within the configured timeout.
    #[error("{target}: {reason} within {seconds} s")]
    Timeout { target: String, seconds: u64, reason: String },
}

/// Input that could not be parsed into a record: it goes to the dead letter destination
/// with `raw` (its text) instead of a record.
#[derive(Clone, Debug, PartialEq)]
pub struct BadInput {
    pub position: Position,
    pub raw: String,
    pub reason: String,
}

/// What one [`SourceConnector::next_batch`] returns: records with their positions (and the
/// unit names), and the bad inputs met among them.
#[derive(Clone, Debug, Default)]
pub struct SourceBatch {
    pub batch: Batch,
    pub bad: Vec<BadInput>,
}

/// A source of records. See the module docs for the contract.
#[async_trait::async_trait]
pub trait SourceConnector: Send {
    /// The next batch of at most `max` records (bad inputs ride along); `Ok(None)` at the
    /// end of a bounded source.
    async fn next_batch(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError>;

    /// A position as people read it: for a file `{"file": "orders.jsonl", "line": 42}`.
    fn describe(&self, pos: Position) -> Value;

    /// Where to resume to continue right after everything returned so far.
    fn checkpoint(&self) -> serde_json::Value;

    /// Continue from a value [`SourceConnector::checkpoint`] returned earlier, possibly in
    /// another process.
    async fn seek(&mut self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError>;

    /// Whether this source is a stream without an end (see the module docs).
    fn unbounded(&self) -> bool {
        false
    }

    /// Messages the broker holds that this source has not read yet, when it knows (the
    /// runtime publishes it as the `dagg_source_lag_messages` metric after each batch).
    fn lag(&self) -> Option<u64> {
        None
    }

    /// The handle through which the runtime reports completed checkpoints, for a source
    /// whose broker wants acknowledgements (None: nothing to tell). The runtime calls it
    /// from the writing side while this source keeps reading.
    fn committer(&self) -> Option<Box<dyn SourceCommitter>> {
        None
    }
}

/// Told when a checkpoint has completed (see the module docs): acknowledges to the broker
/// everything up to that checkpoint's source position.
#[async_trait::async_trait]
pub trait SourceCommitter: Send + Sync {
    /// `checkpoint` is the value [`SourceConnector::checkpoint`] returned for the completed
    /// checkpoint. Positions only grow between calls, except after a restart, when the
    /// runtime repeats the checkpoint it resumed from. An error is reported (the next
    /// checkpoint's call covers what this one did not acknowledge).
    async fn checkpoint_completed(&self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError>;
}

/// A destination of records. See the module docs for the contract.
#[async_trait::async_trait]
pub trait SinkConnector: Send {
    /// Writes records; returns the ones this sink refuses (index in `records`, reason). The
    /// rest are written, visible after the next commit.
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError>;

    /// Makes everything written so far durable and visible.
    async fn commit(&mut self) -> Result<(), ConnectorError>;

    /// Discards what was written since the last commit.
    async fn abort(&mut self) -> Result<(), ConnectorError>;

    /// At checkpoint `epoch`'s barrier: makes everything written so far durable (not
    /// necessarily visible) and returns a token the runtime records in the checkpoint.
    /// Writes after it belong to epoch `epoch + 1`. The default commits.
    async fn pre_commit(&mut self, epoch: u64) -> Result<serde_json::Value, ConnectorError> {
        let _ = epoch;
        self.commit().await?;
        Ok(serde_json::Value::Null)
    }

    /// After a restart: returns to the state of the last completed checkpoint, whose
    /// `pre_commit` returned `token` for `epoch`, discarding whatever was written after it
    /// (or, for a sink that cannot discard, skipping the replayed writes it already holds).
    /// The default discards everything uncommitted.
    async fn recover(&mut self, token: &serde_json::Value, epoch: u64) -> Result<(), ConnectorError> {
        let _ = (token, epoch);
        self.abort().await
    }
}

/// Builds the source for a spec. Relative paths resolve against `base_dir` (the pipeline
/// file's folder). Checks that the input exists; reading starts at the first `next_batch`.
pub fn open_source(spec: &ConnectorSpec, base_dir: &Path) -> Result<Box<dyn SourceConnector>, ConnectorError> {
    open_source_limited(spec, base_dir, &dagg_model::spec::pipeline::Limits::default())
}

/// [`open_source`] with the pipeline's `limits` on one record's size.
pub fn open_source_limited(
    spec: &ConnectorSpec,
    base_dir: &Path,
    limits: &dagg_model::spec::pipeline::Limits,
) -> Result<Box<dyn SourceConnector>, ConnectorError> {
    match &spec.config {
        ConnectorConfig::File(c) => Ok(Box::new(file::FileSource::open_limited(c, base_dir, limits)?)),
        ConnectorConfig::RestApi(c) => Ok(Box::new(rest::RestSource::open(c)?)),
        ConnectorConfig::Postgres(c) => postgres::source(c, base_dir),
        ConnectorConfig::Mysql(c) => mysql::source(c, base_dir),
        ConnectorConfig::Nats(c) => nats::source(c),
        ConnectorConfig::Kafka(c) => kafka::source(c),
        ConnectorConfig::Rabbitmq(c) => rabbitmq::source(c),
        ConnectorConfig::Redis(c) => redis::source(c),
        ConnectorConfig::AwsS3(c) => Ok(Box::new(s3::S3Source::open(c)?)),
    }
}

/// Builds the sink for a spec. Relative paths resolve against `base_dir`. Creates missing
/// parent folders; nothing is visible at the destination before the first commit.
pub fn open_sink(spec: &ConnectorSpec, base_dir: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError> {
    match &spec.config {
        ConnectorConfig::File(c) => file::open_sink(c, base_dir),
        ConnectorConfig::RestApi(c) => Ok(Box::new(rest::RestSink::open(c)?)),
        ConnectorConfig::Postgres(c) => postgres::sink(c, base_dir),
        ConnectorConfig::Mysql(c) => mysql::sink(c, base_dir),
        ConnectorConfig::Nats(c) => nats::sink(c),
        ConnectorConfig::Kafka(c) => kafka::sink(c),
        ConnectorConfig::Rabbitmq(c) => rabbitmq::sink(c),
        ConnectorConfig::Redis(c) => redis::sink(c),
        ConnectorConfig::AwsS3(c) => Ok(Box::new(s3::S3Sink::open(c)?)),
    }
}

/// Fills in the defaults that come from the pipeline rather than the connector's own
/// config: a JetStream source's durable consumer and a Kafka or Redis stream source's
/// consumer group are named after the pipeline.
pub fn with_pipeline_defaults(spec: &ConnectorSpec, pipeline: &str) -> ConnectorSpec {
    let mut spec = spec.clone();
    if let ConnectorConfig::Nats(c) = &mut spec.config
        && c.stream.is_some()
        && c.durable.is_none()
    {
        c.durable = Some(nats::durable_name(pipeline));
    }
    if let ConnectorConfig::Kafka(c) = &mut spec.config
        && c.group_id.is_none()
    {
        c.group_id = Some(pipeline.to_string());
    }
    if let ConnectorConfig::Redis(c) = &mut spec.config
        && c.stream.is_some()
        && c.group.is_none()
    {
        c.group = Some(pipeline.to_string());
    }
    spec
}

/// Checks that a connector can work, without reading or writing records: a database
/// answers (and its table or query is there), an HTTP endpoint answers with the configured
/// credentials, a file can be opened (or created). Returns what was found, or why not, within
/// the connector's own timeout. The role is unknown here: a file that does not exist is
/// fine if its folder can hold it; [`test_connection_as`] knows better.
pub async fn test_connection(spec: &ConnectorSpec, base_dir: &Path) -> Result<String, ConnectorError> {
    test_connection_as(spec, base_dir, Role::Any).await
}

/// [`test_connection`] for a connector used as a source or a destination.
pub async fn test_connection_as(spec: &ConnectorSpec, base_dir: &Path, role: Role) -> Result<String, ConnectorError> {
    match &spec.config {
        ConnectorConfig::File(c) => test_file(c, base_dir, role),
        ConnectorConfig::RestApi(c) => rest::test_connection(c, role).await,
        ConnectorConfig::Postgres(c) => postgres::test_connection(c, base_dir).await,
        ConnectorConfig::Mysql(c) => mysql::test_connection(c, base_dir).await,
        ConnectorConfig::Nats(c) => nats::test_connection(c, role).await,
        ConnectorConfig::Kafka(c) => kafka::test_connection(c).await,
        ConnectorConfig::Rabbitmq(c) => rabbitmq::test_connection(c, role).await,
        ConnectorConfig::Redis(c) => redis::test_connection(c, role).await,
        ConnectorConfig::AwsS3(c) => s3::test_connection(c, role).await,
    }
}

/// A file source's files can be opened for reading; a file destination's folder can hold
/// a new file.
fn test_file(c: &dagg_model::spec::connector::FileConfig, base_dir: &Path, role: Role) -> Result<String, ConnectorError> {
    let configured = Path::new(&c.path);
    let path = if configured.is_absolute() { configured.to_path_buf() } else { base_dir.join(configured) };
    let is_glob = c.path.contains(['*', '?', '[']);
    let as_source = match role {
        Role::Source => true,
        Role::Sink => false,
        Role::Any => is_glob || path.exists(),
    };
    if as_source {
        let src = file::FileSource::open(c, base_dir)?;
        let units = src.units().clone();
        for unit in units.iter() {
            let p = if Path::new(unit).is_absolute() { Path::new(unit).to_path_buf() } else { base_dir.join(unit) };
            std::fs::File::open(&p).map_err(|source| ConnectorError::Open { path: p.display().to_string(), source })?;
        }
        let first = units.first().map(String::as_str).unwrap_or_default();
        return Ok(match units.len() {
            1 => format!("`{first}` can be read"),
            n => format!("{n} files can be read (`{first}` first)"),
        });
    }
    file::FileSink::open(c, base_dir)?;
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let probe = folder.join(format!(".dagg-connector-test-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|source| ConnectorError::Open { path: folder.display().to_string(), source })?;
    let _ = std::fs::remove_file(&probe);
    Ok(format!("`{}` can be written", path.display()))
}
