//! `dagg serve` as a process: the guide's curl example (7.3) against a fresh server, and the
//! first start's admin password.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::http;

struct Server {
    child: Child,
    addr: String,
    /// stderr lines read before the listening line.
    early: Vec<String>,
    data: std::path::PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dagg serve` on a free loopback port with a new data directory.
fn start(admin_password: Option<&str>) -> Server {
    let dir = tempfile::Builder::new().prefix("dagg-serve").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut server = start_in(dir.path(), admin_password);
    server._dir = Some(dir);
    server
}

/// [`start`] with more options for `dagg serve`.
fn start_with(admin_password: Option<&str>, args: &[&str]) -> Server {
    let dir = tempfile::Builder::new().prefix("dagg-serve").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut server = start_in_with(dir.path(), admin_password, args);
    server._dir = Some(dir);
    server
}

/// Starts `dagg serve` on a free loopback port with the data directory `data` (no master
/// key, token secret or cluster options from the test's environment).
fn start_in(data: &std::path::Path, admin_password: Option<&str>) -> Server {
    start_in_with(data, admin_password, &[])
}

fn start_in_with(data: &std::path::Path, admin_password: Option<&str>, args: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dagg"));
    cmd.args(["serve", "--api-addr", "127.0.0.1:0"]).args(args).env("DAGG_DATA_DIR", data).env_remove("DAGG_ADMIN_PASSWORD").stdout(Stdio::null()).stderr(Stdio::piped());
    for v in ["DAGG_MASTER_KEY", "DAGG_MASTER_KEY_FILE", "DAGG_JWT_SECRET", "DAGG_PEERS", "DAGG_JOIN", "DAGG_CONFIG", "DAGG_HOME"] {
        cmd.env_remove(v);
    }
    if let Some(p) = admin_password {
        cmd.env("DAGG_ADMIN_PASSWORD", p);
    }
    let mut child = cmd.spawn().expect("dagg starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut early = Vec::new();
    let addr = loop {
        let line = lines.next().unwrap_or_else(|| panic!("dagg serve ended before it listened: {early:#?}")).unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        early.push(line);
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr, early, data: data.to_path_buf(), _dir: None }
}

impl Server {
    fn files(&self) -> std::path::PathBuf {
        self.data.join("files")
    }

    /// SIGTERM, and waits for the process to end.
    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }

    /// SIGKILL: the process dies where it stands.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn login(&self, password: &str) -> String {
        let (status, login) = http(&self.addr, "POST", "/auth/login", &[("Content-Type", "application/json")], Some(&json!({"username": "admin", "password": password})));
        assert_eq!(status, 200, "{login}");
        login["access_token"].as_str().unwrap().to_string()
    }

    /// A request as `token`.
    fn call(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        http(&self.addr, method, path, &[("Authorization", auth.as_str()), ("Content-Type", "application/json")], body)
    }
}

// ---------- logins ----------

/// Wrong-password logins all at once (each `(username, extra headers)`), each on its own
/// connection:
/// the statuses, in order.
fn concurrent_logins(addr: &str, logins: Vec<(String, Vec<(String, String)>)>) -> Vec<u16> {
    let start = std::sync::Arc::new(std::sync::Barrier::new(logins.len()));
    let threads: Vec<_> = logins
        .into_iter()
        .map(|(user, headers)| {
            let (addr, start) = (addr.to_string(), start.clone());
            std::thread::spawn(move || {
                let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
                h.extend(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                start.wait();
                http(&addr, "POST", "/auth/login", &h, Some(&json!({"username": user, "password": "not-the-password"}))).0
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("a login thread")).collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[test]
fn forty_concurrent_wrong_passwords_for_one_account_get_at_most_five_checks() {
    let server = start(Some("the-admin-password"));
    let statuses = concurrent_logins(&server.addr, (0..40).map(|_| ("admin".to_string(), Vec::new())).collect());
    let (unauthorized, limited) = (count(&statuses, 401), count(&statuses, 429));
    assert!((1..=5).contains(&unauthorized), "{unauthorized} got 401: {statuses:?}");
    assert_eq!(unauthorized + limited, 40, "the rest get 429: {statuses:?}");
    // The account is locked now, for the right password too.
    let (status, _) = http(&server.addr, "POST", "/auth/login", &[("Content-Type", "application/json")], Some(&json!({"username": "admin", "password": "the-admin-password"})));
    assert_eq!(status, 429);
}

#[test]
fn two_hundred_concurrent_logins_are_answered_in_time_with_the_node_under_300_mib() {
    // No address limit in the way: every login reaches the password check.
    let server = start_with(Some("the-admin-password"), &["--login-max-failures-per-address", "100000"]);
    let began = std::time::Instant::now();
    let statuses = concurrent_logins(&server.addr, (0..200).map(|i| (if i % 10 == 0 { "admin".to_string() } else { format!("user-{i}") }, Vec::new())).collect());
    let took = began.elapsed();
    assert!(statuses.iter().all(|s| [401, 429, 503].contains(s)), "{statuses:?}");
    assert!(count(&statuses, 503) > 0, "the password checks were never full: {statuses:?}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let peak_kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).expect("VmHWM");
    assert!(peak_kib < 300 * 1024, "the node peaked at {} MiB", peak_kib / 1024);
}

#[test]
fn x_forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    // Three failures from one address, each on its own account and with its own
    // X-Forwarded-For; the fourth from that address shows what was counted.
    let attempts = |server: &Server| -> Vec<u16> {
        (1..=4)
            .map(|i| {
                let forwarded = format!("198.51.100.{i}");
                let headers = [("Content-Type", "application/json"), ("X-Forwarded-For", forwarded.as_str())];
                http(&server.addr, "POST", "/auth/login", &headers, Some(&json!({"username": format!("user-{i}"), "password": "wrong-password"}))).0
            })
            .collect()
    };
    let untrusted = start_with(Some("the-admin-password"), &["--login-max-failures-per-address", "3"]);
    assert_eq!(attempts(&untrusted), [401, 401, 401, 429], "the header from an untrusted peer changes nothing");
    let proxied = start_with(Some("the-admin-password"), &["--login-max-failures-per-address", "3", "--trusted-proxy", "127.0.0.0/8"]);
    assert_eq!(attempts(&proxied), [401, 401, 401, 401], "behind a trusted proxy each client counts apart");
}

#[test]
fn the_guides_curl_example_works_against_a_fresh_server() {
    let server = start(Some("guide-password-1"));
    let (status, health) = http(&server.addr, "GET", "/health", &[], None);
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    let json_ct = [("Content-Type", "application/json")];
    let (status, login) = http(&server.addr, "POST", "/auth/login", &json_ct, Some(&json!({"username": "admin", "password": "guide-password-1"})));
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().unwrap();

    // curl -X GET http://localhost:8001/pipelines -H 'Authorization: Bearer <your-jwt-token>' -H 'Content-Type: application/json'
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let (status, pipelines) = http(&server.addr, "GET", "/pipelines", &headers, None);
    assert_eq!(status, 200, "{pipelines}");
    assert_eq!(pipelines["total"], 0);
    assert!(pipelines["items"].as_array().unwrap().is_empty());

    // The same with the real curl, when the machine has it.
    if let Ok(out) = Command::new("curl")
        .args(["-s", "-X", "GET", &format!("http://{}/pipelines", server.addr), "-H", &format!("Authorization: Bearer {token}"), "-H", "Content-Type: application/json"])
        .output()
    {
        let body: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(body["total"], 0, "curl said: {}", String::from_utf8_lossy(&out.stdout));
    }

    let (status, _) = http(&server.addr, "GET", "/pipelines", &[], None);
    assert_eq!(status, 401, "no token, no pipelines");
}

#[test]
fn a_first_start_without_a_password_prints_a_generated_one_once() {
    let server = start(None);
    let line = server.early.iter().find(|l| l.contains("generated password")).unwrap_or_else(|| panic!("no password line in {:?}", server.early));
    let password = line.rsplit(' ').next().unwrap().trim();
    let (status, login) = http(&server.addr, "POST", "/auth/login", &[("Content-Type", "application/json")], Some(&json!({"username": "admin", "password": password})));
    assert_eq!(status, 200, "{login}");
}

/// Reads one WebSocket frame from the server (unmasked); its opcode and payload.
fn read_frame(r: &mut impl Read) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).unwrap();
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b).unwrap();
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).unwrap();
        len = u64::from_be_bytes(b);
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).unwrap();
    (h[0] & 0x0f, payload)
}

#[test]
fn the_websocket_streams_a_runs_status_changes() {
    let server = start(Some("ws-password-1"));
    let json_ct = [("Content-Type", "application/json")];
    let (_, login) = http(&server.addr, "POST", "/auth/login", &json_ct, Some(&json!({"username": "admin", "password": "ws-password-1"})));
    let token = login["access_token"].as_str().unwrap().to_string();

    // Without a token: 401, no upgrade.
    let (status, _) = http(&server.addr, "GET", "/ws", &[("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")], None);
    assert_eq!(status, 401);

    let mut ws = TcpStream::connect(&server.addr).unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "GET /ws?access_token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    ws.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (op, hello) = read_frame(&mut ws);
    assert_eq!(op, 1, "a text frame");
    let hello: Value = serde_json::from_slice(&hello).unwrap();
    assert_eq!(hello["type"], "hello");

    std::fs::create_dir_all(server.files()).unwrap();
    std::fs::write(server.files().join("in.jsonl"), "{\"status\":\"completed\"}\n{\"status\":\"pending\"}\n").unwrap();
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let doc = json!({
        "name": "ws",
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}}
    });
    let (status, p) = http(&server.addr, "POST", "/pipelines", &headers, Some(&doc));
    assert_eq!(status, 201, "{p}");
    let (status, run) = http(&server.addr, "POST", &format!("/pipelines/{}/execute", p["id"].as_str().unwrap()), &headers, None);
    assert_eq!(status, 202, "{run}");
    let mut seen = Vec::new();
    while !seen.iter().any(|s: &String| s == "success") {
        let (op, payload) = read_frame(&mut ws);
        assert_eq!(op, 1);
        let ev: Value = serde_json::from_slice(&payload).unwrap();
        if ev["type"] == "run_status" {
            assert_eq!(ev["run_id"], run["id"]);
            seen.push(ev["status"].as_str().unwrap().to_string());
            if ev["status"] == "success" {
                assert_eq!(ev["counts"]["records_written"], 2);
            }
        }
        assert!(seen.len() < 10, "{seen:?}");
    }
    assert_eq!(seen, ["pending", "running", "success"]);

    // Logging out ends the socket too (within its 2 s re-check).
    let (status, _) = http(&server.addr, "POST", "/auth/logout", &headers, None);
    assert_eq!(status, 204);
    let closed_within = std::time::Instant::now();
    loop {
        let (op, payload) = read_frame(&mut ws);
        if op == 8 {
            assert!(String::from_utf8_lossy(&payload).contains("session ended"), "{payload:?}");
            break;
        }
        assert!(closed_within.elapsed() < Duration::from_secs(10), "the socket kept sending after logout");
    }
}

/// A webhook receiver on loopback: each request's head (lower-cased) and body, in order.
fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            let len = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0);
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            if tx.send((head, body)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

/// Every file below `dir` (folders walked, links not followed).
fn files_below(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            out.push(e.path());
            files_below(&e.path(), out);
        } else if ty.is_file() {
            out.push(e.path());
        }
    }
}

/// Every maximal run of bytes `keep` accepts, at least `min` long.
fn runs_of(bytes: &[u8], min: usize, keep: impl Fn(u8) -> bool) -> Vec<String> {
    bytes.split(|b| !keep(*b)).filter(|r| r.len() >= min).map(|r| String::from_utf8_lossy(r).into_owned()).collect()
}

#[test]
#[cfg(unix)]
fn a_nodes_data_directory_is_private_and_holds_no_secret_in_the_clear() {
    use std::os::unix::fs::PermissionsExt;
    const WEBHOOK_SECRET: &str = "webhook-signing-secret-4f1c9a";
    const SMTP_PASSWORD: &str = "smtp-relay-password-77d2e0";
    let root = tempfile::Builder::new().prefix("dagg-private").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = root.path().join("data");
    let server = start_in(&data, Some("private-password-1"));
    // No key configured: one was generated beside the data, and the log says so.
    let said = server.early.join("\n");
    assert!(said.contains("master.key") && said.contains("DAGG_MASTER_KEY"), "{said}");
    let token = server.login("private-password-1");

    // Notification settings with two secrets; what GET shows, sent back, keeps them.
    let (hook, hooks) = webhook_receiver();
    let settings = json!({"notifications": {"webhook_secret": WEBHOOK_SECRET, "smtp": {"host": "127.0.0.1", "port": 9, "from": "dagg@example.com", "username": "mailer", "password": SMTP_PASSWORD}}});
    let (status, shown) = server.call(&token, "PUT", "/settings", Some(&settings));
    assert_eq!(status, 200, "{shown}");
    let (_, shown) = server.call(&token, "GET", "/settings", None);
    assert_eq!((shown["notifications"]["webhook_secret"].as_str(), shown["notifications"]["smtp"]["password"].as_str()), (Some("********"), Some("********")), "{shown}");
    let (status, _) = server.call(&token, "PUT", "/settings", Some(&json!({"notifications": shown["notifications"].clone()})));
    assert_eq!(status, 200);

    // A failing run's webhook is still signed with the secret first given.
    let doc = json!({
        "name": "fails-and-tells",
        "source": {"connector_type": "file", "config": {"path": "missing.jsonl", "format": "jsonl"}},
        "destination": {"connector_type": "file", "config": {"path": "out.jsonl", "format": "jsonl"}},
        "error_handling": {"notifications": {"webhook": hook}}
    });
    let (status, p) = server.call(&token, "POST", "/pipelines", Some(&doc));
    assert_eq!(status, 201, "{p}");
    let (status, run) = server.call(&token, "POST", &format!("/pipelines/{}/execute", p["id"].as_str().unwrap()), None);
    assert_eq!(status, 202, "{run}");
    let (head, body) = hooks.recv_timeout(Duration::from_secs(30)).expect("the webhook was called");
    let want = dagg_api::notify::signature(WEBHOOK_SECRET.as_bytes(), &body);
    assert!(head.contains(&format!("x-dagg-signature: {want}")), "signed with another secret than the one given: {head}");
    server.stop();

    // The data directory and everything in it: the node's user's alone.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    let mut all = Vec::new();
    files_below(&data, &mut all);
    assert!(all.iter().any(|p| p.ends_with("master.key")), "no generated key in {all:?}");
    assert!(all.len() > 5, "{all:?}");
    for p in &all {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(p), want, "{} is {:o}", p.display(), mode(p));
    }

    // No secret in the clear in any byte of it; each is there sealed with the master key.
    let key = dagg_connectors::secrets::MasterKey::from_file(&data.join("master.key")).unwrap();
    let jwt = dagg_api::auth::JwtKeys::new(b"unused", Duration::from_secs(60));
    let signs = |secret: &str| dagg_api::auth::JwtKeys::new(secret.as_bytes(), Duration::from_secs(60)).check(&token).is_some();
    assert!(jwt.check(&token).is_none());
    let mut opened = Vec::new();
    for p in all.iter().filter(|p| p.is_file()) {
        let bytes = std::fs::read(p).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(WEBHOOK_SECRET), "the webhook secret is in the clear in {}", p.display());
        assert!(!text.contains(SMTP_PASSWORD), "the SMTP password is in the clear in {}", p.display());
        // The token secret is 64 hex digits: no run of them in any file signs the token.
        for run in runs_of(&bytes, 64, |b| b.is_ascii_hexdigit()) {
            for w in 0..=run.len() - 64 {
                assert!(!signs(&run[w..w + 64]), "the token secret is in the clear in {}", p.display());
            }
        }
        for sealed in runs_of(&bytes, 40, |b| b.is_ascii_alphanumeric() || b"+/=:".contains(&b)) {
            if let Some(at) = sealed.find("enc:v1:")
                && let Ok(clear) = key.decrypt(&sealed[at..])
            {
                opened.push(clear);
            }
        }
    }
    assert!(opened.iter().any(|c| c == WEBHOOK_SECRET), "the webhook secret is not stored sealed");
    assert!(opened.iter().any(|c| c == SMTP_PASSWORD), "the SMTP password is not stored sealed");
    assert!(opened.iter().any(|c| signs(c)), "the token secret is not stored sealed");

    // After a restart the sealed token secret still checks the tokens it signed.
    let again = start_in(&data, None);
    let (status, _) = again.call(&token, "GET", "/pipelines", None);
    assert_eq!(status, 200, "the token from before the restart");
}

/// Every connector secret the test below saves, each unique so a byte search finds it.
const CONNECTOR_SECRETS: &[&str] = &[
    "rest-header-secret-9c1e5b",
    "rest-query-secret-3a7d20",
    "kafka-sasl-secret-51be8f",
    "rabbit-password-secret-e40c17",
];

/// Issue 16: a REST header value under any name, a secret query parameter, a Kafka SASL
/// password and a RabbitMQ password, saved as connectors and used in a pipeline, are shown
/// to nobody (a viewer's lists and details, versions, diffs; the admin's audit log) and are
/// in no file of the data directory in the clear: each is there sealed.
#[test]
fn connector_secrets_are_shown_to_no_viewer_and_sealed_in_every_file_of_the_data_directory() {
    let [header, query, sasl, rabbit] = [CONNECTOR_SECRETS[0], CONNECTOR_SECRETS[1], CONNECTOR_SECRETS[2], CONNECTOR_SECRETS[3]];
    let root = tempfile::Builder::new().prefix("dagg-secrets").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = root.path().join("data");
    let server = start_in(&data, Some("secrets-password-1"));
    let admin = server.login("secrets-password-1");
    let (status, v) = server.call(&admin, "POST", "/users", Some(&json!({"username": "vera", "role": "viewer", "password": "viewer-password-1"})));
    assert_eq!(status, 201, "{v}");
    let (status, login) = http(&server.addr, "POST", "/auth/login", &[("Content-Type", "application/json")], Some(&json!({"username": "vera", "password": "viewer-password-1"})));
    assert_eq!(status, 200, "{login}");
    let viewer = login["access_token"].as_str().unwrap().to_string();

    let rest = json!({"url": "https://api.example.com/orders", "headers": {"X-Tenant-Credential": header}, "secret_query_params": {"access_token": query}, "query_params": {"sort": "id"}});
    let kafka = json!({"topic": "orders", "bootstrap_servers": "127.0.0.1:9092", "properties": {"security.protocol": "sasl_plaintext", "sasl.mechanism": "PLAIN", "sasl.username": "dagg", "sasl.password": sasl}});
    let rabbitmq = json!({"url": "amqp://127.0.0.1:5672/%2f", "username": "dagg", "password": rabbit, "queue": "orders"});
    let mut ids = Vec::new();
    for (name, ct, config) in [("rest", "rest_api", &rest), ("kafka", "kafka", &kafka), ("rabbit", "rabbitmq", &rabbitmq)] {
        let (status, c) = server.call(&admin, "POST", "/connectors", Some(&json!({"name": name, "connector_type": ct, "config": config})));
        assert_eq!(status, 201, "{c}");
        ids.push(c["id"].as_str().unwrap().to_string());
    }
    let doc = json!({
        "name": "secrets-everywhere",
        "source": {"connector_type": "rest_api", "config": rest},
        "destinations": [{"connector_type": "kafka", "config": kafka}, {"connector_type": "rabbitmq", "config": rabbitmq}],
        "error_handling": {"dead_letter": {"connector_type": "rabbitmq", "config": rabbitmq}}
    });
    let (status, p) = server.call(&admin, "POST", "/pipelines", Some(&doc));
    assert_eq!(status, 201, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    // What an editor read, sent back with a change elsewhere, keeps the stored secrets.
    let mut shown = p["document"].clone();
    shown["description"] = json!("second version");
    let (status, p2) = server.call(&admin, "PUT", &format!("/pipelines/{id}"), Some(&shown));
    assert_eq!(status, 200, "{p2}");
    assert_eq!(p2["version"], 2, "{p2}");
    let (status, c) = server.call(&admin, "PUT", &format!("/connectors/{}", ids[0]), Some(&json!({"name": "rest", "connector_type": "rest_api", "config": {"url": "https://api.example.com/orders", "headers": {"X-Tenant-Credential": "********"}, "secret_query_params": {"access_token": "********"}, "rate_limit": 5}})));
    assert_eq!(status, 200, "{c}");

    let mut answers = Vec::new();
    for path in [
        "/connectors".to_string(),
        format!("/connectors/{}", ids[0]),
        format!("/connectors/{}", ids[1]),
        format!("/connectors/{}", ids[2]),
        format!("/pipelines/{id}"),
        format!("/pipelines/{id}/versions"),
        format!("/pipelines/{id}/versions/1"),
        format!("/pipelines/{id}/versions/2"),
        format!("/pipelines/{id}/diff?from=1&to=2"),
    ] {
        let (status, v) = server.call(&viewer, "GET", &path, None);
        assert_eq!(status, 200, "{path}: {v}");
        answers.push((path, v.to_string()));
    }
    let (status, audit) = server.call(&admin, "GET", "/audit?page_size=500", None);
    assert_eq!(status, 200, "{audit}");
    answers.push(("/audit".into(), audit.to_string()));
    for (path, text) in &answers {
        for secret in CONNECTOR_SECRETS {
            assert!(!text.contains(secret), "GET {path} shows `{secret}`: {text}");
        }
    }
    let (_, one) = server.call(&viewer, "GET", &format!("/connectors/{}", ids[0]), None);
    assert_eq!(one["config"]["headers"]["X-Tenant-Credential"], "********", "{one}");
    assert_eq!(one["config"]["secret_query_params"]["access_token"], "********", "{one}");
    server.stop();

    // No byte of any file holds one in the clear; each is stored sealed.
    let key = dagg_connectors::secrets::MasterKey::from_file(&data.join("master.key")).unwrap();
    let mut all = Vec::new();
    files_below(&data, &mut all);
    let mut opened = Vec::new();
    for p in all.iter().filter(|p| p.is_file()) {
        let bytes = std::fs::read(p).unwrap();
        for secret in CONNECTOR_SECRETS {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "`{secret}` is in the clear in {}", p.display());
        }
        for sealed in runs_of(&bytes, 40, |b| b.is_ascii_alphanumeric() || b"+/=:".contains(&b)) {
            if let Some(at) = sealed.find("enc:v1:")
                && let Ok(clear) = key.decrypt(&sealed[at..])
            {
                opened.push(clear);
            }
        }
    }
    for secret in CONNECTOR_SECRETS {
        assert!(opened.iter().any(|c| c == secret), "`{secret}` is not stored sealed");
    }
}

/// Waits up to `limit` for `f` to give something.
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "waited {} s for {what}", limit.as_secs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_run_whose_node_is_killed_each_time_it_starts_ends_failed_after_its_retry_budget() {
    let root = tempfile::Builder::new().prefix("dagg-crashloop").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = root.path().join("data");
    let mut server = start_in(&data, Some("loop-password-1"));
    let token = server.login("loop-password-1");
    // A destination that takes the connection and never answers: every attempt is still
    // running when its node dies.
    let hold = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/in", hold.local_addr().unwrap());
    std::thread::spawn(move || {
        let held: Vec<_> = hold.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    std::fs::write(server.files().join("in.jsonl"), (0..100).map(|i| format!("{{\"id\":{i}}}\n")).collect::<String>()).unwrap();
    let doc = json!({
        "name": "kills-its-node",
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "destination": {"connector_type": "rest_api", "config": {"url": url, "method": "POST"}},
        "error_handling": {"retry_policy": {"max_retries": 2}}
    });
    let (status, p) = server.call(&token, "POST", "/pipelines", Some(&doc));
    assert_eq!(status, 201, "{p}");
    let (status, run) = server.call(&token, "POST", &format!("/pipelines/{}/execute", p["id"].as_str().unwrap()), None);
    assert_eq!(status, 202, "{run}");
    let run_id = run["id"].as_str().unwrap().to_string();
    // The kinds of the run's log entries, in order.
    let kinds = |s: &Server| -> Vec<String> {
        let (_, logs) = s.call(&token, "GET", &format!("/runs/{run_id}/logs?page_size=500"), None);
        logs["items"].as_array().map(|a| a.iter().filter_map(|e| e["kind"].as_str().map(String::from)).collect()).unwrap_or_default()
    };
    let count = |k: &[String], kind: &str| k.iter().filter(|e| *e == kind).count();
    // The input kills the node at every start (here: the test does, once it runs).
    for deaths in 1..=3 {
        let mut last = Vec::new();
        let limit = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < limit {
            last = kinds(&server);
            if count(&last, "resumed") == deaths - 1 && last.last().is_some_and(|k| k == "started") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(last.last().is_some_and(|k| k == "started"), "start {deaths} never came: {last:?}");
        // What the node wrote reaches the disk (sled flushes every 500 ms) before it dies.
        std::thread::sleep(Duration::from_millis(1500));
        server.kill();
        server = start_in(&data, None);
    }
    let done = wait_for(Duration::from_secs(60), "the run to end", || {
        let (_, r) = server.call(&token, "GET", &format!("/runs/{run_id}"), None);
        (r["status"] != "running" && r["status"] != "retrying").then_some(r)
    });
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"], "the node died 3 times during this run", "{done}");
    let log = kinds(&server);
    assert_eq!((count(&log, "resumed"), log.last().map(String::as_str)), (2, Some("finished")), "{log:?}");
    // The node stays up, and does not start the run again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(http(&server.addr, "GET", "/health", &[], None).0, 200);
    assert!(server.child.try_wait().unwrap().is_none(), "the node stopped");
    assert_eq!(kinds(&server), log);
}
