//! `field_calculation`, `field_addition` and `field_removal`.

use dagg_model::spec::transform::{AddValue, AdditionSpec, ArithOp, CalculationSpec};
use dagg_model::{Record, Str, Value};

use crate::Env;

/// `field_calculation`: the sources folded left to right into the output field.
///
/// A missing or null source leaves the record as it is. `add`, `subtract` and `multiply` of
/// two integers give an integer (overflow fails the record); anything else, and `divide`
/// always, gives a float. Division by zero, a non-number operand and a result that is not a
/// finite number fail the record.
pub(crate) fn calculate(spec: &CalculationSpec, rec: &mut Record) -> Result<(), String> {
    #[derive(Clone, Copy)]
    enum Num {
        Int(i64),
        Float(f64),
    }
    let mut acc: Option<Num> = None;
    for path in &spec.sources {
        let n = match path.get(rec) {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Int(i)) => Num::Int(*i),
            Some(Value::Float(f)) => Num::Float(*f),
            Some(other) => {
                return Err(format!("`{path}` is {}, but `{}` needs numbers", other.type_name(), spec.op.name()));
            }
        };
        let as_f = |n: Num| match n {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        };
        acc = Some(match acc {
            None if spec.op == ArithOp::Divide => Num::Float(as_f(n)),
            None => n,
            Some(a) => match (spec.op, a, n) {
                (ArithOp::Divide, _, _) => {
                    let d = as_f(n);
                    if d == 0.0 {
                        return Err(format!("division by zero (`{path}` is 0)"));
                    }
                    Num::Float(as_f(a) / d)
                }
                (op, Num::Int(x), Num::Int(y)) => {
                    let r = match op {
                        ArithOp::Add => x.checked_add(y),
                        ArithOp::Subtract => x.checked_sub(y),
                        _ => x.checked_mul(y),
                    };
                    Num::Int(r.ok_or_else(|| format!("integer overflow in `{}` at `{path}`", op.name()))?)
                }
                (op, a, n) => {
                    let (x, y) = (as_f(a), as_f(n));
                    Num::Float(match op {
                        ArithOp::Add => x + y,
                        ArithOp::Subtract => x - y,
                        _ => x * y,
                    })
                }
            },
        });
    }
    let value = match acc {
        None => return Ok(()),
        Some(Num::Int(i)) => Value::Int(i),
        Some(Num::Float(f)) if f.is_finite() => Value::Float(f),
        Some(Num::Float(f)) => return Err(format!("the result of `{}` is {f}, not a finite number", spec.op.name())),
    };
    spec.output.set(rec, value).map_err(|e| e.to_string())
}

/// `field_addition`.
pub(crate) fn add(spec: &AdditionSpec, rec: &mut Record, env: &Env) -> Result<(), String> {
    let value = match &spec.value {
        AddValue::Literal(v) => v.clone(),
        AddValue::CurrentTimestamp => env.timestamp.clone(),
        AddValue::CurrentDate => env.date.clone(),
        AddValue::Uuid => {
            let mut buf = uuid::Uuid::encode_buffer();
            Value::String(Str::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf)))
        }
        AddValue::Concat { sources, separator } => {
            let mut out = String::new();
            let mut first = true;
            for path in sources {
                let v = match path.get(rec) {
                    None | Some(Value::Null) => continue,
                    Some(v) => v,
                };
                if !first {
                    out.push_str(separator);
                }
                first = false;
                match v {
                    Value::String(s) => out.push_str(s),
                    other => out.push_str(&other.to_json()),
                }
            }
            Value::from(out)
        }
    };
    spec.field.set(rec, value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagg_model::SpecErrors;
    use dagg_model::spec::transform::{TransformSpec, parse_transformations};
    use serde_json::json;

    fn spec(doc: serde_json::Value) -> TransformSpec {
        let mut errs = SpecErrors::new();
        let mut specs = parse_transformations(&json!([doc]), "t", &mut errs);
        assert!(errs.is_empty(), "{errs}");
        specs.remove(0)
    }

    fn calc(op: &str, sources: &[&str], input: serde_json::Value) -> Result<String, String> {
        let TransformSpec::FieldCalculation(s) = spec(json!({"type": "field_calculation", "field_name": "out", "operation": op,
            "parameters": {"source_fields": sources}})) else { panic!() };
        let Value::Object(mut r) = Value::from(&input) else { panic!() };
        calculate(&s, &mut r)?;
        Ok(Value::Object(r).to_json())
    }

    #[test]
    fn integer_and_float_arithmetic() {
        assert_eq!(calc("multiply", &["q", "p"], json!({"q": 2, "p": 29.99})).unwrap(), r#"{"q":2,"p":29.99,"out":59.98}"#);
        assert_eq!(calc("multiply", &["q", "p"], json!({"q": 3, "p": 9.99})).unwrap(), r#"{"q":3,"p":9.99,"out":29.97}"#);
        assert_eq!(calc("add", &["a", "b", "c"], json!({"a": 1, "b": 2, "c": 3})).unwrap(), r#"{"a":1,"b":2,"c":3,"out":6}"#);
        assert_eq!(calc("subtract", &["a", "b"], json!({"a": 1, "b": 2.5})).unwrap(), r#"{"a":1,"b":2.5,"out":-1.5}"#);
        assert_eq!(calc("add", &["a", "b"], json!({"a": 1.5, "b": 1.5})).unwrap(), r#"{"a":1.5,"b":1.5,"out":3.0}"#);
        assert_eq!(calc("divide", &["a", "b"], json!({"a": 6, "b": 3})).unwrap(), r#"{"a":6,"b":3,"out":2.0}"#);
        assert_eq!(calc("divide", &["a", "b", "c"], json!({"a": 12, "b": 3, "c": 8})).unwrap(), r#"{"a":12,"b":3,"c":8,"out":0.5}"#);
        assert_eq!(calc("divide", &["a"], json!({"a": 3})).unwrap(), r#"{"a":3,"out":3.0}"#);
        assert_eq!(calc("add", &["a"], json!({"a": 3, "out": 0})).unwrap(), r#"{"a":3,"out":3}"#);
    }

    #[test]
    fn failures() {
        assert!(calc("divide", &["a", "b"], json!({"a": 1, "b": 0})).unwrap_err().starts_with("division by zero"));
        assert!(calc("divide", &["a", "b"], json!({"a": 1, "b": -0.0})).unwrap_err().starts_with("division by zero"));
        assert!(calc("add", &["a", "b"], json!({"a": i64::MAX, "b": 1})).unwrap_err().starts_with("integer overflow"));
        assert!(calc("multiply", &["a", "b"], json!({"a": i64::MIN, "b": -1})).unwrap_err().starts_with("integer overflow"));
        assert_eq!(calc("add", &["a", "b"], json!({"a": "1", "b": 2})).unwrap_err(), "`a` is string, but `add` needs numbers");
        assert!(calc("multiply", &["a", "b"], json!({"a": 1e300, "b": 1e300})).unwrap_err().contains("not a finite number"));
        assert!(calc("add", &["a", "b"], json!({"a": 1, "b": [2]})).is_err());
    }

    #[test]
    fn missing_or_null_source_leaves_the_record() {
        assert_eq!(calc("add", &["a", "b"], json!({"a": 1})).unwrap(), r#"{"a":1}"#);
        assert_eq!(calc("add", &["a", "b"], json!({"a": 1, "b": null})).unwrap(), r#"{"a":1,"b":null}"#);
        assert_eq!(calc("add", &["a", "b"], json!({"a": "x"})).unwrap_err(), "`a` is string, but `add` needs numbers");
    }

    #[test]
    fn concat_skips_missing_and_prints_numbers_as_json() {
        let TransformSpec::FieldAddition(s) = spec(json!({"type": "field_addition", "field_name": "full", "operation": "concat",
            "parameters": {"source_fields": ["a", "b.c", "n", "f", "z", "t"], "separator": "-"}})) else { panic!() };
        let Value::Object(mut r) = Value::from(&json!({"a": "x", "b": {"c": null}, "n": 3, "f": 2.0, "t": true})) else { panic!() };
        let env = Env::new(&crate::BatchContext { now: chrono::DateTime::UNIX_EPOCH });
        add(&s, &mut r, &env).unwrap();
        assert_eq!(r.get("full"), Some(&Value::from("x-3-2.0-true")));
    }

    #[test]
    fn computed_values() {
        let env = Env::new(&crate::BatchContext { now: "2025-01-16T08:00:00.123456Z".parse().unwrap() });
        let run = |value: &str| {
            let TransformSpec::FieldAddition(s) = spec(json!({"type": "field_addition", "field_name": "v", "value": value})) else { panic!() };
            let mut r = Record::new();
            add(&s, &mut r, &env).unwrap();
            r.get("v").unwrap().as_str().unwrap().to_string()
        };
        assert_eq!(run("current_timestamp"), "2025-01-16T08:00:00.123Z");
        assert_eq!(run("current_date"), "2025-01-16");
        let u = run("uuid");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, run("uuid"));
        assert_eq!(run("plain"), "plain");
    }
}
