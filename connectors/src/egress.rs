//! The egress policy: which addresses a connection that a user configured may reach.
//!
//! Every outbound connection whose host comes from a pipeline or a saved connector (REST
//! sources and destinations, S3 endpoints, database, Kafka, NATS and RabbitMQ hosts,
//! webhooks, SMTP) is checked here after its name is resolved, and again on every redirect:
//! - an admin's allow list (CIDRs or host names) admits an address whatever follows;
//! - an admin's deny list refuses it;
//! - link-local addresses (`169.254.0.0/16`, `fe80::/10`: cloud metadata endpoints) and the
//!   unspecified address (`0.0.0.0`, which reaches this machine) are refused;
//! - this node's own listeners (its API and peer ports, on loopback or on its own addresses)
//!   are refused;
//! - loopback is refused unless the policy allows it (a node whose API listens on loopback
//!   only: the one-command start, the command line);
//! - everything else, private ranges included (where an installation's databases live), is
//!   allowed.
//!
//! The policy is process-wide: the node installs its own part at start ([`install`]); an
//! admin's part (the `egress` setting: the lists and whether S3 connectors may use the
//! node's ambient credentials) is set by [`set_admin`] whenever the setting is applied on
//! this node. Until then [`Policy::default`] applies (loopback allowed, no own ports known,
//! link-local refused, no ambient credentials).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;

use crate::ConnectorError;

/// An entry of an allow or deny list: a network (`10.0.0.0/8`, `192.168.1.7`) or a host
/// name (`db.internal`; `*.internal` for every name under it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    Net(IpNet),
    Host(String),
}

impl Rule {
    /// Parses a list entry; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("an empty entry".into());
        }
        if let Ok(net) = t.parse::<IpNet>() {
            return Ok(Rule::Net(net.trunc()));
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(Rule::Net(IpNet::from(ip)));
        }
        let name = t.strip_prefix("*.").map_or_else(|| t.to_ascii_lowercase(), |rest| format!("*.{}", rest.to_ascii_lowercase()));
        let bare = name.trim_start_matches("*.");
        let valid = !bare.is_empty()
            && bare.len() <= 253
            && bare.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid || t.contains('/') {
            return Err(format!("`{t}` is neither a network (CIDR), an address nor a host name"));
        }
        Ok(Rule::Host(name))
    }

    fn matches(&self, host: &str, ip: IpAddr) -> bool {
        match self {
            Rule::Net(net) => net.contains(&ip),
            Rule::Host(name) => {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix) && host.as_bytes()[host.len() - suffix.len() - 1] == b'.',
                    None => host == *name,
                }
            }
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Net(net) if net.prefix_len() == net.max_prefix_len() => write!(f, "{}", net.addr()),
            Rule::Net(net) => write!(f, "{net}"),
            Rule::Host(name) => f.write_str(name),
        }
    }
}

/// What may be reached. See the module documentation for the order of the rules.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Loopback addresses may be reached (except this node's own ports).
    pub allow_loopback: bool,
    /// This node's own listeners (API, peer port). An unspecified address (`0.0.0.0:8001`)
    /// stands for the port on every address of this machine.
    pub own: Vec<SocketAddr>,
    /// This machine's own addresses, besides loopback (where a listener on `0.0.0.0` is
    /// also reached).
    pub local_addresses: Vec<IpAddr>,
    /// An admin's allow list: what matches is reached whatever the other rules say.
    pub allow: Vec<Rule>,
    /// An admin's deny list: what matches is refused (unless the allow list admits it).
    pub deny: Vec<Rule>,
    /// S3 connectors without keys may use the node's ambient credentials (its environment,
    /// the instance profile or container credentials); otherwise their requests go unsigned.
    pub s3_ambient_credentials: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            allow_loopback: true,
            own: Vec::new(),
            local_addresses: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            s3_ambient_credentials: false,
        }
    }
}

/// The part of the policy an admin sets (the `egress` setting).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admin {
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
    pub s3_ambient_credentials: bool,
}

/// Why an address was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} is on the egress deny list (`{1}`)")]
    Denied(SocketAddr, String),
    #[error("{0} is a link-local address (cloud metadata endpoints live there); an admin can allow it in the egress settings")]
    LinkLocal(SocketAddr),
    #[error("{0} is this node's own listener")]
    Own(SocketAddr),
    #[error("{0} is a loopback address, refused on a node that listens beyond loopback; an admin can allow it in the egress settings")]
    Loopback(SocketAddr),
    #[error("{0} is the unspecified address, which reaches this machine")]
    Unspecified(SocketAddr),
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

impl Policy {
    /// Whether `host` (as the user wrote it), resolved to `addr`, may be reached.
    pub fn check(&self, host: &str, addr: SocketAddr) -> Result<(), Refused> {
        let ip = canonical(addr.ip());
        let addr = SocketAddr::new(ip, addr.port());
        if self.allow.iter().any(|r| r.matches(host, ip)) {
            return Ok(());
        }
        if let Some(rule) = self.deny.iter().find(|r| r.matches(host, ip)) {
            return Err(Refused::Denied(addr, rule.to_string()));
        }
        if ip.is_unspecified() {
            return Err(Refused::Unspecified(addr));
        }
        if is_link_local(ip) {
            return Err(Refused::LinkLocal(addr));
        }
        if self.is_own(ip, addr.port()) {
            return Err(Refused::Own(addr));
        }
        if ip.is_loopback() && !self.allow_loopback {
            return Err(Refused::Loopback(addr));
        }
        Ok(())
    }

    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        self.own.iter().any(|own| {
            let own_ip = canonical(own.ip());
            own.port() == port
                && (own_ip == ip
                    || (own_ip.is_unspecified() && (ip.is_loopback() || self.local_addresses.contains(&ip)))
                    || (own_ip.is_loopback() && ip.is_loopback()))
        })
    }
}

static POLICY: RwLock<Option<Arc<Policy>>> = RwLock::new(None);

/// Makes `policy` the one every later connection is checked against (the node's part and
/// the admin's: a node installs its part at start, before the settings are read).
pub fn install(policy: Policy) {
    *POLICY.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(policy));
}

/// Replaces the admin's part of the policy in force, keeping the node's own (its listeners,
/// its addresses, the loopback rule).
pub fn set_admin(admin: Admin) {
    let mut slot = POLICY.write().unwrap_or_else(|e| e.into_inner());
    let mut p = slot.as_deref().cloned().unwrap_or_default();
    p.allow = admin.allow;
    p.deny = admin.deny;
    p.s3_ambient_credentials = admin.s3_ambient_credentials;
    *slot = Some(Arc::new(p));
}

/// The policy in force.
pub fn current() -> Arc<Policy> {
    POLICY.read().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_else(|| Arc::new(Policy::default()))
}

/// Resolves `host:port` and checks every address it gives; the addresses, when all may be
/// reached. One refused address refuses the host: a name that also points at a forbidden
/// address could be made to connect there.
pub async fn resolve_checked(host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectorError> {
    let target = format!("{host}:{port}");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| ConnectorError::Connect { target: target.clone(), reason: format!("cannot resolve `{bare}`: {e}") })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(ConnectorError::Connect { target, reason: format!("`{bare}` resolves to no address") });
    }
    let policy = current();
    for a in &addrs {
        policy.check(bare, *a).map_err(|r| refused(&target, &r))?;
    }
    Ok(addrs)
}

/// A connection error named by `target` (the connector's own name for its server, without
/// credentials) instead of the `host:port` that was checked.
pub fn named(e: ConnectorError, target: &str) -> ConnectorError {
    match e {
        ConnectorError::Connect { reason, .. } => ConnectorError::Connect { target: target.to_string(), reason },
        other => other,
    }
}

/// The error a refused connection ends in.
pub fn refused(target: &str, why: &Refused) -> ConnectorError {
    ConnectorError::Connect { target: target.to_string(), reason: format!("refused by the egress policy: {why}") }
}

/// Checks a URL's host and port (the scheme's default port when none is given).
pub async fn check_url(url: &url::Url) -> Result<(), ConnectorError> {
    let host = url.host_str().ok_or_else(|| ConnectorError::Config(format!("`{}` has no host", url.scheme())))?;
    let port = url.port_or_known_default().ok_or_else(|| ConnectorError::Config(format!("`{host}`: no port and no default for `{}`", url.scheme())))?;
    resolve_checked(host, port).await.map(|_| ())
}

/// Checks a server list entry as users write them — `host`, `host:port`, `[::1]:port`,
/// `scheme://user:password@host:port/path` — with `default_port` when none is given.
pub async fn check_server(entry: &str, default_port: u16) -> Result<(), ConnectorError> {
    let (host, port) = host_port(entry, default_port).ok_or_else(|| ConnectorError::Config(format!("`{}` names no host", shown_entry(entry))))?;
    resolve_checked(&host, port).await.map(|_| ())
}

/// Every entry of a comma-separated server list, as [`check_server`] does one.
pub async fn check_servers(list: &str, default_port: u16) -> Result<(), ConnectorError> {
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        check_server(entry, default_port).await?;
    }
    Ok(())
}

/// An entry without its user information, for messages.
fn shown_entry(entry: &str) -> String {
    match (entry.find("://"), entry.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &entry[..s + 3], &entry[at + 1..]),
        (None, Some(at)) => entry[at + 1..].to_string(),
        _ => entry.to_string(),
    }
}

fn host_port(entry: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = entry.trim();
    let rest = rest.find("://").map_or(rest, |i| &rest[i + 3..]);
    let rest = rest.split(['/', '?', '#']).next().unwrap_or("");
    let rest = rest.rfind('@').map_or(rest, |i| &rest[i + 1..]);
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (rest, default_port),
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// A resolver for HTTP clients that keeps only addresses the policy allows on any port
/// (the port-dependent rule, this node's own listeners, is checked before each request by
/// [`check_url`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Resolver;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let policy = current();
            for a in &found {
                // Port 0 matches no listener: only the port-independent rules apply here.
                policy.check(&host, *a).map_err(|r| Box::new(r) as Box<dyn std::error::Error + Send + Sync>)?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// This machine's addresses (every interface's), for [`Policy::local_addresses`].
#[cfg(unix)]
pub fn machine_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and free once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: the family tells which sockaddr type the pointer holds.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes()));
            } else if family == libc::AF_INET6 {
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sa.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(not(unix))]
pub fn machine_addresses() -> Vec<IpAddr> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn node(allow_loopback: bool) -> Policy {
        Policy {
            allow_loopback,
            own: vec![sa("0.0.0.0:8001"), sa("127.0.0.1:7001")],
            local_addresses: vec!["10.1.2.3".parse().unwrap()],
            ..Policy::default()
        }
    }

    #[test]
    fn link_local_and_unspecified_are_refused_everywhere() {
        let p = node(true);
        assert_eq!(p.check("169.254.169.254", sa("169.254.169.254:80")), Err(Refused::LinkLocal(sa("169.254.169.254:80"))));
        assert!(matches!(p.check("x", sa("[fe80::1]:80")), Err(Refused::LinkLocal(_))));
        assert!(matches!(p.check("x", sa("[::ffff:169.254.1.1]:80")), Err(Refused::LinkLocal(_))));
        assert!(matches!(p.check("0.0.0.0", sa("0.0.0.0:5432")), Err(Refused::Unspecified(_))));
    }

    #[test]
    fn own_ports_are_refused_on_every_own_address() {
        let p = node(true);
        assert!(matches!(p.check("localhost", sa("127.0.0.1:8001")), Err(Refused::Own(_))));
        assert!(matches!(p.check("x", sa("10.1.2.3:8001")), Err(Refused::Own(_))));
        assert!(matches!(p.check("x", sa("127.0.0.2:7001")), Err(Refused::Own(_))));
        assert!(matches!(p.check("x", sa("[::1]:8001")), Err(Refused::Own(_))));
        // Another machine's 8001 and this machine's other ports are fine.
        assert_eq!(p.check("x", sa("10.1.2.4:8001")), Ok(()));
        assert_eq!(p.check("x", sa("127.0.0.1:5432")), Ok(()));
    }

    #[test]
    fn loopback_follows_the_policy_and_private_ranges_stay_open() {
        let p = node(false);
        assert!(matches!(p.check("localhost", sa("127.0.0.1:5432")), Err(Refused::Loopback(_))));
        assert!(matches!(p.check("x", sa("[::ffff:127.0.0.1]:5432")), Err(Refused::Loopback(_))));
        assert_eq!(p.check("db", sa("10.0.0.5:5432")), Ok(()));
        assert_eq!(p.check("db", sa("192.168.0.5:5432")), Ok(()));
        assert_eq!(p.check("api.example.com", sa("93.184.216.34:443")), Ok(()));
    }

    #[test]
    fn lists_come_first_allow_before_deny() {
        let mut p = node(false);
        p.deny = vec![Rule::parse("10.0.0.0/8").unwrap(), Rule::parse("*.corp").unwrap()];
        p.allow = vec![Rule::parse("10.9.0.0/16").unwrap(), Rule::parse("169.254.169.254").unwrap(), Rule::parse("localhost").unwrap()];
        assert_eq!(p.check("db", sa("10.0.0.5:5432")), Err(Refused::Denied(sa("10.0.0.5:5432"), "10.0.0.0/8".into())));
        let e = p.check("a.b.corp", sa("192.168.0.5:5432")).unwrap_err();
        assert_eq!(e.to_string(), "192.168.0.5:5432 is on the egress deny list (`*.corp`)");
        assert_eq!(p.check("corp", sa("192.168.0.5:5432")), Ok(()));
        assert_eq!(p.check("db", sa("10.9.1.1:5432")), Ok(()));
        assert_eq!(p.check("metadata", sa("169.254.169.254:80")), Ok(()));
        assert_eq!(p.check("LOCALHOST.", sa("127.0.0.1:5432")), Ok(()));
    }

    #[test]
    fn the_admins_part_replaces_the_lists_and_keeps_the_nodes_part() {
        install(node(false));
        set_admin(Admin { allow: vec![Rule::parse("db.internal").unwrap()], deny: vec![Rule::parse("10.0.0.0/8").unwrap()], s3_ambient_credentials: true });
        set_admin(Admin { deny: vec![Rule::parse("192.168.5.0/24").unwrap()], ..Admin::default() });
        let p = current();
        assert!(!p.allow_loopback);
        assert_eq!(p.own, node(false).own);
        assert_eq!(p.local_addresses, node(false).local_addresses);
        assert!(p.allow.is_empty() && !p.s3_ambient_credentials);
        assert_eq!(p.deny, vec![Rule::parse("192.168.5.0/24").unwrap()]);
    }

    #[test]
    fn rules_show_as_written() {
        for text in ["10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8", "db.internal", "*.corp"] {
            assert_eq!(Rule::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn rules_parse_or_say_what_is_wrong() {
        assert_eq!(Rule::parse("10.1.2.3/8").unwrap(), Rule::Net("10.0.0.0/8".parse().unwrap()));
        assert_eq!(Rule::parse("::1").unwrap(), Rule::Net("::1/128".parse().unwrap()));
        assert_eq!(Rule::parse("*.Example.com").unwrap(), Rule::Host("*.example.com".into()));
        assert!(Rule::parse("").is_err());
        assert!(Rule::parse("a b").unwrap_err().contains("`a b`"));
        assert!(Rule::parse("10.0.0.0/99").is_err());
    }

    #[test]
    fn server_entries_give_host_and_port() {
        assert_eq!(host_port("broker:9093", 9092), Some(("broker".into(), 9093)));
        assert_eq!(host_port("broker", 9092), Some(("broker".into(), 9092)));
        assert_eq!(host_port("nats://u:p@10.0.0.1:4223", 4222), Some(("10.0.0.1".into(), 4223)));
        assert_eq!(host_port("amqp://u:p@mq/%2f", 5672), Some(("mq".into(), 5672)));
        assert_eq!(host_port("[::1]:9092", 1), Some(("::1".into(), 9092)));
        assert_eq!(host_port("SASL_SSL://[fe80::1]", 9092), Some(("fe80::1".into(), 9092)));
        assert_eq!(host_port("host:notaport", 1), None);
        assert_eq!(host_port("", 1), None);
        assert_eq!(shown_entry("nats://u:secret@h:1"), "nats://h:1");
    }

    #[tokio::test]
    async fn refused_servers_name_the_reason() {
        let e = check_servers("127.0.0.1:5432, 169.254.169.254:80", 1).await.unwrap_err().to_string();
        assert!(e.contains("169.254.169.254:80") && e.contains("link-local"), "{e}");
    }

    #[test]
    fn this_machine_has_a_loopback_address() {
        assert!(machine_addresses().iter().any(|ip| ip.is_loopback()));
    }
}
