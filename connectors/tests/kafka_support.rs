//! Reading a topic back in the Kafka tests (`connectors/tests/kafka.rs`, and
//! `node/tests/kafka_recovery.rs` by `#[path]`): the broker the tests start, every
//! committed record of a topic from the beginning, and a consumer group's committed offset.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

/// The broker `scripts/kafka.sh start` runs.
pub const BROKER: &str = "127.0.0.1:19092";

/// Calls `each` with every committed record of `topic`'s partitions, from the low watermark
/// to the high one as they stand now, within `limit`.
pub fn read_committed(topic: &str, limit: Duration, mut each: impl FnMut(&BorrowedMessage<'_>)) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("group.id", format!("check-{}", uuid::Uuid::new_v4().simple()))
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut left = HashMap::new();
    for p in md.topics()[0].partitions() {
        let (low, high) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low)).unwrap();
            left.insert(p.id(), high);
        }
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + limit;
    while !left.is_empty() && Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(m) => {
                let m = m.unwrap();
                each(&m);
                if m.offset() + 1 >= left[&m.partition()] {
                    left.remove(&m.partition());
                }
            }
            None => {
                // Transaction markers take the last offsets: ask where the reads are.
                for e in c.position().unwrap().elements() {
                    if let Offset::Offset(o) = e.offset()
                        && left.get(&e.partition()).is_some_and(|h| o >= *h)
                    {
                        left.remove(&e.partition());
                    }
                }
            }
        }
    }
}

/// The consumer group's committed offset on partition 0 of `topic` (-1 before any commit).
pub fn committed_offset(group: &str, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", BROKER).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    match c.committed_offsets(tpl, Duration::from_secs(10)).unwrap().find_partition(topic, 0).unwrap().offset() {
        Offset::Offset(o) => o,
        _ => -1,
    }
}
