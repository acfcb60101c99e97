//! The node's local state store: checkpoint manifests of pipeline runs, and the high-water
//! marks of incremental sources between runs, in sled under the data directory.
//!
//! sled 0.34 is the last stable release and self-described beta, so it stays behind this
//! one type. Everything written is versioned JSON (`{"version": 1, ...}`): a format change
//! adds a version and a reader for the old one; golden files of every version are read back
//! in tests (`actors/tests/golden/`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use serde::{Deserialize, Serialize};

/// The on-disk format this build writes.
pub const FORMAT_VERSION: u32 = 1;

const META_FORMAT: &[u8] = b"meta/format_version";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the run state at {path} (is another run of this pipeline using it?): {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the state store at {path} was written by a newer dagg (format {found}, this build reads up to {FORMAT_VERSION})")]
    TooNew { path: PathBuf, found: u32 },
    #[error("state store: {0}")]
    Io(#[from] sled::Error),
    #[error("state store: a stored checkpoint of `{pipeline}` cannot be read: {reason}")]
    Decode { pipeline: String, reason: String },
}

/// What a completed checkpoint holds: enough to resume a run exactly where it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The format of this record.
    pub version: u32,
    /// 1, 2, … within a run.
    pub id: u64,
    pub run_id: String,
    /// A digest of the pipeline document the run was started from; a changed document does
    /// not resume an old run.
    pub spec_digest: String,
    /// Where the source resumes (its `checkpoint()`).
    pub source: serde_json::Value,
    /// Each destination's committed position, in destination order.
    pub sinks: Vec<serde_json::Value>,
    /// The dead-letter destination's committed position.
    pub dead_letter: Option<serde_json::Value>,
    /// The transformation chain's state (aggregates, seen keys), as its snapshot wrote it.
    pub chain_state: serde_json::Value,
    /// Counters so far, so a resumed run reports the whole run.
    pub counts: CheckpointCounts,
    /// True once the input is exhausted and the final checkpoint is taken: what remains is
    /// to move the output into place.
    pub input_done: bool,
    /// When it was taken (RFC 3339).
    pub at: String,
}

/// Counters carried across a resume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointCounts {
    pub read: u64,
    pub written: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    pub filtered: u64,
}

/// Where an incremental source stood at the end of a pipeline's last successful run: the
/// next run that does not resume a checkpoint starts its source there (`highwater/<pipeline>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HighWater {
    /// The format of this record.
    pub version: u32,
    /// The run that reached it.
    pub run_id: String,
    /// What the source reads (connector type, server, table or query, cursor field): a mark
    /// is only used by the same source.
    pub identity: serde_json::Value,
    /// The source's final checkpoint (its `checkpoint()` at the end of the input).
    pub source: serde_json::Value,
    /// When the run finished (RFC 3339).
    pub at: String,
}

/// The node's state store.
#[derive(Clone)]
pub struct Store {
    db: Arc<sled::Db>,
}

/// The stores open in this process, by folder: a run that opens a store another part of the
/// process still holds (the stages of the previous run of the same pipeline, stopping) shares
/// it instead of failing on sled's file lock. The last holder's drop closes it.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<sled::Db>>>> = LazyLock::new(Mutex::default);

impl Store {
    /// Opens (creating) the store in `dir`, or shares it when this process has it open.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.to_path_buf();
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, w| w.strong_count() > 0);
        if let Some(db) = open.get(&key).and_then(Weak::upgrade) {
            return Ok(Store { db });
        }
        let db = sled::Config::new().path(&path).flush_every_ms(None).open().map_err(|source| StoreError::Open { path: path.clone(), source })?;
        match db.get(META_FORMAT)? {
            Some(v) => {
                let found = u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0, 0, 0, 0]));
                if found > FORMAT_VERSION {
                    return Err(StoreError::TooNew { path, found });
                }
            }
            None => {
                db.insert(META_FORMAT, &FORMAT_VERSION.to_be_bytes())?;
                db.flush()?;
            }
        }
        let db = Arc::new(db);
        // Keyed by the folder as opened when it did not exist before (canonicalize needs it).
        let key = std::fs::canonicalize(&path).unwrap_or(key);
        open.insert(key, Arc::downgrade(&db));
        Ok(Store { db })
    }

    /// Like [`Store::open`], but while another run of the same pipeline in this process is
    /// still letting go of the store (its stages are stopping), waits for it, up to `patience`.
    pub async fn open_when_free(dir: &Path, patience: std::time::Duration) -> Result<Store, StoreError> {
        let started = std::time::Instant::now();
        loop {
            match Store::open(dir) {
                Err(StoreError::Open { source: sled::Error::Io(e), .. }) if e.to_string().contains("could not acquire lock") && started.elapsed() < patience => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    fn key(pipeline: &str) -> Vec<u8> {
        format!("checkpoint/{pipeline}").into_bytes()
    }

    /// The last completed checkpoint of `pipeline`'s unfinished run, if any.
    pub fn checkpoint(&self, pipeline: &str) -> Result<Option<Checkpoint>, StoreError> {
        let Some(bytes) = self.db.get(Self::key(pipeline))? else {
            return Ok(None);
        };
        decode_checkpoint(&bytes).map(Some).map_err(|reason| StoreError::Decode { pipeline: pipeline.to_string(), reason })
    }

    /// Records a completed checkpoint durably (flushed before returning).
    pub fn save_checkpoint(&self, pipeline: &str, cp: &Checkpoint) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(cp).expect("a checkpoint serializes");
        self.db.insert(Self::key(pipeline), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    /// Forgets `pipeline`'s checkpoint (its run finished, or the user asked to start over).
    pub fn clear_checkpoint(&self, pipeline: &str) -> Result<(), StoreError> {
        self.db.remove(Self::key(pipeline))?;
        self.db.flush()?;
        Ok(())
    }

    fn high_water_key(pipeline: &str) -> Vec<u8> {
        format!("highwater/{pipeline}").into_bytes()
    }

    /// The high-water mark `pipeline`'s last successful run left, if any.
    pub fn high_water(&self, pipeline: &str) -> Result<Option<HighWater>, StoreError> {
        let Some(bytes) = self.db.get(Self::high_water_key(pipeline))? else {
            return Ok(None);
        };
        decode_high_water(&bytes).map(Some).map_err(|reason| StoreError::Decode { pipeline: pipeline.to_string(), reason })
    }

    /// Forgets `pipeline`'s high-water mark (a full refresh).
    pub fn clear_high_water(&self, pipeline: &str) -> Result<(), StoreError> {
        self.db.remove(Self::high_water_key(pipeline))?;
        self.db.flush()?;
        Ok(())
    }

    /// A run finished: forgets its checkpoint and, in the same atomic write, records the
    /// source's high-water mark when there is one.
    pub fn finish_run(&self, pipeline: &str, mark: Option<&HighWater>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.remove(Self::key(pipeline));
        if let Some(m) = mark {
            batch.insert(Self::high_water_key(pipeline), serde_json::to_vec(m).expect("a high-water mark serializes"));
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }
}

/// Where a run's checkpoints go: the node's durable store, or memory (a run without a data
/// directory can still retry from its last checkpoint, but not survive the process).
#[derive(Clone)]
pub enum Checkpoints {
    Durable(Store),
    Memory(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Checkpoint>>>),
}

impl Checkpoints {
    pub fn memory() -> Self {
        Checkpoints::Memory(Default::default())
    }

    pub fn load(&self, pipeline: &str) -> Result<Option<Checkpoint>, StoreError> {
        match self {
            Checkpoints::Durable(s) => s.checkpoint(pipeline),
            Checkpoints::Memory(m) => Ok(m.lock().unwrap_or_else(|e| e.into_inner()).get(pipeline).cloned()),
        }
    }

    pub fn save(&self, pipeline: &str, cp: &Checkpoint) -> Result<(), StoreError> {
        match self {
            Checkpoints::Durable(s) => s.save_checkpoint(pipeline, cp),
            Checkpoints::Memory(m) => {
                m.lock().unwrap_or_else(|e| e.into_inner()).insert(pipeline.to_string(), cp.clone());
                Ok(())
            }
        }
    }

    pub fn clear(&self, pipeline: &str) -> Result<(), StoreError> {
        match self {
            Checkpoints::Durable(s) => s.clear_checkpoint(pipeline),
            Checkpoints::Memory(m) => {
                m.lock().unwrap_or_else(|e| e.into_inner()).remove(pipeline);
                Ok(())
            }
        }
    }

    /// The last run's high-water mark. Memory keeps none: without a data directory every
    /// process starts from the beginning.
    pub fn high_water(&self, pipeline: &str) -> Result<Option<HighWater>, StoreError> {
        match self {
            Checkpoints::Durable(s) => s.high_water(pipeline),
            Checkpoints::Memory(_) => Ok(None),
        }
    }

    pub fn clear_high_water(&self, pipeline: &str) -> Result<(), StoreError> {
        match self {
            Checkpoints::Durable(s) => s.clear_high_water(pipeline),
            Checkpoints::Memory(_) => Ok(()),
        }
    }

    /// The run finished: forget its checkpoint and keep `mark` (see [`Store::finish_run`]).
    pub fn finish(&self, pipeline: &str, mark: Option<&HighWater>) -> Result<(), StoreError> {
        match self {
            Checkpoints::Durable(s) => s.finish_run(pipeline, mark),
            Checkpoints::Memory(_) => self.clear(pipeline),
        }
    }
}

/// Reads any stored version of a high-water mark.
pub fn decode_high_water(bytes: &[u8]) -> Result<HighWater, String> {
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let v: Versioned = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match v.version {
        1 => serde_json::from_slice(bytes).map_err(|e| format!("high-water mark: {e}")),
        other => Err(format!("unknown high-water mark format {other} (this build reads 1)")),
    }
}

/// Reads any stored version of a checkpoint.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, String> {
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let v: Versioned = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match v.version {
        1 => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        other => Err(format!("unknown checkpoint format {other} (this build reads 1)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            version: FORMAT_VERSION,
            id: 3,
            run_id: "r1".into(),
            spec_digest: "abc".into(),
            source: serde_json::json!({"file": 0, "offset": 1234, "line": 20}),
            sinks: vec![serde_json::json!({"bytes": 999})],
            dead_letter: None,
            chain_state: serde_json::Value::Null,
            counts: CheckpointCounts { read: 20, written: 18, dead_lettered: 1, dropped: 0, filtered: 1 },
            input_done: false,
            at: "2025-01-16T08:00:00.000Z".into(),
        }
    }

    #[test]
    fn checkpoints_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.checkpoint("p").unwrap(), None);
            s.save_checkpoint("p", &sample()).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.checkpoint("p").unwrap(), Some(sample()));
        s.clear_checkpoint("p").unwrap();
        assert_eq!(s.checkpoint("p").unwrap(), None);
    }

    #[test]
    fn golden_version_1_reads_back() {
        let text = include_str!("../tests/golden/checkpoint-v1.json");
        let cp = decode_checkpoint(text.as_bytes()).unwrap();
        assert_eq!(cp.version, 1);
        assert_eq!(cp.counts.read, 20);
    }

    #[test]
    fn a_finished_run_keeps_its_high_water_mark_and_forgets_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mark = HighWater {
            version: FORMAT_VERSION,
            run_id: "r1".into(),
            identity: serde_json::json!({"connector_type": "postgresql", "table": "orders"}),
            source: serde_json::json!({"version": 1, "cursor": "2025-01-01T00:10:00Z", "done": true}),
            at: "2025-01-16T08:00:00.000Z".into(),
        };
        {
            let s = Store::open(dir.path()).unwrap();
            s.save_checkpoint("p", &sample()).unwrap();
            s.finish_run("p", Some(&mark)).unwrap();
            assert_eq!(s.checkpoint("p").unwrap(), None);
            // A run without a mark (not incremental) leaves the old one alone.
            s.finish_run("p", None).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.high_water("p").unwrap(), Some(mark));
        assert_eq!(s.high_water("other").unwrap(), None);
        s.clear_high_water("p").unwrap();
        assert_eq!(s.high_water("p").unwrap(), None);
    }

    #[test]
    fn golden_high_water_version_1_reads_back() {
        let text = include_str!("../tests/golden/highwater-v1.json");
        let m = decode_high_water(text.as_bytes()).unwrap();
        assert_eq!(m.source["cursor"], "2025-01-15T08:30:00Z");
        assert!(decode_high_water(br#"{"version": 7}"#).unwrap_err().contains("unknown high-water mark format 7"));
    }

    #[test]
    fn unknown_versions_are_refused() {
        assert!(decode_checkpoint(br#"{"version": 99}"#).unwrap_err().contains("unknown checkpoint format 99"));
    }
}
