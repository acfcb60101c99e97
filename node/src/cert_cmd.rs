//! `dagg cert`: the cluster CA and the node certificates for the peer port's mutual TLS,
//! made without other tooling.
//!
//! `dagg cert ca --out DIR` writes `ca.crt` (every node's `--peer-ca`) and `ca.key` (mode
//! 0600: whoever holds it can make members). `dagg cert node --node-id N --host H ... --ca-dir
//! DIR --out DIR` writes `node.crt` and `node.key` (0600), signed by that CA, naming each
//! `--host` (a DNS name or an IP address) as a subject alternative name: peers check it
//! against the host a node advertises. A node certificate serves both ends (server and
//! client authentication). Existing files are kept unless `--force`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

#[derive(Args)]
pub struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Creates a cluster CA: `ca.crt` (give it to every node as --peer-ca) and `ca.key`
    /// (mode 0600; keep it private, only `dagg cert node` needs it).
    Ca {
        /// The directory to write them to (created when missing).
        #[arg(long)]
        out: PathBuf,
        /// Years the CA stays valid.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
        years: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Creates a node certificate signed by the CA: `node.crt` and `node.key` (mode 0600), for
    /// --peer-cert and --peer-key.
    Node {
        /// The node's id (its certificate's common name is `dagg node N`).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
        /// A host other nodes reach it by (its advertised host: a DNS name or an IP address);
        /// repeat for several.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// The directory holding `ca.crt` and `ca.key`.
        #[arg(long)]
        ca_dir: PathBuf,
        /// The directory to write them to (created when missing).
        #[arg(long)]
        out: PathBuf,
        /// Years the certificate stays valid.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
        years: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: CertArgs) -> ExitCode {
    let r = match args.command {
        CertCommand::Ca { out, years, force } => make_ca(&out, years, force),
        CertCommand::Node { node_id, hosts, ca_dir, out, years, force } => make_node(node_id, &hosts, &ca_dir, &out, years, force),
    };
    match r {
        Ok(written) => {
            for p in written {
                println!("wrote {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn validity(params: &mut CertificateParams, years: u32) {
    let now = time::OffsetDateTime::now_utc();
    // An hour back: a member whose clock is a little behind still accepts it.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * i64::from(years));
}

fn make_ca(out: &Path, years: u32, force: bool) -> Result<Vec<PathBuf>, String> {
    let (crt, key) = (out.join("ca.crt"), out.join("ca.key"));
    refuse_existing(&[&crt, &key], force)?;
    let pair = KeyPair::generate().map_err(|e| format!("generating the CA key: {e}"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "dagg cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, years);
    let cert = params.self_signed(&pair).map_err(|e| format!("signing the CA certificate: {e}"))?;
    write(out, &crt, cert.pem().as_bytes(), false)?;
    write(out, &key, pair.serialize_pem().as_bytes(), true)?;
    Ok(vec![crt, key])
}

fn make_node(node_id: u64, hosts: &[String], ca_dir: &Path, out: &Path, years: u32, force: bool) -> Result<Vec<PathBuf>, String> {
    let (crt, key) = (out.join("node.crt"), out.join("node.key"));
    refuse_existing(&[&crt, &key], force)?;
    let (ca_crt, ca_key) = (ca_dir.join("ca.crt"), ca_dir.join("ca.key"));
    let ca_pem = std::fs::read_to_string(&ca_crt).map_err(|e| format!("cannot read the CA certificate {}: {e}", ca_crt.display()))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key).map_err(|e| format!("cannot read the CA key {}: {e}", ca_key.display()))?;
    let ca_pair = KeyPair::from_pem(&ca_key_pem).map_err(|e| format!("the CA key {}: {e}", ca_key.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_pair).map_err(|e| format!("the CA certificate {}: {e}", ca_crt.display()))?;
    let hosts: Vec<String> = hosts.iter().map(|h| h.trim().trim_start_matches('[').trim_end_matches(']').to_string()).collect();
    if let Some(h) = hosts.iter().find(|h| h.is_empty() || h.contains('/') || (h.contains(':') && h.parse::<std::net::IpAddr>().is_err())) {
        return Err(format!("--host `{h}` is not a DNS name or an IP address (give the host without a port)"));
    }
    let mut params = CertificateParams::new(hosts.clone()).map_err(|e| format!("--host: {e}"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("dagg node {node_id}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, years);
    let pair = KeyPair::generate().map_err(|e| format!("generating the node key: {e}"))?;
    let cert = params.signed_by(&pair, &issuer).map_err(|e| format!("signing the node certificate: {e}"))?;
    write(out, &crt, cert.pem().as_bytes(), false)?;
    write(out, &key, pair.serialize_pem().as_bytes(), true)?;
    Ok(vec![crt, key])
}

fn refuse_existing(paths: &[&Path], force: bool) -> Result<(), String> {
    if force {
        return Ok(());
    }
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(format!("{} exists; give --force to replace it", p.display())),
        None => Ok(()),
    }
}

/// Writes `bytes` to `path` in `dir` (created), a key with mode 0600 from its creation on.
fn write(dir: &Path, path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, if private { 0o600 } else { 0o644 });
    let mut f = o.open(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    // A replaced file keeps its old mode: set it again.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    }
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
