//! `connector_type: rest_api` (or `REST API`) — an HTTP JSON API as a source (pages of
//! records) and as a destination (batches POSTed as a JSON array).
//!
//! Both sides share [`Http`]: one `reqwest` client with `connection_timeout` as its connect
//! and response timeout, the configured authentication (an OAuth 2 client-credentials token
//! is fetched when first needed, again a minute before it expires, and again after a 401),
//! a rate limiter that spaces requests evenly (`rate_limit` per `rate_limit_period`), and
//! retries: a 429, a 5xx or a network error is retried up to `retry_attempts` times after
//! `retry_initial_delay_seconds`, doubling each time, or after what `Retry-After` says;
//! waits never exceed `retry_max_delay_seconds`. Messages show URLs without credentials.
//!
//! # Source: positions and checkpoints
//! See [`source`]: the checkpoint names the page being read and how many of its records
//! were returned, so a resume fetches that page again and skips them.
//!
//! # Sink: at least once
//! An HTTP API has no transaction: each batch is sent when `write` is called, so after a
//! crash the batches since the last checkpoint are sent again (at-least-once; make the API
//! idempotent by a key if duplicates matter). A 4xx answer to a batch refuses each of its
//! records with the status and the start of the body; 401, 403, 404 and 405 fail the run
//! instead, since they are about the endpoint, not the records.

mod sink;
mod source;

use std::time::{Duration, Instant};

use dagg_model::spec::connector::{AuthMethod, HttpMethod, RestApiConfig, Role};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::Value as Json;

pub use sink::RestSink;
pub use source::RestSource;

use crate::ConnectorError;
use crate::{egress, secrets};

/// How much of a response body an error message quotes.
const EXCERPT: usize = 300;
/// The largest response body read (a page of records, a token answer): a larger one is an
/// error, found out without holding more than this.
pub(crate) const MAX_BODY: usize = 64 << 20;
/// A token this close to its expiry is fetched again before use.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// Credentials, revealed once when the connector opens.
enum Auth {
    None,
    Header { name: HeaderName, value: HeaderValue },
    Param { name: String, value: String },
    Bearer(String),
    Basic { username: String, password: Option<String> },
    Oauth2 { token_url: Url, client_id: String, client_secret: String, scope: Option<String>, token: Option<(String, Option<Instant>)> },
}

/// Requests with authentication, rate limiting and retries.
pub(crate) struct Http {
    client: reqwest::Client,
    auth: Auth,
    headers: HeaderMap,
    /// `secret_query_params`, revealed: added to every URL of the configured origin.
    secret_params: Vec<(String, String)>,
    /// The configured URL's origin: the only one the secret query parameters go to.
    home: url::Origin,
    /// The earliest moment the next request may start, and the spacing.
    next_slot: Option<Instant>,
    spacing: Option<Duration>,
    retries: u32,
    initial_delay: Duration,
    max_delay: Duration,
    timeout: Duration,
    /// The origins (`scheme://host:port`) the egress policy admitted: checked once each, not
    /// on every page.
    admitted: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// What one request ended as, after its retries.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body, read whole (pages and batch answers are small).
    pub body: Vec<u8>,
    pub url: Url,
}

fn secret(s: &dagg_model::spec::connector::Secret, what: &str, url: &str) -> Result<String, ConnectorError> {
    secrets::reveal(s).map_err(|e| ConnectorError::Config(format!("{url}: {what}: {e}")))
}

impl Http {
    pub fn new(c: &RestApiConfig) -> Result<Http, ConnectorError> {
        let shown = shown_url_text(&c.url);
        let timeout = Duration::from_secs(c.connection_timeout);
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("dagg/", env!("CARGO_PKG_VERSION")))
            // Names resolve through the egress policy, and redirects are followed by
            // `exchange`, which checks each hop and keeps credentials to the first origin.
            .dns_resolver(egress::Resolver)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConnectorError::Config(format!("{shown}: cannot build an HTTP client: {e}")))?;
        let p = &c.auth_params;
        let auth = match c.auth_method {
            AuthMethod::None => Auth::None,
            AuthMethod::ApiKey => {
                let value = secret(p.api_key_value.as_ref().ok_or_else(|| missing(&shown, "api_key_value"))?, "api_key_value", &shown)?;
                match &p.api_key_param {
                    Some(name) => Auth::Param { name: name.clone(), value },
                    None => {
                        let name = HeaderName::from_bytes(p.api_key_header().as_bytes())
                            .map_err(|_| ConnectorError::Config(format!("{shown}: `{}` is not a header name", p.api_key_header())))?;
                        let mut value = HeaderValue::from_str(&value)
                            .map_err(|_| ConnectorError::Config(format!("{shown}: the API key cannot be sent in a header")))?;
                        value.set_sensitive(true);
                        Auth::Header { name, value }
                    }
                }
            }
            AuthMethod::BearerToken => Auth::Bearer(secret(p.token.as_ref().ok_or_else(|| missing(&shown, "token"))?, "token", &shown)?),
            AuthMethod::Basic => Auth::Basic {
                username: p.username.clone().ok_or_else(|| missing(&shown, "username"))?,
                password: p.password.as_ref().map(|s| secret(s, "password", &shown)).transpose()?,
            },
            AuthMethod::Oauth2 => {
                let url = p.token_url.as_deref().ok_or_else(|| missing(&shown, "token_url"))?;
                Auth::Oauth2 {
                    token_url: Url::parse(url).map_err(|e| ConnectorError::Config(format!("{shown}: token_url `{url}`: {e}")))?,
                    client_id: p.client_id.clone().ok_or_else(|| missing(&shown, "client_id"))?,
                    client_secret: secret(p.client_secret.as_ref().ok_or_else(|| missing(&shown, "client_secret"))?, "client_secret", &shown)?,
                    scope: p.scope.clone(),
                    token: None,
                }
            }
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &c.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| ConnectorError::Config(format!("{shown}: `{k}` is not a header name")))?;
            let clear = secret(v, &format!("headers.{k}"), &shown)?;
            let mut value = HeaderValue::from_str(&clear).map_err(|_| ConnectorError::Config(format!("{shown}: the value of header `{k}` cannot be sent")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let secret_params = c
            .secret_query_params
            .iter()
            .map(|(k, v)| Ok((k.clone(), secret(v, &format!("secret_query_params.{k}"), &shown)?)))
            .collect::<Result<Vec<_>, ConnectorError>>()?;
        let home = Url::parse(&c.url).map_err(|e| ConnectorError::Config(format!("`{shown}` is not a URL: {e}")))?.origin();
        let spacing = c.rate_limit.map(|n| Duration::from_secs_f64(c.rate_limit_period.seconds() as f64 / f64::from(n.max(1))));
        Ok(Http {
            client,
            auth,
            headers,
            secret_params,
            home,
            next_slot: None,
            admitted: Default::default(),
            spacing,
            retries: c.retry_attempts,
            initial_delay: Duration::from_secs_f64(c.retry_initial_delay_seconds),
            max_delay: Duration::from_secs_f64(c.retry_max_delay_seconds),
            timeout,
        })
    }

    /// The query parameters whose values are secret (the API key's, if it travels in one,
    /// and `secret_query_params`): added to server-given URLs, hidden in messages.
    fn secret_param_names(&self) -> Vec<&str> {
        let key = match &self.auth {
            Auth::Param { name, .. } => Some(name.as_str()),
            _ => None,
        };
        key.into_iter().chain(self.secret_params.iter().map(|(k, _)| k.as_str())).collect()
    }

    /// Adds the API key parameter to a URL that lacks it, and the secret query parameters
    /// to a URL of the configured origin that lacks them.
    pub fn with_key(&self, mut url: Url) -> Url {
        if let Auth::Param { name, value } = &self.auth
            && !url.query_pairs().any(|(k, _)| k == name.as_str())
        {
            url.query_pairs_mut().append_pair(name, value);
        }
        if url.origin() == self.home {
            for (name, value) in &self.secret_params {
                if !url.query_pairs().any(|(k, _)| k == name.as_str()) {
                    url.query_pairs_mut().append_pair(name, value);
                }
            }
        }
        url
    }

    /// How messages show a URL: no user info, the secret parameters masked.
    pub fn shown(&self, url: &Url) -> String {
        shown_url(url, &self.secret_param_names())
    }

    /// Waits for the rate limiter's next slot.
    async fn pace(&mut self) {
        let Some(spacing) = self.spacing else { return };
        let now = Instant::now();
        let slot = self.next_slot.map_or(now, |s| s.max(now));
        if slot > now {
            tokio::time::sleep(slot - now).await;
        }
        self.next_slot = Some(slot + spacing);
    }

    /// A valid OAuth 2 token, fetched when missing, expiring, or `force`d.
    async fn oauth_token(&mut self, force: bool) -> Result<Option<String>, ConnectorError> {
        let Auth::Oauth2 { token_url, client_id, client_secret, scope, token } = &mut self.auth else { return Ok(None) };
        if !force
            && let Some((t, expiry)) = token
            && expiry.is_none_or(|e| Instant::now() + TOKEN_MARGIN < e)
        {
            return Ok(Some(t.clone()));
        }
        let shown = shown_url(token_url, &[]);
        egress::check_url(token_url).await.map_err(|e| egress::named(e, &shown))?;
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            form.append_pair("client_id", client_id);
            form.append_pair("client_secret", client_secret);
            if let Some(s) = scope {
                form.append_pair("scope", s);
            }
            form.finish()
        };
        let resp = self
            .client
            .post(token_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| net_error(&shown, self.timeout, &e))?;
        let status = resp.status();
        let body = match read_capped(resp, MAX_BODY).await {
            Ok(b) => b,
            Err(Capped::Net(e)) => return Err(net_error(&shown, self.timeout, &e)),
            Err(Capped::TooLarge) => return Err(too_large(&shown)),
        };
        if !status.is_success() {
            return Err(ConnectorError::Http { url: shown, reason: format!("the token request got {status}: {}", excerpt(&body)) });
        }
        let v: Json = serde_json::from_slice(&body).map_err(|e| ConnectorError::Http { url: shown.clone(), reason: format!("the token response is not JSON: {e}") })?;
        let Some(access) = v.get("access_token").and_then(Json::as_str) else {
            return Err(ConnectorError::Http { url: shown, reason: "the token response has no `access_token`".into() });
        };
        let expiry = v.get("expires_in").and_then(|e| e.as_f64().or_else(|| e.as_str().and_then(|s| s.parse().ok()))).map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
        tracing::debug!(token_url = %shown, "fetched an OAuth 2 token");
        *token = Some((access.to_string(), expiry));
        Ok(Some(access.to_string()))
    }

    /// Sends a request, retrying per the config; returns the final answer (any status
    /// that is not retried, or the last retried one).
    pub async fn send(&mut self, method: HttpMethod, url: Url, body: Option<&Json>) -> Result<Answer, ConnectorError> {
        let url = self.with_key(url);
        let shown = self.shown(&url);
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            self.pace().await;
            let token = self.oauth_token(false).await?;
            let outcome = self.exchange(method_of(method), &url, body, token.as_deref(), &shown).await?;
            let wait = match outcome {
                Ok((status, headers, body)) => {
                    if status == StatusCode::UNAUTHORIZED && matches!(self.auth, Auth::Oauth2 { .. }) && !refreshed {
                        // The token was revoked or expired early: fetch another, once.
                        refreshed = true;
                        self.oauth_token(true).await?;
                        continue;
                    }
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if !retryable || attempt >= self.retries {
                        if retryable {
                            return Err(ConnectorError::Http {
                                url: shown,
                                reason: format!("gave up after {} retries: {status}: {}", self.retries, excerpt(&body)),
                            });
                        }
                        return Ok(Answer { status, headers, body, url });
                    }
                    let asked = retry_after(&headers);
                    tracing::warn!(url = %shown, %status, attempt, "retrying");
                    asked.unwrap_or_else(|| self.backoff(attempt))
                }
                Err(e) => {
                    if attempt >= self.retries {
                        return Err(net_error(&shown, self.timeout, &e));
                    }
                    tracing::warn!(url = %shown, attempt, "retrying after a network error: {e}");
                    self.backoff(attempt)
                }
            };
            attempt += 1;
            tokio::time::sleep(wait.min(self.max_delay)).await;
        }
    }

    /// Checks `url`'s origin against the egress policy, once per origin.
    async fn admit(&self, url: &Url) -> Result<(), ConnectorError> {
        let origin = url.origin().ascii_serialization();
        if self.admitted.lock().unwrap_or_else(|e| e.into_inner()).contains(&origin) {
            return Ok(());
        }
        egress::check_url(url).await.map_err(|e| egress::named(e, &self.shown(url)))?;
        self.admitted.lock().unwrap_or_else(|e| e.into_inner()).insert(origin);
        Ok(())
    }

    /// One request and the redirects after it (at most [`MAX_REDIRECTS`]): every hop is
    /// checked by the egress policy before it is sent, and the authentication, the token
    /// and the configured headers go only to the first URL's origin (scheme, host, port).
    /// The outer error is final (refused, too large); the inner one is a network error that
    /// may be retried.
    async fn exchange(
        &self,
        method: reqwest::Method,
        first: &Url,
        body: Option<&Json>,
        token: Option<&str>,
        shown: &str,
    ) -> Result<Result<(StatusCode, HeaderMap, Vec<u8>), reqwest::Error>, ConnectorError> {
        let origin = first.origin();
        let (mut method, mut body, mut url) = (method, body, first.clone());
        for hop in 0..=MAX_REDIRECTS {
            self.admit(&url).await?;
            let mut req = self.client.request(method.clone(), url.clone()).header(reqwest::header::ACCEPT, "application/json");
            if url.origin() == origin {
                req = req.headers(self.headers.clone());
                req = match &self.auth {
                    Auth::Header { name, value } => req.header(name, value),
                    Auth::Bearer(t) => req.bearer_auth(t),
                    Auth::Basic { username, password } => req.basic_auth(username, password.as_ref()),
                    _ => req,
                };
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            let status = resp.status();
            let location = resp.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok());
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED
                && let Some(location) = location
            {
                if hop == MAX_REDIRECTS {
                    return Err(ConnectorError::Http { url: shown.to_string(), reason: format!("more than {MAX_REDIRECTS} redirects") });
                }
                let next = url
                    .join(location)
                    .map_err(|e| ConnectorError::Http { url: shown.to_string(), reason: format!("{status} to `{location}`, which is not a URL: {e}") })?;
                if !matches!(next.scheme(), "http" | "https") {
                    return Err(ConnectorError::Http { url: shown.to_string(), reason: format!("{status} to a `{}` URL, which is not followed", next.scheme()) });
                }
                if status == StatusCode::SEE_OTHER
                    || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND) && method == reqwest::Method::POST)
                {
                    method = reqwest::Method::GET;
                    body = None;
                }
                url = next;
                continue;
            }
            let headers = resp.headers().clone();
            return match read_capped(resp, MAX_BODY).await {
                Ok(b) => Ok(Ok((status, headers, b))),
                Err(Capped::Net(e)) => Ok(Err(e)),
                Err(Capped::TooLarge) => Err(too_large(shown)),
            };
        }
        unreachable!("the last hop returns")
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.initial_delay.saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX)).min(self.max_delay)
    }
}

fn missing(url: &str, key: &str) -> ConnectorError {
    ConnectorError::Config(format!("{url}: `auth_params.{key}` is missing"))
}

fn method_of(m: HttpMethod) -> reqwest::Method {
    match m {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
    }
}

/// A network-level failure (no HTTP answer) as a connector error.
fn net_error(url: &str, timeout: Duration, e: &reqwest::Error) -> ConnectorError {
    // reqwest's message names the URL with its query; ours is the masked one.
    let mut reason = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        reason = s.to_string();
        src = s.source();
    }
    if e.is_timeout() {
        ConnectorError::Timeout { target: url.to_string(), seconds: timeout.as_secs(), reason: "no answer".into() }
    } else if e.is_connect() {
        ConnectorError::Connect { target: url.to_string(), reason: if reason.is_empty() { "connection failed".into() } else { reason } }
    } else {
        ConnectorError::Http { url: url.to_string(), reason: if reason.is_empty() { e.without_url_text() } else { reason } }
    }
}

trait WithoutUrl {
    fn without_url_text(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_text(&self) -> String {
        let mut s = self.to_string();
        if let Some(u) = self.url() {
            s = s.replace(u.as_str(), "");
        }
        s
    }
}

/// `Retry-After` as a wait: whole seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return Some(Duration::from_secs_f64(secs.max(0.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds().max(0);
    Some(Duration::from_millis(secs as u64))
}

/// Why a body was not read.
enum Capped {
    Net(reqwest::Error),
    TooLarge,
}

/// Reads a response body chunk by chunk, refusing it (and reading no further) once it is
/// longer than `cap`; a `Content-Length` over the cap refuses it before any is read.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, Capped> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(Capped::TooLarge);
    }
    let mut body = Vec::with_capacity(resp.content_length().map_or(8192, |n| n as usize));
    while let Some(chunk) = resp.chunk().await.map_err(Capped::Net)? {
        if body.len() + chunk.len() > cap {
            return Err(Capped::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large(shown: &str) -> ConnectorError {
    ConnectorError::Http {
        url: shown.to_string(),
        reason: format!("the response body is larger than {} MiB; ask for smaller pages (`pagination.page_size`)", MAX_BODY >> 20),
    }
}

/// The first characters of a body, for messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    if t.is_empty() {
        return "(empty body)".into();
    }
    match t.char_indices().nth(EXCERPT) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

fn shown_url(url: &Url, secret_params: &[&str]) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query_pairs().any(|(k, _)| secret_params.contains(&k.as_ref())) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_params.contains(&k.as_ref()) { dagg_model::spec::connector::MASK.to_string() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

fn shown_url_text(url: &str) -> String {
    Url::parse(url).map(|u| shown_url(&u, &[])).unwrap_or_else(|_| url.to_string())
}

/// The `rel="next"` URL of a `Link` header, resolved against the request's URL.
pub(crate) fn link_next(headers: &HeaderMap, base: &Url) -> Option<Url> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(text) = value.to_str() else { continue };
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else { break };
            let target = &rest[open + 1..open + close];
            let after = &rest[open + close + 1..];
            let params_end = after.find('<').unwrap_or(after.len());
            let params = &after[..params_end];
            let is_next = params.split(';').any(|p| {
                let p = p.trim().trim_end_matches(',').trim();
                p.strip_prefix("rel=").is_some_and(|r| r.trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next")))
            });
            if is_next {
                return base.join(target).ok();
            }
            rest = &after[params_end..];
        }
    }
    None
}

/// The value at a dotted path of a JSON document.
pub(crate) fn at_path<'a>(v: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.').try_fold(v, |cur, seg| match cur {
        Json::Object(m) => m.get(seg),
        Json::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// What [`crate::test_connection`] checks for a `rest_api` connector: one request (a GET)
/// with the configured authentication gets an answer that is not an error.
pub(crate) async fn test_connection(c: &RestApiConfig, role: Role) -> Result<String, ConnectorError> {
    let mut http = Http::new(c)?;
    // One attempt: the point is to see what the endpoint says now.
    http.retries = 0;
    let url = Url::parse(&c.url).map_err(|e| ConnectorError::Config(format!("`{}` is not a URL: {e}", shown_url_text(&c.url))))?;
    let mut url = url;
    for (k, v) in &c.query_params {
        url.query_pairs_mut().append_pair(k, v);
    }
    let a = http.send(HttpMethod::Get, url, None).await?;
    let shown = http.shown(&a.url);
    match a.status {
        s if s.is_success() || s.is_redirection() => Ok(format!("GET {shown}: {s}")),
        StatusCode::METHOD_NOT_ALLOWED if role != Role::Source => {
            Ok(format!("GET {shown}: {} (the endpoint is there; a destination sends {})", a.status, c.method_for(Role::Sink)))
        }
        s => Err(ConnectorError::Http { url: shown, reason: format!("{s}: {}", excerpt(&a.body)) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_find_next() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::LINK, HeaderValue::from_static("<https://x/a?page=1>; rel=\"prev\", </a?page=3>; rel=\"next\", <https://x/a?page=9>; rel=\"last\""));
        let base = Url::parse("https://x/a?page=2").unwrap();
        assert_eq!(link_next(&h, &base).unwrap().as_str(), "https://x/a?page=3");
        h.insert(reqwest::header::LINK, HeaderValue::from_static("<https://x/a?page=1>; rel=\"first\""));
        assert!(link_next(&h, &base).is_none());
    }

    #[test]
    fn urls_hide_credentials() {
        let u = Url::parse("https://user:pw@x/a?key=s3cret&page=2").unwrap();
        let shown = shown_url(&u, &["key"]);
        assert!(!shown.contains("s3cret") && !shown.contains("pw") && shown.contains("page=2"), "{shown}");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }

    #[test]
    fn paths_walk_objects_and_arrays() {
        let v: Json = serde_json::json!({"data": {"items": [{"a": 1}], "next": {"cursor": "c2"}}});
        assert_eq!(at_path(&v, "data.next.cursor"), Some(&Json::from("c2")));
        assert_eq!(at_path(&v, "data.items.0.a"), Some(&Json::from(1)));
        assert!(at_path(&v, "data.nope").is_none());
    }
}
