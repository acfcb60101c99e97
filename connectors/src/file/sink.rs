//! The file sink: writes into a temporary file beside the destination
//! (`.<name>.dagg-tmp`) and renames it over the destination on `commit`, so the destination
//! only ever holds whole, committed output — a crash never leaves it half-written.
//!
//! After a commit, the next write starts a new temporary file as a copy of the committed
//! destination without its trailer (JSON's closing `]`) and appends to it; the next commit
//! renames that over the destination again. A run that commits once at its end never
//! copies; one that commits often copies the committed output each time (in-kernel, but
//! still proportional to the file), which is the price of atomic renames.
//!
//! Layouts: `jsonl` one compact object per line; `json` an array with one element per line,
//! `[\n{..},\n{..}\n]\n`, or `[]\n` when empty — valid JSON after every commit; `csv` a
//! header from the first record's fields, then one row per record (see [`super::csv`]).
//! With gzip, each commit ends a gzip member (readers decode concatenated members), and
//! JSON's trailer is a member of its own so the next segment can drop it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use dagg_model::spec::connector::{Compression, FileConfig, FileFormat};
use dagg_model::{Record, Str, Value};
use flate2::write::GzEncoder;

use super::csv::{write_cell, write_text};
use super::xml;
use crate::{ConnectorError, SinkConnector};

/// Serialized bytes wait in memory until there are this many.
const FLUSH_AT: usize = 256 << 10;

enum Out {
    Plain(File),
    Gzip(GzEncoder<File>),
}

impl Out {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Out::Plain(f) => f.write_all(bytes),
            Out::Gzip(g) => g.write_all(bytes),
        }
    }

    /// Ends the segment (the gzip member) and returns the file.
    fn finish(self) -> io::Result<File> {
        match self {
            Out::Plain(f) => Ok(f),
            Out::Gzip(g) => g.finish(),
        }
    }
}

/// What the destination holds after the last commit.
#[derive(Clone, Copy)]
struct Committed {
    /// Bytes of the trailer at its end (removed before appending).
    trailer_len: u64,
}

/// The file sink. Built by [`crate::open_sink`].
pub struct FileSink {
    target: PathBuf,
    tmp: PathBuf,
    format: FileFormat,
    gzip: bool,
    delimiter: u8,
    /// XML: the record and root elements.
    record_element: String,
    root_element: String,
    /// The uncommitted segment, when writing has started since the last commit.
    out: Option<Out>,
    buf: Vec<u8>,
    committed: Option<Committed>,
    /// JSON elements written, and as of the last commit.
    elements: u64,
    committed_elements: u64,
    /// The CSV header in force, and as of the last commit.
    header: Option<Vec<Str>>,
    committed_header: Option<Vec<Str>>,
    /// Set once a checkpoint refers to the temporary file: from then on it outlives this
    /// value, so a retry or a later process can resume from it.
    checkpointed: bool,
}

impl FileSink {
    /// Prepares the sink: creates missing parent folders; writes nothing yet.
    pub fn open(config: &FileConfig, base_dir: &Path) -> Result<FileSink, ConnectorError> {
        let target = super::path::resolve(base_dir, &config.path);
        let Some(name) = target.file_name() else {
            return Err(ConnectorError::Config(format!("destination `{}` does not name a file", target.display())));
        };
        if target.is_dir() {
            return Err(ConnectorError::Config(format!("destination `{}` is a folder, not a file", target.display())));
        }
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(".dagg-tmp");
        let tmp = target.with_file_name(tmp_name);
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .map_err(|source| ConnectorError::Open { path: parent.display().to_string(), source })?;
        }
        Ok(FileSink {
            target,
            tmp,
            format: config.format,
            gzip: config.effective_compression() == Compression::Gzip,
            delimiter: config.delimiter_byte(),
            record_element: config.record_element.clone().unwrap_or_else(|| xml::DEFAULT_RECORD.into()),
            root_element: config.root_element.clone().unwrap_or_else(|| xml::DEFAULT_ROOT.into()),
            out: None,
            buf: Vec::with_capacity(FLUSH_AT + (64 << 10)),
            committed: None,
            elements: 0,
            committed_elements: 0,
            header: None,
            committed_header: None,
            checkpointed: false,
        })
    }

    fn write_err(&self, source: io::Error) -> ConnectorError {
        ConnectorError::Write { path: self.tmp.display().to_string(), source }
    }

    /// Opens the temporary file for a new segment: empty, or the committed output without
    /// its trailer.
    async fn begin(&mut self) -> Result<(), ConnectorError> {
        let (target, tmp, gzip) = (self.target.clone(), self.tmp.clone(), self.gzip);
        let trailer = self.committed.map(|c| c.trailer_len);
        let file = blocking(move || -> io::Result<File> {
            match trailer {
                None => File::create(&tmp),
                Some(trailer) => {
                    fs::copy(&target, &tmp)?;
                    let mut f = OpenOptions::new().write(true).open(&tmp)?;
                    let len = f.metadata()?.len();
                    let keep = len.checked_sub(trailer).ok_or_else(|| {
                        io::Error::other(format!("`{}` is shorter than when it was committed", target.display()))
                    })?;
                    f.set_len(keep)?;
                    f.seek(SeekFrom::Start(keep))?;
                    Ok(f)
                }
            }
        })
        .await
        .map_err(|e| self.write_err(e))?;
        self.out =
            Some(if gzip { Out::Gzip(GzEncoder::new(file, flate2::Compression::default())) } else { Out::Plain(file) });
        if self.format == FileFormat::Json && self.committed.is_none() {
            self.buf.push(b'[');
        }
        if self.format == FileFormat::Xml && self.committed.is_none() {
            self.buf.extend_from_slice(xml::header(&self.root_element).as_bytes());
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<(), ConnectorError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let out = self.out.as_mut().expect("a segment is open while writing");
        let r = out.write_all(&self.buf);
        self.buf.clear();
        r.map_err(|e| self.write_err(e))
    }

    /// Appends one CSV row, or says why the record cannot be one.
    fn csv_row(&mut self, r: &Record) -> Result<(), String> {
        let d = self.delimiter;
        let header = match &self.header {
            Some(h) => h,
            None => {
                if r.is_empty() {
                    return Err(
                        "a CSV record needs at least one field (the header is taken from the first record)".into()
                    );
                }
                let names: Vec<Str> = r.keys().cloned().collect();
                for (i, n) in names.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(d);
                    }
                    write_text(&mut self.buf, n.as_bytes(), d);
                }
                self.buf.push(b'\n');
                self.header.insert(names)
            }
        };
        let in_order = r.len() == header.len() && r.keys().zip(header.iter()).all(|(k, h)| k == h);
        if !in_order && let Some(k) = r.keys().find(|k| !header.contains(k)) {
            return Err(format!(
                "field `{k}` is not in the CSV header ({}); the header comes from the first record written",
                header.join(", ")
            ));
        }
        if header.len() == 1 && r.get(&header[0]).is_none_or(Value::is_null) {
            return Err("a one-column CSV row cannot hold null: it would be a blank line, which readers skip".into());
        }
        if in_order {
            for (i, v) in r.values().enumerate() {
                if i > 0 {
                    self.buf.push(d);
                }
                write_cell(&mut self.buf, v, d);
            }
        } else {
            for (i, h) in header.iter().enumerate() {
                if i > 0 {
                    self.buf.push(d);
                }
                if let Some(v) = r.get(h) {
                    write_cell(&mut self.buf, v, d);
                }
            }
        }
        self.buf.push(b'\n');
        Ok(())
    }

    /// Forgets the uncommitted segment.
    fn discard(&mut self) -> io::Result<()> {
        self.out = None;
        self.buf.clear();
        self.elements = self.committed_elements;
        self.header = self.committed_header.clone();
        match fs::remove_file(&self.tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl SinkConnector for FileSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        if self.out.is_none() {
            self.begin().await?;
        }
        let mut refused = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match self.format {
                FileFormat::Jsonl => {
                    // The bytes serde_json would write (see dagg_model::json), without serde.
                    dagg_model::json::write_map(&mut self.buf, r);
                    self.buf.push(b'\n');
                }
                FileFormat::Json => {
                    self.buf.extend_from_slice(if self.elements == 0 { b"\n" } else { b",\n" });
                    dagg_model::json::write_map(&mut self.buf, r);
                    self.elements += 1;
                }
                FileFormat::Csv => {
                    if let Err(reason) = self.csv_row(r) {
                        refused.push((i, reason));
                    }
                }
                FileFormat::Xml => {
                    if let Err(reason) = xml::write_record(&mut self.buf, &self.record_element, r) {
                        refused.push((i, reason));
                    }
                }
                FileFormat::Parquet => unreachable!("a Parquet destination is a `ParquetSink`"),
            }
            if self.buf.len() >= FLUSH_AT {
                self.flush_buf()?;
            }
        }
        Ok(refused)
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.out.is_none() {
            if self.committed.is_some() {
                return Ok(());
            }
            // Nothing written at all: the destination still appears (`[]` for JSON).
            self.begin().await?;
        }
        self.flush_buf()?;
        let out = self.out.take().expect("a segment is open");
        let trailer: Vec<u8> = match self.format {
            FileFormat::Json if self.elements == 0 => b"]\n".to_vec(),
            FileFormat::Json => b"\n]\n".to_vec(),
            FileFormat::Xml => xml::trailer(&self.root_element).into_bytes(),
            FileFormat::Jsonl | FileFormat::Csv | FileFormat::Parquet => Vec::new(),
        };
        let (target, tmp, gzip) = (self.target.clone(), self.tmp.clone(), self.gzip);
        let done = blocking(move || -> io::Result<u64> {
            let mut file = out.finish()?;
            let trailer_len = if trailer.is_empty() {
                0
            } else if gzip {
                // Its own member, so the next segment can cut it off whole.
                let mut g = GzEncoder::new(Vec::new(), flate2::Compression::default());
                g.write_all(&trailer)?;
                let member = g.finish()?;
                file.write_all(&member)?;
                member.len() as u64
            } else {
                file.write_all(&trailer)?;
                trailer.len() as u64
            };
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &target)?;
            sync_dir(&target);
            Ok(trailer_len)
        })
        .await;
        match done {
            Ok(trailer_len) => {
                tracing::debug!(file = %self.target.display(), "committed");
                self.committed = Some(Committed { trailer_len });
                self.committed_elements = self.elements;
                self.committed_header = self.header.clone();
                Ok(())
            }
            Err(source) => {
                let _ = self.discard();
                Err(ConnectorError::Commit { path: self.target.display().to_string(), source })
            }
        }
    }

    async fn abort(&mut self) -> Result<(), ConnectorError> {
        self.discard().map_err(|source| ConnectorError::Write { path: self.tmp.display().to_string(), source })
    }

    /// Flushes and fsyncs the temporary file (ending the gzip member) and returns its
    /// length: everything up to it survives a crash, and [`SinkConnector::recover`] cuts the
    /// file back to it.
    async fn pre_commit(&mut self, _epoch: u64) -> Result<serde_json::Value, ConnectorError> {
        if self.out.is_none() {
            self.begin().await?;
        }
        self.flush_buf()?;
        let out = self.out.take().expect("a segment is open");
        let gzip = self.gzip;
        let synced = blocking(move || -> io::Result<(File, u64)> {
            let mut f = out.finish()?;
            f.flush()?;
            f.sync_data()?;
            let len = f.stream_position()?;
            Ok((f, len))
        })
        .await;
        let (file, bytes) = match synced {
            Ok(x) => x,
            Err(e) => return Err(self.write_err(e)),
        };
        self.out = Some(if gzip { Out::Gzip(GzEncoder::new(file, flate2::Compression::default())) } else { Out::Plain(file) });
        self.checkpointed = true;
        Ok(serde_json::json!({"version": 1, "bytes": bytes, "elements": self.elements, "header": self.header}))
    }

    /// Reopens the temporary file a killed process left and cuts it back to the length a
    /// completed checkpoint recorded. When the temporary file is gone but the destination is
    /// there, the crash came after the final rename: the output is already in place.
    async fn recover(&mut self, token: &serde_json::Value, _epoch: u64) -> Result<(), ConnectorError> {
        let bad = |why: &str| ConnectorError::Seek(format!("file destination `{}`: {why}", self.target.display()));
        let bytes = token.get("bytes").and_then(serde_json::Value::as_u64).ok_or_else(|| bad("the checkpoint has no byte length"))?;
        let elements = token.get("elements").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let header: Option<Vec<Str>> = match token.get("header") {
            Some(h) if !h.is_null() => Some(serde_json::from_value(h.clone()).map_err(|e| bad(&format!("bad CSV header in the checkpoint: {e}")))?),
            _ => None,
        };
        self.out = None;
        self.buf.clear();
        if !self.tmp.exists() {
            if self.target.exists() {
                self.committed = Some(Committed { trailer_len: 0 });
                return Ok(());
            }
            return Err(bad(&format!("its temporary file `{}` is missing, so the output written before the interruption is lost", self.tmp.display())));
        }
        let tmp = self.tmp.clone();
        let file = blocking(move || -> io::Result<File> {
            let mut f = OpenOptions::new().write(true).open(&tmp)?;
            let len = f.metadata()?.len();
            if len < bytes {
                return Err(io::Error::other(format!("it holds {len} bytes, fewer than the {bytes} the checkpoint recorded")));
            }
            f.set_len(bytes)?;
            f.seek(SeekFrom::Start(bytes))?;
            Ok(f)
        })
        .await
        .map_err(|e| bad(&e.to_string()))?;
        self.out = Some(if self.gzip { Out::Gzip(GzEncoder::new(file, flate2::Compression::default())) } else { Out::Plain(file) });
        self.committed = None;
        self.elements = elements;
        self.committed_elements = 0;
        self.header = header;
        self.committed_header = None;
        self.checkpointed = true;
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if self.out.is_some() && !self.checkpointed {
            let _ = self.discard();
        }
    }
}

/// Makes a rename durable: the folder's entry is what changed.
fn sync_dir(target: &Path) {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Not every platform can open a folder for syncing; the rename itself has happened.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Runs blocking file work (copies, fsync, renames) off the async executor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(io::Error::other(format!("file task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(dir: &Path, path: &str, format: FileFormat) -> FileSink {
        let config = FileConfig { path: path.into(), format, ..crate::file::tests_config() };
        FileSink::open(&config, dir).unwrap()
    }

    fn rec(s: &str) -> Record {
        serde_json::from_str(s).unwrap()
    }

    #[tokio::test]
    async fn json_is_valid_after_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), "out/a.json", FileFormat::Json);
        let target = dir.path().join("out/a.json");
        s.commit().await.unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "[]\n");
        s.write(&[rec(r#"{"a":1}"#)]).await.unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "[]\n", "not visible before commit");
        s.commit().await.unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "[\n{\"a\":1}\n]\n");
        s.write(&[rec(r#"{"a":2}"#), rec(r#"{"a":3.0}"#)]).await.unwrap();
        s.commit().await.unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "[\n{\"a\":1},\n{\"a\":2},\n{\"a\":3.0}\n]\n");
        assert!(!dir.path().join("out/.a.json.dagg-tmp").exists());
    }

    #[tokio::test]
    async fn recover_cuts_back_to_the_checkpoint_in_every_format() {
        for (path, format) in [("a.jsonl", FileFormat::Jsonl), ("a.json", FileFormat::Json), ("a.csv", FileFormat::Csv), ("a.json.gz", FileFormat::Json), ("a.jsonl.gz", FileFormat::Jsonl), ("a.xml", FileFormat::Xml), ("a.xml.gz", FileFormat::Xml)] {
            let dir = tempfile::tempdir().unwrap();
            let mut s = sink(dir.path(), path, format);
            s.write(&[rec(r#"{"a":1}"#), rec(r#"{"a":2}"#)]).await.unwrap();
            let token = s.pre_commit(1).await.unwrap();
            s.write(&[rec(r#"{"a":99}"#)]).await.unwrap();
            let _ = s.pre_commit(2).await.unwrap();
            s.write(&[rec(r#"{"a":100}"#)]).await.unwrap();
            s.flush_buf().unwrap();
            std::mem::forget(s); // a killed process runs no destructor

            let mut s = sink(dir.path(), path, format);
            s.recover(&token, 1).await.unwrap();
            s.write(&[rec(r#"{"a":3}"#)]).await.unwrap();
            s.commit().await.unwrap();
            let mut src = crate::file::FileSource::open(
                &FileConfig { path: path.into(), format, ..crate::file::tests_config() },
                dir.path(),
            )
            .unwrap();
            let mut got = Vec::new();
            while let Some(b) = crate::SourceConnector::next_batch(&mut src, 100).await.unwrap() {
                assert!(b.bad.is_empty(), "{path}: {:?}", b.bad);
                got.extend(b.batch.records.iter().map(|r| r.get("a").unwrap().to_text()));
            }
            assert_eq!(got, ["1", "2", "3"], "{path}");
        }
    }

    #[tokio::test]
    async fn recover_after_the_final_rename_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), "a.jsonl", FileFormat::Jsonl);
        s.write(&[rec(r#"{"a":1}"#)]).await.unwrap();
        let token = s.pre_commit(1).await.unwrap();
        s.commit().await.unwrap();
        let mut s = sink(dir.path(), "a.jsonl", FileFormat::Jsonl);
        s.recover(&token, 1).await.unwrap();
        s.commit().await.unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("a.jsonl")).unwrap(), "{\"a\":1}\n");
    }

    #[tokio::test]
    async fn csv_refuses_fields_outside_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), "a.csv", FileFormat::Csv);
        let refused = s
            .write(&[
                rec(r#"{"id":1,"name":"a,b","note":""}"#),
                rec(r#"{"note":null,"id":2}"#),
                rec(r#"{"id":3,"extra":true}"#),
            ])
            .await
            .unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, 2);
        assert!(refused[0].1.contains("`extra` is not in the CSV header (id, name, note)"), "{}", refused[0].1);
        s.commit().await.unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("a.csv")).unwrap(), "id,name,note\n1,\"a,b\",\"\"\n2,,\n");
    }
}
