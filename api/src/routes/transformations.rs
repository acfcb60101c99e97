//! Saved transformation rules (guide 5.2, 7.2.4) and the preview: rules plus sample
//! records in, output records and per-record errors out.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use dagg_model::spec::transform::{TransformSpec, parse_transformations};
use dagg_model::{Record, SpecErrors, Value};
use dagg_control::data::{BatchContext, Chain, Output};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Editor, Viewer};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorDetail};
use crate::list::{Page, Paging, SortKey, Sortable, matches_q};
use crate::meta::{MetaCommand, Transformation};
use crate::routes::{audit, check_name, stamp};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_transformations, create_transformation))
        .routes(routes!(preview))
        .routes(routes!(get_transformation, update_transformation, delete_transformation))
}

/// Saved transformation rules.
#[derive(Serialize, ToSchema)]
pub struct TransformationOut {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// The rules, as in a pipeline document's `transformations`.
    #[schema(value_type = Vec<Object>)]
    pub transformations: Json,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

impl From<&Transformation> for TransformationOut {
    fn from(t: &Transformation) -> Self {
        TransformationOut {
            id: t.id.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            transformations: crate::mask::masked(&t.transformations),
            created_at: t.created.at,
            created_by: t.created.by.clone(),
            updated_at: t.updated.at,
            updated_by: t.updated.by.clone(),
        }
    }
}

impl Sortable for TransformationOut {
    const SORT_FIELDS: &'static [&'static str] = &["name", "created_at", "updated_at"];
    fn sort_key(&self, field: &str) -> SortKey {
        match field {
            "name" => (&self.name).into(),
            "updated_at" => self.updated_at.into(),
            _ => self.created_at.into(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformationWrite {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// The rules (`spec/pipeline.md`, "Transformations").
    #[schema(value_type = Vec<Object>)]
    pub transformations: Json,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransformationFilter {
    /// Text in the name or description.
    pub q: Option<String>,
}

/// Rules and sample records.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The rules, as in a pipeline document.
    #[schema(value_type = Vec<Object>)]
    pub transformations: Json,
    /// Sample input records (objects), at most 10,000.
    #[schema(value_type = Vec<Object>, max_items = 10000)]
    pub records: Vec<Json>,
}

/// A sample record that a rule failed.
#[derive(Serialize, ToSchema)]
pub struct RecordError {
    /// The input record's index in `records` (absent for records made from state, such as
    /// aggregates).
    pub index: Option<u64>,
    /// The failing rule: `transformations[2]`.
    pub stage: String,
    pub reason: String,
    /// The record as it was when the rule failed.
    #[schema(value_type = Object)]
    pub record: Json,
}

/// What the rules make of the sample.
#[derive(Serialize, ToSchema)]
pub struct PreviewOut {
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Json>,
    pub errors: Vec<RecordError>,
    /// Records removed by filters (by design).
    pub filtered: u64,
    /// Records dropped by `field_validation` with `on_failure: drop`.
    pub dropped: u64,
}

fn parse_rules(v: &Json) -> ApiResult<Vec<TransformSpec>> {
    let mut errs = SpecErrors::new();
    let specs = parse_transformations(v, "transformations", &mut errs);
    if !errs.is_empty() {
        let details: Vec<ErrorDetail> = errs.iter().map(|e| ErrorDetail { path: e.path.clone(), message: e.message.clone() }).collect();
        return Err(ApiError::validation(format!("the transformations have {} error(s)", details.len()), details));
    }
    if !v.is_array() {
        return Err(ApiError::field("transformations", "expected a list of transformations"));
    }
    Ok(specs)
}

fn load(state: &AppState, id: &str) -> ApiResult<Transformation> {
    state.meta.transformation(id)?.ok_or_else(|| ApiError::not_found("transformation", id))
}

/// Lists saved transformations.
#[utoipa::path(get, path = "/transformations", tag = "transformations", security(("bearer" = ["viewer"])), params(Paging, TransformationFilter),
    responses((status = 200, description = "Transformations", body = Page<TransformationOut>)))]
async fn list_transformations(State(state): State<AppState>, _auth: Viewer, ApiQuery(paging): ApiQuery<Paging>, ApiQuery(f): ApiQuery<TransformationFilter>) -> ApiResult<axum::Json<Page<TransformationOut>>> {
    let items = state.meta.transformations()?.iter().filter(|t| matches_q(&f.q, &[Some(&t.name), t.description.as_deref()])).map(TransformationOut::from).collect();
    Ok(axum::Json(paging.apply(items, "name")?))
}

/// Saves transformation rules (validated, every error with its path).
#[utoipa::path(post, path = "/transformations", tag = "transformations", security(("bearer" = ["editor"])), request_body = TransformationWrite,
    responses((status = 201, description = "Created", body = TransformationOut)))]
async fn create_transformation(State(state): State<AppState>, Editor(p): Editor, ApiJson(req): ApiJson<TransformationWrite>) -> ApiResult<(StatusCode, axum::Json<TransformationOut>)> {
    let name = check_name("name", &req.name)?;
    parse_rules(&req.transformations)?;
    let st = stamp(&p);
    let t = Transformation { id: uuid::Uuid::new_v4().to_string(), name, description: crate::routes::check_description(req.description)?, transformations: req.transformations, created: st.clone(), updated: st };
    state.meta.apply(MetaCommand::PutTransformation { transformation: t.clone() })?;
    audit(&state, &p, "create", "transformation", &t.id, json!({"name": t.name}))?;
    Ok((StatusCode::CREATED, axum::Json(TransformationOut::from(&t))))
}

/// One saved transformation.
#[utoipa::path(get, path = "/transformations/{id}", tag = "transformations", security(("bearer" = ["viewer"])), params(("id" = String, Path)),
    responses((status = 200, description = "The transformation", body = TransformationOut)))]
async fn get_transformation(State(state): State<AppState>, _auth: Viewer, ApiPath(id): ApiPath<String>) -> ApiResult<axum::Json<TransformationOut>> {
    Ok(axum::Json(TransformationOut::from(&load(&state, &id)?)))
}

/// Replaces saved transformation rules.
#[utoipa::path(put, path = "/transformations/{id}", tag = "transformations", security(("bearer" = ["editor"])), params(("id" = String, Path)), request_body = TransformationWrite,
    responses((status = 200, description = "Changed", body = TransformationOut)))]
async fn update_transformation(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>, ApiJson(mut req): ApiJson<TransformationWrite>) -> ApiResult<axum::Json<TransformationOut>> {
    let old = load(&state, &id)?;
    crate::mask::keep_masked(&mut req.transformations, &old.transformations, "transformations", None)?;
    let name = check_name("name", &req.name)?;
    parse_rules(&req.transformations)?;
    let t = Transformation { name, description: crate::routes::check_description(req.description)?, transformations: req.transformations, updated: stamp(&p), ..old };
    state.meta.apply(MetaCommand::PutTransformation { transformation: t.clone() })?;
    audit(&state, &p, "update", "transformation", &id, json!({"name": t.name}))?;
    Ok(axum::Json(TransformationOut::from(&t)))
}

/// Deletes saved transformation rules.
#[utoipa::path(delete, path = "/transformations/{id}", tag = "transformations", security(("bearer" = ["editor"])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted")))]
async fn delete_transformation(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>) -> ApiResult<StatusCode> {
    let t = load(&state, &id)?;
    state.meta.apply(MetaCommand::DeleteTransformation { id: id.clone() })?;
    audit(&state, &p, "delete", "transformation", &id, json!({"name": t.name}))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs rules over sample records: the output records and, for each record a rule failed,
/// the rule and the reason. Nothing is saved. A `join` needs its source's records: preview
/// it with a pipeline dry run.
#[utoipa::path(post, path = "/transformations/preview", tag = "transformations", security(("bearer" = ["editor"])), request_body = PreviewRequest,
    responses((status = 200, description = "Output records and per-record errors", body = PreviewOut)))]
async fn preview(_auth: Editor, ApiJson(req): ApiJson<PreviewRequest>) -> ApiResult<axum::Json<PreviewOut>> {
    let specs = parse_rules(&req.transformations)?;
    if req.records.len() > 10_000 {
        return Err(ApiError::field("records", "at most 10000 sample records"));
    }
    let mut records: Vec<Record> = Vec::with_capacity(req.records.len());
    for (i, r) in req.records.iter().enumerate() {
        match Value::from(r) {
            Value::Object(m) => records.push(m),
            other => return Err(ApiError::field(&format!("records[{i}]"), format!("expected an object, found {}", other.type_name()))),
        }
    }
    let mut chain = Chain::new(&specs, HashMap::new()).map_err(|e| ApiError::field("transformations", e.to_string()))?;
    let ctx = BatchContext { now: Utc::now() };
    let mut out = Output::default();
    // Rules run off the async threads: a script may take its whole time limit.
    let out = tokio::task::spawn_blocking(move || {
        chain.process(records, &ctx, &mut out);
        chain.finish(&ctx, &mut out);
        out
    })
    .await
    .map_err(ApiError::internal)?;
    // A value nested past the limit is a fault of the rules, not of one sample record.
    if let Some(r) = out.rejected.iter().find(|r| r.reason.contains(&dagg_model::value::depth_error())) {
        return Err(ApiError::field(&r.stage, r.reason.clone()));
    }
    let errors = out
        .rejected
        .iter()
        .map(|r| RecordError { index: r.input.map(|i| i as u64), stage: r.stage.clone(), reason: r.reason.clone(), record: serde_json::to_value(&r.record).unwrap_or_default() })
        .collect();
    let records = out.records.iter().map(|r| serde_json::to_value(r).unwrap_or_default()).collect();
    Ok(axum::Json(PreviewOut { records, errors, filtered: out.filtered, dropped: out.dropped }))
}
