//! `connector_type: nats` — core NATS or JetStream (see [`NatsConfig`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::SpecErrors;
use crate::spec::connector::Role;
use crate::spec::connectors::{ConnectorConfig, ConnectorKind, Roles, Status, schema_of};
use crate::spec::connectors::common::{PayloadFormat, Secret, default_connect_timeout, default_payload_format, url_userinfo};
use crate::spec::reader::parse_json;

/// `connector_type: nats` — core NATS or JetStream.
///
/// A source with `stream` reads a JetStream stream through a durable pull consumer and
/// acknowledges messages only once a checkpoint covering them has completed; without
/// `stream` it subscribes to `subject` on core NATS (at most once: core NATS keeps nothing).
/// A destination with `stream` publishes to JetStream with a `Nats-Msg-Id` per record, so
/// the stream's de-duplication drops what a replay after a crash publishes again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Server URL(s), comma-separated (default `nats://127.0.0.1:4222`).
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// Source: the subject to read (for JetStream a filter within the stream; optional
    /// there). Destination: the subject records are published to (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The JetStream stream. It must exist: dagg never creates or changes streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Source, JetStream: the durable consumer's name (default: the pipeline's name, made
    /// safe). Created when missing; dagg moves it to its own checkpoint on a resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<String>,
    /// `json` (default) or `text`.
    #[serde(default = "default_payload_format")]
    pub format: PayloadFormat,
    /// User name for user/password authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Token authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Seconds to wait for the connection (default 10).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// Source, JetStream: seconds the server waits for an acknowledgement before it
    /// redelivers (default 300). Acks are sent at checkpoints, so keep it well above
    /// `checkpoint.interval_seconds`.
    #[serde(default = "default_ack_wait")]
    pub ack_wait_seconds: u64,
    /// Source, JetStream: messages delivered but not yet acknowledged at most (default:
    /// no limit). A limit below what arrives between two checkpoints stalls reading until
    /// the next checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ack_pending: Option<i64>,
    /// Destination: the prefix of every `Nats-Msg-Id` (default: the subject and a fresh id
    /// per run, kept in the checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_id: Option<String>,
}


fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_ack_wait() -> u64 {
    300
}

impl NatsConfig {
    /// Whether this reads or writes a JetStream stream (else core NATS).
    pub fn jetstream(&self) -> bool {
        self.stream.is_some()
    }
}

/// Checks a `nats` config for `role`, every problem with its path under `path`.
pub fn check_nats(c: &NatsConfig, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    let at = |key: &str| format!("{path}.{key}");
    if c.url.split(',').any(|u| u.trim().is_empty()) {
        errs.push(at("url"), format!("`{}` is not a list of server URLs (`nats://host:4222`, comma-separated)", c.url));
    }
    if c.url.split(',').any(|u| url_userinfo(u.trim()).is_some()) {
        errs.push(at("url"), "a server URL carries credentials; give them in `username` and `password`, or `token` (secrets), not in the URL");
    }
    if let Some(s) = &c.subject
        && (s.is_empty() || s.contains(char::is_whitespace) || s.split('.').any(str::is_empty))
    {
        errs.push(at("subject"), format!("`{s}` is not a NATS subject (dot-separated tokens, no spaces)"));
    }
    for (key, v) in [("stream", &c.stream), ("durable", &c.durable)] {
        if let Some(v) = v
            && (v.is_empty() || v.contains(['.', '*', '>', ' ', '/', '\\']))
        {
            errs.push(at(key), format!("`{v}` is not a valid JetStream name (no `.`, `*`, `>`, `/`, `\\` or spaces)"));
        }
    }
    if c.username.is_none() && c.password.is_some() {
        errs.push(at("password"), "`password` needs `username`");
    }
    if c.token.is_some() && c.username.is_some() {
        errs.push(at("token"), "give either `token` or `username`/`password`, not both");
    }
    if !(1..=3600).contains(&c.connect_timeout) {
        errs.push(at("connect_timeout"), format!("{} is out of range; expected seconds from 1 to 3600", c.connect_timeout));
    }
    if !(1..=86_400).contains(&c.ack_wait_seconds) {
        errs.push(at("ack_wait_seconds"), format!("{} is out of range; expected seconds from 1 to 86400", c.ack_wait_seconds));
    }
    if let Some(m) = c.max_ack_pending
        && m < 1
    {
        errs.push(at("max_ack_pending"), format!("{m} is out of range; expected at least 1 (leave it out for no limit)"));
    }
    match role {
        Role::Source => {
            if c.stream.is_none() && c.subject.is_none() {
                errs.push(at("subject"), "required field `subject` is missing (or give `stream` to read a JetStream stream)");
            }
            if c.stream.is_none() && c.durable.is_some() {
                errs.push(at("durable"), "`durable` names a JetStream consumer: it needs `stream`");
            }
            if c.sink_id.is_some() {
                errs.push(at("sink_id"), "`sink_id` applies only to a destination");
            }
        }
        Role::Sink => {
            if c.subject.is_none() {
                errs.push(at("subject"), "required field `subject` is missing (the subject records are published to)");
            }
            for key in ["durable", "max_ack_pending"] {
                let set = if key == "durable" { c.durable.is_some() } else { c.max_ack_pending.is_some() };
                if set {
                    errs.push(at(key), format!("`{key}` applies only to a source"));
                }
            }
        }
        Role::Any => {}
    }
    (errs.len() == before).then_some(())
}

/// The `nats` kind.
pub const KIND: ConnectorKind = ConnectorKind {
    name: "nats",
    aliases: &[],
    summary: "NATS: a JetStream durable consumer or a core subject as a source, publishing as a destination.",
    roles: Roles::Both,
    icon: "radio",
    status: Status::Implemented { parse, schema: schema_of::<NatsConfig> },
};

fn parse(config: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorConfig> {
    let c: NatsConfig = parse_json(config, path, errs)?;
    check_nats(&c, path, role, errs)?;
    Some(ConnectorConfig::Nats(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;


    fn check(v: serde_json::Value, role: Role) -> Result<NatsConfig, Vec<String>> {
        let c: NatsConfig = serde_json::from_value(v).map_err(|e| vec![e.to_string()])?;
        let mut errs = SpecErrors::new();
        match check_nats(&c, "source.config", role, &mut errs) {
            Some(()) => Ok(c),
            None => Err(errs.iter().map(|e| format!("{}: {}", e.path, e.message)).collect()),
        }
    }

    #[test]
    fn a_jetstream_source_needs_only_its_stream() {
        let c = check(json!({"stream": "ORDERS"}), Role::Source).unwrap();
        assert!(c.jetstream());
        assert_eq!(c.url, "nats://127.0.0.1:4222");
        assert_eq!(c.ack_wait_seconds, 300);
    }

    #[test]
    fn role_rules_name_the_key() {
        let e = check(json!({"stream": "S"}), Role::Sink).unwrap_err();
        assert!(e[0].starts_with("source.config.subject: required"), "{e:?}");
        let e = check(json!({"subject": "a.b", "durable": "d"}), Role::Source).unwrap_err();
        assert!(e[0].contains("durable") && e[0].contains("needs `stream`"), "{e:?}");
        let e = check(json!({"subject": "a..b", "stream": "x.y"}), Role::Source).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn credentials_in_a_url_are_refused_without_showing_them() {
        for url in ["nats://u:pw@127.0.0.1:4222", "nats://127.0.0.1:4222, nats://s3cr3t@h:4222"] {
            let e = check(json!({"url": url, "subject": "a"}), Role::Source).unwrap_err();
            assert!(e.len() == 1 && e[0].starts_with("source.config.url:") && e[0].contains("`password`"), "{e:?}");
            assert!(!e[0].contains("pw") && !e[0].contains("s3cr3t"), "{e:?}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(check(json!({"subject": "a", "colour": 1}), Role::Source).unwrap_err()[0].contains("unknown field `colour`"));
    }
}
