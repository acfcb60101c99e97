//! The `aws_s3` source: the keys listed once and read one object after another through a
//! local copy and a [`FileSource`]; see [the module](super) for positions and checkpoints.

use std::path::PathBuf;
use std::sync::Arc;

use dagg_model::spec::s3::AwsS3Config;
use dagg_model::{Map, Position, Value};
use object_store::aws::AmazonS3;
use serde_json::json;

use super::{CHECKPOINT_VERSION, download, list_keys, store, target, temp_dir};
use crate::file::FileSource;
use crate::{ConnectorError, SourceBatch, SourceConnector};

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
