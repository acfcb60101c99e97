//! dagg's admin API (guide section 7): users, pipelines with versions and runs, connectors,
//! transformations, monitoring and analytics from the stored run history, `/health`,
//! `/metrics`, `/openapi.json` with Swagger UI, and `/ws` for live run events.
//!
//! Layout: each resource module in [`routes`] exports `routes() -> OpenApiRouter<AppState>`;
//! [`app`] composes them, adds the documentation and the layers (security headers, CORS,
//! body limit, request metrics), and is the one place a new surface (the UI under `/ui/`)
//! is added.
//!
//! The control plane — the metadata store and its commands, runs, schedules, triggers,
//! placement — is [`dagg_control`]: handlers call it through `state.control` (which
//! `AppState` also derefs to: `state.meta`, `state.runs`); nothing here starts a run or
//! changes the metadata but through it.

pub mod auth;
pub mod error;
pub mod list;
pub mod openapi;
pub mod routes;
pub mod telemetry;
pub mod ui;
mod private;

/// The control plane's modules under their old paths (`dagg_api::meta::MetaCommand`, …).
pub use dagg_control::{cluster, egress, lineage, mask, meta, notify, runner, scheduler, triggers};
pub use dagg_control::{ControlConfig, ControlPlane};

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use chrono::Utc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use dagg_control::secrets::MasterKey;

use crate::auth::{JwtKeys, LoginLimiter, LoginLimits, PasswordChecks, TrustedProxies};
use crate::meta::{MetaCommand, MetaStore, Role, User};

/// How the API runs. [`ApiConfig::new`] gives the defaults `dagg serve` documents.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Metadata under `meta/`, API-created pipelines' files under `files/`, run state under
    /// `runtime/`.
    pub data_dir: PathBuf,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers (same origin only).
    pub cors_origins: Vec<String>,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Lifetime of access tokens.
    pub access_ttl: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_ttl: Duration,
    /// Signs access tokens; generated on first start and kept in the store when absent.
    pub jwt_secret: Option<String>,
    /// The first admin's password; generated (and printed once) when absent.
    pub admin_password: Option<String>,
    /// Failed logins of one account (within `login_window`) before it is locked (429 with
    /// `Retry-After` until the lockout ends, whatever the password).
    pub login_max_failures: usize,
    /// Failed logins from one client address, whatever the accounts (within
    /// `login_window`), before that address is refused.
    pub login_max_failures_per_address: usize,
    /// How long a failed login counts.
    pub login_window: Duration,
    /// An account's first lockout; each further one lasts twice the one before (until a
    /// success, or a quiet `login_window`), up to `login_max_lockout`.
    pub login_lockout: Duration,
    pub login_max_lockout: Duration,
    /// Password checks (Argon2) that may run at once; default: the CPU count.
    pub password_checks: usize,
    /// How long a login waits for a password check to start before the answer is 503.
    pub password_check_wait: Duration,
    /// Proxies whose `X-Forwarded-For` names the client; none by default (the client is
    /// the socket's peer, and the header is ignored).
    pub trusted_proxies: TrustedProxies,
    /// File connector paths of API-created pipelines must stay inside `<data-dir>/files`.
    pub restrict_file_paths: bool,
    /// Seconds between progress events of a running run on `/ws`.
    pub progress_interval: Duration,
    /// The master key (32 bytes, base64 or hex) that seals the secrets in stored connector
    /// configs and pipeline documents, the token-signing secret and the secrets in settings
    /// (notifications); absent: `DAGG_MASTER_KEY` / `DAGG_MASTER_KEY_FILE` (the connectors
    /// decrypt with the same key when they open).
    pub master_key: Option<String>,
    /// Without a configured master key: generate one into `<data-dir>/master.key` (mode
    /// 0600) and use it, as the one-command start does. Off for the members of a cluster,
    /// which need one key for all (a key of each node's own could not open what another
    /// sealed): their secrets then stay in the clear, with a warning at every start.
    pub generate_master_key: bool,
    /// A directory every node of a cluster can read and write (a shared volume): run state
    /// and checkpoints go under `<shared-dir>/runtime/` so that a run moved to another node
    /// resumes from its last checkpoint. None: `<data-dir>/runtime/`.
    pub shared_dir: Option<PathBuf>,
}

impl ApiConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> ApiConfig {
        ApiConfig {
            data_dir: data_dir.into(),
            cors_origins: Vec::new(),
            body_limit: 2 * 1024 * 1024,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            jwt_secret: None,
            admin_password: None,
            login_max_failures: 5,
            login_max_failures_per_address: 20,
            login_window: Duration::from_secs(15 * 60),
            login_lockout: Duration::from_secs(60),
            login_max_lockout: Duration::from_secs(3600),
            password_checks: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            password_check_wait: Duration::from_secs(2),
            trusted_proxies: TrustedProxies::default(),
            restrict_file_paths: true,
            progress_interval: Duration::from_secs(1),
            master_key: None,
            generate_master_key: true,
            shared_dir: None,
        }
    }

    /// Where runs keep their state and checkpoints (one folder per pipeline below).
    pub fn runtime_dir(&self) -> PathBuf {
        self.shared_dir.as_ref().unwrap_or(&self.data_dir).join("runtime")
    }

    /// Where relative paths of API-created pipelines resolve.
    pub fn files_dir(&self) -> PathBuf {
        self.data_dir.join("files")
    }

    /// What the control plane takes of it.
    pub fn control(&self) -> ControlConfig {
        ControlConfig {
            data_dir: self.data_dir.clone(),
            shared_dir: self.shared_dir.clone(),
            restrict_file_paths: self.restrict_file_paths,
            progress_interval: self.progress_interval,
        }
    }
}

/// Everything handlers share. Derefs to the control plane (`state.meta`, `state.runs`,
/// `state.scheduler`, `state.master_key`).
pub struct Inner {
    pub config: ApiConfig,
    pub control: ControlPlane,
    pub jwt: JwtKeys,
    pub limiter: LoginLimiter,
    /// Bounds the password checks running at once.
    pub password_checks: PasswordChecks,
    pub started: Instant,
}

impl Deref for Inner {
    type Target = ControlPlane;
    fn deref(&self) -> &ControlPlane {
        &self.control
    }
}

/// Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// What [`AppState::open`] did on a first start.
#[derive(Debug, Default)]
pub struct Bootstrap {
    /// The generated admin password, to be shown once.
    pub generated_admin_password: Option<String>,
    /// Whether the `admin` user was created now.
    pub created_admin: bool,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Meta(#[from] meta::MetaError),
    #[error("{0}")]
    Setup(String),
}

const JWT_SECRET_KEY: &str = "_jwt_secret";
/// Where a node without a configured master key keeps the one it generated.
pub const MASTER_KEY_FILE: &str = dagg_control::MASTER_KEY_FILE;

/// The token-signing secret kept in the store (sealed with the master key when there is
/// one): read, or generated and stored on a first start. One stored in the clear by an
/// earlier build is sealed now.
fn jwt_secret(meta: &cluster::Meta, key: Option<&MasterKey>) -> Result<String, StartError> {
    let stored = meta.setting(JWT_SECRET_KEY)?.and_then(|v| v.as_str().map(str::to_string));
    let clear = match stored {
        Some(s) if dagg_control::secrets::is_encrypted(&s) => {
            let k = key.ok_or_else(|| StartError::Setup("the stored token secret is sealed with a master key this node does not have: give every node of the cluster the same key (DAGG_MASTER_KEY or DAGG_MASTER_KEY_FILE; a node first started alone generated its own into <data-dir>/master.key)".into()))?;
            return k.decrypt(&s).map_err(|e| StartError::Setup(format!("the stored token secret: {e}")));
        }
        Some(s) => s,
        None => auth::random_token(""),
    };
    let value = key.map(|k| k.encrypt(&clear)).unwrap_or_else(|| clear.clone());
    if key.is_some() || meta.setting(JWT_SECRET_KEY)?.is_none() {
        meta.apply(MetaCommand::PutSetting { key: JWT_SECRET_KEY.into(), value: serde_json::Value::String(value) })?;
    }
    Ok(clear)
}

impl AppState {
    /// Opens the store, creates the first admin and the JWT secret when missing, and marks
    /// runs left unfinished by a previous process as ended.
    pub fn open(config: ApiConfig) -> Result<(AppState, Bootstrap), StartError> {
        Self::create_dirs(&config)?;
        let meta = cluster::Meta::local(MetaStore::open(&config.data_dir.join("meta"))?);
        Self::open_with(config, meta)
    }

    /// The folders under the data directory (and the shared one). The data directory holds
    /// the metadata, the Raft log and keys: it is made private — created 0700 (an existing
    /// one is set so), its files 0600 and folders 0700 — and from here on this process
    /// creates files and folders for its user alone (umask 077), whatever library creates
    /// them (sled's files included).
    pub fn create_dirs(config: &ApiConfig) -> Result<(), StartError> {
        private::restrict_new_files();
        let dir_err = |d: &std::path::Path| {
            let path = d.to_path_buf();
            move |source| StartError::Dir { path, source }
        };
        for d in [config.data_dir.clone(), config.files_dir(), config.runtime_dir()] {
            private::create_dir(&d).map_err(dir_err(&d))?;
        }
        private::make_private(&config.data_dir, &config.files_dir()).map_err(dir_err(&config.data_dir))?;
        Ok(())
    }

    /// [`AppState::open`] on a store already opened (in a cluster: replicated, with this
    /// node caught up). In a cluster, runs left unfinished are not ended here: the leader
    /// places them again (see [`cluster::placement`]).
    pub fn open_with(config: ApiConfig, meta: cluster::Meta) -> Result<(AppState, Bootstrap), StartError> {
        let mut boot = Bootstrap::default();
        let master_key = dagg_control::open_master_key(config.master_key.as_deref(), config.generate_master_key, &config.data_dir).map_err(StartError::Setup)?;
        let control = ControlPlane::new(config.control(), master_key, meta);
        let meta = &control.meta;
        let secret = match &config.jwt_secret {
            Some(s) if !s.is_empty() => s.clone(),
            _ => jwt_secret(meta, control.master_key.as_ref())?,
        };
        control.seal_settings()?;
        let sealed = control.seal_connectors()?;
        if sealed > 0 {
            tracing::info!(connectors = sealed, "sealed the clear secrets of saved connectors");
        }
        if meta.user_count() == 0 {
            let (password, generated) = match &config.admin_password {
                Some(p) if !p.is_empty() => (p.clone(), false),
                _ => (auth::random_token("")[..24].to_string(), true),
            };
            let now = Utc::now();
            let user = User {
                id: uuid::Uuid::new_v4().to_string(),
                username: "admin".into(),
                email: None,
                full_name: Some("Administrator".into()),
                role: Role::Admin,
                password_hash: auth::hash_password(&password).map_err(|e| StartError::Setup(e.to_string()))?,
                disabled: false,
                created_at: now,
                updated_at: now,
            };
            meta.apply(MetaCommand::PutUser { user })?;
            boot.created_admin = true;
            if generated {
                boot.generated_admin_password = Some(password);
            }
        }
        let jwt = JwtKeys::new(secret.as_bytes(), config.access_ttl);
        let limiter = LoginLimiter::new(LoginLimits {
            per_account: config.login_max_failures,
            per_address: config.login_max_failures_per_address,
            window: config.login_window,
            lockout: config.login_lockout,
            max_lockout: config.login_max_lockout,
        });
        let password_checks = PasswordChecks::new(config.password_checks, config.password_check_wait);
        let state = AppState(Arc::new(Inner { config, control, jwt, limiter, password_checks, started: Instant::now() }));
        if state.meta.node().is_none() {
            runner::end_orphaned_runs(&state.control)?;
        }
        state.meta.flush()?;
        Ok((state, boot))
    }
}

/// The whole API: every resource's routes, the documentation, and the layers.
pub fn app(state: AppState) -> Router {
    let (api, doc) = routes::all().merge(routes::cluster::routes()).split_for_parts();
    let doc = openapi::finish(doc);
    let api = api.route_layer(axum::middleware::from_fn(telemetry::track));
    let cors = cors_layer(&state.config.cors_origins);
    let body_limit = state.config.body_limit;
    let router = api
        .merge(routes::system::docs(doc))
        .merge(routes::ws::routes())
        .merge(ui::routes())
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(telemetry::panic_response))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            // Swagger UI (vendored, same origin) needs inline styles; nothing loads from elsewhere.
            HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
        ));
    match cors {
        Some(c) => router.layer(c),
        None => router,
    }
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("x-api-key")])
            .max_age(Duration::from_secs(600)),
    )
}

/// Serves `app(state)` on `listener` (a `TcpListener`, or a TLS one for HTTPS) until
/// `shutdown` resolves.
pub async fn serve<L>(listener: L, state: AppState, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    let app = app(state.clone());
    // Cron schedules and event triggers fire from here (only where the leader check says so).
    let triggers = state.control.spawn_triggers();
    // `tap_io` (a no-op) lets any listener with socket addresses give `ConnectInfo`.
    let listener = axum::serve::ListenerExt::tap_io(listener, |_: &mut L::Io| {});
    let r = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).with_graceful_shutdown(shutdown).await;
    drop(triggers);
    state.control.stop();
    r
}
