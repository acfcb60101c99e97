//! The state machine: the application's store (a [`Machine`]) behind openraft.
//!
//! The application's store is rebuilt from Raft on every start: it is restored from the
//! last snapshot (or emptied), and openraft then re-applies the committed log after it. So
//! the store itself needs no crash bookkeeping — a command is never applied twice, whatever
//! instant the process died at.
//!
//! **Snapshots** are files, written and read as streams: nothing holds a whole snapshot in
//! memory. `<raft-dir>/snapshot` (format [`SNAPSHOT_FORMAT`]) is one header line, the JSON
//! `{"format": 2, "meta": {...}}` with the Raft metadata, followed by the application's
//! dump exactly as [`Machine::dump`] streamed it. It is written to a temporary file, synced,
//! then renamed over the last one, so a snapshot counts only once it is whole. It is also
//! what a follower that is too far behind receives: openraft reads it in chunks from the
//! file and the follower writes the chunks to a temporary file of its own
//! ([`RaftStateMachine::begin_receiving_snapshot`]), then restores from that file.
//!
//! **Format 1**, written by builds before streaming snapshots, was `snapshot.json`: one
//! JSON value `{"format": 1, "meta", "data"}` whose `data` is the application's whole dump
//! as JSON. Such a file is still read when no `snapshot` exists ([`Machine::restore_legacy`])
//! and replaced at once by a format 2 file; and a leader of such a build sends only the
//! `data` value, which a follower of this build also installs. A follower of such a build
//! cannot read a format 2 snapshot: upgrade followers before the leader.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::types::{Entry, LogId, Response, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// The version of the snapshot file this build writes (it also reads format 1).
pub const SNAPSHOT_FORMAT: u64 = 2;

/// The snapshot file in the Raft directory.
pub const SNAPSHOT_FILE: &str = "snapshot";

/// Where builds before format 2 kept their snapshot.
pub const LEGACY_SNAPSHOT_FILE: &str = "snapshot.json";

/// The header line is the Raft metadata: small, but read with a bound all the same.
const MAX_HEADER: u64 = 16 << 20;

/// What a snapshot file starts with (its header line), and a format 1 file did not.
const HEADER_START: &[u8] = b"{\"format\":";

/// Buffers of the streams a snapshot is written and read through.
const BUFFER: usize = 256 << 10;

/// The replicated application state. Every method is called with the state machine's lock
/// held, so `dump` sees no command half-applied.
pub trait Machine: Send + Sync + 'static {
    /// Applies one command (the JSON a writer gave to [`crate::ClusterNode::write`]) and says
    /// what came of it. Must be deterministic: a refusal is an answer, not a failure.
    fn apply(&self, command: &Json) -> Json;
    /// Writes the whole state to `out`, entry by entry, never as one value in memory, in a
    /// form [`Machine::restore`] reads back (and that says where it ends, so that a
    /// truncated dump is an error, not a smaller state).
    fn dump(&self, out: &mut dyn Write) -> Result<(), String>;
    /// Replaces the whole state with a dump read from `input` (`None`: empty).
    fn restore(&self, input: Option<&mut dyn BufRead>) -> Result<(), String>;
    /// Replaces the whole state with the dump of a snapshot of format 1 (one JSON value).
    fn restore_legacy(&self, dump: &Json) -> Result<(), String>;
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u64,
    meta: SnapshotMeta,
}

/// A format 1 file.
#[derive(Deserialize)]
struct LegacyFile {
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
    /// Held while a command is applied and while a snapshot is written or installed.
    applied: Mutex<Applied>,
    dir: PathBuf,
    /// The metadata of the snapshot in [`SNAPSHOT_FILE`]; held while that file is replaced
    /// or opened, so the two always go together.
    current: Mutex<Option<SnapshotMeta>>,
}

fn sm_err(e: impl ToString) -> StorageError {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn snap_err(e: impl ToString) -> StorageError {
    StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

fn read_err(e: impl ToString) -> StorageError {
    StorageIOError::read_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

/// Reads the header line of a format 2 stream, leaving `input` at the dump.
fn read_header(input: &mut dyn BufRead, what: &str) -> Result<SnapshotMeta, String> {
    let mut line = Vec::new();
    (&mut *input).take(MAX_HEADER).read_until(b'\n', &mut line).map_err(|e| format!("{what}: {e}"))?;
    if line.last() != Some(&b'\n') {
        return Err(format!("{what}: the header line is missing or longer than {MAX_HEADER} bytes"));
    }
    let h: Header = serde_json::from_slice(&line).map_err(|e| format!("{what}: the header line: {e}"))?;
    if h.format != SNAPSHOT_FORMAT {
        return Err(format!("{what} is of format {}; this build reads formats 1 and {SNAPSHOT_FORMAT}", h.format));
    }
    Ok(h.meta)
}

/// Whether a stream starts with a format 2 header (else it is a format 1 dump).
fn has_header(input: &mut dyn BufRead) -> std::io::Result<bool> {
    let buf = input.fill_buf()?;
    Ok(buf.starts_with(HEADER_START))
}

impl StateMachine {
    /// Restores `machine` from the snapshot in `raft_dir` (or empties it).
    pub fn open(raft_dir: &Path, machine: Arc<dyn Machine>) -> Result<Arc<StateMachine>, String> {
        let path = raft_dir.join(SNAPSHOT_FILE);
        let legacy = raft_dir.join(LEGACY_SNAPSHOT_FILE);
        let sm = StateMachine {
            machine,
            applied: Mutex::new(Applied { last: None, membership: StoredMembership::default() }),
            dir: raft_dir.to_path_buf(),
            current: Mutex::new(None),
        };
        let meta = match File::open(&path) {
            Ok(f) => {
                let what = path.display().to_string();
                let mut input = BufReader::with_capacity(BUFFER, f);
                let meta = read_header(&mut input, &what)?;
                sm.machine.restore(Some(&mut input)).map_err(|e| format!("{what}: {e}"))?;
                // A format 1 file left by a stop between the rewrite and its removal.
                if let Err(e) = std::fs::remove_file(&legacy)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(format!("{}: {e}", legacy.display()));
                }
                Some(meta)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::read(&legacy) {
                Ok(bytes) => {
                    let what = legacy.display().to_string();
                    let f: LegacyFile = serde_json::from_slice(&bytes).map_err(|e| format!("{what}: {e}"))?;
                    drop(bytes);
                    if f.format != 1 {
                        return Err(format!("{what} is of format {}; this build reads formats 1 and {SNAPSHOT_FORMAT}", f.format));
                    }
                    sm.machine.restore_legacy(&f.data).map_err(|e| format!("{what}: {e}"))?;
                    Some(f.meta)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    sm.machine.restore(None)?;
                    None
                }
                Err(e) => return Err(format!("{}: {e}", legacy.display())),
            },
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if let Some(meta) = meta {
            let mut a = sm.applied.lock().unwrap_or_else(|e| e.into_inner());
            a.last = meta.last_log_id;
            a.membership = meta.last_membership.clone();
            if !path.exists() {
                // A format 1 snapshot: rewritten at once in format 2, then removed.
                sm.write_file(&meta).map_err(|e| e.to_string())?;
                std::fs::remove_file(&legacy).map_err(|e| format!("{}: {e}", legacy.display()))?;
            } else {
                *sm.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(meta);
            }
        }
        Ok(Arc::new(sm))
    }

    /// Streams the header and the machine's dump to a temporary file, syncs it, and puts it
    /// in place as the current snapshot. The caller holds `applied`.
    fn write_file(&self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let f = File::create(&tmp).map_err(snap_err)?;
        let mut out = BufWriter::with_capacity(BUFFER, f);
        serde_json::to_writer(&mut out, &Header { format: SNAPSHOT_FORMAT, meta: meta.clone() }).map_err(snap_err)?;
        out.write_all(b"\n").map_err(snap_err)?;
        self.machine.dump(&mut out).map_err(snap_err)?;
        let f = out.into_inner().map_err(|e| snap_err(e.error()))?;
        f.sync_all().map_err(snap_err)?;
        drop(f);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE)).map_err(snap_err)?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        *current = Some(meta.clone());
        Ok(())
    }

    /// The current snapshot: its metadata and the file, opened under the same lock.
    fn open_current(&self) -> Result<Option<(SnapshotMeta, File)>, StorageError> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match &*current {
            None => Ok(None),
            Some(meta) => Ok(Some((meta.clone(), File::open(self.dir.join(SNAPSHOT_FILE)).map_err(read_err)?))),
        }
    }

    /// Replaces the machine's state with a received snapshot and makes it the current one.
    fn install(&self, meta: &SnapshotMeta, mut file: File) -> Result<(), StorageError> {
        file.seek(SeekFrom::Start(0)).map_err(read_err)?;
        let mut input = BufReader::with_capacity(BUFFER, file);
        let mut a = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        if has_header(&mut input).map_err(read_err)? {
            read_header(&mut input, "the received snapshot").map_err(read_err)?;
            self.machine.restore(Some(&mut input)).map_err(snap_err)?;
        } else {
            // From a leader of a build before format 2: its dump as one JSON value.
            let data: Json = serde_json::from_reader(&mut input).map_err(|e| read_err(format!("the received snapshot (format 1): {e}")))?;
            self.machine.restore_legacy(&data).map_err(snap_err)?;
        }
        drop(input);
        a.last = meta.last_log_id;
        a.membership = meta.last_membership.clone();
        // Written from the restored state, under the metadata openraft gave.
        self.write_file(meta)
    }
}

/// The handle openraft owns (and clones for snapshot building).
#[derive(Clone)]
pub struct SmHandle(pub Arc<StateMachine>);

impl RaftSnapshotBuilder<TypeConfig> for SmHandle {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let sm = self.0.clone();
        let (meta, file) = tokio::task::spawn_blocking(move || {
            let a = sm.applied.lock().unwrap_or_else(|e| e.into_inner());
            let id = match &a.last {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, chrono_free_stamp()),
                None => format!("empty-{}", chrono_free_stamp()),
            };
            let meta = SnapshotMeta { last_log_id: a.last, last_membership: a.membership.clone(), snapshot_id: id };
            sm.write_file(&meta)?;
            drop(a);
            sm.open_current()?.ok_or_else(|| read_err("the snapshot just written is gone"))
        })
        .await
        .map_err(sm_err)??;
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
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

    /// A temporary file in the Raft directory, already unlinked: openraft writes the chunks
    /// into it, and it disappears with its handle.
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let dir = self.0.dir.clone();
        let f = tokio::task::spawn_blocking(move || tempfile::tempfile_in(&dir)).await.map_err(snap_err)?.map_err(snap_err)?;
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<tokio::fs::File>) -> Result<(), StorageError> {
        let mut received = *snapshot;
        // Whatever openraft wrote is on the file before it is read through another handle.
        tokio::io::AsyncWriteExt::flush(&mut received).await.map_err(snap_err)?;
        let file = received.into_std().await;
        let (sm, meta) = (self.0.clone(), meta.clone());
        tokio::task::spawn_blocking(move || sm.install(&meta, file)).await.map_err(snap_err)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let sm = self.0.clone();
        let current = tokio::task::spawn_blocking(move || sm.open_current()).await.map_err(sm_err)??;
        Ok(current.map(|(meta, f)| Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(f)) }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, Membership};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::*;
    use crate::memory::MemoryMachine as Kv;
    use crate::types::{PeerNode, Request};

    fn log_id(i: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), i)
    }

    fn membership() -> Entry {
        let nodes = BTreeMap::from([(1, PeerNode { peer_addr: "127.0.0.1:7001".into(), api_addr: "127.0.0.1:8001".into() })]);
        Entry { log_id: log_id(0), payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], nodes)) }
    }

    fn put(i: u64, k: &str, v: &str) -> Entry {
        Entry { log_id: log_id(i), payload: EntryPayload::Normal(Request(json!({"k": k, "v": v}))) }
    }

    async fn read_all(mut f: tokio::fs::File) -> Vec<u8> {
        let mut out = Vec::new();
        f.seek(SeekFrom::Start(0)).await.unwrap();
        f.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_snapshot_is_a_file_a_follower_receives_in_chunks_and_installs() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a_kv = Arc::new(Kv::default());
        let mut a = SmHandle(StateMachine::open(a_dir.path(), a_kv.clone()).unwrap());
        let big = "x".repeat(1 << 20);
        a.apply(vec![membership(), put(1, "small", "1"), put(2, "big", &big), put(3, "quote\"d", "a\nb")]).await.unwrap();
        let built = a.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id, Some(log_id(3)));
        let on_disk = std::fs::read(a_dir.path().join(SNAPSHOT_FILE)).unwrap();
        let header: Json = serde_json::from_slice(&on_disk[..on_disk.iter().position(|b| *b == b'\n').unwrap()]).unwrap();
        assert_eq!(header["format"], SNAPSHOT_FORMAT);
        // What the leader sends is that file.
        let current = a.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, built.meta);
        let bytes = read_all(*current.snapshot).await;
        assert_eq!(bytes, on_disk);

        // The follower: chunks written at their offsets (the last first, as a resent chunk
        // may come), then installed.
        let b_kv = Arc::new(Kv::default());
        let mut b = SmHandle(StateMachine::open(b_dir.path(), b_kv.clone()).unwrap());
        b.apply(vec![put(1, "stale", "x")]).await.unwrap();
        let mut recv = b.begin_receiving_snapshot().await.unwrap();
        let chunks: Vec<(usize, &[u8])> = bytes.chunks(100_000).enumerate().map(|(i, c)| (i * 100_000, c)).collect();
        for (offset, chunk) in chunks.iter().rev().chain(chunks.iter()) {
            recv.seek(SeekFrom::Start(*offset as u64)).await.unwrap();
            recv.write_all(chunk).await.unwrap();
        }
        recv.shutdown().await.unwrap();
        b.install_snapshot(&built.meta, recv).await.unwrap();
        assert_eq!(b_kv.pairs(), a_kv.pairs());
        assert_eq!(b.applied_state().await.unwrap(), a.applied_state().await.unwrap());
        assert_eq!(b.get_current_snapshot().await.unwrap().unwrap().meta, built.meta);
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(b_dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, [SNAPSHOT_FILE]);

        // A restart restores from the file.
        let c_kv = Arc::new(Kv::default());
        let mut c = SmHandle(StateMachine::open(b_dir.path(), c_kv.clone()).unwrap());
        assert_eq!(c_kv.pairs(), a_kv.pairs());
        assert_eq!(c.applied_state().await.unwrap().0, Some(log_id(3)));
    }

    #[tokio::test]
    async fn a_format_1_snapshot_file_is_read_and_rewritten_in_format_2() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SnapshotMeta { last_log_id: Some(log_id(7)), last_membership: StoredMembership::default(), snapshot_id: "1-1-7-0".into() };
        let old = json!({"format": 1, "meta": meta, "data": {"kv": {"a": "1", "b": "2"}}});
        std::fs::write(dir.path().join(LEGACY_SNAPSHOT_FILE), old.to_string()).unwrap();
        let kv = Arc::new(Kv::default());
        let mut sm = SmHandle(StateMachine::open(dir.path(), kv.clone()).unwrap());
        assert_eq!(kv.pairs(), BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]));
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(7)));
        assert!(!dir.path().join(LEGACY_SNAPSHOT_FILE).exists());
        assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, meta);
        let again = Arc::new(Kv::default());
        StateMachine::open(dir.path(), again.clone()).unwrap();
        assert_eq!(again.pairs(), kv.pairs());
        // A format this build does not know is refused, naming it.
        std::fs::write(dir.path().join(SNAPSHOT_FILE), format!("{}\n", json!({"format": 3, "meta": meta}))).unwrap();
        let e = StateMachine::open(dir.path(), Arc::new(Kv::default())).err().unwrap();
        assert!(e.contains("format 3"), "{e}");
    }

    #[tokio::test]
    async fn a_snapshot_from_a_leader_of_format_1_installs_and_a_cut_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(Kv::default());
        let mut sm = SmHandle(StateMachine::open(dir.path(), kv.clone()).unwrap());
        let meta = SnapshotMeta { last_log_id: Some(log_id(4)), last_membership: StoredMembership::default(), snapshot_id: "1-1-4-0".into() };
        // Such a leader sends its dump alone, as one JSON value.
        let mut recv = sm.begin_receiving_snapshot().await.unwrap();
        recv.write_all(json!({"kv": {"a": "1"}}).to_string().as_bytes()).await.unwrap();
        sm.install_snapshot(&meta, recv).await.unwrap();
        assert_eq!(kv.pairs(), BTreeMap::from([("a".into(), "1".into())]));
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(4)));
        // A snapshot cut short is an error, not a smaller state.
        let mut recv = sm.begin_receiving_snapshot().await.unwrap();
        recv.write_all(format!("{}\n[\"b\",\"2\"]\n", json!({"format": SNAPSHOT_FORMAT, "meta": meta})).as_bytes()).await.unwrap();
        assert!(sm.install_snapshot(&meta, recv).await.is_err());
    }
}
