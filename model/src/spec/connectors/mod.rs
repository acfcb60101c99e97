//! The connectors' configs, one file each, and [`KINDS`], the one list of connector kinds.
//!
//! Each file holds a connector's config struct (serde reads its shape with
//! `deny_unknown_fields`; its doc comments are the user's help text and the schema's
//! descriptions), the `check` that applies the rules across fields and roles, and its
//! [`ConnectorKind`] entry. What several share lives in [`common`] (credentials, word enums,
//! the payload format) and [`sql`] (the config of both SQL databases).
//!
//! [`KINDS`] is the one place that lists the connector kinds: `parse_connector` reads
//! `connector_type` through it, `GET /schemas` serves its schemas (derived from the config
//! types with `schemars`, no source text read) and the UI builds its palette from what the API
//! lists; a test checks docs/connectors.md's table against it.
//!
//! Adding a connector: its file here with its config, `check` and `KIND`; a variant of
//! [`ConnectorConfig`] and its line in [`KINDS`] (both below); its folder in the connectors
//! crate and its arms in `connectors/src/lib.rs`; its row and section in docs/connectors.md.

pub mod common;
pub mod file;
pub mod kafka;
pub mod mysql;
pub mod nats;
pub mod postgresql;
pub mod rabbitmq;
pub mod redis;
pub mod rest;
pub mod s3;
pub mod secret_paths;
pub mod sql;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::error::SpecErrors;
use crate::spec::connector::Role;

/// Every connector kind, in the order messages list them. The UI's palette, the API's
/// schemas and the docs' table all come from here.
pub const KINDS: &[ConnectorKind] = &[file::KIND, rest::KIND, postgresql::KIND, mysql::KIND, nats::KIND, kafka::KIND, rabbitmq::KIND, redis::KIND, s3::KIND];

/// Every connector dagg implements, with its typed config.
// Specs are built once per pipeline, not per record: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ConnectorConfig {
    File(file::FileConfig),
    /// `rest_api` (also written `REST API`).
    RestApi(rest::RestApiConfig),
    /// `postgresql`.
    Postgres(sql::DatabaseConfig),
    /// `mysql` (MySQL and MariaDB).
    Mysql(sql::DatabaseConfig),
    /// `nats` (core NATS and JetStream).
    Nats(nats::NatsConfig),
    /// `kafka`.
    Kafka(kafka::KafkaConfig),
    /// `rabbitmq`.
    Rabbitmq(rabbitmq::RabbitmqConfig),
    /// `redis` (streams, lists, hashes).
    Redis(redis::RedisConfig),
    /// `aws_s3` (and S3-compatible stores).
    AwsS3(s3::AwsS3Config),
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
            ConnectorConfig::Redis(c) => c.name.as_deref(),
            ConnectorConfig::AwsS3(c) => c.name.as_deref(),
        }
    }
}

/// Reads a kind's `config` at `path` (serde, then the kind's checks for `role`), every
/// problem pushed to the errors.
pub type ParseFn = fn(config: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorConfig>;

/// The JSON Schema (draft 2020-12) of a kind's `config`.
pub type SchemaFn = fn() -> Json;

/// Which roles a kind can play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Roles {
    Both,
    SourceOnly,
    DestinationOnly,
}

impl Roles {
    pub fn allows(self, role: Role) -> bool {
        match (self, role) {
            (_, Role::Any) | (Roles::Both, _) => true,
            (Roles::SourceOnly, r) => r == Role::Source,
            (Roles::DestinationOnly, r) => r == Role::Sink,
        }
    }

    /// The roles as the API lists them.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Roles::Both => &["source", "destination"],
            Roles::SourceOnly => &["source"],
            Roles::DestinationOnly => &["destination"],
        }
    }
}

/// Whether this build implements a kind.
#[derive(Clone, Copy)]
pub enum Status {
    Implemented { parse: ParseFn, schema: SchemaFn },
    /// Defined by the spec or the guide, not implemented yet: a document naming it is refused
    /// with a message that says so.
    Planned,
}

/// One connector kind: its `connector_type`, what the UI shows, and how its config is read.
#[derive(Clone, Copy)]
pub struct ConnectorKind {
    /// The `connector_type` as users write it.
    pub name: &'static str,
    /// Other spellings `connector_type` accepts (the guide's `REST API`).
    pub aliases: &'static [&'static str],
    /// One line on what it reads and writes (the schema's description, the palette's tooltip).
    pub summary: &'static str,
    pub roles: Roles,
    /// The UI's icon for it (a name the UI knows, else it shows its default icon).
    pub icon: &'static str,
    pub status: Status,
}

impl ConnectorKind {
    pub fn implemented(&self) -> bool {
        matches!(self.status, Status::Implemented { .. })
    }

    /// Whether `connector_type` names this kind.
    pub fn is_named(&self, connector_type: &str) -> bool {
        self.name == connector_type || self.aliases.contains(&connector_type)
    }

    /// The schema of its `config`, titled and described for the UI (none when planned).
    pub fn schema(&self) -> Option<Json> {
        let Status::Implemented { schema, .. } = self.status else { return None };
        let mut s = schema();
        s["title"] = json!(self.name);
        s["description"] = json!(self.summary);
        Some(s)
    }

    /// What the API lists about it: type, summary, roles, icon, whether implemented.
    pub fn describe(&self) -> Json {
        json!({
            "connector_type": self.name,
            "aliases": self.aliases,
            "summary": self.summary,
            "roles": self.roles.names(),
            "icon": self.icon,
            "implemented": self.implemented(),
        })
    }
}

/// The kind `connector_type` names, if any.
pub fn kind(connector_type: &str) -> Option<&'static ConnectorKind> {
    KINDS.iter().find(|k| k.is_named(connector_type))
}

/// The `connector_type` names this build implements, aliases after their name.
pub fn implemented_names() -> Vec<&'static str> {
    KINDS.iter().filter(|k| k.implemented()).flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied())).collect()
}

/// The JSON Schema of a config type, as `GET /schemas` serves it: draft 2020-12 from the
/// type's serde attributes and doc comments; nested structs under `$defs`. An absent key and
/// `null` read the same, so optional fields are described without `null`. A field whose doc
/// starts with "Source" or "Destination" applies to that role only: it is marked
/// `x-dagg-role` for the UI's forms.
pub fn schema_of<T: JsonSchema>() -> Json {
    let schema = SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<T>();
    let mut v = schema.to_value();
    tidy(&mut v);
    v
}

/// Drops the `null` alternatives of optional fields, joins the doc comments' wrapped lines
/// (paragraphs stay apart) and marks role-only fields, at any depth.
fn tidy(v: &mut Json) {
    match v {
        Json::Object(o) => {
            if let Some(Json::String(d)) = o.get_mut("description") {
                *d = d.split("\n\n").map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n\n");
            }
            if let Some(Json::Array(types)) = o.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let t = types.remove(0);
                    o.insert("type".into(), t);
                }
            }
            if let Some(Json::Array(vals)) = o.get_mut("enum") {
                vals.retain(|v| !v.is_null());
            }
            if let Some(Json::Array(alts)) = o.get("anyOf")
                && alts.len() == 2
                && let Some(i) = alts.iter().position(|a| a.get("type") == Some(&json!("null")))
            {
                let keep = alts[1 - i].clone();
                o.remove("anyOf");
                if let Json::Object(k) = keep {
                    for (key, val) in k {
                        o.entry(key).or_insert(val);
                    }
                }
            }
            if let Some(Json::Object(props)) = o.get_mut("properties") {
                for p in props.values_mut() {
                    let role = match p.get("description").and_then(Json::as_str) {
                        Some(d) if d.starts_with("Source") => Some("source"),
                        Some(d) if d.starts_with("Destination") => Some("destination"),
                        _ => None,
                    };
                    if let Some(r) = role {
                        p["x-dagg-role"] = json!(r);
                    }
                }
            }
            for child in o.values_mut() {
                tidy(child);
            }
        }
        Json::Array(a) => a.iter_mut().for_each(tidy),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::connector::parse_connector;

    /// `$ref`s resolved against the root's `$defs`.
    fn resolve<'a>(root: &'a Json, s: &'a Json) -> &'a Json {
        match s.get("$ref").and_then(Json::as_str) {
            Some(r) => &root["$defs"][r.trim_start_matches("#/$defs/")],
            None => s,
        }
    }

    /// Every property name, with its schema, at any depth.
    fn properties<'a>(root: &'a Json, s: &'a Json, out: &mut Vec<(&'a str, &'a Json)>) {
        let s = resolve(root, s);
        if let Some(props) = s.get("properties").and_then(Json::as_object) {
            for (k, v) in props {
                out.push((k, v));
                properties(root, v, out);
            }
        }
    }

    #[test]
    fn kinds_are_unique_and_every_implemented_one_has_a_schema_of_an_object() {
        let mut names: Vec<&str> = KINDS.iter().flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied())).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a connector_type listed twice");
        for k in KINDS.iter().filter(|k| k.implemented()) {
            let s = k.schema().unwrap();
            assert_eq!(s["type"], "object", "{}", k.name);
            assert_eq!(s["additionalProperties"], false, "{}: deny_unknown_fields", k.name);
            assert_eq!(s["title"], k.name);
        }
    }

    #[test]
    fn secret_fields_are_write_only_passwords_and_in_the_derived_list() {
        let mut secret = 0;
        for k in KINDS.iter().filter(|k| k.implemented()) {
            let root = k.schema().unwrap();
            let mut props = Vec::new();
            properties(&root, &root, &mut props);
            assert!(!props.is_empty(), "{}", k.name);
            let listed: Vec<String> = secret_paths::secret_paths(k.name).iter().map(ToString::to_string).collect();
            for (name, p) in props {
                if p.get("writeOnly") == Some(&json!(true)) {
                    assert_eq!(p["format"], "password", "{}.{name}", k.name);
                    assert!(listed.iter().any(|l| l.ends_with(name)), "{}.{name} is a Secret but not in its secret paths {listed:?}", k.name);
                    secret += 1;
                }
            }
        }
        assert!(secret >= 8, "{secret}");
    }

    #[test]
    fn optional_fields_have_no_null_and_role_fields_are_marked() {
        let pg = kind("postgresql").unwrap().schema().unwrap();
        assert_eq!(pg["properties"]["port"]["type"], "integer");
        assert_eq!(pg["properties"]["password"]["type"], "string");
        assert_eq!(pg["properties"]["query"]["x-dagg-role"], "source");
        assert_eq!(pg["properties"]["mode"]["x-dagg-role"], "destination");
        assert_eq!(pg["properties"]["ssl_mode"]["enum"][0], "disable");
        assert!(!pg.to_string().contains("\"null\""), "{pg}");
        let file = kind("file").unwrap().schema().unwrap();
        assert_eq!(file["required"], json!(["path", "format"]));
        assert_eq!(kind("REST API").unwrap().name, "rest_api");
    }

    /// Every kind has a row in docs/connectors.md's table, and the table no other.
    #[test]
    fn the_docs_table_lists_exactly_the_kinds() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/connectors.md")).unwrap();
        let rows: Vec<&str> = doc
            .lines()
            .skip_while(|l| !l.starts_with("| `connector_type`"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.trim_start_matches("| `").split('`').next().unwrap())
            .collect();
        let kinds: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        let (mut a, mut b) = (rows.clone(), kinds.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b, "docs/connectors.md's table lists {rows:?}; the kinds are {kinds:?}");
        for k in KINDS {
            assert!(doc.contains(&format!("## `{}`", k.name)) || doc.contains(&format!("`{}` and `", k.name)) || doc.contains(&format!("and `{}`", k.name)), "docs/connectors.md has no section on `{}`", k.name);
        }
    }

    #[test]
    fn every_kind_reads_through_parse_connector() {
        for k in KINDS.iter().filter(|k| k.implemented()) {
            let mut errs = SpecErrors::new();
            parse_connector(&json!({"connector_type": k.name, "config": {}}), "c", Role::Any, &mut errs);
            for e in errs.iter() {
                assert!(!e.message.contains("unknown connector_type"), "{}: {e}", k.name);
            }
        }
    }
}
