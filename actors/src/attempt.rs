//! Building an attempt: everything a run does before its stages start, in this order.
//!
//! 1. Open the destinations and the dead letter (first: a bad destination fails the run
//!    before anything is read) and cut them back to the checkpoint the attempt resumes.
//! 2. If that checkpoint was taken at the end of the input, only the commit remained: do it.
//! 3. Read the join sources whole (their bad inputs go to the dead letter once, on a fresh
//!    attempt).
//! 4. Compile the transformations and restore their state from the checkpoint: one chain,
//!    or with keyed instances the stateless prefix here and each instance's chain where it
//!    runs.
//! 5. Open the source and seek it to the checkpoint (or the last run's high-water mark).
//! 6. Wire the bounded channels: reading stage -> (keyed instances -> merge ->) write stage.
//!
//! The result is the stages' work, ready for the supervisor to spawn; a failure here is a
//! failed attempt like any other.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dagg_connectors::{SinkConnector, SourceCommitter, SourceConnector};
use dagg_model::Record;
use dagg_model::spec::connector::ConnectorSpec;
use dagg_model::spec::pipeline::PipelineSpec;
use dagg_model::spec::transform::join_sources;
use dagg_transforms::partition::{Partitioner, Split};
use dagg_transforms::{Chain, Output};
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::dead_letter::{DeadLetter, DeadLetterSink, Payload};
use crate::error::{BuildError, RunError, at};
use crate::high_water;
use crate::keyed_stage::{Instance, LoopWork, Merge};
use crate::options::RunOptions;
use crate::plan::Plan;
use crate::progress::RunProgress;
use crate::protocol::{Stage, ToSink};
use crate::remote::keyed::{Connected, Hello, Proxy, connect};
use crate::remote::placer::{Counted, LOCAL};
use crate::remote::sink::RemoteSink;
use crate::sink_stage::Writer;
use crate::store::{Checkpoint, CheckpointCounts, Checkpoints};
use crate::transform_stage::{Feeder, KeyedRoute};

/// What an attempt is built from: the run's document, options and store.
pub(crate) struct Attempt<'a> {
    pub spec: &'a PipelineSpec,
    pub base_dir: &'a Path,
    pub opts: &'a RunOptions,
    pub run_id: &'a str,
    pub digest: &'a str,
    pub ckpts: &'a Checkpoints,
    pub progress: &'a Arc<RunProgress>,
}

/// A built attempt.
pub(crate) enum Built {
    /// Only the final commit remained, and it is done.
    Finished,
    Ready {
        writer: Box<Writer>,
        feeder: Box<Feeder>,
        source: Box<dyn SourceConnector>,
        rx: mpsc::Receiver<ToSink>,
        /// The merge stage's and the keyed instances' loops, when the plan has them
        /// (downstream first: the merge stage, then the instances).
        loops: Vec<(Stage, LoopWork)>,
    },
}

/// The transformations of an attempt, compiled and restored.
struct Compiled {
    /// The whole chain, or with keyed instances the stateless prefix before the split.
    chain: Chain,
    /// With keyed instances, each one's state from the checkpoint.
    keyed_states: Option<Vec<Json>>,
    /// The join sources' records (the keyed instances still need them).
    join_data: HashMap<String, Vec<Record>>,
}

impl Attempt<'_> {
    /// Builds the attempt that resumes `resume` (or starts afresh) with the counters `counts`.
    pub async fn build(&self, resume: Option<Checkpoint>, counts: CheckpointCounts) -> Result<Built, RunError> {
        let sinks = self.open_destinations(resume.as_ref()).await?;
        let dead_letter = self.open_dead_letter(resume.as_ref()).await?;
        let mut writer = self.writer(sinks, dead_letter, &counts);
        let source_spec = dagg_connectors::with_pipeline_defaults(&self.spec.source, &self.spec.name);
        if let Some(cp) = resume.as_ref().filter(|c| c.input_done) {
            self.finish_committed(&source_spec, cp, writer).await?;
            return Ok(Built::Finished);
        }
        let join_data = self.read_join_sources(resume.is_none(), &mut writer).await?;
        let plan = Plan::of(self.spec);
        let compiled = self.compile(&plan, resume.as_ref(), join_data)?;
        let source = self.open_source(&source_spec, resume.as_ref()).await?;
        writer.committer = source.committer();
        let capacity = self.opts.channel_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let (loops, keyed) = match &plan.split {
            Some(split) => {
                let (loops, route) = self.keyed_instances(&plan, split, &compiled, &tx, capacity).await?;
                (loops, Some(route))
            }
            None => (Vec::new(), None),
        };
        let feeder = self.feeder(tx, compiled.chain, counts, resume.as_ref(), source.unbounded(), keyed);
        Ok(Built::Ready { writer: Box::new(writer), feeder: Box::new(feeder), source, rx, loops })
    }

    /// Opens each destination (on the node `placement.destinations` names, when another
    /// takes it) and cuts it back to the checkpoint.
    async fn open_destinations(&self, resume: Option<&Checkpoint>) -> Result<Vec<(String, Box<dyn SinkConnector>)>, RunError> {
        let spec = self.spec;
        let mut sinks = Vec::with_capacity(spec.destinations.len());
        for (i, d) in spec.destinations.iter().enumerate() {
            let stage = if spec.destinations.len() == 1 { "destination".to_string() } else { format!("destinations[{i}]") };
            let mut sink = match self.remote_destination(d).await {
                Some(s) => s,
                None => self.opts.connectors.sink(d, self.base_dir).map_err(at(&stage))?,
            };
            if let Some(cp) = resume {
                let token = cp.sinks.get(i).cloned().unwrap_or(Json::Null);
                sink.recover(&token, cp.id).await.map_err(at(&stage))?;
            }
            sinks.push((stage, sink));
        }
        Ok(sinks)
    }

    /// Opens the dead-letter destination, if there is one, cut back to the checkpoint.
    async fn open_dead_letter(&self, resume: Option<&Checkpoint>) -> Result<Option<Box<dyn SinkConnector>>, RunError> {
        let Some(d) = &self.spec.error_handling.dead_letter else { return Ok(None) };
        let mut sink = self.opts.connectors.sink(d, self.base_dir).map_err(at("error_handling.dead_letter"))?;
        if let Some(cp) = resume {
            let token = cp.dead_letter.clone().unwrap_or(Json::Null);
            sink.recover(&token, cp.id).await.map_err(at("error_handling.dead_letter"))?;
        }
        Ok(Some(sink))
    }

    fn writer(&self, sinks: Vec<(String, Box<dyn SinkConnector>)>, dead_letter: Option<Box<dyn SinkConnector>>, counts: &CheckpointCounts) -> Writer {
        let spec = self.spec;
        Writer {
            sinks,
            dead: DeadLetterSink::new(&spec.name, self.run_id, dead_letter, counts.dead_lettered),
            written: counts.written,
            progress: self.progress.clone(),
            pipeline: spec.name.clone(),
            run_id: self.run_id.to_string(),
            digest: self.digest.to_string(),
            ckpts: self.ckpts.clone(),
            committer: None,
            high_water: high_water::identity(&spec.source),
        }
    }

    /// The checkpoint was taken at the end of the input: the run crashed between it and the
    /// commit. Tells the source's broker again that it completed (the crashed process may not
    /// have), then commits.
    async fn finish_committed(&self, source_spec: &ConnectorSpec, cp: &Checkpoint, writer: Writer) -> Result<(), RunError> {
        match self.opts.connectors.source(source_spec, self.base_dir, &self.spec.limits) {
            Ok(source) => source_completed(source.committer(), cp).await,
            Err(e) => tracing::warn!("source: cannot acknowledge the last checkpoint: {e}"),
        }
        writer.finish().await
    }

    /// Reads every join source whole, before the main source starts. Their bad inputs are
    /// dead-lettered on a fresh attempt only (`fresh`): they went before the first
    /// checkpoint, so a resumed attempt does not repeat them.
    async fn read_join_sources(&self, fresh: bool, writer: &mut Writer) -> Result<HashMap<String, Vec<Record>>, RunError> {
        let spec = self.spec;
        let mut join_data = HashMap::new();
        for (_, name) in join_sources(&spec.transformations) {
            if join_data.contains_key(&name) {
                continue;
            }
            let cspec = spec.named_source(&name).ok_or_else(|| BuildError::UnknownJoinSource(name.clone()))?;
            let stage = format!("sources.{name}");
            let mut src = self.opts.connectors.source(cspec, self.base_dir, &spec.limits).map_err(at(&stage))?;
            let mut records = Vec::new();
            let mut bad = Vec::new();
            while let Some(b) = src.next_batch(self.opts.batch_size).await.map_err(at(&stage))? {
                records.extend(b.batch.records);
                bad.extend(b.bad.into_iter().map(|x| DeadLetter { stage: stage.clone(), reason: x.reason, position: src.describe(x.position), payload: Payload::Raw(x.raw) }));
            }
            if fresh {
                self.progress.dead_lettered.fetch_add(bad.len() as u64, Ordering::Relaxed);
                writer.dead.send(bad).await.map_err(at("error_handling.dead_letter"))?;
            }
            join_data.insert(name, records);
        }
        Ok(join_data)
    }

    /// Compiles the transformations this process runs in its reading stage and restores
    /// their state. A keyed instance's chain is compiled (and restored) where it runs: in
    /// [`Attempt::keyed_instances`] for the instances this process runs, on the other node
    /// for the others.
    fn compile(&self, plan: &Plan, resume: Option<&Checkpoint>, mut join_data: HashMap<String, Vec<Record>>) -> Result<Compiled, RunError> {
        let transformations = &self.spec.transformations;
        let state = resume.filter(|cp| !cp.chain_state.is_null());
        match &plan.split {
            None => {
                let mut chain = Chain::new(transformations, std::mem::take(&mut join_data))?;
                if let Some(cp) = state {
                    if cp.chain_state.get("instances").is_some() {
                        return Err(BuildError::KeyedCheckpoint { checkpoint: cp.id }.into());
                    }
                    chain.restore(&cp.chain_state).map_err(|source| BuildError::Restore { checkpoint: cp.id, source })?;
                }
                Ok(Compiled { chain, keyed_states: None, join_data })
            }
            Some(split) => {
                let keyed_states = state.map(|cp| instance_states(cp, plan.instances)).transpose()?;
                let chain = Chain::new_at(&transformations[..split.at], 0, join_data.clone())?;
                Ok(Compiled { chain, keyed_states, join_data })
            }
        }
    }

    /// Opens the source and puts it where the attempt starts: the checkpoint it resumes, or
    /// for a new run of an incremental source the last run's high-water mark.
    async fn open_source(&self, source_spec: &ConnectorSpec, resume: Option<&Checkpoint>) -> Result<Box<dyn SourceConnector>, RunError> {
        let mut source = self.opts.connectors.source(source_spec, self.base_dir, &self.spec.limits).map_err(at("source"))?;
        if let Some(cp) = resume {
            source.seek(&cp.source).await.map_err(at("source"))?;
            source_completed(source.committer(), cp).await;
        } else if let Some(mark) = high_water::mark_for(self.ckpts, self.spec)? {
            high_water::seek(source.as_mut(), &mark).await?;
        }
        Ok(source)
    }

    /// The keyed instances and the merge stage: reading stage -> instance i -> merge ->
    /// write stage (`tx`), each over its own bounded channel. An instance runs on another
    /// node when the run's placer puts it there, here otherwise.
    async fn keyed_instances(&self, plan: &Plan, split: &Split, compiled: &Compiled, tx: &mpsc::Sender<ToSink>, capacity: usize) -> Result<(Vec<(Stage, LoopWork)>, KeyedRoute), RunError> {
        let mut to_instances = Vec::with_capacity(plan.instances);
        let mut from_instances = Vec::with_capacity(plan.instances);
        let mut instances = Vec::with_capacity(plan.instances);
        for index in 0..plan.instances {
            let (in_tx, in_rx) = mpsc::channel(capacity);
            let (out_tx, out_rx) = mpsc::channel(capacity);
            to_instances.push(in_tx);
            from_instances.push(out_rx);
            let work: LoopWork = match self.remote_instance(plan, split, index, compiled).await {
                Some(conn) => Box::pin(Proxy { index, conn, rx: in_rx, tx: out_tx, progress: self.progress.clone() }.run()),
                None => {
                    let mut chain = Chain::new_at(&self.spec.transformations[split.at..], split.at, compiled.join_data.clone())?;
                    if let Some(states) = &compiled.keyed_states {
                        chain.restore(&states[index]).map_err(|source| BuildError::RestoreInstance { index, source })?;
                    }
                    let inst = Instance { pipeline: self.spec.name.clone(), index, chain, rx: in_rx, tx: out_tx, progress: self.progress.clone() };
                    Box::pin(async move {
                        let _counted = Counted::new(&LOCAL);
                        inst.run().await
                    })
                }
            };
            instances.push((Stage::Keyed(index), work));
        }
        let merge: LoopWork = Box::pin(Merge { rxs: from_instances, tx: tx.clone() }.run());
        let mut loops = vec![(Stage::Merge, merge)];
        loops.extend(instances);
        let route = KeyedRoute { partitioner: Partitioner::new(split.key.clone(), plan.instances), txs: to_instances };
        Ok((loops, route))
    }

    fn feeder(&self, tx: mpsc::Sender<ToSink>, chain: Chain, counts: CheckpointCounts, resume: Option<&Checkpoint>, unbounded: bool, keyed: Option<KeyedRoute>) -> Feeder {
        let interval = self.opts.checkpoint_interval.unwrap_or(self.spec.checkpoint.interval());
        Feeder {
            pipeline: self.spec.name.clone(),
            tx,
            chain,
            out: Output::default(),
            counts,
            progress: self.progress.clone(),
            next_checkpoint: resume.map(|c| c.id + 1).unwrap_or(if unbounded { 0 } else { 1 }),
            trigger: Arc::new(AtomicBool::new(false)),
            every_batch: interval.is_zero(),
            batch_size: self.opts.batch_size,
            keyed,
        }
    }

    /// A destination on the node the pipeline's `placement.destinations` names, when that is
    /// another node and it takes it; `None` to open it here.
    async fn remote_destination(&self, d: &ConnectorSpec) -> Option<Box<dyn SinkConnector>> {
        let (spec, run_id) = (self.spec, self.run_id);
        let node = spec.placement.destinations?;
        let remote = match self.opts.placer.as_ref()?.destinations(run_id, node).await? {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(run = %run_id, node, "the destination runs here: {e}");
                return None;
            }
        };
        match RemoteSink::open(remote, &spec.name, run_id, d).await {
            Ok(s) => {
                tracing::info!(run = %run_id, node, "the destination `{}` runs on node {node}", d.display_name());
                Some(Box::new(s))
            }
            Err(e) => {
                tracing::warn!(run = %run_id, node, "the destination runs here: {e}");
                None
            }
        }
    }

    /// Keyed instance `index` on another node, when the run's placer puts it there and the
    /// node takes it; `None` to run it here.
    async fn remote_instance(&self, plan: &Plan, split: &Split, index: usize, compiled: &Compiled) -> Option<Connected> {
        let (spec, run_id) = (self.spec, self.run_id);
        let placer = self.opts.placer.as_ref()?;
        let remote = match placer.place(run_id, index, plan.instances).await? {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(run = %run_id, index, "keyed instance {index} runs here: {e}");
                return None;
            }
        };
        let node = remote.node;
        let hello = Hello {
            pipeline: spec.name.clone(),
            run_id: run_id.to_string(),
            index,
            transformations: serde_json::to_value(&spec.transformations[split.at..]).ok()?,
            at: split.at,
            join_data: compiled.join_data.clone(),
            state: compiled.keyed_states.as_ref().map(|s| s[index].clone()),
        };
        match connect(remote, hello).await {
            Ok(c) => {
                tracing::info!(run = %run_id, index, node, "keyed instance {index} runs on node {node}");
                Some(c)
            }
            Err(e) => {
                tracing::warn!(run = %run_id, index, node, "keyed instance {index} runs here: {e}");
                None
            }
        }
    }
}

/// The keyed instances' states in checkpoint `cp`, which must have been taken with
/// `instances` keyed instances.
fn instance_states(cp: &Checkpoint, instances: usize) -> Result<Vec<Json>, BuildError> {
    let checkpoint = cp.id;
    let Some(taken) = cp.chain_state.get("instances").and_then(Json::as_u64) else {
        return Err(BuildError::UnkeyedCheckpoint { checkpoint, instances });
    };
    if taken as usize != instances {
        return Err(BuildError::OtherParallelism { checkpoint, taken, instances });
    }
    match cp.chain_state.get("states").and_then(Json::as_array) {
        Some(states) if states.len() == instances => Ok(states.clone()),
        _ => Err(BuildError::MalformedKeyedStates { checkpoint }),
    }
}

/// Tells the source's broker (again) that the checkpoint a resumed run starts from had
/// completed: the process that took it may have died before it could.
async fn source_completed(committer: Option<Box<dyn SourceCommitter>>, cp: &Checkpoint) {
    if let Some(c) = committer
        && let Err(e) = c.checkpoint_completed(&cp.source).await
    {
        tracing::warn!(checkpoint = cp.id, "source: could not acknowledge the checkpoint resumed from: {e}");
    }
}
