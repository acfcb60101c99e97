//! dagg's control plane: the metadata store and its commands ([`meta`]), replicated through
//! Raft in a cluster ([`cluster`]); the runner that starts runs and records them
//! ([`runner`]); what starts runs without a person — cron schedules and dependencies
//! ([`scheduler`]) and events ([`triggers`]); notifications ([`notify`]); lineage and
//! profiles ([`lineage`]); where runs execute in a cluster ([`cluster::placement`]); and how
//! long metadata is kept ([`retention`]).
//!
//! [`ControlPlane`] is the one handle: the API holds it and calls it; nothing here knows
//! about HTTP. Every run starts through [`ControlPlane::start_run`]: load the version,
//! validate its document with the node's rules ([`validate`]), record the run with its
//! [`Trigger`], and start it here or leave it for the cluster's leader to place.
//!
//! Module order (no circle): `egress` (the admin's egress setting, applied by the store) →
//! `meta` → `cluster` → `cluster::placement` → `validate`,
//! `lineage` → `runner` → `scheduler`, `triggers`, `notify`, `retention`; this file wires them (the
//! runner reports finished runs through [`AfterRun`], set here to the scheduler's
//! dependency triggers and the notifications).

pub mod cluster;
pub mod data;
pub mod egress;
pub mod lineage;
pub mod mask;
pub mod meta;
pub mod notify;
pub mod retention;
pub mod runner;
pub mod scheduler;
pub mod triggers;
pub mod validate;

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use prometheus::{IntGauge, register_int_gauge};
use serde::Serialize;
use utoipa::ToSchema;

pub use dagg_connectors::secrets;
pub use meta::{EventKind, EventLevel, Trigger};

use crate::meta::{MetaError, Run};
use crate::secrets::MasterKey;

/// Runs started on this node that have not ended (in the process-wide registry).
pub static ACTIVE_RUNS: LazyLock<IntGauge> =
    LazyLock::new(|| register_int_gauge!("dagg_api_active_runs", "Runs started through the API that have not ended").expect("metric registers once"));

/// What the control plane needs of the node's configuration.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Metadata under `meta/`, API-created pipelines' files under `files/`, run state under
    /// `runtime/`.
    pub data_dir: PathBuf,
    /// A directory every node of a cluster can read and write: run state and checkpoints
    /// go under `<shared-dir>/runtime/`. None: `<data-dir>/runtime/`.
    pub shared_dir: Option<PathBuf>,
    /// File connector paths of API-created pipelines must stay inside `<data-dir>/files`.
    pub restrict_file_paths: bool,
    /// Time between progress events of a running run.
    pub progress_interval: Duration,
}

impl ControlConfig {
    /// Where runs keep their state and checkpoints (one folder per pipeline below).
    pub fn runtime_dir(&self) -> PathBuf {
        self.shared_dir.as_ref().unwrap_or(&self.data_dir).join("runtime")
    }

    /// Where relative paths of API-created pipelines resolve.
    pub fn files_dir(&self) -> PathBuf {
        self.data_dir.join("files")
    }

    /// The rules documents are validated with.
    pub fn rules(&self) -> validate::Rules {
        validate::Rules { restrict_file_paths: self.restrict_file_paths }
    }
}

/// One problem with a field of a document or request.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Where: `transformations[2].condition.operator`; empty for the body as a whole.
    pub path: String,
    pub message: String,
}

/// Why the control plane refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A document does not validate; `details` name the fields.
    #[error("{message}")]
    Invalid { message: String, details: Vec<ErrorDetail> },
    #[error("{0}")]
    NotFound(String),
    /// The operation conflicts with the current state (a run already active, a run ended).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl ControlError {
    /// A document's validation errors.
    pub fn invalid(details: Vec<ErrorDetail>) -> ControlError {
        let n = details.len();
        ControlError::Invalid { message: format!("the pipeline document has {n} error{}", if n == 1 { "" } else { "s" }), details }
    }
}

pub type ControlResult<T> = Result<T, ControlError>;

/// What follows a run's end (its pipeline's dependents, its notifications); the runner
/// calls it, [`ControlPlane::new`] sets it.
pub type AfterRun = Arc<dyn for<'a> Fn(&'a ControlPlane, &'a Run, &'a dagg_model::spec::pipeline::Notifications) -> BoxFuture<'a, ()> + Send + Sync>;

/// Everything the control plane shares.
pub struct ControlInner {
    pub config: ControlConfig,
    /// Seals secrets before they are stored.
    pub master_key: Option<MasterKey>,
    /// Reads are local; `apply` goes through Raft in a cluster.
    pub meta: cluster::Meta,
    /// The runs active on this node and the live event feed.
    pub runs: runner::RunManager,
    /// The scheduler's clock and leader check (the cluster sets the latter).
    pub scheduler: scheduler::SchedulerHooks,
    after_run: AfterRun,
}

/// The control plane. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane(Arc<ControlInner>);

impl Deref for ControlPlane {
    type Target = ControlInner;
    fn deref(&self) -> &ControlInner {
        &self.0
    }
}

impl ControlPlane {
    pub fn new(config: ControlConfig, master_key: Option<MasterKey>, meta: cluster::Meta) -> ControlPlane {
        let after_run: AfterRun = Arc::new(after_run);
        ControlPlane(Arc::new(ControlInner {
            config,
            master_key,
            meta,
            runs: runner::RunManager::new(),
            scheduler: scheduler::SchedulerHooks::default(),
            after_run,
        }))
    }

    /// Seals the clear secrets of a `connector_type` config about to be stored (already
    /// sealed ones stay as they are), when there is a master key. Which fields are secret
    /// is the types' list (`secret_paths`).
    pub fn seal_config(&self, connector_type: &str, config: &mut serde_json::Value) {
        if let Some(k) = &self.master_key {
            k.seal_config(connector_type, config);
        }
    }

    /// Seals the clear secrets of every connector in a pipeline document about to be
    /// stored, when there is a master key.
    pub fn seal_document(&self, doc: &mut serde_json::Value) {
        if let Some(k) = &self.master_key {
            k.seal_document(doc);
        }
    }

    /// Validates a pipeline document with this node's rules.
    pub fn validate(&self, doc: &serde_json::Value) -> Result<dagg_model::spec::pipeline::PipelineSpec, Vec<ErrorDetail>> {
        validate::validate(&self.config.rules(), doc)
    }

    /// Seals the secrets of settings stored in the clear (by an earlier build, or before a
    /// master key was configured).
    pub fn seal_settings(&self) -> Result<(), MetaError> {
        let Some(key) = &self.master_key else { return Ok(()) };
        for (k, mut v) in self.meta.public_settings()? {
            if secrets::has_clear_secret(&v, &mask::is_secret_key) {
                key.encrypt_where(&mut v, &mask::is_secret_key);
                self.meta.apply(meta::MetaCommand::PutSetting { key: k, value: v })?;
            }
        }
        Ok(())
    }

    /// Seals the secrets of saved connectors stored in the clear (by a build that did not
    /// know a field was secret, or before a master key was configured). Pipeline versions
    /// are history and stay as written; a pipeline's next save seals its new version.
    pub fn seal_connectors(&self) -> Result<usize, MetaError> {
        if self.master_key.is_none() {
            return Ok(0);
        }
        let mut sealed = 0;
        for mut c in self.meta.connectors()? {
            if secrets::has_clear_config_secret(&c.connector_type, &c.config) {
                let ct = c.connector_type.clone();
                self.seal_config(&ct, &mut c.config);
                self.meta.apply(meta::MetaCommand::PutConnector { connector: c })?;
                sealed += 1;
            }
        }
        Ok(sealed)
    }

    pub(crate) async fn after_run(&self, run: &Run, notifications: &dagg_model::spec::pipeline::Notifications) {
        let hook = self.after_run.clone();
        hook(self, run, notifications).await;
    }

    /// Starts the loops that act without a person: cron schedules (ticking every second),
    /// event listeners (synced every 2 s) and pruning by the retention setting (a minute
    /// after start, then hourly). They act only where the leader check says so. Dropping the
    /// handle stops them.
    pub fn spawn_triggers(&self) -> Background {
        let ticker = tokio::spawn(scheduler::Scheduler::new(self.clone()).run(Duration::from_secs(1)));
        let triggers = tokio::spawn(triggers::Triggers::new(self.clone()).run(Duration::from_secs(2)));
        let pruner = tokio::spawn(retention::run(self.clone(), Duration::from_secs(60), Duration::from_secs(3600)));
        Background(vec![ticker, triggers, pruner])
    }

    /// In a cluster: the leader's placement loop and the loop that starts the runs placed
    /// on this node (nothing without a cluster). Dropping the handle stops them.
    pub fn spawn_placement(&self) -> Background {
        let placer = tokio::spawn(cluster::placement::run_placement(self.clone()));
        let runner = tokio::spawn(runner::run_assigned_here(self.clone()));
        Background(vec![placer, runner])
    }

    /// The node stops. In a cluster of several nodes its runs are not cancelled: they stay
    /// placed here and resume from their last checkpoint when it is back, or on another node
    /// if it stays away (a rolling restart loses nothing). Alone, its runs are cancelled.
    pub fn stop(&self) {
        if self.meta.node().is_none_or(|n| n.members().len() <= 1) {
            self.runs.cancel_all();
        } else {
            runner::hand_over_all(self);
        }
        let _ = self.meta.flush();
    }
}

/// What follows a run: the pipelines that depend on it, then its notifications (which may
/// take seconds when a receiver is slow; nothing waits on them).
fn after_run<'a>(cp: &'a ControlPlane, run: &'a Run, notifications: &'a dagg_model::spec::pipeline::Notifications) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        scheduler::on_run_finished(cp, run);
        notify::run_finished(cp, run, notifications).await;
    })
}

/// Background tasks of the control plane; aborted when dropped.
pub struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The master key: `configured` (base64 or hex), else `DAGG_MASTER_KEY` /
/// `DAGG_MASTER_KEY_FILE`, else (when `generate`) `<data-dir>/master.key`, generated on the
/// first start. Installed as the key this process's connectors reveal with.
pub fn open_master_key(configured: Option<&str>, generate: bool, data_dir: &std::path::Path) -> Result<Option<MasterKey>, String> {
    use secrets::{KEY_ENV, KEY_FILE_ENV, SecretError};
    let setup = |e: SecretError| e.to_string();
    let key = match configured {
        Some(text) => Some(MasterKey::from_text(text).map_err(setup)?),
        None => match MasterKey::from_env() {
            Ok(k) => Some(k),
            Err(SecretError::NoKey) if generate => {
                let path = data_dir.join(MASTER_KEY_FILE);
                let (k, generated) = MasterKey::load_or_generate(&path).map_err(setup)?;
                let what = if generated { "generated a master key into" } else { "using the master key generated into" };
                tracing::warn!(
                    "{what} {} (it seals the stored secrets). For production, supply the key from elsewhere — \
                     {KEY_ENV} or {KEY_FILE_ENV} from a secret store — so that it does not sit beside the data it protects",
                    path.display()
                );
                Some(k)
            }
            Err(SecretError::NoKey) => {
                tracing::warn!("no master key ({KEY_ENV} / {KEY_FILE_ENV}): connector, token and settings secrets are stored unencrypted; give every node of the cluster the same key");
                None
            }
            Err(e) => return Err(setup(e)),
        },
    };
    if let Some(k) = &key {
        secrets::install_process_key(k.clone());
    }
    Ok(key)
}

/// Where a node without a configured master key keeps the one it generated.
pub const MASTER_KEY_FILE: &str = "master.key";
