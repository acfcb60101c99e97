//! Helpers shared by the integration tests.

use dagg_model::{Record, Value};
use serde_json::Value as Json;

/// A JSON list of objects as records.
pub fn records(v: &Json) -> Vec<Record> {
    let Json::Array(items) = v else { panic!("expected an array of records, found {v}") };
    items
        .iter()
        .map(|i| match Value::from(i) {
            Value::Object(m) => m,
            other => panic!("not a record: {other}"),
        })
        .collect()
}

fn is_rfc3339(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// Equal as JSON values with key order and integer-versus-float kept; floats within 1e-9
/// (relative). `"<RFC 3339 timestamp>"` matches any RFC 3339 string, `"<any>"` anything.
pub fn matches(expected: &Json, got: &Value) -> bool {
    match (expected, got) {
        (Json::String(e), Value::String(g)) if e == "<RFC 3339 timestamp>" => is_rfc3339(g),
        (Json::String(e), _) if e == "<any>" => true,
        (Json::Null, Value::Null) => true,
        (Json::Bool(a), Value::Bool(b)) => a == b,
        (Json::Number(n), Value::Int(i)) => n.as_i64() == Some(*i),
        (Json::Number(n), Value::Float(f)) if !(n.is_i64() || n.is_u64()) => {
            let e = n.as_f64().unwrap();
            (e - f).abs() <= 1e-9 * e.abs().max(1.0)
        }
        (Json::String(a), Value::String(b)) => a == b.as_str(),
        (Json::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| matches(x, y)),
        (Json::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| ka == kb.as_str() && matches(va, vb))
        }
        _ => false,
    }
}
