//! `rabbitmq`: a RabbitMQ queue over AMQP 0-9-1 (the `amqprs` client).
//!
//! # Source
//! Consumes `queue` (which must exist) on one channel with manual acknowledgements and a
//! prefetch of `prefetch` messages. A record's position counts the messages this source
//! has returned; a checkpoint holds that count and the delivery tag of its last message.
//! Messages are acknowledged only through the [`SourceCommitter`](crate::SourceCommitter),
//! once a checkpoint covering them has completed, with one `basic.ack` of the checkpoint's
//! last delivery tag and `multiple = true`.
//!
//! RabbitMQ cannot go back to a position: what was delivered but not acknowledged when the
//! channel closes (a stop without a checkpoint, a crash, a lost connection) goes back to the
//! queue and is delivered again, to this run or the next. The source side is therefore **at
//! least once**: a crash after a checkpoint completed but before its ack reached the broker
//! delivers that checkpoint's messages once more. Destinations that recognise replays
//! (PostgreSQL/MySQL upserts on a key, a JetStream destination's de-duplication, a RabbitMQ
//! destination's `message_id`) turn that into effectively once.
//!
//! # Destination
//! Every record is published as a persistent message (JSON, or the `payload` field for
//! `text`) to `exchange` with `routing_key` (default `queue`), `mandatory` so a message no
//! queue takes comes back as an error instead of vanishing. The channel is in confirm mode:
//! a checkpoint waits until the broker has confirmed every message published before it, so
//! a completed checkpoint means the broker holds them all. Each message carries
//! `message_id = <sink_id>:<n>` (`n` counts the records this destination published; the
//! count at each checkpoint is in its token), so a replay after a crash republishes the same
//! records under the same ids and consumers can drop the repeats. RabbitMQ itself does not
//! de-duplicate: without such a consumer the destination is at least once.

mod sink;
mod source;

use std::time::Duration;

use amqprs::connection::{Connection, OpenConnectionArguments};
use dagg_model::spec::connector::Role;
use dagg_model::spec::streaming::RabbitmqConfig;

use crate::{ConnectorError, SinkConnector, SourceConnector};

pub use sink::RabbitmqSink;
pub use source::RabbitmqSource;

pub(crate) fn source(c: &RabbitmqConfig) -> Result<Box<dyn SourceConnector>, ConnectorError> {
    Ok(Box::new(RabbitmqSource::open(c)?))
}

pub(crate) fn sink(c: &RabbitmqConfig) -> Result<Box<dyn SinkConnector>, ConnectorError> {
    Ok(Box::new(RabbitmqSink::open(c)?))
}

/// Where to connect, from an `amqp://` URL.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

impl Endpoint {
    /// `amqp://host:port/vhost`, as errors show it (never with credentials).
    pub fn target(&self) -> String {
        let vhost = if self.vhost == "/" {
            "%2f".to_string()
        } else {
            self.vhost.clone()
        };
        format!("amqp://{}:{}/{vhost}", self.host, self.port)
    }
}

/// Reads `amqp://[user[:password]@]host[:port][/vhost]`: user and password default to
/// `guest`, the port to 5672, the vhost to `/` (written `%2f`).
pub(crate) fn endpoint(url: &str) -> Result<Endpoint, ConnectorError> {
    let bad = |why: &str| {
        ConnectorError::Config(format!(
            "`url`: {why} (expected `amqp://user:password@host:5672/vhost`)"
        ))
    };
    if url.starts_with("amqps://") {
        return Err(bad("TLS (`amqps://`) is not supported by this build"));
    }
    let u = url::Url::parse(url).map_err(|e| bad(&format!("not a URL: {e}")))?;
    if u.scheme() != "amqp" {
        return Err(bad(&format!("the scheme is `{}`, not `amqp`", u.scheme())));
    }
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let user = if u.username().is_empty() {
        "guest".to_string()
    } else {
        decode(u.username())
    };
    let password = u.password().map(decode).unwrap_or_else(|| "guest".into());
    let path = u.path().strip_prefix('/').unwrap_or(u.path());
    let vhost = if path.is_empty() {
        "/".to_string()
    } else {
        decode(path)
    };
    Ok(Endpoint {
        host,
        port: u.port().unwrap_or(5672),
        user,
        password,
        vhost,
    })
}

/// The endpoint with the credentials to log in with: `username` and `password` (revealed
/// here, where the connection is opened), else the URL's user, else RabbitMQ's default
/// account (`guest`, password `guest`).
pub(crate) fn login(c: &RabbitmqConfig) -> Result<Endpoint, ConnectorError> {
    let mut e = endpoint(&c.url)?;
    let password = c
        .password
        .as_ref()
        .map(|p| crate::secrets::reveal(p).map_err(|err| ConnectorError::Config(format!("{}: password: {err}", e.target()))))
        .transpose()?;
    if let Some(user) = &c.username {
        e.user = user.clone();
        e.password = password.unwrap_or_default();
    } else if let Some(p) = password {
        e.password = p;
    }
    Ok(e)
}

/// Percent-decoding (`%2f` → `/`).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The endpoint as errors name it; the URL itself when it cannot be read (without the
/// password).
pub(crate) fn target(c: &RabbitmqConfig) -> String {
    match endpoint(&c.url) {
        Ok(e) => e.target(),
        Err(_) => match (c.url.find("://"), c.url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}{}", &c.url[..s + 3], &c.url[at + 1..]),
            _ => c.url.clone(),
        },
    }
}

/// Opens a connection within `connect_timeout`.
pub(crate) async fn connect(c: &RabbitmqConfig) -> Result<Connection, ConnectorError> {
    let e = login(c)?;
    let target = e.target();
    crate::egress::resolve_checked(&e.host, e.port).await.map_err(|err| crate::egress::named(err, &target))?;
    let mut args = OpenConnectionArguments::new(&e.host, e.port, &e.user, &e.password);
    args.virtual_host(&e.vhost).connection_name("dagg");
    match tokio::time::timeout(
        Duration::from_secs(c.connect_timeout),
        Connection::open(&args),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(err)) => Err(ConnectorError::Connect {
            target,
            reason: err.to_string(),
        }),
        Err(_) => Err(ConnectorError::Timeout {
            target,
            seconds: c.connect_timeout,
            reason: "no connection".into(),
        }),
    }
}

/// Connects and checks that the queue (and a destination's exchange) exists; says what it
/// found.
pub(crate) async fn test_connection(
    c: &RabbitmqConfig,
    role: Role,
) -> Result<String, ConnectorError> {
    let target = target(c);
    let conn = connect(c).await?;
    let server = conn.server_properties();
    let about = format!(
        "connected to {target} ({} {})",
        server.product(),
        server.version()
    );
    let q = |what: String| ConnectorError::Query {
        target: target.clone(),
        reason: what,
    };
    let mut found = about;
    if !c.exchange.is_empty() && role != Role::Source {
        let ch = conn
            .open_channel(None)
            .await
            .map_err(|e| q(format!("open a channel: {e}")))?;
        let mut args = amqprs::channel::ExchangeDeclareArguments::new(&c.exchange, "direct");
        args.passive = true;
        ch.exchange_declare(args)
            .await
            .map_err(|e| q(format!("exchange `{}`: {e}", c.exchange)))?;
        found.push_str(&format!("; exchange `{}` exists", c.exchange));
        let _ = ch.close().await;
    }
    let queue = if role == Role::Sink && !c.exchange.is_empty() {
        None
    } else {
        c.queue.as_deref().or(c.routing_key.as_deref())
    };
    if let Some(queue) = queue {
        let ch = conn
            .open_channel(None)
            .await
            .map_err(|e| q(format!("open a channel: {e}")))?;
        let args = amqprs::channel::QueueDeclareArguments::new(queue)
            .passive(true)
            .finish();
        let (_, messages, consumers) = ch
            .queue_declare(args)
            .await
            .map_err(|e| {
                q(format!(
                    "queue `{queue}` (dagg uses queues that exist; declare it first): {e}"
                ))
            })?
            .unwrap_or_default();
        found.push_str(&format!(
            "; queue `{queue}` holds {messages} messages, {consumers} consumers"
        ));
        let _ = ch.close().await;
    }
    let _ = conn.close().await;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_urls_are_read() {
        let e = endpoint("amqp://127.0.0.1:5672/%2f").unwrap();
        assert_eq!(
            e,
            Endpoint {
                host: "127.0.0.1".into(),
                port: 5672,
                user: "guest".into(),
                password: "guest".into(),
                vhost: "/".into()
            }
        );
        assert_eq!(e.target(), "amqp://127.0.0.1:5672/%2f");
        let e = endpoint("amqp://u%40x:p%2Fw@broker/prod").unwrap();
        assert_eq!(
            (
                e.user.as_str(),
                e.password.as_str(),
                e.port,
                e.vhost.as_str()
            ),
            ("u@x", "p/w", 5672, "prod")
        );
        assert_eq!(endpoint("amqp://h").unwrap().vhost, "/");
        assert!(
            endpoint("amqps://h")
                .unwrap_err()
                .to_string()
                .contains("TLS")
        );
        assert!(
            endpoint("http://h")
                .unwrap_err()
                .to_string()
                .contains("not `amqp`")
        );
    }

    #[test]
    fn the_login_comes_from_the_secret_fields_else_the_default_account() {
        let c = |v: serde_json::Value| serde_json::from_value::<RabbitmqConfig>(v).unwrap();
        let e = login(&c(serde_json::json!({"queue": "q"}))).unwrap();
        assert_eq!((e.user.as_str(), e.password.as_str()), ("guest", "guest"));
        let e = login(&c(serde_json::json!({"queue": "q", "username": "app", "password": "s3cret"}))).unwrap();
        assert_eq!((e.user.as_str(), e.password.as_str()), ("app", "s3cret"));
        let e = login(&c(serde_json::json!({"url": "amqp://app@h/v", "password": "s3cret"}))).unwrap();
        assert_eq!((e.user.as_str(), e.password.as_str(), e.host.as_str()), ("app", "s3cret", "h"));
        // A sealed password is opened with the process's key.
        let (key, _) = crate::secrets::MasterKey::generate();
        crate::secrets::install_process_key(key.clone());
        let e = login(&c(serde_json::json!({"queue": "q", "username": "app", "password": key.encrypt("s3cret")}))).unwrap();
        assert_eq!(e.password, "s3cret");
    }
}
