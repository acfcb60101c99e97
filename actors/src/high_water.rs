//! High-water marks of incremental sources across runs.
//!
//! A source with `incremental` (a database's `cursor_field`, a REST API's) remembers the
//! largest cursor value it returned in its checkpoint. When a run ends successfully, its
//! final source checkpoint is kept as the pipeline's high-water mark (in the same atomic
//! store write that forgets the run's checkpoint); the next run that does not resume an
//! interrupted one seeks its source there, so it reads only what is new. `--fresh` forgets
//! an interrupted run, not the mark; `--full-refresh` forgets both.

use dagg_connectors::SourceConnector;
use dagg_model::spec::connector::{ConnectorConfig, ConnectorSpec};
use dagg_model::spec::pipeline::PipelineSpec;
use serde_json::{Value, json};

use crate::error::RunError;
use crate::store::{Checkpoints, HighWater};

/// What an incremental source reads, as far as its mark is concerned (the connector type,
/// the server and database, the table or query, the cursor field); `None` for a source that
/// is not incremental. Credentials, pool sizes, timeouts and rate limits are left out: changing
/// them keeps the mark, changing what is read does not.
pub(crate) fn identity(spec: &ConnectorSpec) -> Option<Value> {
    match &spec.config {
        ConnectorConfig::Postgres(c) | ConnectorConfig::Mysql(c) => {
            let inc = c.incremental.as_ref()?;
            let kind = if matches!(spec.config, ConnectorConfig::Postgres(_)) { "postgresql" } else { "mysql" };
            Some(json!({
                "connector_type": kind, "host": c.host, "port": c.port, "database": c.database,
                "schema": c.schema, "table": c.table, "query": c.query, "cursor_field": inc.cursor_field,
            }))
        }
        ConnectorConfig::RestApi(c) => {
            let inc = c.incremental.as_ref()?;
            Some(json!({"connector_type": "rest_api", "url": c.url, "records_path": c.records_path, "cursor_field": inc.cursor_field}))
        }
        _ => None,
    }
}

/// The mark a new run of `spec` starts its source from: the last successful run's, when the
/// source is incremental and still reads the same thing.
pub(crate) fn mark_for(ckpts: &Checkpoints, spec: &PipelineSpec) -> Result<Option<HighWater>, RunError> {
    let Some(identity) = identity(&spec.source) else { return Ok(None) };
    let Some(mark) = ckpts.high_water(&spec.name)? else { return Ok(None) };
    if mark.identity != identity {
        eprintln!("note: the source changed since the high-water mark of run {} was kept; reading from the beginning", mark.run_id);
        return Ok(None);
    }
    tracing::info!(run = %mark.run_id, at = %mark.at, "starting the source from the last run's high-water mark");
    Ok(Some(mark))
}

/// Seeks the source to a mark; one it cannot take is not retried (a full refresh is the way out).
pub(crate) async fn seek(source: &mut dyn SourceConnector, mark: &HighWater) -> Result<(), RunError> {
    source.seek(&mark.source).await.map_err(|e| {
        RunError::HighWater(format!(
            "source: cannot start from the high-water mark of run {} ({e}); `dagg run --full-refresh` reads everything again",
            mark.run_id
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagg_model::SpecErrors;
    use dagg_model::spec::connector::{Role, parse_connector};

    fn spec(v: Value) -> ConnectorSpec {
        let mut errs = SpecErrors::new();
        let s = parse_connector(&v, "source", Role::Source, &mut errs);
        assert!(errs.is_empty(), "{errs}");
        s.unwrap()
    }

    #[test]
    fn only_incremental_sources_have_an_identity_and_tuning_does_not_change_it() {
        let base = json!({"host": "db", "database": "shop", "username": "u", "table": "orders"});
        let mut inc = base.clone();
        inc["incremental"] = json!({"cursor_field": "updated_at"});
        assert_eq!(identity(&spec(json!({"connector_type": "postgresql", "config": base}))), None);
        let a = identity(&spec(json!({"connector_type": "postgresql", "config": inc.clone()}))).unwrap();
        let mut tuned = inc.clone();
        tuned["connection_pool_size"] = json!(9);
        tuned["password"] = json!("other");
        assert_eq!(identity(&spec(json!({"connector_type": "postgresql", "config": tuned}))).unwrap(), a);
        let mut moved = inc.clone();
        moved["table"] = json!("orders_v2");
        assert_ne!(identity(&spec(json!({"connector_type": "postgresql", "config": moved}))).unwrap(), a);
        assert_ne!(identity(&spec(json!({"connector_type": "mysql", "config": inc}))).unwrap(), a);
        let file = json!({"connector_type": "file", "config": {"path": "x.jsonl", "format": "jsonl"}});
        assert_eq!(identity(&spec(file)), None);
    }
}
