//! One error type for every handler, one body shape for every error:
//! `{"error": {"code", "message", "details": [{"path", "message"}]}}`. Extractors map bad
//! requests into it too, so a client never sees another shape. 5xx bodies are generic; the
//! cause is logged.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::meta::MetaError;

/// One problem with a field of the request (the control plane's, which validates documents).
pub use dagg_control::ErrorDetail;
use dagg_control::ControlError;

#[derive(Serialize, ToSchema)]
pub struct ErrorInfo {
    /// Stable, machine-readable: `validation_failed`, `not_found`, `forbidden`, …
    pub code: String,
    pub message: String,
    pub details: Vec<ErrorDetail>,
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or its content invalid; `details` name the fields.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String, details: Vec<ErrorDetail> },
    /// 422: the body is well-formed JSON of the wrong shape.
    #[error("{message}")]
    Unprocessable { message: String, details: Vec<ErrorDetail> },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than the limit")]
    PayloadTooLarge,
    #[error("expected `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("too many attempts; try again in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    /// 503 with `Retry-After`: the server is at its capacity for this work (password checks).
    #[error("the server is busy; try again in {retry_after} s")]
    Busy { retry_after: u64 },
    /// 503: a dependency (storage) is not ready.
    #[error("{0}")]
    Unavailable(String),
    /// 500: the detail is logged, never sent.
    #[error("{0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest { code: "bad_request", message: message.into(), details: Vec::new() }
    }

    /// 400 `validation_failed` with the problems of each field.
    pub fn validation(message: impl Into<String>, details: Vec<ErrorDetail>) -> ApiError {
        ApiError::BadRequest { code: "validation_failed", message: message.into(), details }
    }

    /// 400 for one field.
    pub fn field(path: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::validation(format!("{path}: {message}"), vec![ErrorDetail { path: path.into(), message }])
    }

    pub fn not_found(kind: &str, id: &str) -> ApiError {
        ApiError::NotFound(format!("{kind} `{id}` does not exist"))
    }

    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(e.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unprocessable { .. } => "invalid_body",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Busy { .. } => "busy",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NotFound { kind, id } => ApiError::not_found(kind, &id),
            MetaError::Conflict(m) => ApiError::Conflict(m),
            e @ MetaError::IllegalTransition { .. } => ApiError::Conflict(e.to_string()),
            MetaError::Unavailable(m) => ApiError::Unavailable(m),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid { message, details } => ApiError::validation(message, details),
            ControlError::NotFound(m) => ApiError::NotFound(m),
            ControlError::Conflict(m) => ApiError::Conflict(m),
            ControlError::Meta(e) => e.into(),
        }
    }
}

/// A masked secret that could not be kept (its endpoint changed): 400 naming it.
impl From<crate::mask::KeptSecret> for ApiError {
    fn from(e: crate::mask::KeptSecret) -> Self {
        ApiError::validation(e.to_string(), vec![ErrorDetail { path: e.path.clone(), message: e.to_string() }])
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code().to_string();
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after } | ApiError::Busy { retry_after } => Some(*retry_after),
            _ => None,
        };
        let (message, details) = match self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ("internal error; the server log has the details".to_string(), Vec::new())
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "unavailable");
                ("a dependency of the service is unavailable".to_string(), Vec::new())
            }
            ApiError::BadRequest { message, details, .. } | ApiError::Unprocessable { message, details } => (message, details),
            other => (other.to_string(), Vec::new()),
        };
        let body = ErrorBody { error: ErrorInfo { code, message, details } };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// A JSON body whose problems come back as [`ApiError`]s: a syntax error is 400 with its
/// line and column, a wrong shape 422 with the field's path, a body over the limit 413.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e: BytesRejection| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE { ApiError::PayloadTooLarge } else { ApiError::bad_request(e.body_text()) }
        })?;
        parse_json_body(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body the way [`ApiJson`] does.
pub fn parse_json_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let path = if path == "." { String::new() } else { path };
            match inner.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof | serde_json::error::Category::Io => Err(ApiError::BadRequest {
                    code: "invalid_json",
                    message: format!("the body is not valid JSON: {inner}"),
                    details: vec![ErrorDetail { path: String::new(), message: inner.to_string() }],
                }),
                serde_json::error::Category::Data => {
                    let message = strip_position(&inner.to_string());
                    Err(ApiError::Unprocessable {
                        message: if path.is_empty() { message.clone() } else { format!("{path}: {message}") },
                        details: vec![ErrorDetail { path, message }],
                    })
                }
            }
        }
    }
}

fn strip_position(m: &str) -> String {
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

/// Query parameters whose problems come back as 400 with the parameter named.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded_de(q);
        de.map(ApiQuery)
    }
}

fn serde_urlencoded_de<T: DeserializeOwned>(q: &str) -> ApiResult<T> {
    // axum's own Query does the decoding; only its rejection is mapped.
    let uri: axum::http::Uri = format!("/?{q}").parse().map_err(|_| ApiError::bad_request("the query string is malformed"))?;
    axum::extract::Query::<T>::try_from_uri(&uri).map(|q| q.0).map_err(|e: QueryRejection| {
        let text = e.body_text();
        let text = text.trim_start_matches("Failed to deserialize query string: ").to_string();
        let path = text.split(':').next().filter(|p| !p.contains(' ')).unwrap_or("").to_string();
        ApiError::BadRequest { code: "invalid_query", message: format!("invalid query: {text}"), details: vec![ErrorDetail { path, message: text }] }
    })
}

/// Path parameters whose problems come back as 400.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| ApiError::BadRequest { code: "invalid_path", message: e.body_text(), details: Vec::new() })
    }
}

/// JSON 404 for paths no route matches.
pub async fn not_found_fallback() -> ApiError {
    ApiError::NotFound("no such endpoint; see /docs".into())
}

/// JSON 405 for a known path with another method.
pub async fn method_not_allowed_fallback() -> Response {
    let body = ErrorBody { error: ErrorInfo { code: "method_not_allowed".into(), message: "this endpoint does not take that method".into(), details: Vec::new() } };
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}
