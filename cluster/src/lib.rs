//! dagg's cluster: the replicated metadata under openraft.
//!
//! A [`ClusterNode`] runs one Raft member whose log and vote live in sled
//! ([`log_store`]) and whose state machine is the application's store behind the
//! [`Machine`] trait ([`state_machine`]): this crate never looks inside a command. Members
//! talk JSON over HTTP on their peer address ([`network`] sends, [`server`] answers),
//! mutually authenticated ([`peer_auth`]: TLS with certificates from the cluster CA, or a
//! cluster token on a loopback peer port).
//!
//! Writes: [`ClusterNode::write`] on any member; a follower forwards the command to the
//! leader, then waits until its own store has applied it, so a reader on the same node sees
//! its write. A write that cannot be committed (no leader, no quorum) fails after the write
//! timeout instead of waiting forever. Reads are local.
//!
//! Membership: a node alone initializes itself; a static `peers` list is initialized once by
//! the lowest id when every listed node answers and none is initialized yet (a restarted
//! node has a log and never re-bootstraps); a node with `join` asks a running member to add
//! it as a learner, then as a voter.

pub mod log_store;
pub mod memory;
pub mod network;
pub mod data_plane;
pub mod peer_auth;
pub mod server;
pub mod state_machine;
pub mod tls;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub use peer_auth::{PeerAuth, PeerCerts, PeerStream};
pub use state_machine::Machine;
pub use types::{NodeId, PeerNode, Raft, Request, Response};

use crate::log_store::LogStore;
use crate::network::{Liveness, Network};
use crate::state_machine::{SmHandle, StateMachine};

/// How a member runs.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// The Raft log, vote and snapshot (`<data-dir>/raft`).
    pub raft_dir: PathBuf,
    /// How the others reach this node.
    pub advertise: PeerNode,
    /// The source address of outgoing peer connections (the peer listener's address, when
    /// it is a specific one).
    pub bind_ip: Option<IpAddr>,
    /// How long a write may wait to be committed before it fails as unavailable.
    pub write_timeout: Duration,
    pub heartbeat: Duration,
    /// The election timeout is drawn from this range.
    pub election_timeout: (Duration, Duration),
    /// A snapshot every this many log entries.
    pub snapshot_every: u64,
    /// How members prove who they are to each other.
    pub auth: PeerAuth,
}

impl ClusterConfig {
    pub fn new(node_id: NodeId, raft_dir: PathBuf, advertise: PeerNode, auth: PeerAuth) -> ClusterConfig {
        ClusterConfig {
            node_id,
            raft_dir,
            advertise,
            bind_ip: None,
            write_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_millis(200),
            election_timeout: (Duration::from_millis(800), Duration::from_millis(1600)),
            snapshot_every: 5000,
            auth,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Log(#[from] log_store::OpenError),
    #[error("raft snapshot: {0}")]
    Snapshot(String),
    #[error("raft configuration: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot create {path}: {source}")]
    Dir { path: String, source: std::io::Error },
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No leader, no quorum, or the leader did not answer in time: the command may not have
    /// been committed (or, when the leader lost its quorum mid-way, may be later).
    #[error("{0}")]
    Unavailable(String),
}

/// What `/raft/write` answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteReply {
    /// Committed and applied on the leader at `index`.
    Applied { index: u64, response: Json },
    /// This node is not the leader (any more).
    NotLeader { leader: Option<NodeId> },
    Unavailable { message: String },
}

/// What `/raft/info` answers: who a peer is and whether it belongs to a cluster yet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: NodeId,
    pub node: PeerNode,
    pub initialized: bool,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub members: Vec<NodeId>,
    /// Stage instances the node runs now: keyed instances of its own runs, keyed instances
    /// and destinations for other nodes' runs.
    #[serde(default)]
    pub instances: u64,
}

/// A request to add a node (a learner first, then a voter).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub node_id: NodeId,
    pub node: PeerNode,
}

/// One member as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberView {
    pub id: NodeId,
    pub peer_addr: String,
    pub api_addr: String,
    /// A voter (false: a learner still catching up).
    pub voter: bool,
    /// Answered the leader within the liveness window (the leader itself is up).
    pub up: bool,
    /// Milliseconds since it last answered the leader.
    pub last_seen_ms: Option<u64>,
    /// The last log index the leader knows it holds.
    pub matched_index: Option<u64>,
}

/// The leader's view of the members (what `/raft/members` answers).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembersView {
    pub leader_id: NodeId,
    pub term: u64,
    pub members: Vec<MemberView>,
}

/// A member is down when it has not answered the leader for this long.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(2);

/// One Raft member.
pub struct ClusterNode {
    pub id: NodeId,
    pub raft: Raft,
    pub node: PeerNode,
    net: Network,
    started: Instant,
    write_timeout: Duration,
    fresh: bool,
}

impl ClusterNode {
    /// Opens the log and snapshot in `config.raft_dir`, restores `machine` from them and
    /// starts the member (not yet part of any cluster when fresh: see [`Self::bootstrap`],
    /// [`Self::initialize_alone`], [`Self::join`]).
    pub async fn start(config: ClusterConfig, machine: Arc<dyn Machine>) -> Result<Arc<ClusterNode>, StartError> {
        std::fs::create_dir_all(&config.raft_dir).map_err(|source| StartError::Dir { path: config.raft_dir.display().to_string(), source })?;
        let sync = Arc::new(AtomicBool::new(true));
        let log = LogStore::open(&config.raft_dir.join("log"), sync.clone())?;
        let fresh = log.is_fresh();
        let dir = config.raft_dir.clone();
        let sm = tokio::task::spawn_blocking(move || StateMachine::open(&dir, machine)).await.map_err(|e| StartError::Snapshot(e.to_string()))?.map_err(StartError::Snapshot)?;
        let raft_config = Config {
            cluster_name: "dagg".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate().map_err(|e| StartError::Config(e.to_string()))?);
        let client = config.auth.http_client(config.bind_ip).map_err(StartError::Config)?;
        let net = Network { client, auth: config.auth.clone(), liveness: Arc::new(Liveness::default()) };
        let raft = Raft::new(config.node_id, raft_config, net.clone(), log, SmHandle(sm)).await.map_err(|e| StartError::Raft(e.to_string()))?;
        // Appends are flushed one by one unless this node is a cluster of one (see log_store).
        let mut metrics = raft.metrics();
        tokio::spawn(async move {
            loop {
                let members = metrics.borrow().membership_config.nodes().count();
                sync.store(members != 1, Ordering::Relaxed);
                if metrics.changed().await.is_err() {
                    break;
                }
            }
        });
        Ok(Arc::new(ClusterNode { id: config.node_id, raft, node: config.advertise, net, started: Instant::now(), write_timeout: config.write_timeout, fresh }))
    }

    /// Whether this node had no Raft state when it started.
    pub fn was_fresh(&self) -> bool {
        self.fresh
    }

    /// The client for other members' peer ports (with this node's credentials).
    pub fn client(&self) -> &reqwest::Client {
        &self.net.client
    }

    /// How this member authenticates itself and its peers.
    pub fn auth(&self) -> &PeerAuth {
        &self.net.auth
    }

    /// A data-plane link on `path` (`data_plane::KEYED` or `SINK`) to the member whose peer
    /// address is `peer_addr`, with this member's credentials.
    pub async fn data_link(&self, peer_addr: &str, path: &str, timeout: Duration) -> Result<PeerStream, String> {
        data_plane::connect(&self.net.auth, peer_addr, path, self.id, timeout).await
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Every member (voters and learners) with its address.
    pub fn members(&self) -> BTreeMap<NodeId, PeerNode> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config.nodes().map(|(id, n)| (*id, n.clone())).collect()
    }

    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    }

    pub fn applied_index(&self) -> Option<u64> {
        self.raft.metrics().borrow().last_applied.map(|l| l.index)
    }

    /// This node's info for `/raft/info`.
    pub fn info(&self) -> PeerInfo {
        let m = self.raft.metrics();
        let m = m.borrow();
        let members: Vec<NodeId> = m.membership_config.nodes().map(|(id, _)| *id).collect();
        PeerInfo {
            id: self.id,
            node: self.node.clone(),
            initialized: !members.is_empty() || m.vote.leader_id().term > 0,
            leader: m.current_leader,
            term: m.current_term,
            members,
            instances: (dagg_actors::remote_keyed::local_instances() + dagg_actors::remote_keyed::hosted_instances()) as u64,
        }
    }

    /// What the member at `peer_addr` says of itself (`/raft/info`).
    pub async fn peer_info(&self, peer_addr: &str, timeout: Duration) -> Result<PeerInfo, String> {
        let r = self.net.client.get(self.net.auth.url(peer_addr, "/raft/info")).timeout(timeout).send().await.map_err(|e| e.to_string())?;
        r.json().await.map_err(|e| e.to_string())
    }

    /// The members as the leader sees them; `None` when this node is not the leader.
    pub fn members_view(&self) -> Option<MembersView> {
        let m = self.raft.metrics();
        let m = m.borrow();
        if m.state != ServerState::Leader {
            return None;
        }
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        let repl = m.replication.clone().unwrap_or_default();
        let members = m
            .membership_config
            .nodes()
            .map(|(id, n)| {
                let since = if *id == self.id { Some(Duration::ZERO) } else { self.net.liveness.since(*id) };
                MemberView {
                    id: *id,
                    peer_addr: n.peer_addr.clone(),
                    api_addr: n.api_addr.clone(),
                    voter: voters.contains(id),
                    up: since.is_some_and(|s| s < LIVENESS_WINDOW),
                    last_seen_ms: since.map(|s| s.as_millis() as u64),
                    matched_index: if *id == self.id { m.last_log_index } else { repl.get(id).copied().flatten().map(|l| l.index) },
                }
            })
            .collect();
        Some(MembersView { leader_id: self.id, term: m.current_term, members })
    }

    /// The leader's view of the members, asked of the leader when this node is not it.
    pub async fn leader_members_view(&self) -> Result<MembersView, String> {
        if let Some(v) = self.members_view() {
            return Ok(v);
        }
        let leader = self.leader().ok_or("no leader")?;
        let addr = self.members().get(&leader).map(|n| n.peer_addr.clone()).ok_or("the leader is not in the membership")?;
        let resp = self.net.client.get(self.net.auth.url(&addr, "/raft/members")).timeout(Duration::from_secs(1)).send().await.map_err(|e| e.to_string())?;
        let v: Option<MembersView> = resp.json().await.map_err(|e| e.to_string())?;
        v.ok_or_else(|| "the leader stepped down".into())
    }

    /// The members the leader has heard from within the liveness window (this node
    /// included); empty when this node is not the leader, or became it too recently to know.
    pub fn live_members(&self) -> Vec<NodeId> {
        match self.members_view() {
            Some(v) => v.members.into_iter().filter(|m| m.up).map(|m| m.id).collect(),
            None => Vec::new(),
        }
    }

    /// Seconds since this process started the member.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Commits `command` and returns what applying it answered, once this node's store has
    /// applied it too.
    pub async fn write(&self, command: Json) -> Result<Json, WriteError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let mut last_problem = String::from("no leader is known");
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(WriteError::Unavailable(format!(
                    "the cluster did not commit the change within {} s ({last_problem}); node {} cannot reach a quorum",
                    self.write_timeout.as_secs(),
                    self.id
                )));
            }
            match self.leader() {
                Some(l) if l == self.id => match self.write_here(command.clone(), remaining).await {
                    WriteReply::Applied { response, .. } => return Ok(response),
                    WriteReply::NotLeader { .. } => last_problem = "leadership changed".into(),
                    WriteReply::Unavailable { message } => last_problem = message,
                },
                Some(l) => match self.forward(l, &command, remaining).await {
                    Ok(WriteReply::Applied { index, response }) => {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_millis(100));
                        return match self.raft.wait(Some(left)).applied_index_at_least(Some(index), "forwarded write").await {
                            Ok(_) => Ok(response),
                            Err(e) => Err(WriteError::Unavailable(format!("the leader committed the change but node {} did not apply it in time: {e}", self.id))),
                        };
                    }
                    Ok(WriteReply::NotLeader { .. }) => last_problem = format!("node {l} is no longer the leader"),
                    Ok(WriteReply::Unavailable { message }) => last_problem = message,
                    Err(e) => last_problem = format!("cannot reach the leader (node {l}): {e}"),
                },
                None => {}
            }
            let nap = Duration::from_millis(50).min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            tokio::time::sleep(nap).await;
        }
    }

    /// A write on this node as the leader.
    pub async fn write_here(&self, command: Json, timeout: Duration) -> WriteReply {
        match tokio::time::timeout(timeout, self.raft.client_write(Request(command))).await {
            Ok(Ok(r)) => WriteReply::Applied { index: r.log_id.index, response: r.data.0 },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => WriteReply::NotLeader { leader: f.leader_id },
            Ok(Err(e)) => WriteReply::Unavailable { message: e.to_string() },
            Err(_) => WriteReply::Unavailable { message: "not committed in time: no quorum answered".into() },
        }
    }

    async fn forward(&self, leader: NodeId, command: &Json, timeout: Duration) -> Result<WriteReply, String> {
        let addr = self.members().get(&leader).map(|n| n.peer_addr.clone()).ok_or_else(|| format!("node {leader} is not in the membership"))?;
        let resp = self.net.client.post(self.net.auth.url(&addr, "/raft/write")).timeout(timeout).json(command).send().await.map_err(|e| e.to_string())?;
        resp.json().await.map_err(|e| e.to_string())
    }

    /// A node without peers: a cluster of one (initialized once; a restart finds its log).
    pub async fn initialize_alone(&self) -> Result<(), StartError> {
        if self.raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))? {
            return Ok(());
        }
        let mut members = BTreeMap::new();
        members.insert(self.id, self.node.clone());
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(StartError::Raft(e.to_string())),
        }
    }

    /// Static bootstrap from `peers` (id -> peer address, this node included). Runs until
    /// this node belongs to a cluster: the lowest id initializes the membership once every
    /// listed node answers and none belongs to a cluster yet; a node that finds a running
    /// cluster without itself asks to be added.
    pub async fn bootstrap(self: Arc<Self>, peers: BTreeMap<NodeId, String>) {
        let lowest = peers.keys().next().copied();
        loop {
            if !self.members().is_empty() {
                return;
            }
            let mut infos = BTreeMap::new();
            for (id, addr) in &peers {
                if *id == self.id {
                    continue;
                }
                if let Ok(r) = self.net.client.get(self.net.auth.url(addr, "/raft/info")).timeout(Duration::from_secs(1)).send().await
                    && let Ok(info) = r.json::<PeerInfo>().await
                {
                    infos.insert(*id, info);
                }
            }
            if let Some(running) = infos.values().find(|i| i.initialized && !i.members.is_empty()) {
                if !running.members.contains(&self.id) {
                    let req = JoinRequest { node_id: self.id, node: self.node.clone() };
                    let addr = &running.node.peer_addr;
                    match self.net.client.post(self.net.auth.url(addr, "/raft/join")).timeout(Duration::from_secs(70)).json(&req).send().await {
                        Ok(r) => match r.json::<Result<(), String>>().await {
                            Ok(Ok(())) => tracing::info!(node = self.id, "joined the running cluster"),
                            Ok(Err(e)) => tracing::warn!(node = self.id, "joining the running cluster: {e}"),
                            Err(e) => tracing::warn!(node = self.id, "joining the running cluster: {e}"),
                        },
                        Err(e) => tracing::warn!(node = self.id, "joining the running cluster: {e}"),
                    }
                }
                // Else the leader replicates to this node; wait for it.
            } else if infos.len() + 1 == peers.len() && lowest == Some(self.id) {
                let mut members = BTreeMap::new();
                members.insert(self.id, self.node.clone());
                for (id, i) in &infos {
                    if i.id != *id {
                        tracing::error!("the node at {} says it is node {}, but the peers list says {id}", peers[id], i.id);
                        members.clear();
                        break;
                    }
                    members.insert(*id, i.node.clone());
                }
                if !members.is_empty() {
                    match self.raft.initialize(members).await {
                        Ok(()) => tracing::info!(node = self.id, "initialized the cluster of {} nodes", peers.len()),
                        Err(e) => tracing::warn!(node = self.id, "initializing the cluster: {e}"),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Asks the member whose admin API is at `api_url` to add this node, until it is a
    /// member (a restarted node that already is one does nothing). `token` goes in
    /// `X-Dagg-Cluster-Token`; the member then checks this node's peer credentials itself
    /// (its certificate, or the token) before it adds it.
    pub async fn join(self: Arc<Self>, api_url: String, token: Option<String>) {
        let url = format!("{}/cluster/join", api_url.trim_end_matches('/'));
        // The admin API is not a peer port: a client of its own, without the peer TLS roots.
        let client = match reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(2)).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(node = self.id, "joining through {url}: no HTTP client: {e}");
                return;
            }
        };
        // The admin API's body (`POST /cluster/join`), flat.
        let req = serde_json::json!({"node_id": self.id, "peer_addr": self.node.peer_addr, "api_addr": self.node.api_addr});
        loop {
            if self.members().contains_key(&self.id) && self.voters().contains(&self.id) {
                return;
            }
            let mut r = client.post(&url).timeout(Duration::from_secs(70)).json(&req);
            if let Some(t) = &token {
                r = r.header(peer_auth::TOKEN_HEADER, t);
            }
            match r.send().await {
                Ok(resp) if resp.status().is_success() => {
                    tracing::info!(node = self.id, "joined the cluster through {url}");
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    tracing::warn!(node = self.id, "joining through {url}: HTTP {status}: {body}");
                }
                Err(e) => tracing::warn!(node = self.id, "joining through {url}: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Adds a node as a learner, waits for it to catch up, then makes it a voter. On a
    /// follower the request goes to the leader.
    pub async fn add_member(&self, req: JoinRequest) -> Result<(), String> {
        if !self.is_leader() {
            let leader = self.leader().ok_or("no leader is known; try again")?;
            let addr = self.members().get(&leader).map(|n| n.peer_addr.clone()).ok_or("the leader is not in the membership")?;
            let resp = self.net.client.post(self.net.auth.url(&addr, "/raft/join")).timeout(Duration::from_secs(70)).json(&req).send().await.map_err(|e| e.to_string())?;
            return resp.json::<Result<(), String>>().await.map_err(|e| e.to_string())?;
        }
        if req.node_id == 0 {
            return Err("node ids start at 1".into());
        }
        let members = self.members();
        if let Some(n) = members.get(&req.node_id)
            && *n != req.node
        {
            return Err(format!("node {} is already a member with other addresses ({n}); remove it first", req.node_id));
        }
        if !members.contains_key(&req.node_id) {
            // Only a node that answers as the id it claims is added: a wrong address would
            // sit in the membership as a learner that never catches up.
            let info = async {
                let r = self.net.client.get(self.net.auth.url(&req.node.peer_addr, "/raft/info")).timeout(Duration::from_secs(2)).send().await.map_err(|e| e.to_string())?;
                r.json::<PeerInfo>().await.map_err(|e| e.to_string())
            };
            match info.await {
                Ok(i) if i.id == req.node_id => {}
                Ok(i) => return Err(format!("the node at {} is node {}, not {}", req.node.peer_addr, i.id, req.node_id)),
                Err(e) => return Err(format!("cannot reach node {} at its peer address {}: {e}", req.node_id, req.node.peer_addr)),
            }
            match tokio::time::timeout(Duration::from_secs(60), self.raft.add_learner(req.node_id, req.node.clone(), true)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("adding node {} as a learner: {e}", req.node_id)),
                Err(_) => return Err(format!("node {} did not catch up within 60 s", req.node_id)),
            }
        }
        if !self.voters().contains(&req.node_id) {
            let ids: BTreeSet<NodeId> = [req.node_id].into();
            match tokio::time::timeout(Duration::from_secs(30), self.raft.change_membership(ChangeMembers::AddVoterIds(ids), false)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("making node {} a voter: {e}", req.node_id)),
                Err(_) => return Err(format!("making node {} a voter did not commit within 30 s", req.node_id)),
            }
        }
        Ok(())
    }

    /// Removes node `id` from the cluster (a voter or a learner): after this the majority is
    /// counted without it, and it takes no part in elections. Forwarded to the leader. The
    /// last voter cannot be removed. A removed leader steps down once the change commits.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), String> {
        if !self.is_leader() {
            let leader = self.leader().ok_or("no leader is known; try again")?;
            let addr = self.members().get(&leader).map(|n| n.peer_addr.clone()).ok_or("the leader is not in the membership")?;
            let resp = self.net.client.post(self.net.auth.url(&addr, "/raft/leave")).timeout(Duration::from_secs(40)).json(&id).send().await.map_err(|e| e.to_string())?;
            return resp.json::<Result<(), String>>().await.map_err(|e| e.to_string())?;
        }
        if !self.members().contains_key(&id) {
            return Err(format!("node {id} is not a member"));
        }
        let voters = self.voters();
        let ids: BTreeSet<NodeId> = [id].into();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(format!("node {id} is the last voter; a cluster cannot remove its last voter"));
            }
            ChangeMembers::RemoveVoters(ids)
        } else {
            ChangeMembers::RemoveNodes(ids)
        };
        match tokio::time::timeout(Duration::from_secs(30), self.raft.change_membership(change, false)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("removing node {id}: {e}")),
            Err(_) => Err(format!("removing node {id} did not commit within 30 s")),
        }
    }

    /// Stops the member (pending writes fail).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    /// Whether the state of this node is a Raft leader in a term; for diagnostics.
    pub fn state_name(&self) -> &'static str {
        match self.raft.metrics().borrow().state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        }
    }
}
