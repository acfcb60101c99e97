//! The file connector through the public registry: what a pipeline run sees.

use std::path::Path;

use dagg_connectors::{BadInput, ConnectorError, SourceConnector, open_sink, open_source};
use dagg_model::spec::connector::{Compression, ConnectorConfig, ConnectorSpec, FileConfig, FileFormat};
use dagg_model::{Position, Record, Value};

fn spec(path: &str, format: FileFormat) -> ConnectorSpec {
    spec_with(path, format, None)
}

fn spec_with(path: &str, format: FileFormat, compression: Option<Compression>) -> ConnectorSpec {
    ConnectorSpec {
        connector_type: "file".into(),
        config: ConnectorConfig::File(FileConfig {
            name: None,
            path: path.into(),
            format,
            compression,
            delimiter: None,
            record_element: None,
            root_element: None,
            max_records: None,
            max_file_size: None,
        }),
    }
}

fn rec(s: &str) -> Record {
    serde_json::from_str(s).unwrap()
}

fn json(r: &Record) -> String {
    serde_json::to_string(r).unwrap()
}

#[derive(Default)]
struct Read {
    records: Vec<(Position, Record)>,
    bad: Vec<BadInput>,
    batches: usize,
}

/// Reads `batches` batches (all when `None`) of at most `max` records.
async fn read(src: &mut Box<dyn SourceConnector>, max: usize, batches: Option<usize>) -> Read {
    let mut out = Read::default();
    while batches.is_none_or(|n| out.batches < n) {
        let Some(b) = src.next_batch(max).await.unwrap() else { break };
        assert!(b.batch.len() <= max);
        assert_eq!(b.batch.positions.len(), b.batch.records.len());
        out.batches += 1;
        out.records.extend(b.batch.positions.into_iter().zip(b.batch.records));
        out.bad.extend(b.bad);
    }
    out
}

async fn write_all(dir: &Path, spec: &ConnectorSpec, records: &[Record]) {
    let mut sink = open_sink(spec, dir).unwrap();
    for chunk in records.chunks(3) {
        assert!(sink.write(chunk).await.unwrap().is_empty());
    }
    sink.commit().await.unwrap();
}

fn sample() -> Vec<Record> {
    vec![
        rec(
            r#"{"id":1,"price":9.99,"total":12.0,"name":"Zoë \"Z\", Ltd","tags":["a","b"],"addr":{"city":"Oslo","zip":null},"ok":true}"#,
        ),
        rec(r#"{"z":"last first","a":-7,"big":9007199254740993,"tiny":1e-300,"empty":""}"#),
        rec(r#"{"nested":[[1,2.5],{"x":{}}],"line":"two\nlines\ttab"}"#),
    ]
}

#[tokio::test]
async fn json_and_jsonl_round_trip_values_types_and_order() {
    let dir = tempfile::tempdir().unwrap();
    for (path, format, compression) in [
        ("out.jsonl", FileFormat::Jsonl, None),
        ("out.json", FileFormat::Json, None),
        ("out.jsonl.gz", FileFormat::Jsonl, None),
        ("out.json.gz", FileFormat::Json, None),
        ("zipped.json", FileFormat::Json, Some(Compression::Gzip)),
    ] {
        let s = spec_with(path, format, compression);
        write_all(dir.path(), &s, &sample()).await;
        let mut src = open_source(&s, dir.path()).unwrap();
        let got = read(&mut src, 100, None).await;
        assert!(got.bad.is_empty(), "{path}: {:?}", got.bad);
        let got: Vec<Record> = got.records.into_iter().map(|r| r.1).collect();
        assert_eq!(got, sample(), "{path}");
        assert_eq!(got.iter().map(json).collect::<Vec<_>>(), sample().iter().map(json).collect::<Vec<_>>(), "{path}");
        assert_eq!(got[0].get("total"), Some(&Value::Float(12.0)));
        assert_eq!(got[1].get("big"), Some(&Value::Int(9007199254740993)));
    }
    let text = std::fs::read_to_string(dir.path().join("out.json")).unwrap();
    assert!(text.starts_with("[\n{\"id\":1,") && text.ends_with("\n]\n"), "{text}");
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
}

#[tokio::test]
async fn csv_round_trips_strings_nulls_and_empty_strings() {
    let dir = tempfile::tempdir().unwrap();
    let records = vec![
        rec(r#"{"id":"1","name":"Smith, John","quote":"say \"hi\"","note":""}"#),
        rec(r#"{"id":"2","name":null,"quote":"multi\nline\r\nend","note":" padded "}"#),
        rec(r#"{"id":"3","name":"tab\there","quote":"x","note":null}"#),
    ];
    for path in ["out.csv", "out.csv.gz"] {
        let s = spec(path, FileFormat::Csv);
        write_all(dir.path(), &s, &records).await;
        let mut src = open_source(&s, dir.path()).unwrap();
        let got = read(&mut src, 2, None).await;
        assert!(got.bad.is_empty(), "{:?}", got.bad);
        assert_eq!(got.records.iter().map(|r| r.1.clone()).collect::<Vec<_>>(), records, "{path}");
        let lines: Vec<u64> = got.records.iter().map(|r| r.0.seq).collect();
        assert_eq!(lines, [2, 3, 6], "a record's line is where it starts");
    }
    // Non-strings are written as JSON prints them and read back as strings.
    let s = spec("typed.csv", FileFormat::Csv);
    write_all(dir.path(), &s, &[rec(r#"{"n":3,"f":2.50,"b":false,"a":[1,"x"],"o":{"k":null}}"#)]).await;
    let text = std::fs::read_to_string(dir.path().join("typed.csv")).unwrap();
    assert_eq!(text, "n,f,b,a,o\n3,2.5,false,\"[1,\"\"x\"\"]\",\"{\"\"k\"\":null}\"\n");
    let got = read(&mut open_source(&s, dir.path()).unwrap(), 10, None).await;
    assert_eq!(json(&got.records[0].1), r#"{"n":"3","f":"2.5","b":"false","a":"[1,\"x\"]","o":"{\"k\":null}"}"#);
}

#[tokio::test]
async fn csv_edge_cases_and_a_ragged_row() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.csv"),
        "sku;desc;qty\r\n\"A;1\";\"Cable; \"\"USB\"\"\r\n2 m\";3\r\nB2;;\"\"\r\nC3;short\r\nD4;ok;1\r\n",
    )
    .unwrap();
    let mut s = spec("in.csv", FileFormat::Csv);
    let ConnectorConfig::File(c) = &mut s.config else { unreachable!("a file spec") };
    c.delimiter = Some(';');
    let mut src = open_source(&s, dir.path()).unwrap();
    let got = read(&mut src, 100, None).await;
    let recs: Vec<(u64, String)> = got.records.iter().map(|r| (r.0.seq, json(&r.1))).collect();
    assert_eq!(
        recs,
        [
            (2, r#"{"sku":"A;1","desc":"Cable; \"USB\"\r\n2 m","qty":"3"}"#.to_string()),
            (4, r#"{"sku":"B2","desc":null,"qty":""}"#.to_string()),
            (6, r#"{"sku":"D4","desc":"ok","qty":"1"}"#.to_string()),
        ]
    );
    assert_eq!(got.bad.len(), 1);
    assert_eq!(got.bad[0].position.seq, 5);
    assert_eq!(got.bad[0].raw, "C3;short");
    assert!(got.bad[0].reason.contains("2 cells, the header has 3"), "{}", got.bad[0].reason);
    assert_eq!(src.describe(got.bad[0].position), Value::Object(rec(r#"{"file":"in.csv","line":5}"#)));
}

#[tokio::test]
async fn jsonl_bad_lines_are_bad_inputs_and_every_good_record_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 1..=1000 {
        match i {
            100 => text.push_str("{\"id\": 100, broken\n"),
            500 => text.push_str("\"just a string\"\n"),
            700 => text.push('\n'),
            _ => text.push_str(&format!("{{\"id\":{i}}}\n")),
        }
    }
    std::fs::write(dir.path().join("in.jsonl"), text).unwrap();
    let mut src = open_source(&spec("in.jsonl", FileFormat::Jsonl), dir.path()).unwrap();
    let got = read(&mut src, 64, None).await;
    assert_eq!(got.records.len(), 997);
    for (pos, r) in &got.records {
        assert_eq!(r.get("id"), Some(&Value::Int(pos.seq as i64)), "a record's line is its id");
    }
    let bad: Vec<(u64, &str)> = got.bad.iter().map(|b| (b.position.seq, b.raw.as_str())).collect();
    assert_eq!(bad, [(100, "{\"id\": 100, broken"), (500, "\"just a string\"")]);
    assert!(got.bad[1].reason.contains("a string, not a JSON object"), "{}", got.bad[1].reason);
    assert_eq!(src.describe(got.bad[0].position), Value::Object(rec(r#"{"file":"in.jsonl","line":100}"#)));
}

fn big_json_array(path: &Path, n: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(b"[\n").unwrap();
    for i in 0..n {
        let sep = if i + 1 < n { "," } else { "" };
        // Elements span three lines each: line 2 + 3i is where element i starts.
        writeln!(f, "  {{\"i\": {i},\n   \"text\": \"{}\",\n   \"f\": {i}.5}}{sep}", "x".repeat(i % 50)).unwrap();
    }
    f.write_all(b"]\n").unwrap();
}

#[tokio::test]
async fn a_large_json_array_streams_in_many_batches() {
    let dir = tempfile::tempdir().unwrap();
    let n = 60_000;
    big_json_array(&dir.path().join("big.json"), n);
    assert!(std::fs::metadata(dir.path().join("big.json")).unwrap().len() > 4 << 20, "larger than the read buffer");
    let mut src = open_source(&spec("big.json", FileFormat::Json), dir.path()).unwrap();
    let got = read(&mut src, 1000, None).await;
    assert_eq!(got.batches, 60);
    assert_eq!(got.records.len(), n);
    for (i, (pos, r)) in got.records.iter().enumerate() {
        assert_eq!(pos.seq, 2 + 3 * i as u64);
        assert_eq!(r.get("i"), Some(&Value::Int(i as i64)));
        assert_eq!(r.get("f"), Some(&Value::Float(i as f64 + 0.5)));
    }
}

#[tokio::test]
async fn non_object_array_elements_are_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.json"), "[{\"a\":1},\n 2,\n \"s\", null, [ {\"a\":2} ],\n {\"a\":3}]").unwrap();
    let mut src = open_source(&spec("in.json", FileFormat::Json), dir.path()).unwrap();
    let got = read(&mut src, 10, None).await;
    assert_eq!(
        got.records.iter().map(|r| (r.0.seq, json(&r.1))).collect::<Vec<_>>(),
        [(1, r#"{"a":1}"#.to_string()), (4, r#"{"a":3}"#.to_string())]
    );
    let bad: Vec<(u64, &str)> = got.bad.iter().map(|b| (b.position.seq, b.raw.as_str())).collect();
    assert_eq!(bad, [(2, "2"), (3, "\"s\""), (3, "null"), (3, "[ {\"a\":2} ]")]);
}

#[tokio::test]
async fn a_broken_json_array_fails_after_the_records_before_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.json"), "[{\"a\":1},\n{\"a\":2}\n{\"a\":3}]").unwrap();
    let mut src = open_source(&spec("in.json", FileFormat::Json), dir.path()).unwrap();
    let first = src.next_batch(10).await.unwrap().unwrap();
    assert_eq!(first.batch.len(), 2);
    let err = src.next_batch(10).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Decode { line: 3, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("in.json") && msg.contains("line 3") && msg.contains("expected `,` or `]`"), "{msg}");
}

#[tokio::test]
async fn a_glob_reads_every_match_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/b.jsonl"), "{\"f\":\"b1\"}\n{\"f\":\"b2\"}\n").unwrap();
    std::fs::write(dir.path().join("data/a.jsonl"), "{\"f\":\"a1\"}\n").unwrap();
    std::fs::write(dir.path().join("data/c.jsonl"), "").unwrap();
    std::fs::write(dir.path().join("data/skip.txt"), "nope").unwrap();
    let mut src = open_source(&spec("data/*.jsonl", FileFormat::Jsonl), dir.path()).unwrap();
    let got = read(&mut src, 2, None).await;
    let values: Vec<String> = got.records.iter().map(|r| r.1.get("f").unwrap().to_text()).collect();
    assert_eq!(values, ["a1", "b1", "b2"]);
    let described: Vec<String> = got.records.iter().map(|r| src.describe(r.0).to_json()).collect();
    assert_eq!(
        described,
        [
            r#"{"file":"data/a.jsonl","line":1}"#,
            r#"{"file":"data/b.jsonl","line":1}"#,
            r#"{"file":"data/b.jsonl","line":2}"#
        ]
    );
    let err = open_source(&spec("data/*.csv", FileFormat::Csv), dir.path()).err().unwrap();
    assert!(matches!(err, ConnectorError::NoMatch { .. }), "{err:?}");
    assert!(err.to_string().contains("data/*.csv"), "{err}");
}

#[tokio::test]
async fn a_missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = open_source(&spec("nope/orders.jsonl", FileFormat::Jsonl), dir.path()).err().unwrap();
    assert!(matches!(err, ConnectorError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("nope/orders.jsonl"), "{err}");
}

/// Writes `n` records in `format`, reads part of them, resumes a new source from the
/// checkpoint, and checks the two parts are exactly the whole.
async fn resume_halfway(path: &str, format: FileFormat, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let mut r = rec(&format!(r#"{{"id":"{i}","text":"row {i}"}}"#));
            if i % 11 == 0 {
                r.insert("text", Value::from("has, a comma\nand a line"));
            }
            r
        })
        .collect();
    let s = spec(path, format);
    write_all(dir.path(), &s, &records).await;
    let mut first = open_source(&s, dir.path()).unwrap();
    assert_eq!(first.checkpoint()["offset"], 0);
    // A first call asks for more than later ones: chunks get split.
    let mut got = read(&mut first, 40, Some(1)).await;
    let more = read(&mut first, 7, Some(10)).await;
    got.records.extend(more.records);
    // 40, then 7s out of the rest of each 40-record chunk (the last piece of one is 5).
    assert_eq!(got.records.len(), 108);
    let cp = first.checkpoint();
    // Through JSON text, as it is persisted.
    let cp: serde_json::Value = serde_json::from_str(&cp.to_string()).unwrap();
    drop(first);
    let mut second = open_source(&s, dir.path()).unwrap();
    second.seek(&cp).await.unwrap();
    let rest = read(&mut second, 50, None).await;
    let all: Vec<Record> = got.records.into_iter().chain(rest.records).map(|r| r.1).collect();
    assert_eq!(all.len(), n, "{path}");
    assert_eq!(all, records, "{path}");
    // A checkpoint at the end resumes to nothing.
    let end = second.checkpoint();
    assert_eq!(end["file"], serde_json::Value::Null, "{path}: {end}");
    let mut third = open_source(&s, dir.path()).unwrap();
    third.seek(&end).await.unwrap();
    assert!(third.next_batch(10).await.unwrap().is_none());
}

#[tokio::test]
async fn checkpoint_and_seek_resume_exactly_after_the_last_record() {
    for (path, format) in [
        ("a.jsonl", FileFormat::Jsonl),
        ("a.json", FileFormat::Json),
        ("a.csv", FileFormat::Csv),
        ("a.jsonl.gz", FileFormat::Jsonl),
        ("a.json.gz", FileFormat::Json),
        ("a.csv.gz", FileFormat::Csv),
    ] {
        resume_halfway(path, format, 300).await;
    }
}

#[tokio::test]
async fn checkpoint_with_bad_inputs_and_several_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("1.jsonl"), "{\"i\":1}\nbad\n{\"i\":2}\n{\"i\":3}\n").unwrap();
    std::fs::write(dir.path().join("2.jsonl"), "bad\n{\"i\":4}\n{\"i\":5}\n").unwrap();
    let s = spec("*.jsonl", FileFormat::Jsonl);
    for max in 1..=5 {
        for stop_after in 1..=4 {
            let mut a = open_source(&s, dir.path()).unwrap();
            let first = read(&mut a, max, Some(stop_after)).await;
            let mut b = open_source(&s, dir.path()).unwrap();
            b.seek(&a.checkpoint()).await.unwrap();
            let rest = read(&mut b, max, None).await;
            let ids: Vec<String> =
                first.records.iter().chain(&rest.records).map(|r| r.1.get("i").unwrap().to_text()).collect();
            assert_eq!(ids, ["1", "2", "3", "4", "5"], "max {max}, stop after {stop_after}");
            assert_eq!(first.bad.len() + rest.bad.len(), 2, "max {max}, stop after {stop_after}");
        }
    }
    let mut a = open_source(&s, dir.path()).unwrap();
    let bad = serde_json::json!({"version": 1, "file": "3.jsonl", "offset": 0, "line": 1});
    let err = a.seek(&bad).await.unwrap_err();
    assert!(err.to_string().contains("`3.jsonl` is not among"), "{err}");
}

#[tokio::test]
async fn nothing_is_visible_before_commit_and_abort_discards() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out/sub/a.jsonl");
    let tmp = dir.path().join("out/sub/.a.jsonl.dagg-tmp");
    let s = spec("out/sub/a.jsonl", FileFormat::Jsonl);
    let mut sink = open_sink(&s, dir.path()).unwrap();
    sink.write(&[rec(r#"{"a":1}"#)]).await.unwrap();
    assert!(!target.exists(), "not visible before the first commit");
    assert!(tmp.exists());
    sink.commit().await.unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"a\":1}\n");
    assert!(!tmp.exists());
    sink.write(&[rec(r#"{"a":2}"#)]).await.unwrap();
    sink.abort().await.unwrap();
    assert!(!tmp.exists());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"a\":1}\n", "abort leaves the committed output");
    sink.write(&[rec(r#"{"a":3}"#)]).await.unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"a\":1}\n");
    sink.commit().await.unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"a\":1}\n{\"a\":3}\n", "a later commit appends");
    sink.write(&[rec(r#"{"a":4}"#)]).await.unwrap();
    drop(sink);
    assert!(!tmp.exists(), "a sink dropped without commit leaves no temporary file");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"a\":1}\n{\"a\":3}\n");
    // A new run replaces the destination at its first commit, not before.
    let mut sink = open_sink(&s, dir.path()).unwrap();
    sink.write(&[rec(r#"{"b":1}"#)]).await.unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"a\":1}\n{\"a\":3}\n");
    sink.commit().await.unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"b\":1}\n");
}

#[tokio::test]
async fn several_commits_append_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    for path in ["m.jsonl", "m.json", "m.csv", "m.jsonl.gz", "m.json.gz", "m.csv.gz"] {
        let format = match path.split('.').nth(1).unwrap() {
            "jsonl" => FileFormat::Jsonl,
            "json" => FileFormat::Json,
            _ => FileFormat::Csv,
        };
        let s = spec(path, format);
        let mut sink = open_sink(&s, dir.path()).unwrap();
        let mut want = Vec::new();
        for round in 0..4 {
            // Round 1 writes nothing: the commit keeps the output as it was.
            let n = if round == 1 { 0 } else { round + 1 };
            let batch: Vec<Record> = (0..n).map(|i| rec(&format!(r#"{{"round":"{round}","i":"{i}"}}"#))).collect();
            sink.write(&batch).await.unwrap();
            if round == 2 {
                sink.write(&[rec(r#"{"round":"aborted","i":"x"}"#)]).await.unwrap();
                sink.abort().await.unwrap();
                sink.write(&batch).await.unwrap();
            }
            sink.commit().await.unwrap();
            want.extend(batch);
            let mut src = open_source(&s, dir.path()).unwrap();
            let got: Vec<Record> = read(&mut src, 100, None).await.records.into_iter().map(|r| r.1).collect();
            assert_eq!(got, want, "{path} after commit {round}");
        }
    }
}

#[tokio::test]
async fn an_empty_run_writes_an_empty_array() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("empty.json", FileFormat::Json);
    let mut sink = open_sink(&s, dir.path()).unwrap();
    sink.write(&[]).await.unwrap();
    sink.commit().await.unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("empty.json")).unwrap(), "[]\n");
    let mut src = open_source(&s, dir.path()).unwrap();
    assert!(src.next_batch(10).await.unwrap().is_none());
}
