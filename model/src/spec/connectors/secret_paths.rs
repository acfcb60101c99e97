//! Where a connector's secrets are: the one list of secret fields, derived from the types.
//!
//! Every secret-bearing config field is a [`Secret`](super::common::Secret), whose schema is
//! `writeOnly`. [`secret_paths`] reads each kind's schema (the one `GET /schemas` serves)
//! once and lists every `writeOnly` subschema it reaches through `properties`,
//! `additionalProperties` (any key, written `*`), `items` (any item, `[]`), `$ref` and
//! `anyOf`/`oneOf`/`allOf`. Nothing else names secret fields: sealing at rest, masking in
//! answers, keeping a masked value sent back, and the docs' table all go through these
//! paths, so a new `Secret` field is sealed and masked the moment it is typed.
//!
//! The functions here work on a config's (or a pipeline document's) JSON, before or without
//! parsing it: [`visit_config`] calls a function on each secret value present,
//! [`visit_document`] on every connector (`{"connector_type", "config"}`) anywhere in a
//! document — source, `sources`, destination(s), the dead-letter destination, an event
//! trigger — and [`mask_config`] / [`mask_document`] replace each by [`MASK`].

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde_json::Value as Json;

use super::common::MASK;
use super::{KINDS, kind};

/// One step of a [`SecretPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// The named key of an object.
    Key(String),
    /// Every key of a map (a schema's `additionalProperties`), written `*`.
    AnyKey,
    /// Every item of a list (a schema's `items`), written `[]`.
    AnyItem,
}

/// Where a secret sits in a connector's `config`: `auth_params.token`, `headers.*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretPath(pub Vec<Step>);

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Step::Key(k) if i == 0 => f.write_str(k)?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::AnyKey if i == 0 => f.write_str("*")?,
                Step::AnyKey => f.write_str(".*")?,
                Step::AnyItem => f.write_str("[]")?,
            }
        }
        Ok(())
    }
}

/// One step of a concrete location in a JSON value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum At {
    Key(String),
    Index(usize),
}

/// A concrete location (`source`, `config`, `headers`, `Authorization`).
pub type Location = Vec<At>;

/// The text of a location relative to `base` (`source.config.headers.Authorization`), as
/// error messages write paths.
pub fn location_text(base: &str, loc: &[At]) -> String {
    let mut s = base.to_string();
    for a in loc {
        match a {
            At::Key(k) if s.is_empty() => s.push_str(k),
            At::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            At::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The value at `loc` in `v`, if there is one.
pub fn get<'a>(v: &'a Json, loc: &[At]) -> Option<&'a Json> {
    loc.iter().try_fold(v, |cur, a| match (a, cur) {
        (At::Key(k), Json::Object(m)) => m.get(k),
        (At::Index(i), Json::Array(items)) => items.get(*i),
        _ => None,
    })
}

/// The value at `loc` in `v`, mutably.
pub fn get_mut<'a>(v: &'a mut Json, loc: &[At]) -> Option<&'a mut Json> {
    loc.iter().try_fold(v, |cur, a| match (a, cur) {
        (At::Key(k), Json::Object(m)) => m.get_mut(k),
        (At::Index(i), Json::Array(items)) => items.get_mut(*i),
        _ => None,
    })
}

/// The secret fields of a kind's config (none for a name that is no implemented kind).
/// Computed once per kind from its schema.
pub fn secret_paths(connector_type: &str) -> &'static [SecretPath] {
    static PATHS: OnceLock<HashMap<&'static str, Vec<SecretPath>>> = OnceLock::new();
    let all = PATHS.get_or_init(|| KINDS.iter().filter_map(|k| Some((k.name, derive(&k.schema()?)))).collect());
    kind(connector_type).and_then(|k| all.get(k.name)).map_or(&[], Vec::as_slice)
}

/// The `writeOnly` subschemas of a schema, as paths from its root.
pub fn derive(schema: &Json) -> Vec<SecretPath> {
    let mut out = Vec::new();
    walk_schema(schema, schema, &mut Vec::new(), &mut out, 0);
    out
}

fn walk_schema(root: &Json, s: &Json, at: &mut Vec<Step>, out: &mut Vec<SecretPath>, depth: usize) {
    // A recursive type would never end: no config nests this deep.
    if depth > 32 {
        return;
    }
    if s.get("writeOnly") == Some(&Json::Bool(true)) {
        let p = SecretPath(at.clone());
        if !out.contains(&p) {
            out.push(p);
        }
        return;
    }
    if let Some(r) = s.get("$ref").and_then(Json::as_str) {
        let target = r.strip_prefix("#/$defs/").and_then(|name| root.get("$defs")?.get(name));
        if let Some(t) = target {
            walk_schema(root, t, at, out, depth + 1);
        }
    }
    if let Some(props) = s.get("properties").and_then(Json::as_object) {
        for (k, p) in props {
            at.push(Step::Key(k.clone()));
            walk_schema(root, p, at, out, depth + 1);
            at.pop();
        }
    }
    if let Some(extra) = s.get("additionalProperties").filter(|e| e.is_object()) {
        at.push(Step::AnyKey);
        walk_schema(root, extra, at, out, depth + 1);
        at.pop();
    }
    if let Some(items) = s.get("items").filter(|e| e.is_object()) {
        at.push(Step::AnyItem);
        walk_schema(root, items, at, out, depth + 1);
        at.pop();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for alt in s.get(key).and_then(Json::as_array).into_iter().flatten() {
            walk_schema(root, alt, at, out, depth + 1);
        }
    }
}

/// Calls `f` with the location (relative to `config`) and value of every secret present
/// in a `connector_type` config. Null values (an absent optional secret) are skipped.
pub fn visit_config(connector_type: &str, config: &mut Json, f: &mut dyn FnMut(&[At], &mut Json)) {
    for p in secret_paths(connector_type) {
        visit_path(config, &p.0, &mut Vec::new(), f);
    }
}

fn visit_path(v: &mut Json, steps: &[Step], loc: &mut Location, f: &mut dyn FnMut(&[At], &mut Json)) {
    let Some((first, rest)) = steps.split_first() else {
        if !v.is_null() {
            f(loc, v);
        }
        return;
    };
    match (first, v) {
        (Step::Key(k), Json::Object(m)) => {
            if let Some(child) = m.get_mut(k) {
                loc.push(At::Key(k.clone()));
                visit_path(child, rest, loc, f);
                loc.pop();
            }
        }
        (Step::AnyKey, Json::Object(m)) => {
            for (k, child) in m.iter_mut() {
                loc.push(At::Key(k.clone()));
                visit_path(child, rest, loc, f);
                loc.pop();
            }
        }
        (Step::AnyItem, Json::Array(items)) => {
            for (i, child) in items.iter_mut().enumerate() {
                loc.push(At::Index(i));
                visit_path(child, rest, loc, f);
                loc.pop();
            }
        }
        _ => {}
    }
}

/// Calls `f` with the location (relative to the document) and value of every secret in
/// every connector of a pipeline document: each object holding a string `connector_type`
/// and a `config`, at any depth.
pub fn visit_document(doc: &mut Json, f: &mut dyn FnMut(&[At], &mut Json)) {
    visit_doc(doc, &mut Vec::new(), f);
}

fn visit_doc(v: &mut Json, loc: &mut Location, f: &mut dyn FnMut(&[At], &mut Json)) {
    match v {
        Json::Object(m) => {
            let ct = m.get("connector_type").and_then(Json::as_str).map(str::to_string);
            let connector = ct.is_some() && m.contains_key("config");
            if let (Some(ct), Some(config)) = (ct, m.get_mut("config")) {
                loc.push(At::Key("config".into()));
                let base = loc.clone();
                visit_config(&ct, config, &mut |rel, val| {
                    let full: Location = base.iter().chain(rel).cloned().collect();
                    f(&full, val)
                });
                loc.pop();
            }
            for (k, child) in m.iter_mut() {
                if connector && k == "config" {
                    // A connector's config holds no connector.
                    continue;
                }
                loc.push(At::Key(k.clone()));
                visit_doc(child, loc, f);
                loc.pop();
            }
        }
        Json::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                loc.push(At::Index(i));
                visit_doc(child, loc, f);
                loc.pop();
            }
        }
        _ => {}
    }
}

/// Replaces every secret of a `connector_type` config by [`MASK`].
pub fn mask_config(connector_type: &str, config: &mut Json) {
    visit_config(connector_type, config, &mut |_, v| *v = Json::from(MASK));
}

/// Replaces every secret of every connector in a pipeline document by [`MASK`].
pub fn mask_document(doc: &mut Json) {
    visit_document(doc, &mut |_, v| *v = Json::from(MASK));
}

/// The locations of the secrets present in a pipeline document.
pub fn document_locations(doc: &Json) -> Vec<Location> {
    let mut out = Vec::new();
    let mut copy = doc.clone();
    visit_document(&mut copy, &mut |loc, _| out.push(loc.to_vec()));
    out
}

/// The locations (relative to `config`) of the secrets present in a config.
pub fn config_locations(connector_type: &str, config: &Json) -> Vec<Location> {
    let mut out = Vec::new();
    let mut copy = config.clone();
    visit_config(connector_type, &mut copy, &mut |loc, _| out.push(loc.to_vec()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listed(kind: &str) -> Vec<String> {
        secret_paths(kind).iter().map(ToString::to_string).collect()
    }

    /// Each kind's secret fields, as its types say. A new `Secret` field changes this list
    /// (and must be added to docs/security.md's table).
    #[test]
    fn each_kinds_secret_fields_are_pinned() {
        let want: &[(&str, &[&str])] = &[
            ("file", &[]),
            (
                "rest_api",
                &["headers.*", "secret_query_params.*", "auth_params.api_key_value", "auth_params.token", "auth_params.password", "auth_params.client_secret"],
            ),
            ("postgresql", &["password"]),
            ("mysql", &["password"]),
            ("nats", &["password", "token"]),
            ("kafka", &["properties.sasl.password", "properties.ssl.key.password", "properties.ssl.key.pem"]),
            ("rabbitmq", &["password"]),
            ("aws_s3", &["secret_access_key"]),
        ];
        for (kind, paths) in want {
            let mut got = listed(kind);
            let mut want: Vec<String> = paths.iter().map(|s| s.to_string()).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{kind}");
        }
        assert_eq!(listed("REST API"), listed("rest_api"));
        assert!(listed("no_such_kind").is_empty());
    }

    /// docs/security.md's table of secret fields lists exactly what the types derive.
    #[test]
    fn the_docs_table_of_secret_fields_matches_the_types() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md")).unwrap();
        let rows: Vec<&str> = doc.lines().skip_while(|l| !l.starts_with("| connector | secret fields")).skip(2).take_while(|l| l.starts_with('|')).collect();
        assert!(!rows.is_empty(), "docs/security.md has no table `| connector | secret fields |`");
        let mut seen = Vec::new();
        for row in rows {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            let kind = cells[0].trim_matches('`');
            let mut fields: Vec<String> =
                cells[1].split(',').map(|f| f.trim().trim_matches('`').to_string()).filter(|f| !f.is_empty() && f != "—").collect();
            let mut want = listed(kind);
            fields.sort();
            want.sort();
            assert_eq!(fields, want, "docs/security.md's row for `{kind}`");
            seen.push(kind.to_string());
        }
        for k in KINDS.iter().filter(|k| k.implemented()) {
            assert!(seen.iter().any(|s| s == k.name), "docs/security.md's table has no row for `{}`", k.name);
        }
    }

    #[test]
    fn derivation_follows_refs_maps_lists_and_alternatives() {
        let secret = json!({"type": "string", "writeOnly": true});
        let schema = json!({
            "type": "object",
            "properties": {
                "a": {"$ref": "#/$defs/A"},
                "list": {"type": "array", "items": {"properties": {"k": secret}}},
                "either": {"anyOf": [{"type": "null"}, secret]},
                "plain": {"type": "string"}
            },
            "$defs": {"A": {"type": "object", "additionalProperties": secret}}
        });
        let mut got: Vec<String> = derive(&schema).iter().map(ToString::to_string).collect();
        got.sort();
        assert_eq!(got, ["a.*", "either", "list[].k"]);
    }

    #[test]
    fn documents_are_masked_in_every_connector_and_nothing_else() {
        let mut doc = json!({
            "name": "p",
            "source": {"connector_type": "rest_api", "config": {"url": "https://x", "headers": {"X-Renamed": "h1"}, "secret_query_params": {"sig": "q1"}, "auth_params": {"username": "u"}}},
            "sources": {"b": {"connector_type": "kafka", "config": {"topic": "t", "properties": {"sasl.password": "k1", "sasl.username": "ku"}}}},
            "destinations": [{"connector_type": "rabbitmq", "config": {"queue": "q", "username": "ru", "password": "r1"}}],
            "error_handling": {"dead_letter": {"connector_type": "postgresql", "config": {"host": "h", "password": "p1"}}},
            "schedule": {"type": "event", "connector_type": "nats", "config": {"token": "n1"}},
            "transformations": [{"type": "field_mapping", "field_name": "password", "operation": "trim"}]
        });
        let locs: Vec<String> = document_locations(&doc).iter().map(|l| location_text("", l)).collect();
        assert_eq!(locs.len(), 6, "{locs:?}");
        assert!(locs.contains(&"source.config.headers.X-Renamed".to_string()), "{locs:?}");
        assert!(locs.contains(&"destinations[0].config.password".to_string()), "{locs:?}");
        mask_document(&mut doc);
        let text = doc.to_string();
        for s in ["h1", "q1", "k1", "r1", "p1", "n1"] {
            assert!(!text.contains(&format!("\"{s}\"")), "{s} in {text}");
        }
        assert_eq!(doc["sources"]["b"]["config"]["properties"]["sasl.username"], "ku");
        assert_eq!(doc["destinations"][0]["config"]["username"], "ru");
        assert_eq!(doc["transformations"][0]["field_name"], "password");
    }
}
