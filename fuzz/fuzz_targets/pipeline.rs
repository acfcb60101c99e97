//! Any text given to the pipeline parser, and any pipeline it accepts given to the plan
//! compiler and run over a few records, must give a result or an error — never a panic.

#![no_main]

use std::collections::HashMap;

use dagg_model::Record;
use dagg_model::spec::pipeline::{DocFormat, parse_document};
use dagg_transforms::{BatchContext, Chain, Output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for format in [DocFormat::Json, DocFormat::Yaml] {
        let Ok(spec) = parse_document(text, format) else { continue };
        let joins: HashMap<String, Vec<Record>> = spec.sources.iter().map(|(n, _)| (n.clone(), records())).collect();
        let Ok(mut chain) = Chain::new(&spec.transformations, joins) else { continue };
        let ctx = BatchContext { now: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap() };
        let mut out = Output::default();
        chain.process(records(), &ctx, &mut out);
        chain.finish(&ctx, &mut out);
    }
});

fn records() -> Vec<Record> {
    [
        r#"{"id": 1, "name": "ann o'neil", "email": "a@b.co", "amount": 2.5, "tags": ["x", "y"], "address": {"city": "Paris"}, "ts": "2025-01-15T10:30:00Z"}"#,
        r#"{"id": "2", "name": null, "amount": -7, "tags": [], "ts": "2025-01-15"}"#,
        r#"{}"#,
    ]
    .iter()
    .map(|s| serde_json::from_str(s).unwrap())
    .collect()
}
