//! The egress policy in the control plane: notifications (webhooks, SMTP) never reach this
//! node's own listeners or link-local addresses, and the admin's `egress` setting takes
//! effect on a node when its store applies the replicated command, restores a snapshot or
//! opens. (Each test runs in a process of its own under nextest, so the process-wide policy
//! is local to it.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dagg_connectors::egress::{self, Policy, Rule};
use dagg_control::cluster::{Machine, MetaMachine};
use dagg_control::meta::{CommandEnvelope, MetaCommand, MetaStore, RunCounts, Trigger};
use dagg_control::notify::{RunSummary, SmtpSettings, send_email, send_webhook};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A listener that counts the connections it accepts and answers each with `answer`: at
/// once (a server that speaks first, as SMTP does), or after reading an HTTP request.
async fn counting(answer: &'static [u8], http: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            if http {
                read_request(&mut s).await;
            }
            let _ = s.write_all(answer).await;
        }
    });
    (addr, count)
}

/// Reads one HTTP request: its head and a `content-length` body.
async fn read_request(s: &mut tokio::net::TcpStream) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = s.read(&mut buf).await else { return };
        if n == 0 {
            return;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.trim().parse::<usize>().ok()))
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return;
            }
        }
    }
}

fn summary() -> RunSummary {
    RunSummary {
        event: "run.failed".into(),
        run_id: "r1".into(),
        pipeline_id: "p1".into(),
        pipeline_name: "nightly".into(),
        pipeline_version: 1,
        status: "failed".into(),
        trigger: Trigger::Manual,
        error: Some("boom".into()),
        counts: RunCounts::default(),
        started_at: None,
        finished_at: None,
    }
}

const HTTP_OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn a_webhook_at_the_nodes_own_port_or_link_local_is_refused_uncontacted() {
    let (own, contacted) = counting(HTTP_OK, true).await;
    egress::install(Policy { own: vec![SocketAddr::from(([0, 0, 0, 0], own.port()))], ..Policy::default() });
    for url in [format!("http://{own}/hook"), format!("http://localhost:{}/hook", own.port())] {
        let e = send_webhook(&url, &summary(), Some("k")).await.unwrap_err();
        assert!(e.contains("refused by the egress policy") && e.contains("own listener"), "{url}: {e}");
    }
    let e = send_webhook("http://169.254.169.254/latest/meta-data/", &summary(), None).await.unwrap_err();
    assert!(e.contains("link-local"), "{e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(contacted.load(Ordering::SeqCst), 0, "the node's own port was contacted");
    // Another port of this machine is a webhook like any other.
    let (other, reached) = counting(HTTP_OK, true).await;
    assert_eq!(send_webhook(&format!("http://{other}/hook"), &summary(), None).await, Ok(200));
    assert_eq!(reached.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_webhooks_redirect_is_not_followed() {
    let (target, reached) = counting(HTTP_OK, true).await;
    let redirect: &'static [u8] = Box::leak(
        format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{target}/elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").into_bytes().into_boxed_slice(),
    );
    let (hook, _) = counting(redirect, true).await;
    let e = send_webhook(&format!("http://{hook}/hook"), &summary(), None).await.unwrap_err();
    assert!(e.contains("307") && e.contains("not followed"), "{e}");
    assert_eq!(reached.load(Ordering::SeqCst), 0, "the redirect was followed");
}

#[tokio::test]
async fn smtp_at_the_nodes_own_port_is_refused_uncontacted() {
    let (own, contacted) = counting(b"220 not really smtp\r\n", false).await;
    egress::install(Policy { own: vec![own], ..Policy::default() });
    let smtp = SmtpSettings { host: "localhost".into(), port: own.port(), from: "dagg@example.com".into(), username: None, password: None, timeout_seconds: 2.0 };
    let e = send_email(&smtp, &["ops@example.com".into()], &summary()).await.unwrap_err();
    assert!(e.contains("refused by the egress policy") && e.contains("own listener"), "{e}");
    let metadata = SmtpSettings { host: "169.254.169.254".into(), port: 25, ..smtp };
    let e = send_email(&metadata, &["ops@example.com".into()], &summary()).await.unwrap_err();
    assert!(e.contains("link-local"), "{e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(contacted.load(Ordering::SeqCst), 0, "the node's own port was contacted");
}

#[tokio::test]
async fn the_egress_setting_takes_effect_when_a_node_applies_restores_or_opens_it() {
    let node = Policy { allow_loopback: false, own: vec!["0.0.0.0:8001".parse().unwrap()], local_addresses: vec!["10.1.2.3".parse().unwrap()], ..Policy::default() };
    egress::install(node.clone());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MetaStore::open(&dir.path().join("a")).unwrap());
    let machine = MetaMachine { store: store.clone(), placement_changed: Arc::default() };
    // The replicated command, as every member's state machine applies it.
    let put = |value| serde_json::to_value(CommandEnvelope::new(MetaCommand::PutSetting { key: "egress".into(), value })).unwrap();
    let answer = machine.apply(&put(json!({"allow": ["db.internal"], "deny": ["127.0.0.2/32", "*.corp"], "s3_ambient_credentials": true})));
    assert_eq!(answer, json!({"ok": true}));
    let p = egress::current();
    assert_eq!(p.deny, vec![Rule::parse("127.0.0.2").unwrap(), Rule::parse("*.corp").unwrap()]);
    assert_eq!(p.allow, vec![Rule::parse("db.internal").unwrap()]);
    assert!(p.s3_ambient_credentials);
    // The node's own part is kept.
    assert!(!p.allow_loopback);
    assert_eq!((&p.own, &p.local_addresses), (&node.own, &node.local_addresses));
    let e = egress::check_servers("127.0.0.2:5432", 1).await.unwrap_err().to_string();
    assert!(e.contains("deny list") && e.contains("`127.0.0.2`"), "{e}");
    let mut dump = Vec::new();
    store.dump(&mut dump).unwrap();

    // Removed: the defaults again.
    machine.apply(&put(serde_json::Value::Null));
    let p = egress::current();
    assert!(p.allow.is_empty() && p.deny.is_empty() && !p.s3_ambient_credentials);
    assert_eq!(p.own, node.own);

    // A member that catches up from a snapshot.
    store.restore(Some(&mut dump.as_slice())).unwrap();
    assert_eq!(egress::current().deny.len(), 2);
    store.restore(None).unwrap();
    assert!(egress::current().deny.is_empty());

    // A node that starts with the setting stored.
    drop(machine);
    store.restore(Some(&mut dump.as_slice())).unwrap();
    egress::install(node.clone());
    assert!(egress::current().deny.is_empty());
    drop(store);
    let reopened = MetaStore::open(&dir.path().join("a")).unwrap();
    assert_eq!(egress::current().deny.len(), 2);
    assert_eq!(egress::current().own, node.own);
    drop(reopened);
}
