//! The data profiler's cost per record (the tap that feeds `/runs/{id}/profile`): 200 000
//! order-like records of five fields, one nested, observed in batches of 2048.
//!
//! `cargo bench -p dagg-actors --bench profile`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dagg_actors::profile::Profiler;
use dagg_model::Record;

const N: usize = 200_000;

fn orders() -> Vec<Record> {
    (0..N)
        .map(|i| {
            let line = format!(
                r#"{{"order_id":"ORD-{i}","status":"{}","quantity":{},"price":{}.5,"customer":{{"id":{}}}}}"#,
                ["completed", "pending"][i % 2],
                i % 9,
                i % 100,
                i % 5000
            );
            serde_json::from_str(&line).expect("an order")
        })
        .collect()
}

fn profiler(c: &mut Criterion) {
    let records = orders();
    let mut g = c.benchmark_group("profiler");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.bench_function("observe 200k orders", |b| {
        b.iter(|| {
            let mut p = Profiler::new();
            for chunk in records.chunks(2048) {
                p.observe(black_box(chunk));
            }
            black_box(p.profile())
        })
    });
    g.finish();
}

criterion_group!(benches, profiler);
criterion_main!(benches);
