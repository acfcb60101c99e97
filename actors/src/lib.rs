//! dagg's runtime: runs a pipeline's stages, moves records in batches over bounded
//! channels, and routes every failed record to the dead letter with its stage and position.

pub mod dead_letter;
pub mod preview;
pub mod run;

pub use run::{ProgressSnapshot, RunError, RunOptions, RunProgress, RunSummary, run_pipeline};
