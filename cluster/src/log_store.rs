//! The Raft log, vote and commit point in sled (`<data-dir>/raft`).
//!
//! Entries are JSON under their big-endian index in the `logs` tree; the vote, the commit
//! point and the last purged id are JSON in `state`. The layout's version is stored under
//! `state/format` and checked on open: a store of another version is refused, never
//! misread. In a cluster of two or more members an append is acknowledged to openraft only
//! after sled has flushed it (a vote always): a node never forgets what it promised after a
//! crash. A cluster of one has nobody to break a promise to: its appends are flushed by
//! sled every half second, like the metadata store before the cluster (a crash loses at
//! most that much), which keeps a single node's writes fast.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError, Vote};

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// The version of the on-disk layout this build writes and reads.
pub const LOG_FORMAT: u64 = 1;

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
const FORMAT: &str = "format";

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("raft log storage at {path}: {source}")]
    Storage { path: String, source: sled::Error },
    #[error("raft log at {path} is of format {found}; this build reads format {LOG_FORMAT}")]
    Format { path: String, found: String },
}

#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    /// Flush every append before acknowledging it (more than one member).
    sync: Arc<AtomicBool>,
    logs: sled::Tree,
    state: sled::Tree,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    pub fn open(dir: &Path, sync: Arc<AtomicBool>) -> Result<LogStore, OpenError> {
        let path = dir.display().to_string();
        let st = |source| OpenError::Storage { path: path.clone(), source };
        let db = sled::Config::new().path(dir).open().map_err(st)?;
        let logs = db.open_tree("logs").map_err(st)?;
        let state = db.open_tree("state").map_err(st)?;
        match state.get(FORMAT).map_err(st)? {
            None => {
                state.insert(FORMAT, LOG_FORMAT.to_string().as_bytes()).map_err(st)?;
                db.flush().map_err(st)?;
            }
            Some(v) if v.as_ref() == LOG_FORMAT.to_string().as_bytes() => {}
            Some(v) => return Err(OpenError::Format { path, found: String::from_utf8_lossy(&v).into_owned() }),
        }
        Ok(LogStore { db, sync, logs, state })
    }

    /// Whether this node has ever voted or logged anything (then it must not bootstrap).
    pub fn is_fresh(&self) -> bool {
        self.logs.is_empty() && !self.state.contains_key(VOTE).unwrap_or(true) && !self.state.contains_key(PURGED).unwrap_or(true)
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        match self.state.get(key).map_err(read_err)? {
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    fn put<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let v = serde_json::to_vec(value).map_err(write_err)?;
        self.state.insert(key, v).map_err(write_err)?;
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.logs.last().map_err(read_err)? {
            Some((_, v)) => Ok(Some(serde_json::from_slice::<Entry>(&v).map_err(read_err)?.log_id)),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(&mut self, range: RB) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for kv in self.logs.range(start.to_be_bytes()..) {
            let (k, v) = kv.map_err(read_err)?;
            let idx = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| read_err(std::io::Error::other("a log key is not 8 bytes")))?);
            if !range.contains(&idx) {
                break;
            }
            out.push(serde_json::from_slice(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get(PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put(VOTE, vote)?;
        self.db.flush_async().await.map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: a commit point lost in a crash is only re-learned from the leader.
        self.put(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(&e.log_id.index.to_be_bytes(), serde_json::to_vec(&e).map_err(write_err)?);
        }
        self.logs.apply_batch(batch).map_err(write_err)?;
        let r = if self.sync.load(Ordering::Relaxed) { self.db.flush_async().await.map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())) } else { Ok(()) };
        callback.log_io_completed(r);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for k in self.logs.range(log_id.index.to_be_bytes()..).keys() {
            batch.remove(k.map_err(read_err)?);
        }
        self.logs.apply_batch(batch).map_err(write_err)?;
        self.db.flush_async().await.map_err(write_err)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put(PURGED, &log_id)?;
        self.db.flush_async().await.map_err(write_err)?;
        let mut batch = sled::Batch::default();
        for k in self.logs.range(..=log_id.index.to_be_bytes()).keys() {
            batch.remove(k.map_err(read_err)?);
        }
        self.logs.apply_batch(batch).map_err(write_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_of_another_format_is_refused_and_a_fresh_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(AtomicBool::new(true));
        {
            let log = LogStore::open(dir.path(), sync.clone()).unwrap();
            assert!(log.is_fresh());
            log.state.insert(FORMAT, b"2".as_slice()).unwrap();
            log.db.flush().unwrap();
        }
        match LogStore::open(dir.path(), sync) {
            Err(e @ OpenError::Format { .. }) => assert!(e.to_string().contains("format 2"), "{e}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a log of format 2 opened"),
        }
    }
}
