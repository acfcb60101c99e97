//! The `kafka` source. See [`super`] for positions and offset commits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dagg_model::spec::streaming::KafkaConfig;
use dagg_model::{Batch, Position, Value};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use super::{blocking, client_config, partitions, target, timeout};
use crate::nats::decode;
use crate::{BadInput, ConnectorError, SourceBatch, SourceCommitter, SourceConnector};

const IDLE: Duration = Duration::from_millis(500);
const FILL: Duration = Duration::from_millis(100);
/// How often the lag (end offsets minus positions) is asked of the broker.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// A `kafka` source.
pub struct KafkaSource {
    config: KafkaConfig,
    target: String,
    consumer: Option<Arc<StreamConsumer>>,
    /// The next offset to return, per partition: the checkpoint.
    next: BTreeMap<i32, i64>,
    /// Offsets a seek asked for.
    resume: Option<BTreeMap<i32, i64>>,
    lag: Option<u64>,
    lag_at: Instant,
}

impl KafkaSource {
    pub fn open(c: &KafkaConfig) -> Result<KafkaSource, ConnectorError> {
        Ok(KafkaSource { config: c.clone(), target: target(c), consumer: None, next: BTreeMap::new(), resume: None, lag: None, lag_at: Instant::now() })
    }

    fn group(&self) -> String {
        self.config.group_id.clone().unwrap_or_else(|| "dagg".into())
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Query { target: self.target.clone(), reason: format!("{what}: {e}") }
    }

    /// Creates the consumer and assigns every partition at its starting offset: the
    /// checkpoint's, else the group's committed one, else the first.
    async fn start(&mut self) -> Result<(), ConnectorError> {
        super::admit(&self.config).await?;
        let mut cc = client_config(&self.config)?;
        cc.set("group.id", self.group())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed");
        let consumer: StreamConsumer = cc.create().map_err(|e| ConnectorError::Config(format!("{}: {e}", self.target)))?;
        let consumer = Arc::new(consumer);
        let (c, cfg, resume) = (consumer.clone(), self.config.clone(), self.resume.clone());
        let start = blocking(move || -> Result<BTreeMap<i32, i64>, ConnectorError> {
            let ps = partitions(c.as_ref(), &cfg)?;
            let mut tpl = TopicPartitionList::new();
            for p in &ps {
                tpl.add_partition(&cfg.topic, *p);
            }
            let committed = c.committed_offsets(tpl, timeout(&cfg)).map_err(|e| ConnectorError::Query { target: target(&cfg), reason: format!("committed offsets: {e}") })?;
            let mut start = BTreeMap::new();
            for p in ps {
                let from_checkpoint = resume.as_ref().and_then(|r| r.get(&p).copied());
                let from_group = committed.find_partition(&cfg.topic, p).and_then(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                });
                let offset = match from_checkpoint.or(from_group) {
                    Some(o) => o,
                    None => c.fetch_watermarks(&cfg.topic, p, timeout(&cfg)).map_err(|e| ConnectorError::Query { target: target(&cfg), reason: format!("partition {p}: {e}") })?.0,
                };
                start.insert(p, offset);
            }
            Ok(start)
        })
        .await?;
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &start {
            tpl.add_partition_offset(&self.config.topic, *p, Offset::Offset(*o)).map_err(|e| self.err("assign", e))?;
        }
        consumer.assign(&tpl).map_err(|e| self.err("assign", e))?;
        self.next = start;
        self.consumer = Some(consumer);
        Ok(())
    }

    async fn update_lag(&mut self) {
        let (Some(c), cfg, next) = (self.consumer.clone(), self.config.clone(), self.next.clone()) else { return };
        self.lag_at = Instant::now();
        self.lag = blocking(move || {
            let mut lag = 0u64;
            for (p, n) in next {
                let (_, high) = c.fetch_watermarks(&cfg.topic, p, Duration::from_secs(2)).ok()?;
                lag += (high - n).max(0) as u64;
            }
            Some(lag)
        })
        .await;
    }
}

#[async_trait::async_trait]
impl SourceConnector for KafkaSource {
    async fn next_batch(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError> {
        if self.consumer.is_none() {
            self.start().await?;
        }
        let consumer = self.consumer.clone().expect("started");
        let format = self.config.format;
        let mut out = SourceBatch { batch: Batch::default(), bad: Vec::new() };
        let mut deadline = tokio::time::Instant::now() + IDLE;
        while out.batch.records.len() + out.bad.len() < max.max(1) {
            let m = match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    self.consumer = None;
                    return Err(self.err("reading", e));
                }
                Ok(Ok(m)) => m,
            };
            let (p, offset) = (m.partition(), m.offset());
            if self.next.get(&p).is_some_and(|n| offset < *n) {
                continue;
            }
            self.next.insert(p, offset + 1);
            let pos = Position { unit: p as u32, seq: offset as u64 };
            let payload = m.payload().unwrap_or_default();
            match decode(format, payload) {
                Ok(r) => {
                    out.batch.records.push(r);
                    out.batch.positions.push(pos);
                }
                Err(reason) => out.bad.push(BadInput { position: pos, raw: String::from_utf8_lossy(payload).into_owned(), reason }),
            }
            if out.batch.records.len() + out.bad.len() == 1 {
                deadline = tokio::time::Instant::now() + FILL;
            }
        }
        if self.lag.is_none() || self.lag_at.elapsed() > LAG_EVERY {
            self.update_lag().await;
        }
        Ok(Some(out))
    }

    fn describe(&self, pos: Position) -> Value {
        let mut m = dagg_model::Map::with_capacity(3);
        m.insert("topic", Value::from(self.config.topic.as_str()));
        m.insert("partition", Value::from(pos.unit as i64));
        m.insert("offset", Value::from(pos.seq as i64));
        Value::from(m)
    }

    fn checkpoint(&self) -> serde_json::Value {
        let offsets: serde_json::Map<String, serde_json::Value> = self.next.iter().map(|(p, o)| (p.to_string(), json!(o))).collect();
        json!({"topic": self.config.topic, "offsets": offsets})
    }

    async fn seek(&mut self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError> {
        if let Some(t) = checkpoint.get("topic").and_then(|v| v.as_str())
            && t != self.config.topic
        {
            return Err(ConnectorError::Seek(format!("the checkpoint is of topic `{t}`, this source reads `{}`", self.config.topic)));
        }
        let mut offsets = BTreeMap::new();
        if let Some(map) = checkpoint.get("offsets").and_then(|v| v.as_object()) {
            for (p, o) in map {
                let (Ok(p), Some(o)) = (p.parse::<i32>(), o.as_i64()) else {
                    return Err(ConnectorError::Seek(format!("unreadable offsets in the checkpoint: {checkpoint}")));
                };
                offsets.insert(p, o);
            }
        }
        // An empty map is checkpoint 0 of a run that had not read yet: start as a new run.
        self.resume = (!offsets.is_empty()).then_some(offsets);
        self.consumer = None;
        self.next.clear();
        Ok(())
    }

    fn unbounded(&self) -> bool {
        true
    }

    fn lag(&self) -> Option<u64> {
        self.lag
    }

    fn committer(&self) -> Option<Box<dyn SourceCommitter>> {
        Some(Box::new(OffsetCommitter { config: self.config.clone(), group: self.group(), consumer: Arc::default() }))
    }
}

/// Commits a completed checkpoint's offsets to the consumer group, through a consumer of
/// its own (the source's may not exist yet, or be busy reading).
struct OffsetCommitter {
    config: KafkaConfig,
    group: String,
    consumer: Arc<Mutex<Option<Arc<BaseConsumer>>>>,
}

#[async_trait::async_trait]
impl SourceCommitter for OffsetCommitter {
    async fn checkpoint_completed(&self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError> {
        let Some(offsets) = checkpoint.get("offsets").and_then(|v| v.as_object()).filter(|m| !m.is_empty()) else { return Ok(()) };
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            if let (Ok(p), Some(o)) = (p.parse::<i32>(), o.as_i64()) {
                tpl.add_partition_offset(&self.config.topic, p, Offset::Offset(o)).map_err(|e| ConnectorError::Query { target: target(&self.config), reason: e.to_string() })?;
            }
        }
        let existing = self.consumer.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let consumer = match existing {
            Some(c) => c,
            None => {
                let mut cc = client_config(&self.config)?;
                cc.set("group.id", &self.group).set("enable.auto.commit", "false");
                let c: BaseConsumer = cc.create().map_err(|e| ConnectorError::Config(format!("{}: {e}", target(&self.config))))?;
                let c = Arc::new(c);
                *self.consumer.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                c
            }
        };
        let cfg = self.config.clone();
        blocking(move || consumer.commit(&tpl, CommitMode::Sync).map_err(|e| ConnectorError::Query { target: target(&cfg), reason: format!("committing offsets: {e}") })).await
    }
}
