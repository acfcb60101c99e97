//! Runs a bounded pipeline to its end on this node, with checkpoints, resume and retries.
//!
//! The data path: the source parses on its own thread and hands over batches; the feeder
//! runs the compiled transformation chain over each batch; a writer task serializes to every
//! destination and to the dead letter. Between them sits a bounded channel, so a slow
//! destination slows the source and memory stays flat however large the input.
//!
//! Checkpoints: every `checkpoint.interval_seconds` the feeder, between two batches, takes
//! the source's position and sends a barrier down the channel behind the batches before it.
//! When the writer meets the barrier every record before it has been written; it asks each
//! destination to pre-commit (the file sink fsyncs its temporary file and reports its
//! length) and then records the checkpoint — source position, destination positions,
//! counters — in the node's store. A checkpoint exists only once all of that is durable.
//! At the end of the input a last barrier is taken, then the destinations commit (the file
//! sink renames its temporary file into place) and the checkpoint is cleared.
//!
//! Recovery: a run that finds a checkpoint of the same pipeline document resumes from it:
//! destinations cut back to their recorded positions, the source seeks to its recorded
//! position, counters continue. What was written after the checkpoint is discarded and
//! written again, so every record is delivered exactly once. A failure during a run is
//! retried the same way, following `error_handling.retry_policy`.
//!
//! Stateful transformations (aggregations, `deduplicate`) are checkpointed too: the
//! transform stage snapshots the chain's state at each barrier and a resumed run restores it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dagg_model::RunStatus;
use dagg_model::spec::pipeline::PipelineSpec;
use ractor::{Actor, ActorRef};
use serde::Serialize;
use tokio::sync::oneshot;

pub use crate::error::RunError;
use crate::metrics;
pub use crate::options::{ConnectorFactory, Registry, RunOptions};
pub use crate::progress::{ProgressSnapshot, RunProgress};
use crate::protocol::SupervisorMsg;
use crate::store::{Checkpoints, Store};
use crate::supervisor::{PipelineSupervisor, SupervisorArgs};

/// What a run did.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub pipeline: String,
    pub run_id: String,
    pub status: RunStatus,
    /// Records (and unparseable inputs) read from the main source.
    pub records_read: u64,
    /// Records delivered to the destinations.
    pub records_written: u64,
    /// Entries sent to the dead letter.
    pub dead_lettered: u64,
    /// Records dropped by `field_validation` with `on_failure: drop`.
    pub dropped: u64,
    /// Records removed by filters (and inner joins, empty splits) — by design, not an issue.
    pub filtered: u64,
    pub seconds: f64,
    /// Attempts made (more than 1 after retries).
    pub attempts: u32,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// The checkpoint this run resumed from, when it continued an interrupted run.
    pub resumed_from: Option<u64>,
    /// Why the run failed.
    pub error: Option<String>,
}

impl RunSummary {
    /// The one line `dagg run` prints (two when it failed: the reason follows).
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} {}: {} read, {} written, {} dead-lettered, {} dropped, {} filtered in {:.3} s (run {}",
            self.pipeline, self.status, self.records_read, self.records_written, self.dead_lettered, self.dropped, self.filtered, self.seconds, self.run_id
        );
        if let Some(cp) = self.resumed_from {
            s.push_str(&format!(", resumed from checkpoint {cp}"));
        }
        if self.attempts > 1 {
            s.push_str(&format!(", {} attempts", self.attempts));
        }
        s.push(')');
        if let Some(e) = &self.error {
            s.push_str(&format!("\nerror: {e}"));
        }
        s
    }
}

/// Runs `spec` (whose relative paths resolve against `base_dir`) to its end, resuming an
/// interrupted run of the same document and retrying failures per its retry policy.
pub async fn run_pipeline(spec: &PipelineSpec, base_dir: &Path, opts: RunOptions) -> RunSummary {
    start_run(spec, base_dir, opts).await.wait().await
}

/// A started run: ask its status, cancel it, wait for its summary.
pub struct RunHandle {
    pipeline: String,
    run_id: String,
    started: Instant,
    resumed_from: Option<u64>,
    progress: Arc<RunProgress>,
    supervisor: Option<ActorRef<SupervisorMsg>>,
    outcome: RunOutcome,
}

enum RunOutcome {
    Running { done: oneshot::Receiver<Result<(), RunError>>, actor: tokio::task::JoinHandle<()> },
    /// It could not start.
    Failed(RunError),
}

impl RunHandle {
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The run's counters and status, from its supervisor (which answers even while the
    /// data path is blocked), or from the shared counters once it is gone.
    pub async fn status(&self) -> ProgressSnapshot {
        if let Some(s) = &self.supervisor
            && let Ok(ractor::rpc::CallResult::Success(snap)) = s.call(SupervisorMsg::Status, Some(Duration::from_secs(1))).await
        {
            return snap;
        }
        self.progress.snapshot()
    }

    /// Stops the run gracefully (see [`RunProgress::request_stop`]).
    pub fn stop(&self) {
        self.progress.request_stop();
    }

    /// Stops the run; it ends `cancelled` and commits nothing.
    pub fn cancel(&self) {
        self.progress.cancel();
        if let Some(s) = &self.supervisor {
            let _ = s.cast(SupervisorMsg::Cancel);
        }
    }

    /// Waits for the end of the run.
    pub async fn wait(self) -> RunSummary {
        let outcome = match self.outcome {
            RunOutcome::Failed(e) => Err(e),
            RunOutcome::Running { done, actor } => {
                let r = done.await.unwrap_or_else(|_| Err(RunError::Crashed { stage: "supervisor".into(), reason: "it stopped without a result".into() }));
                let _ = actor.await;
                r
            }
        };
        let progress = self.progress;
        let snap = progress.snapshot();
        let (status, error) = match outcome {
            Ok(()) if snap.dead_lettered > 0 || snap.dropped > 0 => (RunStatus::Warning, None),
            Ok(()) => (RunStatus::Success, None),
            Err(RunError::Cancelled) => (RunStatus::Cancelled, None),
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        progress.set_status(status);
        metrics::RUN_SECONDS.with_label_values(&[self.pipeline.as_str(), status.as_str()]).observe(self.started.elapsed().as_secs_f64());
        RunSummary {
            pipeline: self.pipeline,
            run_id: self.run_id,
            status,
            records_read: snap.read,
            records_written: if status == RunStatus::Failed || status == RunStatus::Cancelled { 0 } else { snap.written },
            dead_lettered: snap.dead_lettered,
            dropped: snap.dropped,
            filtered: snap.filtered,
            seconds: self.started.elapsed().as_secs_f64(),
            attempts: snap.attempts,
            checkpoints: snap.checkpoints,
            resumed_from: self.resumed_from,
            error,
        }
    }
}

/// Starts a run under its own supervisor and returns at once.
pub async fn start_run(spec: &PipelineSpec, base_dir: &Path, opts: RunOptions) -> RunHandle {
    let progress = opts.progress.clone();
    progress.set_status(RunStatus::Running);
    let digest = spec_digest(spec);
    let mut handle = RunHandle {
        pipeline: spec.name.clone(),
        run_id: opts.run_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        started: Instant::now(),
        resumed_from: None,
        progress,
        supervisor: None,
        outcome: RunOutcome::Failed(RunError::Cancelled),
    };
    let ckpts = match &opts.data_dir {
        Some(dir) => match Store::open_when_free(&dir.join("runs").join(store_folder(&spec.name)), Duration::from_secs(5)).await {
            Ok(s) => Checkpoints::Durable(s),
            Err(e) => {
                handle.outcome = RunOutcome::Failed(e.into());
                return handle;
            }
        },
        None => Checkpoints::memory(),
    };
    if opts.full_refresh
        && let Err(e) = ckpts.clear(&spec.name).and_then(|()| ckpts.clear_high_water(&spec.name))
    {
        handle.outcome = RunOutcome::Failed(e.into());
        return handle;
    }
    let resume = match ckpts.load(&spec.name) {
        Err(e) => {
            handle.outcome = RunOutcome::Failed(e.into());
            return handle;
        }
        Ok(Some(cp)) if opts.fresh => {
            tracing::info!(checkpoint = cp.id, "starting over (--fresh): the interrupted run is forgotten");
            let _ = ckpts.clear(&spec.name);
            None
        }
        Ok(Some(cp)) if cp.spec_digest != digest => {
            eprintln!("note: the pipeline document changed since run {} was interrupted; starting over", cp.run_id);
            let _ = ckpts.clear(&spec.name);
            None
        }
        Ok(Some(cp)) => {
            eprintln!("note: resuming run {} from checkpoint {} ({} records read so far)", cp.run_id, cp.id, cp.counts.read);
            handle.run_id = cp.run_id.clone();
            handle.resumed_from = Some(cp.id);
            Some(cp)
        }
        Ok(None) => None,
    };
    let (done_tx, done_rx) = oneshot::channel();
    let args = SupervisorArgs {
        spec: Arc::new(spec.clone()),
        base_dir: base_dir.to_path_buf(),
        opts,
        run_id: handle.run_id.clone(),
        digest,
        ckpts,
        resume,
        done: done_tx,
    };
    handle.outcome = match Actor::spawn(None, PipelineSupervisor, args).await {
        Ok((supervisor, actor)) => {
            handle.supervisor = Some(supervisor);
            RunOutcome::Running { done: done_rx, actor }
        }
        Err(e) => RunOutcome::Failed(RunError::Crashed { stage: "supervisor".into(), reason: e.to_string() }),
    };
    handle
}

/// A folder name for a pipeline's run state: its name made safe, plus a digest of the exact
/// name so that two names that sanitize alike never share a folder.
fn store_folder(name: &str) -> String {
    let safe: String = name.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{safe}-{}", &fnv(name)[..8])
}

fn fnv(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A digest of the pipeline document, so a changed document does not resume an old run.
fn spec_digest(spec: &PipelineSpec) -> String {
    // FNV-1a over the canonical JSON: stable across builds and platforms.
    fnv(&serde_json::to_string(spec).expect("a spec serializes"))
}
