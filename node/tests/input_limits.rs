//! No input brings a node down: a `dagg serve` process is given a record nested 100 000
//! levels deep, a script that builds a 20 000-deep map, and a small gzip file that inflates
//! to one 512 MiB line. Each is refused with its reason; the node keeps answering, survives a
//! restart, and its memory stays bounded.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::http;

/// A `dagg serve` process on a free loopback port, killed when dropped.
struct Node {
    child: Child,
    addr: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PASSWORD: &str = "limits-password-1";

impl Node {
    /// Starts (or restarts) a node on the data directory `dir`.
    fn start(dir: &Path) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dagg"))
            .args(["serve", "--api-addr", "127.0.0.1:0"])
            .env("DAGG_DATA_DIR", dir)
            .env("DAGG_ADMIN_PASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dagg starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("dagg serve printed where it listens").unwrap();
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Node { child, addr }
    }

    fn token(&self) -> String {
        let (status, login) = self.call("POST", "/auth/login", None, Some(&json!({"username": "admin", "password": PASSWORD})));
        assert_eq!(status, 200, "{login}");
        login["access_token"].as_str().unwrap().to_string()
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        http(&self.addr, method, path, &headers, body)
    }

    fn healthy(&mut self) -> bool {
        if self.child.try_wait().unwrap().is_some() {
            return false;
        }
        TcpStream::connect(&self.addr).is_ok() && self.call("GET", "/health", None, None).0 == 200
    }

    /// Runs a pipeline document to its end; the run.
    fn run(&self, token: &str, doc: &Value) -> Value {
        let (status, p) = self.call("POST", "/pipelines", Some(token), Some(doc));
        assert_eq!(status, 201, "{p}");
        let (status, run) = self.call("POST", &format!("/pipelines/{}/execute", p["id"].as_str().unwrap()), Some(token), None);
        assert_eq!(status, 202, "{run}");
        self.wait_run(token, run["id"].as_str().unwrap())
    }

    fn wait_run(&self, token: &str, id: &str) -> Value {
        let start = Instant::now();
        loop {
            let (status, run) = self.call("GET", &format!("/runs/{id}"), Some(token), None);
            assert_eq!(status, 200, "{run}");
            if matches!(run["status"].as_str(), Some("success" | "warning" | "failed" | "cancelled")) {
                return run;
            }
            assert!(start.elapsed() < Duration::from_secs(300), "run {id} did not end: {run}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process's peak resident memory (VmHWM), in bytes.
    fn peak_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/PID/status");
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }
}

fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("dagg-limits").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn files(dir: &Path) -> PathBuf {
    let f = dir.join("files");
    std::fs::create_dir_all(&f).unwrap();
    f
}

/// The dead letter file's entries.
fn dead_letters(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn xml_pipeline(name: &str) -> Value {
    json!({
        "name": name,
        "source": {"connector_type": "file", "config": {"path": "deep.xml", "format": "xml"}},
        "destination": {"connector_type": "file", "config": {"path": format!("{name}.jsonl"), "format": "jsonl"}},
        "error_handling": {"dead_letter": {"connector_type": "file", "config": {"path": format!("{name}-dead.jsonl"), "format": "jsonl"}}}
    })
}

#[test]
fn a_record_nested_100000_deep_is_dead_lettered_and_the_node_survives_and_restarts() {
    let dir = data_dir();
    let n = 100_000;
    let deep = format!("<record>{}x{}</record>", "<a>".repeat(n), "</a>".repeat(n));
    std::fs::write(files(dir.path()).join("deep.xml"), format!("<records>\n<record><id>1</id></record>\n{deep}\n<record><id>3</id></record>\n</records>\n")).unwrap();
    let mut node = Node::start(dir.path());
    let token = node.token();
    let run = node.run(&token, &xml_pipeline("deep"));
    assert!(node.healthy(), "the node answers after the run");
    assert_eq!(run["counts"]["records_written"], 2, "{run}");
    let out = std::fs::read_to_string(files(dir.path()).join("deep.jsonl")).unwrap();
    assert_eq!(out, "{\"id\":\"1\"}\n{\"id\":\"3\"}\n");
    let dead = dead_letters(&files(dir.path()).join("deep-dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0]["reason"].as_str().unwrap().contains("nested 128 levels deep or more"), "{}", dead[0]);
    assert_eq!(dead[0]["position"]["line"], 3, "{}", dead[0]);

    // Killed in the middle of a second run of it: the restarted node resumes or ends the run,
    // and keeps answering.
    let (status, p) = node.call("POST", "/pipelines", Some(&token), Some(&xml_pipeline("again")));
    assert_eq!(status, 201, "{p}");
    let (status, again) = node.call("POST", &format!("/pipelines/{}/execute", p["id"].as_str().unwrap()), Some(&token), None);
    assert_eq!(status, 202, "{again}");
    std::thread::sleep(Duration::from_millis(200));
    unsafe_kill(&mut node);
    let mut node = Node::start(dir.path());
    let token = node.token();
    let run = node.wait_run(&token, again["id"].as_str().unwrap());
    assert!(run["status"].is_string(), "{run}");
    for _ in 0..10 {
        assert!(node.healthy(), "the restarted node keeps answering");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rerun = node.run(&token, &xml_pipeline("after-restart"));
    assert_eq!(rerun["counts"]["records_written"], 2, "{rerun}");
    assert!(node.healthy());
}

/// SIGKILL, as a crash would end it.
fn unsafe_kill(node: &mut Node) {
    node.child.kill().unwrap();
    node.child.wait().unwrap();
}

#[test]
fn a_script_building_a_20000_deep_map_is_a_400_and_the_node_keeps_answering() {
    let dir = data_dir();
    let mut node = Node::start(dir.path());
    let token = node.token();
    let source = "let m = #{}; for i in 0..20000 { m = #{ a: m.take() }; } record.deep = m;";
    let req = json!({
        "transformations": [{"type": "script", "source": source, "max_operations": 100000000, "timeout_ms": 60000}],
        "records": [{"x": 1}]
    });
    let (status, body) = node.call("POST", "/transformations/preview", Some(&token), Some(&req));
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nested 128 levels deep or more"), "{body}");
    assert_eq!(body["error"]["details"][0]["path"], "transformations[0]", "{body}");
    assert!(node.healthy(), "the node answers after the preview");
    // A shallow one still previews.
    let ok = json!({"transformations": [{"type": "script", "source": "record.y = #{ a: #{ b: 1 } };"}], "records": [{"x": 1}]});
    let (status, body) = node.call("POST", "/transformations/preview", Some(&token), Some(&ok));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"][0]["y"]["a"]["b"], 1, "{body}");
}

#[test]
fn a_512_mib_line_from_a_small_gzip_is_dead_lettered_in_bounded_memory() {
    let dir = data_dir();
    let gz = files(dir.path()).join("big.jsonl.gz");
    {
        let mut e = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::best());
        e.write_all(b"{\"a\":1}\n{\"s\":\"").unwrap();
        let chunk = vec![b'y'; 1 << 20];
        for _ in 0..512 {
            e.write_all(&chunk).unwrap();
        }
        e.write_all(b"\"}\n{\"a\":2}\n").unwrap();
        e.finish().unwrap();
    }
    let size = std::fs::metadata(&gz).unwrap().len();
    assert!(size < 1 << 20, "the gzip file is small: {size} bytes");
    let mut node = Node::start(dir.path());
    let token = node.token();
    let doc = json!({
        "name": "big",
        "source": {"connector_type": "file", "config": {"path": "big.jsonl.gz", "format": "jsonl"}},
        "destination": {"connector_type": "file", "config": {"path": "big-out.jsonl", "format": "jsonl"}},
        "error_handling": {"dead_letter": {"connector_type": "file", "config": {"path": "big-dead.jsonl", "format": "jsonl"}}}
    });
    let run = node.run(&token, &doc);
    assert!(node.healthy());
    assert_eq!(run["counts"]["records_written"], 2, "{run}");
    let dead = dead_letters(&files(dir.path()).join("big-dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("the line is {} bytes, over the limit of 16777216 bytes", (512u64 << 20) + 8)), "{reason}");
    assert_eq!(dead[0]["position"]["line"], 2, "{}", dead[0]);
    let peak = node.peak_memory();
    assert!(peak < 256 << 20, "peak memory {} MiB", peak >> 20);
}
