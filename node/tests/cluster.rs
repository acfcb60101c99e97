//! The cluster on loopback: three `dagg serve` processes with `--peers`, a TCP proxy the
//! test controls between their peer ports (see `cluster_support`).

mod cluster_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster_support::*;
use serde_json::{Value, json};

/// Every running node's `GET /cluster`.
fn statuses(c: &Cluster, token: &str) -> Vec<(u64, Value)> {
    c.nodes.iter().filter(|n| n.is_running()).map(|n| (n.id, http(&n.api, "GET", "/cluster", Some(token), None).1)).collect()
}

/// The members without the instant they were last seen (which moves between two calls).
fn members_of(v: &Value) -> Vec<Value> {
    v["members"].as_array().map(|a| a.iter().map(|m| json!([m["id"], m["peer_addr"], m["api_addr"], m["voter"], m["up"], m["runs"]])).collect()).unwrap_or_default()
}

/// The leader all running nodes agree on, with the same term and members up.
fn agreed_leader(c: &Cluster, token: &str, want_up: usize) -> Option<(u64, u64)> {
    let s = statuses(c, token);
    let first = &s.first()?.1;
    let leader = first["leader_id"].as_u64()?;
    let term = first["term"].as_u64()?;
    for (_, v) in &s {
        if v["leader_id"].as_u64() != Some(leader) || v["term"].as_u64() != Some(term) || v["view"] != "leader" {
            return None;
        }
        let up = v["members"].as_array()?.iter().filter(|m| m["up"] == true).count();
        if up != want_up || members_of(v) != members_of(first) {
            return None;
        }
    }
    Some((leader, term))
}

fn setting(api: &str, token: &str, key: &str) -> Option<Value> {
    let (st, v) = http(api, "GET", "/settings", Some(token), None);
    if st != 200 {
        return None;
    }
    v.get(key).cloned()
}

fn put_setting(api: &str, token: &str, key: &str, value: Value) -> (u16, Value) {
    http(api, "PUT", "/settings", Some(token), Some(&json!({ key: value })))
}

fn start_three(shared: bool) -> (Cluster, String) {
    let mut c = Cluster::new(3, shared);
    c.start_all();
    let token = login(&c.nodes[0].api);
    (c, token)
}

#[test]
fn a_token_secret_from_the_environment_is_every_nodes_own_and_the_followers_start() {
    let mut c = Cluster::new(3, false);
    for n in &mut c.nodes {
        n.env.push(("DAGG_JWT_SECRET".into(), "the-same-secret-on-every-node-0123456789".into()));
    }
    c.start_all();
    let token = login(&c.nodes[0].api);
    wait_for(Duration::from_secs(15), "every node to agree on the leader", || agreed_leader(&c, &token, 3));
    for n in &c.nodes {
        assert_eq!(http(&n.api, "GET", "/cluster", Some(&token), None).0, 200, "node {} takes a token node 1 issued", n.id);
    }
    assert_eq!(setting(&c.nodes[0].api, &token, "_jwt_secret"), None, "the configured secret is not stored");
}

#[test]
fn three_nodes_elect_one_leader_agree_and_replicate_a_write_made_on_a_follower() {
    let (c, token) = start_three(false);
    let (leader, term) = wait_for(Duration::from_secs(15), "every node to agree on the leader", || agreed_leader(&c, &token, 3));
    assert!((1..=3).contains(&leader) && term >= 1);
    // `/health` (no login) names each node's role and its leader.
    for n in &c.nodes {
        let (st, h) = http(&n.api, "GET", "/health", None, None);
        assert_eq!(st, 200, "{h}");
        assert_eq!(h["cluster"], if n.id == leader { "leader" } else { "follower" }, "{h}");
        assert_eq!(h["leader_id"].as_u64(), Some(leader), "{h}");
    }
    let s = statuses(&c, &token);
    for (id, v) in &s {
        assert_eq!(v["node_id"].as_u64(), Some(*id), "{v}");
        let members = v["members"].as_array().unwrap();
        assert_eq!(members.len(), 3, "{v}");
        for m in members {
            let mid = m["id"].as_u64().unwrap();
            let node = &c.nodes[mid as usize - 1];
            assert_eq!(m["peer_addr"], node.advertise.as_str(), "{v}");
            assert_eq!(m["api_addr"], node.api.as_str(), "{v}");
            assert_eq!(m["voter"], true);
            assert_eq!(m["runs"], 0);
        }
        let state = v["state"].as_str().unwrap();
        assert_eq!(state == "leader", *id == leader, "{v}");
    }

    // A write on a follower: committed through the leader, visible on every node at once
    // on the follower that took it, and shortly on the others.
    let follower = c.nodes.iter().find(|n| n.id != leader).unwrap();
    let (st, body) = put_setting(&follower.api, &token, "written-on-follower", json!(follower.id));
    assert_eq!(st, 200, "{body}");
    assert_eq!(setting(&follower.api, &token, "written-on-follower"), Some(json!(follower.id)));
    for n in &c.nodes {
        wait_for(Duration::from_secs(5), "the write on every node", || (setting(&n.api, &token, "written-on-follower") == Some(json!(follower.id))).then_some(()));
    }
    // A token issued by one node works on every node (the secret is replicated), and a
    // login on a follower (a session written through the leader) works too.
    let t2 = login(&follower.api);
    for n in &c.nodes {
        assert_eq!(http(&n.api, "GET", "/cluster", Some(&t2), None).0, 200);
    }
    // Viewer may read `/cluster`; without a token it is 401.
    assert_eq!(http(&c.nodes[0].api, "GET", "/cluster", None, None).0, 401);

    // The admin's egress deny list, set on a follower, is in force on every node.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (st, conn) = http(&c.nodes[0].api, "POST", "/connectors", Some(&token), Some(&json!({"name": "items", "connector_type": "rest_api", "config": {"url": format!("http://127.0.0.1:{closed}/items")}})));
    assert_eq!(st, 201, "{conn}");
    let test = format!("/connectors/{}/test", conn["id"].as_str().unwrap());
    let refusal = |n: &cluster_support::Node| http(&n.api, "POST", &test, Some(&token), Some(&json!({}))).1["message"].as_str().unwrap_or_default().to_string();
    let (st, body) = put_setting(&follower.api, &token, "egress", json!({"deny": ["127.0.0.1/32"]}));
    assert_eq!(st, 200, "{body}");
    for n in &c.nodes {
        wait_for(Duration::from_secs(5), "the deny list on every node", || refusal(n).contains("egress deny list (`127.0.0.1`)").then_some(()));
    }
    put_setting(&follower.api, &token, "egress", json!({}));
    for n in &c.nodes {
        wait_for(Duration::from_secs(5), "the deny list gone on every node", || (!refusal(n).contains("deny list")).then_some(()));
    }
}

#[test]
fn killing_the_leader_elects_another_within_5s_and_the_restarted_node_catches_up() {
    let (mut c, token) = start_three(false);
    let (leader, term) = wait_for(Duration::from_secs(15), "a leader", || agreed_leader(&c, &token, 3));
    let li = leader as usize - 1;
    c.nodes[li].kill();
    let killed = Instant::now();
    let (new_leader, new_term) = wait_for(Duration::from_secs(5), "a new leader within 5 s of the SIGKILL", || {
        let s = statuses(&c, &token);
        let l = s[0].1["leader_id"].as_u64()?;
        let t = s[0].1["term"].as_u64()?;
        (l != leader && t > term && s.iter().all(|(_, v)| v["leader_id"].as_u64() == Some(l))).then_some((l, t))
    });
    let took = killed.elapsed();
    eprintln!("new leader {new_leader} in term {new_term} {took:?} after the SIGKILL");
    // Writes work again, on the new leader and on the other survivor.
    for n in c.nodes.iter().filter(|n| n.is_running()) {
        let (st, body) = put_setting(&n.api, &token, &format!("after-kill-{}", n.id), json!(true));
        assert_eq!(st, 200, "{body}");
    }
    // The leader sees the killed node as down.
    let down = wait_for(Duration::from_secs(5), "the killed node shown down", || {
        let v = http(&c.nodes[new_leader as usize - 1].api, "GET", "/cluster", Some(&token), None).1;
        v["members"].as_array()?.iter().find(|m| m["id"] == leader && m["up"] == false).cloned()
    });
    assert_eq!(down["id"], leader);

    // The killed node restarts on its data and catches up.
    c.nodes[li].start();
    let api = c.nodes[li].api.clone();
    for n in c.nodes.iter().filter(|n| n.id != leader) {
        let key = format!("after-kill-{}", n.id);
        wait_for(Duration::from_secs(10), "the restarted node to catch up", || (setting(&api, &token, &key) == Some(json!(true))).then_some(()));
    }
    wait_for(Duration::from_secs(10), "all three up again", || agreed_leader(&c, &token, 3));
    // It takes writes again.
    assert_eq!(put_setting(&api, &token, "after-restart", json!(1)).0, 200);
}

#[test]
fn a_cut_off_node_cannot_commit_catches_up_when_healed_and_no_term_has_two_leaders() {
    let (c, token) = start_three(false);
    let (leader, _) = wait_for(Duration::from_secs(15), "a leader", || agreed_leader(&c, &token, 3));
    // Every leader any node claims to be, by term.
    let mut claims: BTreeMap<u64, std::collections::BTreeSet<u64>> = BTreeMap::new();
    let mut sample = |c: &Cluster| {
        for (id, v) in statuses(c, &token) {
            if v["state"] == "leader"
                && let Some(t) = v["term"].as_u64()
            {
                claims.entry(t).or_default().insert(id);
            }
        }
    };
    sample(&c);

    // Cut the leader off: the others elect a new one; the old one cannot commit.
    let cut = leader as usize - 1;
    c.proxies.cut(cut);
    let others: Vec<usize> = (0..3).filter(|i| *i != cut).collect();
    let new_leader = wait_for(Duration::from_secs(10), "a new leader on the majority side", || {
        sample(&c);
        let v = http(&c.nodes[others[0]].api, "GET", "/cluster", Some(&token), None).1;
        let l = v["leader_id"].as_u64()?;
        (l != leader && v["view"] == "leader").then_some(l)
    });
    let t0 = Instant::now();
    let (st, body) = put_setting(&c.nodes[cut].api, &token, "on-the-cut-node", json!(1));
    let took = t0.elapsed();
    assert_eq!(st, 503, "a write on the cut-off node: {body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(took < Duration::from_secs(12), "the write failed only after {took:?}");
    sample(&c);
    // The majority commits.
    let (st, body) = put_setting(&c.nodes[others[1]].api, &token, "on-the-majority", json!(2));
    assert_eq!(st, 200, "{body}");
    sample(&c);
    // The cut node still serves reads, from its own (stale) copy.
    assert_eq!(setting(&c.nodes[cut].api, &token, "on-the-majority"), None);

    // Healed: the node catches up, follows the new leader, and takes writes again.
    c.proxies.heal();
    wait_for(Duration::from_secs(10), "the healed node to catch up", || {
        sample(&c);
        (setting(&c.nodes[cut].api, &token, "on-the-majority") == Some(json!(2))).then_some(())
    });
    wait_for(Duration::from_secs(10), "all three to agree again", || {
        sample(&c);
        agreed_leader(&c, &token, 3)
    });
    assert_eq!(setting(&c.nodes[cut].api, &token, "on-the-cut-node"), None, "the uncommitted write must not appear");
    assert_eq!(put_setting(&c.nodes[cut].api, &token, "after-heal", json!(3)).0, 200);
    sample(&c);
    assert!(new_leader != leader);
    for (term, ids) in &claims {
        assert_eq!(ids.len(), 1, "term {term} had leaders {ids:?}");
    }
}

#[test]
fn a_node_joins_a_running_cluster_as_a_voter() {
    let mut c = Cluster::new(2, false);
    c.nodes[0].alone = true;
    c.nodes[0].start();
    let token = login(&c.nodes[0].api);
    assert_eq!(put_setting(&c.nodes[0].api, &token, "before-join", json!("x")).0, 200);
    c.nodes[1].join = Some(format!("http://{}", c.nodes[0].api));
    c.nodes[1].start();
    let (leader, _) = wait_for(Duration::from_secs(15), "both nodes to agree", || agreed_leader(&c, &token, 2));
    assert_eq!(leader, 1);
    let v = http(&c.nodes[1].api, "GET", "/cluster", Some(&token), None).1;
    assert!(v["members"].as_array().unwrap().iter().all(|m| m["voter"] == true), "{v}");
    // It has what was written before it joined, and its writes reach the leader.
    assert_eq!(setting(&c.nodes[1].api, &token, "before-join"), Some(json!("x")));
    assert_eq!(put_setting(&c.nodes[1].api, &token, "after-join", json!("y")).0, 200);
    wait_for(Duration::from_secs(5), "the joined node's write on the first", || (setting(&c.nodes[0].api, &token, "after-join") == Some(json!("y"))).then_some(()));
    // A restart of the joined node neither joins again nor loses anything.
    c.nodes[1].kill();
    c.nodes[1].start();
    wait_for(Duration::from_secs(15), "both nodes to agree after the restart", || agreed_leader(&c, &token, 2));
    assert_eq!(setting(&c.nodes[1].api, &token, "after-join"), Some(json!("y")));
}

#[test]
fn a_removed_member_no_longer_counts_and_the_rest_keep_committing() {
    let (mut c, token) = start_three(false);
    let (leader, _) = wait_for(Duration::from_secs(15), "a leader", || agreed_leader(&c, &token, 3));
    let api = c.nodes[0].api.clone();
    // Not a member, no credentials, a bad id.
    assert_eq!(http(&api, "DELETE", "/cluster/members/9", Some(&token), None).0, 404);
    assert_eq!(http(&api, "DELETE", "/cluster/members/2", None, None).0, 401);
    assert_eq!(http(&api, "DELETE", "/cluster/members/two", Some(&token), None).0, 400);
    // Remove a follower (asked on any node: the leader makes the change).
    let gone = (1..=3u64).rev().find(|id| *id != leader).unwrap();
    let (st, v) = http(&api, "DELETE", &format!("/cluster/members/{gone}"), Some(&token), None);
    assert_eq!(st, 200, "{v}");
    c.nodes[gone as usize - 1].kill();
    let rest: Vec<usize> = (0..3).filter(|i| *i as u64 + 1 != gone).collect();
    let api = c.nodes[rest[0]].api.clone();
    wait_for(Duration::from_secs(10), "two members, both up", || {
        let v = http(&api, "GET", "/cluster", Some(&token), None).1;
        let m = v["members"].as_array()?;
        (m.len() == 2 && m.iter().all(|m| m["up"] == true && m["id"].as_u64() != Some(gone))).then_some(())
    });
    assert_eq!(put_setting(&api, &token, "after-removal", json!(1)).0, 200);
    // The last two: one more removal leaves one voter, which commits alone.
    let other = rest.iter().map(|i| *i as u64 + 1).find(|id| *id != leader).unwrap();
    assert_eq!(http(&api, "DELETE", &format!("/cluster/members/{other}"), Some(&token), None).0, 200);
    c.nodes[other as usize - 1].kill();
    let api = c.nodes[leader as usize - 1].api.clone();
    wait_for(Duration::from_secs(10), "a cluster of one", || (http(&api, "GET", "/cluster", Some(&token), None).1["members"].as_array()?.len() == 1).then_some(()));
    assert_eq!(put_setting(&api, &token, "alone", json!(2)).0, 200);
    let (st, v) = http(&api, "DELETE", &format!("/cluster/members/{leader}"), Some(&token), None);
    assert_eq!(st, 409, "the last voter stays: {v}");
    assert!(v.to_string().contains("last voter"), "{v}");
}

/// Ids in a JSONL file; panics on a torn line.
fn ids_in(path: &std::path::Path) -> Vec<u64> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::io::BufReader::new(f).lines().map(|l| serde_json::from_str::<Value>(&l.unwrap()).expect("whole JSON lines")["id"].as_u64().expect("an id")).collect()
}

/// Writes `n` lines of `line(i)` (i from 1) to `<shared>/data/in.jsonl`: the data folder.
fn write_input(c: &Cluster, n: u64, line: impl Fn(u64) -> String) -> std::path::PathBuf {
    use std::io::Write;
    let data = c.root.path().join("shared").join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut w = std::io::BufWriter::new(std::fs::File::create(data.join("in.jsonl")).unwrap());
    for i in 1..=n {
        writeln!(w, "{}", line(i)).unwrap();
    }
    w.flush().unwrap();
    data
}

/// Creates the pipeline `doc` on `api` and executes it: (pipeline id, run id).
fn create_and_execute(api: &str, token: &str, doc: &Value) -> (String, String) {
    let (st, p) = http(api, "POST", "/pipelines", Some(token), Some(doc));
    assert_eq!(st, 201, "{p}");
    let pid = p["id"].as_str().unwrap().to_string();
    let (st, r) = http(api, "POST", &format!("/pipelines/{pid}/execute"), Some(token), None);
    assert_eq!(st, 202, "{r}");
    (pid, r["id"].as_str().unwrap().to_string())
}

/// Writes `n` records to `<shared>/data/in.jsonl`, creates a pipeline copying them to
/// `out.jsonl` there, and executes it: (data folder, pipeline id, run id).
fn start_long_run(c: &Cluster, token: &str, n: u64) -> (std::path::PathBuf, String, String) {
    let data = write_input(c, n, |i| format!(r#"{{"id":{i},"name":"item number {i}","qty":{}}}"#, i % 7));
    let doc = json!({
        "name": "moves-with-its-node",
        "source": {"connector_type": "file", "config": {"path": data.join("in.jsonl"), "format": "jsonl"}},
        "transformations": [{"type": "field_mapping", "field_name": "name", "operation": "title_case"}],
        "destination": {"connector_type": "file", "config": {"path": data.join("out.jsonl"), "format": "jsonl"}},
        "checkpoint": {"interval_seconds": 0.2}
    });
    let (pid, run_id) = create_and_execute(&c.nodes[1].api, token, &doc);
    (data, pid, run_id)
}

fn wait_run_end(api: &str, token: &str, run_id: &str, limit: Duration) -> Value {
    wait_for(limit, "the run to end", || {
        let (st, v) = http(api, "GET", &format!("/runs/{run_id}"), Some(token), None);
        (st == 200 && v["status"].as_str().is_some_and(|s| !matches!(s, "pending" | "running" | "retrying"))).then_some(v)
    })
}

fn assert_exactly_once(out: &std::path::Path, n: u64) {
    let mut got = ids_in(out);
    assert_eq!(got.len() as u64, n, "records in the output (duplicates or losses)");
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len() as u64, n, "distinct records");
    assert_eq!((got[0], got[got.len() - 1]), (1, n));
}

#[test]
fn a_rolling_restart_of_all_three_nodes_during_a_run_loses_nothing() {
    const N: u64 = 1_500_000;
    let (mut c, token) = start_three(true);
    wait_for(Duration::from_secs(15), "a leader", || agreed_leader(&c, &token, 3));
    let (data, _pid, run_id) = start_long_run(&c, &token, N);
    let runner = wait_for(Duration::from_secs(20), "the run placed and writing", || {
        let v = http(&c.nodes[0].api, "GET", "/cluster", Some(&token), None).1;
        let m = v["members"].as_array()?.iter().find(|m| m["runs"] == 1)?["id"].as_u64()?;
        (std::fs::metadata(data.join(".out.jsonl.dagg-tmp")).map(|m| m.len()).unwrap_or(0) > 0).then_some(m)
    });
    // The node running it first, then the others.
    let first = runner as usize - 1;
    for i in std::iter::once(first).chain((0..3).filter(|i| *i != first)) {
        c.nodes[i].stop();
        c.nodes[i].start();
        wait_for(Duration::from_secs(20), "all three up after a restart", || agreed_leader(&c, &token, 3));
    }
    let done = wait_run_end(&c.nodes[0].api, &token, &run_id, Duration::from_secs(120));
    assert_eq!(done["status"], "success", "{done}\n{}", c.logs());
    // It was interrupted and resumed (from its checkpoint, here or elsewhere).
    let (_, logs) = http(&c.nodes[0].api, "GET", &format!("/runs/{run_id}/logs?page_size=500"), Some(&token), None);
    let started = logs["items"].as_array().map(|a| a.iter().filter(|e| e["kind"] == "started").count()).unwrap_or(0);
    assert!(started >= 2, "the run was not interrupted by the restarts: {logs}");
    assert_exactly_once(&data.join("out.jsonl"), N);
}

#[test]
fn a_run_on_a_killed_node_finishes_on_another_with_every_record_exactly_once() {
    const N: u64 = 1_500_000;
    let (mut c, token) = start_three(true);
    wait_for(Duration::from_secs(15), "a leader", || agreed_leader(&c, &token, 3));
    let (data, pid, run_id) = start_long_run(&c, &token, N);
    let out = data.join("out.jsonl");
    let api = c.nodes[1].api.clone();
    // A second execute while it is active anywhere is refused.
    assert_eq!(http(&c.nodes[2].api, "POST", &format!("/pipelines/{pid}/execute"), Some(&token), None).0, 409);

    // The node the leader placed it on, once it has written a checkpoint's worth.
    let runner = wait_for(Duration::from_secs(20), "the run placed and writing", || {
        let v = http(&api, "GET", "/cluster", Some(&token), None).1;
        let m = v["members"].as_array()?.iter().find(|m| m["runs"] == 1)?["id"].as_u64()?;
        // The file sink writes `.out.jsonl.dagg-tmp` until the run ends.
        (std::fs::metadata(data.join(".out.jsonl.dagg-tmp")).map(|m| m.len()).unwrap_or(0) > 0).then_some(m)
    });
    c.nodes[runner as usize - 1].kill();
    let alive = c.nodes.iter().find(|n| n.is_running()).unwrap().api.clone();
    let done = wait_run_end(&alive, &token, &run_id, Duration::from_secs(120));
    assert_eq!(done["status"], "success", "{done}\n{}", c.logs());
    let log = run_log(&alive, &token, &run_id);
    assert!(log.contains(&format!("node {runner} is down: moved to node")), "the run was not moved: {log}");
    assert_exactly_once(&out, N);
}

/// Each member's keyed instances, from `GET /cluster` (a member that could not be asked: 0).
fn instances_per_member(api: &str, token: &str) -> BTreeMap<u64, u64> {
    let v = http(api, "GET", "/cluster", Some(token), None).1;
    v["members"].as_array().map(|a| a.iter().map(|m| (m["id"].as_u64().unwrap_or(0), m["instances"].as_u64().unwrap_or(0))).collect()).unwrap_or_default()
}

/// Writes `n` records to `<shared>/data/in.jsonl` and executes a pipeline with
/// `parallelism: 3` (a deduplicate keyed by `id`) copying them to `out.jsonl` there, once an
/// instance runs on each node: (out path, run id, the node running it).
fn start_keyed_run(c: &Cluster, token: &str, n: u64) -> (std::path::PathBuf, String, u64) {
    let data = write_input(c, n, |i| format!(r#"{{"id":{i},"name":"item number {i}"}}"#));
    let out = data.join("out.jsonl");
    let doc = json!({
        "name": "keyed-across-nodes",
        "source": {"connector_type": "file", "config": {"path": data.join("in.jsonl"), "format": "jsonl"}},
        "transformations": [
            {"type": "field_mapping", "field_name": "name", "operation": "title_case"},
            {"type": "deduplicate", "key_fields": ["id"]}
        ],
        "destination": {"connector_type": "file", "config": {"path": out, "format": "jsonl"}},
        "error_handling": {"retry_policy": {"max_retries": 10, "initial_delay_seconds": 0.2, "backoff_multiplier": 1.0}},
        "checkpoint": {"interval_seconds": 0.5},
        "parallelism": 3
    });
    let api = &c.nodes[1].api;
    let (_pid, run_id) = create_and_execute(api, token, &doc);
    // Every node runs one of the three instances, and the run has written something.
    let runner = wait_for(Duration::from_secs(30), "an instance on each node while the run writes", || {
        let v = http(api, "GET", "/cluster", Some(token), None).1;
        let members = v["members"].as_array()?;
        let runner = members.iter().find(|m| m["runs"] == 1)?["id"].as_u64()?;
        let spread = members.len() == 3 && members.iter().all(|m| m["instances"].as_u64().is_some_and(|n| n >= 1));
        let writing = std::fs::metadata(data.join(".out.jsonl.dagg-tmp")).map(|m| m.len()).unwrap_or(0) > 0;
        (spread && writing).then_some(runner)
    });
    (out, run_id, runner)
}

/// The run's log, as one text.
fn run_log(api: &str, token: &str, run_id: &str) -> String {
    http(api, "GET", &format!("/runs/{run_id}/logs?page_size=500"), Some(token), None).1.to_string()
}

#[test]
fn keyed_instances_run_on_all_three_nodes_and_survive_the_leaders_kill_exactly_once() {
    const N: u64 = 600_000;
    let (mut c, token) = start_three(true);
    wait_for(Duration::from_secs(15), "a leader", || agreed_leader(&c, &token, 3));
    let (out, run_id, _runner) = start_keyed_run(&c, &token, N);
    let (leader, term) = agreed_leader(&c, &token, 3).expect("one leader");
    let killed = Instant::now();
    c.nodes[leader as usize - 1].kill();
    let (new_leader, new_term) = wait_for(Duration::from_secs(10), "a new leader", || agreed_leader(&c, &token, 2));
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "a new leader after {took:?}");
    assert!(new_leader != leader && new_term > term);

    let alive = c.nodes.iter().find(|n| n.is_running()).unwrap().api.clone();
    let done = wait_run_end(&alive, &token, &run_id, Duration::from_secs(180));
    assert_eq!(done["status"], "success", "{done}\n{}", c.logs());
    // The run lost instances (or its own node) and went on from a checkpoint.
    let log = run_log(&alive, &token, &run_id);
    assert!(log.contains("moved to node") || log.contains("retrying"), "the kill did not touch the run: {log}");
    assert_exactly_once(&out, N);
    wait_for(Duration::from_secs(10), "no instances left", || instances_per_member(&alive, &token).values().all(|n| *n == 0).then_some(()));
}

#[test]
fn three_nodes_with_certificates_from_dagg_cert_elect_replicate_and_run_a_parallel_pipeline_over_mutual_tls() {
    const N: u64 = 300_000;
    let mut c = Cluster::new(3, true);
    c.use_certs();
    c.start_all();
    let token = login(&c.nodes[0].api);
    let (leader, _) = wait_for(Duration::from_secs(15), "every node to agree on the leader", || agreed_leader(&c, &token, 3));
    for n in &c.nodes {
        assert!(n.log_text().contains("with mutual TLS"), "node {} runs its peer port on mutual TLS: {}", n.id, n.log_text());
    }
    // A write on a follower goes to the leader and back to every node over TLS.
    let follower = c.nodes.iter().find(|n| n.id != leader).unwrap();
    let (st, body) = put_setting(&follower.api, &token, "written-over-tls", json!(follower.id));
    assert_eq!(st, 200, "{body}");
    for n in &c.nodes {
        wait_for(Duration::from_secs(5), "the write on every node", || (setting(&n.api, &token, "written-over-tls") == Some(json!(follower.id))).then_some(()));
    }
    // The keyed instances on the other nodes talk over TLS data links.
    let (out, run_id, _runner) = start_keyed_run(&c, &token, N);
    let done = wait_run_end(&c.nodes[1].api, &token, &run_id, Duration::from_secs(180));
    assert_eq!(done["status"], "success", "{done}\n{}", c.logs());
    assert_exactly_once(&out, N);
}

#[test]
fn a_run_whose_instance_node_dies_retries_from_its_checkpoint_with_the_instance_elsewhere() {
    const N: u64 = 1_500_000;
    let (mut c, token) = start_three(true);
    wait_for(Duration::from_secs(15), "a leader", || agreed_leader(&c, &token, 3));
    let (out, run_id, runner) = start_keyed_run(&c, &token, N);
    // A node that hosts an instance but neither runs the run nor leads.
    let (leader, _) = agreed_leader(&c, &token, 3).expect("one leader");
    let victim = (1..=3u64).find(|id| *id != runner && *id != leader).expect("a third node");
    c.nodes[victim as usize - 1].kill();
    let api = c.nodes[runner as usize - 1].api.clone();
    let done = wait_run_end(&api, &token, &run_id, Duration::from_secs(180));
    assert_eq!(done["status"], "success", "{done}\n{}", c.logs());
    let log = run_log(&api, &token, &run_id);
    assert!(log.contains("retrying") && !log.contains("moved to node"), "the run did not retry where it was (node {victim} killed): {log}\n{}", c.logs());
    assert!(done["counts"]["attempts"].as_u64().unwrap_or(0) >= 2, "{done}");
    assert_exactly_once(&out, N);
}

/// An HTTP receiver that takes `delay` to answer each request: a slow destination. Counts
/// the records (JSON array elements) it was sent.
fn slow_receiver(delay: Duration) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{BufRead, Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got = std::sync::Arc::new(AtomicU64::new(0));
    let count = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let n = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.as_array().map(|a| a.len() as u64)).unwrap_or(0);
                    std::thread::sleep(delay);
                    count.fetch_add(n, Ordering::SeqCst);
                    if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}").is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/in"), got)
}

/// Runs `pipeline` (given the input folder and the slow receiver's URL) on 2M records into
/// a destination that takes about 20,000 records a second, until `ready` holds for
/// `GET /cluster`; then checks over 8 s that the source reads only what the destination
/// takes and that no node's memory grows. Returns the run's node.
fn throttled(pipeline: impl Fn(&std::path::Path, &str) -> Value, ready: impl Fn(&Value) -> bool) -> u64 {
    use std::sync::atomic::Ordering;
    const N: u64 = 2_000_000;
    let (c, token) = start_three(true);
    wait_for(Duration::from_secs(15), "a leader", || agreed_leader(&c, &token, 3));
    let note = "x".repeat(100);
    let data = write_input(&c, N, |i| format!(r#"{{"id":{i},"name":"item number {i}","note":"{note}"}}"#));
    // About 20,000 records a second get through: the run would need 100 s for its input.
    let (url, received) = slow_receiver(Duration::from_millis(25));
    let api = c.nodes[1].api.clone();
    let (_pid, run_id) = create_and_execute(&api, &token, &pipeline(&data, &url));
    let runner = wait_for(Duration::from_secs(30), "the run placed and its stages where they go", || {
        let v = http(&api, "GET", "/cluster", Some(&token), None).1;
        let runner = v["members"].as_array()?.iter().find(|m| m["runs"] == 1)?["id"].as_u64()?;
        (ready(&v) && received.load(Ordering::SeqCst) > 0).then_some(runner)
    });
    // The reading stage's count, from the run's node, against what arrived.
    let read = || -> u64 {
        let v = http(&c.nodes[runner as usize - 1].api, "GET", &format!("/runs/{run_id}"), Some(&token), None).1;
        v["counts"]["records_read"].as_u64().unwrap_or(0)
    };
    std::thread::sleep(Duration::from_secs(3));
    let rss_early: Vec<u64> = c.nodes.iter().map(|n| n.rss_kib().unwrap()).collect();
    let (read_early, got_early) = (read(), received.load(Ordering::SeqCst));
    std::thread::sleep(Duration::from_secs(8));
    let rss_late: Vec<u64> = c.nodes.iter().map(|n| n.rss_kib().unwrap()).collect();
    let (read_late, got_late) = (read(), received.load(Ordering::SeqCst));
    eprintln!("read {read_early} -> {read_late}, received {got_early} -> {got_late}, rss KiB {rss_early:?} -> {rss_late:?}");
    assert!(got_late > got_early, "the destination received nothing more");
    assert!(read_late < N / 2, "the source was not held back: {read_late} of {N} read while {got_late} arrived");
    // In flight: the bounded channels and the links' windows, not the input.
    assert!(read_late - got_late < 150_000, "{} records between the source and the destination", read_late - got_late);
    for (i, (a, b)) in rss_early.iter().zip(&rss_late).enumerate() {
        assert!(*b < a + 40 * 1024, "node {}'s memory grew from {a} to {b} KiB", i + 1);
    }
    assert_eq!(http(&api, "POST", &format!("/runs/{run_id}/cancel"), Some(&token), None).0, 202);
    wait_run_end(&api, &token, &run_id, Duration::from_secs(30));
    runner
}

/// `GET /cluster`'s instances of member `id`.
fn instances_of(v: &Value, id: u64) -> u64 {
    v["members"].as_array().and_then(|a| a.iter().find(|m| m["id"] == id)).and_then(|m| m["instances"].as_u64()).unwrap_or(0)
}

#[test]
fn a_slow_destination_throttles_the_source_through_instances_on_other_nodes_with_flat_memory() {
    throttled(
        |data, url| {
            json!({
                "name": "slow-destination",
                "source": {"connector_type": "file", "config": {"path": data.join("in.jsonl"), "format": "jsonl"}},
                "transformations": [{"type": "deduplicate", "key_fields": ["id"]}],
                "destination": {"connector_type": "rest_api", "config": {"url": url, "method": "POST", "batch_size": 500}},
                "parallelism": 3
            })
        },
        |v| (1..=3).all(|id| instances_of(v, id) >= 1),
    );
}

#[test]
fn a_slow_destination_on_one_node_throttles_the_source_on_another_with_flat_memory() {
    // The leader places the run on the least loaded node, the lowest id first: node 1 reads,
    // node 3 writes.
    let runner = throttled(
        |data, url| {
            json!({
                "name": "slow-remote-destination",
                "source": {"connector_type": "file", "config": {"path": data.join("in.jsonl"), "format": "jsonl"}},
                "transformations": [{"type": "field_mapping", "field_name": "name", "operation": "title_case"}],
                "destination": {"connector_type": "rest_api", "config": {"url": url, "method": "POST", "batch_size": 500}},
                "placement": {"destinations": 3}
            })
        },
        |v| instances_of(v, 3) == 1,
    );
    assert_ne!(runner, 3, "the run was placed on the destination's node");
}

#[test]
fn a_destination_whose_node_dies_is_recovered_from_the_checkpoint_exactly_once() {
    const N: u64 = 1_500_000;
    let (mut c, token) = start_three(true);
    wait_for(Duration::from_secs(15), "a leader", || agreed_leader(&c, &token, 3));
    let data = write_input(&c, N, |i| format!(r#"{{"id":{i},"name":"item number {i}"}}"#));
    let out = data.join("out.jsonl");
    let doc = json!({
        "name": "remote-file-destination",
        "source": {"connector_type": "file", "config": {"path": data.join("in.jsonl"), "format": "jsonl"}},
        "transformations": [{"type": "field_mapping", "field_name": "name", "operation": "title_case"}],
        "destination": {"connector_type": "file", "config": {"path": out, "format": "jsonl"}},
        "error_handling": {"retry_policy": {"max_retries": 10, "initial_delay_seconds": 0.2, "backoff_multiplier": 1.0}},
        "checkpoint": {"interval_seconds": 0.3},
        "placement": {"destinations": 3}
    });
    let api = c.nodes[0].api.clone();
    let (_pid, run_id) = create_and_execute(&api, &token, &doc);
    let runner = wait_for(Duration::from_secs(30), "node 3 writing the run's output", || {
        let v = http(&api, "GET", "/cluster", Some(&token), None).1;
        let runner = v["members"].as_array()?.iter().find(|m| m["runs"] == 1)?["id"].as_u64()?;
        let writing = std::fs::metadata(data.join(".out.jsonl.dagg-tmp")).map(|m| m.len()).unwrap_or(0) > 1_000_000;
        (instances_of(&v, 3) == 1 && writing).then_some(runner)
    });
    assert_ne!(runner, 3, "the run was placed on the destination's node");
    c.nodes[2].kill();
    let done = wait_run_end(&api, &token, &run_id, Duration::from_secs(180));
    assert_eq!(done["status"], "success", "{done}\n{}", c.logs());
    assert!(done["counts"]["attempts"].as_u64().unwrap_or(0) >= 2, "the destination's loss did not fail an attempt: {done}");
    assert_exactly_once(&out, N);
}
