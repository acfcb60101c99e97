//! The cluster's routes: `GET /cluster`, `POST /cluster/join`, `DELETE
//! /cluster/members/{id}`. What they show and do is the control plane's
//! ([`dagg_control::cluster`]).

use axum::extract::State;
use axum::http::HeaderMap;
use dagg_control::cluster::{self, ClusterStatus, JoinBody};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Admin, Viewer};
use crate::error::{ApiError, ApiResult};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(cluster_status)).routes(routes!(join)).routes(routes!(remove_member))
}

/// The cluster: this node, the leader, the term, and every member with its addresses,
/// whether it is up (from the leader's heartbeats) and how many runs it has.
#[utoipa::path(get, path = "/cluster", tag = "cluster", security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The cluster as this node sees it", body = ClusterStatus)))]
async fn cluster_status(State(state): State<AppState>, _auth: Viewer) -> ApiResult<axum::Json<ClusterStatus>> {
    Ok(axum::Json(cluster::status(&state.control).await?))
}

/// Adds a node to the cluster: as a learner until it has caught up, then as a voter.
/// `dagg serve --join URL` calls this. Needs an admin, or the cluster token
/// (`DAGG_CLUSTER_TOKEN` on both nodes) in `X-Dagg-Cluster-Token`.
#[utoipa::path(post, path = "/cluster/join", tag = "cluster", security(("bearer" = ["admin"])), request_body = JoinBody,
    responses((status = 200, description = "The node is a voter", body = ClusterStatus), (status = 400, description = "A bad request", body = crate::error::ErrorBody),
        (status = 409, description = "The change was refused (no cluster here, the id is taken, or it did not commit)", body = crate::error::ErrorBody)))]
async fn join(State(state): State<AppState>, headers: HeaderMap, admin: Result<Admin, ApiError>, body: axum::body::Bytes) -> ApiResult<axum::Json<ClusterStatus>> {
    if !cluster_token_ok(&state, &headers) {
        admin?;
    }
    // The body after the caller: a caller without the right gets 401/403 whatever it sent.
    let body: JoinBody = crate::error::parse_json_body(&body)?;
    if state.meta.node().is_none() {
        return Err(ApiError::Conflict("this server runs without a cluster (embedded, not `dagg serve`)".into()));
    }
    if body.node_id == 0 {
        return Err(ApiError::field("node_id", "node ids start at 1"));
    }
    for (field, v) in [("peer_addr", &body.peer_addr), ("api_addr", &body.api_addr)] {
        if v.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
            return Err(ApiError::field(field, format!("`{v}` is not host:port")));
        }
    }
    Ok(axum::Json(cluster::add_member(&state.control, body).await?))
}

/// Removes a member: the majority is then counted without it (do this before scaling a
/// StatefulSet down, for each node that goes). Its unfinished runs move to live members.
/// Needs an admin, or the cluster token in `X-Dagg-Cluster-Token`.
#[utoipa::path(delete, path = "/cluster/members/{id}", tag = "cluster", security(("bearer" = ["admin"])), params(("id" = u64, Path, description = "The node's id")),
    responses((status = 200, description = "The node is no longer a member", body = ClusterStatus), (status = 400, description = "A bad request", body = crate::error::ErrorBody),
        (status = 404, description = "No such member", body = crate::error::ErrorBody),
        (status = 409, description = "The change was refused (no cluster here, the last voter, or it did not commit)", body = crate::error::ErrorBody)))]
async fn remove_member(State(state): State<AppState>, headers: HeaderMap, admin: Result<Admin, ApiError>, crate::error::ApiPath(id): crate::error::ApiPath<String>) -> ApiResult<axum::Json<ClusterStatus>> {
    if !cluster_token_ok(&state, &headers) {
        admin?;
    }
    // The id after the caller: a caller without the right gets 401/403 whatever it sent.
    let id: u64 = id.parse().map_err(|_| ApiError::field("id", format!("`{id}` is not a node id (a whole number from 1)")))?;
    Ok(axum::Json(cluster::remove_member(&state.control, id).await?))
}

/// The request carries the join token or the cluster's peer token in
/// `X-Dagg-Cluster-Token`.
fn cluster_token_ok(state: &AppState, headers: &HeaderMap) -> bool {
    headers.get(cluster::TOKEN_HEADER).and_then(|v| v.to_str().ok()).is_some_and(|got| cluster::cluster_token_ok(&state.control, got))
}
