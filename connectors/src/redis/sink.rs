//! The `redis` destination: `XADD`, `RPUSH` or `HSET` commands kept until the checkpoint's
//! barrier and run in one `MULTI`/`EXEC` with the epoch's marker. See the module docs of
//! [`super`] for the exactly-once protocol.

use std::collections::{HashMap, HashSet};

use dagg_model::spec::connectors::redis::{RedisConfig, RedisFormat, RedisTarget};
use dagg_model::spec::streaming::PayloadFormat;
use dagg_model::{Record, Value};
use redis::aio::MultiplexedConnection;
use redis::{Cmd, RedisError, Value as RValue};
use serde_json::json;

use super::{command_error, connect, key_type, target, text};
use crate::epoch::Epoch;
use crate::{ConnectorError, SinkConnector};

/// The key of a destination's commit marker.
pub fn marker_key(sink_id: &str) -> String {
    format!("dagg:sink:{sink_id}")
}

/// Where records go.
#[derive(Clone, Debug)]
enum Output {
    Stream(String),
    List(String),
    Hash { key_field: String, prefix: String },
}

impl Output {
    /// The type a key must hold (or none yet).
    fn key_type(&self) -> &'static str {
        match self {
            Output::Stream(_) => "stream",
            Output::List(_) => "list",
            Output::Hash { .. } => "hash",
        }
    }
}

/// A `redis` destination.
pub struct RedisSink {
    config: RedisConfig,
    target: String,
    output: Output,
    format: RedisFormat,
    conn: Option<MultiplexedConnection>,
    sink_id: String,
    /// The commands of this epoch, run at its barrier.
    pending: Vec<Cmd>,
    /// The records since the last barrier, and what a replay skips.
    epoch: Epoch,
    /// Whether a marker of this sink may exist (so `commit` deletes it).
    marked: bool,
}

impl RedisSink {
    pub fn open(c: &RedisConfig) -> Result<RedisSink, ConnectorError> {
        super::server(c)?;
        let output = match c.target() {
            Some(RedisTarget::Stream(s)) => Output::Stream(s.to_string()),
            Some(RedisTarget::List(l)) => Output::List(l.to_string()),
            Some(RedisTarget::Hash(k)) => Output::Hash { key_field: k.to_string(), prefix: c.key_prefix.clone().unwrap_or_default() },
            None => return Err(ConnectorError::Config("a redis destination needs one of `stream`, `list` and `key_field`".into())),
        };
        let label = match &output {
            Output::Stream(k) | Output::List(k) => k.clone(),
            Output::Hash { key_field, prefix } => format!("{prefix}{key_field}"),
        };
        let sink_id = c.sink_id.clone().unwrap_or_else(|| format!("{label}-{}", uuid::Uuid::new_v4()));
        Ok(RedisSink {
            config: c.clone(),
            target: target(c),
            output,
            format: c.effective_format(),
            conn: None,
            sink_id,
            pending: Vec::new(),
            epoch: Epoch::default(),
            marked: false,
        })
    }

    fn fail(&mut self, what: &str, e: RedisError) -> ConnectorError {
        self.conn = None;
        command_error(&self.target, self.config.connect_timeout, what, &e)
    }

    /// Connects; a stream or list destination checks its key's type once.
    async fn ready(&mut self) -> Result<(), ConnectorError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let mut conn = connect(&self.config).await?;
        if let Output::Stream(key) | Output::List(key) = &self.output {
            let want = self.output.key_type();
            let ty = match key_type(&mut conn, key).await {
                Ok(t) => t,
                Err(e) => return Err(command_error(&self.target, self.config.connect_timeout, &format!("TYPE {key}"), &e)),
            };
            if ty != "none" && ty != want {
                return Err(ConnectorError::Query { target: self.target.clone(), reason: format!("key `{key}` holds a {ty}, not a {want}") });
            }
        }
        self.conn = Some(conn);
        Ok(())
    }

    /// The field/value pairs of a record (`fields`), or its one `data_field`.
    fn pairs(&self, r: &Record) -> Result<Vec<(String, String)>, String> {
        match self.format {
            RedisFormat::Fields => {
                let pairs: Vec<(String, String)> = r.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.to_string(), v.to_text())).collect();
                if pairs.is_empty() {
                    return Err("the record has no non-null field to write".into());
                }
                Ok(pairs)
            }
            f => Ok(vec![(self.config.data_field_name().to_string(), payload(f, r))]),
        }
    }

    /// The hash key of a record.
    fn hash_key(key_field: &str, prefix: &str, r: &Record) -> Result<String, String> {
        match r.get(key_field) {
            None | Some(Value::Null) => Err(format!("key field `{key_field}` is missing or null")),
            Some(v) => Ok(format!("{prefix}{}", v.to_text())),
        }
    }

    /// The command writing one record.
    fn command(&self, r: &Record) -> Result<Cmd, String> {
        Ok(match &self.output {
            Output::Stream(s) => {
                let mut c = redis::cmd("XADD");
                c.arg(s).arg("*");
                for (k, v) in self.pairs(r)? {
                    c.arg(k).arg(v);
                }
                c
            }
            Output::List(l) => {
                let mut c = redis::cmd("RPUSH");
                c.arg(l).arg(payload(self.format, r));
                c
            }
            Output::Hash { key_field, prefix } => {
                let key = Self::hash_key(key_field, prefix, r)?;
                let mut c = redis::cmd("HSET");
                c.arg(key);
                for (k, v) in self.pairs(r)? {
                    c.arg(k).arg(v);
                }
                c
            }
        })
    }

    /// Hash keys of `records` that hold something other than a hash, with that type.
    async fn wrong_hash_keys(&mut self, records: &[Record]) -> Result<HashMap<String, String>, ConnectorError> {
        let Output::Hash { key_field, prefix } = &self.output else { return Ok(HashMap::new()) };
        let keys: Vec<String> = records.iter().filter_map(|r| Self::hash_key(key_field, prefix, r).ok()).collect::<HashSet<_>>().into_iter().collect();
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("TYPE").arg(k);
        }
        let conn = self.conn.as_mut().expect("ready");
        let types: Result<Vec<RValue>, RedisError> = pipe.query_async(conn).await;
        let types = types.map_err(|e| self.fail("TYPE of the hash keys", e))?;
        Ok(keys.into_iter().zip(types).filter_map(|(k, t)| text(&t).filter(|t| t != "none" && t != "hash").map(|t| (k, t))).collect())
    }

    /// Runs this epoch's commands and then `last` in one transaction.
    async fn exec(&mut self, last: Cmd) -> Result<(), ConnectorError> {
        self.ready().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for c in self.pending.drain(..) {
            pipe.add_command(c).ignore();
        }
        pipe.add_command(last).ignore();
        let n = pipe.cmd_iter().count();
        let conn = self.conn.as_mut().expect("ready");
        let done: Result<(), RedisError> = pipe.query_async(conn).await;
        done.map_err(|e| self.fail(&format!("MULTI/EXEC of {n} commands"), e))
    }

    /// Writes the epoch's commands with the marker `(epoch, records, refused)`.
    async fn commit_with_marker(&mut self, epoch: u64, records: u64, refused: &[(u64, String)]) -> Result<(), ConnectorError> {
        let mut marker = redis::cmd("HSET");
        marker.arg(marker_key(&self.sink_id)).arg("epoch").arg(epoch).arg("records").arg(records).arg("refused").arg(json!(refused).to_string());
        self.exec(marker).await?;
        self.marked = true;
        Ok(())
    }
}

/// A record as one value: its JSON, or for `text` its `payload` field's text.
fn payload(format: RedisFormat, r: &Record) -> String {
    let f = if format == RedisFormat::Text { PayloadFormat::Text } else { PayloadFormat::Json };
    String::from_utf8(crate::nats::encode(f, r)).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[async_trait::async_trait]
impl SinkConnector for RedisSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        self.ready().await?;
        let wrong = self.wrong_hash_keys(records).await?;
        let mut refused = Vec::new();
        for (i, r) in records.iter().enumerate() {
            // A replayed record written before the crash is skipped.
            let Some(ordinal) = self.epoch.next(i, &mut refused) else { continue };
            let cmd = self.command(r).and_then(|c| {
                if let Output::Hash { key_field, prefix } = &self.output
                    && let Ok(key) = Self::hash_key(key_field, prefix, r)
                    && let Some(ty) = wrong.get(&key)
                {
                    return Err(format!("key `{key}` holds a {ty}, not a hash"));
                }
                Ok(c)
            });
            match cmd {
                Ok(c) => self.pending.push(c),
                Err(reason) => {
                    self.epoch.refuse(ordinal, reason.clone());
                    refused.push((i, reason));
                }
            }
        }
        Ok(refused)
    }

    /// The end of a run: what is left, and the marker deleted, in one transaction.
    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if !self.pending.is_empty() || self.marked {
            let mut del = redis::cmd("DEL");
            del.arg(marker_key(&self.sink_id));
            self.exec(del).await?;
            self.marked = false;
        }
        self.epoch.reset();
        Ok(())
    }

    async fn abort(&mut self) -> Result<(), ConnectorError> {
        self.pending.clear();
        self.epoch.restart();
        Ok(())
    }

    async fn pre_commit(&mut self, epoch: u64) -> Result<serde_json::Value, ConnectorError> {
        let key = match &self.output {
            Output::Stream(k) | Output::List(k) => k.clone(),
            Output::Hash { key_field, prefix } => format!("{prefix}<{key_field}>"),
        };
        let token = json!({"sink_id": self.sink_id, "epoch": epoch, "key": key});
        // Replaying, with Redis already holding records past this barrier, the marker says
        // so, so that a recover from this checkpoint skips them too.
        let m = self.epoch.barrier(epoch);
        if m.ahead || m.records > 0 {
            self.commit_with_marker(m.epoch, m.records, &m.refused).await?;
        }
        Ok(token)
    }

    async fn recover(&mut self, token: &serde_json::Value, epoch: u64) -> Result<(), ConnectorError> {
        self.pending.clear();
        self.epoch.reset();
        if let Some(id) = token.get("sink_id").and_then(|v| v.as_str()) {
            self.sink_id = id.to_string();
        }
        self.ready().await?;
        let key = marker_key(&self.sink_id);
        let conn = self.conn.as_mut().expect("ready");
        let marker: Result<HashMap<String, String>, RedisError> = redis::cmd("HGETALL").arg(&key).query_async(conn).await;
        let marker = marker.map_err(|e| self.fail(&format!("reading the commit marker `{key}`"), e))?;
        if marker.is_empty() {
            return Ok(());
        }
        self.marked = true;
        let num = |k: &str| marker.get(k).and_then(|v| v.parse::<u64>().ok());
        let (Some(stored), Some(records)) = (num("epoch"), num("records")) else {
            return Err(ConnectorError::Seek(format!("{}: the commit marker `{key}` is unreadable: {marker:?}", self.target)));
        };
        if stored == epoch + 1 {
            let list: Vec<(u64, String)> = match marker.get("refused").filter(|s| !s.is_empty()) {
                Some(list) => serde_json::from_str(list).map_err(|e| ConnectorError::Seek(format!("{}: the commit marker `{key}` is unreadable: {e}", self.target)))?,
                None => Vec::new(),
            };
            self.epoch.replay(records, list);
            tracing::info!(sink_id = %self.sink_id, epoch = stored, records, "epoch already committed: its replayed records are skipped");
        } else if stored > epoch + 1 {
            return Err(ConnectorError::Seek(format!(
                "{}: the marker `{key}` says epoch {stored} was written, past checkpoint {epoch}: the checkpoint is older than what was committed",
                self.target
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: serde_json::Value) -> Record {
        serde_json::from_value(v).unwrap()
    }

    fn sink(v: serde_json::Value) -> RedisSink {
        RedisSink::open(&serde_json::from_value(v).unwrap()).unwrap()
    }

    fn args(c: &Cmd) -> Vec<String> {
        c.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                redis::Arg::Cursor => "<cursor>".into(),
                _ => "<key>".into(),
            })
            .collect()
    }

    #[test]
    fn records_become_commands_by_output_and_format() {
        let r = rec(json!({"id": 7, "name": "a", "tags": ["x"], "note": null}));
        let s = sink(json!({"stream": "out"}));
        assert_eq!(args(&s.command(&r).unwrap()), ["XADD", "out", "*", "id", "7", "name", "a", "tags", "[\"x\"]"]);
        let s = sink(json!({"stream": "out", "format": "json", "data_field": "body"}));
        assert_eq!(args(&s.command(&r).unwrap()), ["XADD", "out", "*", "body", r#"{"id":7,"name":"a","tags":["x"],"note":null}"#]);
        let s = sink(json!({"list": "l"}));
        assert_eq!(args(&s.command(&r).unwrap())[..2], ["RPUSH", "l"]);
        let s = sink(json!({"key_field": "id", "key_prefix": "order:"}));
        assert_eq!(args(&s.command(&r).unwrap())[..4], ["HSET", "order:7", "id", "7"]);
        assert_eq!(s.command(&rec(json!({"name": "b"}))).unwrap_err(), "key field `id` is missing or null");
        let s = sink(json!({"stream": "out"}));
        assert_eq!(s.command(&rec(json!({"note": null}))).unwrap_err(), "the record has no non-null field to write");
        assert!(s.sink_id.starts_with("out-"), "{}", s.sink_id);
        assert_eq!(marker_key("x"), "dagg:sink:x");
    }
}
