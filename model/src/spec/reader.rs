//! A small reader over a parsed document that collects every error with its path.
//!
//! serde stops at the first error; a user fixing a pipeline wants all of them. The document
//! is first parsed (JSON or YAML) into a `serde_json::Value` that keeps key order, then read
//! with [`Obj`]: each getter checks a key's type and records a [`SpecError`](crate::SpecError)
//! at `path.key` when it is wrong, returning `None` so reading goes on. Keys an object does
//! not allow are reported once, when the object is opened.
//!
//! For leaf shapes that are plain data, [`Obj::parse`] hands the value to serde
//! (`deny_unknown_fields` structs) and maps serde's message and inner path onto ours.

use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::error::{SpecErrors, index, join};
use crate::record::FieldPath;
use crate::value::Value;

/// The name of a JSON value's type, as messages say it.
pub fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

/// An object being read, with the path it sits at.
pub struct Obj<'a> {
    pub path: String,
    pub map: &'a serde_json::Map<String, Json>,
}

impl<'a> Obj<'a> {
    /// Opens `v` as an object that may hold only `allowed` keys. Reports a non-object, and
    /// every key not in `allowed`, at once.
    pub fn open(v: &'a Json, path: &str, allowed: &[&str], errs: &mut SpecErrors) -> Option<Obj<'a>> {
        let Json::Object(map) = v else {
            errs.push(path, format!("expected an object, found {}", json_type(v)));
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                errs.push(join(path, key), format!("unknown field `{key}`; expected one of: {}", allowed.join(", ")));
            }
        }
        Some(Obj { path: path.to_string(), map })
    }

    /// Opens `v` as an object without restricting its keys (free-form maps).
    pub fn open_any(v: &'a Json, path: &str, errs: &mut SpecErrors) -> Option<Obj<'a>> {
        match v {
            Json::Object(map) => Some(Obj { path: path.to_string(), map }),
            _ => {
                errs.push(path, format!("expected an object, found {}", json_type(v)));
                None
            }
        }
    }

    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The raw value of `key`, when present and not null.
    pub fn get(&self, key: &str) -> Option<&'a Json> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn missing(&self, key: &str, what: &str, errs: &mut SpecErrors) {
        errs.push(self.at(key), format!("required field `{key}` is missing ({what})"));
    }

    pub fn str(&self, key: &str, errs: &mut SpecErrors) -> Option<&'a str> {
        match self.get(key)? {
            Json::String(s) => Some(s.as_str()),
            other => {
                errs.push(self.at(key), format!("expected a string, found {}", json_type(other)));
                None
            }
        }
    }

    pub fn req_str(&self, key: &str, errs: &mut SpecErrors) -> Option<&'a str> {
        if !self.has(key) {
            self.missing(key, "a string", errs);
            return None;
        }
        self.str(key, errs)
    }

    /// A string that must be one of `choices`.
    pub fn choice(&self, key: &str, choices: &[&str], errs: &mut SpecErrors) -> Option<&'a str> {
        let s = self.str(key, errs)?;
        if choices.contains(&s) {
            Some(s)
        } else {
            errs.push(self.at(key), format!("unknown value `{s}`; expected one of: {}", choices.join(", ")));
            None
        }
    }

    pub fn bool(&self, key: &str, errs: &mut SpecErrors) -> Option<bool> {
        match self.get(key)? {
            Json::Bool(b) => Some(*b),
            other => {
                errs.push(self.at(key), format!("expected true or false, found {}", json_type(other)));
                None
            }
        }
    }

    /// A whole number within `min..=max`.
    pub fn int(&self, key: &str, min: i64, max: i64, errs: &mut SpecErrors) -> Option<i64> {
        let v = self.get(key)?;
        match v.as_i64() {
            Some(i) if (min..=max).contains(&i) => Some(i),
            Some(i) => {
                errs.push(self.at(key), format!("{i} is out of range; expected a whole number from {min} to {max}"));
                None
            }
            None => {
                errs.push(self.at(key), format!("expected a whole number, found {}", json_type(v)));
                None
            }
        }
    }

    pub fn number(&self, key: &str, errs: &mut SpecErrors) -> Option<f64> {
        let v = self.get(key)?;
        match v.as_f64() {
            Some(f) => Some(f),
            None => {
                errs.push(self.at(key), format!("expected a number, found {}", json_type(v)));
                None
            }
        }
    }

    /// Any value, as a record value (literals in `field_addition`, `equals`, …).
    pub fn value(&self, key: &str) -> Option<Value> {
        self.map.get(key).map(Value::from)
    }

    /// A field reference (`address.city`).
    pub fn field(&self, key: &str, errs: &mut SpecErrors) -> Option<FieldPath> {
        let s = self.str(key, errs)?;
        match FieldPath::parse(s) {
            Ok(p) => Some(p),
            Err(m) => {
                errs.push(self.at(key), m);
                None
            }
        }
    }

    pub fn req_field(&self, key: &str, errs: &mut SpecErrors) -> Option<FieldPath> {
        if !self.has(key) {
            self.missing(key, "a field name", errs);
            return None;
        }
        self.field(key, errs)
    }

    /// A list whose elements are read by `each(element, path, errs)`.
    pub fn list<T>(
        &self,
        key: &str,
        errs: &mut SpecErrors,
        mut each: impl FnMut(&'a Json, &str, &mut SpecErrors) -> Option<T>,
    ) -> Option<Vec<T>> {
        match self.get(key)? {
            Json::Array(items) => {
                let base = self.at(key);
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match each(item, &index(&base, i), errs) {
                        Some(t) => out.push(t),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            other => {
                errs.push(self.at(key), format!("expected a list, found {}", json_type(other)));
                None
            }
        }
    }

    pub fn str_list(&self, key: &str, errs: &mut SpecErrors) -> Option<Vec<String>> {
        self.list(key, errs, |v, path, errs| match v {
            Json::String(s) => Some(s.clone()),
            other => {
                errs.push(path, format!("expected a string, found {}", json_type(other)));
                None
            }
        })
    }

    pub fn field_list(&self, key: &str, errs: &mut SpecErrors) -> Option<Vec<FieldPath>> {
        self.list(key, errs, |v, path, errs| match v {
            Json::String(s) => FieldPath::parse(s).map_err(|m| errs.push(path, m)).ok(),
            other => {
                errs.push(path, format!("expected a field name, found {}", json_type(other)));
                None
            }
        })
    }

    /// Reads `key` with serde into `T` (a `deny_unknown_fields` struct), reporting serde's
    /// message at the exact inner path.
    pub fn parse<T: DeserializeOwned>(&self, key: &str, errs: &mut SpecErrors) -> Option<T> {
        let v = self.map.get(key)?;
        parse_json(v, &self.at(key), errs)
    }
}

/// Reads `v` with serde into `T`, reporting an error at `path` plus serde's inner path.
pub fn parse_json<T: DeserializeOwned>(v: &Json, path: &str, errs: &mut SpecErrors) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner == "." || inner.is_empty() {
                path.to_string()
            } else if inner.starts_with('[') || path.is_empty() {
                format!("{path}{inner}")
            } else {
                format!("{path}.{inner}")
            };
            errs.push(full, e.into_inner().to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_unknown_keys_and_wrong_types_together() {
        let v: Json = serde_json::json!({"a": 1, "b": "x", "zzz": true});
        let mut errs = SpecErrors::new();
        let o = Obj::open(&v, "root", &["a", "b"], &mut errs).unwrap();
        assert_eq!(o.str("a", &mut errs), None);
        assert_eq!(o.str("b", &mut errs), Some("x"));
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["root.zzz", "root.a"]);
    }

    #[test]
    fn serde_inner_paths_are_joined() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            size: u32,
        }
        let v: Json = serde_json::json!({"w": {"size": "big"}});
        let mut errs = SpecErrors::new();
        let o = Obj::open(&v, "x", &["w"], &mut errs).unwrap();
        assert!(o.parse::<Inner>("w", &mut errs).is_none());
        assert_eq!(errs.0[0].path, "x.w.size");
    }
}
