//! The database source: one streaming statement per read, rows handed over in chunks
//! through a bounded channel, a checkpoint that covers exactly the rows returned. See the
//! module docs of [`super`] for the checkpoint's meaning.

use std::collections::VecDeque;
use std::sync::Arc;

use dagg_model::spec::connector::DatabaseConfig;
use dagg_model::{Batch, Map, Position, Record, Value};
use serde_json::json;
use tokio::sync::mpsc;

use super::{Backend, Dialect, Param, StreamMsg, trim_query, unique_keys};
use crate::{ConnectorError, SourceBatch, SourceConnector};

/// Chunks the streaming task may have ready ahead of the consumer.
const CHANNEL_CHUNKS: usize = 2;
/// The largest chunk, whatever `max` asks for.
const MAX_CHUNK: usize = 8192;
const CHECKPOINT_VERSION: u64 = 1;

/// What the source reads.
enum Input {
    Table { qualifier: Option<String>, name: String },
    /// A query and the values of its placeholders (`query_params`).
    Query(String, Vec<Param>),
}

/// Where the source stands: right after the last row returned.
#[derive(Clone, Debug, Default, PartialEq)]
struct State {
    /// Rows returned (this run).
    rows: u64,
    /// The statement was read to its end.
    done: bool,
    /// Incremental: the last row's cursor value, its column's type, and how many rows
    /// with that value were returned in the current read.
    cursor: Option<Value>,
    cursor_type: Option<String>,
    seen: u64,
}

/// The `postgresql` / `mysql` source. Built by [`crate::open_source`].
pub(crate) struct SqlSource<B: Backend> {
    backend: Arc<B>,
    input: Input,
    cursor_field: Option<String>,
    state: State,
    /// The primary key (a table's stable order), looked up when the first read starts.
    order_keys: Option<Vec<String>>,
    units: Arc<Vec<String>>,
    rx: Option<mpsc::Receiver<StreamMsg>>,
    pending: VecDeque<Record>,
    /// Rows of the current read still to drop before the first new one (a resume).
    skip_rows: u64,
    /// Incremental resume: rows with the checkpoint's cursor value still to drop.
    skip_equal: u64,
    finished: bool,
}

impl<B: Backend> SqlSource<B> {
    pub fn new(backend: Arc<B>, c: &DatabaseConfig) -> SqlSource<B> {
        let input = match (c.table_parts(), &c.query) {
            (Some((q, name)), _) => Input::Table { qualifier: q.map(str::to_string), name: name.to_string() },
            (None, Some(q)) => Input::Query(trim_query(q).to_string(), query_params(&c.query_params)),
            (None, None) => Input::Query(String::new(), Vec::new()),
        };
        let unit = match &input {
            Input::Table { qualifier, name } => super::table_label(qualifier.as_deref(), name),
            Input::Query(..) => "query".to_string(),
        };
        SqlSource {
            backend,
            input,
            cursor_field: c.incremental.as_ref().map(|i| i.cursor_field.clone()),
            state: State::default(),
            order_keys: None,
            units: Arc::new(vec![unit]),
            rx: None,
            pending: VecDeque::new(),
            skip_rows: 0,
            skip_equal: 0,
            finished: false,
        }
    }

    fn dialect(&self) -> Dialect {
        self.backend.dialect()
    }

    /// The statement that continues from `self.state`, and how many rows to drop from it.
    fn statement(&self) -> Result<(String, Vec<Param>, u64, u64), ConnectorError> {
        let d = self.dialect();
        let keys = self.order_keys.as_deref().unwrap_or(&[]);
        let order_by = |first: Option<&str>| {
            let cols: Vec<String> = first.into_iter().chain(keys.iter().map(String::as_str)).map(|k| d.quote(k)).collect();
            if cols.is_empty() { String::new() } else { format!(" ORDER BY {}", cols.join(", ")) }
        };
        let from = match &self.input {
            Input::Table { qualifier, name } => d.table_ref(qualifier.as_deref(), name),
            Input::Query(q, _) => format!("({q}) AS _dagg_src"),
        };
        let Some(field) = &self.cursor_field else {
            return Ok(match &self.input {
                // A table is ordered by its key, so the offset can go to the server.
                Input::Table { .. } => {
                    let mut sql = format!("SELECT * FROM {from}{}", order_by(None));
                    if self.state.rows > 0 {
                        sql.push_str(&d.offset(self.state.rows));
                    }
                    (sql, vec![], 0, 0)
                }
                Input::Query(q, params) => (q.clone(), params.clone(), self.state.rows, 0),
            });
        };
        let c = d.quote(field);
        let mut sql = format!("SELECT * FROM {from} WHERE {c} IS NOT NULL");
        // The query's own placeholders come first in the statement, then the cursor's.
        let mut params = match &self.input {
            Input::Query(_, p) => p.clone(),
            Input::Table { .. } => Vec::new(),
        };
        let mut skip_equal = 0;
        if let Some(v) = &self.state.cursor {
            let ty = self.state.cursor_type.as_deref().unwrap_or("text");
            if !ty.chars().all(|ch| ch.is_ascii_alphanumeric() || " _[]()".contains(ch)) {
                return Err(ConnectorError::Seek(format!("the checkpoint's cursor type `{ty}` is not a type name")));
            }
            let op = if self.state.done { ">" } else { ">=" };
            if !self.state.done {
                skip_equal = self.state.seen;
            }
            let ph = match d {
                Dialect::Postgres => format!("CAST(${} AS {ty})", params.len() + 1),
                Dialect::Mysql => "?".to_string(),
            };
            sql.push_str(&format!(" AND {c} {op} {ph}"));
            params.push(cursor_param(d, v, ty));
        }
        sql.push_str(&order_by(Some(field)));
        Ok((sql, params, 0, skip_equal))
    }

    async fn start(&mut self, max: usize) -> Result<(), ConnectorError> {
        if self.order_keys.is_none() {
            self.order_keys = Some(match &self.input {
                Input::Table { qualifier, name } => {
                    let (keys, is_pk) = unique_keys(&*self.backend, qualifier.as_deref(), name).await?;
                    // The primary key orders rows stably (and breaks ties between equal
                    // cursor values); without one, the server's order is used.
                    if is_pk { keys.into_iter().next().unwrap_or_default() } else { Vec::new() }
                }
                Input::Query(..) => Vec::new(),
            });
        }
        if self.state.done && self.cursor_field.is_none() {
            // The previous run read everything: this one reads everything again.
            self.state = State::default();
        }
        let (sql, params, skip_rows, skip_equal) = self.statement()?;
        tracing::debug!(target = self.backend.target(), %sql, "reading");
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        self.backend.stream(sql, params, self.cursor_field.clone(), max.clamp(1, MAX_CHUNK), tx);
        self.rx = Some(rx);
        self.skip_rows = skip_rows;
        self.skip_equal = skip_equal;
        Ok(())
    }

    /// Takes a received chunk: drops what a resume skips, queues the rest.
    fn accept(&mut self, records: Vec<Record>) -> Result<(), ConnectorError> {
        for r in records {
            if self.skip_rows > 0 {
                self.skip_rows -= 1;
                continue;
            }
            if self.skip_equal > 0 {
                let field = self.cursor_field.as_deref().unwrap_or_default();
                if r.get(field) == self.state.cursor.as_ref() {
                    self.skip_equal -= 1;
                    continue;
                }
                self.skip_equal = 0;
            }
            self.pending.push_back(r);
        }
        Ok(())
    }

    /// Returns up to `max` queued rows, moving the state past them.
    fn take(&mut self, max: usize) -> Result<SourceBatch, ConnectorError> {
        let n = max.min(self.pending.len());
        let mut records = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        for _ in 0..n {
            let r = self.pending.pop_front().expect("n rows are queued");
            if let Some(field) = &self.cursor_field {
                let v = r.get(field).cloned().ok_or_else(|| {
                    ConnectorError::Config(format!(
                        "{}: `incremental.cursor_field` `{field}` is not a column of the rows read",
                        self.backend.target()
                    ))
                })?;
                if self.state.cursor.as_ref() == Some(&v) && !self.state.done {
                    self.state.seen += 1;
                } else {
                    self.state.cursor = Some(v);
                    self.state.seen = 1;
                }
            }
            self.state.done = false;
            self.state.rows += 1;
            positions.push(Position { unit: 0, seq: self.state.rows });
            records.push(r);
        }
        Ok(SourceBatch { batch: Batch { records, positions, units: Some(self.units.clone()) }, bad: vec![] })
    }
}

/// The cursor value as the engine compares it: text cast by PostgreSQL, a typed value
/// for MySQL (timestamps back to the server's form).
/// A config's `query_params` as bind parameters, each typed by its JSON type (objects and
/// arrays as JSON text).
pub(crate) fn query_params(values: &[serde_json::Value]) -> Vec<Param> {
    use serde_json::Value as Json;
    values
        .iter()
        .map(|v| match v {
            Json::Null => Param::Null,
            Json::Bool(b) => Param::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Param::Int(i),
                None => Param::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Param::Text(s.clone()),
            other => Param::Text(other.to_string()),
        })
        .collect()
}

fn cursor_param(d: Dialect, v: &Value, ty: &str) -> Param {
    match (d, v) {
        (Dialect::Postgres, other) => Param::Text(other.to_text()),
        (Dialect::Mysql, Value::String(s)) => {
            let t = ty.to_ascii_uppercase();
            if (t == "DATETIME" || t == "TIMESTAMP")
                && let Ok(ts) = chrono::DateTime::parse_from_rfc3339(s)
            {
                return Param::Timestamp(ts.naive_utc());
            }
            Param::Text(s.to_string())
        }
        (Dialect::Mysql, other) => d.param(other, ty),
    }
}

#[async_trait::async_trait]
impl<B: Backend> SourceConnector for SqlSource<B> {
    async fn next_batch(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError> {
        let max = max.max(1);
        loop {
            if !self.pending.is_empty() {
                return self.take(max).map(Some);
            }
            if self.finished {
                return Ok(None);
            }
            if self.rx.is_none() {
                self.start(max).await?;
            }
            let rx = self.rx.as_mut().expect("the read was just started");
            match rx.recv().await {
                Some(StreamMsg::Rows { records, cursor_type }) => {
                    if cursor_type.is_some() {
                        self.state.cursor_type = cursor_type;
                    }
                    self.accept(records)?;
                }
                Some(StreamMsg::End) => {
                    self.rx = None;
                    self.finished = true;
                    self.state.done = true;
                }
                Some(StreamMsg::Failed(e)) => {
                    // The next call starts a new read from the state.
                    self.rx = None;
                    return Err(e);
                }
                None => {
                    self.rx = None;
                    return Err(ConnectorError::Query {
                        target: self.backend.target().to_string(),
                        reason: "the reading task stopped unexpectedly".into(),
                    });
                }
            }
        }
    }

    fn describe(&self, pos: Position) -> Value {
        let mut m = Map::with_capacity(2);
        match &self.input {
            Input::Table { .. } => m.push_unchecked("table", Value::from(self.units[0].as_str())),
            Input::Query(..) => m.push_unchecked("query", Value::Bool(true)),
        }
        m.push_unchecked("row", Value::Int(pos.seq as i64));
        Value::Object(m)
    }

    fn checkpoint(&self) -> serde_json::Value {
        let s = &self.state;
        json!({
            "version": CHECKPOINT_VERSION,
            "rows": s.rows,
            "done": s.done,
            "cursor": s.cursor.as_ref().map(|v| serde_json::to_value(v).expect("a value serializes")),
            "cursor_type": s.cursor_type,
            "seen": s.seen,
        })
    }

    async fn seek(&mut self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError> {
        let bad = |what: &str| ConnectorError::Seek(format!("{what} (checkpoint: {checkpoint})"));
        if checkpoint.get("version").and_then(|v| v.as_u64()) != Some(CHECKPOINT_VERSION) {
            return Err(bad(&format!("not a database source checkpoint of version {CHECKPOINT_VERSION}")));
        }
        let num = |k: &str| checkpoint.get(k).and_then(|v| v.as_u64());
        let (Some(rows), Some(seen)) = (num("rows"), num("seen")) else {
            return Err(bad("`rows` and `seen` must be whole numbers"));
        };
        let done = checkpoint.get("done").and_then(|v| v.as_bool()).ok_or_else(|| bad("`done` must be true or false"))?;
        let cursor = match checkpoint.get("cursor") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(Value::from(v)),
        };
        if cursor.is_some() && self.cursor_field.is_none() {
            return Err(bad("it has an incremental cursor, and this source has no `incremental`"));
        }
        let cursor_type = checkpoint.get("cursor_type").and_then(|v| v.as_str()).map(str::to_string);
        // Dropping the receiver stops the old read at its next send.
        self.rx = None;
        self.pending.clear();
        self.finished = false;
        // A finished read (the previous run's high-water mark) numbers its rows afresh.
        let rows = if done { 0 } else { rows };
        self.state = State { rows, done, cursor, cursor_type, seen };
        Ok(())
    }
}
