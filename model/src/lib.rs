//! dagg's vocabulary: the record [`Value`], [`Record`] and [`Batch`], and the pipeline
//! document parsed and validated into typed specs with every error's path.
//!
//! Nothing here touches the network or the disk (the one exception, reading a pipeline file,
//! is a convenience at the edge, [`spec::pipeline::load_file`]).

pub mod error;
pub mod json;
pub mod record;
pub mod run;
pub mod spec;
pub mod value;

pub use error::{SpecError, SpecErrors};
pub use record::{Batch, FieldPath, Position, Record};
pub use run::RunStatus;
pub use value::{Map, Str, Value};
