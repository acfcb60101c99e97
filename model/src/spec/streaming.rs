//! Configs of the streaming connectors (`nats`, `kafka`), read like the others in
//! [`connector`](crate::spec::connector): serde reads the shape (`deny_unknown_fields`), then
//! `check_*` applies the rules that span fields and roles, every problem with its path.

use serde::{Deserialize, Serialize};

use crate::error::SpecErrors;
use crate::spec::connector::{Role, Secret};

/// How a message's payload becomes a record (and a record a payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// One JSON object per message (default); anything else goes to the dead letter.
    Json,
    /// Any bytes, as the record `{"payload": "<text>"}` (invalid UTF-8 is replaced).
    /// A destination sends the record's `payload` field (or the record as JSON without one).
    Text,
}

/// `connector_type: nats` — core NATS or JetStream.
///
/// A source with `stream` reads a JetStream stream through a durable pull consumer and
/// acknowledges messages only once a checkpoint covering them has completed; without
/// `stream` it subscribes to `subject` on core NATS (at most once: core NATS keeps nothing).
/// A destination with `stream` publishes to JetStream with a `Nats-Msg-Id` per record, so
/// the stream's de-duplication drops what a replay after a crash publishes again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Server URL(s), comma-separated (default `nats://127.0.0.1:4222`).
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// Source: the subject to read (for JetStream a filter within the stream; optional
    /// there). Destination: the subject records are published to (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The JetStream stream. It must exist: dagg never creates or changes streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Source, JetStream: the durable consumer's name (default: the pipeline's name, made
    /// safe). Created when missing; dagg moves it to its own checkpoint on a resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<String>,
    /// `json` (default) or `text`.
    #[serde(default = "default_payload_format")]
    pub format: PayloadFormat,
    /// User name for user/password authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Token authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Seconds to wait for the connection (default 10).
    #[serde(default = "default_nats_connect_timeout")]
    pub connect_timeout: u64,
    /// Source, JetStream: seconds the server waits for an acknowledgement before it
    /// redelivers (default 300). Acks are sent at checkpoints, so keep it well above
    /// `checkpoint.interval_seconds`.
    #[serde(default = "default_ack_wait")]
    pub ack_wait_seconds: u64,
    /// Source, JetStream: messages delivered but not yet acknowledged at most (default:
    /// no limit). A limit below what arrives between two checkpoints stalls reading until
    /// the next checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ack_pending: Option<i64>,
    /// Destination: the prefix of every `Nats-Msg-Id` (default: the subject and a fresh id
    /// per run, kept in the checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_id: Option<String>,
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_payload_format() -> PayloadFormat {
    PayloadFormat::Json
}
fn default_nats_connect_timeout() -> u64 {
    10
}
fn default_ack_wait() -> u64 {
    300
}

impl NatsConfig {
    /// Whether this reads or writes a JetStream stream (else core NATS).
    pub fn jetstream(&self) -> bool {
        self.stream.is_some()
    }
}

/// Checks a `nats` config for `role`, every problem with its path under `path`.
pub fn check_nats(c: &NatsConfig, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    let at = |key: &str| format!("{path}.{key}");
    if c.url.split(',').any(|u| u.trim().is_empty()) {
        errs.push(at("url"), format!("`{}` is not a list of server URLs (`nats://host:4222`, comma-separated)", c.url));
    }
    if let Some(s) = &c.subject
        && (s.is_empty() || s.contains(char::is_whitespace) || s.split('.').any(str::is_empty))
    {
        errs.push(at("subject"), format!("`{s}` is not a NATS subject (dot-separated tokens, no spaces)"));
    }
    for (key, v) in [("stream", &c.stream), ("durable", &c.durable)] {
        if let Some(v) = v
            && (v.is_empty() || v.contains(['.', '*', '>', ' ', '/', '\\']))
        {
            errs.push(at(key), format!("`{v}` is not a valid JetStream name (no `.`, `*`, `>`, `/`, `\\` or spaces)"));
        }
    }
    if c.username.is_none() && c.password.is_some() {
        errs.push(at("password"), "`password` needs `username`");
    }
    if c.token.is_some() && c.username.is_some() {
        errs.push(at("token"), "give either `token` or `username`/`password`, not both");
    }
    if !(1..=3600).contains(&c.connect_timeout) {
        errs.push(at("connect_timeout"), format!("{} is out of range; expected seconds from 1 to 3600", c.connect_timeout));
    }
    if !(1..=86_400).contains(&c.ack_wait_seconds) {
        errs.push(at("ack_wait_seconds"), format!("{} is out of range; expected seconds from 1 to 86400", c.ack_wait_seconds));
    }
    if let Some(m) = c.max_ack_pending
        && m < 1
    {
        errs.push(at("max_ack_pending"), format!("{m} is out of range; expected at least 1 (leave it out for no limit)"));
    }
    match role {
        Role::Source => {
            if c.stream.is_none() && c.subject.is_none() {
                errs.push(at("subject"), "required field `subject` is missing (or give `stream` to read a JetStream stream)");
            }
            if c.stream.is_none() && c.durable.is_some() {
                errs.push(at("durable"), "`durable` names a JetStream consumer: it needs `stream`");
            }
            if c.sink_id.is_some() {
                errs.push(at("sink_id"), "`sink_id` applies only to a destination");
            }
        }
        Role::Sink => {
            if c.subject.is_none() {
                errs.push(at("subject"), "required field `subject` is missing (the subject records are published to)");
            }
            for key in ["durable", "max_ack_pending"] {
                let set = if key == "durable" { c.durable.is_some() } else { c.max_ack_pending.is_some() };
                if set {
                    errs.push(at(key), format!("`{key}` applies only to a source"));
                }
            }
        }
        Role::Any => {}
    }
    (errs.len() == before).then_some(())
}

/// `connector_type: kafka` — a Kafka topic (any Kafka-compatible broker).
///
/// A source reads every partition of `topic`, starting where its checkpoint says (else at
/// the consumer group's committed offsets, else at the beginning), and commits offsets to
/// `group_id` only once a checkpoint covering them has completed. A destination produces
/// with an idempotent producer, in transactions committed at each checkpoint, every record
/// carrying the headers `dagg-sink` and `dagg-seq`, by which a resumed run recognises what
/// an interrupted one had already written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `host:port[,host:port…]` (default `127.0.0.1:9092`).
    #[serde(default = "default_bootstrap_servers")]
    pub bootstrap_servers: String,
    /// The topic to read or write.
    pub topic: String,
    /// Source: the consumer group whose offsets are committed at checkpoints (default: the
    /// pipeline's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// `json` (default) or `text`.
    #[serde(default = "default_payload_format")]
    pub format: PayloadFormat,
    /// Destination: write in transactions committed at checkpoints (default true), so
    /// `read_committed` consumers never see an interrupted epoch.
    #[serde(default = "default_true")]
    pub transactional: bool,
    /// Destination: the value of the `dagg-sink` header and the base of the transactional
    /// id (default: the topic and a fresh id per run, kept in the checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_id: Option<String>,
    /// Seconds to wait for the broker (default 10).
    #[serde(default = "default_nats_connect_timeout")]
    pub connect_timeout: u64,
    /// More librdkafka settings (`session.timeout.ms`, `security.protocol`, …), as strings.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub properties: std::collections::BTreeMap<String, String>,
}

fn default_bootstrap_servers() -> String {
    "127.0.0.1:9092".into()
}
fn default_true() -> bool {
    true
}

/// Checks a `kafka` config for `role`.
pub fn check_kafka(c: &KafkaConfig, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    let at = |key: &str| format!("{path}.{key}");
    if c.bootstrap_servers.split(',').any(|s| !s.trim().contains(':')) {
        errs.push(at("bootstrap_servers"), format!("`{}` is not a list of `host:port`", c.bootstrap_servers));
    }
    if c.topic.is_empty() || c.topic.len() > 249 || !c.topic.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-')) {
        errs.push(at("topic"), format!("`{}` is not a Kafka topic name (letters, digits, `.`, `_`, `-`; at most 249)", c.topic));
    }
    if !(1..=3600).contains(&c.connect_timeout) {
        errs.push(at("connect_timeout"), format!("{} is out of range; expected seconds from 1 to 3600", c.connect_timeout));
    }
    for key in c.properties.keys() {
        if let Err(why) = check_kafka_property(key) {
            errs.push(format!("{path}.properties.{key}"), why);
        }
    }
    match role {
        Role::Source => {
            if c.sink_id.is_some() {
                errs.push(at("sink_id"), "`sink_id` applies only to a destination");
            }
        }
        Role::Sink => {
            if c.group_id.is_some() {
                errs.push(at("group_id"), "`group_id` applies only to a source");
            }
        }
        Role::Any => {}
    }
    (errs.len() == before).then_some(())
}

/// The librdkafka client properties a user may set in `properties` (documented in
/// docs/connectors.md): throughput, batching, timeouts, retries, the security protocol and
/// SASL/SSL settings given by value. Anything else is refused, above all what loads code
/// (`plugin.library.paths`, `ssl.engine.*`), reads files (`*.location`, keytabs) or runs
/// commands (`sasl.kerberos.kinit.cmd`), and `debug` (its output floods the node's log).
pub const KAFKA_ALLOWED_PROPERTIES: &[&str] = &[
    // Identity and metadata.
    "client.id",
    "client.rack",
    "metadata.max.age.ms",
    "topic.metadata.refresh.interval.ms",
    "topic.metadata.refresh.fast.interval.ms",
    "topic.metadata.refresh.sparse",
    "topic.metadata.propagation.max.ms",
    "allow.auto.create.topics",
    "statistics.interval.ms",
    "api.version.request",
    "api.version.request.timeout.ms",
    "broker.address.ttl",
    "broker.address.family",
    // Sizes and connections.
    "message.max.bytes",
    "message.copy.max.bytes",
    "receive.message.max.bytes",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "socket.timeout.ms",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "socket.keepalive.enable",
    "socket.nagle.disable",
    "socket.max.fails",
    "connections.max.idle.ms",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "retry.backoff.ms",
    "retry.backoff.max.ms",
    // Consumer.
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "check.crcs",
    "auto.offset.reset",
    // Producer.
    "acks",
    "request.required.acks",
    "request.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "transaction.timeout.ms",
    "linger.ms",
    "queue.buffering.max.ms",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "queue.buffering.backpressure.threshold",
    "batch.num.messages",
    "batch.size",
    "retries",
    "message.send.max.retries",
    "compression.type",
    "compression.codec",
    "compression.level",
    "sticky.partitioning.linger.ms",
    "partitioner",
    // Security, by value only.
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.pem",
    "ssl.certificate.pem",
    "ssl.key.pem",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "enable.ssl.certificate.verification",
    "ssl.cipher.suites",
    "ssl.curves.list",
    "ssl.sigalgs.list",
];

/// `Ok` when a user may set the Kafka client property `key`, else why not.
pub fn check_kafka_property(key: &str) -> Result<(), String> {
    if matches!(key, "bootstrap.servers" | "group.id" | "enable.auto.commit" | "transactional.id" | "isolation.level" | "enable.idempotence") {
        return Err(format!("`{key}` is set by dagg (it decides when offsets and transactions commit)"));
    }
    if KAFKA_ALLOWED_PROPERTIES.contains(&key) {
        return Ok(());
    }
    let why = if key.starts_with("plugin.") || key.contains("engine") {
        "it loads code into the node"
    } else if key.ends_with(".location") || key.contains("keytab") || key.ends_with(".directory") || key.ends_with(".path") || key.ends_with(".paths") {
        "it names a file on the node (give certificates and keys by value: `ssl.ca.pem`, `ssl.certificate.pem`, `ssl.key.pem`)"
    } else if key.ends_with(".cmd") {
        "it runs a command on the node"
    } else {
        "see docs/connectors.md for the allowed list"
    };
    Err(format!("not an allowed Kafka client property ({why})"))
}

/// `connector_type: rabbitmq` — a RabbitMQ queue (AMQP 0-9-1).
///
/// A source consumes `queue` with manual acknowledgements, sent only once a checkpoint
/// covering the messages has completed; what was delivered but not acknowledged when a run
/// stops or crashes is delivered again by the broker (at least once). A destination
/// publishes every record as a persistent message to `exchange` with `routing_key` (or
/// `queue`), with publisher confirms awaited at each checkpoint, and a `message_id` of
/// `<sink_id>:<n>` by which consumers can drop what a replay publishes again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqConfig {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `amqp://user:password@host:port/vhost` (default
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`; `%2f` is the vhost `/`).
    #[serde(default = "default_amqp_url")]
    pub url: String,
    /// Source: the queue to consume (required; it must exist). Destination: the routing key
    /// when `routing_key` is not given (publishing to the default exchange puts the message
    /// in this queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Destination: the exchange (default `""`, the default exchange). It must exist.
    #[serde(default)]
    pub exchange: String,
    /// Destination: the routing key (default: `queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// Source: messages delivered but not yet acknowledged at most (default 10000). Acks
    /// are sent at checkpoints: a prefetch below what arrives between two checkpoints slows
    /// reading to `prefetch` messages per checkpoint interval.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// `json` (default) or `text`.
    #[serde(default = "default_payload_format")]
    pub format: PayloadFormat,
    /// Destination: the prefix of every `message_id` (default: the routing key and a fresh
    /// id per run, kept in the checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_id: Option<String>,
    /// Seconds to wait for the connection (default 10).
    #[serde(default = "default_nats_connect_timeout")]
    pub connect_timeout: u64,
}

fn default_amqp_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".into()
}
fn default_prefetch() -> u16 {
    10_000
}

impl RabbitmqConfig {
    /// The routing key a destination publishes with.
    pub fn effective_routing_key(&self) -> Option<&str> {
        self.routing_key.as_deref().or(self.queue.as_deref())
    }
}

/// Checks a `rabbitmq` config for `role`.
pub fn check_rabbitmq(c: &RabbitmqConfig, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    let at = |key: &str| format!("{path}.{key}");
    if !c.url.starts_with("amqp://") {
        let why = if c.url.starts_with("amqps://") { " (TLS is not supported by this build)" } else { "" };
        errs.push(at("url"), format!("`{}` is not an AMQP URL (`amqp://user:password@host:5672/vhost`){why}", mask_url(&c.url)));
    }
    for (key, v) in [("queue", &c.queue), ("routing_key", &c.routing_key)] {
        if let Some(v) = v
            && v.len() > 255
        {
            errs.push(at(key), format!("`{key}` is longer than 255 bytes"));
        }
    }
    if c.prefetch == 0 {
        errs.push(at("prefetch"), "0 is out of range; expected 1 to 65535");
    }
    if !(1..=3600).contains(&c.connect_timeout) {
        errs.push(at("connect_timeout"), format!("{} is out of range; expected seconds from 1 to 3600", c.connect_timeout));
    }
    match role {
        Role::Source => {
            if c.queue.as_deref().is_none_or(str::is_empty) {
                errs.push(at("queue"), "required field `queue` is missing (the queue to consume)");
            }
            for (key, set) in [("exchange", !c.exchange.is_empty()), ("routing_key", c.routing_key.is_some()), ("sink_id", c.sink_id.is_some())] {
                if set {
                    errs.push(at(key), format!("`{key}` applies only to a destination"));
                }
            }
        }
        Role::Sink => {
            if c.effective_routing_key().is_none() {
                errs.push(at("routing_key"), "required field `routing_key` is missing (or give `queue` to publish to that queue)");
            }
        }
        Role::Any => {}
    }
    (errs.len() == before).then_some(())
}

/// A URL with its password replaced, for messages.
fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: serde_json::Value, role: Role) -> Result<NatsConfig, Vec<String>> {
        let c: NatsConfig = serde_json::from_value(v).map_err(|e| vec![e.to_string()])?;
        let mut errs = SpecErrors::new();
        match check_nats(&c, "source.config", role, &mut errs) {
            Some(()) => Ok(c),
            None => Err(errs.iter().map(|e| format!("{}: {}", e.path, e.message)).collect()),
        }
    }

    #[test]
    fn a_jetstream_source_needs_only_its_stream() {
        let c = check(json!({"stream": "ORDERS"}), Role::Source).unwrap();
        assert!(c.jetstream());
        assert_eq!(c.url, "nats://127.0.0.1:4222");
        assert_eq!(c.ack_wait_seconds, 300);
    }

    #[test]
    fn role_rules_name_the_key() {
        let e = check(json!({"stream": "S"}), Role::Sink).unwrap_err();
        assert!(e[0].starts_with("source.config.subject: required"), "{e:?}");
        let e = check(json!({"subject": "a.b", "durable": "d"}), Role::Source).unwrap_err();
        assert!(e[0].contains("durable") && e[0].contains("needs `stream`"), "{e:?}");
        let e = check(json!({"subject": "a..b", "stream": "x.y"}), Role::Source).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn kafka_configs_are_checked_with_paths() {
        let c: KafkaConfig = serde_json::from_value(json!({"topic": "orders", "properties": {"session.timeout.ms": "6000"}})).unwrap();
        let mut errs = SpecErrors::new();
        assert!(check_kafka(&c, "source.config", Role::Source, &mut errs).is_some());
        assert!(c.transactional);
        let c: KafkaConfig = serde_json::from_value(json!({"topic": "a b", "group_id": "g", "properties": {"group.id": "x"}})).unwrap();
        let mut errs = SpecErrors::new();
        assert!(check_kafka(&c, "destination.config", Role::Sink, &mut errs).is_none());
        let paths: Vec<_> = errs.iter().map(|e| e.path.clone()).collect();
        assert_eq!(paths, ["destination.config.topic", "destination.config.properties.group.id", "destination.config.group_id"]);
    }

    #[test]
    fn kafka_properties_pass_an_allow_list_naming_the_refused_key() {
        let props = json!({
            "plugin.library.paths": "/tmp/x.so", "ssl.ca.location": "/etc/shadow", "sasl.kerberos.kinit.cmd": "touch /tmp/p",
            "sasl.kerberos.keytab": "/k", "ssl.engine.location": "/e.so", "ssl_engine_id": "x", "debug": "all",
            "linger.ms": "5", "sasl.password": "pw", "security.protocol": "sasl_ssl", "client.id": "dagg"
        });
        let c: KafkaConfig = serde_json::from_value(json!({"topic": "orders", "properties": props})).unwrap();
        let mut errs = SpecErrors::new();
        assert!(check_kafka(&c, "source.config", Role::Source, &mut errs).is_none());
        let got: Vec<_> = errs.iter().map(|e| format!("{}: {}", e.path, e.message)).collect();
        assert_eq!(got.len(), 7, "{got:?}");
        let plugin = got.iter().find(|e| e.starts_with("source.config.properties.plugin.library.paths: not an allowed Kafka client property")).unwrap();
        assert!(plugin.contains("loads code"), "{plugin}");
        assert!(got.iter().any(|e| e.starts_with("source.config.properties.ssl.ca.location:") && e.contains("names a file")), "{got:?}");
        assert!(got.iter().any(|e| e.starts_with("source.config.properties.sasl.kerberos.kinit.cmd:") && e.contains("runs a command")), "{got:?}");
        for k in ["sasl.kerberos.keytab", "ssl.engine.location", "ssl_engine_id", "debug"] {
            assert!(got.iter().any(|e| e.starts_with(&format!("source.config.properties.{k}: not an allowed"))), "{k}: {got:?}");
        }
        let c: KafkaConfig = serde_json::from_value(json!({"topic": "orders", "properties": {"linger.ms": "5", "sasl.password": "pw", "batch.size": "1000"}})).unwrap();
        assert!(check_kafka(&c, "source.config", Role::Source, &mut SpecErrors::new()).is_some());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(check(json!({"subject": "a", "colour": 1}), Role::Source).unwrap_err()[0].contains("unknown field `colour`"));
    }

    #[test]
    fn rabbitmq_configs_are_checked_with_paths() {
        let c: RabbitmqConfig = serde_json::from_value(json!({"queue": "orders"})).unwrap();
        let mut errs = SpecErrors::new();
        assert!(check_rabbitmq(&c, "source.config", Role::Source, &mut errs).is_some());
        assert_eq!((c.url.as_str(), c.prefetch, c.exchange.as_str()), ("amqp://guest:guest@127.0.0.1:5672/%2f", 10_000, ""));
        assert_eq!(c.effective_routing_key(), Some("orders"));
        let c: RabbitmqConfig = serde_json::from_value(json!({"url": "amqps://u:secret@h", "exchange": "x", "prefetch": 0})).unwrap();
        let mut errs = SpecErrors::new();
        assert!(check_rabbitmq(&c, "source.config", Role::Source, &mut errs).is_none());
        let got: Vec<_> = errs.iter().map(|e| format!("{}: {}", e.path, e.message)).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].starts_with("source.config.url: `amqps://h`") && got[0].contains("TLS"), "{got:?}");
        assert!(got[2].starts_with("source.config.queue: required"), "{got:?}");
        let mut errs = SpecErrors::new();
        let c: RabbitmqConfig = serde_json::from_value(json!({"exchange": "x"})).unwrap();
        assert!(check_rabbitmq(&c, "destination.config", Role::Sink, &mut errs).is_none());
        assert_eq!(errs.iter().next().unwrap().path, "destination.config.routing_key");
    }
}
