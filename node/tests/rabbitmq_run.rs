//! `dagg run` of an unbounded RabbitMQ → file pipeline, stopped with SIGTERM: the graceful
//! stop takes a last checkpoint, the file holds every message once, and the broker got the
//! acknowledgements (the queue is empty once the process is gone; unacknowledged messages
//! would have gone back to it). Needs the machine's RabbitMQ on 127.0.0.1:5672 (guest/guest).

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use amqprs::BasicProperties;
use amqprs::channel::{
    BasicPublishArguments, Channel, ConfirmSelectArguments, QueueDeclareArguments,
    QueueDeleteArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use common::*;
use serde_json::{Value, json};

const N: i64 = 5_000;

async fn ready(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(QueueDeclareArguments::new(queue).passive(true).finish())
        .await
        .unwrap()
        .unwrap()
        .1
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_to_file_run_stopped_with_sigterm_writes_and_acknowledges_every_message() {
    let conn = Connection::open(&OpenConnectionArguments::new(
        "127.0.0.1",
        5672,
        "guest",
        "guest",
    ))
    .await
    .expect("RabbitMQ on 127.0.0.1:5672 (guest/guest) is needed: rabbitmq-server -detached");
    let ch = conn.open_channel(None).await.unwrap();
    let queue = format!(
        "dagg-run-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    ch.queue_declare(QueueDeclareArguments::durable_client_named(&queue))
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectArguments::default())
        .await
        .unwrap();
    for i in 1..=N {
        let body = json!({"id": i, "name": format!("item {i}")})
            .to_string()
            .into_bytes();
        ch.basic_publish(
            BasicProperties::default().with_persistence(true).finish(),
            body,
            BasicPublishArguments::new("", &queue),
        )
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(&ch, &queue).await < N as u32 {
        assert!(
            Instant::now() < deadline,
            "the broker did not take {N} messages"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let doc = json!({
        "name": format!("rabbit-to-file-{queue}"),
        "source": {"connector_type": "rabbitmq", "config": {"url": "amqp://127.0.0.1:5672/%2f", "username": "guest", "password": "guest", "queue": queue, "prefetch": 1000}},
        "destination": {"connector_type": "file", "config": {"path": out.to_str().unwrap(), "format": "jsonl"}},
        "checkpoint": {"interval_seconds": 0.2}
    });
    let pipeline = dir.path().join("p.json");
    std::fs::write(&pipeline, doc.to_string()).unwrap();
    let mut child = dagg()
        .env("DAGG_HOME", dir.path().join("home"))
        .args(["run", "--json", pipeline.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The queue drains (a prefetch of 1000 only lets it go on as checkpoints acknowledge).
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready(&ch, &queue).await > 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "an unbounded run does not end by itself"
        );
        assert!(
            Instant::now() < deadline,
            "the run did not read the queue in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "an unbounded run does not end by itself"
    );
    sigterm(&child);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "a stopped unbounded run exits 0: {}",
        text(&output)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["status"], "success", "{summary}");

    assert_eq!(lines(&out), N as usize, "every message written once");
    let mut ids: Vec<i64> = read_records(&out)
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=N).collect::<Vec<_>>());
    // Acknowledged at the last checkpoint: nothing went back to the queue when the process
    // (and its connection) ended.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ready(&ch, &queue).await,
        0,
        "every message acknowledged: {}",
        text(&output)
    );
    ch.queue_delete(QueueDeleteArguments::new(&queue))
        .await
        .unwrap();
}
