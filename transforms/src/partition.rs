//! Splitting a transformation list for `parallelism`: the steps before the first stateful step
//! run once (they are stateless), and the rest runs in N keyed instances, each fed the
//! records whose key hashes to it.
//!
//! A list can be split only when its stateful part is keyed by one set of fields that every
//! instance can own outright: exactly one stateful step (an `aggregation` with
//! `group_by_fields`, or a `deduplicate`), with only stateless steps after it. Anything
//! else (a global aggregation, two stateful steps with different keys) runs in one instance,
//! and [`split`] says why.
//!
//! The partition of a record is a pure function of its key values (the same hash the
//! stateful steps group by, with a fixed seed), so a resumed run routes every key to the
//! instance whose state holds it.

use dagg_model::spec::transform::TransformSpec;
use dagg_model::{FieldPath, Record};

use crate::key::key_of;

/// Where a transformation list splits for keyed instances.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// The index of the first stateful step: `transformations[..at]` run once, the rest in
    /// every instance.
    pub at: usize,
    /// The fields records are partitioned by.
    pub key: Vec<FieldPath>,
}

/// Why a transformation list runs in one instance whatever the `parallelism`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsplittable {
    #[error("the transformations keep no state: one instance reads and transforms as fast as the source delivers")]
    Stateless,
    #[error("transformations[{first}] and transformations[{second}] are both stateful; keyed instances need a single keyed stateful step")]
    TwoStateful { first: usize, second: usize },
    #[error("transformations[{at}] aggregates every record into one group (no group_by_fields): it cannot be split by key")]
    OneGroup { at: usize },
}

/// How to split `specs` for keyed instances, or why they cannot be split (then they run in
/// one instance whatever the `parallelism`).
pub fn split(specs: &[TransformSpec]) -> Result<Split, Unsplittable> {
    let stateful: Vec<usize> = specs
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, TransformSpec::Aggregation(_) | TransformSpec::Deduplicate(_)))
        .map(|(i, _)| i)
        .collect();
    let at = match stateful.as_slice() {
        [] => return Err(Unsplittable::Stateless),
        [one] => *one,
        [first, second, ..] => return Err(Unsplittable::TwoStateful { first: *first, second: *second }),
    };
    let key = match &specs[at] {
        TransformSpec::Aggregation(a) if a.group_by.is_empty() => return Err(Unsplittable::OneGroup { at }),
        TransformSpec::Aggregation(a) => a.group_by.clone(),
        TransformSpec::Deduplicate(d) => d.key_fields.clone(),
        _ => unreachable!("only aggregation and deduplicate are listed"),
    };
    Ok(Split { at, key })
}

/// Assigns records to one of `n` instances by their key.
#[derive(Clone, Debug)]
pub struct Partitioner {
    key: Vec<FieldPath>,
    n: usize,
}

impl Partitioner {
    pub fn new(key: Vec<FieldPath>, n: usize) -> Partitioner {
        assert!(n > 0, "at least one instance");
        Partitioner { key, n }
    }

    pub fn instances(&self) -> usize {
        self.n
    }

    /// The instance (`0..n`) that owns this record's key.
    #[inline]
    pub fn of(&self, record: &Record) -> usize {
        let mut buf = Vec::with_capacity(self.key.len());
        let h = key_of(&self.key, record, &mut buf);
        // The high bits, scaled onto 0..n (the key tables inside the instances use the low ones).
        ((u128::from(h.rotate_left(32)) * self.n as u128) >> 64) as usize
    }

    /// Splits a batch into one batch per instance, keeping each key's records in order.
    pub fn split(&self, records: Vec<Record>) -> Vec<Vec<Record>> {
        let mut parts: Vec<Vec<Record>> = (0..self.n).map(|_| Vec::with_capacity(records.len() / self.n + 1)).collect();
        for r in records {
            let i = self.of(&r);
            parts[i].push(r);
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagg_model::spec::transform::parse_transformations;
    use dagg_model::{SpecErrors, Value};
    use serde_json::json;

    fn specs(v: serde_json::Value) -> Vec<TransformSpec> {
        let mut errs = SpecErrors::new();
        let s = parse_transformations(&v, "transformations", &mut errs);
        assert!(errs.is_empty(), "{errs}");
        s
    }

    #[test]
    fn splits_at_the_keyed_step() {
        let s = specs(json!([
            {"type": "record_filter", "condition": {"field": "x", "operator": "greater_than", "value": 1}},
            {"type": "aggregation", "group_by_fields": ["customer_id"], "aggregated_fields": [{"input_field": "x", "output_field": "s", "operation": "sum"}]},
            {"type": "field_mapping", "field_name": "s", "operation": "rename", "parameters": {"to": "total"}}
        ]));
        let sp = split(&s).unwrap();
        assert_eq!(sp.at, 1);
        assert_eq!(sp.key, vec![FieldPath::parse("customer_id").unwrap()]);
    }

    #[test]
    fn refuses_what_cannot_be_split() {
        let global = specs(json!([{"type": "aggregation", "group_by_fields": [], "aggregated_fields": [{"output_field": "n", "operation": "count"}]}]));
        assert!(split(&global).unwrap_err().to_string().contains("one group"), "{:?}", split(&global));
        let two = specs(json!([
            {"type": "deduplicate", "key_fields": ["id"]},
            {"type": "aggregation", "group_by_fields": ["c"], "aggregated_fields": [{"output_field": "n", "operation": "count"}]}
        ]));
        assert!(split(&two).unwrap_err().to_string().contains("both stateful"));
        assert!(split(&[]).is_err());
    }

    #[test]
    fn a_key_always_goes_to_the_same_instance_and_keys_spread() {
        let p = Partitioner::new(vec![FieldPath::parse("k").unwrap()], 4);
        let rec = |k: i64, n: i64| {
            let mut r = Record::new();
            r.insert("k", Value::Int(k));
            r.insert("n", Value::Int(n));
            r
        };
        let mut counts = [0usize; 4];
        for k in 0..4000 {
            let i = p.of(&rec(k, 0));
            assert_eq!(i, p.of(&rec(k, 99)), "the same key lands on the same instance");
            counts[i] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "keys spread evenly: {counts:?}");
        }
        let parts = p.split((0..100).map(|n| rec(7, n)).collect());
        let owner: Vec<_> = parts.iter().filter(|p| !p.is_empty()).collect();
        assert_eq!(owner.len(), 1);
        let ns: Vec<i64> = owner[0].iter().map(|r| r.get("n").and_then(Value::as_i64).unwrap()).collect();
        assert_eq!(ns, (0..100).collect::<Vec<_>>(), "a key's records keep their order");
    }
}
