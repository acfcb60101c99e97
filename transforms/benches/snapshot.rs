//! The cost of a checkpoint's chain state: an aggregation of 10 000 groups (sum, average,
//! count, max, as in the guide) snapshotted to compact JSON text, and that text parsed and
//! restored into a fresh chain. Prints the text's size once.
//!
//! `cargo bench -p dagg-transforms --bench snapshot`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dagg_model::spec::transform::parse_transformations;
use dagg_model::{Map, Record, SpecErrors, Str, Value};
use dagg_transforms::{BatchContext, Chain, Output};
use serde_json::json;

const GROUPS: usize = 10_000;

fn chain() -> Chain {
    let t = json!([{"type": "aggregation", "group_by_fields": ["customer_id"], "aggregated_fields": [
        {"input_field": "price", "output_field": "total", "operation": "sum"},
        {"input_field": "price", "output_field": "avg", "operation": "average"},
        {"input_field": "order_id", "output_field": "n", "operation": "count"},
        {"input_field": "quantity", "output_field": "max", "operation": "max"}]}]);
    let mut errs = SpecErrors::new();
    let specs = parse_transformations(&t, "transformations", &mut errs);
    assert!(errs.is_empty(), "{errs}");
    Chain::new(&specs, HashMap::new()).unwrap()
}

/// A chain that has folded three orders into each of 10 000 customers.
fn loaded() -> Chain {
    let input: Vec<Record> = (0..3 * GROUPS)
        .map(|i| {
            [
                ("order_id", Value::from(format!("ORD-{i:06}"))),
                ("customer_id", Value::from(format!("CUST-{:05}", i % GROUPS))),
                ("quantity", Value::Int((i % 5 + 1) as i64)),
                ("price", Value::Float(9.99 + (i % 13) as f64)),
            ]
            .into_iter()
            .map(|(k, v)| (Str::from(k), v))
            .collect::<Map>()
        })
        .collect();
    let mut c = chain();
    let ctx = BatchContext { now: chrono::DateTime::UNIX_EPOCH };
    c.process(input, &ctx, &mut Output::default());
    c
}

fn snapshot(c: &mut Criterion) {
    let state = loaded();
    let text = serde_json::to_string(&state.snapshot()).unwrap();
    println!("snapshot of {GROUPS} groups: {} bytes ({:.1} per group)", text.len(), text.len() as f64 / GROUPS as f64);
    let mut group = c.benchmark_group("snapshot");
    group.throughput(Throughput::Elements(GROUPS as u64));
    group.bench_function("take_10k_groups", |b| b.iter(|| black_box(serde_json::to_string(&state.snapshot()).unwrap())));
    group.bench_function("restore_10k_groups", |b| {
        b.iter_batched(
            chain,
            |mut fresh| {
                fresh.restore(&serde_json::from_str(&text).unwrap()).unwrap();
                fresh
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
