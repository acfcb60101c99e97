//! The API's own metrics, in the process-wide Prometheus registry beside the runtime's:
//! requests by method, route template and status class, and their latency. Labels come from
//! the route template (`/pipelines/{id}`), never from the request's own path, so their
//! number is bounded.

use std::any::Any;
use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{HistogramVec, IntCounterVec, IntGauge, register_histogram_vec, register_int_counter_vec, register_int_gauge};

use crate::error::{ErrorBody, ErrorInfo};

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dagg_api_requests_total", "API requests, by method, route template and status class", &["method", "route", "status"])
        .expect("metric registers once")
});

pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "dagg_api_request_duration_seconds",
        "API request latency, by method and route template",
        &["method", "route"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]
    )
    .expect("metric registers once")
});

/// Runs started on this node that have not ended (the control plane keeps it).
pub use dagg_control::ACTIVE_RUNS;

pub static WS_CLIENTS: LazyLock<IntGauge> =
    LazyLock::new(|| register_int_gauge!("dagg_api_websocket_clients", "Connected /ws clients").expect("metric registers once"));

/// Counts and times each request to a known route (added with `route_layer`, where the
/// matched route is known).
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let class = match resp.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    // Only known methods become labels.
    let method = match method.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method,
        _ => "OTHER".into(),
    };
    REQUESTS.with_label_values(&[method.as_str(), route.as_str(), class]).inc();
    LATENCY.with_label_values(&[method.as_str(), route.as_str()]).observe(start.elapsed().as_secs_f64());
    resp
}

/// A panic in a handler: logged, answered with the generic 500 body.
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err.downcast_ref::<String>().cloned().or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
    tracing::error!(%detail, "a handler panicked");
    let body = ErrorBody { error: ErrorInfo { code: "internal".into(), message: "internal error; the server log has the details".into(), details: Vec::new() } };
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}
