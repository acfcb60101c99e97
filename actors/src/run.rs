//! Runs a bounded pipeline to its end on this node, with checkpoints, resume and retries.
//!
//! The data path: the source parses on its own thread and hands over batches; the feeder
//! runs the compiled transformation chain over each batch; a writer task serializes to every
//! destination and to the dead letter. Between them sits a bounded channel, so a slow
//! destination slows the source and memory stays flat however large the input.
//!
//! Checkpoints: every `checkpoint.interval_seconds` the feeder, between two batches, takes
//! the source's position and sends a barrier down the channel behind the batches before it.
//! When the writer meets the barrier every record before it has been written; it asks each
//! destination to pre-commit (the file sink fsyncs its temporary file and reports its
//! length) and then records the checkpoint — source position, destination positions,
//! counters — in the node's store. A checkpoint exists only once all of that is durable.
//! At the end of the input a last barrier is taken, then the destinations commit (the file
//! sink renames its temporary file into place) and the checkpoint is cleared.
//!
//! Recovery: a run that finds a checkpoint of the same pipeline document resumes from it:
//! destinations cut back to their recorded positions, the source seeks to its recorded
//! position, counters continue. What was written after the checkpoint is discarded and
//! written again, so every record is delivered exactly once. A failure during a run is
//! retried the same way, following `error_handling.retry_policy`.
//!
//! Stateful transformations (aggregations, `deduplicate`) keep state that this runtime does
//! not snapshot yet: such a pipeline takes only its final checkpoint, so an interrupted run
//! starts again from the beginning (still exactly once: nothing was committed).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use dagg_connectors::{ConnectorError, SinkConnector, SourceConnector};
use dagg_model::spec::connector::ConnectorSpec;
use dagg_model::spec::pipeline::PipelineSpec;
use dagg_model::spec::transform::join_sources;
use dagg_model::{Record, RunStatus, Value};
use dagg_transforms::{BatchContext, Chain, Output};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::dead_letter::{DeadLetter, DeadLetterSink, Payload};
use crate::metrics;
pub use crate::progress::{ProgressSnapshot, RunProgress};
use crate::store::{Checkpoint, CheckpointCounts, Checkpoints, FORMAT_VERSION, Store};

/// Opens connectors for a run. The default is the connector registry; tests put failing or
/// slow connectors in its place.
pub trait ConnectorFactory: Send + Sync {
    fn source(&self, spec: &ConnectorSpec, base_dir: &Path) -> Result<Box<dyn SourceConnector>, ConnectorError>;
    fn sink(&self, spec: &ConnectorSpec, base_dir: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError>;
}

/// The connector registry of `dagg-connectors`.
pub struct Registry;

impl ConnectorFactory for Registry {
    fn source(&self, spec: &ConnectorSpec, base_dir: &Path) -> Result<Box<dyn SourceConnector>, ConnectorError> {
        dagg_connectors::open_source(spec, base_dir)
    }
    fn sink(&self, spec: &ConnectorSpec, base_dir: &Path) -> Result<Box<dyn SinkConnector>, ConnectorError> {
        dagg_connectors::open_sink(spec, base_dir)
    }
}

/// Knobs of one run.
#[derive(Clone)]
pub struct RunOptions {
    /// The run's id; a new UUID when absent (a resumed run keeps its original id).
    pub run_id: Option<String>,
    /// Records per batch read from the source.
    pub batch_size: usize,
    /// Batches that may wait between the transform step and the writer.
    pub channel_capacity: usize,
    /// Live counters, status and the cancel switch, shared with whoever watches the run.
    pub progress: Arc<RunProgress>,
    /// The node's data directory: checkpoints go to its store and survive the process.
    /// Without one, checkpoints are kept in memory (retries still resume from them).
    pub data_dir: Option<PathBuf>,
    /// Ignore (and forget) an unfinished run's checkpoint and start over.
    pub fresh: bool,
    /// Overrides the pipeline's `checkpoint.interval_seconds`.
    pub checkpoint_interval: Option<Duration>,
    /// Opens the connectors.
    pub connectors: Arc<dyn ConnectorFactory>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            run_id: None,
            batch_size: 2048,
            channel_capacity: 4,
            progress: Arc::default(),
            data_dir: None,
            fresh: false,
            checkpoint_interval: None,
            connectors: Arc::new(Registry),
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
    /// Attempts made (more than 1 after retries).
    pub attempts: u32,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// The checkpoint this run resumed from, when it continued an interrupted run.
    pub resumed_from: Option<u64>,
    /// Why the run failed.
    pub error: Option<String>,
}

impl RunSummary {
    /// The one line `dagg run` prints (two when it failed: the reason follows).
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} {}: {} read, {} written, {} dead-lettered, {} dropped, {} filtered in {:.3} s (run {}",
            self.pipeline, self.status, self.records_read, self.records_written, self.dead_lettered, self.dropped, self.filtered, self.seconds, self.run_id
        );
        if let Some(cp) = self.resumed_from {
            s.push_str(&format!(", resumed from checkpoint {cp}"));
        }
        if self.attempts > 1 {
            s.push_str(&format!(", {} attempts", self.attempts));
        }
        s.push(')');
        if let Some(e) = &self.error {
            s.push_str(&format!("\nerror: {e}"));
        }
        s
    }
}

/// Why an attempt stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{stage}: {source}")]
    Connector { stage: String, source: ConnectorError },
    #[error("cannot build the transformations: {0}")]
    Build(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{stage} stopped unexpectedly: {reason}")]
    Crashed { stage: String, reason: String },
    #[error("cancelled")]
    Cancelled,
}

impl RunError {
    /// Whether trying again could help (a bad document or a cancel will not change).
    fn is_retryable(&self) -> bool {
        !matches!(self, RunError::Build(_) | RunError::Cancelled)
    }
}

fn at(stage: &str) -> impl FnOnce(ConnectorError) -> RunError + '_ {
    move |source| RunError::Connector { stage: stage.to_string(), source }
}

/// Runs `spec` (whose relative paths resolve against `base_dir`) to its end, resuming an
/// interrupted run of the same document and retrying failures per its retry policy.
pub async fn run_pipeline(spec: &PipelineSpec, base_dir: &Path, opts: RunOptions) -> RunSummary {
    let started = Instant::now();
    let progress = opts.progress.clone();
    progress.set_status(RunStatus::Running);
    let digest = spec_digest(spec);
    let mut run_id = opts.run_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut resumed_from = None;

    let outcome: Result<(), RunError> = async {
        let ckpts = match &opts.data_dir {
            Some(dir) => Checkpoints::Durable(Store::open(&dir.join("runs").join(store_folder(&spec.name)))?),
            None => Checkpoints::memory(),
        };
        let mut resume = match ckpts.load(&spec.name)? {
            Some(cp) if opts.fresh => {
                tracing::info!(checkpoint = cp.id, "starting over (--fresh): the interrupted run is forgotten");
                ckpts.clear(&spec.name)?;
                None
            }
            Some(cp) if cp.spec_digest != digest => {
                eprintln!("note: the pipeline document changed since run {} was interrupted; starting over", cp.run_id);
                ckpts.clear(&spec.name)?;
                None
            }
            Some(cp) => {
                eprintln!("note: resuming run {} from checkpoint {} ({} records read so far)", cp.run_id, cp.id, cp.counts.read);
                run_id = cp.run_id.clone();
                resumed_from = Some(cp.id);
                Some(cp)
            }
            None => None,
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            progress.attempts.store(attempt, Ordering::Relaxed);
            if let Some(cp) = &resume {
                progress.restore(&cp.counts);
                progress.checkpoints.store(cp.id, Ordering::Relaxed);
            } else {
                progress.restore(&CheckpointCounts::default());
            }
            let ctx = Attempt { spec, base_dir, opts: &opts, run_id: &run_id, digest: &digest, ckpts: &ckpts };
            match ctx.run(resume.take()).await {
                Ok(()) => return Ok(()),
                Err(RunError::Cancelled) => {
                    ckpts.clear(&spec.name)?;
                    return Err(RunError::Cancelled);
                }
                Err(e) if e.is_retryable() && attempt <= spec.error_handling.retry_policy.max_retries => {
                    let delay = spec.error_handling.retry_policy.delay(attempt);
                    tracing::warn!(attempt, ?delay, "attempt failed, retrying from the last checkpoint: {e}");
                    eprintln!("note: attempt {attempt} failed ({e}); retrying in {:.1} s from the last checkpoint", delay.as_secs_f64());
                    progress.set_status(RunStatus::Retrying);
                    tokio::time::sleep(delay).await;
                    if progress.is_cancelled() {
                        ckpts.clear(&spec.name)?;
                        return Err(RunError::Cancelled);
                    }
                    progress.set_status(RunStatus::Running);
                    resume = ckpts.load(&spec.name)?;
                }
                Err(e) => return Err(e),
            }
        }
    }
    .await;

    let snap = progress.snapshot();
    let (status, error) = match outcome {
        Ok(()) if snap.dead_lettered > 0 || snap.dropped > 0 => (RunStatus::Warning, None),
        Ok(()) => (RunStatus::Success, None),
        Err(RunError::Cancelled) => (RunStatus::Cancelled, None),
        Err(e) => (RunStatus::Failed, Some(e.to_string())),
    };
    progress.set_status(status);
    metrics::RUN_SECONDS.with_label_values(&[spec.name.as_str(), status.as_str()]).observe(started.elapsed().as_secs_f64());
    RunSummary {
        pipeline: spec.name.clone(),
        run_id,
        status,
        records_read: snap.read,
        records_written: if status == RunStatus::Failed || status == RunStatus::Cancelled { 0 } else { snap.written },
        dead_lettered: snap.dead_lettered,
        dropped: snap.dropped,
        filtered: snap.filtered,
        seconds: started.elapsed().as_secs_f64(),
        attempts: snap.attempts,
        checkpoints: snap.checkpoints,
        resumed_from,
        error,
    }
}

/// A folder name for a pipeline's run state: its name made safe, plus a digest of the exact
/// name so that two names that sanitize alike never share a folder.
fn store_folder(name: &str) -> String {
    let safe: String = name.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{safe}-{}", &fnv(name)[..8])
}

fn fnv(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A digest of the pipeline document, so a changed document does not resume an old run.
fn spec_digest(spec: &PipelineSpec) -> String {
    // FNV-1a over the canonical JSON: stable across builds and platforms.
    fnv(&serde_json::to_string(spec).expect("a spec serializes"))
}

/// What the feeder sends the writer, in order.
enum ToWriter {
    Records(Vec<Record>),
    Dead(Vec<DeadLetter>),
    /// Everything before this is written: pre-commit and record checkpoint `id`.
    Barrier(Barrier),
}

struct Barrier {
    id: u64,
    source: serde_json::Value,
    chain_state: serde_json::Value,
    /// The feeder's counters (read, dropped, filtered) at the barrier.
    counts: CheckpointCounts,
    input_done: bool,
}

/// One attempt at a run.
struct Attempt<'a> {
    spec: &'a PipelineSpec,
    base_dir: &'a Path,
    opts: &'a RunOptions,
    run_id: &'a str,
    digest: &'a str,
    ckpts: &'a Checkpoints,
}

impl Attempt<'_> {
    async fn run(&self, resume: Option<Checkpoint>) -> Result<(), RunError> {
        let (spec, factory) = (self.spec, &self.opts.connectors);
        // Destinations first: a bad destination fails the run before anything is read.
        let mut sinks = Vec::with_capacity(spec.destinations.len());
        for (i, d) in spec.destinations.iter().enumerate() {
            let stage = destination_stage(spec, i);
            let mut sink = factory.sink(d, self.base_dir).map_err(at(&stage))?;
            if let Some(cp) = &resume {
                let token = cp.sinks.get(i).cloned().unwrap_or(serde_json::Value::Null);
                sink.recover(&token, cp.id).await.map_err(at(&stage))?;
            }
            sinks.push((stage, sink));
        }
        let dl = match &spec.error_handling.dead_letter {
            Some(d) => {
                let mut sink = factory.sink(d, self.base_dir).map_err(at("error_handling.dead_letter"))?;
                if let Some(cp) = &resume {
                    let token = cp.dead_letter.clone().unwrap_or(serde_json::Value::Null);
                    sink.recover(&token, cp.id).await.map_err(at("error_handling.dead_letter"))?;
                }
                Some(sink)
            }
            None => None,
        };
        let counts = resume.as_ref().map(|c| c.counts.clone()).unwrap_or_default();
        let mut writer = Writer {
            sinks,
            dead: DeadLetterSink::new(&spec.name, self.run_id, dl, counts.dead_lettered),
            written: counts.written,
            progress: self.opts.progress.clone(),
            pipeline: spec.name.clone(),
            run_id: self.run_id.to_string(),
            digest: self.digest.to_string(),
            ckpts: self.ckpts.clone(),
        };
        if resume.as_ref().is_some_and(|c| c.input_done) {
            // Only the final commit remained when the run was interrupted.
            return writer.finish().await;
        }

        // Join sources are read whole before the main source starts. Their bad inputs were
        // dead-lettered before the first checkpoint, so a resumed run does not repeat them.
        let mut join_data = HashMap::new();
        for (_, name) in join_sources(&spec.transformations) {
            if join_data.contains_key(&name) {
                continue;
            }
            let Some(cspec) = spec.named_source(&name) else {
                return Err(RunError::Build(format!("join source `{name}` is not in `sources`")));
            };
            let stage = format!("sources.{name}");
            let mut src = factory.source(cspec, self.base_dir).map_err(at(&stage))?;
            let (records, bad) = read_all(src.as_mut(), self.opts.batch_size, &stage).await?;
            if resume.is_none() {
                self.opts.progress.dead_lettered.fetch_add(bad.len() as u64, Ordering::Relaxed);
                writer.dead.send(bad).await.map_err(at("error_handling.dead_letter"))?;
            }
            join_data.insert(name, records);
        }
        let chain = Chain::new(&spec.transformations, join_data).map_err(RunError::Build)?;

        let mut source = factory.source(&spec.source, self.base_dir).map_err(at("source"))?;
        if let Some(cp) = &resume {
            source.seek(&cp.source).await.map_err(at("source"))?;
        }
        let (tx, rx) = mpsc::channel::<ToWriter>(self.opts.channel_capacity.max(1));
        let writer_task = tokio::spawn(writer.run(rx));
        let interval = self.opts.checkpoint_interval.unwrap_or(spec.checkpoint.interval());
        let feeder = Feeder {
            pipeline: spec.name.clone(),
            tx,
            chain,
            out: Output::default(),
            counts,
            progress: self.opts.progress.clone(),
            next_checkpoint: resume.as_ref().map(|c| c.id + 1).unwrap_or(1),
            interval,
            batch_size: self.opts.batch_size,
        };
        // The feeder runs as its own task so that a panic in a transformation is caught and
        // reported (and retried) like any other failure.
        let fed = tokio::spawn(async move {
            let mut f = feeder;
            let r = f.run(source.as_mut()).await;
            drop(f.tx);
            r
        })
        .await
        .unwrap_or_else(|e| Err(RunError::Crashed { stage: "transformations".into(), reason: panic_text(e) }));
        let (mut writer, wrote) = writer_task.await.map_err(|e| RunError::Crashed { stage: "writer".into(), reason: panic_text(e) })?;
        // The writer's error is the cause when both failed (the feeder then only saw it stop).
        match wrote.and(fed) {
            Ok(()) => writer.finish().await,
            Err(RunError::Cancelled) => {
                writer.abort().await;
                Err(RunError::Cancelled)
            }
            // Keep what the checkpoints cover: a retry or the next `dagg run` resumes there.
            Err(e) => Err(e),
        }
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
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

/// Reads the source, runs the chain, hands batches and barriers to the writer.
struct Feeder {
    pipeline: String,
    tx: mpsc::Sender<ToWriter>,
    chain: Chain,
    out: Output,
    counts: CheckpointCounts,
    progress: Arc<RunProgress>,
    next_checkpoint: u64,
    interval: Duration,
    batch_size: usize,
}

impl Feeder {
    async fn run(&mut self, source: &mut dyn SourceConnector) -> Result<(), RunError> {
        // Mid-run checkpoints need the chain's state; stateful chains take only the last one.
        let mid_run_checkpoints = !self.chain.is_stateful();
        let mut last_checkpoint = Instant::now();
        loop {
            if self.progress.is_cancelled() {
                return Err(RunError::Cancelled);
            }
            let Some(sb) = source.next_batch(self.batch_size).await.map_err(at("source"))? else { break };
            let n = (sb.batch.records.len() + sb.bad.len()) as u64;
            self.counts.read += n;
            self.progress.read.fetch_add(n, Ordering::Relaxed);
            metrics::RECORDS_READ.with_label_values(&[self.pipeline.as_str()]).inc_by(n);
            metrics::BATCHES.with_label_values(&[self.pipeline.as_str(), "transformations"]).inc();
            let mut dead: Vec<DeadLetter> = sb
                .bad
                .into_iter()
                .map(|x| DeadLetter { stage: "source".into(), reason: x.reason, position: source.describe(x.position), payload: Payload::Raw(x.raw) })
                .collect();
            let positions = sb.batch.positions;
            self.chain.process(sb.batch.records, &BatchContext { now: Utc::now() }, &mut self.out);
            dead.extend(take_rejected(&mut self.out, |i| positions.get(i).map(|p| source.describe(*p))));
            self.send(dead).await?;
            if mid_run_checkpoints && last_checkpoint.elapsed() >= self.interval {
                self.barrier(source.checkpoint(), false).await?;
                last_checkpoint = Instant::now();
            }
        }
        self.chain.finish(&BatchContext { now: Utc::now() }, &mut self.out);
        let dead = take_rejected(&mut self.out, |_| None);
        self.send(dead).await?;
        self.barrier(source.checkpoint(), true).await
    }

    async fn barrier(&mut self, source: serde_json::Value, input_done: bool) -> Result<(), RunError> {
        let b = Barrier { id: self.next_checkpoint, source, chain_state: serde_json::Value::Null, counts: self.counts.clone(), input_done };
        self.next_checkpoint += 1;
        self.tx.send(ToWriter::Barrier(b)).await.map_err(|_| writer_gone())
    }

    async fn send(&mut self, dead: Vec<DeadLetter>) -> Result<(), RunError> {
        let dropped = std::mem::take(&mut self.out.dropped);
        let filtered = std::mem::take(&mut self.out.filtered);
        self.counts.dropped += dropped;
        self.counts.filtered += filtered;
        self.progress.dropped.fetch_add(dropped, Ordering::Relaxed);
        self.progress.filtered.fetch_add(filtered, Ordering::Relaxed);
        let p = self.pipeline.as_str();
        metrics::RECORDS_REMOVED.with_label_values(&[p, "dropped"]).inc_by(dropped);
        metrics::RECORDS_REMOVED.with_label_values(&[p, "filtered"]).inc_by(filtered);
        let waited = Instant::now();
        if !dead.is_empty() {
            self.tx.send(ToWriter::Dead(dead)).await.map_err(|_| writer_gone())?;
        }
        if !self.out.records.is_empty() {
            let records = std::mem::take(&mut self.out.records);
            self.tx.send(ToWriter::Records(records)).await.map_err(|_| writer_gone())?;
        }
        metrics::BACKPRESSURE_SECONDS.with_label_values(&[p, "transformations"]).observe(waited.elapsed().as_secs_f64());
        Ok(())
    }
}

fn writer_gone() -> RunError {
    RunError::Crashed { stage: "writer".into(), reason: "it stopped reading".into() }
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

/// Writes to every destination and the dead letter, and completes checkpoints.
struct Writer {
    sinks: Vec<(String, Box<dyn SinkConnector>)>,
    dead: DeadLetterSink,
    written: u64,
    progress: Arc<RunProgress>,
    pipeline: String,
    run_id: String,
    digest: String,
    ckpts: Checkpoints,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<ToWriter>) -> (Writer, Result<(), RunError>) {
        let mut refused_idx = HashSet::new();
        while let Some(msg) = rx.recv().await {
            let step = match msg {
                ToWriter::Records(records) => self.write_records(&records, &mut refused_idx).await,
                ToWriter::Dead(letters) => self.send_dead(letters).await,
                ToWriter::Barrier(b) => self.checkpoint(b).await,
            };
            if let Err(e) = step {
                return (self, Err(e));
            }
        }
        (self, Ok(()))
    }

    async fn write_records(&mut self, records: &[Record], refused_idx: &mut HashSet<usize>) -> Result<(), RunError> {
        refused_idx.clear();
        let mut letters = Vec::new();
        for (stage, sink) in self.sinks.iter_mut() {
            for (i, why) in sink.write(records).await.map_err(at(stage))? {
                refused_idx.insert(i);
                letters.push(DeadLetter { stage: stage.clone(), reason: why, position: Value::Null, payload: Payload::Record(records[i].clone()) });
            }
        }
        let delivered = (records.len() - refused_idx.len()) as u64;
        self.written += delivered;
        self.progress.written.fetch_add(delivered, Ordering::Relaxed);
        metrics::RECORDS_WRITTEN.with_label_values(&[self.pipeline.as_str()]).inc_by(delivered);
        metrics::BATCHES.with_label_values(&[self.pipeline.as_str(), "destination"]).inc();
        self.send_dead(letters).await
    }

    async fn send_dead(&mut self, letters: Vec<DeadLetter>) -> Result<(), RunError> {
        self.progress.dead_lettered.fetch_add(letters.len() as u64, Ordering::Relaxed);
        for l in &letters {
            // Stages are the pipeline's own steps (`transformations[2]`): a bounded set.
            metrics::RECORDS_DEAD_LETTERED.with_label_values(&[self.pipeline.as_str(), l.stage.as_str()]).inc();
        }
        self.dead.send(letters).await.map_err(at("error_handling.dead_letter"))
    }

    /// Everything before the barrier is written: make it durable, then record the checkpoint.
    async fn checkpoint(&mut self, b: Barrier) -> Result<(), RunError> {
        let started = Instant::now();
        let mut tokens = Vec::with_capacity(self.sinks.len());
        for (stage, sink) in self.sinks.iter_mut() {
            tokens.push(sink.pre_commit(b.id).await.map_err(at(stage))?);
        }
        let dead_letter = self.dead.pre_commit(b.id).await.map_err(at("error_handling.dead_letter"))?;
        let mut counts = b.counts;
        counts.written = self.written;
        counts.dead_lettered = self.dead.count();
        let cp = Checkpoint {
            version: FORMAT_VERSION,
            id: b.id,
            run_id: self.run_id.clone(),
            spec_digest: self.digest.clone(),
            source: b.source,
            sinks: tokens,
            dead_letter,
            chain_state: b.chain_state,
            counts,
            input_done: b.input_done,
            at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        self.ckpts.save(&self.pipeline, &cp)?;
        self.progress.checkpoints.store(b.id, Ordering::Relaxed);
        metrics::CHECKPOINT_SECONDS.with_label_values(&[self.pipeline.as_str()]).observe(started.elapsed().as_secs_f64());
        metrics::CHECKPOINT_BYTES.with_label_values(&[self.pipeline.as_str()]).observe(serde_json::to_vec(&cp).map(|v| v.len()).unwrap_or(0) as f64);
        tracing::debug!(checkpoint = b.id, ms = started.elapsed().as_millis() as u64, "checkpoint complete");
        Ok(())
    }

    /// The last checkpoint is recorded: make the output final and forget the checkpoint.
    async fn finish(mut self) -> Result<(), RunError> {
        for (stage, s) in self.sinks.iter_mut() {
            s.commit().await.map_err(at(stage))?;
        }
        self.dead.commit().await.map_err(at("error_handling.dead_letter"))?;
        self.ckpts.clear(&self.pipeline)?;
        Ok(())
    }

    /// Discards everything written: a cancelled run leaves the destinations as they were.
    async fn abort(&mut self) {
        for (stage, s) in self.sinks.iter_mut() {
            if let Err(e) = s.abort().await {
                tracing::warn!("{stage}: could not discard partial output: {e}");
            }
        }
        self.dead.abort().await;
    }
}
