//! The `kafka` destination: an idempotent, transactional producer whose records carry
//! `dagg-sink`/`dagg-seq` headers.
//!
//! # Exactly once across a crash
//! Epoch `e`'s records go out in one transaction, committed at checkpoint `e`'s pre-commit;
//! then the runtime records checkpoint `e`. A crash can fall between the two: Kafka holds
//! epoch `e` (committed) but the last recorded checkpoint is `e - 1`, so the resumed run
//! replays epoch `e`'s records. librdkafka cannot resume another producer's transaction, so
//! the sink does not try to: on `recover`, the new producer, under the same transactional
//! id (`dagg-<sink_id>`, from the checkpoint's token), calls `init_transactions`, which
//! fences the dead producer and aborts whatever transaction it left open. Then the sink reads
//! every partition `read_committed` from the end offsets recorded in the token to the end,
//! and collects the `dagg-seq` of every record headed `dagg-sink: <sink_id>`: exactly what
//! an interrupted attempt committed after the checkpoint. The replay gives the same records
//! the same numbers (the count continues from the token's), and the sink skips those numbers.
//!
//! What remains open, honestly:
//! - The replay must give the same records in the same order (true for a source of one
//!   Kafka partition, a JetStream stream, files, tables with a stable order).
//! - A broker without transactional isolation (tansu, used by the tests) shows records of
//!   aborted transactions to `read_committed` readers too. The scan then also sees what an
//!   aborted epoch wrote, and the replay skips it — so the topic holds every record once, but
//!   a consumer of such a broker could have seen an epoch's records before the epoch
//!   committed, as with any non-transactional producer.
//! - Records are refused only when the broker refuses them for their content (too large);
//!   any other delivery error fails the attempt, which is retried from the checkpoint.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use dagg_model::Record;
use dagg_model::spec::streaming::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use super::{blocking, client_config, partitions, target, timeout};
use crate::nats::encode;
use crate::{ConnectorError, SinkConnector};

const SINK_HEADER: &str = "dagg-sink";
const SEQ_HEADER: &str = "dagg-seq";
const IN_FLIGHT: usize = 20_000;

/// A `kafka` destination.
pub struct KafkaSink {
    config: KafkaConfig,
    target: String,
    producer: Option<FutureProducer>,
    sink_id: String,
    /// The number the next record gets (`dagg-seq`).
    seq: u64,
    pending: VecDeque<DeliveryFuture>,
    /// Per partition, the end offset after the last commit: where a recover scans from.
    ends: BTreeMap<i32, i64>,
    /// Numbers an interrupted attempt already wrote: the replay skips them.
    skip: HashSet<u64>,
}

impl KafkaSink {
    pub fn open(c: &KafkaConfig) -> Result<KafkaSink, ConnectorError> {
        let sink_id = c.sink_id.clone().unwrap_or_else(|| format!("{}-{}", c.topic, uuid::Uuid::new_v4()));
        Ok(KafkaSink {
            config: c.clone(),
            target: target(c),
            producer: None,
            sink_id,
            seq: 0,
            pending: VecDeque::new(),
            ends: BTreeMap::new(),
            skip: HashSet::new(),
        })
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Query { target: self.target.clone(), reason: format!("{what}: {e}") }
    }

    /// Creates the producer (fencing an earlier one of the same transactional id, which
    /// aborts its open transaction) and opens the first transaction.
    async fn ready(&mut self) -> Result<(), ConnectorError> {
        if self.producer.is_some() {
            return Ok(());
        }
        super::admit(&self.config).await?;
        let mut cc = client_config(&self.config)?;
        cc.set("enable.idempotence", "true").set("message.timeout.ms", "60000");
        if self.config.transactional {
            cc.set("transactional.id", format!("dagg-{}", self.sink_id));
        }
        let producer: FutureProducer = cc.create().map_err(|e| ConnectorError::Config(format!("{}: {e}", self.target)))?;
        if self.config.transactional {
            let (p, t) = (producer.clone(), timeout(&self.config) * 3);
            blocking(move || p.init_transactions(t).and_then(|()| p.begin_transaction())).await.map_err(|e| self.err("starting a transaction", e))?;
        }
        if self.ends.is_empty() {
            // A new run: what it will write starts at today's end of every partition.
            self.ends = self.end_offsets().await?;
        }
        self.producer = Some(producer);
        Ok(())
    }

    async fn end_offsets(&self) -> Result<BTreeMap<i32, i64>, ConnectorError> {
        let cfg = self.config.clone();
        blocking(move || {
            let consumer: BaseConsumer = client_config(&cfg)?.create().map_err(|e| ConnectorError::Config(format!("{}: {e}", target(&cfg))))?;
            let mut ends = BTreeMap::new();
            for p in partitions(&consumer, &cfg)? {
                let (_, high) = consumer.fetch_watermarks(&cfg.topic, p, timeout(&cfg)).map_err(|e| ConnectorError::Query { target: target(&cfg), reason: format!("partition {p}: {e}") })?;
                ends.insert(p, high);
            }
            Ok(ends)
        })
        .await
    }

    /// Waits for deliveries until at most `keep` are in flight; notes the end offsets.
    async fn settle(&mut self, keep: usize) -> Result<(), ConnectorError> {
        while self.pending.len() > keep {
            let f = self.pending.pop_front().expect("not empty");
            match f.await {
                Ok(Ok(d)) => {
                    let end = self.ends.entry(d.partition).or_insert(0);
                    *end = (*end).max(d.offset + 1);
                }
                Ok(Err((e, _))) => {
                    self.pending.clear();
                    return Err(self.err("delivering a record", e));
                }
                Err(_) => {
                    self.pending.clear();
                    return Err(self.err("delivering a record", "the producer went away"));
                }
            }
        }
        Ok(())
    }

    /// The `dagg-seq` numbers of this sink in every partition from the recorded end
    /// offsets to today's end, read `read_committed`, and today's end offsets.
    async fn written_since(&self) -> Result<(HashSet<u64>, BTreeMap<i32, i64>), ConnectorError> {
        let (cfg, from, sink_id) = (self.config.clone(), self.ends.clone(), self.sink_id.clone());
        blocking(move || {
            let mut cc = client_config(&cfg)?;
            cc.set("group.id", format!("dagg-recover-{}", uuid::Uuid::new_v4()))
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed")
                .set("auto.offset.reset", "earliest");
            let consumer: BaseConsumer = cc.create().map_err(|e| ConnectorError::Config(format!("{}: {e}", target(&cfg))))?;
            let err = |what: String, e: KafkaError| ConnectorError::Query { target: target(&cfg), reason: format!("{what}: {e}") };
            let mut tpl = TopicPartitionList::new();
            let mut ends = BTreeMap::new();
            let mut highs = BTreeMap::new();
            for p in partitions(&consumer, &cfg)? {
                let (low, high) = consumer.fetch_watermarks(&cfg.topic, p, timeout(&cfg)).map_err(|e| err(format!("partition {p}"), e))?;
                let start = from.get(&p).copied().unwrap_or(low).max(low);
                highs.insert(p, high.max(start));
                if start < high {
                    tpl.add_partition_offset(&cfg.topic, p, Offset::Offset(start)).map_err(|e| err("assign".into(), e))?;
                    ends.insert(p, high);
                }
            }
            let mut seen = HashSet::new();
            if ends.is_empty() {
                return Ok((seen, highs));
            }
            consumer.assign(&tpl).map_err(|e| err("assign".into(), e))?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        if let Some(h) = m.headers() {
                            let mut mine = false;
                            let mut seq = None;
                            for hd in h.iter() {
                                match (hd.key, hd.value) {
                                    (SINK_HEADER, Some(v)) => mine = v == sink_id.as_bytes(),
                                    (SEQ_HEADER, Some(v)) => seq = std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok()),
                                    _ => {}
                                }
                            }
                            if let (true, Some(s)) = (mine, seq) {
                                seen.insert(s);
                            }
                        }
                        if m.offset() + 1 >= ends[&m.partition()] {
                            ends.remove(&m.partition());
                        }
                    }
                    Some(Err(e)) => return Err(err("reading back".into(), e)),
                    None => {
                        // Transaction markers take offsets no message has: ask where we are.
                        if let Ok(pos) = consumer.position() {
                            for e in pos.elements() {
                                if let Offset::Offset(o) = e.offset()
                                    && ends.get(&e.partition()).is_some_and(|h| o >= *h)
                                {
                                    ends.remove(&e.partition());
                                }
                            }
                        }
                    }
                }
                if ends.is_empty() {
                    return Ok((seen, highs));
                }
                if Instant::now() > deadline {
                    return Err(ConnectorError::Timeout { target: target(&cfg), seconds: 60, reason: "could not read back what the interrupted run wrote".into() });
                }
            }
        })
        .await
    }
}

#[async_trait::async_trait]
impl SinkConnector for KafkaSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        self.ready().await?;
        let format = self.config.format;
        let topic = self.config.topic.clone();
        let mut refused = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let seq = self.seq;
            self.seq += 1;
            if !self.skip.is_empty() && self.skip.remove(&seq) {
                continue;
            }
            let payload = encode(format, r);
            let seq_text = seq.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header { key: SINK_HEADER, value: Some(self.sink_id.as_str()) })
                .insert(Header { key: SEQ_HEADER, value: Some(seq_text.as_str()) });
            let mut record = FutureRecord::<(), [u8]>::to(&topic).payload(payload.as_slice()).headers(headers);
            loop {
                let producer = self.producer.as_ref().expect("ready");
                match producer.send_result(record) {
                    Ok(f) => {
                        self.pending.push_back(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        let keep = self.pending.len() / 2;
                        self.settle(keep).await?;
                        if keep == 0 {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                        refused.push((i, "the record is larger than the broker accepts".to_string()));
                        break;
                    }
                    Err((e, _)) => return Err(self.err("producing", e)),
                }
            }
            if self.pending.len() >= IN_FLIGHT {
                self.settle(IN_FLIGHT / 2).await?;
            }
        }
        Ok(refused)
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.producer.is_none() {
            return Ok(());
        }
        self.settle(0).await?;
        if self.config.transactional {
            let (p, t) = (self.producer.clone().expect("ready"), timeout(&self.config) * 3);
            blocking(move || p.commit_transaction(t)).await.map_err(|e| self.err("committing the transaction", e))?;
            self.producer = None;
        } else {
            let (p, t) = (self.producer.clone().expect("ready"), timeout(&self.config) * 3);
            blocking(move || p.flush(t)).await.map_err(|e| self.err("flushing", e))?;
        }
        Ok(())
    }

    async fn abort(&mut self) -> Result<(), ConnectorError> {
        self.pending.clear();
        if let Some(p) = self.producer.take()
            && self.config.transactional
        {
            let t = timeout(&self.config) * 3;
            blocking(move || p.abort_transaction(t)).await.map_err(|e| self.err("aborting the transaction", e))?;
        }
        Ok(())
    }

    async fn pre_commit(&mut self, _epoch: u64) -> Result<serde_json::Value, ConnectorError> {
        self.ready().await?;
        self.settle(0).await?;
        let p = self.producer.clone().expect("ready");
        let t = timeout(&self.config) * 3;
        if self.config.transactional {
            blocking(move || p.commit_transaction(t).and_then(|()| p.begin_transaction())).await.map_err(|e| self.err("committing the transaction", e))?;
        } else {
            blocking(move || p.flush(t)).await.map_err(|e| self.err("flushing", e))?;
        }
        let ends: serde_json::Map<String, serde_json::Value> = self.ends.iter().map(|(p, o)| (p.to_string(), json!(o))).collect();
        // Numbers still to skip (written by an interrupted attempt, not replayed yet) lie
        // before `ends`, where a later recover does not look: they travel in the token.
        self.skip.retain(|n| *n >= self.seq);
        Ok(json!({"sink_id": self.sink_id, "seq": self.seq, "ends": ends, "skip": ranges(&self.skip), "topic": self.config.topic}))
    }

    async fn recover(&mut self, token: &serde_json::Value, _epoch: u64) -> Result<(), ConnectorError> {
        self.pending.clear();
        self.producer = None;
        if let Some(id) = token.get("sink_id").and_then(|v| v.as_str()) {
            self.sink_id = id.to_string();
        }
        self.seq = token.get("seq").and_then(|v| v.as_u64()).unwrap_or(0);
        self.ends = token
            .get("ends")
            .and_then(|v| v.as_object())
            .map(|m| m.iter().filter_map(|(p, o)| Some((p.parse::<i32>().ok()?, o.as_i64()?))).collect())
            .unwrap_or_default();
        // Fence the interrupted producer first: its open transaction is aborted, so what
        // the scan sees committed stays committed.
        self.ready().await?;
        let (seen, highs) = self.written_since().await?;
        self.skip = seen;
        for pair in token.get("skip").and_then(|v| v.as_array()).into_iter().flatten() {
            if let (Some(a), Some(b)) = (pair.get(0).and_then(|v| v.as_u64()), pair.get(1).and_then(|v| v.as_u64())) {
                self.skip.extend(a..=b);
            }
        }
        self.skip.retain(|n| *n >= self.seq);
        // Later scans start after what was just read.
        self.ends = highs;
        if !self.skip.is_empty() {
            tracing::info!(sink_id = %self.sink_id, records = self.skip.len(), "records the interrupted run committed after its checkpoint: the replay skips them");
        }
        Ok(())
    }
}

/// A set of numbers as sorted inclusive ranges: `[[a, b], …]`.
fn ranges(set: &HashSet<u64>) -> Vec<[u64; 2]> {
    let mut v: Vec<u64> = set.iter().copied().collect();
    v.sort_unstable();
    let mut out: Vec<[u64; 2]> = Vec::new();
    for n in v {
        match out.last_mut() {
            Some(r) if r[1] + 1 == n => r[1] = n,
            _ => out.push([n, n]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_sets_travel_as_ranges() {
        let set: HashSet<u64> = [5, 6, 7, 9, 12, 13].into_iter().collect();
        assert_eq!(ranges(&set), vec![[5, 7], [9, 9], [12, 13]]);
    }
}
