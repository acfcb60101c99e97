//! The data plane's connections: the links (see `dagg_actors::link`) of keyed instances
//! (`dagg_actors::remote_keyed`, on [`KEYED`]) and of destinations
//! (`dagg_actors::remote_sink`, on [`SINK`]) run on the peer address, like Raft RPC. A run's
//! node opens a TCP connection and asks for an HTTP upgrade to [`PROTOCOL`]; after the
//! `101 Switching Protocols` answer the connection carries the link's frames. One port per
//! node for everything between nodes, which is what a Kubernetes headless Service exposes.
//! The link is authenticated like every peer request (see [`crate::peer_auth`]): over mutual
//! TLS, or with the cluster token in the upgrade request.

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use dagg_actors::remote_sink::SinkAdmission;
use axum::routing::get;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::peer_auth::{PeerAuth, PeerStream, TOKEN_HEADER};

/// The path a keyed instance's link is opened on.
pub const KEYED: &str = "/data/keyed";
/// The path a destination's link is opened on.
pub const SINK: &str = "/data/sink";
/// The protocol named in the `Upgrade` header.
pub const PROTOCOL: &str = "dagg-data/1";

/// The data plane's routes, for the peer listener; relative destination paths resolve
/// against `files_dir`, and `admit` decides which destinations this node hosts.
pub fn router(files_dir: PathBuf, admit: SinkAdmission) -> Router {
    Router::new().route(KEYED, get(accept_keyed)).route(SINK, get(accept_sink)).with_state((files_dir, admit))
}

async fn accept_keyed(req: Request) -> Response {
    upgrade(req, |io, peer| dagg_actors::remote_keyed::host(io, peer))
}

async fn accept_sink(State((files_dir, admit)): State<(PathBuf, SinkAdmission)>, req: Request) -> Response {
    upgrade(req, move |io, peer| dagg_actors::remote_sink::host(io, peer, files_dir, admit))
}

/// Upgrades the connection and runs `serve` on it.
fn upgrade<F, Fut>(mut req: Request, serve: F) -> Response
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let asks = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !asks {
        return (StatusCode::UPGRADE_REQUIRED, format!("this path takes `Upgrade: {PROTOCOL}`")).into_response();
    }
    let peer = req.headers().get("x-dagg-node").and_then(|v| v.to_str().ok()).map(|n| format!("node {n}")).unwrap_or_else(|| "a coordinator".into());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => serve(TokioIo::new(io), peer).await,
            Err(e) => tracing::warn!("data link from {peer}: the upgrade failed: {e}"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp
}

/// Opens a link's connection on `path` ([`KEYED`] or [`SINK`]) to the node at `peer_addr`
/// (`host:port`), from node `from`, with `auth`'s credentials: connected and upgraded, ready
/// for the link's frames.
pub async fn connect(auth: &PeerAuth, peer_addr: &str, path: &str, from: u64, timeout: Duration) -> Result<PeerStream, String> {
    let work = async {
        let mut s = auth.connect(peer_addr, None).await?;
        let token = auth.sent_token().map(|t| format!("{TOKEN_HEADER}: {t}\r\n")).unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {peer_addr}\r\nConnection: Upgrade\r\nUpgrade: {PROTOCOL}\r\nX-Dagg-Node: {from}\r\n{token}\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| format!("{peer_addr}: {e}"))?;
        // The answer's head, byte by byte: nothing of the link may be read past it.
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 8192 {
                return Err(format!("{peer_addr}: an answer head over 8 KiB"));
            }
            let b = s.read_u8().await.map_err(|e| format!("{peer_addr}: {e}"))?;
            head.push(b);
        }
        let text = String::from_utf8_lossy(&head);
        let status = text.split_whitespace().nth(1).unwrap_or_default();
        if status != "101" {
            return Err(format!("{peer_addr} refused the data link: {}", text.lines().next().unwrap_or_default()));
        }
        Ok(s)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("{peer_addr}: no data link within {} ms", timeout.as_millis()))?
}
