//! The records the metadata store keeps. Each is persisted as versioned JSON
//! (`{"v": 1, "data": {...}}`, see [`super::codec`]); a field added later gets a serde default so
//! version-1 values still read.

use chrono::{DateTime, Utc};
use dagg_model::RunStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use utoipa::ToSchema;

/// What a user may do (guide 6.5.1). Ordered: each role can do what the ones before it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads pipeline status and metrics.
    Viewer,
    /// Creates and changes pipelines, connectors and transformations; runs them.
    Editor,
    /// Everything, including users and the audit log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

/// A person (or script owner) who can log in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub full_name: Option<String>,
    pub role: Role,
    /// argon2id PHC string.
    pub password_hash: String,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A login: the refresh token (stored as its SHA-256) and whether it was revoked. Access
/// tokens name their session, so revoking it ends them too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// The hashes of this session's earlier refresh tokens (the newest last, at most
    /// [`Session::KEPT_TOKENS`]): each still finds the session, so a reused one can be told
    /// from an unknown one and the session revoked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_token_hashes: Vec<String>,
}

impl Session {
    /// How many earlier refresh tokens a session remembers.
    pub const KEPT_TOKENS: usize = 16;

    /// This session with a new refresh token (`hash`), the current one remembered as used.
    pub fn rotated(self, hash: String, expires_at: DateTime<Utc>) -> Session {
        let mut previous = self.previous_token_hashes;
        previous.push(self.token_hash);
        let extra = previous.len().saturating_sub(Session::KEPT_TOKENS);
        previous.drain(..extra);
        Session { token_hash: hash, expires_at, previous_token_hashes: previous, ..self }
    }

    /// Every token hash that finds this session.
    pub fn token_hashes(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.token_hash.as_str()).chain(self.previous_token_hashes.iter().map(String::as_str))
    }
}

/// A personal API key (guide 5.4.1), stored as its SHA-256.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The first characters of the key, so people can tell their keys apart.
    pub prefix: String,
    pub key_hash: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Who changed a record, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stamp {
    pub at: DateTime<Utc>,
    /// The user's id.
    pub by: String,
}

/// A saved connector configuration (guide 5.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Connector {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub connector_type: String,
    pub config: Json,
    pub created: Stamp,
    pub updated: Stamp,
}

/// A saved list of transformation rules (guide 5.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transformation {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The rules, as in a pipeline document's `transformations`.
    pub transformations: Json,
    pub created: Stamp,
    pub updated: Stamp,
}

/// A pipeline's summary; its document lives in its versions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The current version's number (1 for a new pipeline).
    pub version: u32,
    /// Scheduled runs are skipped while paused; manual runs still start.
    #[serde(default)]
    pub paused: bool,
    pub source_type: String,
    pub destination_types: Vec<String>,
    /// `manual` or `cron`.
    pub schedule_type: String,
    pub created: Stamp,
    pub updated: Stamp,
}

/// One version of a pipeline's document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineVersion {
    pub pipeline_id: String,
    pub version: u32,
    pub document: Json,
    pub created: Stamp,
    /// Why it was made (`created`, `updated`, `rollback to version 2`, `cloned from …`).
    pub comment: String,
}

/// Counts a run reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunCounts {
    pub records_read: u64,
    pub records_written: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    pub filtered: u64,
    pub attempts: u32,
    pub checkpoints: u64,
}

/// What started a run; stored and shown as `manual`, `schedule`, `dependency`, `event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A person, through the API.
    Manual,
    /// A cron schedule.
    Schedule,
    /// A pipeline it depends on ended.
    Dependency,
    /// A message on the pipeline's event trigger.
    Event,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::Dependency => "dependency",
            Trigger::Event => "event",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much a run's log entry matters; stored as `info`, `warning`, `error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventLevel {
    Info,
    Warning,
    Error,
}

impl EventLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            EventLevel::Info => "info",
            EventLevel::Warning => "warning",
            EventLevel::Error => "error",
        }
    }
}

impl std::fmt::Display for EventLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a run's log entry records. Stored as its snake_case name; a name this build does
/// not know (written by another build) is kept as it is in [`EventKind::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum EventKind {
    Queued,
    Started,
    Finished,
    CancelRequested,
    Retrying,
    Resumed,
    /// The cluster's leader placed the run on a node.
    Placed,
    /// The run moved off a node that went down.
    Moved,
    /// The event that started it.
    Trigger,
    /// The dependency whose end started it.
    Dependency,
    /// It did not run because a dependency did not succeed.
    Skipped,
    ScheduleMissed,
    SchemaChanged,
    Notified,
    NotificationFailed,
    Other(String),
}

impl EventKind {
    const NAMED: [EventKind; 15] = [
        EventKind::Queued,
        EventKind::Started,
        EventKind::Finished,
        EventKind::CancelRequested,
        EventKind::Retrying,
        EventKind::Resumed,
        EventKind::Placed,
        EventKind::Moved,
        EventKind::Trigger,
        EventKind::Dependency,
        EventKind::Skipped,
        EventKind::ScheduleMissed,
        EventKind::SchemaChanged,
        EventKind::Notified,
        EventKind::NotificationFailed,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Queued => "queued",
            EventKind::Started => "started",
            EventKind::Finished => "finished",
            EventKind::CancelRequested => "cancel_requested",
            EventKind::Retrying => "retrying",
            EventKind::Resumed => "resumed",
            EventKind::Placed => "placed",
            EventKind::Moved => "moved",
            EventKind::Trigger => "trigger",
            EventKind::Dependency => "dependency",
            EventKind::Skipped => "skipped",
            EventKind::ScheduleMissed => "schedule_missed",
            EventKind::SchemaChanged => "schema_changed",
            EventKind::Notified => "notified",
            EventKind::NotificationFailed => "notification_failed",
            EventKind::Other(s) => s,
        }
    }
}

impl From<String> for EventKind {
    fn from(s: String) -> EventKind {
        EventKind::NAMED.into_iter().find(|k| k.as_str() == s).unwrap_or(EventKind::Other(s))
    }
}

impl From<EventKind> for String {
    fn from(k: EventKind) -> String {
        k.as_str().to_string()
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a run executes in a cluster ([`super::MetaCommand::AssignRun`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The node's id.
    pub node: u64,
    pub at: DateTime<Utc>,
    /// 1 when first placed, one more every time it moves.
    pub attempt: u32,
}

/// One execution of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub pipeline_id: String,
    pub pipeline_name: String,
    pub pipeline_version: u32,
    pub status: RunStatus,
    /// What started it.
    pub trigger: Trigger,
    /// The user who started it.
    pub triggered_by: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub counts: RunCounts,
    #[serde(default)]
    pub error: Option<String>,
    /// Times the run was resumed after the node running it died (its process killed, the
    /// machine lost): counted by [`super::MetaCommand::ResumeRun`] across restarts and moves,
    /// and bounded by the pipeline's retry budget so that an input that kills its node ends
    /// the run `failed` instead of killing node after node.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resumptions: u32,
    /// The node running it stopped cleanly and left it to be resumed (a rolling restart):
    /// the next resumption is not counted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handed_over: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Run {
    /// A new run of `pipeline_id` (named `pipeline_name`) at `version`, pending: not yet
    /// started, nothing counted.
    pub fn pending(id: String, pipeline_id: &str, pipeline_name: &str, version: u32, trigger: Trigger, by: String, at: DateTime<Utc>) -> Run {
        Run {
            id,
            pipeline_id: pipeline_id.to_string(),
            pipeline_name: pipeline_name.to_string(),
            pipeline_version: version,
            status: RunStatus::Pending,
            trigger,
            triggered_by: by,
            created_at: at,
            started_at: None,
            finished_at: None,
            counts: RunCounts::default(),
            error: None,
            resumptions: 0,
            handed_over: false,
        }
    }

    /// Seconds from start to finish (or to `now` while running).
    pub fn duration_seconds(&self, now: DateTime<Utc>) -> Option<f64> {
        let start = self.started_at?;
        let end = self.finished_at.unwrap_or(now);
        Some(((end - start).num_microseconds().unwrap_or(0).max(0)) as f64 / 1e6)
    }
}

/// One line of a run's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunEvent {
    pub run_id: String,
    /// Position in the run's log, from 1.
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// `info`, `warning` or `error`.
    #[schema(value_type = String)]
    pub level: EventLevel,
    /// `queued`, `started`, `cancel_requested`, `finished`, …
    #[schema(value_type = String)]
    pub kind: EventKind,
    pub message: String,
    /// Counts, status and the like.
    #[schema(value_type = Object)]
    pub data: Json,
}

/// Who changed what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub at: DateTime<Utc>,
    /// The user's id.
    pub actor_id: String,
    pub actor: String,
    /// `create`, `update`, `delete`, `execute`, `login`, …
    pub action: String,
    /// `pipeline`, `connector`, `user`, …
    pub resource: String,
    pub resource_id: String,
    #[schema(value_type = Object)]
    pub details: Json,
}

/// Where a pipeline's cron schedule stands (persisted so that a restart neither repeats a
/// fired instant nor fires every missed one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    pub pipeline_id: String,
    /// The latest scheduled instant dealt with: fired, or passed over while paused.
    pub last_fired: DateTime<Utc>,
    /// The run started for it (none when it was passed over, or when the scheduler only
    /// armed the schedule).
    #[serde(default)]
    pub run_id: Option<String>,
    /// `armed`, `fired`, `missed` (fired late, once, for instants passed while down),
    /// `paused` (passed over) or `busy` (a run was still active).
    pub outcome: String,
    /// When the scheduler wrote this.
    pub at: DateTime<Utc>,
}

/// What a run's sink stage saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInsight {
    pub run_id: String,
    pub pipeline_id: String,
    pub pipeline_version: u32,
    /// One segment per checkpoint: source positions -> sink commit positions.
    #[serde(default)]
    pub lineage: Vec<dagg_actors::tap::LineageSegment>,
    #[serde(default)]
    pub profile: Option<dagg_actors::profile::Profile>,
    /// Against the previous run's profile (absent on a first run).
    #[serde(default)]
    pub schema_changes: Option<dagg_actors::profile::SchemaChanges>,
}
