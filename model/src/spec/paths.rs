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

/// The config keys of a connector type that name a file on the server: a file connector's
/// `path`, a database's `ssl_root_cert`. Each follows [`check_inside_files_folder`], so a
/// config cannot probe `/etc/shadow`. (Kafka's file properties are refused outright.)
pub fn file_path_keys(connector_type: &str) -> &'static [&'static str] {
    match connector_type {
        "file" => &["path"],
        "postgresql" | "mysql" => &["ssl_root_cert"],
        _ => &[],
    }
}

/// [`check_inside_files_folder`] on every file path of a connector (see [`file_path_keys`]),
/// the error naming the key; other connectors open no file by path and pass.
pub fn check_connector_inside_files_folder(spec: &ConnectorSpec) -> Result<(), String> {
    match &spec.config {
        ConnectorConfig::File(c) => check_inside_files_folder(&c.path),
        ConnectorConfig::Postgres(c) | ConnectorConfig::Mysql(c) => match &c.ssl_root_cert {
            Some(p) => check_inside_files_folder(p).map_err(|e| format!("ssl_root_cert: {e}")),
            None => Ok(()),
        },
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

    #[test]
    fn a_database_certificate_path_follows_the_rule_naming_its_key() {
        use crate::spec::connector::{Role, parse_connector};
        let doc = |cert: &str| serde_json::json!({"connector_type": "mysql", "config": {"host": "h", "database": "d", "username": "u", "table": "t", "ssl_root_cert": cert}});
        let spec = |cert: &str| parse_connector(&doc(cert), "", Role::Any, &mut crate::SpecErrors::new()).unwrap();
        let e = check_connector_inside_files_folder(&spec("/etc/shadow")).unwrap_err();
        assert!(e.starts_with("ssl_root_cert: `/etc/shadow` leaves"), "{e}");
        assert!(check_connector_inside_files_folder(&spec("certs/ca.pem")).is_ok());
        assert_eq!(file_path_keys("postgresql"), ["ssl_root_cert"]);
    }
}
