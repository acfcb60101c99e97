//! Chain snapshots (`Chain::snapshot` / `Chain::restore`), the state a checkpoint records:
//! stopping anywhere, storing the snapshot as JSON text and going on in a fresh chain gives
//! exactly the output of a run that never stopped; stored snapshots of each format version
//! still restore (`tests/golden/`); a snapshot of another shape is refused with the reason.
//!
//! `cargo test -p dagg-transforms --test snapshots -- --nocapture` prints the size and time
//! of a snapshot of 10 000 groups.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use dagg_model::spec::transform::parse_transformations;
use dagg_model::{Map, Record, SpecErrors, Str, Value};
use dagg_transforms::{BatchContext, Chain, Output};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

fn chain(t: &Json) -> Chain {
    let mut errs = SpecErrors::new();
    let specs = parse_transformations(t, "transformations", &mut errs);
    assert!(errs.is_empty(), "{errs}");
    Chain::new(&specs, HashMap::new()).unwrap()
}

fn ctx() -> BatchContext {
    BatchContext { now: "2025-01-16T08:00:00Z".parse().unwrap() }
}

fn process(c: &mut Chain, input: &[Record], batch: usize, out: &mut Output) {
    for b in input.chunks(batch.max(1)) {
        c.process(b.to_vec(), &ctx(), out);
    }
}

/// Stored as a checkpoint stores it: compact JSON text.
fn stored(snapshot: &Json) -> String {
    serde_json::to_string(snapshot).unwrap()
}

fn has_null(j: &Json) -> bool {
    match j {
        Json::Null => true,
        Json::Array(items) => items.iter().any(has_null),
        Json::Object(obj) => obj.values().any(has_null),
        _ => false,
    }
}

/// Equal to the bit: integer versus float, field order, the sign of zero (any NaN equals any
/// NaN: an overflowing float sum makes one, and its sign bit is the hardware's choice).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => same_record(x, y),
        _ => a == b,
    }
}

fn same_record(a: &Record, b: &Record) -> bool {
    a.len() == b.len() && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
}

/// Fails unless `got` is exactly `want`: records, rejections (stage, reason, record, input
/// index) and counters.
fn assert_same_output(want: &Output, got: &Output) -> Result<(), TestCaseError> {
    let text = |rs: &[Record]| Value::Array(rs.iter().cloned().map(Value::Object).collect()).to_json();
    prop_assert!(
        want.records.len() == got.records.len() && want.records.iter().zip(&got.records).all(|(a, b)| same_record(a, b)),
        "records differ:\n want {}\n got  {}",
        text(&want.records),
        text(&got.records)
    );
    prop_assert_eq!(want.rejected.len(), got.rejected.len(), "rejected: {:?} vs {:?}", want.rejected, got.rejected);
    for (a, b) in want.rejected.iter().zip(&got.rejected) {
        prop_assert_eq!((&a.stage, &a.reason, a.input), (&b.stage, &b.reason, b.input));
        prop_assert!(same_record(&a.record, &b.record), "{:?} vs {:?}", a.record, b.record);
    }
    prop_assert_eq!((want.filtered, want.dropped), (got.filtered, got.dropped));
    Ok(())
}

fn append(to: &mut Output, from: Output) {
    to.records.extend(from.records);
    to.rejected.extend(from.rejected);
    to.filtered += from.filtered;
    to.dropped += from.dropped;
}

/// The property: `input[..split]` into one chain, its snapshot through JSON text into a
/// fresh chain, `input[split..]` and `finish` there, gives exactly what one chain gives for
/// the same batches. Also: the snapshot holds no null, is the same when taken twice, and a
/// restored chain's snapshot is the one it was restored from.
fn check_resume(t: &Json, input: &[Record], split: usize, batch: usize) -> Result<(), TestCaseError> {
    let split = split.min(input.len());
    let (head, tail) = input.split_at(split);

    let mut whole = chain(t);
    let mut want = Output::default();
    process(&mut whole, head, batch, &mut want);
    process(&mut whole, tail, batch, &mut want);
    whole.finish(&ctx(), &mut want);

    let mut first = chain(t);
    let mut got = Output::default();
    process(&mut first, head, batch, &mut got);
    let snapshot = first.snapshot();
    prop_assert!(!has_null(&snapshot), "null in {}", snapshot);
    let text = stored(&snapshot);
    prop_assert_eq!(&text, &stored(&first.snapshot()), "two snapshots of the same state differ");
    drop(first);

    let mut second = chain(t);
    second.restore(&serde_json::from_str(&text).unwrap()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&stored(&second.snapshot()), &text, "the restored chain's snapshot differs");
    let mut rest = Output::default();
    process(&mut second, tail, batch, &mut rest);
    second.finish(&ctx(), &mut rest);
    append(&mut got, rest);
    assert_same_output(&want, &got)
}

fn rec(fields: Vec<(&'static str, Option<Value>)>) -> Record {
    fields.into_iter().filter_map(|(k, v)| v.map(|v| (Str::from(k), v))).collect::<Map>()
}

/// A group-by or dedup key: few distinct values, loosely equal ones among them (`1`, `1.0`),
/// null, missing, and an object whose first field is `$`.
fn key() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        4 => (0i64..3).prop_map(|i| Some(Value::Int(i))),
        1 => Just(Some(Value::Float(1.0))),
        2 => prop_oneof![Just("a"), Just("b")].prop_map(|s| Some(Value::from(s))),
        1 => Just(Some(Value::Null)),
        1 => Just(None),
        1 => Just(Some(Value::Object([(Str::from("$"), Value::Null), (Str::from("x"), Value::Int(1))].into_iter().collect()))),
    ]
}

/// An aggregate's input: integers (to overflow i64 too), floats (to overflow f64 too),
/// strings (which `sum` refuses and `min` orders apart from numbers), null, missing, arrays.
fn input_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        4 => (-3i64..5).prop_map(|i| Some(Value::Int(i))),
        1 => prop_oneof![Just(i64::MAX), Just(i64::MIN)].prop_map(|i| Some(Value::Int(i))),
        3 => (-4i64..5).prop_map(|i| Some(Value::Float(i as f64 * 0.25 + 0.1))),
        1 => prop_oneof![Just(1e308), Just(-0.0)].prop_map(|f| Some(Value::Float(f))),
        2 => "[a-c]{1,2}".prop_map(|s| Some(Value::from(s))),
        1 => Just(Some(Value::Null)),
        1 => Just(None),
        1 => Just(Some(Value::Array(vec![Value::Int(1), Value::Null]))),
    ]
}

/// An event time: seconds, mostly ascending with jitter (so windows close, and some records
/// are late), sometimes as RFC 3339 text, sometimes missing or unusable.
fn time(i: usize) -> impl Strategy<Value = Option<Value>> {
    let base = 1_736_935_200 + 7 * i as i64;
    prop_oneof![
        6 => (-40i64..20).prop_map(move |d| Some(Value::Int(base + d))),
        2 => (-40i64..20).prop_map(move |d| {
            let t = chrono::DateTime::from_timestamp(base + d, 0).unwrap();
            Some(Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        }),
        1 => Just(None),
        1 => Just(Some(Value::from("soon"))),
    ]
}

fn agg_records() -> impl Strategy<Value = Vec<Record>> {
    (0usize..40).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                (key(), key(), input_value(), input_value(), time(i), 0u8..4).prop_map(move |(g, h, v, w, t, s)| {
                    let status = ["ok", "void", "ok", "late"][s as usize];
                    rec(vec![
                        ("g", g),
                        ("h", h),
                        ("v", v),
                        ("w", w),
                        ("t", t),
                        ("status", Some(Value::from(status))),
                        ("i", Some(Value::Int(i as i64))),
                    ])
                })
            })
            .collect::<Vec<_>>()
    })
}

/// An aggregation with every aggregate, with or without a window and details.
fn aggregation() -> impl Strategy<Value = Json> {
    let group_by = prop_oneof![Just(json!([])), Just(json!(["g"])), Just(json!(["g", "h"]))];
    let window = prop_oneof![Just(None), Just(Some(1)), Just(Some(30)), Just(Some(120))];
    (group_by, window, any::<bool>()).prop_map(|(group_by, window, details)| {
        let mut fields: Vec<Json> = ["sum", "average", "count", "count_distinct", "min", "max", "first", "last", "collect"]
            .into_iter()
            .map(|op| json!({"input_field": "v", "output_field": format!("{op}_v"), "operation": op}))
            .collect();
        fields.push(json!({"output_field": "n", "operation": "count"}));
        fields.push(json!({"input_field": "w", "output_field": "s.sum_w", "operation": "sum"}));
        fields.push(json!({"input_field": "w", "output_field": "max_w", "operation": "max"}));
        let mut a = json!({"type": "aggregation", "group_by_fields": group_by, "aggregated_fields": fields,
                           "include_details": details});
        if let Some(size) = window {
            a["window"] = json!({"type": "tumbling", "size_seconds": size, "time_field": "t"});
        }
        a
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn aggregation_resumes_from_a_snapshot(
        a in aggregation(), input in agg_records(), split in 0usize..40, batch in 1usize..8,
    ) {
        check_resume(&json!([a]), &input, split, batch)?;
    }

    #[test]
    fn deduplicate_resumes_from_a_snapshot(
        input in agg_records(), split in 0usize..40, batch in 1usize..8, last in any::<bool>(),
        keys in prop_oneof![Just(json!(["g"])), Just(json!(["g", "h"])), Just(json!(["v"]))],
    ) {
        let t = json!([{"type": "deduplicate", "key_fields": keys, "keep": if last { "last" } else { "first" }}]);
        check_resume(&t, &input, split, batch)?;
    }

    /// Stateless steps around stateful ones, records emitted from state (closed windows)
    /// feeding a later stateful step, and failures at several stages.
    #[test]
    fn a_mixed_chain_resumes_from_a_snapshot(
        input in agg_records(), split in 0usize..40, batch in 1usize..8, a in aggregation(), last in any::<bool>(),
    ) {
        let t = json!([
            {"type": "record_filter", "condition": {"field": "status", "operator": "not_equals", "value": "void"}},
            {"type": "deduplicate", "key_fields": ["i", "status"]},
            {"type": "field_calculation", "field_name": "v2", "operation": "multiply", "parameters": {"source_fields": ["v", "v"]}},
            a,
            {"type": "field_addition", "field_name": "tag", "value": "agg"},
            {"type": "field_operation", "field_name": "first_v", "operation": "uppercase"},
            {"type": "deduplicate", "key_fields": ["g"], "keep": if last { "last" } else { "first" }},
            {"type": "field_calculation", "field_name": "ratio", "operation": "divide", "parameters": {"source_fields": ["n", "count_v"]}},
        ]);
        check_resume(&t, &input, split, batch)?;
    }

    /// A snapshot taken, restored and taken again at every batch boundary (a run checkpointed
    /// often and crashing each time) still gives the uninterrupted output.
    #[test]
    fn resuming_at_every_batch(a in aggregation(), input in agg_records(), batch in 1usize..6) {
        let t = json!([a, {"type": "deduplicate", "key_fields": ["g"], "keep": "last"}]);
        let mut whole = chain(&t);
        let mut want = Output::default();
        process(&mut whole, &input, batch, &mut want);
        whole.finish(&ctx(), &mut want);

        let mut got = Output::default();
        let mut text = stored(&chain(&t).snapshot());
        for b in input.chunks(batch) {
            let mut c = chain(&t);
            c.restore(&serde_json::from_str(&text).unwrap()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            c.process(b.to_vec(), &ctx(), &mut got);
            text = stored(&c.snapshot());
        }
        let mut c = chain(&t);
        c.restore(&serde_json::from_str(&text).unwrap()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        c.finish(&ctx(), &mut got);
        assert_same_output(&want, &got)?;
    }
}

fn records(v: Json) -> Vec<Record> {
    let Value::Array(items) = Value::from(&v) else { panic!("a list of records") };
    items
        .into_iter()
        .map(|i| match i {
            Value::Object(m) => m,
            other => panic!("not a record: {other}"),
        })
        .collect()
}

fn output_json(out: &Output) -> String {
    Value::Array(out.records.iter().cloned().map(Value::Object).collect()).to_json()
}

/// One golden case: a chain, the input it had processed when its snapshot was taken, and the
/// input after it.
struct Golden {
    file: &'static str,
    transformations: Json,
    head: Json,
    tail: Json,
    /// The output of the tail and `finish` in a chain restored from the golden file.
    output: &'static str,
    rejected: &'static [&'static str],
}

fn golden_cases() -> Vec<Golden> {
    vec![
        Golden {
            file: "chain_v1_aggregations.json",
            transformations: json!([
                {"type": "deduplicate", "key_fields": ["id"]},
                {"type": "record_filter", "condition": {"field": "status", "operator": "not_equals", "value": "void"}},
                {"type": "aggregation", "group_by_fields": ["region"], "include_details": true,
                 "window": {"type": "tumbling", "size_seconds": 60, "time_field": "at"},
                 "aggregated_fields": [
                    {"input_field": "amount", "output_field": "sum", "operation": "sum"},
                    {"input_field": "amount", "output_field": "avg", "operation": "average"},
                    {"output_field": "n", "operation": "count"},
                    {"input_field": "sku", "output_field": "skus", "operation": "count_distinct"},
                    {"input_field": "amount", "output_field": "min", "operation": "min"},
                    {"input_field": "amount", "output_field": "max", "operation": "max"},
                    {"input_field": "sku", "output_field": "first", "operation": "first"},
                    {"input_field": "sku", "output_field": "last", "operation": "last"},
                    {"input_field": "sku", "output_field": "all", "operation": "collect"}]},
                // Gets the closed windows, and shows them whole in its details.
                {"type": "aggregation", "group_by_fields": ["region"], "include_details": true, "aggregated_fields": [
                    {"input_field": "n", "output_field": "records", "operation": "sum"},
                    {"input_field": "sum", "output_field": "total", "operation": "sum"},
                    {"input_field": "window_start", "output_field": "windows", "operation": "collect"}]},
            ]),
            head: json!([
                {"id": 1, "region": "EU", "amount": 2, "sku": "A", "at": "2025-01-15T10:00:05Z"},
                {"id": 2, "region": null, "amount": 2.5, "sku": "B", "at": "2025-01-15T10:00:10Z"},
                {"id": 1, "region": "EU", "amount": 100, "sku": "dup", "at": "2025-01-15T10:00:11Z"},
                {"id": 3, "region": "EU", "amount": 3, "sku": "B", "at": "2025-01-15T10:01:20Z", "status": "void"},
                {"id": 4, "region": "EU", "amount": 1.0e308, "sku": "C", "at": "2025-01-15T10:01:02Z"},
                {"id": 5, "region": "EU", "amount": 1.0e308, "sku": "C", "at": "2025-01-15T10:01:03Z"},
                {"id": 6, "region": {"$": "x"}, "amount": 9223372036854775807_i64, "sku": "D", "at": "2025-01-15T10:01:30Z"},
                {"id": 7, "region": {"$": "x"}, "amount": 9223372036854775807_i64, "sku": ["E"], "at": "2025-01-15T10:01:40Z"},
                {"id": 8, "region": "EU", "amount": 1, "sku": "late", "at": "2025-01-15T10:00:30Z"},
            ]),
            tail: json!([
                {"id": 9, "region": {"$": "x"}, "amount": 1, "sku": "F", "at": 1736935320},
                {"id": 6, "region": "EU", "amount": 1, "sku": "dup", "at": 1736935320},
                {"id": 10, "region": null, "amount": 1, "sku": "G", "at": "2025-01-15T10:00:59Z"},
            ]),
            output: concat!(
                r#"[{"region":"EU","records":3,"total":null,"windows":["2025-01-15T10:00:00Z","2025-01-15T10:01:00Z"],"#,
                r#""details":[{"region":"EU","window_start":"2025-01-15T10:00:00Z","window_end":"2025-01-15T10:01:00Z","#,
                r#""sum":2,"avg":2.0,"n":1,"skus":1,"min":2,"max":2,"first":"A","last":"A","all":["A"],"#,
                r#""details":[{"id":1,"region":"EU","amount":2,"sku":"A","at":"2025-01-15T10:00:05Z"}]},{"region":"EU","#,
                r#""window_start":"2025-01-15T10:01:00Z","window_end":"2025-01-15T10:02:00Z","sum":null,"avg":null,"#,
                r#""n":2,"skus":1,"min":1e+308,"max":1e+308,"first":"C","last":"C","all":["C","C"],"details":[{"id":4,"#,
                r#""region":"EU","amount":1e+308,"sku":"C","at":"2025-01-15T10:01:02Z"},{"id":5,"region":"EU","#,
                r#""amount":1e+308,"sku":"C","at":"2025-01-15T10:01:03Z"}]}]},{"region":null,"records":1,"total":2.5,"#,
                r#""windows":["2025-01-15T10:00:00Z"],"details":[{"region":null,"window_start":"2025-01-15T10:00:00Z","#,
                r#""window_end":"2025-01-15T10:01:00Z","sum":2.5,"avg":2.5,"n":1,"skus":1,"min":2.5,"max":2.5,"#,
                r#""first":"B","last":"B","all":["B"],"details":[{"id":2,"region":null,"amount":2.5,"sku":"B","#,
                r#""at":"2025-01-15T10:00:10Z"}]}]},{"region":{"$":"x"},"records":3,"total":1.8446744073709552e+19,"#,
                r#""windows":["2025-01-15T10:01:00Z","2025-01-15T10:02:00Z"],"details":[{"region":{"$":"x"},"#,
                r#""window_start":"2025-01-15T10:01:00Z","window_end":"2025-01-15T10:02:00Z","#,
                r#""sum":1.8446744073709552e+19,"avg":9.223372036854776e+18,"n":2,"skus":2,"min":9223372036854775807,"#,
                r#""max":9223372036854775807,"first":"D","last":["E"],"all":["D",["E"]],"details":[{"id":6,"#,
                r#""region":{"$":"x"},"amount":9223372036854775807,"sku":"D","at":"2025-01-15T10:01:30Z"},{"id":7,"#,
                r#""region":{"$":"x"},"amount":9223372036854775807,"sku":["E"],"at":"2025-01-15T10:01:40Z"}]},"#,
                r#"{"region":{"$":"x"},"window_start":"2025-01-15T10:02:00Z","window_end":"2025-01-15T10:03:00Z","#,
                r#""sum":1,"avg":1.0,"n":1,"skus":1,"min":1,"max":1,"first":"F","last":"F","all":["F"],"#,
                r#""details":[{"id":9,"region":{"$":"x"},"amount":1,"sku":"F","at":1736935320}]}]}]"#,
            ),
            rejected: &["transformations[2]: late record: its window 2025-01-15T10:00:00Z to 2025-01-15T10:01:00Z has already been emitted"],
        },
        Golden {
            file: "chain_v1_keep_last.json",
            transformations: json!([
                {"type": "deduplicate", "key_fields": ["k"], "keep": "last"},
                {"type": "field_addition", "field_name": "seen", "value": true},
            ]),
            head: json!([
                {"k": 1, "v": "a"},
                {"v": "d"},
                {"k": 1.0, "v": "c", "f": -0.0},
                {"k": null, "v": "b", "o": {"$": null, "n": [1, 2.0, null]}},
                {"k": "1", "v": {"$": "nan"}},
            ]),
            tail: json!([{"k": 1, "v": "e"}, {"k": "2", "v": "f"}]),
            output: concat!(
                r#"[{"k":1,"v":"e","seen":true},{"k":null,"v":"b","o":{"$":null,"n":[1,2.0,null]},"seen":true},"#,
                r#"{"k":"1","v":{"$":"nan"},"seen":true},{"k":"2","v":"f","seen":true}]"#
            ),
            rejected: &[],
        },
    ]
}

fn golden_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"))
}

/// A stored snapshot of format version 1 still restores, and goes on to the right output.
/// This must keep passing unchanged: a format change is a new version (and a new golden
/// file) with these files still read.
#[test]
fn golden_snapshots_still_restore() {
    for case in golden_cases() {
        let path = golden_dir().join(case.file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stored: Json = serde_json::from_str(&text).unwrap();
        let mut c = chain(&case.transformations);
        c.restore(&stored).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        let mut out = Output::default();
        c.process(records(case.tail.clone()), &ctx(), &mut out);
        c.finish(&ctx(), &mut out);
        assert_eq!(output_json(&out), case.output, "{}", case.file);
        // What a run that never stopped gives after the head.
        let mut whole = chain(&case.transformations);
        let mut uninterrupted = Output::default();
        whole.process(records(case.head.clone()), &ctx(), &mut Output::default());
        whole.process(records(case.tail.clone()), &ctx(), &mut uninterrupted);
        whole.finish(&ctx(), &mut uninterrupted);
        assert_eq!(output_json(&uninterrupted), case.output, "{}", case.file);
        let rejected: Vec<String> = out.rejected.iter().map(|r| format!("{}: {}", r.stage, r.reason)).collect();
        assert_eq!(rejected, case.rejected, "{}", case.file);
    }
}

/// What a chain writes today for the golden input is still the golden file, to the byte
/// (as compact text), so the format cannot change without anyone noticing.
#[test]
fn golden_snapshots_are_what_the_format_writes() {
    for case in golden_cases() {
        let path = golden_dir().join(case.file);
        let golden: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut c = chain(&case.transformations);
        c.process(records(case.head.clone()), &ctx(), &mut Output::default());
        let snapshot = stored(&c.snapshot());
        assert_eq!(
            snapshot,
            stored(&golden),
            "{}: the snapshot format changed. If on purpose: bump the version, keep reading version 1, \
             and add a golden file for the new version. Today's snapshot:\n{}",
            case.file,
            serde_json::to_string_pretty(&c.snapshot()).unwrap()
        );
    }
}

fn agg_chain() -> Json {
    json!([{"type": "aggregation", "group_by_fields": ["g"], "aggregated_fields": [
        {"input_field": "v", "output_field": "s", "operation": "sum"},
        {"input_field": "v", "output_field": "d", "operation": "count_distinct"}]},
        {"type": "deduplicate", "key_fields": ["g"]}])
}

fn restore_error(t: Json, snapshot: Json) -> String {
    let mut c = chain(&t);
    c.restore(&snapshot).expect_err("a snapshot of another shape").to_string()
}

#[test]
fn snapshots_of_another_shape_are_refused_with_the_reason() {
    let mut c = chain(&agg_chain());
    c.process(records(json!([{"g": 1, "v": 2}, {"g": 2, "v": 3}])), &ctx(), &mut Output::default());
    let good = c.snapshot();
    assert_eq!(
        stored(&good),
        r#"{"version":1,"steps":[{"step":0,"type":"aggregation","ops":["sum","count_distinct"],"groups":[[[1],[1,2],[2]],[[2],[1,3],[3]]]},{"step":1,"type":"deduplicate","keep":"first","keys":[]}]}"#
    );
    let edit = |f: &dyn Fn(&mut Json)| {
        let mut s = good.clone();
        f(&mut s);
        s
    };
    let cases: Vec<(Json, Json, &str)> = vec![
        (agg_chain(), Json::Null, "not a chain snapshot: expected an object, found null"),
        (agg_chain(), edit(&|s| s["version"] = json!(2)), "the chain snapshot is of version 2; this build reads version 1"),
        (agg_chain(), edit(&|s| s["extra"] = json!(1)), "chain snapshot: unknown field(s) `extra`"),
        (
            json!([{"type": "deduplicate", "key_fields": ["g"]}]),
            good.clone(),
            "the chain snapshot holds the state of 2 step(s): transformations[0] (aggregation), transformations[1] (deduplicate); \
             this chain's stateful steps are: transformations[0] (deduplicate)",
        ),
        (
            json!([{"type": "record_filter", "condition": {"field": "g", "operator": "is_not_null"}}]),
            good.clone(),
            "this chain's stateful steps are: none",
        ),
        (
            json!([{"type": "deduplicate", "key_fields": ["g"]}, agg_chain()[0].clone()]),
            good.clone(),
            "the chain snapshot has, in the place of transformations[0] (deduplicate), the state of step 0 of type \"aggregation\"",
        ),
        (
            json!([{"type": "aggregation", "group_by_fields": ["g"], "aggregated_fields": [
                {"input_field": "v", "output_field": "s", "operation": "sum"}]}, agg_chain()[1].clone()]),
            good.clone(),
            "chain snapshot of transformations[0] (aggregation): the snapshot's aggregates are [\"sum\",\"count_distinct\"], this step's are [sum]",
        ),
        (
            json!([{"type": "aggregation", "group_by_fields": ["g"], "window": {"type": "tumbling", "size_seconds": 5, "time_field": "t"},
                    "aggregated_fields": agg_chain()[0]["aggregated_fields"].clone()}, agg_chain()[1].clone()]),
            good.clone(),
            "the snapshot is of an aggregation without a window, this one is with a 5-second window",
        ),
        (
            json!([{"type": "aggregation", "group_by_fields": ["g"], "include_details": true,
                    "aggregated_fields": agg_chain()[0]["aggregated_fields"].clone()}, agg_chain()[1].clone()]),
            good.clone(),
            "the snapshot is of an aggregation without `include_details`, this one is with it",
        ),
        (
            json!([{"type": "aggregation", "group_by_fields": ["g", "h"],
                    "aggregated_fields": agg_chain()[0]["aggregated_fields"].clone()}, agg_chain()[1].clone()]),
            good.clone(),
            "`groups`: group 0: its key has 1 value(s), this step groups by 2 field(s)",
        ),
        (
            json!([agg_chain()[0].clone(), {"type": "deduplicate", "key_fields": ["g"], "keep": "last"}]),
            good.clone(),
            "chain snapshot of transformations[1] (deduplicate): the snapshot's `keep` is \"first\", this step's is \"last\"",
        ),
        (
            agg_chain(),
            edit(&|s| s["steps"][0]["groups"][1][0] = json!([1.0])),
            "`groups`: group 1: its key [1.0] repeats an earlier group's",
        ),
        (
            agg_chain(),
            edit(&|s| s["steps"][0]["groups"][0][1] = json!([1])),
            "group 0: aggregate 0 (`sum`): expected [n, ints] or [n, ints, floats, compensation], found [1]",
        ),
        (
            agg_chain(),
            edit(&|s| s["steps"][0]["groups"][0][2] = json!([2, 2.0])),
            "group 0: aggregate 1 (`count_distinct`): distinct value 1 repeats an earlier one: 2.0",
        ),
        (agg_chain(), edit(&|s| s["steps"][0]["groups"][0][0] = json!([null])), "group 0: null, which a snapshot writes as"),
        (agg_chain(), edit(&|s| s["steps"][1]["keys"] = json!([[1], [1.0]])), "key 1: [1.0] repeats an earlier key"),
        (agg_chain(), edit(&|s| s["steps"][1]["held"] = json!([])), "unknown field(s) `held`"),
    ];
    for (t, snapshot, want) in cases {
        let err = restore_error(t, snapshot);
        assert!(err.contains(want), "\n got:  {err}\n want: {want}");
    }
}

#[test]
fn a_refused_snapshot_leaves_the_chain_as_it_was() {
    let mut c = chain(&agg_chain());
    c.process(records(json!([{"g": 1, "v": 2}])), &ctx(), &mut Output::default());
    let before = stored(&c.snapshot());
    let mut other = chain(&agg_chain());
    other.process(records(json!([{"g": 5, "v": 1}])), &ctx(), &mut Output::default());
    let mut bad = other.snapshot();
    bad["steps"][1]["keys"] = json!("not keys");
    assert!(c.restore(&bad).is_err());
    assert_eq!(stored(&c.snapshot()), before, "the aggregation's state was read but not applied");
}

#[test]
fn a_stateless_chain_has_a_tiny_snapshot() {
    let t = json!([{"type": "field_addition", "field_name": "x", "value": 1},
                   {"type": "conditional", "condition": {"field": "x", "operator": "equals", "value": 1},
                    "then": [{"type": "record_filter", "condition": {"field": "y", "operator": "is_null"}}]}]);
    let mut c = chain(&t);
    assert_eq!(stored(&c.snapshot()), r#"{"version":1,"steps":[]}"#);
    c.restore(&json!({"version": 1, "steps": []})).unwrap();
    let mut out = Output::default();
    c.process(records(json!([{}])), &ctx(), &mut out);
    assert_eq!(output_json(&out), r#"[{"x":1}]"#);
}

#[test]
fn restore_replaces_the_state_and_a_finished_chain_is_empty() {
    let t = json!([{"type": "deduplicate", "key_fields": ["k"], "keep": "last"}]);
    let mut a = chain(&t);
    a.process(records(json!([{"k": 1, "v": 1}])), &ctx(), &mut Output::default());
    let mut b = chain(&t);
    b.process(records(json!([{"k": 2}])), &ctx(), &mut Output::default());
    b.restore(&a.snapshot()).unwrap();
    let mut out = Output::default();
    b.finish(&ctx(), &mut out);
    assert_eq!(output_json(&out), r#"[{"k":1,"v":1}]"#, "the record held before the restore is gone");
    assert_eq!(stored(&b.snapshot()), r#"{"version":1,"steps":[{"step":0,"type":"deduplicate","keep":"last","held":[]}]}"#);
}

/// 10 000 groups of an aggregation like the guide's (sum, average, count, max) over 30 000
/// records: the stored size and the time to take, store, read back and restore it. (Debug
/// build here; `cargo bench --bench snapshot` gives the optimized numbers.)
#[test]
fn snapshot_of_ten_thousand_groups() {
    const GROUPS: usize = 10_000;
    let t = json!([{"type": "aggregation", "group_by_fields": ["customer_id"], "aggregated_fields": [
        {"input_field": "price", "output_field": "total", "operation": "sum"},
        {"input_field": "price", "output_field": "avg", "operation": "average"},
        {"input_field": "order_id", "output_field": "n", "operation": "count"},
        {"input_field": "quantity", "output_field": "max", "operation": "max"}]}]);
    let input: Vec<Record> = (0..3 * GROUPS)
        .map(|i| {
            rec(vec![
                ("order_id", Some(Value::from(format!("ORD-{i:06}")))),
                ("customer_id", Some(Value::from(format!("CUST-{:05}", i % GROUPS)))),
                ("quantity", Some(Value::Int((i % 5 + 1) as i64))),
                ("price", Some(Value::Float(9.99 + (i % 13) as f64))),
            ])
        })
        .collect();
    let mut c = chain(&t);
    let mut out = Output::default();
    process(&mut c, &input, 2048, &mut out);

    let start = Instant::now();
    let text = stored(&c.snapshot());
    let took_snapshot = start.elapsed();
    let start = Instant::now();
    let mut restored = chain(&t);
    restored.restore(&serde_json::from_str(&text).unwrap()).unwrap();
    let took_restore = start.elapsed();
    println!(
        "snapshot of {GROUPS} groups: {} bytes ({:.1} per group); snapshot + text {:?}, parse + restore {:?} (debug build)",
        text.len(),
        text.len() as f64 / GROUPS as f64,
        took_snapshot,
        took_restore
    );
    // A group: its key, one accumulator for sum and average (`[3,0,32.97,1.7763568394002505e-15]`),
    // the count and the max, in brackets: about 65 bytes.
    assert!(text.len() < 80 * GROUPS, "{} bytes", text.len());
    assert!(text.starts_with(r#"{"version":1,"steps":[{"step":0,"type":"aggregation","ops":["sum","average","count","max"],"groups":[[["CUST-00000"],[3,0,"#));

    let (mut a, mut b) = (Output::default(), Output::default());
    c.finish(&ctx(), &mut a);
    restored.finish(&ctx(), &mut b);
    assert_eq!(a.records.len(), GROUPS);
    assert_eq!(output_json(&a), output_json(&b));
}
