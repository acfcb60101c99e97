//! Connector specs: `{"connector_type": ..., "config": {...}}`.
//!
//! One closed registry: [`ConnectorConfig`] has a variant per connector dagg implements, and
//! [`parse_connector`] is the one place that maps a `connector_type` name to its config type.
//! A name dagg does not implement is an error that says so, never ignored.
//!
//! Each config is read in two steps: serde reads the shape (`deny_unknown_fields`, so a
//! misspelt key is an error with its path), then a `check_*` function applies the rules
//! that span fields (`query` or `table`, `upsert` needs `key_fields`, …) and the rules of the
//! role the connector plays, reporting every problem with its path. Nothing here connects
//! anywhere: opening connections is the connectors crate's job.
//!
//! Credentials are [`Secret`]s: `Debug` and `Display` print [`MASK`], so a config in a log or
//! an error message never shows one. A secret's value may be written in clear or as the
//! `enc:v1:` ciphertext that `dagg_connectors::secrets` produces; the connector decrypts it
//! when it opens.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::SpecErrors;
use crate::spec::reader::{Obj, parse_json};

/// Where a connector is used; some settings only make sense in one role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The pipeline's `source`, or an entry of `sources`.
    Source,
    /// A `destination`, an entry of `destinations`, or the dead-letter destination.
    Sink,
    /// A connector configuration on its own (the guide's section 5.3.5: saved, tested,
    /// later used by pipelines): settings of either role are allowed and none is required.
    Any,
}

/// A connector as the pipeline document names it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConnectorSpec {
    /// The `connector_type` as written (for messages and round trips).
    pub connector_type: String,
    pub config: ConnectorConfig,
}

impl ConnectorSpec {
    /// The user's name for this connector (`config.name`), else its type.
    pub fn display_name(&self) -> &str {
        self.config.name().unwrap_or(&self.connector_type)
    }
}

/// Every connector dagg implements, with its typed config.
// Specs are built once per pipeline, not per record: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ConnectorConfig {
    File(FileConfig),
    /// `rest_api` (also written `REST API`).
    RestApi(RestApiConfig),
    /// `postgresql`.
    Postgres(DatabaseConfig),
    /// `mysql` (MySQL and MariaDB).
    Mysql(DatabaseConfig),
    /// `nats` (core NATS and JetStream).
    Nats(crate::spec::streaming::NatsConfig),
    /// `kafka`.
    Kafka(crate::spec::streaming::KafkaConfig),
    /// `rabbitmq`.
    Rabbitmq(crate::spec::streaming::RabbitmqConfig),
    /// `aws_s3` (and S3-compatible stores).
    AwsS3(crate::spec::s3::AwsS3Config),
}

impl ConnectorConfig {
    pub fn name(&self) -> Option<&str> {
        match self {
            ConnectorConfig::File(c) => c.name.as_deref(),
            ConnectorConfig::RestApi(c) => c.name.as_deref(),
            ConnectorConfig::Postgres(c) | ConnectorConfig::Mysql(c) => c.name.as_deref(),
            ConnectorConfig::Nats(c) => c.name.as_deref(),
            ConnectorConfig::Kafka(c) => c.name.as_deref(),
            ConnectorConfig::Rabbitmq(c) => c.name.as_deref(),
            ConnectorConfig::AwsS3(c) => c.name.as_deref(),
        }
    }
}

/// The `connector_type` names dagg implements, as users write them.
pub const IMPLEMENTED: &[&str] = &["file", "rest_api", "REST API", "postgresql", "mysql", "nats", "kafka", "rabbitmq", "aws_s3"];

/// Names the spec or the guide define that this build does not implement yet.
const PLANNED: &[&str] = &[];

/// What a secret shows instead of its value.
pub const MASK: &str = "********";

/// Config keys whose values are credentials, at any depth of a connector's `config`.
pub const SECRET_KEYS: &[&str] =
    &["password", "api_key_value", "token", "client_secret", "secret_access_key", "access_token", "refresh_token"];

/// A credential. `Debug` and `Display` show [`MASK`]; serde reads and writes the value as
/// written (clear text, or `enc:v1:…` ciphertext that the connector decrypts when it opens).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value as written: only a connector that is about to use it should call this.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{MASK:?}")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Reads one of a fixed set of words case-insensitively, with spaces and dashes taken as
/// underscores, so the guide's `API_KEY` and `bearer_token` both read.
fn normalize_word(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $canon:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            /// Every accepted spelling's canonical form, for messages.
            pub const NAMES: &'static [&'static str] = &[$($canon),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $canon),+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                match normalize_word(&s).as_str() {
                    $($canon $(| $alias)* => Ok($name::$variant),)+
                    _ => Err(format!("unknown value `{s}`; expected one of: {}", $name::NAMES.join(", "))),
                }
            }
        }

        impl From<$name> for &'static str {
            fn from(v: $name) -> &'static str {
                v.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// File formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One JSON array of objects.
    Json,
    /// One JSON object per line; blank lines are skipped.
    Jsonl,
    /// A header row, then one record per row; every value is a string.
    Csv,
    /// One element per record (`record_element`), attributes and child elements as fields.
    Xml,
    /// Apache Parquet (Snappy or uncompressed).
    Parquet,
}

/// Compression of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
}

/// `connector_type: file` — a local file (or, for a source, a glob of files).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The file. Relative paths resolve against the folder of the pipeline file. For a
    /// source, a glob (`data/*.jsonl`) reads every match in name order.
    pub path: String,
    /// `json` (one array), `jsonl`, `csv`, `xml` or `parquet`.
    pub format: FileFormat,
    /// `none` or `gzip`; when absent, a path ending in `.gz` means gzip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// CSV only: the cell separator, one character (default `,`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
    /// XML only: the element that holds one record (default `record`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_element: Option<String>,
    /// XML destination only: the document's root element (default `records`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_element: Option<String>,
    /// Destination only: roll to a new part (`out-00001.jsonl`, `out-00002.jsonl`, …) after
    /// this many records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_records: Option<u64>,
    /// Destination only: roll to a new part after this many bytes (before compression; not
    /// for `parquet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_size: Option<u64>,
}

impl FileConfig {
    /// The compression in force: the configured one, else inferred from the extension.
    pub fn effective_compression(&self) -> Compression {
        self.compression.unwrap_or(if self.path.ends_with(".gz") {
            Compression::Gzip
        } else {
            Compression::None
        })
    }

    pub fn delimiter_byte(&self) -> u8 {
        self.delimiter.map(|c| c as u8).unwrap_or(b',')
    }
}

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

word_enum! {
    /// TLS to a database, as libpq names the modes.
    SslMode {
        /// Never TLS.
        Disable = "disable" | "disabled",
        /// TLS when the server offers it (the default), unverified.
        Prefer = "prefer" | "preferred",
        /// TLS or fail; the certificate is not verified.
        Require = "require" | "required",
        /// TLS with a certificate signed by a trusted CA (`ssl_root_cert`, else the system's).
        VerifyCa = "verify-ca" | "verify_ca",
        /// As `verify-ca`, and the certificate must name `host`.
        VerifyFull = "verify-full" | "verify_full" | "verify_identity",
    }
}

word_enum! {
    /// How a database destination writes.
    WriteMode {
        /// Plain `INSERT`; a row that breaks a constraint is refused (dead-lettered).
        Insert = "insert",
        /// Insert, or update the row with the same `key_fields`.
        Upsert = "upsert",
    }
}

/// `auth_params` of a `rest_api` connector: which keys apply depends on `auth_method`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Extra query parameters sent with every request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, String>,
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

/// `incremental` of a database source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlIncremental {
    /// The column whose values only grow (`updated_at`, an id): rows are read in its order,
    /// and a later run reads only rows whose value is greater than the last one read.
    pub cursor_field: String,
}

/// `connector_type: postgresql` or `mysql` — a table or a query as a source, a table as a
/// destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The server's host name or IP address.
    pub host: String,
    /// The server's port (default 5432 for PostgreSQL, 3306 for MySQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The database to use.
    pub database: String,
    /// The user to log in as.
    pub username: String,
    /// The user's password (absent for trust or peer authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// `disable`, `prefer` (default), `require`, `verify-ca` or `verify-full`.
    #[serde(default = "default_ssl_mode")]
    pub ssl_mode: SslMode,
    /// A PEM file of CA certificates to verify the server with (`verify-ca`, `verify-full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_root_cert: Option<String>,
    /// Connections kept open (default 5).
    #[serde(default = "default_connection_pool_size")]
    pub connection_pool_size: u32,
    /// Connections that may be opened beyond `connection_pool_size` under load (default 0).
    #[serde(default)]
    pub max_overflow: u32,
    /// Seconds to wait for a connection (default 10).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// PostgreSQL only: the schema of `table` (default `public`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// A source reads the whole table; a destination writes to it. `name` or
    /// `schema.name` (for MySQL `database.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Source: a `SELECT` whose rows are the records (instead of `table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Source: read only rows past the last run's high-water mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<SqlIncremental>,
    /// Destination: `insert` (default) or `upsert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WriteMode>,
    /// Destination, `upsert`: the columns that identify a row (a primary key or unique
    /// index of the table must cover exactly these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fields: Option<Vec<String>>,
    /// Destination: rows per `INSERT` statement (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Destination: the name this destination's commit marker has in the table
    /// `_dagg_sink_epochs`. When absent, each run picks a unique one and keeps it in its
    /// checkpoints; set it only to recognise the marker yourself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_id: Option<String>,
}

fn default_ssl_mode() -> SslMode {
    SslMode::Prefer
}
fn default_connection_pool_size() -> u32 {
    5
}
fn default_connect_timeout() -> u64 {
    10
}
/// Rows per statement of a database destination when `batch_size` is absent.
pub fn default_sql_batch_size() -> usize {
    500
}

impl DatabaseConfig {
    pub fn mode(&self) -> WriteMode {
        self.mode.unwrap_or(WriteMode::Insert)
    }

    pub fn key_fields(&self) -> &[String] {
        self.key_fields.as_deref().unwrap_or(&[])
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or_else(default_sql_batch_size)
    }

    /// `table` split into its qualifier (schema or database) and its name; the qualifier
    /// falls back to `schema`.
    pub fn table_parts(&self) -> Option<(Option<&str>, &str)> {
        let t = self.table.as_deref()?;
        Some(match t.split_once('.') {
            Some((q, n)) => (Some(q), n),
            None => (self.schema.as_deref(), t),
        })
    }
}

/// Reads `{"connector_type", "config"}` at `path`, collecting every problem.
pub fn parse_connector(v: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorSpec> {
    let obj = Obj::open(v, path, &["connector_type", "config"], errs)?;
    let connector_type = obj.req_str("connector_type", errs)?;
    let Some(config) = obj.map.get("config") else {
        errs.push(obj.at("config"), "required field `config` is missing (an object)");
        return None;
    };
    let cpath = obj.at("config");
    let config = match connector_type {
        "file" => {
            let c: FileConfig = parse_json(config, &cpath, errs)?;
            check_file(&c, &cpath, role, errs)?;
            ConnectorConfig::File(c)
        }
        "rest_api" | "REST API" => {
            let c: RestApiConfig = parse_json(config, &cpath, errs)?;
            check_rest(&c, &cpath, role, errs)?;
            ConnectorConfig::RestApi(c)
        }
        "postgresql" => {
            let c: DatabaseConfig = parse_json(config, &cpath, errs)?;
            check_database(&c, Engine::Postgres, &cpath, role, errs)?;
            ConnectorConfig::Postgres(c)
        }
        "mysql" => {
            let c: DatabaseConfig = parse_json(config, &cpath, errs)?;
            check_database(&c, Engine::Mysql, &cpath, role, errs)?;
            ConnectorConfig::Mysql(c)
        }
        "nats" => {
            let c: crate::spec::streaming::NatsConfig = parse_json(config, &cpath, errs)?;
            crate::spec::streaming::check_nats(&c, &cpath, role, errs)?;
            ConnectorConfig::Nats(c)
        }
        "kafka" => {
            let c: crate::spec::streaming::KafkaConfig = parse_json(config, &cpath, errs)?;
            crate::spec::streaming::check_kafka(&c, &cpath, role, errs)?;
            ConnectorConfig::Kafka(c)
        }
        "rabbitmq" => {
            let c: crate::spec::streaming::RabbitmqConfig = parse_json(config, &cpath, errs)?;
            crate::spec::streaming::check_rabbitmq(&c, &cpath, role, errs)?;
            ConnectorConfig::Rabbitmq(c)
        }
        "aws_s3" => {
            let c: crate::spec::s3::AwsS3Config = parse_json(config, &cpath, errs)?;
            crate::spec::s3::check_aws_s3(&c, &cpath, role, errs)?;
            ConnectorConfig::AwsS3(c)
        }
        other if PLANNED.contains(&other) => {
            errs.push(
                obj.at("connector_type"),
                format!("connector_type `{other}` is not implemented in this build of dagg; implemented: {}", IMPLEMENTED.join(", ")),
            );
            return None;
        }
        other => {
            errs.push(
                obj.at("connector_type"),
                format!("unknown connector_type `{other}`; dagg implements: {}", IMPLEMENTED.join(", ")),
            );
            return None;
        }
    };
    Some(ConnectorSpec { connector_type: connector_type.to_string(), config })
}

fn check_file(c: &FileConfig, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    if c.path.trim().is_empty() {
        errs.push(format!("{path}.path"), "the path may not be empty");
    }
    if role == Role::Sink && c.path.contains(['*', '?', '[']) {
        errs.push(format!("{path}.path"), "a destination writes one file: a glob pattern is only allowed for a source");
    }
    if let Some(d) = c.delimiter {
        if !d.is_ascii() || d == '"' || d == '\n' || d == '\r' {
            errs.push(format!("{path}.delimiter"), format!("`{d}` cannot separate CSV cells; use one ASCII character other than a quote or a line break"));
        }
        if c.format != FileFormat::Csv {
            errs.push(format!("{path}.delimiter"), "`delimiter` applies only to format `csv`");
        }
    }
    for (key, value) in [("record_element", &c.record_element), ("root_element", &c.root_element)] {
        let Some(name) = value else { continue };
        if c.format != FileFormat::Xml {
            errs.push(format!("{path}.{key}"), format!("`{key}` applies only to format `xml`"));
        } else if !is_xml_name(name) {
            errs.push(format!("{path}.{key}"), format!("`{name}` is not an XML element name (letters, digits, `_`, `-`, `.`; not starting with a digit)"));
        }
    }
    if c.root_element.is_some() && role == Role::Source {
        errs.push(format!("{path}.root_element"), "`root_element` applies only to a destination (a source finds its records by `record_element`)");
    }
    for (key, value) in [("max_records", c.max_records), ("max_file_size", c.max_file_size)] {
        if value.is_none() {
            continue;
        }
        if role == Role::Source {
            errs.push(format!("{path}.{key}"), format!("`{key}` applies only to a destination (it rolls the output into parts)"));
        } else if value == Some(0) {
            errs.push(format!("{path}.{key}"), "must be at least 1");
        }
    }
    if c.max_file_size.is_some() && c.format == FileFormat::Parquet {
        errs.push(format!("{path}.max_file_size"), "a Parquet file's size is known only once written: roll Parquet by `max_records`");
    }
    if c.format == FileFormat::Parquet && c.effective_compression() == Compression::Gzip {
        errs.push(format!("{path}.compression"), "a Parquet file compresses its own pages: use compression `none` (and no `.gz` name)");
    }
    (errs.len() == before).then_some(())
}

/// Whether `name` can be an XML element name.
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_') && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}


/// Whether `url` is an absolute `http`/`https` URL with a host (a light check: the
/// connector parses it fully when it opens).
fn is_http_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !host.starts_with(':') && !host.contains(char::is_whitespace)
    })
}

fn check_rest(c: &RestApiConfig, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    let at = |key: &str| format!("{path}.{key}");
    if !is_http_url(&c.url) {
        errs.push(at("url"), format!("`{}` is not an absolute http or https URL", c.url));
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

/// The database engines behind [`DatabaseConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    pub fn default_port(self) -> u16 {
        match self {
            Engine::Postgres => 5432,
            Engine::Mysql => 3306,
        }
    }

    /// The `connector_type` that names it.
    pub fn connector_type(self) -> &'static str {
        match self {
            Engine::Postgres => "postgresql",
            Engine::Mysql => "mysql",
        }
    }
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Source => "source",
        Role::Sink => "destination",
        Role::Any => "connector",
    }
}

fn check_database(c: &DatabaseConfig, engine: Engine, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    let at = |key: &str| format!("{path}.{key}");
    for (key, v) in [("host", &c.host), ("database", &c.database), ("username", &c.username)] {
        if v.trim().is_empty() {
            errs.push(at(key), "may not be empty");
        }
    }
    if c.port == Some(0) {
        errs.push(at("port"), "0 is not a port; expected 1 to 65535");
    }
    if !(1..=1000).contains(&c.connection_pool_size) {
        errs.push(at("connection_pool_size"), format!("{} is out of range; expected 1 to 1000", c.connection_pool_size));
    }
    if c.max_overflow > 1000 {
        errs.push(at("max_overflow"), format!("{} is out of range; expected 0 to 1000", c.max_overflow));
    }
    if !(1..=3600).contains(&c.connect_timeout) {
        errs.push(at("connect_timeout"), format!("{} is out of range; expected seconds from 1 to 3600", c.connect_timeout));
    }
    if engine == Engine::Mysql && c.schema.is_some() {
        errs.push(at("schema"), "MySQL has no schemas inside a database; name the database in `database` (or write `table` as `database.table`)");
    }
    if let Some(s) = &c.schema
        && s.trim().is_empty()
    {
        errs.push(at("schema"), "may not be empty");
    }
    if let Some(t) = &c.table {
        let parts: Vec<&str> = t.split('.').collect();
        if parts.len() > 2 || parts.iter().any(|p| p.trim().is_empty()) {
            errs.push(at("table"), format!("`{t}` is not a table name; write `name` or `schema.name`"));
        } else if parts.len() == 2 && c.schema.is_some() {
            errs.push(at("table"), format!("`{t}` names its schema and `schema` is set too; give one of them"));
        }
    }
    if let Some(q) = &c.query
        && q.trim().is_empty()
    {
        errs.push(at("query"), "may not be empty");
    }
    if c.table.is_some() && c.query.is_some() {
        errs.push(at("query"), "give `query` or `table`, not both");
    }
    if let Some(inc) = &c.incremental
        && inc.cursor_field.trim().is_empty()
    {
        errs.push(format!("{path}.incremental.cursor_field"), "may not be empty");
    }
    match (c.mode(), c.key_fields.as_deref()) {
        (WriteMode::Upsert, None | Some([])) => errs.push(at("key_fields"), "mode `upsert` needs `key_fields`, the columns that identify a row"),
        (WriteMode::Insert, Some(_)) => errs.push(at("key_fields"), "`key_fields` applies only to mode `upsert`"),
        (_, Some(keys)) => {
            for (i, k) in keys.iter().enumerate() {
                if k.trim().is_empty() {
                    errs.push(format!("{path}.key_fields[{i}]"), "may not be empty");
                } else if keys[..i].contains(k) {
                    errs.push(format!("{path}.key_fields[{i}]"), format!("`{k}` is listed twice"));
                }
            }
        }
        _ => {}
    }
    if c.batch_size == Some(0) {
        errs.push(at("batch_size"), "must be at least 1");
    }
    if let Some(id) = &c.sink_id
        && (id.is_empty() || id.len() > 200)
    {
        errs.push(at("sink_id"), "must be 1 to 200 characters");
    }
    match role {
        Role::Source => {
            if c.table.is_none() && c.query.is_none() {
                errs.push(path, format!("a {} source needs `query` or `table`", engine.connector_type()));
            }
            for (key, set) in [
                ("mode", c.mode.is_some()),
                ("key_fields", c.key_fields.is_some()),
                ("batch_size", c.batch_size.is_some()),
                ("sink_id", c.sink_id.is_some()),
            ] {
                if set {
                    errs.push(at(key), format!("`{key}` applies only to a destination"));
                }
            }
        }
        Role::Sink => {
            if c.query.is_some() {
                errs.push(at("query"), "a destination writes to a `table`; `query` applies only to a source");
            } else if c.table.is_none() {
                errs.push(at("table"), "required field `table` is missing (the table to write to)");
            }
            if c.incremental.is_some() {
                errs.push(at("incremental"), "`incremental` applies only to a source");
            }
        }
        Role::Any => {}
    }
    (errs.len() == before).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Json, role: Role) -> (Option<ConnectorSpec>, SpecErrors) {
        let mut errs = SpecErrors::new();
        let c = parse_connector(&v, "source", role, &mut errs);
        (c, errs)
    }

    fn ok(v: Json, role: Role) -> ConnectorConfig {
        let (c, errs) = parse(v, role);
        assert!(errs.is_empty(), "{errs}");
        c.unwrap().config
    }

    fn err_paths(v: Json, role: Role) -> Vec<String> {
        let (c, errs) = parse(v, role);
        assert!(c.is_none() && !errs.is_empty(), "expected errors");
        errs.iter().map(|e| e.path.clone()).collect()
    }

    #[test]
    fn file_connector_parses() {
        let c = ok(json!({"connector_type": "file", "config": {"path": "a.jsonl.gz", "format": "jsonl"}}), Role::Source);
        let ConnectorConfig::File(f) = c else { panic!("not a file config") };
        assert_eq!(f.effective_compression(), Compression::Gzip);
    }

    #[test]
    fn unknown_and_planned_types_say_so() {
        let (_, errs) = parse(json!({"connector_type": "Snowflake", "config": {}}), Role::Sink);
        assert!(errs.0[0].message.contains("unknown connector_type `Snowflake`"), "{errs}");
        // Every name the spec defines is implemented now; a planned one would say so.
        assert!(PLANNED.is_empty());
    }

    #[test]
    fn the_guides_aws_s3_example_parses_and_a_destination_needs_a_key() {
        let guide = json!({"connector_type": "aws_s3", "config": {
            "name": "Data Lake Bucket", "bucket_name": "company-data-lake", "aws_region": "us-west-2",
            "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "prefix": "raw-data/", "file_format": "json", "compression": "gzip", "signature_version": "s3v4"}});
        let (spec, errs) = parse(guide.clone(), Role::Source);
        assert!(errs.is_empty(), "{errs}");
        assert!(!format!("{:?}", spec.unwrap()).contains("wJalrXUtnFEMI"), "the secret is masked");
        let (_, errs) = parse(guide, Role::Sink);
        assert!(errs.0[0].path.ends_with("config.key"), "{errs}");
        let (_, errs) = parse(json!({"connector_type": "aws_s3", "config": {"bucket_name": "b", "file_format": "jsonl", "signature_version": "s3v2"}}), Role::Source);
        assert!(errs.0[0].message.contains("s3v4"), "{errs}");
    }

    #[test]
    fn bad_config_keys_have_paths() {
        let (_, errs) = parse(json!({"connector_type": "file", "config": {"path": "x", "format": "xlsx", "colour": 1}}), Role::Source);
        assert_eq!(errs.len(), 1, "{errs}");
        assert!(errs.0[0].path.starts_with("source.config"), "{errs}");
    }

    #[test]
    fn glob_not_allowed_for_sink() {
        let (_, errs) = parse(json!({"connector_type": "file", "config": {"path": "out/*.jsonl", "format": "jsonl"}}), Role::Sink);
        assert_eq!(errs.0[0].path, "source.config.path");
    }

    /// The guide's section 5.1.2, step 1, word for word.
    #[test]
    fn guide_rest_source_example_parses() {
        let doc: Json = serde_json::from_str(
            r#"{
  "source": {
    "connector_type": "REST API",
    "config": {
      "url": "https://api.ecommerce-platform.com/v1/orders",
      "auth_method": "API_KEY",
      "auth_params": {
        "api_key_header": "X-API-Key",
        "api_key_value": "your-api-key-here"
      },
      "pagination": {
        "type": "offset",
        "page_size": 100
      }
    }
  }
}"#,
        )
        .unwrap();
        let ConnectorConfig::RestApi(c) = ok(doc["source"].clone(), Role::Source) else { panic!("not rest") };
        assert_eq!(c.auth_method, AuthMethod::ApiKey);
        assert_eq!(c.auth_params.api_key_header(), "X-API-Key");
        assert_eq!(c.auth_params.api_key_value.as_ref().unwrap().expose(), "your-api-key-here");
        let p = c.pagination.unwrap();
        assert_eq!((p.kind, p.page_size()), (PaginationType::Offset, 100));
    }

    /// The guide's section 5.3.5 REST API example, word for word.
    #[test]
    fn guide_rest_connector_example_parses() {
        let v: Json = serde_json::from_str(
            r#"{
  "connector_type": "rest_api",
  "config": {
    "name": "E-commerce API",
    "url": "https://api.ecommerce-platform.com/v1",
    "auth_method": "bearer_token",
    "auth_params": {
      "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..."
    },
    "connection_timeout": 30,
    "retry_attempts": 3,
    "rate_limit": 1000,
    "rate_limit_period": "minute"
  }
}"#,
        )
        .unwrap();
        for role in [Role::Any, Role::Source, Role::Sink] {
            let ConnectorConfig::RestApi(c) = ok(v.clone(), role) else { panic!("not rest") };
            assert_eq!(c.auth_method, AuthMethod::BearerToken);
            assert_eq!((c.rate_limit, c.rate_limit_period), (Some(1000), RatePeriod::Minute));
            assert_eq!(c.name.as_deref(), Some("E-commerce API"));
        }
    }

    fn guide_postgres() -> Json {
        serde_json::from_str(
            r#"{
  "connector_type": "postgresql",
  "config": {
    "name": "Sales Database",
    "host": "sales-db.example.com",
    "port": 5432,
    "database": "sales_db",
    "username": "data_pipeline_user",
    "password": "secure_password",
    "ssl_mode": "require",
    "connection_pool_size": 10,
    "max_overflow": 20,
    "connect_timeout": 10,
    "schema": "public"
  }
}"#,
        )
        .unwrap()
    }

    /// The guide's section 5.3.5 PostgreSQL example, word for word: a saved connection; with
    /// a `table` it is a source and a destination.
    #[test]
    fn guide_postgres_example_parses() {
        let ConnectorConfig::Postgres(c) = ok(guide_postgres(), Role::Any) else { panic!("not postgres") };
        assert_eq!((c.ssl_mode, c.connection_pool_size, c.max_overflow), (SslMode::Require, 10, 20));
        let mut with_table = guide_postgres();
        with_table["config"]["table"] = json!("orders");
        ok(with_table.clone(), Role::Source);
        ok(with_table, Role::Sink);
        // Without a table, a source says what it misses.
        let (_, errs) = parse(guide_postgres(), Role::Source);
        assert!(errs.0[0].message.contains("needs `query` or `table`"), "{errs}");
    }

    #[test]
    fn secrets_never_print() {
        let c = ok(guide_postgres(), Role::Any);
        let shown = format!("{c:?}");
        assert!(!shown.contains("secure_password") && shown.contains(MASK), "{shown}");
        let ConnectorConfig::Postgres(db) = c else { panic!() };
        assert_eq!(db.password.as_ref().unwrap().to_string(), MASK);
        // Serialization keeps the value (it is what a store encrypts).
        assert_eq!(serde_json::to_value(&db).unwrap()["password"], "secure_password");
    }

    #[test]
    fn database_cross_field_rules_have_paths() {
        let base = json!({"host": "h", "database": "d", "username": "u"});
        let with = |extra: Json| {
            let mut c = base.clone();
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            json!({"connector_type": "postgresql", "config": c})
        };
        assert_eq!(err_paths(with(json!({"query": "select 1", "table": "t"})), Role::Source), ["source.config.query"]);
        assert_eq!(err_paths(with(json!({"table": "t", "mode": "upsert"})), Role::Sink), ["source.config.key_fields"]);
        assert_eq!(err_paths(with(json!({"table": "t", "key_fields": ["id"]})), Role::Sink), ["source.config.key_fields"]);
        assert_eq!(err_paths(with(json!({"query": "select 1"})), Role::Sink), ["source.config.query"]);
        assert_eq!(err_paths(with(json!({"table": "t", "mode": "upsert", "key_fields": ["id"]})), Role::Source), ["source.config.mode", "source.config.key_fields"]);
        assert_eq!(err_paths(with(json!({"table": "t", "incremental": {"cursor_field": "x"}})), Role::Sink), ["source.config.incremental"]);
        assert_eq!(err_paths(with(json!({"table": "t", "ssl_mode": "sometimes"})), Role::Sink), ["source.config.ssl_mode"]);
        assert_eq!(err_paths(with(json!({"table": "t", "incremental": {"column": "x"}})), Role::Source), ["source.config.incremental.column"]);
        let mysql = json!({"connector_type": "mysql", "config": {"host": "h", "database": "d", "username": "u", "table": "t", "schema": "s"}});
        assert_eq!(err_paths(mysql, Role::Sink), ["source.config.schema"]);
        let ConnectorConfig::Postgres(c) = ok(with(json!({"table": "t", "mode": "upsert", "key_fields": ["id"], "ssl_mode": "verify-full"})), Role::Sink) else { panic!() };
        assert_eq!((c.mode(), c.key_fields(), c.ssl_mode), (WriteMode::Upsert, &["id".to_string()][..], SslMode::VerifyFull));
        let ConnectorConfig::Postgres(c) = ok(with(json!({"table": "sales.orders"})), Role::Source) else { panic!() };
        assert_eq!(c.table_parts(), Some((Some("sales"), "orders")));
    }

    #[test]
    fn rest_rules_have_paths() {
        let rest = |config: Json| json!({"connector_type": "rest_api", "config": config});
        assert_eq!(err_paths(rest(json!({"url": "ftp://x"})), Role::Source), ["source.config.url"]);
        assert_eq!(err_paths(rest(json!({"url": "https://x", "auth_method": "bearer_token"})), Role::Source), ["source.config.auth_params.token"]);
        assert_eq!(
            err_paths(rest(json!({"url": "https://x", "auth_method": "basic", "auth_params": {"username": "u", "token": "t"}})), Role::Source),
            ["source.config.auth_params.token"]
        );
        assert_eq!(
            err_paths(rest(json!({"url": "https://x", "auth_method": "oauth2", "auth_params": {"client_id": "c"}})), Role::Source),
            ["source.config.auth_params.token_url", "source.config.auth_params.client_secret"]
        );
        assert_eq!(err_paths(rest(json!({"url": "https://x", "pagination": {"type": "cursor"}})), Role::Source), ["source.config.pagination.cursor_path"]);
        assert_eq!(err_paths(rest(json!({"url": "https://x", "pagination": {"type": "pages"}})), Role::Source), ["source.config.pagination.type"]);
        assert_eq!(err_paths(rest(json!({"url": "https://x", "pagination": {"type": "offset"}})), Role::Sink), ["source.config.pagination"]);
        assert_eq!(err_paths(rest(json!({"url": "https://x", "method": "DELETE"})), Role::Sink), ["source.config.method"]);
        assert_eq!(err_paths(rest(json!({"url": "https://x", "rate_limit_period": "fortnight"})), Role::Sink), ["source.config.rate_limit_period"]);
        let ConnectorConfig::RestApi(c) = ok(rest(json!({"url": "https://x", "auth_method": "OAuth2", "auth_params": {"token_url": "http://127.0.0.1:1/t", "client_id": "c", "client_secret": "s"}, "pagination": {"type": "Link Header"}})), Role::Source) else { panic!() };
        assert_eq!((c.auth_method, c.pagination.unwrap().kind), (AuthMethod::Oauth2, PaginationType::LinkHeader));
    }

    #[test]
    fn word_enums_round_trip_canonically() {
        let m: AuthMethod = serde_json::from_value(json!("API_KEY")).unwrap();
        assert_eq!(serde_json::to_value(m).unwrap(), json!("api_key"));
        let s: SslMode = serde_json::from_value(json!("verify_ca")).unwrap();
        assert_eq!(serde_json::to_value(s).unwrap(), json!("verify-ca"));
    }
}
