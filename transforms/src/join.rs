//! `join`: enrichment from a named source, through a hash index built once.
//!
//! The index maps each join record's key (`foreign_key`) to the fields it contributes,
//! already chosen and in the join record's order, so a match only clones values. Keys compare
//! as in conditions (`1` matches `1.0`, not `"1"`); a null or missing key matches nothing.
//! The first join record with a key wins.

use dagg_model::spec::transform::{JoinSpec, JoinType};
use dagg_model::{FieldPath, Record, Str, Value};

use crate::key::{KeyIndex, hash_one};

pub(crate) struct JoinStep {
    primary_key: FieldPath,
    inner: bool,
    index: KeyIndex,
    /// Per index slot: the fields to copy.
    payloads: Vec<Vec<(Str, Value)>>,
}

pub(crate) enum Joined {
    Kept,
    /// Inner join without a match.
    Unmatched,
}

impl JoinStep {
    pub(crate) fn new(spec: &JoinSpec, records: &[Record]) -> JoinStep {
        let mut index = KeyIndex::default();
        let mut payloads = Vec::new();
        let key_name = spec.foreign_key.is_simple().then(|| spec.foreign_key.as_str());
        for r in records {
            let Some(key) = spec.foreign_key.get(r).filter(|k| !k.is_null()) else { continue };
            let (slot, new) = index.find_or_insert(hash_one(key), &[key]);
            if !new {
                continue;
            }
            debug_assert_eq!(slot, payloads.len());
            let fields = r
                .iter()
                .filter(|(k, _)| match &spec.included_fields {
                    Some(names) => names.iter().any(|n| n == *k),
                    None => Some(k.as_str()) != key_name,
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            payloads.push(fields);
        }
        JoinStep { primary_key: spec.primary_key.clone(), inner: spec.join_type == JoinType::Inner, index, payloads }
    }

    pub(crate) fn apply(&self, rec: &mut Record) -> Joined {
        let slot = match self.primary_key.get(rec) {
            Some(k) if !k.is_null() => self.index.find(hash_one(k), &[k]),
            _ => None,
        };
        match slot {
            Some(slot) => {
                for (k, v) in &self.payloads[slot] {
                    rec.insert(k.clone(), v.clone());
                }
                Joined::Kept
            }
            None if self.inner => Joined::Unmatched,
            None => Joined::Kept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagg_model::SpecErrors;
    use dagg_model::spec::transform::{TransformSpec, parse_transformations};
    use serde_json::json;

    fn records(v: serde_json::Value) -> Vec<Record> {
        serde_json::from_value::<Vec<Value>>(v).unwrap().into_iter().map(|v| match v {
            Value::Object(m) => m,
            _ => panic!(),
        }).collect()
    }

    fn step(extra: serde_json::Value, data: serde_json::Value) -> JoinStep {
        let mut doc = json!({"type": "join", "primary_key": "id", "foreign_key": "key", "join_source": "s"});
        doc.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let mut errs = SpecErrors::new();
        let specs = parse_transformations(&json!([doc]), "t", &mut errs);
        assert!(errs.is_empty(), "{errs}");
        let TransformSpec::Join(j) = &specs[0] else { panic!() };
        JoinStep::new(j, &records(data))
    }

    fn run(s: &JoinStep, input: serde_json::Value) -> Option<String> {
        let mut r = records(json!([input])).remove(0);
        match s.apply(&mut r) {
            Joined::Kept => Some(Value::Object(r).to_json()),
            Joined::Unmatched => None,
        }
    }

    #[test]
    fn keys_compare_as_in_conditions() {
        let s = step(json!({}), json!([{"key": 1, "a": "int"}, {"key": "1", "a": "str"}, {"key": 1.0, "a": "dup"}]));
        assert_eq!(run(&s, json!({"id": 1.0})).unwrap(), r#"{"id":1.0,"a":"int"}"#);
        assert_eq!(run(&s, json!({"id": "1"})).unwrap(), r#"{"id":"1","a":"str"}"#);
        assert_eq!(run(&s, json!({"id": 2})).unwrap(), r#"{"id":2}"#);
        assert_eq!(run(&s, json!({"id": null})).unwrap(), r#"{"id":null}"#);
        assert_eq!(run(&s, json!({"x": 1})).unwrap(), r#"{"x":1}"#);
    }

    #[test]
    fn included_fields_in_join_record_order_overwriting() {
        let s = step(json!({"included_fields": ["c", "a", "missing"]}), json!([{"a": 1, "key": "k", "b": 2, "c": 3}]));
        assert_eq!(run(&s, json!({"c": 0, "id": "k"})).unwrap(), r#"{"c":3,"id":"k","a":1}"#);
    }

    #[test]
    fn inner_join_drops_unmatched_and_null_keys_never_match() {
        let s = step(json!({"join_type": "inner"}), json!([{"key": null, "a": 1}, {"key": "x", "a": 2}]));
        assert!(run(&s, json!({"id": null})).is_none());
        assert!(run(&s, json!({"id": "y"})).is_none());
        assert_eq!(run(&s, json!({"id": "x"})).unwrap(), r#"{"id":"x","a":2}"#);
    }
}
