//! TLS for a node's listeners and its connections to other nodes: certificates and keys
//! read from PEM files, rustls configurations on aws-lc-rs (never `ring`: with both in one
//! process rustls cannot pick a default), and [`TlsListener`], which hands `axum::serve`
//! connections whose handshake is done.
//!
//! The handshakes run in tasks of their own, so a client that opens a connection and says
//! nothing holds up no one else; one that does not finish within [`HANDSHAKE_TIMEOUT`] is
//! dropped.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate file {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read the private key file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("cannot read the CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The one crypto provider: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every certificate in a PEM file (a chain: the leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Cert { path: path.display().to_string(), reason };
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?.collect::<Result<Vec<_>, _>>().map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key { path: path.display().to_string(), reason: e.to_string() })
}

/// The CA certificates in a PEM file, as trust roots.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let bad = |reason: String| TlsError::Ca { path: path.display().to_string(), reason };
    let certs = load_certs(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| bad(e.to_string()))?;
    }
    Ok(roots)
}

/// A server that asks nothing of its clients (the admin API over HTTPS).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, private) = (load_certs(cert)?, load_key(key)?);
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| TlsError::Config(format!("{} does not go with {}: {e}", cert.display(), key.display())))?;
    Ok(Arc::new(config))
}

/// Both ends of mutual TLS between members: a server that requires a client certificate
/// signed by the CA in `ca`, and a client that presents `cert` and trusts only that CA.
pub fn mutual_configs(cert: &Path, key: &Path, ca: &Path) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), TlsError> {
    let (certs, private) = (load_certs(cert)?, load_key(key)?);
    let roots = Arc::new(load_roots(ca)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).build().map_err(|e| TlsError::Config(format!("client verifier from {}: {e}", ca.display())))?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), private.clone_key())
        .map_err(|e| TlsError::Config(format!("{} does not go with {}: {e}", cert.display(), key.display())))?;
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, private)
        .map_err(|e| TlsError::Config(format!("{} does not go with {}: {e}", cert.display(), key.display())))?;
    Ok((Arc::new(server), Arc::new(client)))
}

/// A listener whose connections have finished a TLS handshake with `config`; for
/// `axum::serve`.
pub struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!("accepting a connection on {local}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::info!("TLS connection from {addr} to {local} refused: {e}"),
                        Err(_) => tracing::info!("TLS connection from {addr} to {local}: no handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local, accepting })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accepting task is gone (it never ends on its own): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
