//! `parallelism`: keyed instances of the stateful transformations give the same output as one
//! instance (as a set: instances interleave), through failures and resumed checkpoints.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dagg_actors::plan::Plan;
use dagg_actors::{RunOptions, run_pipeline};
use dagg_model::RunStatus;
use dagg_model::spec::pipeline::{PipelineSpec, parse_pipeline};
use serde_json::json;

mod support;
use support::FlakyFactory;

const N: usize = 20_000;

fn input(dir: &Path) {
    let mut s = String::new();
    for i in 1..=N {
        if i % 1000 == 0 {
            // No amount: rejected by the validation before the keyed stage.
            s.push_str(&format!("{{\"id\":{i},\"customer\":\"c{}\"}}\n", i % 97));
        } else {
            // Every id twice among the first thousand: the deduplicate drops the repeats.
            s.push_str(&format!("{{\"id\":{i},\"customer\":\"c{}\",\"amount\":{}.25}}\n", i % 97, i % 50));
        }
    }
    for i in 1..=1000 {
        if i % 1000 != 0 {
            s.push_str(&format!("{{\"id\":{i},\"customer\":\"c{}\",\"amount\":{}.25}}\n", i % 97, i % 50));
        }
    }
    std::fs::write(dir.join("in.jsonl"), s).unwrap();
}

fn aggregate(name: &str, parallelism: u32, out: &str) -> PipelineSpec {
    parse_pipeline(&json!({
        "name": name,
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "transformations": [
            {"type": "field_validation", "field_name": "amount", "validation_type": "not_null"},
            {"type": "aggregation", "group_by_fields": ["customer"], "aggregated_fields": [
                {"input_field": "amount", "output_field": "total", "operation": "sum"},
                {"input_field": "id", "output_field": "n", "operation": "count"},
                {"input_field": "id", "output_field": "first", "operation": "first"},
                {"input_field": "id", "output_field": "last", "operation": "last"}
            ]},
            {"type": "field_addition", "field_name": "kind", "value": "summary"}
        ],
        "destination": {"connector_type": "file", "config": {"path": out, "format": "jsonl"}},
        "error_handling": {
            "retry_policy": {"max_retries": 3, "initial_delay_seconds": 0.05},
            "dead_letter": {"connector_type": "file", "config": {"path": format!("dead-{out}"), "format": "jsonl"}}
        },
        "parallelism": parallelism
    }))
    .unwrap()
}

fn sorted_lines(dir: &Path, f: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(dir.join(f)).unwrap().lines().map(str::to_string).collect();
    v.sort();
    v
}

#[tokio::test]
async fn keyed_instances_aggregate_like_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    input(dir.path());
    let one = run_pipeline(&aggregate("one", 1, "one.jsonl"), dir.path(), RunOptions::default()).await;
    assert_eq!(one.status, RunStatus::Warning, "{}", one.line());
    let spec = aggregate("four", 4, "four.jsonl");
    assert_eq!(Plan::of(&spec).instances, 4);
    let four = run_pipeline(&spec, dir.path(), RunOptions { batch_size: 300, ..RunOptions::default() }).await;
    assert_eq!(four.status, RunStatus::Warning, "{}", four.line());
    assert_eq!(sorted_lines(dir.path(), "four.jsonl"), sorted_lines(dir.path(), "one.jsonl"));
    assert_eq!(sorted_lines(dir.path(), "four.jsonl").len(), 97);
    assert_eq!((four.records_read, four.records_written, four.dead_lettered), (one.records_read, one.records_written, one.dead_lettered));
    assert_eq!(four.dead_lettered, 20);
    assert_eq!(sorted_lines(dir.path(), "dead-four.jsonl").len(), 20);
}

fn flaky(failing: u32, data_dir: Option<&Path>) -> RunOptions {
    RunOptions {
        batch_size: 200,
        checkpoint_interval: Some(Duration::ZERO),
        connectors: Arc::new(FlakyFactory::new(failing, 25, false)),
        data_dir: data_dir.map(Path::to_path_buf),
        ..RunOptions::default()
    }
}

#[tokio::test]
async fn keyed_instances_resume_their_state_after_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    input(dir.path());
    let one = run_pipeline(&aggregate("plain", 1, "plain.jsonl"), dir.path(), RunOptions::default()).await;
    assert_eq!(one.status, RunStatus::Warning, "{}", one.line());
    let r = run_pipeline(&aggregate("retried", 3, "retried.jsonl"), dir.path(), flaky(2, None)).await;
    assert_eq!(r.status, RunStatus::Warning, "{}", r.line());
    assert_eq!(r.attempts, 3);
    assert!(r.checkpoints > 20, "checkpoints carried the instances' state: {}", r.line());
    assert_eq!(sorted_lines(dir.path(), "retried.jsonl"), sorted_lines(dir.path(), "plain.jsonl"));
    assert_eq!(sorted_lines(dir.path(), "dead-retried.jsonl").len(), 20, "no dead letter twice");
}

#[tokio::test]
async fn an_interrupted_keyed_run_resumes_from_its_checkpoint_and_a_new_parallelism_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    input(dir.path());
    let plain = run_pipeline(&aggregate("plain", 1, "plain.jsonl"), dir.path(), RunOptions::default()).await;
    assert_eq!(plain.status, RunStatus::Warning);

    let mut spec = aggregate("resumed", 4, "resumed.jsonl");
    spec.error_handling.retry_policy.max_retries = 0;
    let failed = run_pipeline(&spec, dir.path(), flaky(1, Some(data.path()))).await;
    assert_eq!(failed.status, RunStatus::Failed, "{}", failed.line());
    let resumed = run_pipeline(&spec, dir.path(), flaky(0, Some(data.path()))).await;
    assert_eq!(resumed.status, RunStatus::Warning, "{}", resumed.line());
    assert!(resumed.resumed_from.is_some(), "{}", resumed.line());
    assert_eq!(sorted_lines(dir.path(), "resumed.jsonl"), sorted_lines(dir.path(), "plain.jsonl"));
    assert_eq!(sorted_lines(dir.path(), "dead-resumed.jsonl").len(), 20);

    // Another parallelism is another document: the interrupted run is not resumed.
    let failed = run_pipeline(&spec, dir.path(), flaky(1, Some(data.path()))).await;
    assert_eq!(failed.status, RunStatus::Failed);
    let mut other = spec.clone();
    other.parallelism = 2;
    let fresh = run_pipeline(&other, dir.path(), flaky(0, Some(data.path()))).await;
    assert_eq!(fresh.status, RunStatus::Warning, "{}", fresh.line());
    assert_eq!(fresh.resumed_from, None);
    assert_eq!(sorted_lines(dir.path(), "resumed.jsonl"), sorted_lines(dir.path(), "plain.jsonl"));
}

#[tokio::test]
async fn keyed_deduplicate_keeps_each_key_once() {
    let dir = tempfile::tempdir().unwrap();
    input(dir.path());
    let spec = parse_pipeline(&json!({
        "name": "dedup",
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "transformations": [{"type": "deduplicate", "key_fields": ["id"]}],
        "destination": {"connector_type": "file", "config": {"path": "dedup.jsonl", "format": "jsonl"}},
        "parallelism": 3
    }))
    .unwrap();
    let r = run_pipeline(&spec, dir.path(), RunOptions { batch_size: 500, ..RunOptions::default() }).await;
    assert_eq!(r.status, RunStatus::Success, "{}", r.line());
    assert_eq!(r.records_written, N as u64);
    assert_eq!(r.filtered, 999);
    let ids: std::collections::BTreeSet<i64> =
        sorted_lines(dir.path(), "dedup.jsonl").iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), N);
}

#[tokio::test]
async fn a_failed_run_lets_go_of_its_state_so_the_next_run_in_the_process_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    input(dir.path());
    let mut spec = aggregate("again", 1, "again.jsonl");
    spec.error_handling.retry_policy.max_retries = 0;
    let failed = run_pipeline(&spec, dir.path(), flaky(1, Some(data.path()))).await;
    assert_eq!(failed.status, RunStatus::Failed, "{}", failed.line());
    let resumed = run_pipeline(&spec, dir.path(), flaky(0, Some(data.path()))).await;
    assert_eq!(resumed.status, RunStatus::Warning, "{}", resumed.line());
    assert!(resumed.resumed_from.is_some(), "{}", resumed.line());
}
