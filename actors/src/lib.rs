//! dagg's runtime: runs a pipeline's stages, moves records in batches over bounded
//! channels, checkpoints progress so an interrupted run resumes exactly where it was, and
//! routes every failed record to the dead letter with its stage and position.
//!
//! The modules, each importing only those below it: [`run`] starts a run under its
//! `supervisor`, which builds each attempt (`attempt`) and spawns its stages
//! (`transform_stage`, `keyed_stage`, `sink_stage`); [`remote`] holds the parts of a run
//! on other nodes. Stages talk through `protocol` (the messages between them and the
//! supervisor) and fail with `error`; below them sit [`store`], [`progress`],
//! [`dead_letter`], [`tap`] and [`metrics`].

mod attempt;
pub mod dead_letter;
mod error;
mod high_water;
mod keyed_stage;
pub mod metrics;
mod options;
pub mod plan;
pub mod preview;
pub mod profile;
pub mod progress;
mod protocol;
pub mod remote;
pub mod run;
mod sink_stage;
pub mod store;
mod supervisor;
pub mod tap;
mod transform_stage;

pub use error::{BuildError, RunError};
pub use options::{ConnectorFactory, Registry, RunOptions};
pub use progress::{ProgressSnapshot, RunProgress};
pub use remote::link;
pub use run::{RunHandle, RunSummary, run_pipeline, start_run};

/// Keyed instances on other nodes, by the path the cluster and API crates name.
pub mod remote_keyed {
    pub use crate::remote::keyed::{FromRemote, Hello, ToRemote, WINDOW, WireDead, host};
    pub use crate::remote::placer::{InstancePlacer, Io, Remote, hosted_instances, local_instances, remote_instances};
}

/// Destinations on other nodes, by the path the cluster and API crates name.
pub mod remote_sink {
    pub use crate::remote::sink::{FromSinkHost, RemoteSink, SinkAdmission, SinkRequest, ToSinkHost, host};
}
