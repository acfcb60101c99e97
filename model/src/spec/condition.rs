//! Conditions (`record_filter`, `conditional`): a typed tree read once when the pipeline is
//! validated, so evaluating one per record never parses anything.
//!
//! `{"field": "status", "operator": "equals", "value": "completed"}`, combined with
//! `{"all": [...]}`, `{"any": [...]}` and `{"not": {...}}`. What each operator means at run
//! time (numbers numerically, strings by code point, a missing field is null) is the
//! executor's job (`dagg-transforms`); this module guarantees that every operator has the
//! operand it needs: a list for `in`/`not_in`, a compiled regex for `matches`, a string for
//! `starts_with`/`ends_with`, an orderable value for the ordering operators.

use regex::Regex;
use serde::{Serialize, Serializer};
use serde_json::{Value as Json, json};

use crate::error::{SpecErrors, index};
use crate::record::FieldPath;
use crate::spec::reader::{Obj, json_type};
use crate::value::{Str, Value};

/// A regex compiled when the pipeline is validated. Serializes as its source text.
#[derive(Clone, Debug)]
pub struct Pattern(pub Regex);

impl Pattern {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// Compiles `text`, reporting the regex crate's own explanation at `path` when it is invalid.
pub fn compile_regex(text: &str, path: &str, errs: &mut SpecErrors) -> Option<Pattern> {
    // A size limit keeps a hostile pattern from eating memory at validation time.
    match regex::RegexBuilder::new(text).size_limit(8 << 20).build() {
        Ok(r) => Some(Pattern(r)),
        Err(e) => {
            errs.push(path, format!("invalid regex: {e}"));
            None
        }
    }
}

/// A condition over one record.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `{"field", "operator", "value"}`.
    Compare { field: FieldPath, op: CompareOp },
    /// Every condition holds (true when empty).
    All(Vec<Condition>),
    /// At least one condition holds (false when empty).
    Any(Vec<Condition>),
    /// The condition does not hold.
    Not(Box<Condition>),
}

/// An operator with its typed operand.
#[derive(Clone, Debug, PartialEq)]
pub enum CompareOp {
    Equals(Value),
    NotEquals(Value),
    GreaterThan(Value),
    GreaterThanOrEqual(Value),
    LessThan(Value),
    LessThanOrEqual(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    /// A substring of a string field, or an element of an array field.
    Contains(Value),
    StartsWith(Str),
    EndsWith(Str),
    /// The regex is searched in the field's text.
    Matches(Pattern),
    IsNull,
    IsNotNull,
}

/// The operator names, as users write them.
pub const OPERATORS: &[&str] = &[
    "equals",
    "not_equals",
    "greater_than",
    "greater_than_or_equal",
    "less_than",
    "less_than_or_equal",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "ends_with",
    "matches",
    "is_null",
    "is_not_null",
];

impl CompareOp {
    pub fn name(&self) -> &'static str {
        match self {
            CompareOp::Equals(_) => "equals",
            CompareOp::NotEquals(_) => "not_equals",
            CompareOp::GreaterThan(_) => "greater_than",
            CompareOp::GreaterThanOrEqual(_) => "greater_than_or_equal",
            CompareOp::LessThan(_) => "less_than",
            CompareOp::LessThanOrEqual(_) => "less_than_or_equal",
            CompareOp::In(_) => "in",
            CompareOp::NotIn(_) => "not_in",
            CompareOp::Contains(_) => "contains",
            CompareOp::StartsWith(_) => "starts_with",
            CompareOp::EndsWith(_) => "ends_with",
            CompareOp::Matches(_) => "matches",
            CompareOp::IsNull => "is_null",
            CompareOp::IsNotNull => "is_not_null",
        }
    }

    /// The operand as the document writes it (`None` for `is_null`/`is_not_null`).
    fn operand(&self) -> Option<Json> {
        let v = |v: &Value| Json::from(v);
        Some(match self {
            CompareOp::Equals(x)
            | CompareOp::NotEquals(x)
            | CompareOp::GreaterThan(x)
            | CompareOp::GreaterThanOrEqual(x)
            | CompareOp::LessThan(x)
            | CompareOp::LessThanOrEqual(x)
            | CompareOp::Contains(x) => v(x),
            CompareOp::In(xs) | CompareOp::NotIn(xs) => Json::Array(xs.iter().map(v).collect()),
            CompareOp::StartsWith(s) | CompareOp::EndsWith(s) => Json::String(s.to_string()),
            CompareOp::Matches(p) => Json::String(p.as_str().to_string()),
            CompareOp::IsNull | CompareOp::IsNotNull => return None,
        })
    }
}

impl Condition {
    /// The condition as the pipeline document writes it.
    pub fn to_document(&self) -> Json {
        match self {
            Condition::Compare { field, op } => {
                let mut m = serde_json::Map::new();
                m.insert("field".into(), Json::String(field.to_string()));
                m.insert("operator".into(), Json::String(op.name().into()));
                if let Some(v) = op.operand() {
                    m.insert("value".into(), v);
                }
                Json::Object(m)
            }
            Condition::All(cs) => json!({ "all": cs.iter().map(Condition::to_document).collect::<Vec<_>>() }),
            Condition::Any(cs) => json!({ "any": cs.iter().map(Condition::to_document).collect::<Vec<_>>() }),
            Condition::Not(c) => json!({ "not": c.to_document() }),
        }
    }

    /// Every field the condition reads.
    pub fn fields(&self) -> Vec<&FieldPath> {
        let mut out = Vec::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a FieldPath>) {
        match self {
            Condition::Compare { field, .. } => out.push(field),
            Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| c.collect_fields(out)),
            Condition::Not(c) => c.collect_fields(out),
        }
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_document().serialize(s)
    }
}

/// Reads a condition at `path`, collecting every error.
pub fn parse_condition(v: &Json, path: &str, errs: &mut SpecErrors) -> Option<Condition> {
    if let Json::Object(map) = v {
        for key in ["all", "any", "not"] {
            if map.contains_key(key) {
                return parse_combinator(v, key, path, errs);
            }
        }
    }
    let o = Obj::open(v, path, &["field", "operator", "value"], errs)?;
    let field = o.req_field("field", errs);
    let op_name = if o.has("operator") {
        o.choice("operator", OPERATORS, errs)
    } else {
        errs.push(o.at("operator"), format!("required field `operator` is missing (one of: {})", OPERATORS.join(", ")));
        None
    };
    let op = op_name.and_then(|name| parse_operand(&o, name, errs));
    Some(Condition::Compare { field: field?, op: op? })
}

fn parse_combinator(v: &Json, key: &str, path: &str, errs: &mut SpecErrors) -> Option<Condition> {
    let o = Obj::open(v, path, &[key], errs)?;
    let inner = &o.map[key];
    let at = o.at(key);
    if key == "not" {
        return Some(Condition::Not(Box::new(parse_condition(inner, &at, errs)?)));
    }
    let Json::Array(items) = inner else {
        errs.push(at, format!("expected a list of conditions, found {}", json_type(inner)));
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match parse_condition(item, &index(&at, i), errs) {
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    Some(if key == "all" { Condition::All(out) } else { Condition::Any(out) })
}

fn parse_operand(o: &Obj, name: &str, errs: &mut SpecErrors) -> Option<CompareOp> {
    let at = o.at("value");
    // `value: null` is a value (equals null); only a missing key is missing.
    let raw = o.map.get("value");
    let need = |what: &str, errs: &mut SpecErrors| {
        errs.push(&at, format!("`{name}` needs `value`: {what}"));
    };
    match name {
        "is_null" => return Some(CompareOp::IsNull),
        "is_not_null" => return Some(CompareOp::IsNotNull),
        _ => {}
    }
    let Some(raw) = raw else {
        let what = match name {
            "in" | "not_in" => "a list of values",
            "matches" => "a regex",
            "starts_with" | "ends_with" => "a string",
            _ => "the value to compare with",
        };
        need(what, errs);
        return None;
    };
    let value = Value::from(raw);
    Some(match name {
        "equals" => CompareOp::Equals(value),
        "not_equals" => CompareOp::NotEquals(value),
        "greater_than" | "greater_than_or_equal" | "less_than" | "less_than_or_equal" => {
            if !matches!(value, Value::Int(_) | Value::Float(_) | Value::String(_) | Value::Bool(_)) {
                errs.push(&at, format!("`{name}` compares with a number or a string, found {}", json_type(raw)));
                return None;
            }
            match name {
                "greater_than" => CompareOp::GreaterThan(value),
                "greater_than_or_equal" => CompareOp::GreaterThanOrEqual(value),
                "less_than" => CompareOp::LessThan(value),
                _ => CompareOp::LessThanOrEqual(value),
            }
        }
        "in" | "not_in" => {
            let Value::Array(items) = value else {
                errs.push(&at, format!("`{name}` needs a list of values, found {}", json_type(raw)));
                return None;
            };
            if name == "in" { CompareOp::In(items) } else { CompareOp::NotIn(items) }
        }
        "contains" => {
            if value.is_null() {
                errs.push(&at, "`contains` needs a value that is not null");
                return None;
            }
            CompareOp::Contains(value)
        }
        "starts_with" | "ends_with" => {
            let Value::String(s) = value else {
                errs.push(&at, format!("`{name}` needs a string, found {}", json_type(raw)));
                return None;
            };
            if name == "starts_with" { CompareOp::StartsWith(s) } else { CompareOp::EndsWith(s) }
        }
        "matches" => {
            let Json::String(s) = raw else {
                errs.push(&at, format!("`matches` needs a regex string, found {}", json_type(raw)));
                return None;
            };
            CompareOp::Matches(compile_regex(s, &at, errs)?)
        }
        _ => unreachable!("operator names are checked against OPERATORS"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Json) -> (Option<Condition>, Vec<String>) {
        let mut errs = SpecErrors::new();
        let c = parse_condition(&v, "c", &mut errs);
        (c, errs.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn simple_and_nested() {
        let (c, e) = parse(json!({"all": [
            {"field": "a", "operator": "equals", "value": 1},
            {"not": {"any": [{"field": "b.c", "operator": "is_null"}]}}
        ]}));
        assert!(e.is_empty(), "{e:?}");
        let c = c.unwrap();
        assert_eq!(c.fields().len(), 2);
        let doc = c.to_document();
        assert_eq!(parse(doc.clone()).0.unwrap(), c);
        assert_eq!(doc["all"][1]["not"]["any"][0]["operator"], "is_null");
    }

    #[test]
    fn equals_null_is_a_value() {
        let (c, e) = parse(json!({"field": "a", "operator": "equals", "value": null}));
        assert!(e.is_empty());
        assert_eq!(c.unwrap(), Condition::Compare { field: FieldPath::parse("a").unwrap(), op: CompareOp::Equals(Value::Null) });
    }

    #[test]
    fn errors_have_paths() {
        let (_, e) = parse(json!({"any": [
            {"field": "a", "operator": "equalz", "value": 1},
            {"field": "a", "operator": "in", "value": 3},
            {"field": "a", "operator": "matches", "value": "(unclosed"},
            {"field": "", "operator": "equals"},
            {"field": "a", "operator": "less_than", "value": [1]},
            {"field": "a", "operatr": "equals", "value": 1},
        ]}));
        assert_eq!(e.len(), 8, "{e:#?}");
        assert!(e[0].starts_with("c.any[0].operator: unknown value `equalz`; expected one of: equals,"), "{}", e[0]);
        assert!(e[1].starts_with("c.any[1].value: `in` needs a list"), "{}", e[1]);
        assert!(e[2].starts_with("c.any[2].value: invalid regex"), "{}", e[2]);
        assert!(e[3].starts_with("c.any[3].field:"), "{}", e[3]);
        assert!(e[4].starts_with("c.any[3].value: `equals` needs `value`"), "{}", e[4]);
        assert!(e[5].starts_with("c.any[4].value:"), "{}", e[5]);
        assert!(e[6].starts_with("c.any[5].operatr: unknown field"), "{}", e[6]);
        assert!(e[7].starts_with("c.any[5].operator: required field"), "{}", e[7]);
    }

    #[test]
    fn combinator_must_stand_alone() {
        let (_, e) = parse(json!({"all": [], "field": "x"}));
        assert_eq!(e, ["c.field: unknown field `field`; expected one of: all"]);
        let (_, e) = parse(json!({"all": {"field": "x"}}));
        assert_eq!(e, ["c.all: expected a list of conditions, found an object"]);
        let (_, e) = parse(json!("status == 1"));
        assert_eq!(e, ["c: expected an object, found a string"]);
    }
}
