//! Runs a pipeline's source and transformations to show what it would deliver, writing
//! nothing anywhere. Reading stops as soon as enough records came out, unless a stateful
//! step (an aggregation, `deduplicate` with `keep: last`) needs the whole input first.

use std::collections::HashMap;
use std::path::Path;

use chrono::Utc;
use dagg_connectors::open_source;
use dagg_model::spec::pipeline::PipelineSpec;
use dagg_model::spec::transform::join_sources;
use dagg_model::{Record, Value};
use dagg_transforms::{BatchContext, Chain, Output};

use crate::dead_letter::{DeadLetter, Payload};
use crate::error::{BuildError, RunError};

/// What a preview saw.
#[derive(Debug, Default)]
pub struct Preview {
    /// The first `limit` output records.
    pub records: Vec<Record>,
    /// Records that failed, with their stage and reason (at most `limit`).
    pub rejected: Vec<DeadLetter>,
    pub records_read: u64,
}

/// Previews at most `limit` output records of `spec`.
pub async fn preview_pipeline(spec: &PipelineSpec, base_dir: &Path, limit: usize) -> Result<Preview, RunError> {
    let conn = |stage: &str| {
        let stage = stage.to_string();
        move |source| RunError::Connector { stage, source }
    };
    let mut join_data = HashMap::new();
    for (_, name) in join_sources(&spec.transformations) {
        if join_data.contains_key(&name) {
            continue;
        }
        let stage = format!("sources.{name}");
        let cspec = spec.named_source(&name).ok_or_else(|| BuildError::UnknownJoinSource(name.clone()))?;
        let mut src = open_source(cspec, base_dir).map_err(conn(&stage))?;
        let mut records = Vec::new();
        while let Some(b) = src.next_batch(4096).await.map_err(conn(&stage))? {
            records.extend(b.batch.records);
        }
        join_data.insert(name, records);
    }
    let mut chain = Chain::new(&spec.transformations, join_data)?;
    let mut source = open_source(&spec.source, base_dir).map_err(conn("source"))?;
    let mut preview = Preview::default();
    let mut out = Output::default();
    let batch = limit.clamp(16, 4096);
    while chain.is_stateful() || preview.records.len() < limit {
        let Some(sb) = source.next_batch(batch).await.map_err(conn("source"))? else {
            chain.finish(&BatchContext { now: Utc::now() }, &mut out);
            collect(&mut preview, &mut out, |_| None, limit);
            break;
        };
        preview.records_read += (sb.batch.records.len() + sb.bad.len()) as u64;
        for b in sb.bad {
            if preview.rejected.len() < limit {
                preview.rejected.push(DeadLetter { stage: "source".into(), reason: b.reason, position: source.describe(b.position), payload: Payload::Raw(b.raw) });
            }
        }
        let positions = sb.batch.positions;
        chain.process(sb.batch.records, &BatchContext { now: Utc::now() }, &mut out);
        collect(&mut preview, &mut out, |i| positions.get(i).map(|p| source.describe(*p)), limit);
    }
    Ok(preview)
}

fn collect(preview: &mut Preview, out: &mut Output, describe: impl Fn(usize) -> Option<Value>, limit: usize) {
    let room = limit.saturating_sub(preview.records.len());
    preview.records.extend(out.records.drain(..).take(room));
    out.records.clear();
    for r in out.rejected.drain(..) {
        if preview.rejected.len() < limit {
            preview.rejected.push(DeadLetter { position: r.input.and_then(&describe).unwrap_or(Value::Null), stage: r.stage, reason: r.reason, payload: Payload::Record(r.record) });
        }
    }
}
