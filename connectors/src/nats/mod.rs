//! `nats`: core NATS and JetStream.
//!
//! # Source
//! - **JetStream** (`stream` given): a durable pull consumer (`durable`, default the
//!   pipeline's name) with `AckPolicy::All` on a stream that must already exist. A record's
//!   position is its stream sequence; a checkpoint is the last sequence returned. Messages
//!   are acknowledged only through the [`SourceCommitter`](crate::SourceCommitter), once a
//!   checkpoint covering them has completed: acking the checkpoint's last message acks
//!   everything before it. On a resume the consumer is put back exactly at the
//!   checkpoint (deleted and created again at `sequence + 1` unless it is already there),
//!   so what an interrupted attempt had fetched but not checkpointed is read again, in the
//!   same order: a replay is deterministic, which is what the exactly-once destinations
//!   need. A fresh run (no checkpoint) continues from the consumer's ack floor.
//! - **Core NATS** (no `stream`): a subscription to `subject`. Core NATS keeps nothing, so
//!   what arrives while no run listens, or between the last checkpoint and a crash, is gone:
//!   at most once.
//!
//! # Destination
//! - **JetStream**: every record is published with the header `Nats-Msg-Id:
//!   <sink_id>:<n>`, `n` counting the records this destination published in the run (the
//!   count at each checkpoint is in its token). A replay after a crash publishes the same
//!   records in the same order under the same ids, and the stream's de-duplication (within
//!   its `duplicate_window`, two minutes by default) drops them: exactly once in the stream.
//!   A checkpoint waits for the stream to acknowledge every publish.
//! - **Core NATS**: published and flushed at checkpoints: at least once, and only to who
//!   listens at that moment.

mod sink;
mod source;

use std::time::Duration;

use dagg_model::spec::connector::Role;
use dagg_model::spec::streaming::{NatsConfig, PayloadFormat};
use dagg_model::{Map, Record, Value};

use crate::{ConnectorError, SinkConnector, SourceConnector, secrets};

pub use sink::NatsSink;
pub use source::NatsSource;

pub(crate) fn source(c: &NatsConfig) -> Result<Box<dyn SourceConnector>, ConnectorError> {
    Ok(Box::new(NatsSource::open(c)?))
}

pub(crate) fn sink(c: &NatsConfig) -> Result<Box<dyn SinkConnector>, ConnectorError> {
    Ok(Box::new(NatsSink::open(c)?))
}

/// The default durable consumer name for a pipeline: its name with what JetStream refuses in
/// a name replaced.
pub fn durable_name(pipeline: &str) -> String {
    let s: String = pipeline.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if s.is_empty() { "dagg".into() } else { s }
}

/// `nats://host:port[,…]` as errors show it (never with credentials).
pub(crate) fn target(c: &NatsConfig) -> String {
    c.url
        .split(',')
        .map(|u| {
            let u = u.trim();
            match (u.find("://"), u.rfind('@')) {
                (Some(s), Some(at)) if at > s => format!("{}{}", &u[..s + 3], &u[at + 1..]),
                _ => u.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Connects with the configured credentials. The client reconnects by itself; a run whose
/// broker went away sees its reads fail and is retried from its checkpoint.
pub(crate) async fn connect(c: &NatsConfig) -> Result<async_nats::Client, ConnectorError> {
    let target = target(c);
    let named = target.clone();
    let mut opts = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(c.connect_timeout)).event_callback(move |event| {
        let named = named.clone();
        async move {
            // A connection that drops is reported; the client reconnects by itself.
            match event {
                async_nats::Event::Connected => tracing::info!("{named}: connected"),
                other => tracing::warn!("{named}: {other}"),
            }
        }
    });
    if let Some(user) = &c.username {
        let pw = match &c.password {
            Some(p) => secrets::reveal(p).map_err(|e| ConnectorError::Config(format!("{target}: password: {e}")))?,
            None => String::new(),
        };
        opts = opts.user_and_password(user.clone(), pw);
    }
    if let Some(t) = &c.token {
        opts = opts.token(secrets::reveal(t).map_err(|e| ConnectorError::Config(format!("{target}: token: {e}")))?);
    }
    let urls: Vec<String> = c.url.split(',').map(|u| u.trim().to_string()).collect();
    crate::egress::check_servers(&c.url, 4222).await.map_err(|e| crate::egress::named(e, &target))?;
    // Only the configured servers: the ones a server advertises are not checked by the
    // egress policy.
    opts = opts.ignore_discovered_servers();
    let connect = async_nats::connect_with_options(urls.join(","), opts);
    match tokio::time::timeout(Duration::from_secs(c.connect_timeout), connect).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(ConnectorError::Connect { target, reason: e.to_string() }),
        Err(_) => Err(ConnectorError::Timeout { target, seconds: c.connect_timeout, reason: "no connection".into() }),
    }
}

/// A message payload as a record: a JSON object (`json`), or `{"payload": text}` (`text`).
pub(crate) fn decode(format: PayloadFormat, payload: &[u8]) -> Result<Record, String> {
    match format {
        PayloadFormat::Json => match sonic_rs::from_slice::<Map>(payload) {
            Ok(m) => Ok(m),
            Err(_) => match serde_json::from_slice::<serde_json::Value>(payload) {
                Ok(v) => Err(format!("the message is {}, not a JSON object", json_kind(&v))),
                Err(e) => Err(format!("the message is not valid JSON: {e}")),
            },
        },
        PayloadFormat::Text => {
            let mut m = Map::with_capacity(1);
            m.insert("payload", Value::from(String::from_utf8_lossy(payload).into_owned()));
            Ok(m)
        }
    }
}

/// A record as a message payload: JSON, or for `text` its `payload` field's text.
pub(crate) fn encode(format: PayloadFormat, record: &Record) -> Vec<u8> {
    match (format, record.get("payload")) {
        (PayloadFormat::Text, Some(Value::String(s))) => s.as_bytes().to_vec(),
        (PayloadFormat::Text, Some(v)) => v.to_text().into_bytes(),
        _ => sonic_rs::to_vec(record).unwrap_or_else(|_| serde_json::to_vec(record).expect("a record serializes")),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Connects, and for JetStream checks that the stream exists; says what it found.
pub(crate) async fn test_connection(c: &NatsConfig, role: Role) -> Result<String, ConnectorError> {
    let target = target(c);
    let client = connect(c).await?;
    let server = client.server_info();
    let Some(stream) = &c.stream else {
        return Ok(format!("connected to {target} (NATS {}); core NATS subject `{}`", server.version, c.subject.as_deref().unwrap_or("")));
    };
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.map_err(|e| ConnectorError::Query { target: target.clone(), reason: format!("stream `{stream}`: {e}") })?;
    let info = s.info().await.map_err(|e| ConnectorError::Query { target: target.clone(), reason: format!("stream `{stream}`: {e}") })?;
    let what = match role {
        Role::Sink => format!("; duplicate window {} s", info.config.duplicate_window.as_secs()),
        _ => String::new(),
    };
    Ok(format!("connected to {target} (NATS {}); stream `{stream}` holds {} messages{what}", server.version, info.state.messages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_never_show_credentials() {
        let c: NatsConfig = serde_json::from_value(serde_json::json!({"url": "nats://u:secret@h:4222, nats://h2:4222", "subject": "a"})).unwrap();
        assert_eq!(target(&c), "nats://h:4222,nats://h2:4222");
    }

    #[test]
    fn payloads_round_trip() {
        let r = decode(PayloadFormat::Json, br#"{"id": 1, "n": "x"}"#).unwrap();
        assert_eq!(decode(PayloadFormat::Json, &encode(PayloadFormat::Json, &r)).unwrap(), r);
        assert_eq!(decode(PayloadFormat::Json, b"[1]").unwrap_err(), "the message is an array, not a JSON object");
        let t = decode(PayloadFormat::Text, b"hello").unwrap();
        assert_eq!(encode(PayloadFormat::Text, &t), b"hello");
        assert_eq!(durable_name("orders to pg"), "orders_to_pg");
    }
}
