//! The `nats` source: a JetStream durable pull consumer, or a core NATS subscription. See
//! the module docs of [`super`] for positions, acknowledgements and resumes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{Config as PullConfig, Stream as PullStream};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use dagg_model::spec::streaming::NatsConfig;
use dagg_model::{Batch, Position, Value};
use futures_util::StreamExt;
use serde_json::json;

use super::{connect, decode, target};
use crate::{BadInput, ConnectorError, SourceBatch, SourceCommitter, SourceConnector};

/// How long `next_batch` waits for a first message before it returns an empty batch.
const IDLE: Duration = Duration::from_millis(500);
/// Once a message is in, how long more arrivals may fill the batch.
const FILL: Duration = Duration::from_millis(100);

enum Reader {
    /// Not connected yet (connecting is async; `open` is not).
    Idle,
    Jet { messages: PullStream },
    Core { sub: async_nats::Subscriber, _client: async_nats::Client },
}

/// A `nats` source.
pub struct NatsSource {
    config: NatsConfig,
    target: String,
    reader: Reader,
    /// The stream sequence of the last message returned (0: none yet); the checkpoint.
    last_seq: Option<u64>,
    /// The ack subject of that message, for the committer.
    last_ack: Option<String>,
    /// Where a seek asked to continue from (the last sequence already handled).
    resume_at: Option<u64>,
    /// Core NATS: messages returned so far (positions only; nothing to resume).
    received: u64,
    lag: Option<u64>,
    /// Identifies this source's consumer incarnation: ack subjects of another one (an
    /// earlier process, a recreated consumer) are never sent.
    instance: Arc<Mutex<Option<(String, async_nats::Client)>>>,
}

impl NatsSource {
    pub fn open(c: &NatsConfig) -> Result<NatsSource, ConnectorError> {
        if c.stream.is_none() && c.subject.is_none() {
            return Err(ConnectorError::Config("a nats source needs `subject` or `stream`".into()));
        }
        Ok(NatsSource {
            config: c.clone(),
            target: target(c),
            reader: Reader::Idle,
            last_seq: None,
            last_ack: None,
            resume_at: None,
            received: 0,
            lag: None,
            instance: Arc::default(),
        })
    }

    fn query_err(&self, what: &str, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Query { target: self.target.clone(), reason: format!("{what}: {e}") }
    }

    /// Connects and positions the reader (see the module docs for the consumer rules).
    async fn start(&mut self) -> Result<(), ConnectorError> {
        let client = connect(&self.config).await?;
        let Some(stream_name) = self.config.stream.clone() else {
            let subject = self.config.subject.clone().unwrap_or_default();
            let sub = client.subscribe(subject.clone()).await.map_err(|e| self.query_err(&format!("subscribe to `{subject}`"), e))?;
            self.reader = Reader::Core { sub, _client: client };
            return Ok(());
        };
        let durable = self.config.durable.clone().unwrap_or_else(|| "dagg".into());
        let js = async_nats::jetstream::new(client.clone());
        let stream = js.get_stream(&stream_name).await.map_err(|e| self.query_err(&format!("stream `{stream_name}` (dagg reads streams that exist; create it first)"), e))?;
        let existing = match stream.consumer_info(&durable).await {
            Ok(info) => Some(info),
            Err(e) if e.to_string().contains("not found") => None,
            Err(e) => return Err(self.query_err(&format!("consumer `{durable}` of stream `{stream_name}`"), e)),
        };
        // Where reading must continue: after the checkpoint, else after the ack floor.
        let (start, keep) = match (self.resume_at, &existing) {
            (Some(seq), Some(info)) => (seq, info.num_ack_pending == 0 && info.delivered.stream_sequence == seq && info.ack_floor.stream_sequence == seq),
            (Some(seq), None) => (seq, false),
            (None, Some(info)) => (info.ack_floor.stream_sequence, info.num_ack_pending == 0),
            (None, None) => (0, false),
        };
        let config = PullConfig {
            durable_name: Some(durable.clone()),
            ack_policy: AckPolicy::All,
            ack_wait: Duration::from_secs(self.config.ack_wait_seconds),
            max_ack_pending: self.config.max_ack_pending.unwrap_or(-1),
            filter_subject: self.config.subject.clone().unwrap_or_default(),
            deliver_policy: if start == 0 { DeliverPolicy::All } else { DeliverPolicy::ByStartSequence { start_sequence: start + 1 } },
            ..Default::default()
        };
        if !keep && existing.is_some() {
            tracing::info!(consumer = %durable, stream = %stream_name, next = start + 1, "moving the durable consumer to the checkpoint");
            stream.delete_consumer(&durable).await.map_err(|e| self.query_err(&format!("reset consumer `{durable}`"), e))?;
        }
        let consumer = if keep {
            stream.get_consumer::<PullConfig>(&durable).await.map_err(|e| self.query_err(&format!("consumer `{durable}`"), e))?
        } else {
            stream.create_consumer(config).await.map_err(|e| self.query_err(&format!("create consumer `{durable}` on stream `{stream_name}`"), e))?
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(1000)
            .expires(Duration::from_secs(5))
            .heartbeat(Duration::from_secs(2))
            .messages()
            .await
            .map_err(|e| self.query_err(&format!("pull from consumer `{durable}`"), e))?;
        if self.last_seq.is_none() && start > 0 {
            self.last_seq = Some(start);
        }
        *self.instance.lock().unwrap_or_else(|e| e.into_inner()) = Some((uuid::Uuid::new_v4().to_string(), client));
        self.reader = Reader::Jet { messages };
        Ok(())
    }

    fn instance_id(&self) -> Option<String> {
        self.instance.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|(id, _)| id.clone())
    }
}

#[async_trait::async_trait]
impl SourceConnector for NatsSource {
    async fn next_batch(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError> {
        if matches!(self.reader, Reader::Idle) {
            self.start().await?;
        }
        let mut out = SourceBatch { batch: Batch::default(), bad: Vec::new() };
        let format = self.config.format;
        let started = tokio::time::Instant::now();
        let mut deadline = started + IDLE;
        while out.batch.records.len() + out.bad.len() < max.max(1) {
            let m = match &mut self.reader {
                Reader::Jet { messages } => match tokio::time::timeout_at(deadline, messages.next()).await {
                    Err(_) => break,
                    Ok(None) => return Err(self.query_err("pull consumer", "the message stream ended")),
                    Ok(Some(Err(e))) => {
                        self.reader = Reader::Idle;
                        return Err(self.query_err("reading the stream", e));
                    }
                    Ok(Some(Ok(m))) => m,
                },
                Reader::Core { sub, .. } => match tokio::time::timeout_at(deadline, sub.next()).await {
                    Err(_) => break,
                    Ok(None) => {
                        self.reader = Reader::Idle;
                        return Err(self.query_err("subscription", "closed by the server"));
                    }
                    Ok(Some(m)) => {
                        self.received += 1;
                        let pos = Position { unit: 0, seq: self.received };
                        match decode(format, &m.payload) {
                            Ok(r) => {
                                out.batch.records.push(r);
                                out.batch.positions.push(pos);
                            }
                            Err(reason) => out.bad.push(BadInput { position: pos, raw: String::from_utf8_lossy(&m.payload).into_owned(), reason }),
                        }
                        if out.batch.records.len() + out.bad.len() == 1 {
                            deadline = tokio::time::Instant::now() + FILL;
                        }
                        continue;
                    }
                },
                Reader::Idle => unreachable!("started above"),
            };
            let info = m.info().map_err(|e| self.query_err("a message without JetStream metadata", e))?;
            let seq = info.stream_sequence;
            self.lag = Some(info.pending);
            if self.last_seq.is_some_and(|last| seq <= last) {
                // A redelivery of something already returned (an ack that came late).
                continue;
            }
            self.last_seq = Some(seq);
            self.last_ack = m.reply.as_ref().map(|r| r.to_string());
            let pos = Position { unit: 0, seq };
            match decode(format, &m.payload) {
                Ok(r) => {
                    out.batch.records.push(r);
                    out.batch.positions.push(pos);
                }
                Err(reason) => out.bad.push(BadInput { position: pos, raw: String::from_utf8_lossy(&m.payload).into_owned(), reason }),
            }
            if out.batch.records.len() + out.bad.len() == 1 {
                deadline = tokio::time::Instant::now() + FILL;
            }
        }
        Ok(Some(out))
    }

    fn describe(&self, pos: Position) -> Value {
        let mut m = dagg_model::Map::with_capacity(2);
        match &self.config.stream {
            Some(s) => {
                m.insert("stream", Value::from(s.as_str()));
                m.insert("seq", Value::from(pos.seq as i64));
            }
            None => {
                m.insert("subject", Value::from(self.config.subject.clone().unwrap_or_default()));
                m.insert("message", Value::from(pos.seq as i64));
            }
        }
        Value::from(m)
    }

    fn checkpoint(&self) -> serde_json::Value {
        match &self.config.stream {
            Some(stream) => json!({
                "stream": stream,
                "consumer": self.config.durable,
                "seq": self.last_seq.or(self.resume_at),
                "ack": self.last_ack,
                "instance": self.instance_id(),
            }),
            // Core NATS keeps nothing to go back to.
            None => json!({"subject": self.config.subject, "received": self.received}),
        }
    }

    async fn seek(&mut self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError> {
        if self.config.stream.is_none() {
            return Ok(());
        }
        if let Some(s) = checkpoint.get("stream").and_then(|v| v.as_str())
            && Some(s) != self.config.stream.as_deref()
        {
            return Err(ConnectorError::Seek(format!("the checkpoint is of stream `{s}`, this source reads `{}`", self.config.stream.as_deref().unwrap_or(""))));
        }
        // No sequence: checkpoint 0 of a run that had not read yet; start as a fresh run.
        self.resume_at = checkpoint.get("seq").and_then(|v| v.as_u64());
        self.last_seq = self.resume_at;
        self.last_ack = None;
        self.reader = Reader::Idle;
        Ok(())
    }

    fn unbounded(&self) -> bool {
        true
    }

    fn lag(&self) -> Option<u64> {
        self.lag
    }

    fn committer(&self) -> Option<Box<dyn SourceCommitter>> {
        self.config.stream.as_ref()?;
        Some(Box::new(JetStreamAcker { instance: self.instance.clone(), target: self.target.clone() }))
    }
}

/// Acknowledges (AckAll) the last message of a completed checkpoint, when that message was
/// delivered to this source's own consumer incarnation.
struct JetStreamAcker {
    instance: Arc<Mutex<Option<(String, async_nats::Client)>>>,
    target: String,
}

#[async_trait::async_trait]
impl SourceCommitter for JetStreamAcker {
    async fn checkpoint_completed(&self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError> {
        let (Some(ack), Some(of)) = (checkpoint.get("ack").and_then(|v| v.as_str()), checkpoint.get("instance").and_then(|v| v.as_str())) else {
            return Ok(());
        };
        let client = match &*self.instance.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((id, client)) if id == of => client.clone(),
            // Another incarnation's delivery: the consumer was put at the checkpoint already.
            _ => return Ok(()),
        };
        // A request, not a bare publish: the server confirms the ack was applied.
        match tokio::time::timeout(Duration::from_secs(10), client.request(ack.to_string(), "+ACK".into())).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ConnectorError::Query { target: self.target.clone(), reason: format!("acknowledging up to stream sequence {}: {e}", checkpoint["seq"]) }),
            Err(_) => Err(ConnectorError::Timeout { target: self.target.clone(), seconds: 10, reason: "no answer to an acknowledgement".into() }),
        }
    }
}
