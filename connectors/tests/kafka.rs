//! The `kafka` connector against a real Kafka-compatible broker (tansu, started by
//! `scripts/kafka.sh start` on 127.0.0.1:19092): offsets committed to the group only
//! through the commit hook, resumes at the checkpoint, and a destination whose replay after a
//! crash writes nothing twice. Each test uses its own topics.

mod kafka_support;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use dagg_connectors::{SourceConnector, open_sink, open_source};
use dagg_model::spec::connector::Role;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use kafka_support::{BROKER, committed_offset, read_committed};
use serde_json::json;
use support::*;

/// Starts the test broker (idempotent) and creates a topic of `partitions`.
async fn topic(partitions: i32) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let st = std::process::Command::new(root.join("scripts/kafka.sh")).arg("start").status().expect("scripts/kafka.sh runs");
    assert!(st.success(), "scripts/kafka.sh start failed");
    let name = format!("dagg-t-{}", suffix());
    let admin: AdminClient<_> = ClientConfig::new().set("bootstrap.servers", BROKER).create().unwrap();
    let r = admin.create_topics(&[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new()).await.unwrap();
    r[0].as_ref().expect("the topic is created");
    name
}

async fn produce(topic: &str, ids: std::ops::RangeInclusive<i64>) {
    let p: FutureProducer = ClientConfig::new().set("bootstrap.servers", BROKER).create().unwrap();
    for i in ids {
        let body = json!({"id": i}).to_string();
        p.send(FutureRecord::<(), _>::to(topic).payload(&body).partition(0), Duration::from_secs(10)).await.unwrap();
    }
}

/// Every record of the topic: (id, dagg-seq header), read from the beginning.
fn read_back(topic: &str) -> Vec<(i64, Option<u64>)> {
    let mut out = Vec::new();
    read_committed(topic, Duration::from_secs(60), |m| {
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let seq = m.headers().and_then(|h| h.iter().find(|x| x.key == "dagg-seq").and_then(|x| std::str::from_utf8(x.value?).ok()?.parse().ok()));
        out.push((v["id"].as_i64().unwrap(), seq));
    });
    out
}

fn ids(records: &[dagg_model::Record]) -> Vec<i64> {
    records.iter().map(|r| r.get("id").and_then(|v| v.as_i64()).unwrap()).collect()
}

async fn read_n(src: &mut Box<dyn SourceConnector>, max: usize, n: usize) -> Vec<dagg_model::Record> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} records arrived", out.len());
        out.extend(src.next_batch(max).await.unwrap().unwrap().batch.records);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_commits_group_offsets_only_through_the_hook_and_resumes_at_its_checkpoint() {
    let t = topic(1).await;
    produce(&t, 1..=30).await;
    let group = format!("g-{}", suffix());
    let cfg = json!({"connector_type": "kafka", "config": {"bootstrap_servers": BROKER, "topic": t, "group_id": group}});
    let mut src = open_source(&spec(cfg.clone(), Role::Source), Path::new(".")).unwrap();
    assert_eq!(ids(&read_n(&mut src, 10, 10).await), (1..=10).collect::<Vec<_>>());
    let cp = src.checkpoint();
    assert_eq!(cp["offsets"]["0"], 10);
    read_n(&mut src, 5, 5).await;
    assert_eq!(committed_offset(&group, &t), -1, "nothing is committed before the hook");
    src.committer().unwrap().checkpoint_completed(&cp).await.unwrap();
    assert_eq!(committed_offset(&group, &t), 10);
    drop(src);

    let mut src = open_source(&spec(cfg.clone(), Role::Source), Path::new(".")).unwrap();
    src.seek(&cp).await.unwrap();
    assert_eq!(ids(&read_n(&mut src, 100, 20).await), (11..=30).collect::<Vec<_>>());
    drop(src);
    // Without a checkpoint: from the group's committed offset.
    let mut src = open_source(&spec(cfg, Role::Source), Path::new(".")).unwrap();
    assert_eq!(ids(&read_n(&mut src, 100, 20).await), (11..=30).collect::<Vec<_>>());
    assert_eq!(src.lag(), Some(0));
    assert_eq!(src.describe(dagg_model::Position { unit: 0, seq: 12 }).to_json(), json!({"topic": t, "partition": 0, "offset": 12}).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_replay_after_a_crash_writes_nothing_twice() {
    let t = topic(2).await;
    let cfg = json!({"connector_type": "kafka", "config": {"bootstrap_servers": BROKER, "topic": t}});
    let records: Vec<_> = (1..=200).map(|i| rec(json!({"id": i}))).collect();
    let mut sink = open_sink(&spec(cfg.clone(), Role::Sink), Path::new(".")).unwrap();
    sink.write(&records[..100]).await.unwrap();
    let token1 = sink.pre_commit(1).await.unwrap();
    // Epoch 2 is committed to Kafka, then the process dies before checkpoint 2 is recorded;
    // and a part of epoch 3 was on its way.
    sink.write(&records[100..130]).await.unwrap();
    sink.pre_commit(2).await.unwrap();
    sink.write(&records[130..140]).await.unwrap();
    drop(sink);

    // Resumed from checkpoint 1: the replay covers 101..=200, with barriers elsewhere.
    let mut sink = open_sink(&spec(cfg.clone(), Role::Sink), Path::new(".")).unwrap();
    sink.recover(&token1, 1).await.unwrap();
    sink.write(&records[100..120]).await.unwrap();
    let token3 = sink.pre_commit(2).await.unwrap();
    sink.write(&records[120..125]).await.unwrap();
    drop(sink); // a second crash, mid-replay

    let mut sink = open_sink(&spec(cfg, Role::Sink), Path::new(".")).unwrap();
    sink.recover(&token3, 2).await.unwrap();
    sink.write(&records[120..]).await.unwrap();
    sink.commit().await.unwrap();

    let mut got: Vec<i64> = read_back(&t).into_iter().map(|(id, _)| id).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=200).collect::<Vec<_>>(), "every record once");
}
