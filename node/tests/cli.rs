//! The `dagg` command line end to end: the guide's examples, validation output, dead
//! letters, preview and failures, each through the real binary on real files.

mod common;

use std::fs;

use common::*;
use serde_json::{Value, json};

#[test]
fn guide_examples_produce_exactly_the_expected_output() {
    let root = repo_root().join("examples/guide");
    let mut cases = 0;
    for entry in fs::read_dir(&root).unwrap() {
        let case = entry.unwrap().path();
        if !case.join("pipeline.json").exists() {
            continue;
        }
        cases += 1;
        let dir = copy_case(&case);
        let out = run(&["run", dir.path().join("pipeline.json").to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", case.display(), text(&out));
        let got = Value::Array(read_records(&dir.path().join("output.json")));
        let exp: Value = serde_json::from_str(&fs::read_to_string(dir.path().join("expected.json")).unwrap()).unwrap();
        assert!(matches(&exp, &got), "{}:\nexpected {exp}\n     got {got}", case.display());
    }
    assert_eq!(cases, 5, "the five guide examples are in examples/guide");
}

#[test]
fn run_prints_one_summary_line_with_the_counts() {
    let dir = copy_case(&repo_root().join("examples/guide/01-ecommerce-orders"));
    let out = run(&["run", dir.path().join("pipeline.json").to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("success: 3 read, 2 written, 0 dead-lettered"), "{stdout}");

    let out = run(&["run", "--json", dir.path().join("pipeline.json").to_str().unwrap()]);
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "success");
    assert_eq!(s["records_read"], 3);
    assert_eq!(s["records_written"], 2);
    assert_eq!(s["filtered"], 1);
}

#[test]
fn validate_reports_every_mistake_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.json");
    let doc = json!({
        "name": "three-mistakes",
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "transformations": [
            {"type": "field_mapping", "field_name": "a", "operation": "title_case"},
            {"type": "field_mapping", "field_name": "b", "operation": "shout"},
            {"type": "record_filter", "condition": {"field": "status", "operator": "equalz", "value": "x"}}
        ],
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl", "colour": "red"}}
    });
    fs::write(&p, serde_json::to_string_pretty(&doc).unwrap()).unwrap();

    let out = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 errors"), "{err}");
    assert!(err.contains("transformations[1].operation"), "{err}");
    assert!(err.contains("transformations[2].condition.operator"), "{err}");
    assert!(err.contains("destination.config"), "{err}");

    let out = run(&["validate", "--json", p.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 3);

    // `run` refuses it the same way, before touching any file.
    let out = run(&["run", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("out.jsonl").exists());
}

#[test]
fn validate_accepts_a_good_document() {
    let p = repo_root().join("examples/guide/04-crm-enrichment/pipeline.json");
    let out = run(&["validate", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn validate_json_shows_the_stage_plan_with_keyed_instances() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.json");
    let doc = |parallelism: u32, group_by: Value| {
        json!({
            "name": "plan",
            "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
            "transformations": [
                {"type": "record_filter", "condition": {"field": "amount", "operator": "greater_than", "value": 0}},
                {"type": "aggregation", "group_by_fields": group_by, "aggregated_fields": [{"input_field": "amount", "output_field": "total", "operation": "sum"}]}
            ],
            "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}},
            "parallelism": parallelism
        })
        .to_string()
    };
    fs::write(&p, doc(3, json!(["customer_id"]))).unwrap();
    let out = run(&["validate", "--json", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plan"]["instances"], 3, "{v}");
    assert_eq!(v["plan"]["partition_key"], json!(["customer_id"]));
    let kinds: Vec<&str> = v["plan"]["stages"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["read", "keyed", "keyed", "keyed", "merge", "write"]);

    fs::write(&p, doc(3, json!([]))).unwrap();
    let out = run(&["validate", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("note: parallelism 3 is not used"), "{}", text(&out));
}

#[test]
fn a_malformed_jsonl_line_goes_to_the_dead_letter_with_its_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    for i in 1..=100 {
        if i == 42 {
            input.push_str("{\"id\": 42, \"broken\": \n");
        } else {
            input.push_str(&format!("{{\"id\": {i}, \"name\": \"item {i}\"}}\n"));
        }
    }
    fs::write(dir.path().join("in.jsonl"), input).unwrap();
    let doc = json!({
        "name": "dl",
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "transformations": [{"type": "field_mapping", "field_name": "name", "operation": "uppercase"}],
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}},
        "error_handling": {"dead_letter": {"connector_type": "file", "config": {"path": "dead.jsonl", "format": "jsonl"}}}
    });
    fs::write(dir.path().join("p.json"), doc.to_string()).unwrap();
    let out = run(&["run", "--json", dir.path().join("p.json").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "warning");
    assert_eq!(s["records_written"], 99);
    assert_eq!(s["dead_lettered"], 1);

    let written = read_records(&dir.path().join("out.jsonl"));
    let ids: Vec<i64> = written.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=100).filter(|i| *i != 42).collect::<Vec<_>>());
    assert_eq!(written[0]["name"], "ITEM 1");

    let dead = read_records(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    let keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["pipeline", "run_id", "at", "stage", "reason", "position", "raw"]);
    assert_eq!(d["pipeline"], "dl");
    assert_eq!(d["stage"], "source");
    assert_eq!(d["position"]["line"], 42);
    assert!(d["position"]["file"].as_str().unwrap().ends_with("in.jsonl"));
    assert!(d["raw"].as_str().unwrap().contains("broken"));
    assert_eq!(d["run_id"], s["run_id"]);
}

#[test]
fn a_record_that_fails_a_step_is_dead_lettered_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.jsonl"), "{\"a\": 6, \"b\": 3}\n{\"a\": 1, \"b\": 0}\n{\"a\": \"x\", \"b\": 2}\n{\"a\": 9, \"b\": 3}\n").unwrap();
    let doc = json!({
        "name": "calc",
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "transformations": [{"type": "field_calculation", "field_name": "q", "operation": "divide", "parameters": {"source_fields": ["a", "b"]}}],
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}},
        "error_handling": {"dead_letter": {"connector_type": "file", "config": {"path": "dead.jsonl", "format": "jsonl"}}}
    });
    fs::write(dir.path().join("p.json"), doc.to_string()).unwrap();
    let out = run(&["run", dir.path().join("p.json").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let written = read_records(&dir.path().join("out.jsonl"));
    assert_eq!(written, vec![json!({"a": 6, "b": 3, "q": 2.0}), json!({"a": 9, "b": 3, "q": 3.0})]);
    let dead = read_records(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 2);
    for (d, line, rec) in [(&dead[0], 2, json!({"a": 1, "b": 0})), (&dead[1], 3, json!({"a": "x", "b": 2}))] {
        assert_eq!(d["stage"], "transformations[0]");
        assert_eq!(d["position"]["line"], line);
        assert_eq!(d["record"], rec);
        assert!(!d["reason"].as_str().unwrap().is_empty());
    }
}

#[test]
fn without_a_dead_letter_destination_rejects_are_counted_and_the_run_warns() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.jsonl"), "{\"e\": \"a@b.co\"}\n[1,2]\n{\"e\": \"nope\"}\n").unwrap();
    let doc = json!({
        "name": "warn",
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "transformations": [{"type": "field_validation", "field_name": "e", "validation_type": "email_format"}],
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}}
    });
    fs::write(dir.path().join("p.json"), doc.to_string()).unwrap();
    let out = run(&["run", "--json", dir.path().join("p.json").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "warning");
    assert_eq!(s["dead_lettered"], 2);
    assert_eq!(read_records(&dir.path().join("out.jsonl")), vec![json!({"e": "a@b.co"})]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line") || err.contains("rejected"), "the rejects are logged: {err}");
}

#[test]
fn a_missing_input_fails_the_run_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let doc = json!({
        "name": "missing",
        "source": {"connector_type": "file", "config": {"path": "nowhere.jsonl", "format": "jsonl"}},
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}}
    });
    fs::write(dir.path().join("p.json"), doc.to_string()).unwrap();
    let out = run(&["run", dir.path().join("p.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("failed") && stdout.contains("nowhere.jsonl"), "{stdout}");
    assert!(!dir.path().join("out.jsonl").exists());
}

#[test]
fn preview_prints_the_first_records_and_writes_nothing() {
    let dir = copy_case(&repo_root().join("examples/guide/01-ecommerce-orders"));
    let out = run(&["preview", "--limit", "1", dir.path().join("pipeline.json").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["product_name"], "Wireless Mouse");
    assert!(!dir.path().join("output.json").exists());
}

#[test]
fn yaml_pipelines_and_csv_gzip_files_run() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "id,name,qty\n1,ann,3\n2,,\n3,\"\",5\n";
    let mut gz = flate2_write(csv.as_bytes());
    fs::write(dir.path().join("in.csv.gz"), &mut gz).unwrap();
    fs::write(
        dir.path().join("p.yaml"),
        "name: csv-gzip\nsource:\n  connector_type: file\n  config:\n    path: in.csv.gz\n    format: csv\ntransformations:\n  - type: field_mapping\n    field_name: qty\n    operation: cast\n    parameters: {to: integer}\ndestination:\n  connector_type: file\n  config: {path: out.jsonl, format: jsonl}\n",
    )
    .unwrap();
    let out = run(&["run", dir.path().join("p.yaml").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        read_records(&dir.path().join("out.jsonl")),
        vec![json!({"id": "1", "name": "ann", "qty": 3}), json!({"id": "2", "name": null, "qty": null}), json!({"id": "3", "name": "", "qty": 5})]
    );
}

/// Gzips bytes with the system's `gzip`, so the test does not need a compression crate.
fn flate2_write(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip").arg("-c").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().expect("gzip is installed");
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap().stdout
}
