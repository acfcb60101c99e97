//! The guide's five examples (`shared/fixtures/guide`): each case's transformations over its
//! `input.json` give exactly its `expected.json` (key order and integer-versus-float kept;
//! `"<RFC 3339 timestamp>"` matches any RFC 3339 string).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dagg_model::spec::transform::{join_sources, parse_transformations};
use dagg_model::{SpecErrors, Value};
use dagg_transforms::{BatchContext, Chain, Output};
use serde_json::Value as Json;

mod common;
use common::{matches, records};

fn guide_dir() -> Option<PathBuf> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    [crate_dir.join("../../shared/fixtures/guide"), crate_dir.join("../examples/guide")]
        .into_iter()
        .find(|p| p.is_dir())
}

fn read_json(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run_case(dir: &Path) -> Result<(), String> {
    let pipeline = read_json(&dir.join("pipeline.json"));
    let mut errs = SpecErrors::new();
    let specs = parse_transformations(&pipeline["transformations"], "transformations", &mut errs);
    if !errs.is_empty() {
        return Err(format!("invalid transformations:\n{errs}"));
    }
    let mut join_data = HashMap::new();
    for (_, name) in join_sources(&specs) {
        let path = pipeline["sources"][&name]["config"]["path"].as_str().expect("a file source");
        join_data.insert(name, records(&read_json(&dir.join(path))));
    }
    let mut chain = Chain::new(&specs, join_data).map_err(|e| e.to_string())?;
    let ctx = BatchContext { now: chrono::Utc::now() };
    let mut out = Output::default();
    chain.process(records(&read_json(&dir.join("input.json"))), &ctx, &mut out);
    chain.finish(&ctx, &mut out);
    if !out.rejected.is_empty() {
        return Err(format!("rejected: {:#?}", out.rejected));
    }
    let expected = read_json(&dir.join("expected.json"));
    let got = Value::Array(out.records.into_iter().map(Value::Object).collect());
    if matches(&expected, &got) {
        Ok(())
    } else {
        Err(format!("expected {expected}\n     got {got}"))
    }
}

#[test]
fn the_five_guide_examples_give_their_expected_output() {
    let Some(root) = guide_dir() else {
        panic!("the guide fixtures are missing (looked in ../../shared/fixtures/guide and ../examples/guide)");
    };
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("pipeline.json").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "found only {} cases in {}", cases.len(), root.display());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run_case(c).err().map(|e| format!("{}: {e}", c.file_name().unwrap().to_string_lossy())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
