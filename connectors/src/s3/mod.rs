//! `connector_type: aws_s3` — objects in S3 or an S3-compatible store (`endpoint`), on the
//! `object_store` crate, read and written in the file connector's formats.
//!
//! The client and what both sides share (listing, downloads, messages that name the object)
//! are here; the source is in [`source`], the sink in [`sink`].
//!
//! # Source
//! Lists the keys under `prefix` (or matching the glob `key`) once, sorts them, and reads
//! the objects one after another: each is streamed into a local temporary file (memory
//! stays flat whatever the object's size) that a [`FileSource`](crate::file::FileSource) over that one file parses,
//! then the file is deleted. Positions: `unit` = the key's index, `seq` = the line (or row);
//! people see `{"key": "raw/a.jsonl", "line": 3}`. The checkpoint is
//! `{"version": 1, "key", "file"}` — the key being read (`null` once all are read) and the
//! file source's own checkpoint within it — so a resumed run downloads that object again and
//! continues at the byte after the last record returned. Keys are found by name, so objects
//! added later under the prefix do not shift a resume. Staging objects (`.dagg-tmp-`) are
//! never read.
//!
//! # Sink
//! Writes through a [`crate::file`] sink into a local temporary folder. `pre_commit(epoch)`
//! commits that local file and uploads it (multipart for large files, streamed from disk)
//! as the staging object `<key>.dagg-tmp-<epoch>`; `commit` copies the staging object over
//! `<key>` and deletes it. So `<key>` only ever holds the output of a completed
//! checkpoint, whole. `recover(token)` (after a crash) finishes the completed checkpoint's
//! commit when its staging object is still there, removes staging objects of later epochs,
//! and downloads `<key>` as the local file the next writes append to.

mod client;
mod sink;
mod source;

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dagg_model::spec::connector::Role;
use dagg_model::spec::s3::AwsS3Config;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::io::AsyncWriteExt;

use crate::ConnectorError;

pub use sink::S3Sink;
pub use source::S3Source;

const CHECKPOINT_VERSION: u64 = 1;
/// What marks a staging object; never read by a source.
const STAGING: &str = ".dagg-tmp-";

/// The store for a config: path-style requests to `endpoint` when given, plain HTTP only
/// when allowed (by default for a loopback endpoint), every request bounded by the
/// connection timeout and retried at most twice within it, and every request's origin
/// checked by the egress policy ([`client`]).
///
/// Credentials are the config's keys. Without keys, requests go unsigned (a public
/// bucket) unless an admin turned ambient credentials on (the `egress` setting): then the
/// node's environment (`AWS_*`), web identity, container or instance-profile credentials
/// are used, as the AWS SDKs do. Without that setting nothing of the node's environment but
/// the region is read, so an editor's connector cannot sign with the node's identity.
pub fn store(c: &AwsS3Config) -> Result<Arc<AmazonS3>, ConnectorError> {
    let timeout = Duration::from_secs(c.timeout_secs());
    let ambient = crate::egress::current().s3_ambient_credentials;
    let mut b = if ambient { AmazonS3Builder::from_env() } else { AmazonS3Builder::new() };
    b = b.with_bucket_name(&c.bucket_name);
    let region = match &c.aws_region {
        Some(r) => Some(r.clone()),
        // `from_env` read it with the rest; without it, the region is all that is read.
        None if !ambient => ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|r| !r.is_empty())),
        None => None,
    };
    if let Some(region) = &region {
        b = b.with_region(region);
    }
    match (&c.access_key_id, &c.secret_access_key) {
        (Some(id), Some(secret)) => {
            let secret = crate::secrets::reveal(secret).map_err(|e| {
                ConnectorError::Config(format!("{}: secret_access_key: {e}", target(c, None)))
            })?;
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        _ if !ambient => b = b.with_skip_signature(true),
        _ => {}
    }
    // Plain HTTP lives in the client options, so it is set on them (the builder's own
    // setting would be replaced by `with_client_options`).
    let mut options = ClientOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout);
    if let Some(endpoint) = &c.endpoint {
        let loopback = url::Url::parse(endpoint)
            .ok()
            .and_then(|u| u.host_str().map(is_loopback))
            .unwrap_or(false);
        b = b
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false);
        options = options.with_allow_http(c.allow_http.unwrap_or(loopback));
    }
    let retry = RetryConfig {
        max_retries: 2,
        retry_timeout: timeout,
        ..Default::default()
    };
    let s3 = b
        .with_retry(retry)
        .with_client_options(options)
        .with_http_connector(client::EgressConnector::new(timeout, ambient, c.endpoint.as_deref()))
        .build()
        .map_err(|e| ConnectorError::Config(format!("{}: {e}", target(c, None))))?;
    Ok(Arc::new(s3))
}

/// Checks a configured endpoint against the egress policy (every address its name gives,
/// with its port), for a clear answer before the first request.
async fn check_endpoint(c: &AwsS3Config) -> Result<(), ConnectorError> {
    let Some(endpoint) = &c.endpoint else { return Ok(()) };
    let url = url::Url::parse(endpoint)
        .map_err(|e| ConnectorError::Config(format!("{}: `endpoint` is not a URL: {e}", target(c, None))))?;
    crate::egress::check_url(&url).await.map_err(|e| crate::egress::named(e, &target(c, None)))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `s3://bucket/key` (at `endpoint`), for messages: never with credentials.
fn target(c: &AwsS3Config, key: Option<&str>) -> String {
    let mut t = format!("s3://{}/{}", c.bucket_name, key.unwrap_or(""));
    if let Some(e) = &c.endpoint {
        t.push_str(&format!(" at {e}"));
    }
    t
}

/// Runs a store request within the connection timeout, naming the object when it fails.
async fn within<T>(
    c: &AwsS3Config,
    key: Option<&str>,
    fut: impl Future<Output = object_store::Result<T>>,
) -> Result<T, ConnectorError> {
    let seconds = c.timeout_secs();
    match tokio::time::timeout(Duration::from_secs(seconds), fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ConnectorError::Connect {
            target: target(c, key),
            reason: e.to_string(),
        }),
        Err(_) => Err(ConnectorError::Timeout {
            target: target(c, key),
            seconds,
            reason: "no answer from the store".into(),
        }),
    }
}

/// The source's keys, sorted: those under `prefix` (and matching the glob `key`, or equal
/// to `key`), without staging objects.
pub async fn list_keys(
    store: &dyn ObjectStore,
    c: &AwsS3Config,
) -> Result<Vec<String>, ConnectorError> {
    let prefix = c.prefix.clone().unwrap_or_default();
    let pattern = match &c.key {
        Some(k) if k.contains(['*', '?', '[']) => {
            Some(glob::Pattern::new(&format!("{prefix}{k}")).map_err(|e| {
                ConnectorError::Config(format!("`{k}` is not a valid glob pattern: {e}"))
            })?)
        }
        _ => None,
    };
    let exact = c
        .key
        .as_ref()
        .filter(|_| pattern.is_none())
        .map(|k| format!("{prefix}{k}"));
    // Listing is by folder; the rest of the prefix (and the glob) filters.
    let literal = match &pattern {
        Some(_) => {
            let full = format!("{prefix}{}", c.key.as_deref().unwrap_or(""));
            let cut = full.find(['*', '?', '[']).unwrap_or(full.len());
            full[..cut].to_string()
        }
        None => exact.clone().unwrap_or(prefix),
    };
    let folder = literal.rfind('/').map(|i| &literal[..i]).unwrap_or("");
    let folder_path = (!folder.is_empty()).then(|| Path::from(folder));
    let mut listing = store.list(folder_path.as_ref());
    let mut keys = Vec::new();
    let seconds = c.timeout_secs();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(seconds), listing.next())
            .await
            .map_err(|_| ConnectorError::Timeout {
                target: target(c, Some(&literal)),
                seconds,
                reason: "no answer from the store while listing".into(),
            })?;
        let Some(meta) = next else { break };
        let meta = meta.map_err(|e| ConnectorError::Connect {
            target: target(c, Some(&literal)),
            reason: e.to_string(),
        })?;
        let key = meta.location.to_string();
        if key.contains(STAGING) || !key.starts_with(&literal) {
            continue;
        }
        let wanted = match (&pattern, &exact) {
            (Some(p), _) => p.matches(&key),
            (None, Some(e)) => &key == e,
            (None, None) => true,
        };
        if wanted {
            keys.push(key);
        }
    }
    keys.sort();
    Ok(keys)
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh local folder for one connector's temporary files.
fn temp_dir(what: &str) -> Result<PathBuf, ConnectorError> {
    let dir = std::env::temp_dir().join(format!(
        "dagg-s3-{what}-{}-{}-{}",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).map_err(|source| ConnectorError::Open {
        path: dir.display().to_string(),
        source,
    })?;
    Ok(dir)
}

/// Streams an object into a local file (memory: one chunk at a time).
async fn download(
    store: &dyn ObjectStore,
    c: &AwsS3Config,
    key: &str,
    to: &FsPath,
) -> Result<(), ConnectorError> {
    let got = within(c, Some(key), store.get(&Path::from(key))).await?;
    let mut stream = got.into_stream();
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|source| ConnectorError::Open {
            path: to.display().to_string(),
            source,
        })?;
    let seconds = c.timeout_secs();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(seconds), stream.next())
            .await
            .map_err(|_| ConnectorError::Timeout {
                target: target(c, Some(key)),
                seconds,
                reason: "the download stalled".into(),
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| ConnectorError::Connect {
            target: target(c, Some(key)),
            reason: e.to_string(),
        })?;
        file.write_all(&chunk)
            .await
            .map_err(|source| ConnectorError::Write {
                path: to.display().to_string(),
                source,
            })?;
    }
    file.flush().await.map_err(|source| ConnectorError::Write {
        path: to.display().to_string(),
        source,
    })?;
    Ok(())
}

/// The store answers: a source's keys are listed, a destination's folder takes a probe
/// object (deleted again).
pub async fn test_connection(c: &AwsS3Config, role: Role) -> Result<String, ConnectorError> {
    check_endpoint(c).await?;
    let s = store(c)?;
    match role {
        Role::Sink => {
            let key = c.object_key().unwrap_or_else(|| {
                format!("{}.dagg-connector-test", c.prefix.as_deref().unwrap_or(""))
            });
            let probe = format!("{key}.dagg-connector-test-{}", std::process::id());
            within(
                c,
                Some(&probe),
                s.put(
                    &Path::from(probe.as_str()),
                    object_store::PutPayload::from_static(b""),
                ),
            )
            .await?;
            within(c, Some(&probe), s.delete(&Path::from(probe.as_str()))).await?;
            Ok(format!("{} can be written", target(c, Some(&key))))
        }
        _ => {
            let keys = list_keys(s.as_ref(), c).await?;
            if role == Role::Source && keys.is_empty() {
                return Err(ConnectorError::NoMatch {
                    pattern: target(c, c.prefix.as_deref()),
                });
            }
            Ok(match keys.first() {
                Some(first) => format!(
                    "{} object(s) can be read from {} (`{first}` first)",
                    keys.len(),
                    target(c, c.prefix.as_deref())
                ),
                None => format!(
                    "{} answers; no object there yet",
                    target(c, c.prefix.as_deref())
                ),
            })
        }
    }
}
