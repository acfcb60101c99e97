//! The `postgresql` connector against the machine's PostgreSQL (database `test`): value
//! mapping both ways, streaming, incremental loads across runs, upserts, refusals, and
//! exactly-once commits across a crash.

mod support;

use std::path::Path;

use dagg_connectors::{open_sink, open_source};
use dagg_model::spec::connector::Role;
use serde_json::{Value as Json, json};
use support::*;

fn base() -> &'static Path {
    Path::new(".")
}

#[tokio::test]
async fn column_types_map_to_dagg_values() {
    let t = format!("pg_types_{}", suffix());
    pg_exec(&format!(
        "CREATE TYPE mood_{t} AS ENUM ('happy', 'sad');\n\
         CREATE TABLE {t} (i2 SMALLINT, i4 INTEGER, i8 BIGINT PRIMARY KEY, f4 REAL, f8 DOUBLE PRECISION, num NUMERIC(12,3), \
         txt TEXT, vc VARCHAR(10), ch CHAR(3), ok BOOLEAN, js JSON, jsb JSONB, ts TIMESTAMPTZ, tsn TIMESTAMP, d DATE, tm TIME, \
         u UUID, b BYTEA, arr INTEGER[], tags TEXT[], m mood_{t}, nothing TEXT);\n\
         INSERT INTO {t} VALUES (1, 2, 3, 1.5, 2.25, 12345.678, 'text', 'vc', 'ab', true, '{{\"a\": [1, 2]}}', '{{\"b\": {{\"c\": null}}}}', \
         '2025-01-15T10:30:00.123456+02:00', '2025-01-15 10:30:00', '2025-01-15', '10:30:05', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
         '\\x0102', '{{1,NULL,3}}', '{{x,\"y z\"}}', 'sad', NULL)"
    ))
    .await;
    let mut src = open_source(&spec(pg_config(json!({"table": t})), Role::Source), base()).unwrap();
    let rows = read_all(&mut src, 10).await;
    assert_eq!(
        to_json(&rows[0]),
        json!({
            "i2": 1, "i4": 2, "i8": 3, "f4": 1.5, "f8": 2.25, "num": 12345.678, "txt": "text", "vc": "vc", "ch": "ab ",
            "ok": true, "js": {"a": [1, 2]}, "jsb": {"b": {"c": null}}, "ts": "2025-01-15T08:30:00.123456Z",
            "tsn": "2025-01-15T10:30:00Z", "d": "2025-01-15", "tm": "10:30:05", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "b": "AQI=", "arr": [1, null, 3], "tags": ["x", "y z"], "m": "sad", "nothing": null
        })
    );
    // Written back through the sink into the same types, they read back the same.
    let t2 = format!("{t}_copy");
    pg_exec(&format!("CREATE TABLE {t2} (LIKE {t})")).await;
    let mut sink = open_sink(&spec(pg_config(json!({"table": t2})), Role::Sink), base()).unwrap();
    let refused = sink.write(&rows).await.unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    sink.commit().await.unwrap();
    let mut src = open_source(&spec(pg_config(json!({"table": t2})), Role::Source), base()).unwrap();
    let back = read_all(&mut src, 10).await;
    assert_eq!(back.iter().map(to_json).collect::<Vec<_>>(), rows.iter().map(to_json).collect::<Vec<_>>());
    pg_exec(&format!("DROP TABLE {t2};\nDROP TABLE {t};\nDROP TYPE mood_{t}")).await;
}

#[tokio::test]
async fn large_tables_stream_in_batches() {
    let t = format!("pg_big_{}", suffix());
    pg_exec(&format!("CREATE TABLE {t} AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 30000) g")).await;
    let mut src = open_source(&spec(pg_config(json!({"query": format!("SELECT id, h FROM {t} ORDER BY id")})), Role::Source), base()).unwrap();
    let mut n = 0i64;
    let mut batches = 0;
    while let Some(b) = src.next_batch(1000).await.unwrap() {
        assert!(b.batch.len() <= 1000);
        for r in &b.batch.records {
            n += 1;
            assert_eq!(r.get("id").and_then(|v| v.as_i64()), Some(n));
        }
        batches += 1;
    }
    assert_eq!((n, batches), (30000, 30));
    pg_exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn incremental_reads_only_rows_past_the_last_runs_high_water_mark() {
    let t = format!("pg_inc_{}", suffix());
    pg_exec(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v TEXT, updated_at TIMESTAMPTZ);\n\
         INSERT INTO {t} SELECT g, 'v' || g, timestamptz '2025-01-01' + g * interval '1 second' FROM generate_series(1, 10) g;\n\
         INSERT INTO {t} VALUES (11, 'no cursor', NULL)"
    ))
    .await;
    let s = spec(pg_config(json!({"table": t, "incremental": {"cursor_field": "updated_at"}})), Role::Source);
    let ids = |rows: &[dagg_model::Record]| rows.iter().map(|r| r.get("id").unwrap().as_i64().unwrap()).collect::<Vec<_>>();
    // Run 1 reads everything with a cursor, in cursor order.
    let mut src = open_source(&s, base()).unwrap();
    let run1 = read_all(&mut src, 4).await;
    assert_eq!(ids(&run1), (1..=10).collect::<Vec<_>>());
    let cp1 = src.checkpoint();
    assert_eq!(cp1["cursor"], json!("2025-01-01T00:00:10Z"));
    assert_eq!(cp1["done"], json!(true));
    // New rows and a change arrive; run 2 continues after run 1's final checkpoint.
    pg_exec(&format!(
        "INSERT INTO {t} VALUES (12, 'new', '2025-01-02'), (13, 'newer', '2025-01-03');\n\
         UPDATE {t} SET v = 'changed', updated_at = '2025-01-02T12:00:00Z' WHERE id = 4"
    ))
    .await;
    let mut src = open_source(&s, base()).unwrap();
    src.seek(&cp1).await.unwrap();
    let run2 = read_all(&mut src, 4).await;
    assert_eq!(ids(&run2), [12, 4, 13]);
    let cp2 = src.checkpoint();
    // Run 3 finds nothing new and keeps the mark.
    let mut src = open_source(&s, base()).unwrap();
    src.seek(&cp2).await.unwrap();
    assert!(read_all(&mut src, 4).await.is_empty());
    assert_eq!(src.checkpoint()["cursor"], cp2["cursor"]);
    pg_exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn incremental_resume_between_equal_cursor_values_loses_and_repeats_nothing() {
    let t = format!("pg_ties_{}", suffix());
    pg_exec(&format!("CREATE TABLE {t} (id INT PRIMARY KEY, day DATE);\nINSERT INTO {t} SELECT g, date '2025-01-01' + (g / 4) FROM generate_series(1, 20) g")).await;
    let s = spec(pg_config(json!({"table": t, "incremental": {"cursor_field": "day"}})), Role::Source);
    for k in [1, 2, 5, 6, 9, 13] {
        resume_gives_exactly_the_rest(&s, base(), k, 2).await;
    }
    pg_exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn upsert_updates_rows_by_key_and_insert_refuses_duplicates() {
    let t = format!("pg_up_{}", suffix());
    pg_exec(&format!("CREATE TABLE {t} (tenant TEXT, id INT, qty INT NOT NULL DEFAULT 0, note TEXT DEFAULT 'none', PRIMARY KEY (tenant, id))")).await;
    let up = spec(pg_config(json!({"table": t, "mode": "upsert", "key_fields": ["tenant", "id"], "batch_size": 2})), Role::Sink);
    let mut sink = open_sink(&up, base()).unwrap();
    let batch: Vec<_> = (1..=5).map(|i| rec(json!({"tenant": "a", "id": i, "qty": i}))).collect();
    assert!(sink.write(&batch).await.unwrap().is_empty());
    // Changes, a repeated key inside one batch (the later wins), a partial record.
    let changes = vec![
        rec(json!({"tenant": "a", "id": 2, "qty": 20, "note": "x"})),
        rec(json!({"tenant": "a", "id": 2, "qty": 21, "note": "y"})),
        rec(json!({"tenant": "a", "id": 6, "qty": 6})),
        rec(json!({"tenant": "a", "id": 3, "note": "only the note"})),
    ];
    assert!(sink.write(&changes).await.unwrap().is_empty());
    sink.commit().await.unwrap();
    assert_eq!(pg_count(&format!("SELECT count(*) FROM {t}")).await, 6);
    assert_eq!(pg_count(&format!("SELECT qty::bigint FROM {t} WHERE id = 2")).await, 21);
    assert_eq!(pg_count(&format!("SELECT count(*) FROM {t} WHERE id = 3 AND qty = 3 AND note = 'only the note'")).await, 1);
    // Plain inserts refuse the rows that break a constraint, and only those.
    let ins = spec(pg_config(json!({"table": t})), Role::Sink);
    let mut sink = open_sink(&ins, base()).unwrap();
    let rows = vec![
        rec(json!({"tenant": "b", "id": 1, "qty": 1})),
        rec(json!({"tenant": "a", "id": 1, "qty": 1})),
        rec(json!({"tenant": "b", "id": 2, "qty": null})),
        rec(json!({"tenant": "b", "id": 3, "qty": "three"})),
        rec(json!({"tenant": "b", "id": 4, "qty": 4, "colour": "red"})),
        rec(json!({"tenant": "b", "id": 5, "qty": 5})),
    ];
    let refused = sink.write(&rows).await.unwrap();
    let idx: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
    assert_eq!(idx, [1, 2, 3, 4], "{refused:?}");
    assert!(refused[0].1.contains("duplicate key"), "{}", refused[0].1);
    assert!(refused[3].1.contains("`colour` is not a column"), "{}", refused[3].1);
    sink.commit().await.unwrap();
    assert_eq!(pg_count(&format!("SELECT count(*) FROM {t} WHERE tenant = 'b'")).await, 2);
    // An upsert key without a unique index is a config error, found before writing.
    let bad = spec(pg_config(json!({"table": t, "mode": "upsert", "key_fields": ["id"]})), Role::Sink);
    let e = open_sink(&bad, base()).unwrap().write(&batch).await.unwrap_err();
    assert!(e.to_string().contains("unique index"), "{e}");
    pg_exec(&format!("DROP TABLE {t}")).await;
}

fn ids(n: std::ops::RangeInclusive<i64>) -> Vec<dagg_model::Record> {
    n.map(|i| rec(json!({"id": i, "v": format!("row {i}")}))).collect()
}

#[tokio::test]
async fn exactly_once_a_crash_after_commit_writes_nothing_twice() {
    let t = format!("pg_eo_{}", suffix());
    pg_exec(&format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")).await;
    let s = spec(pg_config(json!({"table": t})), Role::Sink);
    // Epoch 1 and epoch 2 commit; the runtime records checkpoint 1 only, then crashes.
    let mut a = open_sink(&s, base()).unwrap();
    assert!(a.write(&ids(1..=3)).await.unwrap().is_empty());
    let token1 = a.pre_commit(1).await.unwrap();
    assert!(a.write(&ids(4..=6)).await.unwrap().is_empty());
    a.pre_commit(2).await.unwrap();
    drop(a);
    assert_eq!(pg_count(&format!("SELECT count(*) FROM {t}")).await, 6);
    // A new sink recovers to checkpoint 1; the runtime replays epoch 2, then goes on.
    let mut b = open_sink(&s, base()).unwrap();
    b.recover(&token1, 1).await.unwrap();
    assert!(b.write(&ids(4..=6)).await.unwrap().is_empty(), "replayed rows must be skipped, not inserted again");
    b.pre_commit(2).await.unwrap();
    assert!(b.write(&ids(7..=8)).await.unwrap().is_empty());
    b.pre_commit(3).await.unwrap();
    b.commit().await.unwrap();
    assert_eq!(pg_count(&format!("SELECT count(*) FROM {t}")).await, 8);
    assert_eq!(pg_count(&format!("SELECT count(DISTINCT id) FROM {t}")).await, 8);
    // The run is over: its marker is gone.
    let id = token1["sink_id"].as_str().unwrap();
    assert_eq!(pg_count(&format!("SELECT count(*) FROM _dagg_sink_epochs WHERE sink_id = '{id}'")).await, 0);
    pg_exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn exactly_once_holds_when_the_replay_places_barriers_elsewhere() {
    let t = format!("pg_eo2_{}", suffix());
    pg_exec(&format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")).await;
    let s = spec(pg_config(json!({"table": t})), Role::Sink);
    let mut a = open_sink(&s, base()).unwrap();
    a.write(&ids(1..=2)).await.unwrap();
    let token1 = a.pre_commit(1).await.unwrap();
    // Epoch 2 holds rows 3..6 and a row the table refuses (v is NOT NULL).
    let mut epoch2 = ids(3..=4);
    epoch2.push(rec(json!({"id": 100, "v": null})));
    epoch2.extend(ids(5..=6));
    let refused_a = a.write(&epoch2).await.unwrap();
    assert_eq!(refused_a.iter().map(|r| r.0).collect::<Vec<_>>(), [2]);
    a.pre_commit(2).await.unwrap();
    drop(a);
    // The replay's barrier 2 comes after two records; the refusal comes back from the marker.
    let mut b = open_sink(&s, base()).unwrap();
    b.recover(&token1, 1).await.unwrap();
    assert!(b.write(&epoch2[..2]).await.unwrap().is_empty());
    let token2 = b.pre_commit(2).await.unwrap();
    let refused_b = b.write(&epoch2[2..4]).await.unwrap();
    assert_eq!(refused_b.iter().map(|r| (r.0, r.1.as_str())).collect::<Vec<_>>(), [(0, refused_a[0].1.as_str())]);
    drop(b);
    // A crash after checkpoint 2: the rest of the original epoch 2 is still skipped.
    let mut c = open_sink(&s, base()).unwrap();
    c.recover(&token2, 2).await.unwrap();
    let mut rest = epoch2[2..].to_vec();
    rest.extend(ids(7..=7));
    let refused_c = c.write(&rest).await.unwrap();
    assert_eq!(refused_c.iter().map(|r| r.0).collect::<Vec<_>>(), [0]);
    c.pre_commit(3).await.unwrap();
    c.commit().await.unwrap();
    assert_eq!(pg_count(&format!("SELECT count(*) FROM {t}")).await, 7);
    assert_eq!(pg_count(&format!("SELECT count(DISTINCT id) FROM {t}")).await, 7);
    pg_exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn abort_and_uncommitted_epochs_leave_nothing() {
    let t = format!("pg_ab_{}", suffix());
    pg_exec(&format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, v TEXT)")).await;
    let s = spec(pg_config(json!({"table": t, "schema": "public"})), Role::Sink);
    let mut a = open_sink(&s, base()).unwrap();
    a.write(&ids(1..=3)).await.unwrap();
    let token = a.pre_commit(1).await.unwrap();
    a.write(&ids(4..=5)).await.unwrap();
    a.abort().await.unwrap();
    assert_eq!(pg_count(&format!("SELECT count(*) FROM {t}")).await, 3);
    // A crash before the next commit: recovering writes the epoch again, once.
    a.write(&ids(4..=5)).await.unwrap();
    drop(a);
    let mut b = open_sink(&s, base()).unwrap();
    b.recover(&token, 1).await.unwrap();
    assert!(b.write(&ids(4..=5)).await.unwrap().is_empty());
    b.commit().await.unwrap();
    assert_eq!(pg_count(&format!("SELECT count(*) FROM {t}")).await, 5);
    pg_exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn test_connection_reports_the_server_and_table() {
    let t = format!("pg_tc_{}", suffix());
    pg_exec(&format!("CREATE TABLE {t} (id INT PRIMARY KEY)")).await;
    let ok = dagg_connectors::test_connection_as(&spec(pg_config(json!({"table": t})), Role::Source), base(), Role::Source).await.unwrap();
    assert!(ok.contains("PostgreSQL") && ok.contains(&t), "{ok}");
    let q = spec(pg_config(json!({"query": "SELECT no_such_column FROM pg_class"})), Role::Source);
    let e = dagg_connectors::test_connection_as(&q, base(), Role::Source).await.unwrap_err();
    assert!(e.to_string().contains("no_such_column"), "{e}");
    let wrong_db = spec(pg_config(json!({"database": "no_such_db_dagg", "table": t})), Role::Source);
    let e = dagg_connectors::test_connection_as(&wrong_db, base(), Role::Source).await.unwrap_err();
    assert!(e.to_string().contains("no_such_db_dagg"), "{e}");
    pg_exec(&format!("DROP TABLE {t}")).await;
    let _: Json = json!(null);
}

/// `password: ""` means no password: a trust-authenticated login connects and reads.
#[tokio::test]
async fn an_empty_password_means_no_password() {
    let t = format!("pg_nopw_{}", suffix());
    pg_exec(&format!("CREATE TABLE {t} (id INT PRIMARY KEY);\nINSERT INTO {t} VALUES (1)")).await;
    let s = spec(pg_config(json!({"table": t, "password": ""})), Role::Source);
    dagg_connectors::test_connection_as(&s, base(), Role::Source).await.unwrap();
    let mut src = open_source(&s, base()).unwrap();
    assert_eq!(read_all(&mut src, 10).await.len(), 1);
    pg_exec(&format!("DROP TABLE {t}")).await;
}
