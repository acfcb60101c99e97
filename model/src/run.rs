//! Run statuses (guide 5.1.3) and the legal moves between them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Queued, not started.
    Pending,
    /// Processing records.
    Running,
    /// Waiting to try again after an error.
    Retrying,
    /// Stopped for now; can resume.
    Paused,
    /// Finished with every record delivered.
    Success,
    /// Finished, but some records went to the dead letter or were dropped by validation.
    Warning,
    /// Stopped by an error it could not get past.
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl RunStatus {
    /// A run in a terminal status never moves again.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Success | RunStatus::Warning | RunStatus::Failed | RunStatus::Cancelled)
    }

    /// Whether a run may go from `self` to `next`.
    pub fn can_become(self, next: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, next),
            (Pending, Running | Cancelled)
                | (Running, Retrying | Paused | Success | Warning | Failed | Cancelled)
                | (Retrying, Running | Failed | Cancelled)
                | (Paused, Running | Cancelled)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Retrying => "retrying",
            RunStatus::Paused => "paused",
            RunStatus::Success => "success",
            RunStatus::Warning => "warning",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::RunStatus::*;

    #[test]
    fn terminal_statuses_never_move() {
        for s in [Success, Warning, Failed, Cancelled] {
            assert!(s.is_terminal());
            for n in [Pending, Running, Retrying, Paused, Success, Warning, Failed, Cancelled] {
                assert!(!s.can_become(n), "{s} -> {n}");
            }
        }
    }

    #[test]
    fn a_run_starts_pending_and_runs() {
        assert!(Pending.can_become(Running));
        assert!(Running.can_become(Retrying));
        assert!(Retrying.can_become(Running));
        assert!(!Pending.can_become(Success));
    }
}
