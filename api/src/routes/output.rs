//! `GET /runs/{id}/output`: the records in a run's file destination, so the UI can show what
//! a run wrote. Only file destinations (`json`, `jsonl`, `csv`, uncompressed) can be read
//! back here; the file is read as it is now (a later run of the same pipeline overwrites it).
//!
//! The file is streamed through the file connector's reader, so a file of any size costs a
//! bounded amount of memory: only the first `limit` records are kept, and a record over
//! [`MAX_SHOWN_RECORD`] bytes is skipped without being held (and not counted).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Viewer;
use crate::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::mask::masked;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(run_output))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// Which destination (index into `destinations`; 0 for `destination`).
    pub destination: Option<usize>,
    /// At most this many records (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// The first records of a run's file destination.
#[derive(Serialize, ToSchema)]
pub struct RunOutput {
    /// The destination file, relative to the data directory's `files/`.
    pub path: String,
    pub format: String,
    /// Records in the file.
    pub total: usize,
    /// The first `limit` records (secrets masked).
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Json>,
}

/// The largest record shown; larger ones are skipped by the reader.
pub const MAX_SHOWN_RECORD: u64 = 1 << 20;

/// Streams a file destination: how many records it holds and the first `limit` of them.
async fn read_records(files_dir: &std::path::Path, path: &str, format: &str, delimiter: Option<&Json>, limit: usize) -> Result<(usize, Vec<Json>), String> {
    if path.ends_with(".gz") {
        return Err("the destination file is compressed; read it with the CLI".into());
    }
    if !matches!(format, "json" | "jsonl" | "csv") {
        return Err(format!("`{format}` files cannot be read here"));
    }
    if !files_dir.join(path).is_file() {
        return Ok((0, Vec::new()));
    }
    let mut config = serde_json::json!({"path": path, "format": format});
    if let Some(d) = delimiter {
        config["delimiter"] = d.clone();
    }
    let doc = serde_json::json!({"connector_type": "file", "config": config});
    let mut errs = dagg_model::SpecErrors::default();
    let Some(spec) = dagg_model::spec::connector::parse_connector(&doc, "destination", dagg_model::spec::connector::Role::Source, &mut errs) else {
        return Err(format!("the destination cannot be read: {errs}"));
    };
    let limits = dagg_model::spec::pipeline::Limits { max_record_bytes: MAX_SHOWN_RECORD };
    let (mut total, mut records) = (0, Vec::new());
    let mut shown = Ok(());
    dagg_control::data::read_records(&spec, files_dir, &limits, |batch| {
        total += batch.len();
        for r in batch {
            if records.len() < limit {
                match serde_json::to_value(&r) {
                    Ok(v) => records.push(v),
                    Err(e) => {
                        shown = Err(format!("a record cannot be shown: {e}"));
                        return std::ops::ControlFlow::Break(());
                    }
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    })
    .await
    .map_err(|e| format!("cannot read the destination file: {e}"))?;
    shown?;
    Ok((total, records))
}

/// The records a run's file destination holds.
#[utoipa::path(get, path = "/runs/{id}/output", tag = "runs", security(("bearer" = ["viewer"])), params(("id" = String, Path), OutputQuery),
    responses((status = 200, description = "The destination's first records", body = RunOutput),
        (status = 409, description = "The destination is not a file that can be read here", body = ErrorBody)))]
async fn run_output(State(state): State<AppState>, _auth: Viewer, ApiPath(id): ApiPath<String>, ApiQuery(q): ApiQuery<OutputQuery>) -> ApiResult<axum::Json<RunOutput>> {
    let limit = match q.limit {
        None => 100,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(n) => return Err(ApiError::field("limit", format!("{n} is out of range; expected 1 to 1000"))),
    };
    let run = state.meta.run(&id)?.ok_or_else(|| ApiError::NotFound(format!("no run `{id}`")))?;
    let doc = state.meta.version(&run.pipeline_id, run.pipeline_version)?.map(|v| v.document);
    let Some(doc) = doc else {
        return Err(ApiError::Conflict("the run's pipeline version was deleted with its pipeline".into()));
    };
    let index = q.destination.unwrap_or(0);
    let dest = match doc.get("destinations").and_then(Json::as_array) {
        Some(list) => list.get(index).cloned(),
        None if index == 0 => doc.get("destination").cloned(),
        None => None,
    };
    let Some(dest) = dest else {
        return Err(ApiError::NotFound(format!("the pipeline has no destination {index}")));
    };
    let t = dest.get("connector_type").and_then(Json::as_str).unwrap_or("?");
    if t != "file" {
        return Err(ApiError::Conflict(format!("the destination is a `{t}` connector; only file destinations can be read here")));
    }
    let cfg = dest.get("config").cloned().unwrap_or_default();
    let path = cfg.get("path").and_then(Json::as_str).unwrap_or_default().to_string();
    let format = cfg.get("format").and_then(Json::as_str).unwrap_or("jsonl").to_string();
    let (total, records) = read_records(&state.config.files_dir(), &path, &format, cfg.get("delimiter"), limit).await.map_err(ApiError::Conflict)?;
    Ok(axum::Json(RunOutput { path, format, total, records: records.iter().map(masked).collect() }))
}
