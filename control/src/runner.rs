//! Runs started through the API: each runs `dagg_actors::run_pipeline` in its own task, its
//! record moves through [`RunStatus`] (only by legal moves), its log gets `queued`,
//! `started`, `finished` (and `cancel_requested`, `retrying`), and live events go to `/ws`
//! subscribers: every status change, and progress from the run's counters every
//! `progress_interval` while it runs.
//!
//! One run per pipeline at a time: a second `execute` while one is active is refused (both
//! would resume from the same checkpoint store).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dagg_actors::{RunOptions, RunProgress, run_pipeline};
use dagg_model::RunStatus;
use dagg_model::spec::pipeline::PipelineSpec;
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::cluster::placement;
use crate::meta::{EventKind, EventLevel, MetaCommand, MetaResult, Pipeline, PipelineVersion, Run, RunCounts, Trigger};
use crate::{ACTIVE_RUNS, ControlError, ControlPlane, ControlResult};

/// A run in progress.
struct LiveRun {
    pipeline_id: String,
    progress: Arc<RunProgress>,
}

/// What `/ws` sends.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A run's status changed.
    RunStatus {
        run_id: String,
        pipeline_id: String,
        pipeline_name: String,
        #[schema(value_type = String)]
        status: RunStatus,
        at: DateTime<Utc>,
        counts: RunCounts,
        error: Option<String>,
    },
    /// A running run's counters, and its throughput since the previous progress event.
    RunProgress {
        run_id: String,
        pipeline_id: String,
        at: DateTime<Utc>,
        #[schema(value_type = String)]
        status: RunStatus,
        counts: RunCounts,
        /// Records per second read by the source stage.
        read_per_second: f64,
        /// Records per second delivered by the sink stage.
        written_per_second: f64,
    },
}

/// The API's runs and the live event feed.
pub struct RunManager {
    live: Mutex<HashMap<String, LiveRun>>,
    events: broadcast::Sender<LiveEvent>,
}

impl Default for RunManager {
    fn default() -> Self {
        Self::new()
    }
}

impl RunManager {
    pub fn new() -> RunManager {
        RunManager { live: Mutex::new(HashMap::new()), events: broadcast::channel(1024).0 }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.events.subscribe()
    }

    fn send(&self, e: LiveEvent) {
        // No subscriber is not an error.
        let _ = self.events.send(e);
    }

    /// Live counters of an active run.
    pub fn progress(&self, run_id: &str) -> Option<Arc<RunProgress>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).get(run_id).map(|l| l.progress.clone())
    }

    /// The ids of the runs active on this node.
    pub fn active_ids(&self) -> Vec<String> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    pub fn active_count(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Asks an active run to stop; false when it is not active here.
    pub fn cancel(&self, run_id: &str) -> bool {
        match self.live.lock().unwrap_or_else(|e| e.into_inner()).get(run_id) {
            Some(l) => {
                l.progress.cancel();
                true
            }
            None => false,
        }
    }

    pub fn cancel_all(&self) {
        for l in self.live.lock().unwrap_or_else(|e| e.into_inner()).values() {
            l.progress.cancel();
        }
    }

    fn finish(&self, run_id: &str) {
        if self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(run_id).is_some() {
            ACTIVE_RUNS.dec();
        }
    }
}

pub fn counts_of(p: &dagg_actors::ProgressSnapshot) -> RunCounts {
    RunCounts {
        records_read: p.read,
        records_written: p.written,
        dead_lettered: p.dead_lettered,
        dropped: p.dropped,
        filtered: p.filtered,
        attempts: p.attempts,
        checkpoints: p.checkpoints,
    }
}


/// Moves a run's record to `status`, through `running` when the direct move is not legal
/// (a run retrying when it ends).
fn move_run(state: &ControlPlane, run_id: &str, status: RunStatus, counts: Option<RunCounts>, error: Option<String>) -> MetaResult<Run> {
    let cur = state.meta.run(run_id)?.map(|r| r.status);
    if let Some(cur) = cur
        && cur != status
        && !cur.can_become(status)
        && cur.can_become(RunStatus::Running)
        && RunStatus::Running.can_become(status)
    {
        state.meta.apply(MetaCommand::UpdateRun { id: run_id.into(), status: RunStatus::Running, at: Utc::now(), counts: None, error: None })?;
    }
    state.meta.apply(MetaCommand::UpdateRun { id: run_id.into(), status, at: Utc::now(), counts, error })?;
    let run = state.meta.run(run_id)?.ok_or_else(|| crate::meta::MetaError::NotFound { kind: "run", id: run_id.into() })?;
    state.runs.send(LiveEvent::RunStatus {
        run_id: run.id.clone(),
        pipeline_id: run.pipeline_id.clone(),
        pipeline_name: run.pipeline_name.clone(),
        status: run.status,
        at: Utc::now(),
        counts: run.counts,
        error: run.error.clone(),
    });
    Ok(run)
}

impl ControlPlane {
    /// Starts a run of a pipeline's `version`: its document is validated with this node's
    /// rules, the run is recorded `pending` with its trigger and who started it (`by`), and it
    /// starts here — or, in a cluster of several nodes, waits for the leader to place it. One
    /// run per pipeline at a time: [`ControlError::Conflict`] while one is active.
    pub fn start_run(&self, version: &PipelineVersion, trigger: Trigger, by: &str) -> ControlResult<Run> {
        let pipeline = self.meta.pipeline(&version.pipeline_id)?.ok_or_else(|| ControlError::NotFound(format!("pipeline `{}` does not exist", version.pipeline_id)))?;
        let spec = self.validate(&version.document).map_err(ControlError::invalid)?;
        start(self, &pipeline, version.version, spec, by, trigger)
    }

    /// A stored version of a pipeline, validated.
    pub fn stored_spec(&self, pipeline_id: &str, version: u32) -> ControlResult<(PipelineVersion, PipelineSpec)> {
        let v = self.meta.version(pipeline_id, version)?.ok_or_else(|| ControlError::NotFound(format!("pipeline `{pipeline_id}` has no version {version}")))?;
        let spec = self.validate(&v.document).map_err(ControlError::invalid)?;
        Ok((v, spec))
    }
}

/// Records and starts a run of `pipeline` at `version` (already validated into `spec`); its
/// record, still `pending`.
fn start(state: &ControlPlane, pipeline: &Pipeline, version: u32, spec: PipelineSpec, by: &str, trigger: Trigger) -> ControlResult<Run> {
    // In a cluster the run may be anywhere: one active run per pipeline, cluster-wide.
    let placed = placement::placed_by_leader(state);
    if placed && let Some(r) = state.meta.runs_of(&pipeline.id)?.into_iter().find(|r| !r.status.is_terminal()) {
        return Err(ControlError::Conflict(format!("pipeline `{}` is already running (run `{}`); cancel it or wait for it to end", pipeline.id, r.id)));
    }
    let progress = Arc::new(RunProgress::default());
    let run_id = uuid::Uuid::new_v4().to_string();
    {
        let mut live = state.runs.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, _)) = live.iter().find(|(_, l)| l.pipeline_id == pipeline.id) {
            return Err(ControlError::Conflict(format!("pipeline `{}` is already running (run `{id}`); cancel it or wait for it to end", pipeline.id)));
        }
        live.insert(run_id.clone(), LiveRun { pipeline_id: pipeline.id.clone(), progress: progress.clone() });
        ACTIVE_RUNS.inc();
    }
    let run = Run::pending(run_id.clone(), &pipeline.id, &pipeline.name, version, trigger, by.into(), Utc::now());
    let created = state
        .meta
        .apply(MetaCommand::CreateRun { run: run.clone() })
        .and_then(|()| state.meta.apply(MetaCommand::run_event(&run_id, EventLevel::Info, EventKind::Queued, format!("queued by {by} (version {version})"), json!({"version": version}))));
    if let Err(e) = created {
        state.runs.finish(&run_id);
        return Err(e.into());
    }
    state.runs.send(LiveEvent::RunStatus {
        run_id: run.id.clone(),
        pipeline_id: run.pipeline_id.clone(),
        pipeline_name: run.pipeline_name.clone(),
        status: run.status,
        at: run.created_at,
        counts: run.counts,
        error: None,
    });
    if placed {
        // The leader places it on a live node, which runs it (`cluster::placement`).
        drop(spec);
        state.runs.finish(&run_id);
    } else {
        if let Err(e) = placement::assign_here(state, &run_id) {
            state.runs.finish(&run_id);
            return Err(e.into());
        }
        tokio::spawn(drive(state.clone(), run.clone(), spec, progress));
    }
    Ok(run)
}

async fn drive(state: ControlPlane, run: Run, spec: PipelineSpec, progress: Arc<RunProgress>) {
    use futures_util::FutureExt;
    let id = run.id.clone();
    let notifications = spec.error_handling.notifications.clone();
    // The stages run in a task of their own (a panic there fails the run, see
    // `drive_inner`); a panic here, in the run's bookkeeping, is this run's failure too and
    // never the node's: the run leaves the live set and its record ends.
    match std::panic::AssertUnwindSafe(drive_inner(&state, &run, spec, progress)).catch_unwind().await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(run = %id, "recording the run failed: {e}"),
        Err(_) => {
            tracing::error!(run = %id, "the run's bookkeeping panicked");
            if let Err(e) = move_run(&state, &id, RunStatus::Failed, None, Some("the run crashed: its bookkeeping panicked".into())) {
                tracing::error!(run = %id, "recording the crashed run failed: {e}");
            }
        }
    }
    state.runs.finish(&id);
    // What follows a run: the pipelines that depend on it, then its notifications (which
    // may take seconds when a receiver is slow; nothing waits on them).
    if let Ok(Some(done)) = state.meta.run(&id) {
        state.after_run(&done, &notifications).await;
    }
}

async fn drive_inner(state: &ControlPlane, run: &Run, spec: PipelineSpec, progress: Arc<RunProgress>) -> MetaResult<()> {
    let id = run.id.as_str();
    if progress.is_cancelled() {
        move_run(state, id, RunStatus::Cancelled, None, None)?;
        state.meta.apply(MetaCommand::run_event(id, EventLevel::Info, EventKind::Finished, "cancelled before it started".into(), json!({"status": "cancelled"})))?;
        return Ok(());
    }
    move_run(state, id, RunStatus::Running, None, None)?;
    state.meta.apply(MetaCommand::run_event(id, EventLevel::Info, EventKind::Started, format!("started pipeline `{}`", run.pipeline_name), json!({})))?;

    let tap = crate::lineage::attach_tap(state, run, &spec, &progress);
    let opts = RunOptions {
        run_id: Some(id.to_string()),
        progress: progress.clone(),
        data_dir: Some(state.config.runtime_dir().join(&run.pipeline_id)),
        placer: placement::placer(state),
        ..RunOptions::default()
    };
    let base = state.config.files_dir();
    let task = tokio::spawn(async move { run_pipeline(&spec, &base, opts).await });
    let ticker = tokio::spawn(watch(state.clone(), run.clone(), progress.clone()));
    let outcome = task.await;
    ticker.abort();
    let (status, counts, error, extra) = match outcome {
        Ok(summary) => {
            let counts = RunCounts {
                records_read: summary.records_read,
                records_written: summary.records_written,
                dead_lettered: summary.dead_lettered,
                dropped: summary.dropped,
                filtered: summary.filtered,
                attempts: summary.attempts,
                checkpoints: summary.checkpoints,
            };
            let extra = json!({"seconds": summary.seconds, "resumed_from": summary.resumed_from, "runtime_run_id": summary.run_id});
            (summary.status, counts, summary.error, extra)
        }
        Err(e) => (RunStatus::Failed, counts_of(&progress.snapshot()), Some(format!("the run crashed: {e}")), json!({})),
    };
    move_run(state, id, status, Some(counts), error.clone())?;
    let level = match status {
        RunStatus::Failed => EventLevel::Error,
        RunStatus::Warning => EventLevel::Warning,
        _ => EventLevel::Info,
    };
    let mut data = serde_json::to_value(counts).unwrap_or_default();
    if let (Some(d), Some(x)) = (data.as_object_mut(), extra.as_object()) {
        d.insert("status".into(), json!(status.as_str()));
        d.insert("error".into(), json!(error));
        d.extend(x.clone());
    }
    let message = match &error {
        Some(e) => format!("{status}: {e}"),
        None => format!(
            "{status}: {} read, {} written, {} dead-lettered, {} dropped, {} filtered",
            counts.records_read, counts.records_written, counts.dead_lettered, counts.dropped, counts.filtered
        ),
    };
    state.meta.apply(MetaCommand::run_event(id, level, EventKind::Finished, message, data))?;
    if let Some(tap) = tap {
        crate::lineage::store_insight(state, run, status, &tap)?;
    }
    Ok(())
}

/// While a run is active: progress events every interval, and retry states into the record.
async fn watch(state: ControlPlane, run: Run, progress: Arc<RunProgress>) {
    let mut last = progress.snapshot();
    let mut last_at = std::time::Instant::now();
    let mut recorded = RunStatus::Running;
    // Attempts the log accounts for: a retry quicker than one interval still gets its entry.
    let mut logged_attempts = last.attempts.max(1);
    loop {
        tokio::time::sleep(state.config.progress_interval).await;
        let snap = progress.snapshot();
        let secs = last_at.elapsed().as_secs_f64().max(1e-6);
        if matches!(snap.status, RunStatus::Retrying | RunStatus::Running)
            && snap.status != recorded
            && recorded.can_become(snap.status)
            && move_run(&state, &run.id, snap.status, Some(counts_of(&snap)), None).is_ok()
        {
            recorded = snap.status;
            if snap.status == RunStatus::Retrying {
                let _ = state.meta.apply(MetaCommand::run_event(&run.id, EventLevel::Warning, EventKind::Retrying, format!("attempt {} failed; retrying", snap.attempts), json!({"attempts": snap.attempts})));
                logged_attempts = snap.attempts + 1;
            }
        }
        if snap.attempts > logged_attempts {
            let message = format!("attempt {} failed; retried from the last checkpoint (attempt {})", snap.attempts - 1, snap.attempts);
            let _ = state.meta.apply(MetaCommand::run_event(&run.id, EventLevel::Warning, EventKind::Retrying, message, json!({"attempts": snap.attempts})));
            logged_attempts = snap.attempts;
        }
        state.runs.send(LiveEvent::RunProgress {
            run_id: run.id.clone(),
            pipeline_id: run.pipeline_id.clone(),
            at: Utc::now(),
            status: snap.status,
            counts: counts_of(&snap),
            read_per_second: snap.read.saturating_sub(last.read) as f64 / secs,
            written_per_second: snap.written.saturating_sub(last.written) as f64 / secs,
        });
        last = snap;
        last_at = std::time::Instant::now();
    }
}

/// Cancels a run: an active one is asked to stop (it ends `cancelled`); one left unfinished
/// by an earlier process is marked `cancelled` at once.
pub fn cancel(state: &ControlPlane, run: &Run, by: &str) -> ControlResult<()> {
    if run.status.is_terminal() {
        return Err(ControlError::Conflict(format!("run `{}` already ended `{}`", run.id, run.status)));
    }
    state.meta.apply(MetaCommand::run_event(&run.id, EventLevel::Info, EventKind::CancelRequested, format!("cancel requested by {by}"), json!({"by": by})))?;
    if !state.runs.cancel(&run.id) {
        move_run(state, &run.id, RunStatus::Cancelled, None, None)?;
    }
    Ok(())
}

/// Runs a previous process left unfinished end now: `failed` when they were running,
/// `cancelled` when they had not started.
pub fn end_orphaned_runs(state: &ControlPlane) -> MetaResult<()> {
    for r in state.meta.runs()? {
        if r.status.is_terminal() {
            continue;
        }
        let (status, error) = if r.status.can_become(RunStatus::Failed) {
            (RunStatus::Failed, Some("the server stopped during the run".to_string()))
        } else {
            (RunStatus::Cancelled, None)
        };
        state.meta.apply(MetaCommand::UpdateRun { id: r.id.clone(), status, at: Utc::now(), counts: None, error: error.clone() })?;
        state.meta.apply(MetaCommand::run_event(&r.id, EventLevel::Error, EventKind::Finished, format!("{status}: the server stopped during the run"), json!({"status": status.as_str()})))?;
    }
    Ok(())
}

/// Starts, on this node, a run the cluster's leader placed here (a new run, or one moved
/// from a lost node: it resumes from the last completed checkpoint in the shared runtime
/// folder). Does nothing when the run is already active here.
pub fn run_placed(state: &ControlPlane, run: Run) -> ControlResult<()> {
    let (_, spec) = state.stored_spec(&run.pipeline_id, run.pipeline_version)?;
    if state.runs.progress(&run.id).is_some() {
        return Ok(());
    }
    if matches!(run.status, RunStatus::Running | RunStatus::Retrying) && !resume(state, &run, &spec)? {
        return Ok(());
    }
    let progress = Arc::new(RunProgress::default());
    {
        let mut live = state.runs.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.contains_key(&run.id) {
            return Ok(());
        }
        live.insert(run.id.clone(), LiveRun { pipeline_id: run.pipeline_id.clone(), progress: progress.clone() });
        ACTIVE_RUNS.inc();
    }
    tokio::spawn(drive(state.clone(), run, spec, progress));
    Ok(())
}

/// Starts the runs assigned to this node that it is not running (runs on every node).
pub async fn run_assigned_here(state: ControlPlane) {
    let Some(node) = state.meta.node().cloned() else { return };
    let mut started: HashSet<(String, u32)> = HashSet::new();
    loop {
        tokio::select! {
            () = state.meta.placement_changed.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // A run cancelled (or ended) elsewhere in the cluster while it runs here: stop it.
        for run_id in state.runs.active_ids() {
            if let Ok(Some(r)) = state.meta.run(&run_id)
                && r.status.is_terminal()
            {
                state.runs.cancel(&run_id);
            }
        }
        let mine = match placement::assignments(&state.meta) {
            Ok(a) => a.into_iter().filter(|(_, a)| a.node == node.id).collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!("reading run assignments: {e}");
                continue;
            }
        };
        for (run_id, a) in mine {
            if started.contains(&(run_id.clone(), a.attempt)) || state.runs.progress(&run_id).is_some() {
                continue;
            }
            let Ok(Some(run)) = state.meta.run(&run_id) else { continue };
            if run.status.is_terminal() {
                continue;
            }
            started.insert((run_id.clone(), a.attempt));
            if let Err(e) = run_placed(&state, run) {
                tracing::error!(run = %run_id, "starting a placed run: {e}");
            }
        }
    }
}

/// How many times a run may be resumed after its node died: its `retry_policy.max_retries`,
/// and at least once (surviving the loss of one node is what a cluster is for).
pub fn resumption_budget(spec: &PipelineSpec) -> u32 {
    spec.error_handling.retry_policy.max_retries.max(1)
}

/// A run that was active when the node running it stopped is about to start again (here
/// after a restart, or on the node it moved to). Counts the resumption in the run's
/// replicated record — unless that node stopped cleanly and handed it over — and, when the
/// run's budget is spent, ends it `failed` instead: an input that kills its node must not
/// kill it forever, nor walk from node to node. Whether to start it.
fn resume(state: &ControlPlane, run: &Run, spec: &PipelineSpec) -> ControlResult<bool> {
    let budget = resumption_budget(spec);
    if !run.handed_over && run.resumptions >= budget {
        let deaths = run.resumptions + 1;
        let reason = format!("the node died {deaths} times during this run");
        let done = move_run(state, &run.id, RunStatus::Failed, None, Some(reason.clone()))?;
        state.meta.apply(MetaCommand::run_event(&run.id, EventLevel::Error, EventKind::Finished, format!("failed: {reason}"), json!({"status": "failed", "error": reason, "node_deaths": deaths, "budget": budget})))?;
        tracing::error!(run = %run.id, deaths, "{reason}: not resumed again");
        let state = state.clone();
        let notifications = spec.error_handling.notifications.clone();
        tokio::spawn(async move { state.after_run(&done, &notifications).await });
        return Ok(false);
    }
    state.meta.apply(MetaCommand::ResumeRun { id: run.id.clone() })?;
    let (level, message) = if run.handed_over {
        (EventLevel::Info, "resumed after its node stopped cleanly".to_string())
    } else {
        (EventLevel::Warning, format!("resumed after its node died ({} of {budget} resumptions)", run.resumptions + 1))
    };
    state.meta.apply(MetaCommand::run_event(&run.id, level, EventKind::Resumed, message, json!({"resumptions": run.resumptions + u32::from(!run.handed_over), "budget": budget})))?;
    Ok(true)
}

/// A node stopping cleanly hands its active runs over: they stay placed, and their next
/// start (after the restart, or on another node) is not counted as a death.
pub fn hand_over_all(state: &ControlPlane) {
    for id in state.runs.active_ids() {
        if let Err(e) = state.meta.apply(MetaCommand::HandOverRun { id: id.clone() }) {
            tracing::warn!(run = %id, "handing the run over: {e}");
        }
    }
}
