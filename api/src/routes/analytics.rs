//! Analytics (guide 7.2.6): aggregates, time series, top pipelines and trends of the stored
//! run history. Runs count in the period they were created in.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use chrono::{DateTime, Duration, DurationRound, Utc};
use dagg_model::RunStatus;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Viewer;
use crate::error::{ApiError, ApiQuery, ApiResult};
use crate::meta::Run;
use crate::routes::monitoring::{by_status, days, success_rate};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(data)).routes(routes!(timeseries)).routes(routes!(top_pipelines)).routes(routes!(pipeline_trends))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Period {
    /// Start (RFC 3339; default: `days` before `until`).
    pub since: Option<DateTime<Utc>>,
    /// End (RFC 3339; default: now).
    pub until: Option<DateTime<Utc>>,
    /// Days before `until` when `since` is absent (default 30).
    #[param(minimum = 1, maximum = 3650)]
    pub days: Option<u32>,
}

impl Period {
    fn resolve(&self) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
        let until = self.until.unwrap_or_else(Utc::now);
        let since = match self.since {
            Some(s) => s,
            None => until - Duration::days(i64::from(days(self.days, 30)?)),
        };
        if since >= until {
            return Err(ApiError::field("since", "must be before `until`"));
        }
        Ok((since, until))
    }
}

fn runs_in(state: &AppState, since: DateTime<Utc>, until: DateTime<Utc>) -> ApiResult<Vec<Run>> {
    Ok(state.meta.runs()?.into_iter().filter(|r| r.created_at >= since && r.created_at < until).collect())
}

fn avg_duration<'a>(runs: impl Iterator<Item = &'a Run>) -> Option<f64> {
    let now = Utc::now();
    let d: Vec<f64> = runs.filter(|r| r.status.is_terminal()).filter_map(|r| r.duration_seconds(now)).collect();
    (!d.is_empty()).then(|| d.iter().sum::<f64>() / d.len() as f64)
}

/// Totals over a period.
#[derive(Serialize, ToSchema)]
pub struct AnalyticsData {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub runs: u64,
    pub runs_by_status: BTreeMap<String, u64>,
    /// Distinct pipelines that ran.
    pub pipelines_run: u64,
    pub records_read: u64,
    pub records_written: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    pub filtered: u64,
    pub avg_duration_seconds: Option<f64>,
    pub success_rate: Option<f64>,
}

/// Totals of the run history over a period.
#[utoipa::path(get, path = "/analytics/data", tag = "analytics", security(("bearer" = ["viewer"])), params(Period),
    responses((status = 200, description = "Totals", body = AnalyticsData)))]
async fn data(State(state): State<AppState>, _auth: Viewer, ApiQuery(p): ApiQuery<Period>) -> ApiResult<axum::Json<AnalyticsData>> {
    let (since, until) = p.resolve()?;
    let runs = runs_in(&state, since, until)?;
    let pipelines: std::collections::HashSet<&str> = runs.iter().map(|r| r.pipeline_id.as_str()).collect();
    Ok(axum::Json(AnalyticsData {
        since,
        until,
        runs: runs.len() as u64,
        runs_by_status: by_status(runs.iter()),
        pipelines_run: pipelines.len() as u64,
        records_read: runs.iter().map(|r| r.counts.records_read).sum(),
        records_written: runs.iter().map(|r| r.counts.records_written).sum(),
        dead_lettered: runs.iter().map(|r| r.counts.dead_lettered).sum(),
        dropped: runs.iter().map(|r| r.counts.dropped).sum(),
        filtered: runs.iter().map(|r| r.counts.filtered).sum(),
        avg_duration_seconds: avg_duration(runs.iter()),
        success_rate: success_rate(runs.iter()),
    }))
}

/// What a time series counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Runs,
    FailedRuns,
    RecordsRead,
    RecordsWritten,
    DeadLettered,
    AvgDurationSeconds,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Hour,
    Day,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Default `records_written`.
    pub metric: Option<Metric>,
    /// Bucket size (default `day`).
    pub interval: Option<Interval>,
    pub pipeline_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Point {
    /// The bucket's start.
    pub t: DateTime<Utc>,
    pub value: f64,
}

#[derive(Serialize, ToSchema)]
pub struct TimeSeries {
    pub metric: Metric,
    pub interval: Interval,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Every bucket of the period, empty ones as 0.
    pub points: Vec<Point>,
}

/// A metric of the run history per hour or day, every bucket present.
#[utoipa::path(get, path = "/analytics/timeseries", tag = "analytics", security(("bearer" = ["viewer"])), params(Period, SeriesQuery),
    responses((status = 200, description = "The series", body = TimeSeries)))]
async fn timeseries(State(state): State<AppState>, _auth: Viewer, ApiQuery(p): ApiQuery<Period>, ApiQuery(q): ApiQuery<SeriesQuery>) -> ApiResult<axum::Json<TimeSeries>> {
    let (since, until) = p.resolve()?;
    let metric = q.metric.unwrap_or(Metric::RecordsWritten);
    let interval = q.interval.unwrap_or(Interval::Day);
    let step = match interval {
        Interval::Hour => Duration::hours(1),
        Interval::Day => Duration::days(1),
    };
    let start = since.duration_trunc(step).map_err(|e| ApiError::field("since", e.to_string()))?;
    let buckets = ((until - start).num_seconds() / step.num_seconds() + 1) as usize;
    if buckets > 5000 {
        return Err(ApiError::field("interval", format!("the period has {buckets} buckets of this size; at most 5000")));
    }
    let runs: Vec<Run> = runs_in(&state, since, until)?.into_iter().filter(|r| q.pipeline_id.as_ref().is_none_or(|id| &r.pipeline_id == id)).collect();
    let mut sums = vec![0f64; buckets];
    let mut n = vec![0u64; buckets];
    let now = Utc::now();
    for r in &runs {
        let i = ((r.created_at - start).num_seconds() / step.num_seconds()) as usize;
        if i >= buckets {
            continue;
        }
        let v = match metric {
            Metric::Runs => 1.0,
            Metric::FailedRuns => f64::from(u8::from(r.status == RunStatus::Failed)),
            Metric::RecordsRead => r.counts.records_read as f64,
            Metric::RecordsWritten => r.counts.records_written as f64,
            Metric::DeadLettered => r.counts.dead_lettered as f64,
            Metric::AvgDurationSeconds => match r.duration_seconds(now).filter(|_| r.status.is_terminal()) {
                Some(d) => d,
                None => continue,
            },
        };
        sums[i] += v;
        n[i] += 1;
    }
    let points = (0..buckets)
        .map(|i| Point {
            t: start + step * i as i32,
            value: if metric == Metric::AvgDurationSeconds { if n[i] > 0 { sums[i] / n[i] as f64 } else { 0.0 } } else { sums[i] },
        })
        .collect();
    Ok(axum::Json(TimeSeries { metric, interval, since, until, points }))
}

/// What ranks pipelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ranking {
    RecordsWritten,
    RecordsRead,
    Runs,
    SuccessRate,
    Throughput,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// Default `records_written`.
    pub by: Option<Ranking>,
    /// How many, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct TopPipeline {
    pub pipeline_id: String,
    pub pipeline_name: String,
    /// The ranking value.
    pub value: f64,
    pub runs: u64,
    pub success_rate: Option<f64>,
    pub records_written: u64,
}

#[derive(Serialize, ToSchema)]
pub struct TopPipelines {
    pub by: Ranking,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub items: Vec<TopPipeline>,
}

/// The pipelines that did the most (or best) over a period.
#[utoipa::path(get, path = "/analytics/top-pipelines", tag = "analytics", security(("bearer" = ["viewer"])), params(Period, TopQuery),
    responses((status = 200, description = "Best first", body = TopPipelines)))]
async fn top_pipelines(State(state): State<AppState>, _auth: Viewer, ApiQuery(p): ApiQuery<Period>, ApiQuery(q): ApiQuery<TopQuery>) -> ApiResult<axum::Json<TopPipelines>> {
    let (since, until) = p.resolve()?;
    let by = q.by.unwrap_or(Ranking::RecordsWritten);
    let limit = match q.limit {
        None => 10,
        Some(l) if (1..=100).contains(&l) => l as usize,
        Some(_) => return Err(ApiError::field("limit", "expected 1 to 100")),
    };
    let runs = runs_in(&state, since, until)?;
    let mut per: HashMap<&str, Vec<&Run>> = HashMap::new();
    for r in &runs {
        per.entry(r.pipeline_id.as_str()).or_default().push(r);
    }
    let now = Utc::now();
    let mut items: Vec<TopPipeline> = per
        .iter()
        .filter_map(|(id, rs)| {
            let written: u64 = rs.iter().map(|r| r.counts.records_written).sum();
            let read: u64 = rs.iter().map(|r| r.counts.records_read).sum();
            let sr = success_rate(rs.iter().copied());
            let secs: f64 = rs.iter().filter(|r| r.status.is_terminal()).filter_map(|r| r.duration_seconds(now)).sum();
            let read_done: u64 = rs.iter().filter(|r| r.status.is_terminal()).map(|r| r.counts.records_read).sum();
            let value = match by {
                Ranking::RecordsWritten => written as f64,
                Ranking::RecordsRead => read as f64,
                Ranking::Runs => rs.len() as f64,
                Ranking::SuccessRate => sr?,
                Ranking::Throughput => (secs > 0.0).then(|| read_done as f64 / secs)?,
            };
            let name = rs.iter().max_by_key(|r| r.created_at).map(|r| r.pipeline_name.clone()).unwrap_or_default();
            Some(TopPipeline { pipeline_id: id.to_string(), pipeline_name: name, value, runs: rs.len() as u64, success_rate: sr, records_written: written })
        })
        .collect();
    items.sort_by(|a, b| b.value.partial_cmp(&a.value).unwrap_or(std::cmp::Ordering::Equal).then_with(|| a.pipeline_name.cmp(&b.pipeline_name)));
    items.truncate(limit);
    Ok(axum::Json(TopPipelines { by, since, until, items }))
}

/// One measure in two periods.
#[derive(Serialize, ToSchema)]
pub struct Delta {
    pub current: Option<f64>,
    pub previous: Option<f64>,
    /// Relative change, current over previous minus 1 (none when previous is 0 or absent).
    pub change: Option<f64>,
}

impl Delta {
    fn new(current: Option<f64>, previous: Option<f64>) -> Delta {
        let change = match (current, previous) {
            (Some(c), Some(p)) if p != 0.0 => Some(c / p - 1.0),
            _ => None,
        };
        Delta { current, previous, change }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PipelineTrend {
    pub pipeline_id: String,
    pub pipeline_name: String,
    pub runs: Delta,
    pub success_rate: Delta,
    pub avg_duration_seconds: Delta,
    pub records_written: Delta,
    /// `up`, `down` or `flat`: records written, current period against the one before.
    pub trend: String,
}

#[derive(Serialize, ToSchema)]
pub struct PipelineTrends {
    /// Days in each period.
    pub days: u32,
    pub current_since: DateTime<Utc>,
    pub previous_since: DateTime<Utc>,
    pub items: Vec<PipelineTrend>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrendQuery {
    /// Days in each period (default 7): the last `days` against the `days` before.
    #[param(minimum = 1, maximum = 365)]
    pub days: Option<u32>,
}

/// Each pipeline's last period against the one before it.
#[utoipa::path(get, path = "/analytics/pipeline-trends", tag = "analytics", security(("bearer" = ["viewer"])), params(TrendQuery),
    responses((status = 200, description = "Trends of pipelines that ran in either period", body = PipelineTrends)))]
async fn pipeline_trends(State(state): State<AppState>, _auth: Viewer, ApiQuery(q): ApiQuery<TrendQuery>) -> ApiResult<axum::Json<PipelineTrends>> {
    let d = match q.days {
        None => 7,
        Some(d) if (1..=365).contains(&d) => d,
        Some(_) => return Err(ApiError::field("days", "expected 1 to 365")),
    };
    let now = Utc::now();
    let cur = now - Duration::days(i64::from(d));
    let prev = cur - Duration::days(i64::from(d));
    let runs = runs_in(&state, prev, now + Duration::seconds(1))?;
    let mut per: BTreeMap<&str, (Vec<&Run>, Vec<&Run>)> = BTreeMap::new();
    for r in &runs {
        let e = per.entry(r.pipeline_id.as_str()).or_default();
        if r.created_at >= cur { e.0.push(r) } else { e.1.push(r) }
    }
    let items = per
        .into_iter()
        .map(|(id, (c, p))| {
            let written = |rs: &[&Run]| rs.iter().map(|r| r.counts.records_written as f64).sum::<f64>();
            let (wc, wp) = (written(&c), written(&p));
            let trend = if wc > wp * 1.05 {
                "up"
            } else if wc < wp * 0.95 {
                "down"
            } else {
                "flat"
            };
            let name = c.iter().chain(p.iter()).max_by_key(|r| r.created_at).map(|r| r.pipeline_name.clone()).unwrap_or_default();
            PipelineTrend {
                pipeline_id: id.to_string(),
                pipeline_name: name,
                runs: Delta::new(Some(c.len() as f64), Some(p.len() as f64)),
                success_rate: Delta::new(success_rate(c.iter().copied()), success_rate(p.iter().copied())),
                avg_duration_seconds: Delta::new(avg_duration(c.iter().copied()), avg_duration(p.iter().copied())),
                records_written: Delta::new(Some(wc), Some(wp)),
                trend: trend.into(),
            }
        })
        .collect();
    Ok(axum::Json(PipelineTrends { days: d, current_since: cur, previous_since: prev, items }))
}
