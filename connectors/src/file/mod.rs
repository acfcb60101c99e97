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

mod csv;
mod input;
mod json;
mod jsonl;
mod parquet;
mod rolling;
mod sink;
mod source;
mod xml;

use std::path::{Path, PathBuf};

use dagg_model::spec::connector::{Compression, FileConfig};
use dagg_model::spec::pipeline::Limits;

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
    Ok(match config.format {
        dagg_model::spec::connector::FileFormat::Parquet => Box::new(ParquetSink::open(config, base_dir)?),
        _ => Box::new(FileSink::open(config, base_dir)?),
    })
}

/// A config for tests to fill in.
#[cfg(test)]
pub(crate) fn tests_config() -> FileConfig {
    FileConfig { name: None, path: String::new(), format: dagg_model::spec::connector::FileFormat::Jsonl, compression: None, delimiter: None, record_element: None, root_element: None, max_records: None, max_file_size: None }
}

use crate::ConnectorError;

/// A configured path, resolved against the pipeline's folder when relative.
fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) }
}

fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

impl FileSource {
    /// Finds the source's files (expanding a glob) and checks they exist; reads nothing.
    pub fn open(config: &FileConfig, base_dir: &Path) -> Result<FileSource, ConnectorError> {
        FileSource::open_limited(config, base_dir, &Limits::default())
    }

    /// [`FileSource::open`] with the pipeline's `limits` (a record over
    /// `max_record_bytes` is a bad input, skipped without being held whole).
    pub fn open_limited(config: &FileConfig, base_dir: &Path, limits: &Limits) -> Result<FileSource, ConnectorError> {
        let relative = Path::new(&config.path).is_relative();
        let files = if is_glob(&config.path) {
            matches(config, base_dir, relative)?
        } else {
            let path = resolve(base_dir, &config.path);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => {
                    return Err(ConnectorError::Config(format!(
                        "source `{}` is a folder; to read the files in it, use a glob such as `{}/*.jsonl`",
                        path.display(),
                        config.path.trim_end_matches('/')
                    )));
                }
                Ok(_) => vec![path],
                Err(source) => return Err(ConnectorError::Open { path: path.display().to_string(), source }),
            }
        };
        let units = files
            .iter()
            .map(|f| {
                let shown = if relative { f.strip_prefix(base_dir).unwrap_or(f) } else { f };
                shown.display().to_string()
            })
            .collect();
        let gzip = config.effective_compression() == Compression::Gzip;
        let record_element = config.record_element.as_deref().unwrap_or(xml::DEFAULT_RECORD);
        Ok(FileSource::new(files, units, config.format, gzip, config.delimiter_byte(), record_element, limits.max_record_bytes))
    }
}

/// Every file the glob matches, sorted.
fn matches(config: &FileConfig, base_dir: &Path, relative: bool) -> Result<Vec<PathBuf>, ConnectorError> {
    let pattern = if relative && !base_dir.as_os_str().is_empty() {
        let Some(base) = base_dir.to_str() else {
            return Err(ConnectorError::Config(format!(
                "the pipeline's folder `{}` is not valid UTF-8, so the glob `{}` cannot be expanded",
                base_dir.display(),
                config.path
            )));
        };
        let base = glob::Pattern::escape(base.trim_end_matches('/'));
        format!("{base}/{}", config.path)
    } else {
        config.path.clone()
    };
    let paths = glob::glob(&pattern)
        .map_err(|e| ConnectorError::Config(format!("`{}` is not a valid glob pattern: {e}", config.path)))?;
    let mut files = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| ConnectorError::Open {
            path: e.path().display().to_string(),
            source: std::io::Error::new(e.error().kind(), e.error().to_string()),
        })?;
        if path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(ConnectorError::NoMatch { pattern });
    }
    files.sort();
    Ok(files)
}
