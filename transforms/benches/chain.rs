//! Per-record cost of each family of steps, on batches of 1 000 records shaped like the
//! guide's orders. Criterion reports time per batch and elements per second; divide the
//! batch time by 1 000 for the time per record. Cloning the input batch is not measured.
//!
//! `cargo bench -p dagg-transforms --bench chain` (`-- jsonl` for the JSON Lines text alone)

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dagg_model::spec::transform::parse_transformations;
use dagg_model::{Record, SpecErrors, Value};
use dagg_transforms::{BatchContext, Chain, Output};
use serde_json::json;

const BATCH: usize = 1_000;

fn orders() -> Vec<Record> {
    let products = ["wireless mouse", "mechanical keyboard", "usb cable", "monitor stand", "webcam"];
    let statuses = ["completed", "pending", "completed", "shipped"];
    (0..BATCH)
        .map(|i| {
            let v = json!({
                "order_id": format!("ORD-{i:06}"),
                "customer_id": format!("CUST-{}", i % 97),
                "product_name": products[i % products.len()],
                "quantity": (i % 5 + 1) as i64,
                "price": 9.99 + (i % 13) as f64,
                "order_date": format!("2025-01-15T{:02}:{:02}:00Z", (i / 60) % 24, i % 60),
                "status": statuses[i % statuses.len()],
                "customer_email": if i % 50 == 0 { "broken".to_string() } else { format!("user{i}@example.com") },
            });
            match Value::from(&v) {
                Value::Object(m) => m,
                _ => unreachable!(),
            }
        })
        .collect()
}

fn chain(t: serde_json::Value, join_data: HashMap<String, Vec<Record>>) -> Chain {
    let mut errs = SpecErrors::new();
    let specs = parse_transformations(&t, "transformations", &mut errs);
    assert!(errs.is_empty(), "{errs}");
    Chain::new(&specs, join_data).unwrap()
}

fn bench(c: &mut Criterion, name: &str, t: serde_json::Value, join_data: HashMap<String, Vec<Record>>, finish: bool) {
    let input = orders();
    let ctx = BatchContext { now: "2025-01-16T08:00:00Z".parse().unwrap() };
    let mut group = c.benchmark_group("chain");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(name, |b| {
        let mut ch = chain(t.clone(), join_data.clone());
        b.iter_batched(
            || input.clone(),
            |batch| {
                let mut out = Output::default();
                ch.process(batch, &ctx, &mut out);
                if finish {
                    ch.finish(&ctx, &mut out);
                }
                black_box(out)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn families(c: &mut Criterion) {
    let none = HashMap::new;
    // What moving a batch through costs with no step (dropping the output included).
    bench(c, "baseline_empty", json!([]), none(), false);
    for (name, step) in [
        ("title_case", json!({"type": "field_mapping", "field_name": "product_name", "operation": "title_case"})),
        ("lowercase", json!({"type": "field_operation", "field_name": "customer_email", "operation": "lowercase"})),
        ("rename", json!({"type": "field_operation", "field_name": "price", "operation": "rename", "parameters": {"to": "unit_price"}})),
        ("current_timestamp", json!({"type": "field_addition", "field_name": "processed_timestamp", "value": "current_timestamp"})),
    ] {
        bench(c, &format!("field_op_{name}"), json!([step]), none(), false);
    }
    bench(
        c,
        "field_ops",
        json!([
            {"type": "field_mapping", "field_name": "product_name", "operation": "title_case"},
            {"type": "field_operation", "field_name": "customer_email", "operation": "lowercase"},
            {"type": "field_operation", "field_name": "price", "operation": "rename", "parameters": {"to": "unit_price"}},
            {"type": "field_addition", "field_name": "processed_timestamp", "value": "current_timestamp"},
        ]),
        none(),
        false,
    );
    bench(
        c,
        "calculation",
        json!([{"type": "field_calculation", "field_name": "total_price", "operation": "multiply",
                "parameters": {"source_fields": ["quantity", "price"]}}]),
        none(),
        false,
    );
    bench(
        c,
        "filter",
        json!([{"type": "record_filter", "condition": {"all": [
            {"field": "status", "operator": "equals", "value": "completed"},
            {"field": "quantity", "operator": "greater_than", "value": 1}]}}]),
        none(),
        false,
    );
    bench(
        c,
        "validation",
        json!([{"type": "field_validation", "field_name": "customer_email", "validation_type": "email_format"}]),
        none(),
        false,
    );
    bench(
        c,
        "guide_chain",
        json!([
            {"type": "field_mapping", "field_name": "product_name", "operation": "title_case"},
            {"type": "field_calculation", "field_name": "total_price", "operation": "multiply",
             "parameters": {"source_fields": ["quantity", "price"], "output_field": "total_price"}},
            {"type": "record_filter", "condition": {"field": "status", "operator": "equals", "value": "completed"}},
            {"type": "field_addition", "field_name": "processed_timestamp", "value": "current_timestamp"},
            {"type": "field_validation", "field_name": "customer_email", "validation_type": "email_format"},
        ]),
        none(),
        false,
    );
    bench(
        c,
        "aggregation",
        json!([{"type": "aggregation", "group_by_fields": ["customer_id"], "aggregated_fields": [
            {"input_field": "price", "output_field": "total", "operation": "sum"},
            {"input_field": "price", "output_field": "avg", "operation": "average"},
            {"input_field": "order_id", "output_field": "n", "operation": "count"},
            {"input_field": "price", "output_field": "max", "operation": "max"}]}]),
        none(),
        true,
    );
    let crm: Vec<Record> = (0..97)
        .map(|i| {
            match Value::from(&json!({"customer_id": format!("CUST-{i}"), "segment": "Premium", "crm_id": i, "total_spent": 12.5})) {
                Value::Object(m) => m,
                _ => unreachable!(),
            }
        })
        .collect();
    bench(
        c,
        "join",
        json!([{"type": "join", "primary_key": "customer_id", "foreign_key": "customer_id", "join_source": "crm",
                "included_fields": ["segment", "crm_id"]}]),
        HashMap::from([("crm".to_string(), crm)]),
        false,
    );
    bench(
        c,
        "script",
        json!([{"type": "script", "source": "record.total = record.quantity * record.price;"}]),
        none(),
        false,
    );
}

/// The text at both ends of a chain: one batch of orders as JSON Lines, parsed into records
/// and written back, with the model's own code (`dagg_model::json`, what the file connector
/// uses) and with serde_json (what it used before; the bytes are the same).
fn jsonl_text(c: &mut Criterion) {
    let input = orders();
    let lines: Vec<Vec<u8>> = input.iter().map(|r| serde_json::to_vec(r).unwrap()).collect();
    let mut group = c.benchmark_group("jsonl");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("write_model", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for r in &input {
                dagg_model::json::write_map(&mut out, r);
                out.push(b'\n');
            }
            black_box(out.len())
        })
    });
    group.bench_function("write_serde_json", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for r in &input {
                serde_json::to_writer(&mut out, r).unwrap();
                out.push(b'\n');
            }
            black_box(out.len())
        })
    });
    group.bench_function("parse_model", |b| {
        b.iter(|| lines.iter().map(|l| dagg_model::json::parse_object(l).unwrap()).collect::<Vec<Record>>())
    });
    group.bench_function("parse_serde_json", |b| {
        b.iter(|| lines.iter().map(|l| serde_json::from_slice::<Record>(l).unwrap()).collect::<Vec<Record>>())
    });
    group.finish();
}

criterion_group!(benches, families, jsonl_text);
criterion_main!(benches);
