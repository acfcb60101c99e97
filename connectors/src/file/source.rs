//! The file source: reads every file of its list in order on a dedicated thread, parses
//! records straight from the read buffer, and hands batches to the async side through a
//! bounded channel of [`CHANNEL_CHUNKS`] chunks — parsing gets its own core, and a slow
//! consumer stops the reader instead of growing memory.
//!
//! Each item (record or bad input) carries the [`Cursor`] right after it, so the
//! checkpoint covers exactly what `next_batch` returned even when a chunk is split.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dagg_model::spec::connector::{Compression, FileConfig, FileFormat};
use dagg_model::spec::pipeline::Limits;
use dagg_model::{Batch, Map, Position, Record, Value};
use serde_json::json;
use tokio::sync::mpsc;

use super::input::{BUF_SIZE, Input};
use super::reader::{Chunk, Cursor, Emitter, Stop};
use super::{csv, json, jsonl, parquet, path, xml};
use crate::{BadInput, ConnectorError, SourceBatch, SourceConnector};

/// Chunks the reader may have ready ahead of the consumer.
const CHANNEL_CHUNKS: usize = 2;
/// The largest chunk the reader builds, whatever `max` asks for (bounds memory).
const MAX_CHUNK: usize = 16_384;
/// Checkpoint layout version.
const CHECKPOINT_VERSION: u64 = 1;

/// The file source. Built by [`crate::open_source`].
pub struct FileSource {
    /// Files to read, resolved, in order.
    files: Arc<Vec<PathBuf>>,
    /// The same files as people name them (relative to the pipeline's folder when the
    /// configured path was relative): `Position::unit` indexes this list.
    units: Arc<Vec<String>>,
    format: FileFormat,
    gzip: bool,
    delimiter: u8,
    /// XML: the element of one record.
    record_element: Arc<str>,
    /// `limits.max_record_bytes`.
    max_record: u64,
    /// Right after everything returned so far.
    cursor: Cursor,
    rx: Option<mpsc::Receiver<Result<Chunk, ConnectorError>>>,
    pending: Option<Chunk>,
    done: bool,
}

impl FileSource {
    pub(crate) fn new(
        files: Vec<PathBuf>,
        units: Vec<String>,
        format: FileFormat,
        gzip: bool,
        delimiter: u8,
        record_element: &str,
        max_record: u64,
    ) -> FileSource {
        FileSource {
            files: Arc::new(files),
            units: Arc::new(units),
            format,
            gzip,
            delimiter,
            record_element: Arc::from(record_element),
            max_record,
            cursor: Cursor::start(0),
            rx: None,
            pending: None,
            done: false,
        }
    }

    /// The names positions refer to, in order.
    pub fn units(&self) -> &Arc<Vec<String>> {
        &self.units
    }

    fn start_reader(&mut self, max: usize) -> Result<(), ConnectorError> {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let size = max.clamp(1, MAX_CHUNK);
        let reader = Reader {
            files: self.files.clone(),
            format: self.format,
            gzip: self.gzip,
            delimiter: self.delimiter,
            record_element: self.record_element.clone(),
            buf_size: BUF_SIZE,
            max_record: self.max_record,
        };
        let from = self.cursor;
        let out = Emitter::new(tx, size);
        std::thread::Builder::new()
            .name("dagg-file-read".into())
            .spawn(move || reader.run(from, out))
            .map_err(|source| ConnectorError::Read { path: self.current_file(), source })?;
        self.rx = Some(rx);
        Ok(())
    }

    fn current_file(&self) -> String {
        self.files.get(self.cursor.unit as usize).map(|p| p.display().to_string()).unwrap_or_default()
    }

    fn batch(&self, records: Vec<Record>, positions: Vec<Position>, bad: Vec<BadInput>) -> SourceBatch {
        SourceBatch { batch: Batch { records, positions, units: Some(self.units.clone()) }, bad }
    }
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
        let files = if path::is_glob(&config.path) {
            path::matches(config, base_dir, relative)?
        } else {
            let path = path::resolve(base_dir, &config.path);
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

#[async_trait::async_trait]
impl SourceConnector for FileSource {
    async fn next_batch(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError> {
        let max = max.max(1);
        loop {
            if self.done {
                return Ok(None);
            }
            if self.pending.is_none() {
                if self.rx.is_none() {
                    self.start_reader(max)?;
                }
                let rx = self.rx.as_mut().expect("the reader was just started");
                match rx.recv().await {
                    Some(Ok(chunk)) => self.pending = Some(chunk),
                    Some(Err(e)) => {
                        // The next call retries from the cursor (and most likely fails
                        // the same way, after nothing new).
                        self.rx = None;
                        return Err(e);
                    }
                    None => {
                        self.rx = None;
                        return Err(ConnectorError::Read {
                            path: self.current_file(),
                            source: std::io::Error::other("the reader thread stopped unexpectedly"),
                        });
                    }
                }
            }
            let chunk = self.pending.as_mut().expect("a chunk is pending");
            if chunk.records.len() <= max {
                let chunk = self.pending.take().expect("a chunk is pending");
                self.cursor = chunk.end;
                if chunk.last {
                    self.done = true;
                    self.rx = None;
                }
                if chunk.items() == 0 {
                    continue;
                }
                return Ok(Some(self.batch(chunk.records, chunk.positions, chunk.bad)));
            }
            // Split: the first `max` records and the bad inputs before the next record.
            let nb = chunk.bad_at.partition_point(|&at| at <= max);
            let end = if nb > 0 && chunk.bad_at[nb - 1] == max { chunk.bad_ends[nb - 1] } else { chunk.ends[max - 1] };
            let records: Vec<Record> = chunk.records.drain(..max).collect();
            let positions: Vec<Position> = chunk.positions.drain(..max).collect();
            chunk.ends.drain(..max);
            let bad: Vec<BadInput> = chunk.bad.drain(..nb).collect();
            chunk.bad_ends.drain(..nb);
            chunk.bad_at.drain(..nb);
            chunk.bad_at.iter_mut().for_each(|at| *at -= max);
            self.cursor = end;
            return Ok(Some(self.batch(records, positions, bad)));
        }
    }

    fn describe(&self, pos: Position) -> Value {
        let mut m = Map::with_capacity(2);
        let file = match self.units.get(pos.unit as usize) {
            Some(name) => Value::from(name.as_str()),
            None => Value::Null,
        };
        m.push_unchecked("file", file);
        let what = if self.format == FileFormat::Parquet { "row" } else { "line" };
        m.push_unchecked(what, Value::Int(pos.seq as i64));
        Value::Object(m)
    }

    fn checkpoint(&self) -> serde_json::Value {
        let c = self.cursor;
        let file = self.units.get(c.unit as usize).map(|s| s.as_str());
        let mut v = json!({
            "version": CHECKPOINT_VERSION,
            "file_index": c.unit,
            "file": file,
            "offset": c.offset,
            "line": c.line,
        });
        if self.format == FileFormat::Json {
            v["elements"] = json!(c.elements);
        }
        v
    }

    async fn seek(&mut self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError> {
        let bad = |what: &str| ConnectorError::Seek(format!("{what} (checkpoint: {checkpoint})"));
        let version = checkpoint.get("version").and_then(|v| v.as_u64());
        if version != Some(CHECKPOINT_VERSION) {
            return Err(bad(&format!("not a file source checkpoint of version {CHECKPOINT_VERSION}")));
        }
        let cursor = match checkpoint.get("file") {
            Some(serde_json::Value::Null) => Cursor::start(self.files.len()),
            Some(serde_json::Value::String(name)) => {
                // Found by name: a glob may match other files now than when it was taken.
                let Some(unit) = self.units.iter().position(|u| u == name) else {
                    return Err(bad(&format!("its file `{name}` is not among this source's files")));
                };
                let num = |key: &str| checkpoint.get(key).and_then(|v| v.as_u64());
                let (Some(offset), Some(line)) = (num("offset"), num("line")) else {
                    return Err(bad("`offset` and `line` must be whole numbers"));
                };
                Cursor { unit: unit as u32, offset, line, elements: num("elements").unwrap_or(0) }
            }
            _ => return Err(bad("`file` must be a file name or null")),
        };
        // Dropping the receiver stops the old reader at its next send.
        self.rx = None;
        self.pending = None;
        self.done = false;
        self.cursor = cursor;
        Ok(())
    }
}

/// What the reader thread needs.
pub(crate) struct Reader {
    pub files: Arc<Vec<PathBuf>>,
    pub format: FileFormat,
    pub gzip: bool,
    pub delimiter: u8,
    pub record_element: Arc<str>,
    pub buf_size: usize,
    pub max_record: u64,
}

impl Reader {
    pub(crate) fn run(self, from: Cursor, mut out: Emitter) {
        let result = (|| {
            for unit in from.unit as usize..self.files.len() {
                let at = if unit == from.unit as usize { from } else { Cursor::start(unit) };
                tracing::debug!(file = %self.files[unit].display(), offset = at.offset, "reading");
                if self.format == FileFormat::Parquet {
                    // Parquet reads its footer first: the file itself, not a stream.
                    parquet::read(&self.files[unit], at, &mut out)?;
                    out.set_end(Cursor::start(unit + 1));
                    continue;
                }
                let mut input = Input::open(&self.files[unit], self.gzip, self.buf_size)?.with_max_record(self.max_record);
                match self.format {
                    FileFormat::Jsonl => jsonl::read(&mut input, at, &mut out)?,
                    FileFormat::Json => json::read(&mut input, at, &mut out)?,
                    FileFormat::Csv => csv::read(&mut input, at, self.delimiter, &mut out)?,
                    FileFormat::Xml => xml::read(&mut input, at, &self.record_element, &mut out)?,
                    FileFormat::Parquet => unreachable!("read above"),
                }
                out.set_end(Cursor::start(unit + 1));
            }
            Ok::<(), Stop>(())
        })();
        out.finish(result);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Runs a format reader synchronously (small buffers, no runtime) and collects items.
    use super::*;

    #[derive(Debug, Default)]
    pub struct Collected {
        pub records: Vec<(Position, Record, Cursor)>,
        pub bad: Vec<(BadInput, Cursor)>,
        pub error: Option<String>,
    }

    pub fn read_all(
        path: &std::path::Path,
        format: FileFormat,
        gzip: bool,
        buf_size: usize,
        from: Cursor,
    ) -> Collected {
        read_all_impl(path, format, gzip, buf_size, from, xml::DEFAULT_RECORD, u64::MAX)
    }

    /// [`read_all`] with a record size limit.
    pub fn read_all_limited(path: &std::path::Path, format: FileFormat, gzip: bool, buf_size: usize, max_record: u64) -> Collected {
        read_all_impl(path, format, gzip, buf_size, Cursor::start(0), xml::DEFAULT_RECORD, max_record)
    }

    /// [`read_all`] of an XML file with its record element.
    pub fn read_all_with(path: &std::path::Path, format: FileFormat, record_element: &str, from: Cursor) -> Collected {
        read_all_impl(path, format, false, 64, from, record_element, u64::MAX)
    }

    fn read_all_impl(path: &std::path::Path, format: FileFormat, gzip: bool, buf_size: usize, from: Cursor, record_element: &str, max_record: u64) -> Collected {
        let (tx, mut rx) = mpsc::channel(1 << 16);
        let reader = Reader { files: Arc::new(vec![path.to_path_buf()]), format, gzip, delimiter: b',', record_element: Arc::from(record_element), buf_size, max_record };
        let out = Emitter::new(tx, 7);
        std::thread::spawn(move || reader.run(from, out)).join().unwrap();
        let mut c = Collected::default();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Ok(chunk) => {
                    for ((r, p), e) in chunk.records.into_iter().zip(chunk.positions).zip(chunk.ends) {
                        c.records.push((p, r, e));
                    }
                    for (b, e) in chunk.bad.into_iter().zip(chunk.bad_ends) {
                        c.bad.push((b, e));
                    }
                }
                Err(e) => c.error = Some(e.to_string()),
            }
        }
        c
    }
}
