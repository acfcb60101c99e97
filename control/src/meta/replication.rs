//! What the cluster needs of the store beyond commands: a dump of every tree and its
//! restore (Raft snapshots), and a prefix scan of settings (run assignments).
//!
//! The dump is versioned JSON, `{"v": 1, "trees": {name: [[key, value], ...]}}`, with
//! keys and values as the UTF-8 text the store writes (every key and value is text: ids,
//! index keys, versioned JSON values). It covers every tree of the database, so a tree
//! added later is in snapshots without a change here.

use serde_json::{Map, Value as Json, json};

use super::{MetaError, MetaResult, MetaStore, codec};

/// The version of the dump this build writes and reads.
pub const DUMP_VERSION: u64 = 1;

fn text(bytes: &[u8], what: &str) -> MetaResult<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| MetaError::Decode(format!("a {what} in the store is not UTF-8 text")))
}

impl MetaStore {
    fn user_trees(&self) -> MetaResult<Vec<(String, sled::Tree)>> {
        let mut out = Vec::new();
        for name in self.db.tree_names() {
            if name.as_ref() == b"__sled__default" {
                continue;
            }
            out.push((text(&name, "tree name")?, self.db.open_tree(&name)?));
        }
        Ok(out)
    }

    /// Every tree's content (with no command half-applied).
    pub fn dump(&self) -> MetaResult<Json> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut trees = Map::new();
        for (name, tree) in self.user_trees()? {
            let mut rows = Vec::new();
            for kv in tree.iter() {
                let (k, v) = kv?;
                rows.push(json!([text(&k, "key")?, text(&v, "value")?]));
            }
            trees.insert(name, Json::Array(rows));
        }
        Ok(json!({"v": DUMP_VERSION, "trees": trees}))
    }

    /// Replaces every tree with the dump's (none: empties the store).
    pub fn restore(&self, dump: Option<&Json>) -> MetaResult<()> {
        if let Some(d) = dump {
            let v = d.get("v").and_then(Json::as_u64);
            if v != Some(DUMP_VERSION) {
                return Err(MetaError::Decode(format!("a metadata dump of version {v:?}; this build reads version {DUMP_VERSION}")));
            }
        }
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        self.invalidate_pipelines();
        for (_, tree) in self.user_trees()? {
            tree.clear()?;
        }
        if let Some(trees) = dump.and_then(|d| d.get("trees")).and_then(Json::as_object) {
            for (name, rows) in trees {
                let tree = self.db.open_tree(name)?;
                let mut batch = sled::Batch::default();
                for row in rows.as_array().into_iter().flatten() {
                    match (row.get(0).and_then(Json::as_str), row.get(1).and_then(Json::as_str)) {
                        (Some(k), Some(v)) => batch.insert(k.as_bytes(), v.as_bytes()),
                        _ => return Err(MetaError::Decode(format!("a row of tree `{name}` in the dump is not [key, value]"))),
                    }
                }
                tree.apply_batch(batch)?;
            }
        }
        // A snapshot of a build before `AssignRun` holds assignments as settings.
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
            out.push((text(&k, "key")?, codec::decode(&v).map_err(MetaError::Decode)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MetaCommand;

    #[test]
    fn a_dump_restores_to_the_same_state_elsewhere() {
        let a_dir = tempfile::tempdir().unwrap();
        let a = MetaStore::open(a_dir.path()).unwrap();
        a.apply(MetaCommand::PutSetting { key: "theme".into(), value: json!("dark") }).unwrap();
        a.apply(MetaCommand::PutSetting { key: "_cluster/run/r1".into(), value: json!({"node": 2}) }).unwrap();
        let dump = a.dump().unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        let b = MetaStore::open(b_dir.path()).unwrap();
        b.apply(MetaCommand::PutSetting { key: "old".into(), value: json!(1) }).unwrap();
        b.restore(Some(&dump)).unwrap();
        assert_eq!(b.setting("theme").unwrap(), Some(json!("dark")));
        assert_eq!(b.setting("old").unwrap(), None);
        assert_eq!(b.settings_with_prefix("_cluster/run/").unwrap(), vec![("_cluster/run/r1".to_string(), json!({"node": 2}))]);
        assert_eq!(b.dump().unwrap(), dump);
        b.restore(None).unwrap();
        assert_eq!(b.setting("theme").unwrap(), None);
        let e = b.restore(Some(&json!({"v": 9, "trees": {}}))).unwrap_err();
        assert!(e.to_string().contains("version"), "{e}");
    }
}
