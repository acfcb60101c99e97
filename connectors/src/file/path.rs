//! Where a configured path points: resolved against the pipeline's folder when relative,
//! and for a source, the files a glob matches.

use std::path::{Path, PathBuf};

use dagg_model::spec::connector::FileConfig;

use crate::ConnectorError;

/// A configured path, resolved against the pipeline's folder when relative.
pub(super) fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) }
}

pub(super) fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// Every file the glob matches, sorted.
pub(super) fn matches(config: &FileConfig, base_dir: &Path, relative: bool) -> Result<Vec<PathBuf>, ConnectorError> {
    let pattern = if relative && !base_dir.as_os_str().is_empty() {
        let Some(base) = base_dir.to_str() else {
            return Err(ConnectorError::Config(format!(
                "the pipeline's folder `{}` is not valid UTF-8, so the glob `{}` cannot be expanded",
                base_dir.display(),
                config.path
            )));
        };
        let base = glob::Pattern::escape(base.trim_end_matches('/'));
        format!("{base}/{}", config.path)
    } else {
        config.path.clone()
    };
    let paths = glob::glob(&pattern)
        .map_err(|e| ConnectorError::Config(format!("`{}` is not a valid glob pattern: {e}", config.path)))?;
    let mut files = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| ConnectorError::Open {
            path: e.path().display().to_string(),
            source: std::io::Error::new(e.error().kind(), e.error().to_string()),
        })?;
        if path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(ConnectorError::NoMatch { pattern });
    }
    files.sort();
    Ok(files)
}
