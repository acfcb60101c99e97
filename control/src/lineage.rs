//! What a run did with the data: its lineage (which source positions became which sink
//! writes, through which pipeline version), the profile of the records it delivered, and
//! how their fields changed since the last run ([`RunInsight`], stored per run).
//!
//! The runner attaches a [`RunTap`] to every API run ([`attach_tap`]); the sink stage feeds
//! it; when the run ends [`store_insight`] keeps its lineage (every run) and profile (runs
//! that delivered: `success`, `warning`), compares the profile with the previous one and
//! logs the changes under the `evolve` policy. A `strict` policy is enforced by the tap
//! itself, before anything is committed.
//!
//! Dry runs give lineage per record on request ([`dry_run_lineage`]): each input record is
//! put through the transformations alone, so every output record is paired with the source
//! position it came from (for stateless chains; an aggregation's output comes from many
//! inputs and has none).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use dagg_actors::RunProgress;
use dagg_actors::profile::{SchemaPolicy, compare};
use dagg_actors::tap::RunTap;
use dagg_connectors::open_source;
use dagg_model::RunStatus;
use dagg_model::spec::pipeline::PipelineSpec;
use dagg_model::spec::transform::join_sources;
use dagg_transforms::{BatchContext, Chain, Output};
use serde::Serialize;
use serde_json::{Value as Json, json};
use utoipa::ToSchema;

use crate::ControlPlane;
use crate::meta::{EventKind, EventLevel, MetaCommand, MetaResult, Run, RunInsight};

/// Gives the run a tap; under `strict`, with the previous run's fields as the baseline.
pub fn attach_tap(
    state: &ControlPlane,
    run: &Run,
    spec: &PipelineSpec,
    progress: &RunProgress,
) -> Option<Arc<RunTap>> {
    let baseline = match spec.schema_evolution {
        SchemaPolicy::Strict => match state.meta.last_profile(&run.pipeline_id, &run.id) {
            Ok(p) => p.map(|(_, p)| {
                p.fields
                    .iter()
                    .map(|f| (f.name.clone(), f.inferred_type.clone()))
                    .collect()
            }),
            Err(e) => {
                tracing::warn!(run = %run.id, "no baseline for the strict schema policy: {e}");
                None
            }
        },
        _ => None,
    };
    let tap = Arc::new(RunTap::new(spec.schema_evolution, baseline));
    progress.set_tap(tap.clone()).then_some(tap)
}

/// Keeps what the tap saw for `run`, which ended `status`.
pub fn store_insight(
    state: &ControlPlane,
    run: &Run,
    status: RunStatus,
    tap: &RunTap,
) -> MetaResult<()> {
    let delivered = matches!(status, RunStatus::Success | RunStatus::Warning);
    let profile = delivered.then(|| tap.profile());
    let previous = match &profile {
        Some(_) => state.meta.last_profile(&run.pipeline_id, &run.id)?,
        None => None,
    };
    let schema_changes = match (&previous, &profile) {
        (Some((_, before)), Some(after)) => Some(compare(before, after)),
        _ => None,
    };
    if let (Some(c), Some((prev_id, _))) = (&schema_changes, &previous)
        && !c.is_empty()
        && tap.policy() == SchemaPolicy::Evolve
    {
        state.meta.apply(MetaCommand::run_event(
            &run.id,
            EventLevel::Warning,
            EventKind::SchemaChanged,
            format!("the delivered fields changed since run {prev_id}: {}", c.describe()),
            json!({"previous_run_id": prev_id, "changes": c}),
        ))?;
    }
    state.meta.apply(MetaCommand::PutRunInsight {
        insight: RunInsight {
            run_id: run.id.clone(),
            pipeline_id: run.pipeline_id.clone(),
            pipeline_version: run.pipeline_version,
            lineage: tap.lineage(),
            profile,
            schema_changes,
        },
    })
}

/// An output record of a dry run and where it came from.
#[derive(Serialize, ToSchema)]
pub struct RecordLineage {
    /// Index in the dry run's `records`.
    pub output: usize,
    /// The source position of the input record (`{"file", "line"}` for a file).
    #[schema(value_type = Object)]
    pub source_position: Json,
}

/// Per-record lineage of the first `limit` outputs of `spec`, writing nothing; `None` when
/// the transformations are stateful (an output comes from many inputs).
pub async fn dry_run_lineage(
    spec: &PipelineSpec,
    base_dir: &Path,
    limit: usize,
) -> Result<Option<Vec<RecordLineage>>, String> {
    let mut join_data = HashMap::new();
    for (_, name) in join_sources(&spec.transformations) {
        if join_data.contains_key(&name) {
            continue;
        }
        let c = spec
            .named_source(&name)
            .ok_or_else(|| format!("join source `{name}` is not in `sources`"))?;
        let mut src = open_source(c, base_dir).map_err(|e| format!("sources.{name}: {e}"))?;
        let mut records = Vec::new();
        while let Some(b) = src
            .next_batch(4096)
            .await
            .map_err(|e| format!("sources.{name}: {e}"))?
        {
            records.extend(b.batch.records);
        }
        join_data.insert(name, records);
    }
    let mut chain = Chain::new(&spec.transformations, join_data)
        .map_err(|e| format!("cannot build the transformations: {e}"))?;
    if chain.is_stateful() {
        return Ok(None);
    }
    let mut source = open_source(&spec.source, base_dir).map_err(|e| format!("source: {e}"))?;
    let mut out = Output::default();
    let mut lineage = Vec::new();
    let mut produced = 0usize;
    'read: while produced < limit {
        let Some(sb) = source
            .next_batch(limit.clamp(16, 1024))
            .await
            .map_err(|e| format!("source: {e}"))?
        else {
            break;
        };
        let ctx = BatchContext { now: Utc::now() };
        for (record, pos) in sb.batch.records.into_iter().zip(sb.batch.positions) {
            chain.process(vec![record], &ctx, &mut out);
            let position = serde_json::to_value(source.describe(pos)).unwrap_or_default();
            for _ in out.records.drain(..) {
                lineage.push(RecordLineage {
                    output: produced,
                    source_position: position.clone(),
                });
                produced += 1;
                if produced >= limit {
                    break 'read;
                }
            }
            out.rejected.clear();
        }
    }
    Ok(Some(lineage))
}
