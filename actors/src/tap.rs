//! What a watcher of a run (the API) learns from its sink stage beyond counters: the profile
//! of the delivered records and the run's lineage — which source positions became which
//! sink writes — and, with a `strict` schema policy, the check that stops a run whose
//! fields changed before anything is committed.
//!
//! Contract with the sink stage: records are fed as they are delivered; at each checkpoint
//! barrier (after every destination pre-committed) the part since the previous barrier is
//! committed to the tap with the source position and the sinks' commit tokens. A retry
//! restarts from the last checkpoint, so what an attempt fed after its last barrier is
//! dropped when the next attempt feeds its first batch: the committed profile and lineage
//! count each delivered record once.

use std::sync::Mutex;

use dagg_model::Record;
use serde::Serialize;

use crate::profile::{Profile, Profiler, SchemaPolicy, compare_types};

/// One checkpoint's worth of a run: source positions `from`..`to` became these writes.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct LineageSegment {
    /// The checkpoint that committed it.
    pub checkpoint: u64,
    /// The source's position before (null: the start of the input, or the checkpoint the run
    /// resumed from).
    pub source_from: serde_json::Value,
    /// The source's position after the last record of the segment.
    pub source_to: serde_json::Value,
    /// Records delivered in this segment.
    pub records_written: u64,
    /// Each destination's commit position (what its pre-commit returned).
    pub sinks: Vec<SinkWrite>,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct SinkWrite {
    /// `destination`, `destinations[1]`.
    pub stage: String,
    pub commit: serde_json::Value,
}

#[derive(Default)]
struct Inner {
    attempt: u32,
    pending: Profiler,
    committed: Profiler,
    segments: Vec<LineageSegment>,
    last_source: serde_json::Value,
    written_at_last: u64,
}

/// Shared between the sink stage (which feeds it) and the API (which reads it at the end).
pub struct RunTap {
    policy: SchemaPolicy,
    /// The previous run's fields and types, checked under `strict`.
    baseline: Option<Vec<(String, String)>>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for RunTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunTap")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl RunTap {
    /// A tap; `baseline` (the previous run's field -> type) matters only under `strict`.
    pub fn new(policy: SchemaPolicy, baseline: Option<Vec<(String, String)>>) -> RunTap {
        RunTap {
            policy,
            baseline,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records about to be delivered by attempt `attempt`. Under `strict`, a new or
    /// re-typed field against the baseline is an error (the batch must not be written).
    pub fn observe(&self, attempt: u32, records: &[Record]) -> Result<(), String> {
        let mut g = self.lock();
        if g.attempt != attempt {
            // A new attempt resumes from the last checkpoint: forget what the last one fed
            // after it.
            g.attempt = attempt;
            g.pending = Profiler::new();
        }
        g.pending.observe(records);
        if self.policy == SchemaPolicy::Strict
            && let Some(base) = &self.baseline
        {
            let mut all = g.committed.clone();
            all.merge(&g.pending);
            let changes = compare_types(base, &all.types(), false);
            if !changes.is_empty() {
                return Err(changes.describe());
            }
        }
        Ok(())
    }

    /// A checkpoint committed: what was fed since the last one is part of the run.
    pub fn checkpoint(
        &self,
        checkpoint: u64,
        source: serde_json::Value,
        written: u64,
        sinks: Vec<SinkWrite>,
    ) {
        let mut g = self.lock();
        let pending = std::mem::take(&mut g.pending);
        g.committed.merge(&pending);
        let seg = LineageSegment {
            checkpoint,
            source_from: std::mem::replace(&mut g.last_source, source.clone()),
            source_to: source,
            records_written: written.saturating_sub(g.written_at_last),
            sinks,
        };
        g.written_at_last = written;
        g.segments.push(seg);
    }

    /// The input is done: under `strict`, a field of the baseline never seen is an error.
    pub fn check_end(&self) -> Result<(), String> {
        if self.policy != SchemaPolicy::Strict {
            return Ok(());
        }
        let Some(base) = &self.baseline else {
            return Ok(());
        };
        let g = self.lock();
        let mut all = g.committed.clone();
        all.merge(&g.pending);
        let changes = compare_types(base, &all.types(), true);
        if changes.is_empty() {
            Ok(())
        } else {
            Err(changes.describe())
        }
    }

    /// The committed profile.
    pub fn profile(&self) -> Profile {
        self.lock().committed.profile()
    }

    /// The committed lineage, one segment per checkpoint.
    pub fn lineage(&self) -> Vec<LineageSegment> {
        self.lock().segments.clone()
    }

    pub fn policy(&self) -> SchemaPolicy {
        self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(json: &str) -> Record {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_retry_drops_what_the_failed_attempt_fed_after_its_checkpoint() {
        let tap = RunTap::new(SchemaPolicy::Evolve, None);
        tap.observe(1, &[rec(r#"{"a":1}"#), rec(r#"{"a":2}"#)])
            .unwrap();
        tap.checkpoint(
            1,
            serde_json::json!({"line": 2}),
            2,
            vec![SinkWrite {
                stage: "destination".into(),
                commit: serde_json::json!({"len": 10}),
            }],
        );
        tap.observe(1, &[rec(r#"{"a":3}"#)]).unwrap();
        // Attempt 2 restarts after checkpoint 1 and writes record 3 again.
        tap.observe(2, &[rec(r#"{"a":3}"#)]).unwrap();
        tap.checkpoint(2, serde_json::json!({"line": 3}), 3, vec![]);
        let p = tap.profile();
        assert_eq!(p.records, 3);
        let l = tap.lineage();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].source_from.clone(), l[0].records_written),
            (serde_json::Value::Null, 2)
        );
        assert_eq!(
            (
                l[1].source_from.clone(),
                l[1].source_to.clone(),
                l[1].records_written
            ),
            (
                serde_json::json!({"line": 2}),
                serde_json::json!({"line": 3}),
                1
            )
        );
    }

    #[test]
    fn strict_refuses_a_new_field_and_a_missing_one() {
        let base = Some(vec![
            ("a".to_string(), "integer".to_string()),
            ("b".to_string(), "string".to_string()),
        ]);
        let tap = RunTap::new(SchemaPolicy::Strict, base.clone());
        tap.observe(1, &[rec(r#"{"a":1,"b":"x"}"#)]).unwrap();
        let e = tap
            .observe(1, &[rec(r#"{"a":1,"b":"x","c":true}"#)])
            .unwrap_err();
        assert_eq!(e, "new field c");
        let tap = RunTap::new(SchemaPolicy::Strict, base.clone());
        tap.observe(1, &[rec(r#"{"a":1}"#)]).unwrap();
        assert_eq!(tap.check_end().unwrap_err(), "missing field b");
        let tap = RunTap::new(SchemaPolicy::Evolve, base);
        tap.observe(1, &[rec(r#"{"z":1}"#)]).unwrap();
        tap.check_end().unwrap();
    }
}
