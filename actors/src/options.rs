//! What a run is given: the knobs of one run ([`RunOptions`]) and what opens its
//! connectors ([`ConnectorFactory`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dagg_connectors::{ConnectorError, SinkConnector, SourceConnector};
use dagg_model::spec::connector::ConnectorSpec;
use dagg_model::spec::pipeline::Limits;

use crate::progress::RunProgress;
use crate::remote::placer::InstancePlacer;

/// Opens connectors for a run. The default is the connector registry; tests put failing or
/// slow connectors in its place.
pub trait ConnectorFactory: Send + Sync {
    /// The pipeline's source, held to its `limits` (record size).
    fn source(&self, spec: &ConnectorSpec, base_dir: &Path, limits: &Limits) -> Result<Box<dyn SourceConnector>, ConnectorError>;
    fn sink(&self, spec: &ConnectorSpec, base_dir: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError>;
}

/// The connector registry of `dagg-connectors`.
pub struct Registry;

impl ConnectorFactory for Registry {
    fn source(&self, spec: &ConnectorSpec, base_dir: &Path, limits: &Limits) -> Result<Box<dyn SourceConnector>, ConnectorError> {
        dagg_connectors::open_source_limited(spec, base_dir, limits)
    }
    fn sink(&self, spec: &ConnectorSpec, base_dir: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError> {
        dagg_connectors::open_sink(spec, base_dir)
    }
}

/// Knobs of one run.
#[derive(Clone)]
pub struct RunOptions {
    /// The run's id; a new UUID when absent (a resumed run keeps its original id).
    pub run_id: Option<String>,
    /// Records per batch read from the source.
    pub batch_size: usize,
    /// Batches that may wait between the transform step and the writer.
    pub channel_capacity: usize,
    /// Live counters, status and the cancel switch, shared with whoever watches the run.
    pub progress: Arc<RunProgress>,
    /// The node's data directory: checkpoints go to its store and survive the process.
    /// Without one, checkpoints are kept in memory (retries still resume from them).
    pub data_dir: Option<PathBuf>,
    /// Ignore (and forget) an unfinished run's checkpoint and start over.
    pub fresh: bool,
    /// Like `fresh`, and also forget the high-water mark of an incremental source: read
    /// everything again.
    pub full_refresh: bool,
    /// Overrides the pipeline's `checkpoint.interval_seconds`.
    pub checkpoint_interval: Option<Duration>,
    /// Opens the connectors.
    pub connectors: Arc<dyn ConnectorFactory>,
    /// Puts keyed instances on other nodes (a cluster); without one they all run here.
    pub placer: Option<Arc<dyn InstancePlacer>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            run_id: None,
            batch_size: 2048,
            channel_capacity: 4,
            progress: Arc::default(),
            data_dir: None,
            fresh: false,
            full_refresh: false,
            checkpoint_interval: None,
            connectors: Arc::new(Registry),
            placer: None,
        }
    }
}
