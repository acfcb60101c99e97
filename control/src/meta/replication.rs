//! What the cluster needs of the store beyond commands: a dump of every tree and its
//! restore (Raft snapshots), and a prefix scan of settings (run assignments).
//!
//! The dump (version [`DUMP_VERSION`]) is streamed, one line per entry, so neither writing
//! nor reading it holds more than one entry in memory: JSON lines
//!
//! ```text
//! {"v":2}
//! ["<tree>","<key>","<value>"]     one line per entry, tree by tree
//! {"end":<number of entries>}
//! ```
//!
//! with keys and values as the UTF-8 text the store writes (every key and value is text:
//! ids, index keys, versioned JSON values). The end line makes a truncated dump an error
//! rather than a smaller store. It covers every tree of the database, so a tree added later
//! is in snapshots without a change here.
//!
//! Version 1, which snapshots of format 1 hold, was one JSON value,
//! `{"v": 1, "trees": {name: [[key, value], ...]}}`; [`MetaStore::restore_legacy`] reads it.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use serde_json::Value as Json;

use super::{MetaError, MetaResult, MetaStore, codec};

/// The version of the dump this build writes (it also reads [`LEGACY_DUMP_VERSION`]).
pub const DUMP_VERSION: u64 = 2;

/// The dump of snapshots of format 1: one JSON value.
pub const LEGACY_DUMP_VERSION: u64 = 1;

/// A sled batch is applied once it holds this many entries or bytes.
const BATCH: usize = 1000;
const BATCH_BYTES: usize = 1 << 20;

fn text<'a>(bytes: &'a [u8], what: &str) -> MetaResult<&'a str> {
    std::str::from_utf8(bytes).map_err(|_| MetaError::Decode(format!("a {what} in the store is not UTF-8 text")))
}

fn dump_err(e: impl std::fmt::Display) -> MetaError {
    MetaError::Dump(format!("writing the metadata dump: {e}"))
}

/// Entries on their way into one tree.
struct Pending {
    tree: sled::Tree,
    batch: sled::Batch,
    entries: usize,
    bytes: usize,
}

impl Pending {
    fn flush(&mut self) -> MetaResult<()> {
        self.tree.apply_batch(std::mem::take(&mut self.batch))?;
        (self.entries, self.bytes) = (0, 0);
        Ok(())
    }
}

/// Reads the next line of a dump into `line` (its length; 0 at the end).
fn read(input: &mut dyn BufRead, line: &mut String) -> MetaResult<usize> {
    line.clear();
    input.read_line(line).map_err(|e| MetaError::Dump(format!("reading the metadata dump: {e}")))
}

fn bad(entry: u64, why: impl std::fmt::Display) -> MetaError {
    MetaError::Dump(format!("the metadata dump, line {}: {why}", entry + 2))
}

impl MetaStore {
    fn user_trees(&self) -> MetaResult<Vec<(String, sled::Tree)>> {
        let mut out = Vec::new();
        for name in self.db.tree_names() {
            if name.as_ref() == b"__sled__default" {
                continue;
            }
            out.push((text(&name, "tree name")?.to_string(), self.db.open_tree(&name)?));
        }
        Ok(out)
    }

    /// Streams every tree's content to `out` (with no command half-applied: commands wait
    /// meanwhile).
    pub fn dump(&self, out: &mut dyn Write) -> MetaResult<()> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(out, "{{\"v\":{DUMP_VERSION}}}").map_err(dump_err)?;
        let mut n: u64 = 0;
        for (name, tree) in self.user_trees()? {
            for kv in tree.iter() {
                let (k, v) = kv?;
                serde_json::to_writer(&mut *out, &(&name, text(&k, "key")?, text(&v, "value")?)).map_err(dump_err)?;
                out.write_all(b"\n").map_err(dump_err)?;
                n += 1;
            }
        }
        writeln!(out, "{{\"end\":{n}}}").map_err(dump_err)?;
        out.flush().map_err(dump_err)
    }

    /// Replaces every tree with a dump read from `input`, entry by entry (none: empties the
    /// store). A dump of another version, a malformed line or a dump without its end line
    /// is an error.
    pub fn restore(&self, input: Option<&mut dyn BufRead>) -> MetaResult<()> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        self.invalidate_pipelines();
        let r = self.restore_locked(input);
        self.invalidate_pipelines();
        // Whatever the store now holds (a failed restore may have cleared it) is in force.
        self.settings_take_effect();
        r
    }

    fn restore_locked(&self, input: Option<&mut dyn BufRead>) -> MetaResult<()> {
        let mut line = String::new();
        if let Some(input) = input {
            // The version first: a dump this build cannot read leaves the store as it was.
            read(input, &mut line)?;
            let v = serde_json::from_str::<Json>(&line).ok().and_then(|h| h.get("v").and_then(Json::as_u64));
            if v != Some(DUMP_VERSION) {
                return Err(MetaError::Dump(format!("a metadata dump of version {v:?}; this build streams version {DUMP_VERSION}")));
            }
            self.clear_trees()?;
            let mut trees: HashMap<String, sled::Tree> = HashMap::new();
            let mut pending: Option<Pending> = None;
            let mut n: u64 = 0;
            loop {
                if read(input, &mut line)? == 0 {
                    return Err(MetaError::Dump(format!("the metadata dump ends early, after {n} entries (no end line)")));
                }
                if !line.starts_with('[') {
                    let end = serde_json::from_str::<Json>(&line).ok().and_then(|e| e.get("end").and_then(Json::as_u64));
                    match end {
                        Some(count) if count == n => break,
                        Some(count) => return Err(bad(n, format!("the end line counts {count} entries; the dump has {n}"))),
                        None => return Err(bad(n, "neither an entry nor the end line")),
                    }
                }
                let (name, k, v): (String, String, String) = serde_json::from_str(&line).map_err(|e| bad(n, format!("not [tree, key, value]: {e}")))?;
                n += 1;
                let p = match &mut pending {
                    Some(p) if p.tree.name() == name.as_bytes() => p,
                    _ => {
                        if let Some(mut p) = pending.take() {
                            p.flush()?;
                        }
                        let tree = match trees.get(&name) {
                            Some(t) => t.clone(),
                            None => {
                                let t = self.db.open_tree(&name)?;
                                trees.insert(name.clone(), t.clone());
                                t
                            }
                        };
                        pending.insert(Pending { tree, batch: sled::Batch::default(), entries: 0, bytes: 0 })
                    }
                };
                p.batch.insert(k.as_bytes(), v.as_bytes());
                p.entries += 1;
                p.bytes += k.len() + v.len();
                if p.entries >= BATCH || p.bytes >= BATCH_BYTES {
                    p.flush()?;
                }
            }
            if let Some(mut p) = pending.take() {
                p.flush()?;
            }
            if read(input, &mut line)? != 0 {
                return Err(bad(n + 1, "data after the end line"));
            }
        } else {
            self.clear_trees()?;
        }
        // A snapshot of a build before `AssignRun` holds assignments as settings.
        self.migrate_legacy_assignments()
    }

    fn clear_trees(&self) -> MetaResult<()> {
        for (_, tree) in self.user_trees()? {
            tree.clear()?;
        }
        Ok(())
    }

    /// Replaces every tree with a dump of version 1 (one JSON value, as snapshots of format
    /// 1 hold it).
    pub fn restore_legacy(&self, dump: &Json) -> MetaResult<()> {
        let v = dump.get("v").and_then(Json::as_u64);
        if v != Some(LEGACY_DUMP_VERSION) {
            return Err(MetaError::Dump(format!("a metadata dump of version {v:?} in a snapshot of format 1; it holds version {LEGACY_DUMP_VERSION}")));
        }
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        self.invalidate_pipelines();
        self.clear_trees()?;
        if let Some(trees) = dump.get("trees").and_then(Json::as_object) {
            for (name, rows) in trees {
                let tree = self.db.open_tree(name)?;
                let mut batch = sled::Batch::default();
                for row in rows.as_array().into_iter().flatten() {
                    match (row.get(0).and_then(Json::as_str), row.get(1).and_then(Json::as_str)) {
                        (Some(k), Some(v)) => batch.insert(k.as_bytes(), v.as_bytes()),
                        _ => return Err(MetaError::Dump(format!("a row of tree `{name}` in the dump is not [key, value]"))),
                    }
                }
                tree.apply_batch(batch)?;
            }
        }
        self.migrate_legacy_assignments()?;
        self.invalidate_pipelines();
        self.settings_take_effect();
        Ok(())
    }

    /// Settings whose key starts with `prefix`, internal ones included.
    pub fn settings_with_prefix(&self, prefix: &str) -> MetaResult<Vec<(String, Json)>> {
        let mut out = Vec::new();
        for kv in self.t.settings.scan_prefix(prefix) {
            let (k, v) = kv?;
            out.push((text(&k, "key")?.to_string(), codec::decode(&v).map_err(MetaError::Decode)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MetaCommand;
    use serde_json::json;

    fn dumped(m: &MetaStore) -> Vec<u8> {
        let mut out = Vec::new();
        m.dump(&mut out).unwrap();
        out
    }

    #[test]
    fn a_dump_restores_to_the_same_state_elsewhere() {
        let a_dir = tempfile::tempdir().unwrap();
        let a = MetaStore::open(a_dir.path()).unwrap();
        a.apply(MetaCommand::PutSetting { key: "theme".into(), value: json!("dark") }).unwrap();
        a.apply(MetaCommand::PutSetting { key: "_cluster/run/r1".into(), value: json!({"node": 2}) }).unwrap();
        // Keys and values that need escaping in JSON.
        a.apply(MetaCommand::PutSetting { key: "quote\"d\nkey".into(), value: json!({"text": "a \"b\"\n\tc ✓"}) }).unwrap();
        for text in include_str!("../../tests/golden/commands-v1.jsonl").lines().take(14) {
            a.apply_encoded(text.as_bytes()).unwrap();
        }
        let dump = dumped(&a);
        let b_dir = tempfile::tempdir().unwrap();
        let b = MetaStore::open(b_dir.path()).unwrap();
        b.apply(MetaCommand::PutSetting { key: "old".into(), value: json!(1) }).unwrap();
        b.restore(Some(&mut dump.as_slice())).unwrap();
        assert_eq!(b.setting("theme").unwrap(), Some(json!("dark")));
        assert_eq!(b.setting("quote\"d\nkey").unwrap(), Some(json!({"text": "a \"b\"\n\tc ✓"})));
        assert_eq!(b.setting("old").unwrap(), None);
        assert_eq!(b.settings_with_prefix("_cluster/run/").unwrap(), vec![("_cluster/run/r1".to_string(), json!({"node": 2}))]);
        assert_eq!(b.run("r1").unwrap(), a.run("r1").unwrap());
        assert_eq!(b.run_events("r1").unwrap(), a.run_events("r1").unwrap());
        assert_eq!(b.session_by_token_hash("0f0e").unwrap().unwrap().id, "s1");
        assert_eq!(dumped(&b), dump, "the same entries, in the same order");
        b.restore(None).unwrap();
        assert_eq!(b.setting("theme").unwrap(), None);
    }

    #[test]
    fn a_dump_of_another_version_or_cut_short_is_refused() {
        let a_dir = tempfile::tempdir().unwrap();
        let a = MetaStore::open(a_dir.path()).unwrap();
        a.apply(MetaCommand::PutSetting { key: "theme".into(), value: json!("dark") }).unwrap();
        let dump = String::from_utf8(dumped(&a)).unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        let b = MetaStore::open(b_dir.path()).unwrap();
        b.apply(MetaCommand::PutSetting { key: "kept".into(), value: json!(1) }).unwrap();
        let e = b.restore(Some(&mut dump.replacen("{\"v\":2}", "{\"v\":9}", 1).as_bytes())).unwrap_err();
        assert!(e.to_string().contains("version Some(9)"), "{e}");
        assert_eq!(b.setting("kept").unwrap(), Some(json!(1)), "an unreadable dump changes nothing");
        // Without its end line.
        let cut = &dump[..dump.rfind("{\"end\"").unwrap()];
        let e = b.restore(Some(&mut cut.as_bytes())).unwrap_err();
        assert!(e.to_string().contains("ends early"), "{e}");
        let e = b.restore(Some(&mut dump.replace("{\"end\":", "{\"end\":1").as_bytes())).unwrap_err();
        assert!(e.to_string().contains("counts"), "{e}");
        let e = b.restore(Some(&mut format!("{dump}[\"settings\",\"x\",\"1\"]\n").as_bytes())).unwrap_err();
        assert!(e.to_string().contains("after the end line"), "{e}");
        let e = b.restore_legacy(&json!({"v": 9, "trees": {}})).unwrap_err();
        assert!(e.to_string().contains("version"), "{e}");
    }
}
