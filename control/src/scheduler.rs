//! Triggers that start runs without a person: cron schedules and pipeline dependencies.
//!
//! **Cron.** A schedule is a 5-field expression read in an IANA time zone. Fire instants are
//! computed on the zone's wall clock and then placed on the time line ([`fire_times`]):
//! - a wall time that occurs twice (the autumn hour repeated) fires once, at its first
//!   occurrence;
//! - a wall time that does not exist (the spring hour skipped) fires at the same distance
//!   after the change (`02:30` on a night that jumps from 02:00 to 03:00 fires at 03:30);
//! - two wall times that land on the same instant fire once.
//!
//! The scheduler keeps, per pipeline, the last instant it dealt with ([`ScheduleState`],
//! in the meta store through [`MetaCommand::PutScheduleState`]). Each tick it looks for the
//! instants after that one and up to now: if there are any, the pipeline runs **once** (for
//! the latest), and the state moves to that instant. So a node that was down across one
//! or many fire times runs the pipeline once when it comes back, never once per missed
//! instant, and never twice for the same instant after a restart. A pipeline seen for the
//! first time is only armed (its state set to now). While a pipeline is paused its instants
//! are passed over (recorded, not run): resuming does not replay them.
//!
//! **Time** comes from a [`Clock`] held in [`SchedulerHooks`], so tests drive it.
//!
//! **Cluster.** Only one node may fire schedules: [`Scheduler::tick`] does nothing — not
//! even arm — unless the leader predicate in [`SchedulerHooks`] says yes. One node alone is
//! its own leader (the default). The cluster sets the predicate once at start-up:
//! `state.scheduler.set_leader_check(Arc::new(move || raft.is_leader()))`. Because the state
//! is in the replicated meta store, a new leader carries on where the old one stopped.
//!
//! **Dependencies.** `depends_on` names other pipelines; the graph of every pipeline's
//! dependencies must stay acyclic ([`check_dependencies`], petgraph's Tarjan SCC; a cycle is
//! refused naming it). When a run ends, [`on_run_finished`] starts each dependent pipeline
//! when the run succeeded (`success` or `warning`) and every other dependency's latest run
//! did too; when it failed or was cancelled, each dependent gets a run that is recorded
//! as skipped — status `cancelled`, trigger `dependency`, error `skipped: dependency `A`
//! ended failed (run …)` — and that skip travels down the graph the same way.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, LocalResult, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use dagg_model::RunStatus;
use dagg_model::spec::pipeline::{PipelineSpec, Schedule};
use petgraph::graphmap::DiGraphMap;
use serde_json::{Value as Json, json};

use crate::meta::{EventKind, EventLevel, MetaCommand, MetaResult, Pipeline, Run, ScheduleState, Trigger};
use crate::{ControlError, ControlPlane, ControlResult, ErrorDetail};

/// Where the scheduler gets the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told (tests).
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> ManualClock {
        ManualClock(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether this node may fire schedules.
pub type LeaderCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// The scheduler's clock and leader predicate, shared by the scheduler loop and the API
/// (which shows next run times on the same clock).
pub struct SchedulerHooks {
    clock: RwLock<Arc<dyn Clock>>,
    leader: RwLock<LeaderCheck>,
}

impl Default for SchedulerHooks {
    fn default() -> Self {
        SchedulerHooks {
            clock: RwLock::new(Arc::new(SystemClock)),
            leader: RwLock::new(Arc::new(|| true)),
        }
    }
}

impl SchedulerHooks {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.read().unwrap_or_else(|e| e.into_inner()).now()
    }

    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        *self.clock.write().unwrap_or_else(|e| e.into_inner()) = clock;
    }

    /// The cluster's hook: schedules fire only where this returns true.
    pub fn set_leader_check(&self, check: LeaderCheck) {
        *self.leader.write().unwrap_or_else(|e| e.into_inner()) = check;
    }

    pub fn is_leader(&self) -> bool {
        let check = self
            .leader
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        check()
    }
}

/// Places a wall-clock time of `tz` on the time line (see the module docs for the rules).
pub fn wall_to_instant(tz: Tz, wall: chrono::NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: read it with the offset in force before the gap.
            let before = tz
                .offset_from_utc_datetime(&(wall - chrono::Duration::hours(24)))
                .fix();
            Utc.from_utc_datetime(
                &(wall - chrono::Duration::seconds(i64::from(before.local_minus_utc()))),
            )
        }
    }
}

/// The instants a cron `schedule` in `tz` fires strictly after `after`, in order.
pub fn fire_times(
    schedule: &cron::Schedule,
    tz: Tz,
    after: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Utc>> + use<> {
    // The cron crate iterates the wall clock given as if it were UTC (no gaps, no repeats);
    // this crate decides how wall times map to instants.
    let wall = after.with_timezone(&tz).naive_local();
    let mut walls = schedule.after_owned(Utc.from_utc_datetime(&wall));
    let mut last = after;
    std::iter::from_fn(move || {
        loop {
            let w = walls.next()?.naive_utc();
            let t = wall_to_instant(tz, w);
            if t > last {
                last = t;
                return Some(t);
            }
        }
    })
}

/// The next `n` fire instants of a cron schedule after `after` (none for other schedules).
pub fn next_runs(schedule: &Schedule, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    match schedule {
        Schedule::Cron {
            schedule, timezone, ..
        } => fire_times(schedule, *timezone, after).take(n).collect(),
        _ => Vec::new(),
    }
}

/// What one tick did for one pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TickOutcome {
    pub pipeline_id: String,
    /// `armed`, `fired`, `missed`, `paused`, `busy` (see [`ScheduleState::outcome`]).
    pub outcome: String,
    /// The scheduled instant dealt with.
    pub instant: DateTime<Utc>,
    pub run_id: Option<String>,
}

/// Fires cron schedules; one per API process, ticking on the hooks' clock.
pub struct Scheduler {
    state: ControlPlane,
}

/// Instants looked at per tick and pipeline at most: a per-minute schedule over a long
/// outage is not walked minute by minute from its start.
const MAX_LOOKBACK: chrono::Duration = chrono::Duration::days(400);

impl Scheduler {
    pub fn new(state: ControlPlane) -> Scheduler {
        Scheduler { state }
    }

    /// Ticks every `period` until the task is dropped.
    pub async fn run(self, period: Duration) {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = self.tick() {
                tracing::warn!("scheduler tick failed: {e}");
            }
        }
    }

    /// Looks at every cron pipeline once; starts the runs that are due. Does nothing unless
    /// this node is the leader.
    pub fn tick(&self) -> ControlResult<Vec<TickOutcome>> {
        let state = &self.state;
        if !state.scheduler.is_leader() {
            return Ok(Vec::new());
        }
        let now = state.scheduler.now();
        let mut out = Vec::new();
        for p in state
            .meta
            .pipelines()?
            .iter()
            .filter(|p| p.schedule_type == "cron")
        {
            match self.tick_one(p, now) {
                Ok(Some(o)) => out.push(o),
                Ok(None) => {}
                Err(e) => tracing::warn!(pipeline = %p.id, "schedule: {e}"),
            }
        }
        Ok(out)
    }

    fn tick_one(&self, p: &Pipeline, now: DateTime<Utc>) -> ControlResult<Option<TickOutcome>> {
        let state = &self.state;
        let Some(version) = state.meta.version(&p.id, p.version)? else {
            return Ok(None);
        };
        let spec = state.validate(&version.document).map_err(ControlError::invalid)?;
        let Schedule::Cron {
            schedule, timezone, ..
        } = &spec.schedule
        else {
            return Ok(None);
        };
        let record = |instant: DateTime<Utc>,
                      outcome: &str,
                      run_id: Option<String>|
         -> ControlResult<TickOutcome> {
            state.meta.apply(MetaCommand::PutScheduleState {
                state: ScheduleState {
                    pipeline_id: p.id.clone(),
                    last_fired: instant,
                    run_id: run_id.clone(),
                    outcome: outcome.into(),
                    at: now,
                },
            })?;
            Ok(TickOutcome {
                pipeline_id: p.id.clone(),
                outcome: outcome.into(),
                instant,
                run_id,
            })
        };
        let Some(st) = state.meta.schedule_state(&p.id)? else {
            return record(now, "armed", None).map(Some);
        };
        let from = st.last_fired.max(now - MAX_LOOKBACK);
        let mut due = None;
        let mut missed = 0u32;
        for t in fire_times(schedule, *timezone, from) {
            if t > now {
                break;
            }
            due = Some(t);
            missed += 1;
        }
        let Some(instant) = due else { return Ok(None) };
        if p.paused {
            return record(instant, "paused", None).map(Some);
        }
        let trigger = if missed > 1 { "missed" } else { "fired" };
        let by = format!("schedule ({} {})", spec_expression(&spec), timezone.name());
        match state.start_run(&version, Trigger::Schedule, &by) {
            Ok(run) => {
                if missed > 1 {
                    let _ = state.meta.apply(MetaCommand::run_event(&run.id, EventLevel::Warning, EventKind::ScheduleMissed, format!("{missed} scheduled runs were missed while the node was down; running once for {instant}"), json!({"missed": missed, "instant": instant})));
                }
                record(instant, trigger, Some(run.id)).map(Some)
            }
            Err(ControlError::Conflict(why)) => {
                tracing::warn!(pipeline = %p.id, "scheduled run for {instant} not started: {why}");
                record(instant, "busy", None).map(Some)
            }
            Err(e) => Err(e),
        }
    }
}

fn spec_expression(spec: &PipelineSpec) -> &str {
    match &spec.schedule {
        Schedule::Cron { expression, .. } => expression,
        _ => "",
    }
}



// ---- dependencies ----

/// The `depends_on` names of a stored document (read without validating the rest).
fn depends_on_of(doc: &Json) -> Vec<String> {
    doc.get("depends_on")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every pipeline's name and `depends_on`, from their current versions.
fn dependency_table(state: &ControlPlane) -> MetaResult<Vec<(Pipeline, Vec<String>)>> {
    let mut out = Vec::new();
    for p in state.meta.pipelines()?.iter() {
        let deps = state
            .meta
            .version(&p.id, p.version)?
            .map(|v| depends_on_of(&v.document))
            .unwrap_or_default();
        out.push((p.clone(), deps));
    }
    Ok(out)
}

/// Refuses a document whose `depends_on` would close a cycle among the stored pipelines
/// (`replacing`: the pipeline this document becomes a new version of). Names may refer to
/// pipelines that do not exist yet: they are waited on and never trigger.
pub fn check_dependencies(
    state: &ControlPlane,
    spec: &PipelineSpec,
    replacing: Option<&str>,
) -> ControlResult<()> {
    let table = dependency_table(state)?;
    let mut edges: Vec<(String, String)> = Vec::new();
    for (p, deps) in &table {
        if Some(p.id.as_str()) == replacing {
            continue;
        }
        edges.extend(deps.iter().map(|d| (d.clone(), p.name.clone())));
    }
    edges.extend(
        spec.depends_on
            .iter()
            .map(|d| (d.clone(), spec.name.clone())),
    );
    match find_cycle(&edges, &spec.name) {
        None => Ok(()),
        Some(cycle) => Err(ControlError::Invalid {
            message: format!("depends_on would make a cycle: {}", cycle.join(" -> ")),
            details: vec![ErrorDetail {
                path: "depends_on".into(),
                message: format!(
                    "the dependencies form a cycle: {} (a pipeline runs after the ones it depends on, so a cycle would never start)",
                    cycle.join(" -> ")
                ),
            }],
        }),
    }
}

/// A cycle through the graph of `edges` (dependency -> dependent), preferring one through
/// `through`, as the names along it with the first repeated at the end.
pub fn find_cycle(edges: &[(String, String)], through: &str) -> Option<Vec<String>> {
    let mut g: DiGraphMap<&str, ()> = DiGraphMap::new();
    for (a, b) in edges {
        g.add_edge(a.as_str(), b.as_str(), ());
    }
    let sccs = petgraph::algo::tarjan_scc(&g);
    let cyclic: Vec<&Vec<&str>> = sccs
        .iter()
        .filter(|c| c.len() > 1 || g.contains_edge(c[0], c[0]))
        .collect();
    let scc = cyclic
        .iter()
        .find(|c| c.contains(&through))
        .or(cyclic.first())?;
    let members: BTreeSet<&str> = scc.iter().copied().collect();
    let start = if members.contains(through) {
        through
    } else {
        *members.iter().next()?
    };
    // Walk inside the component (every node in it reaches every other) back to the start:
    // a breadth-first search gives the shortest way round.
    let mut prev: HashMap<&str, &str> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        let mut next: Vec<&str> = g.neighbors(n).filter(|m| members.contains(m)).collect();
        next.sort();
        for m in next {
            if m == start {
                let mut path = vec![start.to_string()];
                let mut at = n;
                while at != start {
                    path.push(at.to_string());
                    at = prev[at];
                }
                path.push(start.to_string());
                // `path` runs backwards from the start: dependency order reads forwards.
                path.reverse();
                return Some(path);
            }
            if !prev.contains_key(m) {
                prev.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    None
}

/// A run ended: start or skip the pipelines that depend on its pipeline (see the module
/// docs).
pub fn on_run_finished(state: &ControlPlane, run: &Run) {
    let mut seen = BTreeSet::new();
    if let Err(e) = propagate(state, run, &mut seen) {
        tracing::warn!(run = %run.id, "dependency triggers: {e}");
    }
}

fn ok_status(s: RunStatus) -> bool {
    matches!(s, RunStatus::Success | RunStatus::Warning)
}

fn propagate(state: &ControlPlane, run: &Run, seen: &mut BTreeSet<String>) -> ControlResult<()> {
    if !run.status.is_terminal() {
        return Ok(());
    }
    let table = dependency_table(state)?;
    let by_name: HashMap<&str, &Pipeline> =
        table.iter().map(|(p, _)| (p.name.as_str(), p)).collect();
    for (b, deps) in &table {
        if !deps.iter().any(|d| d == &run.pipeline_name) || b.paused || !seen.insert(b.id.clone()) {
            continue;
        }
        if ok_status(run.status) {
            // Every other dependency's latest run must have succeeded too.
            let mut waiting = None;
            for d in deps.iter().filter(|d| *d != &run.pipeline_name) {
                let last = match by_name.get(d.as_str()) {
                    Some(p) => state.meta.runs_of(&p.id)?.pop(),
                    None => None,
                };
                if !last.is_some_and(|r| ok_status(r.status)) {
                    waiting = Some(d.clone());
                    break;
                }
            }
            if let Some(d) = waiting {
                tracing::info!(pipeline = %b.name, "dependency `{}` succeeded; still waiting on `{d}`", run.pipeline_name);
                continue;
            }
            let Some(version) = state.meta.version(&b.id, b.version)? else {
                continue;
            };
            let by = format!("pipeline `{}` (run {})", run.pipeline_name, run.id);
            match state.start_run(&version, Trigger::Dependency, &by) {
                Ok(r) => {
                    state.meta.apply(MetaCommand::run_event(
                        &r.id,
                        EventLevel::Info,
                        EventKind::Dependency,
                        format!(
                            "started because `{}` ended {} (run {})",
                            run.pipeline_name, run.status, run.id
                        ),
                        json!({"dependency": run.pipeline_name, "run_id": run.id}),
                    ))?;
                }
                Err(ControlError::Invalid { .. }) => {
                    tracing::warn!(pipeline = %b.name, "not started after `{}`: its document is invalid", run.pipeline_name)
                }
                Err(e) => {
                    tracing::warn!(pipeline = %b.name, "not started after `{}`: {e}", run.pipeline_name)
                }
            }
        } else {
            let skipped = skip(state, b, run)?;
            propagate(state, &skipped, seen)?;
        }
    }
    Ok(())
}

/// Records a run of `b` that did not start because `cause` did not succeed.
fn skip(state: &ControlPlane, b: &Pipeline, cause: &Run) -> ControlResult<Run> {
    let now = Utc::now();
    let why = format!(
        "skipped: dependency `{}` ended {} (run {})",
        cause.pipeline_name, cause.status, cause.id
    );
    let by = format!("pipeline `{}` (run {})", cause.pipeline_name, cause.id);
    let run = Run::pending(uuid::Uuid::new_v4().to_string(), &b.id, &b.name, b.version, Trigger::Dependency, by, now);
    state
        .meta
        .apply(MetaCommand::CreateRun { run: run.clone() })?;
    state.meta.apply(MetaCommand::UpdateRun {
        id: run.id.clone(),
        status: RunStatus::Cancelled,
        at: now,
        counts: None,
        error: Some(why.clone()),
    })?;
    state.meta.apply(MetaCommand::run_event(&run.id, EventLevel::Warning, EventKind::Skipped, why, json!({"status": "cancelled", "skipped": true, "dependency": cause.pipeline_name, "dependency_run_id": cause.id})))?;
    Ok(state.meta.run(&run.id)?.unwrap_or(run))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(expr: &str) -> cron::Schedule {
        format!("0 {expr}").parse().unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn daily_fire_times_follow_the_wall_clock_across_spring_forward() {
        let tz: Tz = "Europe/Paris".parse().unwrap();
        let got: Vec<_> = fire_times(&cron("0 8 * * *"), tz, utc("2026-03-27T12:00:00Z"))
            .take(4)
            .collect();
        // 08:00 CET is 07:00Z until 29 March, then 08:00 CEST is 06:00Z.
        assert_eq!(
            got,
            [
                utc("2026-03-28T07:00:00Z"),
                utc("2026-03-29T06:00:00Z"),
                utc("2026-03-30T06:00:00Z"),
                utc("2026-03-31T06:00:00Z")
            ]
        );
    }

    #[test]
    fn a_skipped_wall_time_fires_after_the_gap_and_a_repeated_one_fires_once() {
        let tz: Tz = "Europe/Paris".parse().unwrap();
        // 02:30 does not exist on 29 March 2026 (02:00 CET -> 03:00 CEST): it fires at 03:30 CEST.
        let spring: Vec<_> = fire_times(&cron("30 2 * * *"), tz, utc("2026-03-28T00:00:00Z"))
            .take(3)
            .collect();
        assert_eq!(
            spring,
            [
                utc("2026-03-28T01:30:00Z"),
                utc("2026-03-29T01:30:00Z"),
                utc("2026-03-30T00:30:00Z")
            ]
        );
        // 02:30 happens twice on 25 October 2026 (03:00 CEST -> 02:00 CET): it fires once, at the first.
        let autumn: Vec<_> = fire_times(&cron("30 2 * * *"), tz, utc("2026-10-24T12:00:00Z"))
            .take(2)
            .collect();
        assert_eq!(
            autumn,
            [utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
        // Every 30 minutes through the repeated hour: each wall time once, none twice.
        let halfhour: Vec<_> = fire_times(&cron("*/30 * * * *"), tz, utc("2026-10-24T23:45:00Z"))
            .take(4)
            .collect();
        assert_eq!(
            halfhour,
            [
                utc("2026-10-25T00:00:00Z"),
                utc("2026-10-25T00:30:00Z"),
                utc("2026-10-25T02:00:00Z"),
                utc("2026-10-25T02:30:00Z")
            ]
        );
        // New York: the same rules in another zone.
        let ny: Tz = "America/New_York".parse().unwrap();
        let got: Vec<_> = fire_times(&cron("0 9 * * MON-FRI"), ny, utc("2026-03-06T00:00:00Z"))
            .take(2)
            .collect();
        assert_eq!(
            got,
            [utc("2026-03-06T14:00:00Z"), utc("2026-03-09T13:00:00Z")]
        );
    }

    #[test]
    fn cycles_are_found_and_named_in_dependency_order() {
        let e = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(find_cycle(&[e("a", "b"), e("b", "c")], "c"), None);
        assert_eq!(
            find_cycle(&[e("a", "b"), e("b", "c"), e("c", "a"), e("x", "a")], "a").unwrap(),
            ["a", "b", "c", "a"]
        );
        assert_eq!(
            find_cycle(&[e("a", "b"), e("b", "a"), e("c", "d")], "d").unwrap(),
            ["a", "b", "a"]
        );
        assert_eq!(find_cycle(&[e("s", "s")], "s").unwrap(), ["s", "s"]);
    }
}
