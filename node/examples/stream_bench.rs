//! Throughput of a streaming source into a file: `nats` (JetStream) or `kafka`, N messages
//! (default 1,000,000) of about 120 bytes published first, then read by the runtime (source →
//! one title-case transformation → JSONL file, checkpoints every 10 s) until all are in,
//! then stopped gracefully. Prints records/s of the whole run, from start to the committed
//! file. Needs NATS with JetStream on 127.0.0.1:4222; for kafka, `scripts/kafka.sh start`.
//!
//! ```sh
//! cargo run --release -p dagg-node --example stream_bench -- nats 1000000
//! cargo run --release -p dagg-node --example stream_bench -- kafka 1000000
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dagg_actors::{RunOptions, RunProgress, start_run};
use dagg_model::spec::pipeline::parse_pipeline;
use serde_json::json;

fn body(i: u64) -> String {
    json!({"id": i, "name": format!("item number {i}"), "qty": i % 7, "price": 9.5, "status": "completed"}).to_string()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map(String::as_str).unwrap_or("nats");
    let n: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let dir = tempfile::tempdir()?;

    let published = Instant::now();
    let (source, cleanup): (serde_json::Value, Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>) = match kind {
        "nats" => {
            let js = async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await?);
            let (stream, subject) = (format!("BENCH_{id}"), format!("bench.{id}"));
            js.create_stream(async_nats::jetstream::stream::Config { name: stream.clone(), subjects: vec![subject.clone()], ..Default::default() }).await?;
            let mut pending = std::collections::VecDeque::new();
            for i in 1..=n {
                pending.push_back(js.publish(subject.clone(), body(i).into()).await?);
                if pending.len() >= 4000 {
                    for f in pending.drain(..2000) {
                        f.await?;
                    }
                }
            }
            for f in pending {
                f.await?;
            }
            let js2 = js.clone();
            let s2 = stream.clone();
            (
                json!({"connector_type": "nats", "config": {"stream": stream, "subject": subject}}),
                Box::new(move || Box::pin(async move {
                    let _ = js2.delete_stream(&s2).await;
                })),
            )
        }
        "kafka" => {
            use rdkafka::ClientConfig;
            use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
            use rdkafka::producer::{FutureProducer, FutureRecord};
            let broker = "127.0.0.1:19092";
            let topic = format!("bench-{id}");
            let admin: AdminClient<_> = ClientConfig::new().set("bootstrap.servers", broker).create()?;
            for r in admin.create_topics(&[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))], &AdminOptions::new()).await? {
                r.map_err(|(t, e)| anyhow::anyhow!("{t}: {e}"))?;
            }
            let p: FutureProducer = ClientConfig::new().set("bootstrap.servers", broker).set("linger.ms", "5").create()?;
            let mut pending = Vec::new();
            for i in 1..=n {
                let b = body(i);
                pending.push(p.send_result(FutureRecord::<(), _>::to(&topic).payload(&b)).map_err(|(e, _)| e)?);
                if pending.len() >= 20_000 {
                    for f in pending.drain(..) {
                        f.await?.map_err(|(e, _)| e)?;
                    }
                }
            }
            for f in pending {
                f.await?.map_err(|(e, _)| e)?;
            }
            (json!({"connector_type": "kafka", "config": {"bootstrap_servers": broker, "topic": topic}}), Box::new(|| Box::pin(async {})))
        }
        other => anyhow::bail!("unknown source `{other}`: nats or kafka"),
    };
    println!("{kind}: published {n} messages in {:.2} s", published.elapsed().as_secs_f64());

    let doc = json!({
        "name": format!("bench-{kind}-{id}"),
        "source": source,
        "transformations": [{"type": "field_mapping", "field_name": "name", "operation": "title_case"}],
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}}
    });
    let spec = parse_pipeline(&doc).map_err(|e| anyhow::anyhow!("{e}"))?;
    let progress = Arc::new(RunProgress::default());
    let started = Instant::now();
    let handle = start_run(&spec, dir.path(), RunOptions { progress: progress.clone(), data_dir: Some(dir.path().join("home")), ..RunOptions::default() }).await;
    while progress.read.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let read = started.elapsed().as_secs_f64();
    handle.stop();
    let summary = handle.wait().await;
    let total = started.elapsed().as_secs_f64();
    let lines = std::fs::read_to_string(dir.path().join("out.jsonl"))?.lines().count();
    anyhow::ensure!(lines as u64 == n, "the file holds {lines} records, not {n}");
    println!(
        "{kind} -> file: {n} records read in {read:.2} s ({:.0} records/s); committed in {total:.2} s ({:.0} records/s end to end); status {}",
        n as f64 / read,
        n as f64 / total,
        summary.status
    );
    cleanup().await;
    Ok(())
}
