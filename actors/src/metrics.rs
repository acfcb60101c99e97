//! The runtime's metrics, in the process-wide Prometheus registry (the API's `/metrics`
//! serves them). Updated once per batch or checkpoint, never per record; labels are the
//! pipeline and the stage, never anything taken from records.

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec, register_histogram_vec, register_int_counter_vec, register_int_gauge_vec};

/// Records (and unparseable inputs) read by a pipeline's main source.
pub static RECORDS_READ: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dagg_records_read_total", "Records read from the main source", &["pipeline"]).expect("metric registers once")
});

/// Records delivered to a destination.
pub static RECORDS_WRITTEN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dagg_records_written_total", "Records delivered to destinations", &["pipeline"]).expect("metric registers once")
});

/// Records sent to the dead letter, by the stage that rejected them.
pub static RECORDS_DEAD_LETTERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dagg_records_dead_lettered_total", "Records sent to the dead letter", &["pipeline", "stage"]).expect("metric registers once")
});

/// Records dropped by validation or removed by filters.
pub static RECORDS_REMOVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dagg_records_removed_total", "Records removed: `dropped` by validation, `filtered` by filters", &["pipeline", "reason"]).expect("metric registers once")
});

/// Batches through a stage.
pub static BATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dagg_batches_total", "Batches processed, per stage", &["pipeline", "stage"]).expect("metric registers once")
});

/// Time a stage spent waiting for room downstream (backpressure).
pub static BACKPRESSURE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "dagg_backpressure_wait_seconds",
        "Time a stage waited for room in the next stage's queue, per batch",
        &["pipeline", "stage"],
        vec![0.0001, 0.001, 0.01, 0.1, 1.0, 10.0]
    )
    .expect("metric registers once")
});

/// Checkpoint durations (pre-commit of every destination plus the durable record).
pub static CHECKPOINT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!("dagg_checkpoint_duration_seconds", "Time to complete a checkpoint", &["pipeline"], vec![0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 10.0])
        .expect("metric registers once")
});

/// Size of recorded checkpoints.
pub static CHECKPOINT_BYTES: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!("dagg_checkpoint_size_bytes", "Size of a recorded checkpoint", &["pipeline"], vec![256.0, 1024.0, 4096.0, 65536.0, 1048576.0])
        .expect("metric registers once")
});

/// Messages a streaming source's broker holds that the pipeline has not read yet.
pub static SOURCE_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!("dagg_source_lag_messages", "Messages behind: held by the source's broker, not yet read", &["pipeline"]).expect("metric registers once")
});

/// Finished runs by status, and their durations.
pub static RUN_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!("dagg_run_duration_seconds", "Duration of finished runs", &["pipeline", "status"], vec![0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0])
        .expect("metric registers once")
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_appear_in_the_default_registry() {
        RECORDS_READ.with_label_values(&["m"]).inc_by(3);
        let names: Vec<String> = prometheus::gather().iter().map(|f| f.name().to_string()).collect();
        assert!(names.iter().any(|n| n == "dagg_records_read_total"), "{names:?}");
    }
}
