//! The record value: JSON's data model with the distinctions dagg promises to keep.
//!
//! - A number written without a fraction or exponent is an `Int` (i64); any other is a
//!   `Float` (f64). Floats print in their shortest round-trip form and keep a `.0` when they
//!   have no fractional part, so a value reads back with the type it had.
//! - Objects keep the order of their fields ([`Map`]).
//! - Strings are [`Str`] (inline up to 24 bytes, so most field values never allocate).
//!
//! # Depth
//! No value is nested [`MAX_DEPTH`] levels deep or more (the record itself counting as one,
//! as serde_json counts its recursion limit). Every place that builds values from outside
//! data keeps to it: the file readers, scripts ([`depth`] on what they return),
//! deserialization (the visitors below count the levels they are in, whatever the format),
//! so the recursive walks over values (clone, drop, equality, serialization, the JSON writer,
//! conditions, masking, profiles) are bounded by it and cannot overflow a thread's stack.
//! Serialization checks the bound again and fails instead of recursing past it.

use std::cell::Cell;
use std::cmp::Ordering;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

pub use compact_str::CompactString as Str;

/// Values are nested fewer levels than this (a record with an object field is 2 deep); a
/// record nested this deep or deeper is refused where it is read, with [`depth_error`].
pub const MAX_DEPTH: usize = 128;

/// The reason given for a value nested too deep.
pub fn depth_error() -> String {
    format!("nested {MAX_DEPTH} levels deep or more (the limit on nesting)")
}

/// How many levels of arrays and objects `v` has (a scalar 0, `{}` 1, `{"a":[1]}` 2),
/// counted without recursion, stopping once `limit` is reached (so the walk costs at most
/// the values above that level).
pub fn depth(v: &Value, limit: usize) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(v, 1)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                deepest = deepest.max(d);
                if d >= limit {
                    return d;
                }
                stack.extend(a.iter().filter(|x| x.is_container()).map(|x| (x, d + 1)));
            }
            Value::Object(m) => {
                deepest = deepest.max(d);
                if d >= limit {
                    return d;
                }
                stack.extend(m.values().filter(|x| x.is_container()).map(|x| (x, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Whether a record (an object, level 1) is nested [`MAX_DEPTH`] levels deep or more.
pub fn too_deep(m: &Map) -> bool {
    m.values().filter(|v| v.is_container()).any(|v| depth(v, MAX_DEPTH - 1) + 1 >= MAX_DEPTH)
}

thread_local! {
    /// Levels of arrays and objects the deserializers on this thread are inside.
    static DE_DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The same for serializers.
    static SER_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// One level of nesting entered on this thread, left when dropped; `None` past the limit.
struct Level(&'static std::thread::LocalKey<Cell<usize>>);

impl Level {
    #[inline]
    fn enter(key: &'static std::thread::LocalKey<Cell<usize>>) -> Option<Level> {
        let d = key.with(|c| {
            let d = c.get() + 1;
            c.set(d);
            d
        });
        let level = Level(key);
        (d < MAX_DEPTH).then_some(level)
    }
}

impl Drop for Level {
    #[inline]
    fn drop(&mut self) {
        self.0.with(|c| c.set(c.get() - 1));
    }
}

/// One value of a record.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(Str),
    Array(Vec<Value>),
    Object(Map),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// An array or an object.
    #[inline]
    pub fn is_container(&self) -> bool {
        matches!(self, Value::Array(_) | Value::Object(_))
    }

    /// The JSON type name, for error messages: `null`, `boolean`, `integer`, `float`,
    /// `string`, `array`, `object`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut Map> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn is_number(&self) -> bool {
        matches!(self, Value::Int(_) | Value::Float(_))
    }

    /// The value's text: a string is itself; anything else is its compact JSON
    /// (`12`, `2.5`, `true`, `[1,2]`). This is what `hash`, `mask`, `lookup` and `concat` read.
    pub fn to_text(&self) -> String {
        match self {
            Value::String(s) => s.to_string(),
            other => other.to_json(),
        }
    }

    /// Compact JSON text.
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        crate::json::write_value(&mut out, self);
        // Safety: the writer copies strings whole and adds ASCII only.
        unsafe { String::from_utf8_unchecked(out) }
    }

    /// Equality as conditions see it: numbers compare numerically (`1` equals `1.0`), a number
    /// never equals a string, arrays and objects compare element-wise with the same rule.
    pub fn loose_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                num_cmp(self, other) == Some(Ordering::Equal)
            }
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.loose_eq(y))
            }
            (Value::Object(a), Value::Object(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v.loose_eq(w)))
            }
            _ => self == other,
        }
    }

    /// Order as conditions and `min`/`max` see it: numbers numerically, strings by code point,
    /// booleans false < true. Anything else (number against string, null, arrays, objects)
    /// has no order.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                num_cmp(self, other)
            }
            (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// Numeric comparison that is exact between an i64 and an f64 (no rounding of large ints).
fn num_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Int(x), Value::Float(y)) => int_float_cmp(*x, *y),
        (Value::Float(x), Value::Int(y)) => int_float_cmp(*y, *x).map(Ordering::reverse),
        _ => None,
    }
}

fn int_float_cmp(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // 2^63 as f64; every i64 is below it and at or above its negation.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f >= LIMIT {
        return Some(Ordering::Less);
    }
    if f < -LIMIT {
        return Some(Ordering::Greater);
    }
    let t = f.trunc();
    match i.cmp(&(t as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - t)),
        o => Some(o),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(Str::from(s))
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(Str::from(s))
    }
}
impl From<Str> for Value {
    fn from(s: Str) -> Self {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Object(m)
    }
}
impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Self {
        Value::Array(a)
    }
}

impl From<&serde_json::Value> for Value {
    fn from(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Value::String(Str::from(s.as_str())),
            serde_json::Value::Array(a) => Value::Array(a.iter().map(Value::from).collect()),
            serde_json::Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (Str::from(k.as_str()), Value::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&Value> for serde_json::Value {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.to_string()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Into::into).collect()),
            Value::Object(m) => serde_json::Value::Object(
                m.iter().map(|(k, v)| (k.to_string(), v.into())).collect(),
            ),
        }
    }
}

/// An ordered map of field name to value: a record, or an object inside one.
///
/// Fields keep their place: [`Map::insert`] replaces in place or appends, [`Map::rename`]
/// keeps the position, [`Map::remove`] closes the gap. Records are small (tens of fields),
/// so a vector with linear look-up beats hashing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Map {
    entries: Vec<(Str, Value)>,
}

impl Map {
    pub fn new() -> Self {
        Map { entries: Vec::new() }
    }

    pub fn with_capacity(n: usize) -> Self {
        Map { entries: Vec::with_capacity(n) }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn index_of(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k.as_str() == key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.index_of(key).is_some()
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.entries.iter_mut().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    }

    /// Sets `key`: in place when present (returning the old value), else at the end.
    pub fn insert(&mut self, key: impl Into<Str>, value: Value) -> Option<Value> {
        let key = key.into();
        match self.index_of(&key) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    /// Appends without looking for an existing key. The caller knows the key is new.
    pub fn push_unchecked(&mut self, key: impl Into<Str>, value: Value) {
        self.entries.push((key.into(), value));
    }

    /// The value for `key`, inserting `Null` at the end when absent.
    pub fn entry_mut(&mut self, key: &str) -> &mut Value {
        let i = match self.index_of(key) {
            Some(i) => i,
            None => {
                self.entries.push((Str::from(key), Value::Null));
                self.entries.len() - 1
            }
        };
        &mut self.entries[i].1
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.index_of(key).map(|i| self.entries.remove(i).1)
    }

    /// Renames `from` to `to`, keeping the field's position. A field already named `to`
    /// elsewhere is removed (the renamed value wins). Returns false when `from` is absent.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        let Some(i) = self.index_of(from) else {
            return false;
        };
        if from == to {
            return true;
        }
        if let Some(j) = self.index_of(to) {
            self.entries.remove(j);
            let i = if j < i { i - 1 } else { i };
            self.entries[i].0 = Str::from(to);
        } else {
            self.entries[i].0 = Str::from(to);
        }
        true
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Str, &Value)> + DoubleEndedIterator {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Str, &mut Value)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Str> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Value) -> bool) {
        self.entries.retain(|(k, v)| keep(k, v));
    }

    /// Replaces the field at `key` with several fields at the same position (used by
    /// renames that expand, and by `record_split`'s output placement).
    pub fn into_entries(self) -> Vec<(Str, Value)> {
        self.entries
    }
}

impl FromIterator<(Str, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (Str, Value)>>(iter: I) -> Self {
        let mut m = Map::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl IntoIterator for Map {
    type Item = (Str, Value);
    type IntoIter = std::vec::IntoIter<(Str, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(v) => s.serialize_str(v),
            Value::Array(a) => {
                let Some(_level) = Level::enter(&SER_DEPTH) else {
                    return Err(serde::ser::Error::custom(depth_error()));
                };
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Object(m) => m.serialize(s),
        }
    }
}

impl Serialize for Map {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some(_level) = Level::enter(&SER_DEPTH) else {
            return Err(serde::ser::Error::custom(depth_error()));
        };
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Deserialize::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        // Past i64::MAX an integer cannot be kept exactly; it becomes the nearest float.
        Ok(i64::try_from(u).map(Value::Int).unwrap_or(Value::Float(u as f64)))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(Str::from(s)))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(Str::from(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let Some(_level) = Level::enter(&DE_DEPTH) else {
            return Err(de::Error::custom(depth_error()));
        };
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        MapVisitor.visit_map(map).map(Value::Object)
    }
}

struct MapVisitor;

impl<'de> Visitor<'de> for MapVisitor {
    type Value = Map;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Map, A::Error> {
        let Some(_level) = Level::enter(&DE_DEPTH) else {
            return Err(de::Error::custom(depth_error()));
        };
        // Room for a few more fields than the input has: pipelines usually add some
        // (`total_price`, `processed_timestamp`), and growing the vector then would copy it.
        let mut out = Map::with_capacity(map.size_hint().unwrap_or(8).min(256) + 4);
        // A repeated key keeps its first place and its last value, as JSON parsers do. Keys
        // are nearly always distinct, so a 64-bit filter of what was seen spares the scan
        // for all but the keys that might repeat.
        let mut seen: u64 = 0;
        while let Some(k) = map.next_key::<KeyStr>()? {
            let v: Value = map.next_value()?;
            let bit = 1u64 << (key_hash(k.0.as_bytes()) & 63);
            if seen & bit == 0 {
                seen |= bit;
                out.push_unchecked(k.0, v);
            } else {
                out.insert(k.0, v);
            }
        }
        Ok(out)
    }
}

/// A cheap hash of a key for the duplicate filter: its length and a few bytes.
#[inline]
pub(crate) fn key_hash(k: &[u8]) -> u32 {
    let n = k.len() as u32;
    let first = k.first().copied().unwrap_or(0) as u32;
    let last = k.last().copied().unwrap_or(0) as u32;
    let mid = k.get(k.len() / 2).copied().unwrap_or(0) as u32;
    n.wrapping_mul(31) ^ first.wrapping_mul(7) ^ last.wrapping_mul(13) ^ mid.wrapping_mul(17)
}

/// A map key read straight into a [`Str`] without an intermediate `String`.
struct KeyStr(Str);

impl<'de> Deserialize<'de> for KeyStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<KeyStr, E> {
                Ok(KeyStr(Str::from(s)))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<KeyStr, E> {
                Ok(KeyStr(Str::from(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl<'de> Deserialize<'de> for Map {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Map, D::Error> {
        d.deserialize_map(MapVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    /// An object nested `levels` deep, built without recursion.
    fn nested(levels: usize) -> Value {
        let mut v = Value::Int(1);
        for _ in 0..levels {
            v = Value::Object([(Str::from("a"), v)].into_iter().collect());
        }
        v
    }

    #[test]
    fn depth_counts_levels_and_stops_at_its_limit() {
        assert_eq!(depth(&Value::Int(1), usize::MAX), 0);
        assert_eq!(depth(&parse(r#"{"a":[1,{"b":{}}],"c":2}"#), usize::MAX), 4);
        assert_eq!(depth(&nested(500), usize::MAX), 500);
        assert_eq!(depth(&nested(500), 10), 10);
        let Value::Object(m) = nested(MAX_DEPTH - 1) else { unreachable!() };
        assert!(!too_deep(&m));
        let Value::Object(m) = nested(MAX_DEPTH) else { unreachable!() };
        assert!(too_deep(&m));
        std::mem::forget(m);
    }

    #[test]
    fn every_deserializer_refuses_values_nested_past_the_limit() {
        let text = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(serde_json::from_str::<Value>(&text(MAX_DEPTH - 1)).is_ok());
        // sonic-rs alone would go to 255 levels; the visitor stops it at the limit.
        let e = sonic_rs::from_str::<Value>(&text(200)).unwrap_err().to_string();
        assert!(e.contains(&depth_error()), "{e}");
        let e = sonic_rs::from_str::<Map>(&format!("{{\"a\":{}}}", text(MAX_DEPTH - 1))).unwrap_err().to_string();
        assert!(e.contains(&depth_error()), "{e}");
        assert!(sonic_rs::from_str::<Map>(&format!("{{\"a\":{}}}", text(MAX_DEPTH - 2))).is_ok());
        // The count is per thread and goes back to zero after an error.
        assert!(sonic_rs::from_str::<Value>(&text(MAX_DEPTH - 1)).is_ok());
    }

    #[test]
    fn serializing_a_value_nested_past_the_limit_fails_instead_of_recursing() {
        let deep = nested(100_000);
        let e = serde_json::to_string(&deep).unwrap_err().to_string();
        assert!(e.contains(&depth_error()), "{e}");
        assert!(serde_json::to_string(&nested(MAX_DEPTH - 1)).is_ok());
        // Never built by dagg (every reader refuses it); dropping it would recurse.
        std::mem::forget(deep);
    }

    #[test]
    fn integers_and_floats_keep_their_type() {
        assert_eq!(parse("3"), Value::Int(3));
        assert_eq!(parse("3.0"), Value::Float(3.0));
        assert_eq!(parse("2.5e0"), Value::Float(2.5));
        assert_eq!(parse("3.0").to_json(), "3.0");
        assert_eq!(Value::Float(9.99 * 3.0).to_json(), "29.97");
        assert_eq!(Value::Float(12.0).to_json(), "12.0");
        assert_eq!(parse("18446744073709551615").type_name(), "float");
    }

    #[test]
    fn objects_keep_field_order() {
        let v = parse(r#"{"b":1,"a":2,"c":{"z":1,"y":2}}"#);
        assert_eq!(v.to_json(), r#"{"b":1,"a":2,"c":{"z":1,"y":2}}"#);
    }

    #[test]
    fn repeated_key_keeps_first_place_last_value() {
        assert_eq!(parse(r#"{"a":1,"b":2,"a":3}"#).to_json(), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn rename_keeps_position() {
        let Value::Object(mut m) = parse(r#"{"a":1,"b":2,"c":3}"#) else { panic!() };
        assert!(m.rename("b", "x"));
        assert_eq!(Value::Object(m.clone()).to_json(), r#"{"a":1,"x":2,"c":3}"#);
        assert!(m.rename("x", "a"));
        assert_eq!(Value::Object(m.clone()).to_json(), r#"{"a":2,"c":3}"#);
        assert!(!m.rename("nope", "y"));
    }

    #[test]
    fn loose_equality_and_order() {
        assert!(Value::Int(1).loose_eq(&Value::Float(1.0)));
        assert!(!Value::Int(100).loose_eq(&Value::from("100")));
        assert_eq!(Value::Int(2).compare(&Value::Float(1.5)), Some(Ordering::Greater));
        assert_eq!(Value::Int(i64::MAX).compare(&Value::Float(9.3e18)), Some(Ordering::Less));
        assert_eq!(Value::from("b").compare(&Value::from("a")), Some(Ordering::Greater));
        assert_eq!(Value::Int(1).compare(&Value::from("1")), None);
        assert_eq!(Value::Null.compare(&Value::Null), None);
    }

    #[test]
    fn text_form() {
        assert_eq!(Value::from("x y").to_text(), "x y");
        assert_eq!(Value::Int(12).to_text(), "12");
        assert_eq!(parse(r#"[1, "a", null]"#).to_text(), r#"[1,"a",null]"#);
    }

    proptest::proptest! {
        #[test]
        fn floats_round_trip(f in proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL) {
            let text = Value::Float(f).to_json();
            let back: Value = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(back, Value::Float(f));
        }

        #[test]
        fn ints_round_trip(i in proptest::num::i64::ANY) {
            let back: Value = serde_json::from_str(&Value::Int(i).to_json()).unwrap();
            proptest::prop_assert_eq!(back, Value::Int(i));
        }
    }
}
