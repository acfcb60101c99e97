//! The `dagg` binary: parses the command line and wires the crates together.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cert_cmd;
mod connector_cmd;
mod serve;

/// Records are allocated on the reading thread and freed on the writing one; glibc's malloc
/// serializes that on an arena lock, mimalloc does not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use dagg_actors::{RunOptions, preview::preview_pipeline, run_pipeline};
use dagg_model::RunStatus;
use dagg_model::spec::pipeline::{LoadError, PipelineSpec, load_file};

/// dagg — a data aggregator: pulls records from sources, transforms them, delivers them.
#[derive(Parser)]
#[command(name = "dagg", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a pipeline on this machine and prints a summary: a bounded one to its end, one
    /// reading a message stream (`nats` …) until SIGINT or SIGTERM, which stop it gracefully.
    ///
    /// Exits 0 when the run ends `success` or `warning`, 1 when it ends `failed`, 2 when the
    /// document is invalid.
    Run {
        /// The pipeline document (JSON or YAML).
        file: PathBuf,
        /// Print the summary as JSON instead of one line.
        #[arg(long)]
        json: bool,
        /// Records per batch.
        #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        batch_size: u32,
        /// Where checkpoints are kept, so an interrupted run resumes where it was.
        #[arg(long, env = "DAGG_HOME", default_value = ".dagg")]
        data_dir: PathBuf,
        /// Start over, forgetting an interrupted run's checkpoint (an incremental source
        /// still starts from the last finished run's high-water mark).
        #[arg(long)]
        fresh: bool,
        /// Like --fresh, and also forget the high-water mark of an incremental source: read
        /// everything again.
        #[arg(long)]
        full_refresh: bool,
    },
    /// Checks a pipeline document and prints every problem with its path.
    ///
    /// Exits 0 when valid, 2 when not.
    Validate {
        file: PathBuf,
        /// Print the result as JSON (`{"valid": bool, "errors": [{"path", "message"}]}`).
        #[arg(long)]
        json: bool,
    },
    /// Prints the first output records of a pipeline as JSON, writing nothing anywhere.
    Preview {
        file: PathBuf,
        /// How many records to show.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Serves the admin API (guide section 7) until Ctrl-C or SIGTERM.
    Serve(Box<serve::ServeArgs>),
    /// Works with a pipeline's connectors (`dagg connector test FILE`).
    Connector(connector_cmd::ConnectorArgs),
    /// Makes the certificates of a cluster's peer TLS: `dagg cert ca`, `dagg cert node`.
    Cert(cert_cmd::CertArgs),
}

fn main() -> ExitCode {
    init_tracing();
    // One TLS provider for the process (aws-lc-rs): with two compiled in, rustls would not
    // know which to take.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async {
        match cli.command {
            Command::Run { file, json, batch_size, data_dir, fresh, full_refresh } => {
                let opts = RunOptions { batch_size: batch_size as usize, data_dir: Some(data_dir), fresh, full_refresh, ..RunOptions::default() };
                run(&file, json, opts).await
            }
            Command::Validate { file, json } => validate(&file, json),
            Command::Preview { file, limit } => preview(&file, limit).await,
            Command::Serve(args) => serve::serve(*args).await,
            Command::Connector(args) => connector_cmd::run(args).await,
            Command::Cert(args) => cert_cmd::run(args),
        }
    })
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DAGG_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

/// Loads a pipeline or prints why not (exit 2 for an invalid document, 1 for an unreadable file).
fn load(file: &Path) -> Result<(PipelineSpec, PathBuf), ExitCode> {
    match load_file(file) {
        Ok(x) => Ok(x),
        Err(LoadError::Invalid(errs)) => {
            eprintln!("{}: {} error{} in the pipeline document", file.display(), errs.len(), if errs.len() == 1 { "" } else { "s" });
            for e in errs.iter() {
                eprintln!("  {e}");
            }
            Err(ExitCode::from(2))
        }
        Err(e @ LoadError::Read { .. }) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

async fn run(file: &Path, json: bool, opts: RunOptions) -> ExitCode {
    let (spec, base) = match load(file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let summary = run_until_signal(&spec, &base, opts).await;
    if json {
        println!("{}", serde_json::to_string(&summary).expect("a summary serializes"));
    } else {
        println!("{}", summary.line());
    }
    match summary.status {
        RunStatus::Success | RunStatus::Warning => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// Runs the pipeline; the first SIGINT or SIGTERM asks it to stop gracefully (an unbounded
/// source: a last checkpoint, destinations committed, `success`; a bounded one: stop and
/// keep the checkpoint for the next run), a second one exits at once (the checkpoint stays).
async fn run_until_signal(spec: &PipelineSpec, base: &Path, opts: RunOptions) -> dagg_actors::RunSummary {
    let progress = opts.progress.clone();
    let listener = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else { return };
        for n in 0.. {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if n > 0 {
                eprintln!("second signal: exiting now; the next run resumes from the last checkpoint");
                std::process::exit(130);
            }
            eprintln!("stopping: taking a last checkpoint (send the signal again to exit at once)");
            progress.request_stop();
        }
    });
    let summary = run_pipeline(spec, base, opts).await;
    listener.abort();
    summary
}

fn validate(file: &Path, json: bool) -> ExitCode {
    if !json {
        return match load(file) {
            Ok((spec, _)) => {
                println!("{}: valid pipeline `{}`", file.display(), spec.name);
                if let Some(note) = dagg_actors::plan::Plan::of(&spec).note {
                    println!("note: {note}");
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        };
    }
    let (valid, errors, plan) = match load_file(file) {
        Ok((spec, _)) => (true, serde_json::json!([]), dagg_actors::plan::Plan::of(&spec).describe()),
        Err(LoadError::Invalid(errs)) => (false, serde_json::to_value(&errs).expect("errors serialize"), serde_json::Value::Null),
        Err(e) => (false, serde_json::json!([{"path": "", "message": e.to_string()}]), serde_json::Value::Null),
    };
    println!("{}", serde_json::json!({"valid": valid, "errors": errors, "plan": plan}));
    if valid { ExitCode::SUCCESS } else { ExitCode::from(2) }
}

async fn preview(file: &Path, limit: usize) -> ExitCode {
    let (spec, base) = match load(file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match preview_pipeline(&spec, &base, limit).await {
        Ok(p) => {
            println!("{}", serde_json::to_string_pretty(&p.records).expect("records serialize"));
            for r in &p.rejected {
                eprintln!("rejected at {} ({}): {}", r.stage, r.position, r.reason);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
