//! Throughput of the file connector on JSONL: reads a file, rewrites it, prints records/s.
//!
//! ```text
//! python3 /work/shared/tools/gen-orders 1000000 /tmp/orders.jsonl
//! cargo run --release -p dagg-connectors --example file_throughput -- /tmp/orders.jsonl
//! ```

use std::path::Path;
use std::time::Instant;

use dagg_connectors::{open_sink, open_source};
use dagg_model::Record;
use dagg_model::spec::connector::{ConnectorConfig, ConnectorSpec, FileConfig, FileFormat};

const BATCH: usize = 4096;

fn spec(path: &str) -> ConnectorSpec {
    ConnectorSpec {
        connector_type: "file".into(),
        config: ConnectorConfig::File(FileConfig {
            name: None,
            path: path.into(),
            format: FileFormat::Jsonl,
            compression: None,
            delimiter: None,
            record_element: None,
            root_element: None,
            max_records: None,
            max_file_size: None,
        }),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let input = std::env::args().nth(1).unwrap_or_else(|| "/tmp/orders.jsonl".into());
    let output = format!("{input}.rewritten.jsonl");
    let base = Path::new("/");

    // Read only.
    let start = Instant::now();
    let mut src = open_source(&spec(&input), base)?;
    let mut n = 0usize;
    let mut kept: Vec<Vec<Record>> = Vec::new();
    while let Some(b) = src.next_batch(BATCH).await? {
        n += b.batch.len();
        if kept.len() < 50 {
            kept.push(b.batch.records);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("read:    {n} records in {secs:.2} s = {:.0} records/s", n as f64 / secs);

    // Write only, from records in memory (the first ~200k, written 5 times).
    let start = Instant::now();
    let mut sink = open_sink(&spec(&output), base)?;
    let mut w = 0usize;
    for _ in 0..5 {
        for batch in &kept {
            sink.write(batch).await?;
            w += batch.len();
        }
    }
    sink.commit().await?;
    let secs = start.elapsed().as_secs_f64();
    println!("write:   {w} records in {secs:.2} s = {:.0} records/s", w as f64 / secs);
    drop(kept);

    // Read and rewrite.
    let start = Instant::now();
    let mut src = open_source(&spec(&input), base)?;
    let mut sink = open_sink(&spec(&output), base)?;
    let mut m = 0usize;
    while let Some(b) = src.next_batch(BATCH).await? {
        m += b.batch.len();
        sink.write(&b.batch.records).await?;
    }
    sink.commit().await?;
    let secs = start.elapsed().as_secs_f64();
    println!("rewrite: {m} records in {secs:.2} s = {:.0} records/s", m as f64 / secs);
    std::fs::remove_file(&output)?;
    Ok(())
}
