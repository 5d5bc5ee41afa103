//! Window durations as people write them: `90s`, `5m`, `1h30m`, `1d`, or plain seconds.
//!
//! Accepted: a positive number of seconds (JSON `300` or `0.5`, or the string `"300"`), or
//! a string of one or more `<integer><unit>` parts with units `d`, `h`, `m`, `s`, each at
//! most once and largest first (`1d12h`, `1h30m`, `90s`). Blanks around the string are
//! ignored. Anything else, zero, a negative value, or more than the retention is an
//! `INVALID_ARGUMENT` naming the field and saying what is allowed.

use crate::error::{Error, Result};
use serde_json::Value;

/// Parses `value` (a JSON number or string) for `field`; `max_seconds` is the retention.
pub fn parse_duration(field: &str, value: &Value, max_seconds: f64) -> Result<f64> {
    let secs = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_text(s.trim()),
        _ => None,
    };
    let allowed = || {
        format!(
            "allowed: a positive number of seconds or a duration like 90s, 5m, 1h30m, 1d, at most the retention of {} ({} s)",
            format_duration(max_seconds),
            max_seconds
        )
    };
    match secs {
        None => Err(Error::invalid(
            field,
            format!("`{}` is not a duration; {}", show(value), allowed()),
        )),
        Some(s) if !s.is_finite() || s <= 0.0 => Err(Error::invalid(
            field,
            format!("`{}` is not positive; {}", show(value), allowed()),
        )),
        Some(s) if s > max_seconds => Err(Error::invalid(
            field,
            format!(
                "`{}` ({s} s) is beyond the retention; {}",
                show(value),
                allowed()
            ),
        )),
        Some(s) => Ok(s),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `"300"`, `"0.5"` or `1d2h3m4s`-style text to seconds.
fn parse_text(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
    {
        return s.parse::<f64>().ok();
    }
    let units = [('d', 86_400u64), ('h', 3_600), ('m', 60), ('s', 1)];
    let mut total: u64 = 0;
    // Index into `units` of the next unit allowed: each at most once, largest first.
    let mut next = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let i = units[next..].iter().position(|(u, _)| *u == c)? + next;
        if digits.is_empty() {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(units[i].1)?)?;
        digits.clear();
        next = i + 1;
    }
    if !digits.is_empty() {
        return None; // `1h30`: a number without a unit after a unit
    }
    Some(total as f64)
}

/// Seconds written back the way [`parse_duration`] reads them (`1h30m`, `24h`, `90s`).
pub fn format_duration(seconds: f64) -> String {
    if seconds.fract() != 0.0 || seconds <= 0.0 {
        return format!("{seconds}s");
    }
    let mut s = seconds as u64;
    let mut out = String::new();
    for (u, n) in [('h', 3_600), ('m', 60), ('s', 1)] {
        if s >= n {
            out.push_str(&format!("{}{u}", s / n));
            s %= n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms() {
        let max = 86_400.0;
        let ok = |v: Value| parse_duration("d", &v, max).unwrap();
        assert_eq!(ok(json!(300)), 300.0);
        assert_eq!(ok(json!("300")), 300.0);
        assert_eq!(ok(json!(0.5)), 0.5);
        assert_eq!(ok(json!("90s")), 90.0);
        assert_eq!(ok(json!("5m")), 300.0);
        assert_eq!(ok(json!("1h30m")), 5400.0);
        assert_eq!(ok(json!("1d")), 86_400.0);
        assert_eq!(ok(json!(" 2h ")), 7200.0);
        for bad in [
            json!(0),
            json!(-5),
            json!("-5"),
            json!("0s"),
            json!(""),
            json!("5x"),
            json!("m"),
            json!("30m1h"),
            json!("1h1h"),
            json!("1h30"),
            json!("2d"),
            json!(true),
            json!("3650d"),
            json!(315_360_000),
        ] {
            let e = parse_duration("duration_seconds", &bad, max).unwrap_err();
            assert_eq!(e.code(), "INVALID_ARGUMENT", "{bad}");
            assert_eq!(e.details()["field"], "duration_seconds");
            assert!(
                e.details()["reason"].as_str().unwrap().contains("1h30m"),
                "{e}"
            );
        }
    }

    #[test]
    fn format_round_trips() {
        for s in [90.0, 300.0, 5400.0, 86_400.0, 3661.0] {
            assert_eq!(
                parse_duration("d", &json!(format_duration(s)), 1e9).unwrap(),
                s
            );
        }
        assert_eq!(format_duration(86_400.0), "24h");
    }
}
