//! The API's resources, one module each, composed in [`all`].

pub mod analytics;
pub mod auth;
pub mod cluster;
pub mod connectors;
pub mod monitoring;
pub mod orchestration;
pub mod output;
pub mod pipelines;
pub mod runs;
pub mod schemas;
pub mod system;
pub mod transformations;
pub mod users;
pub mod ws;

use chrono::Utc;
use serde_json::Value as Json;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::meta::{AuditEntry, MetaCommand, Stamp};

/// Every documented route.
pub fn all() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::Base::openapi())
        .merge(auth::routes())
        .merge(users::routes())
        .merge(pipelines::routes())
        .merge(runs::routes())
        .merge(connectors::routes())
        .merge(transformations::routes())
        .merge(monitoring::routes())
        .merge(analytics::routes())
        .merge(system::routes())
        .merge(orchestration::routes())
        .merge(schemas::routes())
        .merge(output::routes())
}

/// Now, by this caller.
pub(crate) fn stamp(p: &Principal) -> Stamp {
    Stamp { at: Utc::now(), by: p.user.id.clone() }
}

/// Records who changed what.
pub(crate) fn audit(state: &AppState, p: &Principal, action: &str, resource: &str, resource_id: &str, details: Json) -> ApiResult<()> {
    let entry = AuditEntry {
        id: uuid::Uuid::new_v4().to_string(),
        at: Utc::now(),
        actor_id: p.user.id.clone(),
        actor: p.user.username.clone(),
        action: action.into(),
        resource: resource.into(),
        resource_id: resource_id.into(),
        details,
    };
    state.meta.apply(MetaCommand::AppendAudit { entry })?;
    Ok(())
}

/// A name given by a user: trimmed, not empty, at most 200 characters.
pub(crate) fn check_name(path: &str, name: &str) -> ApiResult<String> {
    let n = name.trim();
    if n.is_empty() {
        return Err(crate::error::ApiError::field(path, "may not be empty"));
    }
    if n.chars().count() > 200 {
        return Err(crate::error::ApiError::field(path, "may have at most 200 characters"));
    }
    Ok(n.to_string())
}

/// An optional description: at most 2000 characters.
pub(crate) fn check_description(d: Option<String>) -> ApiResult<Option<String>> {
    match d {
        Some(d) if d.chars().count() > 2000 => Err(crate::error::ApiError::field("description", "may have at most 2000 characters")),
        d => Ok(d),
    }
}
