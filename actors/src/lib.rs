//! dagg's runtime: runs a pipeline's stages, moves records in batches over bounded
//! channels, checkpoints progress so an interrupted run resumes exactly where it was, and
//! routes every failed record to the dead letter with its stage and position.

pub mod dead_letter;
mod keyed_stage;
mod high_water;
pub mod link;
pub mod metrics;
pub mod plan;
pub mod preview;
pub mod profile;
pub mod progress;
pub mod remote_keyed;
pub mod remote_sink;
pub mod run;
mod sink_stage;
pub mod store;
mod supervisor;
pub mod tap;
mod transform_stage;

pub use progress::{ProgressSnapshot, RunProgress};
pub use run::{ConnectorFactory, Registry, RunError, RunHandle, RunOptions, RunSummary, run_pipeline, start_run};
