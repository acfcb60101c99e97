//! The `aws_s3` sink: a [`crate::file`] sink on a local copy, uploaded as a staging object at
//! `pre_commit` and copied over the destination at `commit`; see [the module](super).

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dagg_model::Record;
use dagg_model::spec::s3::AwsS3Config;
use futures_util::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{CHECKPOINT_VERSION, STAGING, download, store, target, temp_dir, within};
use crate::{ConnectorError, SinkConnector};

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
