//! Monitoring (guide 7.2.5): statistics, alerts, per-pipeline performance and system health,
//! computed from the stored run history, the live run counters and the store's own check.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use dagg_model::RunStatus;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Viewer;
use crate::error::{ApiError, ApiQuery, ApiResult};
use crate::list::{Page, Paging, SortKey, Sortable};
use crate::meta::Run;
use crate::runner;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pipeline_stats))
        .routes(routes!(alerts))
        .routes(routes!(pipeline_performance))
        .routes(routes!(system_health))
}

pub(crate) const STATUSES: [RunStatus; 8] =
    [RunStatus::Pending, RunStatus::Running, RunStatus::Retrying, RunStatus::Paused, RunStatus::Success, RunStatus::Warning, RunStatus::Failed, RunStatus::Cancelled];

/// Runs by status, every status present.
pub(crate) fn by_status<'a>(runs: impl Iterator<Item = &'a Run>) -> BTreeMap<String, u64> {
    let mut m: BTreeMap<String, u64> = STATUSES.iter().map(|s| (s.to_string(), 0)).collect();
    for r in runs {
        *m.entry(r.status.to_string()).or_default() += 1;
    }
    m
}

/// Success (or warning) among finished runs that were not cancelled, 0 to 1.
pub(crate) fn success_rate<'a>(runs: impl Iterator<Item = &'a Run>) -> Option<f64> {
    let (mut ok, mut n) = (0u64, 0u64);
    for r in runs {
        match r.status {
            RunStatus::Success | RunStatus::Warning => {
                ok += 1;
                n += 1;
            }
            RunStatus::Failed => n += 1,
            _ => {}
        }
    }
    (n > 0).then(|| ok as f64 / n as f64)
}

/// Counts over the whole platform.
#[derive(Serialize, ToSchema)]
pub struct PipelineStats {
    pub pipelines_total: u64,
    pub pipelines_paused: u64,
    pub connectors_total: u64,
    pub transformations_total: u64,
    pub users_total: u64,
    pub runs_total: u64,
    /// Runs not yet ended.
    pub runs_active: u64,
    /// Every run, by status.
    pub runs_by_status: BTreeMap<String, u64>,
    pub runs_last_24h: u64,
    /// Runs of the last 24 hours, by status.
    pub runs_last_24h_by_status: BTreeMap<String, u64>,
    /// Successful (or warning) share of finished runs that were not cancelled; none before any.
    pub success_rate: Option<f64>,
    pub records_read_total: u64,
    pub records_written_total: u64,
    pub dead_lettered_total: u64,
}

/// Pipeline and run statistics.
#[utoipa::path(get, path = "/monitoring/pipeline-stats", tag = "monitoring", security(("bearer" = ["viewer"])),
    responses((status = 200, description = "Statistics", body = PipelineStats)))]
async fn pipeline_stats(State(state): State<AppState>, _auth: Viewer) -> ApiResult<axum::Json<PipelineStats>> {
    let pipelines = state.meta.pipelines()?;
    let runs = state.meta.runs()?;
    let day_ago = Utc::now() - Duration::hours(24);
    let recent: Vec<&Run> = runs.iter().filter(|r| r.created_at >= day_ago).collect();
    Ok(axum::Json(PipelineStats {
        pipelines_total: pipelines.len() as u64,
        pipelines_paused: pipelines.iter().filter(|p| p.paused).count() as u64,
        connectors_total: state.meta.connectors()?.len() as u64,
        transformations_total: state.meta.transformations()?.len() as u64,
        users_total: state.meta.user_count() as u64,
        runs_total: runs.len() as u64,
        runs_active: runs.iter().filter(|r| !r.status.is_terminal()).count() as u64,
        runs_by_status: by_status(runs.iter()),
        runs_last_24h: recent.len() as u64,
        runs_last_24h_by_status: by_status(recent.iter().copied()),
        success_rate: success_rate(runs.iter()),
        records_read_total: runs.iter().map(|r| r.counts.records_read).sum(),
        records_written_total: runs.iter().map(|r| r.counts.records_written).sum(),
        dead_lettered_total: runs.iter().map(|r| r.counts.dead_lettered).sum(),
    }))
}

/// Something an operator should look at.
#[derive(Serialize, ToSchema)]
pub struct Alert {
    /// Stable for the same cause: `run_failed:<run id>`.
    pub id: String,
    /// `critical`, `error` or `warning`.
    pub severity: String,
    /// `run_failed`, `run_dead_letters`, `pipeline_failing`, `run_retrying`, `storage`.
    pub kind: String,
    pub message: String,
    pub pipeline_id: Option<String>,
    pub run_id: Option<String>,
    pub at: DateTime<Utc>,
}

impl Sortable for Alert {
    const SORT_FIELDS: &'static [&'static str] = &["at", "severity", "kind"];
    fn sort_key(&self, field: &str) -> SortKey {
        match field {
            "severity" => SortKey::Num(match self.severity.as_str() {
                "critical" => 3.0,
                "error" => 2.0,
                _ => 1.0,
            }),
            "kind" => (&self.kind).into(),
            _ => self.at.into(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertFilter {
    /// `critical`, `error` or `warning`.
    #[param(pattern = "^(critical|error|warning)$")]
    pub severity: Option<String>,
    /// Hours of history to look at (default 168, a week).
    #[param(minimum = 1, maximum = 8760)]
    pub hours: Option<u32>,
}

/// Alerts from the run history of the last `hours`: failed runs, runs with dead letters,
/// pipelines whose last three runs failed, runs retrying, and the store's health.
#[utoipa::path(get, path = "/monitoring/alerts", tag = "monitoring", security(("bearer" = ["viewer"])), params(Paging, AlertFilter),
    responses((status = 200, description = "Alerts, newest first by default", body = Page<Alert>)))]
async fn alerts(State(state): State<AppState>, _auth: Viewer, ApiQuery(paging): ApiQuery<Paging>, ApiQuery(f): ApiQuery<AlertFilter>) -> ApiResult<axum::Json<Page<Alert>>> {
    let hours = match f.hours {
        None => 168,
        Some(h) if (1..=8760).contains(&h) => h,
        Some(_) => return Err(ApiError::field("hours", "expected 1 to 8760")),
    };
    if let Some(s) = &f.severity
        && !matches!(s.as_str(), "critical" | "error" | "warning")
    {
        return Err(ApiError::field("severity", "expected critical, error or warning"));
    }
    let since = Utc::now() - Duration::hours(i64::from(hours));
    let mut out = Vec::new();
    if let Err(e) = state.meta.check() {
        out.push(Alert { id: "storage".into(), severity: "critical".into(), kind: "storage".into(), message: format!("the metadata store fails: {e}"), pipeline_id: None, run_id: None, at: Utc::now() });
    }
    let runs = state.meta.runs()?;
    let mut per_pipeline: HashMap<&str, Vec<&Run>> = HashMap::new();
    for r in &runs {
        per_pipeline.entry(r.pipeline_id.as_str()).or_default().push(r);
        if r.created_at < since {
            continue;
        }
        let at = r.finished_at.unwrap_or(r.created_at);
        let mk = |kind: &str, severity: &str, message: String| Alert {
            id: format!("{kind}:{}", r.id),
            severity: severity.into(),
            kind: kind.into(),
            message,
            pipeline_id: Some(r.pipeline_id.clone()),
            run_id: Some(r.id.clone()),
            at,
        };
        match r.status {
            RunStatus::Failed => out.push(mk("run_failed", "error", format!("run of `{}` failed: {}", r.pipeline_name, r.error.as_deref().unwrap_or("no reason recorded")))),
            RunStatus::Warning => out.push(mk(
                "run_dead_letters",
                "warning",
                format!("run of `{}` ended with {} dead-lettered and {} dropped records", r.pipeline_name, r.counts.dead_lettered, r.counts.dropped),
            )),
            RunStatus::Retrying => out.push(mk("run_retrying", "warning", format!("run of `{}` is retrying after an error", r.pipeline_name))),
            _ => {}
        }
    }
    for (pid, mut rs) in per_pipeline {
        rs.sort_by_key(|r| r.created_at);
        let last: Vec<&&Run> = rs.iter().rev().filter(|r| r.status.is_terminal()).take(3).collect();
        if last.len() == 3 && last.iter().all(|r| r.status == RunStatus::Failed) && last[0].created_at >= since {
            out.push(Alert {
                id: format!("pipeline_failing:{pid}"),
                severity: "critical".into(),
                kind: "pipeline_failing".into(),
                message: format!("the last 3 runs of `{}` failed", last[0].pipeline_name),
                pipeline_id: Some(pid.to_string()),
                run_id: Some(last[0].id.clone()),
                at: last[0].finished_at.unwrap_or(last[0].created_at),
            });
        }
    }
    let out = out.into_iter().filter(|a| f.severity.as_ref().is_none_or(|s| &a.severity == s)).collect();
    Ok(axum::Json(paging.apply(out, "-at")?))
}

/// How one pipeline performs.
#[derive(Serialize, ToSchema)]
pub struct PipelinePerformance {
    pub pipeline_id: String,
    pub pipeline_name: String,
    pub runs: u64,
    pub successes: u64,
    pub failures: u64,
    pub success_rate: Option<f64>,
    /// Over finished runs.
    pub avg_duration_seconds: Option<f64>,
    pub p95_duration_seconds: Option<f64>,
    /// Records read per second, over finished runs.
    pub avg_throughput: Option<f64>,
    pub records_read: u64,
    pub records_written: u64,
    pub dead_lettered: u64,
    /// Dead-lettered and dropped records per record read.
    pub error_rate: Option<f64>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_status: Option<String>,
    /// Whether a run is active now.
    pub running: bool,
    /// Records read so far by the active run.
    pub live_records_read: Option<u64>,
}

impl Sortable for PipelinePerformance {
    const SORT_FIELDS: &'static [&'static str] = &["pipeline_name", "runs", "success_rate", "avg_duration_seconds", "avg_throughput", "records_written", "last_run_at"];
    fn sort_key(&self, field: &str) -> SortKey {
        match field {
            "pipeline_name" => (&self.pipeline_name).into(),
            "runs" => self.runs.into(),
            "success_rate" => self.success_rate.into(),
            "avg_duration_seconds" => self.avg_duration_seconds.into(),
            "avg_throughput" => self.avg_throughput.into(),
            "records_written" => self.records_written.into(),
            _ => self.last_run_at.into(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DaysQuery {
    /// Days of history (default 30).
    #[param(minimum = 1, maximum = 3650)]
    pub days: Option<u32>,
}

pub(crate) fn days(q: Option<u32>, default: u32) -> ApiResult<u32> {
    match q {
        None => Ok(default),
        Some(d) if (1..=3650).contains(&d) => Ok(d),
        Some(_) => Err(ApiError::field("days", "expected 1 to 3650")),
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p * (sorted.len() as f64)).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

pub(crate) fn performance(state: &AppState, name: &str, id: &str, runs: &[&Run]) -> PipelinePerformance {
    let now = Utc::now();
    let finished: Vec<&&Run> = runs.iter().filter(|r| r.status.is_terminal() && r.started_at.is_some()).collect();
    let mut durations: Vec<f64> = finished.iter().filter_map(|r| r.duration_seconds(now)).collect();
    durations.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let total_secs: f64 = durations.iter().sum();
    let read_finished: u64 = finished.iter().map(|r| r.counts.records_read).sum();
    let records_read: u64 = runs.iter().map(|r| r.counts.records_read).sum();
    let bad: u64 = runs.iter().map(|r| r.counts.dead_lettered + r.counts.dropped).sum();
    let last = runs.iter().max_by_key(|r| r.created_at);
    let active = runs.iter().find(|r| !r.status.is_terminal());
    PipelinePerformance {
        pipeline_id: id.into(),
        pipeline_name: name.into(),
        runs: runs.len() as u64,
        successes: runs.iter().filter(|r| matches!(r.status, RunStatus::Success | RunStatus::Warning)).count() as u64,
        failures: runs.iter().filter(|r| r.status == RunStatus::Failed).count() as u64,
        success_rate: success_rate(runs.iter().copied()),
        avg_duration_seconds: (!durations.is_empty()).then(|| total_secs / durations.len() as f64),
        p95_duration_seconds: percentile(&durations, 0.95),
        avg_throughput: (total_secs > 0.0).then(|| read_finished as f64 / total_secs),
        records_read,
        records_written: runs.iter().map(|r| r.counts.records_written).sum(),
        dead_lettered: runs.iter().map(|r| r.counts.dead_lettered).sum(),
        error_rate: (records_read > 0).then(|| bad as f64 / records_read as f64),
        last_run_at: last.map(|r| r.created_at),
        last_status: last.map(|r| r.status.to_string()),
        running: active.is_some(),
        live_records_read: active.and_then(|r| state.runs.progress(&r.id)).map(|p| runner::counts_of(&p.snapshot()).records_read),
    }
}

/// Per-pipeline run counts, durations, throughput and error rates over the last `days`.
#[utoipa::path(get, path = "/monitoring/pipeline-performance", tag = "monitoring", security(("bearer" = ["viewer"])), params(Paging, DaysQuery),
    responses((status = 200, description = "One entry per pipeline", body = Page<PipelinePerformance>)))]
async fn pipeline_performance(State(state): State<AppState>, _auth: Viewer, ApiQuery(paging): ApiQuery<Paging>, ApiQuery(q): ApiQuery<DaysQuery>) -> ApiResult<axum::Json<Page<PipelinePerformance>>> {
    let since = Utc::now() - Duration::days(i64::from(days(q.days, 30)?));
    let runs = state.meta.runs()?;
    let mut per: HashMap<&str, Vec<&Run>> = HashMap::new();
    for r in runs.iter().filter(|r| r.created_at >= since) {
        per.entry(r.pipeline_id.as_str()).or_default().push(r);
    }
    let items = state
        .meta
        .pipelines()?
        .iter()
        .map(|p| performance(&state, &p.name, &p.id, per.get(p.id.as_str()).map(Vec::as_slice).unwrap_or(&[])))
        .collect();
    Ok(axum::Json(paging.apply(items, "pipeline_name")?))
}

/// One component's health.
#[derive(Serialize, ToSchema)]
pub struct ComponentHealth {
    pub ok: bool,
    pub message: String,
}

/// The node's health.
#[derive(Serialize, ToSchema)]
pub struct SystemHealth {
    /// `ok` or `degraded`.
    pub status: String,
    pub version: String,
    pub uptime_seconds: f64,
    pub storage: ComponentHealth,
    /// This node's Raft role and its cluster's size (`follower of 3, leader 2`), or
    /// `standalone` without a cluster; `/cluster` has the members.
    pub cluster: String,
    pub active_runs: u64,
    pub websocket_clients: u64,
    /// Resident memory of the process, bytes (Linux).
    pub memory_rss_bytes: Option<u64>,
    pub cpu_count: u64,
    /// The node's data directory.
    pub data_dir: String,
}

pub(crate) fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Storage, uptime, active runs, memory.
#[utoipa::path(get, path = "/monitoring/system-health", tag = "monitoring", security(("bearer" = ["viewer"])),
    responses((status = 200, description = "Health", body = SystemHealth)))]
async fn system_health(State(state): State<AppState>, _auth: Viewer) -> axum::Json<SystemHealth> {
    let storage = match state.meta.check() {
        Ok(()) => ComponentHealth { ok: true, message: "the metadata store reads and writes".into() },
        Err(e) => ComponentHealth { ok: false, message: e.to_string() },
    };
    axum::Json(SystemHealth {
        status: if storage.ok { "ok" } else { "degraded" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        storage,
        cluster: match state.meta.node() {
            Some(n) => {
                let size = n.members().len();
                match n.leader() {
                    Some(l) if l == n.id => format!("leader of {size}"),
                    Some(l) => format!("{} of {size}, leader {l}", n.state_name()),
                    None => format!("{} of {size}, no leader", n.state_name()),
                }
            }
            None => "standalone".into(),
        },
        active_runs: state.runs.active_count() as u64,
        websocket_clients: crate::telemetry::WS_CLIENTS.get().max(0) as u64,
        memory_rss_bytes: rss_bytes(),
        cpu_count: std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1),
        data_dir: state.config.data_dir.display().to_string(),
    })
}
