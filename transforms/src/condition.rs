//! Evaluating a [`Condition`] against a record (`record_filter`, `conditional`).
//!
//! Numbers compare numerically (`1` equals `1.0`), strings by code point; a number never
//! equals or orders against a string. A missing field is null: `equals` anything but null is
//! false, `not_equals` and `not_in` are true, the ordering operators are false.
//! `contains` is a substring test on a string field and a membership test on an array field;
//! `matches` searches the regex in a string, or in the text of a number or boolean.

use std::cmp::Ordering;

use dagg_model::spec::condition::{CompareOp, Condition};
use dagg_model::{Record, Value};

/// True when `cond` holds for `record`.
pub fn eval(cond: &Condition, record: &Record) -> bool {
    match cond {
        Condition::Compare { field, op } => compare(field.get(record), op),
        Condition::All(cs) => cs.iter().all(|c| eval(c, record)),
        Condition::Any(cs) => cs.iter().any(|c| eval(c, record)),
        Condition::Not(c) => !eval(c, record),
    }
}

/// `v` equals `x` as conditions see it; a missing value is null.
fn equals(v: Option<&Value>, x: &Value) -> bool {
    match v {
        None | Some(Value::Null) => x.is_null(),
        Some(v) => v.loose_eq(x),
    }
}

fn compare(v: Option<&Value>, op: &CompareOp) -> bool {
    let order = |x: &Value| v.and_then(|v| v.compare(x));
    match op {
        CompareOp::Equals(x) => equals(v, x),
        CompareOp::NotEquals(x) => !equals(v, x),
        CompareOp::GreaterThan(x) => order(x) == Some(Ordering::Greater),
        CompareOp::GreaterThanOrEqual(x) => matches!(order(x), Some(Ordering::Greater | Ordering::Equal)),
        CompareOp::LessThan(x) => order(x) == Some(Ordering::Less),
        CompareOp::LessThanOrEqual(x) => matches!(order(x), Some(Ordering::Less | Ordering::Equal)),
        CompareOp::In(xs) => xs.iter().any(|x| equals(v, x)),
        CompareOp::NotIn(xs) => !xs.iter().any(|x| equals(v, x)),
        CompareOp::Contains(x) => match (v, x) {
            (Some(Value::String(s)), Value::String(needle)) => s.contains(needle.as_str()),
            (Some(Value::Array(items)), x) => items.iter().any(|i| i.loose_eq(x)),
            _ => false,
        },
        CompareOp::StartsWith(p) => v.and_then(Value::as_str).is_some_and(|s| s.starts_with(p.as_str())),
        CompareOp::EndsWith(p) => v.and_then(Value::as_str).is_some_and(|s| s.ends_with(p.as_str())),
        CompareOp::Matches(re) => match v {
            Some(Value::String(s)) => re.0.is_match(s),
            Some(x @ (Value::Int(_) | Value::Float(_) | Value::Bool(_))) => re.0.is_match(&x.to_text()),
            _ => false,
        },
        CompareOp::IsNull => matches!(v, None | Some(Value::Null)),
        CompareOp::IsNotNull => !matches!(v, None | Some(Value::Null)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagg_model::SpecErrors;
    use dagg_model::spec::condition::parse_condition;
    use serde_json::json;

    fn holds(cond: serde_json::Value, record: serde_json::Value) -> bool {
        let mut errs = SpecErrors::new();
        let c = parse_condition(&cond, "c", &mut errs).unwrap_or_else(|| panic!("{errs}"));
        let Value::Object(r) = Value::from(&record) else { panic!() };
        eval(&c, &r)
    }

    fn op(operator: &str, value: serde_json::Value, record: serde_json::Value) -> bool {
        holds(json!({"field": "f", "operator": operator, "value": value}), record)
    }

    #[test]
    fn numbers_compare_numerically_and_never_with_strings() {
        assert!(op("equals", json!(1), json!({"f": 1.0})));
        assert!(op("equals", json!(1.0), json!({"f": 1})));
        assert!(!op("equals", json!(100), json!({"f": "100"})));
        assert!(op("not_equals", json!(100), json!({"f": "100"})));
        assert!(!op("greater_than", json!(5), json!({"f": "9"})));
        assert!(!op("less_than", json!(5), json!({"f": "1"})));
        assert!(op("greater_than", json!(2), json!({"f": 2.5})));
        assert!(op("greater_than_or_equal", json!(2.0), json!({"f": 2})));
        assert!(op("less_than_or_equal", json!(-1), json!({"f": -1})));
        assert!(!op("less_than", json!(-1), json!({"f": -1})));
    }

    #[test]
    fn strings_compare_by_code_point() {
        assert!(op("less_than", json!("b"), json!({"f": "a"})));
        assert!(op("less_than", json!("a"), json!({"f": "Z"})));
        assert!(!op("greater_than", json!("é"), json!({"f": "z"})));
        assert!(op("greater_than", json!("z"), json!({"f": "é"})));
    }

    #[test]
    fn missing_field_is_null() {
        let r = json!({"other": 1});
        assert!(!op("equals", json!("x"), r.clone()));
        assert!(op("equals", json!(null), r.clone()));
        assert!(op("not_equals", json!("x"), r.clone()));
        assert!(op("not_in", json!(["x", 1]), r.clone()));
        assert!(!op("in", json!(["x", 1]), r.clone()));
        assert!(op("in", json!([null]), r.clone()));
        for o in ["greater_than", "greater_than_or_equal", "less_than", "less_than_or_equal"] {
            assert!(!op(o, json!(0), r.clone()), "{o}");
        }
        assert!(holds(json!({"field": "f", "operator": "is_null"}), r.clone()));
        assert!(holds(json!({"field": "f", "operator": "is_null"}), json!({"f": null})));
        assert!(!holds(json!({"field": "f", "operator": "is_not_null"}), r.clone()));
        assert!(!op("contains", json!("x"), r.clone()));
        assert!(!op("matches", json!("."), r));
    }

    #[test]
    fn null_field_equals_null_only() {
        assert!(!op("equals", json!(0), json!({"f": null})));
        assert!(op("equals", json!(null), json!({"f": null})));
        assert!(!op("equals", json!(null), json!({"f": 0})));
        assert!(!op("greater_than", json!(0), json!({"f": null})));
    }

    #[test]
    fn in_and_not_in() {
        assert!(op("in", json!(["a", 2]), json!({"f": 2.0})));
        assert!(!op("in", json!(["a", 2]), json!({"f": "2"})));
        assert!(op("not_in", json!(["a", 2]), json!({"f": "b"})));
        assert!(!op("in", json!([]), json!({"f": "b"})));
    }

    #[test]
    fn text_operators() {
        assert!(op("contains", json!("ell"), json!({"f": "hello"})));
        assert!(op("contains", json!(2), json!({"f": [1, 2.0]})));
        assert!(!op("contains", json!("1"), json!({"f": 123})));
        assert!(op("starts_with", json!("he"), json!({"f": "hello"})));
        assert!(op("ends_with", json!("ło"), json!({"f": "cześć hałło"})));
        assert!(!op("starts_with", json!("1"), json!({"f": 12})));
        assert!(op("matches", json!("^\\d{3}$"), json!({"f": "123"})));
        assert!(op("matches", json!("^\\d{3}$"), json!({"f": 123})));
        assert!(op("matches", json!("b"), json!({"f": "abc"})), "searched, not anchored");
        assert!(!op("matches", json!("."), json!({"f": [1]})));
    }

    #[test]
    fn nested_paths_and_combinators() {
        let r = json!({"a": {"b": [10, {"c": "x"}]}, "n": 5});
        assert!(holds(json!({"field": "a.b.0", "operator": "equals", "value": 10}), r.clone()));
        assert!(holds(json!({"field": "a.b.1.c", "operator": "equals", "value": "x"}), r.clone()));
        assert!(holds(json!({"field": "n.x", "operator": "is_null"}), r.clone()));
        assert!(holds(json!({"all": []}), r.clone()));
        assert!(!holds(json!({"any": []}), r.clone()));
        assert!(holds(
            json!({"all": [{"field": "n", "operator": "greater_than", "value": 1},
                           {"not": {"any": [{"field": "n", "operator": "equals", "value": 4}]}}]}),
            r
        ));
    }
}
