//! The `rabbitmq` source: one consumer on `queue`, manual acknowledgements sent through the
//! commit hook. See the module docs of [`super`] for what a crash means.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicQosArguments, Channel, ConsumerMessage,
    QueueDeclareArguments,
};
use amqprs::connection::Connection;
use dagg_model::spec::streaming::RabbitmqConfig;
use dagg_model::{Batch, Position, Value};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{connect, target};
use crate::nats::decode;
use crate::{BadInput, ConnectorError, SourceBatch, SourceCommitter, SourceConnector};

/// How long `next_batch` waits for a first message before it returns an empty batch.
const IDLE: Duration = Duration::from_millis(500);
/// Once a message is in, how long more arrivals may fill the batch.
const FILL: Duration = Duration::from_millis(100);

struct Reader {
    rx: UnboundedReceiver<ConsumerMessage>,
}

/// The channel acknowledgements go to, with the id of this incarnation (delivery tags are
/// only meaningful on the channel that delivered them) and the highest tag acknowledged.
/// It holds the connection: a stopping run drops its source before the last checkpoint
/// completes, and that checkpoint's ack must still reach the broker.
struct Acks {
    instance: String,
    channel: Channel,
    _conn: Connection,
    acked: u64,
    prefetch: u16,
}

/// A `rabbitmq` source.
pub struct RabbitmqSource {
    config: RabbitmqConfig,
    queue: String,
    target: String,
    reader: Option<Reader>,
    /// Messages returned so far, over the whole run (positions).
    received: u64,
    /// The delivery tag of the last message returned on the current channel.
    last_tag: Option<u64>,
    lag: Option<u64>,
    acks: Arc<Mutex<Option<Acks>>>,
}

impl RabbitmqSource {
    pub fn open(c: &RabbitmqConfig) -> Result<RabbitmqSource, ConnectorError> {
        super::endpoint(&c.url)?;
        let queue = c
            .queue
            .clone()
            .filter(|q| !q.is_empty())
            .ok_or_else(|| ConnectorError::Config("a rabbitmq source needs `queue`".into()))?;
        Ok(RabbitmqSource {
            config: c.clone(),
            queue,
            target: target(c),
            reader: None,
            received: 0,
            last_tag: None,
            lag: None,
            acks: Arc::default(),
        })
    }

    fn query_err(&self, what: &str, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Query {
            target: self.target.clone(),
            reason: format!("queue `{}`: {what}: {e}", self.queue),
        }
    }

    /// Connects, checks the queue, sets the prefetch and starts consuming.
    async fn start(&mut self) -> Result<(), ConnectorError> {
        let conn = connect(&self.config).await?;
        let channel = conn
            .open_channel(None)
            .await
            .map_err(|e| self.query_err("open a channel", e))?;
        let declared = channel
            .queue_declare(
                QueueDeclareArguments::new(&self.queue)
                    .passive(true)
                    .finish(),
            )
            .await
            .map_err(|e| {
                self.query_err("the queue must exist (dagg does not declare queues)", e)
            })?;
        if let Some((_, messages, _)) = declared {
            self.lag = Some(u64::from(messages));
        }
        channel
            .basic_qos(BasicQosArguments::new(0, self.config.prefetch, false))
            .await
            .map_err(|e| self.query_err("set the prefetch", e))?;
        let instance = uuid::Uuid::new_v4().to_string();
        let args = BasicConsumeArguments::new(&self.queue, &format!("dagg-{instance}"))
            .manual_ack(true)
            .finish();
        let (_, rx) = channel
            .basic_consume_rx(args)
            .await
            .map_err(|e| self.query_err("consume", e))?;
        self.last_tag = None;
        *self.acks.lock().unwrap_or_else(|e| e.into_inner()) = Some(Acks {
            instance,
            channel,
            _conn: conn,
            acked: 0,
            prefetch: self.config.prefetch,
        });
        self.reader = Some(Reader { rx });
        Ok(())
    }

    fn instance_id(&self) -> Option<String> {
        self.acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|a| a.instance.clone())
    }

    /// Closes the channel: what it delivered and nobody acknowledged goes back to the queue.
    fn stop(&mut self) {
        self.reader = None;
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

#[async_trait::async_trait]
impl SourceConnector for RabbitmqSource {
    async fn next_batch(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError> {
        if self.reader.is_none() {
            self.start().await?;
        }
        let mut out = SourceBatch {
            batch: Batch::default(),
            bad: Vec::new(),
        };
        let format = self.config.format;
        let mut deadline = tokio::time::Instant::now() + IDLE;
        while out.batch.records.len() + out.bad.len() < max.max(1) {
            let rx = &mut self.reader.as_mut().expect("started above").rx;
            let m = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => break,
                Ok(None) => {
                    self.stop();
                    return Err(self.query_err(
                        "consuming",
                        "the channel was closed (broker gone, queue deleted or consumer cancelled)",
                    ));
                }
                Ok(Some(m)) => m,
            };
            let Some(deliver) = m.deliver else { continue };
            let payload = m.content.unwrap_or_default();
            self.received += 1;
            self.last_tag = Some(deliver.delivery_tag());
            self.lag = self.lag.map(|l| l.saturating_sub(1));
            let pos = Position {
                unit: 0,
                seq: self.received,
            };
            match decode(format, &payload) {
                Ok(r) => {
                    out.batch.records.push(r);
                    out.batch.positions.push(pos);
                }
                Err(reason) => out.bad.push(BadInput {
                    position: pos,
                    raw: String::from_utf8_lossy(&payload).into_owned(),
                    reason,
                }),
            }
            if out.batch.records.len() + out.bad.len() == 1 {
                deadline = tokio::time::Instant::now() + FILL;
            }
        }
        Ok(Some(out))
    }

    fn describe(&self, pos: Position) -> Value {
        let mut m = dagg_model::Map::with_capacity(2);
        m.insert("queue", Value::from(self.queue.as_str()));
        m.insert("message", Value::from(pos.seq as i64));
        Value::from(m)
    }

    fn checkpoint(&self) -> serde_json::Value {
        json!({"queue": self.queue, "received": self.received, "tag": self.last_tag, "instance": self.instance_id()})
    }

    /// RabbitMQ cannot go back: the messages after the checkpoint are those the broker
    /// delivers again once the old channel is closed. The count only keeps positions growing.
    async fn seek(&mut self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError> {
        if let Some(q) = checkpoint.get("queue").and_then(|v| v.as_str())
            && q != self.queue
        {
            return Err(ConnectorError::Seek(format!(
                "the checkpoint is of queue `{q}`, this source reads `{}`",
                self.queue
            )));
        }
        self.stop();
        self.received = checkpoint
            .get("received")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        self.last_tag = None;
        Ok(())
    }

    fn unbounded(&self) -> bool {
        true
    }

    /// Messages ready in the queue when the consumer started, less those read since (an
    /// estimate: what arrives meanwhile is not counted).
    fn lag(&self) -> Option<u64> {
        self.lag
    }

    fn committer(&self) -> Option<Box<dyn SourceCommitter>> {
        Some(Box::new(RabbitmqAcker {
            acks: self.acks.clone(),
            target: self.target.clone(),
        }))
    }
}

/// Acknowledges (`multiple = true`) the last delivery of a completed checkpoint, when it
/// was delivered on this source's current channel.
struct RabbitmqAcker {
    acks: Arc<Mutex<Option<Acks>>>,
    target: String,
}

#[async_trait::async_trait]
impl SourceCommitter for RabbitmqAcker {
    async fn checkpoint_completed(
        &self,
        checkpoint: &serde_json::Value,
    ) -> Result<(), ConnectorError> {
        let (Some(tag), Some(of)) = (
            checkpoint.get("tag").and_then(|v| v.as_u64()),
            checkpoint.get("instance").and_then(|v| v.as_str()),
        ) else {
            return Ok(());
        };
        let (channel, prefetch) = {
            let mut guard = self.acks.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_mut() {
                // Acking a tag twice (a checkpoint with nothing new) would close the channel.
                Some(a) if a.instance == of && tag > a.acked => {
                    a.acked = tag;
                    (a.channel.clone(), a.prefetch)
                }
                // Another channel's delivery (redelivered already), or acknowledged before.
                _ => return Ok(()),
            }
        };
        let failed = |e: amqprs::error::Error| ConnectorError::Query {
            target: self.target.clone(),
            reason: format!("acknowledging up to delivery tag {tag}: {e}"),
        };
        // `basic.ack` has no answer, and the client only queues it: a request on the same
        // channel that the broker answers (it handles a channel's frames in order) tells
        // that the ack has been applied — before a stopping run closes the connection.
        channel
            .basic_ack(BasicAckArguments::new(tag, true))
            .await
            .map_err(failed)?;
        match tokio::time::timeout(
            Duration::from_secs(10),
            channel.basic_qos(BasicQosArguments::new(0, prefetch, false)),
        )
        .await
        {
            Ok(r) => r.map_err(failed),
            Err(_) => Err(ConnectorError::Timeout {
                target: self.target.clone(),
                seconds: 10,
                reason: format!("no answer after acknowledging up to delivery tag {tag}"),
            }),
        }
    }
}
