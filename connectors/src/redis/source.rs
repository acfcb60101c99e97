//! The `redis` source: a stream through a consumer group (acknowledged through the commit
//! hook), or a list by index. See the module docs of [`super`] for the contract.

use std::sync::Arc;
use std::time::Duration;

use dagg_model::spec::connectors::redis::{RedisConfig, RedisFormat};
use dagg_model::spec::streaming::PayloadFormat;
use dagg_model::{Map, Position, Record, Value};
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value as RValue};
use serde_json::json;

use super::{command_error, connect, target, text};
use crate::{BadInput, ConnectorError, SourceBatch, SourceCommitter, SourceConnector};

/// How long a read waits for something new before it returns an empty batch.
const IDLE: Duration = Duration::from_millis(500);
/// Pending entries acknowledged per `XPENDING`/`XACK` round.
const ACK_CHUNK: usize = 1000;

/// What the source reads.
#[derive(Clone, Debug)]
enum Input {
    Stream { stream: String, group: String, consumer: String, start: String },
    List { list: String },
}

/// A `redis` source.
pub struct RedisSource {
    config: RedisConfig,
    target: String,
    input: Input,
    conn: Option<MultiplexedConnection>,
    /// Stream: reading this consumer's pending entries (after `last_id`) before new ones.
    pending: bool,
    /// Stream: the id of the last entry returned.
    last_id: Option<String>,
    /// List: the index of the next element.
    index: u64,
    /// Entries returned in this run (a stream record's position).
    received: u64,
    /// The entry ids of the last batch by position, to describe a bad input.
    last_ids: Vec<(u64, String)>,
    ended: bool,
    lag: Option<u64>,
}

impl RedisSource {
    pub fn open(c: &RedisConfig) -> Result<RedisSource, ConnectorError> {
        super::server(c)?;
        let input = match (&c.stream, &c.list) {
            (Some(s), None) => Input::Stream { stream: s.clone(), group: c.group_name().to_string(), consumer: c.consumer_name().to_string(), start: c.start().to_string() },
            (None, Some(l)) => Input::List { list: l.clone() },
            _ => return Err(ConnectorError::Config("a redis source needs exactly one of `stream` and `list`".into())),
        };
        Ok(RedisSource {
            config: c.clone(),
            target: target(c),
            input,
            conn: None,
            pending: true,
            last_id: None,
            index: 0,
            received: 0,
            last_ids: Vec::new(),
            ended: false,
            lag: None,
        })
    }

    fn key(&self) -> &str {
        match &self.input {
            Input::Stream { stream, .. } => stream,
            Input::List { list } => list,
        }
    }

    fn fail(&mut self, what: &str, e: RedisError) -> ConnectorError {
        // A failed connection is made again at the next read, which starts with the pending
        // entries after the last one returned: a reply lost with the connection had already
        // delivered its entries to this consumer.
        self.conn = None;
        self.pending = true;
        command_error(&self.target, self.config.connect_timeout, what, &e)
    }

    /// Connects; for a stream, creates the group (and the stream) unless it exists.
    async fn ready(&mut self) -> Result<(), ConnectorError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let mut conn = connect(&self.config).await?;
        if let Input::Stream { stream, group, start, .. } = &self.input {
            let created: Result<RValue, RedisError> = redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(group).arg(start).arg("MKSTREAM").query_async(&mut conn).await;
            if let Err(e) = created
                && e.code() != Some("BUSYGROUP")
            {
                let what = format!("creating group `{group}` of stream `{stream}`");
                return Err(self.fail(&what, e));
            }
        }
        self.conn = Some(conn);
        Ok(())
    }

    async fn next_stream(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError> {
        let Input::Stream { stream, group, consumer, .. } = self.input.clone() else { unreachable!("a stream source") };
        loop {
            let from = if self.pending { self.last_id.clone().unwrap_or_else(|| "0".into()) } else { ">".into() };
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP").arg(&group).arg(&consumer).arg("COUNT").arg(max.max(1));
            if !self.pending && self.config.follows() {
                cmd.arg("BLOCK").arg(IDLE.as_millis() as u64);
            }
            cmd.arg("STREAMS").arg(&stream).arg(&from);
            let conn = self.conn.as_mut().expect("ready");
            let reply: Result<RValue, RedisError> = cmd.query_async(conn).await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    let what = format!("reading stream `{stream}` as `{consumer}` of group `{group}`");
                    return Err(self.fail(&what, e));
                }
            };
            let entries = stream_entries(reply);
            if entries.is_empty() {
                if self.pending {
                    // This consumer's history is read: on to new entries.
                    self.pending = false;
                    continue;
                }
                if !self.config.follows() {
                    self.ended = true;
                    return Ok(None);
                }
                return Ok(Some(SourceBatch::default()));
            }
            let mut out = SourceBatch::default();
            self.last_ids.clear();
            for (id, fields) in entries {
                self.received += 1;
                let pos = Position { unit: 0, seq: self.received };
                self.last_ids.push((self.received, id.clone()));
                self.last_id = Some(id.clone());
                match fields {
                    None => out.bad.push(BadInput {
                        position: pos,
                        raw: String::new(),
                        reason: format!("entry {id} was deleted from stream `{stream}` (XDEL or trimming) before it was read"),
                    }),
                    Some(fields) => match entry_record(&self.config, &fields) {
                        Ok(r) => {
                            out.batch.records.push(r);
                            out.batch.positions.push(pos);
                        }
                        Err(reason) => out.bad.push(BadInput { position: pos, raw: raw_entry(&fields), reason: format!("entry {id}: {reason}") }),
                    },
                }
            }
            return Ok(Some(out));
        }
    }

    async fn next_list(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError> {
        let list = self.key().to_string();
        let format = payload_format(self.config.effective_format());
        let max = max.max(1) as u64;
        let mut waited = false;
        loop {
            let start = self.index;
            let conn = self.conn.as_mut().expect("ready");
            let reply: Result<(Vec<Vec<u8>>, u64), RedisError> =
                redis::pipe().cmd("LRANGE").arg(&list).arg(start).arg(start + max - 1).cmd("LLEN").arg(&list).query_async(conn).await;
            let (items, len) = match reply {
                Ok(r) => r,
                Err(e) => return Err(self.fail(&format!("reading list `{list}`"), e)),
            };
            if items.is_empty() {
                self.lag = Some(len.saturating_sub(self.index));
                if !self.config.follows() {
                    self.ended = true;
                    return Ok(None);
                }
                if waited {
                    return Ok(Some(SourceBatch::default()));
                }
                tokio::time::sleep(IDLE).await;
                waited = true;
                continue;
            }
            let mut out = SourceBatch::default();
            for item in items {
                self.index += 1;
                let pos = Position { unit: 0, seq: self.index };
                match crate::nats::decode(format, &item) {
                    Ok(r) => {
                        out.batch.records.push(r);
                        out.batch.positions.push(pos);
                    }
                    Err(reason) => out.bad.push(BadInput { position: pos, raw: String::from_utf8_lossy(&item).into_owned(), reason }),
                }
            }
            self.lag = Some(len.saturating_sub(self.index));
            return Ok(Some(out));
        }
    }
}

#[async_trait::async_trait]
impl SourceConnector for RedisSource {
    async fn next_batch(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError> {
        if self.ended {
            return Ok(None);
        }
        self.ready().await?;
        match self.input {
            Input::Stream { .. } => self.next_stream(max).await,
            Input::List { .. } => self.next_list(max).await,
        }
    }

    fn describe(&self, pos: Position) -> Value {
        let mut m = Map::with_capacity(2);
        match &self.input {
            Input::Stream { stream, .. } => {
                m.insert("stream", Value::from(stream.as_str()));
                match self.last_ids.iter().find(|(seq, _)| *seq == pos.seq) {
                    Some((_, id)) => m.insert("entry", Value::from(id.as_str())),
                    None => m.insert("message", Value::from(pos.seq as i64)),
                };
            }
            Input::List { list } => {
                m.insert("list", Value::from(list.as_str()));
                m.insert("index", Value::from(pos.seq as i64 - 1));
            }
        }
        Value::from(m)
    }

    fn checkpoint(&self) -> serde_json::Value {
        match &self.input {
            Input::Stream { stream, group, consumer, .. } => {
                json!({"stream": stream, "group": group, "consumer": consumer, "last_id": self.last_id, "received": self.received})
            }
            Input::List { list } => json!({"list": list, "index": self.index}),
        }
    }

    /// A stream continues with this consumer's pending entries after `last_id`, then new
    /// ones; a list at the checkpoint's index.
    async fn seek(&mut self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError> {
        let (kind, want) = match &self.input {
            Input::Stream { stream, group, consumer, .. } => {
                for (key, mine) in [("group", group), ("consumer", consumer)] {
                    if let Some(theirs) = checkpoint.get(key).and_then(|v| v.as_str())
                        && theirs != mine
                    {
                        return Err(ConnectorError::Seek(format!("the checkpoint is of {key} `{theirs}`, this source reads as `{mine}`: its pending entries are another consumer's")));
                    }
                }
                ("stream", stream.clone())
            }
            Input::List { list } => ("list", list.clone()),
        };
        match checkpoint.get(kind).and_then(|v| v.as_str()) {
            Some(k) if k == want => {}
            Some(k) => return Err(ConnectorError::Seek(format!("the checkpoint is of {kind} `{k}`, this source reads `{want}`"))),
            None => return Err(ConnectorError::Seek(format!("the checkpoint is not one of a redis {kind} source: {checkpoint}"))),
        }
        self.ended = false;
        self.pending = true;
        self.last_ids.clear();
        self.last_id = checkpoint.get("last_id").and_then(|v| v.as_str()).map(str::to_string);
        self.received = checkpoint.get("received").and_then(|v| v.as_u64()).unwrap_or(0);
        self.index = checkpoint.get("index").and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(())
    }

    fn unbounded(&self) -> bool {
        self.config.follows()
    }

    /// A list's elements after the read position; not known for a stream.
    fn lag(&self) -> Option<u64> {
        self.lag
    }

    fn committer(&self) -> Option<Box<dyn SourceCommitter>> {
        let Input::Stream { stream, group, consumer, .. } = &self.input else { return None };
        Some(Box::new(RedisAcker {
            config: self.config.clone(),
            target: self.target.clone(),
            stream: stream.clone(),
            group: group.clone(),
            consumer: consumer.clone(),
            conn: Arc::new(tokio::sync::Mutex::new(None)),
        }))
    }
}

/// `XACK`s this consumer's pending entries up to a completed checkpoint's `last_id`, on a
/// connection of its own (a stopping run drops its source before its last checkpoint
/// completes, and that checkpoint's acknowledgement must still be sent).
struct RedisAcker {
    config: RedisConfig,
    target: String,
    stream: String,
    group: String,
    consumer: String,
    conn: Arc<tokio::sync::Mutex<Option<MultiplexedConnection>>>,
}

impl RedisAcker {
    async fn ack_through(&self, conn: &mut MultiplexedConnection, last_id: &str) -> Result<u64, RedisError> {
        let mut acked = 0;
        loop {
            let pending: RValue = redis::cmd("XPENDING")
                .arg(&self.stream)
                .arg(&self.group)
                .arg("-")
                .arg(last_id)
                .arg(ACK_CHUNK)
                .arg(&self.consumer)
                .query_async(conn)
                .await?;
            let ids: Vec<String> = match pending {
                RValue::Array(rows) => rows.iter().filter_map(|r| if let RValue::Array(f) = r { f.first().and_then(text) } else { None }).collect(),
                _ => Vec::new(),
            };
            if ids.is_empty() {
                return Ok(acked);
            }
            let n: u64 = redis::cmd("XACK").arg(&self.stream).arg(&self.group).arg(&ids).query_async(conn).await?;
            acked += n;
            if ids.len() < ACK_CHUNK {
                return Ok(acked);
            }
        }
    }
}

#[async_trait::async_trait]
impl SourceCommitter for RedisAcker {
    async fn checkpoint_completed(&self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError> {
        let Some(last_id) = checkpoint.get("last_id").and_then(|v| v.as_str()) else { return Ok(()) };
        if checkpoint.get("stream").and_then(|v| v.as_str()) != Some(self.stream.as_str()) {
            return Ok(());
        }
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            *guard = Some(connect(&self.config).await?);
        }
        let conn = guard.as_mut().expect("connected above");
        match self.ack_through(conn, last_id).await {
            Ok(n) => {
                tracing::debug!(stream = %self.stream, group = %self.group, last_id, acknowledged = n, "entries acknowledged");
                Ok(())
            }
            Err(e) => {
                *guard = None;
                Err(command_error(&self.target, self.config.connect_timeout, &format!("acknowledging stream `{}` up to {last_id}", self.stream), &e))
            }
        }
    }
}

/// An entry's field/value pairs, in the stream's order.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The entries of an `XREADGROUP` reply for its one stream: id and fields (None: the entry
/// was deleted while pending).
fn stream_entries(reply: RValue) -> Vec<(String, Option<Fields>)> {
    let streams = match reply {
        RValue::Array(s) => s,
        RValue::Map(m) => m.into_iter().map(|(k, v)| RValue::Array(vec![k, v])).collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for s in streams {
        let RValue::Array(mut pair) = s else { continue };
        if pair.len() != 2 {
            continue;
        }
        let RValue::Array(entries) = pair.pop().expect("two items") else { continue };
        for e in entries {
            let RValue::Array(mut parts) = e else { continue };
            if parts.len() != 2 {
                continue;
            }
            let fields = parts.pop().expect("two items");
            let Some(id) = text(&parts[0]) else { continue };
            let fields = match fields {
                RValue::Array(kv) => Some(kv.chunks(2).filter(|p| p.len() == 2).map(|p| (bytes(&p[0]), bytes(&p[1]))).collect()),
                RValue::Map(kv) => Some(kv.iter().map(|(k, v)| (bytes(k), bytes(v))).collect()),
                _ => None,
            };
            out.push((id, fields));
        }
    }
    out
}

fn bytes(v: &RValue) -> Vec<u8> {
    match v {
        RValue::BulkString(b) => b.clone(),
        other => text(other).unwrap_or_default().into_bytes(),
    }
}

fn payload_format(f: RedisFormat) -> PayloadFormat {
    match f {
        RedisFormat::Text => PayloadFormat::Text,
        RedisFormat::Json | RedisFormat::Fields => PayloadFormat::Json,
    }
}

/// A stream entry as a record: its fields as strings (`fields`), or the record held in
/// `data_field` (`json`, `text`).
fn entry_record(c: &RedisConfig, fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Record, String> {
    match c.effective_format() {
        RedisFormat::Fields => {
            let mut m = Map::with_capacity(fields.len());
            for (k, v) in fields {
                m.insert(String::from_utf8_lossy(k).into_owned(), Value::from(String::from_utf8_lossy(v).into_owned()));
            }
            Ok(m)
        }
        f => {
            let name = c.data_field_name();
            let (_, v) = fields.iter().find(|(k, _)| k == name.as_bytes()).ok_or_else(|| format!("no field `{name}` (`data_field`) holds the record"))?;
            crate::nats::decode(payload_format(f), v)
        }
    }
}

/// An entry's fields as JSON text, for the dead letter.
fn raw_entry(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    let m: serde_json::Map<String, serde_json::Value> =
        fields.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), serde_json::Value::from(String::from_utf8_lossy(v).into_owned()))).collect();
    serde_json::Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> RValue {
        RValue::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xreadgroup_replies_are_read_with_deleted_entries_kept() {
        let reply = RValue::Array(vec![RValue::Array(vec![
            bulk("orders"),
            RValue::Array(vec![
                RValue::Array(vec![bulk("1-0"), RValue::Array(vec![bulk("id"), bulk("7"), bulk("name"), bulk("a")])]),
                RValue::Array(vec![bulk("2-0"), RValue::Nil]),
            ]),
        ])]);
        let e = stream_entries(reply);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, "1-0");
        assert_eq!(e[0].1.as_ref().unwrap()[1], (b"name".to_vec(), b"a".to_vec()));
        assert_eq!(e[1], ("2-0".to_string(), None));
        assert!(stream_entries(RValue::Nil).is_empty());
    }

    #[test]
    fn entries_become_records_by_format() {
        let mut c: RedisConfig = serde_json::from_value(json!({"stream": "s"})).unwrap();
        let fields = vec![(b"id".to_vec(), b"7".to_vec()), (b"data".to_vec(), br#"{"x": 1}"#.to_vec())];
        let r = entry_record(&c, &fields).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), json!({"id": "7", "data": "{\"x\": 1}"}));
        c.format = Some(RedisFormat::Json);
        assert_eq!(serde_json::to_value(entry_record(&c, &fields).unwrap()).unwrap(), json!({"x": 1}));
        c.data_field = Some("body".into());
        assert_eq!(entry_record(&c, &fields).unwrap_err(), "no field `body` (`data_field`) holds the record");
        assert_eq!(raw_entry(&fields[..1]), r#"{"id":"7"}"#);
    }
}
