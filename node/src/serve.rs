//! `dagg serve`: one node of a dagg cluster — the admin API (and the UI), the metadata
//! replicated through Raft, and the runs the leader places on this node.
//!
//! Without peers it is a cluster of one (still Raft, initialized alone, fast). With
//! `--peers` it bootstraps a static cluster (the lowest id initializes the membership once
//! every listed node answers; a restarted node has a log and never bootstraps again); with
//! `--join URL` it asks a running member to add it. Every option also comes from the
//! environment variable named, and from the `--config` file (YAML, JSON or TOML, the
//! options' long names as keys); a flag or variable wins over the file.
//!
//! The peer port is authenticated: with `--peer-cert/--peer-key/--peer-ca` by mutual TLS
//! between nodes holding certificates of one cluster CA (`dagg cert`), otherwise by a cluster
//! token (`<data-dir>/cluster-token`, generated, or `--cluster-token-file`) on a peer port
//! that must then be on loopback unless `--insecure-peer` says otherwise.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dagg_control::cluster::{Meta, MetaMachine, placement};
use dagg_control::meta::MetaStore;
use dagg_api::auth::{Cidr, TrustedProxies};
use dagg_api::{ApiConfig, AppState};
use dagg_cluster::{ClusterConfig, ClusterNode, PeerAuth, PeerCerts, PeerNode};
use serde::Deserialize;

const DEFAULT_API_ADDR: &str = "127.0.0.1:8001";
const DEFAULT_PEER_ADDR: &str = "127.0.0.1:9001";

/// Options of `dagg serve`; each also comes from the environment variable named.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A YAML, JSON or TOML file with any of these options (their long names as keys, e.g.
    /// `node-id: 2`, `peers: "1=a:9001,2=b:9001"`); flags and variables win over it.
    #[arg(long, env = "DAGG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address the API listens on [default: 127.0.0.1:8001].
    #[arg(long, env = "DAGG_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// This node's id in the cluster (1 or more, unique) [default: 1].
    #[arg(long, env = "DAGG_NODE_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: Option<u64>,
    /// Address the peer listener (Raft RPC between nodes) binds [default: 127.0.0.1:9001].
    #[arg(long, env = "DAGG_PEER_ADDR")]
    pub peer_addr: Option<String>,
    /// `host:port` other nodes reach this node's peer listener at [default: the peer address].
    #[arg(long, env = "DAGG_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// A static cluster: every member's id and peer address, this node included
    /// (`1=host:port,2=host:port,3=host:port`).
    #[arg(long, env = "DAGG_PEERS")]
    pub peers: Option<String>,
    /// The API URL of a running member to join (`http://host:8001`). With
    /// `DAGG_CLUSTER_TOKEN` set on both, no admin credentials are needed.
    #[arg(long, env = "DAGG_JOIN")]
    pub join: Option<String>,
    /// A directory every node reads and writes (a shared volume): run state and checkpoints
    /// live there, so a run moved off a lost node resumes from its last checkpoint.
    #[arg(long, env = "DAGG_SHARED_DIR")]
    pub shared_dir: Option<PathBuf>,
    /// Where metadata (`meta/`), the Raft log (`raft/`), uploaded files (`files/`, where
    /// relative paths of API-made pipelines resolve) and run state (`runtime/`) live.
    /// Default: `$DAGG_HOME`, else `./.dagg`.
    #[arg(long, env = "DAGG_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Origins allowed to call the API from a browser (comma-separated; `*` for any). None:
    /// same origin only.
    #[arg(long, env = "DAGG_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Largest request body, bytes.
    #[arg(long, env = "DAGG_BODY_LIMIT", default_value_t = 2 * 1024 * 1024)]
    pub body_limit: usize,
    /// Lifetime of access tokens, seconds.
    #[arg(long, env = "DAGG_ACCESS_TOKEN_TTL", default_value_t = 900, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub access_token_ttl: u64,
    /// Lifetime of refresh tokens, seconds.
    #[arg(long, env = "DAGG_REFRESH_TOKEN_TTL", default_value_t = 30 * 86_400, value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub refresh_token_ttl: u64,
    /// Failed logins of one account (within 15 minutes, from any address) before it is
    /// locked: 429 for a minute, twice as long at each further lockout, up to an hour.
    #[arg(long, env = "DAGG_LOGIN_MAX_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub login_max_failures: u64,
    /// Failed logins from one client address (within 15 minutes, on any accounts) before
    /// that address gets 429.
    #[arg(long, env = "DAGG_LOGIN_MAX_FAILURES_PER_ADDRESS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub login_max_failures_per_address: u64,
    /// Reverse proxies (addresses or CIDRs, comma-separated) whose `X-Forwarded-For` header
    /// names the client for the login limits. None: the client is the connection's peer and
    /// the header is ignored.
    #[arg(long = "trusted-proxy", env = "DAGG_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,
    /// Let API-made pipelines read and write files anywhere the server can (by default their
    /// file paths must stay inside `<data-dir>/files`).
    #[arg(long, env = "DAGG_ALLOW_ANY_FILE_PATH")]
    pub allow_any_file_path: bool,
    /// This node's certificate for the peer port (PEM, signed by the cluster CA, naming the
    /// host it advertises; `dagg cert node` makes it). With --peer-key and --peer-ca, every
    /// connection between nodes is mutual TLS.
    #[arg(long, env = "DAGG_PEER_CERT")]
    pub peer_cert: Option<PathBuf>,
    /// The private key of --peer-cert (PEM).
    #[arg(long, env = "DAGG_PEER_KEY")]
    pub peer_key: Option<PathBuf>,
    /// The cluster CA's certificate (PEM): peers must present a certificate it signed.
    #[arg(long, env = "DAGG_PEER_CA")]
    pub peer_ca: Option<PathBuf>,
    /// Without peer certificates: the file with the cluster token every node of the cluster
    /// shares (at least 16 characters) [default: `<data-dir>/cluster-token`, generated].
    #[arg(long, env = "DAGG_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
    /// Let a peer address that is not loopback go without certificates: peers then prove
    /// themselves with the cluster token only, sent in clear. A warning at every start.
    #[arg(long, env = "DAGG_INSECURE_PEER")]
    pub insecure_peer: bool,
    /// Serve the API over HTTPS with this certificate (PEM; with --tls-key).
    #[arg(long, env = "DAGG_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "DAGG_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// The `--config` file: the same options by their long names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    #[serde(alias = "node_id")]
    node_id: Option<u64>,
    #[serde(alias = "api_addr")]
    api_addr: Option<SocketAddr>,
    #[serde(alias = "peer_addr")]
    peer_addr: Option<String>,
    #[serde(alias = "advertise_addr")]
    advertise_addr: Option<String>,
    peers: Option<PeersValue>,
    join: Option<String>,
    #[serde(alias = "shared_dir")]
    shared_dir: Option<PathBuf>,
    #[serde(alias = "data_dir")]
    data_dir: Option<PathBuf>,
    #[serde(alias = "peer_cert")]
    peer_cert: Option<PathBuf>,
    #[serde(alias = "peer_key")]
    peer_key: Option<PathBuf>,
    #[serde(alias = "peer_ca")]
    peer_ca: Option<PathBuf>,
    #[serde(alias = "cluster_token_file")]
    cluster_token_file: Option<PathBuf>,
    #[serde(alias = "insecure_peer")]
    insecure_peer: Option<bool>,
    #[serde(alias = "tls_cert")]
    tls_cert: Option<PathBuf>,
    #[serde(alias = "tls_key")]
    tls_key: Option<PathBuf>,
    /// `--trusted-proxy`: a list of addresses or CIDRs.
    #[serde(alias = "trusted_proxy")]
    trusted_proxy: Option<Vec<String>>,
}

/// `peers` in a file: the flag's text, or a map of id to address.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PeersValue {
    Text(String),
    Map(BTreeMap<PeerKey, String>),
}

/// A node id as a map key: a number (YAML) or text (TOML keys are text).
#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(untagged)]
enum PeerKey {
    Number(u64),
    Text(String),
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerKey::Number(n) => write!(f, "{n}"),
            PeerKey::Text(t) => f.write_str(t),
        }
    }
}

fn read_config_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    let is_toml = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let r = if is_toml { toml::from_str(&text).map_err(|e| e.to_string()) } else { serde_norway::from_str(&text).map_err(|e| e.to_string()) };
    r.map_err(|e| format!("the config file {}: {e}", path.display()))
}

/// `1=host:port,2=host:port` -> ids and addresses.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("peers: `{part}` is not id=host:port"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("peers: `{id}` in `{part}` is not a node id (a number from 1)"))?;
        if id == 0 {
            return Err(format!("peers: `{part}`: node ids start at 1"));
        }
        check_host_port(addr.trim()).map_err(|e| format!("peers: `{part}`: {e}"))?;
        if out.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("peers: node {id} is listed twice"));
        }
    }
    if out.is_empty() {
        return Err("peers: no node listed".into());
    }
    Ok(out)
}

fn check_host_port(a: &str) -> Result<(), String> {
    match a.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("`{a}` is not host:port")),
    }
}

/// The options after the file, the flags and the defaults are merged.
#[derive(Debug)]
pub struct Settings {
    pub node_id: u64,
    pub api_addr: SocketAddr,
    pub peer_addr: String,
    /// Whether the peer address was chosen (not the default).
    pub peer_addr_given: bool,
    pub advertise_addr: Option<String>,
    pub peers: Option<BTreeMap<u64, String>>,
    pub join: Option<String>,
    pub shared_dir: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub peer_security: PeerSecurity,
    /// The API's certificate and key, for HTTPS.
    pub api_tls: Option<(PathBuf, PathBuf)>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
}

/// How the peer port is protected.
#[derive(Debug)]
pub enum PeerSecurity {
    /// Mutual TLS with certificates of the cluster CA.
    Certs(PeerCerts),
    /// The cluster token from `file` (`None`: `<data-dir>/cluster-token`, generated);
    /// `insecure` when the peer address is not loopback.
    Token { file: Option<PathBuf>, insecure: bool },
}

/// Whether the host of `host:port` is a loopback address (`localhost` included).
fn is_loopback(host_port: &str) -> bool {
    let host = host_of(host_port).trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

impl ServeArgs {
    /// Merges the flags (and variables) over the config file over the defaults.
    pub fn settings(&self) -> Result<Settings, String> {
        let file = match &self.config {
            Some(p) => read_config_file(p)?,
            None => FileConfig::default(),
        };
        let node_id = self.node_id.or(file.node_id).unwrap_or(1);
        if node_id == 0 {
            return Err("node-id: node ids start at 1".into());
        }
        let peer_given = self.peer_addr.clone().or(file.peer_addr);
        let peers = match (&self.peers, file.peers) {
            (Some(t), _) => Some(parse_peers(t)?),
            (None, Some(PeersValue::Text(t))) => Some(parse_peers(&t)?),
            (None, Some(PeersValue::Map(m))) => Some(parse_peers(&m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))?),
            (None, None) => None,
        };
        if let Some(p) = &peers
            && !p.contains_key(&node_id)
        {
            return Err(format!("peers: this node's id {node_id} is not in the list ({})", p.keys().map(u64::to_string).collect::<Vec<_>>().join(", ")));
        }
        let join = self.join.clone().or(file.join).filter(|j| !j.trim().is_empty());
        if peers.is_some() && join.is_some() {
            return Err("give either --peers (a static cluster) or --join (a running one), not both".into());
        }
        let advertise_addr = self.advertise_addr.clone().or(file.advertise_addr);
        if let Some(a) = &advertise_addr {
            check_host_port(a).map_err(|e| format!("advertise-addr: {e}"))?;
        }
        let peer_addr = peer_given.clone().unwrap_or_else(|| DEFAULT_PEER_ADDR.to_string());
        check_host_port(&peer_addr).map_err(|e| format!("peer-addr: {e}"))?;
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .or_else(|| std::env::var_os("DAGG_HOME").filter(|v| !v.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".dagg"));
        let peer_security = match (self.peer_cert.clone().or(file.peer_cert), self.peer_key.clone().or(file.peer_key), self.peer_ca.clone().or(file.peer_ca)) {
            (Some(cert), Some(key), Some(ca)) => PeerSecurity::Certs(PeerCerts { cert, key, ca }),
            (None, None, None) => {
                let insecure = self.insecure_peer || file.insecure_peer.unwrap_or(false);
                if !is_loopback(&peer_addr) && !insecure {
                    return Err(format!(
                        "the peer address {peer_addr} is not on loopback, and this node has no peer certificates: give --peer-cert, --peer-key and --peer-ca \
                         (`dagg cert ca` and `dagg cert node` make them), or --insecure-peer to let peers in with the cluster token only, sent in clear"
                    ));
                }
                PeerSecurity::Token { file: self.cluster_token_file.clone().or(file.cluster_token_file), insecure: !is_loopback(&peer_addr) }
            }
            (cert, key, ca) => {
                let missing: Vec<&str> = [("--peer-cert", cert.is_none()), ("--peer-key", key.is_none()), ("--peer-ca", ca.is_none())].into_iter().filter(|(_, m)| *m).map(|(n, _)| n).collect();
                return Err(format!("--peer-cert, --peer-key and --peer-ca go together: {} missing", missing.join(" and ")));
            }
        };
        let api_tls = match (self.tls_cert.clone().or(file.tls_cert), self.tls_key.clone().or(file.tls_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => return Err("--tls-cert needs --tls-key".into()),
            (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
        };
        let trusted_proxies = match (self.trusted_proxies.is_empty(), file.trusted_proxy) {
            (true, Some(list)) => list.iter().map(|c| c.parse::<Cidr>().map_err(|e| format!("trusted-proxy: {e}"))).collect::<Result<Vec<_>, _>>()?,
            _ => self.trusted_proxies.clone(),
        };
        Ok(Settings {
            node_id,
            api_addr: self.api_addr.or(file.api_addr).unwrap_or_else(|| DEFAULT_API_ADDR.parse().expect("the default parses")),
            peer_addr,
            peer_addr_given: peer_given.is_some(),
            advertise_addr,
            peers,
            join,
            shared_dir: self.shared_dir.clone().or(file.shared_dir),
            data_dir,
            peer_security,
            api_tls,
            trusted_proxies: TrustedProxies(trusted_proxies),
        })
    }

    /// The API's configuration. Secrets come from the environment only, never the command
    /// line (where `ps` would show them): `DAGG_ADMIN_PASSWORD`, `DAGG_JWT_SECRET`.
    pub fn config(&self, s: &Settings) -> ApiConfig {
        let mut c = ApiConfig::new(s.data_dir.clone());
        c.cors_origins = self.cors_origins.iter().map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect();
        c.body_limit = self.body_limit;
        c.access_ttl = Duration::from_secs(self.access_token_ttl);
        c.refresh_ttl = Duration::from_secs(self.refresh_token_ttl);
        c.login_max_failures = self.login_max_failures as usize;
        c.login_max_failures_per_address = self.login_max_failures_per_address as usize;
        c.trusted_proxies = s.trusted_proxies.clone();
        c.restrict_file_paths = !self.allow_any_file_path;
        c.admin_password = std::env::var("DAGG_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty());
        c.jwt_secret = std::env::var("DAGG_JWT_SECRET").ok().filter(|p| !p.is_empty());
        c.shared_dir = s.shared_dir.clone();
        // Alone, a node may keep its own master key; members of a cluster need the same one.
        c.generate_master_key = s.peers.is_none() && s.join.is_none();
        c
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

/// `host:port` with the host replaced when it is unspecified (0.0.0.0, ::).
fn reachable(addr: SocketAddr, host_hint: &str) -> String {
    if addr.ip().is_unspecified() { format!("{host_hint}:{}", addr.port()) } else { addr.to_string() }
}

fn host_of(hp: &str) -> &str {
    hp.rsplit_once(':').map(|(h, _)| h).unwrap_or(hp)
}

/// Runs the node until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> ExitCode {
    let s = match args.settings() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let config = args.config(&s);
    let data_dir = config.data_dir.clone();
    if let Err(e) = AppState::create_dirs(&config) {
        return fail(format!("cannot open the data directory {}: {e}", data_dir.display()));
    }
    let auth = match &s.peer_security {
        PeerSecurity::Certs(c) => match PeerAuth::from_certs(c) {
            Ok(a) => a,
            Err(e) => return fail(format!("peer certificates: {e}")),
        },
        PeerSecurity::Token { file, insecure } => {
            let token = match file {
                Some(f) => dagg_cluster::peer_auth::read_token(f),
                None => dagg_cluster::peer_auth::load_or_create_token(&data_dir.join("cluster-token")),
            };
            let token = match token {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            if *insecure {
                tracing::warn!(
                    "INSECURE: the peer address {} is not on loopback and the node has no peer certificates (--insecure-peer): \
                     anyone who can reach it and learns the cluster token, sent in clear, controls the cluster",
                    s.peer_addr
                );
            }
            PeerAuth::token(token)
        }
    };
    let api_tls = match &s.api_tls {
        Some((cert, key)) => match dagg_cluster::tls::server_config(cert, key) {
            Ok(c) => Some(c),
            Err(e) => return fail(format!("the API's certificate: {e}")),
        },
        None => None,
    };
    let api_listener = match tokio::net::TcpListener::bind(s.api_addr).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {}: {e}", s.api_addr)),
    };
    let api_local = api_listener.local_addr().unwrap_or(s.api_addr);
    let alone = s.peers.is_none() && s.join.is_none();
    let peer_listener = match tokio::net::TcpListener::bind(&s.peer_addr).await {
        Ok(l) => Some(l),
        // A node alone on the default address (a second `dagg serve` on one machine) still
        // works; it just cannot be joined.
        Err(e) if alone && !s.peer_addr_given => {
            tracing::warn!("cannot listen on the peer address {}: {e}; this one-node cluster cannot be joined (set --peer-addr)", s.peer_addr);
            None
        }
        Err(e) => return fail(format!("cannot listen on the peer address {}: {e}", s.peer_addr)),
    };
    let peer_local = peer_listener.as_ref().and_then(|l| l.local_addr().ok());
    let advertise = match (&s.advertise_addr, peer_local) {
        (Some(a), _) => a.clone(),
        (None, Some(l)) if !l.ip().is_unspecified() => l.to_string(),
        (None, Some(l)) if alone => reachable(l, "127.0.0.1"),
        (None, Some(l)) => return fail(format!("the peer address {l} is not one other nodes can reach: set --advertise-addr (DAGG_ADVERTISE_ADDR)")),
        (None, None) => s.peer_addr.clone(),
    };
    let api_advertise = reachable(api_local, host_of(&advertise));
    let bind_ip: Option<IpAddr> = peer_local.map(|l| l.ip()).filter(|ip| !ip.is_unspecified());
    // The egress policy (docs/security.md): this node's own listeners are never a
    // connector's server, and loopback is open only on a node whose API listens on loopback
    // alone (the one-command start). The admin's part (the `egress` setting) is added by
    // the metadata store when it opens below, and again whenever the setting is applied.
    dagg_connectors::egress::install(dagg_connectors::egress::Policy {
        allow_loopback: api_local.ip().is_loopback(),
        own: std::iter::once(api_local).chain(peer_local).collect(),
        local_addresses: dagg_connectors::egress::machine_addresses(),
        ..dagg_connectors::egress::Policy::default()
    });

    // The store is the state machine: restored from the Raft snapshot and log below.
    let meta_dir = data_dir.join("meta");
    let store = match tokio::task::spawn_blocking(move || MetaStore::open(&meta_dir)).await {
        Ok(Ok(m)) => Arc::new(m),
        Ok(Err(e)) => return fail(format!("cannot open the metadata in {}: {e}", data_dir.display())),
        Err(e) => return fail(e),
    };
    let placement_changed = Arc::new(tokio::sync::Notify::new());
    let machine = Arc::new(MetaMachine { store: store.clone(), placement_changed: placement_changed.clone() });
    let join_token = std::env::var("DAGG_CLUSTER_TOKEN").ok().filter(|t| !t.is_empty()).or_else(|| auth.sent_token().map(str::to_string));
    let mut cc = ClusterConfig::new(s.node_id, data_dir.join("raft"), PeerNode { peer_addr: advertise.clone(), api_addr: api_advertise.clone() }, auth);
    cc.bind_ip = bind_ip;
    let node = match ClusterNode::start(cc, machine).await {
        Ok(n) => n,
        Err(e) => return fail(format!("cannot start the cluster node: {e}")),
    };
    let admit = placement::sink_admission(store.clone(), s.node_id, config.restrict_file_paths);
    let peer_server = peer_listener.map(|l| tokio::spawn(dagg_cluster::server::serve(node.clone(), l, config.files_dir(), admit)));
    if let Some(peers) = s.peers.clone() {
        eprintln!("node {} (peer {advertise}): bootstrapping with {} peers", s.node_id, peers.len());
        tokio::spawn(node.clone().bootstrap(peers));
    } else if let Some(url) = s.join.clone() {
        eprintln!("node {} (peer {advertise}): joining through {url}", s.node_id);
        tokio::spawn(node.clone().join(url, join_token));
    } else if let Err(e) = node.initialize_alone().await {
        return fail(format!("cannot initialize the one-node cluster: {e}"));
    }
    // A token secret from the environment is every node's own: nothing to wait for.
    let secret_configured = std::env::var("DAGG_JWT_SECRET").is_ok_and(|v| !v.is_empty());
    if let Err(e) = wait_until_ready(&node, &store, secret_configured).await {
        return fail(e);
    }

    let meta = Meta::replicated(store, node.clone(), placement_changed);
    let (state, boot) = match tokio::task::spawn_blocking(move || AppState::open_with(config, meta)).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return fail(format!("cannot open the data directory {}: {e}", data_dir.display())),
        Err(e) => return fail(e),
    };
    {
        let n = node.clone();
        state.scheduler.set_leader_check(Arc::new(move || n.is_leader()));
    }
    if let Some(pw) = &boot.generated_admin_password {
        eprintln!("created user `admin` with the generated password: {pw}");
        eprintln!("(shown once; set DAGG_ADMIN_PASSWORD before the first start to choose it)");
    } else if boot.created_admin {
        eprintln!("created user `admin` with the password from DAGG_ADMIN_PASSWORD");
    }
    // The leader places runs; every node starts those placed on it.
    let placement = state.control.spawn_placement();
    let addr = api_local.to_string();
    let scheme = if api_tls.is_some() { "https" } else { "http" };
    let peer_mode = if node.auth().is_tls() { "mutual TLS" } else { "cluster token" };
    eprintln!("dagg API listening on {scheme}://{addr} (docs at {scheme}://{addr}/docs, data in {}; node {}, peer {advertise} with {peer_mode})", data_dir.display(), s.node_id);
    let r = match api_tls {
        Some(tls) => match dagg_cluster::tls::TlsListener::new(api_listener, tls) {
            Ok(l) => dagg_api::serve(l, state, shutdown_signal()).await,
            Err(e) => Err(e),
        },
        None => dagg_api::serve(api_listener, state, shutdown_signal()).await,
    };
    drop(placement);
    node.shutdown().await;
    if let Some(p) = peer_server {
        p.abort();
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("the server stopped: {e}")),
    }
}

/// Waits until this node belongs to a cluster with a leader, and — on a follower — until
/// the leader has written the first admin and (unless `DAGG_JWT_SECRET` gives every node the
/// same one) the token secret (the leader writes them when it opens the API).
async fn wait_until_ready(node: &Arc<ClusterNode>, store: &Arc<MetaStore>, secret_configured: bool) -> Result<(), String> {
    let started = Instant::now();
    let mut told = Instant::now();
    loop {
        let member = node.members().contains_key(&node.id);
        if member && let Some(leader) = node.leader() {
            if leader == node.id {
                // Everything committed before this term is applied before the leader reads.
                if node.raft.ensure_linearizable().await.is_ok() {
                    return Ok(());
                }
            } else if store.user_count() > 0 && (secret_configured || store.setting("_jwt_secret").ok().flatten().is_some()) {
                return Ok(());
            }
        }
        if told.elapsed() > Duration::from_secs(5) {
            told = Instant::now();
            eprintln!(
                "node {}: waiting for the cluster ({} s): member {member}, leader {:?}, state {}",
                node.id,
                started.elapsed().as_secs(),
                node.leader(),
                node.state_name()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("stopping: cancelling active runs");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn settings_of(args: &[&str]) -> Result<Settings, String> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).map_err(|e| e.to_string())?.serve.settings()
    }

    #[test]
    fn the_config_file_gives_options_and_flags_win_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("dagg.yaml");
        std::fs::write(&yaml, "node-id: 2\npeers: \"1=a:9001,2=b:9001\"\npeer-addr: 0.0.0.0:9001\nadvertise-addr: b:9001\nshared_dir: /shared\ninsecure-peer: true\n").unwrap();
        let s = settings_of(&["--config", yaml.to_str().unwrap()]).unwrap();
        assert_eq!((s.node_id, s.peers.as_ref().unwrap().len(), s.advertise_addr.as_deref()), (2, 2, Some("b:9001")));
        assert_eq!(s.shared_dir.as_deref(), Some(std::path::Path::new("/shared")));
        let s = settings_of(&["--config", yaml.to_str().unwrap(), "--node-id", "1"]).unwrap();
        assert_eq!(s.node_id, 1);
        let toml = dir.path().join("dagg.toml");
        std::fs::write(&toml, "node-id = 3\n[peers]\n1 = \"a:9001\"\n3 = \"c:9001\"\n").unwrap();
        let s = settings_of(&["--config", toml.to_str().unwrap()]).unwrap();
        assert_eq!((s.node_id, s.peers.unwrap()[&3].as_str()), (3, "c:9001"));
        // Mistakes say what and where.
        std::fs::write(&yaml, "node-idd: 2\n").unwrap();
        let e = settings_of(&["--config", yaml.to_str().unwrap()]).unwrap_err();
        assert!(e.contains("dagg.yaml") && e.contains("node-idd"), "{e}");
        let e = settings_of(&["--peers", "2=b:9001"]).unwrap_err();
        assert!(e.contains("this node's id 1 is not in the list"), "{e}");
        let e = settings_of(&["--peers", "1=a:9001", "--join", "http://x:8001"]).unwrap_err();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn a_peer_address_off_loopback_needs_certificates_or_insecure_peer() {
        let s = settings_of(&[]).unwrap();
        assert!(matches!(s.peer_security, PeerSecurity::Token { file: None, insecure: false }), "{s:?}");
        for addr in ["127.0.0.5:9001", "localhost:9001", "[::1]:9001"] {
            assert!(matches!(settings_of(&["--peer-addr", addr]).unwrap().peer_security, PeerSecurity::Token { insecure: false, .. }), "{addr}");
        }
        for addr in ["0.0.0.0:9001", "10.0.0.3:9001", "dagg-0.dagg-peers:9001"] {
            let e = settings_of(&["--peer-addr", addr]).unwrap_err();
            assert!(e.contains(addr) && e.contains("not on loopback") && e.contains("--insecure-peer"), "{e}");
            let s = settings_of(&["--peer-addr", addr, "--insecure-peer"]).unwrap();
            assert!(matches!(s.peer_security, PeerSecurity::Token { insecure: true, .. }), "{s:?}");
            let s = settings_of(&["--peer-addr", addr, "--peer-cert", "n.crt", "--peer-key", "n.key", "--peer-ca", "ca.crt"]).unwrap();
            assert!(matches!(s.peer_security, PeerSecurity::Certs(_)), "{s:?}");
        }
        let e = settings_of(&["--peer-cert", "n.crt", "--peer-ca", "ca.crt"]).unwrap_err();
        assert!(e.contains("--peer-key missing"), "{e}");
        assert!(settings_of(&["--tls-cert", "a.crt"]).unwrap_err().contains("--tls-key"));
        // From the config file too.
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("dagg.yaml");
        std::fs::write(&yaml, "peer-addr: 0.0.0.0:9001\npeer-cert: /c/n.crt\npeer-key: /c/n.key\npeer-ca: /c/ca.crt\ntls-cert: /t/a.crt\ntls-key: /t/a.key\n").unwrap();
        let s = settings_of(&["--config", yaml.to_str().unwrap()]).unwrap();
        assert!(matches!(&s.peer_security, PeerSecurity::Certs(c) if c.ca == std::path::Path::new("/c/ca.crt")), "{s:?}");
        assert!(s.api_tls.is_some());
        std::fs::write(&yaml, "peer-addr: 0.0.0.0:9001\ninsecure-peer: true\ncluster-token-file: /t/token\n").unwrap();
        let s = settings_of(&["--config", yaml.to_str().unwrap()]).unwrap();
        assert!(matches!(&s.peer_security, PeerSecurity::Token { file: Some(f), insecure: true } if f == std::path::Path::new("/t/token")), "{s:?}");
    }

    #[test]
    fn peers_parse_and_bad_ones_say_why() {
        let p = parse_peers("1=a:9001, 2=b:9001,3=10.0.0.3:9001").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[&3], "10.0.0.3:9001");
        assert!(parse_peers("1=a").unwrap_err().contains("host:port"));
        assert!(parse_peers("x=a:1").unwrap_err().contains("not a node id"));
        assert!(parse_peers("0=a:1").unwrap_err().contains("start at 1"));
        assert!(parse_peers("1=a:1,1=b:1").unwrap_err().contains("twice"));
    }
}
