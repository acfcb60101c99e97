//! Connector specs: `{"connector_type": ..., "config": {...}}`.
//!
//! One closed registry: [`ConnectorConfig`] has a variant per connector dagg implements, and
//! [`parse_connector`] reads `connector_type` through [`KINDS`](crate::spec::connectors::KINDS),
//! the one list of connector kinds; each kind's config, checks and docs are in its own file
//! under [`connectors`](crate::spec::connectors). A name dagg does not implement is an error
//! that says so, never ignored.
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

use serde::Serialize;
use serde_json::Value as Json;

use crate::error::SpecErrors;
use crate::spec::connectors::{self, Status};
use crate::spec::reader::Obj;

// The config types, where they have always been named from.
pub use crate::spec::connectors::ConnectorConfig;
pub use crate::spec::connectors::common::{MASK, Secret};
pub use crate::spec::connectors::secret_paths::{self, SecretPath, secret_paths};
pub use crate::spec::connectors::file::{Compression, FileConfig, FileFormat};
pub use crate::spec::connectors::rest::{
    AuthMethod, AuthParams, DEFAULT_API_KEY_HEADER, HttpMethod, Pagination, PaginationType, RatePeriod, RestApiConfig, RestIncremental,
    default_page_size, default_rest_batch_size,
};
pub use crate::spec::connectors::sql::{DatabaseConfig, Engine, SqlIncremental, SslMode, WriteMode, default_sql_batch_size};

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


/// Reads `{"connector_type", "config"}` at `path`, collecting every problem.
pub fn parse_connector(v: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorSpec> {
    let obj = Obj::open(v, path, &["connector_type", "config"], errs)?;
    let connector_type = obj.req_str("connector_type", errs)?;
    let Some(config) = obj.map.get("config") else {
        errs.push(obj.at("config"), "required field `config` is missing (an object)");
        return None;
    };
    let cpath = obj.at("config");
    let implemented = || connectors::implemented_names().join(", ");
    let Some(kind) = connectors::kind(connector_type) else {
        errs.push(obj.at("connector_type"), format!("unknown connector_type `{connector_type}`; dagg implements: {}", implemented()));
        return None;
    };
    let Status::Implemented { parse, .. } = kind.status else {
        errs.push(
            obj.at("connector_type"),
            format!("connector_type `{connector_type}` is not implemented in this build of dagg; implemented: {}", implemented()),
        );
        return None;
    };
    if !kind.roles.allows(role) {
        errs.push(obj.at("connector_type"), format!("a `{}` connector can only be a {}", kind.name, kind.roles.names().join(" or ")));
        return None;
    }
    let config = parse(config, &cpath, role, errs)?;
    Some(ConnectorSpec { connector_type: connector_type.to_string(), config })
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
        assert!(connectors::KINDS.iter().all(|k| k.implemented()));
        // Each kind's name, its aliases right after it (so messages list `rest_api, REST API`),
        // derived from `KINDS`: a new kind needs no line here.
        let names = connectors::implemented_names();
        let mut expected = Vec::new();
        for k in connectors::KINDS {
            expected.push(k.name);
            expected.extend(k.aliases);
        }
        assert_eq!(names, expected);
        let rest = names.iter().position(|n| *n == "rest_api").unwrap();
        assert_eq!(names[rest + 1], "REST API");
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
