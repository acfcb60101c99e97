//! The `redis` connector against the machine's Redis on 127.0.0.1:6379 (a test FAILS when it
//! is down): stream entries acknowledged only after their checkpoint, a restarted consumer
//! reading its pending entries first, hash and stream destinations that write at the
//! checkpoint and skip a replayed epoch after a crash, and the connection's rules (egress,
//! credentials). Every test uses keys of its own and deletes them.

mod support;

use std::time::{Duration, Instant};

use dagg_connectors::{SourceConnector, open_sink, open_source, test_connection_as};
use dagg_model::spec::connector::Role;
use redis::aio::MultiplexedConnection;
use serde_json::{Value as Json, json};
use support::*;

const START: &str = "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no";

async fn redis() -> MultiplexedConnection {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    match tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("Redis at 127.0.0.1:6379 is not usable: {e}. Start it with: {START}"),
        Err(_) => panic!("Redis at 127.0.0.1:6379 did not answer within 5 s. Start it with: {START}"),
    }
}

async fn q<T: redis::FromRedisValue>(c: &mut MultiplexedConnection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// `XADD key * id <i> name "item <i>"` for each `i`.
async fn add(c: &mut MultiplexedConnection, stream: &str, ids: std::ops::RangeInclusive<u64>) {
    let mut p = redis::pipe();
    for i in ids {
        p.cmd("XADD").arg(stream).arg("*").arg("id").arg(i).arg("name").arg(format!("item {i}")).ignore();
    }
    let () = p.query_async(c).await.unwrap();
}

/// Entries pending for the group (all consumers).
async fn pending(c: &mut MultiplexedConnection, stream: &str, group: &str) -> i64 {
    let v: redis::Value = q(c, &["XPENDING", stream, group]).await;
    match v {
        redis::Value::Array(a) => match &a[0] {
            redis::Value::Int(n) => *n,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

fn stream_source(stream: &str, extra: Json) -> dagg_model::spec::connector::ConnectorSpec {
    let mut c = json!({"url": "redis://127.0.0.1:6379", "stream": stream, "group": "dagg", "follow": false});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    spec(json!({"connector_type": "redis", "config": c}), Role::Source)
}

fn sink_spec(config: Json) -> dagg_model::spec::connector::ConnectorSpec {
    spec(json!({"connector_type": "redis", "config": config}), Role::Sink)
}

fn ids(records: &[dagg_model::Record]) -> Vec<String> {
    records.iter().map(|r| r.get("id").unwrap().to_text()).collect()
}

async fn read(src: &mut Box<dyn SourceConnector>, max: usize) -> Vec<dagg_model::Record> {
    src.next_batch(max).await.unwrap().expect("not at the end").batch.records
}

const BASE: &str = ".";

#[tokio::test]
async fn stream_entries_are_acknowledged_only_after_their_checkpoint_completes() {
    let mut c = redis().await;
    let stream = format!("dagg-test-ack-{}", suffix());
    add(&mut c, &stream, 1..=10).await;
    let mut src = open_source(&stream_source(&stream, json!({})), BASE.as_ref()).unwrap();
    let acker = src.committer().expect("a stream source acknowledges through the commit hook");
    let first = read(&mut src, 6).await;
    assert_eq!(ids(&first), ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(serde_json::to_value(&first[0]).unwrap(), json!({"id": "1", "name": "item 1"}), "fields as strings");
    let cp = src.checkpoint();
    // Read, checkpointed, but the checkpoint has not completed: nothing acknowledged.
    assert_eq!(pending(&mut c, &stream, "dagg").await, 6);
    let rest = read(&mut src, 100).await;
    assert_eq!(rest.len(), 4);
    assert_eq!(pending(&mut c, &stream, "dagg").await, 10);
    acker.checkpoint_completed(&cp).await.unwrap();
    assert_eq!(pending(&mut c, &stream, "dagg").await, 4, "exactly the first checkpoint's entries acknowledged");
    // The same checkpoint again (as after a restart) changes nothing.
    acker.checkpoint_completed(&cp).await.unwrap();
    assert_eq!(pending(&mut c, &stream, "dagg").await, 4);
    assert!(src.next_batch(10).await.unwrap().is_none(), "follow: false ends at the end");
    let last = src.checkpoint();
    // The acknowledger works on its own connection after the source is gone (a stopping run).
    drop(src);
    acker.checkpoint_completed(&last).await.unwrap();
    assert_eq!(pending(&mut c, &stream, "dagg").await, 0);
    add(&mut c, &stream, 11..=11).await;
    let mut again = open_source(&stream_source(&stream, json!({})), BASE.as_ref()).unwrap();
    assert_eq!(ids(&read(&mut again, 10).await), ["11"], "acknowledged entries are not read again");
    let _: i64 = q(&mut c, &["DEL", &stream]).await;
}

#[tokio::test]
async fn a_restarted_consumer_reads_its_pending_entries_first_in_order() {
    let mut c = redis().await;
    let stream = format!("dagg-test-pending-{}", suffix());
    add(&mut c, &stream, 1..=10).await;
    let mut a = open_source(&stream_source(&stream, json!({"consumer": "worker-1"})), BASE.as_ref()).unwrap();
    assert_eq!(ids(&read(&mut a, 4).await), ["1", "2", "3", "4"]);
    let cp = a.checkpoint();
    assert_eq!(cp["last_id"].as_str().map(|s| s.contains('-')), Some(true), "{cp}");
    assert_eq!(ids(&read(&mut a, 4).await), ["5", "6", "7", "8"]);
    drop(a); // crash: 1..8 delivered, none acknowledged
    add(&mut c, &stream, 11..=12).await;
    // A resume from the checkpoint: this consumer's pending entries after it, then new ones.
    let mut b = open_source(&stream_source(&stream, json!({"consumer": "worker-1"})), BASE.as_ref()).unwrap();
    b.seek(&serde_json::from_str(&cp.to_string()).unwrap()).await.unwrap();
    let mut got = Vec::new();
    while let Some(batch) = b.next_batch(3).await.unwrap() {
        got.extend(ids(&batch.batch.records));
    }
    assert_eq!(got, ["5", "6", "7", "8", "9", "10", "11", "12"]);
    // A fresh run (no checkpoint) reads every entry still pending, from the first.
    let mut fresh = open_source(&stream_source(&stream, json!({"consumer": "worker-1"})), BASE.as_ref()).unwrap();
    let all = read(&mut fresh, 100).await;
    assert_eq!(ids(&all).len(), 12);
    // Another consumer of the group holds none of them.
    let mut other = open_source(&stream_source(&stream, json!({"consumer": "worker-2"})), BASE.as_ref()).unwrap();
    assert!(other.next_batch(10).await.unwrap().is_none());
    // A checkpoint of another consumer is refused: its pending entries are not ours.
    let e = other.seek(&cp).await.unwrap_err().to_string();
    assert!(e.contains("worker-1"), "{e}");
    let _: i64 = q(&mut c, &["DEL", &stream]).await;
}

#[tokio::test]
async fn an_entry_deleted_while_pending_goes_to_the_dead_letter_as_such() {
    let mut c = redis().await;
    let stream = format!("dagg-test-deleted-{}", suffix());
    add(&mut c, &stream, 1..=3).await;
    let mut a = open_source(&stream_source(&stream, json!({})), BASE.as_ref()).unwrap();
    assert_eq!(read(&mut a, 10).await.len(), 3);
    let entries: redis::Value = q(&mut c, &["XRANGE", &stream, "-", "+"]).await;
    let redis::Value::Array(entries) = entries else { panic!() };
    let redis::Value::Array(second) = &entries[1] else { panic!() };
    let redis::Value::BulkString(id) = &second[0] else { panic!() };
    let id = String::from_utf8(id.clone()).unwrap();
    let _: i64 = q(&mut c, &["XDEL", &stream, &id]).await;
    let mut b = open_source(&stream_source(&stream, json!({})), BASE.as_ref()).unwrap();
    let batch = b.next_batch(10).await.unwrap().unwrap();
    assert_eq!(ids(&batch.batch.records), ["1", "3"]);
    assert_eq!(batch.bad.len(), 1);
    assert!(batch.bad[0].reason.contains(&id) && batch.bad[0].reason.contains("deleted"), "{:?}", batch.bad);
    assert_eq!(b.describe(batch.bad[0].position).to_json(), format!(r#"{{"stream":"{stream}","entry":"{id}"}}"#));
    let _: i64 = q(&mut c, &["DEL", &stream]).await;
}

#[tokio::test]
async fn a_following_stream_source_waits_briefly_and_sees_new_entries() {
    let mut c = redis().await;
    let stream = format!("dagg-test-follow-{}", suffix());
    let mut src = open_source(&stream_source(&stream, json!({"follow": true, "start_id": "$"})), BASE.as_ref()).unwrap();
    assert!(src.unbounded());
    let started = Instant::now();
    let b = src.next_batch(10).await.unwrap().expect("an unbounded source never ends");
    assert!(b.batch.is_empty());
    assert!(started.elapsed() < Duration::from_millis(1500), "an idle read returns within a second or so: {:?}", started.elapsed());
    add(&mut c, &stream, 1..=2).await;
    let mut got = Vec::new();
    while got.len() < 2 && started.elapsed() < Duration::from_secs(5) {
        got.extend(ids(&src.next_batch(10).await.unwrap().unwrap().batch.records));
    }
    assert_eq!(got, ["1", "2"]);
    let _: i64 = q(&mut c, &["DEL", &stream]).await;
}

#[tokio::test]
async fn a_list_source_reads_by_index_and_removes_nothing() {
    let mut c = redis().await;
    let list = format!("dagg-test-list-{}", suffix());
    let _: i64 = q(&mut c, &["RPUSH", &list, r#"{"id": 1}"#, r#"{"id": 2}"#, "not json", r#"{"id": 4}"#]).await;
    let s = spec(json!({"connector_type": "redis", "config": {"list": list, "follow": false}}), Role::Source);
    let mut src = open_source(&s, BASE.as_ref()).unwrap();
    let b = src.next_batch(3).await.unwrap().unwrap();
    assert_eq!(ids(&b.batch.records), ["1", "2"]);
    assert_eq!(b.bad.len(), 1);
    assert_eq!(src.describe(b.bad[0].position).to_json(), format!(r#"{{"list":"{list}","index":2}}"#));
    assert_eq!(src.checkpoint(), json!({"list": list, "index": 3}));
    assert_eq!(src.lag(), Some(1));
    assert_eq!(ids(&read(&mut src, 3).await), ["4"]);
    assert!(src.next_batch(3).await.unwrap().is_none());
    assert!(src.committer().is_none(), "a list has nothing to acknowledge");
    assert_eq!(q::<i64>(&mut c, &["LLEN", &list]).await, 4, "reading removes nothing");
    let _: i64 = q(&mut c, &["DEL", &list]).await;
}

#[tokio::test]
async fn a_hash_destination_writes_at_the_checkpoint_under_each_records_key() {
    let mut c = redis().await;
    let prefix = format!("dagg-test-hash-{}:", suffix());
    let mut sink = open_sink(&sink_spec(json!({"key_field": "id", "key_prefix": prefix, "sink_id": format!("{prefix}sink")})), BASE.as_ref()).unwrap();
    let key = |i: u32| format!("{prefix}{i}");
    let _: () = q(&mut c, &["SET", &key(2), "a string"]).await;
    let refused = sink
        .write(&[rec(json!({"id": 1, "name": "a", "qty": 3, "note": null})), rec(json!({"id": 2, "name": "b"})), rec(json!({"name": "no id"})), rec(json!({"id": 3, "tags": [1, 2]}))])
        .await
        .unwrap();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!((refused[0].0, refused[1].0), (1, 2));
    assert!(refused[0].1.contains("holds a string, not a hash"), "{refused:?}");
    assert!(refused[1].1.contains("key field `id` is missing"), "{refused:?}");
    assert_eq!(q::<i64>(&mut c, &["EXISTS", &key(1)]).await, 0, "nothing is visible before the checkpoint");
    let token = sink.pre_commit(1).await.unwrap();
    assert_eq!(token["epoch"], 1);
    let h: Vec<String> = q(&mut c, &["HGETALL", &key(1)]).await;
    assert_eq!(h, ["id", "1", "name", "a", "qty", "3"], "nulls left out, the rest as text");
    let h: Vec<String> = q(&mut c, &["HGETALL", &key(3)]).await;
    assert_eq!(h, ["id", "3", "tags", "[1,2]"]);
    let marker = format!("dagg:sink:{prefix}sink");
    assert_eq!(q::<String>(&mut c, &["HGET", &marker, "records"]).await, "4");
    sink.commit().await.unwrap();
    assert_eq!(q::<i64>(&mut c, &["EXISTS", &marker]).await, 0, "the end of a run deletes the marker");
    let _: i64 = q(&mut c, &["DEL", &key(1), &key(2), &key(3)]).await;
}

/// A crash after the `EXEC` of epoch 2 but before checkpoint 2 was recorded: the resumed
/// destination skips the replayed records of epoch 2 (and repeats its refusals), so the
/// stream holds every record once.
#[tokio::test]
async fn a_stream_destination_skips_an_epoch_it_committed_before_a_crash() {
    let mut c = redis().await;
    let stream = format!("dagg-test-out-{}", suffix());
    let config = json!({"stream": stream});
    let batch = |from: u32, to: u32| (from..=to).map(|i| rec(json!({"id": i}))).collect::<Vec<_>>();
    let mut a = open_sink(&sink_spec(config.clone()), BASE.as_ref()).unwrap();
    a.write(&batch(1, 5)).await.unwrap();
    let token1 = a.pre_commit(1).await.unwrap(); // checkpoint 1 completes with this token
    let mut epoch2 = batch(6, 8);
    epoch2.insert(1, rec(json!({"id": null}))); // refused: no non-null field
    assert_eq!(a.write(&epoch2).await.unwrap().len(), 1);
    a.pre_commit(2).await.unwrap(); // committed in Redis; the process dies before checkpoint 2
    drop(a);
    assert_eq!(q::<i64>(&mut c, &["XLEN", &stream]).await, 8);

    let mut b = open_sink(&sink_spec(config.clone()), BASE.as_ref()).unwrap();
    b.recover(&serde_json::from_str(&token1.to_string()).unwrap(), 1).await.unwrap();
    // The replay from checkpoint 1, with different batch boundaries, then new records.
    let mut replay = epoch2.clone();
    replay.extend(batch(9, 10));
    let refused = b.write(&replay[..2]).await.unwrap();
    assert_eq!(refused.len(), 1, "the refusal of a skipped record is returned again");
    assert_eq!(refused[0].0, 1);
    assert!(b.write(&replay[2..]).await.unwrap().is_empty());
    b.pre_commit(2).await.unwrap();
    b.commit().await.unwrap();
    let v: redis::Value = q(&mut c, &["XRANGE", &stream, "-", "+"]).await;
    let redis::Value::Array(entries) = v else { panic!("{v:?}") };
    let got: Vec<String> = entries
        .into_iter()
        .map(|e| {
            let redis::Value::Array(mut e) = e else { panic!() };
            let fields: Vec<String> = redis::from_redis_value(e.pop().unwrap()).unwrap();
            assert_eq!(fields[0], "id");
            fields[1].clone()
        })
        .collect();
    assert_eq!(got, (1..=10).map(|i| i.to_string()).collect::<Vec<_>>(), "every record once, in order");

    // A crash before the EXEC: nothing of the epoch was written, so nothing is skipped.
    let stream2 = format!("{stream}-2");
    let config = json!({"stream": stream2, "sink_id": format!("{stream2}-sink")});
    let mut a = open_sink(&sink_spec(config.clone()), BASE.as_ref()).unwrap();
    a.write(&batch(1, 3)).await.unwrap();
    let token1 = a.pre_commit(1).await.unwrap();
    a.write(&batch(4, 6)).await.unwrap();
    drop(a); // dies before its barrier
    let mut b = open_sink(&sink_spec(config), BASE.as_ref()).unwrap();
    b.recover(&token1, 1).await.unwrap();
    b.write(&batch(4, 6)).await.unwrap();
    b.pre_commit(2).await.unwrap();
    assert_eq!(q::<i64>(&mut c, &["XLEN", &stream2]).await, 6);
    b.commit().await.unwrap();
    let _: i64 = q(&mut c, &["DEL", &stream, &stream2]).await;
}

#[tokio::test]
async fn the_egress_policy_is_checked_before_connecting() {
    // A link-local address (cloud metadata) is refused without a connection attempt.
    let s = spec(json!({"connector_type": "redis", "config": {"url": "redis://169.254.169.254:6379", "stream": "s", "connect_timeout": 5}}), Role::Source);
    let started = Instant::now();
    let e = test_connection_as(&s, BASE.as_ref(), Role::Source).await.unwrap_err().to_string();
    assert!(e.contains("egress policy") && e.contains("redis://169.254.169.254:6379/0"), "{e}");
    let e = open_source(&s, BASE.as_ref()).unwrap().next_batch(10).await.unwrap_err().to_string();
    assert!(e.contains("egress policy"), "{e}");
    let d = sink_spec(json!({"url": "redis://169.254.169.254:6379", "stream": "s"}));
    let e = open_sink(&d, BASE.as_ref()).unwrap().write(&[rec(json!({"id": 1}))]).await.unwrap_err().to_string();
    assert!(e.contains("egress policy"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2), "refused before any connection attempt: {:?}", started.elapsed());
}

#[tokio::test]
async fn credentials_go_to_the_server_and_never_into_messages() {
    let s = spec(json!({"connector_type": "redis", "config": {"stream": "s", "username": "dagg-nobody", "password": "not-shown"}}), Role::Source);
    let e = test_connection_as(&s, BASE.as_ref(), Role::Source).await.unwrap_err().to_string();
    assert!(e.contains("redis://127.0.0.1:6379/0") && e.to_ascii_lowercase().contains("authentication failed"), "the server refused the login: {e}");
    assert!(!e.contains("not-shown"), "a password in a message: {e}");
    let ok = spec(json!({"connector_type": "redis", "config": {"stream": format!("dagg-test-none-{}", suffix())}}), Role::Source);
    let found = test_connection_as(&ok, BASE.as_ref(), Role::Source).await.unwrap();
    assert!(found.starts_with("connected to redis://127.0.0.1:6379/0 (Redis ") && found.contains("does not exist yet"), "{found}");
}

#[tokio::test]
async fn a_key_of_another_type_is_named_by_the_connection_test_and_the_destination() {
    let mut c = redis().await;
    let key = format!("dagg-test-type-{}", suffix());
    let _: () = q(&mut c, &["SET", &key, "x"]).await;
    let d = sink_spec(json!({"stream": key}));
    let e = test_connection_as(&d, BASE.as_ref(), Role::Sink).await.unwrap_err().to_string();
    assert!(e.contains(&format!("key `{key}` holds a string, not a stream")), "{e}");
    let e = open_sink(&d, BASE.as_ref()).unwrap().write(&[rec(json!({"id": 1}))]).await.unwrap_err().to_string();
    assert!(e.contains("not a stream"), "{e}");
    let _: i64 = q(&mut c, &["DEL", &key]).await;
}
