//! dagg's transformation executor: compiles validated [`TransformSpec`]s into a [`Chain`] and
//! runs batches of records through it. Pure: no I/O, no clocks except the batch's
//! [`BatchContext::now`] and the `script` time limit.
//!
//! Contract (`spec/pipeline.md`, "Transformations"):
//! - Steps run in order. Consecutive stateless steps run per record in one loop; each
//!   stateful step (`aggregation`, `deduplicate`) takes the whole output of the steps before
//!   it. A `join` is stateless at run time (its index is built once in [`Chain::new`]).
//! - A step that fails for a record sends that record to [`Output::rejected`] with the stage
//!   (`transformations[2]`, `transformations[0].then[1]`), the reason, the record as it was
//!   when the step failed, and the index of the input record it came from; the batch goes on.
//! - `record_filter`, an inner join without a match, an empty `record_split`, a duplicate
//!   removed by `deduplicate` and a `script` that sets `record = ()` count in
//!   [`Output::filtered`]; `field_validation` with `on_failure: drop` counts in
//!   [`Output::dropped`] (which makes a run end `warning`).
//! - [`Chain::finish`] ends a bounded run: aggregations emit their groups (and open windows),
//!   `deduplicate` with `keep: last` emits what it held.
//! - [`Chain::snapshot`] writes what the stateful steps hold as versioned JSON, and
//!   [`Chain::restore`] puts it back into a chain built from the same specs, so a checkpointed
//!   run resumes mid-way with the same output as if it had never stopped.

mod aggregate;
mod condition;
mod dates;
mod dedup;
mod error;
mod field_op;
mod fields;
mod join;
mod key;
pub mod partition;
mod script;
mod state;
mod text;
mod validate;

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use dagg_model::spec::transform::{
    AdditionSpec, CalculationSpec, Condition, SplitSpec, TransformSpec, ValidationSpec,
};
use dagg_model::{FieldPath, Record, Value};

pub use crate::condition::eval as eval_condition;
pub use crate::error::Error;
pub use crate::validate::{VALIDATION_ERRORS_FIELD, is_email, is_http_url};

use crate::aggregate::AggregateStep;
use crate::dedup::{Dedup, DedupStep};
use crate::field_op::FieldOpStep;
use crate::join::{JoinStep, Joined};
use crate::script::{ScriptStep, Scripted};
use crate::validate::Verdict;

/// What a batch is processed under.
#[derive(Clone, Copy, Debug)]
pub struct BatchContext {
    /// The batch's time: `current_timestamp`, `current_date` and a script's `now` read it, so
    /// every record of a batch gets the same value.
    pub now: DateTime<Utc>,
}

/// A record that a step failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    /// Where: `transformations[2]`, `transformations[0].then[1]`.
    pub stage: String,
    /// Why, for people.
    pub reason: String,
    /// The record as it was when the step failed.
    pub record: Record,
    /// Index, in the batch given to [`Chain::process`], of the input record it came from;
    /// `None` when it was emitted from state (aggregates, `keep: last`).
    pub input: Option<usize>,
}

/// What a call to [`Chain::process`] or [`Chain::finish`] produced. Calls append.
#[derive(Default, Debug)]
pub struct Output {
    pub records: Vec<Record>,
    pub rejected: Vec<Rejected>,
    /// Removed by `field_validation` with `on_failure: drop`.
    pub dropped: u64,
    /// Removed by `record_filter`, an inner join without a match, an empty `record_split`,
    /// `deduplicate`, or a script that set `record = ()`.
    pub filtered: u64,
}

/// Per-batch values computed once.
pub(crate) struct Env {
    timestamp: Value,
    date: Value,
    now_text: rhai::ImmutableString,
}

impl Env {
    pub(crate) fn new(ctx: &BatchContext) -> Env {
        let ts = ctx.now.to_rfc3339_opts(SecondsFormat::Millis, true);
        Env {
            date: Value::from(ctx.now.format("%Y-%m-%d").to_string()),
            now_text: ts.as_str().into(),
            timestamp: Value::from(ts),
        }
    }
}

/// One stateless step with its stage name.
struct Step {
    stage: String,
    kind: StepKind,
}

enum StepKind {
    FieldOp(FieldOpStep),
    Calculation(CalculationSpec),
    Addition(AdditionSpec),
    Removal(Vec<FieldPath>),
    Filter(Condition),
    Validation(ValidationSpec),
    Conditional { condition: Condition, then: Vec<Step>, otherwise: Vec<Step> },
    Join(Box<JoinStep>),
    Split(SplitSpec),
    Script(Box<ScriptStep>),
}

/// A run of stateless steps, or one stateful step (with its index in the transformation
/// list).
enum Stage {
    Fused(Vec<Step>),
    Aggregate { index: usize, stage: String, step: Box<AggregateStep> },
    Dedup { index: usize, step: Box<DedupStep> },
}

impl Stage {
    /// The stateful step's index and type name.
    fn stateful(&self) -> Option<(usize, &'static str)> {
        match self {
            Stage::Fused(_) => None,
            Stage::Aggregate { index, .. } => Some((*index, "aggregation")),
            Stage::Dedup { index, .. } => Some((*index, "deduplicate")),
        }
    }
}

/// A stateful step's state read from a snapshot.
enum Restored {
    Aggregate(aggregate::Restored),
    Dedup(dedup::Restored),
}

/// The compiled transformation list of one pipeline.
pub struct Chain {
    stages: Vec<Stage>,
}

/// Where a record goes when the steps of a stage are done with it.
type Emit<'a> = dyn FnMut(Record, Option<usize>, &mut Output) + 'a;

impl Chain {
    /// Compiles `specs`. `join_data`: for each join_source name, that source's records
    /// (already read by the runtime).
    pub fn new(specs: &[TransformSpec], join_data: HashMap<String, Vec<Record>>) -> Result<Chain, Error> {
        Chain::new_at(specs, 0, join_data)
    }

    /// A chain of the steps `specs`, which are the document's `transformations[first..]`: stage
    /// names, rejections and snapshots number the steps as the document does. Keyed instances
    /// (see [`partition`]) run the tail of a list this way.
    pub fn new_at(specs: &[TransformSpec], first: usize, join_data: HashMap<String, Vec<Record>>) -> Result<Chain, Error> {
        let mut stages = Vec::new();
        let mut fused = Vec::new();
        for (i, spec) in specs.iter().enumerate().map(|(i, s)| (i + first, s)) {
            let stage = format!("transformations[{i}]");
            match spec {
                TransformSpec::Aggregation(a) => {
                    if !fused.is_empty() {
                        stages.push(Stage::Fused(std::mem::take(&mut fused)));
                    }
                    stages.push(Stage::Aggregate { index: i, stage, step: Box::new(AggregateStep::new(a)) });
                }
                TransformSpec::Deduplicate(d) => {
                    if !fused.is_empty() {
                        stages.push(Stage::Fused(std::mem::take(&mut fused)));
                    }
                    stages.push(Stage::Dedup { index: i, step: Box::new(DedupStep::new(d)) });
                }
                other => fused.push(compile_step(other, stage, &join_data, false)?),
            }
        }
        if !fused.is_empty() {
            stages.push(Stage::Fused(fused));
        }
        Ok(Chain { stages })
    }

    /// True when the chain keeps state across batches (an aggregation or a deduplicate): the
    /// runtime must then feed it every record of a run (or of a key partition) and call
    /// [`Chain::finish`] at the end. A join alone is not stateful here: its index is fixed.
    pub fn is_stateful(&self) -> bool {
        self.stages.iter().any(|s| !matches!(s, Stage::Fused(_)))
    }

    /// The chain's state (everything [`Chain::process`] accumulated that [`Chain::finish`] or
    /// later batches need), as versioned JSON: `{"version": 1, "steps": [...]}`, one entry
    /// per stateful step. It holds no JSON null (so a checkpoint can keep null for "no
    /// state"), is the same for the same input, and is `{"version": 1, "steps": []}` for a
    /// stateless chain. The format is in `state.rs`, `aggregate.rs` and `dedup.rs`.
    pub fn snapshot(&self) -> serde_json::Value {
        let steps = self
            .stages
            .iter()
            .filter_map(|stage| {
                let (index, type_name) = stage.stateful()?;
                let mut m = state::JsonMap::new();
                m.insert("step".into(), index.into());
                m.insert("type".into(), type_name.into());
                match stage {
                    Stage::Fused(_) => unreachable!("stateless"),
                    Stage::Aggregate { step, .. } => step.snapshot(&mut m),
                    Stage::Dedup { step, .. } => step.snapshot(&mut m),
                }
                Some(serde_json::Value::Object(m))
            })
            .collect();
        let mut top = state::JsonMap::new();
        top.insert("version".into(), state::VERSION.into());
        top.insert("steps".into(), serde_json::Value::Array(steps));
        serde_json::Value::Object(top)
    }

    /// Replaces the chain's state with a snapshot taken by a chain built from the same specs
    /// (and the same join data), possibly in another process. A snapshot of another version
    /// or shape (other stateful steps, aggregates, window, `keep`, …) is an error that says
    /// why, and leaves the chain as it was.
    pub fn restore(&mut self, snapshot: &serde_json::Value) -> Result<(), Error> {
        let mut top = state::Fields::new(snapshot).map_err(Error::NotASnapshot)?;
        let version = top.req("version").map_err(Error::NotASnapshot)?;
        if version.as_u64() != Some(state::VERSION) {
            return Err(Error::Version { found: state::found(version), expected: state::VERSION });
        }
        let steps = top.req("steps").and_then(state::to_array).map_err(|e| Error::Malformed(format!("`steps`: {e}")))?;
        top.end().map_err(Error::Malformed)?;
        let ours: Vec<(usize, &str)> = self.stages.iter().filter_map(Stage::stateful).collect();
        if steps.len() != ours.len() {
            let list = |v: Vec<String>| if v.is_empty() { "none".to_string() } else { v.join(", ") };
            let theirs = steps
                .iter()
                .map(|s| match (s.get("step"), s.get("type")) {
                    (Some(i), Some(serde_json::Value::String(t))) => format!("transformations[{i}] ({t})"),
                    _ => state::found(s),
                })
                .collect();
            return Err(Error::OtherSteps {
                count: steps.len(),
                theirs: list(theirs),
                ours: list(ours.iter().map(|(i, t)| format!("transformations[{i}] ({t})")).collect()),
            });
        }
        let mut restored = Vec::with_capacity(steps.len());
        for (stage, j) in self.stages.iter().filter(|s| s.stateful().is_some()).zip(steps) {
            let (index, kind) = stage.stateful().expect("filtered");
            let unreadable = |reason: String| Error::StepState { index, kind, reason };
            let mut f = state::Fields::new(j).map_err(unreadable)?;
            let (their_index, their_type) = (f.opt("step"), f.opt("type"));
            if their_index.and_then(serde_json::Value::as_u64) != Some(index as u64)
                || their_type.and_then(serde_json::Value::as_str) != Some(kind)
            {
                let show = |j: Option<&serde_json::Value>| j.map_or_else(|| "(missing)".to_string(), state::found);
                return Err(Error::StepMismatch { index, kind, found_step: show(their_index), found_type: show(their_type) });
            }
            let r = match stage {
                Stage::Fused(_) => unreachable!("filtered"),
                Stage::Aggregate { step, .. } => step.read_snapshot(&mut f).map(Restored::Aggregate),
                Stage::Dedup { step, .. } => step.read_snapshot(&mut f).map(Restored::Dedup),
            };
            let r = r.and_then(|r| f.end().map(|()| r)).map_err(unreadable)?;
            restored.push(r);
        }
        // Only now that every step's state has been read does anything change.
        for (stage, r) in self.stages.iter_mut().filter(|s| s.stateful().is_some()).zip(restored) {
            match (stage, r) {
                (Stage::Aggregate { step, .. }, Restored::Aggregate(r)) => step.restore(r),
                (Stage::Dedup { step, .. }, Restored::Dedup(r)) => step.restore(r),
                _ => unreachable!("read for this stage"),
            }
        }
        Ok(())
    }

    /// Runs `batch` through the chain, appending to `out`.
    pub fn process(&mut self, batch: Vec<Record>, ctx: &BatchContext, out: &mut Output) {
        if self.stages.is_empty() {
            out.records.extend(batch);
            return;
        }
        let env = Env::new(ctx);
        out.records.reserve(batch.len());
        let items = batch.into_iter().enumerate().map(|(i, r)| (r, Some(i)));
        let mut next = self.run_stage(0, items, &env, out);
        for i in 1..self.stages.len() {
            next = self.run_stage(i, next.into_iter(), &env, out);
        }
    }

    /// Ends a bounded run: flushes aggregations (every open window) and `deduplicate` with
    /// `keep: last`, running what they emit through the steps after them.
    pub fn finish(&mut self, ctx: &BatchContext, out: &mut Output) {
        let env = Env::new(ctx);
        for i in 0..self.stages.len() {
            let mut flushed = Vec::new();
            let mut emit = |r: Record| flushed.push((r, None));
            match &mut self.stages[i] {
                Stage::Fused(_) => continue,
                Stage::Aggregate { step, .. } => step.finish(&mut emit),
                Stage::Dedup { step, .. } => step.finish(&mut emit),
            }
            if i + 1 == self.stages.len() {
                out.records.extend(flushed.into_iter().map(|(r, _)| r));
                continue;
            }
            let mut next = flushed;
            for j in i + 1..self.stages.len() {
                next = self.run_stage(j, next.into_iter(), &env, out);
            }
        }
    }

    /// Runs stage `i` over `items`. The last stage writes to `out.records`; any other returns
    /// what the next stage takes.
    fn run_stage(
        &mut self,
        i: usize,
        items: impl Iterator<Item = (Record, Option<usize>)>,
        env: &Env,
        out: &mut Output,
    ) -> Vec<(Record, Option<usize>)> {
        let last = i + 1 == self.stages.len();
        let mut next = Vec::new();
        let mut push = |r: Record, input: Option<usize>, out: &mut Output| {
            if last {
                out.records.push(r);
            } else {
                next.push((r, input));
            }
        };
        match &mut self.stages[i] {
            Stage::Fused(steps) => {
                for (r, input) in items {
                    run_steps(steps, r, input, env, out, &mut push);
                }
            }
            Stage::Aggregate { stage, step, .. } => {
                for (r, input) in items {
                    let mut emitted = Vec::new();
                    let result = step.push(r, &mut |r| emitted.push(r));
                    if let Err((reason, record)) = result {
                        out.rejected.push(Rejected { stage: stage.clone(), reason, record, input });
                    }
                    for r in emitted {
                        push(r, None, out);
                    }
                }
            }
            Stage::Dedup { step, .. } => {
                for (r, input) in items {
                    match step.push(r) {
                        Dedup::Pass(r) => push(r, input, out),
                        Dedup::Duplicate => out.filtered += 1,
                        Dedup::Held => {}
                    }
                }
            }
        }
        next
    }
}

fn compile_step(
    spec: &TransformSpec,
    stage: String,
    join_data: &HashMap<String, Vec<Record>>,
    nested: bool,
) -> Result<Step, Error> {
    let branch = |specs: &[TransformSpec], name: &str| -> Result<Vec<Step>, Error> {
        specs
            .iter()
            .enumerate()
            .map(|(j, s)| compile_step(s, format!("{stage}.{name}[{j}]"), join_data, true))
            .collect()
    };
    if nested && spec.is_stateful() {
        return Err(Error::StatefulInConditional { stage, kind: spec.type_name() });
    }
    let kind = match spec {
        TransformSpec::FieldOperation(s) => StepKind::FieldOp(FieldOpStep::new(s)),
        TransformSpec::FieldCalculation(s) => StepKind::Calculation(s.clone()),
        TransformSpec::FieldAddition(s) => StepKind::Addition(s.clone()),
        TransformSpec::FieldRemoval(s) => StepKind::Removal(s.fields.clone()),
        TransformSpec::RecordFilter(s) => StepKind::Filter(s.condition.clone()),
        TransformSpec::FieldValidation(s) => StepKind::Validation(s.clone()),
        TransformSpec::Conditional(s) => StepKind::Conditional {
            condition: s.condition.clone(),
            then: branch(&s.then, "then")?,
            otherwise: branch(&s.otherwise, "else")?,
        },
        TransformSpec::Join(j) => {
            let records = join_data
                .get(&j.join_source)
                .ok_or_else(|| Error::NoJoinData { stage: stage.clone(), join_source: j.join_source.clone() })?;
            StepKind::Join(Box::new(JoinStep::new(j, records)))
        }
        TransformSpec::RecordSplit(s) => StepKind::Split(s.clone()),
        TransformSpec::Script(s) => StepKind::Script(Box::new(ScriptStep::new(s))),
        TransformSpec::Aggregation(_) | TransformSpec::Deduplicate(_) => {
            return Err(Error::StatefulInConditional { stage, kind: spec.type_name() });
        }
    };
    Ok(Step { stage, kind })
}

/// Runs `rec` through `steps`, handing each surviving record to `emit`.
fn run_steps(steps: &[Step], mut rec: Record, input: Option<usize>, env: &Env, out: &mut Output, emit: &mut Emit) {
    for (i, step) in steps.iter().enumerate() {
        let result = match &step.kind {
            StepKind::FieldOp(op) => op.apply(&mut rec),
            StepKind::Calculation(c) => fields::calculate(c, &mut rec),
            StepKind::Addition(a) => fields::add(a, &mut rec, env),
            StepKind::Removal(paths) => {
                for p in paths {
                    p.remove(&mut rec);
                }
                Ok(())
            }
            StepKind::Filter(c) => {
                if !condition::eval(c, &rec) {
                    out.filtered += 1;
                    return;
                }
                Ok(())
            }
            StepKind::Validation(v) => match validate::apply(v, &mut rec) {
                Verdict::Pass => Ok(()),
                Verdict::Drop => {
                    out.dropped += 1;
                    return;
                }
                Verdict::Reject(reason) => Err(reason),
            },
            StepKind::Conditional { condition, then, otherwise } => {
                let branch = if condition::eval(condition, &rec) { then } else { otherwise };
                let rest = &steps[i + 1..];
                if rest.is_empty() {
                    run_steps(branch, rec, input, env, out, emit);
                } else {
                    run_steps(branch, rec, input, env, out, &mut |r, input, out| {
                        run_steps(rest, r, input, env, out, emit)
                    });
                }
                return;
            }
            StepKind::Join(j) => match j.apply(&mut rec) {
                Joined::Kept => Ok(()),
                Joined::Unmatched => {
                    out.filtered += 1;
                    return;
                }
            },
            StepKind::Split(s) => {
                split(s, &step.stage, rec, input, env, out, &steps[i + 1..], emit);
                return;
            }
            StepKind::Script(s) => match s.apply(&mut rec, env) {
                Ok(Scripted::Kept) => Ok(()),
                Ok(Scripted::Dropped) => {
                    out.filtered += 1;
                    return;
                }
                Err(reason) => Err(reason),
            },
        };
        if let Err(reason) = result {
            out.rejected.push(Rejected { stage: step.stage.clone(), reason, record: rec, input });
            return;
        }
    }
    emit(rec, input, out);
}

/// `record_split`: one record per element, the element in the array's place under the
/// output name, each run through the `rest` of the steps.
#[allow(clippy::too_many_arguments)]
fn split(
    spec: &SplitSpec,
    stage: &str,
    mut rec: Record,
    input: Option<usize>,
    env: &Env,
    out: &mut Output,
    rest: &[Step],
    emit: &mut Emit,
) {
    let items = match spec.field.get_mut(&mut rec) {
        Some(Value::Array(items)) => std::mem::take(items),
        _ => return run_steps(rest, rec, input, env, out, emit),
    };
    if items.is_empty() {
        out.filtered += 1;
        return;
    }
    let same_parent = spec.output.as_str().rsplit_once('.').map(|(p, _)| p)
        == spec.field.as_str().rsplit_once('.').map(|(p, _)| p);
    let n = items.len();
    for (k, item) in items.into_iter().enumerate() {
        let mut r = if k + 1 == n { std::mem::take(&mut rec) } else { rec.clone() };
        if let Some(slot) = spec.field.get_mut(&mut r) {
            *slot = item;
        }
        if spec.output != spec.field {
            if same_parent {
                if let Some(parent) = spec.field.parent_mut(&mut r) {
                    parent.rename(spec.field.leaf(), spec.output.leaf());
                }
            } else if let Some(v) = spec.field.remove(&mut r)
                && let Err(e) = spec.output.set(&mut r, v)
            {
                out.rejected.push(Rejected { stage: stage.to_string(), reason: e.to_string(), record: r, input });
                continue;
            }
        }
        run_steps(rest, r, input, env, out, emit);
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Running a chain from JSON in tests.

    use super::*;
    use dagg_model::SpecErrors;
    use dagg_model::spec::transform::parse_transformations;

    pub fn chain(transformations: serde_json::Value) -> Chain {
        chain_with(transformations, HashMap::new())
    }

    pub fn chain_with(transformations: serde_json::Value, join_data: HashMap<String, Vec<Record>>) -> Chain {
        let mut errs = SpecErrors::new();
        let specs = parse_transformations(&transformations, "transformations", &mut errs);
        assert!(errs.is_empty(), "{errs}");
        Chain::new(&specs, join_data).unwrap()
    }

    pub fn records(v: serde_json::Value) -> Vec<Record> {
        let Value::Array(items) = Value::from(&v) else { panic!("a list of records") };
        items
            .into_iter()
            .map(|i| match i {
                Value::Object(m) => m,
                other => panic!("not a record: {other}"),
            })
            .collect()
    }

    pub fn ctx() -> BatchContext {
        BatchContext { now: "2025-01-16T08:00:00Z".parse().unwrap() }
    }

    /// Processes `input` as one batch and finishes.
    pub fn run(transformations: serde_json::Value, input: serde_json::Value) -> Output {
        let mut c = chain(transformations);
        let mut out = Output::default();
        c.process(records(input), &ctx(), &mut out);
        c.finish(&ctx(), &mut out);
        out
    }

    /// The output records as compact JSON, one string.
    pub fn json(records: &[Record]) -> String {
        Value::Array(records.iter().cloned().map(Value::Object).collect()).to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn failures_reject_the_record_and_the_batch_goes_on() {
        let out = run(
            json!([
                {"type": "field_operation", "field_name": "name", "operation": "uppercase"},
                {"type": "field_calculation", "field_name": "r", "operation": "divide", "parameters": {"source_fields": ["a", "b"]}},
            ]),
            json!([{"name": "x", "a": 1, "b": 2}, {"name": "y", "a": 1, "b": 0}, {"name": 3}, {"name": "z", "a": 3, "b": 4}]),
        );
        assert_eq!(json(&out.records), r#"[{"name":"X","a":1,"b":2,"r":0.5},{"name":"Z","a":3,"b":4,"r":0.75}]"#);
        assert_eq!(out.rejected.len(), 2);
        let r = &out.rejected[0];
        assert_eq!((r.stage.as_str(), r.input), ("transformations[1]", Some(1)));
        assert!(r.reason.starts_with("division by zero"));
        assert_eq!(Value::Object(r.record.clone()).to_json(), r#"{"name":"Y","a":1,"b":0}"#, "as it was when it failed");
        assert_eq!((out.rejected[1].stage.as_str(), out.rejected[1].input), ("transformations[0]", Some(2)));
    }

    #[test]
    fn conditional_stage_names_and_continuation() {
        let out = run(
            json!([
                {"type": "conditional", "condition": {"field": "vip", "operator": "equals", "value": true},
                 "then": [{"type": "field_addition", "field_name": "rate", "value": 0.15},
                          {"type": "field_calculation", "field_name": "d", "operation": "multiply", "parameters": {"source_fields": ["rate", "amount"]}}],
                 "else": [{"type": "record_split", "field_name": "items", "output_field": "item"}]},
                {"type": "field_addition", "field_name": "done", "value": true},
            ]),
            json!([{"vip": true, "amount": 100}, {"vip": true, "amount": "x"}, {"items": [1, 2]}, {"items": []}]),
        );
        assert_eq!(
            json(&out.records),
            r#"[{"vip":true,"amount":100,"rate":0.15,"d":15.0,"done":true},{"item":1,"done":true},{"item":2,"done":true}]"#
        );
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].stage, "transformations[0].then[1]");
        assert_eq!(out.rejected[0].input, Some(1));
        assert_eq!(out.filtered, 1, "the empty split");
    }

    #[test]
    fn record_split_places_elements() {
        let t = json!([{"type": "record_split", "field_name": "items", "output_field": "item"}]);
        let out = run(t.clone(), json!([{"id": 1, "items": [{"sku": "a"}, {"sku": "b"}], "z": 0}, {"id": 2, "items": "x"}, {"id": 3}]));
        assert_eq!(
            json(&out.records),
            r#"[{"id":1,"item":{"sku":"a"},"z":0},{"id":1,"item":{"sku":"b"},"z":0},{"id":2,"items":"x"},{"id":3}]"#
        );
        let out = run(json!([{"type": "record_split", "field_name": "o.items"}]), json!([{"o": {"items": [1, 2], "k": 0}}]));
        assert_eq!(json(&out.records), r#"[{"o":{"items":1,"k":0}},{"o":{"items":2,"k":0}}]"#);
        let out = run(json!([{"type": "record_split", "field_name": "o.items", "output_field": "item"}]), json!([{"o": {"items": [1]}, "k": 0}]));
        assert_eq!(json(&out.records), r#"[{"o":{},"k":0,"item":1}]"#);
    }

    #[test]
    fn validation_on_failure() {
        let v = |on: &str| {
            run(
                json!([{"type": "field_validation", "field_name": "email", "validation_type": "email_format", "on_failure": on}]),
                json!([{"email": "a@b.co"}, {"email": "nope"}, {"x": 1}]),
            )
        };
        let out = v("reject");
        assert_eq!(json(&out.records), r#"[{"email":"a@b.co"}]"#);
        assert_eq!(out.rejected.len(), 2);
        assert_eq!(out.rejected[0].reason, "`email` is not a valid e-mail address");
        assert_eq!(out.rejected[1].reason, "`email` is missing");
        let out = v("drop");
        assert_eq!((out.records.len(), out.dropped, out.rejected.len()), (1, 2, 0));
        let out = v("flag");
        assert_eq!(
            json(&out.records),
            concat!(
                r#"[{"email":"a@b.co"},"#,
                r#"{"email":"nope","_validation_errors":[{"field":"email","validation_type":"email_format","message":"`email` is not a valid e-mail address"}]},"#,
                r#"{"x":1,"_validation_errors":[{"field":"email","validation_type":"email_format","message":"`email` is missing"}]}]"#
            )
        );
        let out = run(
            json!([
                {"type": "field_validation", "field_name": "a", "validation_type": "not_null", "on_failure": "flag"},
                {"type": "field_validation", "field_name": "b", "validation_type": "range", "parameters": {"min": 0, "max": 10}, "on_failure": "flag"},
            ]),
            json!([{"b": 11}]),
        );
        let errs = out.records[0].get(VALIDATION_ERRORS_FIELD).unwrap().as_array().unwrap();
        assert_eq!(errs.len(), 2, "both failures are appended");
    }

    #[test]
    fn validations() {
        let check = |vt: &str, params: serde_json::Value, value: serde_json::Value| {
            let out = run(
                json!([{"type": "field_validation", "field_name": "f", "validation_type": vt, "parameters": params}]),
                json!([{"f": value}]),
            );
            out.rejected.is_empty()
        };
        assert!(check("not_null", json!({}), json!(0)));
        assert!(!check("not_null", json!({}), json!(null)));
        assert!(check("regex", json!({"pattern": "^[A-Z]{3}$"}), json!("ABC")));
        assert!(!check("regex", json!({"pattern": "^[A-Z]{3}$"}), json!("ABCD")));
        assert!(check("regex", json!({"pattern": "^\\d{5}$"}), json!(10001)));
        assert!(check("range", json!({"min": 1, "max": 2}), json!(1.5)));
        assert!(check("range", json!({"min": 1, "max": 2}), json!(2)));
        assert!(!check("range", json!({"min": 1, "max": 2}), json!(2.01)));
        assert!(!check("range", json!({"min": 1}), json!("5")));
        assert!(check("range", json!({"max": 0}), json!(-100)));
        assert!(check("in_set", json!({"values": ["a", 1]}), json!(1.0)));
        assert!(!check("in_set", json!({"values": ["a", 1]}), json!("1")));
        assert!(check("url", json!({}), json!("https://example.com/x")));
        assert!(!check("url", json!({}), json!("example.com")));
        assert!(check("date", json!({}), json!("2025-01-15")));
        assert!(check("date", json!({}), json!("2025-01-15T10:30:00+01:00")));
        assert!(!check("date", json!({}), json!("2025-01-15T10:30:00")));
        assert!(!check("date", json!({}), json!("15/01/2025")));
        assert!(!check("email_format", json!({}), json!(5)));
    }

    #[test]
    fn filter_removes_and_counts() {
        let out = run(
            json!([{"type": "record_filter", "condition": {"field": "status", "operator": "equals", "value": "completed"}}]),
            json!([{"status": "completed"}, {"status": "pending"}, {}]),
        );
        assert_eq!((out.records.len(), out.filtered), (1, 2));
    }

    #[test]
    fn removal_of_nested_and_missing_fields() {
        let out = run(
            json!([{"type": "field_removal", "field_names": ["a.b", "c", "nope", "d.0"]}]),
            json!([{"a": {"b": 1, "x": 2}, "c": 3, "d": [1]}]),
        );
        assert_eq!(json(&out.records), r#"[{"a":{"x":2},"d":[1]}]"#);
    }

    #[test]
    fn field_addition_overwrites_in_place_and_fails_on_a_scalar_parent() {
        let out = run(
            json!([{"type": "field_addition", "field_name": "a", "value": "new"},
                   {"type": "field_addition", "field_name": "s.x", "value": 1}]),
            json!([{"a": 1, "b": 2}, {"a": 1, "s": "scalar"}]),
        );
        assert_eq!(json(&out.records), r#"[{"a":"new","b":2,"s":{"x":1}}]"#);
        assert_eq!(out.rejected[0].stage, "transformations[1]");
        assert!(out.rejected[0].reason.contains("`s` is string"), "{}", out.rejected[0].reason);
    }

    #[test]
    fn every_record_of_a_batch_gets_the_same_timestamp() {
        let out = run(
            json!([{"type": "field_addition", "field_name": "t", "value": "current_timestamp"},
                   {"type": "field_addition", "field_name": "d", "value": "current_date"}]),
            json!([{}, {}]),
        );
        assert_eq!(json(&out.records), r#"[{"t":"2025-01-16T08:00:00.000Z","d":"2025-01-16"},{"t":"2025-01-16T08:00:00.000Z","d":"2025-01-16"}]"#);
    }

    #[test]
    fn joins_in_a_chain() {
        let mut data = HashMap::new();
        data.insert("crm".to_string(), records(json!([{"email": "a@x.io", "seg": "P", "id": 7}])));
        let mut c = chain_with(
            json!([{"type": "join", "join_type": "inner", "primary_key": "email", "foreign_key": "email", "join_source": "crm"}]),
            data,
        );
        assert!(!c.is_stateful());
        let mut out = Output::default();
        c.process(records(json!([{"email": "a@x.io", "id": 1}, {"email": "b@x.io"}])), &ctx(), &mut out);
        assert_eq!(json(&out.records), r#"[{"email":"a@x.io","id":7,"seg":"P"}]"#);
        assert_eq!(out.filtered, 1);
        let mut errs = dagg_model::SpecErrors::new();
        let specs = dagg_model::spec::transform::parse_transformations(
            &json!([{"type": "join", "primary_key": "a", "foreign_key": "a", "join_source": "nope"}]),
            "transformations",
            &mut errs,
        );
        assert!(Chain::new(&specs, HashMap::new()).err().unwrap().to_string().contains("join source `nope`"));
    }

    #[test]
    fn dedup_first_and_last() {
        let input = json!([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 1.0, "v": "c"}, {"id": "1", "v": "d"}, {"v": "e"}, {"id": null, "v": "f"}]);
        let out = run(json!([{"type": "deduplicate", "key_fields": ["id"]}]), input.clone());
        assert_eq!(json(&out.records), r#"[{"id":1,"v":"a"},{"id":2,"v":"b"},{"id":"1","v":"d"},{"v":"e"}]"#);
        assert_eq!(out.filtered, 2);
        let mut c = chain(json!([{"type": "deduplicate", "key_fields": ["id"], "keep": "last"},
                                {"type": "field_addition", "field_name": "x", "value": 1}]));
        assert!(c.is_stateful());
        let mut out = Output::default();
        c.process(records(input), &ctx(), &mut out);
        assert!(out.records.is_empty(), "keep: last waits for the end");
        c.finish(&ctx(), &mut out);
        assert_eq!(
            json(&out.records),
            r#"[{"id":1.0,"v":"c","x":1},{"id":2,"v":"b","x":1},{"id":"1","v":"d","x":1},{"id":null,"v":"f","x":1}]"#
        );
        assert_eq!(out.filtered, 2);
    }

    #[test]
    fn state_carries_across_batches() {
        let mut c = chain(json!([{"type": "deduplicate", "key_fields": ["id"]}]));
        let mut out = Output::default();
        c.process(records(json!([{"id": 1}])), &ctx(), &mut out);
        c.process(records(json!([{"id": 2}, {"id": 1}])), &ctx(), &mut out);
        assert_eq!(json(&out.records), r#"[{"id":1},{"id":2}]"#);
    }

    #[test]
    fn a_chain_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<Chain>();
        send::<Output>();
    }

    #[test]
    fn an_empty_chain_passes_everything() {
        let out = run(json!([]), json!([{"a": 1}]));
        assert_eq!(json(&out.records), r#"[{"a":1}]"#);
    }
}
