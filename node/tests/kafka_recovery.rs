//! Exactly once from Kafka to Kafka across crashes: `dagg run` of an unbounded pipeline
//! (a one-partition input topic, a transactional destination over two partitions) killed with
//! SIGKILL twice mid-stream, started again, then stopped with SIGTERM: every record is in the
//! output topic once, and the consumer group's offsets are at the end of the input. The
//! broker is tansu, started by `scripts/kafka.sh start` on 127.0.0.1:19092.

mod common;
#[path = "../../connectors/tests/kafka_support.rs"]
mod kafka_support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kafka_support::{BROKER, committed_offset, read_committed};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

const N: i64 = 100_000;

fn consumer() -> BaseConsumer {
    ClientConfig::new().set("bootstrap.servers", BROKER).set("group.id", format!("check-{}", uuid::Uuid::new_v4())).create().unwrap()
}

/// Records in a topic by its watermarks (transaction markers count too: an upper bound).
fn size(c: &BaseConsumer, topic: &str) -> i64 {
    (0..2).filter_map(|p| c.fetch_watermarks(topic, p, Duration::from_secs(10)).ok()).map(|(l, h)| h - l).sum()
}

fn read_ids(topic: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    read_committed(topic, Duration::from_secs(120), |m| {
        let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(v["name"], format!("Item Number {}", v["id"]), "transformed");
        ids.push(v["id"].as_i64().unwrap());
    });
    ids
}

fn spawn(home: &std::path::Path, pipeline: &std::path::Path) -> Child {
    dagg().env("DAGG_HOME", home).args(["run", "--json", pipeline.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn wait_size(topic: &str, n: i64, child: &mut Child, limit: Duration) -> i64 {
    let started = Instant::now();
    let c = consumer();
    loop {
        let s = size(&c, topic);
        if s >= n || started.elapsed() > limit || child.try_wait().unwrap().is_some() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_kafka_killed_twice_delivers_every_record_exactly_once() {
    let st = std::process::Command::new(repo_root().join("scripts/kafka.sh")).arg("start").status().unwrap();
    assert!(st.success(), "scripts/kafka.sh start");
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let (input, output) = (format!("dagg-in-{id}"), format!("dagg-out-{id}"));
    let admin: AdminClient<_> = ClientConfig::new().set("bootstrap.servers", BROKER).create().unwrap();
    let topics = [NewTopic::new(&input, 1, TopicReplication::Fixed(1)), NewTopic::new(&output, 2, TopicReplication::Fixed(1))];
    for r in admin.create_topics(&topics, &AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", BROKER).set("linger.ms", "5").create().unwrap();
    // A fifth of the input before the first start, the rest as a stream (5,000 records every
    // 0.4 s): the kills then come mid-stream however fast the pipeline is.
    produce(&producer, &input, 1..=N / 5).await;
    let trickle = {
        let (producer, input) = (producer.clone(), input.clone());
        tokio::spawn(async move {
            let mut i = N / 5 + 1;
            while i <= N {
                let end = (i + 4999).min(N);
                produce(&producer, &input, i..=end).await;
                i = end + 1;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };

    let dir = tempfile::tempdir().unwrap();
    let group = format!("kafka-to-kafka-{id}");
    let doc = json!({
        "name": group,
        "source": {"connector_type": "kafka", "config": {"bootstrap_servers": BROKER, "topic": input}},
        "transformations": [{"type": "field_mapping", "field_name": "name", "operation": "title_case"}],
        "destination": {"connector_type": "kafka", "config": {"bootstrap_servers": BROKER, "topic": output}},
        "checkpoint": {"interval_seconds": 0.2}
    });
    let pipeline = dir.path().join("p.json");
    std::fs::write(&pipeline, doc.to_string()).unwrap();
    let home = dir.path().join("home");

    let mut resumed = 0;
    for at in [N / 10, N / 3] {
        let mut child = spawn(&home, &pipeline);
        wait_size(&output, at, &mut child, Duration::from_secs(180));
        // The first start is killed once it has completed a checkpoint (the group's offset
        // moved): a kill before any would leave the second start nothing to resume from.
        let started = Instant::now();
        while committed_offset(&group, &input) < 0 && started.elapsed() < Duration::from_secs(60) && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let n = wait_size(&output, at, &mut child, Duration::from_secs(10));
        resumed += usize::from(kill_mid_stream(child, n, N, "output records"));
    }
    assert!(resumed >= 1, "the second start resumed from a checkpoint");

    let mut child = spawn(&home, &pipeline);
    let n = wait_size(&output, N, &mut child, Duration::from_secs(300));
    trickle.await.unwrap();
    assert!(n >= N, "everything arrived within the time limit ({n})");
    std::thread::sleep(Duration::from_millis(800));
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a stopped unbounded run exits 0: {}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "success", "{summary}");

    let mut ids = read_ids(&output);
    ids.sort_unstable();
    let total = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), total, "no record twice");
    assert_eq!(ids, (1..=N).collect::<Vec<_>>(), "every record, once");

    // The graceful stop committed the group's offset at the end of the input.
    assert_eq!(committed_offset(&group, &input), N);
}

/// Produces `{"id": i, "name": "item number i"}` for each i in `ids`, waiting for every ack.
async fn produce(producer: &FutureProducer, topic: &str, ids: std::ops::RangeInclusive<i64>) {
    let mut pending = Vec::new();
    for i in ids {
        let body = json!({"id": i, "name": format!("item number {i}")}).to_string();
        pending.push(producer.send_result(FutureRecord::<(), _>::to(topic).payload(&body)).map_err(|(e, _)| e).unwrap());
        if pending.len() >= 5000 {
            for f in pending.drain(..) {
                f.await.unwrap().unwrap();
            }
        }
    }
    for f in pending {
        f.await.unwrap().unwrap();
    }
}
