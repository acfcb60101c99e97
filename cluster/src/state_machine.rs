//! The state machine: the application's store (a [`Machine`]) behind openraft.
//!
//! The application's store is rebuilt from Raft on every start: it is restored from the
//! last snapshot (or emptied), and openraft then re-applies the committed log after it. So
//! the store itself needs no crash bookkeeping — a command is never applied twice, whatever
//! instant the process died at.
//!
//! Snapshots are a dump of the application's store (its own versioned JSON) with the Raft
//! metadata, written to `<raft-dir>/snapshot.json` (format [`SNAPSHOT_FORMAT`]) before they
//! count: a follower that is too far behind receives this file.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::types::{Entry, LogId, Response, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// The version of the snapshot file this build writes and reads.
pub const SNAPSHOT_FORMAT: u64 = 1;

/// The replicated application state. Every method is called with the state machine's lock
/// held, so `dump` sees no command half-applied.
pub trait Machine: Send + Sync + 'static {
    /// Applies one command (the JSON a writer gave to [`crate::ClusterNode::write`]) and says
    /// what came of it. Must be deterministic: a refusal is an answer, not a failure.
    fn apply(&self, command: &Json) -> Json;
    /// The whole state, to be given to [`Machine::restore`] on another node.
    fn dump(&self) -> Result<Json, String>;
    /// Replaces the whole state (`None`: empty).
    fn restore(&self, dump: Option<&Json>) -> Result<(), String>;
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    format: u64,
    meta: SnapshotMeta,
    data: Json,
}

struct Applied {
    last: Option<LogId>,
    membership: StoredMembership,
}

/// Shared between the state machine and its snapshot builder.
pub struct StateMachine {
    machine: Arc<dyn Machine>,
    applied: Mutex<Applied>,
    snapshot_path: PathBuf,
    /// The current snapshot's metadata and encoded data.
    current: Mutex<Option<(SnapshotMeta, Arc<Vec<u8>>)>>,
}

fn sm_err(e: impl ToString) -> StorageError {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn snap_err(e: impl ToString) -> StorageError {
    StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

impl StateMachine {
    /// Restores `machine` from the snapshot in `raft_dir` (or empties it).
    pub fn open(raft_dir: &Path, machine: Arc<dyn Machine>) -> Result<Arc<StateMachine>, String> {
        let snapshot_path = raft_dir.join("snapshot.json");
        let (applied, current) = match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let f: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", snapshot_path.display()))?;
                if f.format != SNAPSHOT_FORMAT {
                    return Err(format!("{} is of format {}; this build reads format {SNAPSHOT_FORMAT}", snapshot_path.display(), f.format));
                }
                machine.restore(Some(&f.data))?;
                let data = serde_json::to_vec(&f.data).map_err(|e| e.to_string())?;
                (Applied { last: f.meta.last_log_id, membership: f.meta.last_membership.clone() }, Some((f.meta, Arc::new(data))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                machine.restore(None)?;
                (Applied { last: None, membership: StoredMembership::default() }, None)
            }
            Err(e) => return Err(format!("{}: {e}", snapshot_path.display())),
        };
        Ok(Arc::new(StateMachine { machine, applied: Mutex::new(applied), snapshot_path, current: Mutex::new(current) }))
    }

    fn write_file(&self, meta: &SnapshotMeta, data: Json) -> Result<Vec<u8>, StorageError> {
        let file = SnapshotFile { format: SNAPSHOT_FORMAT, meta: meta.clone(), data };
        let bytes = serde_json::to_vec(&file).map_err(snap_err)?;
        let tmp = self.snapshot_path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(snap_err)?;
            f.write_all(&bytes).map_err(snap_err)?;
            f.sync_all().map_err(snap_err)?;
        }
        std::fs::rename(&tmp, &self.snapshot_path).map_err(snap_err)?;
        serde_json::to_vec(&file.data).map_err(snap_err)
    }
}

/// The handle openraft owns (and clones for snapshot building).
#[derive(Clone)]
pub struct SmHandle(pub Arc<StateMachine>);

impl RaftSnapshotBuilder<TypeConfig> for SmHandle {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let sm = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let (meta, data) = {
                let applied = sm.applied.lock().unwrap_or_else(|e| e.into_inner());
                let data = sm.machine.dump().map_err(sm_err)?;
                let id = match &applied.last {
                    Some(l) => format!("{}-{}-{}", l.leader_id, l.index, chrono_free_stamp()),
                    None => format!("empty-{}", chrono_free_stamp()),
                };
                (SnapshotMeta { last_log_id: applied.last, last_membership: applied.membership.clone(), snapshot_id: id }, data)
            };
            let bytes = sm.write_file(&meta, data)?;
            let bytes = Arc::new(bytes);
            *sm.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((meta.clone(), bytes.clone()));
            Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes.to_vec())) })
        })
        .await
        .map_err(sm_err)?
    }
}

fn chrono_free_stamp() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0)
}

impl RaftStateMachine<TypeConfig> for SmHandle {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = self.0.applied.lock().unwrap_or_else(|e| e.into_inner());
        Ok((a.last, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut out = Vec::new();
        let mut a = self.0.applied.lock().unwrap_or_else(|e| e.into_inner());
        for e in entries {
            a.last = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Response(Json::Null)),
                EntryPayload::Normal(req) => out.push(Response(self.0.machine.apply(&req.0))),
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Response(Json::Null));
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data: Json = serde_json::from_slice(&bytes).map_err(snap_err)?;
        {
            let mut a = self.0.applied.lock().unwrap_or_else(|e| e.into_inner());
            self.0.machine.restore(Some(&data)).map_err(snap_err)?;
            a.last = meta.last_log_id;
            a.membership = meta.last_membership.clone();
        }
        self.0.write_file(meta, data)?;
        *self.0.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((meta.clone(), Arc::new(bytes)));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.0.current.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|(m, d)| Snapshot { meta: m.clone(), snapshot: Box::new(Cursor::new(d.to_vec())) }))
    }
}
