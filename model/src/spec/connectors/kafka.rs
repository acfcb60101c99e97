//! `connector_type: kafka` — a Kafka topic, exactly once both ways (see [`KafkaConfig`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::SpecErrors;
use crate::spec::connector::Role;
use crate::spec::connectors::{ConnectorConfig, ConnectorKind, Roles, Status, schema_of};
use crate::spec::connectors::common::{PayloadFormat, Secret, default_connect_timeout, default_payload_format, default_true};
use crate::spec::reader::parse_json;

/// `connector_type: kafka` — a Kafka topic (any Kafka-compatible broker).
///
/// A source reads every partition of `topic`, starting where its checkpoint says (else at
/// the consumer group's committed offsets, else at the beginning), and commits offsets to
/// `group_id` only once a checkpoint covering them has completed. A destination produces
/// with an idempotent producer, in transactions committed at each checkpoint, every record
/// carrying the headers `dagg-sink` and `dagg-seq`, by which a resumed run recognises what
/// an interrupted one had already written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// More librdkafka settings (`session.timeout.ms`, `security.protocol`, …), as strings.
    /// The secret ones (`sasl.password`, `ssl.key.password`, `ssl.key.pem`) are sealed at
    /// rest and never shown back.
    #[serde(default, skip_serializing_if = "KafkaProperties::is_empty")]
    pub properties: KafkaProperties,
}

/// `properties` of a `kafka` connector: librdkafka settings by name, the secret ones typed
/// as secrets (so they are sealed and masked like every other credential).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KafkaProperties {
    /// The SASL password (with `sasl.username`).
    #[serde(rename = "sasl.password", default, skip_serializing_if = "Option::is_none")]
    pub sasl_password: Option<Secret>,
    /// The password of the private key in `ssl.key.pem`.
    #[serde(rename = "ssl.key.password", default, skip_serializing_if = "Option::is_none")]
    pub ssl_key_password: Option<Secret>,
    /// The client's private key, PEM.
    #[serde(rename = "ssl.key.pem", default, skip_serializing_if = "Option::is_none")]
    pub ssl_key_pem: Option<Secret>,
    /// Every other property (see the allowed list in docs/connectors.md), as a string.
    #[serde(flatten)]
    pub other: BTreeMap<String, String>,
}

impl KafkaProperties {
    /// The secret properties, by their librdkafka names.
    pub fn secrets(&self) -> [(&'static str, Option<&Secret>); 3] {
        [("sasl.password", self.sasl_password.as_ref()), ("ssl.key.password", self.ssl_key_password.as_ref()), ("ssl.key.pem", self.ssl_key_pem.as_ref())]
    }

    /// Every property given, secret or not, by name.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.secrets().into_iter().filter(|(_, s)| s.is_some()).map(|(k, _)| k).chain(self.other.keys().map(String::as_str))
    }

    pub fn is_empty(&self) -> bool {
        self.keys().next().is_none()
    }
}

fn default_bootstrap_servers() -> String {
    "127.0.0.1:9092".into()
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

/// The `kafka` kind.
pub const KIND: ConnectorKind = ConnectorKind {
    name: "kafka",
    aliases: &[],
    summary: "A Kafka topic: a consumer group as a source, a transactional producer as a destination (exactly once).",
    roles: Roles::Both,
    icon: "layers",
    status: Status::Implemented { parse, schema: schema_of::<KafkaConfig> },
};

fn parse(config: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorConfig> {
    let c: KafkaConfig = parse_json(config, path, errs)?;
    check_kafka(&c, path, role, errs)?;
    Some(ConnectorConfig::Kafka(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        // The secret one is typed as a secret; the rest stay strings, and all round-trip.
        assert_eq!(c.properties.sasl_password.as_ref().map(Secret::expose), Some("pw"));
        assert!(!format!("{c:?}").contains("\"pw\""));
        assert_eq!(c.properties.keys().collect::<Vec<_>>(), ["sasl.password", "batch.size", "linger.ms"]);
        assert_eq!(serde_json::to_value(&c.properties).unwrap(), json!({"linger.ms": "5", "sasl.password": "pw", "batch.size": "1000"}));
    }
}
