//! XML, streamed with quick-xml: every element named `record_element` (default `record`),
//! wherever it stands, is one record; nothing else is kept in memory.
//!
//! # The record mapping
//! - The record element's attributes and child elements are its fields, in document order.
//! - A child element with only text is a string (the text exactly, entities resolved; an
//!   empty element is `""`); `nil="true"` on an element makes it null.
//! - A child element with attributes or child elements of its own is an object, by the same
//!   rules (its own non-blank text, if any, under `_text`).
//! - A name seen twice in one element makes an array of the values, in order.
//! - Every value is a string, as in CSV: use `cast` for numbers, booleans and dates.
//!
//! The sink writes the reverse (see [`write_record`]): `<?xml …?>`, the `root_element`
//! (default `records`), one `record_element` per record with a child element per field —
//! objects nested, arrays as repeated elements, null as `nil="true"`, numbers and booleans
//! as their text. A field name that is not an XML name refuses the record.
//!
//! # Limits
//! A record whose elements nest [`MAX_DEPTH`] levels deep or more (the record element counting
//! as one), or whose text from its start tag on is longer than `limits.max_record_bytes`, is
//! a bad input: the reader stops building it there, reads on to its end tag keeping nothing,
//! and sends it to the dead letter with the reason. A single tag or text run longer than the
//! limit leaves no safe place to go on from, so it is an error naming the line; it is never
//! held whole either.
//!
//! [`MAX_DEPTH`]: dagg_model::value::MAX_DEPTH
//!
//! # Positions and checkpoints
//! A record's `seq` is the line its start tag ends on; the cursor after it is the byte
//! offset right after its end tag and the line there. A resume seeks to that offset and reads
//! on: the end tags of the elements around the records are then unmatched, which the reader
//! allows.

use std::io::{self, BufRead, Read};

use dagg_model::{Map, Position, Record, Value};
use quick_xml::Reader as XmlReader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

use dagg_model::value::MAX_DEPTH;

use super::input::{Input, too_deep, too_large};
use super::reader::{Cursor, Emitter, Stop, start_at};
use crate::ConnectorError;

/// The record element when `record_element` is not set.
pub(crate) const DEFAULT_RECORD: &str = "record";
/// The sink's root element when `root_element` is not set.
pub(crate) const DEFAULT_ROOT: &str = "records";

/// [`Input`] as a `BufRead` that counts the lines it consumes, and refuses to hand out more
/// than the record size limit within one event (so quick-xml never buffers more).
struct Lines<'a> {
    input: &'a mut Input,
    line: u64,
    /// Where the event being read started.
    event_start: u64,
}

/// The message of the error [`Lines`] returns for an event over the limit.
const EVENT_TOO_LARGE: &str = "a single tag or text run is longer than limits.max_record_bytes";

impl Read for Lines<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let data = self.fill_buf()?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Lines<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.input.offset().saturating_sub(self.event_start) > self.input.max_record() as u64 {
            return Err(io::Error::other(format!("{EVENT_TOO_LARGE} ({} bytes)", self.input.max_record())));
        }
        while self.input.data().is_empty() && !self.input.eof() {
            self.input.fill().map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(self.input.data())
    }

    fn consume(&mut self, n: usize) {
        self.line += memchr::memchr_iter(b'\n', &self.input.data()[..n]).count() as u64;
        self.input.consume(n);
    }
}

/// An element being read inside a record.
struct Frame {
    name: String,
    fields: Map,
    text: String,
    nil: bool,
}

impl Frame {
    fn open(e: &BytesStart<'_>) -> Result<Frame, String> {
        let name = e.name().as_ref().to_string();
        let mut fields = Map::new();
        let mut nil = false;
        for a in e.attributes() {
            let a = a.map_err(|e| format!("a bad attribute in <{name}>: {e}"))?;
            let key = a.key.as_ref().to_string();
            let value = a.normalized_value(XmlVersion::Implicit1_0).map_err(|e| format!("attribute `{key}` of <{name}>: {e}"))?;
            if key == "nil" || key.ends_with(":nil") {
                nil = value == "true";
                continue;
            }
            add_field(&mut fields, key, Value::from(value.as_ref()));
        }
        Ok(Frame { name, fields, text: String::new(), nil })
    }

    /// The element's value once its end tag is read.
    fn close(self) -> (String, Value) {
        let value = if self.nil {
            Value::Null
        } else if self.fields.is_empty() {
            Value::from(self.text)
        } else {
            let mut fields = self.fields;
            if !self.text.trim().is_empty() {
                add_field(&mut fields, "_text".to_string(), Value::from(self.text));
            }
            Value::Object(fields)
        };
        (self.name, value)
    }
}

/// Adds a field; a second value under the same name makes an array.
fn add_field(fields: &mut Map, key: String, value: Value) {
    match fields.get_mut(&key) {
        None => fields.push_unchecked(key, value),
        // Only a repeated element makes an array here.
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = std::mem::replace(existing, Value::Null);
            *existing = Value::Array(vec![first, value]);
        }
    }
}

/// A record being skipped: too deep or too large, read to its end keeping nothing.
struct Skip {
    /// Elements open inside it, itself included.
    open: usize,
    reason: String,
}

pub(crate) fn read(input: &mut Input, at: Cursor, record_element: &str, out: &mut Emitter) -> Result<(), Stop> {
    start_at(input, at)?;
    let path = input.path().to_string();
    let unit = at.unit;
    let limit = input.max_record() as u64;
    let event_start = input.offset();
    let mut xml = XmlReader::from_reader(Lines { input, line: at.line, event_start });
    {
        let c = xml.config_mut();
        c.check_end_names = false;
        c.allow_unmatched_ends = true;
        c.expand_empty_elements = false;
    }
    let mut buf = Vec::with_capacity(4096);
    // The open elements of the record being read (empty outside records).
    let mut stack: Vec<Frame> = Vec::new();
    let mut skip: Option<Skip> = None;
    let mut start_line = 0;
    // Where the record being read (or skipped) started.
    let mut record_start = 0u64;
    loop {
        buf.clear();
        let here = xml.get_ref().input.offset();
        xml.get_mut().event_start = here;
        let event = xml.read_event_into(&mut buf);
        let line = xml.get_ref().line;
        let fail = |reason: String| Stop::Failed(ConnectorError::Decode { path: path.clone(), line, reason });
        let event = event.map_err(|e| fail(e.to_string()))?;
        let in_record = !stack.is_empty() || skip.is_some();
        if !stack.is_empty() && xml.get_ref().input.offset() - record_start > limit {
            // Too large: stop building it, and skip to its end.
            let size = xml.get_ref().input.offset() - record_start;
            skip = Some(Skip { open: stack.len(), reason: too_large("record", size, limit as usize) });
            stack.clear();
        }
        if let Some(s) = &mut skip {
            match event {
                Event::Start(_) => s.open += 1,
                Event::End(_) => {
                    s.open -= 1;
                    if s.open == 0 {
                        let reason = std::mem::take(&mut s.reason);
                        skip = None;
                        let end = Cursor { unit, offset: xml.get_ref().input.offset(), line, elements: 0 };
                        let raw = format!("<{record_element}> (line {start_line}, not kept)");
                        out.bad(Position { unit, seq: start_line }, raw.as_bytes(), reason, end)?;
                    }
                }
                Event::Eof => {
                    return Err(fail(format!("the file ends inside <{record_element}> (the record that started on line {start_line})")));
                }
                _ => {}
            }
            continue;
        }
        match event {
            Event::Start(e) => {
                if in_record && stack.len() + 1 >= MAX_DEPTH {
                    // The record element is level 1; a level this deep makes a value nested
                    // past the limit.
                    skip = Some(Skip { open: stack.len() + 1, reason: too_deep("record") });
                    stack.clear();
                    continue;
                }
                if in_record || e.name().as_ref() == record_element {
                    if !in_record {
                        start_line = line;
                        record_start = here;
                    }
                    stack.push(Frame::open(&e).map_err(fail)?);
                }
            }
            Event::Empty(e) => {
                if in_record && stack.len() + 1 >= MAX_DEPTH {
                    skip = Some(Skip { open: stack.len(), reason: too_deep("record") });
                    stack.clear();
                    continue;
                }
                let frame = Frame::open(&e).map_err(fail)?;
                match stack.last_mut() {
                    Some(parent) => {
                        let (name, value) = frame.close();
                        add_field(&mut parent.fields, name, value);
                    }
                    None if e.name().as_ref() == record_element => {
                        let end = Cursor { unit, offset: xml.get_ref().input.offset(), line, elements: 0 };
                        out.record(frame.fields, Position { unit, seq: line }, end)?;
                    }
                    None => {}
                }
            }
            Event::End(_) => {
                let Some(frame) = stack.pop() else { continue };
                let (name, value) = frame.close();
                match stack.last_mut() {
                    Some(parent) => add_field(&mut parent.fields, name, value),
                    None => {
                        let record: Record = match value {
                            Value::Object(m) => m,
                            Value::Null => Map::new(),
                            // Only text: a record with no fields (the text is not a field).
                            _ => Map::new(),
                        };
                        let end = Cursor { unit, offset: xml.get_ref().input.offset(), line, elements: 0 };
                        out.record(record, Position { unit, seq: start_line }, end)?;
                    }
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    let resolved = match r.resolve_char_ref().map_err(|e| fail(e.to_string()))? {
                        Some(c) => c.to_string(),
                        None => {
                            let name = r.xml10_content();
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .map(str::to_string)
                                .ok_or_else(|| fail(format!("unknown entity `&{name};` (only the five predefined ones and character references are read)")))?
                        }
                    };
                    top.text.push_str(&resolved);
                }
            }
            Event::Eof => {
                if let Some(f) = stack.first() {
                    return Err(fail(format!("the file ends inside <{}> (the record that started on line {start_line})", f.name)));
                }
                return Ok(());
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
}

/// Whether `name` can be an XML element name (letters, digits, `_`, `-`, `.`; not starting
/// with a digit, `-` or `.`; no `xml` prefix in any case).
pub(crate) fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else { return false };
    (first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("xml"))
}

/// The document's start: declaration and root element.
pub(crate) fn header(root: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root}>\n")
}

/// The document's end.
pub(crate) fn trailer(root: &str) -> String {
    format!("</{root}>\n")
}

/// Appends one record as `<record>…</record>\n`, or says why it cannot be written.
pub(crate) fn write_record(buf: &mut Vec<u8>, record_element: &str, r: &Record) -> Result<(), String> {
    if let Some(k) = first_bad_name(r) {
        return Err(format!("field `{k}` is not an XML element name, so it cannot be written as XML"));
    }
    write_element(buf, record_element, r);
    buf.push(b'\n');
    Ok(())
}

/// `<name>` with a child element per field, `</name>`.
fn write_element(buf: &mut Vec<u8>, name: &str, fields: &Map) {
    buf.push(b'<');
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'>');
    for (k, v) in fields.iter() {
        write_field(buf, k, v);
    }
    buf.extend_from_slice(b"</");
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'>');
}

fn first_bad_name(m: &Map) -> Option<String> {
    for (k, v) in m.iter() {
        if !is_xml_name(k) {
            return Some(k.to_string());
        }
        let nested = match v {
            Value::Object(o) => first_bad_name(o),
            Value::Array(items) => items.iter().find_map(|i| if let Value::Object(o) = i { first_bad_name(o) } else { None }),
            _ => None,
        };
        if nested.is_some() {
            return nested;
        }
    }
    None
}

fn write_field(buf: &mut Vec<u8>, name: &str, v: &Value) {
    match v {
        Value::Array(items) => {
            for item in items {
                match item {
                    // An array inside an array has no element form: its JSON text.
                    Value::Array(_) => write_text_element(buf, name, &serde_json::to_string(item).expect("a value serializes")),
                    other => write_field(buf, name, other),
                }
            }
        }
        Value::Null => {
            buf.push(b'<');
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b" nil=\"true\"/>");
        }
        Value::Object(m) => write_element(buf, name, m),
        other => write_text_element(buf, name, &other.to_text()),
    }
}

fn write_text_element(buf: &mut Vec<u8>, name: &str, text: &str) {
    buf.push(b'<');
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'>');
    buf.extend_from_slice(quick_xml::escape::partial_escape(text).as_bytes());
    buf.extend_from_slice(b"</");
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'>');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::source::testing::read_all_with;
    use dagg_model::spec::connector::FileFormat;

    fn rec(s: &str) -> Record {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn a_record_nested_past_the_depth_limit_is_a_bad_input_and_the_next_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.xml");
        let deep = |n: usize, leaf: &str| format!("<record>{}{leaf}{}</record>\n", "<a>".repeat(n), "</a>".repeat(n));
        let max = dagg_model::value::MAX_DEPTH;
        // Record 1 makes a value 127 deep (its innermost element an object of one field);
        // record 2 one level more; record 3 is 100 000 deep; record 4 is fine.
        let text = format!(
            "<records>\n{}{}{}<record><x>1</x></record>\n</records>\n",
            deep(max - 3, "<b c=\"1\"/>"),
            deep(max - 2, "<b c=\"1\"/>"),
            deep(100_000, "x")
        );
        std::fs::write(&p, text).unwrap();
        let c = read_all_with(&p, FileFormat::Xml, "record", Cursor::start(0));
        assert_eq!(c.error, None);
        assert_eq!(c.records.iter().map(|r| r.0.seq).collect::<Vec<_>>(), [2, 5]);
        let first = Value::Object(c.records[0].1.clone());
        assert_eq!(dagg_model::value::depth(&first, usize::MAX), max - 1);
        assert_eq!(c.bad.iter().map(|b| b.0.position.seq).collect::<Vec<_>>(), [3, 4]);
        for b in &c.bad {
            assert!(b.0.reason.contains("nested 128 levels deep or more"), "{}", b.0.reason);
        }
        // The cursor after the deep record resumes at the next one.
        let rest = read_all_with(&p, FileFormat::Xml, "record", c.bad[1].1);
        assert_eq!(rest.records.iter().map(|r| r.0.seq).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn a_record_over_the_size_limit_is_a_bad_input_and_a_huge_text_run_is_never_held() {
        use crate::file::source::testing::read_all_limited;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.xml");
        let many: String = (0..500).map(|i| format!("<f{i}>{i}</f{i}>")).collect();
        std::fs::write(&p, format!("<records>\n<record><x>1</x></record>\n<record>{many}</record>\n<record><x>2</x></record>\n</records>\n")).unwrap();
        let c = read_all_limited(&p, FileFormat::Xml, false, 64, 1000);
        assert_eq!(c.error, None);
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.records[1].1.get("x"), Some(&Value::from("2")));
        assert_eq!(c.bad.len(), 1);
        assert_eq!(c.bad[0].0.position.seq, 3);
        assert!(c.bad[0].0.reason.contains("over the limit of 1000 bytes (limits.max_record_bytes)"), "{}", c.bad[0].0.reason);
        // One text run over the limit: an error with its line, read no further than the limit.
        std::fs::write(&p, format!("<records>\n<record><x>1</x></record>\n<record><t>{}</t></record>\n</records>\n", "y".repeat(100_000))).unwrap();
        let c = read_all_limited(&p, FileFormat::Xml, false, 64, 1000);
        assert_eq!(c.records.len(), 1);
        let e = c.error.expect("an error");
        assert!(e.contains("longer than limits.max_record_bytes") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn records_attributes_children_repeats_nil_and_entities_map_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.xml");
        std::fs::write(
            &p,
            "<?xml version=\"1.0\"?>\n<!-- orders -->\n<export><meta>ignored</meta>\n<orders>\n\
             <order id=\"1\"><customer>Ann &amp; Bob</customer><tag>a</tag><tag>b</tag><note/></order>\n\
             <order id=\"2\"><customer nil=\"true\"/><address city=\"Paris\"><street>1 rue A</street></address><price><![CDATA[<9.50>]]></price></order>\n\
             <order id=\"3\"/>\n</orders></export>\n",
        )
        .unwrap();
        let c = read_all_with(&p, FileFormat::Xml, "order", Cursor::start(0));
        assert_eq!(c.error, None);
        let got: Vec<String> = c.records.iter().map(|(_, r, _)| serde_json::to_string(r).unwrap()).collect();
        assert_eq!(
            got,
            [
                r#"{"id":"1","customer":"Ann & Bob","tag":["a","b"],"note":""}"#,
                r#"{"id":"2","customer":null,"address":{"city":"Paris","street":"1 rue A"},"price":"<9.50>"}"#,
                r#"{"id":"3"}"#,
            ]
        );
        assert_eq!(c.records.iter().map(|(p, _, _)| p.seq).collect::<Vec<_>>(), [5, 6, 7], "each record's line");

        // Resuming right after the first record reads exactly the rest.
        let after_first = c.records[0].2;
        let rest = read_all_with(&p, FileFormat::Xml, "order", after_first);
        assert_eq!(rest.error, None);
        assert_eq!(rest.records.len(), 2);
        assert_eq!(rest.records[0].1.get("id"), Some(&Value::from("2")));
        assert_eq!(rest.records[0].0.seq, 6);
    }

    #[test]
    fn a_broken_document_fails_with_its_line_after_the_records_before() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.xml");
        std::fs::write(&p, "<r>\n<record><a>1</a></record>\n<record><a>2</a>\n").unwrap();
        let c = read_all_with(&p, FileFormat::Xml, "record", Cursor::start(0));
        assert_eq!(c.records.len(), 1);
        let e = c.error.unwrap();
        assert!(e.contains("ends inside <record>") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn written_records_read_back() {
        let mut buf = header("rows").into_bytes();
        let records = [rec(r#"{"id":"1","name":"<A & B>","tags":["x","y"],"addr":{"city":"Lyon"},"gone":null,"n":"3"}"#), rec(r#"{"id":"2","empty":""}"#)];
        for r in &records {
            write_record(&mut buf, "row", r).unwrap();
        }
        buf.extend_from_slice(trailer("rows").as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.xml");
        std::fs::write(&p, &buf).unwrap();
        let c = read_all_with(&p, FileFormat::Xml, "row", Cursor::start(0));
        assert_eq!(c.error, None);
        let got: Vec<Record> = c.records.into_iter().map(|(_, r, _)| r).collect();
        assert_eq!(got, records);
        let err = write_record(&mut Vec::new(), "row", &rec(r#"{"a b":1}"#)).unwrap_err();
        assert!(err.contains("`a b` is not an XML element name"), "{err}");
    }
}
