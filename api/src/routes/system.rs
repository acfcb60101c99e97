//! `/health`, `/metrics`, the audit log, settings, and the documentation (`/openapi.json`,
//! Swagger UI at `/docs`; `/redoc` serves the same Swagger UI, since no crate ships ReDoc's
//! script for use without the internet).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::AppState;
use crate::auth::{Admin, Viewer};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::list::{Page, Paging, SortKey, Sortable, matches_q};
use crate::meta::{AuditEntry, MetaCommand};
use crate::routes::audit;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(metrics)).routes(routes!(audit_log)).routes(routes!(get_settings, put_settings))
}

/// The documentation: the OpenAPI document and Swagger UI, all served from the binary.
pub fn docs(doc: Json) -> Router<AppState> {
    let doc = Arc::new(serde_json::to_vec(&doc).expect("the document serializes"));
    let ui = |path: &'static str| SwaggerUi::new(path).config(Config::new(["/openapi.json"]));
    Router::new()
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc.as_ref().clone()).into_response() }
            }),
        )
        .merge(ui("/docs"))
        .merge(ui("/redoc"))
}

/// Liveness and readiness.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` (503) when the store fails.
    pub status: String,
    /// The metadata store answers reads and writes.
    pub storage: bool,
    /// This node's Raft role: `leader`, `follower`, `candidate` or `learner`; `standalone`
    /// without a cluster (the API embedded, as in tests).
    pub cluster: String,
    /// The leader this node follows; none during an election or when it is cut off (it then
    /// still serves reads, and writes answer 503).
    pub leader_id: Option<u64>,
    pub version: String,
}

/// Liveness and readiness (no authentication): 200 when the metadata store works, else 503.
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, description = "Ready", body = Health), (status = 503, description = "Not ready", body = Health)))]
async fn health(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    let ok = state.meta.check().is_ok();
    let (cluster, leader_id) = match state.meta.node() {
        Some(n) => (n.state_name().to_string(), n.leader()),
        None => ("standalone".to_string(), None),
    };
    let h = Health { status: if ok { "ok" } else { "unavailable" }.into(), storage: ok, cluster, leader_id, version: env!("CARGO_PKG_VERSION").into() };
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, axum::Json(h))
}

/// Prometheus metrics: the runtime's (records in/out/dead-lettered per pipeline and stage,
/// run and checkpoint durations) and the API's (requests, latency). A personal API key
/// works as the scraper's bearer token.
#[utoipa::path(get, path = "/metrics", tag = "system", security(("bearer" = ["viewer"])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String)))]
async fn metrics(_auth: Viewer) -> ApiResult<Response> {
    // Touch the API's own metrics so they appear before the first request to a route.
    let _ = (&*crate::telemetry::ACTIVE_RUNS, &*crate::telemetry::WS_CLIENTS, &*crate::telemetry::REQUESTS, &*crate::telemetry::LATENCY);
    let families = prometheus::gather();
    let text = prometheus::TextEncoder::new().encode_to_string(&families).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

impl Sortable for AuditEntry {
    const SORT_FIELDS: &'static [&'static str] = &["at", "actor", "action", "resource"];
    fn sort_key(&self, field: &str) -> SortKey {
        match field {
            "actor" => (&self.actor).into(),
            "action" => (&self.action).into(),
            "resource" => (&self.resource).into(),
            _ => self.at.into(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Text in the actor, action, resource or resource id.
    pub q: Option<String>,
    /// A username.
    pub actor: Option<String>,
    /// `create`, `update`, `delete`, `execute`, `login`, …
    pub action: Option<String>,
    /// `pipeline`, `connector`, `user`, …
    pub resource: Option<String>,
    pub resource_id: Option<String>,
    /// Entries at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
}

/// Who changed what, newest first by default.
#[utoipa::path(get, path = "/audit", tag = "system", security(("bearer" = ["admin"])), params(Paging, AuditFilter),
    responses((status = 200, description = "Audit entries", body = Page<AuditEntry>)))]
async fn audit_log(State(state): State<AppState>, _auth: Admin, ApiQuery(paging): ApiQuery<Paging>, ApiQuery(f): ApiQuery<AuditFilter>) -> ApiResult<axum::Json<Page<AuditEntry>>> {
    let items = state
        .meta
        .audit()?
        .into_iter()
        .filter(|e| matches_q(&f.q, &[Some(&e.actor), Some(&e.action), Some(&e.resource), Some(&e.resource_id)]))
        .filter(|e| f.actor.as_ref().is_none_or(|a| &e.actor == a))
        .filter(|e| f.action.as_ref().is_none_or(|a| &e.action == a))
        .filter(|e| f.resource.as_ref().is_none_or(|a| &e.resource == a))
        .filter(|e| f.resource_id.as_ref().is_none_or(|a| &e.resource_id == a))
        .filter(|e| f.since.is_none_or(|t| e.at >= t))
        .collect();
    Ok(axum::Json(paging.apply(items, "-at")?))
}

/// System settings (guide 5.4.2): free-form values by key.
#[utoipa::path(get, path = "/settings", tag = "system", security(("bearer" = ["admin"])),
    responses((status = 200, description = "Settings by key", body = BTreeMap<String, serde_json::Value>)))]
async fn get_settings(State(state): State<AppState>, _auth: Admin) -> ApiResult<axum::Json<BTreeMap<String, Json>>> {
    Ok(axum::Json(crate::mask::masked(&json!(state.meta.public_settings()?.into_iter().collect::<BTreeMap<_, _>>())).as_object().map(|m| m.clone().into_iter().collect()).unwrap_or_default()))
}

/// Sets settings: each key of the body replaces that setting (`null` removes nothing; it
/// stores null). Keys are letters, digits, `_`, `.` and `-`, not starting with `_`. A secret
/// sent back as `GET /settings` showed it (`********`) keeps the stored one; secrets are
/// stored sealed with the master key. `retention` (days each kind of metadata is kept:
/// `sessions_days`, `audit_days`, `run_events_days`, `runs_days`; `null` or 0 keep forever)
/// is checked, and a bad value is a 400 naming the field. `egress` (the admin's allow and
/// deny lists and `s3_ambient_credentials`, see docs/security.md) is checked entry by entry
/// and takes effect on every node.
#[utoipa::path(put, path = "/settings", tag = "system", security(("bearer" = ["admin"])), request_body = BTreeMap<String, serde_json::Value>,
    responses((status = 200, description = "Settings after the change", body = BTreeMap<String, serde_json::Value>)))]
async fn put_settings(State(state): State<AppState>, Admin(p): Admin, ApiJson(body): ApiJson<BTreeMap<String, Json>>) -> ApiResult<axum::Json<BTreeMap<String, Json>>> {
    for k in body.keys() {
        let ok = !k.is_empty() && k.len() <= 100 && !k.starts_with('_') && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(ApiError::field(k, "setting keys are 1 to 100 letters, digits, `_`, `.` or `-`, not starting with `_`"));
        }
    }
    // Every value checked before any is stored.
    if let Some(v) = body.get(dagg_control::retention::SETTING) {
        dagg_control::retention::Retention::parse(v).map_err(|d| ApiError::field(&d.path, d.message))?;
    }
    if let Some(v) = body.get(crate::egress::SETTING) {
        crate::egress::parse(v).map_err(|e| ApiError::field(&e.path, e.message))?;
    }
    let mut values = Vec::with_capacity(body.len());
    for (k, v) in body.iter() {
        let mut v = v.clone();
        if let Some(old) = state.meta.setting(k)? {
            crate::mask::keep_masked(&mut v, &old, k, None)?;
        }
        values.push((k.clone(), crate::notify::sealed_setting(&state, v)));
    }
    for (key, value) in values {
        state.meta.apply(MetaCommand::PutSetting { key, value })?;
    }
    audit(&state, &p, "update", "settings", "", json!({"keys": body.keys().collect::<Vec<_>>()}))?;
    get_settings(State(state), Admin(p)).await
}
