//! CSV (RFC 4180) both ways, written here because dagg distinguishes what common CSV crates
//! do not: an unquoted empty cell is null, a quoted `""` is an empty string.
//!
//! Reading: the first row is the header (a name twice is an error); every cell is a string.
//! Cells may be quoted, with `""` for a quote and line breaks inside; rows end with LF or
//! CRLF; blank lines are skipped. A row with the wrong number of cells, text after a closing
//! quote, or a cell that is not UTF-8 is a bad input with the line the row starts on. A quote
//! that is never closed swallows the rest of the file, so it is an error. A row longer than
//! `limits.max_record_bytes` is a bad input: the reader stops buffering it at the limit and
//! skips to its end (quotes respected), keeping its first bytes for the dead letter.
//!
//! Writing: strings as they are (quoted when they hold the delimiter, a quote or a line
//! break), null as an empty unquoted cell, the empty string as `""`, numbers and booleans
//! as JSON prints them, arrays and objects as compact JSON.

use dagg_model::{Map, Position, Str, Value};
use memchr::{memchr, memchr_iter, memchr2};

use super::input::{Input, too_large};
use super::reader::{Cursor, Emitter, Stop};
use crate::ConnectorError;

#[derive(Clone, Copy, Debug)]
struct Cell {
    start: usize,
    end: usize,
    quoted: bool,
}

/// One row's cells, unescaped into a reused buffer.
#[derive(Default)]
struct Row {
    cells: Vec<Cell>,
    scratch: Vec<u8>,
    /// The row broke a rule but could still be delimited.
    error: Option<String>,
}

impl Row {
    fn cell(&self, i: usize) -> &[u8] {
        let c = self.cells[i];
        &self.scratch[c.start..c.end]
    }
}

#[derive(Debug, PartialEq)]
enum Parsed {
    /// A row: `used` bytes, including its line break, holding `newlines` line breaks.
    Row { used: usize, newlines: u64 },
    /// An empty line.
    Blank { used: usize },
    /// The data ends inside the row.
    More,
    /// A quoted cell never closes before the end of the file.
    Unterminated,
    /// The row is longer than the record size limit (and not read whole).
    TooLarge,
}

/// Parses the row at the start of `data` (which is not empty).
fn parse_row(data: &[u8], eof: bool, delim: u8, row: &mut Row) -> Parsed {
    row.cells.clear();
    row.scratch.clear();
    row.error = None;
    let n = data.len();
    match data {
        [b'\n', ..] => return Parsed::Blank { used: 1 },
        [b'\r', b'\n', ..] => return Parsed::Blank { used: 2 },
        [b'\r'] if eof => return Parsed::Blank { used: 1 },
        [b'\r'] => return Parsed::More,
        _ => {}
    }
    let mut i = 0;
    let mut newlines = 0;
    loop {
        let start = row.scratch.len();
        let quoted = i < n && data[i] == b'"';
        if quoted {
            i += 1;
            loop {
                let Some(j) = memchr(b'"', &data[i..]) else {
                    return if eof { Parsed::Unterminated } else { Parsed::More };
                };
                let part = &data[i..i + j];
                row.scratch.extend_from_slice(part);
                newlines += memchr_iter(b'\n', part).count() as u64;
                i += j + 1;
                if i < n && data[i] == b'"' {
                    row.scratch.push(b'"');
                    i += 1;
                } else if i >= n && !eof {
                    // The next byte may be the second quote of `""`.
                    return Parsed::More;
                } else {
                    break;
                }
            }
            // Anything between the closing quote and the delimiter is out of place; keep
            // it in the cell (for the raw text) but mark the row.
            let stop = match memchr2(delim, b'\n', &data[i..]) {
                Some(j) => i + j,
                None if eof => n,
                None => return Parsed::More,
            };
            let stray = trim_cr(&data[i..stop], stop < n && data[stop] == b'\n' || stop == n);
            if !stray.is_empty() && row.error.is_none() {
                row.error = Some(format!(
                    "cell {} has text after its closing quote; a quoted cell must be followed by the delimiter or the end of the line",
                    row.cells.len() + 1
                ));
            }
            row.scratch.extend_from_slice(stray);
            i = stop;
        } else {
            let stop = match memchr2(delim, b'\n', &data[i..]) {
                Some(j) => i + j,
                None if eof => n,
                None => return Parsed::More,
            };
            let text = trim_cr(&data[i..stop], stop == n || data[stop] == b'\n');
            row.scratch.extend_from_slice(text);
            i = stop;
        }
        row.cells.push(Cell { start, end: row.scratch.len(), quoted });
        if i >= n {
            return Parsed::Row { used: n, newlines };
        }
        if data[i] == delim {
            i += 1;
            continue;
        }
        return Parsed::Row { used: i + 1, newlines: newlines + 1 };
    }
}

/// Drops the `\r` of a CRLF line break.
fn trim_cr(text: &[u8], at_line_end: bool) -> &[u8] {
    if at_line_end { text.strip_suffix(b"\r").unwrap_or(text) } else { text }
}

/// The next row or blank line, reading more as needed; `None` at the end of the file.
fn next_row(input: &mut Input, delim: u8, row: &mut Row, line: u64) -> Result<Option<Parsed>, Stop> {
    loop {
        if input.data().is_empty() {
            if input.fill()? {
                continue;
            }
            return Ok(None);
        }
        match parse_row(input.data(), input.eof(), delim, row) {
            Parsed::More if input.data().len() > input.max_record() => return Ok(Some(Parsed::TooLarge)),
            Parsed::More => {
                input.fill()?;
            }
            Parsed::Unterminated => {
                return Err(Stop::Failed(ConnectorError::Decode {
                    path: input.path().to_string(),
                    line,
                    reason: "a quoted cell on this line is never closed (expected a closing `\"`)".into(),
                }));
            }
            p => return Ok(Some(p)),
        }
    }
}

pub(crate) fn read(input: &mut Input, at: Cursor, delim: u8, out: &mut Emitter) -> Result<(), Stop> {
    let unit = at.unit;
    let mut row = Row::default();
    let mut line = 1;
    // The header comes first even when resuming further on.
    input.skip_bom()?;
    let header = loop {
        match next_row(input, delim, &mut row, line)? {
            None => return Ok(()),
            Some(Parsed::Blank { used }) => {
                input.consume(used);
                line += 1;
            }
            Some(Parsed::TooLarge) => {
                return Err(Stop::Failed(ConnectorError::Decode {
                    path: input.path().to_string(),
                    line,
                    reason: format!("the header row is longer than limits.max_record_bytes ({} bytes)", input.max_record()),
                }));
            }
            Some(Parsed::Row { used, newlines }) => {
                let header = header(input, &row, line)?;
                input.consume(used);
                line += newlines;
                break header;
            }
            Some(p) => unreachable!("next_row returned {p:?}"),
        }
    };
    if at.offset > input.offset() {
        input.skip_to(at.offset)?;
        line = at.line;
    }
    loop {
        let Some(parsed) = next_row(input, delim, &mut row, line)? else {
            return Ok(());
        };
        let (used, newlines) = match parsed {
            Parsed::Blank { used } => {
                input.consume(used);
                line += 1;
                continue;
            }
            Parsed::Row { used, newlines } => (used, newlines),
            Parsed::TooLarge => {
                let raw = input.raw_prefix();
                let limit = input.max_record();
                let (size, newlines) = skip_row(input)?;
                let pos = Position { unit, seq: line };
                line += newlines;
                let end = Cursor { unit, offset: input.offset(), line, elements: 0 };
                out.bad(pos, &raw, too_large("row", size, limit), end)?;
                continue;
            }
            p => unreachable!("next_row returned {p:?}"),
        };
        let pos = Position { unit, seq: line };
        let end = Cursor { unit, offset: input.offset() + used as u64, line: line + newlines, elements: 0 };
        let size = used - usize::from(input.data()[used - 1] == b'\n');
        let problem = if size > input.max_record() {
            // Whole in the buffer, but over the limit all the same.
            Some(too_large("row", size as u64, input.max_record()))
        } else if let Some(e) = row.error.take() {
            Some(e)
        } else if row.cells.len() != header.len() {
            Some(format!("the row has {} cells, the header has {}", row.cells.len(), header.len()))
        } else {
            match record(&header, &row) {
                Ok(record) => {
                    out.record(record, pos, end)?;
                    None
                }
                Err(e) => Some(e),
            }
        };
        if let Some(reason) = problem {
            let raw = &input.data()[..used];
            let raw = raw.strip_suffix(b"\n").map(|r| r.strip_suffix(b"\r").unwrap_or(r)).unwrap_or(raw);
            let raw = if size > input.max_record() { &raw[..raw.len().min(super::input::RAW_PREFIX)] } else { raw };
            out.bad(pos, raw, reason, end)?;
        }
        input.consume(used);
        line += newlines;
    }
}

/// Consumes the row at the start of the data through its line break, quotes respected
/// (`""` toggles twice), a buffer at a time. Returns its size and the line breaks consumed.
fn skip_row(input: &mut Input) -> Result<(u64, u64), Stop> {
    let mut quoted = false;
    let mut newlines = 0u64;
    let (size, found) = input.skip_through(|d| {
        let mut i = 0;
        while let Some(j) = memchr2(b'"', b'\n', &d[i..]) {
            i += j;
            if d[i] == b'"' {
                quoted = !quoted;
            } else {
                newlines += 1;
                if !quoted {
                    return Some(i);
                }
            }
            i += 1;
        }
        None
    })?;
    // The size of the row itself, without its line break.
    Ok((size - u64::from(found), newlines))
}

fn header(input: &Input, row: &Row, line: u64) -> Result<Vec<Str>, Stop> {
    let fail = |reason: String| Stop::Failed(ConnectorError::Decode { path: input.path().to_string(), line, reason });
    if let Some(e) = &row.error {
        return Err(fail(format!("in the header row: {e}")));
    }
    let mut names: Vec<Str> = Vec::with_capacity(row.cells.len());
    for i in 0..row.cells.len() {
        let name =
            std::str::from_utf8(row.cell(i)).map_err(|_| fail(format!("header cell {} is not valid UTF-8", i + 1)))?;
        if names.iter().any(|n| n == name) {
            return Err(fail(format!("the header names the column `{name}` twice; column names must be unique")));
        }
        names.push(Str::from(name));
    }
    Ok(names)
}

fn record(header: &[Str], row: &Row) -> Result<Map, String> {
    let mut m = Map::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let cell = row.cells[i];
        let bytes = row.cell(i);
        let value = if bytes.is_empty() && !cell.quoted {
            Value::Null
        } else {
            match std::str::from_utf8(bytes) {
                Ok(s) => Value::String(Str::from(s)),
                Err(_) => return Err(format!("cell {} (`{name}`) is not valid UTF-8", i + 1)),
            }
        };
        m.push_unchecked(name.clone(), value);
    }
    Ok(m)
}

/// Appends one cell for `v`.
pub(crate) fn write_cell(buf: &mut Vec<u8>, v: &Value, delim: u8) {
    match v {
        Value::Null => {}
        Value::String(s) => write_text(buf, s.as_bytes(), delim),
        Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
            let start = buf.len();
            dagg_model::json::write_value(buf, v);
            if buf[start..].contains(&delim) {
                let text = buf.split_off(start);
                write_text(buf, &text, delim);
            }
        }
        Value::Array(_) | Value::Object(_) => {
            let mut text = Vec::new();
            dagg_model::json::write_value(&mut text, v);
            write_text(buf, &text, delim);
        }
    }
}

/// Appends `text` as a cell: quoted when empty (so it reads back as `""`, not null) or when
/// it holds the delimiter, a quote or a line break.
pub(crate) fn write_text(buf: &mut Vec<u8>, text: &[u8], delim: u8) {
    let needs_quotes = text.is_empty() || text.iter().any(|&b| b == delim || b == b'"' || b == b'\n' || b == b'\r');
    if !needs_quotes {
        buf.extend_from_slice(text);
        return;
    }
    buf.push(b'"');
    let mut rest = text;
    while let Some(i) = memchr(b'"', rest) {
        buf.extend_from_slice(&rest[..=i]);
        buf.push(b'"');
        rest = &rest[i + 1..];
    }
    buf.extend_from_slice(rest);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::super::source::testing::read_all;
    use super::*;
    use dagg_model::spec::connector::FileFormat;

    fn cells(text: &str, eof: bool) -> (Parsed, Vec<(String, bool)>, Option<String>) {
        let mut row = Row::default();
        let p = parse_row(text.as_bytes(), eof, b',', &mut row);
        let cells = (0..row.cells.len())
            .map(|i| (String::from_utf8(row.cell(i).to_vec()).unwrap(), row.cells[i].quoted))
            .collect();
        (p, cells, row.error)
    }

    #[test]
    fn a_row_over_the_size_limit_is_a_bad_input_quotes_respected() {
        use super::super::source::testing::read_all_limited;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        // The long row holds a quoted cell with line breaks and `""` in it.
        let long = format!("2,\"{}\n\"\"x\n{}\"", "a".repeat(3000), "b".repeat(3000));
        std::fs::write(&p, format!("id,v\n1,x\n{long}\n3,y\n")).unwrap();
        for buf in [16, 64, 1 << 20] {
            let c = read_all_limited(&p, FileFormat::Csv, false, buf, 1000);
            assert_eq!(c.error, None, "buffer {buf}");
            let got: Vec<(u64, String)> = c.records.iter().map(|r| (r.0.seq, r.1.get("v").unwrap().to_text())).collect();
            assert_eq!(got, [(2, "x".to_string()), (6, "y".to_string())], "buffer {buf}");
            assert_eq!(c.bad.len(), 1);
            assert_eq!(c.bad[0].0.position.seq, 3);
            assert!(c.bad[0].0.reason.contains(&format!("the row is {} bytes, over the limit of 1000 bytes", long.len())), "{}", c.bad[0].0.reason);
        }
    }

    #[test]
    fn parse_row_cases() {
        let c = |s: &str, q| (s.to_string(), q);
        assert_eq!(
            cells("a,b\nx", false),
            (Parsed::Row { used: 4, newlines: 1 }, vec![c("a", false), c("b", false)], None)
        );
        assert_eq!(cells("a,,\"\"\r\n", false).1, vec![c("a", false), c("", false), c("", true)]);
        assert_eq!(
            cells("\"x,y\",\"say \"\"hi\"\"\",\"l1\r\nl2\"\n", false),
            (
                Parsed::Row { used: 28, newlines: 2 },
                vec![c("x,y", true), c("say \"hi\"", true), c("l1\r\nl2", true)],
                None
            )
        );
        assert_eq!(cells("a,b", true).0, Parsed::Row { used: 3, newlines: 0 });
        assert_eq!(cells("a,b", false).0, Parsed::More);
        assert_eq!(cells("\"a\"", false).0, Parsed::More);
        assert_eq!(cells("a,b,", true).1, vec![c("a", false), c("b", false), c("", false)]);
        assert_eq!(cells("\"ab", true).0, Parsed::Unterminated);
        assert_eq!(cells("\"ab", false).0, Parsed::More);
        assert_eq!(cells("\r\n", false).0, Parsed::Blank { used: 2 });
        let (_, cs, err) = cells("\"a\"b,c\n", false);
        assert_eq!(cs, vec![c("ab", true), c("c", false)]);
        assert!(err.unwrap().contains("after its closing quote"));
        assert_eq!(cells("a\"b,c\n", false).1, vec![c("a\"b", false), c("c", false)]);
    }

    #[test]
    fn writes_cells_that_read_back() {
        let mut buf = Vec::new();
        for v in [
            Value::Null,
            Value::from(""),
            Value::from("a,b"),
            Value::from("q\"q"),
            Value::Int(3),
            Value::Float(2.5),
            Value::Bool(true),
        ] {
            write_cell(&mut buf, &v, b',');
            buf.push(b',');
        }
        let arr: Value = serde_json::from_str(r#"[1,"x"]"#).unwrap();
        write_cell(&mut buf, &arr, b',');
        assert_eq!(String::from_utf8(buf).unwrap(), r#","","a,b","q""q",3,2.5,true,"[1,""x""]""#);
        let mut buf = Vec::new();
        write_cell(&mut buf, &Value::Float(2.5), b'.');
        assert_eq!(buf, b"\"2.5\"");
    }

    #[test]
    fn rows_lines_and_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        std::fs::write(&p, "\u{feff}id,name,note\r\n1,\"Smith, J\",\"\"\r\n2,,\"two\nlines\"\n\n3,x\n4,y,z\n").unwrap();
        for buf in [16, 1 << 20] {
            let c = read_all(&p, FileFormat::Csv, false, buf, Cursor::start(0));
            assert_eq!(c.error, None);
            let got: Vec<(u64, String)> =
                c.records.iter().map(|r| (r.0.seq, serde_json::to_string(&r.1).unwrap())).collect();
            assert_eq!(
                got,
                [
                    (2, r#"{"id":"1","name":"Smith, J","note":""}"#.to_string()),
                    (3, r#"{"id":"2","name":null,"note":"two\nlines"}"#.to_string()),
                    (7, r#"{"id":"4","name":"y","note":"z"}"#.to_string()),
                ]
            );
            assert_eq!(c.bad.len(), 1);
            assert_eq!((c.bad[0].0.position.seq, c.bad[0].0.raw.as_str()), (6, "3,x"));
            assert_eq!(c.bad[0].0.reason, "the row has 2 cells, the header has 3");
            // Resume after the bad row: the header is read again, lines continue.
            let rest = read_all(&p, FileFormat::Csv, false, buf, c.bad[0].1);
            assert_eq!(rest.records.len(), 1);
            assert_eq!(rest.records[0].0.seq, 7);
            assert_eq!(rest.records[0].1.get("note"), Some(&Value::from("z")));
        }
    }

    #[test]
    fn header_errors_and_unclosed_quotes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        std::fs::write(&p, "a,b,a\n1,2,3\n").unwrap();
        let e = read_all(&p, FileFormat::Csv, false, 1 << 20, Cursor::start(0)).error.unwrap();
        assert!(e.contains("a.csv") && e.contains("line 1") && e.contains("`a` twice"), "{e}");
        std::fs::write(&p, "a\n1\n\"2\n3\n").unwrap();
        let c = read_all(&p, FileFormat::Csv, false, 1 << 20, Cursor::start(0));
        assert_eq!(c.records.len(), 1);
        let e = c.error.unwrap();
        assert!(e.contains("line 3") && e.contains("never closed"), "{e}");
        std::fs::write(&p, "").unwrap();
        let c = read_all(&p, FileFormat::Csv, false, 1 << 20, Cursor::start(0));
        assert_eq!((c.records.len(), c.error), (0, None));
    }
}
