//! Pipelines (guide 5.1, 7.2.2): the pipeline document (`spec/pipeline.md`) is the body of
//! create and update, validated with every error's path; every change is a new version
//! (who, when, why), with diff, rollback, clone, pause/resume, execute, dry run and the run
//! history.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use dagg_control::validate::summary_of;
use dagg_control::{ControlError, Trigger};
use dagg_model::spec::pipeline::PipelineSpec;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Editor, Principal, Viewer};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, ErrorDetail};
use crate::list::{Page, Paging, SortKey, Sortable, matches_q};
use crate::mask::{keep_masked_document, masked, masked_document};
use crate::meta::{MetaCommand, Pipeline, PipelineVersion, Stamp};
use crate::routes::runs::{RunFilter, RunOut};
use crate::routes::{audit, stamp};

/// A pipeline document: a JSON object (anything else is 422).
type JsonObject = serde_json::Map<String, Json>;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pipelines, create_pipeline))
        .routes(routes!(validate_pipeline))
        .routes(routes!(get_pipeline, update_pipeline, delete_pipeline))
        .routes(routes!(list_versions))
        .routes(routes!(get_version))
        .routes(routes!(diff_versions))
        .routes(routes!(rollback))
        .routes(routes!(clone_pipeline))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(execute))
        .routes(routes!(dry_run))
        .routes(routes!(pipeline_runs))
}

/// A pipeline's summary.
#[derive(Serialize, ToSchema)]
pub struct PipelineOut {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// The current version.
    pub version: u32,
    /// Scheduled runs are skipped while paused.
    pub paused: bool,
    pub source_type: String,
    pub destination_types: Vec<String>,
    /// `manual` or `cron`.
    pub schedule_type: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

impl From<&Pipeline> for PipelineOut {
    fn from(p: &Pipeline) -> Self {
        PipelineOut {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            version: p.version,
            paused: p.paused,
            source_type: p.source_type.clone(),
            destination_types: p.destination_types.clone(),
            schedule_type: p.schedule_type.clone(),
            created_at: p.created.at,
            created_by: p.created.by.clone(),
            updated_at: p.updated.at,
            updated_by: p.updated.by.clone(),
        }
    }
}

impl Sortable for Pipeline {
    const SORT_FIELDS: &'static [&'static str] = &["name", "created_at", "updated_at", "version", "source_type", "paused"];
    fn sort_key(&self, field: &str) -> SortKey {
        match field {
            "name" => (&self.name).into(),
            "updated_at" => self.updated.at.into(),
            "version" => self.version.into(),
            "source_type" => (&self.source_type).into(),
            "paused" => self.paused.into(),
            _ => self.created.at.into(),
        }
    }
}

/// A pipeline with its current document (secrets masked) and its latest run.
#[derive(Serialize, ToSchema)]
pub struct PipelineDetail {
    #[serde(flatten)]
    pub pipeline: PipelineOut,
    /// The pipeline document of the current version.
    #[schema(value_type = Object)]
    pub document: Json,
    pub last_run: Option<RunOut>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PipelineFilter {
    /// Text in the name or description.
    pub q: Option<String>,
    pub paused: Option<bool>,
    /// The source's `connector_type`.
    pub source_type: Option<String>,
    /// `manual` or `cron`.
    pub schedule_type: Option<String>,
}

/// The result of validating a document.
#[derive(Serialize, ToSchema)]
pub struct ValidationResult {
    pub valid: bool,
    pub errors: Vec<ErrorDetail>,
}

/// One version of a pipeline.
#[derive(Serialize, ToSchema)]
pub struct VersionOut {
    pub version: u32,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// Why it was made: `created`, `updated`, `rollback to version 2`, …
    pub comment: String,
    /// The document (secrets masked); only when one version is asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub document: Option<Json>,
}

impl VersionOut {
    fn new(v: &PipelineVersion, with_doc: bool) -> VersionOut {
        VersionOut { version: v.version, created_at: v.created.at, created_by: v.created.by.clone(), comment: v.comment.clone(), document: with_doc.then(|| masked_document(&v.document)) }
    }
}

impl Sortable for VersionOut {
    const SORT_FIELDS: &'static [&'static str] = &["version", "created_at"];
    fn sort_key(&self, field: &str) -> SortKey {
        match field {
            "created_at" => self.created_at.into(),
            _ => self.version.into(),
        }
    }
}

/// One difference between two documents.
#[derive(Serialize, ToSchema, Debug, PartialEq)]
pub struct Change {
    /// Where: `source.config.path`, `transformations[1]`.
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub op: String,
    /// The value before (absent when added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Json>,
    /// The value after (absent when removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Json>,
}

#[derive(Serialize, ToSchema)]
pub struct DiffOut {
    pub from: u32,
    pub to: u32,
    pub changes: Vec<Change>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The older version (default: the one before `to`).
    #[param(minimum = 1)]
    pub from: Option<u32>,
    /// The newer version (default: the current one).
    #[param(minimum = 1)]
    pub to: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version whose document becomes the new current version.
    #[schema(minimum = 1)]
    pub version: u32,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CloneRequest {
    /// The copy's name (default: `<name> (copy)`).
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// Output records to show, 1 to 1000 (default 20).
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Also give each output record's source position (`lineage`).
    #[serde(default)]
    pub lineage: bool,
}

/// A rejected record seen by a dry run.
#[derive(Serialize, ToSchema)]
pub struct RejectedOut {
    /// `source`, `transformations[2]`, …
    pub stage: String,
    pub reason: String,
    /// Where it came from (`{"file", "line"}`).
    pub position: Json,
    /// The record as it was when it failed (absent for input that could not be parsed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<Json>,
    /// The raw input that could not be parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// What a pipeline would deliver, with nothing written anywhere.
#[derive(Serialize, ToSchema)]
pub struct DryRunOut {
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Json>,
    pub rejected: Vec<RejectedOut>,
    /// Records read from the source to produce these.
    pub records_read: u64,
    pub records_out: u64,
    pub rejected_count: u64,
    /// With `lineage: true`: where each output record came from (`output` indexes
    /// `records`); null when the transformations are stateful (an output comes from many
    /// inputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Option<Vec<crate::lineage::RecordLineage>>>,
}

fn load(state: &AppState, id: &str) -> ApiResult<Pipeline> {
    state.meta.pipeline(id)?.ok_or_else(|| ApiError::not_found("pipeline", id))
}

fn current_doc(state: &AppState, p: &Pipeline) -> ApiResult<Json> {
    state.meta.version(&p.id, p.version)?.map(|v| v.document).ok_or_else(|| ApiError::internal(format!("pipeline {} lacks version {}", p.id, p.version)))
}

fn validated(state: &AppState, doc: &Json) -> ApiResult<PipelineSpec> {
    Ok(state.control.validate(doc).map_err(ControlError::invalid)?)
}

fn detail(state: &AppState, p: &Pipeline) -> ApiResult<PipelineDetail> {
    let doc = current_doc(state, p)?;
    let last_run = state.meta.runs_of(&p.id)?.pop().map(|r| RunOut::new(state, r));
    Ok(PipelineDetail { pipeline: PipelineOut::from(p), document: masked_document(&doc), last_run })
}

fn create_from(state: &AppState, who: &Principal, mut doc: Json, comment: String) -> ApiResult<Pipeline> {
    let spec = validated(state, &doc)?;
    crate::scheduler::check_dependencies(state, &spec, None)?;
    state.seal_document(&mut doc);
    let s = summary_of(&spec);
    let st = stamp(who);
    let p = Pipeline {
        id: uuid::Uuid::new_v4().to_string(),
        name: s.name,
        description: s.description,
        version: 1,
        paused: false,
        source_type: s.source_type,
        destination_types: s.destination_types,
        schedule_type: s.schedule_type,
        created: st.clone(),
        updated: st,
    };
    state.meta.apply(MetaCommand::CreatePipeline { pipeline: p.clone(), document: doc, comment })?;
    Ok(p)
}

fn new_version(state: &AppState, who: &Principal, p: &Pipeline, mut doc: Json, comment: String) -> ApiResult<Pipeline> {
    let spec = validated(state, &doc)?;
    crate::scheduler::check_dependencies(state, &spec, Some(&p.id))?;
    state.seal_document(&mut doc);
    state.meta.apply(MetaCommand::UpdatePipeline { id: p.id.clone(), summary: summary_of(&spec), document: doc, stamp: stamp(who), comment })?;
    load(state, &p.id)
}

/// Lists pipelines.
#[utoipa::path(get, path = "/pipelines", tag = "pipelines", security(("bearer" = ["viewer"])), params(Paging, PipelineFilter),
    responses((status = 200, description = "Pipelines", body = Page<PipelineOut>)))]
async fn list_pipelines(State(state): State<AppState>, _auth: Viewer, ApiQuery(paging): ApiQuery<Paging>, ApiQuery(f): ApiQuery<PipelineFilter>) -> ApiResult<axum::Json<Page<PipelineOut>>> {
    let all = state.meta.pipelines()?;
    let items: Vec<&Pipeline> = all
        .iter()
        .filter(|p| matches_q(&f.q, &[Some(&p.name), p.description.as_deref()]))
        .filter(|p| f.paused.is_none_or(|x| p.paused == x))
        .filter(|p| f.source_type.as_ref().is_none_or(|t| &p.source_type == t))
        .filter(|p| f.schedule_type.as_ref().is_none_or(|t| &p.schedule_type == t))
        .collect();
    // Sorted and cut on the stored summaries; only the page is converted.
    Ok(axum::Json(paging.apply(items, "-created_at")?.map(PipelineOut::from)))
}

/// Creates a pipeline from a pipeline document (`spec/pipeline.md`). An invalid document
/// is refused with 400 and every error's `path` and `message` in `details`.
#[utoipa::path(post, path = "/pipelines", tag = "pipelines", security(("bearer" = ["editor"])),
    request_body(content = Object, description = "The pipeline document", example = json!({
        "name": "completed orders",
        "source": {"connector_type": "file", "config": {"path": "orders.jsonl", "format": "jsonl"}},
        "transformations": [
            {"type": "field_mapping", "field_name": "product_name", "operation": "title_case"},
            {"type": "record_filter", "condition": {"field": "status", "operator": "equals", "value": "completed"}}
        ],
        "destination": {"connector_type": "file", "config": {"path": "out/completed.jsonl", "format": "jsonl"}},
        "error_handling": {"dead_letter": {"connector_type": "file", "config": {"path": "out/dead.jsonl", "format": "jsonl"}}}
    })),
    responses((status = 201, description = "Created", body = PipelineDetail)))]
async fn create_pipeline(State(state): State<AppState>, Editor(p): Editor, ApiJson(doc): ApiJson<JsonObject>) -> ApiResult<(StatusCode, axum::Json<PipelineDetail>)> {
    let pipe = create_from(&state, &p, Json::Object(doc), "created".into())?;
    audit(&state, &p, "create", "pipeline", &pipe.id, json!({"name": pipe.name}))?;
    Ok((StatusCode::CREATED, axum::Json(detail(&state, &pipe)?)))
}

/// Validates a pipeline document without saving it.
#[utoipa::path(post, path = "/pipelines/validate", tag = "pipelines", security(("bearer" = ["editor"])),
    request_body(content = Object, description = "The pipeline document"),
    responses((status = 200, description = "Whether it is valid, and every error", body = ValidationResult)))]
async fn validate_pipeline(State(state): State<AppState>, _auth: Editor, ApiJson(doc): ApiJson<JsonObject>) -> axum::Json<ValidationResult> {
    match state.control.validate(&Json::Object(doc)) {
        Ok(_) => axum::Json(ValidationResult { valid: true, errors: Vec::new() }),
        Err(errors) => axum::Json(ValidationResult { valid: false, errors }),
    }
}

/// One pipeline with its current document and latest run.
#[utoipa::path(get, path = "/pipelines/{id}", tag = "pipelines", security(("bearer" = ["viewer"])), params(("id" = String, Path)),
    responses((status = 200, description = "The pipeline", body = PipelineDetail)))]
async fn get_pipeline(State(state): State<AppState>, _auth: Viewer, ApiPath(id): ApiPath<String>) -> ApiResult<axum::Json<PipelineDetail>> {
    Ok(axum::Json(detail(&state, &load(&state, &id)?)?))
}

/// Replaces a pipeline's document, making a new version (unless nothing changed). Secrets
/// sent back masked keep their stored value.
#[utoipa::path(put, path = "/pipelines/{id}", tag = "pipelines", security(("bearer" = ["editor"])), params(("id" = String, Path)),
    request_body(content = Object, description = "The pipeline document"),
    responses((status = 200, description = "The pipeline after the change", body = PipelineDetail)))]
async fn update_pipeline(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>, ApiJson(doc): ApiJson<JsonObject>) -> ApiResult<axum::Json<PipelineDetail>> {
    let mut doc = Json::Object(doc);
    let pipe = load(&state, &id)?;
    let old = current_doc(&state, &pipe)?;
    keep_masked_document(&mut doc, &old, "", None)?;
    // Unchanged secrets keep their stored ciphertext, so an unchanged document compares equal.
    state.seal_document(&mut doc);
    if doc == old {
        validated(&state, &doc)?;
        return Ok(axum::Json(detail(&state, &pipe)?));
    }
    let pipe = new_version(&state, &p, &pipe, doc, "updated".into())?;
    audit(&state, &p, "update", "pipeline", &id, json!({"version": pipe.version}))?;
    Ok(axum::Json(detail(&state, &pipe)?))
}

/// Deletes a pipeline and its versions (its runs stay in the history). Refused while it runs.
#[utoipa::path(delete, path = "/pipelines/{id}", tag = "pipelines", security(("bearer" = ["editor"])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 409, description = "It is running", body = ErrorBody)))]
async fn delete_pipeline(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>) -> ApiResult<StatusCode> {
    let pipe = load(&state, &id)?;
    if state.meta.runs_of(&id)?.iter().any(|r| !r.status.is_terminal()) {
        return Err(ApiError::Conflict("the pipeline is running; cancel the run first".into()));
    }
    state.meta.apply(MetaCommand::DeletePipeline { id: id.clone() })?;
    audit(&state, &p, "delete", "pipeline", &id, json!({"name": pipe.name}))?;
    Ok(StatusCode::NO_CONTENT)
}

/// A pipeline's versions.
#[utoipa::path(get, path = "/pipelines/{id}/versions", tag = "pipelines", security(("bearer" = ["viewer"])), params(("id" = String, Path), Paging),
    responses((status = 200, description = "Versions", body = Page<VersionOut>)))]
async fn list_versions(State(state): State<AppState>, _auth: Viewer, ApiPath(id): ApiPath<String>, ApiQuery(paging): ApiQuery<Paging>) -> ApiResult<axum::Json<Page<VersionOut>>> {
    load(&state, &id)?;
    let items = state.meta.versions(&id)?.iter().map(|v| VersionOut::new(v, false)).collect();
    Ok(axum::Json(paging.apply(items, "-version")?))
}

fn version_of(state: &AppState, id: &str, version: u32) -> ApiResult<PipelineVersion> {
    state.meta.version(id, version)?.ok_or_else(|| ApiError::NotFound(format!("pipeline `{id}` has no version {version}")))
}

/// One version with its document.
#[utoipa::path(get, path = "/pipelines/{id}/versions/{version}", tag = "pipelines", security(("bearer" = ["viewer"])),
    params(("id" = String, Path), ("version" = u32, Path, minimum = 1)),
    responses((status = 200, description = "The version", body = VersionOut)))]
async fn get_version(State(state): State<AppState>, _auth: Viewer, ApiPath((id, version)): ApiPath<(String, u32)>) -> ApiResult<axum::Json<VersionOut>> {
    load(&state, &id)?;
    Ok(axum::Json(VersionOut::new(&version_of(&state, &id, version)?, true)))
}

/// The differences between two versions' documents (secrets masked).
#[utoipa::path(get, path = "/pipelines/{id}/diff", tag = "pipelines", security(("bearer" = ["viewer"])), params(("id" = String, Path), DiffQuery),
    responses((status = 200, description = "Changes from `from` to `to`", body = DiffOut)))]
async fn diff_versions(State(state): State<AppState>, _auth: Viewer, ApiPath(id): ApiPath<String>, ApiQuery(q): ApiQuery<DiffQuery>) -> ApiResult<axum::Json<DiffOut>> {
    let pipe = load(&state, &id)?;
    let to = q.to.unwrap_or(pipe.version);
    let from = q.from.unwrap_or(to.saturating_sub(1).max(1));
    let a = masked_document(&version_of(&state, &id, from)?.document);
    let b = masked_document(&version_of(&state, &id, to)?.document);
    let mut changes = Vec::new();
    diff(&a, &b, "", &mut changes);
    Ok(axum::Json(DiffOut { from, to, changes }))
}

/// Every difference from `a` to `b`, by path.
pub fn diff(a: &Json, b: &Json, path: &str, out: &mut Vec<Change>) {
    let key = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => diff(va, vb, &key(k), out),
                    None => out.push(Change { path: key(k), op: "removed".into(), from: Some(va.clone()), to: None }),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    out.push(Change { path: key(k), op: "added".into(), from: None, to: Some(vb.clone()) });
                }
            }
        }
        (Json::Array(x), Json::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => diff(va, vb, &p, out),
                    (Some(va), None) => out.push(Change { path: p, op: "removed".into(), from: Some(va.clone()), to: None }),
                    (None, Some(vb)) => out.push(Change { path: p, op: "added".into(), from: None, to: Some(vb.clone()) }),
                    (None, None) => {}
                }
            }
        }
        _ if a != b => out.push(Change { path: path.to_string(), op: "changed".into(), from: Some(a.clone()), to: Some(b.clone()) }),
        _ => {}
    }
}

/// Makes an old version's document the current one (as a new version).
#[utoipa::path(post, path = "/pipelines/{id}/rollback", tag = "pipelines", security(("bearer" = ["editor"])), params(("id" = String, Path)),
    request_body = RollbackRequest,
    responses((status = 200, description = "The pipeline at its new version", body = PipelineDetail)))]
async fn rollback(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>, ApiJson(req): ApiJson<RollbackRequest>) -> ApiResult<axum::Json<PipelineDetail>> {
    let pipe = load(&state, &id)?;
    let old = version_of(&state, &id, req.version)?;
    let pipe = new_version(&state, &p, &pipe, old.document, format!("rollback to version {}", req.version))?;
    audit(&state, &p, "rollback", "pipeline", &id, json!({"to_version": req.version, "version": pipe.version}))?;
    Ok(axum::Json(detail(&state, &pipe)?))
}

/// Copies a pipeline's current document into a new pipeline.
#[utoipa::path(post, path = "/pipelines/{id}/clone", tag = "pipelines", security(("bearer" = ["editor"])), params(("id" = String, Path)),
    request_body = CloneRequest,
    responses((status = 201, description = "The copy", body = PipelineDetail)))]
async fn clone_pipeline(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>, ApiJson(req): ApiJson<CloneRequest>) -> ApiResult<(StatusCode, axum::Json<PipelineDetail>)> {
    let pipe = load(&state, &id)?;
    let mut doc = current_doc(&state, &pipe)?;
    let name = match req.name {
        Some(n) => crate::routes::check_name("name", &n)?,
        None => format!("{} (copy)", pipe.name),
    };
    if let Some(m) = doc.as_object_mut() {
        m.insert("name".into(), Json::String(name));
    }
    let copy = create_from(&state, &p, doc, format!("cloned from {} version {}", pipe.id, pipe.version))?;
    audit(&state, &p, "clone", "pipeline", &copy.id, json!({"from": id}))?;
    Ok((StatusCode::CREATED, axum::Json(detail(&state, &copy)?)))
}

fn set_paused(state: &AppState, p: &Principal, id: &str, paused: bool) -> ApiResult<PipelineDetail> {
    load(state, id)?;
    state.meta.apply(MetaCommand::SetPipelinePaused { id: id.into(), paused, stamp: Stamp { at: Utc::now(), by: p.user.id.clone() } })?;
    audit(state, p, if paused { "pause" } else { "resume" }, "pipeline", id, json!({}))?;
    detail(state, &load(state, id)?)
}

/// Pauses the pipeline's schedule (manual runs still start).
#[utoipa::path(post, path = "/pipelines/{id}/pause", tag = "pipelines", security(("bearer" = ["editor"])), params(("id" = String, Path)),
    responses((status = 200, description = "Paused", body = PipelineDetail)))]
async fn pause(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>) -> ApiResult<axum::Json<PipelineDetail>> {
    set_paused(&state, &p, &id, true).map(axum::Json)
}

/// Resumes the pipeline's schedule.
#[utoipa::path(post, path = "/pipelines/{id}/resume", tag = "pipelines", security(("bearer" = ["editor"])), params(("id" = String, Path)),
    responses((status = 200, description = "Resumed", body = PipelineDetail)))]
async fn resume(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>) -> ApiResult<axum::Json<PipelineDetail>> {
    set_paused(&state, &p, &id, false).map(axum::Json)
}

/// Starts a run of the current version now. Relative file paths resolve against the
/// server's file folder (`<data-dir>/files`). One run per pipeline at a time.
#[utoipa::path(post, path = "/pipelines/{id}/execute", tag = "pipelines", security(("bearer" = ["editor"])), params(("id" = String, Path)),
    responses((status = 202, description = "Started; poll `GET /runs/{id}` or watch `/ws`", body = RunOut),
        (status = 409, description = "A run of this pipeline is active", body = ErrorBody)))]
async fn execute(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>) -> ApiResult<(StatusCode, axum::Json<RunOut>)> {
    let pipe = load(&state, &id)?;
    let version = version_of(&state, &pipe.id, pipe.version).map_err(|_| ApiError::internal(format!("pipeline {} lacks version {}", pipe.id, pipe.version)))?;
    let run = state.control.start_run(&version, Trigger::Manual, &p.user.username)?;
    audit(&state, &p, "execute", "pipeline", &id, json!({"run_id": run.id}))?;
    Ok((StatusCode::ACCEPTED, axum::Json(RunOut::new(&state, run))))
}

/// Runs the source and transformations of the current version and shows the first output
/// records and rejections; no destination is written.
#[utoipa::path(post, path = "/pipelines/{id}/dry-run", tag = "pipelines", security(("bearer" = ["editor"])), params(("id" = String, Path)),
    request_body = DryRunRequest,
    responses((status = 200, description = "What the pipeline would deliver", body = DryRunOut),
        (status = 400, description = "The source cannot be read, or the transformations not built", body = ErrorBody)))]
async fn dry_run(State(state): State<AppState>, _auth: Editor, ApiPath(id): ApiPath<String>, ApiJson(req): ApiJson<DryRunRequest>) -> ApiResult<axum::Json<DryRunOut>> {
    let pipe = load(&state, &id)?;
    let spec = validated(&state, &current_doc(&state, &pipe)?)?;
    let limit = match req.limit {
        None => 20,
        Some(n) if (1..=1000).contains(&n) => n as usize,
        Some(_) => return Err(ApiError::field("limit", "expected 1 to 1000")),
    };
    let preview = dagg_control::data::dry_run(&spec, &state.config.files_dir(), limit)
        .await
        .map_err(|message| ApiError::BadRequest { code: "dry_run_failed", message, details: Vec::new() })?;
    let records: Vec<Json> = preview.records.iter().map(|r| masked(&serde_json::to_value(r).unwrap_or_default())).collect();
    let rejected: Vec<RejectedOut> = preview
        .rejected
        .iter()
        .map(|d| {
            let (record, raw) = match &d.payload {
                dagg_control::data::Payload::Record(r) => (Some(masked(&serde_json::to_value(r).unwrap_or_default())), None),
                dagg_control::data::Payload::Raw(s) => (None, Some(s.clone())),
            };
            RejectedOut { stage: d.stage.clone(), reason: d.reason.clone(), position: serde_json::to_value(&d.position).unwrap_or_default(), record, raw }
        })
        .collect();
    let lineage = match req.lineage {
        false => None,
        true => Some(
            crate::lineage::dry_run_lineage(&spec, &state.config.files_dir(), limit)
                .await
                .map_err(|message| ApiError::BadRequest { code: "dry_run_failed", message, details: Vec::new() })?,
        ),
    };
    Ok(axum::Json(DryRunOut { records_out: records.len() as u64, rejected_count: rejected.len() as u64, records, rejected, records_read: preview.records_read, lineage }))
}

/// A pipeline's runs.
#[utoipa::path(get, path = "/pipelines/{id}/runs", tag = "pipelines", security(("bearer" = ["viewer"])), params(("id" = String, Path), Paging, RunFilter),
    responses((status = 200, description = "Runs, newest first by default", body = Page<RunOut>)))]
async fn pipeline_runs(State(state): State<AppState>, _auth: Viewer, ApiPath(id): ApiPath<String>, ApiQuery(paging): ApiQuery<Paging>, ApiQuery(f): ApiQuery<RunFilter>) -> ApiResult<axum::Json<Page<RunOut>>> {
    load(&state, &id)?;
    let runs = state.meta.runs_of(&id)?;
    crate::routes::runs::page(&state, runs, &paging, &f).map(axum::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_every_change_by_path() {
        let a = json!({"name": "a", "source": {"config": {"path": "x"}}, "transformations": [{"t": 1}], "old": 1});
        let b = json!({"name": "b", "source": {"config": {"path": "x"}}, "transformations": [{"t": 2}, {"t": 3}], "new": 2});
        let mut out = Vec::new();
        diff(&a, &b, "", &mut out);
        let got: Vec<(String, String)> = out.iter().map(|c| (c.path.clone(), c.op.clone())).collect();
        let want = [("name", "changed"), ("transformations[0].t", "changed"), ("transformations[1]", "added"), ("old", "removed"), ("new", "added")];
        assert_eq!(got, want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());
    }
}
