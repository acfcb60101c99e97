//! Keyed instances of a stateful stage, and the merge stage that joins them (see
//! [`crate::plan`]).
//!
//! The reading stage sends each instance the records whose key hashes to it, over the
//! instance's own bounded channel, and the same barrier to every instance after the same
//! batch. An instance runs its chain, snapshots it at each barrier and passes the barrier on
//! over its own bounded channel to the merge stage. The merge stage forwards records as they
//! come but aligns barriers: once an instance has delivered barrier k, the merge stage stops
//! reading that instance (which then blocks when its channel is full) until every instance
//! has delivered barrier k; then it sends the write stage one barrier holding every
//! instance's state. So a checkpoint's output holds exactly the records of the input before
//! its source position, whatever the instances' speeds.
//!
//! Dead letters of the reading stage travel through instance 0 so that they, too, reach the
//! write stage on the right side of their barrier.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Instant;

use chrono::Utc;
use dagg_model::Value;
use dagg_transforms::{BatchContext, Chain, Output};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::dead_letter::take_rejected;
use crate::error::{RunError, panic_text};
use crate::metrics;
use crate::progress::RunProgress;
use crate::protocol::{Barrier, FromKeyed, Stage, SupervisorMsg, ToKeyed, ToSink};

/// One keyed instance's loop.
pub(crate) struct Instance {
    pub pipeline: String,
    pub index: usize,
    pub chain: Chain,
    pub rx: mpsc::Receiver<ToKeyed>,
    pub tx: mpsc::Sender<FromKeyed>,
    pub progress: Arc<RunProgress>,
}

impl Instance {
    pub async fn run(mut self) -> Result<(), RunError> {
        let mut out = Output::default();
        let (mut dropped, mut filtered) = (0u64, 0u64);
        let stage = format!("keyed#{}", self.index);
        while let Some(msg) = self.rx.recv().await {
            if self.progress.is_cancelled() {
                return Err(RunError::Cancelled);
            }
            match msg {
                ToKeyed::Records(records) => {
                    self.chain.process(records, &BatchContext { now: Utc::now() }, &mut out);
                    self.flush(&mut out, &mut dropped, &mut filtered, &stage).await?;
                }
                ToKeyed::Dead(d) => self.tx.send(FromKeyed::Dead(d)).await.map_err(|_| RunError::Downstream)?,
                ToKeyed::Barrier(barrier) => {
                    if barrier.input_done {
                        self.chain.finish(&BatchContext { now: Utc::now() }, &mut out);
                        self.flush(&mut out, &mut dropped, &mut filtered, &stage).await?;
                    }
                    let state = if barrier.input_done { Json::Null } else { self.chain.snapshot() };
                    self.tx.send(FromKeyed::Barrier { barrier, state, dropped, filtered }).await.map_err(|_| RunError::Downstream)?;
                }
                ToKeyed::End => return self.tx.send(FromKeyed::End).await.map_err(|_| RunError::Downstream),
            }
        }
        Err(RunError::Upstream)
    }

    async fn flush(&mut self, out: &mut Output, dropped: &mut u64, filtered: &mut u64, stage: &str) -> Result<(), RunError> {
        let (d, f) = (std::mem::take(&mut out.dropped), std::mem::take(&mut out.filtered));
        *dropped += d;
        *filtered += f;
        self.progress.dropped.fetch_add(d, Ordering::Relaxed);
        self.progress.filtered.fetch_add(f, Ordering::Relaxed);
        let p = self.pipeline.as_str();
        metrics::RECORDS_REMOVED.with_label_values(&[p, "dropped"]).inc_by(d);
        metrics::RECORDS_REMOVED.with_label_values(&[p, "filtered"]).inc_by(f);
        // The source positions of the records stayed with the reading stage.
        let dead = take_rejected(out, |_| None::<Value>);
        let waited = Instant::now();
        if !dead.is_empty() {
            self.tx.send(FromKeyed::Dead(dead)).await.map_err(|_| RunError::Downstream)?;
        }
        if !out.records.is_empty() {
            self.tx.send(FromKeyed::Records(std::mem::take(&mut out.records))).await.map_err(|_| RunError::Downstream)?;
        }
        metrics::BACKPRESSURE_SECONDS.with_label_values(&[p, stage]).observe(waited.elapsed().as_secs_f64());
        Ok(())
    }
}

/// The merge stage's loop: forwards the instances' output, aligns their barriers.
pub(crate) struct Merge {
    pub rxs: Vec<mpsc::Receiver<FromKeyed>>,
    pub tx: mpsc::Sender<ToSink>,
}

/// A barrier an instance delivered, waiting for the others.
struct Arrived {
    barrier: Barrier,
    state: Json,
    dropped: u64,
    filtered: u64,
}

impl Merge {
    pub async fn run(mut self) -> Result<(), RunError> {
        let n = self.rxs.len();
        let mut arrived: Vec<Option<Arrived>> = (0..n).map(|_| None).collect();
        let mut ended = vec![false; n];
        let mut next = 0usize;
        loop {
            // Read the instances that are neither at a barrier nor done, round robin.
            let (i, msg) = std::future::poll_fn(|cx| {
                for k in 0..n {
                    let i = (next + k) % n;
                    if arrived[i].is_some() || ended[i] {
                        continue;
                    }
                    if let Poll::Ready(m) = self.rxs[i].poll_recv(cx) {
                        return Poll::Ready((i, m));
                    }
                }
                Poll::Pending
            })
            .await;
            next = (i + 1) % n;
            match msg {
                None => return Err(RunError::Upstream),
                Some(FromKeyed::Records(r)) => self.send(ToSink::Records(r)).await?,
                Some(FromKeyed::Dead(d)) => self.send(ToSink::Dead(d)).await?,
                Some(FromKeyed::Barrier { barrier, state, dropped, filtered }) => {
                    arrived[i] = Some(Arrived { barrier, state, dropped, filtered });
                    if arrived.iter().all(Option::is_some) {
                        let all: Vec<Arrived> = arrived.iter_mut().map(|a| a.take().expect("all arrived")).collect();
                        let b = combine(all)?;
                        self.send(ToSink::Barrier(b)).await?;
                    }
                }
                Some(FromKeyed::End) => {
                    ended[i] = true;
                    if ended.iter().all(|e| *e) {
                        return self.send(ToSink::End).await;
                    }
                }
            }
        }
    }

    async fn send(&self, m: ToSink) -> Result<(), RunError> {
        self.tx.send(m).await.map_err(|_| RunError::Downstream)
    }
}

/// One barrier from every instance's: the reading stage's counters plus what the instances
/// dropped and filtered, and every instance's state.
fn combine(all: Vec<Arrived>) -> Result<Barrier, RunError> {
    let first = &all[0].barrier;
    if let Some(other) = all.iter().find(|a| a.barrier.id != first.id) {
        return Err(RunError::Crashed { stage: "merge".into(), reason: format!("barriers {} and {} arrived together", first.id, other.barrier.id) });
    }
    let mut b = first.clone();
    b.counts.dropped += all.iter().map(|a| a.dropped).sum::<u64>();
    b.counts.filtered += all.iter().map(|a| a.filtered).sum::<u64>();
    b.chain_state = if all.iter().all(|a| a.state.is_null()) {
        Json::Null
    } else {
        json!({"version": 1, "instances": all.len(), "states": all.into_iter().map(|a| a.state).collect::<Vec<_>>()})
    };
    Ok(b)
}

/// A stage actor that runs one loop (a keyed instance or the merge) in its own task and
/// reports how it ended to the supervisor.
pub(crate) struct LoopStage;

/// A keyed instance's or the merge stage's loop, to run in its stage actor.
pub(crate) type LoopWork = Pin<Box<dyn Future<Output = Result<(), RunError>> + Send>>;

pub(crate) struct LoopArgs {
    pub work: LoopWork,
    pub stage: Stage,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub attempt: u32,
}

pub(crate) enum LoopMsg {
    Ended(Result<(), RunError>),
}

pub(crate) struct LoopState {
    stage: Stage,
    supervisor: ActorRef<SupervisorMsg>,
    attempt: u32,
    task: AbortHandle,
}

impl Actor for LoopStage {
    type Msg = LoopMsg;
    type State = LoopState;
    type Arguments = LoopArgs;

    async fn pre_start(&self, myself: ActorRef<LoopMsg>, args: LoopArgs) -> Result<LoopState, ActorProcessingErr> {
        let work = tokio::spawn(args.work);
        let task = work.abort_handle();
        let stage = args.stage;
        tokio::spawn(async move {
            let result = work.await.unwrap_or_else(|e| Err(RunError::Crashed { stage: stage.name(), reason: panic_text(e) }));
            let _ = myself.cast(LoopMsg::Ended(result));
        });
        Ok(LoopState { stage, supervisor: args.supervisor, attempt: args.attempt, task })
    }

    async fn handle(&self, myself: ActorRef<LoopMsg>, msg: LoopMsg, state: &mut LoopState) -> Result<(), ActorProcessingErr> {
        let LoopMsg::Ended(result) = msg;
        let _ = state.supervisor.cast(SupervisorMsg::StageEnded { attempt: state.attempt, stage: state.stage, result });
        myself.stop(None);
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<LoopMsg>, state: &mut LoopState) -> Result<(), ActorProcessingErr> {
        state.task.abort();
        Ok(())
    }
}
