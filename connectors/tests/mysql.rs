//! The `mysql` connector against the machine's MariaDB (database `test`): value mapping
//! both ways, incremental loads, upserts, refusals, and exactly-once commits across a crash.

mod support;

use std::path::Path;

use dagg_connectors::{open_sink, open_source};
use dagg_model::spec::connector::Role;
use serde_json::json;
use support::*;

fn base() -> &'static Path {
    Path::new(".")
}

#[tokio::test]
async fn column_types_map_to_dagg_values() {
    let t = format!("my_types_{}", suffix());
    my_exec(&format!(
        "CREATE TABLE {t} (ti TINYINT, si SMALLINT, i INT, bi BIGINT PRIMARY KEY, ub BIGINT UNSIGNED, fl FLOAT, db DOUBLE, \
         dec_ DECIMAL(12,3), ok BOOLEAN, vc VARCHAR(20), tx TEXT, en ENUM('a','b'), dt DATETIME(6), ts TIMESTAMP(3) NULL, d DATE, \
         tm TIME, y YEAR, bl BLOB, js JSON, nothing INT);\n\
         INSERT INTO {t} VALUES (-1, 2, 3, 4, 18446744073709551615, 1.5, 2.25, 12345.678, TRUE, 'vc', 'text', 'b', \
         '2025-01-15 10:30:00.123456', '2025-01-15 10:30:00.5', '2025-01-15', '10:30:05', 2025, X'0102', '{{\"a\": [1, 2]}}', NULL)"
    ))
    .await;
    let mut src = open_source(&spec(my_config(json!({"table": t})), Role::Source), base()).unwrap();
    let rows = read_all(&mut src, 10).await;
    assert_eq!(
        to_json(&rows[0]),
        json!({
            "ti": -1, "si": 2, "i": 3, "bi": 4, "ub": 18446744073709551615.0, "fl": 1.5, "db": 2.25, "dec_": 12345.678,
            "ok": true, "vc": "vc", "tx": "text", "en": "b", "dt": "2025-01-15T10:30:00.123456Z", "ts": "2025-01-15T10:30:00.500Z",
            "d": "2025-01-15", "tm": "10:30:05", "y": 2025, "bl": "AQI=", "js": "{\"a\": [1, 2]}", "nothing": null
        }),
        "MariaDB's JSON is a text column, read as a string"
    );
    // Written back into the same types, the values read back the same.
    let t2 = format!("{t}_copy");
    my_exec(&format!("CREATE TABLE {t2} LIKE {t}")).await;
    let mut sink = open_sink(&spec(my_config(json!({"table": t2})), Role::Sink), base()).unwrap();
    let mut copy = rows.clone();
    copy[0].insert("ub", dagg_model::Value::Int(7));
    let refused = sink.write(&copy).await.unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    sink.commit().await.unwrap();
    let mut src = open_source(&spec(my_config(json!({"table": t2})), Role::Source), base()).unwrap();
    let back = read_all(&mut src, 10).await;
    assert_eq!(to_json(&back[0]), to_json(&copy[0]));
    my_exec(&format!("DROP TABLE {t2};\nDROP TABLE {t}")).await;
}

#[tokio::test]
async fn incremental_reads_only_rows_past_the_last_runs_high_water_mark() {
    let t = format!("my_inc_{}", suffix());
    my_exec(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v TEXT, updated_at DATETIME(6));\n\
         INSERT INTO {t} VALUES (1, 'a', '2025-01-01 00:00:01.5'), (2, 'b', '2025-01-01 00:00:02'), (3, 'c', '2025-01-01 00:00:02'), (4, 'd', NULL)"
    ))
    .await;
    let s = spec(my_config(json!({"table": t, "incremental": {"cursor_field": "updated_at"}})), Role::Source);
    let mut src = open_source(&s, base()).unwrap();
    let run1 = read_all(&mut src, 2).await;
    assert_eq!(run1.len(), 3);
    let cp = src.checkpoint();
    assert_eq!(cp["cursor"], json!("2025-01-01T00:00:02Z"));
    my_exec(&format!("INSERT INTO {t} VALUES (5, 'e', '2025-01-01 00:00:02.000001'), (6, 'f', '2025-01-01 00:00:01')")).await;
    let mut src = open_source(&s, base()).unwrap();
    src.seek(&cp).await.unwrap();
    let run2 = read_all(&mut src, 2).await;
    assert_eq!(run2.iter().map(|r| r.get("id").unwrap().as_i64().unwrap()).collect::<Vec<_>>(), [5]);
    my_exec(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn upsert_updates_rows_by_key_and_insert_refuses_bad_rows() {
    let t = format!("my_up_{}", suffix());
    my_exec(&format!("CREATE TABLE {t} (id INT PRIMARY KEY, qty INT NOT NULL DEFAULT 0, note VARCHAR(5))")).await;
    let up = spec(my_config(json!({"table": t, "mode": "upsert", "key_fields": ["id"]})), Role::Sink);
    let mut sink = open_sink(&up, base()).unwrap();
    let first: Vec<_> = (1..=4).map(|i| rec(json!({"id": i, "qty": i}))).collect();
    assert!(sink.write(&first).await.unwrap().is_empty());
    let changes = vec![rec(json!({"id": 2, "qty": 20})), rec(json!({"id": 2, "qty": 21})), rec(json!({"id": 5, "qty": 5})), rec(json!({"id": 3, "note": "n"}))];
    assert!(sink.write(&changes).await.unwrap().is_empty());
    sink.commit().await.unwrap();
    assert_eq!(my_count(&format!("SELECT COUNT(*) FROM {t}")).await, 5);
    assert_eq!(my_count(&format!("SELECT qty FROM {t} WHERE id = 2")).await, 21);
    assert_eq!(my_count(&format!("SELECT COUNT(*) FROM {t} WHERE id = 3 AND qty = 3 AND note = 'n'")).await, 1);
    let ins = spec(my_config(json!({"table": t})), Role::Sink);
    let mut sink = open_sink(&ins, base()).unwrap();
    let rows = vec![
        rec(json!({"id": 10, "qty": 1})),
        rec(json!({"id": 1, "qty": 1})),
        rec(json!({"id": 11, "qty": null})),
        rec(json!({"id": 12, "qty": 1, "note": "far too long"})),
        rec(json!({"id": 13, "qty": 1})),
    ];
    let refused = sink.write(&rows).await.unwrap();
    assert_eq!(refused.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3], "{refused:?}");
    assert!(refused[0].1.contains("Duplicate entry"), "{}", refused[0].1);
    sink.commit().await.unwrap();
    assert_eq!(my_count(&format!("SELECT COUNT(*) FROM {t} WHERE id >= 10")).await, 2);
    my_exec(&format!("DROP TABLE {t}")).await;
}

fn ids(n: std::ops::RangeInclusive<i64>) -> Vec<dagg_model::Record> {
    n.map(|i| rec(json!({"id": i, "v": format!("row {i}")}))).collect()
}

#[tokio::test]
async fn exactly_once_a_crash_after_commit_writes_nothing_twice() {
    let t = format!("my_eo_{}", suffix());
    my_exec(&format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")).await;
    let s = spec(my_config(json!({"table": t})), Role::Sink);
    let mut a = open_sink(&s, base()).unwrap();
    assert!(a.write(&ids(1..=3)).await.unwrap().is_empty());
    let token1 = a.pre_commit(1).await.unwrap();
    assert!(a.write(&ids(4..=6)).await.unwrap().is_empty());
    a.pre_commit(2).await.unwrap();
    drop(a);
    let mut b = open_sink(&s, base()).unwrap();
    b.recover(&token1, 1).await.unwrap();
    assert!(b.write(&ids(4..=6)).await.unwrap().is_empty(), "replayed rows must be skipped, not inserted again");
    b.pre_commit(2).await.unwrap();
    assert!(b.write(&ids(7..=8)).await.unwrap().is_empty());
    b.pre_commit(3).await.unwrap();
    b.commit().await.unwrap();
    assert_eq!(my_count(&format!("SELECT COUNT(*) FROM {t}")).await, 8);
    assert_eq!(my_count(&format!("SELECT COUNT(DISTINCT id) FROM {t}")).await, 8);
    my_exec(&format!("DROP TABLE {t}")).await;
}

/// `password: ""` means no password, as with the `mysql` client: MariaDB's password-less
/// root connects (it was sent as a password and refused with "using password: YES").
#[tokio::test]
async fn an_empty_password_means_no_password() {
    let t = format!("my_nopw_{}", suffix());
    my_exec(&format!("CREATE TABLE {t} (id INT PRIMARY KEY);\nINSERT INTO {t} VALUES (1)")).await;
    let s = spec(my_config(json!({"table": t, "password": ""})), Role::Source);
    dagg_connectors::test_connection_as(&s, base(), Role::Source).await.unwrap();
    let mut src = open_source(&s, base()).unwrap();
    assert_eq!(read_all(&mut src, 10).await.len(), 1);
    my_exec(&format!("DROP TABLE {t}")).await;
}
