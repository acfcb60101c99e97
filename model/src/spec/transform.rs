//! The transformation catalogue (`spec/pipeline.md`, "Transformations"): one closed registry.
//!
//! [`TransformSpec`] has a variant per transformation type dagg implements and
//! [`parse_transformations`] is the one place that maps a `type` to its reader. Everything is
//! checked and compiled here, once, when the pipeline is validated: regexes are compiled,
//! field references are [`FieldPath`]s, time zones are [`chrono_tz::Tz`], strftime formats
//! are parsed, replacement templates are resolved against their regex, and `script`s are
//! compiled. The executor (`dagg-transforms`) therefore never parses anything per record.
//!
//! Every error is collected with its path (`transformations[2].condition.operator`), so a
//! document with three mistakes yields three errors. Unknown keys are errors, including
//! inside `parameters`.
//!
//! Every spec prints back as the document it came from ([`TransformSpec::to_document`], also
//! its `Serialize`), and that document parses to an equal spec.

pub mod script;
pub mod template;

use chrono::format::{Item, StrftimeItems};
use chrono_tz::Tz;
use serde::{Serialize, Serializer};
use serde_json::{Value as Json, json};

pub use crate::spec::condition::{CompareOp, Condition, Pattern, compile_regex, parse_condition};
use crate::error::{SpecErrors, index};
use crate::record::FieldPath;
use crate::spec::reader::{Obj, json_type};
use crate::value::{Map, Str, Value};
pub use template::{Template, TemplatePart};

/// The `type` names dagg implements, as users write them.
pub const IMPLEMENTED: &[&str] = &[
    "field_mapping",
    "field_operation",
    "field_calculation",
    "field_addition",
    "field_removal",
    "record_filter",
    "field_validation",
    "conditional",
    "aggregation",
    "join",
    "record_split",
    "deduplicate",
    "script",
];

/// Types that keep state across records and so may not stand inside `conditional`.
pub const STATEFUL: &[&str] = &["aggregation", "join", "deduplicate"];

/// One transformation, validated and compiled.
#[derive(Clone, Debug, PartialEq)]
pub enum TransformSpec {
    /// `field_mapping` / `field_operation`: changes one field in place.
    FieldOperation(FieldOperationSpec),
    /// `field_calculation`: arithmetic over fields, left to right.
    FieldCalculation(CalculationSpec),
    /// `field_addition`: adds (or overwrites in place) a field.
    FieldAddition(AdditionSpec),
    /// `field_removal`: drops fields.
    FieldRemoval(RemovalSpec),
    /// `record_filter`: keeps records whose condition holds.
    RecordFilter(FilterSpec),
    /// `field_validation`: checks a field.
    FieldValidation(ValidationSpec),
    /// `conditional`: runs `then` or `else`.
    Conditional(ConditionalSpec),
    /// `aggregation`: groups and folds.
    Aggregation(AggregationSpec),
    /// `join`: enriches from a named source.
    Join(JoinSpec),
    /// `record_split`: one record per element of an array field.
    RecordSplit(SplitSpec),
    /// `deduplicate`: one record per key.
    Deduplicate(DedupSpec),
    /// `script`: a Rhai script over the record.
    Script(ScriptSpec),
}

impl TransformSpec {
    /// The `type` as the document names it.
    pub fn type_name(&self) -> &'static str {
        match self {
            TransformSpec::FieldOperation(s) => s.type_name,
            TransformSpec::FieldCalculation(_) => "field_calculation",
            TransformSpec::FieldAddition(_) => "field_addition",
            TransformSpec::FieldRemoval(_) => "field_removal",
            TransformSpec::RecordFilter(_) => "record_filter",
            TransformSpec::FieldValidation(_) => "field_validation",
            TransformSpec::Conditional(_) => "conditional",
            TransformSpec::Aggregation(_) => "aggregation",
            TransformSpec::Join(_) => "join",
            TransformSpec::RecordSplit(_) => "record_split",
            TransformSpec::Deduplicate(_) => "deduplicate",
            TransformSpec::Script(_) => "script",
        }
    }

    /// `aggregation`, `join` and `deduplicate`, the steps the spec calls stateful.
    pub fn is_stateful(&self) -> bool {
        STATEFUL.contains(&self.type_name())
    }

    /// The transformation as the pipeline document writes it.
    pub fn to_document(&self) -> Json {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), Json::String(self.type_name().into()));
        let mut put = |k: &str, v: Json| {
            m.insert(k.into(), v);
        };
        let path = |p: &FieldPath| Json::String(p.to_string());
        let paths = |ps: &[FieldPath]| Json::Array(ps.iter().map(path).collect());
        match self {
            TransformSpec::FieldOperation(s) => {
                put("field_name", path(&s.field));
                put("operation", Json::String(s.op.name().into()));
                let params = s.op.parameters();
                if !params.is_empty() {
                    put("parameters", Json::Object(params));
                }
            }
            TransformSpec::FieldCalculation(s) => {
                put("field_name", path(&s.output));
                put("operation", Json::String(s.op.name().into()));
                put("parameters", json!({"source_fields": paths(&s.sources), "output_field": path(&s.output)}));
            }
            TransformSpec::FieldAddition(s) => {
                put("field_name", path(&s.field));
                match &s.value {
                    AddValue::Literal(v) => put("value", Json::from(v)),
                    AddValue::CurrentTimestamp => put("value", json!("current_timestamp")),
                    AddValue::CurrentDate => put("value", json!("current_date")),
                    AddValue::Uuid => put("value", json!("uuid")),
                    AddValue::Concat { sources, separator } => {
                        put("operation", json!("concat"));
                        put("parameters", json!({"source_fields": paths(sources), "separator": separator}));
                    }
                }
            }
            TransformSpec::FieldRemoval(s) => put("field_names", paths(&s.fields)),
            TransformSpec::RecordFilter(s) => put("condition", s.condition.to_document()),
            TransformSpec::FieldValidation(s) => {
                put("field_name", path(&s.field));
                put("validation_type", Json::String(s.check.name().into()));
                let params = s.check.parameters();
                if !params.is_empty() {
                    put("parameters", Json::Object(params));
                }
                put("on_failure", Json::String(s.on_failure.name().into()));
            }
            TransformSpec::Conditional(s) => {
                put("condition", s.condition.to_document());
                put("then", Json::Array(s.then.iter().map(TransformSpec::to_document).collect()));
                if !s.otherwise.is_empty() {
                    put("else", Json::Array(s.otherwise.iter().map(TransformSpec::to_document).collect()));
                }
            }
            TransformSpec::Aggregation(s) => {
                put("group_by_fields", paths(&s.group_by));
                let fields = s
                    .fields
                    .iter()
                    .map(|f| {
                        let mut o = serde_json::Map::new();
                        if let Some(i) = &f.input {
                            o.insert("input_field".into(), path(i));
                        }
                        o.insert("output_field".into(), path(&f.output));
                        o.insert("operation".into(), Json::String(f.op.name().into()));
                        Json::Object(o)
                    })
                    .collect();
                put("aggregated_fields", Json::Array(fields));
                put("include_details", Json::Bool(s.include_details));
                if let Some(w) = &s.window {
                    put("window", json!({"type": "tumbling", "size_seconds": w.size_seconds, "time_field": path(&w.time_field)}));
                }
            }
            TransformSpec::Join(s) => {
                put("join_type", Json::String(s.join_type.name().into()));
                put("primary_key", path(&s.primary_key));
                put("foreign_key", path(&s.foreign_key));
                put("join_source", Json::String(s.join_source.clone()));
                if let Some(f) = &s.included_fields {
                    put("included_fields", Json::Array(f.iter().map(|s| Json::String(s.to_string())).collect()));
                }
            }
            TransformSpec::RecordSplit(s) => {
                put("field_name", path(&s.field));
                put("output_field", path(&s.output));
            }
            TransformSpec::Deduplicate(s) => {
                put("key_fields", paths(&s.key_fields));
                put("keep", Json::String(if s.keep_last { "last" } else { "first" }.into()));
            }
            TransformSpec::Script(s) => {
                put("source", Json::String(s.source.clone()));
                put("max_operations", json!(s.max_operations));
                put("timeout_ms", json!(s.timeout_ms));
                if !s.variables.is_empty() {
                    put("variables", Json::Object(s.variables.iter().map(|(k, v)| (k.clone(), Json::from(v))).collect()));
                }
            }
        }
        Json::Object(m)
    }
}

impl Serialize for TransformSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_document().serialize(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Field operations

/// `field_mapping` / `field_operation`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldOperationSpec {
    /// `field_mapping` or `field_operation`, as written (they mean the same).
    pub type_name: &'static str,
    /// `field_name`: the field changed in place.
    pub field: FieldPath,
    pub op: FieldOp,
}

/// The operation names, as users write them.
pub const FIELD_OPERATIONS: &[&str] = &[
    "title_case",
    "lowercase",
    "uppercase",
    "trim",
    "format",
    "replace",
    "rename",
    "cast",
    "round",
    "date_format",
    "hash",
    "mask",
    "lookup",
    "default",
    "split",
];

/// A field operation with its typed parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldOp {
    /// A letter at the start or after white space or `-` is upper-cased, every other letter
    /// lower-cased.
    TitleCase,
    Lowercase,
    Uppercase,
    /// White space removed at both ends.
    Trim,
    /// The regex is searched; the whole value becomes `pattern` expanded with the match.
    Format { regex: Pattern, pattern: Template },
    /// Every match replaced with `replacement` expanded.
    Replace { regex: Pattern, replacement: Template },
    /// Moves the value to the path `to`; in place when `to` is in the same object.
    Rename { to: FieldPath },
    Cast { to: CastType },
    /// Half away from zero to `digits` decimals; the result is a float.
    Round { digits: i32 },
    DateFormat(DateFormat),
    Hash { algorithm: HashAlgorithm, salt: String },
    /// All but the last `keep_last` characters of the text become `*`.
    Mask { keep_last: usize },
    /// The value's text looked up in `table`; `default` when absent (else unchanged).
    Lookup { table: Map, default: Option<Value> },
    /// Sets `value` when the field is missing or null.
    Default { value: Value },
    /// A string split on a literal separator into an array.
    Split { separator: String },
}

impl FieldOp {
    pub fn name(&self) -> &'static str {
        match self {
            FieldOp::TitleCase => "title_case",
            FieldOp::Lowercase => "lowercase",
            FieldOp::Uppercase => "uppercase",
            FieldOp::Trim => "trim",
            FieldOp::Format { .. } => "format",
            FieldOp::Replace { .. } => "replace",
            FieldOp::Rename { .. } => "rename",
            FieldOp::Cast { .. } => "cast",
            FieldOp::Round { .. } => "round",
            FieldOp::DateFormat(_) => "date_format",
            FieldOp::Hash { .. } => "hash",
            FieldOp::Mask { .. } => "mask",
            FieldOp::Lookup { .. } => "lookup",
            FieldOp::Default { .. } => "default",
            FieldOp::Split { .. } => "split",
        }
    }

    fn parameters(&self) -> serde_json::Map<String, Json> {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: Json| {
            m.insert(k.into(), v);
        };
        match self {
            FieldOp::TitleCase | FieldOp::Lowercase | FieldOp::Uppercase | FieldOp::Trim => {}
            FieldOp::Format { regex, pattern } => {
                put("regex", json!(regex.as_str()));
                put("pattern", json!(pattern.text));
            }
            FieldOp::Replace { regex, replacement } => {
                put("regex", json!(regex.as_str()));
                put("replacement", json!(replacement.text));
            }
            FieldOp::Rename { to } => put("to", json!(to.as_str())),
            FieldOp::Cast { to } => put("to", json!(to.name())),
            FieldOp::Round { digits } => put("digits", json!(digits)),
            FieldOp::DateFormat(d) => {
                if let Some(f) = &d.input_format {
                    put("input_format", json!(f.text));
                }
                if let Some(f) = &d.output_format {
                    put("output_format", json!(f.text));
                }
                if let Some(tz) = &d.timezone {
                    put("timezone", json!(tz.name()));
                }
            }
            FieldOp::Hash { algorithm, salt } => {
                put("algorithm", json!(algorithm.name()));
                if !salt.is_empty() {
                    put("salt", json!(salt));
                }
            }
            FieldOp::Mask { keep_last } => put("keep_last", json!(keep_last)),
            FieldOp::Lookup { table, default } => {
                put("table", Json::from(&Value::Object(table.clone())));
                if let Some(d) = default {
                    put("default", Json::from(d));
                }
            }
            FieldOp::Default { value } => put("value", Json::from(value)),
            FieldOp::Split { separator } => put("separator", json!(separator)),
        }
        m
    }
}

/// `cast` targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CastType {
    String,
    Integer,
    Float,
    Boolean,
}

impl CastType {
    pub const NAMES: &'static [&'static str] = &["string", "integer", "float", "boolean"];

    pub fn name(self) -> &'static str {
        match self {
            CastType::String => "string",
            CastType::Integer => "integer",
            CastType::Float => "float",
            CastType::Boolean => "boolean",
        }
    }
}

/// `hash` algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha256,
    Sha1,
    Md5,
}

impl HashAlgorithm {
    pub const NAMES: &'static [&'static str] = &["sha256", "sha1", "md5"];

    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha1 => "sha1",
            HashAlgorithm::Md5 => "md5",
        }
    }
}

/// A strftime format, parsed once.
#[derive(Clone, Debug, PartialEq)]
pub struct Strftime {
    /// As written.
    pub text: String,
    pub items: Vec<Item<'static>>,
}

impl Strftime {
    pub fn parse(text: &str) -> Result<Strftime, String> {
        let items = StrftimeItems::new(text)
            .parse_to_owned()
            .map_err(|_| format!("`{text}` is not a valid strftime format (see chrono's `format::strftime`)"))?;
        if items.is_empty() {
            return Err("a format may not be empty".into());
        }
        Ok(Strftime { text: text.to_string(), items })
    }
}

/// `date_format` parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct DateFormat {
    /// Without it, the value is RFC 3339 or `YYYY-MM-DD`.
    pub input_format: Option<Strftime>,
    /// Without it, RFC 3339.
    pub output_format: Option<Strftime>,
    /// Without it, the value keeps its own offset (a value without one is UTC).
    pub timezone: Option<Tz>,
}

// ---------------------------------------------------------------------------------------------
// Other step specs

/// `field_calculation`.
#[derive(Clone, Debug, PartialEq)]
pub struct CalculationSpec {
    pub op: ArithOp,
    /// `parameters.source_fields`, folded left to right.
    pub sources: Vec<FieldPath>,
    /// `parameters.output_field`, else `field_name`.
    pub output: FieldPath,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Subtract,
    Multiply,
    Divide,
}

impl ArithOp {
    pub const NAMES: &'static [&'static str] = &["add", "subtract", "multiply", "divide"];

    pub fn name(self) -> &'static str {
        match self {
            ArithOp::Add => "add",
            ArithOp::Subtract => "subtract",
            ArithOp::Multiply => "multiply",
            ArithOp::Divide => "divide",
        }
    }
}

/// `field_addition`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdditionSpec {
    pub field: FieldPath,
    pub value: AddValue,
}

/// What `field_addition` writes.
#[derive(Clone, Debug, PartialEq)]
pub enum AddValue {
    /// A literal, as written.
    Literal(Value),
    /// `"current_timestamp"`: the batch's time, RFC 3339 UTC with milliseconds.
    CurrentTimestamp,
    /// `"current_date"`: the batch's UTC date, `YYYY-MM-DD`.
    CurrentDate,
    /// `"uuid"`: a random UUID v4 per record.
    Uuid,
    /// `operation: concat`: the sources' text joined by `separator`; missing or null sources
    /// are skipped.
    Concat { sources: Vec<FieldPath>, separator: String },
}

/// `field_removal`.
#[derive(Clone, Debug, PartialEq)]
pub struct RemovalSpec {
    pub fields: Vec<FieldPath>,
}

/// `record_filter`.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterSpec {
    pub condition: Condition,
}

/// `field_validation`.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidationSpec {
    pub field: FieldPath,
    pub check: Validation,
    pub on_failure: OnFailure,
}

/// `validation_type` with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Validation {
    /// The HTML standard's "valid e-mail address", with a dot in the domain.
    EmailFormat,
    NotNull,
    /// `parameters.pattern`, searched in the value's text.
    Regex(Pattern),
    /// `parameters.min`, `parameters.max`, inclusive; numbers only.
    Range { min: Option<Value>, max: Option<Value> },
    /// `parameters.values`.
    InSet(Vec<Value>),
    /// Absolute `http` or `https` with a host.
    Url,
    /// RFC 3339 date-time or `YYYY-MM-DD`.
    Date,
}

pub const VALIDATION_TYPES: &[&str] = &["email_format", "not_null", "regex", "range", "in_set", "url", "date"];

impl Validation {
    pub fn name(&self) -> &'static str {
        match self {
            Validation::EmailFormat => "email_format",
            Validation::NotNull => "not_null",
            Validation::Regex(_) => "regex",
            Validation::Range { .. } => "range",
            Validation::InSet(_) => "in_set",
            Validation::Url => "url",
            Validation::Date => "date",
        }
    }

    fn parameters(&self) -> serde_json::Map<String, Json> {
        let mut m = serde_json::Map::new();
        match self {
            Validation::Regex(p) => {
                m.insert("pattern".into(), json!(p.as_str()));
            }
            Validation::Range { min, max } => {
                if let Some(v) = min {
                    m.insert("min".into(), Json::from(v));
                }
                if let Some(v) = max {
                    m.insert("max".into(), Json::from(v));
                }
            }
            Validation::InSet(vs) => {
                m.insert("values".into(), Json::Array(vs.iter().map(Json::from).collect()));
            }
            _ => {}
        }
        m
    }
}

/// What a failed validation does with the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// To the dead letter destination, with the reason (the default).
    Reject,
    /// Counted, not kept.
    Drop,
    /// Kept, with the failure appended to `_validation_errors`.
    Flag,
}

impl OnFailure {
    pub const NAMES: &'static [&'static str] = &["reject", "drop", "flag"];

    pub fn name(self) -> &'static str {
        match self {
            OnFailure::Reject => "reject",
            OnFailure::Drop => "drop",
            OnFailure::Flag => "flag",
        }
    }
}

/// `conditional`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionalSpec {
    pub condition: Condition,
    pub then: Vec<TransformSpec>,
    /// `else` (empty when absent).
    pub otherwise: Vec<TransformSpec>,
}

/// `aggregation`.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregationSpec {
    pub group_by: Vec<FieldPath>,
    pub fields: Vec<AggregatedField>,
    /// Adds `details`, the group's input records.
    pub include_details: bool,
    pub window: Option<TumblingWindow>,
}

/// One entry of `aggregated_fields`.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregatedField {
    /// `input_field`; only `count` may leave it out (it then counts records).
    pub input: Option<FieldPath>,
    pub output: FieldPath,
    pub op: AggOp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Average,
    Count,
    CountDistinct,
    Min,
    Max,
    First,
    Last,
    Collect,
}

impl AggOp {
    pub const NAMES: &'static [&'static str] =
        &["sum", "average", "count", "count_distinct", "min", "max", "first", "last", "collect"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn from_name(s: &str) -> Option<AggOp> {
        use AggOp::*;
        [Sum, Average, Count, CountDistinct, Min, Max, First, Last, Collect].into_iter().find(|op| op.name() == s)
    }
}

/// `window: {"type": "tumbling", "size_seconds", "time_field"}`.
#[derive(Clone, Debug, PartialEq)]
pub struct TumblingWindow {
    pub size_seconds: u64,
    /// RFC 3339 (or `YYYY-MM-DD`) text, or a number of seconds since the Unix epoch.
    pub time_field: FieldPath,
}

/// `join`.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinSpec {
    pub join_type: JoinType,
    /// The field in the stream.
    pub primary_key: FieldPath,
    /// The field in the join source.
    pub foreign_key: FieldPath,
    /// The name of an entry of `sources`.
    pub join_source: String,
    /// Where `join_source` sits in the document (`transformations[3].join_source`).
    pub join_source_path: String,
    /// Names copied from the match; `None`: every field but the key.
    pub included_fields: Option<Vec<Str>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinType {
    Left,
    Inner,
}

impl JoinType {
    pub fn name(self) -> &'static str {
        match self {
            JoinType::Left => "left",
            JoinType::Inner => "inner",
        }
    }
}

/// `record_split`.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitSpec {
    pub field: FieldPath,
    /// `output_field`, else `field_name`.
    pub output: FieldPath,
}

/// `deduplicate`.
#[derive(Clone, Debug, PartialEq)]
pub struct DedupSpec {
    pub key_fields: Vec<FieldPath>,
    /// `keep: last` (waits for the end of the run); else the first record of a key passes.
    pub keep_last: bool,
}

/// `script`: `{"type": "script", "source": "...", "max_operations": 100000, "timeout_ms": 100}`.
#[derive(Clone, Debug)]
pub struct ScriptSpec {
    /// The Rhai source, as written.
    pub source: String,
    /// Compiled when the pipeline was validated.
    pub ast: rhai::AST,
    /// Rhai operations allowed per record (default [`ScriptSpec::DEFAULT_MAX_OPERATIONS`]).
    pub max_operations: u64,
    /// Wall-clock time allowed per record, in milliseconds (default
    /// [`ScriptSpec::DEFAULT_TIMEOUT_MS`]).
    pub timeout_ms: u64,
    /// Constants the script reads by name (`variables: {"limit": 10}`). An event trigger
    /// passes its event as `event` here: `${event.field}` in the source reads it, the
    /// event's text never becomes script code.
    pub variables: Vec<(String, Value)>,
}

impl ScriptSpec {
    pub const DEFAULT_MAX_OPERATIONS: u64 = 100_000;
    pub const DEFAULT_TIMEOUT_MS: u64 = 100;
}

impl PartialEq for ScriptSpec {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.max_operations == other.max_operations && self.timeout_ms == other.timeout_ms && self.variables == other.variables
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Reads the `transformations` list at `path` (normally "transformations"), collecting every
/// error (with paths like `transformations[2].condition.operator`) into `errs`.
///
/// A missing list (`null`) is an empty one. The result holds the transformations that read
/// without error; when `errs` gained anything, the pipeline is invalid.
pub fn parse_transformations(v: &serde_json::Value, path: &str, errs: &mut SpecErrors) -> Vec<TransformSpec> {
    parse_list(v, path, false, errs).unwrap_or_default()
}

/// Every `join` in the list (recursing into nothing: joins may not stand inside conditional),
/// as (path of its `join_source` key, e.g. "transformations[3].join_source", source name).
pub fn join_sources(specs: &[TransformSpec]) -> Vec<(String, String)> {
    specs
        .iter()
        .filter_map(|s| match s {
            TransformSpec::Join(j) => Some((j.join_source_path.clone(), j.join_source.clone())),
            _ => None,
        })
        .collect()
}

fn parse_list(v: &Json, path: &str, nested: bool, errs: &mut SpecErrors) -> Option<Vec<TransformSpec>> {
    let items = match v {
        Json::Null => return Some(Vec::new()),
        Json::Array(items) => items,
        other => {
            errs.push(path, format!("expected a list of transformations, found {}", json_type(other)));
            return None;
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(t) = parse_one(item, &index(path, i), nested, errs) {
            out.push(t);
        }
    }
    Some(out)
}

/// Keys every transformation accepts, besides its type's own.
const COMMON: &[&str] = &["type"];

fn keys(own: &[&'static str]) -> Vec<&'static str> {
    COMMON.iter().chain(own).copied().collect()
}

fn parse_one(v: &Json, path: &str, nested: bool, errs: &mut SpecErrors) -> Option<TransformSpec> {
    let Json::Object(map) = v else {
        errs.push(path, format!("expected a transformation (an object with a `type`), found {}", json_type(v)));
        return None;
    };
    let type_path = crate::error::join(path, "type");
    let ty = match map.get("type") {
        None | Some(Json::Null) => {
            errs.push(&type_path, format!("required field `type` is missing; implemented types: {}", IMPLEMENTED.join(", ")));
            return None;
        }
        Some(Json::String(s)) => s.as_str(),
        Some(other) => {
            errs.push(&type_path, format!("expected a string, found {}", json_type(other)));
            return None;
        }
    };
    let Some(ty) = IMPLEMENTED.iter().copied().find(|t| *t == ty) else {
        errs.push(
            &type_path,
            format!("unknown or unimplemented transformation type `{ty}`; implemented types: {}", IMPLEMENTED.join(", ")),
        );
        return None;
    };
    let before = errs.len();
    if nested && STATEFUL.contains(&ty) {
        errs.push(
            &type_path,
            format!("`{ty}` is stateful and may not stand inside `conditional` (stateful steps: {}); put it at the top level", STATEFUL.join(", ")),
        );
    }
    let spec = match ty {
        "field_mapping" | "field_operation" => parse_field_operation(v, path, ty, errs),
        "field_calculation" => parse_calculation(v, path, errs),
        "field_addition" => parse_addition(v, path, errs),
        "field_removal" => {
            let o = Obj::open(v, path, &keys(&["field_names"]), errs)?;
            let fields = req_list(&o, "field_names", errs, |o, e| o.field_list("field_names", e));
            Some(TransformSpec::FieldRemoval(RemovalSpec { fields: fields? }))
        }
        "record_filter" => {
            let o = Obj::open(v, path, &keys(&["condition"]), errs)?;
            let condition = req_condition(&o, errs);
            Some(TransformSpec::RecordFilter(FilterSpec { condition: condition? }))
        }
        "field_validation" => parse_validation(v, path, errs),
        "conditional" => {
            let o = Obj::open(v, path, &keys(&["condition", "then", "else"]), errs)?;
            let condition = req_condition(&o, errs);
            if !o.has("then") && !o.has("else") {
                errs.push(o.at("then"), "required field `then` is missing (a list of transformations)");
            }
            let then = parse_list(o.map.get("then").unwrap_or(&Json::Null), &o.at("then"), true, errs);
            let otherwise = parse_list(o.map.get("else").unwrap_or(&Json::Null), &o.at("else"), true, errs);
            Some(TransformSpec::Conditional(ConditionalSpec { condition: condition?, then: then?, otherwise: otherwise? }))
        }
        "aggregation" => parse_aggregation(v, path, errs),
        "join" => parse_join(v, path, errs),
        "record_split" => {
            let o = Obj::open(v, path, &keys(&["field_name", "output_field"]), errs)?;
            let field = o.req_field("field_name", errs);
            let output = o.field("output_field", errs);
            let field = field?;
            let output = output.unwrap_or_else(|| field.clone());
            Some(TransformSpec::RecordSplit(SplitSpec { field, output }))
        }
        "deduplicate" => {
            let o = Obj::open(v, path, &keys(&["key_fields", "keep"]), errs)?;
            let key_fields = req_list(&o, "key_fields", errs, |o, e| o.field_list("key_fields", e));
            let keep = if o.has("keep") { o.choice("keep", &["first", "last"], errs).map(|k| k == "last") } else { Some(false) };
            Some(TransformSpec::Deduplicate(DedupSpec { key_fields: key_fields?, keep_last: keep? }))
        }
        "script" => parse_script(v, path, errs),
        _ => unreachable!("every implemented type has a reader"),
    };
    // A step with any error is left out, even when its reader managed to build something.
    if errs.len() > before { None } else { spec }
}

/// A required, non-empty list read by `read`.
fn req_list<T>(
    o: &Obj,
    key: &str,
    errs: &mut SpecErrors,
    read: impl FnOnce(&Obj, &mut SpecErrors) -> Option<Vec<T>>,
) -> Option<Vec<T>> {
    if !o.has(key) {
        errs.push(o.at(key), format!("required field `{key}` is missing (a list)"));
        return None;
    }
    let list = read(o, errs)?;
    if list.is_empty() {
        errs.push(o.at(key), format!("`{key}` may not be empty"));
        return None;
    }
    Some(list)
}

fn req_condition(o: &Obj, errs: &mut SpecErrors) -> Option<Condition> {
    match o.get("condition") {
        Some(c) => parse_condition(c, &o.at("condition"), errs),
        None => {
            errs.push(o.at("condition"), "required field `condition` is missing");
            None
        }
    }
}

/// A required choice among `names`, reported with the list when missing.
fn req_choice<'a>(o: &Obj<'a>, key: &str, names: &[&str], errs: &mut SpecErrors) -> Option<&'a str> {
    if !o.has(key) {
        errs.push(o.at(key), format!("required field `{key}` is missing (one of: {})", names.join(", ")));
        return None;
    }
    o.choice(key, names, errs)
}

/// Opens `parameters` (absent: an empty object) allowing only `allowed`.
fn open_params<'a>(o: &Obj<'a>, allowed: &[&str], errs: &mut SpecErrors) -> Option<Obj<'a>> {
    static EMPTY: std::sync::OnceLock<Json> = std::sync::OnceLock::new();
    let v = match o.map.get("parameters") {
        None | Some(Json::Null) => EMPTY.get_or_init(|| Json::Object(serde_json::Map::new())),
        Some(v) => v,
    };
    Obj::open(v, &o.at("parameters"), allowed, errs)
}

fn parse_field_operation(v: &Json, path: &str, ty: &'static str, errs: &mut SpecErrors) -> Option<TransformSpec> {
    let o = Obj::open(v, path, &keys(&["field_name", "operation", "parameters"]), errs)?;
    let field = o.req_field("field_name", errs);
    let op_name = req_choice(&o, "operation", FIELD_OPERATIONS, errs);
    let op = match op_name {
        Some(name) => parse_field_op(&o, name, errs),
        None => None,
    };
    Some(TransformSpec::FieldOperation(FieldOperationSpec { type_name: ty, field: field?, op: op? }))
}

fn parse_field_op(o: &Obj, name: &str, errs: &mut SpecErrors) -> Option<FieldOp> {
    let allowed: &[&str] = match name {
        "format" => &["regex", "pattern"],
        "replace" => &["regex", "replacement"],
        "rename" | "cast" => &["to"],
        "round" => &["digits"],
        "date_format" => &["input_format", "output_format", "timezone"],
        "hash" => &["algorithm", "salt"],
        "mask" => &["keep_last"],
        "lookup" => &["table", "default"],
        "default" => &["value"],
        "split" => &["separator"],
        _ => &[],
    };
    let p = open_params(o, allowed, errs)?;
    Some(match name {
        "title_case" => FieldOp::TitleCase,
        "lowercase" => FieldOp::Lowercase,
        "uppercase" => FieldOp::Uppercase,
        "trim" => FieldOp::Trim,
        "format" | "replace" => {
            let tkey = if name == "format" { "pattern" } else { "replacement" };
            let regex = p.req_str("regex", errs).and_then(|r| compile_regex(r, &p.at("regex"), errs));
            let text = p.req_str(tkey, errs);
            let (regex, text) = (regex?, text?);
            let template = Template::parse(text, &regex.0).map_err(|m| errs.push(p.at(tkey), m)).ok()?;
            if name == "format" {
                FieldOp::Format { regex, pattern: template }
            } else {
                FieldOp::Replace { regex, replacement: template }
            }
        }
        "rename" => FieldOp::Rename { to: p.req_field("to", errs)? },
        "cast" => {
            let to = req_choice(&p, "to", CastType::NAMES, errs)?;
            let to = match to {
                "string" => CastType::String,
                "integer" => CastType::Integer,
                "float" => CastType::Float,
                _ => CastType::Boolean,
            };
            FieldOp::Cast { to }
        }
        "round" => FieldOp::Round { digits: if p.has("digits") { p.int("digits", -15, 15, errs)? as i32 } else { 0 } },
        "date_format" => {
            let fmt = |key: &str, errs: &mut SpecErrors| -> Result<Option<Strftime>, ()> {
                match p.str(key, errs) {
                    None if p.has(key) => Err(()),
                    None => Ok(None),
                    Some(s) => Strftime::parse(s).map(Some).map_err(|m| errs.push(p.at(key), m)),
                }
            };
            let input_format = fmt("input_format", errs);
            let output_format = fmt("output_format", errs);
            let timezone = match p.str("timezone", errs) {
                None if p.has("timezone") => Err(()),
                None => Ok(None),
                Some(s) => s.parse::<Tz>().map(Some).map_err(|_| {
                    errs.push(p.at("timezone"), format!("unknown time zone `{s}`; expected an IANA name such as `Europe/Paris` or `UTC`"))
                }),
            };
            FieldOp::DateFormat(DateFormat {
                input_format: input_format.ok()?,
                output_format: output_format.ok()?,
                timezone: timezone.ok()?,
            })
        }
        "hash" => {
            let algorithm = if p.has("algorithm") {
                match p.choice("algorithm", HashAlgorithm::NAMES, errs)? {
                    "sha256" => HashAlgorithm::Sha256,
                    "sha1" => HashAlgorithm::Sha1,
                    _ => HashAlgorithm::Md5,
                }
            } else {
                HashAlgorithm::Sha256
            };
            let salt = if p.has("salt") { p.str("salt", errs)?.to_string() } else { String::new() };
            FieldOp::Hash { algorithm, salt }
        }
        "mask" => FieldOp::Mask {
            keep_last: if p.has("keep_last") { p.int("keep_last", 0, 1 << 20, errs)? as usize } else { 4 },
        },
        "lookup" => {
            let table = match p.get("table") {
                None => {
                    errs.push(p.at("table"), "required field `table` is missing (an object of text to value)");
                    None
                }
                Some(Json::Object(_)) => match Value::from(&p.map["table"]) {
                    Value::Object(m) => Some(m),
                    _ => unreachable!(),
                },
                Some(other) => {
                    errs.push(p.at("table"), format!("expected an object, found {}", json_type(other)));
                    None
                }
            };
            FieldOp::Lookup { table: table?, default: p.value("default") }
        }
        "default" => match p.value("value") {
            Some(value) => FieldOp::Default { value },
            None => {
                errs.push(p.at("value"), "required field `value` is missing (the value to set)");
                return None;
            }
        },
        "split" => {
            let separator = if p.has("separator") { p.str("separator", errs)?.to_string() } else { ",".to_string() };
            if separator.is_empty() {
                errs.push(p.at("separator"), "the separator may not be empty");
                return None;
            }
            FieldOp::Split { separator }
        }
        _ => unreachable!("operation names are checked against FIELD_OPERATIONS"),
    })
}

fn parse_calculation(v: &Json, path: &str, errs: &mut SpecErrors) -> Option<TransformSpec> {
    let o = Obj::open(v, path, &keys(&["field_name", "operation", "parameters"]), errs)?;
    let field = o.field("field_name", errs);
    let op = req_choice(&o, "operation", ArithOp::NAMES, errs).map(|s| match s {
        "add" => ArithOp::Add,
        "subtract" => ArithOp::Subtract,
        "multiply" => ArithOp::Multiply,
        _ => ArithOp::Divide,
    });
    let p = if o.has("parameters") {
        open_params(&o, &["source_fields", "output_field"], errs)
    } else {
        errs.push(o.at("parameters"), "required field `parameters` is missing (with `source_fields`)");
        None
    };
    let (sources, output) = match &p {
        Some(p) => (req_list(p, "source_fields", errs, |p, e| p.field_list("source_fields", e)), p.field("output_field", errs)),
        None => (None, None),
    };
    let output = output.or(field);
    if output.is_none() && !o.has("field_name") && p.as_ref().is_some_and(|p| !p.has("output_field")) {
        errs.push(o.at("field_name"), "required field `field_name` is missing (or `parameters.output_field`): where the result goes");
    }
    Some(TransformSpec::FieldCalculation(CalculationSpec { op: op?, sources: sources?, output: output? }))
}

fn parse_addition(v: &Json, path: &str, errs: &mut SpecErrors) -> Option<TransformSpec> {
    let o = Obj::open(v, path, &keys(&["field_name", "value", "operation", "parameters"]), errs)?;
    let field = o.req_field("field_name", errs);
    let has_value = o.map.contains_key("value");
    let value = if o.map.contains_key("operation") {
        if has_value {
            errs.push(o.at("value"), "give either `value` or `operation`, not both");
        }
        let op = req_choice(&o, "operation", &["concat"], errs);
        let p = if o.has("parameters") {
            open_params(&o, &["source_fields", "separator"], errs)
        } else {
            errs.push(o.at("parameters"), "required field `parameters` is missing (with `source_fields`)");
            None
        };
        let (sources, separator) = match &p {
            Some(p) => (
                req_list(p, "source_fields", errs, |p, e| p.field_list("source_fields", e)),
                if p.has("separator") { p.str("separator", errs).map(str::to_string) } else { Some(String::new()) },
            ),
            None => (None, None),
        };
        op?;
        AddValue::Concat { sources: sources?, separator: separator? }
    } else if has_value {
        if o.map.contains_key("parameters") {
            errs.push(o.at("parameters"), "`parameters` goes with `operation: concat`, not with `value`");
        }
        match o.value("value").expect("checked") {
            Value::String(s) if s == "current_timestamp" => AddValue::CurrentTimestamp,
            Value::String(s) if s == "current_date" => AddValue::CurrentDate,
            Value::String(s) if s == "uuid" => AddValue::Uuid,
            v => AddValue::Literal(v),
        }
    } else {
        errs.push(o.at("value"), "required field `value` is missing (or `operation: concat` with `parameters`)");
        return None;
    };
    Some(TransformSpec::FieldAddition(AdditionSpec { field: field?, value }))
}

fn parse_validation(v: &Json, path: &str, errs: &mut SpecErrors) -> Option<TransformSpec> {
    let o = Obj::open(v, path, &keys(&["field_name", "validation_type", "parameters", "on_failure"]), errs)?;
    let field = o.req_field("field_name", errs);
    let name = req_choice(&o, "validation_type", VALIDATION_TYPES, errs);
    let check = name.and_then(|name| {
        let allowed: &[&str] = match name {
            "regex" => &["pattern"],
            "range" => &["min", "max"],
            "in_set" => &["values"],
            _ => &[],
        };
        let p = open_params(&o, allowed, errs)?;
        Some(match name {
            "email_format" => Validation::EmailFormat,
            "not_null" => Validation::NotNull,
            "url" => Validation::Url,
            "date" => Validation::Date,
            "regex" => Validation::Regex(p.req_str("pattern", errs).and_then(|r| compile_regex(r, &p.at("pattern"), errs))?),
            "range" => {
                let bound = |key: &str, errs: &mut SpecErrors| -> Result<Option<Value>, ()> {
                    match p.get(key) {
                        None => Ok(None),
                        Some(j) if j.is_number() => Ok(Some(Value::from(j))),
                        Some(j) => {
                            errs.push(p.at(key), format!("expected a number, found {}", json_type(j)));
                            Err(())
                        }
                    }
                };
                let (min, max) = (bound("min", errs), bound("max", errs));
                let (min, max) = (min.ok()?, max.ok()?);
                if min.is_none() && max.is_none() {
                    errs.push(p.path.clone(), "`range` needs `min`, `max` or both");
                    return None;
                }
                if let (Some(a), Some(b)) = (&min, &max)
                    && a.compare(b) == Some(std::cmp::Ordering::Greater)
                {
                    errs.push(p.at("min"), format!("`min` ({a}) is greater than `max` ({b})"));
                    return None;
                }
                Validation::Range { min, max }
            }
            _ => {
                if !p.has("values") {
                    errs.push(p.at("values"), "required field `values` is missing (a list)");
                    return None;
                }
                match Value::from(&p.map["values"]) {
                    Value::Array(vs) => Validation::InSet(vs),
                    _ => {
                        errs.push(p.at("values"), format!("expected a list, found {}", json_type(&p.map["values"])));
                        return None;
                    }
                }
            }
        })
    });
    let on_failure = if o.has("on_failure") {
        o.choice("on_failure", OnFailure::NAMES, errs).map(|s| match s {
            "reject" => OnFailure::Reject,
            "drop" => OnFailure::Drop,
            _ => OnFailure::Flag,
        })
    } else {
        Some(OnFailure::Reject)
    };
    Some(TransformSpec::FieldValidation(ValidationSpec { field: field?, check: check?, on_failure: on_failure? }))
}

fn parse_aggregation(v: &Json, path: &str, errs: &mut SpecErrors) -> Option<TransformSpec> {
    let o = Obj::open(v, path, &keys(&["group_by_fields", "aggregated_fields", "include_details", "window"]), errs)?;
    let group_by = if o.has("group_by_fields") { o.field_list("group_by_fields", errs) } else { Some(Vec::new()) };
    let fields = req_list(&o, "aggregated_fields", errs, |o, errs| {
        o.list("aggregated_fields", errs, |item, at, errs| {
            let f = Obj::open(item, at, &["input_field", "output_field", "operation"], errs)?;
            let op = req_choice(&f, "operation", AggOp::NAMES, errs).and_then(AggOp::from_name);
            let input = if op == Some(AggOp::Count) { Some(f.field("input_field", errs)) } else { f.req_field("input_field", errs).map(Some) };
            let output = f.req_field("output_field", errs);
            Some(AggregatedField { input: input?, output: output?, op: op? })
        })
    });
    let include_details = o.bool("include_details", errs);
    let window = o.get("window").and_then(|w| {
        let w = Obj::open(w, &o.at("window"), &["type", "size_seconds", "time_field"], errs)?;
        let ty = req_choice(&w, "type", &["tumbling"], errs);
        let size = if w.has("size_seconds") {
            w.int("size_seconds", 1, 100 * 365 * 86_400, errs)
        } else {
            errs.push(w.at("size_seconds"), "required field `size_seconds` is missing (a whole number of seconds)");
            None
        };
        let time_field = w.req_field("time_field", errs);
        ty?;
        Some(TumblingWindow { size_seconds: size? as u64, time_field: time_field? })
    });
    if o.has("window") && window.is_none() {
        return None;
    }
    let (group_by, fields) = (group_by?, fields?);
    // Two outputs at one path would silently overwrite each other.
    let mut seen: Vec<&str> = group_by.iter().map(FieldPath::as_str).collect();
    if window.is_some() {
        seen.extend(["window_start", "window_end"]);
    }
    if include_details == Some(true) {
        seen.push("details");
    }
    let mut clash = false;
    for (i, f) in fields.iter().enumerate() {
        if seen.contains(&f.output.as_str()) {
            errs.push(
                format!("{}.output_field", index(&o.at("aggregated_fields"), i)),
                format!("`{}` is already an output of this aggregation", f.output),
            );
            clash = true;
        }
        seen.push(f.output.as_str());
    }
    if clash {
        return None;
    }
    Some(TransformSpec::Aggregation(AggregationSpec {
        group_by,
        fields,
        include_details: include_details.unwrap_or(false),
        window,
    }))
}

fn parse_join(v: &Json, path: &str, errs: &mut SpecErrors) -> Option<TransformSpec> {
    let o = Obj::open(
        v,
        path,
        &keys(&["join_type", "primary_key", "foreign_key", "join_source", "included_fields"]),
        errs,
    )?;
    let join_type = if o.has("join_type") {
        o.choice("join_type", &["left", "inner"], errs).map(|s| if s == "left" { JoinType::Left } else { JoinType::Inner })
    } else {
        Some(JoinType::Left)
    };
    let primary_key = o.req_field("primary_key", errs);
    let foreign_key = o.req_field("foreign_key", errs);
    let join_source = o.req_str("join_source", errs);
    if join_source == Some("") {
        errs.push(o.at("join_source"), "the join source name may not be empty");
    }
    let included_fields = if o.has("included_fields") {
        let list = o.str_list("included_fields", errs);
        if let Some(names) = &list {
            for (i, n) in names.iter().enumerate() {
                if n.is_empty() {
                    errs.push(index(&o.at("included_fields"), i), "a field name may not be empty");
                }
            }
        }
        Some(list?.into_iter().map(Str::from).collect())
    } else {
        None
    };
    Some(TransformSpec::Join(JoinSpec {
        join_type: join_type?,
        primary_key: primary_key?,
        foreign_key: foreign_key?,
        join_source: join_source?.to_string(),
        join_source_path: o.at("join_source"),
        included_fields,
    }))
}

fn parse_script(v: &Json, path: &str, errs: &mut SpecErrors) -> Option<TransformSpec> {
    let o = Obj::open(v, path, &keys(&["source", "max_operations", "timeout_ms", "variables"]), errs)?;
    let source = o.req_str("source", errs);
    let max_operations =
        if o.has("max_operations") { o.int("max_operations", 1, 1_000_000_000, errs) } else { Some(ScriptSpec::DEFAULT_MAX_OPERATIONS as i64) };
    let timeout_ms = if o.has("timeout_ms") { o.int("timeout_ms", 1, 60_000, errs) } else { Some(ScriptSpec::DEFAULT_TIMEOUT_MS as i64) };
    let variables = script_variables(o.get("variables"), &o.at("variables"), errs);
    let source = source?;
    let names: Vec<&str> = variables.iter().flatten().map(|(k, _)| k.as_str()).collect();
    let ast = match script::compile_with(source, &names) {
        Ok(ast) => ast,
        Err(m) => {
            errs.push(o.at("source"), format!("the script does not compile: {m}"));
            return None;
        }
    };
    Some(TransformSpec::Script(ScriptSpec {
        source: source.to_string(),
        ast,
        max_operations: max_operations? as u64,
        timeout_ms: timeout_ms? as u64,
        variables: variables?,
    }))
}

/// A script's `variables`: an object whose keys are Rhai names other than the step's own
/// `record` and `now`.
fn script_variables(v: Option<&Json>, path: &str, errs: &mut SpecErrors) -> Option<Vec<(String, Value)>> {
    let Some(v) = v else { return Some(Vec::new()) };
    let Json::Object(m) = v else {
        errs.push(path, format!("expected an object of named values, found {}", json_type(v)));
        return None;
    };
    let before = errs.len();
    let mut out = Vec::with_capacity(m.len());
    for (name, value) in m {
        let ident = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            errs.push(format!("{path}.{name}"), "a variable's name is letters, digits and `_`, not starting with a digit");
        } else if name == "record" || name == "now" {
            errs.push(format!("{path}.{name}"), format!("`{name}` is the script's own; choose another name"));
        } else {
            out.push((name.clone(), Value::from(value)));
        }
    }
    (errs.len() == before).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Json) -> (Vec<TransformSpec>, Vec<String>) {
        let mut errs = SpecErrors::new();
        let specs = parse_transformations(&v, "transformations", &mut errs);
        (specs, errs.iter().map(|e| e.to_string()).collect())
    }

    fn ok(v: Json) -> Vec<TransformSpec> {
        let (specs, errs) = parse(v);
        assert!(errs.is_empty(), "{errs:#?}");
        specs
    }

    fn errors(v: Json) -> Vec<String> {
        parse(v).1
    }

    #[test]
    fn guide_examples_parse() {
        let specs = ok(json!([
            {"type": "field_mapping", "field_name": "product_name", "operation": "title_case"},
            {"type": "field_calculation", "field_name": "total_price", "operation": "multiply",
             "parameters": {"source_fields": ["quantity", "price"], "output_field": "total_price"}},
            {"type": "record_filter", "condition": {"field": "status", "operator": "equals", "value": "completed"}},
            {"type": "field_addition", "field_name": "processed_timestamp", "value": "current_timestamp"},
            {"type": "field_validation", "field_name": "customer_email", "validation_type": "email_format"},
            {"type": "field_operation", "field_name": "phone", "operation": "format",
             "parameters": {"pattern": "($1) $2-$3", "regex": "(\\d{3})-(\\d{3})-(\\d{4})"}},
            {"type": "field_addition", "field_name": "full_address", "operation": "concat",
             "parameters": {"source_fields": ["address.street", "address.city"], "separator": ", "}},
            {"type": "field_removal", "field_names": ["address"]},
            {"type": "aggregation", "group_by_fields": ["customer_id", "date"], "aggregated_fields": [
                {"input_field": "amount", "output_field": "total_amount", "operation": "sum"},
                {"input_field": "transaction_id", "output_field": "transaction_count", "operation": "count"}],
             "include_details": false},
            {"type": "join", "join_type": "left", "primary_key": "email", "foreign_key": "email",
             "join_source": "crm_system", "included_fields": ["crm_id", "total_spent"]},
            {"type": "conditional", "condition": {"field": "customer_segment", "operator": "equals", "value": "VIP"},
             "then": [{"type": "field_addition", "field_name": "discount_rate", "value": 0.15}],
             "else": [{"type": "field_addition", "field_name": "discount_rate", "value": 0.05}]}
        ]));
        assert_eq!(specs.len(), 11);
        assert_eq!(specs[0].type_name(), "field_mapping");
        assert!(matches!(&specs[3], TransformSpec::FieldAddition(a) if a.value == AddValue::CurrentTimestamp));
        assert_eq!(join_sources(&specs), [("transformations[9].join_source".to_string(), "crm_system".to_string())]);
    }

    #[test]
    fn every_spec_round_trips_through_its_document() {
        let doc = json!([
            {"type": "field_operation", "field_name": "a", "operation": "replace", "parameters": {"regex": "(?P<x>a)", "replacement": "${x}$$"}},
            {"type": "field_operation", "field_name": "a", "operation": "date_format",
             "parameters": {"input_format": "%d/%m/%Y", "output_format": "%Y", "timezone": "Europe/Paris"}},
            {"type": "field_operation", "field_name": "a", "operation": "lookup", "parameters": {"table": {"a": 1, "b": [2]}, "default": null}},
            {"type": "field_operation", "field_name": "a", "operation": "hash", "parameters": {"algorithm": "md5", "salt": "s"}},
            {"type": "field_validation", "field_name": "a", "validation_type": "range", "parameters": {"min": 1, "max": 2.5}, "on_failure": "flag"},
            {"type": "field_validation", "field_name": "a", "validation_type": "in_set", "parameters": {"values": [1, "x"]}, "on_failure": "drop"},
            {"type": "aggregation", "group_by_fields": ["g"], "aggregated_fields": [{"output_field": "n", "operation": "count"}],
             "include_details": true, "window": {"type": "tumbling", "size_seconds": 60, "time_field": "t"}},
            {"type": "record_split", "field_name": "items", "output_field": "item"},
            {"type": "deduplicate", "key_fields": ["id"], "keep": "last"},
            {"type": "script", "source": "record.x = 1;", "max_operations": 10, "timeout_ms": 5},
            {"type": "join", "join_type": "inner", "primary_key": "a", "foreign_key": "b", "join_source": "s"},
        ]);
        let specs = ok(doc);
        let again = ok(Json::Array(specs.iter().map(TransformSpec::to_document).collect()));
        assert_eq!(specs, again);
        let text = serde_json::to_string(&specs[9]).unwrap();
        assert_eq!(text, r#"{"type":"script","source":"record.x = 1;","max_operations":10,"timeout_ms":5}"#);
    }

    #[test]
    fn three_mistakes_three_errors() {
        let e = errors(json!([
            {"type": "field_mapping", "field_name": "a", "operation": "titlecase"},
            {"type": "record_filter", "condition": {"field": "s", "operator": "eq", "value": 1}},
            {"type": "field_validation", "field_name": "e", "validation_type": "email"},
        ]));
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(e[0].starts_with("transformations[0].operation: unknown value `titlecase`; expected one of: title_case,"));
        assert!(e[1].starts_with("transformations[1].condition.operator: unknown value `eq`; expected one of: equals,"));
        assert!(e[2].starts_with("transformations[2].validation_type: unknown value `email`; expected one of: email_format,"));
    }

    #[test]
    fn unknown_type_lists_the_implemented_ones() {
        let e = errors(json!([{"type": "pivot"}, {"field_name": "x"}, {"type": 3}, "x"]));
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e[0].starts_with("transformations[0].type: unknown or unimplemented transformation type `pivot`; implemented types: field_mapping, field_operation,"));
        assert!(e[0].contains("script"));
        assert!(e[1].starts_with("transformations[1].type: required field `type` is missing"));
        assert!(e[2].starts_with("transformations[2].type: expected a string"));
        assert!(e[3].starts_with("transformations[3]: expected a transformation"));
    }

    #[test]
    fn unknown_keys_anywhere() {
        let e = errors(json!([
            {"type": "field_mapping", "field_name": "a", "operation": "title_case", "colour": "red"},
            {"type": "field_mapping", "field_name": "a", "operation": "title_case", "parameters": {"x": 1}},
            {"type": "field_mapping", "field_name": "a", "operation": "rename", "parameters": {"to": "b", "from": "a"}},
            {"type": "aggregation", "aggregated_fields": [{"input_field": "a", "output_field": "b", "operation": "sum", "as": 1}]},
            {"type": "conditional", "condition": {"field": "a", "operator": "is_null"}, "then": [{"type": "trim"}], "otherwise": []},
        ]));
        assert_eq!(e.len(), 6, "{e:#?}");
        assert!(e[0].starts_with("transformations[0].colour: unknown field `colour`"));
        assert!(e[1].starts_with("transformations[1].parameters.x: unknown field `x`"));
        assert!(e[2].starts_with("transformations[2].parameters.from: unknown field `from`; expected one of: to"));
        assert!(e[3].starts_with("transformations[3].aggregated_fields[0].as: unknown field"));
        assert!(e[4].starts_with("transformations[4].otherwise: unknown field"));
        assert!(e[5].starts_with("transformations[4].then[0].type: unknown or unimplemented transformation type `trim`"));
    }

    #[test]
    fn stateful_steps_inside_conditional() {
        let e = errors(json!([{"type": "conditional", "condition": {"field": "a", "operator": "is_null"},
            "then": [{"type": "field_removal", "field_names": ["a"]},
                     {"type": "conditional", "condition": {"field": "a", "operator": "is_null"},
                      "then": [{"type": "deduplicate", "key_fields": ["a"]}]}],
            "else": [{"type": "join", "primary_key": "a", "foreign_key": "a", "join_source": "s"}]}]));
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[0].starts_with("transformations[0].then[1].then[0].type: `deduplicate` is stateful and may not stand inside `conditional`"));
        assert!(e[1].starts_with("transformations[0].else[0].type: `join` is stateful"));
    }

    #[test]
    fn regexes_templates_and_formats_are_checked() {
        let e = errors(json!([
            {"type": "field_operation", "field_name": "p", "operation": "format", "parameters": {"regex": "(\\d", "pattern": "$1"}},
            {"type": "field_operation", "field_name": "p", "operation": "format", "parameters": {"regex": "(\\d)", "pattern": "$2"}},
            {"type": "field_operation", "field_name": "p", "operation": "replace", "parameters": {"regex": "x"}},
            {"type": "field_validation", "field_name": "p", "validation_type": "regex", "parameters": {"pattern": "[z-a]"}},
            {"type": "field_operation", "field_name": "d", "operation": "date_format", "parameters": {"output_format": "%Q", "timezone": "Mars/Olympus"}},
        ]));
        assert_eq!(e.len(), 6, "{e:#?}");
        assert!(e[0].starts_with("transformations[0].parameters.regex: invalid regex: regex parse error"));
        assert!(e[1].starts_with("transformations[1].parameters.pattern: `$2` refers to group 2, but the regex has 1 group(s)"));
        assert!(e[2].starts_with("transformations[2].parameters.replacement: required field"));
        assert!(e[3].starts_with("transformations[3].parameters.pattern: invalid regex"));
        assert!(e[4].starts_with("transformations[4].parameters.output_format: `%Q` is not a valid strftime format"));
        assert!(e[5].starts_with("transformations[4].parameters.timezone: unknown time zone `Mars/Olympus`"));
    }

    #[test]
    fn required_keys_and_types() {
        let e = errors(json!([
            {"type": "field_calculation", "operation": "multiply", "parameters": {"source_fields": []}},
            {"type": "field_calculation", "operation": "power", "parameters": {"source_fields": ["a"], "output_field": "b"}},
            {"type": "field_addition", "field_name": "x"},
            {"type": "field_addition", "field_name": "x", "value": 1, "operation": "concat", "parameters": {"source_fields": ["a"]}},
            {"type": "field_operation", "field_name": "x", "operation": "cast", "parameters": {"to": "date"}},
            {"type": "field_operation", "field_name": "x", "operation": "round", "parameters": {"digits": 2.5}},
            {"type": "field_removal", "field_names": "a"},
            {"type": "record_split"},
            {"type": "deduplicate", "key_fields": ["a"], "keep": "middle"},
            {"type": "field_validation", "field_name": "x", "validation_type": "range", "parameters": {"min": "1"}, "on_failure": "explode"},
        ]));
        let paths: Vec<&str> = e.iter().map(|e| e.split(": ").next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "transformations[0].parameters.source_fields",
                "transformations[0].field_name",
                "transformations[1].operation",
                "transformations[2].value",
                "transformations[3].value",
                "transformations[4].parameters.to",
                "transformations[5].parameters.digits",
                "transformations[6].field_names",
                "transformations[7].field_name",
                "transformations[8].keep",
                "transformations[9].parameters.min",
                "transformations[9].on_failure",
            ],
            "{e:#?}"
        );
    }

    #[test]
    fn aggregation_checks() {
        let e = errors(json!([
            {"type": "aggregation", "group_by_fields": ["g"], "aggregated_fields": [
                {"input_field": "a", "output_field": "g", "operation": "sum"},
                {"output_field": "n", "operation": "sum"},
                {"input_field": "a", "output_field": "m", "operation": "median"}],
             "window": {"type": "sliding", "size_seconds": 0, "time_field": "t"}},
        ]));
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e[0].starts_with("transformations[0].aggregated_fields[1].input_field: required field"));
        assert!(e[1].starts_with("transformations[0].aggregated_fields[2].operation: unknown value `median`; expected one of: sum, average, count, count_distinct, min, max, first, last, collect"));
        assert!(e[2].starts_with("transformations[0].window.type: unknown value `sliding`"));
        assert!(e[3].starts_with("transformations[0].window.size_seconds: 0 is out of range"));
        let e = errors(json!([{"type": "aggregation", "group_by_fields": ["g"], "aggregated_fields": [
            {"input_field": "a", "output_field": "g", "operation": "sum"}]}]));
        assert_eq!(e, ["transformations[0].aggregated_fields[0].output_field: `g` is already an output of this aggregation"]);
    }

    #[test]
    fn script_compiles_at_parse_time() {
        let specs = ok(json!([{"type": "script", "source": "record.total = record.a * 2;"}]));
        let TransformSpec::Script(s) = &specs[0] else { panic!() };
        assert_eq!((s.max_operations, s.timeout_ms), (ScriptSpec::DEFAULT_MAX_OPERATIONS, ScriptSpec::DEFAULT_TIMEOUT_MS));
        let e = errors(json!([{"type": "script", "source": "record.total = record.a *;", "timeout": 1}]));
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[0].starts_with("transformations[0].timeout: unknown field"));
        assert!(e[1].starts_with("transformations[0].source: the script does not compile:"), "{}", e[1]);
    }

    #[test]
    fn a_script_reads_its_variables_by_name() {
        let specs = ok(json!([{"type": "script", "source": "record.n = limit + event.id;", "variables": {"limit": 10, "event": {"id": 1}}}]));
        let TransformSpec::Script(s) = &specs[0] else { panic!() };
        assert_eq!(s.variables.len(), 2);
        assert_eq!(specs[0].to_document()["variables"], json!({"limit": 10, "event": {"id": 1}}));
        let e = errors(json!([{"type": "script", "source": "record.n = 1;", "variables": {"record": 1, "9x": 2}}]));
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e.iter().any(|m| m.starts_with("transformations[0].variables.record: `record` is the script's own")), "{e:#?}");
        assert!(e.iter().any(|m| m.starts_with("transformations[0].variables.9x: a variable's name")), "{e:#?}");
        // Without the variable, strict mode refuses the name.
        assert_eq!(errors(json!([{"type": "script", "source": "record.n = limit;"}])).len(), 1);
    }

    #[test]
    fn missing_list_is_empty_and_wrong_shape_is_an_error() {
        assert!(ok(Json::Null).is_empty());
        assert_eq!(errors(json!({"type": "x"})), ["transformations: expected a list of transformations, found an object"]);
    }
}
