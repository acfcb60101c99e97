//! A cluster of `dagg serve` processes on loopback for the cluster tests, with a TCP proxy
//! the test controls in front of every node's peer port.
//!
//! Node `i` listens for peers on `127.0.0.<i+1>` (its outgoing peer connections leave from
//! that address too) and advertises its proxy on `127.0.0.1`. Cutting node `i` off makes
//! every proxy refuse (and drop) connections to it and from it, in both directions, while
//! the test still reaches every API directly.
//!
//! The peer ports are authenticated: by default with one cluster token file the nodes share
//! (`--cluster-token-file`); [`Cluster::use_certs`] gives them certificates made by
//! `dagg cert` instead (mutual TLS).

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const PASSWORD: &str = "cluster-test-password-1";

/// A free TCP port on `ip`.
/// A port that is free now, picked below the kernel's ephemeral range (32768 and up): a
/// port the kernel hands out for `:0` could be taken by another test's outgoing connection
/// before the node binds it ("Address already in use").
pub fn free_port(ip: IpAddr) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        // A random start per call: tests run in parallel processes.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if TcpListener::bind(SocketAddr::new(ip, port)).is_ok() {
            return port;
        }
    }
}

/// Node `i` listens (and connects from) 127.0.0.(i+2). 127.0.0.1 is left to the proxies and
/// the APIs, whose ports are picked after the nodes': a port `free_port` returned is free
/// again once returned, and on the same address another bind could take it.
fn node_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, (i + 2) as u8))
}

/// The node index of a connection from `ip`, when it comes from a node's address.
fn node_of(ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && (2..=17).contains(&v4.octets()[3]) => Some(v4.octets()[3] as usize - 2),
        _ => None,
    }
}

#[derive(Default)]
struct ProxyState {
    /// Nodes (by index) cut off from the others.
    cut: HashSet<usize>,
    /// Open connections: (from node, to node, the two sockets).
    conns: Vec<(Option<usize>, usize, TcpStream, TcpStream)>,
}

/// The proxies in front of every node's peer port.
#[derive(Clone)]
pub struct Proxies {
    state: Arc<Mutex<ProxyState>>,
    pub addrs: Vec<String>,
}

impl Proxies {
    /// One proxy per target (`127.0.0.1:<port>` -> `targets[i]`).
    pub fn start(targets: &[SocketAddr]) -> Proxies {
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let mut addrs = Vec::new();
        for (to, target) in targets.iter().enumerate() {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            addrs.push(l.local_addr().unwrap().to_string());
            let st = state.clone();
            let target = *target;
            std::thread::spawn(move || {
                for conn in l.incoming() {
                    let Ok(client) = conn else { continue };
                    let from = client.peer_addr().ok().and_then(|a| node_of(a.ip()));
                    {
                        let s = st.lock().unwrap();
                        if s.cut.contains(&to) || from.is_some_and(|f| s.cut.contains(&f)) {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                    }
                    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    st.lock().unwrap().conns.push((from, to, client.try_clone().unwrap(), server.try_clone().unwrap()));
                    for (mut a, mut b) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut a, &mut b);
                            let _ = a.shutdown(Shutdown::Both);
                            let _ = b.shutdown(Shutdown::Both);
                        });
                    }
                }
            });
        }
        Proxies { state, addrs }
    }

    /// Cuts node `i` off: nothing reaches it, nothing from it reaches anyone.
    pub fn cut(&self, i: usize) {
        let mut s = self.state.lock().unwrap();
        s.cut.insert(i);
        s.conns.retain(|(from, to, a, b)| {
            if *to == i || *from == Some(i) {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    pub fn heal(&self) {
        self.state.lock().unwrap().cut.clear();
    }
}

pub struct Node {
    pub index: usize,
    pub id: u64,
    pub api: String,
    pub peer_listen: SocketAddr,
    pub advertise: String,
    pub dir: PathBuf,
    pub peers: String,
    pub shared: Option<PathBuf>,
    /// Start alone (a one-node cluster) instead of with the peers list.
    pub alone: bool,
    /// Join through this API URL instead of the peers list.
    pub join: Option<String>,
    /// More environment for the process.
    pub env: Vec<(String, String)>,
    /// More arguments for `dagg serve`.
    pub args: Vec<String>,
    /// The shared cluster token file (`--cluster-token-file`), when the node has one.
    pub token_file: Option<PathBuf>,
    child: Option<Child>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Node {
    /// Starts the process and waits until its API listens.
    pub fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dagg"));
        cmd.args(["serve", "--api-addr", &self.api, "--node-id", &self.id.to_string(), "--peer-addr", &self.peer_listen.to_string()])
            .args(["--advertise-addr", &self.advertise, "--allow-any-file-path"])
            .env("DAGG_DATA_DIR", &self.dir)
            .env("DAGG_CLUSTER_TOKEN", "cluster-test-token")
            // One master key for every member: each opens what another sealed (the token secret).
            .env("DAGG_MASTER_KEY", "5d1f0c9e8b7a69584736251403f2e1d0c9b8a79685746352413021f0e0d0c0b0")
            .env("DAGG_ADMIN_PASSWORD", PASSWORD)
            .env("DAGG_LOG", std::env::var("DAGG_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .env_remove("DAGG_JOIN")
            .env_remove("DAGG_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match (&self.join, self.alone) {
            (Some(url), _) => {
                cmd.args(["--join", url]);
            }
            (None, true) => {}
            (None, false) => {
                cmd.args(["--peers", &self.peers]);
            }
        }
        if let Some(s) = &self.shared {
            cmd.args(["--shared-dir", &s.display().to_string()]);
        }
        if let Some(f) = &self.token_file {
            cmd.args(["--cluster-token-file", &f.display().to_string()]);
        }
        cmd.args(&self.args);
        let mut child = cmd.spawn().expect("dagg starts");
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = self.log.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if l.contains("listening on http") {
                    let _ = tx.send(());
                }
                log.lock().unwrap().push(l);
            }
        });
        self.child = Some(child);
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            panic!("node {} did not start:\n{}", self.id, self.log.lock().unwrap().join("\n"));
        }
    }

    /// SIGTERM, as a rolling restart does; SIGKILL if it has not exited in 20 s.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process's resident memory in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub proxies: Proxies,
    pub root: tempfile::TempDir,
    /// The cluster token every node reads (`--cluster-token-file`).
    pub token_file: PathBuf,
    /// The cluster CA's directory (`ca.crt`, `ca.key`) after [`Cluster::use_certs`].
    pub ca_dir: Option<PathBuf>,
    /// One cluster test at a time (each runs in its own process under nextest): three nodes
    /// and their elections on two shared cores are what the timings assume.
    _turn: std::fs::File,
}

impl Cluster {
    /// `n` nodes with proxies; not started.
    pub fn new(n: usize, shared: bool) -> Cluster {
        let turn = std::fs::File::create(Path::new(env!("CARGO_TARGET_TMPDIR")).join("dagg-cluster-tests.lock")).unwrap();
        turn.lock().unwrap();
        let root = tempfile::Builder::new().prefix("dagg-cluster").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let listens: Vec<SocketAddr> = (0..n).map(|i| SocketAddr::new(node_ip(i), free_port(node_ip(i)))).collect();
        let proxies = Proxies::start(&listens);
        let peers = proxies.addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
        let shared_dir = shared.then(|| root.path().join("shared"));
        let token_file = root.path().join("cluster-token");
        std::fs::write(&token_file, format!("cluster-test-{}", uuid::Uuid::new_v4().simple())).unwrap();
        let nodes = (0..n)
            .map(|i| Node {
                index: i,
                id: i as u64 + 1,
                api: format!("127.0.0.1:{}", free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))),
                peer_listen: listens[i],
                advertise: proxies.addrs[i].clone(),
                dir: root.path().join(format!("node{}", i + 1)),
                peers: peers.clone(),
                shared: shared_dir.clone(),
                alone: false,
                join: None,
                env: Vec::new(),
                args: Vec::new(),
                token_file: Some(token_file.clone()),
                child: None,
                log: Arc::default(),
            })
            .collect();
        Cluster { nodes, proxies, root, token_file, ca_dir: None, _turn: turn }
    }

    /// The peer ports on mutual TLS: a CA and a certificate per node made by `dagg cert`,
    /// naming the host the node advertises (its proxy's, 127.0.0.1), and no token file.
    pub fn use_certs(&mut self) {
        let ca = self.root.path().join("ca");
        dagg_ok(&["cert", "ca", "--out", ca.to_str().unwrap()]);
        for n in &mut self.nodes {
            let dir = self.root.path().join(format!("certs{}", n.id));
            let host = n.advertise.rsplit_once(':').unwrap().0.to_string();
            dagg_ok(&["cert", "node", "--node-id", &n.id.to_string(), "--host", &host, "--host", "localhost", "--ca-dir", ca.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
            n.token_file = None;
            for (flag, file) in [("--peer-cert", dir.join("node.crt")), ("--peer-key", dir.join("node.key")), ("--peer-ca", ca.join("ca.crt"))] {
                n.args.extend([flag.to_string(), file.display().to_string()]);
            }
        }
        self.ca_dir = Some(ca);
    }

    /// The cluster token the nodes share.
    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file).unwrap().trim().to_string()
    }

    /// Starts every node at once (each waits for the others before it opens its API).
    pub fn start_all(&mut self) {
        std::thread::scope(|s| {
            for n in &mut self.nodes {
                s.spawn(move || n.start());
            }
        });
    }

    pub fn logs(&self) -> String {
        self.nodes.iter().map(|n| format!("--- node {} ---\n{}", n.id, n.log_text())).collect::<Vec<_>>().join("\n")
    }
}

/// One HTTP/1.1 request: the status and the JSON body (status 0 when the node does not
/// answer at all).
pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)) else { return (0, Value::Null) };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    if s.write_all(req.as_bytes()).is_err() {
        return (0, Value::Null);
    }
    let mut resp = String::new();
    if s.read_to_string(&mut resp).is_err() || resp.is_empty() {
        return (0, Value::Null);
    }
    let status: u16 = resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let Some((head, rest)) = resp.split_once("\r\n\r\n") else { return (status, Value::Null) };
    let text = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n + 2 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

pub fn login(api: &str) -> String {
    let (st, v) = http(api, "POST", "/auth/login", None, Some(&json!({"username": "admin", "password": PASSWORD})));
    assert_eq!(st, 200, "login on {api}: {v}");
    v["access_token"].as_str().unwrap().to_string()
}

/// Polls `f` every 100 ms until it returns Some, or panics after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `dagg args...` to its end: whether it succeeded, and what it printed (both streams).
pub fn dagg(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dagg")).args(args).env("DAGG_LOG", "warn").output().expect("dagg runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Runs `dagg args...`, which must succeed.
pub fn dagg_ok(args: &[&str]) -> String {
    let (ok, text) = dagg(args);
    assert!(ok, "dagg {}: {text}", args.join(" "));
    text
}

pub fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p).map(|d| d.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}
