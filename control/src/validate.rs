//! Pipeline documents as the control plane accepts them: parsed into a [`PipelineSpec`]
//! (every error with its path), then checked against the node's own rules ([`Rules`]:
//! file paths of API-made pipelines stay inside `<data-dir>/files`). The API validates what
//! it stores with this, and every run validates its stored document with it again before
//! it starts.

use dagg_model::spec::pipeline::{PipelineSpec, Schedule, parse_pipeline};
use serde_json::Value as Json;

use crate::ErrorDetail;
use crate::meta::PipelineSummary;

/// The node's rules for documents, beyond the pipeline format itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rules {
    /// File paths (a file's `path`, a database's `ssl_root_cert`) must be relative and
    /// without `..`: inside `<data-dir>/files`.
    pub restrict_file_paths: bool,
}

fn spec_errors(e: dagg_model::SpecErrors) -> Vec<ErrorDetail> {
    e.iter().map(|e| ErrorDetail { path: e.path.clone(), message: e.message.clone() }).collect()
}

/// File paths of API-made pipelines (a file's `path`, a database's `ssl_root_cert`) stay
/// inside `<data-dir>/files`: relative, without `..`.
fn check_file_paths(doc: &Json, errs: &mut Vec<ErrorDetail>) {
    let mut connectors: Vec<(String, &Json)> = Vec::new();
    for key in ["source", "destination"] {
        if let Some(c) = doc.get(key) {
            connectors.push((key.into(), c));
        }
    }
    if let Some(Json::Object(m)) = doc.get("sources") {
        connectors.extend(m.iter().map(|(k, v)| (format!("sources.{k}"), v)));
    }
    if let Some(Json::Array(a)) = doc.get("destinations") {
        connectors.extend(a.iter().enumerate().map(|(i, v)| (format!("destinations[{i}]"), v)));
    }
    if let Some(dl) = doc.get("error_handling").and_then(|e| e.get("dead_letter")) {
        connectors.push(("error_handling.dead_letter".into(), dl));
    }
    for (at, c) in connectors {
        let connector_type = c.get("connector_type").and_then(Json::as_str).unwrap_or_default();
        for key in dagg_model::spec::paths::file_path_keys(connector_type) {
            let Some(path) = c.get("config").and_then(|c| c.get(*key)).and_then(Json::as_str) else { continue };
            if let Err(message) = dagg_model::spec::paths::check_inside_files_folder(path) {
                errs.push(ErrorDetail { path: format!("{at}.config.{key}"), message });
            }
        }
    }
}

/// Validates a document as the API stores it and runs start it.
pub fn validate(rules: &Rules, doc: &Json) -> Result<PipelineSpec, Vec<ErrorDetail>> {
    let mut errs = match parse_pipeline(doc) {
        Ok(spec) => {
            let mut errs = Vec::new();
            if rules.restrict_file_paths {
                check_file_paths(doc, &mut errs);
            }
            if errs.is_empty() {
                return Ok(spec);
            }
            errs
        }
        Err(e) => spec_errors(e),
    };
    if errs.is_empty() {
        errs.push(ErrorDetail { path: String::new(), message: "the document is invalid".into() });
    }
    Err(errs)
}

/// The parts of a pipeline's stored summary that follow its document.
pub fn summary_of(spec: &PipelineSpec) -> PipelineSummary {
    PipelineSummary {
        name: spec.name.clone(),
        description: spec.description.clone(),
        source_type: spec.source.connector_type.clone(),
        destination_types: spec.destinations.iter().map(|d| d.connector_type.clone()).collect(),
        schedule_type: match spec.schedule {
            Schedule::Manual => "manual".into(),
            Schedule::Cron { .. } => "cron".into(),
            Schedule::Event { .. } => "event".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn file_paths_must_stay_inside_the_files_folder() {
        let f = |p: &str| json!({"connector_type": "file", "config": {"path": p, "format": "jsonl"}});
        let doc = json!({"source": f("/etc/passwd"), "destinations": [f("ok/out.jsonl"), f("../x.jsonl")], "error_handling": {"dead_letter": f("dead.jsonl")}});
        let mut errs = Vec::new();
        check_file_paths(&doc, &mut errs);
        assert_eq!(errs.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["source.config.path", "destinations[1].config.path"]);
    }
}
