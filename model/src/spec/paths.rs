//! The one rule for file paths a server opens on someone else's behalf (an API-made
//! pipeline, a destination hosted for another node): relative to the server's files folder
//! and never leaving it — no absolute path, no `..`, no drive prefix. The API applies it to
//! documents it stores, the data plane to destinations it is asked to open.

use std::path::{Component, Path};

use super::connector::{ConnectorConfig, ConnectorSpec};

/// `Err` with the reason when `path` is absolute or climbs out with `..`.
pub fn check_inside_files_folder(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    let leaves = p.is_absolute() || p.has_root() || p.components().any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)));
    if leaves { Err(format!("`{path}` leaves the server's file folder; use a path relative to it, without `..`")) } else { Ok(()) }
}

/// [`check_inside_files_folder`] on the path of a file connector; other connectors open no
/// file by path and pass.
pub fn check_connector_inside_files_folder(spec: &ConnectorSpec) -> Result<(), String> {
    match &spec.config {
        ConnectorConfig::File(c) => check_inside_files_folder(&c.path),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relative_paths_without_parent_steps_stay_inside() {
        for ok in ["out.jsonl", "ok/out.jsonl", "./a/b.csv", "data/*.jsonl"] {
            assert!(check_inside_files_folder(ok).is_ok(), "{ok}");
        }
        for bad in ["/etc/passwd", "/tmp/x/.ssh/authorized_keys", "../x.jsonl", "a/../../x", "a/.."] {
            let e = check_inside_files_folder(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("leaves the server's file folder"), "{e}");
        }
    }
}
