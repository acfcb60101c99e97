//! Saved connector configurations (guide 5.3, 7.2.3): validated with the pipeline
//! document's connector rules, secrets masked in every answer, and a connection test.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use dagg_model::SpecErrors;
use dagg_model::spec::connector::{ConnectorSpec, Role as ConnRole, parse_connector};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Editor, Viewer};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorDetail};
use crate::list::{Page, Paging, SortKey, Sortable, matches_q};
use crate::mask::{keep_masked_config, masked_config};
use crate::meta::{Connector, MetaCommand};
use crate::routes::{audit, check_name, stamp};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connectors, create_connector))
        .routes(routes!(get_connector, update_connector, delete_connector))
        .routes(routes!(test_connector))
}

/// A connector configuration (secrets masked).
#[derive(Serialize, ToSchema)]
pub struct ConnectorOut {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub connector_type: String,
    #[schema(value_type = Object)]
    pub config: Json,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

impl From<&Connector> for ConnectorOut {
    fn from(c: &Connector) -> Self {
        ConnectorOut {
            id: c.id.clone(),
            name: c.name.clone(),
            description: c.description.clone(),
            connector_type: c.connector_type.clone(),
            config: masked_config(&c.connector_type, &c.config),
            created_at: c.created.at,
            created_by: c.created.by.clone(),
            updated_at: c.updated.at,
            updated_by: c.updated.by.clone(),
        }
    }
}

impl Sortable for ConnectorOut {
    const SORT_FIELDS: &'static [&'static str] = &["name", "connector_type", "created_at", "updated_at"];
    fn sort_key(&self, field: &str) -> SortKey {
        match field {
            "name" => (&self.name).into(),
            "connector_type" => (&self.connector_type).into(),
            "updated_at" => self.updated_at.into(),
            _ => self.created_at.into(),
        }
    }
}

/// A connector to save (guide 5.3.5).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorWrite {
    /// A name for people (default: `config.name`).
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// `file`, … (the connector types this build implements).
    #[schema(min_length = 1, max_length = 100)]
    pub connector_type: String,
    /// The connector's settings, as in a pipeline document.
    #[schema(value_type = Object)]
    pub config: Json,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConnectorFilter {
    /// Text in the name or description.
    pub q: Option<String>,
    pub connector_type: Option<String>,
}

/// Checks a connector configuration on its own (settings of either role allowed).
fn check(state: &AppState, connector_type: &str, config: &Json) -> ApiResult<ConnectorSpec> {
    let doc = json!({"connector_type": connector_type, "config": config});
    let mut errs = SpecErrors::new();
    let spec = parse_connector(&doc, "", ConnRole::Any, &mut errs);
    let Some(spec) = spec.filter(|_| errs.is_empty()) else {
        let details: Vec<ErrorDetail> = errs.iter().map(|e| ErrorDetail { path: e.path.clone(), message: e.message.clone() }).collect();
        return Err(ApiError::validation(format!("the connector has {} error(s)", details.len()), details));
    };
    if state.config.restrict_file_paths {
        for key in dagg_model::spec::paths::file_path_keys(connector_type) {
            if let Some(path) = config.get(*key).and_then(Json::as_str) {
                dagg_model::spec::paths::check_inside_files_folder(path).map_err(|m| ApiError::field(&format!("config.{key}"), m))?;
            }
        }
    }
    Ok(spec)
}

fn load(state: &AppState, id: &str) -> ApiResult<Connector> {
    state.meta.connector(id)?.ok_or_else(|| ApiError::not_found("connector", id))
}

fn name_of(req: &ConnectorWrite) -> ApiResult<String> {
    match (&req.name, req.config.get("name").and_then(Json::as_str)) {
        (Some(n), _) => check_name("name", n),
        (None, Some(n)) => check_name("config.name", n),
        (None, None) => Err(ApiError::field("name", "give a `name` (or `config.name`)")),
    }
}

/// Lists connectors.
#[utoipa::path(get, path = "/connectors", tag = "connectors", security(("bearer" = ["viewer"])), params(Paging, ConnectorFilter),
    responses((status = 200, description = "Connectors", body = Page<ConnectorOut>)))]
async fn list_connectors(State(state): State<AppState>, _auth: Viewer, ApiQuery(paging): ApiQuery<Paging>, ApiQuery(f): ApiQuery<ConnectorFilter>) -> ApiResult<axum::Json<Page<ConnectorOut>>> {
    let items = state
        .meta
        .connectors()?
        .iter()
        .filter(|c| matches_q(&f.q, &[Some(&c.name), c.description.as_deref()]))
        .filter(|c| f.connector_type.as_ref().is_none_or(|t| &c.connector_type == t))
        .map(ConnectorOut::from)
        .collect();
    Ok(axum::Json(paging.apply(items, "name")?))
}

/// Saves a connector configuration.
#[utoipa::path(post, path = "/connectors", tag = "connectors", security(("bearer" = ["editor"])), request_body = ConnectorWrite,
    responses((status = 201, description = "Created", body = ConnectorOut)))]
async fn create_connector(State(state): State<AppState>, Editor(p): Editor, ApiJson(req): ApiJson<ConnectorWrite>) -> ApiResult<(StatusCode, axum::Json<ConnectorOut>)> {
    let name = name_of(&req)?;
    check(&state, &req.connector_type, &req.config)?;
    let mut req = req;
    state.seal_config(&req.connector_type, &mut req.config);
    let st = stamp(&p);
    let c = Connector { id: uuid::Uuid::new_v4().to_string(), name, description: crate::routes::check_description(req.description)?, connector_type: req.connector_type, config: req.config, created: st.clone(), updated: st };
    state.meta.apply(MetaCommand::PutConnector { connector: c.clone() })?;
    audit(&state, &p, "create", "connector", &c.id, json!({"name": c.name, "connector_type": c.connector_type}))?;
    Ok((StatusCode::CREATED, axum::Json(ConnectorOut::from(&c))))
}

/// One connector.
#[utoipa::path(get, path = "/connectors/{id}", tag = "connectors", security(("bearer" = ["viewer"])), params(("id" = String, Path)),
    responses((status = 200, description = "The connector", body = ConnectorOut)))]
async fn get_connector(State(state): State<AppState>, _auth: Viewer, ApiPath(id): ApiPath<String>) -> ApiResult<axum::Json<ConnectorOut>> {
    Ok(axum::Json(ConnectorOut::from(&load(&state, &id)?)))
}

/// Replaces a connector's configuration. Secrets sent back masked keep their stored value.
#[utoipa::path(put, path = "/connectors/{id}", tag = "connectors", security(("bearer" = ["editor"])), params(("id" = String, Path)), request_body = ConnectorWrite,
    responses((status = 200, description = "Changed", body = ConnectorOut)))]
async fn update_connector(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>, ApiJson(mut req): ApiJson<ConnectorWrite>) -> ApiResult<axum::Json<ConnectorOut>> {
    let old = load(&state, &id)?;
    let type_changed = (req.connector_type != old.connector_type).then_some("connector_type");
    keep_masked_config(&req.connector_type, &mut req.config, &old.config, "config", type_changed)?;
    let name = name_of(&req)?;
    check(&state, &req.connector_type, &req.config)?;
    state.seal_config(&req.connector_type, &mut req.config);
    let c = Connector { name, description: crate::routes::check_description(req.description)?, connector_type: req.connector_type, config: req.config, updated: stamp(&p), ..old };
    state.meta.apply(MetaCommand::PutConnector { connector: c.clone() })?;
    audit(&state, &p, "update", "connector", &id, json!({"name": c.name}))?;
    Ok(axum::Json(ConnectorOut::from(&c)))
}

/// Deletes a connector configuration.
#[utoipa::path(delete, path = "/connectors/{id}", tag = "connectors", security(("bearer" = ["editor"])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted")))]
async fn delete_connector(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>) -> ApiResult<StatusCode> {
    let c = load(&state, &id)?;
    state.meta.apply(MetaCommand::DeleteConnector { id: id.clone() })?;
    audit(&state, &p, "delete", "connector", &id, json!({"name": c.name}))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TestQuery {
    /// Test as a `source` (the input must be there) or a `sink` (the destination must be
    /// writable). Default: either.
    #[param(pattern = "^(source|sink)$")]
    pub role: Option<String>,
}

/// The outcome of a connection test.
#[derive(Serialize, ToSchema)]
pub struct TestResult {
    pub ok: bool,
    /// `source`, `sink`, or `any` (no role given: a file need not exist if its folder could hold it).
    pub role: String,
    pub message: String,
}

/// Checks that the connector can work without reading or writing records (a database
/// answers, an endpoint accepts the credentials, a file opens; relative file paths resolve
/// against the server's file folder) and says so, or why not.
#[utoipa::path(post, path = "/connectors/{id}/test", tag = "connectors", security(("bearer" = ["editor"])), params(("id" = String, Path), TestQuery),
    responses((status = 200, description = "The outcome (a failed test is still 200)", body = TestResult)))]
async fn test_connector(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>, ApiQuery(q): ApiQuery<TestQuery>) -> ApiResult<axum::Json<TestResult>> {
    let c = load(&state, &id)?;
    let spec = check(&state, &c.connector_type, &c.config)?;
    let role = match q.role.as_deref() {
        None => ConnRole::Any,
        Some("source") => ConnRole::Source,
        Some("sink") => ConnRole::Sink,
        Some(other) => return Err(ApiError::field("role", format!("`{other}` is neither `source` nor `sink`"))),
    };
    let outcome = dagg_control::data::test_connection(&spec, &state.config.files_dir(), role).await;
    let role = q.role.unwrap_or_else(|| "any".into());
    let (ok, message) = match outcome {
        Ok(m) => (true, m),
        Err(e) => (false, e),
    };
    audit(&state, &p, "test", "connector", &id, json!({"ok": ok, "role": role}))?;
    Ok(axum::Json(TestResult { ok, role, message }))
}
