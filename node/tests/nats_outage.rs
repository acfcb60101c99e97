//! A broker that goes away and comes back: `dagg run` reads a JetStream stream through a TCP
//! proxy this test controls; the proxy drops every connection and refuses new ones for a
//! few seconds mid-stream. The run says so (status `retrying`, a note on stderr), retries
//! with backoff from its last checkpoint, and when the broker is back it goes on: every
//! message reaches the destination exactly once. (The machine's NATS server is shared with
//! other tests, so the test cuts its own proxy rather than the server.)

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

const N: u64 = 20_000;

/// Forwards 127.0.0.1:`port` to NATS until the returned task is aborted, which closes every
/// connection it carried.
async fn proxy(port: u16) -> JoinHandle<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { continue };
            conns.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect("127.0.0.1:4222").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

fn lines(path: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_reported_retried_with_backoff_and_loses_nothing() {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let (stream, subject) = (format!("DAGG_OUT_{id}"), format!("dagg.outage.{id}"));
    let js = async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await.expect("NATS on 127.0.0.1:4222"));
    js.create_stream(async_nats::jetstream::stream::Config { name: stream.clone(), subjects: vec![subject.clone()], ..Default::default() }).await.unwrap();
    let publish = |from: u64, to: u64| {
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            for i in from..=to {
                js.publish(subject.clone(), json!({"id": i}).to_string().into()).await.unwrap().await.unwrap();
            }
        }
    };
    publish(1, N / 2).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut up = proxy(port).await;
    let dir = tempfile::tempdir().unwrap();
    let doc = json!({
        "name": format!("outage-{id}"),
        "source": {"connector_type": "nats", "config": {"url": format!("nats://127.0.0.1:{port}"), "stream": stream, "subject": subject, "connect_timeout": 2}},
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}},
        "checkpoint": {"interval_seconds": 0.2},
        "error_handling": {"retry_policy": {"max_retries": 20, "initial_delay_seconds": 0.5, "backoff_multiplier": 1.5}}
    });
    let pipeline = dir.path().join("p.json");
    std::fs::write(&pipeline, doc.to_string()).unwrap();
    let mut child = dagg().env("DAGG_HOME", dir.path().join("home")).args(["run", "--json", pipeline.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();

    // Let it read, then take the broker away for a while, publishing meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    up.abort();
    let _ = (&mut up).await;
    publish(N / 2 + 1, N).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(child.try_wait().unwrap().is_none(), "the run is still trying");
    let _up = proxy(port).await;

    // The lag drains: wait until the consumer has delivered everything and a checkpoint
    // acknowledged it, then stop.
    let started = Instant::now();
    let s = js.get_stream(&stream).await.unwrap();
    loop {
        let info = s.consumer_info(&format!("outage-{id}")).await.unwrap();
        if info.ack_floor.stream_sequence == N {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the run did not catch up after the outage: {info:?}");
        assert!(child.try_wait().unwrap().is_none(), "the run ended during the outage");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr.contains("retrying in"), "the outage is reported: {stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "success", "{summary}");
    assert!(summary["attempts"].as_u64().unwrap() >= 2, "{summary}");

    let mut ids = lines(&dir.path().join("out.jsonl"));
    ids.sort_unstable();
    assert_eq!(ids, (1..=N).collect::<Vec<_>>(), "every message once, none lost");
    js.delete_stream(&stream).await.unwrap();
}
