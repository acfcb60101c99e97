//! What every format reader shares: the [`Cursor`] that says where an item ends, the
//! [`Emitter`] a reader hands its items to (batched into [`Chunk`]s for the source), why a
//! reader stopped ([`Stop`]), and [`start_at`]. The formats import this module and nothing
//! above it; only [`super::source`] knows every format and picks one.

use dagg_model::{Position, Record};
use tokio::sync::mpsc;

use super::input::Input;
use crate::{BadInput, ConnectorError};

/// A place in the source: the byte `offset` in file `unit` (decompressed), the `line` that
/// byte is on, and for JSON arrays how many `elements` come before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub unit: u32,
    pub offset: u64,
    pub line: u64,
    pub elements: u64,
}

impl Cursor {
    pub fn start(unit: usize) -> Cursor {
        Cursor { unit: unit as u32, offset: 0, line: 1, elements: 0 }
    }
}

/// Why a format reader stopped early.
pub(crate) enum Stop {
    /// The source was dropped or sought elsewhere: nobody wants more.
    Closed,
    Failed(ConnectorError),
}

impl From<ConnectorError> for Stop {
    fn from(e: ConnectorError) -> Stop {
        Stop::Failed(e)
    }
}

/// What the reader thread sends: items in file order, each with the cursor after it.
#[derive(Default)]
pub(crate) struct Chunk {
    pub(super) records: Vec<Record>,
    pub(super) positions: Vec<Position>,
    pub(super) ends: Vec<Cursor>,
    pub(super) bad: Vec<BadInput>,
    pub(super) bad_ends: Vec<Cursor>,
    /// For each bad input, how many records of the chunk come before it.
    pub(super) bad_at: Vec<usize>,
    /// The cursor once the whole chunk is consumed.
    pub(super) end: Cursor,
    /// Nothing follows.
    pub(super) last: bool,
}

impl Chunk {
    pub(super) fn with_capacity(n: usize) -> Chunk {
        Chunk {
            records: Vec::with_capacity(n),
            positions: Vec::with_capacity(n),
            ends: Vec::with_capacity(n),
            ..Chunk::default()
        }
    }

    pub(super) fn items(&self) -> usize {
        self.records.len() + self.bad.len()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.records.len()
    }
}

/// The format readers' output: collects items into chunks and sends them. A full chunk
/// is sent only when the next item arrives, so the end of a file can still move its end
/// cursor to the next file (a resume then never re-reads a finished file).
pub(crate) struct Emitter {
    tx: mpsc::Sender<Result<Chunk, ConnectorError>>,
    size: usize,
    cur: Chunk,
}

impl Emitter {
    /// An emitter that sends chunks of up to `size` items on `tx`.
    pub(super) fn new(tx: mpsc::Sender<Result<Chunk, ConnectorError>>, size: usize) -> Emitter {
        Emitter { tx, size, cur: Chunk::with_capacity(size) }
    }

    #[inline]
    pub fn record(&mut self, record: Record, pos: Position, end: Cursor) -> Result<(), Stop> {
        if self.cur.items() >= self.size {
            self.send(false)?;
        }
        self.cur.records.push(record);
        self.cur.positions.push(pos);
        self.cur.ends.push(end);
        self.cur.end = end;
        Ok(())
    }

    pub fn bad(&mut self, position: Position, raw: &[u8], reason: String, end: Cursor) -> Result<(), Stop> {
        if self.cur.items() >= self.size {
            self.send(false)?;
        }
        let raw = String::from_utf8_lossy(raw).into_owned();
        self.cur.bad.push(BadInput { position, raw, reason });
        self.cur.bad_ends.push(end);
        self.cur.bad_at.push(self.cur.records.len());
        self.cur.end = end;
        Ok(())
    }

    /// Moves the end of everything emitted so far (at the end of a file).
    pub(super) fn set_end(&mut self, end: Cursor) {
        self.cur.end = end;
    }

    fn send(&mut self, last: bool) -> Result<(), Stop> {
        let end = self.cur.end;
        let mut chunk = std::mem::replace(&mut self.cur, Chunk::with_capacity(self.size));
        self.cur.end = end;
        chunk.last = last;
        self.tx.blocking_send(Ok(chunk)).map_err(|_| Stop::Closed)
    }

    /// Sends what a reader's run ended with: the last chunk, nothing (nobody listens), or
    /// everything before a failure and then the failure.
    pub(super) fn finish(mut self, result: Result<(), Stop>) {
        match result {
            Ok(()) => {
                let _ = self.send(true);
            }
            Err(Stop::Closed) => {}
            Err(Stop::Failed(e)) => {
                if self.cur.items() > 0 && self.send(false).is_err() {
                    return;
                }
                let _ = self.tx.blocking_send(Err(e));
            }
        }
    }
}


/// Moves `input` to where `at` says to start, for formats that need nothing before it.
pub(crate) fn start_at(input: &mut Input, at: Cursor) -> Result<(), ConnectorError> {
    if at.offset == 0 { input.skip_bom() } else { input.skip_to(at.offset) }
}
