//! The dead-letter entry and where entries go.
//!
//! A rejected record is never dropped silently: it becomes one JSON object
//! `{"pipeline", "run_id", "at", "stage", "reason", "position", "record"}` (or `raw` instead
//! of `record` for input that could not be parsed) and is written to the pipeline's
//! `error_handling.dead_letter` destination. Without one, entries are counted and the
//! first few are logged, and the run ends `warning`.

use chrono::{DateTime, SecondsFormat, Utc};
use dagg_connectors::{ConnectorError, SinkConnector};
use dagg_model::{Map, Record, Str, Value};
use dagg_transforms::Output;

/// What failed, where, and the record (or raw input) as it was.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub stage: String,
    pub reason: String,
    pub position: Value,
    pub payload: Payload,
}

#[derive(Clone, Debug)]
pub enum Payload {
    Record(Record),
    Raw(String),
}

/// The records the chain rejected in `out`, as dead letters; `describe` gives the source
/// position of the input record at an index (the batch's own positions), when known.
pub(crate) fn take_rejected(out: &mut Output, describe: impl Fn(usize) -> Option<Value>) -> Vec<DeadLetter> {
    out.rejected
        .drain(..)
        .map(|r| DeadLetter {
            position: r.input.and_then(&describe).unwrap_or(Value::Null),
            stage: r.stage,
            reason: r.reason,
            payload: Payload::Record(r.record),
        })
        .collect()
}

impl DeadLetter {
    /// The entry as written to the dead-letter destination.
    pub fn to_entry(&self, pipeline: &str, run_id: &str, at: DateTime<Utc>) -> Record {
        let mut m = Map::with_capacity(7);
        m.push_unchecked("pipeline", Value::from(pipeline));
        m.push_unchecked("run_id", Value::from(run_id));
        m.push_unchecked("at", Value::String(Str::from(at.to_rfc3339_opts(SecondsFormat::Millis, true))));
        m.push_unchecked("stage", Value::from(self.stage.as_str()));
        m.push_unchecked("reason", Value::from(self.reason.as_str()));
        m.push_unchecked("position", self.position.clone());
        match &self.payload {
            Payload::Record(r) => m.push_unchecked("record", Value::Object(r.clone())),
            Payload::Raw(s) => m.push_unchecked("raw", Value::from(s.as_str())),
        }
        m
    }
}

/// How many entries without a destination are logged one by one before only counting.
const LOG_LIMIT: u64 = 10;

/// Where dead letters go for one run.
pub struct DeadLetterSink {
    pipeline: String,
    run_id: String,
    sink: Option<Box<dyn SinkConnector>>,
    count: u64,
    buf: Vec<Record>,
}

impl DeadLetterSink {
    /// `count` continues a resumed run's total.
    pub fn new(pipeline: &str, run_id: &str, sink: Option<Box<dyn SinkConnector>>, count: u64) -> Self {
        DeadLetterSink { pipeline: pipeline.to_string(), run_id: run_id.to_string(), sink, count, buf: Vec::new() }
    }

    /// Makes the entries so far durable for checkpoint `epoch`; the token, when there is a
    /// destination.
    pub async fn pre_commit(&mut self, epoch: u64) -> Result<Option<serde_json::Value>, ConnectorError> {
        match self.sink.as_mut() {
            Some(s) => s.pre_commit(epoch).await.map(Some),
            None => Ok(None),
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub async fn send(&mut self, letters: Vec<DeadLetter>) -> Result<(), ConnectorError> {
        if letters.is_empty() {
            return Ok(());
        }
        let at = Utc::now();
        for l in &letters {
            self.count += 1;
            if self.sink.is_none() && self.count <= LOG_LIMIT {
                tracing::warn!(stage = %l.stage, position = %l.position, "rejected record: {}", l.reason);
            }
        }
        if let Some(sink) = self.sink.as_mut() {
            self.buf.clear();
            self.buf.extend(letters.iter().map(|l| l.to_entry(&self.pipeline, &self.run_id, at)));
            let refused = sink.write(&self.buf).await?;
            if let Some((_, why)) = refused.first() {
                // A dead-letter destination that refuses entries would lose them: stop the run.
                return Err(ConnectorError::Config(format!("the dead-letter destination refused an entry: {why}")));
            }
        }
        Ok(())
    }

    pub async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.sink.is_none() && self.count > LOG_LIMIT {
            tracing::warn!("{} rejected records in all (no dead-letter destination is configured)", self.count);
        }
        match self.sink.as_mut() {
            Some(s) => s.commit().await,
            None => Ok(()),
        }
    }

    pub async fn abort(&mut self) {
        if let Some(s) = self.sink.as_mut()
            && let Err(e) = s.abort().await
        {
            tracing::warn!("could not discard the dead-letter output: {e}");
        }
    }
}
