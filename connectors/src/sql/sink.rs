//! The database sink: multi-row `INSERT`s (or upserts) inside one transaction per epoch,
//! committed with the epoch's marker row. See the module docs of [`super`] for the
//! exactly-once protocol.
//!
//! A statement that the server rejects for its data (a constraint, a value the column
//! cannot hold) is rolled back to a savepoint and its rows written one by one, so only the
//! rows at fault are refused (dead-lettered, with the server's message); an error of the
//! connection or the server fails the write instead.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dagg_model::spec::connector::{DatabaseConfig, WriteMode};
use dagg_model::{Record, Value};
use serde_json::json;

use super::{Backend, Column, Dialect, Param, db_error, table_columns, table_label, text_field, unique_keys};
use crate::epoch::Epoch;
use crate::{ConnectorError, SinkConnector};

/// Most parameters one statement may carry (both engines' limit is 65535).
const MAX_PARAMS: usize = 65_000;
/// The savepoint name around each statement.
const SAVEPOINT: &str = "dagg_write";

/// The table's shape, looked up at the first write.
struct Shape {
    columns: Vec<Column>,
    by_name: HashMap<String, usize>,
}

/// The `postgresql` / `mysql` sink. Built by [`crate::open_sink`].
pub(crate) struct SqlSink<B: Backend> {
    backend: Arc<B>,
    qualifier: Option<String>,
    table: String,
    mode: WriteMode,
    key_fields: Vec<String>,
    batch_size: usize,
    sink_id: String,
    shape: Option<Shape>,
    tx: Option<B::Tx>,
    /// The records since the last barrier, and what a replay skips.
    epoch: Epoch,
}

impl<B: Backend> SqlSink<B> {
    pub fn new(backend: Arc<B>, c: &DatabaseConfig) -> SqlSink<B> {
        let (q, name) = c.table_parts().unwrap_or((None, ""));
        let sink_id = c.sink_id.clone().unwrap_or_else(|| format!("{}-{}", table_label(q, name), uuid::Uuid::new_v4()));
        SqlSink {
            backend,
            qualifier: q.map(str::to_string),
            table: name.to_string(),
            mode: c.mode(),
            key_fields: c.key_fields().to_vec(),
            batch_size: c.batch_size(),
            sink_id,
            shape: None,
            tx: None,
            epoch: Epoch::default(),
        }
    }

    fn d(&self) -> Dialect {
        self.backend.dialect()
    }

    fn err(&self, e: sqlx::Error) -> ConnectorError {
        db_error(self.backend.target(), self.backend.connect_timeout(), e)
    }

    fn label(&self) -> String {
        table_label(self.qualifier.as_deref(), &self.table)
    }

    /// Looks up the table (and its keys, for upserts) and creates the marker table, once.
    async fn ready(&mut self) -> Result<(), ConnectorError> {
        if self.shape.is_some() {
            return Ok(());
        }
        let b = &*self.backend;
        let q = self.qualifier.as_deref();
        let columns = table_columns(b, q, &self.table).await?;
        if columns.is_empty() {
            return Err(ConnectorError::Config(format!("{}: table `{}` does not exist (create it first)", b.target(), self.label())));
        }
        let by_name: HashMap<String, usize> = columns.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
        for k in &self.key_fields {
            if !by_name.contains_key(k) {
                return Err(ConnectorError::Config(format!("{}: key field `{k}` is not a column of table `{}`", b.target(), self.label())));
            }
        }
        if self.mode == WriteMode::Upsert {
            let (uniques, _) = unique_keys(b, q, &self.table).await?;
            check_key_fields(&self.key_fields, &uniques, &self.label(), b.target())?;
        }
        let create = self.d().create_epoch_table_sql(q);
        if let Err(e) = b.fetch_all(&create, vec![]).await {
            // Two sinks creating it at once: one loses the race, and the table is there.
            let there = !table_columns(b, q, super::EPOCH_TABLE).await?.is_empty();
            if !there {
                return Err(ConnectorError::Config(format!(
                    "{}: cannot create the commit-marker table `{}`: {e}",
                    b.target(),
                    table_label(q, super::EPOCH_TABLE)
                )));
            }
        }
        self.shape = Some(Shape { columns, by_name });
        Ok(())
    }

    async fn tx(&mut self) -> Result<&mut B::Tx, ConnectorError> {
        if self.tx.is_none() {
            let tx = self.backend.begin().await.map_err(|e| self.err(e))?;
            self.tx = Some(tx);
        }
        Ok(self.tx.as_mut().expect("a transaction is open"))
    }

    /// The statement writing `rows` (records with the same columns, `cols` in table order).
    fn statement(&self, cols: &[usize], rows: &[&Record]) -> (String, Vec<Param>) {
        let d = self.d();
        let shape = self.shape.as_ref().expect("ready before writing");
        let names: Vec<String> = cols.iter().map(|&i| d.quote(&shape.columns[i].name)).collect();
        let mut sql = format!("INSERT INTO {} ({}) VALUES ", d.table_ref(self.qualifier.as_deref(), &self.table), names.join(", "));
        let mut params = Vec::with_capacity(cols.len() * rows.len());
        for (r, rec) in rows.iter().enumerate() {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for (j, &ci) in cols.iter().enumerate() {
                if j > 0 {
                    sql.push_str(", ");
                }
                let col = &shape.columns[ci];
                sql.push_str(&d.value_ph(params.len() + 1, &col.type_name));
                params.push(d.param(rec.get(&col.name).unwrap_or(&Value::Null), &col.type_name));
            }
            sql.push(')');
        }
        if self.mode == WriteMode::Upsert {
            let keys: HashSet<&str> = self.key_fields.iter().map(String::as_str).collect();
            let updates: Vec<&String> = names.iter().zip(cols).filter(|(_, ci)| !keys.contains(shape.columns[**ci].name.as_str())).map(|(n, _)| n).collect();
            match d {
                Dialect::Postgres => {
                    let conflict: Vec<String> = self.key_fields.iter().map(|k| d.quote(k)).collect();
                    if updates.is_empty() {
                        sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", conflict.join(", ")));
                    } else {
                        let set: Vec<String> = updates.iter().map(|n| format!("{n} = EXCLUDED.{n}")).collect();
                        sql.push_str(&format!(" ON CONFLICT ({}) DO UPDATE SET {}", conflict.join(", "), set.join(", ")));
                    }
                }
                Dialect::Mysql => {
                    let set: Vec<String> = if updates.is_empty() {
                        let k = d.quote(&self.key_fields[0]);
                        vec![format!("{k} = {k}")]
                    } else {
                        updates.iter().map(|n| format!("{n} = VALUES({n})")).collect()
                    };
                    sql.push_str(&format!(" ON DUPLICATE KEY UPDATE {}", set.join(", ")));
                }
            }
        }
        (sql, params)
    }

    /// Runs one statement under a savepoint. `Ok(Err(reason))` when the server refused
    /// its data (and it was rolled back); `Err` when the write failed.
    async fn run(&mut self, sql: String, params: Vec<Param>) -> Result<Result<(), String>, ConnectorError> {
        let backend = self.backend.clone();
        let tx = self.tx().await?;
        let sp = format!("SAVEPOINT {SAVEPOINT}");
        backend.execute(tx, &sp, vec![]).await.map_err(|e| db_error(backend.target(), backend.connect_timeout(), e))?;
        match backend.execute(tx, &sql, params).await {
            Ok(_) => {
                backend
                    .execute(tx, &format!("RELEASE SAVEPOINT {SAVEPOINT}"), vec![])
                    .await
                    .map_err(|e| db_error(backend.target(), backend.connect_timeout(), e))?;
                Ok(Ok(()))
            }
            Err(e) if backend.is_data_error(&e) => {
                backend
                    .execute(tx, &format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}"), vec![])
                    .await
                    .map_err(|e| db_error(backend.target(), backend.connect_timeout(), e))?;
                Ok(Err(e.to_string()))
            }
            Err(e) => Err(db_error(backend.target(), backend.connect_timeout(), e)),
        }
    }

    /// Writes `rows` (indexes into `records`), all with columns `cols`; returns refusals.
    async fn write_group(&mut self, records: &[Record], cols: &[usize], rows: &[usize]) -> Result<Vec<(usize, String)>, ConnectorError> {
        let per_stmt = self.batch_size.min(MAX_PARAMS / cols.len().max(1)).max(1);
        let mut refused = Vec::new();
        for chunk in rows.chunks(per_stmt) {
            let recs: Vec<&Record> = chunk.iter().map(|&i| &records[i]).collect();
            let (sql, params) = self.statement(cols, &recs);
            if let Err(reason) = self.run(sql, params).await? {
                if chunk.len() == 1 {
                    refused.push((chunk[0], format!("{} refused the row: {reason}", self.d().engine().connector_type())));
                    continue;
                }
                // Find the rows at fault.
                for &i in chunk {
                    let (sql, params) = self.statement(cols, &[&records[i]]);
                    if let Err(reason) = self.run(sql, params).await? {
                        refused.push((i, format!("{} refused the row: {reason}", self.d().engine().connector_type())));
                    }
                }
            }
        }
        Ok(refused)
    }

    /// Commits the open transaction with the marker `(epoch, records, refused)`; writes a
    /// marker even without data when `force`.
    async fn commit_with_marker(&mut self, epoch: u64, records: u64, refused: &[(u64, String)], force: bool) -> Result<(), ConnectorError> {
        if self.tx.is_none() && !force {
            return Ok(());
        }
        self.ready().await?;
        let sql = self.d().write_epoch_sql(self.qualifier.as_deref());
        let refused_json = if refused.is_empty() { Param::Null } else { Param::Text(json!(refused).to_string()) };
        let params = vec![Param::Text(self.sink_id.clone()), Param::Int(epoch as i64), Param::Int(records as i64), refused_json];
        let backend = self.backend.clone();
        let tx = self.tx().await?;
        backend.execute(tx, &sql, params).await.map_err(|e| db_error(backend.target(), backend.connect_timeout(), e))?;
        let tx = self.tx.take().expect("a transaction is open");
        backend.commit(tx).await.map_err(|e| self.err(e))
    }

    async fn rollback(&mut self) -> Result<(), ConnectorError> {
        if let Some(tx) = self.tx.take() {
            self.backend.rollback(tx).await.map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

/// Checks that a unique index covers exactly `keys` (what `ON CONFLICT` needs, and what
/// makes `ON DUPLICATE KEY` mean "the same row").
pub(crate) fn check_key_fields(keys: &[String], uniques: &[Vec<String>], table: &str, target: &str) -> Result<(), ConnectorError> {
    let want: HashSet<&str> = keys.iter().map(String::as_str).collect();
    if uniques.iter().any(|u| u.len() == want.len() && u.iter().all(|c| want.contains(c.as_str()))) {
        return Ok(());
    }
    let have: Vec<String> = uniques.iter().map(|u| format!("({})", u.join(", "))).collect();
    Err(ConnectorError::Config(format!(
        "{target}: upsert by key_fields ({}) needs a primary key or unique index on exactly those columns of `{table}`; it has {}",
        keys.join(", "),
        if have.is_empty() { "none".to_string() } else { have.join(", ") }
    )))
}

#[async_trait::async_trait]
impl<B: Backend> SinkConnector for SqlSink<B> {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        self.ready().await?;
        let mut refused = Vec::new();
        let mut to_write = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            // A replayed record already in the table since before the crash is skipped.
            if let Some(ordinal) = self.epoch.next(i, &mut refused) {
                to_write.push((i, ordinal, r));
            }
        }
        // Which columns each record fills, in table order; a field that is no column is refused.
        let shape = self.shape.as_ref().expect("ready");
        let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
        let mut ordinals = HashMap::with_capacity(to_write.len());
        let mut upsert_keys: HashMap<String, usize> = HashMap::new();
        for (i, ordinal, r) in to_write {
            ordinals.insert(i, ordinal);
            let mut cols = Vec::with_capacity(r.len());
            let mut unknown = None;
            for k in r.keys() {
                match shape.by_name.get(k.as_str()) {
                    Some(&ci) => cols.push(ci),
                    None => {
                        unknown = Some(k.to_string());
                        break;
                    }
                }
            }
            if let Some(k) = unknown {
                refused.push((i, format!("field `{k}` is not a column of table `{}`", self.label())));
                continue;
            }
            if let Some(k) = self.key_fields.iter().find(|k| r.get(k).is_none_or(Value::is_null)) {
                refused.push((i, format!("key field `{k}` is missing or null")));
                continue;
            }
            cols.sort_unstable();
            if cols.is_empty() {
                refused.push((i, "the record has no fields to write".into()));
                continue;
            }
            if self.mode == WriteMode::Upsert {
                // One statement cannot touch a row twice: a later record with the same key
                // replaces the earlier one in its group (the outcome is the same).
                let key: String = self.key_fields.iter().map(|k| r.get(k).map(Value::to_json).unwrap_or_default()).collect::<Vec<_>>().join("\u{1f}");
                let key = format!("{cols:?}\u{1e}{key}");
                if let Some(&prev) = upsert_keys.get(&key)
                    && let Some(g) = groups.last_mut()
                    && g.0 == cols
                    && let Some(pos) = g.1.iter().position(|&x| x == prev)
                {
                    g.1.remove(pos);
                }
                upsert_keys.insert(key, i);
            }
            match groups.last_mut() {
                Some((c, rows)) if *c == cols => rows.push(i),
                _ => groups.push((cols, vec![i])),
            }
        }
        for (cols, rows) in groups {
            if rows.is_empty() {
                continue;
            }
            refused.extend(self.write_group(records, &cols, &rows).await?);
        }
        for (i, reason) in &refused {
            if let Some(&ordinal) = ordinals.get(i) {
                self.epoch.refuse(ordinal, reason.clone());
            }
        }
        refused.sort_by_key(|(i, _)| *i);
        Ok(refused)
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.tx.is_none() && self.shape.is_none() {
            return Ok(());
        }
        self.ready().await?;
        // The run is over: its marker goes with its last rows.
        let sql = self.d().delete_epoch_sql(self.qualifier.as_deref());
        let backend = self.backend.clone();
        let id = self.sink_id.clone();
        let tx = self.tx().await?;
        backend.execute(tx, &sql, vec![Param::Text(id)]).await.map_err(|e| db_error(backend.target(), backend.connect_timeout(), e))?;
        let tx = self.tx.take().expect("a transaction is open");
        backend.commit(tx).await.map_err(|e| self.err(e))?;
        self.epoch.reset();
        Ok(())
    }

    async fn abort(&mut self) -> Result<(), ConnectorError> {
        self.rollback().await?;
        self.epoch.restart();
        Ok(())
    }

    async fn pre_commit(&mut self, epoch: u64) -> Result<serde_json::Value, ConnectorError> {
        let token = json!({"sink_id": self.sink_id, "epoch": epoch, "table": self.label()});
        // Replaying, with the table already holding records past this barrier, the marker
        // says so, so that a recover from this checkpoint skips them too.
        let m = self.epoch.barrier(epoch);
        self.commit_with_marker(m.epoch, m.records, &m.refused, m.ahead).await?;
        Ok(token)
    }

    async fn recover(&mut self, token: &serde_json::Value, epoch: u64) -> Result<(), ConnectorError> {
        self.rollback().await?;
        self.epoch.reset();
        if let Some(id) = token.get("sink_id").and_then(|v| v.as_str()) {
            self.sink_id = id.to_string();
        }
        self.ready().await?;
        let sql = self.d().read_epoch_sql(self.qualifier.as_deref());
        let rows = self.backend.fetch_all(&sql, vec![Param::Text(self.sink_id.clone())]).await.map_err(|e| self.err(e))?;
        let Some(row) = rows.first() else { return Ok(()) };
        let num = |k: &str| row.get(k).and_then(Value::as_i64).unwrap_or(0) as u64;
        let stored = num("epoch");
        if stored == epoch + 1 {
            let refused = text_field(row, "refused");
            let list: Vec<(u64, String)> = if refused.is_empty() {
                Vec::new()
            } else {
                serde_json::from_str(&refused).map_err(|e| ConnectorError::Seek(format!("the commit marker of `{}` is unreadable: {e}", self.sink_id)))?
            };
            self.epoch.replay(num("records"), list);
            tracing::info!(sink_id = %self.sink_id, epoch = stored, records = num("records"), "epoch already committed: its replayed records are skipped");
        } else if stored > epoch + 1 {
            return Err(ConnectorError::Seek(format!(
                "{}: the table holds epoch {stored} of `{}`, past checkpoint {epoch}: the checkpoint is older than what was committed",
                self.backend.target(),
                self.sink_id
            )));
        }
        Ok(())
    }
}
