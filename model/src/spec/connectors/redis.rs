//! `connector_type: redis` — a Redis stream or list as a source; a stream, a list or hashes
//! as a destination (see [`RedisConfig`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::SpecErrors;
use crate::spec::connector::Role;
use crate::spec::connectors::common::{Secret, default_connect_timeout};
use crate::spec::connectors::{ConnectorConfig, ConnectorKind, Roles, Status, schema_of};
use crate::spec::reader::parse_json;

/// `connector_type: redis` — one Redis server (not Redis Cluster).
///
/// A source reads a stream through a consumer group (entries are acknowledged with `XACK`
/// only once a checkpoint covering them has completed; after a crash this consumer's pending
/// entries are read again first, in order) or a list by index, without removing anything. A
/// destination adds every record to a stream (`XADD`), appends it to a list (`RPUSH`) or
/// writes it as a hash (`HSET`); what a checkpoint covers is written in one `MULTI`/`EXEC`
/// together with a marker key, so a replay after a crash writes nothing twice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `redis://host:port/db` (default `redis://127.0.0.1:6379`, database 0). A user name
    /// may stand in it (`redis://user@host`); a password may not: give it in `password`.
    /// `rediss://` (TLS) is not supported by this build.
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// User name for Redis ACLs (`AUTH user password`); without it a `password` is the
    /// default user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password (`AUTH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The stream. Source: read through the consumer group `group`. Destination: every
    /// record is added with `XADD` (an id made by Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The list. Source: read by index from the head, nothing removed. Destination: every
    /// record is appended with `RPUSH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// Source, stream: the consumer group (default: the pipeline's name; `dagg` outside a
    /// run). Created with `MKSTREAM` when missing, starting at `start_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Source, stream: this reader's name in the group (default `dagg`). Keep it stable:
    /// after a crash the entries delivered to this name and not yet acknowledged are read
    /// again first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// Source, stream: where a group that dagg creates starts: `0` (default: everything the
    /// stream holds), `$` (only entries added from now on) or an entry id. An existing group
    /// keeps its own position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_id: Option<String>,
    /// Source: whether to wait for more once everything there is has been read (default
    /// `true`: the run goes on until it is stopped). `false` ends the run there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
    /// Destination: write every record as a hash (`HSET`) whose key is `key_prefix`
    /// followed by the text of this field's value (a record without it is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_field: Option<String>,
    /// Destination: the text before `key_field`'s value in every hash key (default none),
    /// e.g. `order:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// How entries, list elements and hashes map to records: `fields` (default for streams
    /// and hashes: every field of the entry or hash is a field of the record; a source reads
    /// every value as a string, a destination writes strings as they are, other values as
    /// JSON text and leaves nulls out), `json` (default for lists: the record is one JSON
    /// object, in the field `data_field` of an entry or hash, or the list element itself) or
    /// `text` (the record `{"payload": "<text>"}`, kept the same way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<RedisFormat>,
    /// For `json` and `text` with a stream or hashes: the field that holds the record
    /// (default `data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_field: Option<String>,
    /// Destination: the id of its commit marker, the key `dagg:sink:<sink_id>` (default: the
    /// target key and a fresh id per run, kept in the checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_id: Option<String>,
    /// Seconds to wait for the connection and for each answer (default 10).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
}

/// How records map to Redis values (see [`RedisConfig::format`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedisFormat {
    /// Each field of an entry or hash is a field of the record.
    Fields,
    /// The record as one JSON object.
    Json,
    /// The record `{"payload": "<text>"}`.
    Text,
}

fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}

/// What a source reads or a destination writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisTarget<'a> {
    Stream(&'a str),
    List(&'a str),
    /// Hashes keyed by `key_prefix` + the value of this field.
    Hash(&'a str),
}

impl RedisConfig {
    /// The stream, list or hash field this config names (the first, when several are given:
    /// validation refuses that).
    pub fn target(&self) -> Option<RedisTarget<'_>> {
        match (&self.stream, &self.list, &self.key_field) {
            (Some(s), _, _) => Some(RedisTarget::Stream(s)),
            (None, Some(l), _) => Some(RedisTarget::List(l)),
            (None, None, Some(k)) => Some(RedisTarget::Hash(k)),
            _ => None,
        }
    }

    /// The format in force: as given, else `json` for a list and `fields` otherwise.
    pub fn effective_format(&self) -> RedisFormat {
        self.format.unwrap_or(if self.stream.is_none() && self.list.is_some() { RedisFormat::Json } else { RedisFormat::Fields })
    }

    pub fn group_name(&self) -> &str {
        self.group.as_deref().unwrap_or("dagg")
    }

    pub fn consumer_name(&self) -> &str {
        self.consumer.as_deref().unwrap_or("dagg")
    }

    pub fn start(&self) -> &str {
        self.start_id.as_deref().unwrap_or("0")
    }

    pub fn follows(&self) -> bool {
        self.follow.unwrap_or(true)
    }

    pub fn data_field_name(&self) -> &str {
        self.data_field.as_deref().unwrap_or("data")
    }
}

/// The parts of a `redis://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
}

impl RedisUrl {
    /// `redis://host:port/db`, as messages name the server (never with credentials).
    pub fn target(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("redis://{host}:{}/{}", self.port, self.db)
    }
}

/// Reads `redis://[user@]host[:port][/db]`. A password in it is an error that says where it
/// belongs; so is TLS (`rediss://`), which this build does not support.
pub fn parse_redis_url(url: &str) -> Result<RedisUrl, String> {
    let expected = "expected `redis://host:6379/0`";
    let rest = match url.split_once("://") {
        Some(("redis", rest)) => rest,
        Some(("rediss", _)) => return Err(format!("`rediss://` (TLS) is not supported by this build; {expected}")),
        Some((scheme, _)) => return Err(format!("the scheme is `{scheme}`, not `redis`; {expected}")),
        None => return Err(format!("`{url}` is not a URL; {expected}")),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let username = match userinfo {
        Some(u) if u.contains(':') => {
            return Err("the URL carries a password: give it in `password` (a secret: encrypted at rest and masked), and the URL without it".into());
        }
        Some("") => None,
        Some(u) => Some(u.to_string()),
        None => None,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| format!("`[{v6}` has no closing `]`; {expected}"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("no host; {expected}"));
    }
    let port = match port {
        None | Some("") => 6379,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("the port `{p}` is not a number from 1 to 65535"))?,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let db = if path.is_empty() { 0 } else { path.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(|| format!("the path `/{path}` is not a database number; {expected}"))? };
    Ok(RedisUrl { host, port, db, username })
}

/// The URL with any user information left out, for messages.
pub fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Whether `id` is a stream entry id (`<ms>` or `<ms>-<seq>`).
fn is_entry_id(id: &str) -> bool {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok()
}

/// Checks a `redis` config for `role`, every problem with its path under `path`.
pub fn check_redis(c: &RedisConfig, path: &str, role: Role, errs: &mut SpecErrors) -> Option<()> {
    let before = errs.len();
    let at = |key: &str| format!("{path}.{key}");
    match parse_redis_url(&c.url) {
        Ok(u) => {
            if u.username.is_some() && c.username.is_some() {
                errs.push(at("username"), "the URL names a user too: give it in one place");
            }
        }
        Err(why) => errs.push(at("url"), format!("`{}`: {why}", shown_url(&c.url))),
    }
    for (key, v) in [
        ("stream", &c.stream),
        ("list", &c.list),
        ("group", &c.group),
        ("consumer", &c.consumer),
        ("key_field", &c.key_field),
        ("data_field", &c.data_field),
        ("sink_id", &c.sink_id),
        ("username", &c.username),
    ] {
        if v.as_deref() == Some("") {
            errs.push(at(key), format!("`{key}` is empty"));
        }
    }
    if let Some(s) = &c.start_id
        && !(s == "0" || s == "$" || is_entry_id(s))
    {
        errs.push(at("start_id"), format!("`{s}` is not `0`, `$` or an entry id (`1700000000000-0`)"));
    }
    if !(1..=3600).contains(&c.connect_timeout) {
        errs.push(at("connect_timeout"), format!("{} is out of range; expected seconds from 1 to 3600", c.connect_timeout));
    }
    if c.key_prefix.is_some() && c.key_field.is_none() {
        errs.push(at("key_prefix"), "`key_prefix` needs `key_field` (the field whose value follows it in each hash key)");
    }
    let format = c.effective_format();
    if c.list.is_some() && c.stream.is_none() && format == RedisFormat::Fields {
        errs.push(at("format"), "`fields` needs a stream or hashes: a list element is one value (use `json` or `text`)");
    }
    if c.data_field.is_some() && (format == RedisFormat::Fields || (c.list.is_some() && c.stream.is_none())) {
        errs.push(at("data_field"), "`data_field` applies only to `json` or `text` with a stream or hashes");
    }
    let given = |keys: &[(&str, bool)]| keys.iter().filter(|(_, set)| *set).map(|(k, _)| format!("`{k}`")).collect::<Vec<_>>();
    match role {
        Role::Source => {
            let set = given(&[("stream", c.stream.is_some()), ("list", c.list.is_some())]);
            match set.len() {
                0 => errs.push(at("stream"), "required field `stream` is missing (or give `list` to read a list)"),
                1 => {}
                _ => errs.push(at("list"), "give exactly one of `stream` and `list`"),
            }
            for (key, set) in [("key_field", c.key_field.is_some()), ("key_prefix", c.key_prefix.is_some()), ("sink_id", c.sink_id.is_some())] {
                if set {
                    errs.push(at(key), format!("`{key}` applies only to a destination"));
                }
            }
            if c.stream.is_none() {
                for (key, set) in [("group", c.group.is_some()), ("consumer", c.consumer.is_some()), ("start_id", c.start_id.is_some())] {
                    if set {
                        errs.push(at(key), format!("`{key}` applies only to a stream"));
                    }
                }
            }
        }
        Role::Sink => {
            let set = given(&[("stream", c.stream.is_some()), ("list", c.list.is_some()), ("key_field", c.key_field.is_some())]);
            match set.len() {
                0 => errs.push(at("stream"), "required field `stream` is missing (or give `list` to append to a list, or `key_field` to write hashes)"),
                1 => {}
                _ => errs.push(at(if c.key_field.is_some() { "key_field" } else { "list" }), format!("give exactly one of `stream`, `list` and `key_field`, not {}", set.join(" and "))),
            }
            for (key, set) in [("group", c.group.is_some()), ("consumer", c.consumer.is_some()), ("start_id", c.start_id.is_some()), ("follow", c.follow.is_some())] {
                if set {
                    errs.push(at(key), format!("`{key}` applies only to a source"));
                }
            }
        }
        Role::Any => {}
    }
    (errs.len() == before).then_some(())
}

/// The `redis` kind.
pub const KIND: ConnectorKind = ConnectorKind {
    name: "redis",
    aliases: &[],
    summary: "Redis: a stream (consumer group, acknowledged at checkpoints) or a list as a source; a stream, a list or hashes as a destination.",
    roles: Roles::Both,
    icon: "database",
    status: Status::Implemented { parse, schema: schema_of::<RedisConfig> },
};

fn parse(config: &Json, path: &str, role: Role, errs: &mut SpecErrors) -> Option<ConnectorConfig> {
    let c: RedisConfig = parse_json(config, path, errs)?;
    check_redis(&c, path, role, errs)?;
    Some(ConnectorConfig::Redis(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Json, role: Role) -> Result<RedisConfig, Vec<String>> {
        let c: RedisConfig = serde_json::from_value(v).map_err(|e| vec![e.to_string()])?;
        let mut errs = SpecErrors::new();
        match check_redis(&c, "source.config", role, &mut errs) {
            Some(()) => Ok(c),
            None => Err(errs.iter().map(|e| format!("{}: {}", e.path, e.message)).collect()),
        }
    }

    #[test]
    fn the_issue_config_reads_as_a_stream_source_with_defaults() {
        let c = check(json!({"url": "redis://127.0.0.1:6379", "stream": "orders", "group": "dagg"}), Role::Source).unwrap();
        assert_eq!(c.target(), Some(RedisTarget::Stream("orders")));
        assert_eq!((c.group_name(), c.consumer_name(), c.start(), c.follows()), ("dagg", "dagg", "0", true));
        assert_eq!(c.effective_format(), RedisFormat::Fields);
        assert_eq!(c.connect_timeout, 10);
        let c = check(json!({"list": "jobs"}), Role::Source).unwrap();
        assert_eq!((c.target(), c.effective_format(), c.url.as_str()), (Some(RedisTarget::List("jobs")), RedisFormat::Json, "redis://127.0.0.1:6379"));
    }

    #[test]
    fn urls_are_read_and_a_password_in_one_is_refused_with_where_it_belongs() {
        let u = parse_redis_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!(u, RedisUrl { host: "127.0.0.1".into(), port: 6379, db: 0, username: None });
        let u = parse_redis_url("redis://app@cache.internal/3").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db, u.username.as_deref()), ("cache.internal", 6379, 3, Some("app")));
        assert_eq!(u.target(), "redis://cache.internal:6379/3");
        assert_eq!(parse_redis_url("redis://[::1]:7000").unwrap().target(), "redis://[::1]:7000/0");
        assert!(parse_redis_url("rediss://h").unwrap_err().contains("TLS"));
        assert!(parse_redis_url("http://h").unwrap_err().contains("not `redis`"));
        assert!(parse_redis_url("redis://h/x").unwrap_err().contains("database number"));
        assert!(parse_redis_url("redis://h:99999").unwrap_err().contains("port"));
        let e = check(json!({"url": "redis://app:hunter2@h:6379", "stream": "s"}), Role::Source).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("source.config.url: `redis://h:6379`: the URL carries a password: give it in `password`"), "{e:?}");
        assert!(!e[0].contains("hunter2"), "{e:?}");
        let e = check(json!({"url": "redis://:hunter2@h", "stream": "s"}), Role::Sink).unwrap_err();
        assert!(e[0].contains("`password`") && !e[0].contains("hunter2"), "{e:?}");
        let e = check(json!({"url": "redis://app@h", "username": "other", "stream": "s"}), Role::Source).unwrap_err();
        assert!(e[0].starts_with("source.config.username"), "{e:?}");
        let c = check(json!({"url": "redis://h", "username": "app", "password": "pw", "stream": "s"}), Role::Source).unwrap();
        assert_eq!(format!("{:?}", c.password), "Some(\"********\")");
    }

    #[test]
    fn a_source_reads_exactly_one_of_stream_and_list() {
        let e = check(json!({}), Role::Source).unwrap_err();
        assert!(e[0].starts_with("source.config.stream: required field `stream` is missing"), "{e:?}");
        let e = check(json!({"stream": "s", "list": "l"}), Role::Source).unwrap_err();
        assert_eq!(e, vec!["source.config.list: give exactly one of `stream` and `list`"]);
        let e = check(json!({"list": "l", "group": "g", "key_field": "id"}), Role::Source).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().any(|m| m.contains("`key_field` applies only to a destination")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("`group` applies only to a stream")), "{e:?}");
        let e = check(json!({"stream": "s", "start_id": "later"}), Role::Source).unwrap_err();
        assert!(e[0].starts_with("source.config.start_id"), "{e:?}");
        assert!(check(json!({"stream": "s", "start_id": "1700000000000-3"}), Role::Source).is_ok());
        let e = check(json!({"list": "l", "format": "fields"}), Role::Source).unwrap_err();
        assert!(e[0].starts_with("source.config.format") && e[0].contains("`json` or `text`"), "{e:?}");
    }

    #[test]
    fn a_destination_writes_exactly_one_of_stream_list_and_hashes() {
        let c = check(json!({"key_field": "id", "key_prefix": "order:"}), Role::Sink).unwrap();
        assert_eq!((c.target(), c.effective_format()), (Some(RedisTarget::Hash("id")), RedisFormat::Fields));
        let c = check(json!({"stream": "out", "format": "json"}), Role::Sink).unwrap();
        assert_eq!((c.target(), c.data_field_name()), (Some(RedisTarget::Stream("out")), "data"));
        let e = check(json!({}), Role::Sink).unwrap_err();
        assert!(e[0].contains("`key_field` to write hashes"), "{e:?}");
        let e = check(json!({"stream": "s", "key_field": "id"}), Role::Sink).unwrap_err();
        assert_eq!(e, vec!["source.config.key_field: give exactly one of `stream`, `list` and `key_field`, not `stream` and `key_field`"]);
        let e = check(json!({"stream": "s", "group": "g", "follow": false}), Role::Sink).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        let e = check(json!({"stream": "s", "key_prefix": "x:"}), Role::Sink).unwrap_err();
        assert!(e[0].starts_with("source.config.key_prefix: `key_prefix` needs `key_field`"), "{e:?}");
        let e = check(json!({"stream": "s", "data_field": "d"}), Role::Sink).unwrap_err();
        assert!(e[0].starts_with("source.config.data_field"), "{e:?}");
    }

    #[test]
    fn unknown_keys_and_bad_formats_are_refused_by_serde() {
        assert!(serde_json::from_value::<RedisConfig>(json!({"stream": "s", "host": "h"})).unwrap_err().to_string().contains("unknown field `host`"));
        assert!(serde_json::from_value::<RedisConfig>(json!({"stream": "s", "format": "xml"})).is_err());
    }
}
