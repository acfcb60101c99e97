//! The admin API through `Router::oneshot`: auth, roles on every documented route,
//! pipelines and their versions, runs, previews, masking and the error shape.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::{Value, json};

// ---------- auth ----------

/// A refresh token exchanged once and presented again is in two hands: the exchange is
/// refused and the whole session ends (its newer refresh and access tokens too), with an
/// audit entry. Before, the reuse was refused but the session lived on.
#[tokio::test]
async fn a_reused_refresh_token_ends_the_session() {
    let api = TestApi::new();
    let t = api.login_full("admin", ADMIN_PASSWORD).await;
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let r = api.call("POST", "/auth/refresh", None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let access2 = r.body["access_token"].as_str().unwrap().to_string();
    let refresh2 = r.body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(api.get("/me", &access2).await.status, StatusCode::OK);

    let r = api.call("POST", "/auth/refresh", None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("already used"), "{r:?}");
    assert_eq!(api.get("/me", &access2).await.status, StatusCode::UNAUTHORIZED, "the session's access token");
    assert_eq!(api.call("POST", "/auth/refresh", None, Some(json!({"refresh_token": refresh2}))).await.status, StatusCode::UNAUTHORIZED);

    // Another session of the same user is not touched; the audit log says what happened.
    let admin = api.admin().await;
    let audit = api.get("/audit?action=refresh_token_reused", &admin).await;
    assert_eq!(audit.status, StatusCode::OK, "{audit:?}");
    assert_eq!(audit.body["items"].as_array().map(Vec::len), Some(1), "{audit:?}");
    // An unknown token is still only refused.
    let r = api.call("POST", "/auth/refresh", None, Some(json!({"refresh_token": "not-a-token"}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.body["error"]["message"].as_str().unwrap().contains("already used"));
}

#[tokio::test]
async fn login_refresh_and_logout() {
    let api = TestApi::new();
    let t = api.login_full("admin", ADMIN_PASSWORD).await;
    let access = t["access_token"].as_str().unwrap();
    let refresh = t["refresh_token"].as_str().unwrap();
    assert_eq!(t["token_type"], "bearer");
    assert_eq!(t["user"]["role"], "admin");
    assert!(t["user"].get("password_hash").is_none());
    assert_eq!(api.get("/me", access).await.body["username"], "admin");

    // Wrong password, unknown user: the same 401.
    let r = api.call("POST", "/auth/login", None, Some(json!({"username": "admin", "password": "nope"}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    let r = api.call("POST", "/auth/login", None, Some(json!({"username": "nobody", "password": "nope"}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Refresh rotates: the new pair works, the old refresh token does not.
    let r = api.call("POST", "/auth/refresh", None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let access2 = r.body["access_token"].as_str().unwrap().to_string();
    let refresh2 = r.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh);
    assert_eq!(api.get("/me", &access2).await.status, StatusCode::OK);

    // Logout ends the session: its access tokens and its refresh token stop working.
    assert_eq!(api.call("POST", "/auth/logout", Some(&access2), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/me", &access2).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.get("/me", access).await.status, StatusCode::UNAUTHORIZED, "same session");
    assert_eq!(api.call("POST", "/auth/refresh", None, Some(json!({"refresh_token": refresh2}))).await.status, StatusCode::UNAUTHORIZED);

    // A garbage or tampered token is 401 with the error shape.
    let r = api.get("/pipelines", "not-a-jwt").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let mut forged = api.admin().await;
    forged.push('x');
    assert_eq!(api.get("/pipelines", &forged).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn login_by_email_and_disabled_users_cannot() {
    let api = TestApi::new();
    let admin = api.admin().await;
    api.user(&admin, "erin", "editor").await;
    let r = api.call("POST", "/auth/login", None, Some(json!({"email": "ERIN@example.com", "password": "erin-password"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let token = r.body["access_token"].as_str().unwrap().to_string();
    let id = r.body["user"]["id"].as_str().unwrap().to_string();
    let r = api.put(&format!("/users/{id}"), &admin, json!({"disabled": true})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(api.get("/me", &token).await.status, StatusCode::UNAUTHORIZED, "disabling ends sessions");
    let r = api.call("POST", "/auth/login", None, Some(json!({"username": "erin", "password": "erin-password"}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_user_and_address() {
    let api = TestApi::with(|c| c.login_max_failures = 3);
    for _ in 0..3 {
        let r = api.call("POST", "/auth/login", None, Some(json!({"username": "admin", "password": "wrong"}))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = api.call("POST", "/auth/login", None, Some(json!({"username": "admin", "password": ADMIN_PASSWORD}))).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&wait), "{wait}");
    assert_eq!(r.body["error"]["code"], "too_many_requests");
    // Another username is not blocked.
    let r = api.call("POST", "/auth/login", None, Some(json!({"username": "someone", "password": "x"}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn personal_api_keys_authenticate_until_deleted() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let viewer = api.user(&admin, "vic", "viewer").await;
    let r = api.post("/me/api-keys", &viewer, json!({"name": "script"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let key = r.body["key"].as_str().unwrap().to_string();
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("dagg_"));
    let by_header = api
        .raw(Request::builder().uri("/pipelines").header("x-api-key", &key).body(Body::empty()).unwrap())
        .await;
    assert_eq!(by_header.status, StatusCode::OK, "{by_header:?}");
    assert_eq!(api.get("/me", &key).await.body["username"], "vic");
    // The key has the viewer's role.
    assert_eq!(api.post("/pipelines", &key, json!({})).await.status, StatusCode::FORBIDDEN);
    let list = api.get("/me/api-keys", &viewer).await;
    assert_eq!(list.body["total"], 1);
    assert!(list.body["items"][0].get("key").is_none(), "the key is shown once");
    assert_eq!(api.call("DELETE", &format!("/me/api-keys/{id}"), Some(&viewer), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/me", &key).await.status, StatusCode::UNAUTHORIZED);
}

/// A password change revokes the user's API keys (but those the change lists to keep); so
/// does a password set by an admin, and deleting the user.
#[tokio::test]
async fn a_password_change_revokes_the_users_api_keys() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let vic = api.user(&admin, "vic", "viewer").await;
    let mut keys = Vec::new();
    for name in ["old-script", "kept-script"] {
        let r = api.post("/me/api-keys", &vic, json!({"name": name})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        keys.push((r.body["id"].as_str().unwrap().to_string(), r.body["key"].as_str().unwrap().to_string()));
    }
    for (_, key) in &keys {
        assert_eq!(api.get("/me", key).await.status, StatusCode::OK);
    }
    let r = api.put("/me/password", &vic, json!({"current_password": "vic-password", "new_password": "vic-password-2", "keep_api_keys": [keys[1].0]})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert_eq!(api.get("/me", &keys[0].1).await.status, StatusCode::UNAUTHORIZED, "the old key still works");
    assert_eq!(api.get("/me", &keys[1].1).await.status, StatusCode::OK, "the key listed to keep was revoked");
    // An admin's reset revokes the rest.
    let id = api.get("/me", &keys[1].1).await.body["id"].as_str().unwrap().to_string();
    let r = api.put(&format!("/users/{id}"), &admin, json!({"password": "reset-password-3"})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(api.get("/me", &keys[1].1).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn user_management_rules() {
    let api = TestApi::new();
    let admin = api.admin().await;
    api.user(&admin, "ann", "viewer").await;
    let r = api.post("/users", &admin, json!({"username": "ANN", "password": "whatever1", "role": "viewer"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    let r = api.post("/users", &admin, json!({"username": "bob", "password": "short", "role": "viewer"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["details"][0]["path"], "password");
    let r = api.post("/users", &admin, json!({"username": "bob", "password": "long-enough", "role": "superuser"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["details"][0]["path"], "role");
    let me = api.get("/me", &admin).await.body;
    let my_id = me["id"].as_str().unwrap();
    assert_eq!(api.call("DELETE", &format!("/users/{my_id}"), Some(&admin), None).await.status, StatusCode::CONFLICT);
    assert_eq!(api.put(&format!("/users/{my_id}"), &admin, json!({"role": "viewer"})).await.status, StatusCode::CONFLICT, "last admin");
    let users = api.get("/users?role=viewer&sort=-username", &admin).await;
    assert_eq!(users.body["total"], 1);
    assert_eq!(users.body["items"][0]["username"], "ann");
}

// ---------- roles on every documented route ----------

fn required_role(op: &Value) -> Option<String> {
    let reqs = op.get("security")?.as_array()?;
    reqs.iter().find_map(|r| r.get("bearer")).and_then(|s| s[0].as_str()).map(str::to_string)
}

fn rank(role: &str) -> u8 {
    match role {
        "viewer" => 1,
        "editor" => 2,
        "admin" => 3,
        other => panic!("unknown role scope {other}"),
    }
}

/// Operations anyone logged in may call although they are not GETs: their own session,
/// profile and keys.
fn self_service(path: &str) -> bool {
    path == "/auth/logout" || path.starts_with("/me")
}

#[tokio::test]
async fn every_route_in_the_openapi_document_enforces_its_role() {
    let api = TestApi::new();
    let doc = api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let admin = api.admin().await;
    let editor = api.user(&admin, "ed", "editor").await;
    let viewer = api.user(&admin, "vi", "viewer").await;
    let tokens = [("viewer", viewer.clone()), ("editor", editor.clone()), ("admin", admin.clone())];
    let paths = doc.body["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if !matches!(method.as_str(), "get" | "post" | "put" | "delete" | "patch") {
                continue;
            }
            let concrete = path.replace("{id}", "no-such-id").replace("{version}", "1");
            let body = op.get("requestBody").map(|_| json!({}));
            let Some(role) = required_role(op) else {
                assert!(matches!(path.as_str(), "/auth/login" | "/auth/refresh" | "/health"), "{method} {path} is public; only login, refresh and health may be");
                continue;
            };
            // Writes need an editor, except self-service; user management needs an admin.
            if method != "get" && !self_service(path) {
                assert!(rank(&role) >= 2, "{method} {path} is a write open to {role}");
            }
            if path.starts_with("/users") || path.starts_with("/audit") || path.starts_with("/settings") {
                assert_eq!(role, "admin", "{method} {path}");
            }
            let r = api.call(method, &concrete, None, body.clone()).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} without a token: {r:?}");
            assert_eq!(r.body["error"]["code"], "unauthorized");
            for (who, token) in &tokens {
                // Logging out would end the session the other checks use: log in afresh.
                let fresh;
                let token = if path == "/auth/logout" {
                    let (user, password) = match *who {
                        "admin" => ("admin", ADMIN_PASSWORD.to_string()),
                        "editor" => ("ed", "ed-password".to_string()),
                        _ => ("vi", "vi-password".to_string()),
                    };
                    fresh = api.login(user, &password).await;
                    &fresh
                } else {
                    token
                };
                let r = api.call(method, &concrete, Some(token), body.clone()).await;
                if rank(who) < rank(&role) {
                    assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path} as {who} (needs {role}): {r:?}");
                    assert_eq!(r.body["error"]["code"], "forbidden");
                } else {
                    assert!(r.status != StatusCode::FORBIDDEN && r.status != StatusCode::UNAUTHORIZED, "{method} {path} as {who} (needs {role}): {r:?}");
                    assert!(r.status.as_u16() < 500, "{method} {path} as {who}: {r:?}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} operations in the document");
    // The WebSocket is not in the document; it needs a token too.
    assert_eq!(api.call("GET", "/ws", None, None).await.status, StatusCode::UNAUTHORIZED);
    // The guide's endpoints are all there.
    for p in [
        "/users", "/users/{id}", "/pipelines", "/pipelines/{id}", "/pipelines/{id}/execute", "/pipelines/{id}/runs", "/connectors", "/connectors/{id}", "/transformations",
        "/transformations/{id}", "/monitoring/pipeline-stats", "/monitoring/alerts", "/monitoring/pipeline-performance", "/monitoring/system-health", "/analytics/data",
        "/analytics/timeseries", "/analytics/top-pipelines", "/analytics/pipeline-trends",
    ] {
        assert!(paths.contains_key(p), "{p} is missing from the document");
    }
}

// ---------- pipelines ----------

#[tokio::test]
async fn a_bad_pipeline_document_is_400_with_every_path() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let doc = json!({
        "name": "x",
        "colour": "blue",
        "source": {"connector_type": "file", "config": {"path": "a.jsonl", "format": "jsonl"}},
        "destination": {"connector_type": "file", "config": {"path": "/etc/out.jsonl", "format": "yaml"}},
        "schedule": {"type": "cron", "expression": "0 8 * *"}
    });
    let r = api.post("/pipelines", &admin, doc.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.body["error"]["code"], "validation_failed");
    let paths: Vec<&str> = r.body["error"]["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["colour", "destination.config.format", "schedule.expression"]);
    assert!(r.body["error"]["details"].as_array().unwrap().iter().all(|d| !d["message"].as_str().unwrap().is_empty()));
    // A path outside the file folder is refused once the rest is right.
    let mut fixed = doc.clone();
    fixed.as_object_mut().unwrap().remove("colour");
    fixed["destination"]["config"]["format"] = json!("jsonl");
    fixed["schedule"]["expression"] = json!("0 8 * * *");
    let r = api.post("/pipelines", &admin, fixed).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["details"][0]["path"], "destination.config.path");
    // validate says the same without saving.
    let r = api.post("/pipelines/validate", &admin, doc).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["valid"], false);
    assert_eq!(r.body["errors"].as_array().unwrap().len(), 3);
    assert_eq!(api.get("/pipelines", &admin).await.body["total"], 0);
}

#[tokio::test]
async fn pipelines_keep_versions_diff_roll_back_clone_and_pause() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let editor = api.user(&admin, "ed", "editor").await;
    let v1 = file_pipeline("orders", "in.jsonl", "out.jsonl");
    let r = api.post("/pipelines", &editor, v1.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["document"], v1);
    assert_eq!(r.body["source_type"], "file");

    let mut v2 = v1.clone();
    v2["description"] = json!("completed orders only");
    v2["destination"]["config"]["path"] = json!("out2.jsonl");
    let r = api.put(&format!("/pipelines/{id}"), &editor, v2.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["description"], "completed orders only");
    // The same document again is no new version.
    assert_eq!(api.put(&format!("/pipelines/{id}"), &editor, v2.clone()).await.body["version"], 2);
    // An invalid update changes nothing.
    let r = api.put(&format!("/pipelines/{id}"), &editor, json!({"name": "broken"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let versions = api.get(&format!("/pipelines/{id}/versions"), &editor).await;
    assert_eq!(versions.body["total"], 2);
    assert_eq!(versions.body["items"][0]["version"], 2, "newest first");
    assert_eq!(versions.body["items"][1]["comment"], "created");
    assert_eq!(api.get(&format!("/pipelines/{id}/versions/1"), &editor).await.body["document"], v1);
    assert_eq!(api.get(&format!("/pipelines/{id}/versions/9"), &editor).await.status, StatusCode::NOT_FOUND);

    let diff = api.get(&format!("/pipelines/{id}/diff?from=1&to=2"), &editor).await;
    assert_eq!(diff.status, StatusCode::OK, "{diff:?}");
    let changes: Vec<(String, String)> =
        diff.body["changes"].as_array().unwrap().iter().map(|c| (c["path"].as_str().unwrap().to_string(), c["op"].as_str().unwrap().to_string())).collect();
    assert_eq!(changes, [("destination.config.path".to_string(), "changed".to_string()), ("description".to_string(), "added".to_string())]);

    let r = api.post(&format!("/pipelines/{id}/rollback"), &editor, json!({"version": 1})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["version"], 3);
    assert_eq!(r.body["document"], v1);
    assert_eq!(api.get(&format!("/pipelines/{id}/versions/3"), &editor).await.body["comment"], "rollback to version 1");

    let r = api.post(&format!("/pipelines/{id}/clone"), &editor, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let copy = r.body["id"].as_str().unwrap().to_string();
    assert_ne!(copy, id);
    assert_eq!(r.body["name"], "orders (copy)");
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["document"]["source"], v1["source"]);

    assert_eq!(api.post(&format!("/pipelines/{id}/pause"), &editor, json!({})).await.body["paused"], true);
    let paused = api.get("/pipelines?paused=true", &editor).await;
    assert_eq!(paused.body["total"], 1);
    assert_eq!(paused.body["items"][0]["id"], id);
    assert_eq!(api.post(&format!("/pipelines/{id}/resume"), &editor, json!({})).await.body["paused"], false);

    let list = api.get("/pipelines?sort=name&page_size=1&page=2", &editor).await;
    assert_eq!(list.body["total"], 2);
    assert_eq!(list.body["items"][0]["name"], "orders (copy)");
    assert_eq!(api.get("/pipelines?q=COPY", &editor).await.body["total"], 1);
    assert_eq!(api.get("/pipelines?sort=colour", &editor).await.status, StatusCode::BAD_REQUEST);

    assert_eq!(api.call("DELETE", &format!("/pipelines/{copy}"), Some(&editor), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&format!("/pipelines/{copy}"), &editor).await.status, StatusCode::NOT_FOUND);
    // Every change is in the audit log, with who made it.
    let audit = api.get("/audit?resource=pipeline&sort=at", &admin).await;
    let actions: Vec<&str> = audit.body["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["create", "update", "rollback", "clone", "pause", "resume", "delete"]);
    assert!(audit.body["items"].as_array().unwrap().iter().all(|e| e["actor"] == "ed"));
}

#[tokio::test]
async fn execute_runs_a_file_pipeline_to_success_with_logs_and_counts() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let viewer = api.user(&admin, "vi", "viewer").await;
    write_orders(&api.files().join("in.jsonl"), 10);
    let r = api.post("/pipelines", &admin, file_pipeline("orders", "in.jsonl", "out/done.jsonl")).await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = api.post(&format!("/pipelines/{id}/execute"), &admin, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    assert!(matches!(r.body["status"].as_str(), Some("pending" | "running")), "{r:?}");
    let run_id = r.body["id"].as_str().unwrap().to_string();
    let run = api.wait_run(&viewer, &run_id).await;
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["counts"]["records_read"], 10);
    assert_eq!(run["counts"]["records_written"], 5);
    assert_eq!(run["counts"]["filtered"], 5);
    assert_eq!(run["pipeline_version"], 1);
    assert_eq!(run["triggered_by"], "admin");
    assert!(run["finished_at"].is_string() && run["duration_seconds"].as_f64().unwrap() >= 0.0);
    let out = std::fs::read_to_string(api.files().join("out/done.jsonl")).unwrap();
    assert_eq!(out.lines().count(), 5);
    // What the run wrote, through the API; `limit` outside 1..=1000 is a 400 naming it.
    let written = api.get(&format!("/runs/{run_id}/output?limit=2"), &viewer).await;
    assert_eq!(written.status, StatusCode::OK, "{written:?}");
    assert_eq!((written.body["total"].as_u64(), written.body["records"].as_array().map(Vec::len)), (Some(5), Some(2)));
    for bad in ["0", "1001"] {
        let r = api.get(&format!("/runs/{run_id}/output?limit={bad}"), &viewer).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "limit={bad}: {r:?}");
        assert_eq!(r.body["error"]["details"][0]["path"], "limit");
    }
    // A record over the shown-record cap (1 MiB) is skipped by the streaming reader, never held.
    let mut f = std::fs::OpenOptions::new().append(true).open(api.files().join("out/done.jsonl")).unwrap();
    std::io::Write::write_all(&mut f, format!("{{\"big\":\"{}\"}}\n", "x".repeat(3 << 20)).as_bytes()).unwrap();
    let written = api.get(&format!("/runs/{run_id}/output?limit=10"), &viewer).await;
    assert_eq!(written.status, StatusCode::OK, "{written:?}");
    assert_eq!((written.body["total"].as_u64(), written.body["records"].as_array().map(Vec::len)), (Some(5), Some(5)));

    let runs = api.get(&format!("/pipelines/{id}/runs"), &viewer).await;
    assert_eq!(runs.body["total"], 1);
    assert_eq!(runs.body["items"][0]["id"], run_id);
    assert_eq!(api.get(&format!("/pipelines/{id}/runs?status=failed"), &viewer).await.body["total"], 0);
    assert_eq!(api.get(&format!("/pipelines/{id}"), &viewer).await.body["last_run"]["id"], run_id);

    let logs = api.get(&format!("/runs/{run_id}/logs"), &viewer).await;
    let kinds: Vec<&str> = logs.body["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["queued", "started", "finished"]);
    let finished = &logs.body["items"][2];
    assert_eq!(finished["data"]["records_written"], 5);
    assert_eq!(finished["data"]["status"], "success");

    // Monitoring and analytics come from this history.
    let stats = api.get("/monitoring/pipeline-stats", &viewer).await.body;
    assert_eq!(stats["runs_total"], 1);
    assert_eq!(stats["runs_by_status"]["success"], 1);
    assert_eq!(stats["records_written_total"], 5);
    assert_eq!(stats["success_rate"], 1.0);
    let perf = api.get("/monitoring/pipeline-performance", &viewer).await.body;
    assert_eq!(perf["items"][0]["records_read"], 10);
    assert_eq!(perf["items"][0]["successes"], 1);
    let top = api.get("/analytics/top-pipelines?by=records_written", &viewer).await.body;
    assert_eq!(top["items"][0]["pipeline_id"], id);
    assert_eq!(top["items"][0]["value"], 5.0);
    let series = api.get("/analytics/timeseries?metric=records_read&interval=hour&days=1", &viewer).await.body;
    let total: f64 = series["points"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).sum();
    assert_eq!(total, 10.0);
    let data = api.get("/analytics/data", &viewer).await.body;
    assert_eq!(data["runs"], 1);
    assert_eq!(data["records_read"], 10);
    let trends = api.get("/analytics/pipeline-trends", &viewer).await.body;
    assert_eq!(trends["items"][0]["records_written"]["current"], 5.0);
    assert_eq!(api.get("/monitoring/alerts", &viewer).await.body["total"], 0);

    // The runtime's metrics and the API's are both in /metrics.
    let m = api.get("/metrics", &viewer).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(m.text.contains("dagg_records_read_total{pipeline=\"orders\"}"), "{}", &m.text[..m.text.len().min(3000)]);
    assert!(m.text.contains("dagg_api_requests_total{method=\"GET\",route=\"/runs/{id}\",status=\"2xx\"}"));
    assert!(m.text.contains("dagg_api_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn dead_letters_of_a_run_and_a_warning_alert() {
    let api = TestApi::new();
    let admin = api.admin().await;
    std::fs::write(api.files().join("in.jsonl"), "{\"status\":\"completed\",\"n\":1}\nnot json\n{\"status\":\"completed\",\"n\":2}\n").unwrap();
    let mut doc = file_pipeline("dl", "in.jsonl", "out.jsonl");
    doc["error_handling"] = json!({"dead_letter": {"connector_type": "file", "config": {"path": "dead.jsonl", "format": "jsonl"}}});
    let id = api.post("/pipelines", &admin, doc).await.body["id"].as_str().unwrap().to_string();
    let run_id = api.post(&format!("/pipelines/{id}/execute"), &admin, json!({})).await.body["id"].as_str().unwrap().to_string();
    let run = api.wait_run(&admin, &run_id).await;
    assert_eq!(run["status"], "warning", "{run}");
    assert_eq!(run["counts"]["dead_lettered"], 1);
    let dl = api.get(&format!("/runs/{run_id}/dead-letters"), &admin).await;
    assert_eq!(dl.status, StatusCode::OK, "{dl:?}");
    assert_eq!(dl.body["total"], 1);
    assert_eq!(dl.body["items"][0]["stage"], "source");
    assert_eq!(dl.body["items"][0]["raw"], "not json");
    assert_eq!(dl.body["items"][0]["position"]["line"], 2);
    let alerts = api.get("/monitoring/alerts", &admin).await.body;
    assert_eq!(alerts["total"], 1);
    assert_eq!(alerts["items"][0]["kind"], "run_dead_letters");
    assert_eq!(alerts["items"][0]["run_id"], run_id);

    // A dry run shows the same without writing anything.
    std::fs::remove_file(api.files().join("out.jsonl")).unwrap();
    let dry = api.post(&format!("/pipelines/{id}/dry-run"), &admin, json!({"limit": 5})).await;
    assert_eq!(dry.status, StatusCode::OK, "{dry:?}");
    assert_eq!(dry.body["records"].as_array().unwrap().len(), 2);
    assert_eq!(dry.body["rejected"][0]["stage"], "source");
    assert_eq!(dry.body["records_read"], 3);
    assert!(!api.files().join("out.jsonl").exists(), "a dry run writes nothing");
}

#[tokio::test]
async fn a_running_run_can_be_cancelled_and_only_one_runs_at_a_time() {
    let api = TestApi::new();
    let admin = api.admin().await;
    write_orders(&api.files().join("big.jsonl"), 400_000);
    let id = api.post("/pipelines", &admin, file_pipeline("big", "big.jsonl", "big-out.jsonl")).await.body["id"].as_str().unwrap().to_string();
    let r = api.post(&format!("/pipelines/{id}/execute"), &admin, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let run_id = r.body["id"].as_str().unwrap().to_string();
    let again = api.post(&format!("/pipelines/{id}/execute"), &admin, json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");
    let r = api.post(&format!("/runs/{run_id}/cancel"), &admin, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    let run = api.wait_run(&admin, &run_id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["counts"]["records_written"], 0, "a cancelled run commits nothing");
    assert!(!api.files().join("big-out.jsonl").exists());
    let kinds: Vec<String> = api.get(&format!("/runs/{run_id}/logs"), &admin).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"cancel_requested".to_string()) && kinds.last().unwrap() == "finished", "{kinds:?}");
    assert_eq!(api.post(&format!("/runs/{run_id}/cancel"), &admin, json!({})).await.status, StatusCode::CONFLICT, "it already ended");
}

// ---------- transformations, connectors, masking ----------

#[tokio::test]
async fn transformation_preview_gives_output_and_per_record_errors() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let rules = json!([
        {"type": "field_mapping", "field_name": "product_name", "operation": "title_case"},
        {"type": "record_filter", "condition": {"field": "status", "operator": "equals", "value": "completed"}},
        {"type": "field_validation", "field_name": "customer_email", "validation_type": "email_format", "on_failure": "reject"}
    ]);
    let records = json!([
        {"product_name": "wireless mouse", "status": "completed", "customer_email": "a@example.com"},
        {"product_name": "usb cable", "status": "pending", "customer_email": "b@example.com"},
        {"product_name": "desk lamp", "status": "completed", "customer_email": "not an email"}
    ]);
    let r = api.post("/transformations/preview", &admin, json!({"transformations": rules, "records": records})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["records"], json!([{"product_name": "Wireless Mouse", "status": "completed", "customer_email": "a@example.com"}]));
    assert_eq!(r.body["filtered"], 1);
    assert_eq!(r.body["errors"].as_array().unwrap().len(), 1, "{r:?}");
    assert_eq!(r.body["errors"][0]["index"], 2);
    assert_eq!(r.body["errors"][0]["stage"], "transformations[2]");

    let bad = api.post("/transformations/preview", &admin, json!({"transformations": [{"type": "field_mapping", "operation": "shout"}], "records": []})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["error"]["details"].as_array().unwrap().iter().all(|d| d["path"].as_str().unwrap().starts_with("transformations[0]")), "{bad:?}");

    // Saved rules are validated the same way.
    let r = api.post("/transformations", &admin, json!({"name": "clean", "transformations": rules})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r = api.post("/transformations", &admin, json!({"name": "bad", "transformations": [{"type": "nope"}]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(api.get("/transformations", &admin).await.body["total"], 1);
}

#[tokio::test]
async fn secrets_are_masked_in_every_response_and_kept_when_sent_back() {
    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let api = TestApi::with(|c| c.master_key = Some(KEY.into()));
    let admin = api.admin().await;
    // The guide's connector examples (5.3.5), secrets and all.
    let rest = json!({"connector_type": "rest_api", "config": {
        "name": "E-commerce API", "url": "https://api.ecommerce-platform.com/v1", "auth_method": "bearer_token",
        "auth_params": {"token": "sekrit-token"}, "connection_timeout": 30, "retry_attempts": 3, "rate_limit": 1000, "rate_limit_period": "minute"}});
    let pg = json!({"connector_type": "postgresql", "config": {
        "name": "Sales Database", "host": "sales-db.example.com", "port": 5432, "database": "sales_db", "username": "data_pipeline_user",
        "password": "sekrit-password", "ssl_mode": "require", "connection_pool_size": 10, "max_overflow": 20, "connect_timeout": 10, "schema": "public"}});
    let mut ids = Vec::new();
    for c in [&rest, &pg] {
        let r = api.post("/connectors", &admin, c.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        assert!(!r.text.contains("sekrit"), "{}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let shown = api.get(&format!("/connectors/{}", ids[1]), &admin).await;
    assert_eq!(shown.body["config"]["password"], "********");
    assert_eq!(shown.body["config"]["username"], "data_pipeline_user");
    assert_eq!(api.get(&format!("/connectors/{}", ids[0]), &admin).await.body["config"]["auth_params"]["token"], "********");
    for path in ["/connectors".to_string(), format!("/connectors/{}", ids[0]), "/audit".to_string()] {
        let r = api.get(&path, &admin).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(!r.text.contains("sekrit"), "{path}: {}", r.text);
    }
    // Stored encrypted (AES-256-GCM under the master key), never in the clear.
    let key = dagg_control::secrets::MasterKey::from_text(KEY).unwrap();
    let before = api.state.meta.connector(&ids[1]).unwrap().unwrap().config["password"].as_str().unwrap().to_string();
    assert!(before.starts_with("enc:v1:"), "{before}");
    assert_eq!(key.decrypt(&before).unwrap(), "sekrit-password");
    // Sending the masked value back with another change (not of the endpoint) keeps the secret.
    let mut back = json!({"connector_type": "postgresql", "config": shown.body["config"]});
    back["config"]["connection_pool_size"] = json!(11);
    let r = api.put(&format!("/connectors/{}", ids[1]), &admin, back).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(!r.text.contains("sekrit"));
    let stored = api.state.meta.connector(&ids[1]).unwrap().unwrap();
    assert_eq!(stored.config["password"], before.as_str(), "the same ciphertext");
    assert_eq!(stored.config["connection_pool_size"], 11);

    // Pipeline documents too: a REST destination's token is encrypted, masked, and a PUT of
    // the masked document is no new version.
    let doc = json!({
        "name": "to rest",
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "destination": {"connector_type": "rest_api", "config": {"url": "https://hooks.example.com/orders", "auth_method": "bearer_token", "auth_params": {"token": "sekrit-pipeline"}}}
    });
    let r = api.post("/pipelines", &admin, doc).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert!(!r.text.contains("sekrit"), "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    let stored = api.state.meta.version(&pid, 1).unwrap().unwrap().document;
    let token = stored["destination"]["config"]["auth_params"]["token"].as_str().unwrap();
    assert_eq!(key.decrypt(token).unwrap(), "sekrit-pipeline");
    let again = api.put(&format!("/pipelines/{pid}"), &admin, r.body["document"].clone()).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.body["version"], 1, "nothing changed");
    for path in [format!("/pipelines/{pid}/versions/1"), format!("/pipelines/{pid}/diff?from=1&to=1")] {
        assert!(!api.get(&path, &admin).await.text.contains("sekrit"), "{path}");
    }

    // A connector test says whether it can work.
    let ok = api.post("/connectors", &admin, json!({"name": "out", "connector_type": "file", "config": {"path": "missing.jsonl", "format": "jsonl"}})).await;
    let cid = ok.body["id"].as_str().unwrap();
    let t = api.post(&format!("/connectors/{cid}/test?role=source"), &admin, json!({})).await;
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(t.body["ok"], false);
    assert!(t.body["message"].as_str().unwrap().contains("missing.jsonl"), "{t:?}");
    let t = api.post(&format!("/connectors/{cid}/test?role=sink"), &admin, json!({})).await;
    assert_eq!(t.body["ok"], true, "{t:?}");
    std::fs::write(api.files().join("missing.jsonl"), "{}\n").unwrap();
    assert_eq!(api.post(&format!("/connectors/{cid}/test?role=source"), &admin, json!({})).await.body["ok"], true);
}

/// The issue's scenario: an admin saved a REST connector with a bearer token; an editor
/// points it (or a pipeline that holds such a token) at a listener of theirs and sends the
/// token back masked. Refused, naming the secret; the listener hears nothing, not even from
/// a connection test.
#[tokio::test]
async fn an_editor_cannot_send_a_stored_secret_to_a_new_endpoint() {
    use std::sync::{Arc, Mutex};
    let heard: Arc<Mutex<Vec<String>>> = Arc::default();
    let h = heard.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let h = h.clone();
        async move {
            h.lock().unwrap().push(format!("{headers:?}"));
            axum::Json(json!([]))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let theirs = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let api = TestApi::with(|c| c.master_key = Some("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f".into()));
    let admin = api.admin().await;
    let editor = api.user(&admin, "ed", "editor").await;
    let saved = json!({"name": "crm", "connector_type": "rest_api", "config": {"url": "https://crm.example.com/v1/items", "auth_method": "bearer_token", "auth_params": {"token": "admins-token"}}});
    let r = api.post("/connectors", &admin, saved).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let id = r.body["id"].as_str().unwrap().to_string();
    let mut moved = api.get(&format!("/connectors/{id}"), &editor).await.body;
    assert_eq!(moved["config"]["auth_params"]["token"], "********");
    moved["config"]["url"] = json!(format!("http://{theirs}/steal"));
    let r = api.put(&format!("/connectors/{id}"), &editor, json!({"name": "crm", "connector_type": "rest_api", "config": moved["config"]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.body["error"]["details"][0]["path"], "config.auth_params.token", "{r:?}");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("config.url"), "{r:?}");
    let t = api.post(&format!("/connectors/{id}/test"), &editor, json!({})).await;
    assert_eq!(t.status, StatusCode::OK, "{t:?}");
    // Entering the secret again is a change of the editor's own.
    moved["config"]["auth_params"]["token"] = json!("editors-own-token");
    let r = api.put(&format!("/connectors/{id}"), &editor, json!({"name": "crm", "connector_type": "rest_api", "config": moved["config"]})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let _ = api.post(&format!("/connectors/{id}/test"), &editor, json!({})).await;
    let said = heard.lock().unwrap().join("\n");
    assert!(!said.contains("admins-token"), "{said}");

    // The same through a pipeline document.
    let doc = json!({"name": "p", "source": {"connector_type": "rest_api", "config": {"url": "https://crm.example.com/v1/items", "auth_method": "bearer_token", "auth_params": {"token": "admins-token"}}},
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}}});
    let r = api.post("/pipelines", &admin, doc).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let pid = r.body["id"].as_str().unwrap().to_string();
    let mut d = r.body["document"].clone();
    d["source"]["config"]["url"] = json!(format!("http://{theirs}/steal"));
    let r = api.put(&format!("/pipelines/{pid}"), &editor, d).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.body["error"]["details"][0]["path"], "source.config.auth_params.token", "{r:?}");
    assert!(!heard.lock().unwrap().join("\n").contains("admins-token"));
}

#[tokio::test]
async fn every_error_has_the_one_shape() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let check = |r: &common::Resp, status: StatusCode, code: &str| {
        assert_eq!(r.status, status, "{r:?}");
        assert_eq!(r.body["error"]["code"], code, "{r:?}");
        assert!(r.body["error"]["message"].is_string() && r.body["error"]["details"].is_array(), "{r:?}");
    };
    check(&api.get("/no/such/route", &admin).await, StatusCode::NOT_FOUND, "not_found");
    check(&api.call("PATCH", "/pipelines", Some(&admin), None).await, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    check(&api.get("/pipelines/nope", &admin).await, StatusCode::NOT_FOUND, "not_found");
    let raw = |body: &str, ct: Option<&str>| {
        let mut b = Request::builder().method("POST").uri("/users").header("authorization", format!("Bearer {admin}"));
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        b.body(Body::from(body.to_string())).unwrap()
    };
    check(&api.raw(raw("{\"username\": ", Some("application/json"))).await, StatusCode::BAD_REQUEST, "invalid_json");
    let r = api.raw(raw(r#"{"username": "x", "password": "12345678", "role": "admin", "age": 3}"#, Some("application/json"))).await;
    check(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let r = api.raw(raw(r#"{"username": 5, "password": "12345678", "role": "admin"}"#, Some("application/json"))).await;
    check(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert_eq!(r.body["error"]["details"][0]["path"], "username");
    check(&api.raw(raw("{}", None)).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let mut b = Request::builder().method("POST").uri("/pipelines").header("authorization", format!("Bearer {admin}")).header("content-type", "application/json");
    b = b.header("content-length", big.len());
    check(&api.raw(b.body(Body::from(big)).unwrap()).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    check(&api.get("/pipelines?page=0", &admin).await, StatusCode::BAD_REQUEST, "validation_failed");
    check(&api.get("/pipelines?page_size=abc", &admin).await, StatusCode::BAD_REQUEST, "invalid_query");
}

/// The `retention` setting is checked field by field; pruning on the leader removes what
/// it no longer keeps (an ended run with its log, ended sessions) and keeps the rest (a
/// run that has not ended, however old; audit entries within their days).
#[tokio::test]
async fn the_retention_setting_is_checked_and_old_metadata_is_pruned() {
    use dagg_control::meta::{MetaCommand, Run, Trigger};
    use dagg_control::scheduler::ManualClock;
    let api = TestApi::new();
    let admin = api.admin().await;
    let viewer = api.user(&admin, "vi", "viewer").await;
    for (bad, path) in [(json!({"audit_days": -3}), "retention.audit_days"), (json!({"keep_days": 3}), "retention.keep_days"), (json!(30), "retention")] {
        let r = api.put("/settings", &admin, json!({"retention": bad})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
        assert_eq!(r.body["error"]["details"][0]["path"], path, "{r:?}");
    }
    assert_eq!(api.put("/settings", &viewer, json!({"retention": {"runs_days": 30}})).await.status, StatusCode::FORBIDDEN);
    let r = api.put("/settings", &admin, json!({"retention": {"runs_days": 30}})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");

    write_orders(&api.files().join("in.jsonl"), 4);
    let id = api.post("/pipelines", &admin, file_pipeline("orders", "in.jsonl", "out.jsonl")).await.body["id"].as_str().unwrap().to_string();
    let run_id = api.post(&format!("/pipelines/{id}/execute"), &admin, json!({})).await.body["id"].as_str().unwrap().to_string();
    assert_eq!(api.wait_run(&admin, &run_id).await["status"], "success");
    // A run recorded long ago that never started.
    let long_ago = chrono::Utc::now() - chrono::Duration::days(400);
    api.state.meta.apply(MetaCommand::CreateRun { run: Run::pending("r-waiting".into(), &id, "orders", 1, Trigger::Manual, "admin".into(), long_ago) }).unwrap();
    assert!(!api.state.meta.run_events(&run_id).unwrap().is_empty());

    // Nothing is old yet.
    assert_eq!(dagg_control::retention::prune_now(&api.state.control).unwrap(), None);
    // 200 days on: the run (30 days) and the sessions (30 days to expire, then 7) are past
    // their days; audit entries (365) are not.
    api.state.scheduler.set_clock(std::sync::Arc::new(ManualClock::new(chrono::Utc::now() + chrono::Duration::days(200))));
    let counts = dagg_control::retention::prune_now(&api.state.control).unwrap().expect("something pruned");
    assert_eq!((counts.runs, counts.audit), (1, 0), "{counts:?}");
    assert!(counts.sessions >= 2 && counts.run_events >= 2, "{counts:?}");
    assert!(api.state.meta.run(&run_id).unwrap().is_none());
    assert!(api.state.meta.run_events(&run_id).unwrap().is_empty());
    assert!(api.state.meta.run("r-waiting").unwrap().is_some());
    assert!(!api.state.meta.audit().unwrap().is_empty());
    assert_eq!(api.get("/me", &admin).await.status, StatusCode::UNAUTHORIZED, "its session is gone");
    // The pipeline's data stays.
    assert!(api.files().join("out.jsonl").exists());
    assert_eq!(dagg_control::retention::prune_now(&api.state.control).unwrap(), None);
}

#[tokio::test]
async fn health_docs_and_security_headers_need_no_internet() {
    let api = TestApi::new();
    let h = api.call("GET", "/health", None, None).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.body["storage"], true);
    assert_eq!(h.headers["x-content-type-options"], "nosniff");
    assert_eq!(h.headers["x-frame-options"], "DENY");
    assert!(h.headers["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    for page in ["/docs/", "/redoc/"] {
        let r = api.call("GET", page, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{page}");
        assert!(!r.text.contains("https://"), "{page} loads something from the internet: {}", r.text);
    }
    let init = api.call("GET", "/docs/swagger-initializer.js", None, None).await;
    assert_eq!(init.status, StatusCode::OK);
    assert!(init.text.contains("/openapi.json"));
    let js = api.call("GET", "/docs/swagger-ui-bundle.js", None, None).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.text.len() > 100_000, "the bundle is served from the binary");
    let doc = api.call("GET", "/openapi.json", None, None).await.body;
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

#[tokio::test]
async fn cors_is_off_by_default_and_configurable() {
    let api = TestApi::new();
    let req = || Request::builder().method("OPTIONS").uri("/pipelines").header("origin", "https://ui.example").header("access-control-request-method", "GET").body(Body::empty()).unwrap();
    let r = api.raw(req()).await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let api = TestApi::with(|c| c.cors_origins = vec!["https://ui.example".into()]);
    let r = api.raw(req()).await;
    assert_eq!(r.headers["access-control-allow-origin"], "https://ui.example");
}

#[tokio::test]
async fn runs_left_running_by_a_dead_process_end_failed_on_restart() {
    let dir = tempfile::Builder::new().prefix("dagg-api-restart").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut config = dagg_api::ApiConfig::new(dir.path());
    config.admin_password = Some(ADMIN_PASSWORD.into());
    {
        let (state, _) = dagg_api::AppState::open(config.clone()).unwrap();
        let now = chrono::Utc::now();
        let run = dagg_api::meta::Run {
            id: "r1".into(),
            pipeline_id: "p1".into(),
            pipeline_name: "p".into(),
            pipeline_version: 1,
            status: dagg_model::RunStatus::Pending,
            trigger: dagg_control::Trigger::Manual,
            triggered_by: "admin".into(),
            created_at: now,
            started_at: None,
            finished_at: None,
            counts: Default::default(),
            error: None,
            resumptions: 0,
            handed_over: false,
        };
        state.meta.apply(dagg_api::meta::MetaCommand::CreateRun { run }).unwrap();
        state.meta.apply(dagg_api::meta::MetaCommand::UpdateRun { id: "r1".into(), status: dagg_model::RunStatus::Running, at: now, counts: None, error: None }).unwrap();
        state.meta.flush().unwrap();
    }
    let (state, boot) = dagg_api::AppState::open(config).unwrap();
    assert!(!boot.created_admin, "the admin exists already");
    let r = state.meta.run("r1").unwrap().unwrap();
    assert_eq!(r.status, dagg_model::RunStatus::Failed);
    assert!(r.error.unwrap().contains("server stopped"));
}

#[tokio::test]
async fn a_generated_admin_password_is_returned_once() {
    let dir = tempfile::Builder::new().prefix("dagg-api-gen").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (state, boot) = dagg_api::AppState::open(dagg_api::ApiConfig::new(dir.path())).unwrap();
    let pw = boot.generated_admin_password.expect("generated");
    assert!(pw.len() >= 16);
    let api = common::TestApi { app: dagg_api::app(state.clone()), state, dir };
    api.login("admin", &pw).await;
    drop(api);
}

/// A connector stored by an earlier version with a secret in the clear (a REST header value,
/// which was not a secret then) still shows masked, is sealed when the node starts, and
/// opens to the value it had.
#[tokio::test]
async fn a_clear_secret_stored_by_an_earlier_version_is_masked_and_sealed_at_start() {
    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let api = TestApi::with(|c| c.master_key = Some(KEY.into()));
    let admin = api.admin().await;
    let r = api.post("/connectors", &admin, json!({"name": "crm", "connector_type": "rest_api", "config": {"url": "https://crm.example.com/v1", "headers": {"X-Tenant": "tenant-7"}}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let id = r.body["id"].as_str().unwrap().to_string();
    // As an earlier version stored it: the header value in the clear.
    let mut old = api.state.meta.connector(&id).unwrap().unwrap();
    old.config["headers"]["X-Tenant"] = json!("old-clear-header-5b2e");
    api.state.meta.apply(dagg_api::meta::MetaCommand::PutConnector { connector: old }).unwrap();
    let r = api.get(&format!("/connectors/{id}"), &admin).await;
    assert!(!r.text.contains("old-clear-header-5b2e"), "{}", r.text);
    assert_eq!(r.body["config"]["headers"]["X-Tenant"], "********");
    assert_eq!(api.state.control.seal_connectors().unwrap(), 1);
    let stored = api.state.meta.connector(&id).unwrap().unwrap().config["headers"]["X-Tenant"].as_str().unwrap().to_string();
    assert!(stored.starts_with("enc:v1:"), "{stored}");
    assert_eq!(dagg_control::secrets::MasterKey::from_text(KEY).unwrap().decrypt(&stored).unwrap(), "old-clear-header-5b2e");
    // Nothing left to seal.
    assert_eq!(api.state.control.seal_connectors().unwrap(), 0);
}

// ---------- Kafka client properties ----------

/// An editor cannot make librdkafka load a library: `plugin.library.paths` in a Kafka
/// connector's `properties` is refused with 400 naming the key, for a saved connector and a
/// pipeline alike, before any client is created; an allowed property still saves.
#[tokio::test]
async fn kafka_properties_outside_the_allow_list_are_refused_naming_the_key() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let editor = api.user(&admin, "ed", "editor").await;
    let kafka = |props: Value| json!({"connector_type": "kafka", "config": {"name": "k", "topic": "orders", "properties": props}});
    let r = api.post("/connectors", &editor, kafka(json!({"plugin.library.paths": "/tmp/evil.so"}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.body["error"]["details"][0]["path"], "config.properties.plugin.library.paths", "{r:?}");
    assert!(r.body["error"]["details"][0]["message"].as_str().unwrap().contains("not an allowed Kafka client property"), "{r:?}");
    let doc = json!({
        "name": "k2f",
        "source": kafka(json!({"sasl.kerberos.kinit.cmd": "touch /tmp/x", "linger.ms": "5"})),
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}}
    });
    let r = api.post("/pipelines", &editor, doc).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    let paths: Vec<&str> = r.body["error"]["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["source.config.properties.sasl.kerberos.kinit.cmd"], "{r:?}");
    let r = api.post("/connectors", &editor, kafka(json!({"linger.ms": "5", "session.timeout.ms": "6000"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
}

// ---------- certificate paths ----------

/// A database's `ssl_root_cert` follows the file-path rule: an editor cannot probe
/// `/etc/shadow` (absolute) or climb out with `..`; the error names the field. A path
/// relative to the files folder still saves.
#[tokio::test]
async fn certificate_paths_follow_the_file_path_rule() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let editor = api.user(&admin, "ed", "editor").await;
    let pg = |cert: &str| json!({"connector_type": "postgresql", "config": {
        "name": "db", "host": "127.0.0.1", "database": "test", "username": "u", "ssl_mode": "verify-ca", "ssl_root_cert": cert, "table": "t"}});
    let r = api.post("/connectors", &editor, pg("/etc/shadow")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.body["error"]["details"][0]["path"], "config.ssl_root_cert", "{r:?}");
    let doc = json!({
        "name": "p2f",
        "source": pg("../../etc/shadow"),
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}}
    });
    let r = api.post("/pipelines", &editor, doc.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.body["error"]["details"][0]["path"], "source.config.ssl_root_cert", "{r:?}");
    let r = api.post("/connectors", &editor, pg("certs/ca.pem")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let mut ok = doc;
    ok["source"] = pg("certs/ca.pem");
    assert_eq!(api.post("/pipelines", &editor, ok).await.status, StatusCode::CREATED);
}

// ---------- the egress setting ----------

#[tokio::test]
async fn the_egress_setting_is_admin_only_checked_by_entry_and_refuses_what_it_denies() {
    let api = TestApi::new();
    let admin = api.admin().await;
    let editor = api.user(&admin, "ed", "editor").await;
    let viewer = api.user(&admin, "vi", "viewer").await;
    let deny_loopback = json!({"egress": {"deny": ["127.0.0.1/32"]}});
    for who in [&editor, &viewer] {
        let r = api.put("/settings", who, deny_loopback.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    }
    let r = api.put("/settings", &admin, json!({"egress": {"allow": ["10.0.0.0/8"], "deny": ["db.internal", "not a host"]}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.body["error"]["details"][0]["path"], "egress.deny[1]", "{r:?}");
    assert!(r.text.contains("`not a host`"), "{r:?}");
    let r = api.put("/settings", &admin, json!({"egress": {"deny": [], "allow_all": true}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(api.get("/settings", &admin).await.body.get("egress").is_none(), "a refused setting is not stored");

    // A REST endpoint on this machine, reached until the deny list names it.
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { axum::Json(json!([{"id": 1}])) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = api.post("/connectors", &admin, json!({"name": "items", "connector_type": "rest_api", "config": {"url": format!("http://{addr}/items")}})).await;
    assert_eq!(c.status, StatusCode::CREATED, "{c:?}");
    let test = format!("/connectors/{}/test?role=source", c.body["id"].as_str().unwrap());
    assert_eq!(api.post(&test, &admin, json!({})).await.body["ok"], true);
    let reached = hits.load(std::sync::atomic::Ordering::SeqCst);

    let r = api.put("/settings", &admin, deny_loopback).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["egress"]["deny"], json!(["127.0.0.1/32"]));
    let t = api.post(&test, &editor, json!({})).await;
    assert_eq!(t.body["ok"], false, "{t:?}");
    let message = t.body["message"].as_str().unwrap();
    assert!(message.contains("egress deny list") && message.contains("`127.0.0.1`"), "{message}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), reached, "a denied endpoint was contacted");

    // Removed: reached again.
    assert_eq!(api.put("/settings", &admin, json!({"egress": {}})).await.status, StatusCode::OK);
    assert_eq!(api.post(&test, &editor, json!({})).await.body["ok"], true);
}
