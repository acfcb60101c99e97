//! `connector_type: rabbitmq` — a RabbitMQ queue, at least once (see [`RabbitmqConfig`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::SpecErrors;
use crate::spec::connector::Role;
use crate::spec::connectors::{ConnectorConfig, ConnectorKind, Roles, Status, schema_of};
use crate::spec::connectors::common::{PayloadFormat, Secret, default_connect_timeout, default_payload_format, url_userinfo};
use crate::spec::reader::parse_json;

/// `connector_type: rabbitmq` — a RabbitMQ queue (AMQP 0-9-1).
///
/// A source consumes `queue` with manual acknowledgements, sent only once a checkpoint
/// covering the messages has completed; what was delivered but not acknowledged when a run
/// stops or crashes is delivered again by the broker (at least once). A destination
/// publishes every record as a persistent message to `exchange` with `routing_key` (or
/// `queue`), with publisher confirms awaited at each checkpoint, and a `message_id` of
/// `<sink_id>:<n>` by which consumers can drop what a replay publishes again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqConfig {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `amqp://host:port/vhost` (default `amqp://127.0.0.1:5672/%2f`; `%2f` is the vhost
    /// `/`). A password in the URL is refused: give `username` and `password`.
    #[serde(default = "default_amqp_url")]
    pub url: String,
    /// The user to log in as (default: the URL's user, else `guest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The user's password (default `guest` when no user is given at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Source: the queue to consume (required; it must exist). Destination: the routing key
    /// when `routing_key` is not given (publishing to the default exchange puts the message
    /// in this queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Destination: the exchange (default `""`, the default exchange). It must exist.
    #[serde(default)]
    pub exchange: String,
    /// Destination: the routing key (default: `queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// Source: messages delivered but not yet acknowledged at most (default 10000). Acks
    /// are sent at checkpoints: a prefetch below what arrives between two checkpoints slows
    /// reading to `prefetch` messages per checkpoint interval.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// `json` (default) or `text`.
    #[serde(default = "default_payload_format")]
    pub format: PayloadFormat,
    /// Destination: the prefix of every `message_id` (default: the routing key and a fresh
    /// id per run, kept in the checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_id: Option<String>,
    /// Seconds to wait for the connection (default 10).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
}

fn default_amqp_url() -> String {
    "amqp://127.0.0.1:5672/%2f".into()
}
fn default_prefetch() -> u16 {
    10_000
}

impl RabbitmqConfig {
    /// The routing key a destination publishes with.
    pub fn effective_routing_key(&self) -> Option<&str> {
        self.routing_key.as_deref().or(self.queue.as_deref())
    }
}

/// Checks a `rabbitmq` config for `role`.
pub fn check_rabbitmq(c: &RabbitmqConfig, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    let at = |key: &str| format!("{path}.{key}");
    if !c.url.starts_with("amqp://") {
        let why = if c.url.starts_with("amqps://") { " (TLS is not supported by this build)" } else { "" };
        errs.push(at("url"), format!("`{}` is not an AMQP URL (`amqp://host:5672/vhost`){why}", mask_url(&c.url)));
    }
    match url_userinfo(&c.url) {
        Some((_, true)) => errs.push(at("url"), "the URL carries a password; give it in `password` (a secret) and the user in `username`"),
        Some((user, false)) if !user.is_empty() && c.username.is_some() => errs.push(at("username"), "the URL names a user too; give the user once"),
        _ => {}
    }
    if c.password.is_some() && c.username.is_none() && url_userinfo(&c.url).is_none_or(|(u, _)| u.is_empty()) {
        errs.push(at("password"), "`password` needs `username`");
    }
    for (key, v) in [("queue", &c.queue), ("routing_key", &c.routing_key)] {
        if let Some(v) = v
            && v.len() > 255
        {
            errs.push(at(key), format!("`{key}` is longer than 255 bytes"));
        }
    }
    if c.prefetch == 0 {
        errs.push(at("prefetch"), "0 is out of range; expected 1 to 65535");
    }
    if !(1..=3600).contains(&c.connect_timeout) {
        errs.push(at("connect_timeout"), format!("{} is out of range; expected seconds from 1 to 3600", c.connect_timeout));
    }
    match role {
        Role::Source => {
            if c.queue.as_deref().is_none_or(str::is_empty) {
                errs.push(at("queue"), "required field `queue` is missing (the queue to consume)");
            }
            for (key, set) in [("exchange", !c.exchange.is_empty()), ("routing_key", c.routing_key.is_some()), ("sink_id", c.sink_id.is_some())] {
                if set {
                    errs.push(at(key), format!("`{key}` applies only to a destination"));
                }
            }
        }
        Role::Sink => {
            if c.effective_routing_key().is_none() {
                errs.push(at("routing_key"), "required field `routing_key` is missing (or give `queue` to publish to that queue)");
            }
        }
        Role::Any => {}
    }
    (errs.len() == before).then_some(())
}

/// A URL with its password replaced, for messages.
fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// The `rabbitmq` kind.
pub const KIND: ConnectorKind = ConnectorKind {
    name: "rabbitmq",
    aliases: &[],
    summary: "A RabbitMQ queue as a source; publishing to an exchange (by default into the queue) as a destination.",
    roles: Roles::Both,
    icon: "inbox",
    status: Status::Implemented { parse, schema: schema_of::<RabbitmqConfig> },
};

fn parse(config: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorConfig> {
    let c: RabbitmqConfig = parse_json(config, path, errs)?;
    check_rabbitmq(&c, path, role, errs)?;
    Some(ConnectorConfig::Rabbitmq(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rabbitmq_configs_are_checked_with_paths() {
        let c: RabbitmqConfig = serde_json::from_value(json!({"queue": "orders"})).unwrap();
        let mut errs = SpecErrors::new();
        assert!(check_rabbitmq(&c, "source.config", Role::Source, &mut errs).is_some());
        assert_eq!((c.url.as_str(), c.prefetch, c.exchange.as_str()), ("amqp://127.0.0.1:5672/%2f", 10_000, ""));
        assert_eq!(c.effective_routing_key(), Some("orders"));
        let c: RabbitmqConfig = serde_json::from_value(json!({"url": "amqps://u:secret@h", "exchange": "x", "prefetch": 0})).unwrap();
        let mut errs = SpecErrors::new();
        assert!(check_rabbitmq(&c, "source.config", Role::Source, &mut errs).is_none());
        let got: Vec<_> = errs.iter().map(|e| format!("{}: {}", e.path, e.message)).collect();
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got[0].starts_with("source.config.url: `amqps://h`") && got[0].contains("TLS"), "{got:?}");
        assert!(got[1].starts_with("source.config.url: the URL carries a password") && got[1].contains("`password`"), "{got:?}");
        assert!(!got.iter().any(|e| e.contains("u:secret")), "{got:?}");
        assert!(got[3].starts_with("source.config.queue: required"), "{got:?}");
        let mut errs = SpecErrors::new();
        let c: RabbitmqConfig = serde_json::from_value(json!({"exchange": "x"})).unwrap();
        assert!(check_rabbitmq(&c, "destination.config", Role::Sink, &mut errs).is_none());
        assert_eq!(errs.iter().next().unwrap().path, "destination.config.routing_key");
        // The password is a field of its own, a secret.
        let c: RabbitmqConfig = serde_json::from_value(json!({"queue": "q", "username": "u", "password": "pw"})).unwrap();
        assert!(check_rabbitmq(&c, "source.config", Role::Source, &mut SpecErrors::new()).is_some());
        assert!(!format!("{c:?}").contains("\"pw\""));
        let c: RabbitmqConfig = serde_json::from_value(json!({"url": "amqp://u:pw@h:5672/%2f", "queue": "q"})).unwrap();
        let mut errs = SpecErrors::new();
        assert!(check_rabbitmq(&c, "source.config", Role::Source, &mut errs).is_none());
        assert!(errs.iter().all(|e| !e.message.contains("pw")), "{errs}");
    }
}
