//! Parquet, through the `parquet` crate's record API (no arrow), Snappy or uncompressed.
//!
//! # Source
//! Row groups are read one at a time (memory holds one row group's pages, not the file);
//! a record's `seq` is its 1-based row number in the file and the checkpoint's `offset` is
//! the number of rows returned, so a resume skips whole row groups by their metadata and
//! then rows. Values: booleans, integers (all widths), floats, strings (UTF8, ENUM), JSON
//! columns parsed back into nested values, decimals as floats, binary as base64, `DATE` as
//! `YYYY-MM-DD`, timestamps as RFC 3339 in UTC, `TIME` as `HH:MM:SS[.f]`, lists as arrays,
//! groups and maps as objects, null.
//!
//! # Sink
//! A Parquet file can only be written whole (its footer describes every row group), so the
//! sink stages records as JSON Lines in `.<name>.dagg-stage.jsonl` beside the destination —
//! with every guarantee of the JSON Lines sink: pre-commit fsyncs it, recovery cuts it back
//! — and each commit rewrites the Parquet file from the staged records (two streaming
//! passes: the schema, then row groups of [`ROW_GROUP`] rows) and renames it into place.
//! Columns, in order of first appearance, are OPTIONAL: `BOOLEAN` when every value is a
//! boolean, `INT64` when every value is an integer, `DOUBLE` for numbers, `BYTE_ARRAY`
//! (`UTF8`) for strings, and `BYTE_ARRAY` (`JSON`) holding JSON text for objects, arrays or
//! mixed values; a missing field is null.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use dagg_model::spec::connector::{FileConfig, FileFormat};
use dagg_model::{Map, Position, Record, Value};
use parquet::basic::{Compression, LogicalType, Repetition, Type as Physical};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::types::Type;

use super::reader::{Cursor, Emitter, Stop};
use super::sink::FileSink;
use crate::{ConnectorError, SinkConnector};

/// Rows per row group the sink writes.
pub(crate) const ROW_GROUP: usize = 65_536;

fn decode_err(path: &Path, line: u64, e: impl std::fmt::Display) -> Stop {
    Stop::Failed(ConnectorError::Decode { path: path.display().to_string(), line, reason: format!("not a readable Parquet file: {e}") })
}

/// Reads file `at.unit` from row `at.offset` on.
pub(crate) fn read(path: &Path, at: Cursor, out: &mut Emitter) -> Result<(), Stop> {
    let file = File::open(path).map_err(|source| ConnectorError::Open { path: path.display().to_string(), source })?;
    let reader = SerializedFileReader::new(file).map_err(|e| decode_err(path, 0, e))?;
    let meta = reader.metadata();
    let json_columns: Vec<String> = meta
        .file_metadata()
        .schema()
        .get_fields()
        .iter()
        .filter(|f| matches!(f.get_basic_info().logical_type_ref(), Some(LogicalType::Json)))
        .map(|f| f.name().to_string())
        .collect();
    let unit = at.unit;
    let mut skip = at.offset;
    let mut row_no = at.offset;
    for g in 0..meta.num_row_groups() {
        let n = meta.row_group(g).num_rows().max(0) as u64;
        if skip >= n {
            skip -= n;
            continue;
        }
        let group = reader.get_row_group(g).map_err(|e| decode_err(path, row_no + 1, e))?;
        let rows = group.get_row_iter(None).map_err(|e| decode_err(path, row_no + 1, e))?;
        for row in rows.skip(skip as usize) {
            let row = row.map_err(|e| decode_err(path, row_no + 1, e))?;
            row_no += 1;
            let mut record = Map::with_capacity(row.len());
            for (name, field) in row.get_column_iter() {
                let v = if json_columns.iter().any(|c| c == name)
                    && let Field::Str(s) = field
                {
                    serde_json::from_str::<serde_json::Value>(s).map(|j| Value::from(&j)).unwrap_or_else(|_| Value::from(s.as_str()))
                } else {
                    value(field)
                };
                record.push_unchecked(name.as_str(), v);
            }
            out.record(record, Position { unit, seq: row_no }, Cursor { unit, offset: row_no, line: row_no + 1, elements: 0 })?;
        }
        skip = 0;
    }
    Ok(())
}

/// A Parquet value as a dagg value.
fn value(f: &Field) -> Value {
    let ts = |micros: i64| {
        chrono::DateTime::from_timestamp_micros(micros).map(|t| Value::from(crate::sql::rfc3339(t))).unwrap_or(Value::Int(micros))
    };
    match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(i) => Value::Int((*i).into()),
        Field::Short(i) => Value::Int((*i).into()),
        Field::Int(i) => Value::Int((*i).into()),
        Field::Long(i) => Value::Int(*i),
        Field::UByte(i) => Value::Int((*i).into()),
        Field::UShort(i) => Value::Int((*i).into()),
        Field::UInt(i) => Value::Int((*i).into()),
        Field::ULong(u) => i64::try_from(*u).map(Value::Int).unwrap_or(Value::Float(*u as f64)),
        Field::Float16(h) => Value::Float(f64::from(f32::from(*h))),
        Field::Float(x) => Value::Float((*x).into()),
        Field::Double(x) => Value::Float(*x),
        // Their text: a decimal's digits (as the nearest float), a time of day.
        Field::Decimal(_) => {
            let text = f.to_string();
            text.parse::<f64>().map(Value::Float).unwrap_or(Value::from(text))
        }
        Field::TimeMillis(_) | Field::TimeMicros(_) => Value::from(f.to_string()),
        Field::Str(s) => Value::from(s.as_str()),
        Field::Bytes(b) => Value::from(base64::engine::general_purpose::STANDARD.encode(b.data())),
        Field::Date(d) => chrono::NaiveDate::from_num_days_from_ce_opt(719_163 + *d).map(|d| Value::from(d.format("%Y-%m-%d").to_string())).unwrap_or(Value::Int((*d).into())),
        Field::TimestampMillis(ms) => ts(ms.saturating_mul(1000)),
        Field::TimestampMicros(us) => ts(*us),
        Field::Group(row) => {
            let mut m = Map::with_capacity(row.len());
            for (k, v) in row.get_column_iter() {
                m.push_unchecked(k.as_str(), value(v));
            }
            Value::Object(m)
        }
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(value).collect()),
        Field::MapInternal(map) => {
            let mut m = Map::with_capacity(map.entries().len());
            for (k, v) in map.entries() {
                let key = match k {
                    Field::Str(s) => s.clone(),
                    other => other.to_string(),
                };
                m.insert(key, value(v));
            }
            Value::Object(m)
        }
    }
}

/// What one column holds, as far as the staged records tell.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Only nulls so far.
    Unknown,
    Bool,
    Int,
    Double,
    Text,
    Json,
}

impl Kind {
    fn of(v: &Value) -> Kind {
        match v {
            Value::Null => Kind::Unknown,
            Value::Bool(_) => Kind::Bool,
            Value::Int(_) => Kind::Int,
            Value::Float(_) => Kind::Double,
            Value::String(_) => Kind::Text,
            _ => Kind::Json,
        }
    }

    fn join(self, other: Kind) -> Kind {
        match (self, other) {
            (a, b) if a == b => a,
            (Kind::Unknown, b) => b,
            (a, Kind::Unknown) => a,
            (Kind::Int, Kind::Double) | (Kind::Double, Kind::Int) => Kind::Double,
            _ => Kind::Json,
        }
    }
}

/// The Parquet schema of columns `cols`.
fn schema(cols: &[(String, Kind)]) -> parquet::errors::Result<Type> {
    let mut fields = Vec::with_capacity(cols.len());
    for (name, kind) in cols {
        let (physical, logical) = match kind {
            Kind::Bool => (Physical::BOOLEAN, None),
            Kind::Int => (Physical::INT64, None),
            Kind::Double => (Physical::DOUBLE, None),
            Kind::Unknown | Kind::Text => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
            Kind::Json => (Physical::BYTE_ARRAY, Some(LogicalType::Json)),
        };
        let t = Type::primitive_type_builder(name, physical).with_repetition(Repetition::OPTIONAL).with_logical_type(logical).build()?;
        fields.push(Arc::new(t));
    }
    Type::group_type_builder("schema").with_fields(fields).build()
}

fn staged_records(stage: &Path) -> io::Result<impl Iterator<Item = io::Result<Record>>> {
    let f = BufReader::with_capacity(1 << 20, File::open(stage)?);
    Ok(f.lines().filter(|l| l.as_ref().map_or(true, |l| !l.is_empty())).map(|l| {
        let l = l?;
        serde_json::from_str::<Record>(&l).map_err(|e| io::Error::other(format!("staged record: {e}")))
    }))
}

/// Writes the Parquet file `out` from the staged JSON Lines `stage`.
fn convert(stage: &Path, out: &Path) -> io::Result<()> {
    let to_io = |e: parquet::errors::ParquetError| io::Error::other(e.to_string());
    // Pass 1: the columns and their kinds.
    let mut cols: Vec<(String, Kind)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for r in staged_records(stage)? {
        for (k, v) in r?.iter() {
            match index.get(k.as_str()) {
                Some(&i) => cols[i].1 = cols[i].1.join(Kind::of(v)),
                None => {
                    index.insert(k.to_string(), cols.len());
                    cols.push((k.to_string(), Kind::of(v)));
                }
            }
        }
    }
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let mut writer = SerializedFileWriter::new(BufWriter::new(File::create(out)?), Arc::new(schema(&cols).map_err(to_io)?), props).map_err(to_io)?;
    // Pass 2: row groups.
    let mut rows: Vec<Record> = Vec::with_capacity(ROW_GROUP.min(4096));
    let mut records = staged_records(stage)?;
    loop {
        rows.clear();
        for r in records.by_ref().take(ROW_GROUP) {
            rows.push(r?);
        }
        if rows.is_empty() {
            break;
        }
        let mut group = writer.next_row_group().map_err(to_io)?;
        for (name, kind) in &cols {
            let mut col = group.next_column().map_err(to_io)?.ok_or_else(|| io::Error::other("the schema has fewer columns than expected"))?;
            let values = rows.iter().map(|r| r.get(name.as_str()).filter(|v| !v.is_null()));
            let defs: Vec<i16> = values.clone().map(|v| i16::from(v.is_some())).collect();
            let present = values.flatten();
            match kind {
                Kind::Bool => {
                    let v: Vec<bool> = present.map(|v| matches!(v, Value::Bool(true))).collect();
                    col.typed::<BoolType>().write_batch(&v, Some(&defs), None).map_err(to_io)?;
                }
                Kind::Int => {
                    let v: Vec<i64> = present.map(|v| if let Value::Int(i) = v { *i } else { 0 }).collect();
                    col.typed::<Int64Type>().write_batch(&v, Some(&defs), None).map_err(to_io)?;
                }
                Kind::Double => {
                    let v: Vec<f64> = present.map(|v| v.as_f64().unwrap_or(f64::NAN)).collect();
                    col.typed::<DoubleType>().write_batch(&v, Some(&defs), None).map_err(to_io)?;
                }
                Kind::Unknown | Kind::Text => {
                    let v: Vec<ByteArray> = present.map(|v| ByteArray::from(v.to_text().as_bytes().to_vec())).collect();
                    col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), None).map_err(to_io)?;
                }
                Kind::Json => {
                    let v: Vec<ByteArray> = present.map(|v| ByteArray::from(serde_json::to_vec(v).expect("a value serializes"))).collect();
                    col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), None).map_err(to_io)?;
                }
            }
            col.close().map_err(to_io)?;
        }
        group.close().map_err(to_io)?;
    }
    let inner = writer.into_inner().map_err(to_io)?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// The Parquet destination: a JSON Lines sink on the staging file, and a Parquet file
/// rewritten from it at each commit.
pub struct ParquetSink {
    stage: FileSink,
    stage_path: PathBuf,
    target: PathBuf,
    tmp: PathBuf,
}

impl ParquetSink {
    pub fn open(config: &FileConfig, base_dir: &Path) -> Result<ParquetSink, ConnectorError> {
        let target = super::path::resolve(base_dir, &config.path);
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| ConnectorError::Config(format!("destination `{}` does not name a file", target.display())))?;
        let stage_path = target.with_file_name(format!(".{name}.dagg-stage.jsonl"));
        let staging = FileConfig { path: stage_path.display().to_string(), format: FileFormat::Jsonl, compression: None, ..config.clone() };
        let stage = FileSink::open(&staging, base_dir)?;
        let tmp = target.with_file_name(format!(".{name}.dagg-tmp"));
        Ok(ParquetSink { stage, stage_path, target, tmp })
    }
}

#[async_trait::async_trait]
impl SinkConnector for ParquetSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        self.stage.write(records).await
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        self.stage.commit().await?;
        let (stage, tmp, target) = (self.stage_path.clone(), self.tmp.clone(), self.target.clone());
        let done = tokio::task::spawn_blocking(move || -> io::Result<()> {
            convert(&stage, &tmp)?;
            fs::rename(&tmp, &target)?;
            if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty())
                && let Ok(d) = File::open(dir)
            {
                let _ = d.sync_all();
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("file task failed: {e}"))));
        done.map_err(|source| {
            let _ = fs::remove_file(&self.tmp);
            ConnectorError::Commit { path: self.target.display().to_string(), source }
        })
    }

    async fn abort(&mut self) -> Result<(), ConnectorError> {
        self.stage.abort().await
    }

    async fn pre_commit(&mut self, epoch: u64) -> Result<serde_json::Value, ConnectorError> {
        self.stage.pre_commit(epoch).await
    }

    async fn recover(&mut self, token: &serde_json::Value, epoch: u64) -> Result<(), ConnectorError> {
        self.stage.recover(token, epoch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourceConnector;

    fn config(path: &str) -> FileConfig {
        FileConfig { path: path.into(), format: FileFormat::Parquet, ..crate::file::tests_config() }
    }

    fn rec(s: &str) -> Record {
        serde_json::from_str(s).unwrap()
    }

    #[tokio::test]
    async fn records_round_trip_and_a_resume_reads_exactly_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (0..70_000)
            .map(|i| {
                if i % 2 == 0 {
                    rec(&format!(r#"{{"id":{i},"name":"n{i}","price":{},"ok":true,"tags":["a",{i}],"at":null}}"#, i as f64 / 4.0))
                } else {
                    rec(&format!(r#"{{"id":{i},"price":{i},"extra":{{"k":"v"}},"ok":false}}"#))
                }
            })
            .collect();
        let mut sink = ParquetSink::open(&config("out/o.parquet"), dir.path()).unwrap();
        sink.write(&records[..1000]).await.unwrap();
        let token = sink.pre_commit(1).await.unwrap();
        sink.write(&records[1000..1500]).await.unwrap();
        drop(sink); // killed: the records after the checkpoint are lost
        assert!(!dir.path().join("out/o.parquet").exists(), "nothing visible before the commit");
        let mut sink = ParquetSink::open(&config("out/o.parquet"), dir.path()).unwrap();
        sink.recover(&token, 1).await.unwrap();
        sink.write(&records[1000..]).await.unwrap();
        sink.commit().await.unwrap();

        let mut src = crate::file::FileSource::open(&config("out/*.parquet"), dir.path()).unwrap();
        let mut got = Vec::new();
        let mut checkpoint = None;
        while let Some(b) = src.next_batch(4096).await.unwrap() {
            got.extend(b.batch.records);
            if got.len() == 65_536 + 4096 {
                checkpoint = Some(src.checkpoint());
            }
        }
        assert_eq!(got.len(), records.len());
        // Missing fields come back as nulls; everything else as written.
        for (g, r) in got.iter().zip(&records) {
            for (k, v) in r.iter().filter(|(k, _)| *k != "price") {
                assert_eq!(g.get(k), Some(v), "{k} of {r:?}");
            }
            assert_eq!(g.get("price").and_then(Value::as_f64), r.get("price").and_then(Value::as_f64));
            assert!(g.iter().all(|(k, v)| r.get(k).is_some() || v.is_null()));
        }
        assert_eq!(got[1].get("price"), Some(&Value::Float(1.0)), "integers and floats in one column are doubles");

        let mut src = crate::file::FileSource::open(&config("out/o.parquet"), dir.path()).unwrap();
        src.seek(&checkpoint.unwrap()).await.unwrap();
        let mut rest = Vec::new();
        while let Some(b) = src.next_batch(10_000).await.unwrap() {
            rest.extend(b.batch.records);
        }
        assert_eq!(rest.len(), records.len() - 65_536 - 4096);
        assert_eq!(rest[0].get("id"), Some(&Value::Int(65_536 + 4096)));
    }
}
