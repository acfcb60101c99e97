//! `connector_type: file` — local files as a source (one file, or a glob of files read in
//! sorted order) and as a sink, in `json` (one array), `jsonl`, `csv` or `xml`, plain or
//! gzip, and `parquet` (see [`xml`] and [`parquet`] for their mappings).
//!
//! # Positions and checkpoints
//! A record's [`Position`](dagg_model::Position) is `unit` = the index of its file in the
//! source's sorted file list, `seq` = the 1-based line its text starts on; people see
//! `{"file": "data/orders.jsonl", "line": 42}`, the file named as configured (relative to
//! the pipeline's folder when the configured path was relative).
//!
//! The checkpoint is `{"version": 1, "file_index", "file", "offset", "line"}` (plus
//! `"elements"` for JSON arrays): the byte offset in the (decompressed) file right after the
//! last record returned, and the line at that offset. `file` is the file's name, so a glob
//! that matches more files later still resumes in the right one; `null` means every file has
//! been read. Resuming seeks plain files; gzip files are decompressed again and skipped up
//! to the offset. CSV re-reads its header first.
//!
//! # Commit
//! The sink writes to `.<name>.dagg-tmp` beside the destination and renames it into place
//! on commit (after fsync); see [`sink`] for what happens across several commits.
//!
//! # Layout
//! Each format (`csv`, `json`, `jsonl`, `xml`, `parquet`) reads through [`input`] into the
//! types of [`reader`] and imports nothing above them; [`source`] alone picks a format, and
//! the sinks ([`sink`], [`parquet`], [`rolling`]) call the formats' writers.

mod csv;
mod input;
mod json;
mod jsonl;
mod parquet;
mod path;
mod reader;
mod rolling;
mod sink;
mod source;
mod xml;

use std::path::Path;

use dagg_model::spec::connector::FileConfig;

use crate::ConnectorError;

pub use parquet::ParquetSink;
pub use rolling::RollingSink;
pub use sink::FileSink;
pub use source::FileSource;

/// The sink for a `file` destination: rolling parts with `max_records`/`max_file_size` (see
/// [`rolling`]); Parquet stages its records (see [`parquet`]); every other format writes the
/// file itself.
pub fn open_sink(config: &FileConfig, base_dir: &Path) -> Result<Box<dyn crate::SinkConnector>, ConnectorError> {
    if config.max_records.is_some() || config.max_file_size.is_some() {
        return Ok(Box::new(RollingSink::open(config, base_dir)?));
    }
    rolling::open_file(config, base_dir)
}

/// A config for tests to fill in.
#[cfg(test)]
pub(crate) fn tests_config() -> FileConfig {
    FileConfig { name: None, path: String::new(), format: dagg_model::spec::connector::FileFormat::Jsonl, compression: None, delimiter: None, record_element: None, root_element: None, max_records: None, max_file_size: None }
}
