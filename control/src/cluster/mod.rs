//! The control plane in a cluster: the metadata store behind Raft, the cluster's status and
//! membership changes (what `GET /cluster` and `POST /cluster/join` answer), and where runs
//! are placed ([`placement`]).
//!
//! [`Meta`] is what handlers hold as `state.meta`: reads go to the local [`MetaStore`]
//! (through `Deref`), and [`Meta::apply`] keeps the signature every route uses. Without a
//! cluster it writes to the local store. In a cluster it submits the command through Raft
//! (a follower forwards it to the leader) and returns once this node's store has applied
//! it, so a handler reads its own write; the handler's worker thread blocks meanwhile
//! (`block_in_place`), which needs the multi-thread runtime `dagg serve` runs on. A write
//! that cannot be committed — no leader, or this node cut off from the quorum — fails after
//! the write timeout with [`MetaError::Unavailable`] (503), never hangs.

pub mod placement;

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

pub use dagg_cluster::{ClusterNode, LIVENESS_WINDOW, Machine};
use dagg_cluster::{JoinRequest, PeerNode};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use tokio::sync::Notify;
use utoipa::ToSchema;

use crate::{ControlError, ControlPlane, ControlResult};
use crate::meta::{CommandEnvelope, LEGACY_ASSIGN_PREFIX, MetaCommand, MetaError, MetaResult, MetaStore};

/// The metadata as handlers see it: local reads, writes through Raft in a cluster.
pub struct Meta {
    store: Arc<MetaStore>,
    node: Option<Arc<ClusterNode>>,
    handle: Option<tokio::runtime::Handle>,
    /// Woken after every applied command that changes run placement.
    pub placement_changed: Arc<Notify>,
}

impl Deref for Meta {
    type Target = MetaStore;
    fn deref(&self) -> &MetaStore {
        &self.store
    }
}

impl Meta {
    /// A store on this node alone, written directly.
    pub fn local(store: MetaStore) -> Meta {
        Meta { store: Arc::new(store), node: None, handle: None, placement_changed: Arc::new(Notify::new()) }
    }

    /// A store replicated by `node` (whose state machine is `store`, see [`MetaMachine`]).
    pub fn replicated(store: Arc<MetaStore>, node: Arc<ClusterNode>, placement_changed: Arc<Notify>) -> Meta {
        Meta { store, node: Some(node), handle: tokio::runtime::Handle::try_current().ok(), placement_changed }
    }

    /// The Raft member, in a cluster.
    pub fn node(&self) -> Option<&Arc<ClusterNode>> {
        self.node.as_ref()
    }

    pub fn store(&self) -> &Arc<MetaStore> {
        &self.store
    }

    /// Applies one command: locally, or committed through the cluster and applied here.
    pub fn apply(&self, cmd: MetaCommand) -> MetaResult<()> {
        let Some(node) = &self.node else { return self.store.apply(cmd) };
        let env = serde_json::to_value(CommandEnvelope::new(cmd)).map_err(|e| MetaError::Decode(e.to_string()))?;
        let node = node.clone();
        let answer = self.block_on(async move { node.write(env).await })?.map_err(|e| MetaError::Unavailable(e.to_string()))?;
        answer_to_result(&answer)
    }

    fn block_on<F: Future + Send>(&self, f: F) -> MetaResult<F::Output>
    where
        F::Output: Send,
    {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread => {
                Err(MetaError::Unavailable("a cluster write needs the multi-thread runtime".into()))
            }
            Ok(h) => Ok(tokio::task::block_in_place(|| h.block_on(f))),
            Err(_) => match &self.handle {
                Some(h) => Ok(h.block_on(f)),
                None => Err(MetaError::Unavailable("a cluster write outside the runtime".into())),
            },
        }
    }
}

/// What applying a command answered, as it travels in the Raft log's responses.
fn result_to_answer(r: &MetaResult<()>) -> Json {
    match r {
        Ok(()) => json!({"ok": true}),
        Err(MetaError::NotFound { kind, id }) => json!({"error": "not_found", "kind": kind, "id": id}),
        Err(MetaError::Conflict(m)) => json!({"error": "conflict", "message": m}),
        Err(MetaError::IllegalTransition { from, to }) => json!({"error": "illegal_transition", "from": from, "to": to}),
        Err(e) => json!({"error": "storage", "message": e.to_string()}),
    }
}

fn answer_to_result(a: &Json) -> MetaResult<()> {
    let text = |k: &str| a.get(k).and_then(Json::as_str).unwrap_or_default().to_string();
    match a.get("error").and_then(Json::as_str) {
        None => Ok(()),
        Some("not_found") => {
            const KINDS: &[&str] = &["user", "session", "api key", "connector", "transformation", "pipeline", "run", "version"];
            let kind = KINDS.iter().find(|k| **k == text("kind")).copied().unwrap_or("item");
            Err(MetaError::NotFound { kind, id: text("id") })
        }
        Some("conflict") => Err(MetaError::Conflict(text("message"))),
        Some("illegal_transition") => match (serde_json::from_value(a["from"].clone()), serde_json::from_value(a["to"].clone())) {
            (Ok(from), Ok(to)) => Err(MetaError::IllegalTransition { from, to }),
            _ => Err(MetaError::Conflict(format!("a run cannot go from `{}` to `{}`", a["from"], a["to"]))),
        },
        Some(_) => Err(MetaError::Decode(text("message"))),
    }
}

/// The metadata store as the Raft state machine.
pub struct MetaMachine {
    pub store: Arc<MetaStore>,
    pub placement_changed: Arc<Notify>,
}

impl Machine for MetaMachine {
    fn apply(&self, command: &Json) -> Json {
        let env: CommandEnvelope = match CommandEnvelope::decode(command.to_string().as_bytes()) {
            Ok(e) => e,
            Err(e) => return json!({"error": "decode", "message": e}),
        };
        let placement = match &env.command {
            // An assignment as a build before `AssignRun` wrote it.
            MetaCommand::PutSetting { key, .. } => key.starts_with(LEGACY_ASSIGN_PREFIX),
            MetaCommand::AssignRun { .. } | MetaCommand::CreateRun { .. } | MetaCommand::UpdateRun { .. } => true,
            _ => false,
        };
        let r = self.store.apply(env.command);
        if placement {
            self.placement_changed.notify_waiters();
        }
        result_to_answer(&r)
    }

    fn dump(&self, out: &mut dyn std::io::Write) -> Result<(), String> {
        self.store.dump(out).map_err(|e| e.to_string())
    }

    fn restore(&self, input: Option<&mut dyn std::io::BufRead>) -> Result<(), String> {
        self.store.restore(input).map_err(|e| e.to_string())
    }

    fn restore_legacy(&self, dump: &Json) -> Result<(), String> {
        self.store.restore_legacy(dump).map_err(|e| e.to_string())
    }
}

/// The cluster as `GET /cluster` shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: u64,
    /// The leader's id; none during an election or when this node is cut off.
    pub leader_id: Option<u64>,
    /// The Raft term this node is in.
    pub term: u64,
    /// This node's role: `leader`, `follower`, `candidate`, `learner`, or `standalone`
    /// (no cluster: `dagg serve` embedded without Raft, as in tests).
    pub state: String,
    /// Where `up` comes from: `leader` (the leader's heartbeats) or `local` (the leader could
    /// not be asked; only this node is known to be up).
    pub view: String,
    pub members: Vec<ClusterMember>,
}

/// One member of the cluster.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ClusterMember {
    pub id: u64,
    /// `host:port` of its peer listener (Raft RPC).
    pub peer_addr: String,
    /// `host:port` of its admin API.
    pub api_addr: String,
    /// A voter; false: a learner still catching up.
    pub voter: bool,
    /// It answered the leader's heartbeats within the last 2 s.
    pub up: bool,
    /// Milliseconds since it last answered the leader.
    pub last_seen_ms: Option<u64>,
    /// Runs placed on it that have not ended.
    pub runs: u64,
    /// Stage instances it runs now: keyed instances of its own runs, keyed instances and
    /// destinations for runs of other nodes; none when it is not up or could not be asked.
    pub instances: Option<u64>,
}

/// What `POST /cluster/join` takes: the node asking to be added.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    /// Its id (1 or more, unique in the cluster).
    pub node_id: u64,
    /// `host:port` others reach its peer listener at.
    pub peer_addr: String,
    /// `host:port` of its admin API.
    pub api_addr: String,
}

/// The status `GET /cluster` answers.
pub async fn status(state: &ControlPlane) -> ControlResult<ClusterStatus> {
    let load = placement::load(&state.meta)?;
    let runs_on = |id: u64| load.get(&id).copied().unwrap_or(0);
    let Some(node) = state.meta.node() else {
        return Ok(ClusterStatus {
            node_id: 1,
            leader_id: Some(1),
            term: 0,
            state: "standalone".into(),
            view: "local".into(),
            members: vec![ClusterMember {
                id: 1,
                peer_addr: String::new(),
                api_addr: String::new(),
                voter: true,
                up: true,
                last_seen_ms: Some(0),
                runs: runs_on(1),
                instances: Some((dagg_actors::remote_keyed::local_instances() + dagg_actors::remote_keyed::hosted_instances()) as u64),
            }],
        });
    };
    let (view, members) = match node.leader_members_view().await {
        Ok(v) => (
            "leader",
            v.members
                .into_iter()
                .map(|m| ClusterMember {
                    id: m.id,
                    runs: runs_on(m.id),
                    peer_addr: m.peer_addr,
                    api_addr: m.api_addr,
                    voter: m.voter,
                    up: m.up,
                    last_seen_ms: m.last_seen_ms,
                    instances: None,
                })
                .collect(),
        ),
        Err(e) => {
            tracing::debug!("the leader's view of the members: {e}");
            let voters = node.voters();
            let members = node
                .members()
                .into_iter()
                .map(|(id, n)| ClusterMember {
                    id,
                    runs: runs_on(id),
                    peer_addr: n.peer_addr,
                    api_addr: n.api_addr,
                    voter: voters.contains(&id),
                    up: id == node.id,
                    last_seen_ms: (id == node.id).then_some(0),
                    instances: None,
                })
                .collect();
            ("local", members)
        }
    };
    // Each member's instances, from the member itself (asked at once, briefly; a member
    // not known to be up is not asked).
    let mut members: Vec<ClusterMember> = members;
    let asks = members.iter().map(|m| {
        let (node, id, addr, up) = (node.clone(), m.id, m.peer_addr.clone(), m.up);
        async move {
            if id == node.id {
                return Some(node.info().instances);
            }
            if !up {
                return None;
            }
            node.peer_info(&addr, std::time::Duration::from_millis(500)).await.ok().map(|i| i.instances)
        }
    });
    let counts = futures_util::future::join_all(asks).await;
    for (m, c) in members.iter_mut().zip(counts) {
        m.instances = c;
    }
    // The leader and term of the view, so that they agree with its members.
    Ok(ClusterStatus { node_id: node.id, leader_id: node.leader(), term: node.term(), state: node.state_name().into(), view: view.into(), members })
}


/// Adds a node to the cluster: as a learner until it has caught up, then as a voter.
/// [`ControlError::Conflict`] without a cluster, or when the change does not commit.
pub async fn add_member(state: &ControlPlane, body: JoinBody) -> ControlResult<ClusterStatus> {
    let Some(node) = state.meta.node() else {
        return Err(ControlError::Conflict("this server runs without a cluster (embedded, not `dagg serve`)".into()));
    };
    let req = JoinRequest { node_id: body.node_id, node: PeerNode { peer_addr: body.peer_addr, api_addr: body.api_addr } };
    node.add_member(req).await.map_err(ControlError::Conflict)?;
    status(state).await
}

/// Removes a member: the majority is then counted without it; its unfinished runs move to
/// live members.
pub async fn remove_member(state: &ControlPlane, id: u64) -> ControlResult<ClusterStatus> {
    let Some(node) = state.meta.node() else {
        return Err(ControlError::Conflict("this server runs without a cluster (embedded, not `dagg serve`)".into()));
    };
    if !node.members().contains_key(&id) {
        return Err(ControlError::NotFound(format!("node {id} is not a member of the cluster")));
    }
    node.remove_member(id).await.map_err(ControlError::Conflict)?;
    status(state).await
}

/// The header a member (or a node asking to join) sends its token in.
pub const TOKEN_HEADER: &str = dagg_cluster::peer_auth::TOKEN_HEADER;

/// Whether `got` (from [`TOKEN_HEADER`]) is the join token (`DAGG_CLUSTER_TOKEN`, when
/// set) or the peer token of a cluster in the token mode (the one a member sends on its
/// peer port).
pub fn cluster_token_ok(state: &ControlPlane, got: &str) -> bool {
    if state.meta.node().is_some_and(|n| n.auth().accepts_token(got)) {
        return true;
    }
    match std::env::var("DAGG_CLUSTER_TOKEN").ok().filter(|t| !t.is_empty()) {
        Some(want) => sha256_hex(&want) == sha256_hex(got),
        None => false,
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}
