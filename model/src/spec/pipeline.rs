//! The pipeline document as a whole: parse JSON or YAML, read every part with its path,
//! check the rules that span parts (join sources exist, one destination form, …), and
//! return a typed [`PipelineSpec`] or every error at once.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value as Json;

use crate::error::{SpecErrors, index};
use crate::spec::connector::{ConnectorSpec, Role, parse_connector};
use crate::spec::reader::{Obj, json_type};
use crate::spec::transform::{TransformSpec, join_sources, parse_transformations};

/// The top-level keys a pipeline document may hold.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "name",
    "description",
    "source",
    "sources",
    "transformations",
    "destination",
    "destinations",
    "schedule",
    "error_handling",
    "depends_on",
    "parallelism",
    "checkpoint",
    "schema_evolution",
    "placement",
    "limits",
];

/// A validated pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineSpec {
    pub name: String,
    pub description: Option<String>,
    /// The main input.
    pub source: ConnectorSpec,
    /// Extra named inputs that `join` reads, in document order.
    pub sources: Vec<(String, ConnectorSpec)>,
    pub transformations: Vec<TransformSpec>,
    /// Every record goes to each (`destination` is a list of one).
    pub destinations: Vec<ConnectorSpec>,
    pub schedule: Schedule,
    pub error_handling: ErrorHandling,
    pub depends_on: Vec<String>,
    /// Instances of each stateful stage (default 1).
    pub parallelism: u32,
    pub checkpoint: CheckpointConfig,
    /// What a change in the delivered fields since the last run does.
    #[serde(skip_serializing_if = "SchemaPolicy::is_default")]
    pub schema_evolution: SchemaPolicy,
    /// Where parts of the pipeline run in a cluster.
    #[serde(skip_serializing_if = "Placement::is_default")]
    pub placement: Placement,
    /// Bounds on what one input record may be.
    #[serde(skip_serializing_if = "Limits::is_default")]
    pub limits: Limits,
}

/// `limits`: how large one input record may be. A record over a limit is sent to the
/// dead-letter destination with the reason, and never held in memory whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// The most bytes one record may take in its source: a JSON Lines line, a CSV row, an
    /// element of a JSON array, an XML record (after decompression). 1 KiB to 1 GiB,
    /// default 16 MiB.
    pub max_record_bytes: u64,
}

/// The default of `limits.max_record_bytes`: 16 MiB.
pub const fn default_max_record_bytes() -> u64 {
    16 << 20
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_record_bytes: default_max_record_bytes() }
    }
}

impl Limits {
    pub fn is_default(&self) -> bool {
        *self == Limits::default()
    }
}

/// `placement`: which cluster node runs part of the pipeline. Without a cluster, or when the
/// node named is not up, that part runs with the rest of the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// The node (its `--node-id`) that writes to the destinations: for a destination only
    /// that node can reach, or to take the writing off the node that reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destinations: Option<u64>,
}

impl Placement {
    pub fn is_default(&self) -> bool {
        *self == Placement::default()
    }
}

/// `schema_evolution`: what happens when the fields a run delivers differ from the last
/// run's (a new field, a missing one, one whose type changed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaPolicy {
    /// Accept the change and record it in the run's log (the default).
    #[default]
    Evolve,
    /// Fail the run before anything is committed.
    Strict,
    /// Accept it without a word (the profile still shows it).
    Ignore,
}

impl SchemaPolicy {
    pub fn is_default(&self) -> bool {
        *self == SchemaPolicy::Evolve
    }
}

impl PipelineSpec {
    /// The named extra source, when the document has it.
    pub fn named_source(&self, name: &str) -> Option<&ConnectorSpec> {
        self.sources.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }
}

/// When a pipeline runs.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Schedule {
    /// Only when asked (the default).
    Manual,
    /// A 5-field cron expression in an IANA time zone.
    Cron {
        expression: String,
        #[serde(serialize_with = "ser_tz")]
        timezone: chrono_tz::Tz,
        #[serde(skip)]
        schedule: Box<cron::Schedule>,
    },
    /// A run per event: a message on a NATS subject or a Kafka topic. The event's fields
    /// are the run's parameters: `${event.field}` in the document's connector configs is
    /// replaced by the field's value for that run.
    Event {
        /// What to listen to: a `nats` or `kafka` source config.
        trigger: Box<ConnectorSpec>,
    },
}

fn ser_tz<S: serde::Serializer>(tz: &chrono_tz::Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

/// `error_handling`: retries, notifications and the dead-letter destination.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ErrorHandling {
    pub retry_policy: RetryPolicy,
    pub notifications: Notifications,
    /// Where rejected records go, each with its reason and position.
    pub dead_letter: Option<ConnectorSpec>,
}

/// How a failed run is retried.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Attempts after the first (default 0: no retry).
    pub max_retries: u32,
    /// Each delay is the previous one times this (default 2).
    pub backoff_multiplier: f64,
    /// The first delay (default 1 s).
    pub initial_delay_seconds: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: 0, backoff_multiplier: 2.0, initial_delay_seconds: 1.0 }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> std::time::Duration {
        let secs = self.initial_delay_seconds * self.backoff_multiplier.powi(attempt.saturating_sub(1) as i32);
        std::time::Duration::from_secs_f64(secs.clamp(0.0, 3600.0))
    }
}

/// Who is told when a run fails.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Notifications {
    pub email: Vec<String>,
    pub webhook: Option<String>,
}

/// `checkpoint`: how often progress is saved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckpointConfig {
    /// Seconds between checkpoints, 0.1 to 86400 (default 10).
    pub interval_seconds: f64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { interval_seconds: 10.0 }
    }
}

impl CheckpointConfig {
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.interval_seconds)
    }
}

/// Why a pipeline file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(SpecErrors),
}

/// The text format of a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocFormat {
    Json,
    Yaml,
}

impl DocFormat {
    /// `.yaml`/`.yml` are YAML; `.json` is JSON; anything else is guessed from the text.
    pub fn for_path(path: &Path, text: &str) -> DocFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => DocFormat::Yaml,
            Some("json") => DocFormat::Json,
            _ => DocFormat::sniff(text),
        }
    }

    /// JSON when the first non-blank character opens an object or array, else YAML.
    pub fn sniff(text: &str) -> DocFormat {
        match text.trim_start().chars().next() {
            Some('{' | '[') => DocFormat::Json,
            _ => DocFormat::Yaml,
        }
    }
}

/// Reads and validates a pipeline file. Returns the spec and the folder relative paths in it
/// resolve against.
pub fn load_file(path: &Path) -> Result<(PipelineSpec, PathBuf), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    let spec = parse_document(&text, DocFormat::for_path(path, &text)).map_err(LoadError::Invalid)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    Ok((spec, base))
}

/// Parses a document's text into the generic tree, reporting syntax errors with line and column.
pub fn parse_tree(text: &str, format: DocFormat) -> Result<Json, SpecErrors> {
    let mut errs = SpecErrors::new();
    let tree = match format {
        DocFormat::Json => serde_json::from_str::<Json>(text).map_err(|e| format!("invalid JSON at line {} column {}: {e}", e.line(), e.column())),
        DocFormat::Yaml => serde_norway::from_str::<Json>(text).map_err(|e| format!("invalid YAML: {e}")),
    };
    match tree {
        Ok(t) => Ok(t),
        Err(m) => {
            errs.push("", m);
            Err(errs)
        }
    }
}

/// Parses and validates a document's text.
pub fn parse_document(text: &str, format: DocFormat) -> Result<PipelineSpec, SpecErrors> {
    parse_pipeline(&parse_tree(text, format)?)
}

/// Validates a parsed document, collecting every error.
pub fn parse_pipeline(doc: &Json) -> Result<PipelineSpec, SpecErrors> {
    let mut errs = SpecErrors::new();
    let Some(top) = Obj::open(doc, "", TOP_LEVEL_KEYS, &mut errs) else {
        return Err(errs);
    };

    let name = top.req_str("name", &mut errs).map(str::to_string);
    if let Some(n) = &name
        && n.trim().is_empty()
    {
        errs.push("name", "the name may not be empty");
    }
    let description = top.str("description", &mut errs).map(str::to_string);

    let source = match top.get("source") {
        Some(v) => parse_connector(v, "source", Role::Source, &mut errs),
        None => {
            errs.push("source", "required field `source` is missing (the pipeline's input connector)");
            None
        }
    };

    let mut sources = Vec::new();
    if let Some(v) = top.get("sources")
        && let Some(obj) = Obj::open_any(v, "sources", &mut errs)
    {
        for (name, v) in obj.map {
            if let Some(c) = parse_connector(v, &obj.at(name), Role::Source, &mut errs) {
                sources.push((name.clone(), c));
            }
        }
    }

    let transformations = match top.get("transformations") {
        Some(v) => parse_transformations(v, "transformations", &mut errs),
        None => Vec::new(),
    };
    for (path, name) in join_sources(&transformations) {
        // A source that is there but failed to parse has its own error already.
        if top.get("sources").and_then(|s| s.get(&name)).is_none() {
            let known: Vec<_> = top.get("sources").and_then(Json::as_object).map(|o| o.keys().cloned().collect()).unwrap_or_default();
            let hint = if known.is_empty() { "the document has no `sources`".to_string() } else { format!("`sources` has: {}", known.join(", ")) };
            errs.push(path, format!("join_source `{name}` is not an entry of `sources`; {hint}"));
        }
    }

    let destinations = parse_destinations(&top, &mut errs);
    let schedule = top.get("schedule").map(|v| parse_schedule(v, &mut errs)).unwrap_or(Some(Schedule::Manual));
    let error_handling = top.get("error_handling").map(|v| parse_error_handling(v, &mut errs)).unwrap_or_default();
    let depends_on = top.str_list("depends_on", &mut errs).unwrap_or_default();
    if let Some(n) = &name
        && depends_on.iter().any(|d| d == n)
    {
        errs.push("depends_on", format!("a pipeline cannot depend on itself (`{n}`)"));
    }
    let parallelism = top.int("parallelism", 1, 1024, &mut errs).unwrap_or(1) as u32;
    let checkpoint = top.get("checkpoint").and_then(|v| parse_checkpoint(v, &mut errs)).unwrap_or_default();
    let schema_evolution = match top.str("schema_evolution", &mut errs) {
        None | Some("evolve") => SchemaPolicy::Evolve,
        Some("strict") => SchemaPolicy::Strict,
        Some("ignore") => SchemaPolicy::Ignore,
        Some(other) => {
            errs.push("schema_evolution", format!("unknown policy `{other}`; expected one of: evolve, strict, ignore"));
            SchemaPolicy::Evolve
        }
    };

    let placement = top.get("placement").and_then(|v| parse_placement(v, &mut errs)).unwrap_or_default();
    let limits = top.get("limits").and_then(|v| parse_limits(v, &mut errs)).unwrap_or_default();

    match (name, source, destinations, schedule) {
        (Some(name), Some(source), Some(destinations), Some(schedule)) if errs.is_empty() => Ok(PipelineSpec {
            name,
            description,
            source,
            sources,
            transformations,
            destinations,
            schedule,
            error_handling,
            depends_on,
            parallelism,
            checkpoint,
            schema_evolution,
            placement,
            limits,
        }),
        _ => Err(errs),
    }
}

fn parse_destinations(top: &Obj, errs: &mut SpecErrors) -> Option<Vec<ConnectorSpec>> {
    match (top.get("destination"), top.get("destinations")) {
        (Some(_), Some(_)) => {
            errs.push("destinations", "give either `destination` or `destinations`, not both");
            None
        }
        (Some(v), None) => parse_connector(v, "destination", Role::Sink, errs).map(|c| vec![c]),
        (None, Some(Json::Array(list))) if list.is_empty() => {
            errs.push("destinations", "the list is empty; name at least one destination");
            None
        }
        (None, Some(Json::Array(list))) => {
            let before = errs.len();
            let out: Vec<_> = list.iter().enumerate().filter_map(|(i, v)| parse_connector(v, &index("destinations", i), Role::Sink, errs)).collect();
            (errs.len() == before).then_some(out)
        }
        (None, Some(other)) => {
            errs.push("destinations", format!("expected a list of connectors, found {}", json_type(other)));
            None
        }
        (None, None) => {
            errs.push("destination", "required field `destination` is missing (where records are delivered)");
            None
        }
    }
}

fn parse_schedule(v: &Json, errs: &mut SpecErrors) -> Option<Schedule> {
    let kind = v.get("type").and_then(Json::as_str).unwrap_or("manual");
    match kind {
        "manual" => {
            Obj::open(v, "schedule", &["type"], errs)?;
            Some(Schedule::Manual)
        }
        "cron" => {
            let o = Obj::open(v, "schedule", &["type", "expression", "timezone"], errs)?;
            let expression = o.req_str("expression", errs)?;
            let timezone = match o.str("timezone", errs) {
                None => chrono_tz::UTC,
                Some(name) => match name.parse::<chrono_tz::Tz>() {
                    Ok(tz) => tz,
                    Err(_) => {
                        errs.push("schedule.timezone", format!("unknown time zone `{name}`; use an IANA name such as `UTC` or `Europe/Paris`"));
                        return None;
                    }
                },
            };
            let fields = expression.split_whitespace().count();
            if fields != 5 {
                errs.push("schedule.expression", format!("`{expression}` has {fields} fields; expected 5 (minute hour day-of-month month day-of-week)"));
                return None;
            }
            match format!("0 {expression}").parse::<cron::Schedule>() {
                Ok(schedule) => Some(Schedule::Cron { expression: expression.to_string(), timezone, schedule: Box::new(schedule) }),
                Err(e) => {
                    errs.push("schedule.expression", format!("`{expression}` is not a valid cron expression: {e}"));
                    None
                }
            }
        }
        "event" => {
            let o = Obj::open(v, "schedule", &["type", "connector_type", "config"], errs)?;
            let ct = o.req_str("connector_type", errs)?;
            if !matches!(ct, "nats" | "kafka") {
                errs.push("schedule.connector_type", format!("event triggers listen to `nats` or `kafka`, not `{ct}`"));
                return None;
            }
            let doc = serde_json::json!({"connector_type": ct, "config": o.get("config").cloned().unwrap_or(Json::Null)});
            let trigger = parse_connector(&doc, "schedule", Role::Source, errs)?;
            Some(Schedule::Event { trigger: Box::new(trigger) })
        }
        other => {
            errs.push("schedule.type", format!("unknown schedule type `{other}`; expected one of: manual, cron, event"));
            None
        }
    }
}

fn parse_error_handling(v: &Json, errs: &mut SpecErrors) -> ErrorHandling {
    let mut eh = ErrorHandling::default();
    let Some(o) = Obj::open(v, "error_handling", &["retry_policy", "notifications", "dead_letter"], errs) else {
        return eh;
    };
    if let Some(rp) = o.get("retry_policy")
        && let Some(r) = Obj::open(rp, "error_handling.retry_policy", &["max_retries", "backoff_multiplier", "initial_delay_seconds"], errs)
    {
        let d = RetryPolicy::default();
        eh.retry_policy = RetryPolicy {
            max_retries: r.int("max_retries", 0, 100, errs).map(|i| i as u32).unwrap_or(d.max_retries),
            backoff_multiplier: positive(&r, "backoff_multiplier", errs).unwrap_or(d.backoff_multiplier),
            initial_delay_seconds: positive(&r, "initial_delay_seconds", errs).unwrap_or(d.initial_delay_seconds),
        };
    }
    if let Some(n) = o.get("notifications")
        && let Some(n) = Obj::open(n, "error_handling.notifications", &["email", "webhook"], errs)
    {
        let email = match n.get("email") {
            Some(Json::String(s)) => vec![s.clone()],
            Some(_) => n.str_list("email", errs).unwrap_or_default(),
            None => Vec::new(),
        };
        for (i, e) in email.iter().enumerate() {
            if !e.contains('@') {
                errs.push(index("error_handling.notifications.email", i), format!("`{e}` is not an e-mail address"));
            }
        }
        let webhook = n.str("webhook", errs).map(str::to_string);
        if let Some(w) = &webhook
            && !(w.starts_with("http://") || w.starts_with("https://"))
        {
            errs.push("error_handling.notifications.webhook", format!("`{w}` is not an http(s) URL"));
        }
        eh.notifications = Notifications { email, webhook };
    }
    if let Some(dl) = o.get("dead_letter") {
        eh.dead_letter = parse_connector(dl, "error_handling.dead_letter", Role::Sink, errs);
    }
    eh
}

fn positive(o: &Obj, key: &str, errs: &mut SpecErrors) -> Option<f64> {
    let f = o.number(key, errs)?;
    if f.is_finite() && f >= 0.0 {
        Some(f)
    } else {
        errs.push(o.at(key), format!("{f} is not allowed; expected a number of zero or more"));
        None
    }
}

fn parse_placement(v: &Json, errs: &mut SpecErrors) -> Option<Placement> {
    let o = Obj::open(v, "placement", &["destinations"], errs)?;
    let destinations = o.int("destinations", 1, i64::MAX, errs).map(|n| n as u64);
    Some(Placement { destinations })
}

fn parse_limits(v: &Json, errs: &mut SpecErrors) -> Option<Limits> {
    let o = Obj::open(v, "limits", &["max_record_bytes"], errs)?;
    let max_record_bytes = o.int("max_record_bytes", 1 << 10, 1 << 30, errs).map_or(default_max_record_bytes(), |n| n as u64);
    Some(Limits { max_record_bytes })
}

fn parse_checkpoint(v: &Json, errs: &mut SpecErrors) -> Option<CheckpointConfig> {
    let o = Obj::open(v, "checkpoint", &["interval_seconds"], errs)?;
    let interval_seconds = match o.number("interval_seconds", errs) {
        Some(f) if (0.1..=86_400.0).contains(&f) => f,
        Some(f) => {
            errs.push(o.at("interval_seconds"), format!("{f} is out of range; expected seconds from 0.1 to 86400"));
            return None;
        }
        None => 10.0,
    };
    Some(CheckpointConfig { interval_seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guide's examples, copied into the repository from the shared fixtures.
    const GUIDE: &str = "../examples/guide";

    fn paths(r: Result<PipelineSpec, SpecErrors>) -> Vec<String> {
        r.err().expect("expected errors").iter().map(|e| e.path.clone()).collect()
    }

    fn doc(v: Json) -> Result<PipelineSpec, SpecErrors> {
        parse_pipeline(&v)
    }

    #[test]
    fn guide_fixtures_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(GUIDE);
        let dirs = std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
        let mut n = 0;
        for d in dirs {
            let p = d.unwrap().path().join("pipeline.json");
            if p.exists() {
                load_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert_eq!(n, 5);
    }

    #[test]
    fn minimal_yaml_document() {
        let text = "name: y\nsource:\n  connector_type: file\n  config: {path: in.jsonl, format: jsonl}\ndestination:\n  connector_type: file\n  config: {path: out.jsonl, format: jsonl}\n";
        let p = parse_document(text, DocFormat::Yaml).unwrap();
        assert_eq!(p.name, "y");
        assert_eq!(p.destinations.len(), 1);
        assert!(matches!(p.schedule, Schedule::Manual));
    }

    #[test]
    fn every_mistake_is_reported_with_its_path() {
        let r = doc(serde_json::json!({
            "name": "x",
            "colour": "blue",
            "source": {"connector_type": "file", "config": {"path": "a", "format": "jsonl"}},
            "destination": {"connector_type": "file", "config": {"path": "b", "format": "yaml"}},
            "schedule": {"type": "cron", "expression": "0 8 * *"},
        }));
        assert_eq!(paths(r), ["colour", "destination.config.format", "schedule.expression"]);
    }

    #[test]
    fn missing_parts_are_named() {
        let r = doc(serde_json::json!({}));
        assert_eq!(paths(r), ["name", "source", "destination"]);
    }

    #[test]
    fn both_destination_forms_is_an_error() {
        let f = serde_json::json!({"connector_type": "file", "config": {"path": "b", "format": "jsonl"}});
        let r = doc(serde_json::json!({"name": "x", "source": f, "destination": f, "destinations": [f]}));
        assert_eq!(paths(r), ["destinations"]);
    }

    #[test]
    fn cron_and_timezone_are_checked() {
        let f = serde_json::json!({"connector_type": "file", "config": {"path": "b", "format": "jsonl"}});
        let ok = doc(serde_json::json!({"name": "x", "source": f, "destination": f, "schedule": {"type": "cron", "expression": "0 8 * * *", "timezone": "Europe/Paris"}})).unwrap();
        assert!(matches!(ok.schedule, Schedule::Cron { .. }));
        let r = doc(serde_json::json!({"name": "x", "source": f, "destination": f, "schedule": {"type": "cron", "expression": "0 8 * * *", "timezone": "Mars/Olympus"}}));
        assert_eq!(paths(r), ["schedule.timezone"]);
    }

    #[test]
    fn placement_names_a_node_and_is_written_back() {
        let f = serde_json::json!({"connector_type": "file", "config": {"path": "b", "format": "jsonl"}});
        let p = doc(serde_json::json!({"name": "x", "source": f, "destination": f, "placement": {"destinations": 3}})).unwrap();
        assert_eq!(p.placement.destinations, Some(3));
        assert_eq!(serde_json::to_value(&p).unwrap()["placement"], serde_json::json!({"destinations": 3}));
        let plain = doc(serde_json::json!({"name": "x", "source": f, "destination": f})).unwrap();
        assert!(serde_json::to_value(&plain).unwrap().get("placement").is_none(), "no placement written when there is none");
        let r = doc(serde_json::json!({"name": "x", "source": f, "destination": f, "placement": {"destinations": 0, "source": 1}}));
        assert_eq!(paths(r), ["placement.source", "placement.destinations"]);
    }

    #[test]
    fn limits_are_checked_and_written_back() {
        let f = serde_json::json!({"connector_type": "file", "config": {"path": "b", "format": "jsonl"}});
        let plain = doc(serde_json::json!({"name": "x", "source": f, "destination": f})).unwrap();
        assert_eq!(plain.limits.max_record_bytes, 16 << 20);
        assert!(serde_json::to_value(&plain).unwrap().get("limits").is_none());
        let p = doc(serde_json::json!({"name": "x", "source": f, "destination": f, "limits": {"max_record_bytes": 4096}})).unwrap();
        assert_eq!(p.limits.max_record_bytes, 4096);
        assert_eq!(serde_json::to_value(&p).unwrap()["limits"], serde_json::json!({"max_record_bytes": 4096}));
        let r = doc(serde_json::json!({"name": "x", "source": f, "destination": f, "limits": {"max_record_bytes": 10, "max_depth": 3}}));
        assert_eq!(paths(r), ["limits.max_depth", "limits.max_record_bytes"]);
    }

    #[test]
    fn retry_delays_grow() {
        let p = RetryPolicy { max_retries: 3, backoff_multiplier: 2.0, initial_delay_seconds: 1.0 };
        assert_eq!(p.delay(1).as_secs_f64(), 1.0);
        assert_eq!(p.delay(3).as_secs_f64(), 4.0);
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let e = parse_document("{\n  \"name\": x\n}", DocFormat::Json).unwrap_err();
        assert!(e.0[0].message.contains("line 2"), "{e}");
    }
}
