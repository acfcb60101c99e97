//! Raft RPC to other members: JSON over HTTP (HTTPS with the cluster's certificates, else
//! with the cluster token) to their peer address (`/raft/*`), one pooled client per node. Every answered RPC is remembered per target: on the leader, which sends
//! heartbeats to every member, that is the members' liveness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{NodeId, PeerNode, TypeConfig};

/// When each member last answered this node.
#[derive(Default)]
pub struct Liveness {
    last_ok: Mutex<HashMap<NodeId, Instant>>,
}

impl Liveness {
    pub fn saw(&self, id: NodeId) {
        self.last_ok.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Instant::now());
    }

    /// How long ago `id` last answered, if ever.
    pub fn since(&self, id: NodeId) -> Option<Duration> {
        self.last_ok.lock().unwrap_or_else(|e| e.into_inner()).get(&id).map(|t| t.elapsed())
    }
}

#[derive(Clone)]
pub struct Network {
    pub client: reqwest::Client,
    pub auth: crate::PeerAuth,
    pub liveness: Arc<Liveness>,
}

pub struct Connection {
    net: Network,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Connection {
        Connection { net: self.clone(), target, addr: node.peer_addr.clone() }
    }
}

impl Connection {
    async fn call<Req, Resp, Err>(&self, path: &str, req: &Req, timeout: Duration) -> Result<Resp, RPCError<NodeId, PeerNode, RaftError<NodeId, Err>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        Err: std::error::Error + DeserializeOwned,
    {
        let url = self.net.auth.url(&self.addr, &format!("/raft/{path}"));
        let resp = self.net.client.post(&url).timeout(timeout).json(req).send().await.map_err(|e| {
            if e.is_connect() { RPCError::Unreachable(Unreachable::new(&e)) } else { RPCError::Network(NetworkError::new(&e)) }
        })?;
        if !resp.status().is_success() {
            let e = std::io::Error::other(format!("{url}: HTTP {}", resp.status()));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let r: Result<Resp, RaftError<NodeId, Err>> = resp.json().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.net.liveness.saw(self.target);
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        self.call("append", &req, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>> {
        self.call("snapshot", &req, option.hard_ttl()).await
    }

    async fn vote(&mut self, req: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        self.call("vote", &req, option.hard_ttl()).await
    }
}
