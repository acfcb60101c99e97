//! The compliance harness, run for every connector: what a sink wrote reads back the same,
//! a resume from a checkpoint gives exactly the rest, a bad config is reported where it is
//! wrong, and an unreachable server (or a missing file) fails clearly within the timeout.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json as AxJson;
use axum::extract::{Query, State};
use axum::routing::get;
use dagg_model::spec::connector::Role;
use serde_json::{Value as Json, json};
use support::*;

fn sample(n: usize) -> Vec<dagg_model::Record> {
    (1..=n)
        .map(|i| rec(json!({"id": i, "name": format!("item {i}"), "price": i as f64 + 0.5, "active": i % 2 == 0, "note": null})))
        .collect()
}

// ---- file ---------------------------------------------------------------------------------

fn file_spec(path: &str, role: Role) -> dagg_model::spec::connector::ConnectorSpec {
    spec(json!({"connector_type": "file", "config": {"path": path, "format": "jsonl"}}), role)
}

#[tokio::test]
async fn file_reads_back_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    read_back_what_was_written(&file_spec("out.jsonl", Role::Sink), &file_spec("out.jsonl", Role::Source), dir.path(), &sample(20), None).await;
}

#[tokio::test]
async fn file_resumes_with_exactly_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    read_back_what_was_written(&file_spec("in.jsonl", Role::Sink), &file_spec("in.jsonl", Role::Source), dir.path(), &sample(20), None).await;
    resume_gives_exactly_the_rest(&file_spec("in.jsonl", Role::Source), dir.path(), 7, 3).await;
}

#[tokio::test]
async fn file_bad_config_and_missing_input_are_clear() {
    bad_config_is_reported(json!({"connector_type": "file", "config": {"path": "o/*.jsonl", "format": "jsonl"}}), Role::Sink, "connector.config.path", "glob");
    bad_config_is_reported(json!({"connector_type": "file", "config": {"path": "x", "format": "xlsx"}}), Role::Source, "connector.config.format", "xlsx");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let s = file_spec(missing.to_str().unwrap(), Role::Source);
    unreachable_fails_in_time(&s, Role::Source, Duration::from_secs(1), "nope.jsonl").await;
}

// ---- rest_api -----------------------------------------------------------------------------

type Store = Arc<Mutex<Vec<Json>>>;

/// `POST /items` appends a JSON array; `GET /items?offset&limit` pages through it.
async fn items_server() -> String {
    let store: Store = Arc::default();
    async fn list(State(s): State<Store>, Query(q): Query<std::collections::HashMap<String, usize>>) -> AxJson<Json> {
        let items = s.lock().unwrap();
        let offset = q.get("offset").copied().unwrap_or(0).min(items.len());
        let limit = q.get("limit").copied().unwrap_or(100);
        AxJson(json!({"data": items[offset..(offset + limit).min(items.len())].to_vec()}))
    }
    async fn add(State(s): State<Store>, AxJson(batch): AxJson<Vec<Json>>) -> AxJson<Json> {
        let n = batch.len();
        s.lock().unwrap().extend(batch);
        AxJson(json!({"accepted": n}))
    }
    let app = axum::Router::new().route("/items", get(list).post(add)).with_state(store);
    format!("http://{}/items", serve(app).await)
}

fn rest_spec(url: &str, role: Role) -> dagg_model::spec::connector::ConnectorSpec {
    let mut c = json!({"url": url, "retry_initial_delay_seconds": 0.01});
    if role == Role::Source {
        c["pagination"] = json!({"type": "offset", "page_size": 4});
    } else {
        c["batch_size"] = json!(6);
    }
    spec(json!({"connector_type": "rest_api", "config": c}), role)
}

#[tokio::test]
async fn rest_reads_back_what_it_wrote() {
    let url = items_server().await;
    let base = std::path::Path::new(".");
    read_back_what_was_written(&rest_spec(&url, Role::Sink), &rest_spec(&url, Role::Source), base, &sample(23), None).await;
}

#[tokio::test]
async fn rest_resumes_with_exactly_the_rest() {
    let url = items_server().await;
    let base = std::path::Path::new(".");
    read_back_what_was_written(&rest_spec(&url, Role::Sink), &rest_spec(&url, Role::Source), base, &sample(23), None).await;
    // Mid-page (6 of pages of 4) and on a page boundary (8).
    resume_gives_exactly_the_rest(&rest_spec(&url, Role::Source), base, 6, 3).await;
    resume_gives_exactly_the_rest(&rest_spec(&url, Role::Source), base, 8, 4).await;
}

#[tokio::test]
async fn rest_bad_config_is_reported() {
    bad_config_is_reported(json!({"connector_type": "rest_api", "config": {"url": "https://x", "auth_method": "bearer_token"}}), Role::Source, "connector.config.auth_params.token", "needs");
    bad_config_is_reported(json!({"connector_type": "REST API", "config": {"url": "x.com/api"}}), Role::Source, "connector.config.url", "absolute");
    bad_config_is_reported(json!({"connector_type": "rest_api", "config": {"url": "https://x", "pagination": {"type": "cursor"}}}), Role::Source, "connector.config.pagination.cursor_path", "cursor_path");
}

#[tokio::test]
async fn rest_unreachable_server_fails_within_the_timeout() {
    let url = format!("http://127.0.0.1:{}/items", closed_port());
    let c = |url: &str| json!({"connector_type": "rest_api", "config": {"url": url, "connection_timeout": 2, "retry_attempts": 1, "retry_initial_delay_seconds": 0.1}});
    for role in [Role::Source, Role::Sink] {
        unreachable_fails_in_time(&spec(c(&url), role), role, Duration::from_secs(3), &url).await;
    }
    // A server that accepts and never answers: the timeout, not a hang.
    let hung = format!("http://127.0.0.1:{}/items", silent_port().await);
    unreachable_fails_in_time(&spec(c(&hung), Role::Source), Role::Source, Duration::from_secs(8), "within 2 s").await;
}

// ---- postgresql ---------------------------------------------------------------------------

async fn pg_table() -> String {
    let t = format!("compliance_{}", suffix());
    pg_exec(&format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, name TEXT, price DOUBLE PRECISION, active BOOLEAN, note TEXT)")).await;
    t
}

#[tokio::test]
async fn postgres_reads_back_what_it_wrote() {
    let t = pg_table().await;
    let base = std::path::Path::new(".");
    read_back_what_was_written(&spec(pg_config(json!({"table": t})), Role::Sink), &spec(pg_config(json!({"table": t})), Role::Source), base, &sample(25), None).await;
    pg_exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn postgres_resumes_with_exactly_the_rest() {
    let t = pg_table().await;
    let base = std::path::Path::new(".");
    read_back_what_was_written(&spec(pg_config(json!({"table": t})), Role::Sink), &spec(pg_config(json!({"table": t})), Role::Source), base, &sample(25), None).await;
    resume_gives_exactly_the_rest(&spec(pg_config(json!({"table": t})), Role::Source), base, 10, 4).await;
    resume_gives_exactly_the_rest(&spec(pg_config(json!({"query": format!("SELECT * FROM {t} ORDER BY id")})), Role::Source), base, 9, 4).await;
    resume_gives_exactly_the_rest(&spec(pg_config(json!({"table": t, "incremental": {"cursor_field": "id"}})), Role::Source), base, 11, 4).await;
    pg_exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn postgres_bad_config_is_reported() {
    bad_config_is_reported(pg_config(json!({"table": "t", "mode": "upsert"})), Role::Sink, "connector.config.key_fields", "upsert");
    bad_config_is_reported(pg_config(json!({"table": "t", "query": "select 1"})), Role::Source, "connector.config.query", "not both");
    bad_config_is_reported(pg_config(json!({"table": "t", "ssl_mode": "maybe"})), Role::Source, "connector.config.ssl_mode", "maybe");
    // Valid, but the table is not there: the test says so.
    let s = spec(pg_config(json!({"table": format!("missing_{}", suffix())})), Role::Sink);
    let e = dagg_connectors::test_connection_as(&s, std::path::Path::new("."), Role::Sink).await.unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[tokio::test]
async fn postgres_unreachable_server_fails_within_the_timeout() {
    let port = closed_port();
    let c = json!({"connector_type": "postgresql", "config": {"host": "127.0.0.1", "port": port, "database": "test", "username": "postgres", "password": "not-shown", "table": "t", "connect_timeout": 2}});
    for role in [Role::Source, Role::Sink] {
        unreachable_fails_in_time(&spec(c.clone(), role), role, Duration::from_secs(4), &format!("127.0.0.1:{port}")).await;
    }
    let e = dagg_connectors::test_connection(&spec(c, Role::Any), std::path::Path::new(".")).await.unwrap_err();
    assert!(!e.to_string().contains("not-shown"), "a password in a message: {e}");
}

// ---- mysql --------------------------------------------------------------------------------

async fn my_table() -> String {
    let t = format!("compliance_{}", suffix());
    my_exec(&format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, name TEXT, price DOUBLE, active BOOLEAN, note TEXT)")).await;
    t
}

#[tokio::test]
async fn mysql_reads_back_what_it_wrote() {
    let t = my_table().await;
    let base = std::path::Path::new(".");
    read_back_what_was_written(&spec(my_config(json!({"table": t})), Role::Sink), &spec(my_config(json!({"table": t})), Role::Source), base, &sample(25), None).await;
    my_exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn mysql_resumes_with_exactly_the_rest() {
    let t = my_table().await;
    let base = std::path::Path::new(".");
    read_back_what_was_written(&spec(my_config(json!({"table": t})), Role::Sink), &spec(my_config(json!({"table": t})), Role::Source), base, &sample(25), None).await;
    resume_gives_exactly_the_rest(&spec(my_config(json!({"table": t})), Role::Source), base, 10, 4).await;
    resume_gives_exactly_the_rest(&spec(my_config(json!({"query": format!("SELECT * FROM {t} ORDER BY id")})), Role::Source), base, 9, 4).await;
    resume_gives_exactly_the_rest(&spec(my_config(json!({"table": t, "incremental": {"cursor_field": "id"}})), Role::Source), base, 11, 4).await;
    my_exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn mysql_bad_config_is_reported() {
    bad_config_is_reported(my_config(json!({"table": "t", "schema": "s"})), Role::Sink, "connector.config.schema", "MySQL");
    bad_config_is_reported(my_config(json!({"query": "select 1"})), Role::Sink, "connector.config.query", "destination");
    bad_config_is_reported(my_config(json!({"table": "t", "key_fields": ["id"]})), Role::Sink, "connector.config.key_fields", "upsert");
}

#[tokio::test]
async fn mysql_unreachable_server_fails_within_the_timeout() {
    let port = closed_port();
    let c = json!({"connector_type": "mysql", "config": {"host": "127.0.0.1", "port": port, "database": "test", "username": "root", "password": "not-shown", "table": "t", "connect_timeout": 2}});
    for role in [Role::Source, Role::Sink] {
        unreachable_fails_in_time(&spec(c.clone(), role), role, Duration::from_secs(4), &format!("127.0.0.1:{port}")).await;
    }
}

// ---- redis --------------------------------------------------------------------------------

/// A stream (records as JSON in the field `data`) or a list on the machine's Redis, read
/// without following so that the source ends.
fn redis_spec(key: (&str, &str), role: Role) -> dagg_model::spec::connector::ConnectorSpec {
    let mut c = json!({"url": "redis://127.0.0.1:6379", key.0: key.1, "format": "json", "connect_timeout": 5});
    if role == Role::Source {
        c["follow"] = json!(false);
        if key.0 == "stream" {
            c["group"] = json!("compliance");
        }
    }
    spec(json!({"connector_type": "redis", "config": c}), role)
}

async fn redis_del(key: &str) {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut c = client.get_multiplexed_async_connection().await.expect("Redis on 127.0.0.1:6379 (start it with: redis-server --daemonize yes)");
    let _: i64 = redis::cmd("DEL").arg(key).query_async(&mut c).await.unwrap();
}

#[tokio::test]
async fn redis_reads_back_what_it_wrote() {
    let base = std::path::Path::new(".");
    for kind in ["stream", "list"] {
        let key = format!("compliance-{kind}-{}", suffix());
        read_back_what_was_written(&redis_spec((kind, &key), Role::Sink), &redis_spec((kind, &key), Role::Source), base, &sample(23), None).await;
        redis_del(&key).await;
    }
}

#[tokio::test]
async fn redis_resumes_with_exactly_the_rest() {
    let base = std::path::Path::new(".");
    for kind in ["stream", "list"] {
        let key = format!("compliance-{kind}-{}", suffix());
        read_back_what_was_written(&redis_spec((kind, &key), Role::Sink), &redis_spec((kind, &key), Role::Source), base, &sample(23), None).await;
        // A stream resumes from its consumer's pending entries after the checkpoint.
        resume_gives_exactly_the_rest(&redis_spec((kind, &key), Role::Source), base, 9, 4).await;
        resume_gives_exactly_the_rest(&redis_spec((kind, &key), Role::Source), base, 12, 4).await;
        redis_del(&key).await;
    }
}

#[tokio::test]
async fn redis_bad_config_is_reported() {
    let r = |c: Json| json!({"connector_type": "redis", "config": c});
    bad_config_is_reported(r(json!({"url": "redis://app:hunter2@127.0.0.1:6379", "stream": "s"})), Role::Source, "connector.config.url", "give it in `password`");
    bad_config_is_reported(r(json!({"stream": "s", "list": "l"})), Role::Source, "connector.config.list", "exactly one of `stream` and `list`");
    bad_config_is_reported(r(json!({"group": "g"})), Role::Source, "connector.config.stream", "required");
    bad_config_is_reported(r(json!({"stream": "s", "key_field": "id"})), Role::Sink, "connector.config.key_field", "exactly one of `stream`, `list` and `key_field`");
    bad_config_is_reported(r(json!({"key_prefix": "order:", "stream": "s"})), Role::Sink, "connector.config.key_prefix", "needs `key_field`");
    bad_config_is_reported(r(json!({"stream": "s", "follow": false})), Role::Sink, "connector.config.follow", "only to a source");
    bad_config_is_reported(r(json!({"url": "rediss://h", "stream": "s"})), Role::Source, "connector.config.url", "TLS");
    bad_config_is_reported(r(json!({"stream": "s", "host": "h"})), Role::Source, "connector.config.host", "unknown field `host`");
}

#[tokio::test]
async fn redis_unreachable_server_fails_within_the_timeout() {
    let port = closed_port();
    let c = |port: u16| json!({"connector_type": "redis", "config": {"url": format!("redis://127.0.0.1:{port}"), "stream": "s", "password": "not-shown", "connect_timeout": 2}});
    for role in [Role::Source, Role::Sink] {
        unreachable_fails_in_time(&spec(c(port), role), role, Duration::from_secs(3), &format!("redis://127.0.0.1:{port}/0")).await;
    }
    let e = dagg_connectors::test_connection(&spec(c(port), Role::Any), std::path::Path::new(".")).await.unwrap_err();
    assert!(!e.to_string().contains("not-shown"), "a password in a message: {e}");
    // A server that accepts and never answers: the timeout, not a hang.
    let hung = silent_port().await;
    unreachable_fails_in_time(&spec(c(hung), Role::Source), Role::Source, Duration::from_secs(4), "within 2 s").await;
}
