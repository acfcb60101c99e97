//! Who may talk to a member's peer port, and how a member proves it is one.
//!
//! Two modes, one per node:
//! - **Certificates** ([`PeerAuth::Tls`]): mutual TLS. The peer listener requires a client
//!   certificate signed by the cluster CA; a member connecting to another verifies the
//!   other's certificate against the same CA, for the host it advertises (the certificate
//!   carries it as a DNS or IP subject alternative name). Made by `dagg cert`.
//! - **A cluster token** ([`PeerAuth::Token`]): plain HTTP, every request (Raft RPC, joins,
//!   the data plane's upgrade) carries the token in [`TOKEN_HEADER`] (or as
//!   `Authorization: Bearer`), compared in constant time. For a peer port on loopback (the
//!   one-command start and local clusters sharing one token file), or explicitly insecure.
//!
//! A request without the credentials gets `401` and a JSON body saying what is missing; a
//! connection without a CA-signed certificate does not get past the handshake.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::tls::{TlsError, TlsListener};

/// The header a member sends its cluster token in.
pub const TOKEN_HEADER: &str = "x-dagg-cluster-token";

/// The shortest token accepted from a file.
pub const MIN_TOKEN_LEN: usize = 16;

/// A byte stream to another member's peer port (TCP, or TLS over it).
pub type PeerStream = Box<dyn dagg_actors::remote_keyed::Io>;

/// The files of the certificate mode.
#[derive(Clone, Debug)]
pub struct PeerCerts {
    /// This node's certificate (PEM; its chain may follow).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The cluster CA's certificate (PEM): the only issuer a member trusts.
    pub ca: PathBuf,
}

/// How this member authenticates the peers it serves and itself to those it calls.
#[derive(Clone)]
pub enum PeerAuth {
    Tls { server: Arc<ServerConfig>, client: Arc<ClientConfig> },
    Token(Arc<str>),
}

impl std::fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerAuth::Tls { .. } => "PeerAuth::Tls",
            PeerAuth::Token(_) => "PeerAuth::Token(********)",
        })
    }
}

/// Why the cluster token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the cluster token file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the cluster token file {path} holds {len} characters; a token has at least {MIN_TOKEN_LEN} (no spaces)")]
    TooShort { path: String, len: usize },
    #[error("cannot write the cluster token file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot generate a cluster token: {0}")]
    Random(String),
}

impl PeerAuth {
    /// The certificate mode, from its files.
    pub fn from_certs(c: &PeerCerts) -> Result<PeerAuth, TlsError> {
        let (server, client) = crate::tls::mutual_configs(&c.cert, &c.key, &c.ca)?;
        Ok(PeerAuth::Tls { server, client })
    }

    pub fn token(token: impl Into<Arc<str>>) -> PeerAuth {
        PeerAuth::Token(token.into())
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, PeerAuth::Tls { .. })
    }

    /// The URL of `path` on the member whose peer address is `addr`.
    pub fn url(&self, addr: &str, path: &str) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{addr}{path}")
    }

    /// Whether `got` is this cluster's token (never, in the certificate mode); constant time.
    pub fn accepts_token(&self, got: &str) -> bool {
        match self {
            PeerAuth::Token(want) => constant_time_eq(want.as_bytes(), got.as_bytes()),
            PeerAuth::Tls { .. } => false,
        }
    }

    /// The token this member sends, in the token mode.
    pub fn sent_token(&self) -> Option<&str> {
        match self {
            PeerAuth::Token(t) => Some(t.as_ref()),
            PeerAuth::Tls { .. } => None,
        }
    }

    /// The HTTP client for Raft RPC to other members: TLS with this node's certificate, or
    /// the token on every request.
    pub(crate) fn http_client(&self, bind_ip: Option<IpAddr>) -> Result<reqwest::Client, String> {
        let mut b = reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(1)).pool_idle_timeout(Duration::from_secs(30));
        if let Some(ip) = bind_ip {
            b = b.local_address(ip);
        }
        match self {
            PeerAuth::Tls { client, .. } => b = b.tls_backend_preconfigured((**client).clone()),
            PeerAuth::Token(t) => {
                let mut v = HeaderValue::from_str(t).map_err(|_| "the cluster token holds characters a header cannot carry".to_string())?;
                v.set_sensitive(true);
                let mut h = HeaderMap::new();
                h.insert(TOKEN_HEADER, v);
                b = b.default_headers(h);
            }
        }
        b.build().map_err(|e| e.to_string())
    }

    /// A connection to the peer port at `addr` (`host:port`), TLS-verified for `host` in the
    /// certificate mode; from `bind_ip` when given.
    pub async fn connect(&self, addr: &str, bind_ip: Option<IpAddr>) -> Result<PeerStream, String> {
        let tcp = match bind_ip {
            Some(ip) => {
                let to = tokio::net::lookup_host(addr).await.map_err(|e| format!("cannot resolve {addr}: {e}"))?.find(|a| a.is_ipv4() == ip.is_ipv4()).ok_or_else(|| format!("{addr} has no address of {ip}'s family"))?;
                let socket = if ip.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(|e| e.to_string())?;
                socket.bind(SocketAddr::new(ip, 0)).map_err(|e| format!("cannot connect from {ip}: {e}"))?;
                socket.connect(to).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?
            }
            None => TcpStream::connect(addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?,
        };
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        match self {
            PeerAuth::Token(_) => Ok(Box::new(tcp)),
            PeerAuth::Tls { client, .. } => {
                let name = server_name(addr)?;
                let tls = tokio_rustls::TlsConnector::from(client.clone()).connect(name, tcp).await.map_err(|e| format!("TLS with {addr}: {e}"))?;
                Ok(Box::new(tls))
            }
        }
    }

    /// `router` behind this mode's check: every request needs the token (the certificate
    /// mode checks at the handshake, in [`Self::serve`]).
    pub fn protect(&self, router: Router) -> Router {
        match self {
            PeerAuth::Tls { .. } => router,
            PeerAuth::Token(_) => router.layer(axum::middleware::from_fn_with_state(self.clone(), require_token)),
        }
    }

    /// Serves `router` (protected) on `listener` until the task is dropped.
    pub async fn serve(&self, listener: TcpListener, router: Router) -> std::io::Result<()> {
        let router = self.protect(router);
        match self {
            PeerAuth::Tls { server, .. } => axum::serve(TlsListener::new(listener, server.clone())?, router).await,
            PeerAuth::Token(_) => axum::serve(listener, router).await,
        }
    }
}

/// The name a member's certificate must carry: the host of its `host:port`.
fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("`{host}` (of {addr}) is not a host name or IP address: {e}"))
}

async fn require_token(State(auth): State<PeerAuth>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let got = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")));
    let problem = match got {
        Some(t) if auth.accepts_token(t) => None,
        Some(_) => Some("the cluster token is wrong"),
        None => Some("this is a dagg peer port: every request needs the cluster token (header X-Dagg-Cluster-Token)"),
    };
    let Some(problem) = problem else { return next.run(req).await };
    tracing::info!("peer request {} {} refused: {problem}", req.method(), req.uri().path());
    (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": {"code": "unauthorized", "message": problem}}))).into_response()
}

/// Equal contents, in a time that depends on the lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token in `path` (surrounding whitespace ignored).
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read { path: path.display().to_string(), source })?;
    let t = text.trim();
    if t.len() < MIN_TOKEN_LEN || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TokenError::TooShort { path: path.display().to_string(), len: t.chars().count() });
    }
    Ok(t.to_string())
}

/// The token in `path`, generated there first (32 random bytes in hex, the file mode 0600)
/// when the file does not exist.
pub fn load_or_create_token(path: &Path) -> Result<String, TokenError> {
    if path.exists() {
        return read_token(path);
    }
    let mut bytes = [0u8; 32];
    crate::tls::provider().secure_random.fill(&mut bytes).map_err(|e| TokenError::Random(format!("{e:?}")))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let write = |p: &Path| -> std::io::Result<()> {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(p)?;
        f.write_all(token.as_bytes())?;
        f.sync_all()
    };
    match write(path) {
        Ok(()) => Ok(token),
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_token(path),
        Err(source) => Err(TokenError::Write { path: path.display().to_string(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_and_length() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abcdef", b"abcde"));
        let auth = PeerAuth::token("0123456789abcdef0123");
        assert!(auth.accepts_token("0123456789abcdef0123"));
        assert!(!auth.accepts_token("0123456789abcdef012"));
        assert!(!auth.accepts_token(""));
    }

    #[test]
    fn a_generated_token_is_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cluster-token");
        let t = load_or_create_token(&p).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(load_or_create_token(&p).unwrap(), t);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&p, "short\n").unwrap();
        let e = load_or_create_token(&p).unwrap_err().to_string();
        assert!(e.contains("cluster-token") && e.contains("at least 16"), "{e}");
    }

    #[test]
    fn a_members_certificate_name_is_its_advertised_host() {
        assert_eq!(server_name("10.0.0.3:9001").unwrap(), ServerName::try_from("10.0.0.3").unwrap());
        assert_eq!(server_name("dagg-0.dagg-peers:9001").unwrap(), ServerName::try_from("dagg-0.dagg-peers").unwrap());
        assert_eq!(server_name("[::1]:9001").unwrap(), ServerName::try_from("::1").unwrap());
    }
}
