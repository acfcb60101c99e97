//! Replacement templates for `format` and `replace`: `$1`, `${1}`, `${name}`, and `$$` for a
//! literal `$`, resolved against the regex when the pipeline is validated.
//!
//! Group names are turned into group numbers once, and a reference to a group the regex
//! does not have is a validation error instead of a silent empty string. Unlike the regex
//! crate's own expansion, `$1a` means group 1 followed by `a` (the regex crate would look
//! for a group named `1a`): digits after `$` are always a number.

use regex::{Captures, Regex};

/// A template compiled against one regex.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    /// The template as written.
    pub text: String,
    pub parts: Vec<TemplatePart>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TemplatePart {
    Literal(String),
    /// A capture group by number (names are resolved when compiling).
    Group(usize),
}

impl Template {
    /// Compiles `text` against `regex`.
    pub fn parse(text: &str, regex: &Regex) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            lit.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (reference, consumed) = if after.starts_with('$') {
                lit.push('$');
                (None, 1)
            } else if let Some(tail) = after.strip_prefix('{') {
                let Some(end) = tail.find('}') else {
                    return Err(format!("`${{` at byte {at} is not closed with `}}`; write `$$` for a literal `$`"));
                };
                (Some(&tail[..end]), end + 2)
            } else {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                let len = if digits > 0 {
                    digits
                } else if after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                    after.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count()
                } else {
                    0
                };
                if len == 0 {
                    // A `$` that starts no reference is itself.
                    lit.push('$');
                    (None, 0)
                } else {
                    (Some(&after[..len]), len)
                }
            };
            if let Some(name) = reference {
                let group = resolve(name, regex)?;
                if !lit.is_empty() {
                    parts.push(TemplatePart::Literal(std::mem::take(&mut lit)));
                }
                parts.push(TemplatePart::Group(group));
            }
            rest = &after[consumed..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(TemplatePart::Literal(lit));
        }
        Ok(Template { text: text.to_string(), parts })
    }

    /// Appends the expansion for one match to `dst` (a group that did not take part in the
    /// match expands to nothing).
    pub fn expand(&self, caps: &Captures, dst: &mut String) {
        for part in &self.parts {
            match part {
                TemplatePart::Literal(s) => dst.push_str(s),
                TemplatePart::Group(i) => {
                    if let Some(m) = caps.get(*i) {
                        dst.push_str(m.as_str());
                    }
                }
            }
        }
    }

    /// True when the template has no group reference (a plain literal).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, TemplatePart::Literal(_)))
    }
}

fn resolve(name: &str, regex: &Regex) -> Result<usize, String> {
    if name.is_empty() {
        return Err("`${}` names no group".into());
    }
    let groups = regex.captures_len() - 1;
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return match name.parse::<usize>() {
            Ok(i) if i <= groups => Ok(i),
            _ => Err(format!("`${name}` refers to group {name}, but the regex has {groups} group(s)")),
        };
    }
    regex
        .capture_names()
        .position(|n| n == Some(name))
        .ok_or_else(|| format!("`${{{name}}}`: the regex has no group named `{name}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(re: &str, tpl: &str, input: &str) -> Result<String, String> {
        let re = Regex::new(re).unwrap();
        let t = Template::parse(tpl, &re)?;
        let caps = re.captures(input).unwrap();
        let mut s = String::new();
        t.expand(&caps, &mut s);
        Ok(s)
    }

    #[test]
    fn references() {
        assert_eq!(expand(r"(\d{3})-(\d{3})-(\d{4})", "($1) $2-$3", "123-456-7890").unwrap(), "(123) 456-7890");
        assert_eq!(expand(r"(?P<y>\d+)-(?P<m>\d+)", "${m}/${y}", "2025-01").unwrap(), "01/2025");
        assert_eq!(expand(r"(?P<y>\d+)", "$y!", "7").unwrap(), "7!");
        assert_eq!(expand(r"(\d)", "$1a ${1}b", "7").unwrap(), "7a 7b");
        assert_eq!(expand(r"(\d)", "$$1 costs $", "7").unwrap(), "$1 costs $");
        assert_eq!(expand(r"(\d)", "$0:$1", "x7").unwrap(), "7:7");
        assert_eq!(expand(r"(a)|(b)", "[$1][$2]", "b").unwrap(), "[][b]");
    }

    #[test]
    fn unknown_groups_are_errors() {
        assert!(expand(r"(\d)", "$2", "1").unwrap_err().contains("has 1 group"));
        assert!(expand(r"(\d)", "${x}", "1").unwrap_err().contains("no group named `x`"));
        assert!(expand(r"(\d)", "${1", "1").unwrap_err().contains("not closed"));
    }
}
