//! `deduplicate`: one record per key, in order of the key's first appearance.
//!
//! `keep: first` passes a key's first record at once and drops the rest; `keep: last` holds
//! each key's latest record and emits them all at the end of the run (`finish`), each in the
//! place its key first appeared. A missing key field counts as null. Keys compare as in
//! conditions (`1` is `1.0`, not `"1"`).
//!
//! Snapshot (see `state.rs`): `"keep"`, then with `keep: first` `"keys"`, every key seen
//! (its values as first seen) in order of first appearance; with `keep: last` `"held"`, the
//! held records in that order. Their keys are not written twice: each is read again from
//! its record, and a key is only ever compared (loosely), never emitted, so the latest
//! record's `1.0` serves as well as the first record's `1`.

use dagg_model::spec::transform::DedupSpec;
use dagg_model::{FieldPath, Record, Value};

use crate::aggregate::recycle;
use crate::key::{KeyIndex, hash_key, key_of};
use crate::state::{self, Fields, Json, JsonMap};

pub(crate) struct DedupStep {
    key_fields: Vec<FieldPath>,
    keep_last: bool,
    index: KeyIndex,
    /// `keep: last`: per key slot, its latest record.
    held: Vec<Record>,
    key_buf: Vec<&'static Value>,
}

pub(crate) enum Dedup {
    /// The first record of its key (`keep: first`): it goes on.
    Pass(Record),
    /// A key seen before: one record of that key is removed (this one with `keep: first`,
    /// the one it replaces with `keep: last`).
    Duplicate,
    /// The first record of its key, held until `finish` (`keep: last`).
    Held,
}

/// A `deduplicate`'s state read from a snapshot, ready to replace the step's.
pub(crate) struct Restored {
    index: KeyIndex,
    held: Vec<Record>,
}

impl DedupStep {
    pub(crate) fn new(spec: &DedupSpec) -> DedupStep {
        DedupStep {
            key_fields: spec.key_fields.clone(),
            keep_last: spec.keep_last,
            index: KeyIndex::default(),
            held: Vec::new(),
            key_buf: Vec::new(),
        }
    }

    /// What becomes of one record.
    pub(crate) fn push(&mut self, rec: Record) -> Dedup {
        let mut key = recycle(std::mem::take(&mut self.key_buf));
        let hash = key_of(&self.key_fields, &rec, &mut key);
        let (slot, new) = self.index.find_or_insert(hash, &key);
        self.key_buf = recycle(key);
        match (self.keep_last, new) {
            (false, true) => Dedup::Pass(rec),
            (false, false) => Dedup::Duplicate,
            (true, true) => {
                self.held.push(rec);
                Dedup::Held
            }
            (true, false) => {
                self.held[slot] = rec;
                Dedup::Duplicate
            }
        }
    }

    fn keep(&self) -> &'static str {
        if self.keep_last { "last" } else { "first" }
    }

    /// The step's state, after its `"step"` and `"type"` (the format is in the module docs).
    pub(crate) fn snapshot(&self, out: &mut JsonMap) {
        out.insert("keep".into(), Json::from(self.keep()));
        if self.keep_last {
            out.insert("held".into(), Json::Array(self.held.iter().map(state::record).collect()));
        } else {
            let keys = (0..self.index.len())
                .map(|s| Json::Array(self.index.key(s).iter().map(state::value).collect()))
                .collect();
            out.insert("keys".into(), Json::Array(keys));
        }
    }

    /// Reads the state a snapshot holds for this step (the fields after `"step"` and
    /// `"type"`), checking that it was taken from the same spec.
    pub(crate) fn read_snapshot(&self, f: &mut Fields) -> Result<Restored, String> {
        let keep = f.req("keep")?;
        if keep.as_str() != Some(self.keep()) {
            return Err(format!("the snapshot's `keep` is {}, this step's is \"{}\"", state::found(keep), self.keep()));
        }
        let mut index = KeyIndex::default();
        let mut held = Vec::new();
        if self.keep_last {
            for (i, j) in state::to_array(f.req("held")?).map_err(|e| format!("`held`: {e}"))?.iter().enumerate() {
                let rec = state::to_record(j).map_err(|e| format!("held record {i}: {e}"))?;
                let mut key = Vec::with_capacity(self.key_fields.len());
                let hash = key_of(&self.key_fields, &rec, &mut key);
                if !index.find_or_insert(hash, &key).1 {
                    return Err(format!("held record {i} has the key of an earlier one"));
                }
                held.push(rec);
            }
        } else {
            let n = self.key_fields.len();
            for (i, j) in state::to_array(f.req("keys")?).map_err(|e| format!("`keys`: {e}"))?.iter().enumerate() {
                let read = |index: &mut KeyIndex| -> Result<(), String> {
                    let key: Vec<Value> = state::to_array(j)?.iter().map(state::to_value).collect::<Result<_, _>>()?;
                    if key.len() != n {
                        return Err(format!("it has {} value(s), this step's key has {n} field(s)", key.len()));
                    }
                    if index.insert_new(hash_key(&key), key).is_none() {
                        return Err(format!("{} repeats an earlier key", state::found(j)));
                    }
                    Ok(())
                };
                read(&mut index).map_err(|e| format!("key {i}: {e}"))?;
            }
        }
        Ok(Restored { index, held })
    }

    /// Replaces the step's state with a snapshot's.
    pub(crate) fn restore(&mut self, r: Restored) {
        self.index = r.index;
        self.held = r.held;
    }

    /// `keep: last`: every held record, in order of first appearance.
    pub(crate) fn finish(&mut self, emit: &mut dyn FnMut(Record)) {
        self.index.clear();
        for r in std::mem::take(&mut self.held) {
            emit(r);
        }
    }
}
