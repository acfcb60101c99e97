//! Event triggers: pipelines whose `schedule` is `{"type": "event", "connector_type": "nats"
//! | "kafka", "config": {...}}` get a run per event.
//!
//! [`Triggers::run`] keeps one listener per event-scheduled pipeline (and version): it reads
//! the trigger with the connector's own source (a core NATS subscription, a JetStream durable
//! consumer named `<pipeline>-trigger`, a Kafka consumer group `<pipeline>-trigger`). Each
//! message is one event; its fields are the run's parameters: every `${event.field}` in the
//! stored document's strings takes the field's value as data — a bind parameter in a
//! query, a constant in a script, a percent-encoded part of a URL ([`values`]) — the
//! document is validated again, and a run starts with trigger `event`. The run's log starts with a `trigger` entry that holds
//! the event, and `triggered_by` names where it came from. Runs of one pipeline follow each
//! other: an event that arrives while a run is active waits for its end. A broker that
//! acknowledges (JetStream, Kafka) hears of an event once its run was recorded.
//!
//! Like cron schedules, listeners run only where the leader check says so; a paused
//! pipeline's events are passed over (acknowledged, no run).

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use dagg_model::spec::connector::ConnectorSpec;
use dagg_model::spec::pipeline::Schedule;
use serde_json::{Value as Json, json};
use tokio::task::JoinHandle;

mod values;

pub use values::{EventValueError, with_event};

use crate::meta::{EventKind, EventLevel, MetaCommand, PipelineVersion, RunEvent, Trigger};
use crate::{ControlError, ControlPlane};

/// The listeners of every event-scheduled pipeline.
pub struct Triggers {
    state: ControlPlane,
    listeners: HashMap<String, (u32, JoinHandle<()>)>,
}

impl Triggers {
    pub fn new(state: ControlPlane) -> Triggers {
        Triggers { state, listeners: HashMap::new() }
    }

    /// Every `period`, starts listeners for new or changed event pipelines and stops those
    /// of pipelines that are gone or no longer event-scheduled.
    pub async fn run(mut self, period: Duration) {
        loop {
            self.sync();
            tokio::time::sleep(period).await;
        }
    }

    fn sync(&mut self) {
        let wanted: HashMap<String, u32> = match self.state.meta.pipelines() {
            Ok(ps) if self.state.scheduler.is_leader() => ps.iter().filter(|p| p.schedule_type == "event").map(|p| (p.id.clone(), p.version)).collect(),
            Ok(_) => HashMap::new(),
            Err(e) => {
                tracing::warn!("event triggers: cannot list pipelines: {e}");
                return;
            }
        };
        self.listeners.retain(|id, (version, task)| {
            let keep = wanted.get(id) == Some(version) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (id, version) in wanted {
            if self.listeners.contains_key(&id) {
                continue;
            }
            let task = tokio::spawn(listen(self.state.clone(), id.clone(), version));
            self.listeners.insert(id, (version, task));
        }
    }
}

impl Drop for Triggers {
    fn drop(&mut self) {
        for (_, task) in self.listeners.values() {
            task.abort();
        }
    }
}

/// Listens for one pipeline's events until aborted; a broker that fails is tried again with
/// a growing delay (1 s doubling to 30 s).
async fn listen(state: ControlPlane, pipeline_id: String, version: u32) {
    let mut delay = Duration::from_secs(1);
    loop {
        match listen_once(&state, &pipeline_id, version).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(pipeline = %pipeline_id, "event trigger: {e}; listening again in {} s", delay.as_secs());
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn listen_once(state: &ControlPlane, pipeline_id: &str, version: u32) -> Result<(), String> {
    let Some(doc) = state.meta.version(pipeline_id, version).map_err(|e| e.to_string())?.map(|v| v.document) else { return Ok(()) };
    let spec = state.validate(&doc).map_err(|_| "the stored pipeline document is invalid".to_string())?;
    let Schedule::Event { trigger } = &spec.schedule else { return Ok(()) };
    let trigger = dagg_connectors::with_pipeline_defaults(trigger, &format!("{}-trigger", spec.name));
    let origin = origin(&trigger);
    let mut source = dagg_connectors::open_source(&trigger, &state.config.files_dir()).map_err(|e| e.to_string())?;
    let committer = source.committer();
    loop {
        let batch = source.next_batch(100).await.map_err(|e| e.to_string())?.ok_or("the trigger's source ended")?;
        for bad in &batch.bad {
            tracing::warn!(pipeline = %pipeline_id, "event trigger: an event that is not a JSON object was passed over: {}", bad.reason);
        }
        for record in batch.batch.records {
            let event = serde_json::to_value(&record).unwrap_or(Json::Null);
            start_event_run(state, pipeline_id, version, &doc, &event, &origin).await;
        }
        if let Some(c) = &committer
            && let Err(e) = c.checkpoint_completed(&source.checkpoint()).await
        {
            tracing::warn!(pipeline = %pipeline_id, "event trigger: acknowledging events: {e}");
        }
    }
}

/// Starts (once the previous run of the pipeline ended) the run of one event.
async fn start_event_run(state: &ControlPlane, pipeline_id: &str, version: u32, doc: &Json, event: &Json, origin: &str) {
    let Ok(Some(pipeline)) = state.meta.pipeline(pipeline_id) else { return };
    if pipeline.paused || pipeline.version != version {
        tracing::info!(pipeline = %pipeline_id, "event passed over: the pipeline is paused or changed");
        return;
    }
    let doc = match with_event(doc, event) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(pipeline = %pipeline_id, "event passed over: {e} (event {event})");
            return;
        }
    };
    let Ok(Some(stored)) = state.meta.version(pipeline_id, version) else { return };
    // The stored version with the event's values.
    let version = PipelineVersion { document: doc, ..stored };
    let by = format!("event ({origin})");
    loop {
        match state.start_run(&version, Trigger::Event, &by) {
            Ok(run) => {
                let entry = RunEvent {
                    run_id: run.id.clone(),
                    seq: 0,
                    at: Utc::now(),
                    level: EventLevel::Info,
                    kind: EventKind::Trigger,
                    message: format!("started by an event on {origin}: {event}"),
                    data: json!({"source": origin, "event": event}),
                };
                if let Err(e) = state.meta.apply(MetaCommand::AppendRunEvent { event: entry }) {
                    tracing::warn!(run = %run.id, "recording the event of a run: {e}");
                }
                return;
            }
            // One run per pipeline at a time: wait for the active one.
            Err(ControlError::Conflict(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(ControlError::Invalid { details, .. }) => {
                tracing::warn!(pipeline = %pipeline_id, "event passed over: with the event's values the document is invalid: {details:?}");
                return;
            }
            Err(e) => {
                tracing::warn!(pipeline = %pipeline_id, "event trigger: cannot start a run: {e}");
                return;
            }
        }
    }
}

/// Where events come from, for people: `nats subject `a.b``, `kafka topic `t``.
fn origin(trigger: &ConnectorSpec) -> String {
    use dagg_model::spec::connector::ConnectorConfig;
    match &trigger.config {
        ConnectorConfig::Nats(c) => match (&c.stream, &c.subject) {
            (Some(s), Some(sub)) => format!("nats stream `{s}` subject `{sub}`"),
            (Some(s), None) => format!("nats stream `{s}`"),
            (None, sub) => format!("nats subject `{}`", sub.as_deref().unwrap_or("")),
        },
        ConnectorConfig::Kafka(c) => format!("kafka topic `{}`", c.topic),
        _ => trigger.connector_type.clone(),
    }
}
