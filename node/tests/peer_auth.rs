//! The peer port lets in members only: every route (Raft RPC, writes, membership, the data
//! plane's upgrade) refuses a client without the cluster token or with a wrong one, and in the
//! certificate mode a client without a certificate of the cluster's CA; the known exploits
//! (a forged user through `/raft/write`, a rogue `/raft/join`, a `/raft/snapshot` or
//! `/raft/vote` from outside) change nothing. Also: a peer address off loopback needs
//! certificates or `--insecure-peer`, and the API answers HTTPS with `--tls-cert/--tls-key`.

mod cluster_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

/// Every route on the peer port, with a body that would be acted on by an open port.
fn routes() -> Vec<(&'static str, &'static str, Value)> {
    let forged_user = json!({"version": 1, "command": {"op": "put_user", "user": {
        "id": "u-mallory", "username": "mallory", "email": "mallory@example.com", "full_name": null, "role": "admin",
        "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", "disabled": false,
        "created_at": "2026-11-25T10:00:00Z", "updated_at": "2026-11-25T10:00:00Z"}}});
    let rogue = json!({"node_id": 9, "node": {"peer_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:2"}});
    let vote = json!({"vote": {"leader_id": {"term": 99, "node_id": 9}, "committed": false}, "last_log_id": null});
    let snapshot = json!({"vote": {"leader_id": {"term": 99, "node_id": 9}, "committed": true},
        "meta": {"last_log_id": null, "last_membership": {"log_id": null, "membership": {"configs": [[9]], "nodes": {"9": {"peer_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:2"}}}}, "snapshot_id": "evil"},
        "offset": 0, "data": [], "done": true});
    vec![
        ("POST", "/raft/append", json!({})),
        ("POST", "/raft/vote", vote),
        ("POST", "/raft/snapshot", snapshot),
        ("POST", "/raft/write", forged_user),
        ("GET", "/raft/info", Value::Null),
        ("POST", "/raft/join", rogue),
        ("POST", "/raft/leave", json!(1)),
        ("GET", "/raft/members", Value::Null),
        ("GET", "/data/keyed", Value::Null),
        ("GET", "/data/sink", Value::Null),
    ]
}

/// The request's text; the data plane's paths ask for the upgrade.
fn request(method: &str, path: &str, body: &Value, extra: &str) -> String {
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let conn = if path.starts_with("/data/") { "Connection: Upgrade\r\nUpgrade: dagg-data/1\r\nX-Dagg-Node: 9\r\n" } else { "Connection: close\r\n" };
    format!("{method} {path} HTTP/1.1\r\nHost: peer\r\n{conn}Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}", body.len())
}

/// Sends `req` on `s` and reads the answer's status and body (by its Content-Length).
fn exchange(mut s: impl Read + Write, req: &str) -> Result<(u16, String), String> {
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&head))),
            Ok(_) => head.push(b[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("not HTTP: {head}"))?;
    let len: usize = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

/// Plain TCP to `addr`.
fn plain(addr: &str, req: &str) -> Result<(u16, String), String> {
    let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    exchange(s, req)
}

fn certs(p: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(p).unwrap().map(Result::unwrap).collect()
}

/// A TLS client trusting `ca`, presenting `identity` (certificate, key) when given.
fn tls_client(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca) {
        roots.add(c).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        Some((c, k)) => b.with_client_auth_cert(certs(c), PrivateKeyDer::from_pem_file(k).unwrap()).unwrap(),
        None => b.with_no_client_auth(),
    })
}

/// TLS to `addr`, the server checked as `127.0.0.1`.
fn tls(addr: &str, config: Arc<rustls::ClientConfig>, req: &str) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("127.0.0.1").unwrap()).map_err(|e| e.to_string())?;
    exchange(rustls::StreamOwned::new(conn, tcp), req)
}

fn users(api: &str, token: &str) -> String {
    let (st, v) = http(api, "GET", "/users?page_size=500", Some(token), None);
    assert_eq!(st, 200, "{v}");
    v.to_string()
}

#[test]
fn every_peer_route_refuses_a_client_without_the_cluster_token_and_the_exploits_change_nothing() {
    let mut c = Cluster::new(3, false);
    c.start_all();
    let admin = login(&c.nodes[0].api);
    let leader = wait_for(Duration::from_secs(20), "a leader", || http(&c.nodes[0].api, "GET", "/cluster", Some(&admin), None).1["leader_id"].as_u64());
    let users_before = users(&c.nodes[0].api, &admin);
    let (_, cluster_before) = http(&c.nodes[0].api, "GET", "/cluster", Some(&admin), None);
    let term_before = cluster_before["term"].as_u64().unwrap();

    let token = c.token();
    // The credentials work: the refusals below are for the missing or wrong token only.
    let leader_peer = c.nodes[leader as usize - 1].peer_listen.to_string();
    let (st, body) = plain(&leader_peer, &request("GET", "/raft/info", &Value::Null, &format!("X-Dagg-Cluster-Token: {token}\r\n"))).unwrap();
    assert_eq!(st, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["id"], leader);
    let (st, body) = plain(&leader_peer, &request("GET", "/data/keyed", &Value::Null, &format!("Authorization: Bearer {token}\r\n"))).unwrap();
    assert_eq!(st, 101, "{body}");

    let wrong = format!("{}x", &token[..token.len() - 1]);
    for n in &c.nodes {
        let addr = n.peer_listen.to_string();
        for (method, path, body) in routes() {
            for (what, extra) in [
                ("no token", String::new()),
                ("a wrong token", format!("X-Dagg-Cluster-Token: {wrong}\r\n")),
                ("a wrong bearer token", format!("Authorization: Bearer {wrong}\r\n")),
                ("an empty token", "X-Dagg-Cluster-Token: \r\n".to_string()),
            ] {
                let r = plain(&addr, &request(method, path, &body, &extra));
                let (st, text) = r.unwrap_or_else(|e| panic!("{method} {path} on node {} with {what}: {e}", n.id));
                assert_eq!(st, 401, "{method} {path} on node {} with {what}: {text}", n.id);
                assert!(text.contains("cluster token"), "{method} {path}: the refusal says why: {text}");
            }
        }
    }

    // Nothing changed: no user `mallory`, no member 9, no term 99.
    std::thread::sleep(Duration::from_millis(500));
    for n in &c.nodes {
        assert_eq!(users(&n.api, &admin), users_before, "node {}'s users", n.id);
        assert_eq!(http(&n.api, "POST", "/auth/login", None, Some(&json!({"username": "mallory", "password": "x"}))).0, 401);
    }
    let (_, after) = http(&c.nodes[0].api, "GET", "/cluster", Some(&admin), None);
    let ids: Vec<u64> = after["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![1, 2, 3], "{after}");
    assert!(after["term"].as_u64().unwrap() < 99 && after["term"].as_u64().unwrap() >= term_before, "{after}");
    assert_eq!(after["leader_id"], leader, "{after}");

    // The API's join asks for an admin or the cluster token too.
    let body = json!({"node_id": 9, "peer_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:2"});
    for headers in [None, Some("wrong-token-0123456789")] {
        let (st, v) = api_join(&c.nodes[0].api, headers, &body);
        assert_eq!(st, 401, "{v}");
    }
}

/// `POST /cluster/join` with `X-Dagg-Cluster-Token: token` when given.
fn api_join(api: &str, token: Option<&str>, body: &Value) -> (u16, String) {
    let extra = token.map(|t| format!("X-Dagg-Cluster-Token: {t}\r\n")).unwrap_or_default();
    let text = body.to_string();
    let req = format!("POST /cluster/join HTTP/1.1\r\nHost: api\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{text}", text.len());
    plain(api, &req).unwrap()
}

#[test]
fn with_certificates_the_peer_port_refuses_clients_without_one_or_with_another_cas() {
    let mut c = Cluster::new(1, false);
    c.use_certs();
    c.nodes[0].alone = true;
    c.nodes[0].start();
    let ca = c.ca_dir.clone().unwrap();
    let own = c.root.path().join("certs1");
    // A second CA and a node certificate of it, for the same host and node id.
    let other_ca = c.root.path().join("other-ca");
    let other = c.root.path().join("other-node");
    dagg_ok(&["cert", "ca", "--out", other_ca.to_str().unwrap()]);
    dagg_ok(&["cert", "node", "--node-id", "1", "--host", "127.0.0.1", "--ca-dir", other_ca.to_str().unwrap(), "--out", other.to_str().unwrap()]);

    let addr = c.nodes[0].peer_listen.to_string();
    let member = tls_client(&ca.join("ca.crt"), Some((&own.join("node.crt"), &own.join("node.key"))));
    // A member gets in.
    let (st, body) = tls(&addr, member.clone(), &request("GET", "/raft/info", &Value::Null, "")).unwrap();
    assert_eq!((st, serde_json::from_str::<Value>(&body).unwrap()["id"].as_u64()), (200, Some(1)), "{body}");
    let (st, _) = tls(&addr, member, &request("GET", "/data/keyed", &Value::Null, "")).unwrap();
    assert_eq!(st, 101);

    let no_cert = tls_client(&ca.join("ca.crt"), None);
    let foreign = tls_client(&ca.join("ca.crt"), Some((&other.join("node.crt"), &other.join("node.key"))));
    let token = format!("X-Dagg-Cluster-Token: {}\r\n", c.token());
    for (method, path, body) in routes() {
        let req = request(method, path, &body, &token);
        for (what, r) in [("no certificate", tls(&addr, no_cert.clone(), &req)), ("another CA's certificate", tls(&addr, foreign.clone(), &req)), ("plain HTTP", plain(&addr, &req))] {
            assert!(r.is_err(), "{method} {path} with {what} was answered: {r:?}");
        }
    }
    // And the node itself is untouched: still node 1 alone, no user `mallory`.
    let admin = login(&c.nodes[0].api);
    assert!(!users(&c.nodes[0].api, &admin).contains("mallory"));
    let (_, v) = http(&c.nodes[0].api, "GET", "/cluster", Some(&admin), None);
    assert_eq!(v["members"].as_array().map(Vec::len), Some(1), "{v}");
}

/// Starts `dagg serve` with `args` on a fresh data directory; returns the child and its
/// stderr lines as they come.
fn spawn_serve(dir: &Path, args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dagg"))
        .arg("serve")
        .args(args)
        .env("DAGG_DATA_DIR", dir)
        .env("DAGG_LOG", "warn")
        .env("DAGG_ADMIN_PASSWORD", PASSWORD)
        .env("DAGG_CLUSTER_TOKEN", "cluster-test-token")
        .env_remove("DAGG_CONFIG")
        .env_remove("DAGG_PEER_CERT")
        .env_remove("DAGG_INSECURE_PEER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (child, rx)
}

/// Lines until one contains `want` (which is returned last), or every line when the process
/// ends first, or after `limit`.
fn lines_until(rx: &std::sync::mpsc::Receiver<String>, want: &str, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut out = Vec::new();
    while let Some(left) = limit.checked_sub(start.elapsed()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = l.contains(want);
                out.push(l);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    out
}

#[test]
fn a_peer_address_off_loopback_needs_certificates_or_insecure_peer_which_warns() {
    let root = tempfile::Builder::new().prefix("dagg-peer").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let port = free_port(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let peer = format!("0.0.0.0:{port}");
    let (mut child, rx) = spawn_serve(&root.path().join("a"), &["--api-addr", "127.0.0.1:0", "--peer-addr", &peer]);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = lines_until(&rx, "\u{0}", Duration::from_secs(2)).join("\n");
    assert!(status.is_some_and(|s| !s.success()), "a node on {peer} without certificates started: {text}");
    assert!(text.contains("not on loopback") && text.contains("--peer-cert") && text.contains("--insecure-peer"), "{text}");

    let (mut child, rx) = spawn_serve(&root.path().join("b"), &["--api-addr", "127.0.0.1:0", "--peer-addr", &peer, "--insecure-peer"]);
    let lines = lines_until(&rx, "listening on http", Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(text.contains("listening on http"), "with --insecure-peer it starts: {text}");
    assert!(text.contains("INSECURE") && text.contains(&peer), "and warns: {text}");
}

#[test]
fn the_api_answers_https_with_tls_cert_and_key_from_dagg_cert() {
    let root = tempfile::Builder::new().prefix("dagg-tls").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (ca, node) = (root.path().join("ca"), root.path().join("api"));
    dagg_ok(&["cert", "ca", "--out", ca.to_str().unwrap()]);
    dagg_ok(&["cert", "node", "--node-id", "1", "--host", "127.0.0.1", "--host", "localhost", "--ca-dir", ca.to_str().unwrap(), "--out", node.to_str().unwrap()]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [ca.join("ca.key"), node.join("node.key")] {
            assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
        }
    }
    // The CA is not overwritten by mistake, and a host with a port is refused.
    let (ok, text) = dagg(&["cert", "ca", "--out", ca.to_str().unwrap()]);
    assert!(!ok && text.contains("--force"), "{text}");
    let (ok, text) = dagg(&["cert", "node", "--node-id", "2", "--host", "10.0.0.2:9001", "--ca-dir", ca.to_str().unwrap(), "--out", root.path().join("x").to_str().unwrap()]);
    assert!(!ok && text.contains("10.0.0.2:9001"), "{text}");

    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 30));
    let peer = format!("{ip}:{}", free_port(ip));
    let (cert, key) = (node.join("node.crt"), node.join("node.key"));
    let (mut child, rx) = spawn_serve(&root.path().join("data"), &["--api-addr", "127.0.0.1:0", "--peer-addr", &peer, "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let lines = lines_until(&rx, "listening on https://", Duration::from_secs(60));
    let Some(addr) = lines.last().and_then(|l| l.split("listening on https://").nth(1)).and_then(|r| r.split_whitespace().next()).map(str::to_string) else {
        let _ = child.kill();
        panic!("no HTTPS: {}", lines.join("\n"));
    };
    let get = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let r = tls(&addr, tls_client(&ca.join("ca.crt"), None), get);
    let plain_r = plain(&addr, get);
    let _ = child.kill();
    let _ = child.wait();
    let (st, body) = r.unwrap();
    assert_eq!(st, 200, "{body}");
    assert!(plain_r.is_err() || plain_r.as_ref().is_ok_and(|(st, _)| *st == 400), "plain HTTP on the HTTPS port: {plain_r:?}");
}

#[test]
fn in_the_certificate_mode_a_node_joins_only_with_a_certificate_of_the_cluster_ca() {
    let mut c = Cluster::new(3, false);
    c.use_certs();
    // Node 3 holds a certificate of another CA (for the same host and id), and trusts ours.
    let other_ca = c.root.path().join("other-ca");
    let rogue = c.root.path().join("rogue");
    dagg_ok(&["cert", "ca", "--out", other_ca.to_str().unwrap()]);
    dagg_ok(&["cert", "node", "--node-id", "3", "--host", "127.0.0.1", "--ca-dir", other_ca.to_str().unwrap(), "--out", rogue.to_str().unwrap()]);

    c.nodes[0].alone = true;
    c.nodes[0].start();
    let admin = login(&c.nodes[0].api);
    let api = format!("http://{}", c.nodes[0].api);
    // A member of the CA joins through the API (with the join token every test node has).
    c.nodes[1].join = Some(api.clone());
    c.nodes[1].start();
    let members = |c: &Cluster| -> Vec<u64> {
        let v = http(&c.nodes[0].api, "GET", "/cluster", Some(&admin), None).1;
        v["members"].as_array().map(|a| a.iter().filter(|m| m["voter"] == true).filter_map(|m| m["id"].as_u64()).collect()).unwrap_or_default()
    };
    wait_for(Duration::from_secs(30), "node 2 to join as a voter", || (members(&c) == vec![1, 2]).then_some(()));

    // The rogue asks the same way (with the join token) and is refused: the leader cannot
    // verify it. It never opens its API: it waits to be a member.
    let r = &c.nodes[2];
    let ca = c.ca_dir.clone().unwrap().join("ca.crt");
    let (crt, key) = (rogue.join("node.crt"), rogue.join("node.key"));
    let args = [
        "--api-addr", &r.api, "--node-id", "3", "--peer-addr", &r.peer_listen.to_string(), "--advertise-addr", &r.advertise, "--join", &api,
        "--peer-cert", crt.to_str().unwrap(), "--peer-key", key.to_str().unwrap(), "--peer-ca", ca.to_str().unwrap(),
    ];
    let (mut child, rx) = spawn_serve(&r.dir, &args);
    let lines = lines_until(&rx, "HTTP 409", Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.last().is_some_and(|l| l.contains("cannot reach node 3")), "the rogue's join: {}", lines.join("\n"));
    // Even an admin cannot add it.
    let body = json!({"node_id": 3, "peer_addr": c.nodes[2].advertise, "api_addr": c.nodes[2].api});
    let (st, v) = http(&c.nodes[0].api, "POST", "/cluster/join", Some(&admin), Some(&body));
    assert_eq!(st, 409, "{v}");
    assert!(v.to_string().contains("cannot reach node 3"), "{v}");
    let v = http(&c.nodes[0].api, "GET", "/cluster", Some(&admin), None).1;
    let ids: Vec<u64> = v["members"].as_array().unwrap().iter().filter_map(|m| m["id"].as_u64()).collect();
    assert_eq!(ids, vec![1, 2], "no trace of node 3, not even as a learner: {v}");
}
