//! The `aws_s3` connector against a real S3-compatible server: moto's server mode, installed
//! into a venv and started on 127.0.0.1:19000 by `scripts/s3-test-server.sh` (which each test
//! calls; idempotent). A second moto on 19001 checks credentials, for the bad-credentials
//! test. Every test uses its own bucket.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dagg_connectors::{ConnectorError, SinkConnector, open_sink, open_source, test_connection_as};
use dagg_model::spec::connector::{ConnectorConfig, Role};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{Value as Json, json};
use support::*;

const PORT: u16 = 19000;
const AUTH_PORT: u16 = 19001;

/// Starts (or finds) the moto server on `port`; panics with the script's output if it cannot.
fn server(port: u16, auth: bool) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::process::Command::new(root.join("scripts/s3-test-server.sh"))
        .arg("start")
        .env("DAGG_S3_PORT", port.to_string())
        .env("DAGG_S3_AUTH", if auth { "1" } else { "0" })
        .current_dir(root)
        .output()
        .expect("run scripts/s3-test-server.sh");
    assert!(
        out.status.success(),
        "scripts/s3-test-server.sh start failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("http://127.0.0.1:{port}")
}

/// A fresh bucket on the test server.
async fn bucket() -> (String, String) {
    let endpoint = server(PORT, false);
    let name = format!("dagg-{}", suffix());
    let r = reqwest::Client::new()
        .put(format!("{endpoint}/{name}"))
        .send()
        .await
        .expect("create the bucket");
    assert!(
        r.status().is_success(),
        "creating bucket {name}: {}",
        r.status()
    );
    (endpoint, name)
}

fn config(endpoint: &str, bucket: &str, extra: Json) -> Json {
    let mut c = json!({
        "bucket_name": bucket, "aws_region": "us-east-1", "endpoint": endpoint,
        "access_key_id": "testing", "secret_access_key": "testing-secret-value", "connection_timeout": 5,
    });
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"connector_type": "aws_s3", "config": c})
}

fn store_of(spec: &dagg_model::spec::connector::ConnectorSpec) -> Arc<dyn ObjectStore> {
    let ConnectorConfig::AwsS3(c) = &spec.config else {
        panic!("not aws_s3")
    };
    dagg_connectors::s3::store(c).expect("store")
}

async fn keys(store: &Arc<dyn ObjectStore>) -> Vec<String> {
    use futures_util::StreamExt;
    let mut out: Vec<String> = store
        .list(None)
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    out.sort();
    out
}

async fn text(store: &Arc<dyn ObjectStore>, key: &str) -> String {
    let got = store.get(&ObjPath::from(key)).await.expect("get");
    String::from_utf8(got.bytes().await.unwrap().to_vec()).unwrap()
}

fn records(n: usize, from: usize) -> Vec<dagg_model::Record> {
    (from..from + n)
        .map(|i| rec(json!({"id": i, "name": format!("n{i}"), "amount": i as f64 * 1.5})))
        .collect()
}

#[tokio::test]
async fn s3_writes_then_reads_back_in_every_text_format() {
    let (endpoint, b) = bucket().await;
    for (format, key) in [
        ("jsonl", "out/a.jsonl"),
        ("json", "out/b.json"),
        ("jsonl", "gz/c.jsonl.gz"),
        ("xml", "x/d.xml"),
    ] {
        let sink = spec(
            config(&endpoint, &b, json!({"key": key, "file_format": format})),
            Role::Sink,
        );
        let source = spec(
            config(&endpoint, &b, json!({"key": key, "file_format": format})),
            Role::Source,
        );
        let want = records(23, 0);
        let want: Vec<_> = if format == "xml" {
            // XML reads every value back as text.
            want.iter().map(|r| rec(json!({"id": to_json(r)["id"].to_string(), "name": to_json(r)["name"], "amount": to_json(r)["amount"].to_string()}))).collect()
        } else {
            want
        };
        read_back_what_was_written(&sink, &source, Path::new("."), &want, None).await;
    }
    // CSV: every value is a string.
    let csv: Vec<_> = (0..9)
        .map(|i| rec(json!({"id": i.to_string(), "city": format!("c{i}")})))
        .collect();
    let sink = spec(
        config(
            &endpoint,
            &b,
            json!({"prefix": "csv/", "key": "e.csv", "file_format": "csv"}),
        ),
        Role::Sink,
    );
    let source = spec(
        config(
            &endpoint,
            &b,
            json!({"prefix": "csv/", "file_format": "csv"}),
        ),
        Role::Source,
    );
    read_back_what_was_written(&sink, &source, Path::new("."), &csv, None).await;
    let store = store_of(&sink);
    assert!(
        text(&store, "csv/e.csv")
            .await
            .starts_with("id,city\n0,c0\n")
    );
    assert!(
        keys(&store).await.iter().all(|k| !k.contains(".dagg-tmp-")),
        "no staging object is left"
    );
}

#[tokio::test]
async fn s3_source_reads_a_prefix_in_key_order_and_resumes_from_a_checkpoint() {
    let (endpoint, b) = bucket().await;
    let source = spec(
        config(
            &endpoint,
            &b,
            json!({"prefix": "raw/2024-", "file_format": "jsonl"}),
        ),
        Role::Source,
    );
    let store = store_of(&source);
    // Written out of order; one outside the prefix, one staging object, one empty.
    for (key, ids) in [
        ("raw/2024-03.jsonl", 20..27),
        ("raw/2024-01.jsonl", 0..10),
        ("raw/2024-02.jsonl", 10..20),
        ("raw/2023-12.jsonl", 90..95),
        ("raw/2024-04.jsonl.dagg-tmp-3", 95..99),
        ("raw/2024-02b.jsonl", 0..0),
    ] {
        let body: String = ids.map(|i| format!("{{\"id\":{i}}}\n")).collect();
        store
            .put(&ObjPath::from(key), PutPayload::from(body.into_bytes()))
            .await
            .unwrap();
    }
    let mut src = open_source(&source, Path::new(".")).unwrap();
    let ids: Vec<i64> = read_all(&mut src, 4)
        .await
        .iter()
        .map(|r| to_json(r)["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (0..27).collect::<Vec<_>>());
    // Positions name the key and the line.
    let mut src = open_source(&source, Path::new(".")).unwrap();
    let b1 = src.next_batch(12).await.unwrap().unwrap();
    let last = *b1.batch.positions.last().unwrap();
    assert_eq!(
        serde_json::to_value(src.describe(last)).unwrap(),
        json!({"key": "raw/2024-01.jsonl", "line": 10}),
        "a batch ends with its object"
    );
    let b2 = src.next_batch(2).await.unwrap().unwrap();
    let last = *b2.batch.positions.last().unwrap();
    assert_eq!(
        serde_json::to_value(src.describe(last)).unwrap(),
        json!({"key": "raw/2024-02.jsonl", "line": 2})
    );
    // Inside an object, at an object's end, and after one record.
    for k in [1, 10, 13, 26] {
        resume_gives_exactly_the_rest(&source, Path::new("."), k, 3).await;
    }
    // A glob over keys.
    let globbed = spec(
        config(
            &endpoint,
            &b,
            json!({"key": "raw/*-0[13].jsonl", "file_format": "jsonl"}),
        ),
        Role::Source,
    );
    let mut src = open_source(&globbed, Path::new(".")).unwrap();
    assert_eq!(read_all(&mut src, 100).await.len(), 17);
}

#[tokio::test]
async fn s3_sink_shows_nothing_before_commit_and_recovers_after_a_crash() {
    let (endpoint, b) = bucket().await;
    let sink_spec = spec(
        config(
            &endpoint,
            &b,
            json!({"key": "out/orders.jsonl", "file_format": "jsonl"}),
        ),
        Role::Sink,
    );
    let store = store_of(&sink_spec);
    let mut sink: Box<dyn SinkConnector> = open_sink(&sink_spec, Path::new(".")).unwrap();
    sink.write(&records(5, 0)).await.unwrap();
    assert!(
        keys(&store).await.is_empty(),
        "nothing is uploaded by a write"
    );
    let token1 = sink.pre_commit(1).await.unwrap();
    assert_eq!(
        keys(&store).await,
        vec!["out/orders.jsonl.dagg-tmp-1"],
        "pre_commit only stages"
    );
    sink.commit().await.unwrap();
    assert_eq!(keys(&store).await, vec!["out/orders.jsonl"]);
    assert_eq!(text(&store, "out/orders.jsonl").await.lines().count(), 5);
    let _ = token1;

    // Epoch 2 is staged, then the process dies before the commit.
    sink.write(&records(4, 5)).await.unwrap();
    let token2 = sink.pre_commit(2).await.unwrap();
    sink.write(&records(3, 9)).await.unwrap();
    let _ = sink.pre_commit(3).await.unwrap(); // a checkpoint that never completed
    std::mem::forget(sink);
    assert_eq!(
        text(&store, "out/orders.jsonl").await.lines().count(),
        5,
        "the uncommitted epochs are invisible"
    );

    // A new process recovers to checkpoint 2: its output appears, epoch 3's is discarded,
    // and writing goes on after it.
    let mut sink = open_sink(&sink_spec, Path::new(".")).unwrap();
    sink.recover(&token2, 2).await.unwrap();
    assert_eq!(
        keys(&store).await,
        vec!["out/orders.jsonl"],
        "no staging object is left"
    );
    assert_eq!(text(&store, "out/orders.jsonl").await.lines().count(), 9);
    sink.write(&records(3, 9)).await.unwrap();
    sink.pre_commit(3).await.unwrap();
    sink.commit().await.unwrap();
    let ids: Vec<i64> = text(&store, "out/orders.jsonl")
        .await
        .lines()
        .map(|l| {
            serde_json::from_str::<Json>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (0..12).collect::<Vec<_>>());

    // An abort drops what was staged.
    sink.write(&records(2, 12)).await.unwrap();
    sink.pre_commit(4).await.unwrap();
    sink.abort().await.unwrap();
    assert_eq!(keys(&store).await, vec!["out/orders.jsonl"]);
    assert_eq!(text(&store, "out/orders.jsonl").await.lines().count(), 12);
}

#[tokio::test]
async fn s3_test_connection_reports_what_works_without_showing_the_secret() {
    let (endpoint, b) = bucket().await;
    let sink_spec = spec(
        config(
            &endpoint,
            &b,
            json!({"key": "t/out.jsonl", "file_format": "jsonl"}),
        ),
        Role::Sink,
    );
    let msg = test_connection_as(&sink_spec, Path::new("."), Role::Sink)
        .await
        .unwrap();
    assert!(
        msg.contains(&format!("s3://{b}/t/out.jsonl")) && msg.contains("can be written"),
        "{msg}"
    );
    assert!(
        keys(&store_of(&sink_spec)).await.is_empty(),
        "the probe is removed"
    );
    // A source with nothing under its prefix says so; with objects, counts them.
    let source = spec(
        config(
            &endpoint,
            &b,
            json!({"prefix": "t/", "file_format": "jsonl"}),
        ),
        Role::Source,
    );
    let err = test_connection_as(&source, Path::new("."), Role::Source)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&format!("s3://{b}/t/")), "{err}");
    let mut sink = open_sink(&sink_spec, Path::new(".")).unwrap();
    sink.write(&records(1, 0)).await.unwrap();
    sink.commit().await.unwrap();
    let msg = test_connection_as(&source, Path::new("."), Role::Source)
        .await
        .unwrap();
    assert!(
        msg.contains("1 object(s)") && msg.contains("t/out.jsonl"),
        "{msg}"
    );
    assert!(
        !msg.contains("testing-secret-value")
            && !format!("{source:?}").contains("testing-secret-value")
    );
}

#[tokio::test]
async fn s3_an_unreachable_or_hung_endpoint_fails_clearly_within_the_timeout() {
    // Nothing listens: refused at once.
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let spec_closed = spec(
        config(
            &closed,
            "b",
            json!({"prefix": "x/", "file_format": "jsonl", "connection_timeout": 3}),
        ),
        Role::Source,
    );
    unreachable_fails_in_time(
        &spec_closed,
        Role::Source,
        Duration::from_secs(10),
        "s3://b/x/",
    )
    .await;
    // Accepts and never answers: the timeout.
    let hung = format!("http://127.0.0.1:{}", silent_port().await);
    let spec_hung = spec(
        config(
            &hung,
            "b",
            json!({"prefix": "x/", "file_format": "jsonl", "connection_timeout": 2}),
        ),
        Role::Source,
    );
    unreachable_fails_in_time(&spec_hung, Role::Source, Duration::from_secs(8), &hung).await;
    // A destination fails at test_connection and when it stages.
    let sink_spec = spec(
        config(
            &hung,
            "b",
            json!({"key": "x/o.jsonl", "file_format": "jsonl", "connection_timeout": 2}),
        ),
        Role::Sink,
    );
    let started = Instant::now();
    let err = test_connection_as(&sink_spec, Path::new("."), Role::Sink)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("s3://b/x/o.jsonl"), "{err}");
    let mut sink = open_sink(&sink_spec, Path::new(".")).unwrap();
    sink.write(&records(3, 0)).await.unwrap();
    let err = sink.pre_commit(1).await.unwrap_err();
    assert!(err.to_string().contains("s3://b/x/o.jsonl"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn s3_bad_credentials_are_refused_with_a_clear_error() {
    let endpoint = server(AUTH_PORT, true);
    let source = spec(
        config(
            &endpoint,
            "dagg-auth",
            json!({"prefix": "x/", "file_format": "jsonl"}),
        ),
        Role::Source,
    );
    let started = Instant::now();
    let err = test_connection_as(&source, Path::new("."), Role::Source)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConnectorError::Connect { .. }), "{msg}");
    assert!(
        msg.contains("s3://dagg-auth/x/")
            && (msg.contains("InvalidAccessKeyId") || msg.contains("403")),
        "{msg}"
    );
    assert!(!msg.contains("testing-secret-value"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn s3_https_client_builds_on_aws_lc_rs_without_a_provider_panic() {
    // Building the store builds its rustls client: with `ring` beside aws-lc-rs this panics.
    let https = format!("https://127.0.0.1:{}", closed_port());
    let source = spec(
        config(
            &https,
            "b",
            json!({"prefix": "x/", "file_format": "jsonl", "connection_timeout": 3}),
        ),
        Role::Source,
    );
    let store = store_of(&source);
    let err = store.head(&ObjPath::from("x/y")).await.unwrap_err();
    assert!(!err.to_string().is_empty());
}

#[tokio::test]
async fn s3_bad_configs_name_the_field() {
    bad_config_is_reported(
        json!({"connector_type": "aws_s3", "config": {"bucket_name": "b", "file_format": "jsonl"}}),
        Role::Sink,
        "connector.config.key",
        "needs `key`",
    );
    bad_config_is_reported(
        json!({"connector_type": "aws_s3", "config": {"bucket_name": "b", "file_format": "jsonl", "access_key_id": "a"}}),
        Role::Source,
        "connector.config.secret_access_key",
        "go together",
    );
    bad_config_is_reported(
        json!({"connector_type": "aws_s3", "config": {"bucket_name": "b", "file_format": "jsonl", "endpoint": "127.0.0.1:9000"}}),
        Role::Source,
        "connector.config.endpoint",
        "http://",
    );
    bad_config_is_reported(
        json!({"connector_type": "aws_s3", "config": {"bucket_name": "b", "file_format": "jsonl", "key": "a/*.jsonl"}}),
        Role::Sink,
        "connector.config.key",
        "glob",
    );
}
