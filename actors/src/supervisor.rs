//! The per-pipeline supervisor: starts an attempt's stages (built by [`crate::attempt`]:
//! sink stage first, then the merge and keyed instances, then the transform stage, each
//! linked to it), triggers checkpoints on a timer, answers status and cancel promptly (its
//! mailbox carries only control), and owns restarts: when a stage fails
//! — an error or a panic — it stops the attempt, waits out the retry policy's backoff
//! (status `retrying`) and starts a new attempt from the last completed checkpoint, until
//! the retries run out (`failed`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use dagg_model::RunStatus;
use dagg_model::spec::pipeline::PipelineSpec;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::attempt::{Attempt, Built};
use crate::error::RunError;
use crate::keyed_stage::{LoopArgs, LoopMsg, LoopStage};
use crate::options::RunOptions;
use crate::progress::RunProgress;
use crate::protocol::{Stage, SupervisorMsg};
use crate::sink_stage::{SinkArgs, SinkMsg, SinkStage};
use crate::store::{Checkpoint, Checkpoints};
use crate::transform_stage::{TransformArgs, TransformMsg, TransformStage};

pub struct SupervisorArgs {
    pub spec: Arc<PipelineSpec>,
    pub base_dir: PathBuf,
    pub opts: RunOptions,
    pub run_id: String,
    pub digest: String,
    pub ckpts: Checkpoints,
    pub resume: Option<Checkpoint>,
    pub done: oneshot::Sender<Result<(), RunError>>,
}

pub struct SupervisorState {
    spec: Arc<PipelineSpec>,
    base_dir: PathBuf,
    opts: RunOptions,
    run_id: String,
    digest: String,
    ckpts: Checkpoints,
    progress: Arc<RunProgress>,
    attempt: u32,
    /// Failed attempts in a row (what the retry policy counts). For an unbounded source an
    /// attempt that completed a checkpoint starts the count again: a stream that runs for
    /// weeks gets `max_retries` per outage, not per lifetime.
    retries: u32,
    /// The current attempt's source has no end.
    unbounded: bool,
    /// The checkpoint the current attempt started from.
    start_checkpoint: u64,
    /// The current attempt's stages, and which have reported their end.
    transform: Option<ActorRef<TransformMsg>>,
    sink: Option<ActorRef<SinkMsg>>,
    /// The keyed instances and the merge stage, when the attempt has them.
    loops: Vec<(Stage, ActorRef<LoopMsg>)>,
    /// Every stage of the current attempt.
    expected: Vec<Stage>,
    ended: Vec<Stage>,
    failure: Option<RunError>,
    timer: Option<JoinHandle<()>>,
    done: Option<oneshot::Sender<Result<(), RunError>>>,
}

/// The supervisor actor.
pub struct PipelineSupervisor;

impl Actor for PipelineSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(&self, myself: ActorRef<SupervisorMsg>, args: SupervisorArgs) -> Result<SupervisorState, ActorProcessingErr> {
        let interval = args.opts.checkpoint_interval.unwrap_or(args.spec.checkpoint.interval());
        let timer = (!interval.is_zero()).then(|| myself.send_interval(interval, || SupervisorMsg::TriggerCheckpoint));
        let mut state = SupervisorState {
            progress: args.opts.progress.clone(),
            spec: args.spec,
            base_dir: args.base_dir,
            opts: args.opts,
            run_id: args.run_id,
            digest: args.digest,
            ckpts: args.ckpts,
            attempt: 0,
            retries: 0,
            unbounded: false,
            start_checkpoint: 0,
            transform: None,
            sink: None,
            loops: Vec::new(),
            expected: Vec::new(),
            ended: Vec::new(),
            failure: None,
            timer,
            done: Some(args.done),
        };
        start_attempt(&myself, &mut state, args.resume).await;
        Ok(state)
    }

    async fn handle(&self, myself: ActorRef<SupervisorMsg>, msg: SupervisorMsg, state: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Status(reply) => {
                let _ = reply.send(state.progress.snapshot());
            }
            SupervisorMsg::Cancel => {
                state.progress.cancel();
                if state.transform.is_none() && state.sink.is_none() && state.loops.is_empty() {
                    // Between attempts: nothing is running to notice.
                    let _ = state.ckpts.clear(&state.spec.name);
                    complete(&myself, state, Err(RunError::Cancelled));
                } else {
                    // The stages notice between batches; one blocked on a destination does not.
                    myself.send_after(CANCEL_GRACE, || SupervisorMsg::ForceCancel);
                }
            }
            SupervisorMsg::ForceCancel => {
                if state.transform.is_some() || state.sink.is_some() || !state.loops.is_empty() {
                    stop_all(state);
                    discard_outputs(state).await;
                    let _ = state.ckpts.clear(&state.spec.name);
                    complete(&myself, state, Err(RunError::Cancelled));
                }
            }
            SupervisorMsg::TriggerCheckpoint => {
                if let Some(t) = &state.transform {
                    let _ = t.cast(TransformMsg::TriggerCheckpoint);
                }
            }
            SupervisorMsg::StageEnded { attempt, stage, result } => {
                if attempt == state.attempt {
                    stage_ended(&myself, state, stage, result).await;
                }
            }
            SupervisorMsg::Restart => {
                if state.progress.is_cancelled() {
                    let _ = state.ckpts.clear(&state.spec.name);
                    complete(&myself, state, Err(RunError::Cancelled));
                } else {
                    state.progress.set_status(RunStatus::Running);
                    match state.ckpts.load(&state.spec.name) {
                        Ok(resume) => start_attempt(&myself, state, resume).await,
                        Err(e) => complete(&myself, state, Err(e.into())),
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(&self, myself: ActorRef<SupervisorMsg>, evt: SupervisionEvent, state: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        // A stage's own handler failed (its loop's failures arrive as `StageEnded`).
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            let id = cell.get_id();
            let stage = if state.sink.as_ref().is_some_and(|s| s.get_id() == id) {
                Stage::Sink
            } else if let Some((stage, _)) = state.loops.iter().find(|(_, r)| r.get_id() == id) {
                *stage
            } else {
                Stage::Transform
            };
            let failure = RunError::Crashed { stage: stage.name(), reason: err.to_string() };
            stage_ended(&myself, state, stage, Err(failure)).await;
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<SupervisorMsg>, state: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.timer.take() {
            t.abort();
        }
        Ok(())
    }
}

/// How long a cancelled run's stages get to stop by themselves.
const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Discards whatever the destinations hold that was never committed (their temporary
/// output), through fresh connectors, since the stopped stages' own are gone.
async fn discard_outputs(state: &SupervisorState) {
    let specs = state.spec.destinations.iter().chain(state.spec.error_handling.dead_letter.iter());
    for spec in specs {
        if let Ok(mut sink) = state.opts.connectors.sink(spec, &state.base_dir)
            && let Err(e) = sink.abort().await
        {
            tracing::warn!("could not discard the output of a cancelled run: {e}");
        }
    }
}

async fn stage_ended(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, stage: Stage, result: Result<(), RunError>) {
    if state.ended.contains(&stage) {
        return;
    }
    state.ended.push(stage);
    match stage {
        Stage::Transform => state.transform = None,
        Stage::Sink => state.sink = None,
        Stage::Keyed(_) | Stage::Merge => state.loops.retain(|(s, _)| *s != stage),
    }
    if let Err(e) = result {
        // `Upstream`/`Downstream` only say the other stage stopped; its own report is the cause.
        let secondary = matches!(e, RunError::Upstream | RunError::Downstream);
        if state.failure.is_none() || (!secondary && state.failure.as_ref().is_some_and(|f| matches!(f, RunError::Upstream | RunError::Downstream))) {
            state.failure = Some(e);
        }
        // A failed stage means the attempt is over: stop the other one.
        if !secondary {
            stop_all(state);
        }
    }
    if !state.expected.iter().all(|s| state.ended.contains(s)) {
        return;
    }
    match state.failure.take() {
        None => complete(myself, state, Ok(())),
        Some(e) => attempt_failed(myself, state, e),
    }
}

/// Stops every stage of the attempt (they count as ended).
fn stop_all(state: &mut SupervisorState) {
    if let Some(t) = state.transform.take() {
        t.stop(None);
        state.ended.push(Stage::Transform);
    }
    if let Some(s) = state.sink.take() {
        s.stop(None);
        state.ended.push(Stage::Sink);
    }
    for (stage, r) in state.loops.drain(..) {
        r.stop(None);
        state.ended.push(stage);
    }
}

fn attempt_failed(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, e: RunError) {
    let policy = &state.spec.error_handling.retry_policy;
    if matches!(e, RunError::Cancelled) || state.progress.is_cancelled() {
        let _ = state.ckpts.clear(&state.spec.name);
        return complete(myself, state, Err(RunError::Cancelled));
    }
    if state.progress.is_stop_requested() {
        // Asked to stop: no new attempt; the checkpoint stays for the next run.
        return complete(myself, state, Err(e));
    }
    if state.unbounded && state.progress.checkpoints.load(Ordering::Relaxed) > state.start_checkpoint {
        state.retries = 0;
    }
    state.retries += 1;
    if e.is_retryable() && state.retries <= policy.max_retries {
        let delay = policy.delay(state.retries);
        tracing::warn!(attempt = state.attempt, ?delay, "attempt failed, retrying from the last checkpoint: {e}");
        eprintln!("note: attempt {} failed ({e}); retrying in {:.1} s from the last checkpoint", state.attempt, delay.as_secs_f64());
        state.progress.set_status(RunStatus::Retrying);
        myself.send_after(delay, || SupervisorMsg::Restart);
    } else {
        complete(myself, state, Err(e));
    }
}

fn complete(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, result: Result<(), RunError>) {
    if let Some(t) = state.timer.take() {
        t.abort();
    }
    if let Some(done) = state.done.take() {
        let _ = done.send(result);
    }
    myself.stop(None);
}

/// Builds and starts an attempt's stages; a failure to build is a failed attempt.
async fn start_attempt(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, resume: Option<Checkpoint>) {
    state.attempt += 1;
    state.ended.clear();
    state.expected = vec![Stage::Transform, Stage::Sink];
    state.failure = None;
    state.progress.attempts.store(state.attempt, Ordering::Relaxed);
    let counts = resume.as_ref().map(|c| c.counts.clone()).unwrap_or_default();
    state.progress.restore(&counts);
    state.start_checkpoint = resume.as_ref().map(|c| c.id).unwrap_or(0);
    state.progress.checkpoints.store(state.start_checkpoint, Ordering::Relaxed);
    let attempt = Attempt {
        spec: &state.spec,
        base_dir: &state.base_dir,
        opts: &state.opts,
        run_id: &state.run_id,
        digest: &state.digest,
        ckpts: &state.ckpts,
        progress: &state.progress,
    };
    let built = attempt.build(resume, counts).await;
    match built {
        Ok(Built::Finished) => complete(myself, state, Ok(())),
        Ok(Built::Ready { writer, feeder, source, rx, loops }) => {
            state.unbounded = source.unbounded();
            let attempt = state.attempt;
            let sink = Actor::spawn_linked(None, SinkStage, SinkArgs { writer: *writer, rx, supervisor: myself.clone(), attempt }, myself.get_cell()).await;
            let sink = match sink {
                Ok((s, _)) => s,
                Err(e) => return attempt_failed(myself, state, RunError::Crashed { stage: "destination".into(), reason: e.to_string() }),
            };
            state.sink = Some(sink);
            // Downstream first: the merge stage, then the keyed instances.
            for (stage, work) in loops {
                state.expected.push(stage);
                let args = LoopArgs { work, stage, supervisor: myself.clone(), attempt };
                match Actor::spawn_linked(None, LoopStage, args, myself.get_cell()).await {
                    Ok((r, _)) => state.loops.push((stage, r)),
                    Err(e) => {
                        stop_all(state);
                        return attempt_failed(myself, state, RunError::Crashed { stage: stage.name(), reason: e.to_string() });
                    }
                }
            }
            let args = TransformArgs { feeder: *feeder, source, supervisor: myself.clone(), attempt };
            match Actor::spawn_linked(None, TransformStage, args, myself.get_cell()).await {
                Ok((t, _)) => state.transform = Some(t),
                Err(e) => {
                    stop_all(state);
                    attempt_failed(myself, state, RunError::Crashed { stage: "transformations".into(), reason: e.to_string() })
                }
            }
        }
        Err(e) => attempt_failed(myself, state, e),
    }
}
