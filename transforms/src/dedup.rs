//! `deduplicate`: one record per key, in order of the key's first appearance.
//!
//! `keep: first` passes a key's first record at once and drops the rest; `keep: last` holds
//! each key's latest record and emits them all at the end of the run (`finish`), each in the
//! place its key first appeared. A missing key field counts as null. Keys compare as in
//! conditions (`1` is `1.0`, not `"1"`).

use dagg_model::spec::transform::DedupSpec;
use dagg_model::{FieldPath, Record, Value};

use crate::aggregate::recycle;
use crate::key::{KeyIndex, key_of};

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

    /// `keep: last`: every held record, in order of first appearance.
    pub(crate) fn finish(&mut self, emit: &mut dyn FnMut(Record)) {
        self.index.clear();
        for r in std::mem::take(&mut self.held) {
            emit(r);
        }
    }
}
