//! Orchestration read-outs: a pipeline's schedule with its next run times, and per run its
//! lineage and data profile (see [`crate::scheduler`] and [`crate::lineage`]).

use axum::extract::State;
use chrono::{DateTime, Utc};
use dagg_model::spec::pipeline::Schedule;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Viewer;
use crate::error::{ApiError, ApiPath, ApiQuery, ApiResult};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_schedule))
        .routes(routes!(run_lineage))
        .routes(routes!(run_profile))
}

/// One upcoming run time.
#[derive(Serialize, ToSchema)]
pub struct NextRun {
    pub at: DateTime<Utc>,
    /// The same instant on the schedule's time zone's clock (RFC 3339 with its offset).
    pub local: String,
}

/// A pipeline's schedule.
#[derive(Serialize, ToSchema)]
pub struct ScheduleOut {
    pub pipeline_id: String,
    /// `manual`, `cron` or `event`.
    #[serde(rename = "type")]
    pub kind: String,
    pub expression: Option<String>,
    pub timezone: Option<String>,
    /// Scheduled instants are passed over while paused.
    pub paused: bool,
    /// The next fire times (cron only; empty while paused).
    pub next_runs: Vec<NextRun>,
    /// The latest scheduled instant dealt with.
    pub last_fired: Option<DateTime<Utc>>,
    /// What happened then: `armed`, `fired`, `missed`, `paused`, `busy`.
    pub last_outcome: Option<String>,
    pub last_run_id: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NextQuery {
    /// How many next run times, 1 to 100 (default 5).
    #[param(minimum = 1, maximum = 100)]
    pub count: Option<u32>,
}

/// The pipeline's schedule, its next run times, and what it did last.
#[utoipa::path(get, path = "/pipelines/{id}/schedule", tag = "pipelines", security(("bearer" = ["viewer"])), params(("id" = String, Path), NextQuery),
    responses((status = 200, description = "The schedule", body = ScheduleOut)))]
async fn get_schedule(
    State(state): State<AppState>,
    _auth: Viewer,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<NextQuery>,
) -> ApiResult<axum::Json<ScheduleOut>> {
    let count = match q.count {
        None => 5,
        Some(n) if (1..=100).contains(&n) => n as usize,
        Some(_) => return Err(ApiError::field("count", "expected 1 to 100")),
    };
    let p = state
        .meta
        .pipeline(&id)?
        .ok_or_else(|| ApiError::not_found("pipeline", &id))?;
    let doc = state
        .meta
        .version(&p.id, p.version)?
        .map(|v| v.document)
        .unwrap_or(Json::Null);
    let spec = state.control.validate(&doc).map_err(|d| ApiError::validation("the stored pipeline document is invalid", d))?;
    let st = state.meta.schedule_state(&p.id)?;
    let now = state.scheduler.now();
    let after = st.as_ref().map_or(now, |s| s.last_fired.max(now));
    let (kind, expression, timezone, next_runs) = match &spec.schedule {
        Schedule::Cron {
            expression,
            timezone,
            ..
        } => {
            let next = if p.paused {
                Vec::new()
            } else {
                crate::scheduler::next_runs(&spec.schedule, after, count)
            };
            let next = next
                .into_iter()
                .map(|t| NextRun {
                    at: t,
                    local: t.with_timezone(timezone).to_rfc3339(),
                })
                .collect();
            (
                "cron".to_string(),
                Some(expression.clone()),
                Some(timezone.name().to_string()),
                next,
            )
        }
        _ => (p.schedule_type.clone(), None, None, Vec::new()),
    };
    Ok(axum::Json(ScheduleOut {
        pipeline_id: p.id,
        kind,
        expression,
        timezone,
        paused: p.paused,
        next_runs,
        last_fired: st.as_ref().map(|s| s.last_fired),
        last_outcome: st.as_ref().map(|s| s.outcome.clone()),
        last_run_id: st.and_then(|s| s.run_id),
    }))
}

/// A run's lineage.
#[derive(Serialize, ToSchema)]
pub struct LineageOut {
    pub run_id: String,
    pub pipeline_id: String,
    /// The pipeline version the run executed.
    pub pipeline_version: u32,
    /// The source connector type and where the run started and ended reading (its
    /// checkpoint positions; `start` null: the beginning of the input or the checkpoint it
    /// resumed from).
    #[schema(value_type = Object)]
    pub source: Json,
    /// The destinations and their last commit positions.
    #[schema(value_type = Vec<Object>)]
    pub destinations: Vec<Json>,
    /// One entry per checkpoint: `source_from`..`source_to` became `records_written` records
    /// at these sink commit positions.
    #[schema(value_type = Vec<Object>)]
    pub segments: Vec<Json>,
}

fn insight(
    state: &AppState,
    run_id: &str,
) -> ApiResult<(crate::meta::Run, crate::meta::RunInsight)> {
    let run = state
        .meta
        .run(run_id)?
        .ok_or_else(|| ApiError::not_found("run", run_id))?;
    let insight = state.meta.run_insight(run_id)?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "run `{run_id}` has no lineage or profile (it was skipped, or has not ended)"
        ))
    })?;
    Ok((run, insight))
}

/// Which source positions became which sink writes in a run, through which version.
#[utoipa::path(get, path = "/runs/{id}/lineage", tag = "runs", security(("bearer" = ["viewer"])), params(("id" = String, Path)),
    responses((status = 200, description = "The run's lineage", body = LineageOut)))]
async fn run_lineage(
    State(state): State<AppState>,
    _auth: Viewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<LineageOut>> {
    let (_, ins) = insight(&state, &id)?;
    let doc = state
        .meta
        .version(&ins.pipeline_id, ins.pipeline_version)?
        .map(|v| v.document)
        .unwrap_or(Json::Null);
    let connector = |c: Option<&Json>| {
        c.and_then(|c| c.get("connector_type"))
            .cloned()
            .unwrap_or(Json::Null)
    };
    let start = ins
        .lineage
        .first()
        .map(|s| s.source_from.clone())
        .unwrap_or(Json::Null);
    let end = ins
        .lineage
        .last()
        .map(|s| s.source_to.clone())
        .unwrap_or(Json::Null);
    let dest_docs: Vec<Json> = match (doc.get("destination"), doc.get("destinations")) {
        (Some(d), _) => vec![d.clone()],
        (None, Some(Json::Array(a))) => a.clone(),
        _ => Vec::new(),
    };
    let destinations = match ins.lineage.last() {
        Some(last) => last
            .sinks
            .iter()
            .enumerate()
            .map(|(i, w)| serde_json::json!({"stage": w.stage, "connector_type": connector(dest_docs.get(i)), "commit": w.commit, "records_written": ins.lineage.iter().map(|s| s.records_written).sum::<u64>()}))
            .collect(),
        None => Vec::new(),
    };
    Ok(axum::Json(LineageOut {
        run_id: ins.run_id,
        pipeline_id: ins.pipeline_id,
        pipeline_version: ins.pipeline_version,
        source: serde_json::json!({"connector_type": connector(doc.get("source")), "start": start, "end": end}),
        destinations,
        segments: ins
            .lineage
            .iter()
            .map(|s| serde_json::to_value(s).unwrap_or_default())
            .collect(),
    }))
}

/// A run's data profile.
#[derive(Serialize, ToSchema)]
pub struct ProfileOut {
    pub run_id: String,
    /// Per field: `inferred_type`, `null_ratio`, `distinct`, `min`, `max`, `top_values`.
    /// Null for a run that delivered nothing (failed, cancelled).
    #[schema(value_type = Option<Object>)]
    pub profile: Option<Json>,
    /// `new_fields`, `missing_fields`, `retyped_fields` against the previous profiled run
    /// (null on the first).
    #[schema(value_type = Option<Object>)]
    pub schema_changes: Option<Json>,
    /// The pipeline's `schema_evolution` policy when the run started.
    pub schema_evolution: String,
}

/// The profile of the records a run delivered, per field, and the schema changes.
#[utoipa::path(get, path = "/runs/{id}/profile", tag = "runs", security(("bearer" = ["viewer"])), params(("id" = String, Path)),
    responses((status = 200, description = "The run's profile", body = ProfileOut)))]
async fn run_profile(
    State(state): State<AppState>,
    _auth: Viewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<ProfileOut>> {
    let (_, ins) = insight(&state, &id)?;
    let policy = state
        .meta
        .version(&ins.pipeline_id, ins.pipeline_version)?
        .and_then(|v| {
            v.document
                .get("schema_evolution")
                .and_then(Json::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "evolve".into());
    Ok(axum::Json(ProfileOut {
        run_id: ins.run_id,
        profile: ins
            .profile
            .map(|p| serde_json::to_value(p).unwrap_or_default()),
        schema_changes: ins
            .schema_changes
            .map(|c| serde_json::to_value(c).unwrap_or_default()),
        schema_evolution: policy,
    }))
}
