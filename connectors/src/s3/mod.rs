//! `connector_type: aws_s3` — objects in S3 or an S3-compatible store (`endpoint`), on the
//! `object_store` crate, read and written in the file connector's formats.
//!
//! # Source
//! Lists the keys under `prefix` (or matching the glob `key`) once, sorts them, and reads
//! the objects one after another: each is streamed into a local temporary file (memory
//! stays flat whatever the object's size) that a [`FileSource`] over that one file parses,
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

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dagg_model::spec::connector::Role;
use dagg_model::spec::s3::AwsS3Config;
use dagg_model::{Map, Position, Record, Value};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::file::FileSource;
use crate::{ConnectorError, SinkConnector, SourceBatch, SourceConnector};

const CHECKPOINT_VERSION: u64 = 1;
/// What marks a staging object; never read by a source.
const STAGING: &str = ".dagg-tmp-";

/// The store for a config: path-style requests to `endpoint` when given, plain HTTP only
/// when allowed (by default for a loopback endpoint), every request bounded by the
/// connection timeout and retried at most twice within it.
pub fn store(c: &AwsS3Config) -> Result<Arc<AmazonS3>, ConnectorError> {
    let timeout = Duration::from_secs(c.timeout_secs());
    let mut b = AmazonS3Builder::from_env().with_bucket_name(&c.bucket_name);
    if let Some(region) = &c.aws_region {
        b = b.with_region(region);
    }
    if let (Some(id), Some(secret)) = (&c.access_key_id, &c.secret_access_key) {
        let secret = crate::secrets::reveal(secret).map_err(|e| {
            ConnectorError::Config(format!("{}: secret_access_key: {e}", target(c, None)))
        })?;
        b = b.with_access_key_id(id).with_secret_access_key(secret);
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
        .build()
        .map_err(|e| ConnectorError::Config(format!("{}: {e}", target(c, None))))?;
    Ok(Arc::new(s3))
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

/// Streams a local file into an object (multipart above a few MB).
async fn upload(
    store: Arc<dyn ObjectStore>,
    c: &AwsS3Config,
    from: &FsPath,
    key: &str,
) -> Result<(), ConnectorError> {
    let mut file = tokio::fs::File::open(from)
        .await
        .map_err(|source| ConnectorError::Open {
            path: from.display().to_string(),
            source,
        })?;
    let mut writer = object_store::buffered::BufWriter::new(store, Path::from(key));
    let seconds = c.timeout_secs();
    let work = async {
        tokio::io::copy(&mut file, &mut writer).await?;
        writer.shutdown().await
    };
    // The whole upload may take longer than one request: a generous bound per file.
    match tokio::time::timeout(Duration::from_secs(seconds.saturating_mul(10)), work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ConnectorError::Connect {
            target: target(c, Some(key)),
            reason: e.to_string(),
        }),
        Err(_) => Err(ConnectorError::Timeout {
            target: target(c, Some(key)),
            seconds: seconds.saturating_mul(10),
            reason: "the upload did not finish".into(),
        }),
    }
}

/// The `aws_s3` source. Built by [`crate::open_source`].
pub struct S3Source {
    config: AwsS3Config,
    store: Arc<AmazonS3>,
    /// Listed at the first read or seek.
    keys: Option<Arc<Vec<String>>>,
    /// The key being read (or next to read).
    index: usize,
    /// The open object, its local copy.
    current: Option<(FileSource, PathBuf)>,
    /// Where to continue within the object at `index` when it is opened (a checkpoint's).
    resume: Option<serde_json::Value>,
    dir: PathBuf,
}

impl S3Source {
    pub fn open(config: &AwsS3Config) -> Result<S3Source, ConnectorError> {
        Ok(S3Source {
            config: config.clone(),
            store: store(config)?,
            keys: None,
            index: 0,
            current: None,
            resume: None,
            dir: temp_dir("read")?,
        })
    }

    async fn keys(&mut self) -> Result<Arc<Vec<String>>, ConnectorError> {
        if let Some(k) = &self.keys {
            return Ok(k.clone());
        }
        let keys = list_keys(self.store.as_ref(), &self.config).await?;
        if keys.is_empty() {
            return Err(ConnectorError::NoMatch {
                pattern: target(
                    &self.config,
                    Some(&format!(
                        "{}{}",
                        self.config.prefix.as_deref().unwrap_or(""),
                        self.config.key.as_deref().unwrap_or("")
                    )),
                ),
            });
        }
        let keys = Arc::new(keys);
        self.keys = Some(keys.clone());
        Ok(keys)
    }

    fn close_current(&mut self) {
        if let Some((_, local)) = self.current.take() {
            let _ = std::fs::remove_file(local);
        }
    }
}

impl Drop for S3Source {
    fn drop(&mut self) {
        self.close_current();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[async_trait::async_trait]
impl SourceConnector for S3Source {
    async fn next_batch(&mut self, max: usize) -> Result<Option<SourceBatch>, ConnectorError> {
        let keys = self.keys().await?;
        loop {
            if self.index >= keys.len() {
                return Ok(None);
            }
            if self.current.is_none() {
                let key = &keys[self.index];
                let local = self.dir.join(format!("object-{}", self.index));
                download(self.store.as_ref(), &self.config, key, &local).await?;
                let c = &self.config;
                let record_element = c.record_element.as_deref().unwrap_or("record");
                let delimiter = c.delimiter.map(|d| d as u8).unwrap_or(b',');
                let mut src = FileSource::new(
                    vec![local.clone()],
                    vec![key.clone()],
                    c.file_format,
                    c.gzip_for(key),
                    delimiter,
                    record_element,
                    dagg_model::spec::pipeline::Limits::default().max_record_bytes,
                );
                if let Some(cp) = self.resume.take() {
                    src.seek(&cp).await?;
                }
                self.current = Some((src, local));
            }
            let (src, _) = self.current.as_mut().expect("an object is open");
            match src.next_batch(max).await? {
                Some(mut b) => {
                    let unit = self.index as u32;
                    b.batch.positions.iter_mut().for_each(|p| p.unit = unit);
                    b.bad.iter_mut().for_each(|bad| bad.position.unit = unit);
                    b.batch.units = Some(keys.clone());
                    return Ok(Some(b));
                }
                None => {
                    self.close_current();
                    self.index += 1;
                }
            }
        }
    }

    fn describe(&self, pos: Position) -> Value {
        let mut m = Map::with_capacity(2);
        let key = self
            .keys
            .as_ref()
            .and_then(|k| k.get(pos.unit as usize))
            .map(|k| Value::from(k.as_str()))
            .unwrap_or(Value::Null);
        m.push_unchecked("key", key);
        let what = if self.config.file_format == dagg_model::spec::connector::FileFormat::Parquet {
            "row"
        } else {
            "line"
        };
        m.push_unchecked(what, Value::Int(pos.seq as i64));
        Value::Object(m)
    }

    fn checkpoint(&self) -> serde_json::Value {
        let key = self.keys.as_ref().and_then(|k| k.get(self.index)).cloned();
        let within = match (&self.current, &self.resume) {
            (Some((src, _)), _) => src.checkpoint(),
            (None, Some(cp)) => cp.clone(),
            (None, None) => serde_json::Value::Null,
        };
        json!({"version": CHECKPOINT_VERSION, "key": key, "file": within})
    }

    async fn seek(&mut self, checkpoint: &serde_json::Value) -> Result<(), ConnectorError> {
        let bad = |what: &str| ConnectorError::Seek(format!("{what} (checkpoint: {checkpoint})"));
        if checkpoint.get("version").and_then(|v| v.as_u64()) != Some(CHECKPOINT_VERSION) {
            return Err(bad(&format!(
                "not an aws_s3 source checkpoint of version {CHECKPOINT_VERSION}"
            )));
        }
        let keys = self.keys().await?;
        self.close_current();
        self.resume = None;
        match checkpoint.get("key") {
            Some(serde_json::Value::Null) => self.index = keys.len(),
            Some(serde_json::Value::String(key)) => {
                let Some(i) = keys.iter().position(|k| k == key) else {
                    return Err(bad(&format!(
                        "its object `{key}` is no longer in {}",
                        target(&self.config, None)
                    )));
                };
                self.index = i;
                self.resume = checkpoint.get("file").filter(|v| !v.is_null()).cloned();
            }
            _ => return Err(bad("`key` must be an object key or null")),
        }
        Ok(())
    }
}

/// The `aws_s3` sink. Built by [`crate::open_sink`].
pub struct S3Sink {
    config: AwsS3Config,
    store: Arc<AmazonS3>,
    key: String,
    dir: PathBuf,
    local: PathBuf,
    inner: Box<dyn SinkConnector>,
    /// Staging objects of `pre_commit`s not yet moved into place, oldest first: each holds
    /// everything written up to its epoch, so a commit publishes the newest.
    staged: Vec<String>,
    /// Records written since the last `pre_commit`.
    dirty: bool,
    epoch: u64,
}

impl S3Sink {
    pub fn open(config: &AwsS3Config) -> Result<S3Sink, ConnectorError> {
        let key = config.object_key().ok_or_else(|| {
            ConnectorError::Config(format!(
                "{}: a destination needs `key`",
                target(config, None)
            ))
        })?;
        let dir = temp_dir("write")?;
        let name = key
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("output");
        let local = dir.join(name);
        let file_config = config.file_config(&local.display().to_string());
        // The object's compression, not the local name's, decides.
        let file_config = dagg_model::spec::connector::FileConfig {
            compression: Some(if config.gzip_for(&key) {
                dagg_model::spec::connector::Compression::Gzip
            } else {
                dagg_model::spec::connector::Compression::None
            }),
            ..file_config
        };
        let inner = crate::file::open_sink(&file_config, FsPath::new(""))?;
        Ok(S3Sink {
            config: config.clone(),
            store: store(config)?,
            key,
            dir,
            local,
            inner,
            staged: Vec::new(),
            dirty: false,
            epoch: 0,
        })
    }

    fn staging_key(&self, epoch: u64) -> String {
        format!("{}{STAGING}{epoch}", self.key)
    }
}

/// Copies the staging object over the destination `key` and deletes it.
async fn publish(
    store: &AmazonS3,
    c: &AwsS3Config,
    staging: &str,
    key: &str,
) -> Result<(), ConnectorError> {
    let (from, to) = (Path::from(staging), Path::from(key));
    within(c, Some(key), store.copy(&from, &to)).await?;
    within(c, Some(staging), store.delete(&from)).await?;
    Ok(())
}

/// Deletes every staging object of the destination `key`.
async fn remove_staging(
    store: &AmazonS3,
    c: &AwsS3Config,
    key: &str,
) -> Result<(), ConnectorError> {
    let prefix = format!("{key}{STAGING}");
    let folder = prefix
        .rfind('/')
        .map(|i| &prefix[..i])
        .filter(|f| !f.is_empty())
        .map(Path::from);
    let mut listing = store.list(folder.as_ref());
    let mut stale = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| ConnectorError::Connect {
            target: target(c, Some(&prefix)),
            reason: e.to_string(),
        })?;
        let k = meta.location.to_string();
        if k.starts_with(&prefix) {
            stale.push(k);
        }
    }
    for k in stale {
        within(c, Some(&k), store.delete(&Path::from(k.as_str()))).await?;
    }
    Ok(())
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[async_trait::async_trait]
impl SinkConnector for S3Sink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<(usize, String)>, ConnectorError> {
        self.dirty = true;
        self.inner.write(records).await
    }

    /// Uploads everything written so far as `<key>.dagg-tmp-<epoch>`; `<key>` is unchanged.
    async fn pre_commit(&mut self, epoch: u64) -> Result<serde_json::Value, ConnectorError> {
        self.inner.commit().await?;
        if !self.local.exists() {
            // Nothing written yet: the file sink creates its (empty) output on commit; a
            // format whose empty output is no file still gets an empty object.
            tokio::fs::File::create(&self.local)
                .await
                .map_err(|source| ConnectorError::Open {
                    path: self.local.display().to_string(),
                    source,
                })?;
        }
        let staging = self.staging_key(epoch);
        upload(self.store.clone(), &self.config, &self.local, &staging).await?;
        if !self.staged.contains(&staging) {
            self.staged.push(staging.clone());
        }
        self.dirty = false;
        self.epoch = epoch;
        Ok(json!({"version": CHECKPOINT_VERSION, "staging": staging}))
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.dirty || self.staged.is_empty() {
            let epoch = self.epoch + 1;
            self.pre_commit(epoch).await?;
        }
        let staged = std::mem::take(&mut self.staged);
        if let Some((newest, older)) = staged.split_last() {
            publish(&self.store, &self.config, newest, &self.key).await?;
            for old in older {
                within(
                    &self.config,
                    Some(old),
                    self.store.delete(&Path::from(old.as_str())),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn abort(&mut self) -> Result<(), ConnectorError> {
        self.dirty = false;
        for staging in std::mem::take(&mut self.staged) {
            within(
                &self.config,
                Some(&staging),
                self.store.delete(&Path::from(staging.as_str())),
            )
            .await?;
        }
        self.inner.abort().await
    }

    /// The checkpoint that `token` belongs to completed: its output becomes `<key>` (if the
    /// crash came before its commit), later staging objects go, and the next writes append
    /// to a local copy of `<key>`.
    async fn recover(
        &mut self,
        token: &serde_json::Value,
        epoch: u64,
    ) -> Result<(), ConnectorError> {
        let bad = |why: &str| {
            ConnectorError::Seek(format!(
                "aws_s3 destination {}: {why}",
                target(&self.config, Some(&self.key))
            ))
        };
        let staging = token
            .get("staging")
            .and_then(|s| s.as_str())
            .ok_or_else(|| bad("the checkpoint names no staging object"))?
            .to_string();
        self.staged.clear();
        self.dirty = false;
        self.epoch = epoch;
        let staged_there = self.store.head(&Path::from(staging.as_str())).await.is_ok();
        if staged_there {
            publish(&self.store, &self.config, &staging, &self.key).await?;
        }
        remove_staging(&self.store, &self.config, &self.key).await?;
        match self.store.head(&Path::from(self.key.as_str())).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                return Err(bad(
                    "neither the object nor its staging copy is there, so the output written before the interruption is lost",
                ));
            }
            Err(e) => {
                return Err(ConnectorError::Connect {
                    target: target(&self.config, Some(&self.key)),
                    reason: e.to_string(),
                });
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).map_err(|source| ConnectorError::Open {
            path: self.dir.display().to_string(),
            source,
        })?;
        download(self.store.as_ref(), &self.config, &self.key, &self.local).await?;
        // The file sink sees its destination in place and no temporary file: it appends.
        self.inner
            .recover(&json!({"version": 1, "bytes": 0}), epoch)
            .await
    }
}

/// The store answers: a source's keys are listed, a destination's folder takes a probe
/// object (deleted again).
pub async fn test_connection(c: &AwsS3Config, role: Role) -> Result<String, ConnectorError> {
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
