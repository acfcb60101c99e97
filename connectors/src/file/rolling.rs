//! Rolling file destinations: with `max_records` and/or `max_file_size`, the destination
//! `out.jsonl` becomes `out-00001.jsonl`, `out-00002.jsonl`, … A part is closed once it holds
//! `max_records` records or `max_file_size` bytes (before compression; the record that
//! crosses the size is the part's last, so a part may exceed it by one record), and the next
//! record starts the next part.
//!
//! Each part is an ordinary file destination (temporary file, fsync at each checkpoint,
//! rename on commit), so every part is committed with the checkpoint exactly like a single
//! file: nothing is visible before the commit, and a recovery cuts every part back to the
//! checkpoint and discards parts begun after it. The checkpoint token lists the parts with
//! their own tokens and counts.

use std::path::{Path, PathBuf};

use dagg_model::Record;
use dagg_model::spec::connector::{FileConfig, FileFormat};
use serde_json::json;

use super::parquet::ParquetSink;
use super::sink::FileSink;
use crate::{ConnectorError, SinkConnector};

/// A part: its sink and what it holds.
struct Part {
    index: u32,
    sink: Box<dyn SinkConnector>,
    records: u64,
    bytes: u64,
}

/// The rolling destination. Built by [`super::open_sink`].
pub struct RollingSink {
    config: FileConfig,
    base_dir: PathBuf,
    target: PathBuf,
    max_records: Option<u64>,
    max_bytes: Option<u64>,
    /// Parts written since the last commit (the last one is the open part), in order.
    parts: Vec<Part>,
    /// The index of the next part to begin when `parts` is empty.
    next: u32,
    /// Whether a commit has happened (an empty output still gets its first part).
    committed_any: bool,
}

/// `dir/out.jsonl.gz` → `dir/out-00007.jsonl.gz`.
pub(crate) fn part_path(target: &Path, index: u32) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (rest, gz) = match name.strip_suffix(".gz") {
        Some(r) => (r.to_string(), ".gz"),
        None => (name.clone(), ""),
    };
    let (stem, ext) = match rest.rfind('.') {
        Some(i) if i > 0 => (&rest[..i], &rest[i..]),
        _ => (rest.as_str(), ""),
    };
    target.with_file_name(format!("{stem}-{index:05}{ext}{gz}"))
}

impl RollingSink {
    pub fn open(config: &FileConfig, base_dir: &Path) -> Result<RollingSink, ConnectorError> {
        let target = super::path::resolve(base_dir, &config.path);
        if target.file_name().is_none() {
            return Err(ConnectorError::Config(format!("destination `{}` does not name a file", target.display())));
        }
        let single = FileConfig { max_records: None, max_file_size: None, ..config.clone() };
        Ok(RollingSink {
            config: single,
            base_dir: base_dir.to_path_buf(),
            target,
            max_records: config.max_records,
            max_bytes: config.max_file_size,
            parts: Vec::new(),
            next: 1,
            committed_any: false,
        })
    }

    fn open_part(&self, index: u32) -> Result<Box<dyn SinkConnector>, ConnectorError> {
        let path = part_path(&self.target, index);
        let c = FileConfig { path: path.display().to_string(), ..self.config.clone() };
        open_file(&c, &self.base_dir)
    }

    /// The index the next new part gets.
    fn next_index(&self) -> u32 {
        self.parts.last().map(|p| p.index + 1).unwrap_or(self.next)
    }

    fn full(&self, p: &Part) -> bool {
        self.max_records.is_some_and(|m| p.records >= m) || self.max_bytes.is_some_and(|m| p.bytes >= m)
    }

    /// The part to write the next record to, starting a new one when the open one is full.
    fn current(&mut self) -> Result<usize, ConnectorError> {
        if self.parts.last().is_none_or(|p| self.full(p)) {
            let index = self.next_index();
            let sink = self.open_part(index)?;
            self.parts.push(Part { index, sink, records: 0, bytes: 0 });
        }
        Ok(self.parts.len() - 1)
    }
}

/// Whether a part has uncommitted output beside it (its temporary file, or a Parquet
/// part's staging temporary file).
fn has_temporary(part: &Path) -> bool {
    let name = part.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    [format!(".{name}.dagg-tmp"), format!("..{name}.dagg-stage.jsonl.dagg-tmp")].iter().any(|t| part.with_file_name(t).exists())
}

/// The size a record takes in the part: its JSON text (a close, format-independent measure).
fn size(r: &Record) -> u64 {
    let mut text = Vec::new();
    dagg_model::json::write_map(&mut text, r);
    text.len() as u64 + 1
}

#[async_trait::async_trait]
impl SinkConnector for RollingSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        let mut refused = Vec::new();
        let mut i = 0;
        while i < records.len() {
            let p = self.current()?;
            // As many records as fit: the rest of `max_records`, and one at a time under a size limit.
            let room = self.max_records.map(|m| m.saturating_sub(self.parts[p].records).max(1) as usize).unwrap_or(records.len() - i);
            let n = if self.max_bytes.is_some() { 1 } else { room.min(records.len() - i) };
            let chunk = &records[i..i + n];
            let part = &mut self.parts[p];
            let bad = part.sink.write(chunk).await?;
            for (j, why) in &bad {
                refused.push((i + j, why.clone()));
            }
            part.records += (chunk.len() - bad.len()) as u64;
            if self.max_bytes.is_some() {
                part.bytes += chunk.iter().enumerate().filter(|(j, _)| !bad.iter().any(|(b, _)| b == j)).map(|(_, r)| size(r)).sum::<u64>();
            }
            i += n;
        }
        Ok(refused)
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.parts.is_empty() && !self.committed_any {
            // Nothing written: the first part still appears (empty), as a single file would.
            self.current()?;
        }
        self.committed_any = true;
        for p in self.parts.iter_mut() {
            p.sink.commit().await?;
        }
        // Keep only the open part (it goes on after this commit), unless it is full.
        let last = self.parts.pop();
        self.parts.clear();
        if let Some(p) = last {
            if self.full(&p) {
                self.next = p.index + 1;
            } else {
                self.next = p.index;
                self.parts.push(p);
            }
        }
        Ok(())
    }

    async fn abort(&mut self) -> Result<(), ConnectorError> {
        for p in self.parts.iter_mut() {
            p.sink.abort().await?;
        }
        // Parts begun since the last commit are gone; a part that was committed before stays.
        self.parts.clear();
        Ok(())
    }

    async fn pre_commit(&mut self, epoch: u64) -> Result<serde_json::Value, ConnectorError> {
        let mut parts = Vec::with_capacity(self.parts.len());
        for p in self.parts.iter_mut() {
            let token = p.sink.pre_commit(epoch).await?;
            parts.push(json!({"index": p.index, "records": p.records, "bytes": p.bytes, "token": token}));
        }
        let next = self.parts.last().map(|p| if self.full(p) { p.index + 1 } else { p.index }).unwrap_or(self.next);
        Ok(json!({"version": 1, "next": next, "rolling": parts}))
    }

    async fn recover(&mut self, token: &serde_json::Value, epoch: u64) -> Result<(), ConnectorError> {
        let bad = |why: &str| ConnectorError::Seek(format!("file destination `{}`: {why} (checkpoint: {token})", self.target.display()));
        let list = token.get("rolling").and_then(|v| v.as_array()).ok_or_else(|| bad("the checkpoint does not list rolled parts"))?;
        let next = token.get("next").and_then(|v| v.as_u64()).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| bad("no `next` part"))?;
        self.parts.clear();
        let mut last = 0;
        for item in list {
            let num = |k: &str| item.get(k).and_then(|v| v.as_u64());
            let (Some(index), Some(records), Some(bytes)) = (num("index"), num("records"), num("bytes")) else {
                return Err(bad("a part without `index`, `records` and `bytes`"));
            };
            let index = u32::try_from(index).map_err(|_| bad("a part index out of range"))?;
            let mut sink = self.open_part(index)?;
            sink.recover(item.get("token").unwrap_or(&serde_json::Value::Null), epoch).await?;
            self.parts.push(Part { index, sink, records, bytes });
            last = index;
        }
        // Parts begun after the checkpoint are discarded.
        let mut index = next.max(last + 1);
        while has_temporary(&part_path(&self.target, index)) {
            self.open_part(index)?.abort().await?;
            index += 1;
        }
        self.next = next;
        Ok(())
    }
}

/// The sink for one whole file: Parquet stages its records (see [`super::parquet`]); every
/// other format writes the file itself.
pub(super) fn open_file(config: &FileConfig, base_dir: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError> {
    Ok(match config.format {
        FileFormat::Parquet => Box::new(ParquetSink::open(config, base_dir)?),
        _ => Box::new(FileSink::open(config, base_dir)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &str, max_records: Option<u64>, max_file_size: Option<u64>) -> FileConfig {
        FileConfig { path: path.into(), format: FileFormat::Jsonl, max_records, max_file_size, ..crate::file::tests_config() }
    }

    fn recs(from: u64, to: u64) -> Vec<Record> {
        (from..to).map(|i| serde_json::from_str(&format!(r#"{{"id":{i}}}"#)).unwrap()).collect()
    }

    fn ids(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_u64().unwrap()).collect()
    }

    #[test]
    fn part_names_keep_the_extension_and_compression() {
        assert_eq!(part_path(Path::new("d/out.jsonl"), 1), Path::new("d/out-00001.jsonl"));
        assert_eq!(part_path(Path::new("out.csv.gz"), 12), Path::new("out-00012.csv.gz"));
        assert_eq!(part_path(Path::new("my.data.json"), 3), Path::new("my.data-00003.json"));
        assert_eq!(part_path(Path::new("noext"), 2), Path::new("noext-00002"));
    }

    #[tokio::test]
    async fn parts_roll_by_records_and_recover_to_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RollingSink::open(&config("out/o.jsonl", Some(10), None), dir.path()).unwrap();
        s.write(&recs(0, 14)).await.unwrap();
        let token = s.pre_commit(1).await.unwrap();
        // Written after the checkpoint, then killed: part 2's tail and parts 3 and 4 are lost.
        s.write(&recs(14, 35)).await.unwrap();
        let _ = s.pre_commit(2).await.unwrap();
        std::mem::forget(s);
        let part = |i| dir.path().join(format!("out/o-{i:05}.jsonl"));
        assert!(!part(1).exists(), "nothing is visible before the commit");

        let mut s = RollingSink::open(&config("out/o.jsonl", Some(10), None), dir.path()).unwrap();
        s.recover(&token, 1).await.unwrap();
        assert!(!dir.path().join("out/.o-00003.jsonl.dagg-tmp").exists(), "parts begun after the checkpoint are discarded");
        s.write(&recs(14, 25)).await.unwrap();
        s.commit().await.unwrap();
        assert_eq!(ids(&part(1)), (0..10).collect::<Vec<_>>());
        assert_eq!(ids(&part(2)), (10..20).collect::<Vec<_>>());
        assert_eq!(ids(&part(3)), (20..25).collect::<Vec<_>>());
        assert!(!part(4).exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().flatten().map(|e| e.file_name()).filter(|n| n.to_string_lossy().starts_with('.')).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // A later commit continues the open part, then rolls on.
        s.write(&recs(25, 32)).await.unwrap();
        s.commit().await.unwrap();
        assert_eq!(ids(&part(3)), (20..30).collect::<Vec<_>>());
        assert_eq!(ids(&part(4)), (30..32).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn parts_roll_by_size() {
        let dir = tempfile::tempdir().unwrap();
        // `{"id":10}` and its newline: 10 bytes; three records cross 25 bytes.
        let mut s = RollingSink::open(&config("o.jsonl", None, Some(25)), dir.path()).unwrap();
        s.write(&recs(10, 17)).await.unwrap();
        s.commit().await.unwrap();
        assert_eq!(ids(&dir.path().join("o-00001.jsonl")), [10, 11, 12]);
        assert_eq!(ids(&dir.path().join("o-00002.jsonl")), [13, 14, 15]);
        assert_eq!(ids(&dir.path().join("o-00003.jsonl")), [16]);
    }
}
