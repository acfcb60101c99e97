//! Runs a bounded pipeline to its end on this node.
//!
//! The data path: the source parses on its own thread and hands over batches; this task runs
//! the compiled transformation chain over each batch; a writer task serializes to every
//! destination and to the dead letter. Between them sits a bounded channel, so a slow
//! destination slows the source and memory stays flat however large the input.
//!
//! A record that fails anywhere becomes a dead letter naming the stage and its position;
//! the run goes on. Destinations are committed only when the whole run succeeded; on an
//! error everything written is discarded (the file sink writes to a temporary file that is
//! renamed into place on commit).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use chrono::Utc;
use dagg_connectors::{ConnectorError, SinkConnector, SourceConnector, open_sink, open_source};
use dagg_model::spec::pipeline::PipelineSpec;
use dagg_model::spec::transform::join_sources;
use dagg_model::{Record, RunStatus, Value};
use dagg_transforms::{BatchContext, Chain, Output};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::dead_letter::{DeadLetter, DeadLetterSink, Payload};

/// Knobs of one run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run's id; a new UUID when absent.
    pub run_id: Option<String>,
    /// Records per batch read from the source.
    pub batch_size: usize,
    /// Batches that may wait between the transform step and the writer.
    pub channel_capacity: usize,
    /// Live counters and the cancel switch, shared with whoever watches the run.
    pub progress: Arc<RunProgress>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { run_id: None, batch_size: 2048, channel_capacity: 4, progress: Arc::default() }
    }
}

/// A run's live counters (updated once per batch) and its cancel switch.
#[derive(Debug, Default)]
pub struct RunProgress {
    pub read: AtomicU64,
    pub written: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub dropped: AtomicU64,
    pub filtered: AtomicU64,
    cancelled: AtomicBool,
}

/// The counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProgressSnapshot {
    pub read: u64,
    pub written: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    pub filtered: u64,
}

impl RunProgress {
    /// Asks the run to stop: it ends `cancelled` at its next batch and commits nothing.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            read: self.read.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub pipeline: String,
    pub run_id: String,
    pub status: RunStatus,
    /// Records (and unparseable inputs) read from the main source.
    pub records_read: u64,
    /// Records delivered to the destinations.
    pub records_written: u64,
    /// Entries sent to the dead letter.
    pub dead_lettered: u64,
    /// Records dropped by `field_validation` with `on_failure: drop`.
    pub dropped: u64,
    /// Records removed by filters (and inner joins, empty splits) — by design, not an issue.
    pub filtered: u64,
    pub seconds: f64,
    /// Why the run failed.
    pub error: Option<String>,
}

impl RunSummary {
    /// The one line `dagg run` prints.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} {}: {} read, {} written, {} dead-lettered, {} dropped, {} filtered in {:.3} s (run {})",
            self.pipeline, self.status, self.records_read, self.records_written, self.dead_lettered, self.dropped, self.filtered, self.seconds, self.run_id
        );
        if let Some(e) = &self.error {
            s.push_str(&format!("\nerror: {e}"));
        }
        s
    }
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{stage}: {source}")]
    Connector { stage: String, source: ConnectorError },
    #[error("cannot build the transformations: {0}")]
    Build(String),
    #[error("the writer stopped unexpectedly")]
    WriterGone,
    #[error("cancelled")]
    Cancelled,
}

fn at(stage: &str) -> impl FnOnce(ConnectorError) -> RunError + '_ {
    move |source| RunError::Connector { stage: stage.to_string(), source }
}

#[derive(Default)]
struct Counts {
    read: u64,
    written: u64,
    dropped: u64,
    filtered: u64,
}

/// Runs `spec` (whose relative paths resolve against `base_dir`) to its end.
pub async fn run_pipeline(spec: &PipelineSpec, base_dir: &Path, opts: RunOptions) -> RunSummary {
    let started = Instant::now();
    let run_id = opts.run_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut counts = Counts::default();
    let mut dead_count = 0;
    let result = execute(spec, base_dir, &opts, &run_id, &mut counts, &mut dead_count).await;
    let (status, error) = match result {
        Ok(()) if dead_count > 0 || counts.dropped > 0 => (RunStatus::Warning, None),
        Ok(()) => (RunStatus::Success, None),
        Err(RunError::Cancelled) => (RunStatus::Cancelled, None),
        Err(e) => (RunStatus::Failed, Some(e.to_string())),
    };
    RunSummary {
        pipeline: spec.name.clone(),
        run_id,
        status,
        records_read: counts.read,
        records_written: counts.written,
        dead_lettered: dead_count,
        dropped: counts.dropped,
        filtered: counts.filtered,
        seconds: started.elapsed().as_secs_f64(),
        error,
    }
}

/// What the transform step sends the writer.
enum ToWriter {
    Records(Vec<Record>),
    Dead(Vec<DeadLetter>),
}

async fn execute(spec: &PipelineSpec, base_dir: &Path, opts: &RunOptions, run_id: &str, counts: &mut Counts, dead_count: &mut u64) -> Result<(), RunError> {
    // Open every destination first: a bad destination fails the run before anything is read.
    let mut sinks = Vec::with_capacity(spec.destinations.len());
    for (i, d) in spec.destinations.iter().enumerate() {
        sinks.push((destination_stage(spec, i), open_sink(d, base_dir).map_err(at(&destination_stage(spec, i)))?));
    }
    let dl = match &spec.error_handling.dead_letter {
        Some(d) => Some(open_sink(d, base_dir).map_err(at("error_handling.dead_letter"))?),
        None => None,
    };
    let mut dead = DeadLetterSink::new(&spec.name, run_id, dl);

    // Join sources are read whole before the main source starts.
    let mut join_data = HashMap::new();
    for (_, name) in join_sources(&spec.transformations) {
        if join_data.contains_key(&name) {
            continue;
        }
        let Some(cspec) = spec.named_source(&name) else {
            return Err(RunError::Build(format!("join source `{name}` is not in `sources`")));
        };
        let stage = format!("sources.{name}");
        let mut src = open_source(cspec, base_dir).map_err(at(&stage))?;
        let (records, bad) = read_all(src.as_mut(), opts.batch_size, &stage).await?;
        dead.send(bad).await.map_err(at("error_handling.dead_letter"))?;
        join_data.insert(name, records);
    }
    let mut chain = Chain::new(&spec.transformations, join_data).map_err(RunError::Build)?;

    let mut source = open_source(&spec.source, base_dir).map_err(at("source"))?;

    let (tx, rx) = mpsc::channel::<ToWriter>(opts.channel_capacity.max(1));
    let writer = tokio::spawn(write_loop(rx, Writer { sinks, dead, written: 0, progress: opts.progress.clone() }));

    let fed = feed(source.as_mut(), &mut chain, &tx, opts, counts).await;
    drop(tx);
    let (mut w, wrote) = writer.await.map_err(|_| RunError::WriterGone)?;
    // The writer's error is the cause when both failed (the feeder then only saw it stop).
    let result = wrote.and(fed);
    let result = match result {
        Ok(()) => w.commit().await,
        Err(e) => Err(e),
    };
    if result.is_err() {
        w.abort().await;
    }
    counts.written = if result.is_ok() { w.written } else { 0 };
    *dead_count = w.dead.count();
    result
}

fn destination_stage(spec: &PipelineSpec, i: usize) -> String {
    if spec.destinations.len() == 1 { "destination".to_string() } else { format!("destinations[{i}]") }
}

/// Reads a whole (small, bounded) source, turning unparseable input into dead letters.
async fn read_all(src: &mut dyn SourceConnector, batch: usize, stage: &str) -> Result<(Vec<Record>, Vec<DeadLetter>), RunError> {
    let mut records = Vec::new();
    let mut bad = Vec::new();
    while let Some(b) = src.next_batch(batch).await.map_err(at(stage))? {
        records.extend(b.batch.records);
        bad.extend(b.bad.into_iter().map(|x| DeadLetter { stage: stage.to_string(), reason: x.reason, position: src.describe(x.position), payload: Payload::Raw(x.raw) }));
    }
    Ok((records, bad))
}

/// Reads the source to its end, transforming each batch and handing it to the writer.
async fn feed(source: &mut dyn SourceConnector, chain: &mut Chain, tx: &mpsc::Sender<ToWriter>, opts: &RunOptions, counts: &mut Counts) -> Result<(), RunError> {
    let mut out = Output::default();
    let progress = &opts.progress;
    loop {
        if progress.is_cancelled() {
            return Err(RunError::Cancelled);
        }
        let next = source.next_batch(opts.batch_size).await.map_err(at("source"))?;
        let Some(sb) = next else { break };
        let n = (sb.batch.records.len() + sb.bad.len()) as u64;
        counts.read += n;
        progress.read.fetch_add(n, Ordering::Relaxed);
        let mut dead: Vec<DeadLetter> = sb
            .bad
            .into_iter()
            .map(|x| DeadLetter { stage: "source".into(), reason: x.reason, position: source.describe(x.position), payload: Payload::Raw(x.raw) })
            .collect();
        let positions = sb.batch.positions;
        let ctx = BatchContext { now: Utc::now() };
        chain.process(sb.batch.records, &ctx, &mut out);
        dead.extend(take_rejected(&mut out, |i| positions.get(i).map(|p| source.describe(*p))));
        send(tx, &mut out, counts, progress, dead).await?;
    }
    let ctx = BatchContext { now: Utc::now() };
    chain.finish(&ctx, &mut out);
    let dead = take_rejected(&mut out, |_| None);
    send(tx, &mut out, counts, progress, dead).await
}

fn take_rejected(out: &mut Output, describe: impl Fn(usize) -> Option<Value>) -> Vec<DeadLetter> {
    out.rejected
        .drain(..)
        .map(|r| DeadLetter {
            position: r.input.and_then(&describe).unwrap_or(Value::Null),
            stage: r.stage,
            reason: r.reason,
            payload: Payload::Record(r.record),
        })
        .collect()
}

async fn send(tx: &mpsc::Sender<ToWriter>, out: &mut Output, counts: &mut Counts, progress: &RunProgress, dead: Vec<DeadLetter>) -> Result<(), RunError> {
    let dropped = std::mem::take(&mut out.dropped);
    let filtered = std::mem::take(&mut out.filtered);
    counts.dropped += dropped;
    counts.filtered += filtered;
    progress.dropped.fetch_add(dropped, Ordering::Relaxed);
    progress.filtered.fetch_add(filtered, Ordering::Relaxed);
    if !dead.is_empty() {
        tx.send(ToWriter::Dead(dead)).await.map_err(|_| RunError::WriterGone)?;
    }
    if !out.records.is_empty() {
        let records = std::mem::take(&mut out.records);
        tx.send(ToWriter::Records(records)).await.map_err(|_| RunError::WriterGone)?;
    }
    Ok(())
}

/// The writer's state handed back when its input ends, so the caller can commit or discard.
struct Writer {
    sinks: Vec<(String, Box<dyn SinkConnector>)>,
    dead: DeadLetterSink,
    written: u64,
    progress: Arc<RunProgress>,
}

impl Writer {
    async fn commit(&mut self) -> Result<(), RunError> {
        for (stage, s) in self.sinks.iter_mut() {
            s.commit().await.map_err(at(stage))?;
        }
        self.dead.commit().await.map_err(at("error_handling.dead_letter"))
    }

    /// Discards everything written: a failed run leaves the destinations as they were.
    async fn abort(&mut self) {
        for (stage, s) in self.sinks.iter_mut() {
            if let Err(e) = s.abort().await {
                tracing::warn!("{stage}: could not discard partial output: {e}");
            }
        }
        self.dead.abort().await;
    }
}

/// Writes what arrives to every destination and the dead letter until the channel closes
/// or a write fails (then it stops reading, which stops the feeder).
async fn write_loop(mut rx: mpsc::Receiver<ToWriter>, mut w: Writer) -> (Writer, Result<(), RunError>) {
    let mut refused_idx = std::collections::HashSet::new();
    while let Some(msg) = rx.recv().await {
        let step = match msg {
            ToWriter::Records(records) => write_records(&mut w, &records, &mut refused_idx).await,
            ToWriter::Dead(letters) => send_dead(&mut w, letters).await,
        };
        if let Err(e) = step {
            return (w, Err(e));
        }
    }
    (w, Ok(()))
}

async fn write_records(w: &mut Writer, records: &[Record], refused_idx: &mut std::collections::HashSet<usize>) -> Result<(), RunError> {
    refused_idx.clear();
    let mut letters = Vec::new();
    for (stage, sink) in w.sinks.iter_mut() {
        for (i, why) in sink.write(records).await.map_err(at(stage))? {
            refused_idx.insert(i);
            letters.push(DeadLetter { stage: stage.clone(), reason: why, position: Value::Null, payload: Payload::Record(records[i].clone()) });
        }
    }
    let delivered = (records.len() - refused_idx.len()) as u64;
    w.written += delivered;
    w.progress.written.fetch_add(delivered, Ordering::Relaxed);
    send_dead(w, letters).await
}

async fn send_dead(w: &mut Writer, letters: Vec<DeadLetter>) -> Result<(), RunError> {
    w.progress.dead_lettered.fetch_add(letters.len() as u64, Ordering::Relaxed);
    w.dead.send(letters).await.map_err(at("error_handling.dead_letter"))
}
