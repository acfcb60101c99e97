//! `kafka`: a topic of any Kafka-compatible broker (rdkafka, librdkafka built in).
//!
//! # Source
//! Every partition of `topic` is assigned to the source directly (no group rebalancing: the
//! checkpoint, not the broker, says where each partition continues). A record's position is
//! `(partition, offset)`; a checkpoint is the next offset of every partition. Offsets are
//! committed to the consumer group `group_id` (default: the pipeline's name) only through the
//! [`SourceCommitter`](crate::SourceCommitter), once a checkpoint covering them completed. A
//! resumed run seeks each partition to its checkpoint; a run without a checkpoint starts at
//! the group's committed offsets, else at the beginning. Records are read
//! `isolation.level=read_committed`.
//!
//! Within a partition a replay is the same records in the same order. Across partitions
//! the interleaving of a replay can differ from the interrupted attempt's: the destinations
//! that detect an already-written replay by counting records (PostgreSQL, MySQL, the JetStream
//! and Kafka destinations) are exact for a source topic of one partition; with several
//! partitions a crash may repeat some records of the last epoch (at least once).
//!
//! # Destination
//! An idempotent producer (`enable.idempotence`), with `transactional` (default) one
//! transaction per epoch, committed at the checkpoint's pre-commit. Every record carries the
//! headers `dagg-sink: <sink_id>` and `dagg-seq: <n>` (`n` counts the records of the run, in
//! order). The checkpoint token records `sink_id`, `n`, and the end offset of every partition
//! after the commit. See [`sink`] for how a resumed run learns what an interrupted one
//! already wrote, and the window that remains.

mod sink;
mod source;

use std::time::Duration;

use dagg_model::spec::streaming::KafkaConfig;
use rdkafka::ClientConfig;

use crate::{ConnectorError, SinkConnector, SourceConnector};

pub use sink::KafkaSink;
pub use source::KafkaSource;

pub(crate) fn source(c: &KafkaConfig) -> Result<Box<dyn SourceConnector>, ConnectorError> {
    Ok(Box::new(KafkaSource::open(c)?))
}

pub(crate) fn sink(c: &KafkaConfig) -> Result<Box<dyn SinkConnector>, ConnectorError> {
    Ok(Box::new(KafkaSink::open(c)?))
}

/// `kafka://host:port/topic`, as messages name it.
pub(crate) fn target(c: &KafkaConfig) -> String {
    format!("kafka://{}/{}", c.bootstrap_servers, c.topic)
}

/// The client settings every connection shares: the servers, the timeout, the user's
/// `properties` (only the allowed ones: the config check refuses the others, and a config
/// that reached here unchecked still never hands librdkafka a plugin, file or command), the
/// secret ones revealed here, where the client is built.
pub(crate) fn client_config(c: &KafkaConfig) -> Result<ClientConfig, ConnectorError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &c.bootstrap_servers).set("socket.connection.setup.timeout.ms", (c.connect_timeout * 1000).to_string());
    for (k, v) in &c.properties.other {
        match dagg_model::spec::streaming::check_kafka_property(k) {
            Ok(()) => {
                cc.set(k, v);
            }
            Err(why) => tracing::warn!(property = %k, "Kafka client property left out: {why}"),
        }
    }
    for (k, secret) in c.properties.secrets() {
        if let Some(s) = secret {
            let clear = crate::secrets::reveal(s).map_err(|e| ConnectorError::Config(format!("{}: properties.{k}: {e}", target(c))))?;
            cc.set(k, clear);
        }
    }
    Ok(cc)
}

/// Whether the egress policy lets the client reach the configured servers. (The addresses a
/// broker advertises in its metadata are librdkafka's to resolve; only the bootstrap list
/// is checked.)
pub(crate) async fn admit(c: &KafkaConfig) -> Result<(), ConnectorError> {
    crate::egress::check_servers(&c.bootstrap_servers, 9092).await.map_err(|e| crate::egress::named(e, &target(c)))
}

pub(crate) fn timeout(c: &KafkaConfig) -> Duration {
    Duration::from_secs(c.connect_timeout)
}

/// Runs a blocking librdkafka call off the async executor.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("a blocking Kafka call does not panic")
}

/// The partitions of `topic`, from the broker's metadata.
pub(crate) fn partitions<C: rdkafka::consumer::Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    c: &KafkaConfig,
) -> Result<Vec<i32>, ConnectorError> {
    let md = consumer.fetch_metadata(Some(&c.topic), timeout(c)).map_err(|e| ConnectorError::Connect { target: target(c), reason: e.to_string() })?;
    let t = md.topics().iter().find(|t| t.name() == c.topic).ok_or_else(|| ConnectorError::Query { target: target(c), reason: "no such topic".into() })?;
    if let Some(e) = t.error() {
        return Err(ConnectorError::Query { target: target(c), reason: format!("topic `{}`: {e:?} (dagg does not create topics; create it first)", c.topic) });
    }
    let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    if ps.is_empty() {
        return Err(ConnectorError::Query { target: target(c), reason: format!("topic `{}` has no partitions (does it exist?)", c.topic) });
    }
    ps.sort_unstable();
    Ok(ps)
}

/// Connects and reads the topic's partitions.
pub(crate) async fn test_connection(c: &KafkaConfig) -> Result<String, ConnectorError> {
    admit(c).await?;
    let c = c.clone();
    blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = client_config(&c)?.create().map_err(|e| ConnectorError::Config(format!("{}: {e}", target(&c))))?;
        let ps = partitions(&consumer, &c)?;
        Ok(format!("connected to {}; topic `{}` has {} partition{}", c.bootstrap_servers, c.topic, ps.len(), if ps.len() == 1 { "" } else { "s" }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secret properties reach librdkafka revealed (a sealed one opened with the
    /// process's key, a clear one stored by an earlier version as is); the others as given.
    #[test]
    fn secret_properties_are_revealed_where_the_client_is_built() {
        let (key, _) = crate::secrets::MasterKey::generate();
        crate::secrets::install_process_key(key.clone());
        let c: KafkaConfig = serde_json::from_value(serde_json::json!({
            "topic": "t",
            "properties": {"sasl.password": key.encrypt("sasl-pw"), "ssl.key.password": "clear-kp", "sasl.username": "dagg", "linger.ms": "5"}
        }))
        .unwrap();
        let cc = client_config(&c).unwrap();
        assert_eq!(cc.get("sasl.password"), Some("sasl-pw"));
        assert_eq!(cc.get("ssl.key.password"), Some("clear-kp"));
        assert_eq!(cc.get("sasl.username"), Some("dagg"));
        assert_eq!(cc.get("linger.ms"), Some("5"));
        assert_eq!(cc.get("ssl.key.pem"), None);
        // A value sealed with another key is a clear error naming the property, not the value.
        let (other, _) = crate::secrets::MasterKey::generate();
        let c: KafkaConfig = serde_json::from_value(serde_json::json!({"topic": "t", "properties": {"sasl.password": other.encrypt("x")}})).unwrap();
        let e = client_config(&c).unwrap_err().to_string();
        assert!(e.contains("properties.sasl.password") && e.contains("does not decrypt"), "{e}");
    }
}
