//! The `nats` connector against the machine's NATS server (JetStream) on 127.0.0.1:4222:
//! positions and resumes of the JetStream source, acknowledgements only through the commit
//! hook, de-duplicated replays of the JetStream destination, core NATS both ways. Each test
//! uses its own stream and subjects.

mod support;

use std::path::Path;
use std::time::Duration;

use dagg_connectors::{SourceConnector, open_sink, open_source};
use dagg_model::spec::connector::Role;
use serde_json::json;
use support::*;

async fn js() -> async_nats::jetstream::Context {
    let c = async_nats::connect("nats://127.0.0.1:4222").await.expect("NATS with JetStream on 127.0.0.1:4222 is needed (nats-server -js)");
    async_nats::jetstream::new(c)
}

/// A fresh stream on a fresh subject; returns (stream, subject).
async fn stream(js: &async_nats::jetstream::Context) -> (String, String) {
    let id = suffix();
    let (name, subject) = (format!("DAGG_C_{id}"), format!("dagg.c.{id}"));
    js.create_stream(async_nats::jetstream::stream::Config { name: name.clone(), subjects: vec![format!("{subject}.>")], ..Default::default() })
        .await
        .unwrap();
    (name, subject)
}

async fn publish(js: &async_nats::jetstream::Context, subject: &str, ids: std::ops::RangeInclusive<i64>) {
    for i in ids {
        js.publish(subject.to_string(), json!({"id": i}).to_string().into()).await.unwrap().await.unwrap();
    }
}

fn ids(records: &[dagg_model::Record]) -> Vec<i64> {
    records.iter().map(|r| r.get("id").and_then(|v| v.as_i64()).expect("an id")).collect()
}

/// Reads until `n` records came, in batches of `max`; empty batches are the idle stream.
async fn read_n(src: &mut Box<dyn SourceConnector>, max: usize, n: usize) -> Vec<dagg_model::Record> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        assert!(std::time::Instant::now() < deadline, "only {} of {n} records arrived", out.len());
        let b = src.next_batch(max).await.expect("read").expect("a stream never ends");
        out.extend(b.batch.records);
    }
    out
}

#[tokio::test]
async fn jetstream_source_acks_only_through_the_commit_hook_and_resumes_exactly_at_its_checkpoint() {
    let js = js().await;
    let (name, subject) = stream(&js).await;
    publish(&js, &format!("{subject}.a"), 1..=30).await;
    let durable = format!("d_{}", suffix());
    let cfg = json!({"connector_type": "nats", "config": {"stream": name, "subject": format!("{subject}.>"), "durable": durable}});
    let mut src = open_source(&spec(cfg.clone(), Role::Source), Path::new(".")).unwrap();
    assert!(src.unbounded());
    let first = read_n(&mut src, 10, 10).await;
    assert_eq!(ids(&first), (1..=10).collect::<Vec<_>>());
    let cp10 = src.checkpoint();
    assert_eq!(cp10["seq"], 10);
    let more = read_n(&mut src, 5, 5).await;
    assert_eq!(ids(&more), (11..=15).collect::<Vec<_>>());

    // Nothing is acknowledged before the hook.
    let s = js.get_stream(&name).await.unwrap();
    assert_eq!(s.consumer_info(&durable).await.unwrap().ack_floor.stream_sequence, 0);
    src.committer().unwrap().checkpoint_completed(&cp10).await.unwrap();
    assert_eq!(s.consumer_info(&durable).await.unwrap().ack_floor.stream_sequence, 10, "acked up to the checkpoint, not past it");
    assert!(src.lag().is_some());
    drop(src);

    // A new process resumes from checkpoint 10: 11.. again, in order, though 11..=15 had
    // been delivered to the old one.
    let mut src = open_source(&spec(cfg.clone(), Role::Source), Path::new(".")).unwrap();
    src.seek(&cp10).await.unwrap();
    // The old process's ack subject is never replayed against the new consumer.
    src.committer().unwrap().checkpoint_completed(&cp10).await.unwrap();
    let again = read_n(&mut src, 100, 20).await;
    assert_eq!(ids(&again), (11..=30).collect::<Vec<_>>());
    let cp30 = src.checkpoint();
    src.committer().unwrap().checkpoint_completed(&cp30).await.unwrap();
    assert_eq!(s.consumer_info(&durable).await.unwrap().ack_floor.stream_sequence, 30);
    drop(src);

    // No checkpoint (a graceful stop cleared it): continue from the consumer's ack floor.
    publish(&js, &format!("{subject}.b"), 31..=33).await;
    let mut src = open_source(&spec(cfg, Role::Source), Path::new(".")).unwrap();
    assert_eq!(ids(&read_n(&mut src, 100, 3).await), vec![31, 32, 33]);
    let idle = src.next_batch(100).await.unwrap().unwrap();
    assert!(idle.batch.records.is_empty(), "an idle stream returns an empty batch");
    js.delete_stream(&name).await.unwrap();
}

#[tokio::test]
async fn jetstream_source_sends_non_objects_to_the_dead_letter_with_their_sequence() {
    let js = js().await;
    let (name, subject) = stream(&js).await;
    js.publish(format!("{subject}.x"), "[1, 2]".into()).await.unwrap().await.unwrap();
    js.publish(format!("{subject}.x"), "{\"id\": 7}".into()).await.unwrap().await.unwrap();
    let cfg = json!({"connector_type": "nats", "config": {"stream": name, "durable": format!("d_{}", suffix())}});
    let mut src = open_source(&spec(cfg, Role::Source), Path::new(".")).unwrap();
    let mut bad = Vec::new();
    let mut good = Vec::new();
    while good.is_empty() {
        let b = src.next_batch(10).await.unwrap().unwrap();
        bad.extend(b.bad);
        good.extend(b.batch.records);
    }
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].reason, "the message is an array, not a JSON object");
    assert_eq!(src.describe(bad[0].position).to_json(), json!({"stream": name, "seq": 1}).to_string());
    js.delete_stream(&name).await.unwrap();
}

#[tokio::test]
async fn jetstream_sink_replays_publish_nothing_twice() {
    let js = js().await;
    let (name, subject) = stream(&js).await;
    let cfg = json!({"connector_type": "nats", "config": {"stream": name, "subject": format!("{subject}.out")}});
    let records: Vec<_> = (1..=150).map(|i| rec(json!({"id": i}))).collect();
    let mut sink = open_sink(&spec(cfg.clone(), Role::Sink), Path::new(".")).unwrap();
    assert!(sink.write(&records[..100]).await.unwrap().is_empty());
    let token = sink.pre_commit(1).await.unwrap();
    assert_eq!(token["published"], 100);
    sink.write(&records[100..130]).await.unwrap();
    sink.pre_commit(2).await.unwrap();
    drop(sink); // a crash after 130 were published, with checkpoint 1 recorded

    let mut sink = open_sink(&spec(cfg, Role::Sink), Path::new(".")).unwrap();
    sink.recover(&token, 1).await.unwrap();
    sink.write(&records[100..]).await.unwrap(); // the replay, then new records
    sink.commit().await.unwrap();

    let mut s = js.get_stream(&name).await.unwrap();
    assert_eq!(s.info().await.unwrap().state.messages, 150, "the 30 replayed publishes were dropped as duplicates");
    // And in order, each once.
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::Config { durable_name: Some("check".into()), ..Default::default() })
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut batch = consumer.fetch().max_messages(200).expires(Duration::from_secs(2)).messages().await.unwrap();
    use futures_util::StreamExt;
    while let Some(m) = batch.next().await {
        let v: serde_json::Value = serde_json::from_slice(&m.unwrap().payload).unwrap();
        got.push(v["id"].as_i64().unwrap());
    }
    assert_eq!(got, (1..=150).collect::<Vec<_>>());
    js.delete_stream(&name).await.unwrap();
}

#[tokio::test]
async fn core_nats_carries_records_from_a_sink_to_a_source() {
    let subject = format!("dagg.core.{}", suffix());
    let src_cfg = json!({"connector_type": "nats", "config": {"subject": subject}});
    let mut src = open_source(&spec(src_cfg, Role::Source), Path::new(".")).unwrap();
    // The subscription starts with the first read.
    assert!(src.next_batch(10).await.unwrap().unwrap().batch.records.is_empty());
    let mut sink = open_sink(&spec(json!({"connector_type": "nats", "config": {"subject": subject, "format": "text"}}), Role::Sink), Path::new(".")).unwrap();
    sink.write(&[rec(json!({"payload": "{\"id\": 1}"})), rec(json!({"payload": "{\"id\": 2}"}))]).await.unwrap();
    sink.pre_commit(1).await.unwrap();
    assert_eq!(ids(&read_n(&mut src, 10, 2).await), vec![1, 2]);
}

#[tokio::test]
async fn a_missing_stream_is_named_in_the_error() {
    let cfg = json!({"connector_type": "nats", "config": {"stream": format!("NOPE_{}", suffix())}});
    let mut src = open_source(&spec(cfg.clone(), Role::Source), Path::new(".")).unwrap();
    let e = src.next_batch(10).await.err().expect("no such stream").to_string();
    assert!(e.contains("NOPE_") && e.contains("create it first"), "{e}");
    let e = dagg_connectors::test_connection_as(&spec(cfg, Role::Source), Path::new("."), Role::Source).await.unwrap_err().to_string();
    assert!(e.contains("stream `NOPE_"), "{e}");
}
