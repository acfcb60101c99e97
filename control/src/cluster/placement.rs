//! Where runs execute in a cluster.
//!
//! A run's node is part of the replicated metadata: a [`MetaCommand::AssignRun`] records
//! its [`Assignment`] (builds before it kept the setting `_cluster/run/<run id>`, which the
//! store still reads as one). Only the leader writes it: it places
//! every run that has not ended and has no live node on the live member with the fewest
//! unfinished runs (ties: the lowest id), and moves the runs of a member that has not
//! answered its heartbeats for [`DOWN_AFTER`]. Every node starts the runs assigned to it
//! that it is not running yet (`runner::run_assigned_here`); a moved run restores from the last
//! completed checkpoint, which is why the checkpoint store must be shared
//! (`--shared-dir`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dagg_actors::remote_keyed::{InstancePlacer, Remote};
use dagg_actors::remote_sink::{SinkAdmission, SinkRequest};
use dagg_cluster::ClusterNode;

use chrono::Utc;
use serde_json::json;

use crate::ControlPlane;
use crate::cluster::Meta;
use crate::meta::{EventKind, EventLevel, MetaCommand, MetaResult, MetaStore};

pub use crate::meta::Assignment;

/// A member that has not answered for this long (beyond the liveness window) loses its runs.
pub const DOWN_AFTER: Duration = Duration::from_secs(1);

/// Every run's assignment, by run id.
pub fn assignments(meta: &Meta) -> MetaResult<BTreeMap<String, Assignment>> {
    meta.assignments()
}

pub fn assignment(meta: &Meta, run_id: &str) -> MetaResult<Option<Assignment>> {
    meta.store().assignment(run_id)
}

/// Unfinished runs per node.
pub fn load(meta: &Meta) -> MetaResult<BTreeMap<u64, u64>> {
    let mut out = BTreeMap::new();
    for (run_id, a) in assignments(meta)? {
        if let Some(r) = meta.run(&run_id)?
            && !r.status.is_terminal()
        {
            *out.entry(a.node).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// Whether runs started on this node wait for the leader to place them (a cluster of more
/// than one member) rather than start here at once.
pub fn placed_by_leader(state: &ControlPlane) -> bool {
    state.meta.node().is_some_and(|n| n.members().len() > 1)
}

/// Records that a run starts on this node (in a cluster of one, runs start where they are
/// asked for); nothing without a cluster.
pub fn assign_here(state: &ControlPlane, run_id: &str) -> MetaResult<()> {
    let Some(node) = state.meta.node() else { return Ok(()) };
    let a = Assignment { node: node.id, at: Utc::now(), attempt: 1 };
    state.meta.apply(MetaCommand::AssignRun { run_id: run_id.into(), assignment: a })
}

/// The leader's placement loop (runs on every node, acts only on the leader).
pub async fn run_placement(state: ControlPlane) {
    let Some(node) = state.meta.node().cloned() else { return };
    let mut leader_since: Option<Instant> = None;
    let mut down_since: HashMap<u64, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = state.meta.placement_changed.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if !node.is_leader() {
            leader_since = None;
            continue;
        }
        // A new leader learns who is up from its first heartbeats.
        if leader_since.get_or_insert_with(Instant::now).elapsed() < dagg_cluster::LIVENESS_WINDOW && node.members().len() > 1 {
            continue;
        }
        let live: HashSet<u64> = node.live_members().into_iter().collect();
        let members = node.members();
        for id in members.keys() {
            if live.contains(id) {
                down_since.remove(id);
            } else {
                down_since.entry(*id).or_insert_with(Instant::now);
            }
        }
        if let Err(e) = place_once(&state, &live, &members.keys().copied().collect(), &down_since) {
            tracing::warn!("placing runs: {e}");
        }
    }
}

fn place_once(state: &ControlPlane, live: &HashSet<u64>, members: &HashSet<u64>, down_since: &HashMap<u64, Instant>) -> MetaResult<()> {
    if live.is_empty() {
        return Ok(());
    }
    let assigned = assignments(&state.meta)?;
    let mut runs: Vec<_> = state.meta.runs()?.into_iter().filter(|r| !r.status.is_terminal()).collect();
    runs.sort_by_key(|r| r.created_at);
    let mut load: BTreeMap<u64, u64> = live.iter().map(|id| (*id, 0)).collect();
    for r in &runs {
        if let Some(a) = assigned.get(&r.id)
            && let Some(n) = load.get_mut(&a.node)
        {
            *n += 1;
        }
    }
    for r in runs {
        let current = assigned.get(&r.id);
        let (attempt, from) = match current {
            Some(a) if live.contains(&a.node) => continue,
            // Down, but not for long enough yet.
            Some(a) if members.contains(&a.node) && down_since.get(&a.node).is_none_or(|t| t.elapsed() < DOWN_AFTER) => continue,
            Some(a) => (a.attempt + 1, Some(a.node)),
            None => (1, None),
        };
        let Some((&to, _)) = load.iter().min_by_key(|(id, n)| (**n, **id)) else { return Ok(()) };
        let a = Assignment { node: to, at: Utc::now(), attempt };
        state.meta.apply(MetaCommand::AssignRun { run_id: r.id.clone(), assignment: a })?;
        *load.entry(to).or_insert(0) += 1;
        let message = match from {
            Some(f) => format!("node {f} is down: moved to node {to} (attempt {attempt})"),
            None => format!("placed on node {to}"),
        };
        let (level, kind) = if from.is_some() { (EventLevel::Warning, EventKind::Moved) } else { (EventLevel::Info, EventKind::Placed) };
        state.meta.apply(MetaCommand::run_event(&r.id, level, kind, message, json!({"node": to, "from": from, "attempt": attempt})))?;
        tracing::info!(run = %r.id, node = to, ?from, "run placed");
    }
    Ok(())
}

/// Spreads a run's keyed instances over the cluster's live members: counting from the
/// run's own node in id order, instance `i` goes to the `i`-th live member (instance 0 stays
/// with the run). With as many instances as members, every member runs one. Destinations go
/// where the pipeline's `placement.destinations` says, when that member is up.
pub struct Spread {
    pub node: Arc<ClusterNode>,
}

/// How long opening a data link to another member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[async_trait]
impl InstancePlacer for Spread {
    async fn place(&self, _run_id: &str, index: usize, _instances: usize) -> Option<Result<Remote, String>> {
        let view = match self.node.leader_members_view().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("placing a keyed instance: no view of the live members ({e}); it runs here");
                return None;
            }
        };
        let live: Vec<_> = view.members.into_iter().filter(|m| m.up || m.id == self.node.id).collect();
        let me = live.iter().position(|m| m.id == self.node.id)?;
        let target = &live[(me + index) % live.len()];
        if target.id == self.node.id {
            return None;
        }
        let io = self.node.data_link(&target.peer_addr, dagg_cluster::data_plane::KEYED, CONNECT_TIMEOUT).await;
        Some(io.map(|io| Remote { node: target.id, io }))
    }

    async fn destinations(&self, _run_id: &str, node: u64) -> Option<Result<Remote, String>> {
        if node == self.node.id {
            return None;
        }
        let view = match self.node.leader_members_view().await {
            Ok(v) => v,
            Err(e) => return Some(Err(format!("no view of the live members ({e})"))),
        };
        let Some(target) = view.members.into_iter().find(|m| m.id == node) else {
            return Some(Err(format!("node {node} is not a member of the cluster")));
        };
        if !target.up {
            return Some(Err(format!("node {node} is not up")));
        }
        let io = self.node.data_link(&target.peer_addr, dagg_cluster::data_plane::SINK, CONNECT_TIMEOUT).await;
        Some(io.map(|io| Remote { node, io }))
    }
}

/// What this node (`node_id`) hosts for its peers on the data plane
/// (`dagg_cluster::data_plane::router`): a destination whose file path keeps the API's rule
/// (when `restrict_file_paths`, as for the documents the API stores), of a run that has not
/// ended and that the cluster placed, whose pipeline version names this node in
/// `placement.destinations` and has exactly that destination. Anything else a connected
/// peer asks for — a file at an absolute path, a run never placed — is refused.
pub fn sink_admission(store: Arc<MetaStore>, node_id: u64, restrict_file_paths: bool) -> SinkAdmission {
    Arc::new(move |req: &SinkRequest<'_>| {
        if restrict_file_paths {
            dagg_model::spec::paths::check_connector_inside_files_folder(req.destination)?;
        }
        let read = |e: crate::meta::MetaError| format!("cannot read the run: {e}");
        let run = store.run(req.run_id).map_err(read)?.ok_or_else(|| format!("no run `{}` in this cluster", req.run_id))?;
        if run.status.is_terminal() {
            return Err(format!("run `{}` already ended `{}`", run.id, run.status));
        }
        if store.assignment(&run.id).map_err(read)?.is_none() {
            return Err(format!("run `{}` was not placed by the cluster", run.id));
        }
        let doc = store
            .version(&run.pipeline_id, run.pipeline_version)
            .map_err(read)?
            .ok_or_else(|| format!("pipeline `{}` has no version {}", run.pipeline_id, run.pipeline_version))?
            .document;
        let spec = dagg_model::spec::pipeline::parse_pipeline(&doc).map_err(|e| format!("the stored pipeline of run `{}` does not parse: {e}", run.id))?;
        if spec.name != req.pipeline {
            return Err(format!("run `{}` belongs to pipeline `{}`, not `{}`", run.id, spec.name, req.pipeline));
        }
        if spec.placement.destinations != Some(node_id) {
            return Err(format!("run `{}` does not place its destinations on node {node_id}", run.id));
        }
        if !spec.destinations.iter().any(|d| d == req.destination) {
            return Err(format!("run `{}` has no such destination", run.id));
        }
        Ok(())
    })
}

/// The placer for runs of this node: none alone (every instance runs in the run's process).
pub fn placer(state: &ControlPlane) -> Option<Arc<dyn InstancePlacer>> {
    let node = state.meta.node().filter(|n| n.members().len() > 1)?;
    Some(Arc::new(Spread { node: node.clone() }))
}
