//! The peer listener's routes: Raft RPC (`/raft/append`, `/raft/vote`, `/raft/snapshot`),
//! forwarded writes (`/raft/write`), membership (`/raft/info`, `/raft/join`, `/raft/leave`,
//! `/raft/members`); the data plane's links are [`crate::data_plane::router`]'s.
//! Kept apart from the admin API: the peer port belongs on a private
//! network between the nodes, and every request on it is authenticated ([`serve`]).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde_json::Value;

use crate::types::{NodeId, TypeConfig};
use crate::{ClusterNode, JoinRequest, MembersView, PeerInfo, WriteReply};

type S = State<Arc<ClusterNode>>;

/// Serves the peer routes and the data plane's on `listener` until dropped, each request
/// behind the member's peer authentication (see [`crate::peer_auth`]).
pub async fn serve(node: Arc<ClusterNode>, listener: tokio::net::TcpListener, files_dir: PathBuf, admit: dagg_actors::remote_sink::SinkAdmission) -> std::io::Result<()> {
    let auth = node.auth().clone();
    let routes = router(node).merge(crate::data_plane::router(files_dir, admit));
    auth.serve(listener, routes).await
}

pub fn router(node: Arc<ClusterNode>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/write", post(write))
        .route("/raft/info", get(info))
        .route("/raft/join", post(join))
        .route("/raft/leave", post(leave))
        .route("/raft/members", get(members))
        .layer(DefaultBodyLimit::max(256 * 1024 * 1024))
        .with_state(node)
}

async fn append(State(n): S, Json(req): Json<AppendEntriesRequest<TypeConfig>>) -> Json<Value> {
    let r = n.raft.append_entries(req).await;
    Json(serde_json::to_value(r).unwrap_or(Value::Null))
}

async fn vote(State(n): S, Json(req): Json<VoteRequest<NodeId>>) -> Json<Value> {
    let r = n.raft.vote(req).await;
    Json(serde_json::to_value(r).unwrap_or(Value::Null))
}

async fn snapshot(State(n): S, Json(req): Json<InstallSnapshotRequest<TypeConfig>>) -> Json<Value> {
    let r = n.raft.install_snapshot(req).await;
    Json(serde_json::to_value(r).unwrap_or(Value::Null))
}

async fn write(State(n): S, Json(command): Json<Value>) -> Json<WriteReply> {
    if !n.is_leader() {
        return Json(WriteReply::NotLeader { leader: n.leader() });
    }
    Json(n.write_here(command, n.write_timeout).await)
}

async fn info(State(n): S) -> Json<PeerInfo> {
    Json(n.info())
}

async fn leave(State(n): S, Json(id): Json<NodeId>) -> Json<Result<(), String>> {
    Json(n.remove_member(id).await)
}

async fn join(State(n): S, Json(req): Json<JoinRequest>) -> Json<Result<(), String>> {
    Json(n.add_member(req).await)
}

async fn members(State(n): S) -> Json<Option<MembersView>> {
    Json(n.members_view())
}
