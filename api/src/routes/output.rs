//! `GET /runs/{id}/output`: the records in a run's file destination, so the UI can show what
//! a run wrote. Only file destinations (`json`, `jsonl`, `csv`, uncompressed) can be read
//! back here; the file is read as it is now (a later run of the same pipeline overwrites it).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
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

/// Reads a file destination's records (CSV rows become objects of strings).
fn read_records(path: &std::path::Path, format: &str) -> Result<Vec<Json>, String> {
    if path.extension().is_some_and(|e| e == "gz") {
        return Err("the destination file is compressed; read it with the CLI".into());
    }
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read the destination file: {e}")),
    };
    match format {
        "json" if text.trim().is_empty() => Ok(Vec::new()),
        "json" => match serde_json::from_str::<Json>(&text) {
            Ok(Json::Array(a)) => Ok(a),
            Ok(_) => Err("the destination file is not a JSON array".into()),
            Err(e) => Err(format!("the destination file is not JSON: {e}")),
        },
        "jsonl" => text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).map_err(|e| format!("a line is not JSON: {e}"))).collect(),
        "csv" => {
            let mut lines = text.lines().filter(|l| !l.is_empty());
            let Some(header) = lines.next() else { return Ok(Vec::new()) };
            let names: Vec<&str> = header.split(',').collect();
            Ok(lines
                .map(|l| Json::Object(names.iter().zip(l.split(',')).map(|(k, v)| (k.to_string(), Json::String(v.to_string()))).collect::<Map<_, _>>()))
                .collect())
        }
        other => Err(format!("`{other}` files cannot be read here")),
    }
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
    let full = state.config.files_dir().join(&path);
    let all = read_records(&full, &format).map_err(ApiError::Conflict)?;
    Ok(axum::Json(RunOutput { path, format, total: all.len(), records: all.iter().take(limit).map(masked).collect() }))
}
