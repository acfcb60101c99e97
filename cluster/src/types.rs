//! The Raft type configuration: node ids are `u64`, a node is known by its peer and API
//! addresses, a log entry carries one application command as JSON, and a snapshot is a
//! file (read and written in chunks, never whole in memory; see [`crate::state_machine`]).
//!
//! The command itself is the application's versioned envelope (the API's
//! `CommandEnvelope`); this crate never looks inside it, so the replicated log is readable
//! JSON and its versioning belongs to the one place that defines the commands.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub type NodeId = u64;

/// How a member is reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// `host:port` of the peer listener (Raft RPC, forwarded writes).
    pub peer_addr: String,
    /// `host:port` of the admin API.
    pub api_addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {} api {}", self.peer_addr, self.api_addr)
    }
}

/// One replicated command: the application's encoded envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request(pub Json);

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.0.get("command").and_then(|c| c.get("op")).and_then(Json::as_str).unwrap_or("?");
        write!(f, "command {op}")
    }
}

/// What applying a command answered (the application's JSON: success or its refusal).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response(pub Json);

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
