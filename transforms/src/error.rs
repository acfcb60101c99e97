//! Why a transformation list cannot be compiled into a [`Chain`](crate::Chain), or why a
//! snapshot cannot be restored into one.
//!
//! These are errors of a document or a checkpoint, never of a record: a step that fails for
//! one record sends it to [`Output::rejected`](crate::Output::rejected) with its reason, and
//! the batch goes on. Each variant names the step it is about the way the document does
//! (`transformations[2]`, `transformations[0].then[1]`); the messages are for people and are
//! shown as they are by the API and in a run's error.

/// Why [`Chain::new`](crate::Chain::new) or [`Chain::restore`](crate::Chain::restore) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An `aggregation` or `deduplicate` inside a `conditional` branch (they keep state
    /// across records, which a branch cannot hold).
    #[error("{stage}: `{kind}` may not stand inside `conditional`")]
    StatefulInConditional { stage: String, kind: &'static str },
    /// A `join` whose source's records were not handed to the chain.
    #[error("{stage}: no records were given for the join source `{join_source}`")]
    NoJoinData { stage: String, join_source: String },
    /// The snapshot is not a chain snapshot at all.
    #[error("not a chain snapshot: {0}")]
    NotASnapshot(String),
    /// The snapshot was written in a format this build does not read.
    #[error("the chain snapshot is of version {found}; this build reads version {expected}")]
    Version { found: String, expected: u64 },
    /// The snapshot's envelope is malformed.
    #[error("chain snapshot: {0}")]
    Malformed(String),
    /// The snapshot holds the state of other stateful steps than this chain has (the lists
    /// name each step as `transformations[i] (type)`, or `none`).
    #[error("the chain snapshot holds the state of {count} step(s): {theirs}; this chain's stateful steps are: {ours}")]
    OtherSteps { count: usize, theirs: String, ours: String },
    /// Where step `index` of type `kind` should be, the snapshot holds another step's state.
    #[error("the chain snapshot has, in the place of transformations[{index}] ({kind}), the state of step {found_step} of type {found_type}")]
    StepMismatch { index: usize, kind: &'static str, found_step: String, found_type: String },
    /// The state of step `index` (of type `kind`) cannot be read: it belongs to another
    /// shape of the step (other aggregates, window, `keep`, …) or is malformed.
    #[error("chain snapshot of transformations[{index}] ({kind}): {reason}")]
    StepState { index: usize, kind: &'static str, reason: String },
}
