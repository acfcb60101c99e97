//! `connector_type: rest_api` (also `REST API`) — an HTTP JSON API: paged GETs as a source,
//! records POSTed in batches as a destination.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::SpecErrors;
use crate::spec::connector::Role;
use crate::spec::connectors::{ConnectorConfig, ConnectorKind, Roles, Status, schema_of};
use crate::spec::connectors::common::{Secret, is_http_url, role_word, url_userinfo, word_enum};
use crate::spec::reader::parse_json;

word_enum! {
    /// How a `rest_api` connector authenticates.
    AuthMethod {
        /// No credentials.
        None = "none",
        /// A key in a header (`auth_params.api_key_header`, default `X-API-Key`) or a query
        /// parameter (`auth_params.api_key_param`).
        ApiKey = "api_key" | "apikey",
        /// `Authorization: Bearer <auth_params.token>`.
        BearerToken = "bearer_token" | "bearer" | "token",
        /// HTTP basic auth with `auth_params.username` and `auth_params.password`.
        Basic = "basic" | "basic_auth",
        /// OAuth 2 client credentials: a token from `auth_params.token_url`, fetched again
        /// before it expires and after a 401.
        Oauth2 = "oauth2" | "oauth2_client_credentials" | "client_credentials",
    }
}

word_enum! {
    /// How a `rest_api` source walks pages.
    PaginationType {
        /// One request.
        None = "none",
        /// `offset_param` and `limit_param`; stops on a short page.
        Offset = "offset",
        /// `page_param` from `start_page`, and `limit_param`; stops on a short page.
        Page = "page" | "page_number",
        /// The next cursor is read at `cursor_path` in each response and sent as
        /// `cursor_param`; stops when it is missing, null or empty.
        Cursor = "cursor",
        /// Follows the `Link` header's `rel="next"` URL; stops when there is none.
        LinkHeader = "link_header" | "link",
    }
}

word_enum! {
    /// The period `rate_limit` counts requests in.
    RatePeriod {
        Second = "second" | "seconds" | "sec" | "s",
        Minute = "minute" | "minutes" | "min" | "m",
        Hour = "hour" | "hours" | "h",
    }
}

impl RatePeriod {
    pub fn seconds(self) -> u64 {
        match self {
            RatePeriod::Second => 1,
            RatePeriod::Minute => 60,
            RatePeriod::Hour => 3600,
        }
    }
}

word_enum! {
    /// The HTTP method of a `rest_api` request.
    HttpMethod {
        Get = "GET" | "get",
        Post = "POST" | "post",
        Put = "PUT" | "put",
        Patch = "PATCH" | "patch",
    }
}

/// `auth_params` of a `rest_api` connector: which keys apply depends on `auth_method`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthParams {
    /// `api_key`: the header that carries the key (default `X-API-Key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_header: Option<String>,
    /// `api_key`: send the key as this query parameter instead of a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_param: Option<String>,
    /// `api_key`: the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_value: Option<Secret>,
    /// `bearer_token`: the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// `basic`: the user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `basic`: the password (may be absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// `oauth2`: the token endpoint (an absolute `http`/`https` URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// `oauth2`: the client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `oauth2`: the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// `oauth2`: the scopes to ask for, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl AuthParams {
    /// The header an API key goes in.
    pub fn api_key_header(&self) -> &str {
        self.api_key_header.as_deref().unwrap_or(DEFAULT_API_KEY_HEADER)
    }
}

/// The header an API key goes in when `api_key_header` is absent.
pub const DEFAULT_API_KEY_HEADER: &str = "X-API-Key";

/// `pagination` of a `rest_api` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pagination {
    /// `none`, `offset`, `page` (page number), `cursor` or `link_header`.
    #[serde(rename = "type")]
    pub kind: PaginationType,
    /// Records asked for per page (`offset`, `page`; sent with `limit_param`). A page with
    /// fewer records is the last one. With `cursor` and `link_header` it is sent only when
    /// given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    /// The query parameter for the page size (default `limit`).
    #[serde(default = "default_limit_param")]
    pub limit_param: String,
    /// `offset`: the query parameter for the number of records to skip (default `offset`).
    #[serde(default = "default_offset_param")]
    pub offset_param: String,
    /// `page`: the query parameter for the page number (default `page`).
    #[serde(default = "default_page_param")]
    pub page_param: String,
    /// `page`: the number of the first page (default 1).
    #[serde(default = "default_start_page")]
    pub start_page: u64,
    /// `cursor`: a dotted path in the response body to the next page's cursor (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_path: Option<String>,
    /// `cursor`: the query parameter that sends the cursor (default `cursor`).
    #[serde(default = "default_cursor_param")]
    pub cursor_param: String,
    /// Stop after this many pages, whatever the server says (a safety net).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pages: Option<u64>,
}

fn default_limit_param() -> String {
    "limit".into()
}
fn default_offset_param() -> String {
    "offset".into()
}
fn default_page_param() -> String {
    "page".into()
}
fn default_start_page() -> u64 {
    1
}
fn default_cursor_param() -> String {
    "cursor".into()
}
/// Records per page when `pagination.page_size` is absent (`offset`, `page`).
pub fn default_page_size() -> u32 {
    100
}

impl Pagination {
    /// The page size for `offset` and `page` pagination.
    pub fn page_size(&self) -> u32 {
        self.page_size.unwrap_or_else(default_page_size)
    }
}

/// `incremental` of a `rest_api` source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestIncremental {
    /// The record field whose largest value is the high-water mark; a later run keeps only
    /// records whose value is greater.
    pub cursor_field: String,
    /// A query parameter that sends the high-water mark to the API on the first request
    /// (e.g. `updated_since`), so the server can skip old records too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

/// `connector_type: rest_api` (or `REST API`) — an HTTP JSON API as a source (paged GETs)
/// or a destination (records POSTed in batches as a JSON array).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestApiConfig {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The endpoint: an absolute `http` or `https` URL (it may carry query parameters).
    pub url: String,
    /// The HTTP method: `GET` (a source's default) or `POST` for a source; `POST` (a
    /// destination's default), `PUT` or `PATCH` for a destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Extra request headers. Every value is a secret (sealed at rest, never shown back),
    /// since headers so often carry credentials; they go only to the URL's origin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// Extra query parameters sent with every request. A name that looks like a
    /// credential (`access_token`, `api_key`, `signature`, …) is refused: put it in
    /// `secret_query_params`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, String>,
    /// Query parameters whose values are secrets (a token or key the API wants in the
    /// URL): sealed at rest, never shown back, masked in messages, sent with every request
    /// to the URL's origin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_query_params: BTreeMap<String, Secret>,
    /// `none` (default), `api_key` (the guide's `API_KEY`), `bearer_token`, `basic`, or
    /// `oauth2` (client credentials).
    #[serde(default = "default_auth_method")]
    pub auth_method: AuthMethod,
    /// The credentials `auth_method` needs.
    #[serde(default)]
    pub auth_params: AuthParams,
    /// Source: how to walk pages (default: one request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    /// Source: a dotted path to the array of records in a response (`data.items`). When
    /// absent: the body itself if it is an array, else its one array under `data`,
    /// `results` or `items`, else the body as one record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_path: Option<String>,
    /// At most this many requests per `rate_limit_period` (no limit when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// `second` (default), `minute` or `hour`.
    #[serde(default = "default_rate_limit_period")]
    pub rate_limit_period: RatePeriod,
    /// Retries of a request that failed with 429, a 5xx or a network error (default 3),
    /// with exponential backoff; a `Retry-After` header sets the wait instead.
    #[serde(default = "default_retry_attempts")]
    pub retry_attempts: u32,
    /// The first retry's wait in seconds (default 1); each next one doubles it.
    #[serde(default = "default_retry_initial_delay_seconds")]
    pub retry_initial_delay_seconds: f64,
    /// The longest wait between retries in seconds, `Retry-After` included (default 60).
    #[serde(default = "default_retry_max_delay_seconds")]
    pub retry_max_delay_seconds: f64,
    /// Seconds to wait for a connection and for each response (default 30).
    #[serde(default = "default_connection_timeout")]
    pub connection_timeout: u64,
    /// Source: keep only records past the last run's high-water mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<RestIncremental>,
    /// Destination: records per request (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
}

fn default_auth_method() -> AuthMethod {
    AuthMethod::None
}
fn default_rate_limit_period() -> RatePeriod {
    RatePeriod::Second
}
fn default_retry_attempts() -> u32 {
    3
}
fn default_retry_initial_delay_seconds() -> f64 {
    1.0
}
fn default_retry_max_delay_seconds() -> f64 {
    60.0
}
fn default_connection_timeout() -> u64 {
    30
}
/// Records per request of a `rest_api` destination when `batch_size` is absent.
pub fn default_rest_batch_size() -> usize {
    100
}

impl RestApiConfig {
    /// The method for a role: the configured one, else `GET` for a source and `POST` for a
    /// destination.
    pub fn method_for(&self, role: Role) -> HttpMethod {
        self.method.unwrap_or(if role == Role::Sink { HttpMethod::Post } else { HttpMethod::Get })
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or_else(default_rest_batch_size)
    }
}

/// The `rest_api` kind.
pub const KIND: ConnectorKind = ConnectorKind {
    name: "rest_api",
    aliases: &["REST API"],
    summary: "An HTTP JSON API: paged GETs as a source, batched POSTs as a destination.",
    roles: Roles::Both,
    icon: "globe",
    status: Status::Implemented { parse, schema: schema_of::<RestApiConfig> },
};

fn parse(config: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorConfig> {
    let c: RestApiConfig = parse_json(config, path, errs)?;
    check_rest(&c, path, role, errs)?;
    Some(ConnectorConfig::RestApi(c))
}

pub fn check_rest(c: &RestApiConfig, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    let at = |key: &str| format!("{path}.{key}");
    if !is_http_url(&c.url) {
        errs.push(at("url"), format!("`{}` is not an absolute http or https URL", c.url));
    }
    if let Some((_, true)) = url_userinfo(&c.url) {
        errs.push(at("url"), "the URL carries a password; use `auth_method: basic` with `auth_params.username` and `auth_params.password` (a secret)");
    }
    for name in c.query_params.keys() {
        if looks_like_credential(name) {
            errs.push(
                format!("{path}.query_params.{name}"),
                format!("`{name}` looks like a credential; put it in `secret_query_params`, whose values are sealed and never shown"),
            );
        }
        if c.secret_query_params.contains_key(name) {
            errs.push(format!("{path}.query_params.{name}"), format!("`{name}` is also in `secret_query_params`; give it once"));
        }
    }
    if let Some(m) = c.method {
        let ok = match role {
            Role::Source => matches!(m, HttpMethod::Get | HttpMethod::Post),
            Role::Sink => matches!(m, HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch),
            Role::Any => true,
        };
        if !ok {
            let allowed = if role == Role::Source { "GET or POST" } else { "POST, PUT or PATCH" };
            errs.push(at("method"), format!("a {} uses {allowed}, not {m}", role_word(role)));
        }
    }
    check_auth(c, path, errs);
    if c.rate_limit == Some(0) {
        errs.push(at("rate_limit"), "must be at least 1 request per period (leave it out for no limit)");
    }
    if c.retry_attempts > 100 {
        errs.push(at("retry_attempts"), format!("{} is out of range; expected at most 100", c.retry_attempts));
    }
    for (key, v) in [("retry_initial_delay_seconds", c.retry_initial_delay_seconds), ("retry_max_delay_seconds", c.retry_max_delay_seconds)] {
        if !v.is_finite() || !(0.0..=3600.0).contains(&v) {
            errs.push(at(key), format!("{v} is out of range; expected seconds from 0 to 3600"));
        }
    }
    if !(1..=3600).contains(&c.connection_timeout) {
        errs.push(at("connection_timeout"), format!("{} is out of range; expected seconds from 1 to 3600", c.connection_timeout));
    }
    if let Some(p) = &c.pagination {
        let pp = at("pagination");
        if p.page_size == Some(0) {
            errs.push(format!("{pp}.page_size"), "must be at least 1");
        }
        match (p.kind, &p.cursor_path) {
            (PaginationType::Cursor, None) => {
                errs.push(format!("{pp}.cursor_path"), "pagination `cursor` needs `cursor_path`, where the next cursor is in a response")
            }
            (PaginationType::Cursor, Some(cp)) if cp.split('.').any(str::is_empty) => {
                errs.push(format!("{pp}.cursor_path"), format!("`{cp}` has an empty segment; write paths as `a.b.c`"))
            }
            (k, Some(_)) if k != PaginationType::Cursor => {
                errs.push(format!("{pp}.cursor_path"), format!("`cursor_path` applies only to pagination `cursor`, not `{k}`"))
            }
            _ => {}
        }
        if p.max_pages == Some(0) {
            errs.push(format!("{pp}.max_pages"), "must be at least 1");
        }
    }
    if let Some(rp) = &c.records_path
        && rp.split('.').any(str::is_empty)
    {
        errs.push(at("records_path"), format!("`{rp}` has an empty segment; write paths as `a.b.c`"));
    }
    if let Some(inc) = &c.incremental
        && inc.cursor_field.trim().is_empty()
    {
        errs.push(format!("{path}.incremental.cursor_field"), "may not be empty");
    }
    if c.batch_size == Some(0) {
        errs.push(at("batch_size"), "must be at least 1");
    }
    match role {
        Role::Sink => {
            for (key, set) in [
                ("pagination", c.pagination.is_some()),
                ("records_path", c.records_path.is_some()),
                ("incremental", c.incremental.is_some()),
            ] {
                if set {
                    errs.push(at(key), format!("`{key}` applies only to a source"));
                }
            }
        }
        Role::Source => {
            if c.batch_size.is_some() {
                errs.push(at("batch_size"), "`batch_size` applies only to a destination (a source's pages are `pagination.page_size`)");
            }
        }
        Role::Any => {}
    }
    (errs.len() == before).then_some(())
}

/// Whether a query parameter's name looks like it carries a credential.
pub fn looks_like_credential(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase().replace(['-', '.', ' '], "_");
    const EXACT: &[&str] = &["key", "token", "secret", "password", "passwd", "pwd", "pass", "auth", "sig", "signature", "apikey", "code", "jwt", "session", "sessionid", "credential", "credentials"];
    EXACT.contains(&n.as_str())
        || ["token", "secret", "password", "passwd", "apikey", "api_key", "signature", "credential", "private"].iter().any(|w| n.contains(w))
        || n.ends_with("_key")
        || n.ends_with("_sig")
        || n.ends_with("_auth")
}

fn check_auth(c: &RestApiConfig, path: &str, errs: &mut SpecErrors) {
    let p = &c.auth_params;
    let ap = format!("{path}.auth_params");
    let needs = |errs: &mut SpecErrors, key: &str, set: bool| {
        if !set {
            errs.push(format!("{ap}.{key}"), format!("auth_method `{}` needs `auth_params.{key}`", c.auth_method));
        }
    };
    // Which keys each method reads; any other key given is a mistake worth saying.
    let used: &[&str] = match c.auth_method {
        AuthMethod::None => &[],
        AuthMethod::ApiKey => {
            needs(errs, "api_key_value", p.api_key_value.is_some());
            if p.api_key_header.is_some() && p.api_key_param.is_some() {
                errs.push(format!("{ap}.api_key_param"), "give `api_key_header` or `api_key_param`, not both");
            }
            &["api_key_header", "api_key_param", "api_key_value"]
        }
        AuthMethod::BearerToken => {
            needs(errs, "token", p.token.is_some());
            &["token"]
        }
        AuthMethod::Basic => {
            needs(errs, "username", p.username.is_some());
            &["username", "password"]
        }
        AuthMethod::Oauth2 => {
            needs(errs, "token_url", p.token_url.is_some());
            needs(errs, "client_id", p.client_id.is_some());
            needs(errs, "client_secret", p.client_secret.is_some());
            if let Some(u) = &p.token_url
                && !is_http_url(u)
            {
                errs.push(format!("{ap}.token_url"), format!("`{u}` is not an absolute http or https URL"));
            }
            &["token_url", "client_id", "client_secret", "scope"]
        }
    };
    let given = [
        ("api_key_header", p.api_key_header.is_some()),
        ("api_key_param", p.api_key_param.is_some()),
        ("api_key_value", p.api_key_value.is_some()),
        ("token", p.token.is_some()),
        ("username", p.username.is_some()),
        ("password", p.password.is_some()),
        ("token_url", p.token_url.is_some()),
        ("client_id", p.client_id.is_some()),
        ("client_secret", p.client_secret.is_some()),
        ("scope", p.scope.is_some()),
    ];
    for (key, set) in given {
        if set && !used.contains(&key) {
            errs.push(format!("{ap}.{key}"), format!("`{key}` does not apply to auth_method `{}`", c.auth_method));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(config: Json) -> Vec<String> {
        let mut errs = SpecErrors::new();
        let c: RestApiConfig = serde_json::from_value(config).unwrap();
        check_rest(&c, "source.config", Role::Source, &mut errs);
        errs.iter().map(|e| format!("{}: {}", e.path, e.message)).collect()
    }

    #[test]
    fn credential_query_params_and_url_passwords_are_refused_naming_the_secret_field() {
        let got = errors(json!({"url": "https://api.example.com/x", "query_params": {"access_token": "t", "api-key": "k", "page_size": "5"}}));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().all(|e| e.contains("secret_query_params")), "{got:?}");
        assert!(got[0].starts_with("source.config.query_params.access_token:"), "{got:?}");
        let got = errors(json!({"url": "https://u:pw@api.example.com/x"}));
        assert!(got.len() == 1 && got[0].starts_with("source.config.url:") && got[0].contains("auth_params.password"), "{got:?}");
        // A secret query parameter and secret headers are fine.
        assert!(errors(json!({"url": "https://api.example.com/x", "headers": {"X-Token": "h"}, "secret_query_params": {"access_token": "t"}, "query_params": {"sort": "id"}})).is_empty());
        let got = errors(json!({"url": "https://api.example.com/x", "query_params": {"sort": "id"}, "secret_query_params": {"sort": "x"}}));
        assert!(got.len() == 1 && got[0].contains("give it once"), "{got:?}");
    }

    #[test]
    fn header_values_are_secrets() {
        let c: RestApiConfig = serde_json::from_value(json!({"url": "https://x", "headers": {"X-Anything": "h3ader"}})).unwrap();
        assert_eq!(c.headers["X-Anything"].expose(), "h3ader");
        assert!(!format!("{c:?}").contains("h3ader"));
    }
}
