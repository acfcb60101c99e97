//! A member that joins after the log it needs was purged catches up from the leader's
//! snapshot: openraft reads the snapshot file in chunks, sends them over the peer port, and
//! the new member writes them to a file of its own and installs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dagg_cluster::state_machine::SNAPSHOT_FILE;
use dagg_cluster::memory::MemoryMachine as Kv;
use dagg_cluster::{ClusterConfig, ClusterNode, JoinRequest, PeerAuth, PeerNode};
use serde_json::{Value as Json, json};

async fn member(id: u64, dir: &std::path::Path, kv: Arc<Kv>) -> Arc<ClusterNode> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let auth = PeerAuth::token("snapshot-test-token");
    let mut config = ClusterConfig::new(id, dir.join(format!("raft-{id}")), PeerNode { peer_addr: addr.clone(), api_addr: addr }, auth.clone());
    config.snapshot_every = 1_000_000;
    let node = ClusterNode::start(config, kv).await.unwrap();
    let router = dagg_cluster::server::router(node.clone());
    tokio::spawn(async move { auth.serve(listener, router).await });
    node
}

async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_joins_after_the_log_was_purged_installs_the_leaders_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let a_kv = Arc::new(Kv::default());
    let a = member(1, dir.path(), a_kv.clone()).await;
    a.initialize_alone().await.unwrap();
    until(Duration::from_secs(10), "node 1 leads", || a.is_leader()).await;
    // More than one chunk (openraft sends 3 MiB at a time).
    a.write(json!({"k": "big", "v": "x".repeat(5 << 20)})).await.unwrap();
    for i in 0..20 {
        a.write(json!({"k": format!("k{i}"), "v": format!("\"{i}\"\n")})).await.unwrap();
    }
    let last = a.applied_index().unwrap();
    a.raft.trigger().snapshot().await.unwrap();
    until(Duration::from_secs(20), "the snapshot covers the writes", || a.raft.metrics().borrow().snapshot.is_some_and(|s| s.index >= last)).await;
    a.raft.trigger().purge_log(last).await.unwrap();
    until(Duration::from_secs(20), "the log is purged", || a.raft.metrics().borrow().purged.is_some_and(|p| p.index >= last)).await;

    let b_kv = Arc::new(Kv::default());
    let b = member(2, dir.path(), b_kv.clone()).await;
    a.add_member(JoinRequest { node_id: 2, node: b.node.clone() }).await.unwrap();
    until(Duration::from_secs(30), "node 2 has the state", || b_kv.pairs() == a_kv.pairs()).await;
    assert!(b.raft.metrics().borrow().snapshot.is_some_and(|s| s.index >= last), "node 2 installed a snapshot");
    let text = std::fs::read(dir.path().join("raft-2").join(SNAPSHOT_FILE)).unwrap();
    let header: Json = serde_json::from_slice(&text[..text.iter().position(|b| *b == b'\n').unwrap()]).unwrap();
    assert_eq!(header["format"], 2);
    // And later writes reach it through the log.
    a.write(json!({"k": "after", "v": "1"})).await.unwrap();
    until(Duration::from_secs(10), "node 2 has the later write", || b_kv.pairs().get("after").is_some()).await;
    a.shutdown().await;
    b.shutdown().await;
}
