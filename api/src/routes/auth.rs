//! `/auth/login`, `/auth/refresh`, `/auth/logout`, and the caller's own profile, password
//! and API keys under `/me`.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{self, ClientIp, Viewer};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::list::{Page, Paging, SortKey, Sortable};
use crate::meta::{ApiKey, MetaCommand, Session, User};
use crate::routes::users::UserOut;
use crate::routes::{audit, check_name};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(delete_api_key))
}

/// Credentials.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// A username or an e-mail address.
    #[schema(min_length = 1, max_length = 320)]
    pub username: Option<String>,
    /// An e-mail address (instead of `username`).
    #[schema(min_length = 1, max_length = 320)]
    pub email: Option<String>,
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
}

/// Tokens for a session.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Exchanges for new tokens at `POST /auth/refresh`.
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
    pub user: UserOut,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub refresh_token: String,
}

fn tokens(state: &AppState, user: &User, session: &Session, refresh_token: String) -> ApiResult<TokenResponse> {
    let (access_token, _) = state.jwt.issue(user, &session.id)?;
    Ok(TokenResponse {
        access_token,
        token_type: "bearer".into(),
        expires_in: state.jwt.access_ttl.as_secs(),
        refresh_token,
        refresh_expires_at: session.expires_at,
        user: UserOut::from(user),
    })
}

/// Logs in with a username (or e-mail address) and password.
///
/// Every attempt counts before its password is checked. Past the limit of failures of the
/// account (a lockout that doubles each time) or of the client address the answer is 429
/// with `Retry-After`; when the server's password checks are all busy, 503 with
/// `Retry-After`.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 429, description = "Too many failed attempts", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Too many logins at once; nothing was counted", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
async fn login(State(state): State<AppState>, ClientIp(ip): ClientIp, ApiJson(req): ApiJson<LoginRequest>) -> ApiResult<axum::Json<TokenResponse>> {
    let login = match (req.username.as_deref(), req.email.as_deref()) {
        (Some(u), _) if !u.trim().is_empty() => u.trim().to_string(),
        (_, Some(e)) if !e.trim().is_empty() => e.trim().to_string(),
        _ => return Err(ApiError::field("username", "give a username or an e-mail address")),
    };
    // Counted now, so attempts running at once cannot pass the limit together.
    let attempt = state.limiter.begin(&login, &ip).map_err(|wait| ApiError::TooManyRequests { retry_after: wait })?;
    let found = state.meta.user_by_login(&login)?;
    let Some(user) = state.password_checks.check_login(req.password, found).await? else {
        attempt.failed();
        tracing::info!(login = %login, ip = %ip, "failed login");
        return Err(ApiError::Unauthorized("wrong username or password".into()));
    };
    attempt.succeeded();
    let refresh = auth::new_refresh_token();
    let now = Utc::now();
    let session = Session {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user.id.clone(),
        token_hash: auth::sha256_hex(&refresh),
        created_at: now,
        expires_at: now + ChronoDuration::from_std(state.config.refresh_ttl).unwrap_or(ChronoDuration::days(30)),
        revoked_at: None,
        previous_token_hashes: Vec::new(),
    };
    state.meta.apply(MetaCommand::PutSession { session: session.clone() })?;
    let p = auth::Principal { user: user.clone(), session_id: Some(session.id.clone()), api_key_id: None };
    audit(&state, &p, "login", "session", &session.id, json!({"ip": ip}))?;
    Ok(axum::Json(tokens(&state, &user, &session, refresh)?))
}

/// Exchanges a refresh token for new tokens; the old refresh token stops working, and
/// presenting it again ends the whole session (a copy of it is in someone else's hands).
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "The refresh token is unknown, revoked or expired", body = ErrorBody),
    ))]
async fn refresh(State(state): State<AppState>, ApiJson(req): ApiJson<RefreshRequest>) -> ApiResult<axum::Json<TokenResponse>> {
    let unauth = || ApiError::Unauthorized("the refresh token is unknown, revoked or expired; log in again".into());
    let hash = auth::sha256_hex(&req.refresh_token);
    let session = state.meta.session_by_token_hash(&hash)?.ok_or_else(unauth)?;
    let now = Utc::now();
    if session.revoked_at.is_some() || session.expires_at <= now {
        return Err(unauth());
    }
    if session.token_hash != hash {
        // A refresh token that was already exchanged: someone holds a copy of it (the
        // legitimate client or a thief), so neither may keep the session.
        state.meta.apply(MetaCommand::RevokeSession { id: session.id.clone(), at: now })?;
        let user = state.meta.user(&session.user_id)?;
        if let Some(user) = user {
            let p = auth::Principal { user, session_id: Some(session.id.clone()), api_key_id: None };
            audit(&state, &p, "refresh_token_reused", "session", &session.id, json!({}))?;
        }
        tracing::warn!(session = %session.id, "a used refresh token was presented again; the session is revoked");
        return Err(ApiError::Unauthorized("this refresh token was already used; the session is ended: log in again".into()));
    }
    let user = state.meta.user(&session.user_id)?.filter(|u| !u.disabled).ok_or_else(unauth)?;
    let token = auth::new_refresh_token();
    let expires_at = now + ChronoDuration::from_std(state.config.refresh_ttl).unwrap_or(ChronoDuration::days(30));
    let session = session.rotated(auth::sha256_hex(&token), expires_at);
    state.meta.apply(MetaCommand::PutSession { session: session.clone() })?;
    Ok(axum::Json(tokens(&state, &user, &session, token)?))
}

/// Ends the caller's session: its refresh token and every access token issued under it stop
/// working.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = ["viewer"])),
    responses((status = 204, description = "Logged out"), (status = 400, description = "The caller used an API key, which is not a session", body = ErrorBody)))]
async fn logout(State(state): State<AppState>, Viewer(p): Viewer) -> ApiResult<StatusCode> {
    let Some(sid) = &p.session_id else {
        return Err(ApiError::bad_request("an API key is not a session; delete the key at DELETE /me/api-keys/{id} instead"));
    };
    state.meta.apply(MetaCommand::RevokeSession { id: sid.clone(), at: Utc::now() })?;
    audit(&state, &p, "logout", "session", sid, json!({}))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's profile.
#[utoipa::path(get, path = "/me", tag = "auth", security(("bearer" = ["viewer"])),
    responses((status = 200, description = "The caller", body = UserOut)))]
async fn me(Viewer(p): Viewer) -> axum::Json<UserOut> {
    axum::Json(UserOut::from(&p.user))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[schema(max_length = 1024)]
    pub current_password: String,
    /// At least 8 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub new_password: String,
    /// The caller's API keys (ids) that keep working; every other one is revoked with the
    /// change (default: all are revoked).
    #[serde(default)]
    pub keep_api_keys: Vec<String>,
}

/// Changes the caller's password. Every session of the caller ends (log in again), and their
/// API keys are revoked except those listed in `keep_api_keys`.
#[utoipa::path(put, path = "/me/password", tag = "auth", security(("bearer" = ["viewer"])), request_body = PasswordChange,
    responses((status = 204, description = "Changed")))]
async fn change_password(State(state): State<AppState>, Viewer(p): Viewer, ApiJson(req): ApiJson<PasswordChange>) -> ApiResult<StatusCode> {
    auth::check_password_rules(&req.new_password).map_err(|_| ApiError::field("new_password", "must have 8 to 1024 characters"))?;
    if state.password_checks.check_login(req.current_password, Some(p.user.clone())).await?.is_none() {
        return Err(ApiError::field("current_password", "is wrong"));
    }
    let hash = auth::hash_password_async(req.new_password).await?;
    let now = Utc::now();
    let user = User { password_hash: hash, updated_at: now, ..p.user.clone() };
    state.meta.apply(MetaCommand::PutUser { user })?;
    state.meta.apply(MetaCommand::RevokeUserSessions { user_id: p.user.id.clone(), at: now })?;
    let revoked = auth::revoke_api_keys(&state, &p.user.id, &req.keep_api_keys)?;
    audit(&state, &p, "change_password", "user", &p.user.id, json!({"api_keys_revoked": revoked}))?;
    Ok(StatusCode::NO_CONTENT)
}

/// A personal API key (without the key itself).
#[derive(Serialize, ToSchema)]
pub struct ApiKeyOut {
    pub id: String,
    pub name: String,
    /// The key's first characters.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<&ApiKey> for ApiKeyOut {
    fn from(k: &ApiKey) -> Self {
        ApiKeyOut { id: k.id.clone(), name: k.name.clone(), prefix: k.prefix.clone(), created_at: k.created_at, expires_at: k.expires_at }
    }
}

impl Sortable for ApiKeyOut {
    const SORT_FIELDS: &'static [&'static str] = &["name", "created_at", "expires_at"];
    fn sort_key(&self, field: &str) -> SortKey {
        match field {
            "name" => (&self.name).into(),
            "expires_at" => self.expires_at.into(),
            _ => self.created_at.into(),
        }
    }
}

/// A new API key: the key is shown this once.
#[derive(Serialize, ToSchema)]
pub struct NewApiKey {
    #[serde(flatten)]
    pub info: ApiKeyOut,
    /// Send as `X-API-Key: <key>` or `Authorization: Bearer <key>`. Not shown again.
    pub key: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Days until the key stops working; none: it does not expire.
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
}

/// The caller's API keys.
#[utoipa::path(get, path = "/me/api-keys", tag = "auth", security(("bearer" = ["viewer"])), params(Paging),
    responses((status = 200, description = "Keys", body = Page<ApiKeyOut>)))]
async fn list_api_keys(State(state): State<AppState>, Viewer(p): Viewer, ApiQuery(paging): ApiQuery<Paging>) -> ApiResult<axum::Json<Page<ApiKeyOut>>> {
    let keys = state.meta.api_keys_of(&p.user.id)?.iter().map(ApiKeyOut::from).collect();
    Ok(axum::Json(paging.apply(keys, "-created_at")?))
}

/// Creates a personal API key with the caller's role, for scripts.
#[utoipa::path(post, path = "/me/api-keys", tag = "auth", security(("bearer" = ["viewer"])), request_body = ApiKeyRequest,
    responses((status = 201, description = "Created; the key is in the body, shown once", body = NewApiKey)))]
async fn create_api_key(State(state): State<AppState>, Viewer(p): Viewer, ApiJson(req): ApiJson<ApiKeyRequest>) -> ApiResult<(StatusCode, axum::Json<NewApiKey>)> {
    let name = check_name("name", &req.name)?;
    let days = match req.expires_in_days {
        Some(d) if (1..=3650).contains(&d) => Some(d),
        Some(_) => return Err(ApiError::field("expires_in_days", "expected 1 to 3650")),
        None => None,
    };
    let key = auth::new_api_key();
    let now = Utc::now();
    let rec = ApiKey {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: p.user.id.clone(),
        name,
        prefix: key[..12].to_string(),
        key_hash: auth::sha256_hex(&key),
        created_at: now,
        expires_at: days.map(|d| now + ChronoDuration::days(i64::from(d))),
    };
    state.meta.apply(MetaCommand::PutApiKey { key: rec.clone() })?;
    audit(&state, &p, "create", "api_key", &rec.id, json!({"name": rec.name}))?;
    Ok((StatusCode::CREATED, axum::Json(NewApiKey { info: ApiKeyOut::from(&rec), key })))
}

/// Deletes one of the caller's API keys (an admin may delete anyone's).
#[utoipa::path(delete, path = "/me/api-keys/{id}", tag = "auth", security(("bearer" = ["viewer"])),
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Deleted")))]
async fn delete_api_key(State(state): State<AppState>, Viewer(p): Viewer, ApiPath(id): ApiPath<String>) -> ApiResult<StatusCode> {
    let key = state.meta.api_key(&id)?.ok_or_else(|| ApiError::not_found("api key", &id))?;
    if key.user_id != p.user.id && p.user.role != crate::meta::Role::Admin {
        return Err(ApiError::not_found("api key", &id));
    }
    state.meta.apply(MetaCommand::DeleteApiKey { id: id.clone() })?;
    audit(&state, &p, "delete", "api_key", &id, json!({"name": key.name}))?;
    Ok(StatusCode::NO_CONTENT)
}
