//! `dagg serve` as a process: the guide's curl example (7.3) against a fresh server, and the
//! first start's admin password.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

struct Server {
    child: Child,
    addr: String,
    /// stderr lines read before the listening line.
    early: Vec<String>,
    _dir: tempfile::TempDir,
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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dagg"));
    cmd.args(["serve", "--api-addr", "127.0.0.1:0"]).env("DAGG_DATA_DIR", dir.path()).env_remove("DAGG_ADMIN_PASSWORD").stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(p) = admin_password {
        cmd.env("DAGG_ADMIN_PASSWORD", p);
    }
    let mut child = cmd.spawn().expect("dagg starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut early = Vec::new();
    let addr = loop {
        let line = lines.next().expect("dagg serve printed where it listens").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        early.push(line);
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr, early, _dir: dir }
}

impl Server {
    fn files(&self) -> std::path::PathBuf {
        self._dir.path().join("files")
    }
}

/// One HTTP/1.1 request; the status and the JSON body.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, rest) = resp.split_once("\r\n\r\n").unwrap();
    let text = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
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
}
