//! Every example in `docs/transformations.md` runs and gives the output it shows, and every
//! transformation type and field operation has a section there: the page cannot go stale.
//!
//! An example is a heading followed by fenced blocks tagged ```` ```json transformations ````,
//! ```` ```json input ````, ```` ```json output ````, and optionally ```` ```json rejected ````
//! (each `{"stage", "reason", "input"}`) and ```` ```json join:NAME ```` (a join source's
//! records). An example of an invalid list has ```` ```json errors ```` instead of input and
//! output: the validation errors, in order. The batch time is `2025-01-16T08:00:00Z`.

use std::collections::HashMap;
use std::path::Path;

use dagg_model::spec::transform::{FIELD_OPERATIONS, IMPLEMENTED, parse_transformations};
use dagg_model::{SpecErrors, Value};
use dagg_transforms::{BatchContext, Chain, Output};
use serde_json::Value as Json;

mod common;
use common::{matches, records};

#[derive(Default, Debug)]
struct Example {
    heading: String,
    line: usize,
    blocks: Vec<(String, String)>,
}

fn examples(markdown: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut current = Example::default();
    let mut lines = markdown.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.starts_with('#') {
            out.push(std::mem::take(&mut current));
            current.heading = line.trim_start_matches('#').trim().to_string();
            current.line = n + 1;
        } else if let Some(info) = line.strip_prefix("```") {
            let tag = info.trim().strip_prefix("json ").map(str::trim).unwrap_or("").to_string();
            let mut body = String::new();
            for (_, l) in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            if tag == "transformations" && current.blocks.iter().any(|(t, _)| t == "transformations") {
                // A second example under the same heading.
                let next = Example { heading: current.heading.clone(), line: n + 1, blocks: Vec::new() };
                out.push(std::mem::replace(&mut current, next));
            }
            if !tag.is_empty() {
                current.blocks.push((tag, body));
            }
        }
    }
    out.push(current);
    out.into_iter().filter(|e| !e.blocks.is_empty()).collect()
}

fn block<'a>(e: &'a Example, tag: &str) -> Option<&'a str> {
    e.blocks.iter().find(|(t, _)| t == tag).map(|(_, b)| b.as_str())
}

fn parse(tag: &str, text: &str) -> Result<Json, String> {
    serde_json::from_str(text).map_err(|err| format!("the `{tag}` block is not JSON: {err}"))
}

fn run(e: &Example) -> Result<(), String> {
    for (tag, _) in &e.blocks {
        let known = ["transformations", "input", "output", "rejected", "errors"].contains(&tag.as_str()) || tag.starts_with("join:");
        if !known {
            return Err(format!("unknown block tag `{tag}`"));
        }
    }
    let get = |tag: &str| -> Result<Json, String> {
        let text = block(e, tag).ok_or_else(|| format!("no `{tag}` block"))?;
        parse(tag, text)
    };
    let mut transformations = get("transformations")?;
    if transformations.is_object() {
        transformations = Json::Array(vec![transformations]);
    }
    let mut errs = SpecErrors::new();
    let specs = parse_transformations(&transformations, "transformations", &mut errs);
    if block(e, "errors").is_some() {
        let expected = get("errors")?;
        let got = Json::Array(errs.iter().map(|e| Json::String(e.to_string())).collect());
        return if got == expected { Ok(()) } else { Err(format!("errors differ\nexpected {expected}\n     got {got}")) };
    }
    if !errs.is_empty() {
        return Err(format!("the transformations do not validate:\n{errs}"));
    }
    let mut join_data = HashMap::new();
    for (tag, text) in &e.blocks {
        if let Some(name) = tag.strip_prefix("join:") {
            join_data.insert(name.to_string(), records(&parse(tag, text)?));
        }
    }
    let mut chain = Chain::new(&specs, join_data).map_err(|e| e.to_string())?;
    let ctx = BatchContext { now: "2025-01-16T08:00:00Z".parse().unwrap() };
    let mut out = Output::default();
    chain.process(records(&get("input")?), &ctx, &mut out);
    chain.finish(&ctx, &mut out);

    let expected = get("output")?;
    let got = Value::Array(out.records.iter().cloned().map(Value::Object).collect());
    if !matches(&expected, &got) {
        return Err(format!("output differs\nexpected {expected}\n     got {got}"));
    }
    let rejected: Vec<Json> = out
        .rejected
        .iter()
        .map(|r| serde_json::json!({"stage": r.stage, "reason": r.reason, "input": r.input}))
        .collect();
    let expected_rejected = if block(e, "rejected").is_some() { get("rejected")? } else { Json::Array(vec![]) };
    if Json::Array(rejected.clone()) != expected_rejected {
        return Err(format!("rejected records differ\nexpected {expected_rejected}\n     got {}", Json::Array(rejected)));
    }
    Ok(())
}

fn page() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/transformations.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_example_in_the_docs_runs_as_shown() {
    let page = page();
    let examples = examples(&page);
    assert!(examples.len() >= 30, "only {} examples found", examples.len());
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|e| run(e).err().map(|why| format!("docs/transformations.md:{} `{}`: {why}", e.line, e.heading)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_type_and_operation_is_documented() {
    let page = page();
    let headings: Vec<String> = page.lines().filter(|l| l.starts_with('#')).map(str::to_string).collect();
    let has = |name: &str| headings.iter().any(|h| h.contains(&format!(" {name}")) || h.contains(&format!("`{name}`")));
    let missing: Vec<&str> = IMPLEMENTED.iter().chain(FIELD_OPERATIONS).copied().filter(|n| !has(n)).collect();
    assert!(missing.is_empty(), "no section for: {missing:?}");
}
