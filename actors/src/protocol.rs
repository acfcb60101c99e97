//! The messages between an attempt's stages and its supervisor.
//!
//! The data path of an attempt, each arrow a bounded channel:
//! `transform stage -> sink stage` carries [`ToSink`]; with keyed instances,
//! `transform stage -> instance i` carries [`ToKeyed`] and `instance i -> merge stage`
//! carries [`FromKeyed`], and the merge stage sends [`ToSink`] on. Barriers travel in order
//! with the records, so everything before a [`Barrier`] is written when the sink stage meets
//! it. The control path is the supervisor's mailbox ([`SupervisorMsg`]): every stage reports
//! its end there, tagged with its [`Stage`] and the attempt it belongs to.

use dagg_model::Record;
use ractor::RpcReplyPort;
use serde_json::Value as Json;

use crate::dead_letter::DeadLetter;
use crate::error::RunError;
use crate::progress::ProgressSnapshot;
use crate::store::CheckpointCounts;

/// What the transform stage (or the merge stage) sends the sink stage, in order.
pub(crate) enum ToSink {
    Records(Vec<Record>),
    Dead(Vec<DeadLetter>),
    /// Everything before this is written: pre-commit and record the checkpoint.
    Barrier(Barrier),
    /// The input is done and its last checkpoint recorded: commit.
    End,
    /// The run was cancelled: discard everything.
    Abort,
}

/// A checkpoint on its way down the data path.
#[derive(Clone)]
pub(crate) struct Barrier {
    pub id: u64,
    pub source: Json,
    pub chain_state: Json,
    /// The transform stage's counters (read, dropped, filtered) at the barrier.
    pub counts: CheckpointCounts,
    pub input_done: bool,
}

/// What the reading stage sends a keyed instance, in order.
pub(crate) enum ToKeyed {
    Records(Vec<Record>),
    /// The reading stage's dead letters, passed on untouched.
    Dead(Vec<DeadLetter>),
    /// The reading stage's barrier (its `chain_state` is empty: the prefix keeps no state).
    Barrier(Barrier),
    End,
}

/// What a keyed instance sends the merge stage, in order.
pub(crate) enum FromKeyed {
    Records(Vec<Record>),
    Dead(Vec<DeadLetter>),
    /// The barrier, with this instance's state and what it dropped and filtered since the
    /// attempt started.
    Barrier { barrier: Barrier, state: Json, dropped: u64, filtered: u64 },
    End,
}

/// The stages of an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Transform,
    Sink,
    /// A keyed instance of the stateful transformations.
    Keyed(usize),
    /// The stage that aligns the keyed instances' barriers.
    Merge,
}

impl Stage {
    pub fn name(&self) -> String {
        match self {
            Stage::Transform => "transformations".into(),
            Stage::Sink => "destination".into(),
            Stage::Keyed(i) => format!("keyed instance {i}"),
            Stage::Merge => "merge".into(),
        }
    }
}

/// The supervisor's mailbox: control only, so it answers while the data path is blocked.
pub enum SupervisorMsg {
    /// The run's counters and status, answered at once.
    Status(RpcReplyPort<ProgressSnapshot>),
    /// Stop the run; it ends `cancelled` and commits nothing.
    Cancel,
    /// The checkpoint timer fired.
    TriggerCheckpoint,
    /// A stage's loop ended (`attempt` tells stale reports from current ones).
    #[doc(hidden)]
    StageEnded { attempt: u32, stage: Stage, result: Result<(), RunError> },
    /// The backoff is over: start the next attempt.
    Restart,
    /// A cancelled run's stages did not stop by themselves (a blocked destination): stop them.
    ForceCancel,
}
