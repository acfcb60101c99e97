//! `aggregation`: groups and folds, over the whole run or over tumbling windows.
//!
//! Groups keep the order of their first appearance. Every aggregate skips records whose
//! input field is missing or null. An input that an aggregate cannot use (a string for `sum`,
//! a string against numbers for `min`) fails that record, which then counts in no aggregate.
//!
//! With a tumbling window, each record falls in `[floor(t / size) * size, + size)` (seconds
//! since the Unix epoch); the watermark is the largest event time seen, and a window emits as
//! soon as the watermark reaches its end. A record for a window that has already emitted is
//! late and fails. Without a window the whole run is one window, emitted by `finish`.
//!
//! Snapshot (see `state.rs`): `"ops"` (the aggregates, to check the spec), `"details":
//! true` with `include_details`; without a window `"groups"`, with one `"window"` (its size),
//! `"watermark"` (absent before the first time) and `"windows": [{"start", "groups"}]`, the
//! open ones in time order. The watermark alone says which windows have emitted (those
//! ending at or before it), so late records are still rejected after a restore. A group is
//! `[key, acc…, details?]`: its group-by values as first seen, then per aggregate
//! - `sum`, `average`: `[n, ints]`, or `[n, ints, floats, compensation]` once a float was
//!   added (the integer part is exact, as text beyond i64). A `sum` or `average` of the
//!   same field as an earlier one holds the same state and is not written again;
//! - `count`: n; `count_distinct`: the distinct values, as first seen;
//! - `min`, `max`, `first`, `last`: `[]` or `[value]`; `collect`: the values.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use dagg_model::spec::transform::{AggOp, AggregationSpec};
use dagg_model::{Map, Record, Value};

use crate::dates;
use crate::key::{KeyIndex, hash_key, hash_one, key_of};
use crate::state::{self, Fields, Json, JsonMap};

pub(crate) struct AggregateStep {
    spec: AggregationSpec,
    /// Open windows by start second (one entry, start 0, without a window).
    windows: BTreeMap<i64, Bucket>,
    watermark: Option<i64>,
    /// The group-by values of the record being folded (allocation reused).
    key_buf: Vec<&'static Value>,
    /// Per aggregate: for a `sum` or `average` of the same field as an earlier `sum` or
    /// `average`, that one's index (their accumulators are equal, so a snapshot writes one).
    same_sum: Vec<Option<usize>>,
}

#[derive(Default)]
struct Bucket {
    index: KeyIndex,
    groups: Vec<Group>,
}

struct Group {
    accs: Vec<Acc>,
    details: Vec<Value>,
}

#[derive(Clone)]
enum Acc {
    /// `sum` and `average`: integers exactly (i128), floats compensated (Neumaier).
    Sum { ints: i128, floats: f64, comp: f64, any_float: bool, n: u64 },
    Count(u64),
    Distinct(KeyIndex),
    Extreme(Option<Value>),
    First(Option<Value>),
    Last(Option<Value>),
    Collect(Vec<Value>),
}

impl Acc {
    fn new(op: AggOp) -> Acc {
        match op {
            AggOp::Sum | AggOp::Average => Acc::Sum { ints: 0, floats: 0.0, comp: 0.0, any_float: false, n: 0 },
            AggOp::Count => Acc::Count(0),
            AggOp::CountDistinct => Acc::Distinct(KeyIndex::default()),
            AggOp::Min | AggOp::Max => Acc::Extreme(None),
            AggOp::First => Acc::First(None),
            AggOp::Last => Acc::Last(None),
            AggOp::Collect => Acc::Collect(Vec::new()),
        }
    }

    fn add(&mut self, op: AggOp, v: &Value) {
        match self {
            Acc::Sum { ints, floats, comp, any_float, n } => {
                *n += 1;
                match v {
                    Value::Int(i) => *ints += *i as i128,
                    Value::Float(f) => {
                        *any_float = true;
                        let t = *floats + f;
                        *comp += if floats.abs() >= f.abs() { (*floats - t) + f } else { (f - t) + *floats };
                        *floats = t;
                    }
                    _ => unreachable!("checked before folding"),
                }
            }
            Acc::Count(n) => *n += 1,
            Acc::Distinct(set) => {
                set.find_or_insert(hash_one(v), &[v]);
            }
            Acc::Extreme(cur) => {
                let better = match cur {
                    None => true,
                    Some(c) => {
                        let o = v.compare(c);
                        if op == AggOp::Min { o == Some(Ordering::Less) } else { o == Some(Ordering::Greater) }
                    }
                };
                if better {
                    *cur = Some(v.clone());
                }
            }
            Acc::First(cur) => {
                if cur.is_none() {
                    *cur = Some(v.clone());
                }
            }
            Acc::Last(cur) => *cur = Some(v.clone()),
            Acc::Collect(items) => items.push(v.clone()),
        }
    }

    fn result(self, op: AggOp) -> Value {
        match self {
            Acc::Sum { n: 0, .. } => Value::Null,
            Acc::Sum { ints, floats, comp, any_float, n } => {
                let float_total = || ints as f64 + (floats + comp);
                if op == AggOp::Average {
                    Value::Float(float_total() / n as f64)
                } else if any_float {
                    Value::Float(float_total())
                } else {
                    i64::try_from(ints).map(Value::Int).unwrap_or_else(|_| Value::Float(ints as f64))
                }
            }
            Acc::Count(n) => Value::Int(n as i64),
            Acc::Distinct(set) => Value::Int(set.len() as i64),
            Acc::Extreme(v) | Acc::First(v) | Acc::Last(v) => v.unwrap_or(Value::Null),
            Acc::Collect(items) if items.is_empty() => Value::Null,
            Acc::Collect(items) => Value::Array(items),
        }
    }

    fn snapshot(&self) -> Json {
        match self {
            Acc::Sum { ints, floats, comp, any_float, n } => {
                let mut a = vec![Json::from(*n), state::wide_int(*ints)];
                if *any_float {
                    a.extend([state::float(*floats), state::float(*comp)]);
                }
                Json::Array(a)
            }
            Acc::Count(n) => Json::from(*n),
            Acc::Distinct(set) => Json::Array((0..set.len()).map(|s| state::value(&set.key(s)[0])).collect()),
            Acc::Extreme(v) | Acc::First(v) | Acc::Last(v) => Json::Array(v.iter().map(state::value).collect()),
            Acc::Collect(items) => Json::Array(items.iter().map(state::value).collect()),
        }
    }

    fn restore(op: AggOp, j: &Json) -> Result<Acc, String> {
        let mut acc = Acc::new(op);
        match &mut acc {
            Acc::Sum { ints, floats, comp, any_float, n } => match state::to_array(j)? {
                [count, int_part, rest @ ..] if rest.is_empty() || rest.len() == 2 => {
                    *n = state::to_u64(count)?;
                    *ints = state::to_wide_int(int_part)?;
                    if let [f, c] = rest {
                        (*floats, *comp, *any_float) = (state::to_float(f)?, state::to_float(c)?, true);
                    }
                }
                _ => return Err(format!("expected [n, ints] or [n, ints, floats, compensation], found {}", state::found(j))),
            },
            Acc::Count(n) => *n = state::to_u64(j)?,
            Acc::Distinct(set) => {
                for (i, item) in state::to_array(j)?.iter().enumerate() {
                    let v = state::to_value(item)?;
                    if set.insert_new(hash_one(&v), vec![v]).is_none() {
                        return Err(format!("distinct value {i} repeats an earlier one: {}", state::found(item)));
                    }
                }
            }
            Acc::Extreme(cur) | Acc::First(cur) | Acc::Last(cur) => match state::to_array(j)? {
                [] => {}
                [v] => *cur = Some(state::to_value(v)?),
                _ => return Err(format!("expected [] or [value], found {}", state::found(j))),
            },
            Acc::Collect(items) => {
                *items = state::to_array(j)?.iter().map(state::to_value).collect::<Result<_, _>>()?;
            }
        }
        Ok(acc)
    }
}

/// An aggregation's state read from a snapshot, ready to replace the step's.
pub(crate) struct Restored {
    windows: BTreeMap<i64, Bucket>,
    watermark: Option<i64>,
}

/// Reuses a key buffer's allocation across borrows of different records: the vector is
/// emptied, and collecting an emptied vector of references into one of another lifetime
/// reuses its memory (the standard library collects in place when layouts match).
pub(crate) fn recycle<'a, 'b>(mut v: Vec<&'a Value>) -> Vec<&'b Value> {
    v.clear();
    v.into_iter().map(|_| -> &'b Value { unreachable!("the vector is empty") }).collect()
}

impl AggregateStep {
    pub(crate) fn new(spec: &AggregationSpec) -> AggregateStep {
        let is_sum = |op| matches!(op, AggOp::Sum | AggOp::Average);
        let same_sum = spec
            .fields
            .iter()
            .enumerate()
            .map(|(k, f)| {
                let earlier = &spec.fields[..k];
                is_sum(f.op).then(|| earlier.iter().position(|e| is_sum(e.op) && e.input == f.input)).flatten()
            })
            .collect();
        AggregateStep { spec: spec.clone(), windows: BTreeMap::new(), watermark: None, key_buf: Vec::new(), same_sum }
    }

    /// Folds one record in; windows that close are emitted through `emit`. A record that
    /// fails is handed back with the reason.
    pub(crate) fn push(&mut self, rec: Record, emit: &mut dyn FnMut(Record)) -> Result<(), (String, Record)> {
        // The window first: a record without a usable time, or a late one, fails whole.
        let (start, time) = match &self.spec.window {
            None => (0, None),
            Some(w) => {
                let size = w.size_seconds as i64;
                let Some(t) = w.time_field.get(&rec).and_then(dates::event_seconds) else {
                    let why = match w.time_field.get(&rec) {
                        None | Some(Value::Null) => format!("the window's time field `{}` is missing", w.time_field),
                        Some(v) => format!("the window's time field `{}` is {v}, not an RFC 3339 time or epoch seconds", w.time_field),
                    };
                    return Err((why, rec));
                };
                let start = t.div_euclid(size) * size;
                if self.watermark.is_some_and(|wm| wm >= start.saturating_add(size)) {
                    let why = format!(
                        "late record: its window {} to {} has already been emitted",
                        dates::rfc3339_seconds(start),
                        dates::rfc3339_seconds(start + size)
                    );
                    return Err((why, rec));
                }
                (start, Some(t))
            }
        };
        let g = match self.fold(start, &rec) {
            Ok(g) => g,
            Err(why) => return Err((why, rec)),
        };
        if self.spec.include_details {
            let bucket = self.windows.get_mut(&start).expect("fold created the window");
            bucket.groups[g].details.push(Value::Object(rec));
        }
        if let (Some(t), Some(w)) = (time, &self.spec.window) {
            let wm = self.watermark.map_or(t, |wm| wm.max(t));
            self.watermark = Some(wm);
            let size = w.size_seconds as i64;
            while let Some(entry) = self.windows.first_entry() {
                if wm < entry.key().saturating_add(size) {
                    break;
                }
                let (start, bucket) = entry.remove_entry();
                self.emit_bucket(Some(start), bucket, emit);
            }
        }
        Ok(())
    }

    /// Checks the values this record contributes, then folds them into its group; returns
    /// the group's slot.
    fn fold(&mut self, start: i64, rec: &Record) -> Result<usize, String> {
        let mut key = recycle(std::mem::take(&mut self.key_buf));
        let hash = key_of(&self.spec.group_by, rec, &mut key);
        let bucket = self.windows.entry(start).or_default();
        let existing = bucket.index.find(hash, &key).map(|g| &bucket.groups[g]);
        // Every input is checked against what its aggregate can take before anything changes.
        for (i, f) in self.spec.fields.iter().enumerate() {
            let Some(path) = &f.input else { continue };
            let v = match path.get(rec) {
                None | Some(Value::Null) => continue,
                Some(v) => v,
            };
            match f.op {
                AggOp::Sum | AggOp::Average if !v.is_number() => {
                    return Err(format!("`{path}` is {}, but `{}` needs numbers", v.type_name(), f.op.name()));
                }
                AggOp::Min | AggOp::Max => {
                    if !matches!(v, Value::Int(_) | Value::Float(_) | Value::String(_) | Value::Bool(_))
                        || v.as_f64().is_some_and(f64::is_nan)
                    {
                        return Err(format!("`{path}` is {}, which `{}` cannot order", v.type_name(), f.op.name()));
                    }
                    if let Some(Acc::Extreme(Some(cur))) = existing.map(|g| &g.accs[i])
                        && v.compare(cur).is_none()
                    {
                        return Err(format!(
                            "`{path}` is {}, which `{}` cannot order against the group's {}",
                            v.type_name(),
                            f.op.name(),
                            cur.type_name()
                        ));
                    }
                }
                _ => {}
            }
        }
        let (g, new) = bucket.index.find_or_insert(hash, &key);
        self.key_buf = recycle(key);
        if new {
            bucket.groups.push(Group {
                accs: self.spec.fields.iter().map(|f| Acc::new(f.op)).collect(),
                details: Vec::new(),
            });
        }
        let group = &mut bucket.groups[g];
        for (acc, f) in group.accs.iter_mut().zip(&self.spec.fields) {
            match &f.input {
                None => acc.add(f.op, &Value::Null),
                Some(path) => match path.get(rec) {
                    None | Some(Value::Null) => {}
                    Some(v) => acc.add(f.op, v),
                },
            }
        }
        Ok(g)
    }

    fn emit_bucket(&self, start: Option<i64>, bucket: Bucket, emit: &mut dyn FnMut(Record)) {
        let Bucket { index, groups } = bucket;
        let width = self.spec.group_by.len() + self.spec.fields.len() + 3;
        for (slot, group) in groups.into_iter().enumerate() {
            let mut out = Map::with_capacity(width);
            for (path, v) in self.spec.group_by.iter().zip(index.key(slot)) {
                let _ = path.set(&mut out, v.clone());
            }
            if let (Some(start), Some(w)) = (start, &self.spec.window) {
                out.insert("window_start", Value::from(dates::rfc3339_seconds(start)));
                out.insert("window_end", Value::from(dates::rfc3339_seconds(start + w.size_seconds as i64)));
            }
            for (acc, f) in group.accs.into_iter().zip(&self.spec.fields) {
                let _ = f.output.set(&mut out, acc.result(f.op));
            }
            if self.spec.include_details {
                out.insert("details", Value::Array(group.details));
            }
            emit(out);
        }
    }

    /// The step's state, after its `"step"` and `"type"` (the format is in the module docs).
    pub(crate) fn snapshot(&self, out: &mut JsonMap) {
        let ops = self.spec.fields.iter().map(|f| Json::from(f.op.name())).collect();
        out.insert("ops".into(), Json::Array(ops));
        if self.spec.include_details {
            out.insert("details".into(), Json::Bool(true));
        }
        match &self.spec.window {
            None => {
                let groups = self.windows.get(&0).map(|b| self.groups(b)).unwrap_or_default();
                out.insert("groups".into(), Json::Array(groups));
            }
            Some(w) => {
                out.insert("window".into(), Json::from(w.size_seconds));
                if let Some(wm) = self.watermark {
                    out.insert("watermark".into(), Json::from(wm));
                }
                let windows = self
                    .windows
                    .iter()
                    .map(|(start, bucket)| {
                        let mut m = JsonMap::with_capacity(2);
                        m.insert("start".into(), Json::from(*start));
                        m.insert("groups".into(), Json::Array(self.groups(bucket)));
                        Json::Object(m)
                    })
                    .collect();
                out.insert("windows".into(), Json::Array(windows));
            }
        }
    }

    fn groups(&self, bucket: &Bucket) -> Vec<Json> {
        let width = 1 + self.written_accs() + self.spec.include_details as usize;
        let mut out = Vec::with_capacity(bucket.groups.len());
        for (slot, group) in bucket.groups.iter().enumerate() {
            let mut g = Vec::with_capacity(width);
            g.push(Json::Array(bucket.index.key(slot).iter().map(state::value).collect()));
            let written = group.accs.iter().zip(&self.same_sum).filter(|(_, same)| same.is_none());
            g.extend(written.map(|(acc, _)| acc.snapshot()));
            if self.spec.include_details {
                g.push(Json::Array(group.details.iter().map(state::value).collect()));
            }
            out.push(Json::Array(g));
        }
        out
    }

    /// Reads the state a snapshot holds for this step (the fields after `"step"` and
    /// `"type"`), checking that it was taken from the same spec.
    pub(crate) fn read_snapshot(&self, f: &mut Fields) -> Result<Restored, String> {
        let ops: Vec<&str> = self.spec.fields.iter().map(|f| f.op.name()).collect();
        let theirs = state::to_array(f.req("ops")?).map_err(|e| format!("`ops`: {e}"))?;
        if theirs.len() != ops.len() || theirs.iter().zip(&ops).any(|(t, o)| t.as_str() != Some(o)) {
            return Err(format!(
                "the snapshot's aggregates are {}, this step's are [{}]",
                state::found(f.req("ops")?),
                ops.join(", ")
            ));
        }
        let details = match f.opt("details") {
            None => false,
            Some(Json::Bool(true)) => true,
            Some(other) => return Err(format!("`details`: expected true or no field, found {}", state::found(other))),
        };
        if details != self.spec.include_details {
            let with = |d: bool| if d { "with" } else { "without" };
            return Err(format!(
                "the snapshot is of an aggregation {} `include_details`, this one is {} it",
                with(details),
                with(self.spec.include_details)
            ));
        }
        let size = f.opt("window").map(|j| state::to_u64(j).map_err(|e| format!("`window`: {e}"))).transpose()?;
        let describe = |size: Option<u64>| match size {
            None => "without a window".to_string(),
            Some(s) => format!("with a {s}-second window"),
        };
        let ours = self.spec.window.as_ref().map(|w| w.size_seconds);
        if size != ours {
            return Err(format!("the snapshot is of an aggregation {}, this one is {}", describe(size), describe(ours)));
        }
        let mut windows = BTreeMap::new();
        let mut watermark = None;
        if ours.is_none() {
            let bucket = self.read_groups(f.req("groups")?).map_err(|e| format!("`groups`: {e}"))?;
            if !bucket.groups.is_empty() {
                windows.insert(0, bucket);
            }
        } else {
            watermark = f.opt("watermark").map(|j| state::to_i64(j).map_err(|e| format!("`watermark`: {e}"))).transpose()?;
            for (i, w) in state::to_array(f.req("windows")?).map_err(|e| format!("`windows`: {e}"))?.iter().enumerate() {
                let read = |w| -> Result<(i64, Bucket), String> {
                    let mut wf = Fields::new(w)?;
                    let start = state::to_i64(wf.req("start")?).map_err(|e| format!("`start`: {e}"))?;
                    let bucket = self.read_groups(wf.req("groups")?).map_err(|e| format!("`groups`: {e}"))?;
                    wf.end()?;
                    Ok((start, bucket))
                };
                let (start, bucket) = read(w).map_err(|e| format!("window {i}: {e}"))?;
                if windows.insert(start, bucket).is_some() {
                    return Err(format!("window {i}: the start {start} repeats an earlier window's"));
                }
            }
        }
        Ok(Restored { windows, watermark })
    }

    /// How many accumulators a group's snapshot holds.
    fn written_accs(&self) -> usize {
        self.same_sum.iter().filter(|same| same.is_none()).count()
    }

    fn read_groups(&self, j: &Json) -> Result<Bucket, String> {
        let mut bucket = Bucket::default();
        let (n_keys, n_accs) = (self.spec.group_by.len(), self.written_accs());
        for (i, g) in state::to_array(j)?.iter().enumerate() {
            let read = |bucket: &mut Bucket| -> Result<(), String> {
                let parts = state::to_array(g)?;
                if parts.len() != 1 + n_accs + self.spec.include_details as usize {
                    return Err(format!(
                        "expected [key, {n_accs} aggregate(s){}], found {}",
                        if self.spec.include_details { ", details" } else { "" },
                        state::found(g)
                    ));
                }
                let key: Vec<Value> = state::to_array(&parts[0])?.iter().map(state::to_value).collect::<Result<_, _>>()?;
                if key.len() != n_keys {
                    return Err(format!("its key has {} value(s), this step groups by {n_keys} field(s)", key.len()));
                }
                if bucket.index.insert_new(hash_key(&key), key).is_none() {
                    return Err(format!("its key {} repeats an earlier group's", state::found(&parts[0])));
                }
                let mut accs: Vec<Acc> = Vec::with_capacity(self.spec.fields.len());
                let mut written = parts[1..].iter();
                for (k, (f, same)) in self.spec.fields.iter().zip(&self.same_sum).enumerate() {
                    let acc = match same {
                        Some(earlier) => accs[*earlier].clone(),
                        None => {
                            let j = written.next().expect("the length was checked");
                            Acc::restore(f.op, j).map_err(|e| format!("aggregate {k} (`{}`): {e}", f.op.name()))?
                        }
                    };
                    accs.push(acc);
                }
                let details = match self.spec.include_details {
                    false => Vec::new(),
                    true => state::to_array(written.next().expect("the length was checked"))?
                        .iter()
                        .map(|d| state::to_record(d).map(Value::Object))
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("details: {e}"))?,
                };
                bucket.groups.push(Group { accs, details });
                Ok(())
            };
            read(&mut bucket).map_err(|e| format!("group {i}: {e}"))?;
        }
        Ok(bucket)
    }

    /// Replaces the step's state with a snapshot's.
    pub(crate) fn restore(&mut self, r: Restored) {
        self.windows = r.windows;
        self.watermark = r.watermark;
    }

    /// Emits every open window (the end of a bounded run).
    pub(crate) fn finish(&mut self, emit: &mut dyn FnMut(Record)) {
        let windowed = self.spec.window.is_some();
        for (start, bucket) in std::mem::take(&mut self.windows) {
            self.emit_bucket(windowed.then_some(start), bucket, emit);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::{Chain, Output};
    use serde_json::json;

    fn agg(op: &str, values: serde_json::Value) -> String {
        let input: Vec<serde_json::Value> =
            values.as_array().unwrap().iter().map(|v| if v == "MISSING" { json!({"g": 1}) } else { json!({"g": 1, "v": v}) }).collect();
        let out = run(
            json!([{"type": "aggregation", "group_by_fields": ["g"],
                    "aggregated_fields": [{"input_field": "v", "output_field": "r", "operation": op}]}]),
            serde_json::Value::Array(input),
        );
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        out.records[0].get("r").unwrap().to_json()
    }

    #[test]
    fn the_nine_aggregates() {
        assert_eq!(agg("sum", json!([1, 2, null, "MISSING", 3])), "6");
        assert_eq!(agg("sum", json!([1, 2.5])), "3.5");
        assert_eq!(agg("sum", json!([0.1, 0.2, 0.3])), "0.6");
        assert_eq!(agg("sum", json!([i64::MAX, 1, -2])), i64::MAX.wrapping_sub(1).to_string());
        assert_eq!(agg("average", json!([1, 2])), "1.5");
        assert_eq!(agg("average", json!([2, 2])), "2.0");
        assert_eq!(agg("count", json!([1, null, "x", "MISSING", [1]])), "3");
        assert_eq!(agg("count_distinct", json!([1, 1.0, "1", null, 2, "1"])), "3");
        assert_eq!(agg("min", json!([3, 1.5, null, 2])), "1.5");
        assert_eq!(agg("max", json!(["b", "c", "a"])), "\"c\"");
        assert_eq!(agg("first", json!([null, "MISSING", "x", "y"])), "\"x\"");
        assert_eq!(agg("last", json!(["x", "y", null])), "\"y\"");
        assert_eq!(agg("collect", json!([1, null, "a", [2]])), r#"[1,"a",[2]]"#);
    }

    #[test]
    fn a_group_with_no_values() {
        for (op, want) in [("sum", "null"), ("average", "null"), ("min", "null"), ("max", "null"), ("first", "null"),
                           ("last", "null"), ("collect", "null"), ("count", "0"), ("count_distinct", "0")] {
            assert_eq!(agg(op, json!([null, "MISSING"])), want, "{op}");
        }
    }

    #[test]
    fn unusable_inputs_fail_their_record_only() {
        let out = run(
            json!([{"type": "aggregation", "group_by_fields": ["g"], "aggregated_fields": [
                {"input_field": "v", "output_field": "s", "operation": "sum"},
                {"input_field": "v", "output_field": "m", "operation": "min"},
                {"input_field": "v", "output_field": "n", "operation": "count"}]}]),
            json!([{"g": 1, "v": 5}, {"g": 1, "v": "7"}, {"g": 2, "v": [1]}, {"g": 1, "v": 2}]),
        );
        assert_eq!(json(&out.records), r#"[{"g":1,"s":7,"m":2,"n":2}]"#, "group 2 never got a record");
        assert_eq!(out.rejected.len(), 2);
        assert_eq!(out.rejected[0].reason, "`v` is string, but `sum` needs numbers");
        assert_eq!((out.rejected[0].stage.as_str(), out.rejected[0].input), ("transformations[0]", Some(1)));
        let out = run(
            json!([{"type": "aggregation", "aggregated_fields": [{"input_field": "v", "output_field": "m", "operation": "max"}]}]),
            json!([{"v": 5}, {"v": "7"}, {"v": 6}]),
        );
        assert_eq!(json(&out.records), r#"[{"m":6}]"#);
        assert!(out.rejected[0].reason.contains("cannot order against the group's integer"));
    }

    #[test]
    fn groups_in_order_of_first_appearance_with_details() {
        let out = run(
            json!([{"type": "aggregation", "group_by_fields": ["c", "d"], "include_details": true,
                    "aggregated_fields": [{"output_field": "n", "operation": "count"}]}]),
            json!([{"c": "b", "d": 1}, {"c": "a", "d": 1}, {"c": "b", "d": 1.0, "x": 1}, {"d": 1}, {"c": null, "d": 1}]),
        );
        assert_eq!(
            json(&out.records),
            concat!(
                r#"[{"c":"b","d":1,"n":2,"details":[{"c":"b","d":1},{"c":"b","d":1.0,"x":1}]},"#,
                r#"{"c":"a","d":1,"n":1,"details":[{"c":"a","d":1}]},"#,
                r#"{"c":null,"d":1,"n":2,"details":[{"d":1},{"c":null,"d":1}]}]"#
            )
        );
    }

    #[test]
    fn nested_group_by_paths_rebuild_objects() {
        let out = run(
            json!([{"type": "aggregation", "group_by_fields": ["a.city"],
                    "aggregated_fields": [{"input_field": "n", "output_field": "stats.total", "operation": "sum"}]}]),
            json!([{"a": {"city": "X"}, "n": 1}, {"a": {"city": "X"}, "n": 2}]),
        );
        assert_eq!(json(&out.records), r#"[{"a":{"city":"X"},"stats":{"total":3}}]"#);
    }

    fn windowed() -> Chain {
        chain(json!([{"type": "aggregation", "group_by_fields": ["k"],
            "aggregated_fields": [{"input_field": "v", "output_field": "total", "operation": "sum"}],
            "window": {"type": "tumbling", "size_seconds": 60, "time_field": "t"}}]))
    }

    #[test]
    fn tumbling_windows_emit_when_the_watermark_passes() {
        let mut c = windowed();
        let mut out = Output::default();
        c.process(
            records(json!([
                {"k": "a", "v": 1, "t": "2025-01-15T10:00:10Z"},
                {"k": "b", "v": 2, "t": "2025-01-15T10:00:50Z"},
                {"k": "a", "v": 3, "t": "2025-01-15T10:00:59Z"},
            ])),
            &ctx(),
            &mut out,
        );
        assert!(out.records.is_empty(), "the window is still open");
        c.process(
            records(json!([{"k": "a", "v": 4, "t": "2025-01-15T10:01:00Z"}, {"k": "a", "v": 5, "t": "2025-01-15T10:00:30Z"}])),
            &ctx(),
            &mut out,
        );
        assert_eq!(
            json(&out.records),
            r#"[{"k":"a","window_start":"2025-01-15T10:00:00Z","window_end":"2025-01-15T10:01:00Z","total":4},{"k":"b","window_start":"2025-01-15T10:00:00Z","window_end":"2025-01-15T10:01:00Z","total":2}]"#
        );
        assert_eq!(out.rejected.len(), 1, "the late record");
        assert!(out.rejected[0].reason.starts_with("late record"), "{}", out.rejected[0].reason);
        assert_eq!(out.rejected[0].input, Some(1));
        out.records.clear();
        c.process(records(json!([{"k": "a", "v": 1, "t": 1736935500}, {"k": "a", "v": 1}])), &ctx(), &mut out);
        assert_eq!(out.rejected.len(), 2);
        assert!(out.rejected[1].reason.contains("time field `t` is missing"));
        // Epoch seconds 1736935500 is 10:05: the watermark passed 10:02, so 10:01 emitted.
        assert_eq!(
            json(&out.records),
            r#"[{"k":"a","window_start":"2025-01-15T10:01:00Z","window_end":"2025-01-15T10:02:00Z","total":4}]"#
        );
        out.records.clear();
        c.finish(&ctx(), &mut out);
        assert_eq!(
            json(&out.records),
            r#"[{"k":"a","window_start":"2025-01-15T10:05:00Z","window_end":"2025-01-15T10:06:00Z","total":1}]"#
        );
    }

    #[test]
    fn records_emitted_from_state_run_through_later_steps() {
        let out = run(
            json!([
                {"type": "aggregation", "group_by_fields": ["g"], "aggregated_fields": [{"input_field": "v", "output_field": "s", "operation": "sum"}]},
                {"type": "record_filter", "condition": {"field": "s", "operator": "greater_than", "value": 1}},
                {"type": "field_calculation", "field_name": "h", "operation": "divide", "parameters": {"source_fields": ["s", "z"]}},
            ]),
            json!([{"g": 1, "v": 1}, {"g": 2, "v": 2, "z": 0}, {"g": 3, "v": 3}]),
        );
        assert_eq!(json(&out.records), r#"[{"g":2,"s":2},{"g":3,"s":3}]"#, "z is not in the aggregate: no division");
        assert_eq!(out.filtered, 1);
        assert_eq!(out.rejected.len(), 0);
        let out = run(
            json!([
                {"type": "aggregation", "group_by_fields": ["g"], "aggregated_fields": [{"input_field": "v", "output_field": "s", "operation": "collect"}]},
                {"type": "field_operation", "field_name": "s", "operation": "uppercase"},
            ]),
            json!([{"g": 1, "v": 1}]),
        );
        assert_eq!((out.rejected[0].stage.as_str(), out.rejected[0].input), ("transformations[1]", None));
    }

    #[test]
    fn no_records_no_groups() {
        let out = run(json!([{"type": "aggregation", "aggregated_fields": [{"output_field": "n", "operation": "count"}]}]), json!([]));
        assert!(out.records.is_empty());
        let out = run(json!([{"type": "aggregation", "aggregated_fields": [{"output_field": "n", "operation": "count"}]}]), json!([{}, {}]));
        assert_eq!(json(&out.records), r#"[{"n":2}]"#);
    }
}
