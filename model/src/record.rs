//! Records, field paths, positions and batches.
//!
//! A record is an ordered [`Map`]. A [`FieldPath`] (`address.city`, `items.0.sku`) is parsed
//! once when a pipeline is compiled and then walks records without re-parsing. Records move
//! through the runtime in [`Batch`]es, each record paired with the [`Position`] it came from
//! so that a failure anywhere can name its origin.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::value::{Map, Str, Value};

/// A record: an ordered map of field name to value.
pub type Record = Map;

/// A dotted field reference, resolved once. A segment that is a decimal number also
/// indexes into an array (`items.0.sku`); on an object it is an ordinary key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldPath {
    text: Str,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Segment {
    key: Str,
    index: Option<usize>,
}

/// Why a value could not be written at a path.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PathError {
    #[error("cannot set `{path}`: `{parent}` is {kind}, not an object")]
    NotAnObject { path: String, parent: String, kind: &'static str },
}

impl FieldPath {
    /// Parses `a.b.c`. Empty segments (`a..b`, a leading or trailing dot) are an error.
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        if text.is_empty() {
            return Err("a field name may not be empty".into());
        }
        let mut segments = Vec::new();
        for part in text.split('.') {
            if part.is_empty() {
                return Err(format!("`{text}` has an empty segment; write fields as `a.b.c`"));
            }
            let index = if part.bytes().all(|b| b.is_ascii_digit()) {
                part.parse().ok()
            } else {
                None
            };
            segments.push(Segment { key: Str::from(part), index });
        }
        Ok(FieldPath { text: Str::from(text), segments })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for a plain top-level name (no dots).
    pub fn is_simple(&self) -> bool {
        self.segments.len() == 1
    }

    /// The last segment's name (the field a rename or an addition creates).
    pub fn leaf(&self) -> &str {
        &self.segments.last().expect("a path has a segment").key
    }

    /// The value at this path, or `None` when any step is missing or not a container.
    pub fn get<'a>(&self, record: &'a Record) -> Option<&'a Value> {
        let (first, rest) = self.segments.split_first()?;
        let mut cur = record.get(&first.key)?;
        for seg in rest {
            cur = step(cur, seg)?;
        }
        Some(cur)
    }

    pub fn get_mut<'a>(&self, record: &'a mut Record) -> Option<&'a mut Value> {
        let (first, rest) = self.segments.split_first()?;
        let mut cur = record.get_mut(&first.key)?;
        for seg in rest {
            cur = match cur {
                Value::Object(m) => m.get_mut(&seg.key)?,
                Value::Array(a) => a.get_mut(seg.index?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Sets the value at this path. Missing objects on the way are created; a step through
    /// a value that is not an object (or an array with that index) is an error.
    pub fn set(&self, record: &mut Record, value: Value) -> Result<(), PathError> {
        let (last, parents) = self.segments.split_last().expect("a path has a segment");
        let mut cur = record;
        for (depth, seg) in parents.iter().enumerate() {
            let slot = cur.entry_mut(&seg.key);
            if slot.is_null() {
                *slot = Value::Object(Map::new());
            }
            cur = match slot {
                Value::Object(m) => m,
                other => {
                    return Err(PathError::NotAnObject {
                        path: self.text.to_string(),
                        parent: self.prefix(depth + 1),
                        kind: other.type_name(),
                    });
                }
            };
        }
        cur.insert(last.key.clone(), value);
        Ok(())
    }

    /// Removes the value at this path and returns it.
    pub fn remove(&self, record: &mut Record) -> Option<Value> {
        let (last, parents) = self.segments.split_last()?;
        let mut cur = record;
        for seg in parents {
            cur = cur.get_mut(&seg.key)?.as_object_mut()?;
        }
        cur.remove(&last.key)
    }

    /// The object that holds the leaf, when it exists.
    pub fn parent_mut<'a>(&self, record: &'a mut Record) -> Option<&'a mut Map> {
        let (_, parents) = self.segments.split_last()?;
        let mut cur = record;
        for seg in parents {
            cur = cur.get_mut(&seg.key)?.as_object_mut()?;
        }
        Some(cur)
    }

    fn prefix(&self, n: usize) -> String {
        self.segments[..n].iter().map(|s| s.key.as_str()).collect::<Vec<_>>().join(".")
    }
}

fn step<'a>(v: &'a Value, seg: &Segment) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(&seg.key),
        Value::Array(a) => a.get(seg.index?),
        _ => None,
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for FieldPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FieldPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where a record came from, in the source's own terms. Kept small (16 bytes) because every
/// record carries one: `unit` is the file (index into the source's file list) or partition,
/// `seq` the line number or offset. The source connector turns it into JSON for people
/// (`{"file": "orders.jsonl", "line": 42}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    pub unit: u32,
    pub seq: u64,
}

/// Records moving between stages, each with its position.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub records: Vec<Record>,
    /// Same length as `records`, or empty when positions are not tracked (records made
    /// by a stateful step, such as aggregates, have no single origin).
    pub positions: Vec<Position>,
    /// Names of the units `Position::unit` indexes (file paths, partitions).
    pub units: Option<Arc<Vec<String>>>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.records.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(s: &str) -> Record {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn get_nested_and_array_paths() {
        let r = rec(r#"{"a":{"b":[{"c":1},{"c":2}]},"0":"zero"}"#);
        assert_eq!(FieldPath::parse("a.b.1.c").unwrap().get(&r), Some(&Value::Int(2)));
        assert_eq!(FieldPath::parse("0").unwrap().get(&r), Some(&Value::from("zero")));
        assert_eq!(FieldPath::parse("a.x").unwrap().get(&r), None);
        assert_eq!(FieldPath::parse("a.b.c").unwrap().get(&r), None);
        assert_eq!(FieldPath::parse("a.b.9.c").unwrap().get(&r), None);
    }

    #[test]
    fn bad_paths_are_rejected() {
        assert!(FieldPath::parse("").is_err());
        assert!(FieldPath::parse("a..b").is_err());
        assert!(FieldPath::parse(".a").is_err());
    }

    #[test]
    fn set_creates_objects_and_refuses_scalars() {
        let mut r = rec(r#"{"x":1}"#);
        FieldPath::parse("a.b").unwrap().set(&mut r, Value::Int(5)).unwrap();
        assert_eq!(Value::Object(r.clone()).to_json(), r#"{"x":1,"a":{"b":5}}"#);
        let err = FieldPath::parse("x.y").unwrap().set(&mut r, Value::Null).unwrap_err();
        assert!(err.to_string().contains("`x` is integer"), "{err}");
    }

    #[test]
    fn remove_nested() {
        let mut r = rec(r#"{"a":{"b":1,"c":2}}"#);
        assert_eq!(FieldPath::parse("a.b").unwrap().remove(&mut r), Some(Value::Int(1)));
        assert_eq!(Value::Object(r).to_json(), r#"{"a":{"c":2}}"#);
    }
}
