//! The OpenAPI document: what the handlers' annotations say, plus what holds for every
//! operation — the security schemes (a bearer JWT or an API key, either one), and the error
//! responses every protected or parameterized operation can give, all with the one error
//! body.
//!
//! The role an operation needs is the scope of its security requirement (`viewer`,
//! `editor`, `admin`); the role tests read it from here and check the server enforces it.

use serde_json::{Value as Json, json};
use utoipa::OpenApi;

use crate::error::{ErrorBody, ErrorDetail, ErrorInfo};
use crate::runner::LiveEvent;

#[derive(OpenApi)]
#[openapi(
    info(title = "dagg admin API", description = "Pipelines, runs, connectors, transformations, users, monitoring and analytics of a dagg node. Authenticate with `POST /auth/login` and send `Authorization: Bearer <access_token>`, or send a personal API key as `X-API-Key`."),
    components(schemas(ErrorBody, ErrorInfo, ErrorDetail, LiveEvent)),
    tags(
        (name = "auth", description = "Log in, refresh, log out; your profile and API keys"),
        (name = "users", description = "User management (admin)"),
        (name = "pipelines", description = "Pipelines, their versions and runs"),
        (name = "runs", description = "Runs: status, logs, dead letters, cancel"),
        (name = "connectors", description = "Saved connector configurations"),
        (name = "transformations", description = "Saved transformation rules and previews"),
        (name = "monitoring", description = "Statistics, alerts, performance and health from the run history"),
        (name = "analytics", description = "Aggregates and time series of the run history"),
        (name = "system", description = "Health, metrics, audit log, settings"),
        (name = "cluster", description = "The cluster's members, leader and term; joining it")
    )
)]
pub struct Base;

fn err(description: &str) -> Json {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
}

/// Links from the operations that create things to those that use them, so clients (and
/// stateful testers) know where an id goes: (path, method, status, links to operation ids).
const LINKS: &[(&str, &str, &str, &[&str])] = &[
    (
        "/pipelines",
        "post",
        "201",
        &[
            "get_pipeline", "update_pipeline", "delete_pipeline", "list_versions", "diff_versions", "rollback", "clone_pipeline", "pause", "resume", "execute", "dry_run",
            "pipeline_runs",
        ],
    ),
    ("/pipelines/{id}/execute", "post", "202", &["get_run", "cancel_run", "run_logs", "run_dead_letters"]),
    ("/connectors", "post", "201", &["get_connector", "update_connector", "delete_connector", "test_connector"]),
    ("/transformations", "post", "201", &["get_transformation", "update_transformation", "delete_transformation"]),
    ("/users", "post", "201", &["get_user", "update_user", "delete_user"]),
    ("/me/api-keys", "post", "201", &["delete_api_key"]),
];

/// Adds what holds for every operation and returns the final document.
pub fn finish(doc: utoipa::openapi::OpenApi) -> Json {
    let mut v = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    v["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    v["info"]["license"] = json!({"name": "Apache-2.0", "identifier": "Apache-2.0"});
    let comps = v["components"].as_object_mut().expect("components");
    comps.insert(
        "securitySchemes".into(),
        json!({
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "An access token from `POST /auth/login`, or a personal API key"},
            "api_key": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "A personal API key from `POST /me/api-keys`"}
        }),
    );
    if let Some(paths) = v["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (method, op) in item.iter_mut() {
                if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch") {
                    continue;
                }
                let Some(op) = op.as_object_mut() else { continue };
                let secured = if let Some(Json::Array(reqs)) = op.get_mut("security") {
                    let extra: Vec<Json> = reqs.iter().filter_map(|r| r.get("bearer").map(|scopes| json!({"api_key": scopes}))).collect();
                    reqs.extend(extra);
                    !reqs.is_empty()
                } else {
                    false
                };
                let has_body = op.contains_key("requestBody");
                let has_params = op.get("parameters").and_then(Json::as_array).is_some_and(|p| !p.is_empty());
                let has_path_params = path.contains('{');
                let responses = op.entry("responses").or_insert_with(|| json!({})).as_object_mut().expect("responses");
                let mut add = |code: &str, d: &str| {
                    responses.entry(code.to_string()).or_insert_with(|| err(d));
                };
                if secured {
                    add("401", "Missing, invalid or expired credentials");
                    add("403", "The caller's role does not allow this");
                }
                if has_body || has_params {
                    add("400", "Invalid parameters or body; `details` names each field");
                }
                if has_body {
                    add("413", "The body is larger than the limit");
                    add("415", "The body is not `application/json`");
                    add("422", "The body is JSON of the wrong shape; `details` names the field");
                }
                if has_path_params {
                    add("404", "No such resource");
                }
            }
        }
    }
    for (path, method, status, targets) in LINKS {
        let Some(resp) = v["paths"][*path][*method]["responses"][*status].as_object_mut() else {
            panic!("the document lacks {method} {path} {status} for its links");
        };
        let links: serde_json::Map<String, Json> =
            targets.iter().map(|op| (op.to_string(), json!({"operationId": op, "parameters": {"id": "$response.body#/id"}}))).collect();
        resp.insert("links".into(), Json::Object(links));
    }
    v
}
