//! Connector specs: `{"connector_type": ..., "config": {...}}`.
//!
//! One closed registry: [`ConnectorConfig`] has a variant per connector dagg implements, and
//! [`parse_connector`] is the one place that maps a `connector_type` name to its config type.
//! A name dagg does not implement is an error that says so, never ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::SpecErrors;
use crate::spec::reader::{Obj, parse_json};

/// Where a connector is used; some settings only make sense in one role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The pipeline's `source`, or an entry of `sources`.
    Source,
    /// A `destination`, an entry of `destinations`, or the dead-letter destination.
    Sink,
}

/// A connector as the pipeline document names it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConnectorSpec {
    /// The `connector_type` as written (for messages and round trips).
    pub connector_type: String,
    pub config: ConnectorConfig,
}

impl ConnectorSpec {
    /// The user's name for this connector (`config.name`), else its type.
    pub fn display_name(&self) -> &str {
        self.config.name().unwrap_or(&self.connector_type)
    }
}

/// Every connector dagg implements, with its typed config.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ConnectorConfig {
    File(FileConfig),
}

impl ConnectorConfig {
    pub fn name(&self) -> Option<&str> {
        match self {
            ConnectorConfig::File(c) => c.name.as_deref(),
        }
    }
}

/// The `connector_type` names dagg implements, as users write them.
pub const IMPLEMENTED: &[&str] = &["file"];

/// Names the spec or the guide define that this build does not implement yet.
const PLANNED: &[&str] = &[
    "rest_api", "REST API", "postgresql", "mysql", "kafka", "nats", "aws_s3", "rabbitmq",
];

/// File formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One JSON array of objects.
    Json,
    /// One JSON object per line; blank lines are skipped.
    Jsonl,
    /// A header row, then one record per row; every value is a string.
    Csv,
}

/// Compression of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
}

/// `connector_type: file` — a local file (or, for a source, a glob of files).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The file. Relative paths resolve against the folder of the pipeline file. For a
    /// source, a glob (`data/*.jsonl`) reads every match in name order.
    pub path: String,
    /// `json` (one array), `jsonl`, or `csv`.
    pub format: FileFormat,
    /// `none` or `gzip`; when absent, a path ending in `.gz` means gzip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// CSV only: the cell separator, one character (default `,`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
}

impl FileConfig {
    /// The compression in force: the configured one, else inferred from the extension.
    pub fn effective_compression(&self) -> Compression {
        self.compression.unwrap_or(if self.path.ends_with(".gz") {
            Compression::Gzip
        } else {
            Compression::None
        })
    }

    pub fn delimiter_byte(&self) -> u8 {
        self.delimiter.map(|c| c as u8).unwrap_or(b',')
    }
}

/// Reads `{"connector_type", "config"}` at `path`, collecting every problem.
pub fn parse_connector(v: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorSpec> {
    let obj = Obj::open(v, path, &["connector_type", "config"], errs)?;
    let connector_type = obj.req_str("connector_type", errs)?;
    let Some(config) = obj.map.get("config") else {
        errs.push(obj.at("config"), "required field `config` is missing (an object)");
        return None;
    };
    let cpath = obj.at("config");
    let config = match connector_type {
        "file" => {
            let c: FileConfig = parse_json(config, &cpath, errs)?;
            check_file(&c, &cpath, role, errs)?;
            ConnectorConfig::File(c)
        }
        other if PLANNED.contains(&other) => {
            errs.push(
                obj.at("connector_type"),
                format!("connector_type `{other}` is not implemented in this build of dagg; implemented: {}", IMPLEMENTED.join(", ")),
            );
            return None;
        }
        other => {
            errs.push(
                obj.at("connector_type"),
                format!("unknown connector_type `{other}`; dagg implements: {}", IMPLEMENTED.join(", ")),
            );
            return None;
        }
    };
    Some(ConnectorSpec { connector_type: connector_type.to_string(), config })
}

fn check_file(c: &FileConfig, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    if c.path.trim().is_empty() {
        errs.push(format!("{path}.path"), "the path may not be empty");
    }
    if role == Role::Sink && c.path.contains(['*', '?', '[']) {
        errs.push(format!("{path}.path"), "a destination writes one file: a glob pattern is only allowed for a source");
    }
    if let Some(d) = c.delimiter {
        if !d.is_ascii() || d == '"' || d == '\n' || d == '\r' {
            errs.push(format!("{path}.delimiter"), format!("`{d}` cannot separate CSV cells; use one ASCII character other than a quote or a line break"));
        }
        if c.format != FileFormat::Csv {
            errs.push(format!("{path}.delimiter"), "`delimiter` applies only to format `csv`");
        }
    }
    (errs.len() == before).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Json, role: Role) -> (Option<ConnectorSpec>, SpecErrors) {
        let mut errs = SpecErrors::new();
        let c = parse_connector(&v, "source", role, &mut errs);
        (c, errs)
    }

    #[test]
    fn file_connector_parses() {
        let (c, errs) = parse(json!({"connector_type": "file", "config": {"path": "a.jsonl.gz", "format": "jsonl"}}), Role::Source);
        assert!(errs.is_empty(), "{errs}");
        let ConnectorConfig::File(f) = c.unwrap().config;
        assert_eq!(f.effective_compression(), Compression::Gzip);
    }

    #[test]
    fn unknown_and_planned_types_say_so() {
        let (_, errs) = parse(json!({"connector_type": "Snowflake", "config": {}}), Role::Sink);
        assert!(errs.0[0].message.contains("unknown connector_type `Snowflake`"), "{errs}");
        let (_, errs) = parse(json!({"connector_type": "postgresql", "config": {}}), Role::Sink);
        assert!(errs.0[0].message.contains("not implemented"), "{errs}");
    }

    #[test]
    fn bad_config_keys_have_paths() {
        let (_, errs) = parse(json!({"connector_type": "file", "config": {"path": "x", "format": "xlsx", "colour": 1}}), Role::Source);
        assert_eq!(errs.len(), 1, "{errs}");
        assert!(errs.0[0].path.starts_with("source.config"), "{errs}");
    }

    #[test]
    fn glob_not_allowed_for_sink() {
        let (_, errs) = parse(json!({"connector_type": "file", "config": {"path": "out/*.jsonl", "format": "jsonl"}}), Role::Sink);
        assert_eq!(errs.0[0].path, "source.config.path");
    }
}
