//! Keyed instances on other nodes (see [`crate::keyed_stage`] for the local ones).
//!
//! In a cluster, a run's coordinator — the node that reads its source and writes its
//! destinations — asks its [`InstancePlacer`](crate::remote::placer::InstancePlacer) where
//! each keyed instance of the stateful transformations runs. For an instance on another
//! node it opens a data link ([`crate::remote::link`]) to that node's peer address and
//! sends a [`Hello`]: the stateful part of the pipeline, the instance's state from the
//! checkpoint the attempt starts from, and the join data. The other node ([`host`]) runs an ordinary keyed instance behind the link.
//!
//! On the coordinator a stand-in loop takes the instance's place between the reading stage
//! and the merge stage: records go over the link; barriers stay here, in order, and only a
//! marker crosses; the instance answers each marker with its state, and the stand-in passes
//! the barrier on with that state. The reading stage's dead letters never leave the
//! coordinator: the stand-in passes them on at once, which keeps them ahead of the barrier
//! that follows them. Credits on the link carry backpressure both ways, so a slow
//! destination here slows the instance there, which slows the reading stage here.
//!
//! A link that breaks (the other node died, or the network failed) fails the stand-in, and
//! with it the attempt: the supervisor restores the run from its last completed checkpoint,
//! and the placer puts the instances on the nodes that are up.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use dagg_model::SpecErrors;
use dagg_model::spec::transform::parse_transformations;
use dagg_model::{Record, Value};
use dagg_transforms::Chain;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::dead_letter::{DeadLetter, Payload};
use crate::error::{RunError, panic_text};
use crate::keyed_stage::Instance;
use crate::progress::RunProgress;
use crate::protocol::{Barrier, FromKeyed, ToKeyed};
use crate::remote::link::{self, LinkError, LinkReceiver, LinkSender};
use crate::remote::placer::{Counted, HOSTED, Io, REMOTE, Remote};
use crate::store::CheckpointCounts;

/// Credits per direction of a keyed instance's link (batches in flight).
pub const WINDOW: u32 = 4;

/// What the coordinator sends an instance on another node.
#[derive(Serialize, Deserialize)]
pub enum ToRemote {
    Hello(Box<Hello>),
    Records(Vec<Record>),
    /// A barrier; the instance answers with [`FromRemote::Ack`].
    Barrier { input_done: bool },
    End,
}

/// What an instance on another node sends back.
#[derive(Serialize, Deserialize)]
pub enum FromRemote {
    /// The instance is built and restored.
    Ready,
    /// It could not be built (the reason).
    Refused(String),
    Records(Vec<Record>),
    Dead(Vec<WireDead>),
    /// The instance's answer to a barrier: its state and what it dropped and filtered since
    /// the attempt started.
    Ack { state: Json, dropped: u64, filtered: u64 },
    End,
    /// The instance failed (the reason).
    Failed(String),
}

/// Everything an instance needs to start.
#[derive(Serialize, Deserialize)]
pub struct Hello {
    pub pipeline: String,
    pub run_id: String,
    pub index: usize,
    /// The stateful part of the pipeline's transformations (as the pipeline document has
    /// them), starting at position `at`.
    pub transformations: Json,
    pub at: usize,
    pub join_data: HashMap<String, Vec<Record>>,
    /// The instance's state in the checkpoint the attempt starts from.
    pub state: Option<Json>,
}

/// A dead letter on the wire.
#[derive(Serialize, Deserialize)]
pub struct WireDead {
    stage: String,
    reason: String,
    position: Value,
    record: Option<Record>,
    raw: Option<String>,
}

impl From<DeadLetter> for WireDead {
    fn from(d: DeadLetter) -> Self {
        let (record, raw) = match d.payload {
            Payload::Record(r) => (Some(r), None),
            Payload::Raw(s) => (None, Some(s)),
        };
        WireDead { stage: d.stage, reason: d.reason, position: d.position, record, raw }
    }
}

impl From<WireDead> for DeadLetter {
    fn from(w: WireDead) -> Self {
        let payload = match (w.record, w.raw) {
            (Some(r), _) => Payload::Record(r),
            (None, raw) => Payload::Raw(raw.unwrap_or_default()),
        };
        DeadLetter { stage: w.stage, reason: w.reason, position: w.position, payload }
    }
}

/// An instance on another node, connected and started.
pub(crate) struct Connected {
    pub node: u64,
    pub tx: LinkSender<ToRemote>,
    pub rx: LinkReceiver<FromRemote>,
}

/// Opens the link over `remote`, sends the hello and waits for the instance to be ready.
pub(crate) async fn connect(remote: Remote, hello: Hello) -> Result<Connected, String> {
    let peer = format!("node {}", remote.node);
    let (tx, mut rx) = link::open::<ToRemote, FromRemote, _>(remote.io, WINDOW, peer);
    tx.send(&ToRemote::Hello(Box::new(hello))).await.map_err(|e| e.to_string())?;
    match rx.recv().await.map_err(|e| e.to_string())? {
        FromRemote::Ready => Ok(Connected { node: remote.node, tx, rx }),
        FromRemote::Refused(reason) => Err(format!("node {} refused the instance: {reason}", remote.node)),
        _ => Err(format!("node {} answered the hello out of order", remote.node)),
    }
}

/// The stand-in for an instance on another node, between the reading stage and the merge.
pub(crate) struct Proxy {
    pub index: usize,
    pub conn: Connected,
    pub rx: mpsc::Receiver<ToKeyed>,
    pub tx: mpsc::Sender<FromKeyed>,
    pub progress: Arc<RunProgress>,
}

impl Proxy {
    pub async fn run(self) -> Result<(), RunError> {
        let _counted = Counted::new(&REMOTE);
        let Proxy { index, conn, mut rx, tx, progress } = self;
        let Connected { node, tx: link_tx, rx: mut link_rx } = conn;
        let stage = format!("keyed instance {index} (on node {node})");
        let crashed = |e: LinkError| RunError::Crashed { stage: stage.clone(), reason: e.to_string() };
        let pending: Arc<Mutex<VecDeque<Barrier>>> = Arc::default();

        // Reading stage -> link.
        let forward = {
            let pending = pending.clone();
            let tx = tx.clone();
            let crashed = crashed.clone();
            async move {
                while let Some(msg) = rx.recv().await {
                    match msg {
                        ToKeyed::Records(r) => link_tx.send(&ToRemote::Records(r)).await.map_err(crashed.clone())?,
                        ToKeyed::Dead(d) => tx.send(FromKeyed::Dead(d)).await.map_err(|_| RunError::Downstream)?,
                        ToKeyed::Barrier(b) => {
                            let input_done = b.input_done;
                            pending.lock().unwrap_or_else(|e| e.into_inner()).push_back(b);
                            link_tx.send(&ToRemote::Barrier { input_done }).await.map_err(crashed.clone())?;
                        }
                        ToKeyed::End => {
                            link_tx.send(&ToRemote::End).await.map_err(crashed.clone())?;
                            // Keep the link's sending half until the answer is in.
                            std::future::pending::<()>().await;
                        }
                    }
                }
                Err(RunError::Upstream)
            }
        };
        // Link -> merge stage.
        let backward = async {
            let (mut dropped_seen, mut filtered_seen) = (0u64, 0u64);
            loop {
                match link_rx.recv().await.map_err(crashed.clone())? {
                    FromRemote::Records(r) => tx.send(FromKeyed::Records(r)).await.map_err(|_| RunError::Downstream)?,
                    FromRemote::Dead(d) => tx.send(FromKeyed::Dead(d.into_iter().map(DeadLetter::from).collect())).await.map_err(|_| RunError::Downstream)?,
                    FromRemote::Ack { state, dropped, filtered } => {
                        let Some(barrier) = pending.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
                            return Err(RunError::Crashed { stage: stage.clone(), reason: "an answer to a barrier that was not sent".into() });
                        };
                        progress.dropped.fetch_add(dropped.saturating_sub(dropped_seen), Ordering::Relaxed);
                        progress.filtered.fetch_add(filtered.saturating_sub(filtered_seen), Ordering::Relaxed);
                        (dropped_seen, filtered_seen) = (dropped, filtered);
                        tx.send(FromKeyed::Barrier { barrier, state, dropped, filtered }).await.map_err(|_| RunError::Downstream)?;
                    }
                    FromRemote::End => return tx.send(FromKeyed::End).await.map_err(|_| RunError::Downstream),
                    FromRemote::Failed(reason) => return Err(RunError::Crashed { stage: stage.clone(), reason }),
                    FromRemote::Ready | FromRemote::Refused(_) => {
                        return Err(RunError::Crashed { stage: stage.clone(), reason: "a second hello answer".into() });
                    }
                }
            }
        };
        tokio::select! {
            r = forward => r,
            r = backward => r,
        }
    }
}

/// Runs one keyed instance for a coordinator on another node, over `io` (the peer listener
/// hands it each data connection). Ends when the coordinator ends the instance or the link
/// breaks.
pub async fn host<S: Io>(io: S, peer: String) {
    let (tx, mut rx) = link::open::<FromRemote, ToRemote, _>(io, WINDOW, peer.clone());
    let hello = match rx.recv().await {
        Ok(ToRemote::Hello(h)) => h,
        Ok(_) => {
            let _ = tx.send(&FromRemote::Refused("the first message was not a hello".into())).await;
            return;
        }
        Err(e) => {
            tracing::warn!("data link: {e}");
            return;
        }
    };
    let Hello { pipeline, run_id, index, transformations, at, join_data, state } = *hello;
    let mut errs = SpecErrors::new();
    let specs = parse_transformations(&transformations, "transformations", &mut errs);
    let chain = if errs.is_empty() { Ok(specs) } else { Err(format!("the transformations do not parse here: {errs}")) };
    let chain = chain.and_then(|specs| Chain::new_at(&specs, at, join_data).map_err(|e| e.to_string())).and_then(|mut c| match &state {
        Some(s) => c.restore(s).map(|()| c).map_err(|e| format!("cannot restore the instance's state: {e}")),
        None => Ok(c),
    });
    let chain = match chain {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(&FromRemote::Refused(e)).await;
            return;
        }
    };
    if tx.send(&FromRemote::Ready).await.is_err() {
        return;
    }
    let _counted = Counted::new(&HOSTED);
    tracing::info!(pipeline = %pipeline, run = %run_id, index, from = %peer, "hosting a keyed instance");
    let (in_tx, in_rx) = mpsc::channel(WINDOW as usize);
    let (out_tx, mut out_rx) = mpsc::channel(WINDOW as usize);
    let instance = Instance { pipeline: pipeline.clone(), index, chain, rx: in_rx, tx: out_tx, progress: Arc::new(RunProgress::default()) };
    let work = tokio::spawn(instance.run());
    let abort = work.abort_handle();

    // Link -> instance.
    let inbound = async move {
        loop {
            let msg = match rx.recv().await {
                Ok(ToRemote::Records(r)) => ToKeyed::Records(r),
                Ok(ToRemote::Barrier { input_done }) => {
                    ToKeyed::Barrier(Barrier { id: 0, source: Json::Null, chain_state: Json::Null, counts: CheckpointCounts::default(), input_done })
                }
                Ok(ToRemote::End) => ToKeyed::End,
                Ok(ToRemote::Hello(_)) => return Err("a second hello".to_string()),
                Err(e) => return Err(e.to_string()),
            };
            let end = matches!(msg, ToKeyed::End);
            if in_tx.send(msg).await.is_err() {
                // The instance ended; its outcome travels outbound.
                std::future::pending::<()>().await;
            }
            if end {
                std::future::pending::<()>().await;
            }
        }
    };
    // Instance -> link.
    let outbound = async {
        while let Some(msg) = out_rx.recv().await {
            let m = match msg {
                FromKeyed::Records(r) => FromRemote::Records(r),
                FromKeyed::Dead(d) => FromRemote::Dead(d.into_iter().map(WireDead::from).collect()),
                FromKeyed::Barrier { state, dropped, filtered, .. } => FromRemote::Ack { state, dropped, filtered },
                FromKeyed::End => FromRemote::End,
            };
            tx.send(&m).await.map_err(|e| e.to_string())?;
        }
        // The instance's loop ended: how?
        let reason = match work.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(e) => panic_text(e),
        };
        let _ = tx.send(&FromRemote::Failed(reason.clone())).await;
        Err(reason)
    };
    let outcome = tokio::select! {
        r = inbound => r,
        r = outbound => r,
    };
    abort.abort();
    match outcome {
        Ok(()) => tracing::info!(pipeline = %pipeline, run = %run_id, index, "keyed instance done"),
        Err(e) => tracing::warn!(pipeline = %pipeline, run = %run_id, index, "keyed instance stopped: {e}"),
    }
}
