//! A source that fails on purpose, for the tests of retries (`retry.rs`, `parallel.rs`).

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use dagg_actors::{ConnectorFactory, Registry};
use dagg_connectors::{ConnectorError, SinkConnector, SourceBatch, SourceConnector};
use dagg_model::spec::connector::ConnectorSpec;
use dagg_model::{Position, Value};

/// A source that fails (or panics) at its `fail_at`-th batch when `fail`.
pub struct Flaky {
    inner: Box<dyn SourceConnector>,
    batches: u32,
    fail_at: u32,
    fail: bool,
    panic: bool,
}

#[async_trait::async_trait]
impl SourceConnector for Flaky {
    async fn next_batch(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError> {
        self.batches += 1;
        if self.fail && self.batches == self.fail_at {
            if self.panic {
                panic!("injected panic");
            }
            return Err(ConnectorError::Config("injected failure".into()));
        }
        self.inner.next_batch(max).await
    }
    fn describe(&self, pos: Position) -> Value {
        self.inner.describe(pos)
    }
    fn checkpoint(&self) -> serde_json::Value {
        self.inner.checkpoint()
    }
    async fn seek(&mut self, cp: &serde_json::Value) -> Result<(), ConnectorError> {
        self.inner.seek(cp).await
    }
}

/// Opens the real connectors, the source wrapped in a [`Flaky`] that fails at batch
/// `fail_at` in the first `failing` attempts (one attempt per source opened).
pub struct FlakyFactory {
    pub attempts: AtomicU32,
    pub failing: u32,
    pub fail_at: u32,
    pub panic: bool,
}

impl FlakyFactory {
    pub fn new(failing: u32, fail_at: u32, panic: bool) -> FlakyFactory {
        FlakyFactory { attempts: AtomicU32::new(0), failing, fail_at, panic }
    }
}

impl ConnectorFactory for FlakyFactory {
    fn source(&self, spec: &ConnectorSpec, base: &Path, limits: &dagg_model::spec::pipeline::Limits) -> Result<Box<dyn SourceConnector>, ConnectorError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Box::new(Flaky { inner: Registry.source(spec, base, limits)?, batches: 0, fail_at: self.fail_at, fail: attempt <= self.failing, panic: self.panic }))
    }
    fn sink(&self, spec: &ConnectorSpec, base: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError> {
        Registry.sink(spec, base)
    }
}
