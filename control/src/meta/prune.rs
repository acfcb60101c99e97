//! Removing what grows with use: ended sessions, old audit entries, the logs of old runs
//! and old ended runs ([`MetaCommand::Prune`](super::MetaCommand::Prune)).
//!
//! The cut-offs are instants in the command (the caller computes them from its retention
//! setting and its clock), so every node removes the same records. A run that has not ended
//! (pending, running, retrying, paused) is never touched, whatever its age; pruning removes
//! metadata only — a destination's data and the dead letters written there stay.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{MetaError, MetaResult, MetaStore, codec, micros};
use super::types::{Run, RunEvent, Session};

/// What a prune removes; a cut-off left out (or `null`) keeps that kind of record forever.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneCutoffs {
    /// Sessions that expired, or were revoked, before this instant (with their refresh
    /// token's index entry).
    #[serde(default)]
    pub sessions_ended_before: Option<DateTime<Utc>>,
    /// Audit entries written before this instant.
    #[serde(default)]
    pub audit_before: Option<DateTime<Utc>>,
    /// The whole log of every run that ended before this instant (the run's record stays
    /// until `runs_finished_before`); and log entries older than it whose run is not on record.
    #[serde(default)]
    pub run_events_before: Option<DateTime<Utc>>,
    /// Runs that ended before this instant, with everything kept under the run's id: its
    /// log, its lineage and profile, its placement.
    #[serde(default)]
    pub runs_finished_before: Option<DateTime<Utc>>,
}

/// How many records a prune removes (or would remove).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneCounts {
    pub sessions: u64,
    pub audit: u64,
    /// Log entries, of pruned runs included.
    pub run_events: u64,
    pub runs: u64,
}

impl PruneCounts {
    /// Nothing to remove.
    pub fn is_empty(&self) -> bool {
        *self == PruneCounts::default()
    }
}

/// When a run ended: its finish, or (a record from before `finished_at` was always set)
/// its creation. `None` while it has not ended.
fn ended_at(r: &Run) -> Option<DateTime<Utc>> {
    r.status.is_terminal().then(|| r.finished_at.unwrap_or(r.created_at))
}

fn decode<T: serde::de::DeserializeOwned>(v: &[u8]) -> MetaResult<T> {
    codec::decode(v).map_err(MetaError::Decode)
}

impl MetaStore {
    /// What a prune with `cut` would remove now (the leader asks before it sends one, and
    /// sends none when there is nothing to remove).
    pub fn prunable(&self, cut: &PruneCutoffs) -> MetaResult<PruneCounts> {
        self.prune_walk(cut, false)
    }

    /// Applies [`MetaCommand::Prune`](super::MetaCommand::Prune); the caller holds the write lock.
    pub(super) fn prune_locked(&self, cut: &PruneCutoffs) -> MetaResult<PruneCounts> {
        self.prune_walk(cut, true)
    }

    /// Counts, and with `remove` deletes, what `cut` covers. Records are removed while their
    /// tree is walked (sled's iterators go on from the last key they gave).
    fn prune_walk(&self, cut: &PruneCutoffs, remove: bool) -> MetaResult<PruneCounts> {
        let t = &self.t;
        let mut n = PruneCounts::default();
        if let Some(before) = cut.sessions_ended_before {
            for kv in t.sessions.iter() {
                let (k, v) = kv?;
                let s: Session = decode(&v)?;
                let ended = s.revoked_at.map_or(s.expires_at, |r| r.min(s.expires_at));
                if ended >= before {
                    continue;
                }
                n.sessions += 1;
                if remove {
                    // The index entries of its tokens (the current one and the earlier ones
                    // kept to notice reuse), when they still name this session.
                    for h in s.token_hashes() {
                        if t.session_tokens.get(h)?.is_some_and(|id| id == s.id.as_bytes()) {
                            t.session_tokens.remove(h)?;
                        }
                    }
                    t.sessions.remove(k)?;
                }
            }
        }
        if let Some(before) = cut.audit_before {
            // Keys are `<at µs, 20 digits>/<id>`: every key below `<before µs>` is older.
            for k in t.audit.range(..micros(before).into_bytes()).keys() {
                let k = k?;
                n.audit += 1;
                if remove {
                    t.audit.remove(k)?;
                }
            }
        }
        if cut.run_events_before.is_some() || cut.runs_finished_before.is_some() {
            for kv in t.runs.iter() {
                let (k, v) = kv?;
                let r: Run = decode(&v)?;
                let Some(ended) = ended_at(&r) else { continue };
                let whole = cut.runs_finished_before.is_some_and(|b| ended < b);
                if whole || cut.run_events_before.is_some_and(|b| ended < b) {
                    n.run_events += self.remove_prefix(&t.run_events, &format!("{}/", r.id), remove)?;
                }
                if whole {
                    n.runs += 1;
                    if remove {
                        t.run_index.remove(format!("{}/{}/{}", r.pipeline_id, micros(r.created_at), r.id))?;
                        t.run_insights.remove(&r.id)?;
                        t.run_assignments.remove(&r.id)?;
                        t.runs.remove(k)?;
                    }
                }
            }
        }
        if let Some(before) = cut.run_events_before {
            n.run_events += self.prune_orphan_events(before, remove)?;
        }
        Ok(n)
    }

    /// Log entries older than `before` whose run is not on record (an entry appended for a
    /// run id the store never had).
    fn prune_orphan_events(&self, before: DateTime<Utc>, remove: bool) -> MetaResult<u64> {
        let t = &self.t;
        let mut n = 0;
        // Keys are `<run id>/<seq>`, so one run's entries are together: its run is looked
        // up once.
        let mut last: Option<(Vec<u8>, bool)> = None;
        for kv in t.run_events.iter() {
            let (k, v) = kv?;
            let Some(slash) = k.iter().rposition(|b| *b == b'/') else { continue };
            let run_id = &k[..slash];
            let known = match &last {
                Some((id, known)) if id.as_slice() == run_id => *known,
                _ => {
                    let known = t.runs.contains_key(run_id)?;
                    last = Some((run_id.to_vec(), known));
                    known
                }
            };
            if known {
                continue;
            }
            let e: RunEvent = decode(&v)?;
            if e.at < before {
                n += 1;
                if remove {
                    t.run_events.remove(k)?;
                }
            }
        }
        Ok(n)
    }

    fn remove_prefix(&self, tree: &sled::Tree, prefix: &str, remove: bool) -> MetaResult<u64> {
        let mut n = 0;
        for k in tree.scan_prefix(prefix).keys() {
            let k = k?;
            n += 1;
            if remove {
                tree.remove(k)?;
            }
        }
        Ok(n)
    }
}
