//! Helpers for tests that drive the `dagg` binary.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use serde_json::Value;

/// The binary, with its own data directory so that tests running in parallel never share
/// run state.
pub fn dagg() -> Command {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dagg-home-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let mut c = Command::new(env!("CARGO_BIN_EXE_dagg"));
    c.env("DAGG_HOME", home);
    c
}

pub fn run(args: &[&str]) -> Output {
    dagg().args(args).output().expect("the dagg binary starts")
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Copies a folder (one level of files) into a new temporary folder.
pub fn copy_case(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// Reads a JSON array file, or JSON Lines.
pub fn read_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t = text.trim();
    if t.is_empty() {
        return vec![];
    }
    match serde_json::from_str::<Value>(t) {
        Ok(Value::Array(a)) => a,
        Ok(v) => vec![v],
        Err(_) => t.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect(),
    }
}

fn is_rfc3339(s: &str) -> bool {
    chrono_like(s)
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fff](Z|±HH:MM)`, as the fixtures' README means it.
fn chrono_like(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    if b.len() < 20 || !digits(0..4) || b[4] != b'-' || !digits(5..7) || b[7] != b'-' || !digits(8..10) {
        return false;
    }
    if !(b[10] == b'T' || b[10] == b' ') || !digits(11..13) || b[13] != b':' || !digits(14..16) || b[16] != b':' || !digits(17..19) {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &s[i..] {
        "Z" => true,
        tz => tz.len() >= 5 && (tz.starts_with('+') || tz.starts_with('-')),
    }
}

/// Equal as JSON values with key order and integer-versus-float kept; `"<RFC 3339 timestamp>"`
/// matches any RFC 3339 string and `"<any>"` anything (the fixtures' README).
pub fn matches(exp: &Value, got: &Value) -> bool {
    match (exp, got) {
        (Value::String(s), _) if s == "<any>" => true,
        (Value::String(s), Value::String(g)) if s == "<RFC 3339 timestamp>" => is_rfc3339(g),
        (Value::Object(e), Value::Object(g)) => e.keys().eq(g.keys()) && e.iter().all(|(k, v)| matches(v, &g[k])),
        (Value::Array(e), Value::Array(g)) => e.len() == g.len() && e.iter().zip(g).all(|(a, b)| matches(a, b)),
        (Value::Number(e), Value::Number(g)) => match (e.as_i64(), g.as_i64()) {
            (Some(a), Some(b)) => a == b,
            (None, None) => {
                let (a, b) = (e.as_f64().unwrap(), g.as_f64().unwrap());
                (a - b).abs() <= 1e-9 * a.abs().max(1.0)
            }
            _ => false,
        },
        _ => exp == got,
    }
}

#[test]
fn matcher_keeps_types_and_order() {
    use serde_json::json;
    assert!(matches(&json!({"a": 1, "b": 2.5}), &json!({"a": 1, "b": 2.5})));
    assert!(!matches(&json!({"a": 1, "b": 2}), &json!({"b": 2, "a": 1})));
    assert!(!matches(&json!(1), &json!(1.0)));
    assert!(matches(&json!("<RFC 3339 timestamp>"), &json!("2025-01-16T08:00:00.000Z")));
    assert!(!matches(&json!("<RFC 3339 timestamp>"), &json!("2025-01-16")));
}

/// One HTTP/1.1 request to `addr` (`Connection: close`); the status and the JSON body
/// (`null` when it is not JSON), chunked bodies joined.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
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
        s = &rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// SIGKILLs an unbounded run that has delivered `reached` of its `total` items (`unit` names
/// them in messages), after checking it was still running and that the crash comes
/// mid-stream; whether its log says it had resumed from a checkpoint.
#[allow(dead_code)] // not every test binary that shares this module kills a run
pub fn kill_mid_stream(mut child: Child, reached: i64, total: i64, unit: &str) -> bool {
    assert!(child.try_wait().unwrap().is_none(), "an unbounded run does not end by itself");
    child.kill().unwrap(); // SIGKILL
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("killed at {reached} {unit}; its stderr: {stderr}");
    assert!(reached < total, "killed at {reached} {unit}: too late to test a crash mid-stream");
    stderr.contains("resuming run")
}
