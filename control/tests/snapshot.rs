//! Raft snapshots of the metadata store: a snapshot written by a build before streaming
//! snapshots (format 1, `snapshot.json`) still restores, and a snapshot is written and read
//! entry by entry, never as one value in memory (allocations are counted by this binary's
//! allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufReader, BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dagg_cluster::state_machine::{LEGACY_SNAPSHOT_FILE, SNAPSHOT_FILE, StateMachine};
use dagg_control::cluster::MetaMachine;
use dagg_control::meta::{MetaCommand, MetaStore};
use dagg_model::RunStatus;
use serde_json::{Value as Json, json};

/// Counts the bytes allocated now and the most at once since the last [`reset_peak`].
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = NOW.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            NOW.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the peak of `f` beyond what was allocated before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = NOW.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(before))
}

fn machine(store: &Arc<MetaStore>) -> Arc<MetaMachine> {
    Arc::new(MetaMachine { store: store.clone(), placement_changed: Arc::new(tokio::sync::Notify::new()) })
}

fn dumped(store: &MetaStore) -> Vec<u8> {
    let mut out = Vec::new();
    store.dump(&mut out).unwrap();
    out
}

fn header(path: &std::path::Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

/// `golden/snapshot-format-1.json` is what the build before streaming snapshots wrote for
/// the first 14 commands of `commands-v1.jsonl` and two legacy assignment settings.
#[test]
fn a_snapshot_of_format_1_restores_and_is_rewritten_in_format_2() {
    let dir = tempfile::tempdir().unwrap();
    let raft = dir.path().join("raft");
    std::fs::create_dir_all(&raft).unwrap();
    std::fs::write(raft.join(LEGACY_SNAPSHOT_FILE), include_str!("golden/snapshot-format-1.json")).unwrap();
    let store = Arc::new(MetaStore::open(&dir.path().join("meta")).unwrap());
    // Something the snapshot does not hold goes.
    store.apply(MetaCommand::PutSetting { key: "stale".into(), value: json!(1) }).unwrap();
    StateMachine::open(&raft, machine(&store)).unwrap();

    let p = store.pipeline("p1").unwrap().unwrap();
    assert_eq!((p.version, p.paused), (2, true));
    let r = store.run("r1").unwrap().unwrap();
    assert_eq!((r.status, r.counts.records_written), (RunStatus::Success, 5));
    assert_eq!(store.run_events("r1").unwrap()[0].seq, 1);
    assert_eq!(store.user_by_login("ANN@example.com").unwrap().unwrap().id, "u1");
    assert_eq!(store.session_by_token_hash("0f0e").unwrap().unwrap().id, "s1");
    assert_eq!(store.setting("theme").unwrap(), Some(json!("dark")));
    assert_eq!(store.setting("stale").unwrap(), None);
    assert_eq!(store.assignment("r1").unwrap().unwrap().node, 1);
    assert_eq!(store.setting("_cluster/run/not-an-assignment").unwrap(), Some(json!({"node": 3})));
    assert_eq!(store.audit().unwrap()[0].id, "a1");

    // Rewritten in format 2 under the same Raft metadata; the old file is gone.
    assert!(!raft.join(LEGACY_SNAPSHOT_FILE).exists());
    let h = header(&raft.join(SNAPSHOT_FILE));
    assert_eq!(h["format"], 2);
    assert_eq!(h["meta"]["last_log_id"]["index"], 17);
    assert_eq!(h["meta"]["snapshot_id"], "1-1-17-1765108800000000");

    // And that file restores the same store.
    let again = Arc::new(MetaStore::open(&dir.path().join("meta2")).unwrap());
    StateMachine::open(&raft, machine(&again)).unwrap();
    assert_eq!(dumped(&again), dumped(&store));
}

/// A store of 24 MiB: writing its snapshot allocates a small fraction of that (a buffer,
/// one entry at a time), where the dump as one JSON value held the whole store twice over
/// (the value, then its text). Reading it back allocates what sled keeps of the new entries
/// (as much as writing them directly) and one entry's line at a time.
#[test]
fn a_snapshot_is_written_and_read_entry_by_entry() {
    const ENTRIES: usize = 96;
    const SIZE: usize = 256 << 10;
    let data = ENTRIES * SIZE;
    let dir = tempfile::tempdir().unwrap();
    let store = MetaStore::open(&dir.path().join("meta")).unwrap();
    for i in 0..ENTRIES {
        // Quotes, so that the text is escaped in the dump as it would be for JSON values.
        let value = json!({"i": i, "text": "a \"quoted\" line of text ".repeat(SIZE / 25)});
        store.apply(MetaCommand::PutSetting { key: format!("big-{i:03}"), value }).unwrap();
    }
    store.flush().unwrap();

    let path = dir.path().join("snapshot");
    let ((), written) = peak_of(|| {
        let mut out = BufWriter::with_capacity(256 << 10, std::fs::File::create(&path).unwrap());
        store.dump(&mut out).unwrap();
        out.flush().unwrap();
    });
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(size > data, "the dump holds every entry ({size} bytes)");

    // What a dump as one JSON value costs, for comparison: the value, then its bytes.
    let (_, as_one_value) = peak_of(|| {
        let mut rows = Vec::new();
        for i in 0..ENTRIES {
            let k = format!("big-{i:03}");
            rows.push(json!([k, serde_json::to_string(&store.setting(&k).unwrap()).unwrap()]));
        }
        serde_json::to_vec(&json!({"v": 1, "trees": {"settings": rows}})).unwrap().len()
    });

    let other = MetaStore::open(&dir.path().join("meta2")).unwrap();
    let (_, read) = peak_of(|| {
        let mut input = BufReader::with_capacity(256 << 10, std::fs::File::open(&path).unwrap());
        other.restore(Some(&mut input)).unwrap();
    });
    // What sled itself keeps of that many new entries: the same entries written directly.
    let third = MetaStore::open(&dir.path().join("meta3")).unwrap();
    let (_, stored) = peak_of(|| {
        for i in 0..ENTRIES {
            let k = format!("big-{i:03}");
            third.apply(MetaCommand::PutSetting { value: store.setting(&k).unwrap().unwrap(), key: k }).unwrap();
        }
    });
    eprintln!(
        "store {} MiB: peak allocation writing the snapshot {} KiB, reading it {} KiB (sled keeping the same entries written directly: {} KiB); as one JSON value {} KiB",
        data >> 20,
        written >> 10,
        read >> 10,
        stored >> 10,
        as_one_value >> 10
    );
    assert!(written < data / 8, "writing allocated {written} bytes for a {data}-byte store");
    assert!(written * 8 < as_one_value, "writing allocated {written} bytes; as one value {as_one_value}");
    assert!(read < stored + data / 8, "reading allocated {read} bytes; sled keeps {stored} of the entries");
    assert_eq!(other.setting("big-095").unwrap(), store.setting("big-095").unwrap());
}
