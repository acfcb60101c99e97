//! `field_validation`: the checks, and what a failure does to the record.
//!
//! A missing or null field fails every validation. `email_format`, `url` and `date` need a
//! string; `regex` searches a string or the text of a number or boolean; `range` takes
//! numbers only; `in_set` compares as conditions do (`1` is in `[1.0]`, `"1"` is not).

use dagg_model::spec::transform::{OnFailure, Validation, ValidationSpec};
use dagg_model::{Map, Record, Str, Value};

use crate::dates;

/// The field `flag` appends failures to.
pub const VALIDATION_ERRORS_FIELD: &str = "_validation_errors";

pub(crate) enum Verdict {
    Pass,
    /// `on_failure: drop`.
    Drop,
    /// `on_failure: reject`, with the reason.
    Reject(String),
}

pub(crate) fn apply(spec: &ValidationSpec, rec: &mut Record) -> Verdict {
    let Err(message) = check(spec, spec.field.get(rec)) else { return Verdict::Pass };
    match spec.on_failure {
        OnFailure::Reject => Verdict::Reject(message),
        OnFailure::Drop => Verdict::Drop,
        OnFailure::Flag => {
            let mut entry = Map::with_capacity(3);
            entry.push_unchecked("field", Value::from(spec.field.as_str()));
            entry.push_unchecked("validation_type", Value::from(spec.check.name()));
            entry.push_unchecked("message", Value::from(message));
            let slot = rec.entry_mut(VALIDATION_ERRORS_FIELD);
            match slot {
                Value::Array(items) => items.push(Value::Object(entry)),
                other => *other = Value::Array(vec![Value::Object(entry)]),
            }
            Verdict::Pass
        }
    }
}

/// Checks one value; the error is the message a user reads.
pub(crate) fn check(spec: &ValidationSpec, v: Option<&Value>) -> Result<(), String> {
    let name = &spec.field;
    let v = match v {
        None => return Err(format!("`{name}` is missing")),
        Some(Value::Null) => return Err(format!("`{name}` is null")),
        Some(v) => v,
    };
    let string = |what: &str| -> Result<&Str, String> {
        match v {
            Value::String(s) => Ok(s),
            other => Err(format!("`{name}` is {}, not {what}", other.type_name())),
        }
    };
    match &spec.check {
        Validation::NotNull => Ok(()),
        Validation::EmailFormat => {
            if is_email(string("an e-mail address")?) {
                Ok(())
            } else {
                Err(format!("`{name}` is not a valid e-mail address"))
            }
        }
        Validation::Url => {
            if is_http_url(string("a URL")?) {
                Ok(())
            } else {
                Err(format!("`{name}` is not an absolute http or https URL with a host"))
            }
        }
        Validation::Date => {
            let s = string("a date")?;
            if dates::parse_default(s).is_some() {
                Ok(())
            } else {
                Err(format!("`{name}` is not an RFC 3339 date-time or a YYYY-MM-DD date"))
            }
        }
        Validation::Regex(re) => {
            let ok = match v {
                Value::String(s) => re.0.is_match(s),
                Value::Int(_) | Value::Float(_) | Value::Bool(_) => re.0.is_match(&v.to_text()),
                other => return Err(format!("`{name}` is {}, not text the pattern can search", other.type_name())),
            };
            if ok { Ok(()) } else { Err(format!("`{name}` does not match the pattern `{}`", re.as_str())) }
        }
        Validation::Range { min, max } => {
            if !v.is_number() {
                return Err(format!("`{name}` is {}, not a number", v.type_name()));
            }
            let below = min.as_ref().is_some_and(|m| v.compare(m) == Some(std::cmp::Ordering::Less));
            let above = max.as_ref().is_some_and(|m| v.compare(m) == Some(std::cmp::Ordering::Greater));
            if below || above || v.as_f64().is_some_and(f64::is_nan) {
                let show = |b: &Option<Value>| b.as_ref().map_or("-".to_string(), Value::to_json);
                Err(format!("`{name}` is {v}, outside the range {} to {}", show(min), show(max)))
            } else {
                Ok(())
            }
        }
        Validation::InSet(values) => {
            if values.iter().any(|x| v.loose_eq(x)) {
                Ok(())
            } else {
                Err(format!("`{name}` is {v}, not one of the allowed values"))
            }
        }
    }
}

/// The HTML standard's "valid e-mail address"
/// (<https://html.spec.whatwg.org/multipage/input.html#valid-e-mail-address>), with at least
/// one dot in the domain.
pub fn is_email(s: &str) -> bool {
    // One pass over the bytes with a table (this runs once per record in the guide's chain).
    let b = s.as_bytes();
    let Some(at) = b.iter().position(|&c| c == b'@') else { return false };
    let (local, domain) = (&b[..at], &b[at + 1..]);
    if local.is_empty() || !local.iter().all(|&c| EMAIL_LOCAL[c as usize]) {
        return false;
    }
    let mut labels = 0;
    let mut start = 0;
    for i in 0..=domain.len() {
        if i == domain.len() || domain[i] == b'.' {
            let label = &domain[start..i];
            let ok = !label.is_empty()
                && label.len() <= 63
                && label[0].is_ascii_alphanumeric()
                && label[label.len() - 1].is_ascii_alphanumeric();
            if !ok {
                return false;
            }
            labels += 1;
            start = i + 1;
        } else if !(domain[i].is_ascii_alphanumeric() || domain[i] == b'-') {
            return false;
        }
    }
    labels >= 2
}

/// The bytes an e-mail address's local part may hold: ASCII letters, digits and
/// ``.!#$%&'*+/=?^_`{|}~-``.
static EMAIL_LOCAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric();
        c += 1;
    }
    let extra = b".!#$%&'*+/=?^_`{|}~-";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// An absolute `http` or `https` URL with a host (and, if given, a numeric port).
pub fn is_http_url(s: &str) -> bool {
    if s.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) || s.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((scheme, rest)) = s.split_once("://") else { return false };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return false;
    }
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else { return false };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return false;
        }
        match after {
            "" => (addr, None),
            p => match p.strip_prefix(':') {
                Some(port) => (addr, Some(port)),
                None => return false,
            },
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u32>().unwrap_or(u32::MAX) > 65535)
    {
        return false;
    }
    !host.is_empty()
        && host.chars().any(char::is_alphanumeric)
        && !host.contains(['<', '>', '"', '\\', '^', '`', '{', '|', '}', '/', '@'])
        && !host.split('.').any(str::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["john.doe@example.com", "a@b.co", "x+tag@mail.example.org", "o'neil@x-y.io", "1@2.3"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "", "plain", "@example.com", "a@", "a@localhost", "a@b..com", "a@-b.com", "a@b-.com", "a b@c.com",
            "a@b.com ", "a@@b.com", "a@b@c.com", "jöhn@example.com", "a@exämple.com", "a@.com", "a@com.",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
        assert!(is_email(&format!("a@{}.com", "x".repeat(63))));
        assert!(!is_email(&format!("a@{}.com", "x".repeat(64))));
    }

    /// The definition `is_email` had before its one-pass form, kept to check that form.
    fn is_email_by_splits(s: &str) -> bool {
        let Some((local, domain)) = s.split_once('@') else { return false };
        const LOCAL_EXTRA: &[u8] = b".!#$%&'*+/=?^_`{|}~-";
        if local.is_empty() || !local.bytes().all(|b| b.is_ascii_alphanumeric() || LOCAL_EXTRA.contains(&b)) {
            return false;
        }
        let mut labels = 0;
        for label in domain.split('.') {
            let b = label.as_bytes();
            let ok = !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
            if !ok {
                return false;
            }
            labels += 1;
        }
        labels >= 2
    }

    proptest::proptest! {
        #[test]
        fn emails_as_before(s in "[a-c0-9.@+'\\- é!~]{0,20}", long in 60usize..70) {
            proptest::prop_assert_eq!(is_email(&s), is_email_by_splits(&s), "{}", s);
            let t = format!("{s}@{}.{s}", "x".repeat(long));
            proptest::prop_assert_eq!(is_email(&t), is_email_by_splits(&t), "{}", t);
        }
    }

    #[test]
    fn urls() {
        for ok in [
            "http://example.com", "https://example.com/a?b=c#d", "HTTPS://Example.COM:8443/", "http://user:pw@host/x",
            "http://[::1]:8080/", "http://127.0.0.1", "https://bücher.de/",
        ] {
            assert!(is_http_url(ok), "{ok}");
        }
        for bad in [
            "", "example.com", "ftp://example.com", "http://", "http:///path", "http://exa mple.com", "https://:80/",
            "http://host:99999/", "http://host:abc/", "mailto:a@b.com", "http//example.com", "http://a..b/", "/relative",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }
}
