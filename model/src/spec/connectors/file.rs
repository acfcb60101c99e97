//! `connector_type: file` — a local file, or for a source a glob of files, in json, jsonl,
//! csv, xml or parquet, optionally gzip-compressed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::SpecErrors;
use crate::spec::connector::Role;
use crate::spec::connectors::{ConnectorConfig, ConnectorKind, Roles, Status, schema_of};
use crate::spec::reader::parse_json;

/// File formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One JSON array of objects.
    Json,
    /// One JSON object per line; blank lines are skipped.
    Jsonl,
    /// A header row, then one record per row; every value is a string.
    Csv,
    /// One element per record (`record_element`), attributes and child elements as fields.
    Xml,
    /// Apache Parquet (Snappy or uncompressed).
    Parquet,
}

/// Compression of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
}

/// `connector_type: file` — a local file (or, for a source, a glob of files).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The file. Relative paths resolve against the folder of the pipeline file. For a
    /// source, a glob (`data/*.jsonl`) reads every match in name order.
    pub path: String,
    /// `json` (one array), `jsonl`, `csv`, `xml` or `parquet`.
    pub format: FileFormat,
    /// `none` or `gzip`; when absent, a path ending in `.gz` means gzip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// CSV only: the cell separator, one character (default `,`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
    /// XML only: the element that holds one record (default `record`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_element: Option<String>,
    /// XML destination only: the document's root element (default `records`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_element: Option<String>,
    /// Destination only: roll to a new part (`out-00001.jsonl`, `out-00002.jsonl`, …) after
    /// this many records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_records: Option<u64>,
    /// Destination only: roll to a new part after this many bytes (before compression; not
    /// for `parquet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_size: Option<u64>,
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

/// The `file` kind.
pub const KIND: ConnectorKind = ConnectorKind {
    name: "file",
    aliases: &[],
    summary: "A local file (json, jsonl or csv); a source may name a glob.",
    roles: Roles::Both,
    icon: "file",
    status: Status::Implemented { parse, schema: schema_of::<FileConfig> },
};

fn parse(config: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorConfig> {
    let c: FileConfig = parse_json(config, path, errs)?;
    check_file(&c, path, role, errs)?;
    Some(ConnectorConfig::File(c))
}

pub fn check_file(c: &FileConfig, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
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
    for (key, value) in [("record_element", &c.record_element), ("root_element", &c.root_element)] {
        let Some(name) = value else { continue };
        if c.format != FileFormat::Xml {
            errs.push(format!("{path}.{key}"), format!("`{key}` applies only to format `xml`"));
        } else if !is_xml_name(name) {
            errs.push(format!("{path}.{key}"), format!("`{name}` is not an XML element name (letters, digits, `_`, `-`, `.`; not starting with a digit)"));
        }
    }
    if c.root_element.is_some() && role == Role::Source {
        errs.push(format!("{path}.root_element"), "`root_element` applies only to a destination (a source finds its records by `record_element`)");
    }
    for (key, value) in [("max_records", c.max_records), ("max_file_size", c.max_file_size)] {
        if value.is_none() {
            continue;
        }
        if role == Role::Source {
            errs.push(format!("{path}.{key}"), format!("`{key}` applies only to a destination (it rolls the output into parts)"));
        } else if value == Some(0) {
            errs.push(format!("{path}.{key}"), "must be at least 1");
        }
    }
    if c.max_file_size.is_some() && c.format == FileFormat::Parquet {
        errs.push(format!("{path}.max_file_size"), "a Parquet file's size is known only once written: roll Parquet by `max_records`");
    }
    if c.format == FileFormat::Parquet && c.effective_compression() == Compression::Gzip {
        errs.push(format!("{path}.compression"), "a Parquet file compresses its own pages: use compression `none` (and no `.gz` name)");
    }
    (errs.len() == before).then_some(())
}

/// Whether `name` can be an XML element name.
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_') && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

