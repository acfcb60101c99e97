//! Issue 6's end-to-end case on the connectors: PostgreSQL (incremental by `updated_at`) →
//! a transformation → MariaDB (upsert by `id`), run twice with new and changed rows in
//! between, the second run killed mid-way (once after a commit whose checkpoint was never
//! recorded) and resumed: the table ends with exactly the expected rows.
//!
//! The loop below drives the connectors as the runtime does: batches, a barrier after every
//! `every` batches (source checkpoint, then `pre_commit`, then the checkpoint is "recorded"),
//! a final barrier and `commit`; a resume seeks the source and recovers the sink to the last
//! recorded checkpoint; the next run seeks to the previous run's final source checkpoint.

mod support;

use std::path::Path;

use dagg_connectors::{SinkConnector, SourceConnector, open_sink, open_source};
use dagg_model::spec::connector::{ConnectorSpec, Role};
use dagg_model::{Record, Value};
use serde_json::{Value as Json, json};
use support::*;

/// A recorded checkpoint: its epoch, the source position and the sink's token.
#[derive(Clone, Debug)]
struct Recorded {
    epoch: u64,
    source: Json,
    sink: Json,
}

/// How a run ends.
enum Kill {
    Never,
    /// After this many batches, with writes since the last barrier (lost).
    AfterBatches(usize),
    /// At this barrier, after the sink committed, before the checkpoint is recorded.
    AtBarrierBeforeRecord(u64),
}

/// The transformation: upper-cases `customer` and adds `total`.
fn transform(mut r: Record) -> Record {
    if let Some(Value::String(s)) = r.get("customer").cloned() {
        r.insert("customer", Value::from(s.to_uppercase()));
    }
    let total = r.get("qty").and_then(Value::as_f64).unwrap_or(0.0) * r.get("price").and_then(Value::as_f64).unwrap_or(0.0);
    r.insert("total", Value::Float((total * 100.0).round() / 100.0));
    r
}

/// Runs (or resumes) a run. `start` is where the source starts (the previous run's final
/// checkpoint); `resume` a recorded checkpoint of this run. Returns the last recorded
/// checkpoint and whether the run finished.
async fn run(src_spec: &ConnectorSpec, sink_spec: &ConnectorSpec, start: Option<&Json>, resume: Option<&Recorded>, kill: Kill) -> (Option<Recorded>, bool) {
    let base = Path::new(".");
    let mut src: Box<dyn SourceConnector> = open_source(src_spec, base).unwrap();
    let mut sink: Box<dyn SinkConnector> = open_sink(sink_spec, base).unwrap();
    let mut epoch = 0;
    let mut recorded = resume.cloned();
    if let Some(r) = resume {
        sink.recover(&r.sink, r.epoch).await.unwrap();
        src.seek(&r.source).await.unwrap();
        epoch = r.epoch;
    } else if let Some(cp) = start {
        src.seek(cp).await.unwrap();
    }
    let every = 2;
    let mut batches = 0;
    loop {
        let b = src.next_batch(3).await.unwrap();
        let done = b.is_none();
        if let Some(b) = b {
            let records: Vec<Record> = b.batch.records.into_iter().map(transform).collect();
            let refused = sink.write(&records).await.unwrap();
            assert!(refused.is_empty(), "{refused:?}");
            batches += 1;
            if let Kill::AfterBatches(n) = kill
                && batches == n
            {
                return (recorded, false);
            }
        }
        if done || batches % every == 0 {
            epoch += 1;
            let source = src.checkpoint();
            let token = sink.pre_commit(epoch).await.unwrap();
            if let Kill::AtBarrierBeforeRecord(e) = kill
                && e == epoch
            {
                return (recorded, false);
            }
            recorded = Some(Recorded { epoch, source: json!(source), sink: token });
        }
        if done {
            sink.commit().await.unwrap();
            return (recorded, true);
        }
    }
}

async fn mariadb_rows(t: &str) -> Vec<Json> {
    let s = spec(my_config(json!({"query": format!("SELECT id, customer, qty, total, updated_at FROM {t} ORDER BY id")})), Role::Source);
    let mut src = open_source(&s, Path::new(".")).unwrap();
    read_all(&mut src, 100).await.iter().map(to_json).collect()
}

#[tokio::test]
async fn postgres_to_mariadb_upsert_incremental_twice_killed_and_resumed() {
    let pg_t = format!("orders_{}", suffix());
    let my_t = format!("orders_out_{}", suffix());
    pg_exec(&format!(
        "CREATE TABLE {pg_t} (id INT PRIMARY KEY, customer TEXT NOT NULL, qty INT NOT NULL, price NUMERIC(10,2) NOT NULL, updated_at TIMESTAMPTZ NOT NULL);\n\
         INSERT INTO {pg_t} SELECT g, 'cust' || (g % 3), g, 1.25, timestamptz '2025-01-01T00:00:00Z' + g * interval '1 minute' FROM generate_series(1, 10) g"
    ))
    .await;
    my_exec(&format!("CREATE TABLE {my_t} (id INT PRIMARY KEY, customer VARCHAR(20), qty INT, price DOUBLE, total DOUBLE, updated_at DATETIME(6))")).await;
    let src = spec(pg_config(json!({"table": pg_t, "incremental": {"cursor_field": "updated_at"}})), Role::Source);
    let sink = spec(my_config(json!({"table": my_t, "mode": "upsert", "key_fields": ["id"], "connection_pool_size": 2})), Role::Sink);

    // Run 1: killed after 3 batches (writes since barrier 1 lost), resumed to its end.
    let (cp, finished) = run(&src, &sink, None, None, Kill::AfterBatches(3)).await;
    assert!(!finished);
    let cp = cp.expect("barrier 1 was recorded");
    let (last, finished) = run(&src, &sink, None, Some(&cp), Kill::Never).await;
    assert!(finished);
    let run1_end = last.unwrap().source;
    assert_eq!(mariadb_rows(&my_t).await.len(), 10);

    // New rows, and a changed one, between the runs.
    pg_exec(&format!(
        "INSERT INTO {pg_t} SELECT g, 'new' || g, g, 2.00, timestamptz '2025-01-02T00:00:00Z' + g * interval '1 minute' FROM generate_series(11, 16) g;\n\
         UPDATE {pg_t} SET qty = 100, updated_at = '2025-01-03T00:00:00Z' WHERE id = 2"
    ))
    .await;

    // Run 2 starts after run 1's high-water mark; it dies at barrier 2 after the sink
    // committed epoch 2 but before the checkpoint was recorded, and is resumed from barrier 1.
    let (cp, finished) = run(&src, &sink, Some(&run1_end), None, Kill::AtBarrierBeforeRecord(2)).await;
    assert!(!finished);
    let cp = cp.expect("barrier 1 was recorded");
    assert_eq!(cp.epoch, 1);
    let (_, finished) = run(&src, &sink, Some(&run1_end), Some(&cp), Kill::Never).await;
    assert!(finished);

    let rows = mariadb_rows(&my_t).await;
    let expected: Vec<Json> = (1..=16)
        .map(|i: i64| {
            let (customer, qty, price, ts) = match i {
                2 => ("CUST2".to_string(), 100, 1.25, "2025-01-03T00:00:00Z".to_string()),
                1..=10 => (format!("CUST{}", i % 3), i, 1.25, format!("2025-01-01T00:{:02}:00Z", i)),
                _ => (format!("NEW{i}"), i, 2.0, format!("2025-01-02T00:{:02}:00Z", i)),
            };
            json!({"id": i, "customer": customer, "qty": qty, "total": ((qty as f64 * price) * 100.0).round() / 100.0, "updated_at": ts})
        })
        .collect();
    assert_eq!(rows, expected);
    pg_exec(&format!("DROP TABLE {pg_t}")).await;
    my_exec(&format!("DROP TABLE {my_t}")).await;
}
