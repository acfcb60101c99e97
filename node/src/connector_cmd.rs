//! `dagg connector test FILE`: checks every connector of a pipeline — the source, the
//! named `sources`, each destination and the dead letter — without reading or writing
//! records, and prints what works and what does not, and why.
//!
//! The checks run at once, each within its connector's own timeout. Exits 0 when all work,
//! 1 when one does not, 2 when the document is invalid.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use dagg_model::spec::connector::{ConnectorSpec, Role};

/// `dagg connector …`
#[derive(Args)]
pub struct ConnectorArgs {
    #[command(subcommand)]
    command: ConnectorCommand,
}

#[derive(Subcommand)]
enum ConnectorCommand {
    /// Tests every connector of a pipeline: databases answer and hold the table, HTTP
    /// endpoints answer with the configured credentials, files can be read or written.
    ///
    /// Exits 0 when all work, 1 when one does not, 2 when the document is invalid.
    Test {
        /// The pipeline document (JSON or YAML).
        file: PathBuf,
        /// Print the results as JSON (`[{"stage", "connector_type", "name", "ok", "message", "seconds"}]`).
        #[arg(long)]
        json: bool,
    },
}

/// One connector's result.
struct Outcome {
    stage: String,
    connector_type: String,
    name: String,
    result: Result<String, String>,
    seconds: f64,
}

pub async fn run(args: ConnectorArgs) -> ExitCode {
    match args.command {
        ConnectorCommand::Test { file, json } => test(&file, json).await,
    }
}

async fn test(file: &Path, json: bool) -> ExitCode {
    let (spec, base) = match crate::load(file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut targets: Vec<(String, Role, ConnectorSpec)> = vec![("source".into(), Role::Source, spec.source.clone())];
    for (name, s) in &spec.sources {
        targets.push((format!("sources.{name}"), Role::Source, s.clone()));
    }
    let single = spec.destinations.len() == 1;
    for (i, d) in spec.destinations.iter().enumerate() {
        let stage = if single { "destination".to_string() } else { format!("destinations[{i}]") };
        targets.push((stage, Role::Sink, d.clone()));
    }
    if let Some(dl) = &spec.error_handling.dead_letter {
        targets.push(("error_handling.dead_letter".into(), Role::Sink, dl.clone()));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (stage, role, c)) in targets.into_iter().enumerate() {
        let base = base.clone();
        tasks.spawn(async move {
            let started = Instant::now();
            let result = dagg_connectors::test_connection_as(&c, &base, role).await.map_err(|e| e.to_string());
            let outcome = Outcome {
                stage,
                connector_type: c.connector_type.clone(),
                name: c.display_name().to_string(),
                result,
                seconds: started.elapsed().as_secs_f64(),
            };
            (i, outcome)
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(x) => outcomes.push(x),
            Err(e) => {
                eprintln!("error: a connector test stopped unexpectedly: {e}");
                return ExitCode::from(1);
            }
        }
    }
    outcomes.sort_by_key(|(i, _)| *i);
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|(_, o)| o).collect();
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if json {
        let list: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|o| {
                serde_json::json!({
                    "stage": o.stage,
                    "connector_type": o.connector_type,
                    "name": o.name,
                    "ok": o.result.is_ok(),
                    "message": match &o.result { Ok(m) | Err(m) => m },
                    "seconds": (o.seconds * 1000.0).round() / 1000.0,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for o in &outcomes {
            let label = if o.name == o.connector_type { o.connector_type.clone() } else { format!("{} `{}`", o.connector_type, o.name) };
            match &o.result {
                Ok(m) => println!("ok    {} ({label}): {m}", o.stage),
                Err(m) => println!("FAIL  {} ({label}): {m}", o.stage),
            }
        }
        println!("{} of {} connectors work", outcomes.len() - failed, outcomes.len());
    }
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
