//! The smallest [`Machine`]: pairs of text held in memory. Tests of the Raft layer (this
//! crate's and its integration tests) run on it; it shows what a machine must do.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Mutex;

use serde_json::{Value as Json, json};

use crate::Machine;

/// Applies `{"k": key, "v": value}` by setting the pair. Its dump is one JSON line
/// `[key, value]` per pair and a line `end`; its format-1 dump was `{"kv": {key: value}}`.
#[derive(Default)]
pub struct MemoryMachine(Mutex<BTreeMap<String, String>>);

impl MemoryMachine {
    /// Every pair, as it stands.
    pub fn pairs(&self) -> BTreeMap<String, String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Machine for MemoryMachine {
    fn apply(&self, c: &Json) -> Json {
        let text = |f: &str| c[f].as_str().unwrap_or_default().to_string();
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(text("k"), text("v"));
        json!({"ok": true})
    }

    fn dump(&self, out: &mut dyn Write) -> Result<(), String> {
        for (k, v) in self.pairs() {
            writeln!(out, "{}", json!([k, v])).map_err(|e| e.to_string())?;
        }
        writeln!(out, "end").map_err(|e| e.to_string())
    }

    fn restore(&self, input: Option<&mut dyn BufRead>) -> Result<(), String> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.clear();
        let Some(input) = input else { return Ok(()) };
        for line in input.lines() {
            let line = line.map_err(|e| e.to_string())?;
            if line == "end" {
                return Ok(());
            }
            let (k, v): (String, String) = serde_json::from_str(&line).map_err(|e| e.to_string())?;
            m.insert(k, v);
        }
        Err("no end line".into())
    }

    fn restore_legacy(&self, dump: &Json) -> Result<(), String> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.clear();
        for (k, v) in dump["kv"].as_object().ok_or("no `kv` in the format-1 dump")? {
            m.insert(k.clone(), v.as_str().ok_or("a value that is not text")?.into());
        }
        Ok(())
    }
}
