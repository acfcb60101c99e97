//! What the connector tests share: specs from JSON (through the same validation a pipeline
//! document gets), the machine's PostgreSQL and MariaDB (a test FAILS, naming the server and
//! how to start it, when one is down — it never skips), loopback HTTP servers, and the
//! compliance harness every connector passes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use dagg_connectors::{SinkConnector, SourceConnector, open_sink, open_source, test_connection_as};
use dagg_model::spec::connector::{ConnectorSpec, Role, parse_connector};
use dagg_model::{Record, SpecErrors};
use serde_json::{Value as Json, json};
use sqlx::{AssertSqlSafe, Connection};

/// A connector spec from its JSON, validated for `role`; panics with every error.
pub fn spec(v: Json, role: Role) -> ConnectorSpec {
    let mut errs = SpecErrors::new();
    match parse_connector(&v, "connector", role, &mut errs) {
        Some(s) if errs.is_empty() => s,
        _ => panic!("invalid spec {v}:\n{errs}"),
    }
}

pub fn rec(v: Json) -> Record {
    serde_json::from_value(v).expect("a record is an object")
}

pub fn to_json(r: &Record) -> Json {
    serde_json::to_value(r).unwrap()
}

/// A random name suffix, so tests can share servers and run again.
pub fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Reads everything, in batches of at most `max`.
pub async fn read_all(src: &mut Box<dyn SourceConnector>, max: usize) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some(b) = src.next_batch(max).await.expect("read") {
        assert!(b.batch.len() <= max, "a batch has more than {max} records");
        assert!(b.bad.is_empty(), "bad inputs: {:?}", b.bad);
        out.extend(b.batch.records);
    }
    out
}

/// Reads batches of `max` until at least `n` records came (or the end).
pub async fn read_at_least(src: &mut Box<dyn SourceConnector>, max: usize, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    while out.len() < n {
        let Some(b) = src.next_batch(max).await.expect("read") else { break };
        out.extend(b.batch.records);
    }
    out
}

// ---- PostgreSQL and MariaDB on this machine ------------------------------------------

pub const PG_START: &str = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";
pub const MARIADB_START: &str = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd";

/// The `postgresql` config of the machine's server (database `test`, trust auth) plus `extra`.
pub fn pg_config(extra: Json) -> Json {
    let mut c = json!({"host": "127.0.0.1", "port": 5432, "database": "test", "username": "postgres", "ssl_mode": "disable", "connect_timeout": 5});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({"connector_type": "postgresql", "config": c})
}

/// The `mysql` config of the machine's MariaDB (root, empty password, database `test`) plus `extra`.
pub fn my_config(extra: Json) -> Json {
    let mut c = json!({"host": "127.0.0.1", "port": 3306, "database": "test", "username": "root", "ssl_mode": "disable", "connect_timeout": 5});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({"connector_type": "mysql", "config": c})
}

/// A connection to the machine's PostgreSQL, or a failure that says it is down.
pub async fn pg() -> sqlx::PgConnection {
    let url = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";
    match tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("PostgreSQL at 127.0.0.1:5432 (database `test`) is not usable: {e}. Start it with: {PG_START}"),
        Err(_) => panic!("PostgreSQL at 127.0.0.1:5432 did not answer within 10 s. Start it with: {PG_START}"),
    }
}

/// A connection to the machine's MariaDB, or a failure that says it is down.
pub async fn my() -> sqlx::MySqlConnection {
    let url = "mysql://root@127.0.0.1:3306/test?ssl-mode=disabled";
    match tokio::time::timeout(Duration::from_secs(10), sqlx::MySqlConnection::connect(url)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("MariaDB at 127.0.0.1:3306 (database `test`) is not usable: {e}. Start it with: {MARIADB_START}"),
        Err(_) => panic!("MariaDB at 127.0.0.1:3306 did not answer within 10 s. Start it with: {MARIADB_START}"),
    }
}

pub async fn pg_exec(sql: &str) {
    let mut c = pg().await;
    for stmt in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(AssertSqlSafe(stmt.to_string())).execute(&mut c).await.unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
}

pub async fn my_exec(sql: &str) {
    let mut c = my().await;
    for stmt in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(AssertSqlSafe(stmt.to_string())).execute(&mut c).await.unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
}

/// One `i64` from a PostgreSQL query.
pub async fn pg_count(sql: &str) -> i64 {
    let mut c = pg().await;
    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_string())).fetch_one(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub async fn my_count(sql: &str) -> i64 {
    let mut c = my().await;
    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_string())).fetch_one(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

// ---- HTTP servers on loopback ----------------------------------------------------------

/// Serves `router` on 127.0.0.1 (a free port) for the rest of the test.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A loopback port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A loopback port that accepts connections and never answers (a hung server).
pub async fn silent_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    port
}

// ---- The compliance harness --------------------------------------------------------------

/// Writes `records` through a sink (several writes, one commit), reads them back with a
/// source, and compares as JSON (ordered by `order_key` when given).
pub async fn read_back_what_was_written(sink: &ConnectorSpec, source: &ConnectorSpec, base: &Path, records: &[Record], order_key: Option<&str>) {
    let mut s: Box<dyn SinkConnector> = open_sink(sink, base).expect("open the sink");
    for chunk in records.chunks(7) {
        let refused = s.write(chunk).await.expect("write");
        assert!(refused.is_empty(), "refused: {refused:?}");
    }
    s.commit().await.expect("commit");
    let mut src = open_source(source, base).expect("open the source");
    let mut got: Vec<Json> = read_all(&mut src, 5).await.iter().map(to_json).collect();
    let mut want: Vec<Json> = records.iter().map(to_json).collect();
    if let Some(k) = order_key {
        got.sort_by_key(|r| r[k].to_string());
        want.sort_by_key(|r| r[k].to_string());
    }
    assert_eq!(got, want, "read back differs from what was written");
}

/// Reads `k` records, checkpoints, and has a NEW source continue from the checkpoint: the two
/// parts together are exactly what one read gives.
pub async fn resume_gives_exactly_the_rest(source: &ConnectorSpec, base: &Path, k: usize, max: usize) {
    let mut whole = open_source(source, base).expect("open");
    let all: Vec<Json> = read_all(&mut whole, max).await.iter().map(to_json).collect();
    assert!(all.len() > k, "the input needs more than {k} records");
    let mut first = open_source(source, base).expect("open");
    let mut head: Vec<Json> = Vec::new();
    while head.len() < k {
        let b = first.next_batch(max.min(k - head.len())).await.expect("read").expect("not at the end yet");
        head.extend(b.batch.records.iter().map(to_json));
    }
    let cp = first.checkpoint();
    // Through JSON text, as the runtime stores it.
    let cp: Json = serde_json::from_str(&cp.to_string()).unwrap();
    drop(first);
    let mut second = open_source(source, base).expect("open");
    second.seek(&cp).await.expect("seek");
    let tail: Vec<Json> = read_all(&mut second, max).await.iter().map(to_json).collect();
    let mut both = head;
    both.extend(tail);
    assert_eq!(both, all, "head + resumed tail differs from one read (checkpoint {cp})");
}

/// `test_connection` and the first read or write fail with an error naming `needle` within
/// `limit`.
pub async fn unreachable_fails_in_time(spec: &ConnectorSpec, role: Role, limit: Duration, needle: &str) {
    let base = Path::new(".");
    let started = Instant::now();
    let err = test_connection_as(spec, base, role).await.expect_err("an unreachable server cannot test fine");
    let took = started.elapsed();
    let msg = err.to_string();
    assert!(msg.contains(needle), "the error should name `{needle}`: {msg}");
    assert!(took <= limit, "test_connection took {took:?}, more than {limit:?}: {msg}");
    let started = Instant::now();
    let msg = match role {
        // Servers are reached lazily, at the first operation; a file is opened at once.
        Role::Sink => match open_sink(spec, base) {
            Ok(mut s) => s.write(&[rec(json!({"id": 1}))]).await.expect_err("writing to an unreachable server fails").to_string(),
            Err(e) => e.to_string(),
        },
        _ => match open_source(spec, base) {
            Ok(mut s) => s.next_batch(10).await.expect_err("reading from an unreachable server fails").to_string(),
            Err(e) => e.to_string(),
        },
    };
    let took = started.elapsed();
    assert!(msg.contains(needle), "the error should name `{needle}`: {msg}");
    assert!(took <= limit, "the first {role:?} operation took {took:?}, more than {limit:?}: {msg}");
}

/// A config that breaks a rule is reported at `path` with a message containing `needle`.
pub fn bad_config_is_reported(v: Json, role: Role, path: &str, needle: &str) {
    let mut errs = SpecErrors::new();
    let parsed = parse_connector(&v, "connector", role, &mut errs);
    assert!(parsed.is_none(), "{v} should not validate");
    assert!(
        errs.iter().any(|e| e.path == path && e.message.contains(needle)),
        "expected an error at `{path}` containing `{needle}`, got:\n{errs}"
    );
}
