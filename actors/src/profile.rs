//! Per-field data profiles of the records a run delivers, and schema evolution against an
//! earlier profile.
//!
//! The sink stage feeds every delivered batch to a [`Profiler`] (only when the run has a
//! [`RunTap`](crate::tap::RunTap): `dagg run` pays nothing). Per top-level field it keeps the
//! records that had it, its nulls, the count of each JSON type, numeric and text min/max, a
//! distinct estimate (exact up to [`EXACT_DISTINCT`] values, then a HyperLogLog of 2^10
//! registers, about 3% error) and the most frequent values (exact while fewer than
//! [`TOP_CAPACITY`] distinct values were seen; after that new values are no longer counted,
//! so the top list is of the values seen early). Memory per field is bounded: about 1 KiB of
//! registers, the exact set until it is dropped, and the capped value counts.
//!
//! A profile becomes a [`Profile`] (plain data, serde) which is what the API stores per run,
//! and [`compare`] tells the new, missing and re-typed fields against a previous one.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use dagg_model::{Record, Value};
use dagg_model::value::MAX_DEPTH;
use serde::{Deserialize, Serialize};

/// Distinct values counted exactly (by hash) before the estimate takes over.
pub const EXACT_DISTINCT: usize = 1024;
/// Distinct values whose frequency is counted.
pub const TOP_CAPACITY: usize = 1000;
/// Values shown in [`FieldProfile::top_values`].
pub const TOP_SHOWN: usize = 5;
const HLL_BITS: u32 = 10;
const HLL_REGISTERS: usize = 1 << HLL_BITS;

/// The JSON types a value can have, in [`Value::type_name`] spelling.
const TYPES: [&str; 7] = [
    "null", "boolean", "integer", "float", "string", "array", "object",
];

fn type_index(v: &Value) -> usize {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int(_) => 2,
        Value::Float(_) => 3,
        Value::String(_) => 4,
        Value::Array(_) => 5,
        Value::Object(_) => 6,
    }
}

/// A stable 64-bit hash of a value (SipHash with fixed keys); `1` and `1.0` differ. Values
/// are nested fewer than [`MAX_DEPTH`] levels (every reader refuses deeper ones); the walk
/// stops there all the same, so it never depends on that for its stack.
fn hash_value(v: &Value) -> u64 {
    fn feed(v: &Value, h: &mut std::hash::DefaultHasher, level: usize) {
        type_index(v).hash(h);
        if level >= MAX_DEPTH {
            return;
        }
        match v {
            Value::Null => {}
            Value::Bool(b) => b.hash(h),
            Value::Int(i) => i.hash(h),
            Value::Float(f) => f.to_bits().hash(h),
            Value::String(s) => s.as_bytes().hash(h),
            Value::Array(a) => {
                a.len().hash(h);
                for x in a {
                    feed(x, h, level + 1);
                }
            }
            Value::Object(m) => {
                m.len().hash(h);
                for (k, x) in m.iter() {
                    k.as_bytes().hash(h);
                    feed(x, h, level + 1);
                }
            }
        }
    }
    let mut h = std::hash::DefaultHasher::new();
    feed(v, &mut h, 1);
    h.finish()
}

/// HyperLogLog with 2^10 one-byte registers.
#[derive(Clone, Debug)]
struct Hll {
    registers: Vec<u8>,
}

impl Hll {
    fn new() -> Hll {
        Hll {
            registers: vec![0; HLL_REGISTERS],
        }
    }

    fn add(&mut self, hash: u64) {
        let idx = (hash >> (64 - HLL_BITS)) as usize;
        // Rank of the first 1 bit in the remaining bits (1-based), capped.
        let rest = (hash << HLL_BITS) | (1 << (HLL_BITS - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        if rank > self.registers[idx] {
            self.registers[idx] = rank;
        }
    }

    fn merge(&mut self, other: &Hll) {
        for (a, b) in self.registers.iter_mut().zip(&other.registers) {
            *a = (*a).max(*b);
        }
    }

    fn estimate(&self) -> f64 {
        let m = HLL_REGISTERS as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self.registers.iter().map(|&r| 2f64.powi(-(r as i32))).sum();
        let raw = alpha * m * m / sum;
        let zeros = self.registers.iter().filter(|&&r| r == 0).count();
        if raw <= 2.5 * m && zeros > 0 {
            // Small range: linear counting is far more accurate.
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }
}

/// Running statistics of one field.
#[derive(Clone, Debug)]
struct FieldStats {
    /// Records that had the field (null included).
    present: u64,
    types: [u64; 7],
    num_min: Option<f64>,
    num_max: Option<f64>,
    text_min: Option<String>,
    text_max: Option<String>,
    exact: Option<HashSet<u64>>,
    hll: Hll,
    top: HashMap<String, u64>,
    top_saturated: bool,
}

impl FieldStats {
    fn new() -> FieldStats {
        FieldStats {
            present: 0,
            types: [0; 7],
            num_min: None,
            num_max: None,
            text_min: None,
            text_max: None,
            exact: Some(HashSet::new()),
            hll: Hll::new(),
            top: HashMap::new(),
            top_saturated: false,
        }
    }

    fn observe(&mut self, v: &Value) {
        self.present += 1;
        self.types[type_index(v)] += 1;
        if v.is_null() {
            return;
        }
        let h = hash_value(v);
        self.hll.add(h);
        if let Some(set) = &mut self.exact {
            set.insert(h);
            if set.len() > EXACT_DISTINCT {
                self.exact = None;
            }
        }
        match v {
            Value::Int(_) | Value::Float(_) => {
                let f = v.as_f64().unwrap_or(f64::NAN);
                if !f.is_nan() {
                    self.num_min = Some(self.num_min.map_or(f, |m| m.min(f)));
                    self.num_max = Some(self.num_max.map_or(f, |m| m.max(f)));
                }
            }
            Value::String(s) => {
                let s = s.as_str();
                if self.text_min.as_deref().is_none_or(|m| s < m) {
                    self.text_min = Some(s.to_string());
                }
                if self.text_max.as_deref().is_none_or(|m| s > m) {
                    self.text_max = Some(s.to_string());
                }
            }
            _ => {}
        }
        if matches!(v, Value::Array(_) | Value::Object(_)) {
            return;
        }
        // Strings (the common case) are looked up without allocating; a key is made only
        // for a value not counted yet.
        let json;
        let key: &str = match v {
            Value::String(s) => s.as_str(),
            other => {
                json = other.to_json();
                &json
            }
        };
        if let Some(n) = self.top.get_mut(key) {
            *n += 1;
        } else if self.top.len() < TOP_CAPACITY {
            self.top.insert(key.to_string(), 1);
        } else {
            self.top_saturated = true;
        }
    }

    fn merge(&mut self, o: &FieldStats) {
        self.present += o.present;
        for (a, b) in self.types.iter_mut().zip(o.types) {
            *a += b;
        }
        let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        self.num_min = min(self.num_min, o.num_min);
        self.num_max = max(self.num_max, o.num_max);
        if let Some(t) = &o.text_min
            && self.text_min.as_ref().is_none_or(|m| t < m)
        {
            self.text_min = Some(t.clone());
        }
        if let Some(t) = &o.text_max
            && self.text_max.as_ref().is_none_or(|m| t > m)
        {
            self.text_max = Some(t.clone());
        }
        self.hll.merge(&o.hll);
        self.exact = match (self.exact.take(), &o.exact) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                (a.len() <= EXACT_DISTINCT).then_some(a)
            }
            _ => None,
        };
        for (k, n) in &o.top {
            if let Some(m) = self.top.get_mut(k) {
                *m += n;
            } else if self.top.len() < TOP_CAPACITY {
                self.top.insert(k.clone(), *n);
            } else {
                self.top_saturated = true;
            }
        }
        self.top_saturated |= o.top_saturated;
    }

    /// The type most values have: one JSON type, `float` for a mix of integers and floats,
    /// `mixed` otherwise, `null` when every value was null.
    fn inferred_type(&self) -> &'static str {
        let seen: Vec<usize> = (1..TYPES.len()).filter(|&i| self.types[i] > 0).collect();
        match seen.as_slice() {
            [] => "null",
            [one] => TYPES[*one],
            [2, 3] => "float",
            _ => "mixed",
        }
    }
}

/// Collects the profile of the records it is given.
#[derive(Clone, Debug, Default)]
pub struct Profiler {
    records: u64,
    /// Fields in the order first seen.
    order: Vec<String>,
    fields: HashMap<String, FieldStats>,
}

impl Profiler {
    pub fn new() -> Profiler {
        Profiler::default()
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn observe(&mut self, records: &[Record]) {
        for r in records {
            self.records += 1;
            for (k, v) in r.iter() {
                match self.fields.get_mut(k.as_str()) {
                    Some(s) => s.observe(v),
                    None => {
                        let mut s = FieldStats::new();
                        s.observe(v);
                        self.order.push(k.as_str().to_string());
                        self.fields.insert(k.as_str().to_string(), s);
                    }
                }
            }
        }
    }

    /// Adds another profiler's records (a later part of the same run).
    pub fn merge(&mut self, other: &Profiler) {
        self.records += other.records;
        for k in &other.order {
            let o = &other.fields[k];
            match self.fields.get_mut(k) {
                Some(s) => s.merge(o),
                None => {
                    self.order.push(k.clone());
                    self.fields.insert(k.clone(), o.clone());
                }
            }
        }
    }

    /// Field name -> inferred type, of what was seen so far.
    pub fn types(&self) -> Vec<(String, &'static str)> {
        self.order
            .iter()
            .map(|k| (k.clone(), self.fields[k].inferred_type()))
            .collect()
    }

    pub fn profile(&self) -> Profile {
        let fields = self
            .order
            .iter()
            .map(|name| {
                let s = &self.fields[name];
                let nulls = self.records - s.present + s.types[0];
                let inferred = s.inferred_type();
                let (min, max) = match inferred {
                    "integer" => (
                        s.num_min.map(|f| serde_json::json!(f as i64)),
                        s.num_max.map(|f| serde_json::json!(f as i64)),
                    ),
                    "float" => (
                        s.num_min.map(|f| serde_json::json!(f)),
                        s.num_max.map(|f| serde_json::json!(f)),
                    ),
                    "string" => (
                        s.text_min.clone().map(serde_json::Value::String),
                        s.text_max.clone().map(serde_json::Value::String),
                    ),
                    _ => (None, None),
                };
                let mut top: Vec<(&String, &u64)> = s.top.iter().collect();
                top.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
                let distinct = match &s.exact {
                    Some(set) => set.len() as u64,
                    None => s.hll.estimate().round() as u64,
                };
                FieldProfile {
                    name: name.clone(),
                    inferred_type: inferred.to_string(),
                    count: s.present - s.types[0],
                    nulls,
                    null_ratio: if self.records == 0 {
                        0.0
                    } else {
                        nulls as f64 / self.records as f64
                    },
                    distinct,
                    distinct_exact: s.exact.is_some(),
                    min,
                    max,
                    top_values: top
                        .into_iter()
                        .take(TOP_SHOWN)
                        .map(|(v, n)| TopValue {
                            value: v.clone(),
                            count: *n,
                        })
                        .collect(),
                    top_values_exact: !s.top_saturated,
                    types: TYPES
                        .iter()
                        .zip(s.types)
                        .filter(|(_, n)| *n > 0)
                        .map(|(t, n)| ((*t).to_string(), n))
                        .collect(),
                }
            })
            .collect();
        Profile {
            records: self.records,
            fields,
        }
    }
}

/// A run's profile: per field, in the order the fields were first seen.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Records profiled (those delivered to the destinations).
    pub records: u64,
    pub fields: Vec<FieldProfile>,
}

impl Profile {
    pub fn field(&self, name: &str) -> Option<&FieldProfile> {
        self.fields.iter().find(|f| f.name == name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldProfile {
    pub name: String,
    /// `integer`, `float`, `string`, `boolean`, `array`, `object`, `null` (never a value) or
    /// `mixed`.
    pub inferred_type: String,
    /// Records where it had a value other than null.
    pub count: u64,
    /// Records where it was null or absent.
    pub nulls: u64,
    pub null_ratio: f64,
    /// Distinct non-null values: exact while `distinct_exact`, else a HyperLogLog estimate.
    pub distinct: u64,
    pub distinct_exact: bool,
    /// Smallest value (numbers and strings).
    pub min: Option<serde_json::Value>,
    pub max: Option<serde_json::Value>,
    /// The most frequent scalar values, most frequent first.
    pub top_values: Vec<TopValue>,
    /// False when more distinct values came than are counted.
    pub top_values_exact: bool,
    /// Values per JSON type (null included).
    pub types: Vec<(String, u64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopValue {
    /// The value as text (a string as is, anything else as JSON).
    pub value: String,
    pub count: u64,
}

pub use dagg_model::spec::pipeline::SchemaPolicy;

/// Differences between a run's fields and the previous run's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchemaChanges {
    pub new_fields: Vec<String>,
    pub missing_fields: Vec<String>,
    pub retyped_fields: Vec<Retyped>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retyped {
    pub field: String,
    pub from: String,
    pub to: String,
}

impl SchemaChanges {
    pub fn is_empty(&self) -> bool {
        self.new_fields.is_empty()
            && self.missing_fields.is_empty()
            && self.retyped_fields.is_empty()
    }

    /// One line: `new field(s) a, b; missing c; d re-typed integer -> string`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.new_fields.is_empty() {
            parts.push(format!(
                "new field{} {}",
                if self.new_fields.len() == 1 { "" } else { "s" },
                self.new_fields.join(", ")
            ));
        }
        if !self.missing_fields.is_empty() {
            parts.push(format!(
                "missing field{} {}",
                if self.missing_fields.len() == 1 {
                    ""
                } else {
                    "s"
                },
                self.missing_fields.join(", ")
            ));
        }
        for r in &self.retyped_fields {
            parts.push(format!("`{}` re-typed {} -> {}", r.field, r.from, r.to));
        }
        parts.join("; ")
    }
}

/// Whether a field of type `was` now seen as `now` is a change: `null` (no value seen) on
/// either side is not, and integers where floats were are not (a float field may hold
/// whole numbers).
fn retyped(was: &str, now: &str) -> bool {
    !(was == now || was == "null" || now == "null" || (was == "float" && now == "integer"))
}

/// The changes from `before` (field -> type) to `after`; `complete` says `after` has seen
/// the whole run (only then is a field missing).
pub fn compare_types(
    before: &[(String, String)],
    after: &[(String, &str)],
    complete: bool,
) -> SchemaChanges {
    let mut c = SchemaChanges::default();
    for (name, now) in after {
        match before.iter().find(|(n, _)| n == name) {
            None => c.new_fields.push(name.clone()),
            Some((_, was)) if retyped(was, now) => c.retyped_fields.push(Retyped {
                field: name.clone(),
                from: was.clone(),
                to: (*now).to_string(),
            }),
            Some(_) => {}
        }
    }
    if complete {
        for (name, _) in before {
            if !after.iter().any(|(n, _)| n == name) {
                c.missing_fields.push(name.clone());
            }
        }
    }
    c
}

/// The changes between two whole-run profiles.
pub fn compare(before: &Profile, after: &Profile) -> SchemaChanges {
    let b: Vec<(String, String)> = before
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.inferred_type.clone()))
        .collect();
    let a: Vec<(String, &str)> = after
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.inferred_type.as_str()))
        .collect();
    compare_types(&b, &a, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(json: &str) -> Record {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn profile_of_known_data_has_the_right_figures() {
        let mut p = Profiler::new();
        let mut records = Vec::new();
        for i in 0..100 {
            let status = ["completed", "pending", "completed", "cancelled"][i % 4];
            let note = if i % 5 == 0 {
                "null".to_string()
            } else {
                format!("\"n{}\"", i % 7)
            };
            let extra = if i < 10 { r#","coupon":"X""# } else { "" };
            records.push(rec(&format!(
                r#"{{"id":{i},"status":"{status}","price":{}.5,"note":{note}{extra}}}"#,
                i % 10
            )));
        }
        // Fed in two parts and merged, as the sink stage does between checkpoints.
        let mut q = Profiler::new();
        p.observe(&records[..60]);
        q.observe(&records[60..]);
        p.merge(&q);
        let prof = p.profile();
        assert_eq!(prof.records, 100);
        assert_eq!(
            prof.fields
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>(),
            ["id", "status", "price", "note", "coupon"]
        );

        let id = prof.field("id").unwrap();
        assert_eq!(
            (
                id.inferred_type.as_str(),
                id.nulls,
                id.distinct,
                id.distinct_exact
            ),
            ("integer", 0, 100, true)
        );
        assert_eq!(
            (id.min.clone(), id.max.clone()),
            (Some(serde_json::json!(0)), Some(serde_json::json!(99)))
        );

        let st = prof.field("status").unwrap();
        assert_eq!(st.distinct, 3);
        assert_eq!(
            st.top_values[0],
            TopValue {
                value: "completed".into(),
                count: 50
            }
        );
        assert_eq!(
            st.top_values[1..],
            [
                TopValue {
                    value: "cancelled".into(),
                    count: 25
                },
                TopValue {
                    value: "pending".into(),
                    count: 25
                }
            ]
        );
        assert_eq!(st.min, Some(serde_json::json!("cancelled")));
        assert_eq!(st.max, Some(serde_json::json!("pending")));

        let price = prof.field("price").unwrap();
        assert_eq!(price.inferred_type, "float");
        assert_eq!(
            (price.min.clone(), price.max.clone(), price.distinct),
            (
                Some(serde_json::json!(0.5)),
                Some(serde_json::json!(9.5)),
                10
            )
        );

        let note = prof.field("note").unwrap();
        assert_eq!((note.nulls, note.null_ratio, note.count), (20, 0.2, 80));
        assert_eq!(
            note.types,
            vec![("null".to_string(), 20), ("string".to_string(), 80)]
        );

        let coupon = prof.field("coupon").unwrap();
        assert_eq!(
            (coupon.nulls, coupon.null_ratio, coupon.distinct),
            (90, 0.9, 1)
        );
    }

    #[test]
    fn distinct_estimate_is_close_on_many_values() {
        let mut p = Profiler::new();
        let records: Vec<Record> = (0..50_000)
            .map(|i| rec(&format!(r#"{{"k":"key-{}"}}"#, i % 20_000)))
            .collect();
        p.observe(&records);
        let f = p.profile().fields.remove(0);
        assert!(!f.distinct_exact);
        let err = (f.distinct as f64 - 20_000.0).abs() / 20_000.0;
        assert!(
            err < 0.1,
            "estimate {} is {:.1}% off",
            f.distinct,
            err * 100.0
        );
        assert!(!f.top_values_exact);
    }

    #[test]
    fn schema_changes_name_new_missing_and_retyped_fields() {
        let mut a = Profiler::new();
        a.observe(&[rec(r#"{"id":1,"qty":2,"price":1.5,"gone":true}"#)]);
        let mut b = Profiler::new();
        b.observe(&[rec(r#"{"id":"1","qty":2,"price":2,"fresh":null}"#)]);
        let c = compare(&a.profile(), &b.profile());
        assert_eq!(c.new_fields, ["fresh"]);
        assert_eq!(c.missing_fields, ["gone"]);
        assert_eq!(
            c.retyped_fields,
            [Retyped {
                field: "id".into(),
                from: "integer".into(),
                to: "string".into()
            }]
        );
        assert_eq!(
            c.describe(),
            "new field fresh; missing field gone; `id` re-typed integer -> string"
        );
        assert!(compare(&a.profile(), &a.profile()).is_empty());
    }
}
