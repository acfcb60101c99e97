//! How an event's values enter a pipeline document: as data, never as code.
//!
//! `${event.field}` (or `${event.a.b}` for a nested field) may stand in any string of the
//! document but its `schedule`. What it becomes depends on where it stands:
//! - in a database source's `query`: a bind parameter (`$n` for PostgreSQL, `?` for MySQL)
//!   whose value is appended to `query_params`; inside a quoted literal
//!   (`'%${event.q}%'`) the literal becomes a concatenation of its text and the parameter.
//!   In a quoted name or a comment it is refused: an event gives values, not names;
//! - in a `script` step's `source`: a read of the constant `event` (the whole event, put in
//!   the step's `variables`): `event["a"]["b"]` in code, a concatenation inside a `"…"`
//!   string, and Rhai's own interpolation inside a `` `…` `` string;
//! - in a URL (`url`, `token_url`, `endpoint`, …): the value percent-encoded, so it stays
//!   one part of the URL and cannot change its host, path or query;
//! - elsewhere: the value's text; a string that is only `${event.field}` takes the value
//!   with its JSON type.
//!
//! The document is validated again after this (file paths, URLs, the script's compile), so a
//! value cannot lead a file path out of the files folder either.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value as Json};

const OPEN: &str = "${event.";

/// Keys whose strings are URLs: values entering them are percent-encoded.
const URL_KEYS: &[&str] = &["url", "token_url", "endpoint", "endpoint_url", "webhook_url"];

/// What percent-encoding leaves as it is (RFC 3986's unreserved characters).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Why an event's values could not enter the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventValueError {
    /// The document uses `${event.<field>}` and the event has no such field.
    Missing(String),
    /// The reference stands where no value may go (`at` names the place).
    Misplaced { at: String, reason: String },
}

impl std::fmt::Display for EventValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventValueError::Missing(field) => write!(f, "the document uses `${{event.{field}}}` and the event has no such field"),
            EventValueError::Misplaced { at, reason } => write!(f, "{at}: {reason}"),
        }
    }
}

type Result<T> = std::result::Result<T, EventValueError>;

/// The document with the event's values in place of every `${event.field}` (see the module
/// docs for what each place gets).
pub fn with_event(doc: &Json, event: &Json) -> Result<Json> {
    walk(doc, event, "")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn walk(v: &Json, event: &Json, path: &str) -> Result<Json> {
    match v {
        Json::String(s) => plain(s, event),
        Json::Array(a) => a.iter().enumerate().map(|(i, x)| walk(x, event, &format!("{path}[{i}]"))).collect::<Result<_>>().map(Json::Array),
        Json::Object(m) => object(m, event, path),
        other => Ok(other.clone()),
    }
}

fn object(m: &Map<String, Json>, event: &Json, path: &str) -> Result<Json> {
    let mut out = Map::with_capacity(m.len());
    for (k, x) in m {
        let here = join(path, k);
        let value = match x {
            _ if k == "schedule" => x.clone(),
            Json::String(s) if URL_KEYS.contains(&k.as_str()) => Json::String(encoded(s, event)?),
            _ => walk(x, event, &here)?,
        };
        out.insert(k.clone(), value);
    }
    // A database source's query: its references become bind parameters.
    if let Some(dialect) = sql_dialect(m)
        && let Some(Json::Object(config)) = out.get_mut("config")
        && let Some(Json::String(query)) = m.get("config").and_then(|c| c.get("query"))
        && query.contains(OPEN)
    {
        let mut params = match config.get("query_params") {
            Some(Json::Array(p)) => p.clone(),
            _ => Vec::new(),
        };
        let sql = sql_query(query, event, dialect, &mut params, &join(path, "config.query"))?;
        config.insert("query".into(), Json::String(sql));
        config.insert("query_params".into(), Json::Array(params));
    }
    // A script: its references read the constant `event`.
    if m.get("type").and_then(Json::as_str) == Some("script")
        && let Some(Json::String(source)) = m.get("source")
        && source.contains(OPEN)
    {
        let script = script_source(source, event, &join(path, "source"))?;
        out.insert("source".into(), Json::String(script));
        let vars = out.entry("variables").or_insert_with(|| Json::Object(Map::new()));
        if let Json::Object(vars) = vars {
            vars.insert("event".into(), event.clone());
        }
    }
    Ok(Json::Object(out))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dialect {
    Postgres,
    Mysql,
}

fn sql_dialect(m: &Map<String, Json>) -> Option<Dialect> {
    let kind = dagg_model::spec::connectors::kind(m.get("connector_type")?.as_str()?)?;
    match kind.name {
        "postgresql" => Some(Dialect::Postgres),
        "mysql" => Some(Dialect::Mysql),
        _ => None,
    }
}

fn lookup<'a>(event: &'a Json, path: &str) -> Result<&'a Json> {
    path.split('.').try_fold(event, |v, k| v.get(k)).ok_or_else(|| EventValueError::Missing(path.to_string()))
}

/// The value's text: a string as it is, anything else as JSON.
fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The references in `s` in order: `(start, end, field path)`, `end` past the `}`.
fn references(s: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = s[from..].find(OPEN) {
        let start = from + i;
        let after = start + OPEN.len();
        let Some(len) = s[after..].find('}') else { break };
        out.push((start, after + len + 1, &s[after..after + len]));
        from = after + len + 1;
    }
    out
}

/// The reference `s` starts with, if it starts with a whole one: where it ends (past the
/// `}`) and its field path. An unclosed `${event.` is plain text.
fn reference_at(s: &str) -> Option<(usize, &str)> {
    let path_and_rest = s.strip_prefix(OPEN)?;
    let len = path_and_rest.find('}')?;
    Some((OPEN.len() + len + 1, &path_and_rest[..len]))
}

/// Each reference replaced by what `fill` makes of its value.
fn replaced(s: &str, event: &Json, mut fill: impl FnMut(&Json) -> String) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (start, end, path) in references(s) {
        out.push_str(&s[at..start]);
        out.push_str(&fill(lookup(event, path)?));
        at = end;
    }
    out.push_str(&s[at..]);
    Ok(out)
}

fn plain(s: &str, event: &Json) -> Result<Json> {
    if !s.contains(OPEN) {
        return Ok(Json::String(s.to_string()));
    }
    // The whole string is one reference: keep the value's type.
    if let [(0, end, path)] = references(s)[..]
        && end == s.len()
    {
        return lookup(event, path).cloned();
    }
    replaced(s, event, text).map(Json::String)
}

fn encoded(s: &str, event: &Json) -> Result<String> {
    replaced(s, event, |v| utf8_percent_encode(&text(v), UNRESERVED).to_string())
}

/// A query with its references as placeholders, their values appended to `params` (MySQL:
/// inserted where their `?` falls among the query's own).
fn sql_query(q: &str, event: &Json, dialect: Dialect, params: &mut Vec<Json>, at: &str) -> Result<String> {
    let misplaced = |what: &str| EventValueError::Misplaced {
        at: at.to_string(),
        reason: format!("`${{event.…}}` stands in {what}; an event's value can only stand where a value goes (it is sent as a bind parameter)"),
    };
    let b = q.as_bytes();
    let mut out = String::with_capacity(q.len());
    // MySQL: the `?` placeholders written so far, the query's own and ours.
    let mut marks = 0usize;
    let mut i = 0;
    let placeholder = |value: &Json, marks: &mut usize, params: &mut Vec<Json>| -> String {
        match dialect {
            Dialect::Postgres => {
                params.push(value.clone());
                format!("${}", params.len())
            }
            Dialect::Mysql => {
                params.insert((*marks).min(params.len()), value.clone());
                *marks += 1;
                "?".to_string()
            }
        }
    };
    while i < b.len() {
        let rest = &q[i..];
        if let Some((end, path)) = reference_at(rest) {
            out.push_str(&placeholder(lookup(event, path)?, &mut marks, params));
            i += end;
            continue;
        }
        match b[i] {
            b'\'' => {
                // A string literal: copied, or rebuilt around its references.
                let end = literal_end(q, i, dialect);
                let body = &q[i + 1..end.saturating_sub(1).max(i + 1)];
                if body.contains(OPEN) {
                    let mut parts = Vec::new();
                    let mut at = 0;
                    for (s, e, path) in references(body) {
                        if s > at {
                            parts.push(format!("'{}'", &body[at..s]));
                        }
                        parts.push(placeholder(lookup(event, path)?, &mut marks, params));
                        at = e;
                    }
                    if at < body.len() {
                        parts.push(format!("'{}'", &body[at..]));
                    }
                    out.push_str(&match (dialect, parts.len()) {
                        (_, 1) => parts.remove(0),
                        (Dialect::Postgres, _) => format!("({})", parts.join(" || ")),
                        (Dialect::Mysql, _) => format!("CONCAT({})", parts.join(", ")),
                    });
                } else {
                    out.push_str(&q[i..end]);
                }
                i = end;
            }
            quote @ (b'"' | b'`') => {
                let end = q[i + 1..].find(quote as char).map_or(q.len(), |e| i + 1 + e + 1);
                if q[i..end].contains(OPEN) {
                    return Err(misplaced("a quoted name"));
                }
                out.push_str(&q[i..end]);
                i = end;
            }
            b'-' if rest.starts_with("--") => {
                let end = rest.find('\n').map_or(q.len(), |e| i + e);
                if q[i..end].contains(OPEN) {
                    return Err(misplaced("a comment"));
                }
                out.push_str(&q[i..end]);
                i = end;
            }
            b'/' if rest.starts_with("/*") => {
                let end = rest.find("*/").map_or(q.len(), |e| i + e + 2);
                if q[i..end].contains(OPEN) {
                    return Err(misplaced("a comment"));
                }
                out.push_str(&q[i..end]);
                i = end;
            }
            b'?' => {
                marks += 1;
                out.push('?');
                i += 1;
            }
            _ => {
                let ch = rest.chars().next().expect("not at the end");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Ok(out)
}

/// Where the string literal opening at `start` ends (past its closing quote; `''` is a
/// quote inside it, and for MySQL so is `\'`).
fn literal_end(q: &str, start: usize, dialect: Dialect) -> usize {
    let b = q.as_bytes();
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if dialect == Dialect::Mysql => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    q.len()
}

/// `event["a"]["b"]`: the field at `path` of the constant `event`, in Rhai.
fn rhai_read(path: &str) -> String {
    let mut out = String::from("event");
    for key in path.split('.') {
        out.push_str("[\"");
        for c in key.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c => out.push(c),
            }
        }
        out.push_str("\"]");
    }
    out
}

/// A script's source with its references reading `event`.
fn script_source(src: &str, event: &Json, at: &str) -> Result<String> {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    // Checks the field exists (a missing one passes the event over, as elsewhere).
    let read = |path: &str| -> Result<String> { lookup(event, path).map(|_| rhai_read(path)) };
    while i < b.len() {
        let rest = &src[i..];
        if let Some((end, path)) = reference_at(rest) {
            out.push_str(&format!("({})", read(path)?));
            i += end;
            continue;
        }
        match b[i] {
            b'"' => {
                // A string: each reference becomes a concatenation.
                let mut j = i + 1;
                out.push('"');
                while j < b.len() && b[j] != b'"' {
                    if let Some((end, path)) = reference_at(&src[j..]) {
                        out.push_str(&format!("\" + ({}).to_string() + \"", read(path)?));
                        j += end;
                        continue;
                    }
                    // An escape is copied with the character it escapes, whatever its width.
                    let mut chars = src[j..].chars();
                    let first = chars.next().expect("not at the end");
                    let step = first.len_utf8() + if first == '\\' { chars.next().map_or(0, char::len_utf8) } else { 0 };
                    out.push_str(&src[j..j + step]);
                    j += step;
                }
                if j < b.len() {
                    out.push('"');
                }
                i = j + 1;
            }
            b'`' => {
                // Rhai's own interpolation: `${…}` is code, given the read.
                let mut j = i + 1;
                out.push('`');
                while j < b.len() && b[j] != b'`' {
                    if let Some((end, path)) = reference_at(&src[j..]) {
                        out.push_str(&format!("${{{}}}", read(path)?));
                        j += end;
                        continue;
                    }
                    let ch = src[j..].chars().next().expect("not at the end");
                    out.push(ch);
                    j += ch.len_utf8();
                }
                if j < b.len() {
                    out.push('`');
                }
                i = j + 1;
            }
            b'/' if rest.starts_with("//") || rest.starts_with("/*") => {
                let end = if rest.starts_with("//") { rest.find('\n').map_or(src.len(), |e| i + e) } else { rest.find("*/").map_or(src.len(), |e| i + e + 2) };
                if src[i..end].contains(OPEN) {
                    return Err(EventValueError::Misplaced { at: at.to_string(), reason: "`${event.…}` stands in a comment".into() });
                }
                out.push_str(&src[i..end]);
                i = end;
            }
            _ => {
                let ch = rest.chars().next().expect("not at the end");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_fields_fill_the_document_but_not_its_schedule() {
        let doc = json!({"source": {"config": {"path": "in/${event.file}", "n": "${event.n}"}}, "schedule": {"config": {"subject": "${event.file}"}}});
        let out = with_event(&doc, &json!({"file": "a.jsonl", "n": 3})).unwrap();
        assert_eq!(out, json!({"source": {"config": {"path": "in/a.jsonl", "n": 3}}, "schedule": {"config": {"subject": "${event.file}"}}}));
        assert_eq!(with_event(&doc, &json!({"n": 1})).unwrap_err(), EventValueError::Missing("file".into()));
        assert_eq!(with_event(&json!("${event.a.b}-x"), &json!({"a": {"b": 7}})).unwrap(), json!("7-x"));
    }

    #[test]
    fn a_query_gets_bind_parameters_never_the_values_text() {
        let pg = |q: &str| json!({"connector_type": "postgresql", "config": {"host": "h", "query": q}});
        let ev = json!({"id": "1' OR '1'='1", "n": 5, "q": "x"});
        let out = with_event(&pg("SELECT * FROM t WHERE id = '${event.id}' AND n > ${event.n}"), &ev).unwrap();
        assert_eq!(out["config"]["query"], "SELECT * FROM t WHERE id = $1 AND n > $2");
        assert_eq!(out["config"]["query_params"], json!(["1' OR '1'='1", 5]));
        // Inside a longer literal: a concatenation; existing parameters keep their numbers.
        let mut doc = pg("SELECT * FROM t WHERE a = $1 AND name LIKE '%${event.q}%' -- done");
        doc["config"]["query_params"] = json!([10]);
        let out = with_event(&doc, &ev).unwrap();
        assert_eq!(out["config"]["query"], "SELECT * FROM t WHERE a = $1 AND name LIKE ('%' || $2 || '%') -- done");
        assert_eq!(out["config"]["query_params"], json!([10, "x"]));
        // MySQL: `?` in order among the query's own.
        let my = json!({"connector_type": "mysql", "config": {"query": "SELECT * FROM t WHERE a = ? AND b = '${event.id}' AND c = ?", "query_params": [1, 2]}});
        let out = with_event(&my, &ev).unwrap();
        assert_eq!(out["config"]["query"], "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?");
        assert_eq!(out["config"]["query_params"], json!([1, "1' OR '1'='1", 2]));
        let my = json!({"connector_type": "mysql", "config": {"query": "SELECT '${event.q}-\\'${event.n}' FROM t"}});
        let out = with_event(&my, &ev).unwrap();
        assert_eq!(out["config"]["query"], "SELECT CONCAT(?, '-\\'', ?) FROM t");
        assert_eq!(out["config"]["query_params"], json!(["x", 5]));
        // A name or a comment is no place for a value.
        let e = with_event(&pg("SELECT * FROM \"${event.q}\""), &ev).unwrap_err();
        assert!(matches!(e, EventValueError::Misplaced { ref at, .. } if at == "config.query"), "{e:?}");
        assert!(with_event(&pg("SELECT 1 /* ${event.q} */"), &ev).is_err());
        // Another connector's `query`-named key is plain text.
        let other = json!({"connector_type": "rest_api", "config": {"query": "q=${event.q}"}});
        assert_eq!(with_event(&other, &ev).unwrap()["config"]["query"], "q=x");
    }

    #[test]
    fn a_script_reads_the_event_as_a_constant() {
        let doc = json!({"type": "script", "source": "record.a = ${event.name}; record.b = \"id: ${event.x.y}!\"; record.c = `<${event.name}>`; // done"});
        let ev = json!({"name": "\"); throw \"pwned", "x": {"y": 2}});
        let out = with_event(&doc, &ev).unwrap();
        assert_eq!(
            out["source"],
            "record.a = (event[\"name\"]); record.b = \"id: \" + (event[\"x\"][\"y\"]).to_string() + \"!\"; record.c = `<${event[\"name\"]}>`; // done"
        );
        assert_eq!(out["variables"]["event"], ev);
        // The rewritten source compiles.
        dagg_model::spec::transform::script::compile_with(out["source"].as_str().unwrap(), &["event"]).unwrap();
        assert!(with_event(&json!({"type": "script", "source": "x // ${event.name}"}), &ev).is_err());
        assert_eq!(with_event(&doc, &json!({"name": 1})).unwrap_err(), EventValueError::Missing("x.y".into()));
    }

    #[test]
    fn unclosed_references_and_escaped_wide_characters_are_text() {
        let ev = json!({"x": 1});
        let q = json!({"connector_type": "postgresql", "config": {"query": "SELECT ${event.x}, '${event.' AS t"}});
        assert_eq!(with_event(&q, &ev).unwrap()["config"]["query"], "SELECT $1, '${event.' AS t");
        let script = json!({"type": "script", "source": "record.a = \"\\é ${event.x}\";"});
        assert_eq!(with_event(&script, &ev).unwrap()["source"], "record.a = \"\\é \" + (event[\"x\"]).to_string() + \"\";");
    }

    #[test]
    fn a_url_gets_the_value_percent_encoded() {
        let doc = json!({"config": {"url": "https://api.example.com/items/${event.id}?q=${event.q}", "path": "${event.id}"}});
        let ev = json!({"id": "../../admin@evil.example:80/x?y#z", "q": "a b&c=d"});
        let out = with_event(&doc, &ev).unwrap();
        assert_eq!(out["config"]["url"], "https://api.example.com/items/..%2F..%2Fadmin%40evil.example%3A80%2Fx%3Fy%23z?q=a%20b%26c%3Dd");
        // A whole URL from an event is encoded too: it is no longer a URL (validation refuses it).
        let out = with_event(&json!({"url": "${event.u}"}), &json!({"u": "http://169.254.169.254/"})).unwrap();
        assert_eq!(out["url"], "http%3A%2F%2F169.254.169.254%2F");
    }
}
