//! The pipeline document (`../shared/spec/pipeline.md`): its parts, each read with every
//! error collected and its path kept.

pub mod connector;
pub mod connectors;
pub mod reader;
pub mod condition;
pub mod transform;
pub mod pipeline;
pub mod streaming;
pub mod s3;
pub mod paths;
