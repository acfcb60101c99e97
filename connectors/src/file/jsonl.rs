//! JSON Lines: one object per line. Blank lines are skipped; a line that is not a JSON
//! object is a bad input with its line number. A line longer than `limits.max_record_bytes`
//! is a bad input too: the reader stops buffering it at the limit and skips to its end, so
//! memory stays bounded whatever the file holds. An object nested [`MAX_DEPTH`] levels deep
//! or more is a bad input (the parsers count levels as they go).
//!
//! [`MAX_DEPTH`]: dagg_model::value::MAX_DEPTH

use dagg_model::{Map, Position};
use memchr::memchr;

use super::input::{Input, too_deep, too_large};
use super::reader::{Cursor, Emitter, Stop, start_at};

pub(crate) fn read(input: &mut Input, at: Cursor, out: &mut Emitter) -> Result<(), Stop> {
    start_at(input, at)?;
    let unit = at.unit;
    let mut line = at.line;
    // Bytes of `data()` already known to hold no newline (long lines are not rescanned).
    let mut scanned = 0;
    loop {
        let data = input.data();
        let (text, used) = match memchr(b'\n', &data[scanned..]) {
            Some(i) => (&data[..scanned + i], scanned + i + 1),
            None if input.eof() => {
                if data.is_empty() {
                    return Ok(());
                }
                (data, data.len())
            }
            None if data.len() > input.max_record() => {
                // Too long to keep: its start for the dead letter, then skip to its end.
                scanned = 0;
                let raw = input.raw_prefix();
                let (size, found) = input.skip_through(|d| memchr(b'\n', d))?;
                let size = size - u64::from(found);
                let pos = Position { unit, seq: line };
                let end = Cursor { unit, offset: input.offset(), line: line + 1, elements: 0 };
                out.bad(pos, &raw, too_large("line", size, input.max_record()), end)?;
                line += 1;
                continue;
            }
            None => {
                scanned = data.len();
                input.fill()?;
                continue;
            }
        };
        scanned = 0;
        if text.len() > input.max_record() {
            let (size, limit) = (text.len() as u64, input.max_record());
            let raw = &text[..text.len().min(super::input::RAW_PREFIX)];
            let pos = Position { unit, seq: line };
            let end = Cursor { unit, offset: input.offset() + used as u64, line: line + 1, elements: 0 };
            out.bad(pos, raw, too_large("line", size, limit), end)?;
            input.consume(used);
            line += 1;
            continue;
        }
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let pos = Position { unit, seq: line };
        let end = Cursor { unit, offset: input.offset() + used as u64, line: line + 1, elements: 0 };
        if !text.iter().all(u8::is_ascii_whitespace) {
            match parse_object(text) {
                Ok(record) => out.record(record, pos, end)?,
                Err(e) => out.bad(pos, text, reason(text, &e), end)?,
            }
        }
        input.consume(used);
        line += 1;
    }
}

/// Parses one object: with the model's own parser for plain objects (the hot path: no serde
/// in between), else with sonic-rs, and when that refuses the text, again with serde_json,
/// whose error says precisely what is wrong and where. The first leaves to the others every
/// text whose value it cannot be sure they would agree on, so the value is always theirs.
#[inline]
pub(crate) fn parse_object(text: &[u8]) -> Result<Map, serde_json::Error> {
    if let Some(m) = dagg_model::json::parse_object(text) {
        return Ok(m);
    }
    match sonic_rs::from_slice::<Map>(text) {
        Ok(m) => Ok(m),
        Err(_) => serde_json::from_slice(text),
    }
}

/// Whether a parser refused the text for its nesting (serde_json's recursion limit, or the
/// model's own count of levels).
pub(crate) fn is_depth_error(e: &serde_json::Error) -> bool {
    let m = e.to_string();
    m.starts_with("recursion limit exceeded") || m.contains(&dagg_model::value::depth_error())
}

/// Why a line is not a record, in words that say what to fix.
fn reason(text: &[u8], e: &serde_json::Error) -> String {
    if is_depth_error(e) {
        return too_deep("line");
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
            format!("the line is {kind}, not a JSON object")
        }
        Err(_) => format!("the line is not valid JSON: {}", without_position(e)),
    }
}

/// serde_json's message without its "at line 1 column N" (the line is the record's own).
pub(crate) fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => format!("{} (column {})", &text[..i], e.column()),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::super::source::testing::read_all;
    use super::*;
    use dagg_model::spec::connector::FileFormat;

    #[test]
    fn lines_blank_lines_crlf_and_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(&p, "{\"a\":1}\r\n\n   \n[1,2]\n{\"a\": 2.0, \"b\": \"x\"}\n{bad\n{\"a\":3}").unwrap();
        for buf in [16, 64, 1 << 20] {
            let c = read_all(&p, FileFormat::Jsonl, false, buf, Cursor::start(0));
            assert_eq!(c.error, None);
            let lines: Vec<u64> = c.records.iter().map(|r| r.0.seq).collect();
            assert_eq!(lines, [1, 5, 7], "buffer {buf}");
            assert_eq!(serde_json::to_string(&c.records[1].1).unwrap(), r#"{"a":2.0,"b":"x"}"#);
            assert_eq!(c.bad.len(), 2);
            assert_eq!((c.bad[0].0.position.seq, c.bad[0].0.raw.as_str()), (4, "[1,2]"));
            assert!(c.bad[0].0.reason.contains("an array, not a JSON object"), "{}", c.bad[0].0.reason);
            assert_eq!((c.bad[1].0.position.seq, c.bad[1].0.raw.as_str()), (6, "{bad"));
            assert!(c.bad[1].0.reason.starts_with("the line is not valid JSON"), "{}", c.bad[1].0.reason);
        }
    }

    /// A JSON object nested `levels` deep (the record counting as one).
    fn nested(levels: usize) -> String {
        format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels))
    }

    #[test]
    fn a_line_over_the_size_limit_is_a_bad_input_and_reading_goes_on() {
        use super::super::source::testing::read_all_limited;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let long = format!("{{\"s\":\"{}\"}}", "x".repeat(5000));
        std::fs::write(&p, format!("{{\"a\":1}}\n{long}\n{{\"a\":2}}\n{long}")).unwrap();
        for buf in [16, 64, 4096, 1 << 20] {
            let c = read_all_limited(&p, FileFormat::Jsonl, false, buf, 1000);
            assert_eq!(c.error, None, "buffer {buf}");
            let lines: Vec<u64> = c.records.iter().map(|r| r.0.seq).collect();
            assert_eq!(lines, [1, 3], "buffer {buf}");
            assert_eq!(c.bad.len(), 2, "buffer {buf}");
            for (b, line) in c.bad.iter().zip([2, 4]) {
                assert_eq!(b.0.position.seq, line);
                assert!(b.0.reason.contains("5008 bytes, over the limit of 1000 bytes (limits.max_record_bytes)"), "{}", b.0.reason);
                assert!(b.0.raw.len() <= super::super::input::RAW_PREFIX && long.starts_with(&b.0.raw), "buffer {buf}");
            }
            // The cursor after the first long line resumes at the next record.
            let rest = read_all(&p, FileFormat::Jsonl, false, buf, c.bad[0].1);
            assert_eq!(rest.records[0].0.seq, 3);
        }
    }

    #[test]
    fn a_gzip_line_over_the_limit_is_skipped_in_bounded_memory() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl.gz");
        let mut e = flate2::write::GzEncoder::new(std::fs::File::create(&p).unwrap(), flate2::Compression::fast());
        e.write_all(b"{\"a\":1}\n{\"s\":\"").unwrap();
        let chunk = vec![b'y'; 1 << 20];
        for _ in 0..64 {
            e.write_all(&chunk).unwrap();
        }
        e.write_all(b"\"}\n{\"a\":2}\n").unwrap();
        e.finish().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 10);
        let mut out = Emitter::new(tx, 7);
        let mut input = Input::open(&p, true, 4096).unwrap().with_max_record(1 << 20);
        assert!(read(&mut input, Cursor::start(0), &mut out).is_ok());
        assert!(input.capacity() <= 4 << 20, "the buffer grew to {}", input.capacity());
        drop(out);
        let _ = rx.try_recv();
    }

    #[test]
    fn a_line_nested_past_the_depth_limit_is_a_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let max = dagg_model::value::MAX_DEPTH;
        let text = [nested(max - 1), nested(max), nested(100_000), format!("{{\"a\":{}1{}}}", "[".repeat(max), "]".repeat(max))].join("\n");
        std::fs::write(&p, text).unwrap();
        let c = read_all(&p, FileFormat::Jsonl, false, 1 << 20, Cursor::start(0));
        assert_eq!(c.error, None);
        assert_eq!(c.records.iter().map(|r| r.0.seq).collect::<Vec<_>>(), [1]);
        assert_eq!(dagg_model::value::depth(&dagg_model::Value::Object(c.records[0].1.clone()), usize::MAX), max - 1);
        assert_eq!(c.bad.iter().map(|b| b.0.position.seq).collect::<Vec<_>>(), [2, 3, 4]);
        for b in &c.bad {
            assert!(b.0.reason.contains("nested 128 levels deep or more"), "{}", b.0.reason);
        }
    }

    #[test]
    fn resume_from_a_cursor_continues_with_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let text: String = (1..=100).map(|i| format!("{{\"i\":{i}}}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let all = read_all(&p, FileFormat::Jsonl, false, 32, Cursor::start(0));
        let mid = all.records[41].2;
        let rest = read_all(&p, FileFormat::Jsonl, false, 32, mid);
        assert_eq!(rest.records.len(), 58);
        assert_eq!(rest.records[0].0.seq, 43);
        assert_eq!(rest.records[0].1.get("i"), Some(&dagg_model::Value::Int(43)));
    }
}

#[cfg(test)]
mod parse_tests {
    use super::parse_object;
    use dagg_model::Map;

    fn both(text: &str) -> (Result<Map, String>, Result<Map, String>) {
        (parse_object(text.as_bytes()).map_err(|e| e.to_string()), serde_json::from_str::<Map>(text).map_err(|e| e.to_string()))
    }

    #[test]
    fn the_fast_parser_agrees_with_serde_json() {
        for text in [
            r#"{"a":1,"b":2.5,"c":"x\u00e9\n","d":[1,2.0,{"e":null}],"f":true}"#,
            r#"{"big":9223372036854775807,"bigger":18446744073709551615,"neg":-9223372036854775808}"#,
            r#"{"f":0.1,"g":1e-320,"h":2.2250738585072014e-308,"i":1.7976931348623157e308,"j":-0.0}"#,
            r#"{"dup":1,"dup":2}"#,
            r#"{"unicode":"\ud83d\ude00 ok"}"#,
        ] {
            let (fast, reference) = both(text);
            assert_eq!(fast, reference, "{text}");
        }
    }

    #[test]
    fn refusals_keep_serde_json_messages() {
        for text in [r#"{"a":1"#, r#"{"a":1e400}"#, "[1,2]", r#"{"a":"\ud800"}"#] {
            let fast = parse_object(text.as_bytes());
            let reference = serde_json::from_str::<Map>(text);
            assert_eq!(fast.is_err(), reference.is_err(), "{text}");
        }
    }

    /// The model's parser against sonic-rs alone (the parser it stands in front of), as JSON
    /// text so that the sign of a zero and the type of a number count.
    fn model_vs_sonic(text: &str) -> Option<(String, String)> {
        let fast = dagg_model::json::parse_object(text.as_bytes())?;
        let sonic = sonic_rs::from_slice::<Map>(text.as_bytes()).expect("sonic-rs parses what the model's parser parses");
        Some((serde_json::to_string(&fast).unwrap(), serde_json::to_string(&sonic).unwrap()))
    }

    #[test]
    fn the_model_parser_agrees_with_sonic_rs() {
        for text in [
            r#"{"order_id": "ORD-0000000001", "customer_id": "CUST-083810", "product_name": "mechanical keyboard", "quantity": 1, "price": 371.03, "order_date": "2025-01-08T07:08:00Z", "status": "completed", "customer_email": "user83810@example.com"}"#,
            r#"{"a":1,"b":2.5,"c":"x\u00e9\n","d":[1,2.0,{"e":null}],"f":true,"g":false}"#,
            r#"{"big":999999999999999999,"neg":-999999999999999999,"one":1E5,"two":-2.5e+3,"tiny":1e-320}"#,
            r#"{"dup":1,"dup":2,"x":{"dup":[],"dup":{}}}"#,
            r#"{"unicode":"\ud83d\ude00 ok","raw":"héllo ✓ 😀","esc":"\"\\\/\b\f\n\r\t"}"#,
            " { \"a\" : [ 1 , { } ] } ",
        ] {
            let (fast, sonic) = model_vs_sonic(text).unwrap_or_else(|| panic!("not parsed: {text}"));
            assert_eq!(fast, sonic, "{text}");
        }
        // Left to sonic-rs (which reads `-0` as 0.0 where serde_json reads -0.0).
        for text in [r#"{"a":-0}"#, r#"{"a":-0.0}"#, r#"{"a":9223372036854775807}"#, r#"{"a":1e400}"#] {
            assert!(model_vs_sonic(text).is_none(), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_model_parser_agrees_with_sonic_rs_on_floats(f in proptest::num::f64::ANY) {
            let text = format!("{{\"x\":{}}}", serde_json::to_string(&f).unwrap());
            if let Some((fast, sonic)) = model_vs_sonic(&text) {
                proptest::prop_assert_eq!(fast, sonic);
            }
        }

        #[test]
        fn the_model_parser_agrees_with_sonic_rs_on_strings(s in proptest::prelude::any::<String>(), i in proptest::prelude::any::<i64>()) {
            let text = format!("{{{}:{},\"i\":{i}}}", serde_json::to_string(&s).unwrap(), serde_json::to_string(&s).unwrap());
            if let Some((fast, sonic)) = model_vs_sonic(&text) {
                proptest::prop_assert_eq!(fast, sonic);
            }
        }

        #[test]
        fn floats_parse_exactly(f in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL) {
            let text = format!("{{\"x\":{}}}", serde_json::to_string(&f).unwrap());
            let (fast, reference) = both(&text);
            proptest::prop_assert_eq!(fast, reference);
        }
    }
}
