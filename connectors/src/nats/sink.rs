//! The `nats` destination: JetStream publishes de-duplicated by `Nats-Msg-Id`, or core NATS
//! publishes. See the module docs of [`super`].

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage as Publish;
use dagg_model::Record;
use dagg_model::spec::streaming::NatsConfig;
use serde_json::json;

use super::{connect, encode, target};
use crate::{ConnectorError, SinkConnector};

/// Publishes awaiting the stream's acknowledgement at most; beyond it `write` waits.
const IN_FLIGHT: usize = 4096;

enum Conn {
    Idle,
    Jet(async_nats::jetstream::Context),
    Core(async_nats::Client),
}

/// A `nats` destination.
pub struct NatsSink {
    config: NatsConfig,
    target: String,
    subject: String,
    conn: Conn,
    /// The prefix of every message id, kept across a resume through the checkpoint token.
    sink_id: String,
    /// Records published in this run: the next message id's number.
    published: u64,
    pending: VecDeque<PublishAckFuture>,
    /// Replayed publishes the stream recognised as duplicates (for the log).
    duplicates: u64,
}

impl NatsSink {
    pub fn open(c: &NatsConfig) -> Result<NatsSink, ConnectorError> {
        let subject = c.subject.clone().ok_or_else(|| ConnectorError::Config("a nats destination needs `subject`".into()))?;
        let sink_id = c.sink_id.clone().unwrap_or_else(|| format!("{subject}-{}", uuid::Uuid::new_v4()));
        Ok(NatsSink { config: c.clone(), target: target(c), subject, conn: Conn::Idle, sink_id, published: 0, pending: VecDeque::new(), duplicates: 0 })
    }

    fn err(&self, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Query { target: self.target.clone(), reason: format!("publishing to `{}`: {e}", self.subject) }
    }

    async fn ready(&mut self) -> Result<(), ConnectorError> {
        if matches!(self.conn, Conn::Idle) {
            let client = connect(&self.config).await?;
            self.conn = match &self.config.stream {
                Some(stream) => {
                    let js = async_nats::jetstream::ContextBuilder::new().max_ack_inflight(IN_FLIGHT * 2).build(client);
                    // A destination stream must exist (and take the subject), as for sources.
                    js.get_stream(stream).await.map_err(|e| ConnectorError::Query { target: self.target.clone(), reason: format!("stream `{stream}`: {e}") })?;
                    Conn::Jet(js)
                }
                None => Conn::Core(client),
            };
        }
        Ok(())
    }

    /// Waits for the stream to acknowledge publishes until at most `keep` are in flight.
    async fn settle(&mut self, keep: usize) -> Result<(), ConnectorError> {
        while self.pending.len() > keep {
            let f = self.pending.pop_front().expect("not empty");
            match tokio::time::timeout(Duration::from_secs(30), f).await {
                Ok(Ok(ack)) => self.duplicates += u64::from(ack.duplicate),
                Ok(Err(e)) => {
                    self.pending.clear();
                    return Err(self.err(e));
                }
                Err(_) => {
                    self.pending.clear();
                    return Err(ConnectorError::Timeout { target: self.target.clone(), seconds: 30, reason: "no acknowledgement of a publish".into() });
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl SinkConnector for NatsSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        self.ready().await?;
        let format = self.config.format;
        let mut refused = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let payload = encode(format, r);
            match &self.conn {
                Conn::Jet(js) => {
                    let id = format!("{}:{}", self.sink_id, self.published);
                    let msg = Publish::build().payload(payload.into()).message_id(id);
                    match js.send_publish(self.subject.clone(), msg).await {
                        Ok(f) => self.pending.push_back(f),
                        Err(e) if matches!(e.kind(), async_nats::jetstream::context::PublishErrorKind::MaxPayloadExceeded) => {
                            refused.push((i, format!("the message is larger than the server accepts: {e}")));
                            continue;
                        }
                        Err(e) => return Err(self.err(e)),
                    }
                }
                Conn::Core(client) => client.publish(self.subject.clone(), payload.into()).await.map_err(|e| self.err(e))?,
                Conn::Idle => unreachable!("connected above"),
            }
            self.published += 1;
            if self.pending.len() >= IN_FLIGHT {
                self.settle(IN_FLIGHT / 2).await?;
            }
        }
        Ok(refused)
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        self.pre_commit(0).await.map(|_| ())
    }

    /// Published messages cannot be taken back; what an abandoned run published stays.
    async fn abort(&mut self) -> Result<(), ConnectorError> {
        self.pending.clear();
        Ok(())
    }

    async fn pre_commit(&mut self, _epoch: u64) -> Result<serde_json::Value, ConnectorError> {
        match &self.conn {
            Conn::Jet(_) => self.settle(0).await?,
            Conn::Core(c) => c.flush().await.map_err(|e| self.err(e))?,
            Conn::Idle => {}
        }
        if self.duplicates > 0 {
            tracing::info!(sink_id = %self.sink_id, duplicates = self.duplicates, "replayed publishes dropped by the stream's de-duplication");
            self.duplicates = 0;
        }
        Ok(json!({"sink_id": self.sink_id, "published": self.published, "subject": self.subject}))
    }

    /// Continues the message ids where the checkpoint left them: the replay republishes the
    /// same records under the same ids, which the stream drops as duplicates.
    async fn recover(&mut self, token: &serde_json::Value, _epoch: u64) -> Result<(), ConnectorError> {
        self.pending.clear();
        if let Some(id) = token.get("sink_id").and_then(|v| v.as_str()) {
            self.sink_id = id.to_string();
        }
        self.published = token.get("published").and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(())
    }
}
