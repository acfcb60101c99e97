//! `field_mapping` / `field_operation`: one field changed in place.
//!
//! A missing or null field leaves the record as it is, except for `default` (which exists
//! to fill it) and `rename` of a null (the field is moved; its value does not matter).
//! Text operations (`title_case`, `lowercase`, `uppercase`, `trim`, `format`, `replace`,
//! `split`) need a string and fail the record otherwise; `hash`, `mask` and `lookup` read the
//! value's text (a string itself, anything else its compact JSON).

use std::collections::HashMap;
use std::fmt::Write as _;

use dagg_model::spec::transform::{CastType, FieldOp, FieldOperationSpec, HashAlgorithm};
use dagg_model::{FieldPath, Record, Str, Value};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::{dates, text};

/// A field operation ready to run.
pub(crate) struct FieldOpStep {
    field: FieldPath,
    op: FieldOp,
    /// `lookup`'s table keyed by text.
    table: HashMap<String, Value>,
    /// `rename` within the same object: the new leaf name.
    rename_leaf: Option<Str>,
}

impl FieldOpStep {
    pub(crate) fn new(spec: &FieldOperationSpec) -> FieldOpStep {
        let table = match &spec.op {
            FieldOp::Lookup { table, .. } => table.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            _ => HashMap::new(),
        };
        let rename_leaf = match &spec.op {
            FieldOp::Rename { to } if parent_text(&spec.field) == parent_text(to) => Some(Str::from(to.leaf())),
            _ => None,
        };
        FieldOpStep { field: spec.field.clone(), op: spec.op.clone(), table, rename_leaf }
    }

    pub(crate) fn apply(&self, rec: &mut Record) -> Result<(), String> {
        match &self.op {
            FieldOp::Default { value } => {
                if self.field.get(rec).is_none_or(Value::is_null) {
                    self.field.set(rec, value.clone()).map_err(|e| e.to_string())?;
                }
                return Ok(());
            }
            FieldOp::Rename { to } => return self.rename(rec, to),
            _ => {}
        }
        let Some(slot) = self.field.get_mut(rec) else { return Ok(()) };
        if slot.is_null() {
            return Ok(());
        }
        let name = &self.field;
        let need_str = |v: &Value| -> Result<(), String> {
            Err(format!("`{name}` is {}, but `{}` needs a string", v.type_name(), self.op.name()))
        };
        let new = match (&self.op, &*slot) {
            (FieldOp::TitleCase, Value::String(s)) => text::title_case(s).map(Value::String),
            (FieldOp::Lowercase, Value::String(s)) => text::lowercase(s).map(Value::String),
            (FieldOp::Uppercase, Value::String(s)) => text::uppercase(s).map(Value::String),
            (FieldOp::Trim, Value::String(s)) => text::trim(s).map(Value::String),
            (FieldOp::Format { regex, pattern }, Value::String(s)) => {
                let caps = regex.0.captures(s).ok_or_else(|| {
                    format!("`{name}` does not match the regex `{}` (value: {})", regex.as_str(), Value::String(s.clone()))
                })?;
                let mut out = String::with_capacity(s.len() + 8);
                pattern.expand(&caps, &mut out);
                Some(Value::from(out))
            }
            (FieldOp::Replace { regex, replacement }, Value::String(s)) => {
                let mut out = String::new();
                let mut last = 0;
                for caps in regex.0.captures_iter(s) {
                    let m = caps.get(0).expect("group 0 always takes part");
                    out.push_str(&s[last..m.start()]);
                    replacement.expand(&caps, &mut out);
                    last = m.end();
                }
                if last == 0 && out.is_empty() {
                    None
                } else {
                    out.push_str(&s[last..]);
                    Some(Value::from(out))
                }
            }
            (FieldOp::Split { separator }, Value::String(s)) => {
                Some(Value::Array(s.split(separator.as_str()).map(Value::from).collect()))
            }
            (
                FieldOp::TitleCase | FieldOp::Lowercase | FieldOp::Uppercase | FieldOp::Trim | FieldOp::Format { .. }
                | FieldOp::Replace { .. } | FieldOp::Split { .. },
                v,
            ) => return need_str(v),
            (FieldOp::Cast { to }, v) => cast(v, *to).map_err(|why| format!("cannot cast `{name}` to {}: {why}", to.name()))?,
            (FieldOp::Round { digits }, v) => Some(Value::Float(round(v, *digits).ok_or_else(|| {
                format!("`{name}` is {}, but `round` needs a number", v.type_name())
            })?)),
            (FieldOp::DateFormat(spec), v) => {
                Some(Value::from(dates::reformat(v, spec).map_err(|why| format!("`{name}`: {why}"))?))
            }
            (FieldOp::Hash { algorithm, salt }, v) => Some(Value::from(hash(*algorithm, salt, v))),
            (FieldOp::Mask { keep_last }, v) => Some(Value::String(match v {
                Value::String(s) => text::mask(s, *keep_last),
                other => text::mask(&other.to_text(), *keep_last),
            })),
            (FieldOp::Lookup { default, .. }, v) => {
                let found = match v {
                    Value::String(s) => self.table.get(s.as_str()),
                    other => self.table.get(&other.to_text()),
                };
                found.or(default.as_ref()).cloned()
            }
            (FieldOp::Default { .. } | FieldOp::Rename { .. }, _) => unreachable!("handled above"),
        };
        if let Some(v) = new {
            *slot = v;
        }
        Ok(())
    }

    fn rename(&self, rec: &mut Record, to: &FieldPath) -> Result<(), String> {
        if let Some(leaf) = &self.rename_leaf {
            if let Some(parent) = self.field.parent_mut(rec) {
                parent.rename(self.field.leaf(), leaf);
            }
            return Ok(());
        }
        // Another object: the value moves there (at the end of it).
        let Some(v) = self.field.get(rec) else { return Ok(()) };
        let v = v.clone();
        to.set(rec, v).map_err(|e| format!("cannot rename `{}`: {e}", self.field))?;
        self.field.remove(rec);
        Ok(())
    }
}

fn parent_text(p: &FieldPath) -> &str {
    p.as_str().rsplit_once('.').map_or("", |(parent, _)| parent)
}

/// `cast`; `Ok(None)` when the value already has the type.
pub(crate) fn cast(v: &Value, to: CastType) -> Result<Option<Value>, String> {
    let fail = || Err(format!("{} {} cannot convert", v.type_name(), v));
    Ok(match to {
        CastType::String => match v {
            Value::String(_) => None,
            other => Some(Value::from(other.to_json())),
        },
        CastType::Integer => match v {
            Value::Int(_) => None,
            // 2^63: every i64 is below it and at or above its negation.
            Value::Float(f) if f.fract() == 0.0 && *f >= -9_223_372_036_854_775_808.0 && *f < 9_223_372_036_854_775_808.0 => {
                Some(Value::Int(*f as i64))
            }
            Value::String(s) => match s.trim().parse::<i64>() {
                Ok(i) => Some(Value::Int(i)),
                Err(_) => return fail(),
            },
            _ => return fail(),
        },
        CastType::Float => match v {
            Value::Float(_) => None,
            Value::Int(i) => Some(Value::Float(*i as f64)),
            Value::String(s) => match parse_float(s.trim()) {
                Some(f) => Some(Value::Float(f)),
                None => return fail(),
            },
            _ => return fail(),
        },
        CastType::Boolean => match v {
            Value::Bool(_) => None,
            Value::Int(1) => Some(Value::Bool(true)),
            Value::Int(0) => Some(Value::Bool(false)),
            Value::Float(f) if *f == 1.0 => Some(Value::Bool(true)),
            Value::Float(f) if *f == 0.0 => Some(Value::Bool(false)),
            Value::String(s) => {
                let t = s.trim();
                if ["true", "yes", "1"].iter().any(|w| t.eq_ignore_ascii_case(w)) {
                    Some(Value::Bool(true))
                } else if ["false", "no", "0"].iter().any(|w| t.eq_ignore_ascii_case(w)) {
                    Some(Value::Bool(false))
                } else {
                    return fail();
                }
            }
            _ => return fail(),
        },
    })
}

/// A decimal number as JSON or common spreadsheets write it; not `inf`/`NaN`.
fn parse_float(s: &str) -> Option<f64> {
    let ok = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && s.bytes().any(|b| b.is_ascii_digit());
    if !ok {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// `round`: half away from zero at `digits` decimals, on the decimal digits the value prints
/// with (so `1.005` rounds to `1.01` as a person expects, not to the binary value's `1.00`).
pub(crate) fn round(v: &Value, digits: i32) -> Option<f64> {
    let f = match v {
        Value::Int(i) if digits >= 0 => return Some(*i as f64),
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => return None,
    };
    if !f.is_finite() {
        return Some(f);
    }
    if digits < 0 {
        let p = 10f64.powi(-digits);
        return Some((f / p).round() * p);
    }
    let text = format!("{}", f.abs());
    let (int_part, frac) = text.split_once('.').unwrap_or((&text, ""));
    let d = digits as usize;
    if frac.len() <= d {
        return Some(f);
    }
    let mut kept: Vec<u8> = int_part.bytes().chain(frac.bytes().take(d)).collect();
    if frac.as_bytes()[d] >= b'5' {
        // Carry the increment through the kept digits.
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, b'1');
                break;
            }
            i -= 1;
            if kept[i] == b'9' {
                kept[i] = b'0';
            } else {
                kept[i] += 1;
                break;
            }
        }
    }
    let split = kept.len() - d;
    let mut s = String::with_capacity(kept.len() + 2);
    if f < 0.0 {
        s.push('-');
    }
    s.push_str(std::str::from_utf8(&kept[..split]).expect("digits"));
    s.push('.');
    s.push_str(std::str::from_utf8(&kept[split..]).expect("digits"));
    s.push('0');
    s.parse().ok()
}

/// `hash`: the hex digest of `salt` followed by the value's text.
pub(crate) fn hash(algorithm: HashAlgorithm, salt: &str, v: &Value) -> String {
    let owned;
    let text = match v {
        Value::String(s) => s.as_str(),
        other => {
            owned = other.to_json();
            owned.as_str()
        }
    };
    fn digest<D: Digest>(salt: &str, text: &str) -> String {
        let mut d = D::new();
        d.update(salt.as_bytes());
        d.update(text.as_bytes());
        let bytes = d.finalize();
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes.iter() {
            let _ = write!(out, "{b:02x}");
        }
        out
    }
    match algorithm {
        HashAlgorithm::Sha256 => digest::<Sha256>(salt, text),
        HashAlgorithm::Sha1 => digest::<Sha1>(salt, text),
        HashAlgorithm::Md5 => digest::<Md5>(salt, text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagg_model::SpecErrors;
    use dagg_model::spec::transform::{TransformSpec, parse_transformations};
    use serde_json::json;

    fn step(op: &str, params: serde_json::Value) -> FieldOpStep {
        step_on("f", op, params)
    }

    fn step_on(field: &str, op: &str, params: serde_json::Value) -> FieldOpStep {
        let doc = json!([{"type": "field_operation", "field_name": field, "operation": op, "parameters": params}]);
        let mut errs = SpecErrors::new();
        let specs = parse_transformations(&doc, "t", &mut errs);
        assert!(errs.is_empty(), "{errs}");
        let TransformSpec::FieldOperation(s) = &specs[0] else { panic!() };
        FieldOpStep::new(s)
    }

    fn rec(v: serde_json::Value) -> Record {
        let Value::Object(m) = Value::from(&v) else { panic!() };
        m
    }

    fn apply(s: &FieldOpStep, input: serde_json::Value) -> Result<String, String> {
        let mut r = rec(input);
        s.apply(&mut r)?;
        Ok(Value::Object(r).to_json())
    }

    #[test]
    fn missing_and_null_leave_the_record() {
        for op in ["title_case", "lowercase", "uppercase", "trim", "round", "hash", "mask", "split"] {
            let s = step(op, json!({}));
            assert_eq!(apply(&s, json!({"g": 1})).unwrap(), r#"{"g":1}"#, "{op}");
            assert_eq!(apply(&s, json!({"f": null})).unwrap(), r#"{"f":null}"#, "{op}");
        }
        let s = step("cast", json!({"to": "integer"}));
        assert_eq!(apply(&s, json!({"f": null})).unwrap(), r#"{"f":null}"#);
    }

    #[test]
    fn text_ops_need_strings() {
        let e = apply(&step("uppercase", json!({})), json!({"f": 12})).unwrap_err();
        assert_eq!(e, "`f` is integer, but `uppercase` needs a string");
        assert!(apply(&step("title_case", json!({})), json!({"f": [1]})).is_err());
        assert!(apply(&step("split", json!({})), json!({"f": true})).is_err());
    }

    #[test]
    fn nested_paths() {
        let s = step_on("a.b", "uppercase", json!({}));
        assert_eq!(apply(&s, json!({"a": {"b": "x", "c": 1}})).unwrap(), r#"{"a":{"b":"X","c":1}}"#);
        assert_eq!(apply(&s, json!({"a": "scalar"})).unwrap(), r#"{"a":"scalar"}"#);
        assert_eq!(apply(&s, json!({"a": [1, 2]})).unwrap(), r#"{"a":[1,2]}"#);
        let s = step_on("a.1", "uppercase", json!({}));
        assert_eq!(apply(&s, json!({"a": ["x", "y"]})).unwrap(), r#"{"a":["x","Y"]}"#);
    }

    #[test]
    fn format_and_replace() {
        let s = step("format", json!({"regex": "(\\d{3})-(\\d{3})-(\\d{4})", "pattern": "($1) $2-$3"}));
        assert_eq!(apply(&s, json!({"f": "123-456-7890"})).unwrap(), r#"{"f":"(123) 456-7890"}"#);
        assert_eq!(apply(&s, json!({"f": "tel 123-456-7890 x"})).unwrap(), r#"{"f":"(123) 456-7890"}"#);
        let e = apply(&s, json!({"f": "12-34"})).unwrap_err();
        assert!(e.starts_with("`f` does not match the regex"), "{e}");
        let s = step("format", json!({"regex": "(?P<d>\\d+)", "pattern": "$$${d}"}));
        assert_eq!(apply(&s, json!({"f": "cost 12"})).unwrap(), r#"{"f":"$12"}"#);
        let s = step("replace", json!({"regex": "\\s+", "replacement": " "}));
        assert_eq!(apply(&s, json!({"f": " a \t b  "})).unwrap(), r#"{"f":" a b "}"#);
        let s = step("replace", json!({"regex": "(\\w)(\\w*)", "replacement": "$2$1"}));
        assert_eq!(apply(&s, json!({"f": "ab cd"})).unwrap(), r#"{"f":"ba dc"}"#);
        assert_eq!(apply(&s, json!({"f": "--"})).unwrap(), r#"{"f":"--"}"#);
        let s = step("replace", json!({"regex": "x", "replacement": ""}));
        assert_eq!(apply(&s, json!({"f": "xx"})).unwrap(), r#"{"f":""}"#);
        let s = step("replace", json!({"regex": "é", "replacement": "e"}));
        assert_eq!(apply(&s, json!({"f": "café é"})).unwrap(), r#"{"f":"cafe e"}"#);
    }

    #[test]
    fn rename_keeps_position() {
        let s = step("rename", json!({"to": "unit_price"}));
        assert_eq!(apply(&s, json!({"a": 1, "f": 2, "c": 3})).unwrap(), r#"{"a":1,"unit_price":2,"c":3}"#);
        assert_eq!(apply(&s, json!({"a": 1})).unwrap(), r#"{"a":1}"#);
        assert_eq!(apply(&s, json!({"f": null, "a": 1})).unwrap(), r#"{"unit_price":null,"a":1}"#);
        assert_eq!(apply(&s, json!({"unit_price": 0, "f": 2})).unwrap(), r#"{"unit_price":2}"#);
        let s = step_on("a.b", "rename", json!({"to": "a.c"}));
        assert_eq!(apply(&s, json!({"a": {"b": 1, "z": 2}})).unwrap(), r#"{"a":{"c":1,"z":2}}"#);
        let s = step_on("a.b", "rename", json!({"to": "top"}));
        assert_eq!(apply(&s, json!({"a": {"b": 1, "z": 2}, "q": 0})).unwrap(), r#"{"a":{"z":2},"q":0,"top":1}"#);
        let s = step_on("a", "rename", json!({"to": "q.x"}));
        assert!(apply(&s, json!({"a": 1, "q": 5})).unwrap_err().contains("`q` is integer"));
    }

    #[test]
    fn casts() {
        let c = |to: &str, v: serde_json::Value| apply(&step("cast", json!({"to": to})), json!({"f": v}));
        assert_eq!(c("integer", json!("42")).unwrap(), r#"{"f":42}"#);
        assert_eq!(c("integer", json!("-7")).unwrap(), r#"{"f":-7}"#);
        assert_eq!(c("integer", json!(2.0)).unwrap(), r#"{"f":2}"#);
        assert!(c("integer", json!(2.5)).is_err());
        assert!(c("integer", json!("2.0")).is_err());
        assert!(c("integer", json!("")).is_err());
        assert!(c("integer", json!(true)).is_err());
        assert!(c("integer", json!(1e300)).is_err());
        assert_eq!(c("float", json!(3)).unwrap(), r#"{"f":3.0}"#);
        assert_eq!(c("float", json!("2.50")).unwrap(), r#"{"f":2.5}"#);
        assert_eq!(c("float", json!("1e3")).unwrap(), r#"{"f":1000.0}"#);
        assert!(c("float", json!("NaN")).is_err());
        assert!(c("float", json!("inf")).is_err());
        assert!(c("float", json!("abc")).is_err());
        assert_eq!(c("boolean", json!("YES")).unwrap(), r#"{"f":true}"#);
        assert_eq!(c("boolean", json!("False")).unwrap(), r#"{"f":false}"#);
        assert_eq!(c("boolean", json!(1)).unwrap(), r#"{"f":true}"#);
        assert_eq!(c("boolean", json!("0")).unwrap(), r#"{"f":false}"#);
        assert!(c("boolean", json!(2)).is_err());
        assert!(c("boolean", json!("maybe")).is_err());
        assert_eq!(c("string", json!(12)).unwrap(), r#"{"f":"12"}"#);
        assert_eq!(c("string", json!(12.0)).unwrap(), r#"{"f":"12.0"}"#);
        assert_eq!(c("string", json!(true)).unwrap(), r#"{"f":"true"}"#);
        assert_eq!(c("string", json!([1, {"a": "b"}])).unwrap(), r#"{"f":"[1,{\"a\":\"b\"}]"}"#);
        let e = c("integer", json!("x1")).unwrap_err();
        assert_eq!(e, r#"cannot cast `f` to integer: string "x1" cannot convert"#);
    }

    #[test]
    fn rounding_half_away_from_zero() {
        let r = |v: serde_json::Value, d: i64| apply(&step("round", json!({"digits": d})), json!({"f": v}));
        assert_eq!(r(json!(2.5), 0).unwrap(), r#"{"f":3.0}"#);
        assert_eq!(r(json!(-2.5), 0).unwrap(), r#"{"f":-3.0}"#);
        assert_eq!(r(json!(1.005), 2).unwrap(), r#"{"f":1.01}"#);
        assert_eq!(r(json!(2.675), 2).unwrap(), r#"{"f":2.68}"#);
        assert_eq!(r(json!(9.995), 2).unwrap(), r#"{"f":10.0}"#);
        assert_eq!(r(json!(-0.4), 0).unwrap(), r#"{"f":-0.0}"#);
        assert_eq!(r(json!(3), 2).unwrap(), r#"{"f":3.0}"#);
        assert_eq!(r(json!(1234.5), -2).unwrap(), r#"{"f":1200.0}"#);
        assert_eq!(r(json!(0.1), 5).unwrap(), r#"{"f":0.1}"#);
        assert_eq!(r(json!(1e-7), 3).unwrap(), r#"{"f":0.0}"#);
        assert!(r(json!("2.5"), 0).unwrap_err().contains("needs a number"));
        assert_eq!(apply(&step("round", json!({})), json!({"f": 7.49})).unwrap(), r#"{"f":7.0}"#);
    }

    #[test]
    fn hashing() {
        let h = |p: serde_json::Value, v: serde_json::Value| apply(&step("hash", p), json!({"f": v})).unwrap();
        assert_eq!(h(json!({}), json!("abc")), r#"{"f":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}"#);
        assert_eq!(h(json!({"algorithm": "sha1"}), json!("abc")), r#"{"f":"a9993e364706816aba3e25717850c26c9cd0d89d"}"#);
        assert_eq!(h(json!({"algorithm": "md5"}), json!("abc")), r#"{"f":"900150983cd24fb0d6963f7d28e17f72"}"#);
        // Salt prepended: md5("ab" + "c") == md5("abc").
        assert_eq!(h(json!({"algorithm": "md5", "salt": "ab"}), json!("c")), r#"{"f":"900150983cd24fb0d6963f7d28e17f72"}"#);
        // A number hashes its JSON text: md5("12").
        assert_eq!(h(json!({"algorithm": "md5"}), json!(12)), r#"{"f":"c20ad4d76fe97759aa27a0c99bff6710"}"#);
    }

    #[test]
    fn masking_lookup_default_split() {
        assert_eq!(apply(&step("mask", json!({})), json!({"f": "4111111111111111"})).unwrap(), r#"{"f":"************1111"}"#);
        assert_eq!(apply(&step("mask", json!({"keep_last": 2})), json!({"f": 12345})).unwrap(), r#"{"f":"***45"}"#);
        let l = step("lookup", json!({"table": {"NY": "New York", "1": "one"}}));
        assert_eq!(apply(&l, json!({"f": "NY"})).unwrap(), r#"{"f":"New York"}"#);
        assert_eq!(apply(&l, json!({"f": 1})).unwrap(), r#"{"f":"one"}"#);
        assert_eq!(apply(&l, json!({"f": "XX"})).unwrap(), r#"{"f":"XX"}"#);
        let l = step("lookup", json!({"table": {"a": 1}, "default": null}));
        assert_eq!(apply(&l, json!({"f": "b"})).unwrap(), r#"{"f":null}"#);
        let d = step("default", json!({"value": "n/a"}));
        assert_eq!(apply(&d, json!({"a": 1})).unwrap(), r#"{"a":1,"f":"n/a"}"#);
        assert_eq!(apply(&d, json!({"f": null, "a": 1})).unwrap(), r#"{"f":"n/a","a":1}"#);
        assert_eq!(apply(&d, json!({"f": ""})).unwrap(), r#"{"f":""}"#);
        let d = step_on("x.y", "default", json!({"value": 0}));
        assert_eq!(apply(&d, json!({})).unwrap(), r#"{"x":{"y":0}}"#);
        assert!(apply(&d, json!({"x": 3})).is_err());
        assert_eq!(apply(&step("split", json!({})), json!({"f": "a,b,,c"})).unwrap(), r#"{"f":["a","b","","c"]}"#);
        assert_eq!(apply(&step("split", json!({"separator": " | "})), json!({"f": "a | b"})).unwrap(), r#"{"f":["a","b"]}"#);
        assert_eq!(apply(&step("split", json!({})), json!({"f": ""})).unwrap(), r#"{"f":[""]}"#);
    }

    #[test]
    fn empty_strings() {
        let e = json!({"f": ""});
        for op in ["title_case", "lowercase", "uppercase", "trim"] {
            assert_eq!(apply(&step(op, json!({})), e.clone()).unwrap(), r#"{"f":""}"#, "{op}");
        }
        assert!(apply(&step("format", json!({"regex": "x", "pattern": "y"})), e.clone()).is_err());
        assert_eq!(apply(&step("format", json!({"regex": "^$", "pattern": "(none)"})), e.clone()).unwrap(), r#"{"f":"(none)"}"#);
        assert_eq!(apply(&step("mask", json!({})), e.clone()).unwrap(), r#"{"f":""}"#);
        assert_eq!(
            apply(&step("hash", json!({})), e.clone()).unwrap(),
            r#"{"f":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}"#
        );
        assert_eq!(apply(&step("lookup", json!({"table": {"": "empty"}})), e.clone()).unwrap(), r#"{"f":"empty"}"#);
        assert!(apply(&step("cast", json!({"to": "float"})), e.clone()).is_err());
        assert!(apply(&step("cast", json!({"to": "boolean"})), e.clone()).is_err());
        assert!(apply(&step("round", json!({})), e.clone()).is_err());
        assert!(apply(&step("date_format", json!({})), e).is_err());
    }

    #[test]
    fn date_format_op() {
        let s = step("date_format", json!({"output_format": "%d.%m.%Y"}));
        assert_eq!(apply(&s, json!({"f": "2025-01-15T10:30:00Z"})).unwrap(), r#"{"f":"15.01.2025"}"#);
        assert!(apply(&s, json!({"f": "15/01/2025"})).unwrap_err().starts_with("`f`: `15/01/2025` is not an RFC 3339"));
    }
}
