//! A test API: a fresh data directory, the router called through `oneshot` (no socket).

#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use dagg_api::{ApiConfig, AppState, app};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ADMIN_PASSWORD: &str = "admin-password-1";

pub struct TestApi {
    pub app: Router,
    pub state: AppState,
    pub dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.text)
    }
}

impl TestApi {
    pub fn new() -> TestApi {
        Self::with(|_| {})
    }

    pub fn with(tweak: impl FnOnce(&mut ApiConfig)) -> TestApi {
        let dir = tempfile::Builder::new().prefix("dagg-api-test").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let mut config = ApiConfig::new(dir.path());
        config.admin_password = Some(ADMIN_PASSWORD.into());
        config.progress_interval = std::time::Duration::from_millis(100);
        tweak(&mut config);
        let (state, boot) = AppState::open(config).unwrap();
        assert!(boot.created_admin);
        TestApi { app: app(state.clone()), state, dir }
    }

    pub fn files(&self) -> std::path::PathBuf {
        self.dir.path().join("files")
    }

    pub async fn raw(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp { status, headers, body, text }
    }

    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut b = Request::builder().method(Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap()).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b.header("content-type", "application/json").body(Body::from(v.to_string())).unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.raw(req).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call("POST", path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call("PUT", path, Some(token), Some(body)).await
    }

    /// Logs in; the whole token response.
    pub async fn login_full(&self, user: &str, password: &str) -> Value {
        let r = self.call("POST", "/auth/login", None, Some(json!({"username": user, "password": password}))).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body
    }

    pub async fn login(&self, user: &str, password: &str) -> String {
        self.login_full(user, password).await["access_token"].as_str().unwrap().to_string()
    }

    pub async fn admin(&self) -> String {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Creates a user with `role` and returns their access token.
    pub async fn user(&self, admin: &str, name: &str, role: &str) -> String {
        let r = self.post("/users", admin, json!({"username": name, "password": format!("{name}-password"), "role": role, "email": format!("{name}@example.com")})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        self.login(name, &format!("{name}-password")).await
    }

    /// Polls a run until it ends; its final state.
    pub async fn wait_run(&self, token: &str, run_id: &str) -> Value {
        for _ in 0..600 {
            let r = self.get(&format!("/runs/{run_id}"), token).await;
            assert_eq!(r.status, StatusCode::OK, "{r:?}");
            if matches!(r.body["status"].as_str(), Some("success" | "warning" | "failed" | "cancelled")) {
                return r.body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("run {run_id} did not end in 30 s");
    }
}

/// A file-to-file pipeline document.
pub fn file_pipeline(name: &str, input: &str, output: &str) -> Value {
    json!({
        "name": name,
        "source": {"connector_type": "file", "config": {"path": input, "format": "jsonl"}},
        "transformations": [
            {"type": "record_filter", "condition": {"field": "status", "operator": "equals", "value": "completed"}}
        ],
        "destination": {"connector_type": "file", "config": {"path": output, "format": "jsonl"}}
    })
}

/// Writes `n` orders, every other one `completed`.
pub fn write_orders(path: &std::path::Path, n: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        let status = if i % 2 == 0 { "completed" } else { "pending" };
        writeln!(f, r#"{{"order_id":"ORD-{i}","status":"{status}","quantity":2,"price":9.5}}"#).unwrap();
    }
}
