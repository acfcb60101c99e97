//! Reading and printing dates: `date_format`, the `date` validation and window time fields.

use std::fmt::Write as _;

use chrono::format::{Item, Parsed};
use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat, TimeZone};
use dagg_model::Value;
use dagg_model::spec::transform::DateFormat;

/// A strict `YYYY-MM-DD` calendar date.
pub fn parse_ymd(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, c| c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32))
    };
    NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)
}

/// An RFC 3339 date-time, or a `YYYY-MM-DD` date (midnight UTC).
pub fn parse_default(s: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt);
    }
    let d = parse_ymd(s)?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().fixed_offset())
}

/// Parses `s` with strftime items: with an offset it is kept; a date and time without one is
/// UTC; a date alone is midnight UTC.
pub fn parse_with(s: &str, items: &[Item<'static>]) -> Option<DateTime<FixedOffset>> {
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, s, items.iter()).ok()?;
    if let Ok(dt) = parsed.to_datetime() {
        return Some(dt);
    }
    let utc = FixedOffset::east_opt(0).expect("zero offset");
    if let Ok(naive) = parsed.to_naive_datetime_with_offset(0) {
        return Some(utc.from_utc_datetime(&naive));
    }
    let d = parsed.to_naive_date().ok()?;
    Some(utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?))
}

/// `date_format` on one value.
pub fn reformat(value: &Value, spec: &DateFormat) -> Result<String, String> {
    let Value::String(s) = value else {
        return Err(format!("expected a date string, found {}", value.type_name()));
    };
    let dt = match &spec.input_format {
        Some(f) => parse_with(s, &f.items)
            .ok_or_else(|| format!("`{s}` does not match the input format `{}`", f.text))?,
        None => parse_default(s).ok_or_else(|| format!("`{s}` is not an RFC 3339 date-time or a YYYY-MM-DD date"))?,
    };
    match &spec.timezone {
        Some(tz) => print(&dt.with_timezone(tz), spec),
        None => print(&dt, spec),
    }
}

fn print<Tz: TimeZone>(dt: &DateTime<Tz>, spec: &DateFormat) -> Result<String, String>
where
    Tz::Offset: std::fmt::Display,
{
    let Some(f) = &spec.output_format else {
        return Ok(dt.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    };
    let mut out = String::with_capacity(32);
    // Formatting fails (rather than panics) when an item needs what the value lacks.
    write!(out, "{}", dt.format_with_items(f.items.iter()))
        .map_err(|_| format!("the value cannot be printed with `{}`", f.text))?;
    Ok(out)
}

/// A window time: RFC 3339 / `YYYY-MM-DD` text, or seconds since the Unix epoch. Whole
/// seconds, rounded down.
pub fn event_seconds(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => parse_default(s).map(|dt| dt.timestamp()),
        Value::Int(i) => Some(*i),
        Value::Float(f) if f.is_finite() && f.abs() < 1e15 => Some(f.floor() as i64),
        _ => None,
    }
}

/// RFC 3339 UTC with whole seconds (`2025-01-15T10:00:00Z`).
pub fn rfc3339_seconds(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagg_model::spec::transform::Strftime;

    fn spec(input: Option<&str>, output: Option<&str>, tz: Option<&str>) -> DateFormat {
        DateFormat {
            input_format: input.map(|s| Strftime::parse(s).unwrap()),
            output_format: output.map(|s| Strftime::parse(s).unwrap()),
            timezone: tz.map(|s| s.parse().unwrap()),
        }
    }

    fn run(v: &str, s: &DateFormat) -> Result<String, String> {
        reformat(&Value::from(v), s)
    }

    #[test]
    fn keeps_its_own_offset_without_a_timezone() {
        let s = spec(None, Some("%Y-%m-%d %H:%M %z"), None);
        assert_eq!(run("2025-01-15T10:30:00+02:00", &s).unwrap(), "2025-01-15 10:30 +0200");
        assert_eq!(run("2025-01-15", &s).unwrap(), "2025-01-15 00:00 +0000");
    }

    #[test]
    fn converts_to_a_timezone() {
        let s = spec(None, Some("%d/%m/%Y %H:%M %Z"), Some("Europe/Paris"));
        assert_eq!(run("2025-07-01T22:30:00Z", &s).unwrap(), "02/07/2025 00:30 CEST");
        let s = spec(None, None, Some("Asia/Kolkata"));
        assert_eq!(run("2025-01-15T10:30:00Z", &s).unwrap(), "2025-01-15T16:00:00+05:30");
    }

    #[test]
    fn input_formats() {
        let s = spec(Some("%d/%m/%Y"), Some("%Y-%m-%d"), None);
        assert_eq!(run("15/01/2025", &s).unwrap(), "2025-01-15");
        assert!(run("2025-01-15", &s).unwrap_err().contains("does not match"));
        let s = spec(Some("%Y-%m-%d %H:%M"), None, None);
        assert_eq!(run("2025-01-15 08:05", &s).unwrap(), "2025-01-15T08:05:00Z");
        let s = spec(Some("%Y-%m-%dT%H:%M:%S%z"), Some("%s"), None);
        assert_eq!(run("1970-01-01T01:00:00+0100", &s).unwrap(), "0");
    }

    #[test]
    fn bad_values() {
        let s = spec(None, Some("%Y"), None);
        assert!(run("yesterday", &s).is_err());
        assert!(run("2025-02-30", &s).is_err());
        assert!(run("2025-1-5", &s).is_err());
        assert!(reformat(&Value::Int(5), &s).unwrap_err().contains("integer"));
    }

    #[test]
    fn strict_dates() {
        assert!(parse_ymd("2024-02-29").is_some());
        assert!(parse_ymd("2023-02-29").is_none());
        assert!(parse_ymd("2024-2-29").is_none());
        assert!(parse_ymd("2024-02-2x").is_none());
        assert_eq!(event_seconds(&Value::from("1970-01-01T00:01:00Z")), Some(60));
        assert_eq!(event_seconds(&Value::Float(59.9)), Some(59));
        assert_eq!(event_seconds(&Value::Bool(true)), None);
        assert_eq!(rfc3339_seconds(3600), "1970-01-01T01:00:00Z");
    }
}
