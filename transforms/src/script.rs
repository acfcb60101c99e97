//! `script`: a Rhai script run per record, with limits, so a bad script fails its record and
//! never the process.
//!
//! The script sees `record` (an object: integers are Rhai integers, floats Rhai floats, null
//! is `()`) and `now` (the batch's time, RFC 3339). It changes `record` in place, sets
//! `record = ();` to drop the record, or `throw "reason"` to fail it. Fields keep their places
//! and new fields go at the end; only the fields a script touches are converted, so a wide
//! record costs little. (Nested objects are Rhai maps: fields new to them are appended in
//! name order, as Rhai's maps sort their keys.)
//!
//! Limits per record: `max_operations` (Rhai's operation count), `timeout_ms` of wall-clock
//! time (checked every 256 operations), strings up to 1 MiB, arrays and maps up to 100 000
//! entries, and the call and expression depths of `dagg_model::spec::transform::script`.
//! What a script leaves in the record may nest fewer than [`MAX_DEPTH`] levels (the record
//! itself counting as one): a deeper value fails the record with that reason, checked level by
//! level as the value is converted back (never by recursing past the limit).

use std::cell::Cell;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use dagg_model::spec::transform::ScriptSpec;
use dagg_model::spec::transform::script::base_engine;
use dagg_model::value::{MAX_DEPTH, depth, depth_error};
use dagg_model::{Map, Record, Str, Value};
use rhai::{AST, Dynamic, Engine, EvalAltResult, ImmutableString, Scope};

use crate::Env;

thread_local! {
    /// When the script running on this thread must stop.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The compiled script and its limits: what the script thread runs.
struct Runner {
    engine: Engine,
    ast: AST,
    timeout: Duration,
    max_operations: u64,
    /// The step's `variables`, as constants of every run.
    variables: Vec<(String, Dynamic)>,
}

/// One record for the script thread, and where its answer goes.
struct Job {
    rec: Record,
    now: ImmutableString,
    reply: mpsc::SyncSender<(Record, Result<Scripted, String>)>,
}

pub(crate) struct ScriptStep {
    /// The script thread; `None` only when it could not be started (scripts then run on the
    /// caller's thread).
    jobs: Option<mpsc::Sender<Job>>,
    runner: Arc<Runner>,
}

pub(crate) enum Scripted {
    Kept,
    Dropped,
}

const MAX_STRING: usize = 1 << 20;
const MAX_COLLECTION: usize = 100_000;
/// The script thread's stack. Rhai clones, drops and measures its values recursively, and
/// a script can nest maps and arrays as deep as their size limits allow (100 000 each) before
/// anything of dagg's sees them: this leaves room for that on a thread whose stack is known,
/// whatever thread the pipeline runs the step on (only the pages used are ever resident).
const SCRIPT_STACK: usize = 512 << 20;

impl ScriptStep {
    pub(crate) fn new(spec: &ScriptSpec) -> ScriptStep {
        let mut engine = base_engine();
        engine.set_max_operations(spec.max_operations);
        engine.set_max_string_size(MAX_STRING);
        engine.set_max_array_size(MAX_COLLECTION);
        engine.set_max_map_size(MAX_COLLECTION);
        register_record(&mut engine);
        engine.on_progress(|ops| {
            if ops % 256 != 0 {
                return None;
            }
            let late = DEADLINE.with(|d| d.get().is_some_and(|t| Instant::now() >= t));
            late.then(|| Dynamic::from("time limit"))
        });
        let runner = Arc::new(Runner {
            engine,
            ast: spec.ast.clone(),
            timeout: Duration::from_millis(spec.timeout_ms),
            max_operations: spec.max_operations,
            variables: spec.variables.iter().map(|(k, v)| (k.clone(), to_dynamic(v))).collect(),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let on_thread = runner.clone();
        let started = std::thread::Builder::new().name("dagg-script".into()).stack_size(SCRIPT_STACK).spawn(move || {
            // Ends when the step (the sender) is dropped.
            for mut job in rx {
                let result = on_thread.apply(&mut job.rec, &job.now);
                let _ = job.reply.send((job.rec, result));
            }
        });
        let jobs = match started {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!("cannot start the script thread ({e}); scripts run on the pipeline's thread");
                None
            }
        };
        ScriptStep { jobs, runner }
    }

    pub(crate) fn apply(&self, rec: &mut Record, env: &Env) -> Result<Scripted, String> {
        let Some(jobs) = &self.jobs else {
            return self.runner.apply(rec, &env.now_text);
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job { rec: std::mem::take(rec), now: env.now_text.clone(), reply };
        if let Err(mpsc::SendError(job)) = jobs.send(job) {
            *rec = job.rec;
            return Err("the script thread has stopped".into());
        }
        match answer.recv() {
            Ok((back, result)) => {
                *rec = back;
                result
            }
            Err(_) => Err("the script thread has stopped".into()),
        }
    }
}

impl Runner {
    fn apply(&self, rec: &mut Record, now: &ImmutableString) -> Result<Scripted, String> {
        let mut scope = Scope::new();
        // A copy: a record that fails leaves the step as it came in.
        scope.push("record", ScriptRecord(rec.clone()));
        scope.push_constant("now", now.clone());
        for (name, value) in &self.variables {
            scope.push_constant_dynamic(name.as_str(), value.clone());
        }
        DEADLINE.with(|d| d.set(Some(Instant::now() + self.timeout)));
        let run = self.engine.run_ast_with_scope(&mut scope, &self.ast);
        DEADLINE.with(|d| d.set(None));
        run.map_err(|e| self.explain(*e))?;
        let out = scope.remove::<Dynamic>("record").unwrap_or(Dynamic::UNIT);
        if out.is_unit() {
            return Ok(Scripted::Dropped);
        }
        if out.is::<ScriptRecord>() {
            *rec = out.cast::<ScriptRecord>().0;
            return Ok(Scripted::Kept);
        }
        let type_name = out.type_name();
        let Some(map) = out.try_cast::<rhai::Map>() else {
            return Err(format!("the script left `record` as {type_name}; it must stay an object (or be `()` to drop it)"));
        };
        merge(rec, map, 1)?;
        Ok(Scripted::Kept)
    }

    fn explain(&self, e: EvalAltResult) -> String {
        match e {
            EvalAltResult::ErrorRuntime(v, pos) if !pos.is_none() || v.is_string() => {
                format!("the script failed: {}", dynamic_text(&v))
            }
            EvalAltResult::ErrorTooManyOperations(_) => {
                format!("the script exceeded its {} operations", self.max_operations)
            }
            EvalAltResult::ErrorTerminated(..) => {
                format!("the script ran longer than its {} ms", self.timeout.as_millis())
            }
            other => format!("the script failed: {other}"),
        }
    }
}

fn dynamic_text(v: &Dynamic) -> String {
    if let Some(s) = v.read_lock::<ImmutableString>() {
        return s.to_string();
    }
    v.to_string()
}

/// The record as scripts see it: an object whose fields keep their order (Rhai's own maps
/// sort their keys). `record.x` and `record["x"]` read a field (`()` when missing) and set
/// it (a new field goes at the end); `remove`, `contains` (so `"x" in record`), `keys`, `len`
/// and `to_map` work as on maps.
#[derive(Clone)]
struct ScriptRecord(Map);

fn register_record(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptRecord>("Record");
    engine.register_indexer_get(|r: &mut ScriptRecord, key: ImmutableString| -> Dynamic {
        r.0.get(key.as_str()).map_or(Dynamic::UNIT, to_dynamic)
    });
    engine.register_indexer_set(
        |r: &mut ScriptRecord, key: ImmutableString, v: Dynamic| -> Result<(), Box<EvalAltResult>> {
            set_field(&mut r.0, key.as_str(), v).map_err(Into::into)
        },
    );
    engine.register_fn("remove", |r: &mut ScriptRecord, key: ImmutableString| -> Dynamic {
        r.0.remove(key.as_str()).map_or(Dynamic::UNIT, |v| to_dynamic(&v))
    });
    engine.register_fn("contains", |r: &mut ScriptRecord, key: ImmutableString| r.0.contains_key(key.as_str()));
    engine.register_fn("keys", |r: &mut ScriptRecord| -> rhai::Array {
        r.0.keys().map(|k| Dynamic::from(ImmutableString::from(k.as_str()))).collect()
    });
    engine.register_fn("len", |r: &mut ScriptRecord| r.0.len() as rhai::INT);
    engine.register_fn("to_map", |r: &mut ScriptRecord| to_map(&r.0));
}

/// Sets one field from the script: an object set from a map keeps its fields' order.
fn set_field(m: &mut Map, key: &str, v: Dynamic) -> Result<(), String> {
    if let Some(Value::Object(inner)) = m.get_mut(key)
        && v.is_map()
    {
        return merge(inner, v.cast::<rhai::Map>(), 2);
    }
    let v = from_dynamic(v, key, 2)?;
    m.insert(key, v);
    Ok(())
}

/// The record as a Rhai map.
fn to_map(m: &Map) -> rhai::Map {
    m.iter().map(|(k, v)| (k.as_str().into(), to_dynamic(v))).collect()
}

fn to_dynamic(v: &Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Int(i) => Dynamic::from_int(*i),
        Value::Float(f) => Dynamic::from_float(*f),
        Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        Value::Array(a) => Dynamic::from_array(a.iter().map(to_dynamic).collect()),
        Value::Object(m) => Dynamic::from_map(to_map(m)),
    }
}

/// Writes the script's map back into `rec` (nested `level` deep, the record being 1): fields
/// keep their places, removed ones go, new ones are appended. Nested objects merge the same
/// way.
fn merge(rec: &mut Map, mut new: rhai::Map, level: usize) -> Result<(), String> {
    if level >= MAX_DEPTH {
        return Err(too_deep(""));
    }
    rec.retain(|k, _| new.contains_key(k));
    for (k, slot) in rec.iter_mut() {
        let d = new.remove(k.as_str()).expect("retained keys are present");
        match (slot, d) {
            (Value::Object(inner), d) if d.is_map() => merge(inner, d.cast::<rhai::Map>(), level + 1)?,
            (slot, d) => *slot = from_dynamic(d, k, level + 1)?,
        }
    }
    for (k, d) in new {
        let v = from_dynamic(d, &k, level + 1)?;
        rec.push_unchecked(Str::from(k.as_str()), v);
    }
    Ok(())
}

/// Why a script's value cannot be kept: nested too deep, under field `at`.
fn too_deep(at: &str) -> String {
    if at.is_empty() {
        format!("the script built a record {}", depth_error())
    } else {
        format!("the script set `{at}` to a value {}", depth_error())
    }
}

/// The script's value `d` as a record value nested `level` deep (a field of the record is 2).
fn from_dynamic(d: Dynamic, at: &str, level: usize) -> Result<Value, String> {
    if level >= MAX_DEPTH && (d.is_array() || d.is_map() || d.is::<ScriptRecord>()) {
        return Err(too_deep(at));
    }
    if d.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = d.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = d.as_int() {
        return Ok(Value::Int(i));
    }
    if let Ok(f) = d.as_float() {
        return if f.is_finite() {
            Ok(Value::Float(f))
        } else {
            Err(format!("the script set `{at}` to {f}, which is not a finite number"))
        };
    }
    if let Ok(c) = d.as_char() {
        return Ok(Value::from(c.to_string()));
    }
    if d.is_string() {
        let s = d.into_immutable_string().expect("checked");
        return Ok(Value::String(Str::from(s.as_str())));
    }
    if d.is_array() {
        let a = d.into_array().expect("checked");
        return a.into_iter().map(|x| from_dynamic(x, at, level + 1)).collect::<Result<Vec<_>, _>>().map(Value::Array);
    }
    if d.is::<ScriptRecord>() {
        // A copy of the record (`record.x = record`): its depth is counted, not assumed.
        let v = Value::Object(d.cast::<ScriptRecord>().0);
        if level - 1 + depth(&v, MAX_DEPTH) >= MAX_DEPTH {
            return Err(too_deep(at));
        }
        return Ok(v);
    }
    if d.is_map() {
        let m = d.cast::<rhai::Map>();
        let mut out = Map::with_capacity(m.len());
        for (k, x) in m {
            let v = from_dynamic(x, &k, level + 1)?;
            out.push_unchecked(Str::from(k.as_str()), v);
        }
        return Ok(Value::Object(out));
    }
    Err(format!("the script set `{at}` to a {}, which a record cannot hold", d.type_name()))
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use serde_json::json;

    fn script(source: &str, input: serde_json::Value) -> crate::Output {
        run(json!([{"type": "script", "source": source, "max_operations": 10000, "timeout_ms": 200}]), input)
    }

    #[test]
    fn changes_the_record_in_place_keeping_field_order() {
        let out = script(
            "record.total = record.a * 2; record.b = \"B\"; record.remove(\"c\"); record.n.y = 1.5;",
            json!([{"a": 3, "b": "x", "c": null, "n": {"z": 0, "x": 1}, "d": true}]),
        );
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        assert_eq!(json(&out.records), r#"[{"a":3,"b":"B","n":{"z":0,"x":1,"y":1.5},"d":true,"total":6}]"#);
    }

    #[test]
    fn sees_now_and_can_drop_or_fail() {
        let out = script("record.at = now;", json!([{}]));
        assert_eq!(json(&out.records), r#"[{"at":"2025-01-16T08:00:00.000Z"}]"#);
        let out = script("if record.keep != true { record = (); }", json!([{"keep": true}, {"keep": false}, {}]));
        assert_eq!((out.records.len(), out.filtered, out.dropped), (1, 2, 0));
        let out = script("if record.amount < 0 { throw \"negative amount\"; }", json!([{"amount": -1}, {"amount": 1}]));
        assert_eq!(out.records.len(), 1);
        assert_eq!(out.rejected[0].reason, "the script failed: negative amount");
        assert_eq!(out.rejected[0].stage, "transformations[0]");
    }

    #[test]
    fn runtime_errors_and_limits_fail_the_record_not_the_process() {
        let out = script("record.x = record.a + 1;", json!([{"a": "s"}, {"a": 1}, {"a": 9223372036854775807i64}]));
        assert_eq!(json(&out.records), r#"[{"a":"s","x":"s1"},{"a":1,"x":2}]"#);
        assert_eq!(out.rejected.len(), 1, "integer overflow");
        let out = script("loop { }", json!([{"a": 1}]));
        assert_eq!(out.rejected[0].reason, "the script exceeded its 10000 operations");
        let out = run(
            json!([{"type": "script", "source": "let s = 0; loop { s += 1; }", "max_operations": 1000000000, "timeout_ms": 20}]),
            json!([{}]),
        );
        assert_eq!(out.rejected[0].reason, "the script ran longer than its 20 ms");
        let out = script("let s = \"x\"; loop { s += s; }", json!([{}]));
        assert!(out.rejected[0].reason.contains("too large"), "{}", out.rejected[0].reason);
        let out = script("record = 5;", json!([{}]));
        assert!(out.rejected[0].reason.contains("must stay an object"), "{}", out.rejected[0].reason);
        let out = script("record.f = 1.0 / 0.0;", json!([{}]));
        assert!(out.rejected[0].reason.contains("not a finite number"), "{}", out.rejected[0].reason);
        let out = script("import \"x\" as x;", json!([{}]));
        assert_eq!(out.rejected.len(), 1, "no module can be loaded");
    }

    #[test]
    fn values_nested_past_the_depth_limit_fail_the_record_not_the_process() {
        let deep = |n: usize, set: &str| {
            let source = format!("let m = #{{}}; for i in 0..{n} {{ m = #{{ a: m.take() }}; }} {set}");
            run(json!([{"type": "script", "source": source, "max_operations": 100_000_000, "timeout_ms": 60_000}]), json!([{"x": 1}]))
        };
        // A field of the record is level 2: 126 maps below it make 127 levels, the most kept.
        let out = deep(125, "record.deep = m;");
        assert!(out.rejected.is_empty(), "{:?}", out.rejected.first().map(|r| &r.reason));
        for (n, set) in [(126, "record.deep = m;"), (20_000, "record.deep = m;"), (300, "record = m;"), (300, "record.list = [m];")] {
            let out = deep(n, set);
            assert_eq!(out.records.len(), 0, "{n} {set}");
            assert!(out.rejected[0].reason.contains("nested 128 levels deep or more"), "{n} {set}: {}", out.rejected[0].reason);
        }
        // A copy of the record inside itself, again and again.
        let out = script("for i in 0..200 { record.me = record; }", json!([{"x": 1}]));
        assert!(out.rejected[0].reason.contains("nested 128 levels deep or more"), "{}", out.rejected[0].reason);
    }

    #[test]
    fn record_functions() {
        let out = script(
            r#"record.has_a = "a" in record; record.n = record.len(); record.k = record.keys(); record["x y"] = record.missing;"#,
            json!([{"a": 1, "b": 2}]),
        );
        assert_eq!(json(&out.records), r#"[{"a":1,"b":2,"has_a":true,"n":3,"k":["a","b","has_a","n"],"x y":null}]"#);
        let out = script("record = #{ z: 1, a: 2 };", json!([{"a": 0, "q": 1}]));
        assert_eq!(json(&out.records), r#"[{"a":2,"z":1}]"#, "a map replaces the record; known fields keep their place");
    }

    #[test]
    fn a_failing_script_leaves_the_record_as_it_came() {
        let out = script("record.a = 5; throw \"no\";", json!([{"a": 1}]));
        assert_eq!(json(&[out.rejected[0].record.clone()]), r#"[{"a":1}]"#);
    }

    #[test]
    fn values_round_trip() {
        let out = script("", json!([{"i": 1, "f": 1.0, "s": "é", "b": false, "n": null, "a": [1, {"x": null}], "o": {}}]));
        assert_eq!(json(&out.records), r#"[{"i":1,"f":1.0,"s":"é","b":false,"n":null,"a":[1,{"x":null}],"o":{}}]"#);
    }
}
