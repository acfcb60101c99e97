//! The `rabbitmq` connector against the machine's RabbitMQ on 127.0.0.1:5672 (guest/guest):
//! what the destination publishes (with publisher confirms and message ids) the source reads
//! back; the source acknowledges only through the commit hook, so what an uncompleted
//! checkpoint covered is delivered again after the source is dropped; clear errors for a bad
//! URL, an unreachable port, a missing queue and an unroutable message. Each test declares
//! its own queue and deletes it at the end.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use amqprs::BasicProperties;
use amqprs::channel::{
    BasicGetArguments, BasicPublishArguments, Channel, QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use dagg_connectors::{SourceConnector, open_sink, open_source, test_connection_as};
use dagg_model::spec::connector::Role;
use serde_json::json;
use support::*;

/// No credentials in the URL: RabbitMQ's default account (guest/guest) logs in.
const URL: &str = "amqp://127.0.0.1:5672/%2f";

/// A channel of a test's own connection (kept alive with it).
async fn broker() -> (Connection, Channel) {
    let conn = Connection::open(&OpenConnectionArguments::new(
        "127.0.0.1",
        5672,
        "guest",
        "guest",
    ))
    .await
    .expect("RabbitMQ on 127.0.0.1:5672 (guest/guest) is needed: rabbitmq-server -detached");
    let ch = conn.open_channel(None).await.unwrap();
    (conn, ch)
}

/// A fresh durable queue.
async fn queue(ch: &Channel) -> String {
    let name = format!("dagg-test-{}", suffix());
    ch.queue_declare(QueueDeclareArguments::durable_client_named(&name))
        .await
        .unwrap();
    name
}

/// Messages ready in `queue` (delivered-but-unacknowledged ones are not counted).
async fn ready(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(QueueDeclareArguments::new(queue).passive(true).finish())
        .await
        .unwrap()
        .unwrap()
        .1
}

/// Waits until `queue` holds `n` ready messages.
async fn wait_ready(ch: &Channel, queue: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = ready(ch, queue).await;
        if got == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue `{queue}` holds {got} ready messages, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish(ch: &Channel, queue: &str, ids: std::ops::RangeInclusive<i64>) {
    for i in ids {
        let body = json!({"id": i}).to_string().into_bytes();
        ch.basic_publish(
            BasicProperties::default(),
            body,
            BasicPublishArguments::new("", queue),
        )
        .await
        .unwrap();
    }
}

async fn delete(ch: &Channel, queue: &str) {
    ch.queue_delete(QueueDeleteArguments::new(queue))
        .await
        .unwrap();
}

fn ids(records: &[dagg_model::Record]) -> Vec<i64> {
    records
        .iter()
        .map(|r| r.get("id").and_then(|v| v.as_i64()).expect("an id"))
        .collect()
}

/// Reads until `n` records came; empty batches are the idle queue.
async fn read_n(
    src: &mut Box<dyn SourceConnector>,
    max: usize,
    n: usize,
) -> Vec<dagg_model::Record> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records arrived",
            out.len()
        );
        let b = src
            .next_batch(max)
            .await
            .expect("read")
            .expect("a queue never ends");
        assert!(b.batch.len() <= max);
        out.extend(b.batch.records);
    }
    out
}

fn source(queue: &str, prefetch: u16) -> Box<dyn SourceConnector> {
    let cfg = json!({"connector_type": "rabbitmq", "config": {"url": URL, "queue": queue, "prefetch": prefetch}});
    open_source(&spec(cfg, Role::Source), Path::new(".")).unwrap()
}

#[tokio::test]
async fn rabbitmq_destination_publishes_confirmed_messages_with_ids_that_the_source_reads_back() {
    let (_conn, ch) = broker().await;
    let q = queue(&ch).await;
    let sink_id = format!("s-{}", suffix());
    let cfg = json!({"connector_type": "rabbitmq", "config": {"url": URL, "queue": q, "sink_id": sink_id}});
    let mut sink = open_sink(&spec(cfg, Role::Sink), Path::new(".")).unwrap();
    let records: Vec<_> = (1..=50)
        .map(|i| rec(json!({"id": i, "name": format!("n{i}")})))
        .collect();
    assert!(sink.write(&records[..20]).await.unwrap().is_empty());
    assert!(sink.write(&records[20..]).await.unwrap().is_empty());
    let token = sink.pre_commit(1).await.unwrap();
    assert_eq!(token["published"], 50);
    // Confirmed at pre-commit: the broker holds every message now.
    assert_eq!(ready(&ch, &q).await, 50);

    // Each message: the record as JSON, persistent, with `message_id = <sink_id>:<n>`.
    for n in 0..50 {
        let (_, props, body) = ch
            .basic_get(BasicGetArguments::new(&q).no_ack(true).finish())
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(
            props.message_id().map(String::as_str),
            Some(format!("{sink_id}:{n}").as_str())
        );
        assert_eq!(
            props.delivery_mode(),
            Some(amqprs::DELIVERY_MODE_PERSISTENT)
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({"id": n + 1, "name": format!("n{}", n + 1)}));
    }

    // A resumed destination continues the ids from its checkpoint token; the source reads
    // what it publishes back, in order.
    let cfg = json!({"connector_type": "rabbitmq", "config": {"url": URL, "queue": q}});
    let mut sink = open_sink(&spec(cfg, Role::Sink), Path::new(".")).unwrap();
    sink.recover(&token, 1).await.unwrap();
    sink.write(&records).await.unwrap();
    assert_eq!(sink.pre_commit(2).await.unwrap()["published"], 100);
    let mut src = source(&q, 100);
    let got = read_n(&mut src, 30, 50).await;
    assert_eq!(ids(&got), (1..=50).collect::<Vec<_>>());
    assert_eq!(got[0].get("name").and_then(|v| v.as_str()), Some("n1"));
    let cp = src.checkpoint();
    assert_eq!(cp["received"], 50);
    src.committer()
        .unwrap()
        .checkpoint_completed(&cp)
        .await
        .unwrap();
    drop(src);
    wait_ready(&ch, &q, 0).await;
    delete(&ch, &q).await;
}

#[tokio::test]
async fn rabbitmq_source_acks_only_through_the_commit_hook_and_gets_the_rest_again() {
    let (_conn, ch) = broker().await;
    let q = queue(&ch).await;
    publish(&ch, &q, 1..=30).await;
    wait_ready(&ch, &q, 30).await;

    let mut src = source(&q, 1000);
    assert!(src.unbounded());
    let first = read_n(&mut src, 10, 10).await;
    assert_eq!(ids(&first), (1..=10).collect::<Vec<_>>());
    let cp10 = src.checkpoint();
    assert_eq!(cp10["received"], 10);
    assert_eq!(cp10["tag"], 10);
    let more = read_n(&mut src, 5, 5).await;
    assert_eq!(ids(&more), (11..=15).collect::<Vec<_>>());
    // Everything was delivered (prefetch 1000), nothing acknowledged yet.
    wait_ready(&ch, &q, 0).await;

    // Checkpoint 10 completes: 1..=10 are acknowledged (one multiple ack); telling it again
    // (a checkpoint with nothing new, a resume) changes nothing and keeps the channel open.
    let committer = src.committer().unwrap();
    committer.checkpoint_completed(&cp10).await.unwrap();
    committer.checkpoint_completed(&cp10).await.unwrap();
    let rest = read_n(&mut src, 100, 15).await;
    assert_eq!(ids(&rest), (16..=30).collect::<Vec<_>>());
    // The source goes away without completing another checkpoint: 11..=30 go back.
    drop(committer);
    drop(src);
    wait_ready(&ch, &q, 20).await;

    // The next source gets exactly what was not acknowledged, resuming the positions.
    let mut src = source(&q, 1000);
    src.seek(&cp10).await.unwrap();
    let again = read_n(&mut src, 100, 20).await;
    let mut got = ids(&again);
    got.sort();
    assert_eq!(got, (11..=30).collect::<Vec<_>>());
    let cp = src.checkpoint();
    assert_eq!(
        cp["received"], 30,
        "positions continue after the checkpoint's"
    );
    // A checkpoint of another channel (the first source's) is not acknowledged here.
    src.committer()
        .unwrap()
        .checkpoint_completed(&cp10)
        .await
        .unwrap();
    // This one completes: all acknowledged; nothing comes back once the source is gone.
    src.committer()
        .unwrap()
        .checkpoint_completed(&cp)
        .await
        .unwrap();
    let idle = src.next_batch(10).await.unwrap().unwrap();
    assert!(idle.batch.is_empty(), "an idle queue gives an empty batch");
    drop(src);
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_ready(&ch, &q, 0).await;
    delete(&ch, &q).await;
}

#[tokio::test]
async fn rabbitmq_bad_messages_go_to_dead_letters_with_their_position() {
    let (_conn, ch) = broker().await;
    let q = queue(&ch).await;
    publish(&ch, &q, 1..=2).await;
    ch.basic_publish(
        BasicProperties::default(),
        b"[1, 2]".to_vec(),
        BasicPublishArguments::new("", &q),
    )
    .await
    .unwrap();
    publish(&ch, &q, 3..=3).await;
    let mut src = source(&q, 100);
    let mut records = Vec::new();
    let mut bad = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while records.len() + bad.len() < 4 {
        assert!(Instant::now() < deadline);
        let b = src.next_batch(10).await.unwrap().unwrap();
        records.extend(b.batch.records);
        bad.extend(b.bad);
    }
    assert_eq!(ids(&records), [1, 2, 3]);
    assert_eq!(bad.len(), 1);
    assert_eq!((bad[0].position.seq, bad[0].raw.as_str()), (3, "[1, 2]"));
    assert!(
        bad[0].reason.contains("an array, not a JSON object"),
        "{}",
        bad[0].reason
    );
    let described = serde_json::to_value(src.describe(bad[0].position)).unwrap();
    assert_eq!(described, json!({"queue": q, "message": 3}));
    drop(src);
    delete(&ch, &q).await;
}

#[tokio::test]
async fn rabbitmq_errors_name_the_problem_within_the_timeout() {
    let (_conn, ch) = broker().await;
    let q = queue(&ch).await;
    let test = |v: serde_json::Value, role: Role| async move {
        let started = Instant::now();
        let r = test_connection_as(
            &spec(json!({"connector_type": "rabbitmq", "config": v}), role),
            Path::new("."),
            role,
        )
        .await;
        (r, started.elapsed())
    };

    // Fine: says what it found.
    let (r, _) = test(json!({"url": URL, "queue": q}), Role::Source).await;
    let found = r.unwrap();
    assert!(
        found.starts_with("connected to amqp://127.0.0.1:5672/%2f (RabbitMQ "),
        "{found}"
    );
    assert!(
        found.contains(&format!("queue `{q}` holds 0 messages")),
        "{found}"
    );
    let (r, _) = test(
        json!({"url": URL, "exchange": "amq.direct", "routing_key": "k"}),
        Role::Sink,
    )
    .await;
    assert!(r.unwrap().contains("exchange `amq.direct` exists"));

    // Nothing listens on the port: refused at once, the target named without the password.
    let (r, took) = test(
        json!({"url": "amqp://127.0.0.1:1/%2f", "username": "guest", "password": "secret", "queue": q, "connect_timeout": 3}),
        Role::Source,
    )
    .await;
    let e = r.unwrap_err().to_string();
    assert!(
        e.starts_with("cannot connect to amqp://127.0.0.1:1/%2f"),
        "{e}"
    );
    assert!(!e.contains("secret"), "{e}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // An address that never answers: the timeout.
    let (r, took) = test(
        json!({"url": "amqp://10.255.255.1:5672/%2f", "queue": q, "connect_timeout": 2}),
        Role::Source,
    )
    .await;
    let e = r.unwrap_err().to_string();
    assert!(e.contains("amqp://10.255.255.1:5672/%2f"), "{e}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    // Wrong password.
    let (r, took) = test(
        json!({"url": URL, "username": "guest", "password": "wrong", "queue": q}),
        Role::Source,
    )
    .await;
    let e = r.unwrap_err().to_string();
    assert!(
        e.starts_with("cannot connect to amqp://127.0.0.1:5672/%2f"),
        "{e}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    // A queue that does not exist: named, for the test and for a run.
    let missing = format!("dagg-missing-{}", suffix());
    let (r, _) = test(json!({"url": URL, "queue": missing}), Role::Source).await;
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains(&format!("queue `{missing}`")) && e.contains("declare it first"),
        "{e}"
    );
    let mut src = source(&missing, 10);
    let e = src.next_batch(10).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("queue `{missing}`")) && e.contains("must exist"),
        "{e}"
    );

    // A URL that is not AMQP: refused when the spec is read, with its path.
    let mut errs = dagg_model::SpecErrors::new();
    let parsed = dagg_model::spec::connector::parse_connector(
        &json!({"connector_type": "rabbitmq", "config": {"url": "http://h:5672", "queue": "q"}}),
        "source",
        Role::Source,
        &mut errs,
    );
    assert!(parsed.is_none());
    assert!(
        errs.to_string().contains("source.config.url")
            && errs.to_string().contains("not an AMQP URL"),
        "{errs}"
    );

    // A message no queue takes comes back: the checkpoint fails and says so.
    let cfg = json!({"connector_type": "rabbitmq", "config": {"url": URL, "routing_key": format!("nobody-{}", suffix())}});
    let mut sink = open_sink(&spec(cfg, Role::Sink), Path::new(".")).unwrap();
    sink.write(&[rec(json!({"id": 1}))]).await.unwrap();
    let e = sink.pre_commit(1).await.unwrap_err().to_string();
    assert!(
        e.contains("returned") && e.contains("no queue takes it"),
        "{e}"
    );
    delete(&ch, &q).await;
}
