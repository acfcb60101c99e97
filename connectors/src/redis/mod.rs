//! `redis`: one Redis server (the `redis` crate's multiplexed async connection, RESP2).
//!
//! # Source
//! - **Stream** (`stream`): read through the consumer group `group` as the consumer
//!   `consumer` (the group is created with `MKSTREAM` at `start_id` when missing). A record's
//!   position counts the entries the run has returned; a checkpoint holds that count and the
//!   id of the last entry returned (`last_id`). Entries are acknowledged (`XACK`) only through
//!   the [`SourceCommitter`](crate::SourceCommitter), once a checkpoint covering them has
//!   completed: every entry pending for this consumer up to the checkpoint's `last_id`
//!   (`XPENDING … - <last_id> … <consumer>`), so the acknowledgement after a restart (the
//!   runtime repeats the checkpoint it resumes from) covers what the crash kept from being
//!   acknowledged. Reading starts with this consumer's own pending entries (`XREADGROUP` with
//!   an id: delivered before, never acknowledged): after `last_id` on a resume, from the
//!   start on a fresh run; only then new entries (`>`). So an entry delivered to a run that
//!   crashed before its checkpoint is read again, in the same order, and a replay is
//!   deterministic — which is what the exactly-once destinations need. An entry deleted from
//!   the stream while pending (`XDEL`, trimming) goes to the dead letter as such.
//!   Delivery: exactly once with a destination that commits with the checkpoint; at least
//!   once when a fresh run (no checkpoint left) meets entries that an earlier run had
//!   checkpointed but not acknowledged. Other consumers of the same group get other entries:
//!   give each pipeline its own group.
//! - **List** (`list`): read by index from the head with `LRANGE`; nothing is removed. A
//!   record's position is its element's 1-based index; a checkpoint holds the next index. The
//!   list must only grow at the tail (`RPUSH`): removing from its head (`LPOP`, `LTRIM`)
//!   shifts the indexes under a resume. A run starts at the head again (a list source keeps
//!   no position between runs).
//! - With `follow` (the default) the source is unbounded and waits for more (`BLOCK` on a
//!   stream, polling a list) at most half a second per call; without it the run ends when
//!   a read finds nothing new.
//!
//! # Destination
//! Records become `XADD <stream> * …`, `RPUSH <list> …` or `HSET <key_prefix><key> …`
//! commands kept in memory until the checkpoint's barrier: `pre_commit(epoch)` runs them in one
//! `MULTI`/`EXEC` together with `HSET dagg:sink:<sink_id> epoch <epoch> records <n>`, the marker
//! saying that epoch `epoch` holds the output of `n` input records. After a crash the runtime
//! calls `recover(token, c)` with its last completed checkpoint `c` and replays the input from
//! there; when the marker says epoch `c + 1` was committed (the crash came after the `EXEC`,
//! before the checkpoint was recorded), the first `n` replayed records are skipped, and the
//! refusals recorded for them (the marker's `refused`) are returned again so the dead letter
//! gets them once too. `commit()` (the end of a run) writes what is left and deletes the
//! marker. `sink_id` comes from the config, else `<key>-<uuid>` per run, carried into a resumed
//! run by the checkpoint token. Exactly once therefore means: each record's command is
//! executed once, provided the source replays the same records in the same order (files,
//! databases, JetStream, a Redis stream or list). A record whose target key holds another type
//! (`WRONGTYPE`) is refused before the transaction, so a transaction does not fail halfway.
//! The commands of one checkpoint interval are held in memory until its barrier.

mod sink;
mod source;

use std::net::SocketAddr;
use std::time::Duration;

use dagg_model::spec::connector::Role;
use dagg_model::spec::connectors::redis::{RedisConfig, RedisTarget, RedisUrl, parse_redis_url, shown_url};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisError, Value};

use crate::{ConnectorError, SinkConnector, SourceConnector, secrets};

pub use sink::RedisSink;
pub use source::RedisSource;

pub(crate) fn source(c: &RedisConfig) -> Result<Box<dyn SourceConnector>, ConnectorError> {
    Ok(Box::new(RedisSource::open(c)?))
}

pub(crate) fn sink(c: &RedisConfig) -> Result<Box<dyn SinkConnector>, ConnectorError> {
    Ok(Box::new(RedisSink::open(c)?))
}

/// The server as messages name it: `redis://host:port/db`, never with credentials.
pub(crate) fn target(c: &RedisConfig) -> String {
    match parse_redis_url(&c.url) {
        Ok(u) => u.target(),
        Err(_) => shown_url(&c.url),
    }
}

/// The parsed URL, or a config error naming `url`.
pub(crate) fn server(c: &RedisConfig) -> Result<RedisUrl, ConnectorError> {
    parse_redis_url(&c.url).map_err(|why| ConnectorError::Config(format!("`url` `{}`: {why}", shown_url(&c.url))))
}

/// Connects within `connect_timeout`: the host is resolved and every address checked against
/// the egress policy first, and the connection goes to a checked address (not to the name,
/// which could resolve elsewhere the second time). Answers wait `connect_timeout` at most.
pub(crate) async fn connect(c: &RedisConfig) -> Result<MultiplexedConnection, ConnectorError> {
    let url = server(c)?;
    let target = url.target();
    let mut settings = RedisConnectionInfo::default().set_db(url.db).set_skip_set_lib_name();
    if let Some(user) = c.username.as_deref().or(url.username.as_deref()) {
        settings = settings.set_username(user);
    }
    if let Some(pw) = &c.password {
        let pw = secrets::reveal(pw).map_err(|e| ConnectorError::Config(format!("{target}: password: {e}")))?;
        settings = settings.set_password(pw);
    }
    let seconds = c.connect_timeout;
    let wait = Duration::from_secs(seconds);
    let addrs = crate::egress::resolve_checked(&url.host, url.port).await.map_err(|e| crate::egress::named(e, &target))?;
    let config = AsyncConnectionConfig::new().set_connection_timeout(Some(wait)).set_response_timeout(Some(wait));
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(wait, connect_to(addr, settings.clone(), &config)).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) if e.is_timeout() => last = Some(ConnectorError::Timeout { target: target.clone(), seconds, reason: "no connection".into() }),
            Ok(Err(e)) => last = Some(ConnectorError::Connect { target: target.clone(), reason: e.to_string() }),
            Err(_) => last = Some(ConnectorError::Timeout { target: target.clone(), seconds, reason: "no connection".into() }),
        }
    }
    Err(last.unwrap_or(ConnectorError::Connect { target, reason: "no address".into() }))
}

async fn connect_to(addr: SocketAddr, settings: RedisConnectionInfo, config: &AsyncConnectionConfig) -> Result<MultiplexedConnection, RedisError> {
    let info = ConnectionAddr::Tcp(addr.ip().to_string(), addr.port()).into_connection_info()?.set_redis_settings(settings);
    Client::open(info)?.get_multiplexed_async_connection_with_config(config).await
}

/// A failed command as a connector error: a timeout, a lost connection, or what the server
/// said, with `what` was being done.
pub(crate) fn command_error(target: &str, seconds: u64, what: &str, e: &RedisError) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::Timeout { target: target.to_string(), seconds, reason: format!("no answer to {what}") }
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        ConnectorError::Connect { target: target.to_string(), reason: format!("{what}: {e}") }
    } else {
        ConnectorError::Query { target: target.to_string(), reason: format!("{what}: {e}") }
    }
}

/// A bulk or simple string reply as text (invalid UTF-8 replaced).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The type of the value at `key` (`none` when there is none).
pub(crate) async fn key_type(conn: &mut MultiplexedConnection, key: &str) -> Result<String, RedisError> {
    let v: Value = redis::cmd("TYPE").arg(key).query_async(conn).await?;
    Ok(text(&v).unwrap_or_default())
}

/// The server's version, from `INFO server`.
async fn version(conn: &mut MultiplexedConnection) -> Result<String, RedisError> {
    let info: Value = redis::cmd("INFO").arg("server").query_async(conn).await?;
    let info = text(&info).unwrap_or_default();
    Ok(info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim().to_string())
}

/// Connects and checks that the stream, list or hashes can be used; says what it found.
pub(crate) async fn test_connection(c: &RedisConfig, role: Role) -> Result<String, ConnectorError> {
    let target = target(c);
    let mut conn = connect(c).await?;
    let failed = |what: &str, e: RedisError| command_error(&target, c.connect_timeout, what, &e);
    let v = version(&mut conn).await.map_err(|e| failed("INFO", e))?;
    let mut found = format!("connected to {target} (Redis {v})");
    let (key, want) = match c.target() {
        Some(RedisTarget::Stream(s)) => (s.to_string(), "stream"),
        Some(RedisTarget::List(l)) => (l.to_string(), "list"),
        Some(RedisTarget::Hash(field)) => {
            found.push_str(&format!("; hashes `{}<{field}>`", c.key_prefix.as_deref().unwrap_or("")));
            return Ok(found);
        }
        None => return Ok(found),
    };
    let ty = key_type(&mut conn, &key).await.map_err(|e| failed("TYPE", e))?;
    if ty != "none" && ty != want {
        return Err(ConnectorError::Query { target, reason: format!("key `{key}` holds a {ty}, not a {want}") });
    }
    match want {
        "stream" if ty == "none" => found.push_str(&format!("; stream `{key}` does not exist yet (a source creates it with its group, a destination with its first entry)")),
        "stream" => {
            let n: i64 = redis::cmd("XLEN").arg(&key).query_async(&mut conn).await.map_err(|e| failed("XLEN", e))?;
            found.push_str(&format!("; stream `{key}` holds {n} entries"));
            if role != Role::Sink {
                let groups: Value = redis::cmd("XINFO").arg("GROUPS").arg(&key).query_async(&mut conn).await.map_err(|e| failed("XINFO GROUPS", e))?;
                let group = c.group_name();
                let exists = matches!(&groups, Value::Array(gs) if gs.iter().any(|g| matches!(g, Value::Array(kv) if kv.chunks(2).any(|p| p.len() == 2 && text(&p[0]).as_deref() == Some("name") && text(&p[1]).as_deref() == Some(group)))));
                found.push_str(&if exists { format!("; group `{group}` exists") } else { format!("; group `{group}` will be created at `{}`", c.start()) });
            }
        }
        _ => {
            let n: i64 = redis::cmd("LLEN").arg(&key).query_async(&mut conn).await.map_err(|e| failed("LLEN", e))?;
            found.push_str(&format!("; list `{key}` holds {n} elements"));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_never_show_credentials() {
        let c: RedisConfig = serde_json::from_value(serde_json::json!({"url": "redis://app@cache:6380/2", "stream": "s"})).unwrap();
        assert_eq!(target(&c), "redis://cache:6380/2");
        let c: RedisConfig = serde_json::from_value(serde_json::json!({"url": "redis://app:secret@cache", "stream": "s"})).unwrap();
        assert_eq!(target(&c), "redis://cache");
        let e = server(&c).unwrap_err().to_string();
        assert!(e.contains("`password`") && !e.contains("secret@"), "{e}");
    }
}
