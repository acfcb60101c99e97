//! `dagg connector test FILE` through the real binary: working connectors (a file, the
//! machine's PostgreSQL and MariaDB) and failing ones (a closed port, a missing table, a
//! missing input file), each line saying why; the exit codes; `--json`.

mod common;

use std::fs;

use common::*;
use serde_json::{Value, json};

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn db(kind: &str, port: u16, user: &str, extra: Value) -> Value {
    let mut c = json!({"host": "127.0.0.1", "port": port, "database": "test", "username": user, "ssl_mode": "disable", "connect_timeout": 3});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({"connector_type": kind, "config": c})
}

#[test]
fn connector_test_prints_what_works_and_why_the_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.jsonl"), "{\"id\": 1}\n").unwrap();
    let dead_port = closed_port();
    let doc = json!({
        "name": "connector-test",
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "sources": {
            "crm": {"connector_type": "rest_api", "config": {"url": format!("http://127.0.0.1:{dead_port}/v1/orders"), "connection_timeout": 3}},
            "missing": {"connector_type": "file", "config": {"path": "nope/*.jsonl", "format": "jsonl"}}
        },
        "transformations": [{"type": "join", "join_type": "left", "primary_key": "id", "foreign_key": "id", "join_source": "crm"}],
        "destinations": [
            db("mysql", 3306, "root", json!({"name": "Warehouse", "table": "information_schema.TABLES"})),
            db("postgresql", 5432, "postgres", json!({"table": "dagg_no_such_table_here"})),
            db("mysql", dead_port, "root", json!({"table": "t"}))
        ],
        "error_handling": {"dead_letter": {"connector_type": "file", "config": {"path": "dl/rejected.jsonl", "format": "jsonl"}}}
    });
    let pipeline = dir.path().join("p.json");
    fs::write(&pipeline, doc.to_string()).unwrap();

    let out = run(&["connector", "test", pipeline.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "one connector fails: exit 1\n{}", text(&out));
    let line = |prefix: &str| stdout.lines().find(|l| l.contains(prefix)).unwrap_or_else(|| panic!("no line for {prefix}:\n{stdout}")).to_string();

    assert!(line("source (file)").starts_with("ok    source (file): `in.jsonl` can be read"), "{stdout}");
    let crm = line("sources.crm");
    assert!(crm.starts_with("FAIL  sources.crm (rest_api):"), "{crm}");
    assert!(crm.contains(&format!("127.0.0.1:{dead_port}")) && crm.contains("cannot connect"), "the reason names the server: {crm}");
    let missing = line("sources.missing");
    assert!(missing.starts_with("FAIL") && missing.contains("no file matches `"), "{missing}");
    let wh = line("destinations[0]");
    assert!(wh.starts_with("ok    destinations[0] (mysql `Warehouse`): connected to mysql://root@127.0.0.1:3306/test"), "{wh}");
    let nope = line("destinations[1]");
    assert!(nope.starts_with("FAIL") && nope.contains("table `dagg_no_such_table_here` does not exist"), "{nope}");
    let refused = line("destinations[2]");
    assert!(refused.starts_with("FAIL") && refused.contains(&format!("127.0.0.1:{dead_port}")), "{refused}");
    assert!(line("error_handling.dead_letter").starts_with("ok    error_handling.dead_letter (file): "), "{stdout}");
    assert!(stdout.trim_end().ends_with("3 of 7 connectors work"), "{stdout}");

    // The same as JSON.
    let out = run(&["connector", "test", "--json", pipeline.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let oks: Vec<(String, bool)> = list.as_array().unwrap().iter().map(|o| (o["stage"].as_str().unwrap().to_string(), o["ok"].as_bool().unwrap())).collect();
    assert_eq!(
        oks,
        [("source", true), ("sources.crm", false), ("sources.missing", false), ("destinations[0]", true), ("destinations[1]", false), ("destinations[2]", false), ("error_handling.dead_letter", true)]
            .map(|(s, ok)| (s.to_string(), ok))
    );
    assert!(list[1]["message"].as_str().unwrap().contains("cannot connect"), "{list}");
}

#[test]
fn connector_test_exits_0_when_all_work_and_2_for_an_invalid_document() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.jsonl"), "{\"id\": 1}\n").unwrap();
    let doc = json!({
        "name": "connector-test-ok",
        "source": db("postgresql", 5432, "postgres", json!({"query": "SELECT 1 AS one"})),
        "destination": {"connector_type": "file", "config": {"path": "out/o.jsonl", "format": "jsonl"}}
    });
    let pipeline = dir.path().join("p.json");
    fs::write(&pipeline, doc.to_string()).unwrap();
    let out = run(&["connector", "test", pipeline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok    source (postgresql): connected to postgresql://postgres@127.0.0.1:5432/test (PostgreSQL"), "{stdout}");
    assert!(stdout.contains("; the query runs"), "{stdout}");
    assert!(stdout.trim_end().ends_with("2 of 2 connectors work"), "{stdout}");

    fs::write(&pipeline, r#"{"name": "x", "source": {"connector_type": "file", "config": {"path": "in.jsonl"}}, "destination": {"connector_type": "file", "config": {"path": "o.jsonl", "format": "jsonl"}}}"#).unwrap();
    let out = run(&["connector", "test", pipeline.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("source.config: missing field `format`"), "the error names the missing key: {}", text(&out));
}
