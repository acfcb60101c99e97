//! Retention: how long the metadata that grows with use is kept — sessions, audit entries,
//! run logs and ended runs — and the leader's task that prunes the rest.
//!
//! The `retention` setting (`PUT /settings`, admins only) gives each kind a number of days;
//! a kind left out keeps its default ([`Retention::default`]), and `null` or `0` keeps that
//! kind forever. [`Retention::parse`] checks a value before it is stored, naming the field
//! that is wrong; a stored value that does not parse (written by another build) stops
//! pruning, with a warning, rather than falling back to the defaults.
//!
//! Pruning runs on the leader ([`crate::scheduler::SchedulerHooks::is_leader`]) a minute
//! after start, then hourly: it turns the days into instants on the scheduler's clock and,
//! when anything is older, commits one [`MetaCommand::Prune`] — through Raft in a cluster,
//! so every node removes the same records. A run that has not ended is never removed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value as Json;

use crate::meta::{MetaCommand, MetaStore, PruneCounts, PruneCutoffs};
use crate::{ControlPlane, ControlResult, ErrorDetail};

/// The setting's key.
pub const SETTING: &str = "retention";

/// The most days a kind can be kept for (a number of days, not forever: that is `null`).
pub const MAX_DAYS: u32 = 36_500;

/// How long each kind of record is kept, in days; `None` keeps it forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// Days a session is kept after it expired or was revoked. Default 7.
    pub sessions_days: Option<u32>,
    /// Days an audit entry is kept. Default 365.
    pub audit_days: Option<u32>,
    /// Days a run's log (its events) is kept after the run ended. Default 90.
    pub run_events_days: Option<u32>,
    /// Days an ended run is kept (with its log, lineage and placement). Default 180. A run
    /// that has not ended is never removed.
    pub runs_days: Option<u32>,
}

fn default_sessions_days() -> Option<u32> {
    Some(7)
}

fn default_audit_days() -> Option<u32> {
    Some(365)
}

fn default_run_events_days() -> Option<u32> {
    Some(90)
}

fn default_runs_days() -> Option<u32> {
    Some(180)
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            sessions_days: default_sessions_days(),
            audit_days: default_audit_days(),
            run_events_days: default_run_events_days(),
            runs_days: default_runs_days(),
        }
    }
}

const FIELDS: [&str; 4] = ["sessions_days", "audit_days", "run_events_days", "runs_days"];

impl Retention {
    /// Reads a value of the setting (`null`: every default). Every field is a whole number
    /// of days from 0 to [`MAX_DAYS`] or `null`; `0` and `null` keep forever. The error
    /// names the field (`retention.audit_days`).
    pub fn parse(value: &Json) -> Result<Retention, ErrorDetail> {
        let mut r = Retention::default();
        let obj = match value {
            Json::Null => return Ok(r),
            Json::Object(o) => o,
            _ => {
                return Err(ErrorDetail {
                    path: SETTING.into(),
                    message: format!("an object with any of {}", FIELDS.map(|f| format!("`{f}`")).join(", ")),
                });
            }
        };
        for (k, v) in obj {
            let path = format!("{SETTING}.{k}");
            let slot = match k.as_str() {
                "sessions_days" => &mut r.sessions_days,
                "audit_days" => &mut r.audit_days,
                "run_events_days" => &mut r.run_events_days,
                "runs_days" => &mut r.runs_days,
                _ => return Err(ErrorDetail { path, message: format!("unknown field; the fields are {}", FIELDS.map(|f| format!("`{f}`")).join(", ")) }),
            };
            *slot = match v {
                Json::Null => None,
                v => match v.as_u64().filter(|d| *d <= u64::from(MAX_DAYS)) {
                    Some(0) => None,
                    Some(d) => Some(d as u32),
                    None => {
                        return Err(ErrorDetail { path, message: format!("a whole number of days from 0 to {MAX_DAYS}, or null (0 and null keep forever); got {v}") });
                    }
                },
            };
        }
        Ok(r)
    }

    /// The setting as stored (the defaults when it is not set); an error when the stored
    /// value does not parse.
    pub fn of(meta: &MetaStore) -> Result<Retention, String> {
        match meta.setting(SETTING).map_err(|e| e.to_string())? {
            None => Ok(Retention::default()),
            Some(v) => Retention::parse(&v).map_err(|d| format!("the stored `{SETTING}` setting is invalid: {}: {}", d.path, d.message)),
        }
    }

    /// The instants before which records go, at `now`.
    pub fn cutoffs(&self, now: DateTime<Utc>) -> PruneCutoffs {
        let before = |days: Option<u32>| days.map(|d| now - chrono::Duration::days(i64::from(d)));
        PruneCutoffs {
            sessions_ended_before: before(self.sessions_days),
            audit_before: before(self.audit_days),
            run_events_before: before(self.run_events_days),
            runs_finished_before: before(self.runs_days),
        }
    }
}

/// Prunes once, if this node is the leader: commits a [`MetaCommand::Prune`] for what the
/// retention setting no longer keeps at the scheduler's clock. Returns what it removed
/// (`None`: not the leader, or nothing to remove).
pub fn prune_now(state: &ControlPlane) -> ControlResult<Option<PruneCounts>> {
    if !state.scheduler.is_leader() {
        return Ok(None);
    }
    let retention = match Retention::of(&state.meta) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("retention: nothing pruned: {e}");
            return Ok(None);
        }
    };
    let cut = retention.cutoffs(state.scheduler.now());
    let counts = state.meta.prunable(&cut)?;
    if counts.is_empty() {
        return Ok(None);
    }
    state.meta.apply(MetaCommand::Prune(cut))?;
    tracing::info!(sessions = counts.sessions, audit = counts.audit, run_events = counts.run_events, runs = counts.runs, "retention: pruned old metadata");
    Ok(Some(counts))
}

/// Prunes `first` after start, then every `every`, until the task is dropped. The work
/// (a walk of the store, a replicated write) runs off the async workers.
pub async fn run(state: ControlPlane, first: Duration, every: Duration) {
    tokio::time::sleep(first).await;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let s = state.clone();
        match tokio::task::spawn_blocking(move || prune_now(&s)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("retention: pruning failed: {e}"),
            Err(e) => tracing::warn!("retention: the pruning task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unset_fields_keep_their_defaults_and_null_or_zero_keeps_forever() {
        assert_eq!(Retention::parse(&Json::Null).unwrap(), Retention::default());
        let r = Retention::parse(&json!({"audit_days": 30, "sessions_days": null, "runs_days": 0})).unwrap();
        assert_eq!(r, Retention { sessions_days: None, audit_days: Some(30), run_events_days: Some(90), runs_days: None });
        let now: DateTime<Utc> = "2026-12-07T00:00:00Z".parse().unwrap();
        let cut = r.cutoffs(now);
        assert_eq!(cut.audit_before, Some("2026-11-07T00:00:00Z".parse().unwrap()));
        assert_eq!(cut.run_events_before, Some("2026-09-08T00:00:00Z".parse().unwrap()));
        assert_eq!((cut.sessions_ended_before, cut.runs_finished_before), (None, None));
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        for (v, path) in [
            (json!({"audit_days": -1}), "retention.audit_days"),
            (json!({"audit_days": 1.5}), "retention.audit_days"),
            (json!({"runs_days": "30"}), "retention.runs_days"),
            (json!({"run_events_days": MAX_DAYS + 1}), "retention.run_events_days"),
            (json!({"session_days": 7}), "retention.session_days"),
            (json!([7]), "retention"),
        ] {
            let e = Retention::parse(&v).unwrap_err();
            assert_eq!(e.path, path, "{v}: {}", e.message);
        }
    }
}
