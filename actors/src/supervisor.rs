//! The per-pipeline supervisor: builds an attempt's stages (sink stage first, then the
//! transform stage, each linked to it), triggers checkpoints on a timer, answers status and
//! cancel promptly (its mailbox carries only control), and owns restarts: when a stage fails
//! — an error or a panic — it stops the attempt, waits out the retry policy's backoff
//! (status `retrying`) and starts a new attempt from the last completed checkpoint, until
//! the retries run out (`failed`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dagg_model::RunStatus;
use dagg_model::spec::pipeline::PipelineSpec;
use dagg_model::spec::transform::join_sources;
use dagg_transforms::partition::Partitioner;
use dagg_transforms::{Chain, Output};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::dead_letter::{DeadLetter, DeadLetterSink, Payload};
use crate::progress::{ProgressSnapshot, RunProgress};
use crate::run::{RunError, RunOptions, at};
use crate::sink_stage::{SinkArgs, SinkMsg, SinkStage, Writer};
use crate::store::{Checkpoint, CheckpointCounts, Checkpoints};
use crate::keyed_stage::{Instance, LoopArgs, LoopMsg, LoopStage, Merge, instance_states};
use crate::plan::Plan;
use crate::remote_keyed::{Connected, Counted, Hello, LOCAL, Proxy, connect};
use crate::remote_sink::RemoteSink;
use crate::transform_stage::{Feeder, KeyedRoute, TransformArgs, TransformMsg, TransformStage};

/// A keyed instance's or the merge stage's loop, to run in its stage actor.
type LoopWork = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), RunError>> + Send>>;

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

/// Control messages.
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
    match build(state, resume, counts).await {
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

enum Built {
    /// Only the final commit remained, and it is done.
    Finished,
    Ready {
        writer: Box<Writer>,
        feeder: Box<Feeder>,
        source: Box<dyn dagg_connectors::SourceConnector>,
        rx: mpsc::Receiver<crate::sink_stage::ToSink>,
        /// The merge stage's and the keyed instances' loops, when the plan has them.
        loops: Vec<(Stage, LoopWork)>,
    },
}

/// Opens the connectors (destinations first: a bad destination fails the run before
/// anything is read), restores them to the checkpoint, reads join sources, compiles the
/// chain.
async fn build(state: &SupervisorState, resume: Option<Checkpoint>, counts: CheckpointCounts) -> Result<Built, RunError> {
    let (spec, base, factory) = (&state.spec, state.base_dir.as_path(), &state.opts.connectors);
    let mut sinks = Vec::with_capacity(spec.destinations.len());
    for (i, d) in spec.destinations.iter().enumerate() {
        let stage = if spec.destinations.len() == 1 { "destination".to_string() } else { format!("destinations[{i}]") };
        let mut sink = match remote_destination(state, d).await {
            Some(s) => s,
            None => factory.sink(d, base).map_err(at(&stage))?,
        };
        if let Some(cp) = &resume {
            let token = cp.sinks.get(i).cloned().unwrap_or(serde_json::Value::Null);
            sink.recover(&token, cp.id).await.map_err(at(&stage))?;
        }
        sinks.push((stage, sink));
    }
    let dl = match &spec.error_handling.dead_letter {
        Some(d) => {
            let mut sink = factory.sink(d, base).map_err(at("error_handling.dead_letter"))?;
            if let Some(cp) = &resume {
                let token = cp.dead_letter.clone().unwrap_or(serde_json::Value::Null);
                sink.recover(&token, cp.id).await.map_err(at("error_handling.dead_letter"))?;
            }
            Some(sink)
        }
        None => None,
    };
    let mut writer = Writer {
        sinks,
        dead: DeadLetterSink::new(&spec.name, &state.run_id, dl, counts.dead_lettered),
        written: counts.written,
        progress: state.progress.clone(),
        pipeline: spec.name.clone(),
        run_id: state.run_id.clone(),
        digest: state.digest.clone(),
        ckpts: state.ckpts.clone(),
        committer: None,
        high_water: crate::high_water::identity(&spec.source),
    };
    let source_spec = dagg_connectors::with_pipeline_defaults(&spec.source, &spec.name);
    if let Some(cp) = resume.as_ref().filter(|c| c.input_done) {
        // Crashed between the last checkpoint and the commit: the source's broker may not
        // have heard that the last checkpoint completed.
        match factory.source(&source_spec, base, &spec.limits) {
            Ok(source) => source_completed(source.committer(), cp).await,
            Err(e) => tracing::warn!("source: cannot acknowledge the last checkpoint: {e}"),
        }
        writer.finish().await?;
        return Ok(Built::Finished);
    }

    // Join sources are read whole before the main source starts. Their bad inputs were
    // dead-lettered before the first checkpoint, so a resumed attempt does not repeat them.
    let mut join_data = HashMap::new();
    for (_, name) in join_sources(&spec.transformations) {
        if join_data.contains_key(&name) {
            continue;
        }
        let cspec = spec.named_source(&name).ok_or_else(|| RunError::Build(format!("join source `{name}` is not in `sources`")))?;
        let stage = format!("sources.{name}");
        let mut src = factory.source(cspec, base, &spec.limits).map_err(at(&stage))?;
        let mut records = Vec::new();
        let mut bad = Vec::new();
        while let Some(b) = src.next_batch(state.opts.batch_size).await.map_err(at(&stage))? {
            records.extend(b.batch.records);
            bad.extend(b.bad.into_iter().map(|x| DeadLetter { stage: stage.clone(), reason: x.reason, position: src.describe(x.position), payload: Payload::Raw(x.raw) }));
        }
        if resume.is_none() {
            state.progress.dead_lettered.fetch_add(bad.len() as u64, Ordering::Relaxed);
            writer.dead.send(bad).await.map_err(at("error_handling.dead_letter"))?;
        }
        join_data.insert(name, records);
    }
    let plan = Plan::of(spec);
    // A keyed instance's chain is compiled (and restored) where it runs: below, for the
    // instances this process runs; on the other node for the others.
    let mut keyed_states = None;
    let chain = match &plan.split {
        None => {
            let mut chain = Chain::new(&spec.transformations, std::mem::take(&mut join_data)).map_err(RunError::Build)?;
            if let Some(cp) = &resume
                && !cp.chain_state.is_null()
            {
                if cp.chain_state.get("instances").is_some() {
                    return Err(RunError::Build(format!(
                        "checkpoint {} was taken with keyed instances and the pipeline now runs one; resume with the parallelism it had, or start over with --fresh",
                        cp.id
                    )));
                }
                chain.restore(&cp.chain_state).map_err(|e| RunError::Build(format!("cannot restore the transformations' state from checkpoint {}: {e}", cp.id)))?;
            }
            chain
        }
        Some(split) => {
            keyed_states = match &resume {
                Some(cp) if !cp.chain_state.is_null() => Some(instance_states(&cp.chain_state, plan.instances).map_err(|e| RunError::Build(format!("checkpoint {}: {e}", cp.id)))?),
                _ => None,
            };
            Chain::new_at(&spec.transformations[..split.at], 0, join_data.clone()).map_err(RunError::Build)?
        }
    };

    let mut source = factory.source(&source_spec, base, &spec.limits).map_err(at("source"))?;
    if let Some(cp) = &resume {
        source.seek(&cp.source).await.map_err(at("source"))?;
        source_completed(source.committer(), cp).await;
    } else if let Some(mark) = crate::high_water::mark_for(&state.ckpts, spec)? {
        crate::high_water::seek(source.as_mut(), &mark).await?;
    }
    writer.committer = source.committer();
    let unbounded = source.unbounded();
    let capacity = state.opts.channel_capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    // Keyed instances: reading stage -> instance i -> merge -> write stage, each over its own
    // bounded channel.
    let mut loops: Vec<(Stage, LoopWork)> = Vec::new();
    let mut keyed = None;
    if let Some(split) = &plan.split {
        let mut to_instances = Vec::with_capacity(plan.instances);
        let mut from_instances = Vec::with_capacity(plan.instances);
        let mut instances = Vec::with_capacity(plan.instances);
        for index in 0..plan.instances {
            let (in_tx, in_rx) = mpsc::channel(capacity);
            let (out_tx, out_rx) = mpsc::channel(capacity);
            to_instances.push(in_tx);
            from_instances.push(out_rx);
            let work: LoopWork = match remote_instance(state, &plan, index, &keyed_states, &join_data).await {
                Some(conn) => Box::pin(Proxy { index, conn, rx: in_rx, tx: out_tx, progress: state.progress.clone() }.run()),
                None => {
                    let mut chain = Chain::new_at(&spec.transformations[split.at..], split.at, join_data.clone()).map_err(RunError::Build)?;
                    if let Some(states) = &keyed_states {
                        chain.restore(&states[index]).map_err(|e| RunError::Build(format!("cannot restore keyed instance {index}'s state: {e}")))?;
                    }
                    let inst = Instance { pipeline: spec.name.clone(), index, chain, rx: in_rx, tx: out_tx, progress: state.progress.clone() };
                    Box::pin(async move {
                        let _counted = Counted::new(&LOCAL);
                        inst.run().await
                    })
                }
            };
            instances.push((Stage::Keyed(index), work));
        }
        loops.push((Stage::Merge, Box::pin(Merge { rxs: from_instances, tx: tx.clone() }.run()) as LoopWork));
        loops.extend(instances);
        keyed = Some(KeyedRoute { partitioner: Partitioner::new(split.key.clone(), plan.instances), txs: to_instances });
    }
    let interval = state.opts.checkpoint_interval.unwrap_or(spec.checkpoint.interval());
    let feeder = Feeder {
        pipeline: spec.name.clone(),
        tx,
        chain,
        out: Output::default(),
        counts,
        progress: state.progress.clone(),
        next_checkpoint: resume.as_ref().map(|c| c.id + 1).unwrap_or(if unbounded { 0 } else { 1 }),
        trigger: Arc::new(AtomicBool::new(false)),
        every_batch: interval.is_zero(),
        batch_size: state.opts.batch_size,
        keyed,
    };
    Ok(Built::Ready { writer: Box::new(writer), feeder: Box::new(feeder), source, rx, loops })
}

/// A destination on the node the pipeline's `placement.destinations` names, when that is
/// another node and it takes it; `None` to open it here.
async fn remote_destination(state: &SupervisorState, d: &dagg_model::spec::connector::ConnectorSpec) -> Option<Box<dyn dagg_connectors::SinkConnector>> {
    let node = state.spec.placement.destinations?;
    let remote = match state.opts.placer.as_ref()?.destinations(&state.run_id, node).await? {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(run = %state.run_id, node, "the destination runs here: {e}");
            return None;
        }
    };
    match RemoteSink::open(remote, &state.spec.name, &state.run_id, d).await {
        Ok(s) => {
            tracing::info!(run = %state.run_id, node, "the destination `{}` runs on node {node}", d.display_name());
            Some(Box::new(s))
        }
        Err(e) => {
            tracing::warn!(run = %state.run_id, node, "the destination runs here: {e}");
            None
        }
    }
}

/// Keyed instance `index` on another node, when the run's placer puts it there and the node
/// takes it; `None` to run it here.
async fn remote_instance(state: &SupervisorState, plan: &Plan, index: usize, states: &Option<Vec<serde_json::Value>>, join_data: &HashMap<String, Vec<dagg_model::Record>>) -> Option<Connected> {
    let placer = state.opts.placer.as_ref()?;
    let split = plan.split.as_ref()?;
    let remote = match placer.place(&state.run_id, index, plan.instances).await? {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(run = %state.run_id, index, "keyed instance {index} runs here: {e}");
            return None;
        }
    };
    let node = remote.node;
    let hello = Hello {
        pipeline: state.spec.name.clone(),
        run_id: state.run_id.clone(),
        index,
        transformations: serde_json::to_value(&state.spec.transformations[split.at..]).ok()?,
        at: split.at,
        join_data: join_data.clone(),
        state: states.as_ref().map(|s| s[index].clone()),
    };
    match connect(remote, hello).await {
        Ok(c) => {
            tracing::info!(run = %state.run_id, index, node, "keyed instance {index} runs on node {node}");
            Some(c)
        }
        Err(e) => {
            tracing::warn!(run = %state.run_id, index, node, "keyed instance {index} runs here: {e}");
            None
        }
    }
}

/// Tells the source's broker (again) that the checkpoint a resumed run starts from had
/// completed: the process that took it may have died before it could.
async fn source_completed(committer: Option<Box<dyn dagg_connectors::SourceCommitter>>, cp: &Checkpoint) {
    if let Some(c) = committer
        && let Err(e) = c.checkpoint_completed(&cp.source).await
    {
        tracing::warn!(checkpoint = cp.id, "source: could not acknowledge the checkpoint resumed from: {e}");
    }
}

/// The text of a task's panic (or why it did not finish).
pub(crate) fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
}
