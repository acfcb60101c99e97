//! The sink stage: writes batches to every destination and the dead letter, and completes
//! checkpoints.
//!
//! Its input is a bounded channel from the transform stage carrying, in order, batches,
//! dead letters and checkpoint barriers. At a barrier every record before it has been
//! written: each destination pre-commits (durable, not yet visible), then the checkpoint is
//! recorded. `End` makes the output final (commit) and forgets the checkpoint; `Abort`
//! discards it. A channel that closes without either means the transform stage failed:
//! nothing is committed, and the checkpoints stay for the retry.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use dagg_connectors::{SinkConnector, SourceCommitter};
use dagg_model::{Record, Value};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::dead_letter::{DeadLetter, DeadLetterSink, Payload};
use crate::metrics;
use crate::progress::RunProgress;
use crate::error::{RunError, at, panic_text};
use crate::protocol::{Barrier, Stage, SupervisorMsg, ToSink};
use crate::store::{Checkpoint, Checkpoints, FORMAT_VERSION, HighWater};

/// Writes to every destination and the dead letter, and completes checkpoints.
pub(crate) struct Writer {
    pub sinks: Vec<(String, Box<dyn SinkConnector>)>,
    pub dead: DeadLetterSink,
    pub written: u64,
    pub progress: Arc<RunProgress>,
    pub pipeline: String,
    pub run_id: String,
    pub digest: String,
    pub ckpts: Checkpoints,
    /// Told about each completed checkpoint (acks to the source's broker).
    pub committer: Option<Box<dyn SourceCommitter>>,
    /// An incremental source's identity: its final position is kept as the pipeline's
    /// high-water mark when the run finishes (see `high_water.rs`).
    pub high_water: Option<serde_json::Value>,
}

impl Writer {
    /// Writes what arrives until `End`, `Abort`, an error, or the input closing early.
    pub async fn run(mut self, mut rx: mpsc::Receiver<ToSink>) -> Result<(), RunError> {
        let mut refused_idx = HashSet::new();
        while let Some(msg) = rx.recv().await {
            match msg {
                ToSink::Records(records) => self.write_records(&records, &mut refused_idx).await?,
                ToSink::Dead(letters) => self.send_dead(letters).await?,
                ToSink::Barrier(b) => self.checkpoint(b).await?,
                ToSink::End => return self.finish().await,
                ToSink::Abort => {
                    self.abort().await;
                    return Err(RunError::Cancelled);
                }
            }
        }
        Err(RunError::Upstream)
    }

    async fn write_records(&mut self, records: &[Record], refused_idx: &mut HashSet<usize>) -> Result<(), RunError> {
        refused_idx.clear();
        // Profile (and, under a strict schema policy, check) what is about to be delivered.
        if let Some(tap) = self.progress.tap().cloned()
            && let Err(changes) = tap.observe(self.progress.attempts.load(Ordering::Relaxed), records)
        {
            return Err(self.refuse_schema(changes).await);
        }
        let mut letters = Vec::new();
        for (stage, sink) in self.sinks.iter_mut() {
            for (i, why) in sink.write(records).await.map_err(at(stage))? {
                refused_idx.insert(i);
                letters.push(DeadLetter { stage: stage.clone(), reason: why, position: Value::Null, payload: Payload::Record(records[i].clone()) });
            }
        }
        let delivered = (records.len() - refused_idx.len()) as u64;
        self.written += delivered;
        self.progress.written.fetch_add(delivered, Ordering::Relaxed);
        metrics::RECORDS_WRITTEN.with_label_values(&[self.pipeline.as_str()]).inc_by(delivered);
        metrics::BATCHES.with_label_values(&[self.pipeline.as_str(), "destination"]).inc();
        self.send_dead(letters).await
    }

    async fn send_dead(&mut self, letters: Vec<DeadLetter>) -> Result<(), RunError> {
        self.progress.dead_lettered.fetch_add(letters.len() as u64, Ordering::Relaxed);
        for l in &letters {
            // Stages are the pipeline's own steps (`transformations[2]`): a bounded set.
            metrics::RECORDS_DEAD_LETTERED.with_label_values(&[self.pipeline.as_str(), l.stage.as_str()]).inc();
        }
        self.dead.send(letters).await.map_err(at("error_handling.dead_letter"))
    }

    /// Everything before the barrier is written: make it durable, then record the checkpoint.
    async fn checkpoint(&mut self, b: Barrier) -> Result<(), RunError> {
        let started = Instant::now();
        let mut tokens = Vec::with_capacity(self.sinks.len());
        for (stage, sink) in self.sinks.iter_mut() {
            tokens.push(sink.pre_commit(b.id).await.map_err(at(stage))?);
        }
        let dead_letter = self.dead.pre_commit(b.id).await.map_err(at("error_handling.dead_letter"))?;
        let acked = self.committer.as_ref().map(|_| b.source.clone());
        let mut counts = b.counts;
        counts.written = self.written;
        counts.dead_lettered = self.dead.count();
        let cp = Checkpoint {
            version: FORMAT_VERSION,
            id: b.id,
            run_id: self.run_id.clone(),
            spec_digest: self.digest.clone(),
            source: b.source,
            sinks: tokens,
            dead_letter,
            chain_state: b.chain_state,
            counts,
            input_done: b.input_done,
            at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        let lineage = self.progress.tap().map(|_| (cp.source.clone(), cp.sinks.clone()));
        self.ckpts.save(&self.pipeline, &cp)?;
        if let (Some(tap), Some((source, tokens))) = (self.progress.tap(), lineage) {
            let sinks = self.sinks.iter().zip(tokens).map(|((stage, _), commit)| crate::tap::SinkWrite { stage: stage.clone(), commit }).collect();
            tap.checkpoint(b.id, source, self.written, sinks);
        }
        self.progress.checkpoints.store(b.id, Ordering::Relaxed);
        metrics::CHECKPOINT_SECONDS.with_label_values(&[self.pipeline.as_str()]).observe(started.elapsed().as_secs_f64());
        metrics::CHECKPOINT_BYTES.with_label_values(&[self.pipeline.as_str()]).observe(serde_json::to_vec(&cp).map(|v| v.len()).unwrap_or(0) as f64);
        tracing::debug!(checkpoint = b.id, ms = started.elapsed().as_millis() as u64, "checkpoint complete");
        // Only now may the source's broker forget what this checkpoint covers.
        if let (Some(c), Some(source)) = (&self.committer, acked)
            && let Err(e) = c.checkpoint_completed(&source).await
        {
            tracing::warn!(checkpoint = b.id, "source: could not acknowledge the checkpoint (the next one will): {e}");
        }
        Ok(())
    }

    /// The last checkpoint is recorded: make the output final and forget the checkpoint.
    pub async fn finish(mut self) -> Result<(), RunError> {
        if let Some(tap) = self.progress.tap().cloned()
            && let Err(changes) = tap.check_end()
        {
            return Err(self.refuse_schema(changes).await);
        }
        for (stage, s) in self.sinks.iter_mut() {
            s.commit().await.map_err(at(stage))?;
        }
        self.dead.commit().await.map_err(at("error_handling.dead_letter"))?;
        let mark = self.high_water_mark()?;
        self.ckpts.finish(&self.pipeline, mark.as_ref())?;
        Ok(())
    }

    /// An incremental source's final position (the last checkpoint, taken at the end of the
    /// input), to start the next run from.
    fn high_water_mark(&self) -> Result<Option<HighWater>, RunError> {
        let Some(identity) = &self.high_water else { return Ok(None) };
        let Some(cp) = self.ckpts.load(&self.pipeline)?.filter(|cp| cp.input_done) else { return Ok(None) };
        let at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        Ok(Some(HighWater { version: FORMAT_VERSION, run_id: self.run_id.clone(), identity: identity.clone(), source: cp.source, at }))
    }

    /// A strict schema policy refused the run: like a cancel, nothing is committed and no
    /// checkpoint is left to resume from.
    async fn refuse_schema(&mut self, changes: String) -> RunError {
        self.abort().await;
        let _ = self.ckpts.clear(&self.pipeline);
        RunError::SchemaChanged(changes)
    }

    /// Discards everything written: a cancelled run leaves the destinations as they were.
    async fn abort(&mut self) {
        for (stage, s) in self.sinks.iter_mut() {
            if let Err(e) = s.abort().await {
                tracing::warn!("{stage}: could not discard partial output: {e}");
            }
        }
        self.dead.abort().await;
    }
}

/// The sink stage actor: owns the writing loop, reports how it ended to the supervisor.
pub(crate) struct SinkStage;

pub(crate) struct SinkArgs {
    pub writer: Writer,
    pub rx: mpsc::Receiver<ToSink>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub attempt: u32,
}

pub(crate) enum SinkMsg {
    Ended(Result<(), RunError>),
}

pub(crate) struct SinkState {
    supervisor: ActorRef<SupervisorMsg>,
    attempt: u32,
    task: AbortHandle,
}

impl Actor for SinkStage {
    type Msg = SinkMsg;
    type State = SinkState;
    type Arguments = SinkArgs;

    async fn pre_start(&self, myself: ActorRef<SinkMsg>, args: SinkArgs) -> Result<SinkState, ActorProcessingErr> {
        // The loop runs as its own task so that the mailbox stays free for control and a
        // panic in a connector is caught and reported like any other failure.
        let work = tokio::spawn(args.writer.run(args.rx));
        let task = work.abort_handle();
        tokio::spawn(async move {
            let result = work.await.unwrap_or_else(|e| Err(RunError::Crashed { stage: "destination".into(), reason: panic_text(e) }));
            let _ = myself.cast(SinkMsg::Ended(result));
        });
        Ok(SinkState { supervisor: args.supervisor, attempt: args.attempt, task })
    }

    async fn handle(&self, myself: ActorRef<SinkMsg>, msg: SinkMsg, state: &mut SinkState) -> Result<(), ActorProcessingErr> {
        match msg {
            SinkMsg::Ended(result) => {
                let _ = state.supervisor.cast(SupervisorMsg::StageEnded { attempt: state.attempt, stage: Stage::Sink, result });
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<SinkMsg>, state: &mut SinkState) -> Result<(), ActorProcessingErr> {
        state.task.abort();
        Ok(())
    }
}
