//! Who is calling, and may they: passwords (argon2id), access tokens (HS256 JWTs naming
//! their session), refresh tokens and personal API keys (stored as SHA-256), role
//! extractors, and the login rate limiter.
//!
//! Every protected handler takes one of [`Viewer`], [`Editor`] or [`Admin`] as its first
//! argument: the role is checked before the body is read, on every request, against the
//! user as stored now (a changed role or a deleted user takes effect at once, and so does a
//! revoked session).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::meta::{Role, User};

/// API keys start with this, which is how they are told from JWTs.
pub const API_KEY_PREFIX: &str = "dagg_";
const REFRESH_PREFIX: &str = "dgr_";

/// Hashes a password with argon2id and a random salt. CPU-heavy: call from
/// [`hash_password_async`] in handlers.
pub fn hash_password(password: &str) -> ApiResult<String> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(ApiError::internal)
}

pub async fn hash_password_async(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(ApiError::internal)?
}

/// Whether `password` matches the stored hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Checks a password against a user, or against a fixed hash when there is no such user,
/// so that both take the same time.
pub async fn check_login(password: String, user: Option<User>) -> ApiResult<Option<User>> {
    static DUMMY: LazyLock<String> = LazyLock::new(|| hash_password("dagg-dummy-password").unwrap_or_default());
    tokio::task::spawn_blocking(move || {
        let hash = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| DUMMY.clone());
        let ok = verify_password(&password, &hash);
        match user {
            Some(u) if ok && !u.disabled => Some(u),
            _ => None,
        }
    })
    .await
    .map_err(ApiError::internal)
}

/// Rules for new passwords.
pub fn check_password_rules(password: &str) -> ApiResult<()> {
    if password.chars().count() < 8 {
        return Err(ApiError::field("password", "must have at least 8 characters"));
    }
    if password.len() > 1024 {
        return Err(ApiError::field("password", "must have at most 1024 bytes"));
    }
    Ok(())
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// 256 random bits (two v4 UUIDs come from the OS's CSPRNG), hex, after `prefix`.
pub fn random_token(prefix: &str) -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{prefix}{}{}", hex::encode(a.as_bytes()), hex::encode(b.as_bytes()))
}

pub fn new_refresh_token() -> String {
    random_token(REFRESH_PREFIX)
}

pub fn new_api_key() -> String {
    random_token(API_KEY_PREFIX)
}

/// An access token's claims.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// The session (refresh token) it was issued under.
    pub sid: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
}

/// The keys that sign and check access tokens.
pub struct JwtKeys {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
}

impl JwtKeys {
    pub fn new(secret: &[u8], access_ttl: Duration) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtKeys { enc: EncodingKey::from_secret(secret), dec: DecodingKey::from_secret(secret), validation, access_ttl }
    }

    pub fn issue(&self, user: &User, session_id: &str) -> ApiResult<(String, i64)> {
        let now = Utc::now().timestamp();
        let exp = now + self.access_ttl.as_secs() as i64;
        let claims = Claims { sub: user.id.clone(), sid: session_id.to_string(), role: user.role, iat: now, exp };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc).map_err(ApiError::internal)?;
        Ok((token, exp))
    }

    pub fn check(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.dec, &self.validation).ok().map(|d| d.claims)
    }
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: User,
    /// The session of a JWT; `None` for an API key.
    pub session_id: Option<String>,
    /// The API key used, if any.
    pub api_key_id: Option<String>,
}

impl Principal {
    fn require(self, role: Role) -> ApiResult<Principal> {
        if self.user.role >= role {
            Ok(self)
        } else {
            Err(ApiError::Forbidden(format!("this needs the `{}` role; you are `{}`", role.as_str(), self.user.role.as_str())))
        }
    }
}

/// The credential of a request: `Authorization: Bearer <jwt or key>` or `X-API-Key: <key>`.
fn credential(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim().to_string());
        }
    }
    parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string())
}

/// Authenticates a credential (a JWT or an API key).
pub fn authenticate_token(state: &AppState, token: &str) -> ApiResult<Principal> {
    let unauth = || ApiError::Unauthorized("the token is invalid or expired; log in again".into());
    if token.is_empty() {
        return Err(ApiError::Unauthorized("missing credentials: send `Authorization: Bearer <token>`".into()));
    }
    let meta = &state.meta;
    let (user_id, session_id, api_key_id) = if token.starts_with(API_KEY_PREFIX) {
        let key = meta.api_key_by_hash(&sha256_hex(token))?.ok_or_else(unauth)?;
        if key.expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(unauth());
        }
        (key.user_id, None, Some(key.id))
    } else {
        let claims = state.jwt.check(token).ok_or_else(unauth)?;
        let session = meta.session(&claims.sid)?.ok_or_else(unauth)?;
        if session.revoked_at.is_some() || session.user_id != claims.sub {
            return Err(unauth());
        }
        (claims.sub, Some(session.id), None)
    };
    let user = meta.user(&user_id)?.ok_or_else(unauth)?;
    if user.disabled {
        return Err(ApiError::Unauthorized("this account is disabled".into()));
    }
    Ok(Principal { user, session_id, api_key_id })
}

async fn principal(parts: &Parts, state: &AppState) -> ApiResult<Principal> {
    let token = credential(parts).ok_or_else(|| ApiError::Unauthorized("missing credentials: send `Authorization: Bearer <token>` or `X-API-Key`".into()))?;
    authenticate_token(state, &token)
}

macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $name(pub Principal);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
                principal(parts, state).await?.require($role).map($name)
            }
        }
    };
}

role_extractor!(Viewer, Role::Viewer, "Any logged-in user.");
role_extractor!(Editor, Role::Editor, "An editor or an admin.");
role_extractor!(Admin, Role::Admin, "An admin.");

/// The client's address (the socket's peer; `unknown` without one, as in tests).
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).map(|ip: IpAddr| ip.to_string());
        Ok(ClientIp(ip.unwrap_or_else(|| "unknown".into())))
    }
}

/// Failed logins per (username, client address): after `max` failures within `window`,
/// further attempts are refused until the oldest failure leaves the window.
pub struct LoginLimiter {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<(String, String), Vec<Instant>>>,
}

impl LoginLimiter {
    pub fn new(max: usize, window: Duration) -> LoginLimiter {
        LoginLimiter { max, window, failures: Mutex::new(HashMap::new()) }
    }

    /// `Err` with the seconds to wait when the key is blocked.
    pub fn check(&self, login: &str, ip: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() > 10_000 {
            let window = self.window;
            f.retain(|_, v| v.iter().any(|t| now.duration_since(*t) < window));
        }
        let Some(list) = f.get_mut(&(login.to_lowercase(), ip.to_string())) else { return Ok(()) };
        list.retain(|t| now.duration_since(*t) < self.window);
        if list.len() >= self.max {
            let oldest = list[0];
            let wait = self.window.saturating_sub(now.duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        Ok(())
    }

    pub fn failed(&self, login: &str, ip: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.entry((login.to_lowercase(), ip.to_string())).or_default().push(Instant::now());
    }

    pub fn succeeded(&self, login: &str, ip: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.remove(&(login.to_lowercase(), ip.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn limiter_blocks_after_max_failures_per_login_and_address() {
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        l.failed("Ann", "1.2.3.4");
        assert!(l.check("ann", "1.2.3.4").is_ok());
        l.failed("ann", "1.2.3.4");
        let wait = l.check("ann", "1.2.3.4").unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(l.check("ann", "5.6.7.8").is_ok(), "another address is not blocked");
        assert!(l.check("bob", "1.2.3.4").is_ok(), "another user is not blocked");
        l.succeeded("ann", "1.2.3.4");
        assert!(l.check("ann", "1.2.3.4").is_ok());
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = new_api_key();
        assert!(a.starts_with(API_KEY_PREFIX) && a.len() == API_KEY_PREFIX.len() + 64);
        assert_ne!(a, new_api_key());
    }
}
