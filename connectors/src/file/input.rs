//! A file's bytes through one large reusable buffer, with the offset of every byte in the
//! (decompressed) stream, so format readers can parse straight from slices and say exactly
//! where they stopped.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::ConnectorError;

/// The default buffer: large reads keep system calls and refills rare.
pub(crate) const BUF_SIZE: usize = 1 << 20;
/// How much of a record over the size limit is kept for the dead letter.
pub(crate) const RAW_PREFIX: usize = 1024;

enum Raw {
    Plain(File),
    Gzip(Box<MultiGzDecoder<BufReader<File>>>),
}

/// A file being read. `data()` is the unread part of the buffer; `consume` marks bytes as
/// used; `fill` reads more (growing the buffer only when one unit — a line, an element —
/// is larger than it).
pub(crate) struct Input {
    raw: Raw,
    path: String,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    eof: bool,
    /// The most bytes one record may take (`limits.max_record_bytes`): the readers stop
    /// buffering a record at this size and skip the rest of it.
    max_record: usize,
}

impl Input {
    pub fn open(path: &Path, gzip: bool, buf_size: usize) -> Result<Input, ConnectorError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| ConnectorError::Open { path: name.clone(), source })?;
        let raw = if gzip {
            Raw::Gzip(Box::new(MultiGzDecoder::new(BufReader::with_capacity(256 << 10, file))))
        } else {
            Raw::Plain(file)
        };
        Ok(Input { raw, path: name, buf: vec![0; buf_size.max(16)], start: 0, end: 0, base: 0, eof: false, max_record: usize::MAX })
    }

    /// Sets the most bytes one record may take.
    pub fn with_max_record(mut self, max: u64) -> Input {
        self.max_record = usize::try_from(max).unwrap_or(usize::MAX).max(1);
        self
    }

    /// The most bytes one record may take.
    #[inline]
    pub fn max_record(&self) -> usize {
        self.max_record
    }

    /// The first [`RAW_PREFIX`] bytes of `data()`, for the dead letter of a record too large.
    pub fn raw_prefix(&self) -> Vec<u8> {
        let d = self.data();
        d[..d.len().min(RAW_PREFIX)].to_vec()
    }

    /// Consumes bytes through the first `stop` byte that `at_stop` accepts (given the bytes
    /// seen since the last call), reading as needed and never holding more than a buffer.
    /// Returns the bytes consumed and whether a stop was found before the end of the file.
    pub fn skip_through(&mut self, mut at_stop: impl FnMut(&[u8]) -> Option<usize>) -> Result<(u64, bool), ConnectorError> {
        let mut total = 0u64;
        loop {
            let data = self.data();
            if let Some(i) = at_stop(data) {
                total += i as u64 + 1;
                self.consume(i + 1);
                return Ok((total, true));
            }
            let n = data.len();
            total += n as u64;
            self.consume(n);
            if !self.fill()? {
                return Ok((total, false));
            }
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The bytes read but not consumed yet.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// True once the stream has no more bytes beyond `data()`.
    #[inline]
    pub fn eof(&self) -> bool {
        self.eof
    }

    #[inline]
    pub fn consume(&mut self, n: usize) {
        debug_assert!(self.start + n <= self.end);
        self.start += n;
    }

    /// Stream offset of the first byte of `data()`.
    #[inline]
    pub fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    /// Reads more bytes after `data()`, keeping `data()` (moved to the buffer's front).
    /// Returns false at the end of the stream.
    pub fn fill(&mut self) -> Result<bool, ConnectorError> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let len = self.buf.len();
            self.buf.resize(len * 2, 0);
        }
        loop {
            let r = match &mut self.raw {
                Raw::Plain(f) => f.read(&mut self.buf[self.end..]),
                Raw::Gzip(g) => g.read(&mut self.buf[self.end..]),
            };
            match r {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(ConnectorError::Read { path: self.path.clone(), source }),
            }
        }
    }

    /// Skips a UTF-8 byte order mark at the very start of the stream.
    pub fn skip_bom(&mut self) -> Result<(), ConnectorError> {
        if self.offset() != 0 {
            return Ok(());
        }
        while self.data().len() < 3 && self.fill()? {}
        if self.data().starts_with(b"\xEF\xBB\xBF") {
            self.consume(3);
        }
        Ok(())
    }

    /// Moves forward to stream offset `target` (a plain file seeks; a gzip stream is
    /// decompressed and skipped). A target past the end means the file changed.
    pub fn skip_to(&mut self, target: u64) -> Result<(), ConnectorError> {
        let past_end = |path: &str| {
            ConnectorError::Seek(format!(
                "`{path}` is shorter than the checkpoint's offset {target}: the file changed since the checkpoint"
            ))
        };
        if target < self.offset() {
            return Err(ConnectorError::Seek(format!("cannot go back to offset {target} in `{}`", self.path)));
        }
        if target <= self.base + self.end as u64 {
            self.start = (target - self.base) as usize;
            return Ok(());
        }
        match &mut self.raw {
            Raw::Plain(f) => {
                let len =
                    f.metadata().map_err(|source| ConnectorError::Read { path: self.path.clone(), source })?.len();
                if target > len {
                    return Err(past_end(&self.path));
                }
                f.seek(SeekFrom::Start(target))
                    .map_err(|source| ConnectorError::Read { path: self.path.clone(), source })?;
                self.base = target;
                self.start = 0;
                self.end = 0;
            }
            Raw::Gzip(_) => {
                while self.base + (self.end as u64) < target {
                    // Drop everything buffered, then read on.
                    self.start = self.end;
                    if !self.fill()? {
                        return Err(past_end(&self.path));
                    }
                }
                self.start = (target - self.base) as usize;
            }
        }
        Ok(())
    }

    /// Capacity of the buffer (for tests that check memory stays bounded).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
}

/// The dead letter's reason for a record over the size limit (`what`: "line", "row", …),
/// with how large it was (`None` when the file ended inside it).
pub(crate) fn too_large(what: &str, size: u64, limit: usize) -> String {
    format!(
        "the {what} is {size} bytes, over the limit of {limit} bytes (limits.max_record_bytes); \
         only its first {RAW_PREFIX} bytes are kept here"
    )
}

/// The dead letter's reason for a record nested too deep.
pub(crate) fn too_deep(what: &str) -> String {
    format!("the {what} is {}", dagg_model::value::depth_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fill_keeps_unconsumed_bytes_and_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, b"0123456789abcdefghij").unwrap();
        let mut i = Input::open(&p, false, 16).unwrap();
        assert!(i.fill().unwrap());
        assert_eq!(i.data(), b"0123456789abcdef");
        i.consume(10);
        assert_eq!(i.offset(), 10);
        assert!(i.fill().unwrap());
        assert_eq!(i.data(), b"abcdefghij");
        assert_eq!(i.offset(), 10);
        assert!(!i.fill().unwrap());
        assert!(i.eof());
    }

    #[test]
    fn skip_to_in_plain_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let text: Vec<u8> = (0..10_000u32).flat_map(|i| format!("{i}\n").into_bytes()).collect();
        let plain = dir.path().join("a.txt");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("a.txt.gz");
        let mut e = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        e.write_all(&text).unwrap();
        e.finish().unwrap();
        for (p, gzip) in [(&plain, false), (&gz, true)] {
            let mut i = Input::open(p, gzip, 64).unwrap();
            i.skip_to(30_000).unwrap();
            assert_eq!(i.offset(), 30_000);
            i.fill().unwrap();
            assert_eq!(i.data()[0], text[30_000]);
            let err = Input::open(p, gzip, 64).unwrap().skip_to(1 << 30).unwrap_err();
            assert!(err.to_string().contains("shorter than the checkpoint"), "{err}");
        }
    }
}
