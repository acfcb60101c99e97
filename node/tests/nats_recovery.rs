//! Exactly once from a NATS JetStream stream into PostgreSQL across crashes: `dagg run` of an
//! unbounded pipeline killed with SIGKILL twice mid-stream, started again, then stopped with
//! SIGTERM: every message is in the table once, the durable consumer has acknowledged all
//! of them, and a later run continues from there. Needs the machine's NATS (JetStream) on
//! 127.0.0.1:4222 and PostgreSQL on 127.0.0.1:5432 (trust, database `test`).

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const N: u64 = 100_000;
const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn pg() -> PgConnection {
    PgConnection::connect(PG).await.unwrap_or_else(|e| panic!("PostgreSQL on 127.0.0.1:5432 (database `test`) is needed: {e}"))
}

async fn count(table: &str) -> (i64, i64) {
    let mut c = pg().await;
    let row: (i64, i64) = sqlx::query_as(AssertSqlSafe(format!("SELECT count(*), count(DISTINCT id) FROM {table}"))).fetch_one(&mut c).await.unwrap();
    row
}

async fn nats() -> async_nats::jetstream::Context {
    let c = async_nats::connect("nats://127.0.0.1:4222").await.expect("NATS with JetStream on 127.0.0.1:4222 is needed");
    async_nats::jetstream::new(c)
}

/// Publishes `ids` as JSON messages and waits for the stream to store each.
async fn publish(js: &async_nats::jetstream::Context, subject: &str, ids: std::ops::RangeInclusive<u64>) {
    let mut pending = std::collections::VecDeque::new();
    for i in ids {
        let body = json!({"id": i, "name": format!("item number {i}"), "qty": i % 7}).to_string();
        pending.push_back(js.publish(subject.to_string(), body.into()).await.unwrap());
        if pending.len() >= 2000 {
            for f in pending.drain(..1000) {
                f.await.unwrap();
            }
        }
    }
    for f in pending {
        f.await.unwrap();
    }
}

fn spawn(home: &std::path::Path, pipeline: &std::path::Path) -> Child {
    dagg().env("DAGG_HOME", home).args(["run", "--json", pipeline.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits until the table holds at least `n` rows (or the process ended, or time ran out).
async fn wait_rows(table: &str, n: i64, child: &mut Child, limit: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let (rows, _) = count(table).await;
        if rows >= n || started.elapsed() > limit || child.try_wait().unwrap().is_some() {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_to_postgres_killed_twice_delivers_every_message_exactly_once() {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let (stream, subject, table) = (format!("DAGG_T_{id}"), format!("dagg.test.{id}.orders"), format!("nats_orders_{id}"));
    let js = nats().await;
    js.create_stream(async_nats::jetstream::stream::Config { name: stream.clone(), subjects: vec![subject.clone()], ..Default::default() })
        .await
        .unwrap();
    let mut c = pg().await;
    sqlx::query(AssertSqlSafe(format!("CREATE TABLE {table} (id BIGINT NOT NULL, name TEXT, qty BIGINT, double BIGINT)"))).execute(&mut c).await.unwrap();
    publish(&js, &subject, 1..=N).await;

    let dir = tempfile::tempdir().unwrap();
    let doc = json!({
        "name": format!("nats-to-pg-{id}"),
        "source": {"connector_type": "nats", "config": {"stream": stream, "subject": subject}},
        "transformations": [
            {"type": "field_mapping", "field_name": "name", "operation": "title_case"},
            {"type": "field_calculation", "field_name": "double", "operation": "multiply", "parameters": {"source_fields": ["qty", "qty"]}}
        ],
        "destination": {"connector_type": "postgresql", "config": {"host": "127.0.0.1", "database": "test", "username": "postgres", "table": table, "ssl_mode": "disable"}},
        "checkpoint": {"interval_seconds": 0.2}
    });
    let pipeline = dir.path().join("p.json");
    std::fs::write(&pipeline, doc.to_string()).unwrap();
    let home = dir.path().join("home");

    // Two crashes mid-stream: once a fifth of the messages are in, once more than half.
    let mut resumed = 0;
    for at in [N as i64 / 5, N as i64 / 2] {
        let mut child = spawn(&home, &pipeline);
        let rows = wait_rows(&table, at, &mut child, Duration::from_secs(120)).await;
        resumed += usize::from(kill_mid_stream(child, rows, N as i64, "rows"));
    }
    assert!(resumed >= 1, "the second start resumed from a checkpoint");

    // Started again: it catches up, and SIGTERM stops it gracefully.
    let mut child = spawn(&home, &pipeline);
    let rows = wait_rows(&table, N as i64, &mut child, Duration::from_secs(180)).await;
    assert_eq!(rows, N as i64, "all messages arrived within the time limit");
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a stopped unbounded run exits 0: {}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "success", "{summary}");
    assert_eq!(count(&table).await, (N as i64, N as i64), "every message exactly once");
    let wrong: (i64,) = sqlx::query_as(AssertSqlSafe(format!("SELECT count(*) FROM {table} WHERE double <> qty * qty OR name <> initcap(name)")))
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(wrong.0, 0, "the transformations ran on every row");

    // The graceful stop acknowledged everything: the consumer holds nothing back.
    let consumer = format!("nats-to-pg-{id}");
    let mut s = js.get_stream(&stream).await.unwrap();
    let info = s.consumer_info(&consumer).await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, N, "{info:?}");
    assert_eq!(info.num_ack_pending, 0);
    let _ = s.info().await;

    // A later run (no checkpoint left) continues from the consumer: only the new messages.
    publish(&js, &subject, N + 1..=N + 10).await;
    let mut child = spawn(&home, &pipeline);
    let rows = wait_rows(&table, N as i64 + 10, &mut child, Duration::from_secs(60)).await;
    assert_eq!(rows, N as i64 + 10);
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("resuming"), "{}", text(&out));
    assert_eq!(count(&table).await, (N as i64 + 10, N as i64 + 10));

    js.delete_stream(&stream).await.unwrap();
    sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}"))).execute(&mut c).await.unwrap();
}
