//! The `egress` setting: an admin's part of the egress policy (`dagg_connectors::egress`,
//! docs/security.md) — what every connection a user configures may reach beyond the
//! defaults, and whether S3 connectors may use the node's ambient credentials:
//! ```json
//! {"egress": {"allow": ["10.0.0.0/8", "db.internal"], "deny": ["192.168.5.0/24", "*.corp"],
//!             "s3_ambient_credentials": false}}
//! ```
//! `PUT /settings` checks it ([`parse`]) before storing it. It takes effect on every node
//! when that node's metadata store applies it: the replicated `PutSetting` command, a
//! restored snapshot, and the store's opening at start ([`apply`], called by the store). The node's own
//! part of the policy (its listeners, its addresses, the loopback rule) stays as the node
//! installed it.

use dagg_connectors::egress::{self, Rule};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use utoipa::ToSchema;

/// The setting's key.
pub const SETTING: &str = "egress";

/// The `egress` setting as an admin writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressSettings {
    /// Always reached, whatever the other rules say (even link-local addresses or this
    /// node's own ports): networks (`10.0.0.0/8`), addresses (`192.168.1.7`), host names
    /// (`db.internal`) or every name under a domain (`*.internal`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Refused (unless the allow list admits it), in the same forms as `allow`.
    #[serde(default)]
    pub deny: Vec<String>,
    /// S3 connectors without keys use the node's ambient credentials (its `AWS_*`
    /// environment, web identity, container or instance-profile credentials). Default
    /// false: their requests go unsigned.
    #[serde(default)]
    pub s3_ambient_credentials: bool,
}

/// What is wrong with a setting, and where (`egress.deny[1]`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SettingError {
    pub path: String,
    pub message: String,
}

/// Reads the setting's value (`null`: no lists, no ambient credentials).
pub fn parse(value: &Json) -> Result<egress::Admin, SettingError> {
    if value.is_null() {
        return Ok(egress::Admin::default());
    }
    let s: EgressSettings = serde_json::from_value(value.clone())
        .map_err(|e| SettingError { path: SETTING.into(), message: format!("{e} (fields: `allow`, `deny`, `s3_ambient_credentials`)") })?;
    let rules = |list: &[String], name: &str| -> Result<Vec<Rule>, SettingError> {
        list.iter()
            .enumerate()
            .map(|(i, text)| Rule::parse(text).map_err(|message| SettingError { path: format!("{SETTING}.{name}[{i}]"), message }))
            .collect()
    };
    Ok(egress::Admin { allow: rules(&s.allow, "allow")?, deny: rules(&s.deny, "deny")?, s3_ambient_credentials: s.s3_ambient_credentials })
}

/// Makes a stored value the admin's part of this node's policy (none: no lists). A value
/// that does not parse (stored by a build that checked less) leaves the policy as it was,
/// and says so in the log.
pub fn apply(value: Option<&Json>) {
    match parse(value.unwrap_or(&Json::Null)) {
        Ok(admin) => {
            tracing::info!(allow = admin.allow.len(), deny = admin.deny.len(), s3_ambient_credentials = admin.s3_ambient_credentials, "egress settings in force");
            egress::set_admin(admin);
        }
        Err(e) => tracing::error!("the stored `{SETTING}` setting is not applied: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bad_entry_is_named_by_its_list_and_index() {
        let e = parse(&json!({"allow": ["10.0.0.0/8"], "deny": ["db.internal", "not a host"]})).unwrap_err();
        assert_eq!(e.path, "egress.deny[1]");
        assert!(e.message.contains("`not a host`"), "{e}");
        let e = parse(&json!({"denied": []})).unwrap_err();
        assert_eq!(e.path, "egress");
        assert!(e.message.contains("denied"), "{e}");
        assert!(parse(&json!({"deny": "10.0.0.0/8"})).is_err());
    }

    #[test]
    fn the_setting_reads_into_rules() {
        let a = parse(&json!({"allow": ["10.1.2.3/8", "DB.internal"], "deny": ["*.corp"], "s3_ambient_credentials": true})).unwrap();
        assert_eq!(a.allow, vec![Rule::parse("10.0.0.0/8").unwrap(), Rule::parse("db.internal").unwrap()]);
        assert_eq!(a.deny, vec![Rule::parse("*.corp").unwrap()]);
        assert!(a.s3_ambient_credentials);
        assert_eq!(parse(&Json::Null).unwrap(), egress::Admin::default());
        assert_eq!(parse(&json!({})).unwrap(), egress::Admin::default());
    }
}
