//! Text helpers for the field operations: case changes that only allocate when something
//! changes, and masking.
//!
//! All are Unicode-aware; ASCII input takes a byte-wise fast path.

use dagg_model::Str;

/// `title_case`: a letter at the start or after white space or `-` is upper-cased, every
/// other letter lower-cased (`"o'neil-smith"` -> `"O'neil-Smith"`). `None` when unchanged.
pub fn title_case(s: &str) -> Option<Str> {
    let starts_word = |prev: Option<char>| prev.is_none_or(|p| p.is_whitespace() || p == '-');
    if s.is_ascii() {
        // Byte-wise: every change keeps the length, so the copy is edited in place.
        let b = s.as_bytes();
        let word_start = |i: usize| i == 0 || b[i - 1].is_ascii_whitespace() || b[i - 1] == b'-' || b[i - 1] == 0x0b;
        let wrong = |i: usize| if word_start(i) { b[i].is_ascii_lowercase() } else { b[i].is_ascii_uppercase() };
        let first = (0..b.len()).find(|&i| wrong(i))?;
        let mut out = Str::from(s);
        let m = out.as_mut_str();
        for i in first..b.len() {
            if wrong(i) {
                let one = &mut m[i..i + 1];
                if word_start(i) { one.make_ascii_uppercase() } else { one.make_ascii_lowercase() }
            }
        }
        return Some(out);
    }
    let mut out = Str::with_capacity(s.len());
    let mut prev: Option<char> = None;
    for c in s.chars() {
        if starts_word(prev) {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        prev = Some(c);
    }
    (out != s).then_some(out)
}

/// `lowercase`; `None` when unchanged.
pub fn lowercase(s: &str) -> Option<Str> {
    if s.is_ascii() {
        if !s.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = Str::from(s);
        out.make_ascii_lowercase();
        return Some(out);
    }
    let lower = s.to_lowercase();
    (lower != s).then(|| Str::from(lower))
}

/// `uppercase`; `None` when unchanged.
pub fn uppercase(s: &str) -> Option<Str> {
    if s.is_ascii() {
        if !s.bytes().any(|b| b.is_ascii_lowercase()) {
            return None;
        }
        let mut out = Str::from(s);
        out.make_ascii_uppercase();
        return Some(out);
    }
    let upper = s.to_uppercase();
    (upper != s).then(|| Str::from(upper))
}

/// `trim`: white space removed at both ends; `None` when unchanged.
pub fn trim(s: &str) -> Option<Str> {
    let t = s.trim();
    (t.len() != s.len()).then(|| Str::from(t))
}

/// `mask`: every character but the last `keep_last` becomes `*`.
pub fn mask(s: &str, keep_last: usize) -> Str {
    let n = s.chars().count();
    if n <= keep_last {
        return Str::from(s);
    }
    let hidden = n - keep_last;
    let mut out = Str::with_capacity(hidden + s.len());
    out.extend(std::iter::repeat_n('*', hidden));
    let tail = s.char_indices().nth(hidden).map_or("", |(i, _)| &s[i..]);
    out.push_str(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(s: &str) -> String {
        title_case(s).map(|s| s.to_string()).unwrap_or_else(|| s.to_string())
    }

    #[test]
    fn title_case_as_specified() {
        assert_eq!(tc("usb cable"), "Usb Cable");
        assert_eq!(tc("o'neil-smith"), "O'neil-Smith");
        assert_eq!(tc("WIRELESS MOUSE"), "Wireless Mouse");
        assert_eq!(tc("mcdonald's 2nd-floor\tcafé"), "Mcdonald's 2nd-Floor\tCafé");
        assert_eq!(tc("élan éclair"), "Élan Éclair");
        assert_eq!(tc("ÉLAN"), "Élan");
        assert_eq!(tc("straße"), "Straße");
        assert_eq!(tc("ǆemal"), "Ǆemal");
        assert_eq!(tc("a\u{00a0}b"), "A\u{00a0}B", "no-break space is white space");
        assert_eq!(tc("x\u{0b}y"), "X\u{0b}Y");
        assert_eq!(tc(""), "");
        assert_eq!(tc("  two  spaces "), "  Two  Spaces ");
        assert!(title_case("Already Fine").is_none());
    }

    #[test]
    fn case_changes_are_unicode_aware() {
        assert_eq!(lowercase("JOHN.DOE@EXAMPLE.COM").unwrap(), "john.doe@example.com");
        assert_eq!(lowercase("ÀÉÎ").unwrap(), "àéî");
        assert_eq!(lowercase("ΟΔΟΣ").unwrap(), "οδος");
        assert_eq!(uppercase("straße").unwrap(), "STRASSE");
        assert!(lowercase("already").is_none());
        assert!(uppercase("ALREADY 1").is_none());
        assert!(lowercase("").is_none());
    }

    #[test]
    fn trim_unicode_white_space() {
        assert_eq!(trim("  a b \n").unwrap(), "a b");
        assert_eq!(trim("\u{3000}x\u{2003}").unwrap(), "x");
        assert!(trim("x").is_none());
        assert_eq!(trim("   ").unwrap(), "");
    }

    #[test]
    fn masking() {
        assert_eq!(mask("4111111111111111", 4), "************1111");
        assert_eq!(mask("abc", 4), "abc");
        assert_eq!(mask("héllo wörld", 3), "********rld");
        assert_eq!(mask("abc", 0), "***");
        assert_eq!(mask("", 2), "");
    }
}
