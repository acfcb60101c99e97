//! A JSON file holding one array of objects, read element by element so a file of any size
//! streams through a bounded buffer.
//!
//! A byte scanner finds each element's end (tracking brackets, strings and escapes, and
//! resuming where it stopped when an element spans buffer refills); serde_json then parses
//! the element's slice. An element that is not an object, or whose text is not valid JSON
//! although its brackets balance, is a bad input: reading goes on after it. A broken
//! structure (mismatched brackets, a missing `,`, the file ending inside the array) leaves
//! no safe place to continue, so it is an error naming the line — after every record before
//! it has been handed out.
//!
//! An element longer than `limits.max_record_bytes` is a bad input: the scanner goes on to
//! its end consuming the buffer as it goes, so it is never held whole. One nested
//! [`MAX_DEPTH`] levels deep or more is a bad input too (the parsers count levels).
//!
//! [`MAX_DEPTH`]: dagg_model::value::MAX_DEPTH

use dagg_model::Position;
use memchr::{memchr_iter, memchr2};

use super::input::{Input, too_deep, too_large};
use super::jsonl::{is_depth_error, parse_object, without_position};
use super::reader::{Cursor, Emitter, Stop, start_at};
use crate::ConnectorError;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Before the `[`.
    Start,
    /// Right after the `[`.
    First,
    /// After an element: a `,` or the `]`.
    AfterElement,
    /// After a `,`: an element.
    Element,
    /// After the `]`: only white space.
    End,
}

pub(crate) fn read(input: &mut Input, at: Cursor, out: &mut Emitter) -> Result<(), Stop> {
    let unit = at.unit;
    let mut line = at.line;
    let mut elements = at.elements;
    // A cursor after an element resumes between elements; otherwise start from the top.
    let mut state = if at.elements > 0 { State::AfterElement } else { State::Start };
    if state == State::Start && at.offset != 0 {
        return Err(
            ConnectorError::Seek(format!("`{}`: a JSON array position needs an element count", input.path())).into()
        );
    }
    start_at(input, at)?;
    let decode = |input: &Input, line: u64, reason: String| {
        Stop::Failed(ConnectorError::Decode { path: input.path().to_string(), line, reason })
    };
    let mut scan = Scan::default();
    loop {
        // White space between tokens.
        let data = input.data();
        let mut i = 0;
        while i < data.len() && data[i].is_ascii_whitespace() {
            if data[i] == b'\n' {
                line += 1;
            }
            i += 1;
        }
        input.consume(i);
        if input.data().is_empty() {
            if input.fill()? {
                continue;
            }
            return match state {
                State::End => Ok(()),
                State::Start => {
                    Err(decode(input, line, "expected `[` (a JSON array of objects), found the end of the file".into()))
                }
                _ => Err(decode(input, line, "the file ends inside the array: expected `,` or `]`".into())),
            };
        }
        let b = input.data()[0];
        match state {
            State::Start if b == b'[' => {
                input.consume(1);
                state = State::First;
            }
            State::Start => {
                return Err(decode(input, line, format!("expected `[` (a JSON array of objects), found {}", shown(b))));
            }
            State::First | State::AfterElement if b == b']' => {
                input.consume(1);
                state = State::End;
            }
            State::AfterElement if b == b',' => {
                input.consume(1);
                state = State::Element;
            }
            State::AfterElement => {
                return Err(decode(
                    input,
                    line,
                    format!("expected `,` or `]` after an array element, found {}", shown(b)),
                ));
            }
            State::End => {
                return Err(decode(input, line, format!("unexpected {} after the end of the array", shown(b))));
            }
            State::Element if b == b']' => {
                return Err(decode(input, line, "expected an array element after `,`, found `]`".into()));
            }
            State::First | State::Element if b == b',' => {
                return Err(decode(input, line, "expected an array element, found `,`".into()));
            }
            State::First | State::Element => {
                scan.reset();
                let len = loop {
                    match scan.run(input.data(), input.eof()) {
                        Ok(Some(len)) => break Some(len),
                        Ok(None) if input.data().len() > input.max_record() => {
                            let start_line = line;
                            let raw = input.raw_prefix();
                            let size = skip_element(input, &mut scan, &mut line)
                                .map_err(|(l, reason)| decode(input, l, reason))?;
                            elements += 1;
                            let pos = Position { unit, seq: start_line };
                            let end = Cursor { unit, offset: input.offset(), line, elements };
                            out.bad(pos, &raw, too_large("array element", size, input.max_record()), end)?;
                            state = State::AfterElement;
                            break None;
                        }
                        Ok(None) => {
                            if !input.fill()? {
                                return Err(decode(
                                    input,
                                    line,
                                    "the file ends inside an array element that starts on this line".into(),
                                ));
                            }
                        }
                        Err((at, reason)) => {
                            let l = line + newlines(&input.data()[..at]);
                            return Err(decode(input, l, reason));
                        }
                    }
                };
                let Some(len) = len else { continue };
                let text = &input.data()[..len];
                let start_line = line;
                line += newlines(text);
                elements += 1;
                let pos = Position { unit, seq: start_line };
                let end = Cursor { unit, offset: input.offset() + len as u64, line, elements };
                if len > input.max_record() {
                    // Whole in the buffer, but over the limit all the same.
                    let reason = too_large("array element", len as u64, input.max_record());
                    out.bad(pos, &text[..len.min(super::input::RAW_PREFIX)], reason, end)?;
                    input.consume(len);
                    state = State::AfterElement;
                    continue;
                }
                match parse_object(text) {
                    Ok(record) => out.record(record, pos, end)?,
                    Err(e) => out.bad(pos, text, reason(text, &e), end)?,
                }
                input.consume(len);
                state = State::AfterElement;
            }
        }
    }
}

fn newlines(text: &[u8]) -> u64 {
    memchr_iter(b'\n', text).count() as u64
}

fn shown(b: u8) -> String {
    if b.is_ascii_graphic() { format!("`{}`", b as char) } else { format!("byte 0x{b:02x}") }
}

fn reason(text: &[u8], e: &serde_json::Error) -> String {
    if is_depth_error(e) {
        return too_deep("array element");
    }
    match serde_json::from_slice::<serde_json::Value>(text) {
        Ok(v) => {
            let kind = match v {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::Object(_) => "an object",
            };
            format!("the array element is {kind}, not a JSON object")
        }
        Err(_) if e.line() > 1 => {
            format!("the array element is not valid JSON: {} (its line {})", without_position(e), e.line())
        }
        Err(_) => format!("the array element is not valid JSON: {}", without_position(e)),
    }
}

/// Reads on to the end of an element over the size limit, consuming what the scanner has
/// passed so the buffer never holds more than a refill beyond it. Returns the element's
/// size; `line` moves past its line breaks. An error is a broken structure (or the end of
/// the file), with its line.
fn skip_element(input: &mut Input, scan: &mut Scan, line: &mut u64) -> Result<u64, (u64, String)> {
    let mut size = 0u64;
    let io = |e: ConnectorError, line: u64| (line, e.to_string());
    loop {
        let n = scan.pos;
        *line += newlines(&input.data()[..n]);
        size += n as u64;
        input.consume(n);
        scan.pos = 0;
        if !input.fill().map_err(|e| io(e, *line))? && input.data().is_empty() {
            return Err((*line, "the file ends inside an array element".into()));
        }
        match scan.run(input.data(), input.eof()) {
            Ok(Some(len)) => {
                *line += newlines(&input.data()[..len]);
                input.consume(len);
                return Ok(size + len as u64);
            }
            Ok(None) => {
                if input.eof() {
                    return Err((*line, "the file ends inside an array element".into()));
                }
            }
            Err((at, reason)) => return Err((*line + newlines(&input.data()[..at]), reason)),
        }
    }
}

/// Finds where one array element ends. Resumable: when the data runs out it remembers how
/// far it got, and continues there once the buffer holds more (the element's start stays
/// at the front of the data, so offsets stay valid).
#[derive(Default)]
struct Scan {
    /// The first byte has been looked at.
    started: bool,
    /// The element is a bare scalar (its end is the next `,`, `]` or white space).
    scalar: bool,
    pos: usize,
    /// Open brackets, innermost last.
    stack: Vec<u8>,
    in_string: bool,
}

impl Scan {
    fn reset(&mut self) {
        self.started = false;
        self.scalar = false;
        self.pos = 0;
        self.stack.clear();
        self.in_string = false;
    }

    /// `Ok(Some(len))` when the element is `data[..len]`, `Ok(None)` when more data is
    /// needed, `Err((offset, reason))` when the structure is broken.
    fn run(&mut self, data: &[u8], eof: bool) -> Result<Option<usize>, (usize, String)> {
        if self.scalar {
            // Scalars are short or refused anyway: scanned again from their start.
            let end = scalar_end(data, eof);
            self.pos = if end.is_none() { data.len() } else { 0 };
            return Ok(end);
        }
        if !self.started {
            self.started = true;
            match data[0] {
                b'{' | b'[' => {}
                b'"' => {
                    self.in_string = true;
                    self.pos = 1;
                }
                _ => {
                    self.scalar = true;
                    return self.run(data, eof);
                }
            }
        }
        let mut i = self.pos;
        loop {
            if self.in_string {
                match memchr2(b'"', b'\\', &data[i..]) {
                    None => {
                        self.pos = data.len();
                        return Ok(None);
                    }
                    Some(j) if data[i + j] == b'\\' => {
                        if i + j + 1 >= data.len() {
                            // Keep the backslash: its escaped byte is not read yet.
                            self.pos = i + j;
                            return Ok(None);
                        }
                        i += j + 2;
                    }
                    Some(j) => {
                        i += j + 1;
                        self.in_string = false;
                        if self.stack.is_empty() {
                            return Ok(Some(i));
                        }
                    }
                }
                continue;
            }
            let Some(&b) = data.get(i) else {
                self.pos = i;
                return Ok(None);
            };
            i += 1;
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.stack.push(b),
                b'}' | b']' => {
                    let open = if b == b'}' { b'{' } else { b'[' };
                    match self.stack.pop() {
                        Some(o) if o == open => {
                            if self.stack.is_empty() {
                                return Ok(Some(i));
                            }
                        }
                        Some(o) => {
                            let want = if o == b'{' { '}' } else { ']' };
                            return Err((
                                i - 1,
                                format!("expected `{want}` to close a `{}`, found `{}`", o as char, b as char),
                            ));
                        }
                        None => unreachable!("an element ends when its brackets balance"),
                    }
                }
                _ => {}
            }
        }
    }
}

/// The end of a bare scalar element (`12`, `true`, `nul`): the next `,`, `]` or white space.
fn scalar_end(data: &[u8], eof: bool) -> Option<usize> {
    match data.iter().position(|&b| b == b',' || b == b']' || b.is_ascii_whitespace()) {
        Some(i) => Some(i),
        None if eof => Some(data.len()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::source::testing::read_all;
    use super::*;
    use dagg_model::spec::connector::FileFormat;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn an_element_over_the_size_limit_is_a_bad_input_and_reading_goes_on() {
        use super::super::source::testing::read_all_limited;
        let long = format!("{{\"s\": \"{}\\\"]}}\",\n \"t\": [{}]}}", "x".repeat(3000), "1,".repeat(1000) + "1");
        let (_d, p) = write(&format!("[\n{{\"a\": 1}},\n{long},\n{{\"a\": 2}}, \"{}\"\n]\n", "z".repeat(5000)));
        for buf in [16, 64, 4096, 1 << 20] {
            let c = read_all_limited(&p, FileFormat::Json, false, buf, 1000);
            assert_eq!(c.error, None, "buffer {buf}");
            let got: Vec<(u64, String)> = c.records.iter().map(|r| (r.0.seq, serde_json::to_string(&r.1).unwrap())).collect();
            assert_eq!(got, [(2, r#"{"a":1}"#.to_string()), (5, r#"{"a":2}"#.to_string())], "buffer {buf}");
            let bad: Vec<u64> = c.bad.iter().map(|b| b.0.position.seq).collect();
            assert_eq!(bad, [3, 5], "buffer {buf}");
            assert!(c.bad[0].0.reason.contains(&format!("the array element is {} bytes, over the limit of 1000", long.len())), "{}", c.bad[0].0.reason);
            assert!(c.bad[1].0.reason.contains("5002 bytes"), "{}", c.bad[1].0.reason);
            assert_eq!(c.bad[1].1.elements, 4);
        }
    }

    #[test]
    fn an_element_nested_past_the_depth_limit_is_a_bad_input() {
        let max = dagg_model::value::MAX_DEPTH;
        let nested = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
        let (_d, p) = write(&format!("[{},\n{},\n{},\n{{}}]", nested(max - 1), nested(max), nested(50_000)));
        let c = read_all(&p, FileFormat::Json, false, 1 << 20, Cursor::start(0));
        assert_eq!(c.error, None);
        assert_eq!(c.records.iter().map(|r| r.0.seq).collect::<Vec<_>>(), [1, 4]);
        assert_eq!(c.bad.iter().map(|b| b.0.position.seq).collect::<Vec<_>>(), [2, 3]);
        for b in &c.bad {
            assert!(b.0.reason.contains("nested 128 levels deep or more"), "{}", b.0.reason);
        }
    }

    #[test]
    fn elements_lines_and_non_objects() {
        let (_d, p) = write(
            "\u{feff}[\n  {\"a\": 1, \"s\": \"x]}\\\"{\"},\n  42,\n  {\"b\": [1, {\"c\": null}]}, \"str\", [1],\n  {\"bad\": tru},\n  {\n   \"m\": 2.5\n  }\n]\n",
        );
        for buf in [16, 32, 1 << 20] {
            let c = read_all(&p, FileFormat::Json, false, buf, Cursor::start(0));
            assert_eq!(c.error, None, "buffer {buf}");
            let got: Vec<(u64, String)> =
                c.records.iter().map(|r| (r.0.seq, serde_json::to_string(&r.1).unwrap())).collect();
            assert_eq!(
                got,
                [
                    (2, r#"{"a":1,"s":"x]}\"{"}"#.to_string()),
                    (4, r#"{"b":[1,{"c":null}]}"#.to_string()),
                    (6, r#"{"m":2.5}"#.to_string()),
                ]
            );
            let bad: Vec<(u64, &str)> = c.bad.iter().map(|b| (b.0.position.seq, b.0.raw.as_str())).collect();
            assert_eq!(bad, [(3, "42"), (4, "\"str\""), (4, "[1]"), (5, "{\"bad\": tru}")]);
            assert!(c.bad[0].0.reason.contains("a number, not a JSON object"), "{}", c.bad[0].0.reason);
            assert!(c.bad[3].0.reason.contains("not valid JSON"), "{}", c.bad[3].0.reason);
        }
    }

    #[test]
    fn broken_structure_is_an_error_after_the_records_before_it() {
        let (_d, p) = write("[{\"a\":1},\n{\"a\":2}\n{\"a\":3}]");
        let c = read_all(&p, FileFormat::Json, false, 16, Cursor::start(0));
        assert_eq!(c.records.len(), 2);
        let e = c.error.unwrap();
        assert!(e.contains("a.json") && e.contains("line 3") && e.contains("expected `,` or `]`"), "{e}");

        let (_d, p) = write("[{\"a\":1},\n{\"a\":[2}]");
        let e = read_all(&p, FileFormat::Json, false, 16, Cursor::start(0)).error.unwrap();
        assert!(e.contains("line 2") && e.contains("expected `]`"), "{e}");

        let (_d, p) = write("[{\"a\":1},\n{\"a\":\"2}]\n");
        let e = read_all(&p, FileFormat::Json, false, 16, Cursor::start(0)).error.unwrap();
        assert!(e.contains("line 2") && e.contains("ends inside an array element"), "{e}");

        for (text, want) in [
            ("", "expected `[`"),
            ("[,{}]", "found `,`"),
            ("{\"a\":1}", "expected `[`"),
            ("[{}", "ends inside the array"),
            ("[{},]", "after `,`"),
            ("[] x", "after the end"),
        ] {
            let (_d, p) = write(text);
            let e = read_all(&p, FileFormat::Json, false, 16, Cursor::start(0)).error.unwrap();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let (_d, p) = write(" [ ] ");
        let c = read_all(&p, FileFormat::Json, false, 16, Cursor::start(0));
        assert_eq!((c.records.len(), c.error), (0, None));
    }

    #[test]
    fn a_large_array_streams_through_a_small_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.json");
        let mut text = String::from("[\n");
        for i in 0..20_000 {
            if i > 0 {
                text.push_str(",\n");
            }
            text.push_str(&format!("{{\"i\":{i},\"name\":\"item {i}\",\"tags\":[\"a\",\"b\"]}}"));
        }
        text.push_str("\n]\n");
        std::fs::write(&p, &text).unwrap();
        // The reader's buffer never grows past its size when elements fit in it.
        let mut input = Input::open(&p, false, 256).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let mut out = Emitter::new(tx, 100);
        let t = std::thread::spawn(move || {
            read(&mut input, Cursor::start(0), &mut out).ok();
            input.capacity()
        });
        let mut n = 0;
        while let Some(Ok(chunk)) = rx.blocking_recv() {
            n += chunk.len();
        }
        assert_eq!(t.join().unwrap(), 256);
        assert_eq!(n, 19_900, "the last partial chunk is sent by the caller");
    }

    #[test]
    fn resume_after_an_element() {
        let (_d, p) = write("[{\"i\":1},{\"i\":2},\n{\"i\":3},\n{\"i\":4}]");
        let all = read_all(&p, FileFormat::Json, false, 16, Cursor::start(0));
        let after2 = all.records[1].2;
        assert_eq!((after2.elements, after2.line), (2, 1));
        let rest = read_all(&p, FileFormat::Json, false, 16, after2);
        let got: Vec<(u64, String)> =
            rest.records.iter().map(|r| (r.0.seq, serde_json::to_string(&r.1).unwrap())).collect();
        assert_eq!(got, [(2, r#"{"i":3}"#.to_string()), (3, r#"{"i":4}"#.to_string())]);
    }
}
