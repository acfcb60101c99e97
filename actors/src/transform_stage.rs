//! The transform stage: reads the source and runs the fused transformation chain (every
//! step in one loop per record, no channel between steps) over each batch, then hands the
//! results, dead letters and checkpoint barriers to the sink stage over a bounded channel.
//!
//! Barriers: the supervisor triggers a checkpoint through the mailbox; the loop takes it
//! between two batches, so the source position it records covers exactly the records sent
//! before the barrier.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::Utc;
use dagg_connectors::SourceConnector;
use dagg_transforms::partition::Partitioner;
use dagg_transforms::{BatchContext, Chain, Output};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::dead_letter::{DeadLetter, Payload, take_rejected};
use crate::error::{RunError, at, panic_text};
use crate::metrics;
use crate::progress::RunProgress;
use crate::protocol::{Barrier, Stage, SupervisorMsg, ToKeyed, ToSink};
use crate::store::CheckpointCounts;

/// Reads the source, runs the chain, hands batches and barriers to the sink stage.
pub(crate) struct Feeder {
    pub pipeline: String,
    pub tx: mpsc::Sender<ToSink>,
    pub chain: Chain,
    pub out: Output,
    pub counts: CheckpointCounts,
    pub progress: Arc<RunProgress>,
    pub next_checkpoint: u64,
    /// Set by the supervisor's checkpoint timer.
    pub trigger: Arc<AtomicBool>,
    /// Checkpoint after every batch (an interval of zero).
    pub every_batch: bool,
    pub batch_size: usize,
    /// With keyed instances: where the chain's output goes instead of `tx` (which then only
    /// carries `Abort`).
    pub keyed: Option<KeyedRoute>,
}

/// The channels to the keyed instances, and which instance owns which key.
pub(crate) struct KeyedRoute {
    pub partitioner: Partitioner,
    pub txs: Vec<mpsc::Sender<ToKeyed>>,
}

impl Feeder {
    pub async fn run(mut self, mut source: Box<dyn SourceConnector>) -> Result<(), RunError> {
        match self.feed(source.as_mut()).await {
            Err(RunError::Cancelled) => {
                let _ = self.tx.send(ToSink::Abort).await;
                Err(RunError::Cancelled)
            }
            other => other,
        }
    }

    async fn feed(&mut self, source: &mut dyn SourceConnector) -> Result<(), RunError> {
        if self.next_checkpoint == 0 {
            // Checkpoint 0, before reading (a new run of an unbounded source): the
            // destinations' identities (sink ids, message-id prefixes) are recorded before
            // any of them can commit, so a crash before checkpoint 1 resumes this run
            // instead of starting a second one that would write the same records again.
            self.barrier(source.checkpoint(), false).await?;
        }
        let unbounded = source.unbounded();
        loop {
            if self.progress.is_cancelled() {
                return Err(RunError::Cancelled);
            }
            if self.progress.is_stop_requested() {
                if !unbounded {
                    return Err(RunError::Stopped);
                }
                // The end of an unbounded input: a last checkpoint, then commit.
                break;
            }
            let Some(sb) = source.next_batch(self.batch_size).await.map_err(at("source"))? else { break };
            if let Some(lag) = source.lag() {
                metrics::SOURCE_LAG.with_label_values(&[self.pipeline.as_str()]).set(lag.min(i64::MAX as u64) as i64);
            }
            if sb.batch.records.is_empty() && sb.bad.is_empty() {
                // An idle stream: nothing to do but take a checkpoint when one is due.
                if self.trigger.swap(false, Ordering::Relaxed) {
                    self.barrier(source.checkpoint(), false).await?;
                }
                continue;
            }
            let n = (sb.batch.records.len() + sb.bad.len()) as u64;
            self.counts.read += n;
            self.progress.read.fetch_add(n, Ordering::Relaxed);
            metrics::RECORDS_READ.with_label_values(&[self.pipeline.as_str()]).inc_by(n);
            metrics::BATCHES.with_label_values(&[self.pipeline.as_str(), "transformations"]).inc();
            let mut dead: Vec<DeadLetter> = sb
                .bad
                .into_iter()
                .map(|x| DeadLetter { stage: "source".into(), reason: x.reason, position: source.describe(x.position), payload: Payload::Raw(x.raw) })
                .collect();
            let positions = sb.batch.positions;
            self.chain.process(sb.batch.records, &BatchContext { now: Utc::now() }, &mut self.out);
            dead.extend(take_rejected(&mut self.out, |i| positions.get(i).map(|p| source.describe(*p))));
            self.send(dead).await?;
            if self.every_batch || self.trigger.swap(false, Ordering::Relaxed) {
                self.barrier(source.checkpoint(), false).await?;
            }
        }
        self.chain.finish(&BatchContext { now: Utc::now() }, &mut self.out);
        let dead = take_rejected(&mut self.out, |_| None);
        self.send(dead).await?;
        self.barrier(source.checkpoint(), true).await?;
        match &self.keyed {
            Some(k) => {
                for tx in &k.txs {
                    tx.send(ToKeyed::End).await.map_err(|_| RunError::Downstream)?;
                }
                Ok(())
            }
            None => self.tx.send(ToSink::End).await.map_err(|_| RunError::Downstream),
        }
    }

    async fn barrier(&mut self, source: serde_json::Value, input_done: bool) -> Result<(), RunError> {
        // After the end of the input the chain has emitted everything: no state to keep.
        let chain_state = if input_done || !self.chain.is_stateful() { serde_json::Value::Null } else { self.chain.snapshot() };
        let b = Barrier { id: self.next_checkpoint, source, chain_state, counts: self.counts.clone(), input_done };
        self.next_checkpoint += 1;
        match &self.keyed {
            // Every instance gets the barrier after the same records.
            Some(k) => {
                for tx in &k.txs {
                    tx.send(ToKeyed::Barrier(b.clone())).await.map_err(|_| RunError::Downstream)?;
                }
                Ok(())
            }
            None => self.tx.send(ToSink::Barrier(b)).await.map_err(|_| RunError::Downstream),
        }
    }

    async fn send(&mut self, dead: Vec<DeadLetter>) -> Result<(), RunError> {
        let dropped = std::mem::take(&mut self.out.dropped);
        let filtered = std::mem::take(&mut self.out.filtered);
        self.counts.dropped += dropped;
        self.counts.filtered += filtered;
        self.progress.dropped.fetch_add(dropped, Ordering::Relaxed);
        self.progress.filtered.fetch_add(filtered, Ordering::Relaxed);
        let p = self.pipeline.as_str();
        metrics::RECORDS_REMOVED.with_label_values(&[p, "dropped"]).inc_by(dropped);
        metrics::RECORDS_REMOVED.with_label_values(&[p, "filtered"]).inc_by(filtered);
        let waited = Instant::now();
        if let Some(k) = &self.keyed {
            if !dead.is_empty() {
                k.txs[0].send(ToKeyed::Dead(dead)).await.map_err(|_| RunError::Downstream)?;
            }
            if !self.out.records.is_empty() {
                let parts = k.partitioner.split(std::mem::take(&mut self.out.records));
                for (tx, part) in k.txs.iter().zip(parts) {
                    if !part.is_empty() {
                        tx.send(ToKeyed::Records(part)).await.map_err(|_| RunError::Downstream)?;
                    }
                }
            }
            metrics::BACKPRESSURE_SECONDS.with_label_values(&[p, "transformations"]).observe(waited.elapsed().as_secs_f64());
            return Ok(());
        }
        if !dead.is_empty() {
            self.tx.send(ToSink::Dead(dead)).await.map_err(|_| RunError::Downstream)?;
        }
        if !self.out.records.is_empty() {
            let records = std::mem::take(&mut self.out.records);
            self.tx.send(ToSink::Records(records)).await.map_err(|_| RunError::Downstream)?;
        }
        metrics::BACKPRESSURE_SECONDS.with_label_values(&[p, "transformations"]).observe(waited.elapsed().as_secs_f64());
        Ok(())
    }
}

/// The transform stage actor: owns the reading loop, takes checkpoint triggers, reports how
/// the loop ended to the supervisor.
pub(crate) struct TransformStage;

pub(crate) struct TransformArgs {
    pub feeder: Feeder,
    pub source: Box<dyn SourceConnector>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub attempt: u32,
}

pub(crate) enum TransformMsg {
    /// Take a checkpoint after the current batch.
    TriggerCheckpoint,
    Ended(Result<(), RunError>),
}

pub(crate) struct TransformState {
    trigger: Arc<AtomicBool>,
    supervisor: ActorRef<SupervisorMsg>,
    attempt: u32,
    task: AbortHandle,
}

impl Actor for TransformStage {
    type Msg = TransformMsg;
    type State = TransformState;
    type Arguments = TransformArgs;

    async fn pre_start(&self, myself: ActorRef<TransformMsg>, args: TransformArgs) -> Result<TransformState, ActorProcessingErr> {
        let trigger = args.feeder.trigger.clone();
        // Its own task: the mailbox stays free for control while the loop waits on the
        // channel, and a panic in a transformation is caught and reported as a failure.
        let work = tokio::spawn(args.feeder.run(args.source));
        let task = work.abort_handle();
        tokio::spawn(async move {
            let result = work.await.unwrap_or_else(|e| Err(RunError::Crashed { stage: "transformations".into(), reason: panic_text(e) }));
            let _ = myself.cast(TransformMsg::Ended(result));
        });
        Ok(TransformState { trigger, supervisor: args.supervisor, attempt: args.attempt, task })
    }

    async fn handle(&self, myself: ActorRef<TransformMsg>, msg: TransformMsg, state: &mut TransformState) -> Result<(), ActorProcessingErr> {
        match msg {
            TransformMsg::TriggerCheckpoint => state.trigger.store(true, Ordering::Relaxed),
            TransformMsg::Ended(result) => {
                let _ = state.supervisor.cast(SupervisorMsg::StageEnded { attempt: state.attempt, stage: Stage::Transform, result });
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<TransformMsg>, state: &mut TransformState) -> Result<(), ActorProcessingErr> {
        state.task.abort();
        Ok(())
    }
}
