//! A run's live state shared with whoever watches it (the CLI, the API, the WebSocket):
//! counters updated once per batch, the current status, and the cancel switch.

use std::sync::{Arc, Mutex, OnceLock};

use crate::tap::RunTap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use dagg_model::RunStatus;
use serde::Serialize;

/// Live counters, status and cancel switch of one run.
#[derive(Debug)]
pub struct RunProgress {
    pub read: AtomicU64,
    pub written: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub dropped: AtomicU64,
    pub filtered: AtomicU64,
    /// Attempts started (1 for a run that never retried).
    pub attempts: AtomicU32,
    /// The last completed checkpoint's number.
    pub checkpoints: AtomicU64,
    status: Mutex<RunStatus>,
    cancelled: AtomicBool,
    stop: AtomicBool,
    /// Profile and lineage of the delivered records, when a watcher asked for them.
    tap: OnceLock<Arc<RunTap>>,
}

impl Default for RunProgress {
    fn default() -> Self {
        RunProgress {
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            attempts: AtomicU32::new(0),
            checkpoints: AtomicU64::new(0),
            status: Mutex::new(RunStatus::Pending),
            cancelled: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            tap: OnceLock::new(),
        }
    }
}

/// The counters at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProgressSnapshot {
    pub status: RunStatus,
    pub read: u64,
    pub written: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    pub filtered: u64,
    pub attempts: u32,
    pub checkpoints: u64,
}

impl RunProgress {
    /// Asks the run to stop: it ends `cancelled` at its next batch and commits nothing.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Asks the sink stage to profile what it delivers and record the lineage (set before
    /// the run starts; a second tap is refused).
    pub fn set_tap(&self, tap: Arc<RunTap>) -> bool {
        self.tap.set(tap).is_ok()
    }

    pub fn tap(&self) -> Option<&Arc<RunTap>> {
        self.tap.get()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Asks the run to stop gracefully (SIGINT, SIGTERM): an unbounded source's run takes a
    /// last checkpoint, commits its destinations and ends `success`; a bounded one stops at
    /// its next batch without committing and keeps its checkpoint, so the next run resumes.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn is_stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> RunStatus {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves to `next` when the move is legal (see [`RunStatus::can_become`]); returns
    /// whether it moved.
    pub fn set_status(&self, next: RunStatus) -> bool {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if *s == next {
            return true;
        }
        if s.can_become(next) {
            *s = next;
            true
        } else {
            tracing::warn!(from = %*s, to = %next, "ignored an illegal run status change");
            false
        }
    }

    /// Sets the counters to a resumed run's totals.
    pub(crate) fn restore(&self, c: &crate::store::CheckpointCounts) {
        self.read.store(c.read, Ordering::Relaxed);
        self.written.store(c.written, Ordering::Relaxed);
        self.dead_lettered.store(c.dead_lettered, Ordering::Relaxed);
        self.dropped.store(c.dropped, Ordering::Relaxed);
        self.filtered.store(c.filtered, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            status: self.status(),
            read: self.read.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
            attempts: self.attempts.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
        }
    }
}
