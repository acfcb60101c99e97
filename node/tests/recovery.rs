//! Exactly-once across crashes: `dagg run` killed with SIGKILL at several moments of a
//! 2,000,000-record run and started again each time delivers every record exactly once, to
//! the destination and to the dead letter.

mod common;

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const N: u64 = 2_000_000;

fn write_input(path: &Path) {
    let mut w = BufWriter::new(fs::File::create(path).unwrap());
    for i in 1..=N {
        // Every 1000th record has an address the validation rejects.
        let email = if i % 1000 == 0 { "broken".to_string() } else { format!("user{i}@example.com") };
        writeln!(w, r#"{{"id":{i},"name":"item number {i}","qty":{},"email":"{email}"}}"#, i % 7).unwrap();
    }
    w.flush().unwrap();
}

/// Ids in a JSONL file, each line parsed; panics on a torn or duplicated line.
fn ids(path: &Path, field: &[&str]) -> Vec<u64> {
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    BufReader::new(f)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(&l.unwrap()).expect("every line is whole JSON");
            field.iter().fold(&v, |v, k| &v[k]).as_u64().expect("an id")
        })
        .collect()
}

#[test]
fn sigkill_at_five_moments_then_resume_delivers_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("in.jsonl"));
    let doc = json!({
        "name": "crash-test",
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "transformations": [
            {"type": "field_mapping", "field_name": "name", "operation": "title_case"},
            {"type": "field_calculation", "field_name": "double", "operation": "multiply", "parameters": {"source_fields": ["qty", "qty"]}},
            {"type": "field_validation", "field_name": "email", "validation_type": "email_format"}
        ],
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}},
        "error_handling": {"dead_letter": {"connector_type": "file", "config": {"path": "dead.jsonl", "format": "jsonl"}}},
        "checkpoint": {"interval_seconds": 0.2}
    });
    let pipeline = dir.path().join("p.json");
    fs::write(&pipeline, doc.to_string()).unwrap();
    let home = dir.path().join("home");
    let run = || {
        dagg()
            .env("DAGG_HOME", &home)
            .args(["run", "--json", pipeline.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // Kill at five moments; each restart resumes from the last completed checkpoint.
    let mut killed = 0;
    let mut resumed = 0;
    for delay_ms in [400u64, 900, 600, 1300, 800] {
        let mut child = run();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(delay_ms) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        let out = child.wait_with_output().unwrap();
        if String::from_utf8_lossy(&out.stderr).contains("resuming run") {
            resumed += 1;
        }
        assert!(!dir.path().join("out.jsonl").exists() || out.status.success(), "no output is visible before the run completes");
    }
    assert!(killed >= 3, "the run was killed mid-way only {killed} times: it is too fast for this test's delays");
    assert!(resumed >= 2, "only {resumed} restarts resumed from a checkpoint");

    let out = run().wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "warning", "{summary}");
    assert_eq!(summary["records_read"], N);
    assert_eq!(summary["records_written"], N - N / 1000);
    assert_eq!(summary["dead_lettered"], N / 1000);

    let written = ids(&dir.path().join("out.jsonl"), &["id"]);
    assert_eq!(written.len() as u64, N - N / 1000, "every good record once");
    let expected: Vec<u64> = (1..=N).filter(|i| i % 1000 != 0).collect();
    assert_eq!(written, expected, "in input order, none twice, none lost");

    let dead = ids(&dir.path().join("dead.jsonl"), &["record", "id"]);
    assert_eq!(dead, (1..=N / 1000).map(|i| i * 1000).collect::<Vec<_>>());
    let run_ids: HashSet<String> = BufReader::new(fs::File::open(dir.path().join("dead.jsonl")).unwrap())
        .lines()
        .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap()["run_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(run_ids.len(), 1, "a resumed run keeps its run id");
    assert!(!dir.path().join(".out.jsonl.dagg-tmp").exists(), "the temporary file was moved into place");
}

#[test]
fn a_finished_run_leaves_nothing_to_resume_and_a_changed_document_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    for i in 1..=200_000 {
        input.push_str(&format!("{{\"id\":{i}}}\n"));
    }
    fs::write(dir.path().join("in.jsonl"), input).unwrap();
    let doc = json!({
        "name": "fresh-test",
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}},
        "checkpoint": {"interval_seconds": 0.1}
    });
    let pipeline = dir.path().join("p.json");
    fs::write(&pipeline, doc.to_string()).unwrap();
    let home = dir.path().join("home");
    let out = dagg().env("DAGG_HOME", &home).args(["run", "--fresh", pipeline.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ids(&dir.path().join("out.jsonl"), &["id"]).len(), 200_000);
    // A completed run leaves no checkpoint: running again starts from the beginning.
    let out = dagg().env("DAGG_HOME", &home).args(["run", pipeline.to_str().unwrap()]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("resuming"), "{}", text(&out));
    assert_eq!(ids(&dir.path().join("out.jsonl"), &["id"]).len(), 200_000);

    // Interrupt a run, then change the document: the next run starts over instead of resuming.
    let mut child = dagg().env("DAGG_HOME", &home).args(["run", pipeline.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let interrupted = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut changed = doc.clone();
    changed["description"] = json!("changed");
    fs::write(&pipeline, changed.to_string()).unwrap();
    let out = dagg().env("DAGG_HOME", &home).args(["run", pipeline.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    if interrupted {
        assert!(String::from_utf8_lossy(&out.stderr).contains("changed since run"), "{}", text(&out));
    }
    assert_eq!(ids(&dir.path().join("out.jsonl"), &["id"]), (1..=200_000).collect::<Vec<_>>());
}
