//! Who is calling, and may they: passwords (argon2id), access tokens (HS256 JWTs naming
//! their session), refresh tokens and personal API keys (stored as SHA-256), role
//! extractors, the login limits (per account and per address, counted before the password
//! is checked), the cap on concurrent password checks, and who the client is behind a
//! trusted proxy.
//!
//! Every protected handler takes one of [`Viewer`], [`Editor`] or [`Admin`] as its first
//! argument: the role is checked before the body is read, on every request, against the
//! user as stored now (a changed role or a deleted user takes effect at once, and so does a
//! revoked session).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex};
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
use tokio::sync::Semaphore;

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

/// Argon2 checks of logins and password changes, at most one per core at a time: each
/// takes a core and about 19 MiB while it runs, so a flood of attempts waits its turn (at
/// most `wait`) instead of growing the node's memory, and past that is told to come back
/// (503 with `Retry-After`).
pub struct PasswordChecks {
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl PasswordChecks {
    pub fn new(concurrency: usize, wait: Duration) -> PasswordChecks {
        PasswordChecks { permits: Arc::new(Semaphore::new(concurrency.max(1))), wait }
    }

    /// Checks a password against a user, or against a fixed hash when there is no such
    /// user, so that both take the same time. [`ApiError::Busy`] when no check could start
    /// within the wait.
    pub async fn check_login(&self, password: String, user: Option<User>) -> ApiResult<Option<User>> {
        static DUMMY: LazyLock<String> = LazyLock::new(|| hash_password("dagg-dummy-password").unwrap_or_default());
        let permit = match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
            Ok(permit) => permit.map_err(ApiError::internal)?,
            Err(_) => return Err(ApiError::Busy { retry_after: secs(self.wait) }),
        };
        // The permit goes with the work: a caller that hangs up does not free it early.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
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

/// Where logins may come through: proxies (CIDRs) whose `X-Forwarded-For` is believed.
/// Empty (the default): the header is ignored and the client is the socket's peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<Cidr>);

impl TrustedProxies {
    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client of a request from `peer` carrying `forwarded_for` (the `X-Forwarded-For`
    /// values in order). Only a trusted peer's header counts, read from the right: each hop
    /// a trusted proxy added is passed over, and the first address a trusted proxy did not
    /// add is the client. A hop that is not an address ends the walk at the proxy that
    /// wrote it.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for.iter().rev().flat_map(|h| h.rsplit(',')) {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else { break };
            client = ip.to_canonical();
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// An address range, `10.0.0.0/8` or `fd00::/8` (a bare address is one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => masked(u32::from(n).into(), self.prefix, 32) == masked(u32::from(a).into(), self.prefix, 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => masked(u128::from(n), self.prefix, 128) == masked(u128::from(a), self.prefix, 128),
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `bits`-wide address.
fn masked(addr: u128, prefix: u8, bits: u8) -> u128 {
    if prefix == 0 { 0 } else { addr >> (bits - prefix) }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| format!("`{text}` is not an address or a CIDR such as 10.0.0.0/8"))?;
        let bits = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {bits}"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The client's address: the socket's peer, or for a peer among the trusted proxies the
/// address its `X-Forwarded-For` names (see [`TrustedProxies::client`]); `unknown` without
/// a socket, as in tests.
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()) else {
            return Ok(ClientIp("unknown".into()));
        };
        let forwarded: Vec<&str> = parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
        Ok(ClientIp(state.config.trusted_proxies.client(peer, &forwarded).to_string()))
    }
}

/// How many failed logins are allowed, and what follows.
#[derive(Clone, Debug)]
pub struct LoginLimits {
    /// Failures of one account (within `window`) before it is locked.
    pub per_account: usize,
    /// Failures from one address, whatever the accounts (within `window`), before that
    /// address is refused.
    pub per_address: usize,
    /// How long a failure counts.
    pub window: Duration,
    /// An account's first lockout; each further one (before a success or a quiet `window`
    /// after the last) lasts twice the one before, up to `max_lockout`.
    pub lockout: Duration,
    pub max_lockout: Duration,
}

/// Login attempts per account and per client address. An attempt is counted when it
/// begins, before the password is checked, so concurrent attempts cannot overtake the
/// count: past the limit they are refused without a check. A failure keeps its count; a
/// success clears the account's and gives back its own; an attempt that never got its
/// password checked (the server was busy) gives its count back.
pub struct LoginLimiter {
    limits: LoginLimits,
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    accounts: HashMap<String, Account>,
    addresses: HashMap<String, Vec<Attempt>>,
    next_id: u64,
}

/// One counted attempt: pending until its password is checked.
#[derive(Clone, Copy)]
struct Attempt {
    id: u64,
    at: Instant,
    failed: bool,
}

#[derive(Default)]
struct Account {
    attempts: Vec<Attempt>,
    locked_until: Option<Instant>,
    /// Lockouts in a row: the next lasts `lockout * 2^lockouts`.
    lockouts: u32,
}

/// Past this many accounts or addresses, the ones with nothing left to remember go.
const PRUNE_ABOVE: usize = 10_000;

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> LoginLimiter {
        LoginLimiter { limits, state: Mutex::new(Counts::default()) }
    }

    fn lockout(&self, lockouts: u32) -> Duration {
        self.limits.lockout.saturating_mul(1u32.checked_shl(lockouts.min(31)).unwrap_or(u32::MAX)).min(self.limits.max_lockout)
    }

    /// Counts an attempt of `login` from `ip`; `Err` with the seconds to wait when the
    /// account is locked or either limit is reached (nothing is counted then).
    pub fn begin(&self, login: &str, ip: &str) -> Result<LoginAttempt<'_>, u64> {
        let now = Instant::now();
        let window = self.limits.window;
        let live = |a: &Attempt| !a.failed || now.duration_since(a.at) < window;
        let mut c = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if c.accounts.len() > PRUNE_ABOVE {
            c.accounts.retain(|_, a| {
                a.attempts.retain(live);
                !a.attempts.is_empty() || a.locked_until.is_some_and(|t| now < t + window)
            });
        }
        if c.addresses.len() > PRUNE_ABOVE {
            c.addresses.retain(|_, list| {
                list.retain(live);
                !list.is_empty()
            });
        }
        let login = login.to_lowercase();
        let lockout = {
            let account = c.accounts.entry(login.clone()).or_default();
            account.attempts.retain(live);
            match account.locked_until {
                Some(until) if now < until => return Err(secs(until - now)),
                // A quiet window after the last lockout: the back-off starts over.
                Some(until) if now >= until + window => {
                    account.locked_until = None;
                    account.lockouts = 0;
                }
                _ => {}
            }
            (account.attempts.len() >= self.limits.per_account).then(|| self.lockout(account.lockouts))
        };
        if let Some(wait) = lockout {
            // Attempts still being checked fill the account's allowance.
            return Err(secs(wait));
        }
        let per_address = self.limits.per_address;
        let from = c.addresses.entry(ip.to_string()).or_default();
        from.retain(live);
        if from.len() >= per_address {
            let oldest = from.iter().map(|a| a.at).min().unwrap_or(now);
            return Err(secs(window.saturating_sub(now.duration_since(oldest))));
        }
        c.next_id += 1;
        let attempt = Attempt { id: c.next_id, at: now, failed: false };
        c.addresses.get_mut(ip).expect("just added").push(attempt);
        c.accounts.get_mut(&login).expect("just added").attempts.push(attempt);
        Ok(LoginAttempt { limiter: self, login, ip: ip.to_string(), id: attempt.id, settled: false })
    }

    fn settle(&self, login: &str, ip: &str, id: u64, outcome: Option<bool>) {
        let now = Instant::now();
        let mut c = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = c.addresses.get_mut(ip) {
            match outcome {
                Some(false) => list.iter_mut().filter(|a| a.id == id).for_each(|a| a.failed = true),
                _ => list.retain(|a| a.id != id),
            }
        }
        let Some(account) = c.accounts.get_mut(login) else { return };
        match outcome {
            Some(true) => {
                account.attempts.retain(|a| !a.failed && a.id != id);
                account.locked_until = None;
                account.lockouts = 0;
            }
            Some(false) => {
                account.attempts.iter_mut().filter(|a| a.id == id).for_each(|a| a.failed = true);
                let failures = account.attempts.iter().filter(|a| a.failed).count();
                if failures >= self.limits.per_account {
                    let lockout = self.lockout(account.lockouts);
                    account.locked_until = Some(now + lockout);
                    account.lockouts = account.lockouts.saturating_add(1);
                    account.attempts.retain(|a| !a.failed);
                    tracing::warn!(login = %login, seconds = lockout.as_secs(), "account locked after failed logins");
                }
            }
            None => account.attempts.retain(|a| a.id != id),
        }
    }
}

/// Whole seconds to wait, at least one.
fn secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// An attempt counted by [`LoginLimiter::begin`]. Dropped unsettled (its password was
/// never checked), it gives its count back.
pub struct LoginAttempt<'a> {
    limiter: &'a LoginLimiter,
    login: String,
    ip: String,
    id: u64,
    settled: bool,
}

impl LoginAttempt<'_> {
    pub fn failed(mut self) {
        self.settled = true;
        self.limiter.settle(&self.login, &self.ip, self.id, Some(false));
    }

    pub fn succeeded(mut self) {
        self.settled = true;
        self.limiter.settle(&self.login, &self.ip, self.id, Some(true));
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.limiter.settle(&self.login, &self.ip, self.id, None);
        }
    }
}

/// Revokes `user_id`'s API keys but those in `keep`; how many were revoked.
pub(crate) fn revoke_api_keys(state: &AppState, user_id: &str, keep: &[String]) -> ApiResult<usize> {
    let mut revoked = 0;
    for k in state.meta.api_keys_of(user_id)? {
        if !keep.contains(&k.id) {
            state.meta.apply(crate::meta::MetaCommand::DeleteApiKey { id: k.id })?;
            revoked += 1;
        }
    }
    Ok(revoked)
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

    fn limits(per_account: usize, per_address: usize) -> LoginLimits {
        LoginLimits { per_account, per_address, window: Duration::from_secs(60), lockout: Duration::from_secs(10), max_lockout: Duration::from_secs(25) }
    }

    #[test]
    fn an_account_is_locked_after_its_failures_from_any_address() {
        let l = LoginLimiter::new(limits(2, 100));
        l.begin("Ann", "1.2.3.4").unwrap().failed();
        l.begin("ann", "5.6.7.8").unwrap().failed();
        let wait = l.begin("ann", "9.9.9.9").err().expect("locked");
        assert!((1..=10).contains(&wait), "{wait}");
        assert!(l.begin("bob", "1.2.3.4").is_ok(), "another account is not locked");
    }

    #[test]
    fn attempts_count_before_their_password_is_checked() {
        let l = LoginLimiter::new(limits(3, 100));
        let pending: Vec<_> = (0..3).map(|_| l.begin("ann", "1.2.3.4").unwrap()).collect();
        assert!(l.begin("ann", "1.2.3.4").is_err(), "three unchecked attempts fill the allowance");
        drop(pending);
        assert!(l.begin("ann", "1.2.3.4").is_ok(), "attempts never checked give their count back");
    }

    #[test]
    fn lockouts_double_up_to_the_maximum_and_a_success_starts_over() {
        let l = LoginLimiter::new(limits(1, 100));
        let mut waits = Vec::new();
        for _ in 0..3 {
            l.begin("ann", "a").unwrap().failed();
            waits.push(l.begin("ann", "a").err().unwrap());
            // End the lockout without waiting for it.
            l.state.lock().unwrap().accounts.get_mut("ann").unwrap().locked_until = Some(Instant::now());
        }
        assert_eq!(waits, [10, 20, 25]);
        l.begin("ann", "a").unwrap().succeeded();
        l.begin("ann", "a").unwrap().failed();
        assert_eq!(l.begin("ann", "a").err(), Some(10));
    }

    #[test]
    fn an_address_is_refused_after_its_failures_on_any_accounts() {
        let l = LoginLimiter::new(limits(100, 3));
        for user in ["a", "b", "c"] {
            l.begin(user, "1.2.3.4").unwrap().failed();
        }
        let wait = l.begin("d", "1.2.3.4").err().expect("refused");
        assert!((1..=60).contains(&wait));
        assert!(l.begin("d", "5.6.7.8").is_ok(), "another address is not refused");
        // A success gives back only its own count.
        let l = LoginLimiter::new(limits(100, 2));
        l.begin("a", "x").unwrap().failed();
        l.begin("b", "x").unwrap().succeeded();
        l.begin("c", "x").unwrap().failed();
        assert!(l.begin("d", "x").is_err());
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("203.0.113.9"), &["10.1.1.1"]), ip("203.0.113.9"));
        let proxies = TrustedProxies(vec!["10.0.0.0/8".parse().unwrap(), "fd00::1".parse().unwrap()]);
        assert_eq!(proxies.client(ip("203.0.113.9"), &["10.1.1.1"]), ip("203.0.113.9"), "the peer is no proxy");
        assert_eq!(proxies.client(ip("10.0.0.2"), &["198.51.100.7"]), ip("198.51.100.7"));
        // What the client wrote itself (left of the first untrusted hop) is passed over.
        assert_eq!(proxies.client(ip("10.0.0.2"), &["1.1.1.1, 198.51.100.7", "10.0.0.3"]), ip("198.51.100.7"));
        assert_eq!(proxies.client(ip("fd00::1"), &["garbage, 10.0.0.3"]), ip("10.0.0.3"), "a hop that is no address ends the walk");
        assert_eq!(proxies.client(ip("10.0.0.2"), &[]), ip("10.0.0.2"));
        assert_eq!(proxies.client(ip("::ffff:10.0.0.2"), &["198.51.100.7"]), ip("198.51.100.7"), "IPv4-mapped peers match IPv4 ranges");
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(c.contains("192.168.4.5".parse().unwrap()));
        assert!(!c.contains("192.169.0.1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!("::/0".parse::<Cidr>().unwrap().contains("2001:db8::1".parse().unwrap()));
        assert_eq!("127.0.0.1".parse::<Cidr>().unwrap().to_string(), "127.0.0.1/32");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("proxy.local".parse::<Cidr>().is_err());
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = new_api_key();
        assert!(a.starts_with(API_KEY_PREFIX) && a.len() == API_KEY_PREFIX.len() + 64);
        assert_ne!(a, new_api_key());
    }
}
