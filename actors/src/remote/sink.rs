//! Destinations on another node (`placement.destinations` in a cluster).
//!
//! The run's node keeps its write stage — checkpoints, counters, dead letters — and talks to
//! each destination through a [`RemoteSink`]: a [`SinkConnector`] whose calls (write,
//! pre-commit, commit, abort, recover) travel over a data link ([`crate::remote::link`]) to the
//! named node, where [`host`] opens the real connector and answers each call. One call is
//! in flight at a time, so a destination that is slow there holds the write stage here,
//! which holds the reading stage: a slow destination on one node throttles the source on
//! another, with nothing piling up on either.
//!
//! The checkpoint protocol is the connector's own: `pre_commit` there returns the token the
//! checkpoint records here, and after a failure `recover` sends it back to whichever node
//! then hosts the destination. A link that breaks fails the call, and the attempt restarts
//! from the last completed checkpoint. Nothing is aborted when a link breaks: what the
//! destination pre-committed belongs to a checkpoint that may be complete.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use dagg_connectors::{ConnectorError, SinkConnector, open_sink};
use dagg_model::spec::connector::{ConnectorSpec, Role, parse_connector};
use dagg_model::{Record, SpecErrors};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::remote::link::{self, LinkReceiver, LinkSender};
use crate::remote::placer::{Counted, HOSTED, Io, REMOTE, Remote};

/// A destination call.
#[derive(Serialize, Deserialize)]
pub enum ToSinkHost {
    /// Open the destination (as the pipeline document writes it).
    Open { pipeline: String, run_id: String, destination: Json },
    Write(Vec<Record>),
    PreCommit(u64),
    Commit,
    Abort,
    Recover { token: Json, epoch: u64 },
}

/// `ToSinkHost::Write` without copying the records.
#[derive(Serialize)]
enum WriteRef<'a> {
    Write(&'a [Record]),
}

/// A destination call's answer.
#[derive(Serialize, Deserialize)]
pub enum FromSinkHost {
    Opened,
    /// The records the destination refused: (index, reason).
    Written(Vec<(usize, String)>),
    PreCommitted(Json),
    Done,
    /// The call failed there (the connector's error).
    Failed(String),
}

/// A destination on another node.
pub struct RemoteSink {
    node: u64,
    tx: LinkSender<ToSinkHost>,
    rx: LinkReceiver<FromSinkHost>,
    _counted: Counted,
}

impl RemoteSink {
    /// Opens `destination` on the node behind `remote`.
    pub async fn open(remote: Remote, pipeline: &str, run_id: &str, destination: &ConnectorSpec) -> Result<RemoteSink, String> {
        let node = remote.node;
        let (tx, rx) = link::open::<ToSinkHost, FromSinkHost, _>(remote.io, 2, format!("node {node}"));
        let destination = serde_json::to_value(destination).map_err(|e| e.to_string())?;
        let mut sink = RemoteSink { node, tx, rx, _counted: Counted::new(&REMOTE) };
        match sink.call(&ToSinkHost::Open { pipeline: pipeline.into(), run_id: run_id.into(), destination }).await {
            Ok(FromSinkHost::Opened) => Ok(sink),
            Ok(_) => Err(format!("node {node} answered the opening out of order")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn call<T: Serialize>(&mut self, msg: &T) -> Result<FromSinkHost, ConnectorError> {
        let lost = |e: link::LinkError| ConnectorError::Connect { target: format!("node {}", self.node), reason: e.reason };
        self.tx.send_as(msg).await.map_err(lost)?;
        match self.rx.recv().await.map_err(lost)? {
            FromSinkHost::Failed(reason) => Err(ConnectorError::Config(format!("on node {}: {reason}", self.node))),
            answer => Ok(answer),
        }
    }

    fn unexpected(&self) -> ConnectorError {
        ConnectorError::Config(format!("node {} answered a destination call out of order", self.node))
    }
}

#[async_trait]
impl SinkConnector for RemoteSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        match self.call(&WriteRef::Write(records)).await? {
            FromSinkHost::Written(refused) => Ok(refused),
            _ => Err(self.unexpected()),
        }
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        match self.call(&ToSinkHost::Commit).await? {
            FromSinkHost::Done => Ok(()),
            _ => Err(self.unexpected()),
        }
    }

    async fn abort(&mut self) -> Result<(), ConnectorError> {
        match self.call(&ToSinkHost::Abort).await? {
            FromSinkHost::Done => Ok(()),
            _ => Err(self.unexpected()),
        }
    }

    async fn pre_commit(&mut self, epoch: u64) -> Result<Json, ConnectorError> {
        match self.call(&ToSinkHost::PreCommit(epoch)).await? {
            FromSinkHost::PreCommitted(token) => Ok(token),
            _ => Err(self.unexpected()),
        }
    }

    async fn recover(&mut self, token: &Json, epoch: u64) -> Result<(), ConnectorError> {
        match self.call(&ToSinkHost::Recover { token: token.clone(), epoch }).await? {
            FromSinkHost::Done => Ok(()),
            _ => Err(self.unexpected()),
        }
    }
}

/// What a peer asks this node to open: a destination of a run.
pub struct SinkRequest<'a> {
    pub pipeline: &'a str,
    pub run_id: &'a str,
    pub destination: &'a ConnectorSpec,
}

/// Decides whether this node hosts a destination a peer asks for: `Err` says why not. The
/// control plane gives one that applies the API's file-path rule
/// (`dagg_model::spec::paths`) and admits only destinations of runs the cluster placed here
/// (`dagg_api::cluster::placement::sink_admission`): a connected peer cannot make this node
/// open a file or a connection no run of its own would.
pub type SinkAdmission = Arc<dyn Fn(&SinkRequest<'_>) -> Result<(), String> + Send + Sync>;

/// Hosts one destination for a run on another node, over `io`; relative paths resolve
/// against `base` (this node's files folder). A destination `admit` refuses is refused
/// before anything opens. Ends when the run's node closes the link.
pub async fn host<S: Io>(io: S, peer: String, base: PathBuf, admit: SinkAdmission) {
    let (tx, mut rx) = link::open::<FromSinkHost, ToSinkHost, _>(io, 2, peer.clone());
    let (pipeline, run_id, mut sink) = match rx.recv().await {
        Ok(ToSinkHost::Open { pipeline, run_id, destination }) => {
            let mut errs = SpecErrors::new();
            let spec = parse_connector(&destination, "destination", Role::Sink, &mut errs);
            let opened = match spec {
                Some(spec) if errs.is_empty() => admit(&SinkRequest { pipeline: &pipeline, run_id: &run_id, destination: &spec })
                    .inspect_err(|e| tracing::warn!(pipeline = %pipeline, run = %run_id, from = %peer, "refused to host a destination: {e}"))
                    .and_then(|()| open_sink(&spec, &base).map_err(|e| e.to_string())),
                _ => Err(format!("the destination does not parse here: {errs}")),
            };
            match opened {
                Ok(s) => (pipeline, run_id, s),
                Err(e) => {
                    let _ = tx.send(&FromSinkHost::Failed(e)).await;
                    return;
                }
            }
        }
        Ok(_) => {
            let _ = tx.send(&FromSinkHost::Failed("the first call was not an opening".into())).await;
            return;
        }
        Err(e) => {
            tracing::warn!("data link: {e}");
            return;
        }
    };
    if tx.send(&FromSinkHost::Opened).await.is_err() {
        return;
    }
    let _counted = Counted::new(&HOSTED);
    tracing::info!(pipeline = %pipeline, run = %run_id, from = %peer, "hosting a destination");
    loop {
        let call = match rx.recv().await {
            Ok(c) => c,
            Err(e) => {
                // The run's node ended the run or went away: what was pre-committed stays.
                tracing::info!(pipeline = %pipeline, run = %run_id, "destination link ended: {}", e.reason);
                return;
            }
        };
        let answer = match call {
            ToSinkHost::Write(records) => sink.write(&records).await.map(FromSinkHost::Written),
            ToSinkHost::PreCommit(epoch) => sink.pre_commit(epoch).await.map(FromSinkHost::PreCommitted),
            ToSinkHost::Commit => sink.commit().await.map(|()| FromSinkHost::Done),
            ToSinkHost::Abort => sink.abort().await.map(|()| FromSinkHost::Done),
            ToSinkHost::Recover { token, epoch } => sink.recover(&token, epoch).await.map(|()| FromSinkHost::Done),
            ToSinkHost::Open { .. } => Err(ConnectorError::Config("a second opening".into())),
        };
        let answer = answer.unwrap_or_else(|e| FromSinkHost::Failed(e.to_string()));
        if tx.send(&answer).await.is_err() {
            return;
        }
    }
}
