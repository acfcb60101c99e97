//! Keys for grouping, joining, `count_distinct` and deduplication, equal as conditions see
//! values (`1` equals `1.0`, never `"1"`).
//!
//! A key is hashed with a hash that agrees with [`Value::loose_eq`] (an integral float hashes
//! as the integer; an object's fields hash in any order), and [`KeyIndex`] resolves
//! collisions by comparing with `loose_eq`. Looking a key up therefore never allocates: the
//! record's values are hashed where they lie.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use dagg_model::{FieldPath, Record, Value};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// A small multiply-rotate hasher for keys that are already well-mixed u64s (our own key
/// hashes) and for short byte strings.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
        self.add(bytes.len() as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // A final avalanche so that nearby keys spread over the table.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

pub(crate) type FastBuild = BuildHasherDefault<FastHasher>;

/// The hash of `v` under loose equality.
pub(crate) fn hash_value(v: &Value, h: &mut FastHasher) {
    match v {
        Value::Null => h.add(1),
        Value::Bool(b) => h.add(2 + *b as u64),
        Value::Int(i) => {
            h.add(4);
            h.add(*i as u64);
        }
        Value::Float(f) => {
            // Integral floats within i64 equal the integer with the same value.
            if f.fract() == 0.0 && *f >= -9_223_372_036_854_775_808.0 && *f < 9_223_372_036_854_775_808.0 {
                h.add(4);
                h.add(*f as i64 as u64);
            } else {
                h.add(5);
                h.add(if f.is_nan() { u64::MAX } else { f.to_bits() });
            }
        }
        Value::String(s) => {
            h.add(6);
            h.write(s.as_bytes());
        }
        Value::Array(a) => {
            h.add(7);
            h.add(a.len() as u64);
            for x in a {
                hash_value(x, h);
            }
        }
        Value::Object(m) => {
            // loose_eq ignores field order, so entries combine commutatively.
            let mut acc = 0u64;
            for (k, x) in m.iter() {
                let mut eh = FastHasher::default();
                eh.write(k.as_bytes());
                hash_value(x, &mut eh);
                acc = acc.wrapping_add(eh.finish());
            }
            h.add(8);
            h.add(m.len() as u64);
            h.add(acc);
        }
    }
}

static NULL: Value = Value::Null;

/// The values of `fields` in `record` (a missing field is null) and their combined hash.
pub(crate) fn key_of<'r>(fields: &[FieldPath], record: &'r Record, buf: &mut Vec<&'r Value>) -> u64 {
    buf.clear();
    let mut h = FastHasher::default();
    for f in fields {
        let v = f.get(record).unwrap_or(&NULL);
        hash_value(v, &mut h);
        buf.push(v);
    }
    h.finish()
}

/// The hash [`key_of`] gives for a record with these key values.
pub(crate) fn hash_key(key: &[Value]) -> u64 {
    let mut h = FastHasher::default();
    for v in key {
        hash_value(v, &mut h);
    }
    h.finish()
}

/// The hash of a single value.
pub(crate) fn hash_one(v: &Value) -> u64 {
    let mut h = FastHasher::default();
    hash_value(v, &mut h);
    h.finish()
}

/// Assigns dense slot numbers (0, 1, 2, … in order of first appearance) to keys.
///
/// Each slot stores its key's values (the first ones seen) to resolve hash collisions.
#[derive(Default, Clone)]
pub(crate) struct KeyIndex {
    heads: HashMap<u64, u32, FastBuild>,
    /// Per slot: the next slot with the same hash (`u32::MAX` ends the chain).
    next: Vec<u32>,
    keys: Vec<Vec<Value>>,
}

const END: u32 = u32::MAX;

impl KeyIndex {
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key values of `slot`.
    pub(crate) fn key(&self, slot: usize) -> &[Value] {
        &self.keys[slot]
    }

    pub(crate) fn find<V: Borrow<Value>>(&self, hash: u64, key: &[V]) -> Option<usize> {
        let mut s = *self.heads.get(&hash)?;
        while s != END {
            let stored = &self.keys[s as usize];
            if stored.len() == key.len() && stored.iter().zip(key).all(|(a, b)| a.loose_eq(b.borrow())) {
                return Some(s as usize);
            }
            s = self.next[s as usize];
        }
        None
    }

    /// The slot of `key`, and whether it was new.
    pub(crate) fn find_or_insert(&mut self, hash: u64, key: &[&Value]) -> (usize, bool) {
        if let Some(s) = self.find(hash, key) {
            return (s, false);
        }
        (self.push(hash, key.iter().map(|v| (*v).clone()).collect()), true)
    }

    /// Adds `key` (whose hash is `hash`) as the next slot, unless a loosely equal key is
    /// there already (`None`). For restoring a snapshot, which lists keys in slot order.
    pub(crate) fn insert_new(&mut self, hash: u64, key: Vec<Value>) -> Option<usize> {
        match self.find(hash, &key) {
            Some(_) => None,
            None => Some(self.push(hash, key)),
        }
    }

    fn push(&mut self, hash: u64, key: Vec<Value>) -> usize {
        let slot = self.keys.len() as u32;
        let head = self.heads.entry(hash).or_insert(END);
        self.next.push(*head);
        *head = slot;
        self.keys.push(key);
        slot as usize
    }

    /// Forgets every key.
    pub(crate) fn clear(&mut self) {
        self.heads.clear();
        self.next.clear();
        self.keys.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn loosely_equal_values_hash_alike() {
        for (a, b) in [("1", "1.0"), ("-0.0", "0"), ("[1, 2.0]", "[1.0, 2]"), (r#"{"a":1,"b":2}"#, r#"{"b":2.0,"a":1}"#)] {
            let (a, b) = (v(a), v(b));
            assert!(a.loose_eq(&b));
            assert_eq!(hash_one(&a), hash_one(&b), "{a} {b}");
        }
        assert_ne!(hash_one(&v("1")), hash_one(&v("\"1\"")));
        assert_ne!(hash_one(&v("1.5")), hash_one(&v("1")));
    }

    #[test]
    fn index_orders_by_first_appearance_and_survives_collisions() {
        let mut idx = KeyIndex::default();
        let (a, b) = (v("\"a\""), v("\"b\""));
        // The same hash for different keys: the chain tells them apart.
        assert_eq!(idx.find_or_insert(7, &[&a]), (0, true));
        assert_eq!(idx.find_or_insert(7, &[&b]), (1, true));
        assert_eq!(idx.find_or_insert(7, &[&a]), (0, false));
        assert_eq!(idx.find(7, &[&b]), Some(1));
        assert_eq!(idx.find(8, &[&b]), None);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.key(1), std::slice::from_ref(&b));
        assert_eq!(idx.insert_new(7, vec![b]), None);
        assert_eq!(idx.insert_new(hash_key(&[v("2")]), vec![v("2")]), Some(2));
        assert_eq!(idx.find(hash_one(&v("2.0")), &[v("2.0")]), Some(2), "hash_key agrees with hash_one");
    }
}
