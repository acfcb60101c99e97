//! Backpressure: a slow destination slows the source, so memory stays flat however large the
//! input. Ten times the records through a slow sink must not take more than 1.5 times the
//! peak memory.
//!
//! nextest runs each test in its own process, so the process's peak resident memory
//! (`VmHWM`) is this test's alone.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dagg_actors::{ConnectorFactory, RunOptions, run_pipeline};
use dagg_connectors::{ConnectorError, SinkConnector, SourceBatch, SourceConnector};
use dagg_model::spec::connector::ConnectorSpec;
use dagg_model::spec::pipeline::parse_pipeline;
use dagg_model::{Batch, Map, Position, Record, RunStatus, Value};
use serde_json::json;

/// Makes `total` order-shaped records without touching the disk.
struct Generator {
    next: u64,
    total: u64,
}

#[async_trait::async_trait]
impl SourceConnector for Generator {
    async fn next_batch(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError> {
        if self.next >= self.total {
            return Ok(None);
        }
        let n = (max as u64).min(self.total - self.next);
        let mut records = Vec::with_capacity(n as usize);
        let mut positions = Vec::with_capacity(n as usize);
        for i in self.next..self.next + n {
            let mut r = Map::with_capacity(6);
            r.push_unchecked("order_id", Value::from(format!("ORD-{i:010}")));
            r.push_unchecked("product_name", Value::from("wireless mouse"));
            r.push_unchecked("quantity", Value::Int((i % 9) as i64 + 1));
            r.push_unchecked("price", Value::Float(29.99));
            r.push_unchecked("status", Value::from(if i % 5 < 3 { "completed" } else { "pending" }));
            records.push(r);
            positions.push(Position { unit: 0, seq: i });
        }
        self.next += n;
        Ok(Some(SourceBatch { batch: Batch { records, positions, units: None }, bad: vec![] }))
    }
    fn describe(&self, pos: Position) -> Value {
        Value::Int(pos.seq as i64)
    }
    fn checkpoint(&self) -> serde_json::Value {
        json!({"next": self.next})
    }
    async fn seek(&mut self, cp: &serde_json::Value) -> Result<(), ConnectorError> {
        self.next = cp["next"].as_u64().unwrap_or(0);
        Ok(())
    }
}

/// Accepts a batch, then sleeps: a destination slower than the source.
struct SlowSink {
    written: u64,
}

#[async_trait::async_trait]
impl SinkConnector for SlowSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        self.written += records.len() as u64;
        tokio::time::sleep(Duration::from_micros(200)).await;
        Ok(vec![])
    }
    async fn commit(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
    async fn abort(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

struct Factory {
    total: u64,
}

impl ConnectorFactory for Factory {
    fn source(&self, _: &ConnectorSpec, _: &Path, _: &dagg_model::spec::pipeline::Limits) -> Result<Box<dyn SourceConnector>, ConnectorError> {
        Ok(Box::new(Generator { next: 0, total: self.total }))
    }
    fn sink(&self, _: &ConnectorSpec, _: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError> {
        Ok(Box::new(SlowSink { written: 0 }))
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn run(total: u64) -> u64 {
    let spec = parse_pipeline(&json!({
        "name": "slow-sink",
        "source": {"connector_type": "file", "config": {"path": "generated", "format": "jsonl"}},
        "transformations": [
            {"type": "field_mapping", "field_name": "product_name", "operation": "title_case"},
            {"type": "field_calculation", "field_name": "total_price", "operation": "multiply", "parameters": {"source_fields": ["quantity", "price"]}},
            {"type": "record_filter", "condition": {"field": "status", "operator": "equals", "value": "completed"}}
        ],
        "destination": {"connector_type": "file", "config": {"path": "ignored.jsonl", "format": "jsonl"}}
    }))
    .unwrap();
    let opts = RunOptions { connectors: Arc::new(Factory { total }), ..RunOptions::default() };
    let s = run_pipeline(&spec, Path::new("."), opts).await;
    assert_eq!(s.status, RunStatus::Success, "{}", s.line());
    assert_eq!(s.records_read, total);
    assert_eq!(s.records_written, total / 5 * 3);
    peak_rss_kib()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_behind_a_slow_sink() {
    // 1M then 10M records through the e-commerce steps into a destination slower than the
    // source: the peak after 10M stays within 1.5x of the peak after 1M.
    let one = run(1_000_000).await;
    let ten = run(10_000_000).await;
    eprintln!("peak resident memory: {one} KiB after 1M records, {ten} KiB after 10M more");
    assert!((ten as f64) <= 1.5 * one as f64, "peak memory grew from {one} KiB to {ten} KiB");
}
