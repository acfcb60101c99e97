//! User management (guide 7.2.1): admins only.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{self, Admin};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::list::{Page, Paging, SortKey, Sortable, matches_q};
use crate::meta::{MetaCommand, Role, User};
use crate::routes::audit;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_users, create_user)).routes(routes!(get_user, update_user, delete_user))
}

/// A user, as the API shows it (never the password hash).
#[derive(Serialize, ToSchema)]
pub struct UserOut {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&User> for UserOut {
    fn from(u: &User) -> Self {
        UserOut {
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            full_name: u.full_name.clone(),
            role: u.role,
            disabled: u.disabled,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

impl Sortable for UserOut {
    const SORT_FIELDS: &'static [&'static str] = &["username", "email", "role", "created_at", "updated_at"];
    fn sort_key(&self, field: &str) -> SortKey {
        match field {
            "username" => (&self.username).into(),
            "email" => self.email.as_ref().into(),
            "role" => (self.role as u32).into(),
            "updated_at" => self.updated_at.into(),
            _ => self.created_at.into(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Text in the username, e-mail address or full name.
    pub q: Option<String>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Letters, digits, `.`, `_`, `-`, `@`; 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")]
    pub username: String,
    #[schema(max_length = 320)]
    pub email: Option<String>,
    #[schema(max_length = 200)]
    pub full_name: Option<String>,
    pub role: Role,
    /// At least 8 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
}

/// Fields to change; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    #[schema(max_length = 320)]
    pub email: Option<String>,
    #[schema(max_length = 200)]
    pub full_name: Option<String>,
    pub role: Option<Role>,
    #[schema(min_length = 8, max_length = 1024)]
    pub password: Option<String>,
    pub disabled: Option<bool>,
}

fn check_username(u: &str) -> ApiResult<String> {
    let ok = !u.is_empty() && u.chars().count() <= 64 && u.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok { Ok(u.to_string()) } else { Err(ApiError::field("username", "use 1 to 64 letters, digits, `.`, `_`, `-` or `@`")) }
}

fn check_email(e: Option<String>) -> ApiResult<Option<String>> {
    match e.map(|e| e.trim().to_string()).filter(|e| !e.is_empty()) {
        None => Ok(None),
        Some(e) if e.len() <= 320 && e.contains('@') && !e.starts_with('@') && !e.ends_with('@') && !e.contains(char::is_whitespace) => Ok(Some(e)),
        Some(_) => Err(ApiError::field("email", "is not an e-mail address")),
    }
}

fn check_full_name(n: Option<String>) -> ApiResult<Option<String>> {
    match n {
        Some(n) if n.chars().count() > 200 => Err(ApiError::field("full_name", "may have at most 200 characters")),
        n => Ok(n),
    }
}

/// Lists users.
#[utoipa::path(get, path = "/users", tag = "users", security(("bearer" = ["admin"])), params(Paging, UserFilter),
    responses((status = 200, description = "Users", body = Page<UserOut>)))]
async fn list_users(State(state): State<AppState>, _auth: Admin, ApiQuery(paging): ApiQuery<Paging>, ApiQuery(f): ApiQuery<UserFilter>) -> ApiResult<axum::Json<Page<UserOut>>> {
    let users = state
        .meta
        .users()?
        .iter()
        .filter(|u| matches_q(&f.q, &[Some(&u.username), u.email.as_deref(), u.full_name.as_deref()]))
        .filter(|u| f.role.is_none_or(|r| u.role == r))
        .filter(|u| f.disabled.is_none_or(|d| u.disabled == d))
        .map(UserOut::from)
        .collect();
    Ok(axum::Json(paging.apply(users, "username")?))
}

/// Creates a user.
#[utoipa::path(post, path = "/users", tag = "users", security(("bearer" = ["admin"])), request_body = NewUser,
    responses((status = 201, description = "Created", body = UserOut), (status = 409, description = "The username or e-mail address is taken", body = crate::error::ErrorBody)))]
async fn create_user(State(state): State<AppState>, Admin(p): Admin, ApiJson(req): ApiJson<NewUser>) -> ApiResult<(StatusCode, axum::Json<UserOut>)> {
    let username = check_username(&req.username)?;
    let email = check_email(req.email)?;
    let full_name = check_full_name(req.full_name)?;
    auth::check_password_rules(&req.password)?;
    if state.meta.user_by_login(&username)?.is_some() {
        return Err(ApiError::Conflict(format!("the username `{username}` is taken")));
    }
    let hash = auth::hash_password_async(req.password).await?;
    let now = Utc::now();
    let user = User { id: uuid::Uuid::new_v4().to_string(), username, email, full_name, role: req.role, password_hash: hash, disabled: false, created_at: now, updated_at: now };
    state.meta.apply(MetaCommand::PutUser { user: user.clone() })?;
    audit(&state, &p, "create", "user", &user.id, json!({"username": user.username, "role": user.role}))?;
    Ok((StatusCode::CREATED, axum::Json(UserOut::from(&user))))
}

fn load(state: &AppState, id: &str) -> ApiResult<User> {
    state.meta.user(id)?.ok_or_else(|| ApiError::not_found("user", id))
}

fn admins_left_without(state: &AppState, id: &str) -> ApiResult<usize> {
    Ok(state.meta.users()?.iter().filter(|u| u.id != id && u.role == Role::Admin && !u.disabled).count())
}

/// One user.
#[utoipa::path(get, path = "/users/{id}", tag = "users", security(("bearer" = ["admin"])), params(("id" = String, Path)),
    responses((status = 200, description = "The user", body = UserOut)))]
async fn get_user(State(state): State<AppState>, _auth: Admin, ApiPath(id): ApiPath<String>) -> ApiResult<axum::Json<UserOut>> {
    Ok(axum::Json(UserOut::from(&load(&state, &id)?)))
}

/// Changes a user: e-mail address, name, role, password, disabled. A new password or
/// disabling ends the user's sessions. The last enabled admin cannot be demoted or disabled.
#[utoipa::path(put, path = "/users/{id}", tag = "users", security(("bearer" = ["admin"])), params(("id" = String, Path)), request_body = UserUpdate,
    responses((status = 200, description = "Changed", body = UserOut), (status = 409, description = "Conflict", body = crate::error::ErrorBody)))]
async fn update_user(State(state): State<AppState>, Admin(p): Admin, ApiPath(id): ApiPath<String>, ApiJson(req): ApiJson<UserUpdate>) -> ApiResult<axum::Json<UserOut>> {
    let mut user = load(&state, &id)?;
    let demoted = req.role.is_some_and(|r| r != Role::Admin) || req.disabled == Some(true);
    if user.role == Role::Admin && demoted && admins_left_without(&state, &id)? == 0 {
        return Err(ApiError::Conflict("this is the last enabled admin; make another admin first".into()));
    }
    if req.email.is_some() {
        user.email = check_email(req.email)?;
    }
    if req.full_name.is_some() {
        user.full_name = check_full_name(req.full_name)?;
    }
    if let Some(r) = req.role {
        user.role = r;
    }
    let mut end_sessions = false;
    if let Some(d) = req.disabled {
        end_sessions |= d && !user.disabled;
        user.disabled = d;
    }
    let password_set = req.password.is_some();
    if let Some(pw) = req.password {
        auth::check_password_rules(&pw)?;
        user.password_hash = auth::hash_password_async(pw).await?;
        end_sessions = true;
    }
    let now = Utc::now();
    user.updated_at = now;
    state.meta.apply(MetaCommand::PutUser { user: user.clone() })?;
    if end_sessions {
        state.meta.apply(MetaCommand::RevokeUserSessions { user_id: id.clone(), at: now })?;
    }
    if password_set {
        // A password set by an admin (a reset) revokes the user's API keys too.
        crate::auth::revoke_api_keys(&state, &id, &[])?;
    }
    audit(&state, &p, "update", "user", &id, json!({"role": user.role, "disabled": user.disabled}))?;
    Ok(axum::Json(UserOut::from(&user)))
}

/// Deletes a user, their sessions and API keys. Admins cannot delete themselves.
#[utoipa::path(delete, path = "/users/{id}", tag = "users", security(("bearer" = ["admin"])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 409, description = "Conflict", body = crate::error::ErrorBody)))]
async fn delete_user(State(state): State<AppState>, Admin(p): Admin, ApiPath(id): ApiPath<String>) -> ApiResult<StatusCode> {
    let user = load(&state, &id)?;
    if user.id == p.user.id {
        return Err(ApiError::Conflict("you cannot delete yourself".into()));
    }
    state.meta.apply(MetaCommand::DeleteUser { id: id.clone(), at: Utc::now() })?;
    audit(&state, &p, "delete", "user", &id, json!({"username": user.username}))?;
    Ok(StatusCode::NO_CONTENT)
}
