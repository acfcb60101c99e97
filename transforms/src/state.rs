//! The chain's state as JSON, for checkpoints ([`Chain::snapshot`](crate::Chain::snapshot),
//! [`Chain::restore`](crate::Chain::restore)).
//!
//! Format version 1: `{"version": 1, "steps": [...]}`, one entry per stateful step in chain
//! order. Each entry starts with the step's place and type (`"step": 2, "type":
//! "aggregation"` for `transformations[2]`); the rest is the step's own (described in
//! `aggregate.rs` and `dedup.rs`). Lists that grow with the data (groups, keys, held
//! records) are positional arrays, so a field name is written once per step, not per group.
//!
//! Values (group keys, held records, collected values) are JSON with integer versus float
//! kept (`2` and `2.0`) and fields in their order, except for three forms which make a
//! snapshot exact for every value and free of JSON null (a checkpoint stores "no chain state"
//! as null):
//! - null is `{"$": "null"}`;
//! - a float that JSON cannot write is `{"$": "inf"}`, `{"$": "-inf"}` or `{"$": "nan"}` (a
//!   float sum can overflow, and what an aggregation emits can reach a later step's state);
//! - an object whose first field is named `$` is wrapped: `{"$": {…the object…}}`.
//!
//! Snapshots outlive the build that wrote them: any change to what is written here or by a
//! step is a new version, and `tests/golden/` keeps a snapshot of each version that must
//! still restore.

use dagg_model::{Map, Record, Str, Value};
pub(crate) use serde_json::Value as Json;

pub(crate) type JsonMap = serde_json::Map<String, Json>;

pub(crate) const VERSION: u64 = 1;

/// The name of the field that marks the special forms.
const MARK: &str = "$";

/// `value` in the snapshot's form.
pub(crate) fn value(v: &Value) -> Json {
    match v {
        Value::Null => special("null"),
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => float(*f),
        Value::String(s) => Json::String(s.to_string()),
        Value::Array(items) => Json::Array(items.iter().map(value).collect()),
        Value::Object(m) => record(m),
    }
}

/// An object (a record) in the snapshot's form.
pub(crate) fn record(m: &Map) -> Json {
    let obj: JsonMap = m.iter().map(|(k, v)| (k.to_string(), value(v))).collect();
    if m.keys().next().is_some_and(|k| k == MARK) {
        let mut wrapper = JsonMap::with_capacity(1);
        wrapper.insert(MARK.to_string(), Json::Object(obj));
        Json::Object(wrapper)
    } else {
        Json::Object(obj)
    }
}

/// A float, finite or not.
pub(crate) fn float(f: f64) -> Json {
    match serde_json::Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => special("nan"),
        None if f > 0.0 => special("inf"),
        None => special("-inf"),
    }
}

fn special(name: &str) -> Json {
    let mut m = JsonMap::with_capacity(1);
    m.insert(MARK.to_string(), Json::String(name.to_string()));
    Json::Object(m)
}

/// An integer beyond i64 (a sum's exact total) is written as its decimal text.
pub(crate) fn wide_int(i: i128) -> Json {
    i64::try_from(i).map(Json::from).unwrap_or_else(|_| Json::String(i.to_string()))
}

/// Reads a value written by [`value`].
pub(crate) fn to_value(j: &Json) -> Result<Value, String> {
    Ok(match j {
        Json::Null => return Err(r#"null, which a snapshot writes as {"$": "null"}"#.to_string()),
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(f)) if n.is_f64() => Value::Float(f),
            _ => return Err(format!("the integer {n} is out of range")),
        },
        Json::String(s) => Value::String(Str::from(s.as_str())),
        Json::Array(items) => Value::Array(items.iter().map(to_value).collect::<Result<_, _>>()?),
        Json::Object(obj) => match obj.iter().next() {
            Some((k, inner)) if k == MARK => {
                if obj.len() != 1 {
                    return Err(format!("{} has fields besides `$`", found(j)));
                }
                match inner {
                    Json::String(s) => match s.as_str() {
                        "null" => Value::Null,
                        "inf" => Value::Float(f64::INFINITY),
                        "-inf" => Value::Float(f64::NEG_INFINITY),
                        "nan" => Value::Float(f64::NAN),
                        _ => return Err(format!("{} is not a special value (null, inf, -inf, nan)", found(j))),
                    },
                    Json::Object(literal) => Value::Object(fields(literal)?),
                    _ => return Err(format!("{} is neither a special value nor a wrapped object", found(j))),
                }
            }
            _ => Value::Object(fields(obj)?),
        },
    })
}

/// Reads a record written by [`record`].
pub(crate) fn to_record(j: &Json) -> Result<Record, String> {
    match to_value(j)? {
        Value::Object(m) => Ok(m),
        _ => Err(format!("expected a record (an object), found {}", found(j))),
    }
}

fn fields(obj: &JsonMap) -> Result<Map, String> {
    let mut m = Map::with_capacity(obj.len());
    for (k, v) in obj {
        // The JSON object's names are distinct already.
        m.push_unchecked(k.as_str(), to_value(v)?);
    }
    Ok(m)
}

/// Reads a float written by [`float`].
pub(crate) fn to_float(j: &Json) -> Result<f64, String> {
    match to_value(j) {
        Ok(Value::Float(f)) => Ok(f),
        _ => Err(format!("expected a float, found {}", found(j))),
    }
}

/// Reads an integer written by [`wide_int`].
pub(crate) fn to_wide_int(j: &Json) -> Result<i128, String> {
    let parsed = match j {
        Json::Number(n) => n.as_i64().map(i128::from),
        Json::String(s) => s.parse::<i128>().ok().filter(|i| i64::try_from(*i).is_err()),
        _ => None,
    };
    parsed.ok_or_else(|| format!("expected an integer, found {}", found(j)))
}

pub(crate) fn to_u64(j: &Json) -> Result<u64, String> {
    j.as_u64().ok_or_else(|| format!("expected a count, found {}", found(j)))
}

pub(crate) fn to_i64(j: &Json) -> Result<i64, String> {
    j.as_i64().ok_or_else(|| format!("expected an integer, found {}", found(j)))
}

pub(crate) fn to_array(j: &Json) -> Result<&[Json], String> {
    j.as_array().map(Vec::as_slice).ok_or_else(|| format!("expected an array, found {}", found(j)))
}

/// `j` for an error message: its JSON, shortened.
pub(crate) fn found(j: &Json) -> String {
    const MAX: usize = 80;
    let text = j.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The fields of an object of the format, read by name; [`Fields::end`] fails on any field
/// that was not read, so a snapshot of another shape is never half understood.
pub(crate) struct Fields<'a> {
    obj: &'a JsonMap,
    read: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(j: &'a Json) -> Result<Fields<'a>, String> {
        match j {
            Json::Object(obj) => Ok(Fields { obj, read: Vec::new() }),
            _ => Err(format!("expected an object, found {}", found(j))),
        }
    }

    /// A field that must be there.
    pub(crate) fn req(&mut self, name: &'static str) -> Result<&'a Json, String> {
        self.opt(name).ok_or_else(|| format!("`{name}` is missing"))
    }

    pub(crate) fn opt(&mut self, name: &'static str) -> Option<&'a Json> {
        self.read.push(name);
        self.obj.get(name)
    }

    pub(crate) fn end(self) -> Result<(), String> {
        let unknown: Vec<&str> = self.obj.keys().map(String::as_str).filter(|k| !self.read.contains(k)).collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!("unknown field(s) `{}`", unknown.join("`, `")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn has_null(j: &Json) -> bool {
        match j {
            Json::Null => true,
            Json::Array(items) => items.iter().any(has_null),
            Json::Object(obj) => obj.values().any(has_null),
            _ => false,
        }
    }

    /// Through the snapshot form and JSON text, and back.
    fn round_trip(v: &Value) -> (String, Value) {
        let text = value(v).to_string();
        let back = to_value(&serde_json::from_str(&text).unwrap()).unwrap();
        (text, back)
    }

    #[test]
    fn values_come_back_as_they_were() {
        for s in [
            "1", "1.0", "-0.0", "2.5e-300", "1e300", "9223372036854775807", "-9223372036854775808",
            r#""$""#, r#"{"b":1,"a":2.0}"#, "[[],{}]", r#"{"$":1,"a":null}"#, r#"{"a":{"$":"inf"}}"#,
            r#"{"$":{"$":"null"}}"#, "true",
        ] {
            let v = parse(s);
            let (text, back) = round_trip(&v);
            assert_eq!(back, v, "{s} via {text}");
            assert_eq!(back.to_json(), v.to_json(), "{s}: key order and number types");
            assert!(!has_null(&value(&v)), "{s} was written as {text}");
        }
        let (_, zero) = round_trip(&Value::Float(-0.0));
        assert!(matches!(zero, Value::Float(f) if f == 0.0 && f.is_sign_negative()));
    }

    #[test]
    fn the_special_forms() {
        assert_eq!(value(&Value::Null).to_string(), r#"{"$":"null"}"#);
        assert_eq!(value(&parse(r#"{"$":1}"#)).to_string(), r#"{"$":{"$":1}}"#);
        assert_eq!(value(&parse(r#"{"a":{"$":null}}"#)).to_string(), r#"{"a":{"$":{"$":{"$":"null"}}}}"#);
        for f in [f64::INFINITY, f64::NEG_INFINITY] {
            let (_, back) = round_trip(&Value::Float(f));
            assert_eq!(back, Value::Float(f));
        }
        let (text, back) = round_trip(&Value::Array(vec![Value::Float(f64::NAN)]));
        assert_eq!(text, r#"[{"$":"nan"}]"#);
        assert!(matches!(&back, Value::Array(a) if matches!(a[0], Value::Float(f) if f.is_nan())));
    }

    #[test]
    fn malformed_values_are_errors() {
        for (s, why) in [
            ("null", "null"),
            (r#"{"$":"x"}"#, "not a special value"),
            (r#"{"$":"inf","b":1}"#, "besides"),
            (r#"{"$":1}"#, "neither"),
            ("18446744073709551615", "out of range"),
        ] {
            let err = to_value(&serde_json::from_str(s).unwrap()).unwrap_err();
            assert!(err.contains(why), "{s}: {err}");
        }
    }

    #[test]
    fn wide_integers() {
        for i in [0i128, -5, i64::MAX as i128, i64::MAX as i128 + 1, i64::MIN as i128 * 3] {
            assert_eq!(to_wide_int(&wide_int(i)).unwrap(), i);
        }
        assert_eq!(wide_int(i64::MAX as i128 + 1).to_string(), "\"9223372036854775808\"");
        assert!(to_wide_int(&Json::from("5")).is_err(), "within i64 it is a number");
        assert!(to_wide_int(&Json::from(1.5)).is_err());
    }
}
