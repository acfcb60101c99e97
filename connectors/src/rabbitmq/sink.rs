//! The `rabbitmq` destination: persistent, mandatory publishes on a confirm-mode channel,
//! each with a `message_id`. See the module docs of [`super`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{BasicPublishArguments, Channel, ConfirmSelectArguments};
use amqprs::connection::Connection;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use dagg_model::Record;
use dagg_model::spec::streaming::RabbitmqConfig;
use serde_json::json;
use tokio::sync::Notify;

use super::{connect, target};
use crate::nats::encode;
use crate::{ConnectorError, SinkConnector};

/// Publishes awaiting the broker's confirmation at most; beyond it `write` waits.
const IN_FLIGHT: usize = 8192;
/// How long a checkpoint waits for the confirmations.
const CONFIRM_WAIT: u64 = 30;

/// What the broker confirmed, shared with the channel callback.
#[derive(Default)]
struct Confirms {
    /// Publish sequence numbers (1, 2, … per channel) not confirmed yet.
    pending: BTreeSet<u64>,
    /// Why publishing failed since the last checkpoint (nacks, returns, a closed channel).
    failure: Option<String>,
}

#[derive(Clone, Default)]
struct Shared {
    state: Arc<Mutex<Confirms>>,
    changed: Arc<Notify>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut Confirms)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_waiters();
    }
    fn fail(&self, why: String) {
        self.update(|s| {
            s.failure.get_or_insert(why);
        });
    }
}

struct Callback(Shared);

#[async_trait::async_trait]
impl ChannelCallback for Callback {
    async fn close(
        &mut self,
        _channel: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        self.0.fail(format!(
            "the broker closed the channel: {} {}",
            close.reply_code(),
            close.reply_text()
        ));
        Ok(())
    }
    async fn cancel(
        &mut self,
        _channel: &Channel,
        _cancel: Cancel,
    ) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(
        &mut self,
        _channel: &Channel,
        active: bool,
    ) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        let tag = ack.delivery_tag();
        self.0.update(|s| {
            if ack.mutiple() {
                s.pending = s.pending.split_off(&(tag + 1));
            } else {
                s.pending.remove(&tag);
            }
        });
    }
    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        self.0.fail(format!(
            "the broker refused message {} (nack)",
            nack.delivery_tag()
        ));
    }
    async fn publish_return(
        &mut self,
        _channel: &Channel,
        ret: Return,
        _properties: BasicProperties,
        _content: Vec<u8>,
    ) {
        self.0.fail(format!(
            "a message was returned: {} {} (exchange `{}`, routing key `{}`: no queue takes it)",
            ret.reply_code(),
            ret.reply_text(),
            ret.exchange(),
            ret.routing_key()
        ));
    }
}

struct Conn {
    channel: Channel,
    _conn: Connection,
    /// The publish sequence number of the last message on this channel.
    seq: u64,
}

/// A `rabbitmq` destination.
pub struct RabbitmqSink {
    config: RabbitmqConfig,
    target: String,
    routing_key: String,
    conn: Option<Conn>,
    shared: Shared,
    /// The prefix of every `message_id`, kept across a resume through the checkpoint token.
    sink_id: String,
    /// Records published in this run: the next message id's number.
    published: u64,
}

impl RabbitmqSink {
    pub fn open(c: &RabbitmqConfig) -> Result<RabbitmqSink, ConnectorError> {
        super::endpoint(&c.url)?;
        let routing_key = c
            .effective_routing_key()
            .ok_or_else(|| {
                ConnectorError::Config(
                    "a rabbitmq destination needs `routing_key` or `queue`".into(),
                )
            })?
            .to_string();
        let sink_id = c
            .sink_id
            .clone()
            .unwrap_or_else(|| format!("{routing_key}-{}", uuid::Uuid::new_v4()));
        Ok(RabbitmqSink {
            config: c.clone(),
            target: target(c),
            routing_key,
            conn: None,
            shared: Shared::default(),
            sink_id,
            published: 0,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> ConnectorError {
        let exchange = if self.config.exchange.is_empty() {
            "the default exchange"
        } else {
            &self.config.exchange
        };
        ConnectorError::Query {
            target: self.target.clone(),
            reason: format!(
                "publishing to {exchange} with routing key `{}`: {e}",
                self.routing_key
            ),
        }
    }

    async fn ready(&mut self) -> Result<(), ConnectorError> {
        if self.conn.is_none() {
            let conn = connect(&self.config).await?;
            let channel = conn
                .open_channel(None)
                .await
                .map_err(|e| self.err(format!("open a channel: {e}")))?;
            self.shared = Shared::default();
            channel
                .register_callback(Callback(self.shared.clone()))
                .await
                .map_err(|e| self.err(e))?;
            channel
                .confirm_select(ConfirmSelectArguments::default())
                .await
                .map_err(|e| self.err(format!("confirm mode: {e}")))?;
            self.conn = Some(Conn {
                channel,
                _conn: conn,
                seq: 0,
            });
        }
        Ok(())
    }

    /// Waits until at most `keep` publishes await confirmation; fails on a nack, a returned
    /// message or a closed channel (the connection is then dropped and made again).
    async fn settle(&mut self, keep: usize) -> Result<(), ConnectorError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(CONFIRM_WAIT);
        loop {
            let changed = self.shared.changed.clone();
            let notified = changed.notified();
            let (left, failure) = {
                let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                (s.pending.len(), s.failure.take())
            };
            if let Some(why) = failure {
                self.conn = None;
                return Err(self.err(why));
            }
            if left <= keep {
                return Ok(());
            }
            if self.conn.as_ref().is_some_and(|c| !c.channel.is_open()) {
                self.conn = None;
                return Err(self.err(format!(
                    "the channel closed with {left} messages unconfirmed"
                )));
            }
            // Woken by the callback; the timeout also notices a channel that closed quietly.
            if tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(200)),
                notified,
            )
            .await
            .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                self.conn = None;
                return Err(ConnectorError::Timeout {
                    target: self.target.clone(),
                    seconds: CONFIRM_WAIT,
                    reason: format!("no confirmation of {left} publishes"),
                });
            }
        }
    }
}

#[async_trait::async_trait]
impl SinkConnector for RabbitmqSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        self.ready().await?;
        let format = self.config.format;
        for r in records {
            let payload = encode(format, r);
            let id = format!("{}:{}", self.sink_id, self.published);
            let props = BasicProperties::default()
                .with_message_id(&id)
                .with_content_type(
                    if matches!(format, dagg_model::spec::streaming::PayloadFormat::Json) {
                        "application/json"
                    } else {
                        "text/plain"
                    },
                )
                .with_persistence(true)
                .finish();
            let mut args = BasicPublishArguments::new(&self.config.exchange, &self.routing_key);
            args.mandatory(true);
            let conn = self.conn.as_mut().expect("connected above");
            conn.seq += 1;
            let seq = conn.seq;
            self.shared.update(|s| {
                s.pending.insert(seq);
            });
            if let Err(e) = conn.channel.basic_publish(props, payload, args).await {
                self.conn = None;
                return Err(self.err(e));
            }
            self.published += 1;
            if self
                .shared
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pending
                .len()
                >= IN_FLIGHT
            {
                self.settle(IN_FLIGHT / 2).await?;
            }
        }
        Ok(Vec::new())
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        self.pre_commit(0).await.map(|_| ())
    }

    /// Published messages cannot be taken back; what an abandoned run published stays.
    async fn abort(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    async fn pre_commit(&mut self, _epoch: u64) -> Result<serde_json::Value, ConnectorError> {
        if self.conn.is_some() {
            self.settle(0).await?;
        }
        Ok(
            json!({"sink_id": self.sink_id, "published": self.published, "routing_key": self.routing_key}),
        )
    }

    /// Continues the message ids where the checkpoint left them: the replay republishes the
    /// same records under the same ids, so consumers can recognise them.
    async fn recover(
        &mut self,
        token: &serde_json::Value,
        _epoch: u64,
    ) -> Result<(), ConnectorError> {
        if let Some(id) = token.get("sink_id").and_then(|v| v.as_str()) {
            self.sink_id = id.to_string();
        }
        self.published = token.get("published").and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(())
    }
}
