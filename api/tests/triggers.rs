//! Event triggers under the API: a message on a NATS JetStream subject starts a run of the
//! pipeline that listens for it; the run succeeds, reads the file the event names, and shows
//! the event (trigger, triggered_by, a `trigger` entry in its log). Needs the machine's NATS
//! with JetStream on 127.0.0.1:4222.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

async fn runs_of(api: &TestApi, token: &str, id: &str, n: u64) -> Value {
    for _ in 0..300 {
        let r = api.get(&format!("/pipelines/{id}/runs"), token).await;
        if r.body["total"].as_u64().unwrap_or(0) >= n {
            return r.body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no run {n} of pipeline {id} started within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_on_a_subject_starts_a_run_that_shows_its_event() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let (stream, subject) = (format!("DAGG_TRIG_{id}"), format!("dagg.trigger.{id}"));
    let js = async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await.expect("NATS on 127.0.0.1:4222"));
    js.create_stream(async_nats::jetstream::stream::Config { name: stream.clone(), subjects: vec![subject.clone()], ..Default::default() }).await.unwrap();
    write_orders(&api.files().join("a.jsonl"), 6);
    write_orders(&api.files().join("b.jsonl"), 10);

    let doc = json!({
        "name": format!("on-event-{id}"),
        "source": {"connector_type": "file", "config": {"path": "${event.file}", "format": "jsonl"}},
        "destination": {"connector_type": "file", "config": {"path": "out/${event.file}", "format": "jsonl"}},
        "schedule": {"type": "event", "connector_type": "nats", "config": {"stream": stream, "subject": subject}}
    });
    let r = api.post("/pipelines", &admin, doc).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let pid = r.body["id"].as_str().unwrap().to_string();
    let triggers = tokio::spawn(dagg_control::triggers::Triggers::new(api.state.control.clone()).run(Duration::from_millis(200)));

    js.publish(subject.clone(), json!({"file": "a.jsonl", "requested_by": "test"}).to_string().into()).await.unwrap().await.unwrap();
    let runs = runs_of(&api, &admin, &pid, 1).await;
    let run_id = runs["items"][0]["id"].as_str().unwrap().to_string();
    let run = api.wait_run(&admin, &run_id).await;
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["trigger"], "event");
    assert!(run["triggered_by"].as_str().unwrap().contains(&subject), "{run}");
    assert_eq!(run["counts"]["records_read"], 6);
    let logs = api.get(&format!("/runs/{run_id}/logs"), &admin).await;
    let trigger = logs.body["items"].as_array().unwrap().iter().find(|e| e["kind"] == "trigger").expect("a trigger entry").clone();
    assert_eq!(trigger["data"]["event"], json!({"file": "a.jsonl", "requested_by": "test"}));
    assert_eq!(std::fs::read_to_string(api.files().join("out/a.jsonl")).unwrap().lines().count(), 6);

    // The next event, the next run, with its own parameters.
    js.publish(subject.clone(), json!({"file": "b.jsonl"}).to_string().into()).await.unwrap().await.unwrap();
    let runs = runs_of(&api, &admin, &pid, 2).await;
    let second = runs["items"].as_array().unwrap().iter().find(|r| r["id"] != run_id.as_str()).unwrap()["id"].as_str().unwrap().to_string();
    let run = api.wait_run(&admin, &second).await;
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["counts"]["records_read"], 10);
    assert_eq!(std::fs::read_to_string(api.files().join("out/b.jsonl")).unwrap().lines().count(), 10);

    triggers.abort();
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn an_event_schedule_on_another_connector_is_refused_with_its_path() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let mut doc = file_pipeline("bad-event", "in.jsonl", "out.jsonl");
    doc["schedule"] = json!({"type": "event", "connector_type": "file", "config": {}});
    let r = api.post("/pipelines", &admin, doc.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.text.contains("schedule.connector_type"), "{r:?}");
    doc["schedule"] = json!({"type": "event", "connector_type": "nats", "config": {"colour": 1}});
    let r = api.post("/pipelines", &admin, doc).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.text.contains("schedule.config"), "{r:?}");
}

/// An event's values are data: a quote in a value that fills a database query's
/// `'${event.name}'` is part of the value (a bind parameter), and a value that fills a
/// script's `"${event.tag}"` is text, not code. Before, both were pasted: `x' OR '1'='1` read
/// every row, and the script ran the event's statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_value_with_a_quote_is_data_in_a_query_and_a_script() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let table = format!("dagg_event_{id}");
    let psql = |sql: &str| {
        let out = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql (PostgreSQL's client) runs");
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    };
    psql(&format!("CREATE TABLE {table} (id int PRIMARY KEY, name text); INSERT INTO {table} VALUES (1, 'alice'), (2, 'bob')"));
    let (stream, subject) = (format!("DAGG_TRIGQ_{id}"), format!("dagg.triggerq.{id}"));
    let js = async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await.expect("NATS on 127.0.0.1:4222"));
    js.create_stream(async_nats::jetstream::stream::Config { name: stream.clone(), subjects: vec![subject.clone()], ..Default::default() }).await.unwrap();

    let doc = json!({
        "name": format!("quoted-event-{id}"),
        "source": {"connector_type": "postgresql", "config": {"host": "127.0.0.1", "port": 5432, "database": "test", "username": "postgres", "ssl_mode": "disable",
            "query": format!("SELECT id, name FROM {table} WHERE name = '${{event.name}}' ORDER BY id")}},
        "transformations": [{"type": "script", "source": "record.tag = \"${event.tag}\";"}],
        "destination": {"connector_type": "file", "config": {"path": "out/${event.out}", "format": "jsonl"}},
        "schedule": {"type": "event", "connector_type": "nats", "config": {"stream": stream, "subject": subject}}
    });
    let r = api.post("/pipelines", &admin, doc).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let pid = r.body["id"].as_str().unwrap().to_string();
    let triggers = tokio::spawn(dagg_control::triggers::Triggers::new(api.state.control.clone()).run(Duration::from_millis(200)));

    let tag = "\"; record.pwned = true; let x = \"";
    js.publish(subject.clone(), json!({"name": "alice", "tag": tag, "out": "one.jsonl"}).to_string().into()).await.unwrap().await.unwrap();
    let runs = runs_of(&api, &admin, &pid, 1).await;
    let first = runs["items"][0]["id"].as_str().unwrap().to_string();
    let run = api.wait_run(&admin, &first).await;
    assert_eq!(run["status"], "success", "{run}");
    let out = std::fs::read_to_string(api.files().join("out/one.jsonl")).unwrap();
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows, vec![json!({"id": 1, "name": "alice", "tag": tag})], "the tag is the event's text, and no `pwned` field");

    js.publish(subject.clone(), json!({"name": "x' OR '1'='1", "tag": "t", "out": "two.jsonl"}).to_string().into()).await.unwrap().await.unwrap();
    let runs = runs_of(&api, &admin, &pid, 2).await;
    let second = runs["items"].as_array().unwrap().iter().find(|r| r["id"] != first.as_str()).unwrap()["id"].as_str().unwrap().to_string();
    let run = api.wait_run(&admin, &second).await;
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["counts"]["records_read"], 0, "no row is named `x' OR '1'='1`: {run}");

    triggers.abort();
    js.delete_stream(&stream).await.unwrap();
    psql(&format!("DROP TABLE {table}"));
}
