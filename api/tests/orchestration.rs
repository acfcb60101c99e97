//! Orchestration through the API: cron schedules on a controlled clock across a DST change,
//! missed runs, pause; dependencies and skips; retries; notifications (webhook and SMTP on
//! loopback servers this test runs); versions and rollback; dry runs; lineage; profiles and
//! schema evolution.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use common::{TestApi, file_pipeline, write_orders};
use dagg_control::scheduler::{Clock, ManualClock, Scheduler};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

async fn create(api: &TestApi, token: &str, doc: Value) -> String {
    let r = api.post("/pipelines", token, doc).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    r.body["id"].as_str().unwrap().to_string()
}

async fn execute(api: &TestApi, token: &str, id: &str) -> Value {
    let r = api
        .post(&format!("/pipelines/{id}/execute"), token, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    api.wait_run(token, r.body["id"].as_str().unwrap()).await
}

/// The pipeline's runs, oldest first.
async fn runs_of(api: &TestApi, token: &str, id: &str) -> Vec<Value> {
    let r = api
        .get(
            &format!("/pipelines/{id}/runs?sort=created_at&page_size=500"),
            token,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.body["items"].as_array().unwrap().clone()
}

/// Waits until the pipeline has `n` ended runs; returns them, oldest first.
async fn wait_runs(api: &TestApi, token: &str, id: &str, n: usize) -> Vec<Value> {
    for _ in 0..400 {
        let runs = runs_of(api, token, id).await;
        let ended = runs
            .iter()
            .filter(|r| {
                matches!(
                    r["status"].as_str(),
                    Some("success" | "warning" | "failed" | "cancelled")
                )
            })
            .count();
        if runs.len() >= n && ended == runs.len() {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "pipeline {id} did not get {n} ended runs: {:?}",
        runs_of(api, token, id).await
    );
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn cron_schedule_fires_at_the_right_instants_across_a_dst_change() {
    let api = TestApi::new();
    let t = api.admin().await;
    write_orders(&api.files().join("orders.jsonl"), 4);
    let clock = Arc::new(ManualClock::new(utc("2026-03-27T12:00:00Z")));
    api.state.scheduler.set_clock(clock.clone());
    let mut doc = file_pipeline("paris-daily", "orders.jsonl", "daily.jsonl");
    doc["schedule"] =
        json!({"type": "cron", "expression": "0 8 * * *", "timezone": "Europe/Paris"});
    let id = create(&api, &t, doc).await;
    let scheduler = Scheduler::new(api.state.control.clone());

    // First sight: armed, nothing runs.
    let first = scheduler.tick().unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].outcome, "armed");
    let s = api
        .get(&format!("/pipelines/{id}/schedule?count=3"), &t)
        .await;
    assert_eq!(s.status, StatusCode::OK, "{s:?}");
    let next: Vec<&str> = s.body["next_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["at"].as_str().unwrap())
        .collect();
    // 08:00 in Paris is 07:00Z in winter time and 06:00Z from 29 March (summer time).
    assert_eq!(
        next,
        [
            "2026-03-28T07:00:00Z",
            "2026-03-29T06:00:00Z",
            "2026-03-30T06:00:00Z"
        ]
    );
    assert_eq!(s.body["next_runs"][1]["local"], "2026-03-29T08:00:00+02:00");
    assert_eq!(s.body["timezone"], "Europe/Paris");

    // Three days in 15-minute steps: it fires exactly at 08:00 local each day.
    let mut fired = Vec::new();
    while clock.now() < utc("2026-03-30T12:00:00Z") {
        clock.advance(chrono::Duration::minutes(15));
        for o in scheduler.tick().unwrap() {
            assert_eq!(o.outcome, "fired", "{o:?}");
            assert_eq!(o.instant, clock.now(), "fired late");
            let run = api.wait_run(&t, o.run_id.as_deref().unwrap()).await;
            assert_eq!(run["status"], "success", "{run}");
            assert_eq!(run["trigger"], "schedule");
            fired.push(o.instant);
        }
    }
    assert_eq!(
        fired,
        [
            utc("2026-03-28T07:00:00Z"),
            utc("2026-03-29T06:00:00Z"),
            utc("2026-03-30T06:00:00Z")
        ]
    );

    // Paused: the instant is passed over, no run; resuming does not replay it.
    assert_eq!(
        api.post(&format!("/pipelines/{id}/pause"), &t, json!({}))
            .await
            .status,
        StatusCode::OK
    );
    clock.set(utc("2026-03-31T06:30:00Z"));
    let o = scheduler.tick().unwrap();
    assert_eq!(
        (o.len(), o[0].outcome.as_str(), o[0].run_id.clone()),
        (1, "paused", None)
    );
    let s = api.get(&format!("/pipelines/{id}/schedule"), &t).await;
    assert_eq!(
        (
            s.body["paused"].clone(),
            s.body["next_runs"].as_array().unwrap().len()
        ),
        (json!(true), 0)
    );
    assert_eq!(
        api.post(&format!("/pipelines/{id}/resume"), &t, json!({}))
            .await
            .status,
        StatusCode::OK
    );
    assert!(scheduler.tick().unwrap().is_empty());
    assert_eq!(runs_of(&api, &t, &id).await.len(), 3);

    // Down for three days (no ticks), then a restart: one run for the missed instants, not three.
    clock.set(utc("2026-04-03T09:00:00Z"));
    let restarted = Scheduler::new(api.state.control.clone());
    let o = restarted.tick().unwrap();
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!(
        (o[0].outcome.as_str(), o[0].instant),
        ("missed", utc("2026-04-03T06:00:00Z"))
    );
    api.wait_run(&t, o[0].run_id.as_deref().unwrap()).await;
    assert!(restarted.tick().unwrap().is_empty());
    assert!(
        Scheduler::new(api.state.control.clone()).tick().unwrap().is_empty(),
        "the fired instant is persisted"
    );
    assert_eq!(runs_of(&api, &t, &id).await.len(), 4);
    let s = api.get(&format!("/pipelines/{id}/schedule"), &t).await;
    assert_eq!(
        (
            s.body["last_outcome"].clone(),
            s.body["next_runs"][0]["at"].clone()
        ),
        (json!("missed"), json!("2026-04-04T06:00:00Z"))
    );

    // A node that is not the leader fires nothing.
    api.state.scheduler.set_leader_check(Arc::new(|| false));
    clock.set(utc("2026-04-05T09:00:00Z"));
    assert!(restarted.tick().unwrap().is_empty());
    assert_eq!(runs_of(&api, &t, &id).await.len(), 4);
}

#[tokio::test]
async fn depends_on_runs_b_after_a_and_skips_it_when_a_fails() {
    let api = TestApi::new();
    let t = api.admin().await;
    write_orders(&api.files().join("orders.jsonl"), 10);
    let a = create(
        &api,
        &t,
        file_pipeline("stage-a", "orders.jsonl", "a.jsonl"),
    )
    .await;
    let mut b_doc = file_pipeline("stage-b", "a.jsonl", "b.jsonl");
    b_doc["depends_on"] = json!(["stage-a"]);
    let b = create(&api, &t, b_doc).await;
    let mut c_doc = file_pipeline("stage-c", "b.jsonl", "c.jsonl");
    c_doc["depends_on"] = json!(["stage-b"]);
    let c = create(&api, &t, c_doc).await;

    // A cycle is refused, named in dependency order.
    let mut cyclic = file_pipeline("stage-a", "orders.jsonl", "a.jsonl");
    cyclic["depends_on"] = json!(["stage-c"]);
    let r = api.put(&format!("/pipelines/{a}"), &t, cyclic).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.body["error"]["details"][0]["path"], "depends_on");
    assert!(
        r.text.contains("stage-a -> stage-b -> stage-c -> stage-a"),
        "{r:?}"
    );

    // A succeeds: B runs, then C.
    let run_a = execute(&api, &t, &a).await;
    assert_eq!(run_a["status"], "success");
    let runs_c = wait_runs(&api, &t, &c, 1).await;
    let runs_b = runs_of(&api, &t, &b).await;
    assert_eq!(runs_b.len(), 1);
    assert_eq!(
        (runs_b[0]["status"].as_str(), runs_b[0]["trigger"].as_str()),
        (Some("success"), Some("dependency"))
    );
    assert_eq!(
        (runs_c[0]["status"].as_str(), runs_c[0]["trigger"].as_str()),
        (Some("success"), Some("dependency"))
    );
    assert_eq!(lines(&api.files().join("c.jsonl")).len(), 5);

    // A fails: B and C are skipped, each with its reason.
    let broken = file_pipeline("stage-a", "missing.jsonl", "a.jsonl");
    assert_eq!(
        api.put(&format!("/pipelines/{a}"), &t, broken).await.status,
        StatusCode::OK
    );
    let run_a = execute(&api, &t, &a).await;
    assert_eq!(run_a["status"], "failed");
    let runs_c = wait_runs(&api, &t, &c, 2).await;
    let runs_b = runs_of(&api, &t, &b).await;
    let skipped_b = &runs_b[1];
    assert_eq!(skipped_b["status"], "cancelled");
    let why = skipped_b["error"].as_str().unwrap();
    assert!(
        why.starts_with("skipped: dependency `stage-a` ended failed"),
        "{why}"
    );
    assert!(why.contains(run_a["id"].as_str().unwrap()), "{why}");
    assert_eq!(runs_c[1]["status"], "cancelled");
    assert!(
        runs_c[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("skipped: dependency `stage-b` ended cancelled"),
        "{}",
        runs_c[1]
    );
    let log = api
        .get(
            &format!("/runs/{}/logs", skipped_b["id"].as_str().unwrap()),
            &t,
        )
        .await;
    assert!(log.text.contains("\"skipped\""), "{log:?}");
}

/// An HTTP server on loopback: `fails` answers of 500, then the records.
async fn flaky_api(fails: usize) -> (String, Arc<Mutex<Vec<Instant>>>) {
    let hits: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/orders",
        axum::routing::get(move || {
            let h = h.clone();
            async move {
                let n = {
                    let mut v = h.lock().unwrap();
                    v.push(Instant::now());
                    v.len()
                };
                if n <= fails {
                    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": "try later"})))
                } else {
                    (StatusCode::OK, axum::Json(json!([{"id": 1, "status": "completed"}, {"id": 2, "status": "completed"}, {"id": 3, "status": "pending"}])))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/orders", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

#[tokio::test]
async fn a_run_retries_with_backoff_then_succeeds() {
    let api = TestApi::new();
    let t = api.admin().await;
    let (url, hits) = flaky_api(2).await;
    let doc = json!({
        "name": "flaky-rest",
        "source": {"connector_type": "rest_api", "config": {"url": url, "retry_attempts": 0}},
        "transformations": [{"type": "record_filter", "condition": {"field": "status", "operator": "equals", "value": "completed"}}],
        "destination": {"connector_type": "file", "config": {"path": "flaky.jsonl", "format": "jsonl"}},
        "error_handling": {"retry_policy": {"max_retries": 3, "backoff_multiplier": 2, "initial_delay_seconds": 0.3}}
    });
    let id = create(&api, &t, doc).await;
    let run = execute(&api, &t, &id).await;
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["counts"]["attempts"], 3, "{run}");
    assert_eq!(run["counts"]["records_written"], 2);
    assert_eq!(lines(&api.files().join("flaky.jsonl")).len(), 2);
    // The waits grew: about 0.3 s, then about 0.6 s.
    let at = hits.lock().unwrap().clone();
    assert_eq!(at.len(), 3);
    let (d1, d2) = (at[1] - at[0], at[2] - at[1]);
    assert!(
        d1 >= Duration::from_millis(290) && d2 >= Duration::from_millis(590),
        "{d1:?} {d2:?}"
    );
    assert!(d2 > d1, "{d1:?} {d2:?}");
    let log = api
        .get(&format!("/runs/{}/logs", run["id"].as_str().unwrap()), &t)
        .await;
    assert!(log.text.contains("\"retrying\""), "{log:?}");
}

/// A webhook receiver on loopback: every request's headers and body.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>) {
    let got: Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>> = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let g = g.clone();
                async move {
                    g.lock().unwrap().push((headers, body.to_vec()));
                    StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// A minimal SMTP server on loopback that accepts every message: (envelope, data) pairs.
async fn smtp_sink() -> (u16, Arc<Mutex<Vec<(Vec<String>, String)>>>) {
    let got: Arc<Mutex<Vec<(Vec<String>, String)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let g = g.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"220 sink.test ESMTP\r\n").await.unwrap();
                let mut envelope = Vec::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim_end().to_string();
                    let verb = cmd
                        .split([' ', ':'])
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    match verb.as_str() {
                        "EHLO" => w
                            .write_all(b"250-sink.test\r\n250 8BITMIME\r\n")
                            .await
                            .unwrap(),
                        "HELO" => w.write_all(b"250 sink.test\r\n").await.unwrap(),
                        "MAIL" | "RCPT" => {
                            envelope.push(cmd.clone());
                            w.write_all(b"250 OK\r\n").await.unwrap();
                        }
                        "DATA" => {
                            w.write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                                .await
                                .unwrap();
                            let mut data = String::new();
                            loop {
                                line.clear();
                                r.read_line(&mut line).await.unwrap();
                                if line == ".\r\n" {
                                    break;
                                }
                                data.push_str(&line);
                            }
                            g.lock()
                                .unwrap()
                                .push((std::mem::take(&mut envelope), data));
                            w.write_all(b"250 OK queued\r\n").await.unwrap();
                        }
                        "QUIT" => {
                            w.write_all(b"221 bye\r\n").await.unwrap();
                            return;
                        }
                        "RSET" | "NOOP" => w.write_all(b"250 OK\r\n").await.unwrap(),
                        _ => w.write_all(b"502 not implemented\r\n").await.unwrap(),
                    }
                }
            });
        }
    });
    (port, got)
}

/// The text of a single-part message's body, decoded by its Content-Transfer-Encoding
/// (quoted-printable, base64, or as it is), with the headers before it.
fn mail_text(data: &str) -> String {
    let (head, body) = data.split_once("\r\n\r\n").unwrap_or((data, ""));
    let encoding = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-transfer-encoding").then(|| v.trim().to_ascii_lowercase())
        })
        .unwrap_or_default();
    let body = match encoding.as_str() {
        "quoted-printable" => {
            let joined = body.replace("=\r\n", "");
            let b = joined.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
                match (b[i], hex) {
                    (b'=', Some(byte)) => {
                        out.push(byte);
                        i += 3;
                    }
                    (c, _) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8(out).expect("a UTF-8 body")
        }
        "base64" => {
            use base64::Engine as _;
            let clean: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(clean).expect("base64 body")).expect("a UTF-8 body")
        }
        _ => body.to_string(),
    };
    format!("{head}\r\n\r\n{body}")
}

#[test]
fn mail_text_decodes_soft_breaks_and_escapes() {
    let qp = "Content-Transfer-Encoding: quoted-printable\r\n\r\n/tmp/do=\r\nes-not-exist.jsonl =3D x\r\n";
    assert!(mail_text(qp).contains("/tmp/does-not-exist.jsonl = x"));
    let b64 = "Content-Transfer-Encoding: base64\r\n\r\nL3RtcC9kb2V\r\nzLW5vdC1leGlzdC5qc29ubA==\r\n";
    assert!(mail_text(b64).contains("/tmp/does-not-exist.jsonl"));
}

#[tokio::test]
async fn a_failed_run_notifies_by_signed_webhook_and_email() {
    let api = TestApi::new();
    let t = api.admin().await;
    let (hook, hooks) = webhook_receiver().await;
    let (smtp_port, mails) = smtp_sink().await;
    let secret = "s3cret-signing-key";
    let r = api
        .put("/settings", &t, json!({"notifications": {"webhook_secret": secret, "smtp": {"host": "127.0.0.1", "port": smtp_port, "from": "dagg@example.com"}}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.body["notifications"]["webhook_secret"], "********",
        "the secret is masked"
    );

    // A long path: the e-mail's body is quoted-printable (or base64), whose soft line breaks
    // fall inside it wherever the checkout lives; the assertions read the decoded body.
    let missing = format!("{}/does-not-exist.jsonl", "a-folder-with-a-long-name-".repeat(8));
    let mut doc = file_pipeline("nightly-load", &missing, "out.jsonl");
    doc["error_handling"] = json!({"notifications": {"email": ["ops@example.com", "oncall@example.com"], "webhook": hook}});
    let id = create(&api, &t, doc).await;
    let run = execute(&api, &t, &id).await;
    assert_eq!(run["status"], "failed");
    let run_id = run["id"].as_str().unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    while (hooks.lock().unwrap().is_empty() || mails.lock().unwrap().is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (headers, body) = hooks
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("the webhook was called");
    let summary: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(summary["event"], "run.failed");
    assert_eq!(summary["run_id"], run_id);
    assert_eq!(summary["pipeline_id"], id.as_str());
    assert_eq!(summary["pipeline_name"], "nightly-load");
    assert_eq!(summary["status"], "failed");
    assert!(
        summary["error"]
            .as_str()
            .unwrap()
            .contains("does-not-exist.jsonl"),
        "{summary}"
    );
    // The signature is HMAC-SHA256 of the exact body with the configured secret.
    let sig = headers.get("x-dagg-signature").unwrap().to_str().unwrap();
    assert_eq!(sig, dagg_control::notify::signature(secret.as_bytes(), &body));
    assert_ne!(sig, dagg_control::notify::signature(b"another secret", &body));
    assert_eq!(headers.get("x-dagg-event").unwrap(), "run.failed");

    let (envelope, data) = mails
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("an e-mail arrived");
    assert!(
        envelope.iter().any(|l| l.contains("<dagg@example.com>")),
        "{envelope:?}"
    );
    assert!(
        envelope.iter().any(|l| l.contains("<ops@example.com>"))
            && envelope.iter().any(|l| l.contains("<oncall@example.com>")),
        "{envelope:?}"
    );
    assert!(
        data.contains("Subject: [dagg] pipeline `nightly-load`: run failed"),
        "{data}"
    );
    let text = mail_text(&data);
    assert!(text.contains(run_id), "{text}");
    assert!(text.contains(&missing), "{text}");

    // Both deliveries are in the run's log (the e-mail's entry follows the end of the SMTP
    // conversation, which can come just after the test's server has the message).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = api.get(&format!("/runs/{run_id}/logs"), &t).await;
        let n = log.text.matches("\"notified\"").count();
        if n == 2 {
            break;
        }
        assert!(n < 2 && std::time::Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rollback_restores_an_earlier_versions_output() {
    let api = TestApi::new();
    let t = api.admin().await;
    write_orders(&api.files().join("orders.jsonl"), 6);
    let v1 = file_pipeline("versions", "orders.jsonl", "v.jsonl");
    let id = create(&api, &t, v1.clone()).await;
    let run1 = execute(&api, &t, &id).await;
    assert_eq!(run1["pipeline_version"], 1);
    let out1 = lines(&api.files().join("v.jsonl"));
    assert!(out1.iter().all(|r| r["status"] == "completed") && out1.len() == 3);

    let mut v2 = v1.clone();
    v2["transformations"][0]["condition"]["value"] = json!("pending");
    assert_eq!(
        api.put(&format!("/pipelines/{id}"), &t, v2).await.status,
        StatusCode::OK
    );
    let run2 = execute(&api, &t, &id).await;
    assert_eq!(run2["pipeline_version"], 2);
    assert!(
        lines(&api.files().join("v.jsonl"))
            .iter()
            .all(|r| r["status"] == "pending")
    );

    let d = api
        .get(&format!("/pipelines/{id}/diff?from=1&to=2"), &t)
        .await;
    assert_eq!(
        d.body["changes"],
        json!([{"path": "transformations[0].condition.value", "op": "changed", "from": "completed", "to": "pending"}]),
        "{d:?}"
    );

    let r = api
        .post(
            &format!("/pipelines/{id}/rollback"),
            &t,
            json!({"version": 1}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["version"].clone()),
        (StatusCode::OK, json!(3)),
        "{r:?}"
    );
    let run3 = execute(&api, &t, &id).await;
    assert_eq!(run3["pipeline_version"], 3);
    assert_eq!(
        lines(&api.files().join("v.jsonl")),
        out1,
        "the rolled-back version writes what version 1 wrote"
    );
    let d = api
        .get(&format!("/pipelines/{id}/diff?from=1&to=3"), &t)
        .await;
    assert_eq!(d.body["changes"], json!([]));

    // A run keeps the version it started with, whatever is saved meanwhile.
    write_orders(&api.files().join("orders.jsonl"), 20_000);
    let r = api
        .post(&format!("/pipelines/{id}/execute"), &t, json!({}))
        .await;
    let mut v4 = v1.clone();
    v4["transformations"][0]["condition"]["value"] = json!("pending");
    assert_eq!(
        api.put(&format!("/pipelines/{id}"), &t, v4).await.status,
        StatusCode::OK
    );
    let run4 = api.wait_run(&t, r.body["id"].as_str().unwrap()).await;
    assert_eq!(run4["pipeline_version"], 3);
    let out4 = lines(&api.files().join("v.jsonl"));
    assert_eq!(out4.len(), 10_000);
    assert!(out4.iter().all(|r| r["status"] == "completed"));
}

#[tokio::test]
async fn a_dry_run_writes_nothing_and_traces_each_record_to_its_source_line() {
    let api = TestApi::new();
    let t = api.admin().await;
    write_orders(&api.files().join("orders.jsonl"), 10);
    std::fs::write(
        api.files().join("bad.jsonl"),
        "{\"order_id\":\"X\",\"status\":\"completed\"}\nnot json\n",
    )
    .unwrap();
    let mut doc = file_pipeline("dry", "orders.jsonl", "dry-out/out.jsonl");
    doc["error_handling"] = json!({"dead_letter": {"connector_type": "file", "config": {"path": "dry-out/dead.jsonl", "format": "jsonl"}}});
    let id = create(&api, &t, doc).await;
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(api.files())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing();

    let r = api
        .post(
            &format!("/pipelines/{id}/dry-run"),
            &t,
            json!({"limit": 3, "lineage": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["records_out"], 3);
    let out = r.body["records"].as_array().unwrap();
    assert_eq!(
        out.iter()
            .map(|r| r["order_id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["ORD-0", "ORD-2", "ORD-4"]
    );
    let lineage = r.body["lineage"].as_array().unwrap();
    assert_eq!(lineage.len(), 3);
    for (i, l) in lineage.iter().enumerate() {
        assert_eq!(l["output"], i);
        // ORD-2k is the file's line 2k + 1.
        assert_eq!(l["source_position"]["line"], 2 * i + 1, "{l}");
        assert_eq!(
            l["source_position"]["file"]
                .as_str()
                .map(|f| f.ends_with("orders.jsonl")),
            Some(true),
            "{l}"
        );
    }

    // Errors are reported too, and still nothing is written.
    let mut bad = file_pipeline("dry", "bad.jsonl", "dry-out/out.jsonl");
    bad["error_handling"] = json!({"dead_letter": {"connector_type": "file", "config": {"path": "dry-out/dead.jsonl", "format": "jsonl"}}});
    assert_eq!(
        api.put(&format!("/pipelines/{id}"), &t, bad).await.status,
        StatusCode::OK
    );
    let r = api
        .post(&format!("/pipelines/{id}/dry-run"), &t, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        (
            r.body["records_out"].clone(),
            r.body["rejected_count"].clone(),
            r.body["records_read"].clone()
        ),
        (json!(1), json!(1), json!(2))
    );
    assert!(r.body.get("lineage").is_none());

    assert_eq!(before, listing(), "a dry run creates no file");
    assert!(!api.files().join("dry-out").exists());
    assert!(
        runs_of(&api, &t, &id).await.is_empty(),
        "a dry run is not a run"
    );
}

fn write_lines(path: &std::path::Path, rows: &[Value]) {
    std::fs::write(
        path,
        rows.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .unwrap();
}

#[tokio::test]
async fn runs_have_lineage_and_profiles_and_schema_changes_follow_the_policy() {
    let api = TestApi::new();
    let t = api.admin().await;
    let input = api.files().join("people.jsonl");
    let rows: Vec<Value> = (0..40)
        .map(|i| {
            let city = ["Paris", "Lyon", "Paris", "Nice"][i % 4];
            let age = if i % 10 == 0 {
                Value::Null
            } else {
                json!(20 + i % 7)
            };
            json!({"id": i, "city": city, "age": age, "score": (i as f64) / 2.0})
        })
        .collect();
    write_lines(&input, &rows);
    let doc = json!({
        "name": "people",
        "source": {"connector_type": "file", "config": {"path": "people.jsonl", "format": "jsonl"}},
        "destination": {"connector_type": "file", "config": {"path": "people-out.jsonl", "format": "jsonl"}}
    });
    let id = create(&api, &t, doc.clone()).await;
    let run1 = execute(&api, &t, &id).await;
    assert_eq!(run1["status"], "success", "{run1}");
    let run1_id = run1["id"].as_str().unwrap();

    let p = api.get(&format!("/runs/{run1_id}/profile"), &t).await;
    assert_eq!(p.status, StatusCode::OK, "{p:?}");
    let prof = &p.body["profile"];
    assert_eq!(prof["records"], 40);
    let field = |name: &str| {
        prof["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap()
    };
    let city = field("city");
    assert_eq!(
        (
            city["inferred_type"].clone(),
            city["distinct"].clone(),
            city["null_ratio"].clone()
        ),
        (json!("string"), json!(3), json!(0.0))
    );
    assert_eq!(
        city["top_values"][0],
        json!({"value": "Paris", "count": 20})
    );
    assert_eq!(
        (city["min"].clone(), city["max"].clone()),
        (json!("Lyon"), json!("Paris"))
    );
    let age = field("age");
    assert_eq!(
        (
            age["inferred_type"].clone(),
            age["nulls"].clone(),
            age["null_ratio"].clone()
        ),
        (json!("integer"), json!(4), json!(0.1))
    );
    assert_eq!(
        (
            age["min"].clone(),
            age["max"].clone(),
            age["distinct"].clone()
        ),
        (json!(20), json!(26), json!(7))
    );
    let score = field("score");
    assert_eq!(
        (
            score["inferred_type"].clone(),
            score["min"].clone(),
            score["max"].clone()
        ),
        (json!("float"), json!(0.0), json!(19.5))
    );
    assert_eq!(field("id")["distinct"], 40);
    assert!(
        p.body["schema_changes"].is_null(),
        "first run: nothing to compare with"
    );

    let l = api.get(&format!("/runs/{run1_id}/lineage"), &t).await;
    assert_eq!(l.status, StatusCode::OK, "{l:?}");
    assert_eq!(l.body["pipeline_version"], 1);
    assert_eq!(l.body["source"]["connector_type"], "file");
    assert!(l.body["source"]["start"].is_null());
    assert!(!l.body["source"]["end"].is_null(), "{l:?}");
    let segs = l.body["segments"].as_array().unwrap();
    assert_eq!(
        segs.iter()
            .map(|s| s["records_written"].as_u64().unwrap())
            .sum::<u64>(),
        40
    );
    assert_eq!(l.body["destinations"][0]["stage"], "destination");
    assert_eq!(l.body["destinations"][0]["connector_type"], "file");
    assert!(!l.body["destinations"][0]["commit"].is_null(), "{l:?}");

    // A new field appears: recorded (policy `evolve`, the default).
    let rows2: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["coupon"] = json!("SPRING");
            r
        })
        .collect();
    write_lines(&input, &rows2);
    let run2 = execute(&api, &t, &id).await;
    assert_eq!(run2["status"], "success");
    let p2 = api
        .get(
            &format!("/runs/{}/profile", run2["id"].as_str().unwrap()),
            &t,
        )
        .await;
    assert_eq!(
        p2.body["schema_changes"],
        json!({"new_fields": ["coupon"], "missing_fields": [], "retyped_fields": []}),
        "{p2:?}"
    );
    let log = api
        .get(&format!("/runs/{}/logs", run2["id"].as_str().unwrap()), &t)
        .await;
    assert!(
        log.text.contains("schema_changed") && log.text.contains("new field coupon"),
        "{log:?}"
    );
    let out2 = std::fs::read_to_string(api.files().join("people-out.jsonl")).unwrap();

    // Under `strict`, another change fails the run and writes nothing.
    let mut strict = doc.clone();
    strict["schema_evolution"] = json!("strict");
    assert_eq!(
        api.put(&format!("/pipelines/{id}"), &t, strict)
            .await
            .status,
        StatusCode::OK
    );
    let rows3: Vec<Value> = rows2
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["age"] = json!("unknown");
            r
        })
        .collect();
    write_lines(&input, &rows3);
    let run3 = execute(&api, &t, &id).await;
    assert_eq!(run3["status"], "failed", "{run3}");
    let err = run3["error"].as_str().unwrap();
    assert!(
        err.contains("strict") && err.contains("`age` re-typed integer -> string"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(api.files().join("people-out.jsonl")).unwrap(),
        out2,
        "the strict failure committed nothing"
    );
    // The same data as before passes under `strict`.
    write_lines(&input, &rows2);
    let run4 = execute(&api, &t, &id).await;
    assert_eq!(run4["status"], "success", "{run4}");
    let r = api.put(&format!("/pipelines/{id}"), &t, json!({"name": "people", "schema_evolution": "sometimes", "source": doc["source"], "destination": doc["destination"]})).await;
    assert_eq!(
        (r.status, r.body["error"]["details"][0]["path"].clone()),
        (StatusCode::BAD_REQUEST, json!("schema_evolution")),
        "{r:?}"
    );
}
