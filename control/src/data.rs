//! What the API reads through the data path, without depending on the runtime crates: a
//! connector's records (the files a run wrote, its dead letters), a connection test, a dry
//! run of a pipeline, and the transformation chain for previews.

use std::ops::ControlFlow;
use std::path::Path;

use dagg_model::Record;
use dagg_model::spec::connector::{ConnectorSpec, Role};
use dagg_model::spec::pipeline::Limits;

/// A dry run's output: records, rejections, how much was read.
pub use dagg_actors::preview::Preview;
/// What a rejected record carries: the record, or the raw input that did not parse.
pub use dagg_actors::dead_letter::Payload;
/// The compiled transformation chain (previews of saved rules).
pub use dagg_transforms::{BatchContext, Chain, Output};

/// Reads `spec` (a source) batch by batch, records at most `max_record_bytes` each,
/// handing every batch's records to `each` until it breaks or the source ends. An error
/// opening or reading the source is its text.
pub async fn read_records(spec: &ConnectorSpec, files_dir: &Path, limits: &Limits, mut each: impl FnMut(Vec<Record>) -> ControlFlow<()>) -> Result<(), String> {
    let mut source = dagg_connectors::open_source_limited(spec, files_dir, limits).map_err(|e| e.to_string())?;
    loop {
        let Some(b) = source.next_batch(1024).await.map_err(|e| e.to_string())? else { return Ok(()) };
        if each(b.batch.records).is_break() {
            return Ok(());
        }
    }
}

/// Tests a connector in `role` (a server answers, credentials are accepted, a file opens):
/// what it found, or why not.
pub async fn test_connection(spec: &ConnectorSpec, files_dir: &Path, role: Role) -> Result<String, String> {
    dagg_connectors::test_connection_as(spec, files_dir, role).await.map_err(|e| e.to_string())
}

/// Runs a pipeline's source and transformations for its first `limit` outputs; nothing is
/// written.
pub async fn dry_run(spec: &dagg_model::spec::pipeline::PipelineSpec, files_dir: &Path, limit: usize) -> Result<Preview, String> {
    dagg_actors::preview::preview_pipeline(spec, files_dir, limit).await.map_err(|e| e.to_string())
}
