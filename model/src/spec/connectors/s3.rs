//! `connector_type: aws_s3` — objects in an S3 bucket (or an S3-compatible store given by
//! `endpoint`) as a source and a destination, in the file connector's formats.
//!
//! The guide's fields (section 5.3.5) are read as written: `bucket_name`, `aws_region`,
//! `access_key_id`, `secret_access_key` (a [`Secret`]), `prefix`, `file_format`,
//! `compression`, `signature_version` (only `s3v4`). `region` and `format` are accepted as
//! shorter spellings. dagg adds `key` (a destination's object, or a glob over a source's
//! keys), `endpoint`, `allow_http` and `connection_timeout`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::SpecErrors;
use crate::spec::connector::Role;
use crate::spec::connectors::{ConnectorConfig, ConnectorKind, Roles, Status, schema_of};
use crate::spec::connectors::common::Secret;
use crate::spec::connectors::file::{Compression, FileConfig, FileFormat};
use crate::spec::reader::parse_json;

/// `connector_type: aws_s3`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsS3Config {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The bucket.
    #[serde(alias = "bucket")]
    pub bucket_name: String,
    /// The region (default `us-east-1`, or `AWS_REGION` from the environment).
    #[serde(default, alias = "region", skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    /// With `secret_access_key`. When both are absent, requests go unsigned (a public
    /// bucket), unless an admin lets S3 connectors use the node's ambient credentials (the
    /// `egress` setting's `s3_ambient_credentials`: its `AWS_*` environment, instance
    /// profile or container credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    /// Source: read every object whose key starts with this, in key order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Destination: the object to write (`prefix` + `key` when both are given). Source: one
    /// object, or a glob over keys (`raw/2024-*/orders.jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `json`, `jsonl`, `csv`, `xml` or `parquet`.
    #[serde(alias = "format")]
    pub file_format: FileFormat,
    /// `none` or `gzip`; when absent, a key ending in `.gz` means gzip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// CSV only: the cell separator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
    /// XML only: the element that holds one record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_element: Option<String>,
    /// XML destination only: the root element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_element: Option<String>,
    /// Only `s3v4` (AWS Signature Version 4) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_version: Option<String>,
    /// An S3-compatible store's URL (`http://127.0.0.1:9000`): requests go path-style
    /// (`endpoint/bucket/key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Allow a plain `http://` endpoint (default: only for a loopback address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
    /// Seconds to wait for the store before giving up (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_timeout: Option<u64>,
}

impl AwsS3Config {
    /// The destination's object key: `prefix` + `key`.
    pub fn object_key(&self) -> Option<String> {
        let key = self.key.as_deref()?;
        Some(format!("{}{key}", self.prefix.as_deref().unwrap_or("")))
    }

    /// The file connector's view of the format settings, for a local file at `path`.
    pub fn file_config(&self, path: &str) -> FileConfig {
        FileConfig {
            name: None,
            path: path.to_string(),
            format: self.file_format,
            compression: self.compression,
            delimiter: self.delimiter,
            record_element: self.record_element.clone(),
            root_element: self.root_element.clone(),
            max_records: None,
            max_file_size: None,
        }
    }

    /// Whether an object is gzip: as configured, else by its key.
    pub fn gzip_for(&self, key: &str) -> bool {
        self.compression.unwrap_or(if key.ends_with(".gz") {
            Compression::Gzip
        } else {
            Compression::None
        }) == Compression::Gzip
    }

    /// Seconds to wait for the store.
    pub fn timeout_secs(&self) -> u64 {
        self.connection_timeout.unwrap_or(30)
    }
}

/// The rules across fields and roles.
pub fn check_aws_s3(c: &AwsS3Config, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    if c.bucket_name.trim().is_empty() {
        errs.push(
            format!("{path}.bucket_name"),
            "the bucket name may not be empty",
        );
    }
    if c.access_key_id.is_some() != c.secret_access_key.is_some() {
        errs.push(format!("{path}.secret_access_key"), "`access_key_id` and `secret_access_key` go together: give both, or neither for unsigned requests (or the node's ambient credentials, when an admin allows them)");
    }
    if let Some(v) = &c.signature_version
        && !v.eq_ignore_ascii_case("s3v4")
        && !v.eq_ignore_ascii_case("v4")
    {
        errs.push(
            format!("{path}.signature_version"),
            format!("`{v}` is not supported; dagg signs with `s3v4`"),
        );
    }
    if let Some(e) = &c.endpoint
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        errs.push(
            format!("{path}.endpoint"),
            format!("`{e}` is not an http:// or https:// URL"),
        );
    }
    if c.connection_timeout == Some(0) {
        errs.push(
            format!("{path}.connection_timeout"),
            "must be at least 1 second",
        );
    }
    let globbed = c
        .key
        .as_deref()
        .is_some_and(|k| k.contains(['*', '?', '[']));
    match role {
        Role::Sink => {
            if c.key.as_deref().is_none_or(|k| k.trim().is_empty()) {
                errs.push(
                    format!("{path}.key"),
                    "a destination needs `key`, the object to write (after `prefix`, when given)",
                );
            } else if globbed {
                errs.push(
                    format!("{path}.key"),
                    "a destination writes one object: a glob pattern is only allowed for a source",
                );
            }
            if c.file_format == FileFormat::Parquet {
                errs.push(format!("{path}.file_format"), "an aws_s3 destination writes json, jsonl, csv or xml (parquet only as a source)");
            }
        }
        Role::Source => {
            if c.root_element.is_some() {
                errs.push(
                    format!("{path}.root_element"),
                    "`root_element` applies only to a destination",
                );
            }
        }
        Role::Any => {}
    }
    if c.delimiter.is_some() && c.file_format != FileFormat::Csv {
        errs.push(
            format!("{path}.delimiter"),
            "`delimiter` applies only to format `csv`",
        );
    }
    for (key, value) in [
        ("record_element", &c.record_element),
        ("root_element", &c.root_element),
    ] {
        if value.is_some() && c.file_format != FileFormat::Xml {
            errs.push(
                format!("{path}.{key}"),
                format!("`{key}` applies only to format `xml`"),
            );
        }
    }
    if c.file_format == FileFormat::Parquet && c.compression == Some(Compression::Gzip) {
        errs.push(
            format!("{path}.compression"),
            "a Parquet file compresses its own pages: use compression `none`",
        );
    }
    (errs.len() == before).then_some(())
}


/// The `aws_s3` kind.
pub const KIND: ConnectorKind = ConnectorKind {
    name: "aws_s3",
    aliases: &[],
    summary: "Objects in S3 or an S3-compatible store: a prefix or glob as a source, one object as a destination.",
    roles: Roles::Both,
    icon: "cloud",
    status: Status::Implemented { parse, schema: schema_of::<AwsS3Config> },
};

fn parse(config: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorConfig> {
    let c: AwsS3Config = parse_json(config, path, errs)?;
    check_aws_s3(&c, path, role, errs)?;
    Some(ConnectorConfig::AwsS3(c))
}
