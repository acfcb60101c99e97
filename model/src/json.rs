//! JSON text of records without serde in between: [`write_map`]/[`write_value`] write compact
//! JSON straight into a byte buffer, [`parse_object`] reads the common case of a JSON Lines
//! record (and leaves anything else to the full parsers). Both are on the hot path of the
//! file connector's JSON Lines reader and writer.
//!
//! The bytes written are exactly those of `serde_json::to_writer` on the same value (the [`Serialize`]
//! impls in [`crate::value`]): keys in the map's order, no white space, integers in decimal,
//! finite floats in serde_json's shortest round-trip form (its own formatter, so `12.0` keeps
//! its `.0` and `1e300` its exponent form), NaN and infinities as `null`, strings escaped as
//! serde_json escapes them (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control bytes as
//! `\u00xx` in lower-case hex; nothing else, `/` and non-ASCII included, is escaped).
//!
//! Both are faster than going through serde because they skip its state machines, and scan
//! strings eight bytes at a time for the bytes that end a plain run (most strings have none
//! but their closing quote, and are copied in one go).
//!
//! [`Serialize`]: serde::Serialize

use serde_json::ser::{CompactFormatter, Formatter};

use crate::value::{Map, Str, Value};

/// Appends the compact JSON text of `v`.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => write_i64(out, *i),
        Value::Float(f) => write_f64(out, *f),
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push(b'[');
            let mut first = true;
            for v in a {
                if !first {
                    out.push(b',');
                }
                first = false;
                write_value(out, v);
            }
            out.push(b']');
        }
        Value::Object(m) => write_map(out, m),
    }
}

/// Appends the compact JSON text of an object (a record).
pub fn write_map(out: &mut Vec<u8>, m: &Map) {
    out.push(b'{');
    let mut first = true;
    for (k, v) in m.iter() {
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, k);
        out.push(b':');
        write_value(out, v);
    }
    out.push(b'}');
}

#[inline]
fn write_i64(out: &mut Vec<u8>, i: i64) {
    // serde_json's own formatter (itoa): the same digits, written without serde in between.
    let _ = CompactFormatter.write_i64(out, i);
}

#[inline]
fn write_f64(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        // serde_json's own float formatter, so the text is byte for byte what it writes.
        let _ = CompactFormatter.write_f64(out, f);
    } else {
        out.extend_from_slice(b"null");
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The eight bytes at `b[i..]` as a little-endian word (byte `i` lowest).
#[inline(always)]
fn word(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("eight bytes"))
}

/// For each byte of `w` that ends a plain run of string text (below 0x20, `"` or `\`), its
/// top bit. Exact for the lowest such byte (a borrow only spreads upwards from a byte that
/// is one), so `trailing_zeros() / 8` is the index of the first; bytes above may be flagged
/// wrongly, which no caller relies on.
#[inline(always)]
fn stop_mask(w: u64) -> u64 {
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * b'"' as u64);
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * b'\\' as u64);
    let backslash = b.wrapping_sub(ONES) & !b;
    (control | quote | backslash) & HIGH
}

/// Bytes that end a plain run of string text, for the byte-wise tails.
static STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The index of the first byte of `b` that must be escaped, or `b.len()`.
#[inline]
fn first_escape(b: &[u8]) -> usize {
    let n = b.len();
    if n < 8 {
        return b.iter().position(|&c| STOP[c as usize]).unwrap_or(n);
    }
    let mut i = 0;
    while i + 8 <= n {
        let m = stop_mask(word(b, i));
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    if i < n {
        // The last eight bytes, without those already seen.
        let start = n - 8;
        let m = stop_mask(word(b, start)) & (!0u64 << ((i - start) * 8));
        if m != 0 {
            return start + (m.trailing_zeros() / 8) as usize;
        }
    }
    n
}

/// Appends `s` as a JSON string, quoted and escaped.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = b.len();
    let at = first_escape(b);
    if at < n {
        return write_escaped_str(out, b, at);
    }
    out.reserve(n + 2);
    // Safety: `reserve` made room for the `n + 2` bytes written before `set_len`.
    unsafe {
        let len = out.len();
        let p = out.as_mut_ptr().add(len);
        p.write(b'"');
        std::ptr::copy_nonoverlapping(b.as_ptr(), p.add(1), n);
        p.add(n + 1).write(b'"');
        out.set_len(len + n + 2);
    }
}

/// A string with something to escape, the first at `at`.
#[cold]
fn write_escaped_str(out: &mut Vec<u8>, b: &[u8], mut at: usize) {
    out.reserve(b.len() + 8);
    out.push(b'"');
    let mut run = 0;
    while at < b.len() {
        out.extend_from_slice(&b[run..at]);
        write_escape(out, b[at]);
        run = at + 1;
        at = run + first_escape(&b[run..]);
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

#[cold]
fn write_escape(out: &mut Vec<u8>, b: u8) {
    static HEX: [u8; 16] = *b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0C => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xF) as usize]]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// Parses one JSON object, for the common case only: `None` means "not handled here", and
/// the caller then parses the text with its full parser, which gives the value or the error.
///
/// Handled: valid UTF-8, objects, arrays, strings (with any escape), `true`/`false`/`null`,
/// integers of up to 18 digits, and floats that are finite and not zero. Everything else
/// (integers that might not fit an i64, `-0`, zeros and infinities written as floats, very
/// long numbers, nesting deeper than 64, any syntax error) is left to the full parser, so the
/// value given here is always the one the full parser (sonic-rs, then serde_json) gives:
/// integers as `Int`, other numbers as correctly rounded `Float`s, a repeated key keeping its
/// first place and its last value.
pub fn parse_object(text: &[u8]) -> Option<Map> {
    let mut p = Parser { b: text, i: 0, depth: 0 };
    p.ws();
    if p.next()? != b'{' {
        return None;
    }
    let m = p.object()?;
    p.ws();
    (p.i == text.len()).then_some(m)
}

/// Nesting deeper than this is left to the full parser.
const MAX_DEPTH: u32 = 64;

struct Parser<'a> {
    /// Not checked as UTF-8: outside strings only ASCII tokens are accepted, and every
    /// string is checked when it holds a byte above 0x7F.
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl<'a> Parser<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = self.b.get(self.i).copied()?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// After `{`.
    fn object(&mut self) -> Option<Map> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        // As `Map`'s serde visitor: room for a few more fields than a typical record has.
        let mut out = Map::with_capacity(12);
        let mut seen: u64 = 0;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            self.depth -= 1;
            return Some(out);
        }
        loop {
            if self.next()? != b'"' {
                return None;
            }
            let k = self.string()?;
            self.ws();
            if self.next()? != b':' {
                return None;
            }
            self.ws();
            let v = self.value()?;
            // The same duplicate rule and filter as the serde visitor.
            let bit = 1u64 << (crate::value::key_hash(k.as_bytes()) & 63);
            if seen & bit == 0 {
                seen |= bit;
                out.push_unchecked(k, v);
            } else {
                out.insert(k, v);
            }
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b'}' => break,
                _ => return None,
            }
        }
        self.depth -= 1;
        Some(out)
    }

    /// After `[`.
    fn array(&mut self) -> Option<Vec<Value>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        let mut out = Vec::new();
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            self.depth -= 1;
            return Some(out);
        }
        loop {
            out.push(self.value()?);
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => break,
                _ => return None,
            }
        }
        self.depth -= 1;
        Some(out)
    }

    fn value(&mut self) -> Option<Value> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.string().map(Value::String)
            }
            b'{' => {
                self.i += 1;
                self.object().map(Value::Object)
            }
            b'[' => {
                self.i += 1;
                self.array().map(Value::Array)
            }
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'n' => self.literal(b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    #[inline]
    fn literal(&mut self, word: &[u8], v: Value) -> Option<Value> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Some(v)
        } else {
            None
        }
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.i;
        let neg = self.peek() == Some(b'-');
        if neg {
            self.i += 1;
        }
        let digits = self.i;
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let int_end = self.i;
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.next()?, b'0'..=b'9') {
                return None;
            }
            self.digits();
            float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.next()?, b'0'..=b'9') {
                return None;
            }
            self.digits();
            float = true;
        }
        if !float {
            let n = int_end - digits;
            // Longer ones may not fit an i64; `-0` is the full parser's to decide.
            if n > 18 || (neg && self.b[digits] == b'0') {
                return None;
            }
            let mut v: i64 = 0;
            for &d in &self.b[digits..int_end] {
                v = v * 10 + (d - b'0') as i64;
            }
            return Some(Value::Int(if neg { -v } else { v }));
        }
        let text = &self.b[start..self.i];
        if text.len() > 24 {
            return None;
        }
        // Safety: ASCII digits, signs, `.` and `e` only.
        let f: f64 = unsafe { std::str::from_utf8_unchecked(text) }.parse().ok()?;
        if f == 0.0 || !f.is_finite() {
            return None;
        }
        Some(Value::Float(f))
    }

    #[inline]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// Moves `i` to the next `"`, `\`, control byte, or (with `non_ascii`) byte above 0x7F,
    /// or to the end.
    #[inline(always)]
    fn scan_string(&mut self, non_ascii: bool) {
        let b = self.b;
        let extra = if non_ascii { HIGH } else { 0 };
        let mut i = self.i;
        while i + 8 <= b.len() {
            let w = word(b, i);
            let m = stop_mask(w) | (w & extra);
            if m != 0 {
                self.i = i + (m.trailing_zeros() / 8) as usize;
                return;
            }
            i += 8;
        }
        while i < b.len() && !STOP[b[i] as usize] && (!non_ascii || b[i] < 0x80) {
            i += 1;
        }
        self.i = i;
    }

    /// After the opening `"`.
    #[inline]
    fn string(&mut self) -> Option<Str> {
        let start = self.i;
        self.scan_string(true);
        let mut c = self.peek()?;
        if c >= 0x80 {
            // Not ASCII: find the end, then check the run is UTF-8.
            self.scan_string(false);
            std::str::from_utf8(&self.b[start..self.i]).ok()?;
            c = self.peek()?;
        }
        match c {
            b'"' => {
                // Safety: ASCII, or checked above.
                let s = unsafe { std::str::from_utf8_unchecked(&self.b[start..self.i]) };
                self.i += 1;
                Some(Str::from(s))
            }
            b'\\' => self.escaped_string(start),
            _ => None,
        }
    }

    /// A string with escapes; `i` is at the first `\`.
    #[cold]
    fn escaped_string(&mut self, start: usize) -> Option<Str> {
        let mut buf: Vec<u8> = Vec::with_capacity(self.i - start + 16);
        buf.extend_from_slice(&self.b[start..self.i]);
        loop {
            // At a `\`.
            self.i += 1;
            match self.next()? {
                b'"' => buf.push(b'"'),
                b'\\' => buf.push(b'\\'),
                b'/' => buf.push(b'/'),
                b'b' => buf.push(0x08),
                b'f' => buf.push(0x0C),
                b'n' => buf.push(b'\n'),
                b'r' => buf.push(b'\r'),
                b't' => buf.push(b'\t'),
                b'u' => {
                    let u = self.hex4()?;
                    let ch = match u {
                        0xD800..=0xDBFF => {
                            if self.next()? != b'\\' || self.next()? != b'u' {
                                return None;
                            }
                            let lo = self.hex4()?;
                            if !(0xDC00..=0xDFFF).contains(&lo) {
                                return None;
                            }
                            char::from_u32(0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00))?
                        }
                        0xDC00..=0xDFFF => return None,
                        _ => char::from_u32(u)?,
                    };
                    buf.extend_from_slice(ch.encode_utf8(&mut [0u8; 4]).as_bytes());
                }
                _ => return None,
            }
            let run = self.i;
            self.scan_string(false);
            buf.extend_from_slice(&self.b[run..self.i]);
            match self.next()? {
                b'"' => break,
                b'\\' => self.i -= 1,
                _ => return None,
            }
        }
        // Escapes add whole characters; the raw runs are checked here.
        String::from_utf8(buf).ok().map(Str::from)
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.b.get(self.i..self.i + 4)?;
        let mut v = 0u32;
        for &c in h {
            v = v * 16 + (c as char).to_digit(16)?;
        }
        self.i += 4;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Str;

    fn ours(v: &Value) -> String {
        let mut out = Vec::new();
        write_value(&mut out, v);
        String::from_utf8(out).expect("valid UTF-8")
    }

    fn serde(v: &Value) -> String {
        serde_json::to_string(v).unwrap()
    }

    fn same(v: Value) {
        assert_eq!(ours(&v), serde(&v), "{v:?}");
    }

    #[test]
    fn scalars() {
        for v in [
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(0),
            Value::Int(-1),
            Value::Int(i64::MAX),
            Value::Int(i64::MIN),
            Value::Float(1.0),
            Value::Float(-0.0),
            Value::Float(0.0),
            Value::Float(1e300),
            Value::Float(-1e-300),
            Value::Float(5e-324),
            Value::Float(f64::MAX),
            Value::Float(f64::MIN_POSITIVE),
            Value::Float(0.1),
            Value::Float(29.97),
            Value::Float(1e15),
            Value::Float(1e16),
            Value::Float(1e17),
            Value::Float(123456789012345680.0),
            Value::Float(1.5e-7),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
        ] {
            same(v);
        }
        assert_eq!(ours(&Value::Float(1.0)), "1.0");
        assert_eq!(ours(&Value::Float(f64::NAN)), "null");
        assert_eq!(ours(&Value::Float(f64::INFINITY)), "null");
    }

    #[test]
    fn every_ascii_byte_and_escapes() {
        for b in 0u8..=0x7F {
            let s = format!("a{}b", b as char);
            same(Value::from(s.as_str()));
            same(Value::from((b as char).to_string()));
        }
        assert_eq!(ours(&Value::from("\u{1}\"\\/\n")), r#""\u0001\"\\/\n""#);
        assert_eq!(ours(&Value::from("\u{1f}\u{7f}")), "\"\\u001f\u{7f}\"");
    }

    #[test]
    fn escapes_at_every_offset_of_long_strings() {
        // Escapes before, inside and after the eight-byte words, and at their edges.
        for len in 0..40 {
            for at in 0..len {
                for c in ['"', '\\', '\n', '\u{0}', '\u{1f}', 'é', '😀'] {
                    let mut s: String = "x".repeat(len);
                    s.replace_range(at..at + 1, &c.to_string());
                    same(Value::from(s.as_str()));
                }
            }
        }
    }

    #[test]
    fn unicode_is_not_escaped() {
        same(Value::from("héllo wörld ✓ 😀 \u{2028}\u{2029}"));
        assert_eq!(ours(&Value::from("é😀")), "\"é😀\"");
    }

    #[test]
    fn nested_records_keep_order() {
        let v: Value = serde_json::from_str(
            r#"{"b":1,"a":[1,2.5,"x\"y",null,true,{"z":{}},[]],"c":{"k":-0.0,"big":18446744073709551615},"":""}"#,
        )
        .unwrap();
        same(v.clone());
        let mut m = Map::new();
        m.insert(Str::from("k\ney"), Value::Array(vec![]));
        m.insert("e", Value::Object(Map::new()));
        same(Value::Object(m.clone()));
        let mut out = Vec::new();
        write_map(&mut out, &m);
        assert_eq!(out, serde_json::to_vec(&m).unwrap());
    }

    fn value_strategy() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            any::<String>().prop_map(Value::from),
            "[\\x00-\\x7f]{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec((any::<String>(), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (Str::from(k), v)).collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn same_bytes_as_serde_json(v in value_strategy()) {
            proptest::prop_assert_eq!(ours(&v), serde(&v));
        }

        #[test]
        fn floats_same_as_serde_json(f in proptest::num::f64::ANY) {
            proptest::prop_assert_eq!(ours(&Value::Float(f)), serde(&Value::Float(f)));
        }
    }
    /// The fast parser's value, or `None`, beside serde_json's, both as JSON text (so that the
    /// sign of a zero and the type of a number count).
    fn parsed(text: &str) -> (Option<String>, Option<String>) {
        let fast = parse_object(text.as_bytes()).map(|m| serde_json::to_string(&m).unwrap());
        let full = serde_json::from_str::<Map>(text).ok().map(|m| serde_json::to_string(&m).unwrap());
        (fast, full)
    }

    #[test]
    fn parses_what_serde_json_parses() {
        for text in [
            r#"{"order_id": "ORD-0000000001", "quantity": 1, "price": 371.03, "ok": true, "no": false, "n": null}"#,
            r#"{}"#,
            r#"  { "a" : [ ] , "b" : { } , "c" : [1, [2, [3]], {"d": "e"}] }  "#,
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"s":"x\u00e9\n\t\"\\\/\b\f\r y","u":"\ud83d\ude00 ok","k\"ey":"v"}"#,
            r#"{"f":0.1,"g":1e-320,"h":2.2250738585072014e-308,"i":1.7976931348623157e308,"j":1E5,"k":-2.5e+3}"#,
            r#"{"big":999999999999999999,"neg":-999999999999999999,"z":0,"e":"","uni":"héllo ✓"}"#,
            r#"{"long":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","nul":"\u0000"}"#,
        ] {
            let (fast, full) = parsed(text);
            assert!(fast.is_some(), "{text}");
            assert_eq!(fast, full, "{text}");
        }
    }

    #[test]
    fn leaves_the_unusual_to_the_full_parser() {
        for text in [
            // Valid, but the full parser decides: big integers, -0, zeros and overflowing floats.
            r#"{"a":9223372036854775807}"#,
            r#"{"a":18446744073709551615}"#,
            r#"{"a":-0}"#,
            r#"{"a":-0.0}"#,
            r#"{"a":0.0}"#,
            r#"{"a":0e5}"#,
            r#"{"a":1.00000000000000000000000001}"#,
            // Invalid.
            r#"{"a":1"#,
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":+1}"#,
            r#"{"a":1e400}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{a:1}"#,
            r#"[1,2]"#,
            r#""x""#,
            r#"{"a":1} x"#,
            r#"{"a":1}{}"#,
            r#"{"a" 1}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":NaN}"#,
        ] {
            assert_eq!(parse_object(text.as_bytes()), None, "{text}");
        }
        for bad in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"a\":\"x\xff\"}",
            b"{\"\xffa\":1}",
            b"{\"a\":\"\\n\xff\"}",
            b"{\"a\":\"\xc3\"}",
            b"{\"a\":\"\xc3\\n\"}",
            b"{\"a\":\"long enough to be read in words \xed\xa0\x80 here\"}",
            b"{\"a\":1}\xff",
            b"\xff{}",
            b"{\"a\":\xc3\xa9}",
        ] {
            assert_eq!(parse_object(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse_object(deep.as_bytes()), None);
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(50), "]".repeat(50));
        assert!(parse_object(ok.as_bytes()).is_some());
    }

    proptest::proptest! {
        #[test]
        fn parses_serde_json_text_back(v in value_strategy()) {
            let m = match v { Value::Object(m) => m, other => [(Str::from("v"), other)].into_iter().collect() };
            let text = serde_json::to_string(&m).unwrap();
            let (fast, full) = parsed(&text);
            if fast.is_some() {
                proptest::prop_assert_eq!(fast, full);
            }
        }

        #[test]
        fn floats_parse_exactly(f in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL) {
            let text = format!("{{\"x\":{}}}", serde_json::to_string(&f).unwrap());
            let (fast, full) = parsed(&text);
            proptest::prop_assert_eq!(fast, full);
        }

        #[test]
        fn ints_parse_exactly(i in -999_999_999_999_999_999i64..=999_999_999_999_999_999) {
            let text = format!("{{\"x\":{i}}}");
            let (fast, full) = parsed(&text);
            proptest::prop_assert_eq!(fast, full);
        }

        #[test]
        fn strings_parse_exactly(s in any_string()) {
            let text = format!("{{\"x\":{}}}", serde_json::to_string(&s).unwrap());
            let (fast, full) = parsed(&text);
            proptest::prop_assert!(fast.is_some());
            proptest::prop_assert_eq!(fast, full);
        }
    }

    proptest::proptest! {
        /// Whatever bytes it is given, the fast parser never accepts what serde_json refuses
        /// and never disagrees with it.
        #[test]
        fn never_disagrees_on_any_bytes(parts in proptest::collection::vec(proptest::prop_oneof![
            proptest::strategy::Just(&b"{"[..]), proptest::strategy::Just(&b"}"[..]), proptest::strategy::Just(&b"["[..]),
            proptest::strategy::Just(&b"]"[..]), proptest::strategy::Just(&b"\""[..]), proptest::strategy::Just(&b":"[..]),
            proptest::strategy::Just(&b","[..]), proptest::strategy::Just(&b"\\"[..]), proptest::strategy::Just(&b"u00e9"[..]),
            proptest::strategy::Just(&b"1"[..]), proptest::strategy::Just(&b"-"[..]), proptest::strategy::Just(&b".5"[..]),
            proptest::strategy::Just(&b"e3"[..]), proptest::strategy::Just(&b"null"[..]), proptest::strategy::Just(&b" "[..]),
            proptest::strategy::Just(&b"\xc3\xa9"[..]), proptest::strategy::Just(&b"\xff"[..]), proptest::strategy::Just(&b"\xc3"[..]),
            proptest::strategy::Just(&b"abcdefgh"[..]), proptest::strategy::Just(&b"\n"[..]),
        ], 0..40)) {
            let mut text: Vec<u8> = b"{\"k\":".to_vec();
            for p in parts {
                text.extend_from_slice(p);
            }
            if let Some(m) = parse_object(&text) {
                let full: Map = serde_json::from_slice(&text).expect("serde_json accepts what the fast parser accepts");
                proptest::prop_assert_eq!(serde_json::to_string(&m).unwrap(), serde_json::to_string(&full).unwrap());
            }
        }
    }

    fn any_string() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![any::<String>(), "[\\x00-\\x7f]{0,40}"]
    }
}
