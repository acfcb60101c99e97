//! Issue 6's end-to-end case through the `dagg` binary: PostgreSQL (incremental by
//! `updated_at`) → transformations → MariaDB (upsert by `id`, plus an append-only log table
//! in `insert` mode), run twice with new and changed rows in between, the second run killed
//! with SIGKILL mid-way and run again: the upserted table holds exactly the expected rows,
//! the log holds every source row version exactly once, and each run read only what was new.
//! `--fresh` keeps the high-water mark; `--full-refresh` reads everything again.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, Row};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";
const MY_URL: &str = "mysql://root@127.0.0.1:3306/test?ssl-mode=disabled";

/// Rows of the first run, rows added before the second, rows changed before the second.
const N1: i64 = 3_000;
const N2: i64 = 120_000;
const CHANGED: i64 = 500;

async fn pg() -> sqlx::PgConnection {
    match tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(PG_URL)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("PostgreSQL at 127.0.0.1:5432 (database `test`) is not usable: {e}"),
        Err(_) => panic!("PostgreSQL at 127.0.0.1:5432 did not answer within 10 s"),
    }
}

async fn my() -> sqlx::MySqlConnection {
    match tokio::time::timeout(Duration::from_secs(10), sqlx::MySqlConnection::connect(MY_URL)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("MariaDB at 127.0.0.1:3306 (database `test`) is not usable: {e}"),
        Err(_) => panic!("MariaDB at 127.0.0.1:3306 did not answer within 10 s"),
    }
}

async fn pg_exec(sql: &str) {
    let mut c = pg().await;
    for stmt in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(AssertSqlSafe(stmt.to_string())).execute(&mut c).await.unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
}

async fn my_exec(sql: &str) {
    let mut c = my().await;
    for stmt in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(AssertSqlSafe(stmt.to_string())).execute(&mut c).await.unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
}

async fn my_i64(sql: &str) -> i64 {
    let mut c = my().await;
    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_string())).fetch_one(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// One row as the destination should hold it: (customer, qty, total, updated_at as text).
type Row4 = (String, i64, f64, String);

/// What the destination table holds, by id.
async fn table_rows(t: &str) -> HashMap<i64, Row4> {
    let mut c = my().await;
    let sql = format!("SELECT id, customer, qty, total, DATE_FORMAT(updated_at, '%Y-%m-%dT%H:%i:%sZ') AS ts FROM {t}");
    let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut c).await.unwrap();
    rows.iter()
        .map(|r| {
            let id: i32 = r.get("id");
            (i64::from(id), (r.get("customer"), i64::from(r.get::<i32, _>("qty")), r.get("total"), r.get("ts")))
        })
        .collect()
}

/// `2025-01-<day>T00:00:00Z` plus `seconds`, as MariaDB prints it back (January only).
fn ts(day: i64, seconds: i64) -> String {
    let t = (day - 1) * 86_400 + seconds;
    let rem = t % 86_400;
    format!("2025-01-{:02}T{:02}:{:02}:{:02}Z", t / 86_400 + 1, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The expected destination row of source id `i` after both runs.
fn expected(i: i64) -> Row4 {
    let customer = format!("CUST{}", i % 7);
    if i <= CHANGED {
        let qty = 1000 + i;
        (customer, qty, qty as f64 * 1.25, ts(20, i))
    } else {
        let qty = i % 13 + 1;
        let at = if i <= N1 { ts(1, i) } else { ts(10, i) };
        (customer, qty, qty as f64 * 1.25, at)
    }
}

fn start(pipeline: &Path, home: &Path, extra: &[&str]) -> Child {
    let mut args = vec!["run", "--json", "--batch-size", "500"];
    args.extend_from_slice(extra);
    args.push(pipeline.to_str().unwrap());
    dagg().env("DAGG_HOME", home).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Runs to the end; returns the summary and stderr.
fn finish(child: Child) -> (Value, String) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    (serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out))), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_mariadb_incremental_upsert_twice_with_a_sigkill_in_between_is_exact() {
    let sfx = uuid_like();
    let (src, dst, log) = (format!("inc_src_{sfx}"), format!("inc_dst_{sfx}"), format!("inc_log_{sfx}"));
    pg_exec(&format!(
        "CREATE TABLE {src} (id INT PRIMARY KEY, customer TEXT NOT NULL, qty INT NOT NULL, price NUMERIC(10,2) NOT NULL, updated_at TIMESTAMPTZ NOT NULL);\n\
         INSERT INTO {src} SELECT g, 'cust' || (g % 7), g % 13 + 1, 1.25, timestamptz '2025-01-01T00:00:00Z' + g * interval '1 second' FROM generate_series(1, {N1}) g"
    ))
    .await;
    let cols = "customer VARCHAR(40), qty INT, price DOUBLE, total DOUBLE, updated_at DATETIME(6)";
    my_exec(&format!(
        "CREATE TABLE {dst} (id INT PRIMARY KEY, {cols});\n\
         CREATE TABLE {log} (seq BIGINT AUTO_INCREMENT PRIMARY KEY, id INT NOT NULL, {cols})"
    ))
    .await;

    let dir = tempfile::tempdir().unwrap();
    let pg_conf = json!({"host": "127.0.0.1", "database": "test", "username": "postgres", "ssl_mode": "disable",
        "table": src, "incremental": {"cursor_field": "updated_at"}});
    let my_conf = |extra: Value| {
        let mut c = json!({"host": "127.0.0.1", "database": "test", "username": "root", "ssl_mode": "disable"});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"connector_type": "mysql", "config": c})
    };
    let doc = json!({
        "name": format!("incremental-{sfx}"),
        "source": {"connector_type": "postgresql", "config": pg_conf},
        "transformations": [
            {"type": "field_operation", "field_name": "customer", "operation": "uppercase"},
            {"type": "field_calculation", "field_name": "total", "operation": "multiply",
             "parameters": {"source_fields": ["qty", "price"], "output_field": "total"}}
        ],
        "destinations": [
            my_conf(json!({"table": dst, "mode": "upsert", "key_fields": ["id"]})),
            my_conf(json!({"table": log}))
        ],
        "checkpoint": {"interval_seconds": 0.1}
    });
    let pipeline = dir.path().join("p.json");
    fs::write(&pipeline, doc.to_string()).unwrap();
    let home = dir.path().join("home");

    // Run 1 reads everything.
    let (summary, _) = finish(start(&pipeline, &home, &[]));
    assert_eq!(summary["records_read"], N1, "{summary}");
    assert_eq!(my_i64(&format!("SELECT COUNT(*) FROM {dst}")).await, N1);

    // New rows and changed rows between the runs.
    pg_exec(&format!(
        "INSERT INTO {src} SELECT g, 'cust' || (g % 7), g % 13 + 1, 1.25, timestamptz '2025-01-10T00:00:00Z' + g * interval '1 second' FROM generate_series({}, {}) g;\n\
         UPDATE {src} SET qty = 1000 + id, updated_at = timestamptz '2025-01-20T00:00:00Z' + id * interval '1 second' WHERE id <= {CHANGED}",
        N1 + 1,
        N1 + N2
    ))
    .await;

    // Run 2 is killed (SIGKILL) once the destinations have committed a couple of epochs.
    let mut child = start(&pipeline, &home, &[]);
    let started = Instant::now();
    let marker = format!("SELECT COALESCE(MAX(epoch), 0) FROM _dagg_sink_epochs WHERE sink_id LIKE '{dst}-%'");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!("run 2 ended ({status}) before it could be killed mid-way: {}", text(&out));
        }
        if my_i64(&marker).await >= 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "run 2 never committed a second epoch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = my_i64(&format!("SELECT COUNT(*) FROM {log}")).await;
    assert!(partial > N1 && partial < N1 + N2 + CHANGED, "killed mid-way: the log has {partial} rows");

    // Run 2 again: it resumes from its last checkpoint and finishes.
    let (summary, stderr) = finish(start(&pipeline, &home, &[]));
    assert!(stderr.contains("resuming run"), "{stderr}");
    assert_eq!(summary["records_read"], N2 + CHANGED, "run 2 read only the new and changed rows: {summary}");

    let rows = table_rows(&dst).await;
    assert_eq!(rows.len() as i64, N1 + N2);
    for i in 1..=N1 + N2 {
        assert_eq!(rows.get(&i), Some(&expected(i)), "row {i}");
    }
    // Every source row version reached the log exactly once, the kill notwithstanding.
    let versions = my_i64(&format!("SELECT COUNT(*) FROM (SELECT id, updated_at FROM {log} GROUP BY id, updated_at) v")).await;
    assert_eq!(my_i64(&format!("SELECT COUNT(*) FROM {log}")).await, N1 + N2 + CHANGED);
    assert_eq!(versions, N1 + N2 + CHANGED, "no row version twice");

    // Nothing new: `--fresh` still starts from the mark and reads nothing.
    let (summary, _) = finish(start(&pipeline, &home, &["--fresh"]));
    assert_eq!(summary["records_read"], 0, "{summary}");
    // `--full-refresh` reads everything again; the upserted table stays exact.
    let (summary, _) = finish(start(&pipeline, &home, &["--full-refresh"]));
    assert_eq!(summary["records_read"], N1 + N2, "{summary}");
    let rows = table_rows(&dst).await;
    assert_eq!(rows.len() as i64, N1 + N2);
    assert!((1..=N1 + N2).all(|i| rows.get(&i) == Some(&expected(i))));

    pg_exec(&format!("DROP TABLE {src}")).await;
    my_exec(&format!("DROP TABLE {dst};\nDROP TABLE {log}")).await;
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}
