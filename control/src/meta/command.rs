//! The one way the metadata changes: a [`MetaCommand`], wrapped in a versioned
//! [`CommandEnvelope`] when it travels or is logged.
//!
//! Everything a command needs is in it — ids, timestamps, password hashes — so applying it
//! is deterministic. New variants may be added; an existing variant's fields only grow with
//! serde defaults, and a change that cannot keep that bumps [`COMMAND_VERSION`].

use chrono::{DateTime, Utc};
use dagg_model::RunStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::prune::PruneCutoffs;
use super::types::*;

/// The version of the command encoding this build writes and reads.
pub const COMMAND_VERSION: u32 = 1;

/// The parts of a pipeline's summary that follow its document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineSummary {
    pub name: String,
    pub description: Option<String>,
    pub source_type: String,
    pub destination_types: Vec<String>,
    pub schedule_type: String,
}

impl From<&Pipeline> for PipelineSummary {
    fn from(p: &Pipeline) -> Self {
        PipelineSummary {
            name: p.name.clone(),
            description: p.description.clone(),
            source_type: p.source_type.clone(),
            destination_types: p.destination_types.clone(),
            schedule_type: p.schedule_type.clone(),
        }
    }
}

/// A change to the metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MetaCommand {
    /// Creates or replaces a user (the caller computed the password hash).
    PutUser { user: User },
    /// Deletes a user, revoking their sessions and API keys.
    DeleteUser { id: String, at: DateTime<Utc> },
    /// Creates a session or rotates its refresh token.
    PutSession { session: Session },
    RevokeSession { id: String, at: DateTime<Utc> },
    RevokeUserSessions { user_id: String, at: DateTime<Utc> },
    PutApiKey { key: ApiKey },
    DeleteApiKey { id: String },
    PutConnector { connector: Connector },
    DeleteConnector { id: String },
    PutTransformation { transformation: Transformation },
    DeleteTransformation { id: String },
    /// A new pipeline at version 1.
    CreatePipeline { pipeline: Pipeline, document: Json, comment: String },
    /// A new version of a pipeline (an edit, a rollback).
    UpdatePipeline { id: String, summary: PipelineSummary, document: Json, stamp: Stamp, comment: String },
    SetPipelinePaused { id: String, paused: bool, stamp: Stamp },
    /// Deletes a pipeline and its versions; its runs stay as history.
    DeletePipeline { id: String },
    CreateRun { run: Run },
    /// Moves a run to `status` (refused unless [`RunStatus::can_become`] allows it).
    UpdateRun { id: String, status: RunStatus, at: DateTime<Utc>, counts: Option<RunCounts>, error: Option<String> },
    /// A node stopping cleanly leaves its active run to be resumed (after its restart, or
    /// on another node): the next [`MetaCommand::ResumeRun`] is not a death.
    HandOverRun { id: String },
    /// A node resumes a run that was active when the node running it stopped: one more
    /// `resumptions` unless the run was handed over (which the resumption clears).
    ResumeRun { id: String },
    /// Appends to a run's log; the store numbers the event.
    AppendRunEvent { event: RunEvent },
    AppendAudit { entry: AuditEntry },
    PutSetting { key: String, value: Json },
    /// Records that a pipeline's schedule fired (or was passed over while paused) for the
    /// instant `state.last_fired`; the scheduler never fires an instant at or before it.
    PutScheduleState { state: ScheduleState },
    /// Stores what a run's sink stage saw: its lineage, profile and schema changes.
    PutRunInsight { insight: RunInsight },
    /// Places a run on a node (the cluster's leader, or a node of a one-node cluster that
    /// starts it). Builds before this command stored the assignment as the setting
    /// `_cluster/run/<run id>` ([`super::LEGACY_ASSIGN_PREFIX`]); such a `PutSetting`, in an
    /// old log or snapshot, is applied as this command.
    AssignRun { run_id: String, assignment: Assignment },
    /// Removes what the retention setting no longer keeps: sessions that ended, audit
    /// entries, run logs and ended runs older than the cut-offs ([`PruneCutoffs`], computed
    /// by the leader from its clock). A run that has not ended is never removed.
    Prune(PruneCutoffs),
}

impl MetaCommand {
    /// An entry for a run's log, stamped now.
    pub fn run_event(run_id: &str, level: EventLevel, kind: EventKind, message: String, data: Json) -> MetaCommand {
        MetaCommand::AppendRunEvent { event: RunEvent { run_id: run_id.into(), seq: 0, at: Utc::now(), level, kind, message, data } }
    }
}

/// A command with the version of its encoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    pub version: u32,
    pub command: MetaCommand,
}

impl CommandEnvelope {
    pub fn new(command: MetaCommand) -> Self {
        CommandEnvelope { version: COMMAND_VERSION, command }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a command serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<CommandEnvelope, String> {
        let v: Json = serde_json::from_slice(bytes).map_err(|e| format!("not a command: {e}"))?;
        match v.get("version").and_then(Json::as_u64) {
            Some(n) if n == u64::from(COMMAND_VERSION) => serde_json::from_value(v).map_err(|e| format!("command of version {n}: {e}")),
            Some(n) => Err(format!("command of version {n}; this build reads version {COMMAND_VERSION}")),
            None => Err("command without a version".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_checks_its_version() {
        let c = CommandEnvelope::new(MetaCommand::DeleteConnector { id: "c1".into() });
        let bytes = c.encode();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), r#"{"version":1,"command":{"op":"delete_connector","id":"c1"}}"#);
        assert_eq!(CommandEnvelope::decode(&bytes).unwrap(), c);
        let e = CommandEnvelope::decode(br#"{"version":2,"command":{"op":"delete_connector","id":"c1"}}"#).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
    }
}
