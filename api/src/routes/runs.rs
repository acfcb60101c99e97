//! Runs: the history across pipelines, one run with live counters, cancel, the run's log
//! and its dead-letter entries.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use dagg_model::RunStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Editor, Viewer};
use crate::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::list::{Page, Paging, SortKey, Sortable};
use crate::mask::masked;
use crate::meta::{Run, RunCounts, RunEvent};
use crate::routes::audit;
use crate::runner;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
        .routes(routes!(run_logs))
        .routes(routes!(run_dead_letters))
}

/// Where a run is (guide 5.1.3).
#[derive(Serialize, ToSchema)]
#[schema(as = RunStatus)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
pub enum RunStatusSchema {
    Pending,
    Running,
    Retrying,
    Paused,
    Success,
    Warning,
    Failed,
    Cancelled,
}

/// A run.
#[derive(Serialize, ToSchema)]
pub struct RunOut {
    pub id: String,
    pub pipeline_id: String,
    pub pipeline_name: String,
    /// The pipeline version that ran.
    pub pipeline_version: u32,
    #[schema(value_type = RunStatusSchema)]
    pub status: RunStatus,
    /// `manual` or `schedule`.
    #[schema(value_type = String)]
    pub trigger: dagg_control::Trigger,
    /// Who started it.
    pub triggered_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// From start to end (to now while running).
    pub duration_seconds: Option<f64>,
    /// Final counts; live counters while it runs.
    pub counts: RunCounts,
    /// Records read per second over the run.
    pub throughput: Option<f64>,
    pub error: Option<String>,
}

impl RunOut {
    pub fn new(state: &AppState, r: Run) -> RunOut {
        let now = Utc::now();
        let counts = match state.runs.progress(&r.id) {
            Some(p) if !r.status.is_terminal() => runner::counts_of(&p.snapshot()),
            _ => r.counts,
        };
        let duration_seconds = r.duration_seconds(now);
        let throughput = duration_seconds.filter(|d| *d > 0.0).map(|d| counts.records_read as f64 / d);
        RunOut {
            duration_seconds,
            throughput,
            counts,
            id: r.id,
            pipeline_id: r.pipeline_id,
            pipeline_name: r.pipeline_name,
            pipeline_version: r.pipeline_version,
            status: r.status,
            trigger: r.trigger,
            triggered_by: r.triggered_by,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            error: r.error,
        }
    }
}

impl Sortable for RunOut {
    const SORT_FIELDS: &'static [&'static str] = &["created_at", "started_at", "finished_at", "status", "duration_seconds", "records_read", "records_written", "pipeline_name"];
    fn sort_key(&self, field: &str) -> SortKey {
        match field {
            "started_at" => self.started_at.into(),
            "finished_at" => self.finished_at.into(),
            "status" => self.status.as_str().into(),
            "duration_seconds" => self.duration_seconds.into(),
            "records_read" => self.counts.records_read.into(),
            "records_written" => self.counts.records_written.into(),
            "pipeline_name" => (&self.pipeline_name).into(),
            _ => self.created_at.into(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunFilter {
    #[param(value_type = Option<RunStatusSchema>)]
    pub status: Option<RunStatus>,
    /// Only runs created at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only runs created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AllRunsFilter {
    pub pipeline_id: Option<String>,
}

pub(crate) fn page(state: &AppState, runs: Vec<Run>, paging: &Paging, f: &RunFilter) -> ApiResult<Page<RunOut>> {
    let items = runs
        .into_iter()
        .filter(|r| f.status.is_none_or(|s| r.status == s))
        .filter(|r| f.since.is_none_or(|t| r.created_at >= t))
        .filter(|r| f.until.is_none_or(|t| r.created_at < t))
        .map(|r| RunOut::new(state, r))
        .collect();
    paging.apply(items, "-created_at")
}

fn load(state: &AppState, id: &str) -> ApiResult<Run> {
    state.meta.run(id)?.ok_or_else(|| ApiError::not_found("run", id))
}

/// Runs of every pipeline.
#[utoipa::path(get, path = "/runs", tag = "runs", security(("bearer" = ["viewer"])), params(Paging, RunFilter, AllRunsFilter),
    responses((status = 200, description = "Runs, newest first by default", body = Page<RunOut>)))]
async fn list_runs(State(state): State<AppState>, _auth: Viewer, ApiQuery(paging): ApiQuery<Paging>, ApiQuery(f): ApiQuery<RunFilter>, ApiQuery(a): ApiQuery<AllRunsFilter>) -> ApiResult<axum::Json<Page<RunOut>>> {
    let runs = match &a.pipeline_id {
        Some(p) => state.meta.runs_of(p)?,
        None => state.meta.runs()?,
    };
    page(&state, runs, &paging, &f).map(axum::Json)
}

/// One run; a running run shows its live counters.
#[utoipa::path(get, path = "/runs/{id}", tag = "runs", security(("bearer" = ["viewer"])), params(("id" = String, Path)),
    responses((status = 200, description = "The run", body = RunOut)))]
async fn get_run(State(state): State<AppState>, _auth: Viewer, ApiPath(id): ApiPath<String>) -> ApiResult<axum::Json<RunOut>> {
    let run = load(&state, &id)?;
    Ok(axum::Json(RunOut::new(&state, run)))
}

/// Cancels a run: it stops at its next batch, commits nothing, and ends `cancelled`.
#[utoipa::path(post, path = "/runs/{id}/cancel", tag = "runs", security(("bearer" = ["editor"])), params(("id" = String, Path)),
    responses((status = 202, description = "Cancel requested", body = RunOut), (status = 409, description = "The run already ended", body = ErrorBody)))]
async fn cancel_run(State(state): State<AppState>, Editor(p): Editor, ApiPath(id): ApiPath<String>) -> ApiResult<(StatusCode, axum::Json<RunOut>)> {
    let run = load(&state, &id)?;
    runner::cancel(&state, &run, &p.user.username)?;
    audit(&state, &p, "cancel", "run", &id, json!({"pipeline_id": run.pipeline_id}))?;
    Ok((StatusCode::ACCEPTED, axum::Json(RunOut::new(&state, load(&state, &id)?))))
}

impl Sortable for RunEvent {
    const SORT_FIELDS: &'static [&'static str] = &["seq", "at"];
    fn sort_key(&self, field: &str) -> SortKey {
        match field {
            "at" => self.at.into(),
            _ => self.seq.into(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogFilter {
    /// `info`, `warning` or `error`.
    pub level: Option<String>,
}

/// A run's log: queued, started, retrying, cancel requested, finished with its counts or
/// error.
#[utoipa::path(get, path = "/runs/{id}/logs", tag = "runs", security(("bearer" = ["viewer"])), params(("id" = String, Path), Paging, LogFilter),
    responses((status = 200, description = "Log events, oldest first by default", body = Page<RunEvent>)))]
async fn run_logs(State(state): State<AppState>, _auth: Viewer, ApiPath(id): ApiPath<String>, ApiQuery(paging): ApiQuery<Paging>, ApiQuery(f): ApiQuery<LogFilter>) -> ApiResult<axum::Json<Page<RunEvent>>> {
    load(&state, &id)?;
    let events = state.meta.run_events(&id)?.into_iter().filter(|e| f.level.as_ref().is_none_or(|l| e.level.as_str() == l)).collect();
    Ok(axum::Json(paging.apply(events, "seq")?))
}

/// One dead-letter entry.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterOut {
    /// The stage that rejected it: `source`, `transformations[2]`, `destination`.
    pub stage: String,
    pub reason: String,
    pub at: Option<String>,
    /// Where it came from (`{"file", "line"}`).
    pub position: Json,
    /// The record (secrets masked); absent for unparseable input.
    pub record: Option<Json>,
    /// Input that could not be parsed.
    pub raw: Option<String>,
}

impl Sortable for DeadLetterOut {
    const SORT_FIELDS: &'static [&'static str] = &["at", "stage"];
    fn sort_key(&self, field: &str) -> SortKey {
        match field {
            "stage" => (&self.stage).into(),
            _ => self.at.as_ref().into(),
        }
    }
}

/// Reads the dead-letter entries of `run_id` from a file dead-letter destination.
/// The most dead letters listed for one run, and the largest entry read: the file is streamed
/// through the file connector's reader, so a file of any size costs bounded memory.
const MAX_LISTED: usize = 1000;
const MAX_ENTRY_BYTES: u64 = 256 << 10;

async fn read_dead_letters(files_dir: &std::path::Path, path: &str, format: &str, run_id: &str) -> Result<Vec<DeadLetterOut>, String> {
    if path.ends_with(".gz") {
        return Err("the dead-letter file is compressed; read it with the CLI".into());
    }
    if !matches!(format, "json" | "jsonl") {
        return Err(format!("dead letters in `{format}` files cannot be listed here"));
    }
    if !files_dir.join(path).is_file() {
        return Ok(Vec::new());
    }
    let doc = serde_json::json!({"connector_type": "file", "config": {"path": path, "format": format}});
    let mut errs = dagg_model::SpecErrors::default();
    let Some(spec) = dagg_model::spec::connector::parse_connector(&doc, "dead_letter", dagg_model::spec::connector::Role::Source, &mut errs) else {
        return Err(format!("the dead-letter file cannot be read: {errs}"));
    };
    let limits = dagg_model::spec::pipeline::Limits { max_record_bytes: MAX_ENTRY_BYTES };
    let mut entries: Vec<Json> = Vec::new();
    let mut shown = Ok(());
    dagg_control::data::read_records(&spec, files_dir, &limits, |batch| {
        for r in batch {
            if entries.len() < MAX_LISTED && r.get("run_id").and_then(|v| v.as_str()) == Some(run_id) {
                match serde_json::to_value(&r) {
                    Ok(v) => entries.push(v),
                    Err(e) => {
                        shown = Err(format!("an entry cannot be shown: {e}"));
                        return std::ops::ControlFlow::Break(());
                    }
                }
            }
        }
        if entries.len() < MAX_LISTED { std::ops::ControlFlow::Continue(()) } else { std::ops::ControlFlow::Break(()) }
    })
    .await
    .map_err(|e| format!("cannot read the dead-letter file: {e}"))?;
    shown?;
    Ok(entries
        .into_iter()
        .filter(|e| e.get("run_id").and_then(Json::as_str) == Some(run_id))
        .map(|e| DeadLetterOut {
            stage: e.get("stage").and_then(Json::as_str).unwrap_or_default().to_string(),
            reason: e.get("reason").and_then(Json::as_str).unwrap_or_default().to_string(),
            at: e.get("at").and_then(Json::as_str).map(str::to_string),
            position: e.get("position").cloned().unwrap_or(Json::Null),
            record: e.get("record").map(masked),
            raw: e.get("raw").and_then(Json::as_str).map(str::to_string),
        })
        .collect())
}

/// The records a run sent to its pipeline's dead-letter destination (a file connector in
/// `json` or `jsonl`).
#[utoipa::path(get, path = "/runs/{id}/dead-letters", tag = "runs", security(("bearer" = ["viewer"])), params(("id" = String, Path), Paging),
    responses((status = 200, description = "Dead-letter entries of this run", body = Page<DeadLetterOut>),
        (status = 409, description = "The pipeline's dead letter cannot be read here", body = ErrorBody)))]
async fn run_dead_letters(State(state): State<AppState>, _auth: Viewer, ApiPath(id): ApiPath<String>, ApiQuery(paging): ApiQuery<Paging>) -> ApiResult<axum::Json<Page<DeadLetterOut>>> {
    let run = load(&state, &id)?;
    let doc = state.meta.version(&run.pipeline_id, run.pipeline_version)?.map(|v| v.document);
    let Some(doc) = doc else {
        return Err(ApiError::Conflict("the run's pipeline version was deleted with its pipeline".into()));
    };
    let dl = doc.get("error_handling").and_then(|e| e.get("dead_letter"));
    let entries = match dl {
        None => Vec::new(),
        Some(dl) if dl.get("connector_type").and_then(Json::as_str) == Some("file") => {
            let cfg = dl.get("config").cloned().unwrap_or_default();
            let path = cfg.get("path").and_then(Json::as_str).unwrap_or_default();
            let format = cfg.get("format").and_then(Json::as_str).unwrap_or("jsonl");
            read_dead_letters(&state.config.files_dir(), path, format, &id).await.map_err(ApiError::Conflict)?
        }
        Some(dl) => {
            let t = dl.get("connector_type").and_then(Json::as_str).unwrap_or("?");
            return Err(ApiError::Conflict(format!("dead letters go to a `{t}` connector; only file dead letters can be listed here")));
        }
    };
    Ok(axum::Json(paging.apply(entries, "at")?))
}
