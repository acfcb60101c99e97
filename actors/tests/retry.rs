//! Failures during a run: retried from the last checkpoint following the retry policy, with
//! backoff, until the run succeeds or the retries run out — and never a record lost or
//! written twice.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dagg_actors::{ConnectorFactory, Registry, RunOptions, run_pipeline};
use dagg_connectors::{ConnectorError, SinkConnector, SourceConnector};
use dagg_model::spec::connector::ConnectorSpec;
use dagg_model::spec::pipeline::parse_pipeline;
use dagg_model::RunStatus;
use serde_json::json;

mod support;
use support::FlakyFactory;

fn setup(max_retries: u32) -> (tempfile::TempDir, dagg_model::spec::pipeline::PipelineSpec) {
    let dir = tempfile::tempdir().unwrap();
    let input: String = (1..=5000).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    std::fs::write(dir.path().join("in.jsonl"), input).unwrap();
    let spec = parse_pipeline(&json!({
        "name": "flaky",
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "transformations": [{"type": "field_addition", "field_name": "seen", "value": true}],
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}},
        "error_handling": {"retry_policy": {"max_retries": max_retries, "backoff_multiplier": 2, "initial_delay_seconds": 0.1}}
    }))
    .unwrap();
    (dir, spec)
}

fn opts(factory: FlakyFactory) -> RunOptions {
    RunOptions { batch_size: 500, checkpoint_interval: Some(Duration::ZERO), connectors: Arc::new(factory), ..RunOptions::default() }
}

fn output_ids(dir: &Path) -> Vec<i64> {
    std::fs::read_to_string(dir.join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_stage_that_fails_twice_then_recovers_ends_success_with_everything_once() {
    let (dir, spec) = setup(3);
    let summary = run_pipeline(&spec, dir.path(), opts(FlakyFactory::new(2, 4, false))).await;
    assert_eq!(summary.status, RunStatus::Success, "{}", summary.line());
    assert_eq!(summary.attempts, 3);
    assert_eq!(summary.records_read, 5000);
    assert_eq!(summary.records_written, 5000);
    assert_eq!(output_ids(dir.path()), (1..=5000).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_panic_in_a_stage_is_a_failure_that_is_retried() {
    let (dir, spec) = setup(1);
    let summary = run_pipeline(&spec, dir.path(), opts(FlakyFactory::new(1, 4, true))).await;
    assert_eq!(summary.status, RunStatus::Success, "{}", summary.line());
    assert_eq!(summary.attempts, 2);
    assert_eq!(output_ids(dir.path()), (1..=5000).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_stage_that_keeps_failing_ends_failed_after_max_retries_with_backoff() {
    let (dir, spec) = setup(2);
    let started = Instant::now();
    let summary = run_pipeline(&spec, dir.path(), opts(FlakyFactory::new(u32::MAX, 4, false))).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(summary.attempts, 3, "the first attempt and two retries");
    assert!(summary.error.as_deref().unwrap().contains("injected failure"), "{:?}", summary.error);
    // Delays of 0.1 s then 0.2 s between the attempts.
    assert!(started.elapsed() >= Duration::from_millis(300), "backoff waited {:?}", started.elapsed());
    assert!(!dir.path().join("out.jsonl").exists(), "a failed run makes nothing visible");
}

#[tokio::test]
async fn cancel_stops_the_run_and_commits_nothing() {
    let (dir, spec) = setup(0);
    let o = opts(FlakyFactory::new(0, 4, false));
    o.progress.cancel();
    let summary = run_pipeline(&spec, dir.path(), o).await;
    assert_eq!(summary.status, RunStatus::Cancelled);
    assert!(!dir.path().join("out.jsonl").exists());
    assert!(!dir.path().join(".out.jsonl.dagg-tmp").exists());
}

/// A destination that never finishes a write: the data path is stuck.
struct Stuck;

#[async_trait::async_trait]
impl SinkConnector for Stuck {
    async fn write(&mut self, _: &[dagg_model::Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        std::future::pending().await
    }
    async fn commit(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
    async fn abort(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

struct StuckFactory;

impl ConnectorFactory for StuckFactory {
    fn source(&self, spec: &ConnectorSpec, base: &Path, limits: &dagg_model::spec::pipeline::Limits) -> Result<Box<dyn SourceConnector>, ConnectorError> {
        Registry.source(spec, base, limits)
    }
    fn sink(&self, _: &ConnectorSpec, _: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError> {
        Ok(Box::new(Stuck))
    }
}

#[tokio::test]
async fn status_and_cancel_are_answered_while_the_data_path_is_blocked() {
    let (dir, spec) = setup(0);
    let o = RunOptions { batch_size: 100, connectors: Arc::new(StuckFactory), ..RunOptions::default() };
    let handle = dagg_actors::start_run(&spec, dir.path(), o).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let status = handle.status().await;
    assert!(asked.elapsed() < Duration::from_millis(500), "status took {:?}", asked.elapsed());
    assert_eq!(status.status, RunStatus::Running);
    assert!(status.read > 0 && status.read < 5000, "the source is held back by the stuck destination: {status:?}");
    let cancelled = Instant::now();
    handle.cancel();
    let summary = handle.wait().await;
    assert_eq!(summary.status, RunStatus::Cancelled);
    assert!(cancelled.elapsed() < Duration::from_secs(3), "cancel took {:?}", cancelled.elapsed());
}

#[tokio::test]
async fn aggregates_over_retried_attempts_equal_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let input: String = (1..=5000).map(|i| format!("{{\"id\":{i},\"group\":\"g{}\",\"amount\":{}.5}}\n", i % 7, i % 100)).collect();
    std::fs::write(dir.path().join("in.jsonl"), input).unwrap();
    let doc = |out: &str| {
        parse_pipeline(&json!({
            "name": format!("agg-{out}"),
            "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
            "transformations": [
                {"type": "deduplicate", "key_fields": ["id"]},
                {"type": "aggregation", "group_by_fields": ["group"], "aggregated_fields": [
                    {"input_field": "amount", "output_field": "total", "operation": "sum"},
                    {"input_field": "id", "output_field": "n", "operation": "count"},
                    {"input_field": "id", "output_field": "first", "operation": "first"}
                ]}
            ],
            "destination": {"connector_type": "file", "config": {"path": out, "format": "jsonl"}},
            "error_handling": {"retry_policy": {"max_retries": 3, "initial_delay_seconds": 0.05}}
        }))
        .unwrap()
    };
    let plain = run_pipeline(&doc("plain.jsonl"), dir.path(), RunOptions::default()).await;
    assert_eq!(plain.status, RunStatus::Success, "{}", plain.line());
    let flaky = run_pipeline(&doc("flaky.jsonl"), dir.path(), opts(FlakyFactory::new(2, 4, false))).await;
    assert_eq!(flaky.status, RunStatus::Success, "{}", flaky.line());
    assert_eq!(flaky.attempts, 3);
    assert!(flaky.checkpoints > 3, "mid-run checkpoints carried the chain's state");
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    assert_eq!(read("flaky.jsonl"), read("plain.jsonl"));
    assert_eq!(read("plain.jsonl").lines().count(), 7);
}
