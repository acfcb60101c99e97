//! `dagg serve`: the admin API (and, later, the UI) on one address, with metadata, files and
//! run state under the data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use dagg_api::{ApiConfig, AppState};

/// Options of `dagg serve`; each also comes from the environment variable named.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address the API listens on.
    #[arg(long, env = "DAGG_API_ADDR", default_value = "127.0.0.1:8001")]
    pub api_addr: SocketAddr,
    /// Where metadata (`meta/`), uploaded files (`files/`, where relative paths of API-made
    /// pipelines resolve) and run state (`runtime/`) live. Default: `$DAGG_HOME`, else `./.dagg`.
    #[arg(long, env = "DAGG_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Origins allowed to call the API from a browser (comma-separated; `*` for any). None:
    /// same origin only.
    #[arg(long, env = "DAGG_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Largest request body, bytes.
    #[arg(long, env = "DAGG_BODY_LIMIT", default_value_t = 2 * 1024 * 1024)]
    pub body_limit: usize,
    /// Lifetime of access tokens, seconds.
    #[arg(long, env = "DAGG_ACCESS_TOKEN_TTL", default_value_t = 900, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub access_token_ttl: u64,
    /// Lifetime of refresh tokens, seconds.
    #[arg(long, env = "DAGG_REFRESH_TOKEN_TTL", default_value_t = 30 * 86_400, value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub refresh_token_ttl: u64,
    /// Failed logins per username and client address (within 15 minutes) before 429.
    #[arg(long, env = "DAGG_LOGIN_MAX_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub login_max_failures: u64,
    /// Let API-made pipelines read and write files anywhere the server can (by default their
    /// file paths must stay inside `<data-dir>/files`).
    #[arg(long, env = "DAGG_ALLOW_ANY_FILE_PATH")]
    pub allow_any_file_path: bool,
}

impl ServeArgs {
    fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().or_else(|| std::env::var_os("DAGG_HOME").filter(|v| !v.is_empty()).map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(".dagg"))
    }

    /// The API's configuration. Secrets come from the environment only, never the command
    /// line (where `ps` would show them): `DAGG_ADMIN_PASSWORD`, `DAGG_JWT_SECRET`.
    pub fn config(&self) -> ApiConfig {
        let mut c = ApiConfig::new(self.data_dir());
        c.cors_origins = self.cors_origins.iter().map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect();
        c.body_limit = self.body_limit;
        c.access_ttl = Duration::from_secs(self.access_token_ttl);
        c.refresh_ttl = Duration::from_secs(self.refresh_token_ttl);
        c.login_max_failures = self.login_max_failures as usize;
        c.restrict_file_paths = !self.allow_any_file_path;
        c.admin_password = std::env::var("DAGG_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty());
        c.jwt_secret = std::env::var("DAGG_JWT_SECRET").ok().filter(|p| !p.is_empty());
        c
    }
}

/// Runs the API until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> ExitCode {
    let config = args.config();
    let data_dir = config.data_dir.clone();
    let (state, boot) = match tokio::task::spawn_blocking(move || AppState::open(config)).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            eprintln!("error: cannot open the data directory {}: {e}", data_dir.display());
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(pw) = &boot.generated_admin_password {
        eprintln!("created user `admin` with the generated password: {pw}");
        eprintln!("(shown once; set DAGG_ADMIN_PASSWORD before the first start to choose it)");
    } else if boot.created_admin {
        eprintln!("created user `admin` with the password from DAGG_ADMIN_PASSWORD");
    }
    let listener = match tokio::net::TcpListener::bind(args.api_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.api_addr);
            return ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| args.api_addr.to_string());
    eprintln!("dagg API listening on http://{addr} (docs at http://{addr}/docs, data in {})", data_dir.display());
    match dagg_api::serve(listener, state, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the server stopped: {e}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("stopping: cancelling active runs");
}
