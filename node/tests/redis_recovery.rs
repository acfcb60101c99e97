//! Exactly once from a Redis stream to a Redis stream across crashes: `dagg run` of an
//! unbounded pipeline (stream source → transformations → stream destination) killed with
//! SIGKILL twice mid-stream, started again, then stopped with SIGTERM: the destination stream
//! holds every entry once, transformed, and the group has acknowledged every source entry.
//! Needs the machine's Redis on 127.0.0.1:6379. The test talks RESP itself (a few lines
//! below) so that the node crate needs no Redis client.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const N: u64 = 60_000;

/// A reply, as far as this test needs one.
#[derive(Debug)]
enum Resp {
    Text(String),
    Int(i64),
    Nil,
    Array(Vec<Resp>),
}

struct Redis {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Redis {
    fn connect() -> Redis {
        let s = TcpStream::connect("127.0.0.1:6379").expect("Redis on 127.0.0.1:6379 is needed (redis-server --daemonize yes)");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Redis { r: BufReader::new(s.try_clone().unwrap()), w: s }
    }

    fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w.write_all(out.as_bytes()).unwrap();
    }

    fn read(&mut self) -> Resp {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let (kind, rest) = line.trim_end().split_at(1);
        match kind {
            "+" => Resp::Text(rest.to_string()),
            "-" => panic!("Redis error: {rest}"),
            ":" => Resp::Int(rest.parse().unwrap()),
            "$" if rest == "-1" => Resp::Nil,
            "$" => {
                let mut buf = vec![0; rest.parse::<usize>().unwrap() + 2];
                std::io::Read::read_exact(&mut self.r, &mut buf).unwrap();
                buf.truncate(buf.len() - 2);
                Resp::Text(String::from_utf8(buf).unwrap())
            }
            "*" if rest == "-1" => Resp::Nil,
            "*" => Resp::Array((0..rest.parse::<usize>().unwrap()).map(|_| self.read()).collect()),
            other => panic!("unexpected reply {other}{rest}"),
        }
    }

    fn cmd(&mut self, args: &[&str]) -> Resp {
        self.send(args);
        self.read()
    }

    fn int(&mut self, args: &[&str]) -> i64 {
        match self.cmd(args) {
            Resp::Int(n) => n,
            other => panic!("{args:?}: {other:?}"),
        }
    }
}

/// `XADD` of `ids` as JSON in the field `data`, pipelined.
fn publish(r: &mut Redis, stream: &str, ids: std::ops::RangeInclusive<u64>) {
    let n = ids.clone().count();
    for chunk in ids.collect::<Vec<_>>().chunks(1000) {
        for i in chunk {
            let body = json!({"id": i, "name": format!("item number {i}"), "qty": i % 7}).to_string();
            r.send(&["XADD", stream, "*", "data", &body]);
        }
        for _ in chunk {
            r.read();
        }
    }
    assert!(n > 0);
}

fn spawn(home: &std::path::Path, pipeline: &std::path::Path) -> Child {
    dagg().env("DAGG_HOME", home).args(["run", "--json", pipeline.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits until the stream holds at least `n` entries (or the process ended, or time ran out).
fn wait_len(r: &mut Redis, stream: &str, n: i64, child: &mut Child, limit: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let len = r.int(&["XLEN", stream]);
        if len >= n || started.elapsed() > limit || child.try_wait().unwrap().is_some() {
            return len;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Every record of the destination stream (its `data` field as JSON).
fn records(r: &mut Redis, stream: &str) -> Vec<Value> {
    let Resp::Array(entries) = r.cmd(&["XRANGE", stream, "-", "+"]) else { panic!("XRANGE") };
    entries
        .into_iter()
        .map(|e| {
            let Resp::Array(mut e) = e else { panic!() };
            let Some(Resp::Array(fields)) = e.pop() else { panic!() };
            match &fields[..] {
                [Resp::Text(k), Resp::Text(v)] if k == "data" => serde_json::from_str(v).unwrap(),
                other => panic!("unexpected fields {other:?}"),
            }
        })
        .collect()
}

#[test]
fn redis_stream_to_redis_stream_killed_twice_delivers_every_entry_exactly_once() {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let (input, output) = (format!("dagg-run-in-{id}"), format!("dagg-run-out-{id}"));
    let mut r = Redis::connect();
    publish(&mut r, &input, 1..=N);

    let dir = tempfile::tempdir().unwrap();
    let doc = json!({
        "name": format!("redis-to-redis-{id}"),
        // No `group`: the pipeline's name is the consumer group.
        "source": {"connector_type": "redis", "config": {"url": "redis://127.0.0.1:6379", "stream": input, "format": "json"}},
        "transformations": [
            {"type": "field_mapping", "field_name": "name", "operation": "title_case"},
            {"type": "field_calculation", "field_name": "double", "operation": "multiply", "parameters": {"source_fields": ["qty", "qty"]}}
        ],
        "destination": {"connector_type": "redis", "config": {"url": "redis://127.0.0.1:6379", "stream": output, "format": "json"}},
        "checkpoint": {"interval_seconds": 0.2}
    });
    let pipeline = dir.path().join("p.json");
    std::fs::write(&pipeline, doc.to_string()).unwrap();
    let home = dir.path().join("home");

    // Two crashes mid-stream: once a fifth of the entries are out, once more than half.
    let mut resumed = 0;
    for at in [N as i64 / 5, N as i64 / 2] {
        let mut child = spawn(&home, &pipeline);
        let len = wait_len(&mut r, &output, at, &mut child, Duration::from_secs(120));
        resumed += usize::from(kill_mid_stream(child, len, N as i64, "entries"));
    }
    assert!(resumed >= 1, "the second start resumed from a checkpoint");

    // Started again: it catches up, and SIGTERM stops it gracefully.
    let mut child = spawn(&home, &pipeline);
    let len = wait_len(&mut r, &output, N as i64, &mut child, Duration::from_secs(120));
    assert!(len >= N as i64, "every entry arrived within the time limit: {len} of {N}");
    assert_eq!(len, N as i64, "more entries than were sent: some were written twice");
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a stopped unbounded run exits 0: {}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "success", "{summary}");

    let got = records(&mut r, &output);
    assert_eq!(got.len(), N as usize, "no entry twice");
    let ids: HashSet<u64> = got.iter().map(|v| v["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), N as usize, "every entry once");
    for v in &got {
        let qty = v["qty"].as_i64().unwrap();
        assert_eq!(v["double"].as_i64(), Some(qty * qty), "{v}");
        assert!(v["name"].as_str().unwrap().starts_with("Item Number "), "{v}");
    }
    // The graceful stop acknowledged everything: nothing pending in the group, which is named
    // after the pipeline.
    let Resp::Array(summary) = r.cmd(&["XPENDING", &input, &format!("redis-to-redis-{id}")]) else { panic!("XPENDING") };
    assert!(matches!(summary[0], Resp::Int(0)), "entries left unacknowledged: {summary:?}");
    // The destination's marker went with the run's end.
    let Resp::Array(keys) = r.cmd(&["KEYS", &format!("dagg:sink:{output}-*")]) else { panic!("KEYS") };
    assert!(keys.is_empty(), "markers left: {keys:?}");
    r.int(&["DEL", &input, &output]);
}
