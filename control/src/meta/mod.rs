//! The metadata store: users, sessions, API keys, connectors, transformations, pipelines
//! with their versions, runs with their logs, the audit log and settings, in sled under
//! `<data-dir>/meta`.
//!
//! Contract: every change is one [`MetaCommand`] given to [`MetaStore::apply`]; reads are
//! plain methods. `apply` is deterministic — ids, timestamps and password hashes are in the
//! command, computed by the caller — so the command stream can be replicated (the cluster
//! puts it under Raft) and replayed to the same state. Writes are serialized by one lock, so
//! a command sees the effects of every command before it. Values are versioned JSON
//! ([`codec`]).

pub mod codec;
mod command;
mod prune;
mod replication;
mod types;

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

pub use command::{COMMAND_VERSION, CommandEnvelope, MetaCommand, PipelineSummary};
pub use prune::{PruneCounts, PruneCutoffs};
pub use types::*;

/// Why a command or a read failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{kind} `{id}` does not exist")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("a run cannot go from `{from}` to `{to}`")]
    IllegalTransition { from: dagg_model::RunStatus, to: dagg_model::RunStatus },
    #[error("metadata storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("metadata value: {0}")]
    Decode(String),
    /// A dump of the store (a Raft snapshot) could not be written or read.
    #[error("{0}")]
    Dump(String),
    /// The cluster could not commit the change (no leader, or no quorum reachable).
    #[error("{0}")]
    Unavailable(String),
}

pub type MetaResult<T> = Result<T, MetaError>;

/// Where builds before [`MetaCommand::AssignRun`] kept run assignments: the setting
/// `_cluster/run/<run id>` holding an [`Assignment`]. Such settings — in a command log, a
/// snapshot or a store written by such a build — become assignments when applied, restored
/// or opened ([`MetaStore::migrate_legacy_assignments`]); one whose value is not an
/// assignment stays a setting, as before.
pub const LEGACY_ASSIGN_PREFIX: &str = "_cluster/run/";

/// The store. Cheap to share behind an `Arc`.
pub struct MetaStore {
    db: sled::Db,
    t: Trees,
    write: Mutex<()>,
    /// The decoded pipeline summaries, kept between changes: listing pipelines is the
    /// hottest read. The number is bumped by every change, so a list read before a change
    /// is never kept after it.
    pipelines_cache: Mutex<(u64, Option<Arc<Vec<Pipeline>>>)>,
}

struct Trees {
    users: sled::Tree,
    /// `u:<lowercase username>` and `e:<lowercase email>` -> user id.
    user_index: sled::Tree,
    sessions: sled::Tree,
    /// token hash -> session id.
    session_tokens: sled::Tree,
    api_keys: sled::Tree,
    /// key hash -> api key id.
    api_key_hashes: sled::Tree,
    connectors: sled::Tree,
    transformations: sled::Tree,
    pipelines: sled::Tree,
    /// `<pipeline id>/<version, 10 digits>` -> version.
    versions: sled::Tree,
    runs: sled::Tree,
    /// `<pipeline id>/<created µs, 20 digits>/<run id>` -> empty.
    run_index: sled::Tree,
    /// `<run id>/<seq, 10 digits>` -> event.
    run_events: sled::Tree,
    /// `<at µs, 20 digits>/<id>` -> entry.
    audit: sled::Tree,
    settings: sled::Tree,
    /// pipeline id -> [`ScheduleState`].
    schedules: sled::Tree,
    /// run id -> [`RunInsight`].
    run_insights: sled::Tree,
    /// run id -> [`Assignment`].
    run_assignments: sled::Tree,
}

fn micros(t: DateTime<Utc>) -> String {
    format!("{:020}", t.timestamp_micros().max(0))
}

impl MetaStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> MetaResult<MetaStore> {
        let db = sled::Config::new().path(dir).open()?;
        let tree = |n: &str| db.open_tree(n);
        let t = Trees {
            users: tree("users")?,
            user_index: tree("user_index")?,
            sessions: tree("sessions")?,
            session_tokens: tree("session_tokens")?,
            api_keys: tree("api_keys")?,
            api_key_hashes: tree("api_key_hashes")?,
            connectors: tree("connectors")?,
            transformations: tree("transformations")?,
            pipelines: tree("pipelines")?,
            versions: tree("pipeline_versions")?,
            runs: tree("runs")?,
            run_index: tree("run_index")?,
            run_events: tree("run_events")?,
            audit: tree("audit")?,
            settings: tree("settings")?,
            schedules: tree("schedules")?,
            run_insights: tree("run_insights")?,
            run_assignments: tree("run_assignments")?,
        };
        let store = MetaStore { db, t, write: Mutex::new(()), pipelines_cache: Mutex::new((0, None)) };
        store.migrate_legacy_assignments()?;
        store.settings_take_effect();
        Ok(store)
    }

    /// Readiness: the store answers a read and a write.
    pub fn check(&self) -> MetaResult<()> {
        self.db.insert("__health", b"1".as_slice())?;
        self.db.get("__health")?;
        Ok(())
    }

    /// Makes every applied command durable.
    pub fn flush(&self) -> MetaResult<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Applies an encoded [`CommandEnvelope`] (what a replicated log carries).
    pub fn apply_encoded(&self, bytes: &[u8]) -> MetaResult<()> {
        let env = CommandEnvelope::decode(bytes).map_err(MetaError::Decode)?;
        self.apply(env.command)
    }

    /// Applies one command. Deterministic: the same commands in the same order give the
    /// same state.
    pub fn apply(&self, cmd: MetaCommand) -> MetaResult<()> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(
            cmd,
            MetaCommand::CreatePipeline { .. } | MetaCommand::UpdatePipeline { .. } | MetaCommand::SetPipelinePaused { .. } | MetaCommand::DeletePipeline { .. }
        ) {
            // Before and after the change: a reader between the two keeps nothing.
            self.invalidate_pipelines();
            let r = self.apply_locked(cmd);
            self.invalidate_pipelines();
            return r;
        }
        self.apply_locked(cmd)
    }

    fn invalidate_pipelines(&self) {
        let mut c = self.pipelines_cache.lock().unwrap_or_else(|e| e.into_inner());
        c.0 += 1;
        c.1 = None;
    }

    fn apply_locked(&self, cmd: MetaCommand) -> MetaResult<()> {
        let t = &self.t;
        match cmd {
            MetaCommand::PutUser { user } => {
                let name_key = format!("u:{}", user.username.to_lowercase());
                if let Some(owner) = t.user_index.get(&name_key)?
                    && owner != user.id.as_bytes()
                {
                    return Err(MetaError::Conflict(format!("the username `{}` is taken", user.username)));
                }
                if let Some(email) = &user.email
                    && let Some(owner) = t.user_index.get(format!("e:{}", email.to_lowercase()))?
                    && owner != user.id.as_bytes()
                {
                    return Err(MetaError::Conflict(format!("the e-mail address `{email}` is taken")));
                }
                if let Some(old) = self.get::<User>(&t.users, &user.id)? {
                    t.user_index.remove(format!("u:{}", old.username.to_lowercase()))?;
                    if let Some(e) = &old.email {
                        t.user_index.remove(format!("e:{}", e.to_lowercase()))?;
                    }
                }
                t.user_index.insert(name_key, user.id.as_bytes())?;
                if let Some(e) = &user.email {
                    t.user_index.insert(format!("e:{}", e.to_lowercase()), user.id.as_bytes())?;
                }
                self.put(&t.users, &user.id, &user)?;
            }
            MetaCommand::DeleteUser { id, at } => {
                let old: User = self.need(&t.users, "user", &id)?;
                t.user_index.remove(format!("u:{}", old.username.to_lowercase()))?;
                if let Some(e) = &old.email {
                    t.user_index.remove(format!("e:{}", e.to_lowercase()))?;
                }
                t.users.remove(&id)?;
                self.revoke_user_sessions(&id, at)?;
                for k in self.api_keys_of(&id)? {
                    t.api_key_hashes.remove(&k.key_hash)?;
                    t.api_keys.remove(&k.id)?;
                }
            }
            MetaCommand::PutSession { session } => {
                if let Some(old) = self.get::<Session>(&t.sessions, &session.id)? {
                    for h in old.token_hashes().filter(|h| !session.token_hashes().any(|n| n == *h)) {
                        t.session_tokens.remove(h)?;
                    }
                }
                for h in session.token_hashes() {
                    t.session_tokens.insert(h, session.id.as_bytes())?;
                }
                self.put(&t.sessions, &session.id, &session)?;
            }
            MetaCommand::RevokeSession { id, at } => {
                let mut s: Session = self.need(&t.sessions, "session", &id)?;
                if s.revoked_at.is_none() {
                    s.revoked_at = Some(at);
                    self.put(&t.sessions, &id, &s)?;
                }
            }
            MetaCommand::RevokeUserSessions { user_id, at } => self.revoke_user_sessions(&user_id, at)?,
            MetaCommand::PutApiKey { key } => {
                t.api_key_hashes.insert(&key.key_hash, key.id.as_bytes())?;
                self.put(&t.api_keys, &key.id, &key)?;
            }
            MetaCommand::DeleteApiKey { id } => {
                let k: ApiKey = self.need(&t.api_keys, "api key", &id)?;
                t.api_key_hashes.remove(&k.key_hash)?;
                t.api_keys.remove(&id)?;
            }
            MetaCommand::PutConnector { connector } => self.put(&t.connectors, &connector.id, &connector)?,
            MetaCommand::DeleteConnector { id } => {
                self.need::<Connector>(&t.connectors, "connector", &id)?;
                t.connectors.remove(&id)?;
            }
            MetaCommand::PutTransformation { transformation } => self.put(&t.transformations, &transformation.id, &transformation)?,
            MetaCommand::DeleteTransformation { id } => {
                self.need::<Transformation>(&t.transformations, "transformation", &id)?;
                t.transformations.remove(&id)?;
            }
            MetaCommand::CreatePipeline { pipeline, document, comment } => {
                if t.pipelines.contains_key(&pipeline.id)? {
                    return Err(MetaError::Conflict(format!("pipeline `{}` exists", pipeline.id)));
                }
                let mut p = pipeline;
                p.version = 1;
                let v = PipelineVersion { pipeline_id: p.id.clone(), version: 1, document, created: p.updated.clone(), comment };
                self.put(&t.versions, &version_key(&p.id, 1), &v)?;
                self.put(&t.pipelines, &p.id, &p)?;
            }
            MetaCommand::UpdatePipeline { id, summary, document, stamp, comment } => {
                let mut p: Pipeline = self.need(&t.pipelines, "pipeline", &id)?;
                p.version += 1;
                p.name = summary.name;
                p.description = summary.description;
                p.source_type = summary.source_type;
                p.destination_types = summary.destination_types;
                p.schedule_type = summary.schedule_type;
                p.updated = stamp.clone();
                let v = PipelineVersion { pipeline_id: id.clone(), version: p.version, document, created: stamp, comment };
                self.put(&t.versions, &version_key(&id, p.version), &v)?;
                self.put(&t.pipelines, &id, &p)?;
            }
            MetaCommand::SetPipelinePaused { id, paused, stamp } => {
                let mut p: Pipeline = self.need(&t.pipelines, "pipeline", &id)?;
                p.paused = paused;
                p.updated = stamp;
                self.put(&t.pipelines, &id, &p)?;
            }
            MetaCommand::DeletePipeline { id } => {
                self.need::<Pipeline>(&t.pipelines, "pipeline", &id)?;
                for k in t.versions.scan_prefix(format!("{id}/")).keys() {
                    t.versions.remove(k?)?;
                }
                t.pipelines.remove(&id)?;
                t.schedules.remove(&id)?;
                // Runs stay: they are history, and analytics count them.
            }
            MetaCommand::CreateRun { run } => {
                if t.runs.contains_key(&run.id)? {
                    return Err(MetaError::Conflict(format!("run `{}` exists", run.id)));
                }
                t.run_index.insert(format!("{}/{}/{}", run.pipeline_id, micros(run.created_at), run.id), b"".as_slice())?;
                self.put(&t.runs, &run.id, &run)?;
            }
            MetaCommand::UpdateRun { id, status, at, counts, error } => {
                let mut r: Run = self.need(&t.runs, "run", &id)?;
                if r.status != status && !r.status.can_become(status) {
                    return Err(MetaError::IllegalTransition { from: r.status, to: status });
                }
                if status == dagg_model::RunStatus::Running && r.started_at.is_none() {
                    r.started_at = Some(at);
                }
                if status.is_terminal() {
                    r.finished_at = Some(at);
                }
                r.status = status;
                if let Some(c) = counts {
                    r.counts = c;
                }
                if error.is_some() {
                    r.error = error;
                }
                self.put(&t.runs, &id, &r)?;
            }
            MetaCommand::HandOverRun { id } => {
                let mut r: Run = self.need(&t.runs, "run", &id)?;
                if !r.status.is_terminal() {
                    r.handed_over = true;
                    self.put(&t.runs, &id, &r)?;
                }
            }
            MetaCommand::ResumeRun { id } => {
                let mut r: Run = self.need(&t.runs, "run", &id)?;
                if r.status.is_terminal() {
                    return Err(MetaError::Conflict(format!("run `{id}` already ended `{}`", r.status)));
                }
                if r.handed_over {
                    r.handed_over = false;
                } else {
                    r.resumptions += 1;
                }
                self.put(&t.runs, &id, &r)?;
            }
            MetaCommand::AppendRunEvent { mut event } => {
                let prefix = format!("{}/", event.run_id);
                let last = match t.run_events.scan_prefix(&prefix).keys().next_back() {
                    Some(k) => {
                        let k = k?;
                        std::str::from_utf8(&k[prefix.len()..]).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
                    }
                    None => 0,
                };
                event.seq = last + 1;
                self.put(&t.run_events, &format!("{prefix}{:010}", event.seq), &event)?;
            }
            MetaCommand::AppendAudit { entry } => self.put(&t.audit, &format!("{}/{}", micros(entry.at), entry.id), &entry)?,
            MetaCommand::PutSetting { key, value } => match legacy_assignment(&key, &value) {
                Some((run_id, assignment)) => self.put(&t.run_assignments, run_id, &assignment)?,
                None => {
                    self.put(&t.settings, &key, &value)?;
                    if key == crate::egress::SETTING {
                        crate::egress::apply(Some(&value));
                    }
                }
            },
            MetaCommand::AssignRun { run_id, assignment } => self.put(&t.run_assignments, &run_id, &assignment)?,
            MetaCommand::PutScheduleState { state } => self.put(&t.schedules, &state.pipeline_id.clone(), &state)?,
            MetaCommand::PutRunInsight { insight } => {
                self.need::<Run>(&t.runs, "run", &insight.run_id)?;
                self.put(&t.run_insights, &insight.run_id.clone(), &insight)?
            }
            MetaCommand::Prune(cut) => {
                self.prune_locked(&cut)?;
            }
        }
        Ok(())
    }

    fn revoke_user_sessions(&self, user_id: &str, at: DateTime<Utc>) -> MetaResult<()> {
        for s in self.all::<Session>(&self.t.sessions)? {
            if s.user_id == user_id && s.revoked_at.is_none() {
                let mut s = s;
                s.revoked_at = Some(at);
                self.put(&self.t.sessions, &s.id.clone(), &s)?;
            }
        }
        Ok(())
    }

    /// Turns `_cluster/run/` settings that hold an assignment into assignments (a store or
    /// snapshot written before [`MetaCommand::AssignRun`]). The caller holds the write lock
    /// or is opening the store.
    pub(crate) fn migrate_legacy_assignments(&self) -> MetaResult<()> {
        for kv in self.t.settings.scan_prefix(LEGACY_ASSIGN_PREFIX) {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let Ok(value) = codec::decode::<Json>(&v) else { continue };
            if let Some((run_id, a)) = legacy_assignment(&key, &value) {
                self.put(&self.t.run_assignments, run_id, &a)?;
                self.t.settings.remove(&k)?;
            }
        }
        Ok(())
    }

    // ---- storage helpers ----

    fn put<T: Serialize>(&self, tree: &sled::Tree, key: &str, value: &T) -> MetaResult<()> {
        tree.insert(key, codec::encode(value))?;
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, tree: &sled::Tree, key: &str) -> MetaResult<Option<T>> {
        match tree.get(key)? {
            Some(b) => codec::decode(&b).map(Some).map_err(MetaError::Decode),
            None => Ok(None),
        }
    }

    fn need<T: DeserializeOwned>(&self, tree: &sled::Tree, kind: &'static str, id: &str) -> MetaResult<T> {
        self.get(tree, id)?.ok_or_else(|| MetaError::NotFound { kind, id: id.to_string() })
    }

    fn all<T: DeserializeOwned>(&self, tree: &sled::Tree) -> MetaResult<Vec<T>> {
        tree.iter().values().map(|v| codec::decode(&v?).map_err(MetaError::Decode)).collect()
    }

    fn by_index<T: DeserializeOwned>(&self, index: &sled::Tree, key: &str, tree: &sled::Tree) -> MetaResult<Option<T>> {
        match index.get(key)? {
            Some(id) => self.get(tree, std::str::from_utf8(&id).map_err(|e| MetaError::Decode(e.to_string()))?),
            None => Ok(None),
        }
    }

    // ---- reads ----

    pub fn user(&self, id: &str) -> MetaResult<Option<User>> {
        self.get(&self.t.users, id)
    }

    /// A user by username or e-mail address (either case).
    pub fn user_by_login(&self, login: &str) -> MetaResult<Option<User>> {
        let l = login.to_lowercase();
        if let Some(u) = self.by_index(&self.t.user_index, &format!("u:{l}"), &self.t.users)? {
            return Ok(Some(u));
        }
        self.by_index(&self.t.user_index, &format!("e:{l}"), &self.t.users)
    }

    pub fn users(&self) -> MetaResult<Vec<User>> {
        self.all(&self.t.users)
    }

    pub fn user_count(&self) -> usize {
        self.t.users.len()
    }

    pub fn session(&self, id: &str) -> MetaResult<Option<Session>> {
        self.get(&self.t.sessions, id)
    }

    pub fn session_by_token_hash(&self, hash: &str) -> MetaResult<Option<Session>> {
        self.by_index(&self.t.session_tokens, hash, &self.t.sessions)
    }

    pub fn api_key(&self, id: &str) -> MetaResult<Option<ApiKey>> {
        self.get(&self.t.api_keys, id)
    }

    pub fn api_key_by_hash(&self, hash: &str) -> MetaResult<Option<ApiKey>> {
        self.by_index(&self.t.api_key_hashes, hash, &self.t.api_keys)
    }

    pub fn api_keys_of(&self, user_id: &str) -> MetaResult<Vec<ApiKey>> {
        Ok(self.all::<ApiKey>(&self.t.api_keys)?.into_iter().filter(|k| k.user_id == user_id).collect())
    }

    pub fn connector(&self, id: &str) -> MetaResult<Option<Connector>> {
        self.get(&self.t.connectors, id)
    }

    pub fn connectors(&self) -> MetaResult<Vec<Connector>> {
        self.all(&self.t.connectors)
    }

    pub fn transformation(&self, id: &str) -> MetaResult<Option<Transformation>> {
        self.get(&self.t.transformations, id)
    }

    pub fn transformations(&self) -> MetaResult<Vec<Transformation>> {
        self.all(&self.t.transformations)
    }

    pub fn pipeline(&self, id: &str) -> MetaResult<Option<Pipeline>> {
        self.get(&self.t.pipelines, id)
    }

    /// Every pipeline's summary (shared: the list is decoded once per change).
    pub fn pipelines(&self) -> MetaResult<Arc<Vec<Pipeline>>> {
        let generation = {
            let c = self.pipelines_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(list) = &c.1 {
                return Ok(list.clone());
            }
            c.0
        };
        let list = Arc::new(self.all::<Pipeline>(&self.t.pipelines)?);
        let mut c = self.pipelines_cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.0 == generation {
            c.1 = Some(list.clone());
        }
        Ok(list)
    }

    pub fn pipeline_count(&self) -> usize {
        self.t.pipelines.len()
    }

    pub fn version(&self, pipeline_id: &str, version: u32) -> MetaResult<Option<PipelineVersion>> {
        self.get(&self.t.versions, &version_key(pipeline_id, version))
    }

    /// Every version of a pipeline, oldest first.
    pub fn versions(&self, pipeline_id: &str) -> MetaResult<Vec<PipelineVersion>> {
        self.t.versions.scan_prefix(format!("{pipeline_id}/")).values().map(|v| codec::decode(&v?).map_err(MetaError::Decode)).collect()
    }

    pub fn run(&self, id: &str) -> MetaResult<Option<Run>> {
        self.get(&self.t.runs, id)
    }

    /// A pipeline's runs, oldest first.
    pub fn runs_of(&self, pipeline_id: &str) -> MetaResult<Vec<Run>> {
        let mut out = Vec::new();
        for k in self.t.run_index.scan_prefix(format!("{pipeline_id}/")).keys() {
            let k = k?;
            let k = std::str::from_utf8(&k).map_err(|e| MetaError::Decode(e.to_string()))?;
            if let Some(run_id) = k.rsplit('/').next()
                && let Some(r) = self.run(run_id)?
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    pub fn schedule_state(&self, pipeline_id: &str) -> MetaResult<Option<ScheduleState>> {
        self.get(&self.t.schedules, pipeline_id)
    }

    pub fn run_insight(&self, run_id: &str) -> MetaResult<Option<RunInsight>> {
        self.get(&self.t.run_insights, run_id)
    }

    /// The newest profile of a run of `pipeline_id` other than `except`.
    pub fn last_profile(&self, pipeline_id: &str, except: &str) -> MetaResult<Option<(String, dagg_actors::profile::Profile)>> {
        for r in self.runs_of(pipeline_id)?.into_iter().rev() {
            if r.id == except {
                continue;
            }
            if let Some(p) = self.run_insight(&r.id)?.and_then(|i| i.profile) {
                return Ok(Some((r.id, p)));
            }
        }
        Ok(None)
    }

    /// Every run, in no particular order.
    pub fn runs(&self) -> MetaResult<Vec<Run>> {
        self.all(&self.t.runs)
    }

    pub fn run_events(&self, run_id: &str) -> MetaResult<Vec<RunEvent>> {
        self.t.run_events.scan_prefix(format!("{run_id}/")).values().map(|v| codec::decode(&v?).map_err(MetaError::Decode)).collect()
    }

    /// The audit log, oldest first.
    pub fn audit(&self) -> MetaResult<Vec<AuditEntry>> {
        self.all(&self.t.audit)
    }

    /// Where a run executes, when the cluster placed it.
    pub fn assignment(&self, run_id: &str) -> MetaResult<Option<Assignment>> {
        self.get(&self.t.run_assignments, run_id)
    }

    /// Every run's assignment, by run id.
    pub fn assignments(&self) -> MetaResult<std::collections::BTreeMap<String, Assignment>> {
        let mut out = std::collections::BTreeMap::new();
        for kv in self.t.run_assignments.iter() {
            let (k, v) = kv?;
            out.insert(String::from_utf8_lossy(&k).into_owned(), codec::decode(&v).map_err(MetaError::Decode)?);
        }
        Ok(out)
    }

    pub fn setting(&self, key: &str) -> MetaResult<Option<Json>> {
        self.get(&self.t.settings, key)
    }

    /// Puts the settings that act on this process into effect as stored (at opening and
    /// after a restored snapshot; a replicated `PutSetting` does it for its key): the
    /// admin's egress policy, on every node.
    pub(crate) fn settings_take_effect(&self) {
        match self.setting(crate::egress::SETTING) {
            Ok(v) => crate::egress::apply(v.as_ref()),
            Err(e) => tracing::error!("cannot read the `{}` setting: {e}", crate::egress::SETTING),
        }
    }

    /// Every setting whose key does not start with `_` (internal ones, such as the JWT
    /// secret, never leave the store through this).
    pub fn public_settings(&self) -> MetaResult<Vec<(String, Json)>> {
        let mut out = Vec::new();
        for kv in self.t.settings.iter() {
            let (k, v) = kv?;
            let k = String::from_utf8_lossy(&k).into_owned();
            if !k.starts_with('_') {
                out.push((k, codec::decode(&v).map_err(MetaError::Decode)?));
            }
        }
        Ok(out)
    }
}

/// A setting written by a build before [`MetaCommand::AssignRun`] that places a run.
fn legacy_assignment<'a>(key: &'a str, value: &Json) -> Option<(&'a str, Assignment)> {
    let run_id = key.strip_prefix(LEGACY_ASSIGN_PREFIX)?;
    serde_json::from_value(value.clone()).ok().map(|a| (run_id, a))
}

fn version_key(pipeline_id: &str, version: u32) -> String {
    format!("{pipeline_id}/{version:010}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagg_model::RunStatus;

    /// Opens a store just closed in this process: sled's background flusher may still hold
    /// the directory's lock for a moment after the last handle is dropped.
    fn reopen(dir: &Path) -> MetaStore {
        let mut tries = 0;
        loop {
            match MetaStore::open(dir) {
                Ok(m) => return m,
                Err(e) if tries < 100 && e.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopening the store: {e}"),
            }
        }
    }

    fn stamp(s: i64) -> Stamp {
        Stamp { at: DateTime::from_timestamp(s, 0).unwrap(), by: "u1".into() }
    }

    fn pipeline(id: &str) -> Pipeline {
        Pipeline {
            id: id.into(),
            name: "p".into(),
            description: None,
            version: 0,
            paused: false,
            source_type: "file".into(),
            destination_types: vec!["file".into()],
            schedule_type: "manual".into(),
            created: stamp(1),
            updated: stamp(1),
        }
    }

    fn run(id: &str) -> Run {
        Run::pending(id.into(), "p1", "p", 1, Trigger::Manual, "u1".into(), stamp(2).at)
    }

    fn commands() -> Vec<MetaCommand> {
        vec![
            MetaCommand::CreatePipeline { pipeline: pipeline("p1"), document: serde_json::json!({"name": "p"}), comment: "created".into() },
            MetaCommand::UpdatePipeline {
                id: "p1".into(),
                summary: PipelineSummary::from(&pipeline("p1")),
                document: serde_json::json!({"name": "p", "description": "x"}),
                stamp: stamp(3),
                comment: "updated".into(),
            },
            MetaCommand::CreateRun { run: run("r1") },
            MetaCommand::UpdateRun { id: "r1".into(), status: RunStatus::Running, at: stamp(4).at, counts: None, error: None },
            MetaCommand::AppendRunEvent {
                event: RunEvent { run_id: "r1".into(), seq: 0, at: stamp(4).at, level: EventLevel::Info, kind: EventKind::Started, message: "".into(), data: Json::Null },
            },
            MetaCommand::AppendRunEvent {
                event: RunEvent { run_id: "r1".into(), seq: 0, at: stamp(5).at, level: EventLevel::Info, kind: EventKind::Finished, message: "".into(), data: Json::Null },
            },
            MetaCommand::UpdateRun { id: "r1".into(), status: RunStatus::Success, at: stamp(5).at, counts: Some(RunCounts { records_read: 3, ..Default::default() }), error: None },
        ]
    }

    #[test]
    fn replaying_the_same_commands_gives_the_same_state() {
        let dumps: Vec<String> = (0..2)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                let m = MetaStore::open(dir.path()).unwrap();
                for c in commands() {
                    // Through the wire format, as a replicated log would carry it.
                    m.apply_encoded(&CommandEnvelope::new(c).encode()).unwrap();
                }
                let p = m.pipeline("p1").unwrap().unwrap();
                assert_eq!(p.version, 2);
                assert_eq!(m.versions("p1").unwrap().len(), 2);
                let events = m.run_events("r1").unwrap();
                assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
                serde_json::to_string(&(m.pipelines().unwrap(), m.versions("p1").unwrap(), m.runs().unwrap(), events)).unwrap()
            })
            .collect();
        assert_eq!(dumps[0], dumps[1]);
    }

    #[test]
    fn illegal_run_transitions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        m.apply(MetaCommand::CreateRun { run: run("r1") }).unwrap();
        let e = m.apply(MetaCommand::UpdateRun { id: "r1".into(), status: RunStatus::Success, at: stamp(3).at, counts: None, error: None }).unwrap_err();
        assert!(matches!(e, MetaError::IllegalTransition { .. }), "{e}");
        assert_eq!(m.run("r1").unwrap().unwrap().status, RunStatus::Pending);
    }

    #[test]
    fn usernames_are_unique_in_any_case() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        let user = |id: &str, name: &str| User {
            id: id.into(),
            username: name.into(),
            email: None,
            full_name: None,
            role: Role::Viewer,
            password_hash: "x".into(),
            disabled: false,
            created_at: stamp(1).at,
            updated_at: stamp(1).at,
        };
        m.apply(MetaCommand::PutUser { user: user("1", "Ann") }).unwrap();
        assert!(matches!(m.apply(MetaCommand::PutUser { user: user("2", "ann") }), Err(MetaError::Conflict(_))));
        assert_eq!(m.user_by_login("ANN").unwrap().unwrap().id, "1");
    }

    /// Commands of encoding version 1 as written by the first release: they must still
    /// decode and apply (a replicated log outlives the build that wrote it).
    #[test]
    fn golden_commands_of_version_1_still_apply() {
        let text = include_str!("../../tests/golden/commands-v1.jsonl");
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        let mut ops = std::collections::BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let env = CommandEnvelope::decode(line.as_bytes()).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
            ops.insert(serde_json::to_value(&env.command).unwrap()["op"].as_str().unwrap().to_string());
            if i == 14 {
                // The state half-way, before the deletes.
                assert_eq!(m.pipeline("p1").unwrap().unwrap().version, 2);
                assert!(m.pipeline("p1").unwrap().unwrap().paused);
                assert_eq!(m.run("r1").unwrap().unwrap().status, RunStatus::Success);
                assert_eq!(m.run("r1").unwrap().unwrap().counts.records_written, 5);
                assert_eq!(m.run_events("r1").unwrap()[0].seq, 1);
                assert_eq!(m.user_by_login("ANN@example.com").unwrap().unwrap().id, "u1");
                assert_eq!(m.setting("theme").unwrap(), Some(Json::String("dark".into())));
            }
            m.apply(env.command).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        }
        // Every kind of command is in the golden file.
        assert_eq!(ops.len(), 20, "{ops:?}");
        assert!(m.pipeline("p1").unwrap().is_none() && m.user("u1").unwrap().is_none());
        assert!(m.session("s1").unwrap().unwrap().revoked_at.is_some());
        assert_eq!(m.runs().unwrap().len(), 1, "runs stay as history");
    }

    #[test]
    fn golden_orchestration_commands_of_version_1_still_apply() {
        let text = include_str!("../../tests/golden/commands-v1-orchestration.jsonl");
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        for (i, line) in text.lines().enumerate() {
            m.apply_encoded(line.as_bytes()).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        }
        let st = m.schedule_state("p1").unwrap().unwrap();
        assert_eq!((st.outcome.as_str(), st.run_id.as_deref()), ("fired", Some("r1")));
        let ins = m.run_insight("r1").unwrap().unwrap();
        assert_eq!(ins.lineage[0].records_written, 2);
        assert_eq!(ins.profile.as_ref().unwrap().fields[0].distinct, 2);
        assert_eq!(m.last_profile("p1", "other").unwrap().unwrap().0, "r1");
        // A pipeline's schedule state goes with it.
        m.apply(MetaCommand::DeletePipeline { id: "p1".into() }).unwrap();
        assert!(m.schedule_state("p1").unwrap().is_none());
    }

    /// Resumptions of a run after its node died (and hand-overs by a node stopping cleanly)
    /// as version 1 writes them, over a run record written before they existed.
    #[test]
    fn golden_resumption_commands_of_version_1_still_apply() {
        let text = include_str!("../../tests/golden/commands-v1-resumptions.jsonl");
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        for (i, line) in text.lines().enumerate() {
            m.apply_encoded(line.as_bytes()).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        }
        let r = m.run("r1").unwrap().unwrap();
        // Two deaths counted; the resumption after the clean stop was not; the last hand-over waits.
        assert_eq!((r.resumptions, r.handed_over, r.status), (2, true, RunStatus::Running));
        // An ended run is not resumed.
        m.apply(MetaCommand::UpdateRun { id: "r1".into(), status: RunStatus::Failed, at: stamp(9).at, counts: None, error: Some("the node died 3 times during this run".into()) }).unwrap();
        assert!(matches!(m.apply(MetaCommand::ResumeRun { id: "r1".into() }), Err(MetaError::Conflict(_))));
        // The encoding of the new commands is locked.
        assert_eq!(CommandEnvelope::new(MetaCommand::ResumeRun { id: "r1".into() }).encode(), text.lines().nth(3).unwrap().as_bytes());
        assert_eq!(CommandEnvelope::new(MetaCommand::HandOverRun { id: "r1".into() }).encode(), text.lines().nth(4).unwrap().as_bytes());
    }

    /// Run assignments: as builds before `assign_run` wrote them (the setting
    /// `_cluster/run/<run id>`), then as the command. Both place the run; the old form
    /// leaves no setting behind.
    #[test]
    fn golden_assignment_commands_of_version_1_still_apply() {
        let text = include_str!("../../tests/golden/commands-v1-assignments.jsonl");
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            m.apply_encoded(line.as_bytes()).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
            if i == 2 {
                // The legacy setting is an assignment now.
                assert_eq!(m.assignment("r1").unwrap(), Some(Assignment { node: 1, at: "2026-12-07T12:00:02Z".parse().unwrap(), attempt: 1 }));
                assert_eq!(m.setting("_cluster/run/r1").unwrap(), None);
            }
        }
        let moved = Assignment { node: 2, at: "2026-12-07T12:00:05Z".parse().unwrap(), attempt: 2 };
        assert_eq!(m.assignment("r1").unwrap(), Some(moved.clone()));
        assert_eq!(m.assignments().unwrap().into_iter().collect::<Vec<_>>(), [("r1".to_string(), moved.clone())]);
        // A setting under the old prefix that is not an assignment stays a setting.
        assert_eq!(m.setting("_cluster/run/not-an-assignment").unwrap(), Some(serde_json::json!({"node": 3})));
        // The encoding of the new command is locked.
        assert_eq!(CommandEnvelope::new(MetaCommand::AssignRun { run_id: "r1".into(), assignment: moved }).encode(), lines[3].as_bytes());
    }

    /// Pruning as version 1 writes it, over a store with old and recent records of every
    /// kind: ended sessions (expired or revoked), old audit entries, the logs of runs that
    /// ended before the log cut-off and old ended runs with everything under their id go;
    /// recent ones stay, and so does a run still running, however old.
    #[test]
    fn golden_prune_commands_of_version_1_still_apply() {
        let text = include_str!("../../tests/golden/commands-v1-prune.jsonl");
        let lines: Vec<&str> = text.lines().collect();
        let first = lines.iter().position(|l| l.contains(r#""op":"prune""#)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        for (i, line) in lines[..first].iter().enumerate() {
            m.apply_encoded(line.as_bytes()).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        }
        let MetaCommand::Prune(cut) = CommandEnvelope::decode(lines[first].as_bytes()).unwrap().command else { panic!("line {} is a prune", first + 1) };
        // Two sessions, one audit entry, the logs of `r-old` (2) and `r-mid` (1) and the
        // entry of a run never on record, the run `r-old`.
        let counts = PruneCounts { sessions: 2, audit: 1, run_events: 4, runs: 1 };
        assert_eq!(m.prunable(&cut).unwrap(), counts);
        assert_eq!(m.run_events("r-old").unwrap().len(), 2, "counting removes nothing");
        m.apply_encoded(lines[first].as_bytes()).unwrap();

        assert!(m.session("s-expired").unwrap().is_none() && m.session("s-revoked").unwrap().is_none());
        assert!(m.session_by_token_hash("aa01").unwrap().is_none() && m.session_by_token_hash("aa02").unwrap().is_none());
        assert_eq!(m.session_by_token_hash("aa03").unwrap().unwrap().id, "s-live");
        assert_eq!(m.audit().unwrap().iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["a-new"]);
        assert!(m.run("r-old").unwrap().is_none());
        assert!(m.run_events("r-old").unwrap().is_empty());
        assert!(m.run_insight("r-old").unwrap().is_none() && m.assignment("r-old").unwrap().is_none());
        assert_eq!(m.runs_of("p1").unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["r-running", "r-mid", "r-new"]);
        assert_eq!(m.run("r-mid").unwrap().unwrap().status, RunStatus::Failed);
        assert!(m.run_events("r-mid").unwrap().is_empty());
        let running = m.run("r-running").unwrap().unwrap();
        assert_eq!(running.status, RunStatus::Running);
        assert_eq!(m.run_events("r-running").unwrap().len(), 1);
        assert_eq!(m.assignment("r-running").unwrap().unwrap().node, 2);
        assert_eq!(m.run_events("r-new").unwrap().len(), 1);
        assert!(m.run_events("r-gone").unwrap().is_empty());
        assert!(m.prunable(&cut).unwrap().is_empty());

        // Cut-offs that are null or left out keep everything.
        for (i, line) in lines[first + 1..].iter().enumerate() {
            let MetaCommand::Prune(none) = CommandEnvelope::decode(line.as_bytes()).unwrap().command else { panic!("line {} is a prune", first + i + 2) };
            assert_eq!(none, PruneCutoffs::default());
            m.apply_encoded(line.as_bytes()).unwrap();
        }
        assert_eq!((m.audit().unwrap().len(), m.runs().unwrap().len(), m.run_events("r-new").unwrap().len()), (1, 3, 1));
        assert!(m.session("s-live").unwrap().is_some());
        // The encoding of the new command is locked.
        assert_eq!(CommandEnvelope::new(MetaCommand::Prune(cut)).encode(), lines[first].as_bytes());
        assert_eq!(CommandEnvelope::new(MetaCommand::Prune(PruneCutoffs::default())).encode(), lines[first + 1].as_bytes());
    }

    /// A store (or a snapshot) written by a build before `assign_run` holds assignments as
    /// settings: opening or restoring it turns them into assignments.
    #[test]
    fn legacy_assignment_settings_convert_on_open_and_on_restore() {
        let a = Assignment { node: 4, at: stamp(6).at, attempt: 3 };
        let dir = tempfile::tempdir().unwrap();
        {
            let m = MetaStore::open(dir.path()).unwrap();
            // What the old build left in the settings tree.
            m.put(&m.t.settings, "_cluster/run/r9", &serde_json::to_value(&a).unwrap()).unwrap();
            m.flush().unwrap();
        }
        let m = reopen(dir.path());
        assert_eq!(m.assignment("r9").unwrap(), Some(a.clone()));
        assert_eq!(m.setting("_cluster/run/r9").unwrap(), None);
        // A snapshot of the old build: the settings tree holds the assignment.
        let old_dump = serde_json::json!({"v": 1, "trees": {"settings": [["_cluster/run/r7", String::from_utf8(codec::encode(&serde_json::to_value(&a).unwrap())).unwrap()]]}});
        m.restore_legacy(&old_dump).unwrap();
        assert_eq!(m.assignments().unwrap().into_iter().collect::<Vec<_>>(), [("r7".to_string(), a)]);
        assert_eq!(m.setting("_cluster/run/r7").unwrap(), None);
    }

    #[test]
    fn stored_values_are_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        m.apply(MetaCommand::CreatePipeline { pipeline: pipeline("p1"), document: Json::Null, comment: "c".into() }).unwrap();
        let raw = m.t.pipelines.get("p1").unwrap().unwrap();
        let v: Json = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["data"]["id"], "p1");
    }
}
