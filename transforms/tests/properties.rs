//! Invariants that hold for any records: filters only remove, renames keep value and place,
//! batching does not change results, counts add up.

use std::collections::HashMap;

use dagg_model::spec::transform::parse_transformations;
use dagg_model::{FieldPath, Map, Record, SpecErrors, Str, Value};
use dagg_transforms::{BatchContext, Chain, Output};
use proptest::prelude::*;
use serde_json::json;

fn chain(t: serde_json::Value) -> Chain {
    let mut errs = SpecErrors::new();
    let specs = parse_transformations(&t, "transformations", &mut errs);
    assert!(errs.is_empty(), "{errs}");
    Chain::new(&specs, HashMap::new()).unwrap()
}

fn ctx() -> BatchContext {
    BatchContext { now: chrono::DateTime::UNIX_EPOCH }
}

fn run_batches(t: &serde_json::Value, input: Vec<Record>, batch: usize) -> Output {
    let mut c = chain(t.clone());
    let mut out = Output::default();
    let mut input = input.into_iter().peekable();
    while input.peek().is_some() {
        let b: Vec<Record> = input.by_ref().take(batch.max(1)).collect();
        c.process(b, &ctx(), &mut out);
    }
    c.finish(&ctx(), &mut out);
    out
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(Value::Int),
        any::<i64>().prop_map(Value::Int),
        (-5i64..5).prop_map(|i| Value::Float(i as f64)),
        proptest::num::f64::NORMAL.prop_map(Value::Float),
        "[a-cA-C é-]{0,6}".prop_map(|s| Value::String(Str::from(s))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec(("[a-d]", inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (Str::from(k), v)).collect())),
        ]
    })
}

fn record() -> impl Strategy<Value = Record> {
    proptest::collection::vec(("[a-f]", value()), 0..6)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| (Str::from(k), v)).collect::<Map>())
}

fn records() -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::vec(record(), 0..20)
}

fn condition() -> impl Strategy<Value = serde_json::Value> {
    let ops = prop_oneof![
        Just("equals"), Just("not_equals"), Just("greater_than"), Just("less_than_or_equal"),
        Just("contains"), Just("is_null"), Just("is_not_null"),
    ];
    let operand = prop_oneof![Just(json!(0)), Just(json!(1.5)), Just(json!("b")), Just(json!(true))];
    ("[a-f]", ops, operand).prop_map(|(f, op, v)| json!({"field": f, "operator": op, "value": v}))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn a_filter_never_adds_or_changes_records(input in records(), cond in condition()) {
        let t = json!([{"type": "record_filter", "condition": cond}]);
        let out = run_batches(&t, input.clone(), 7);
        prop_assert!(out.rejected.is_empty());
        prop_assert_eq!(out.records.len() as u64 + out.filtered, input.len() as u64);
        // The output is a subsequence of the input.
        let mut it = input.iter();
        for r in &out.records {
            prop_assert!(it.any(|i| i == r), "{:?} is not from the input", r);
        }
    }

    #[test]
    fn not_is_the_complement(input in records(), cond in condition()) {
        let kept = run_batches(&json!([{"type": "record_filter", "condition": cond}]), input.clone(), 5);
        let other = run_batches(&json!([{"type": "record_filter", "condition": {"not": cond}}]), input.clone(), 5);
        prop_assert_eq!(kept.records.len() + other.records.len(), input.len());
    }

    #[test]
    fn rename_keeps_value_and_position(input in records(), from in "[a-f]", to in "[g-h]") {
        let t = json!([{"type": "field_mapping", "field_name": from, "operation": "rename", "parameters": {"to": to}}]);
        let out = run_batches(&t, input.clone(), 3);
        prop_assert_eq!(out.records.len(), input.len());
        for (before, after) in input.iter().zip(&out.records) {
            prop_assert_eq!(before.len(), after.len());
            let keys: Vec<&str> = before.keys().map(|k| if *k == from { to.as_str() } else { k.as_str() }).collect();
            let got: Vec<&str> = after.keys().map(|k| k.as_str()).collect();
            prop_assert_eq!(keys, got);
            prop_assert_eq!(before.get(&from), after.get(&to));
        }
    }

    #[test]
    fn batching_does_not_change_the_result(input in records(), size in 1usize..6) {
        let t = json!([
            {"type": "field_operation", "field_name": "a", "operation": "cast", "parameters": {"to": "string"}},
            {"type": "record_filter", "condition": {"field": "b", "operator": "is_not_null"}},
            {"type": "deduplicate", "key_fields": ["b"]},
            {"type": "aggregation", "group_by_fields": ["c"], "aggregated_fields": [
                {"output_field": "n", "operation": "count"},
                {"input_field": "a", "output_field": "firsts", "operation": "collect"},
                {"input_field": "d", "output_field": "dd", "operation": "count_distinct"}]},
        ]);
        let whole = run_batches(&t, input.clone(), usize::MAX);
        let parts = run_batches(&t, input, size);
        prop_assert_eq!(whole.records, parts.records);
        prop_assert_eq!(whole.filtered, parts.filtered);
        prop_assert_eq!(whole.rejected.len(), parts.rejected.len());
    }

    #[test]
    fn counts_add_up_in_aggregation(input in records()) {
        let t = json!([{"type": "aggregation", "group_by_fields": ["a"], "aggregated_fields": [
            {"output_field": "n", "operation": "count"},
            {"input_field": "b", "output_field": "nb", "operation": "count"}]}]);
        let out = run_batches(&t, input.clone(), 4);
        let total: i64 = out.records.iter().map(|r| r.get("n").and_then(Value::as_i64).unwrap()).sum();
        let with_b: i64 = out.records.iter().map(|r| r.get("nb").and_then(Value::as_i64).unwrap()).sum();
        prop_assert_eq!(total as usize, input.len());
        prop_assert_eq!(with_b as usize, input.iter().filter(|r| r.get("b").is_some_and(|v| !v.is_null())).count());
        // Group keys are distinct under loose equality.
        for (i, x) in out.records.iter().enumerate() {
            for y in &out.records[i + 1..] {
                let (a, b) = (x.get("a").unwrap(), y.get("a").unwrap());
                prop_assert!(!a.loose_eq(b), "{} and {} are one group", a, b);
            }
        }
    }

    #[test]
    fn dedup_keeps_one_record_per_key(input in records(), last in any::<bool>()) {
        let keep = if last { "last" } else { "first" };
        let t = json!([{"type": "deduplicate", "key_fields": ["a", "b"], "keep": keep}]);
        let out = run_batches(&t, input.clone(), 3);
        prop_assert_eq!(out.records.len() as u64 + out.filtered, input.len() as u64);
        let (a, b) = (FieldPath::parse("a").unwrap(), FieldPath::parse("b").unwrap());
        let key = |r: &Record| (a.get(r).cloned().unwrap_or_default(), b.get(r).cloned().unwrap_or_default());
        for (i, x) in out.records.iter().enumerate() {
            for y in &out.records[i + 1..] {
                let (kx, ky) = (key(x), key(y));
                prop_assert!(!(kx.0.loose_eq(&ky.0) && kx.1.loose_eq(&ky.1)));
            }
        }
    }

    #[test]
    fn split_makes_one_record_per_element(input in records()) {
        let t = json!([{"type": "record_split", "field_name": "a"}]);
        let out = run_batches(&t, input.clone(), 2);
        let expected: usize = input.iter().map(|r| match r.get("a") {
            Some(Value::Array(items)) => items.len(),
            _ => 1,
        }).sum();
        prop_assert_eq!(out.records.len(), expected);
        prop_assert!(out.records.iter().all(|r| !matches!(r.get("a"), Some(Value::Array(_)))
            || input.iter().any(|i| matches!(i.get("a"), Some(Value::Array(items)) if items.iter().any(|x| Some(x) == r.get("a"))))));
    }

    #[test]
    fn field_operations_never_panic_and_keep_the_record_count(input in records(), op in prop_oneof![
        Just(json!({"operation": "title_case"})), Just(json!({"operation": "lowercase"})),
        Just(json!({"operation": "uppercase"})), Just(json!({"operation": "trim"})),
        Just(json!({"operation": "cast", "parameters": {"to": "integer"}})),
        Just(json!({"operation": "cast", "parameters": {"to": "float"}})),
        Just(json!({"operation": "cast", "parameters": {"to": "boolean"}})),
        Just(json!({"operation": "cast", "parameters": {"to": "string"}})),
        Just(json!({"operation": "round", "parameters": {"digits": 2}})),
        Just(json!({"operation": "hash"})), Just(json!({"operation": "mask"})),
        Just(json!({"operation": "split", "parameters": {"separator": "-"}})),
        Just(json!({"operation": "date_format", "parameters": {"output_format": "%Y"}})),
        Just(json!({"operation": "replace", "parameters": {"regex": "[a-c]", "replacement": "<$0>"}})),
    ]) {
        let mut step = op.as_object().unwrap().clone();
        step.insert("type".into(), json!("field_operation"));
        step.insert("field_name".into(), json!("a"));
        let out = run_batches(&json!([step]), input.clone(), usize::MAX);
        prop_assert_eq!(out.records.len() + out.rejected.len(), input.len());
        for r in &out.rejected {
            prop_assert_eq!(r.stage.as_str(), "transformations[0]");
            // A failing operation leaves the record as it was.
            prop_assert_eq!(&r.record, &input[r.input.unwrap()]);
        }
    }

    #[test]
    fn casting_a_float_to_string_and_back_round_trips(f in proptest::num::f64::NORMAL) {
        let t = json!([
            {"type": "field_operation", "field_name": "a", "operation": "cast", "parameters": {"to": "string"}},
            {"type": "field_operation", "field_name": "a", "operation": "cast", "parameters": {"to": "float"}},
        ]);
        let mut r = Map::new();
        r.insert("a", Value::Float(f));
        let out = run_batches(&t, vec![r], 1);
        prop_assert_eq!(out.records[0].get("a"), Some(&Value::Float(f)));
    }
}
