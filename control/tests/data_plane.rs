//! What a connected peer may ask a node to open on the data plane: only a destination of a
//! run the cluster placed, that names this node in `placement.destinations`, exactly as the
//! run's pipeline has it, with its file path inside the files folder. The exploit this
//! closes: a peer asked for a file sink at an absolute path (an `authorized_keys`), and the
//! node wrote and committed it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dagg_actors::remote_keyed::Remote;
use dagg_actors::remote_sink::RemoteSink;
use dagg_control::cluster::placement::sink_admission;
use dagg_control::meta::{Assignment, MetaCommand, MetaStore, Pipeline, Run, Stamp, Trigger};
use dagg_connectors::SinkConnector;
use dagg_model::spec::connector::{ConnectorSpec, Role, parse_connector};
use dagg_model::{Record, RunStatus, SpecErrors, Value};
use serde_json::{Value as Json, json};

const PIPELINE: &str = "copy-to-node-2";

fn file_destination(path: &str) -> Json {
    json!({"connector_type": "file", "config": {"path": path, "format": "jsonl"}})
}

fn spec_of(destination: &Json) -> ConnectorSpec {
    let mut errs = SpecErrors::new();
    let spec = parse_connector(destination, "destination", Role::Sink, &mut errs);
    assert!(errs.is_empty(), "{errs}");
    spec.unwrap()
}

/// A store with pipeline `p1` (destination `out.jsonl`, placed on node 2) and its run
/// `placed`, running and placed on node 1; run `unplaced` has no placement.
fn store(dir: &Path) -> Arc<MetaStore> {
    let m = MetaStore::open(dir).unwrap();
    let stamp = Stamp { at: Utc::now(), by: "u1".into() };
    let doc = json!({
        "name": PIPELINE,
        "source": {"connector_type": "file", "config": {"path": "in.jsonl", "format": "jsonl"}},
        "destination": file_destination("out.jsonl"),
        "placement": {"destinations": 2}
    });
    let pipeline = Pipeline {
        id: "p1".into(),
        name: PIPELINE.into(),
        description: None,
        version: 1,
        paused: false,
        source_type: "file".into(),
        destination_types: vec!["file".into()],
        schedule_type: "manual".into(),
        created: stamp.clone(),
        updated: stamp,
    };
    m.apply(MetaCommand::CreatePipeline { pipeline, document: doc, comment: "created".into() }).unwrap();
    for id in ["placed", "unplaced"] {
        let run = Run::pending(id.into(), "p1", PIPELINE, 1, Trigger::Manual, "admin".into(), Utc::now());
        m.apply(MetaCommand::CreateRun { run }).unwrap();
        m.apply(MetaCommand::UpdateRun { id: id.into(), status: RunStatus::Running, at: Utc::now(), counts: None, error: None }).unwrap();
    }
    let a = Assignment { node: 1, at: Utc::now(), attempt: 1 };
    m.apply(MetaCommand::AssignRun { run_id: "placed".into(), assignment: a }).unwrap();
    Arc::new(m)
}

/// Node `node_id`'s data plane on a loopback port, with `files` as its files folder.
async fn data_plane(store: Arc<MetaStore>, node_id: u64, files: &Path) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let router = dagg_cluster::data_plane::router(files.to_path_buf(), sink_admission(store, node_id, true));
    tokio::spawn(async move { peer_auth().serve(l, router).await });
    addr
}

/// The cluster's credentials: the peer is a member (with the token); what it may ask for is
/// what these tests check.
fn peer_auth() -> dagg_cluster::peer_auth::PeerAuth {
    dagg_cluster::peer_auth::PeerAuth::token("the-cluster-token")
}

/// A peer asking `addr` to open `destination` for `run_id`.
async fn open(addr: &str, run_id: &str, destination: &Json) -> Result<RemoteSink, String> {
    let io = dagg_cluster::data_plane::connect(&peer_auth(), addr, dagg_cluster::data_plane::SINK, 1, Duration::from_secs(5)).await?;
    RemoteSink::open(Remote { node: 2, io: Box::new(io) }, PIPELINE, run_id, &spec_of(destination)).await
}

fn record(line: &str) -> Record {
    let mut r = Record::default();
    r.insert("line", Value::from(line));
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_cannot_open_a_file_sink_outside_the_files_folder_nor_for_a_run_not_placed_here() {
    let root = tempfile::tempdir().unwrap();
    let files = root.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    // Outside the files folder: where an attacker wants a key of their own.
    let ssh = root.path().join("home").join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let keys = ssh.join("authorized_keys");
    let meta = store(&root.path().join("meta"));
    let node2 = data_plane(meta.clone(), 2, &files).await;

    // An absolute path, for a real run placed by the cluster: refused for its path.
    let e = open(&node2, "placed", &file_destination(keys.to_str().unwrap())).await.err().expect("refused");
    assert!(e.contains("leaves the server's file folder"), "{e}");
    // `..` out of the files folder: refused the same way.
    let e = open(&node2, "placed", &file_destination("../home/.ssh/authorized_keys")).await.err().expect("refused");
    assert!(e.contains("leaves the server's file folder"), "{e}");
    // A path inside, but for a run that does not exist, one never placed, and a destination
    // the run's pipeline does not have.
    let e = open(&node2, "invented", &file_destination("out.jsonl")).await.err().expect("refused");
    assert!(e.contains("no run `invented`"), "{e}");
    let e = open(&node2, "unplaced", &file_destination("out.jsonl")).await.err().expect("refused");
    assert!(e.contains("was not placed by the cluster"), "{e}");
    let e = open(&node2, "placed", &file_destination("stolen.jsonl")).await.err().expect("refused");
    assert!(e.contains("no such destination"), "{e}");
    // The run's destination, asked of a node its pipeline does not name.
    let node3 = data_plane(meta.clone(), 3, &files).await;
    let e = open(&node3, "placed", &file_destination("out.jsonl")).await.err().expect("refused");
    assert!(e.contains("does not place its destinations on node 3"), "{e}");

    assert!(!keys.exists(), "the authorized_keys file was written");
    assert_eq!(std::fs::read_dir(&ssh).unwrap().count(), 0, "nothing appeared beside it");
    assert_eq!(std::fs::read_dir(&files).unwrap().count(), 0, "nothing was opened in the files folder");

    // The run's own destination, on the node it names, opens and commits as before.
    let mut sink = open(&node2, "placed", &file_destination("out.jsonl")).await.expect("the placed run's destination opens");
    assert!(sink.write(&[record("ssh-ed25519 AAAA attacker")]).await.unwrap().is_empty());
    sink.pre_commit(1).await.unwrap();
    sink.commit().await.unwrap();
    drop(sink);
    let out = std::fs::read_to_string(files.join("out.jsonl")).unwrap();
    assert!(out.contains("attacker"), "{out}");

    // A run that ended takes no destination any more.
    meta.apply(MetaCommand::UpdateRun { id: "placed".into(), status: RunStatus::Success, at: Utc::now(), counts: None, error: None }).unwrap();
    let e = open(&node2, "placed", &file_destination("out.jsonl")).await.err().expect("refused");
    assert!(e.contains("already ended"), "{e}");
}
