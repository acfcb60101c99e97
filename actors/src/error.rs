//! Why an attempt stopped: the one error type every stage returns and the supervisor
//! judges (retry or give up), and the helpers that make one from a connector's error or a
//! task's panic.

use dagg_connectors::ConnectorError;

use crate::store::StoreError;

/// Why an attempt stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{stage}: {source}")]
    Connector { stage: String, source: ConnectorError },
    #[error("cannot build the transformations: {0}")]
    Build(#[from] BuildError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{stage} stopped unexpectedly: {reason}")]
    Crashed { stage: String, reason: String },
    #[error("cancelled")]
    Cancelled,
    /// A bounded run asked to stop (a signal): nothing committed, its checkpoint kept.
    #[error("stopped before the end of its input; the next run resumes from its last checkpoint")]
    Stopped,
    /// The delivered fields changed and the pipeline's `schema_evolution` is `strict`.
    #[error("schema_evolution is strict and the fields changed since the last run: {0}")]
    SchemaChanged(String),
    /// An incremental source cannot start from the last run's high-water mark.
    #[error("{0}")]
    HighWater(String),
    /// The stage after this one stopped (its own report says why).
    #[error("the destination stage stopped")]
    Downstream,
    /// The stage before this one stopped before the end of its input.
    #[error("the transform stage stopped before the end of its input")]
    Upstream,
}

impl RunError {
    /// Whether trying again could help (a bad document or a cancel will not change).
    pub(crate) fn is_retryable(&self) -> bool {
        !matches!(self, RunError::Build(_) | RunError::HighWater(_) | RunError::Cancelled | RunError::Stopped | RunError::SchemaChanged(_))
    }
}

impl From<dagg_transforms::Error> for RunError {
    fn from(e: dagg_transforms::Error) -> Self {
        RunError::Build(BuildError::Chain(e))
    }
}

/// Why an attempt's transformations could not be built or restored: the document or the
/// checkpoint does not fit, which trying again will not change.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The transformations do not compile.
    #[error("{0}")]
    Chain(#[from] dagg_transforms::Error),
    /// A join names a source the pipeline does not have.
    #[error("join source `{0}` is not in `sources`")]
    UnknownJoinSource(String),
    /// The checkpoint's state of the transformations does not fit them.
    #[error("cannot restore the transformations' state from checkpoint {checkpoint}: {source}")]
    Restore { checkpoint: u64, source: dagg_transforms::Error },
    /// A keyed instance's state in the checkpoint does not fit its transformations.
    #[error("cannot restore keyed instance {index}'s state: {source}")]
    RestoreInstance { index: usize, source: dagg_transforms::Error },
    /// The checkpoint holds keyed instances' states; the pipeline now runs one instance.
    #[error("checkpoint {checkpoint} was taken with keyed instances and the pipeline now runs one; resume with the parallelism it had, or start over with --fresh")]
    KeyedCheckpoint { checkpoint: u64 },
    /// The checkpoint holds one chain's state; the pipeline now runs keyed instances.
    #[error("checkpoint {checkpoint}: the checkpoint was taken without keyed instances and the pipeline now runs {instances}; resume with the parallelism it had, or start over with --fresh")]
    UnkeyedCheckpoint { checkpoint: u64, instances: usize },
    /// The checkpoint was taken with another number of keyed instances.
    #[error("checkpoint {checkpoint}: the checkpoint was taken with {taken} keyed instances and the pipeline now runs {instances}; resume with parallelism {taken}, or start over with --fresh")]
    OtherParallelism { checkpoint: u64, taken: u64, instances: usize },
    #[error("checkpoint {checkpoint}: the checkpoint's keyed states are malformed")]
    MalformedKeyedStates { checkpoint: u64 },
}

/// Turns a connector's error into the stage's (`destination`, `sources.crm`, …).
pub(crate) fn at(stage: &str) -> impl FnOnce(ConnectorError) -> RunError + '_ {
    move |source| RunError::Connector { stage: stage.to_string(), source }
}

/// The text of a task's panic (or why it did not finish).
pub(crate) fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_build_error_reads_as_one_line_and_keeps_its_cause() {
        let cause = dagg_transforms::Error::Malformed("`steps`: expected an array".into());
        let e = RunError::from(BuildError::Restore { checkpoint: 3, source: cause.clone() });
        assert_eq!(
            e.to_string(),
            "cannot build the transformations: cannot restore the transformations' state from checkpoint 3: chain snapshot: `steps`: expected an array"
        );
        assert!(!e.is_retryable(), "a checkpoint that does not fit will not fit on the next attempt");
        let build = e.source().expect("the build error");
        let chain = build.source().expect("the transformations' error");
        assert_eq!(chain.downcast_ref::<dagg_transforms::Error>(), Some(&cause));

        let compiled = RunError::from(dagg_transforms::Error::NoJoinData { stage: "transformations[1]".into(), join_source: "crm".into() });
        assert_eq!(compiled.to_string(), "cannot build the transformations: transformations[1]: no records were given for the join source `crm`");
        assert!(compiled.source().and_then(|b| b.source()).is_some_and(|c| c.is::<dagg_transforms::Error>()));
    }
}
