//! Python-style `repr()` of values, so that logs and metrics print numbers and dicts as vLLM does.

use std::fmt::Write as _;

/// A value as Python would hold it after argparse / `json.loads`.
#[derive(Debug, Clone, PartialEq)]
pub enum PyVal {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<PyVal>),
    Dict(Vec<(String, PyVal)>),
}

impl PyVal {
    /// Converts parsed JSON into the Python value `json.loads` would give (dict order kept as parsed).
    pub fn from_json(v: &serde_json::Value) -> PyVal {
        match v {
            serde_json::Value::Null => PyVal::None,
            serde_json::Value::Bool(b) => PyVal::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    PyVal::Int(i)
                } else {
                    PyVal::Float(n.as_f64().unwrap_or(0.0))
                }
            }
            serde_json::Value::String(s) => PyVal::Str(s.clone()),
            serde_json::Value::Array(a) => PyVal::List(a.iter().map(PyVal::from_json).collect()),
            serde_json::Value::Object(o) => PyVal::Dict(
                o.iter()
                    .map(|(k, v)| (k.clone(), PyVal::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Python's `repr()` of the value.
    pub fn repr(&self) -> String {
        match self {
            PyVal::None => "None".into(),
            PyVal::Bool(true) => "True".into(),
            PyVal::Bool(false) => "False".into(),
            PyVal::Int(i) => i.to_string(),
            PyVal::Float(f) => float_repr(*f),
            PyVal::Str(s) => str_repr(s),
            PyVal::List(items) => {
                let inner: Vec<String> = items.iter().map(PyVal::repr).collect();
                format!("[{}]", inner.join(", "))
            }
            PyVal::Dict(items) => {
                let inner: Vec<String> = items
                    .iter()
                    .map(|(k, v)| format!("{}: {}", str_repr(k), v.repr()))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
        }
    }
}

/// Python's `repr()` of a string: single quotes unless the text holds a single quote and no double quote.
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a float: shortest round-trip digits, `1.0` for integral values,
/// exponent form (`1e-05`, `1.5e+16`) outside `1e-4 <= |x| < 1e16`.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.2345e3".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp >= 0 {
            let int_len = exp + 1;
            if n <= int_len {
                format!("{}{}.0", digits, "0".repeat((int_len - n) as usize))
            } else {
                format!(
                    "{}.{}",
                    &digits[..int_len as usize],
                    &digits[int_len as usize..]
                )
            }
        } else {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

/// prometheus_client's `floatToGoString`: Python repr, but exponent form from 1e6 up for positive values.
pub fn go_float(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if x.is_nan() {
        return "NaN".into();
    }
    let s = float_repr(x);
    if x > 0.0
        && let Some(dot) = s.find('.')
        && dot > 6
    {
        let mantissa = format!("{}.{}{}", &s[..1], &s[1..dot], &s[dot + 1..]);
        let mantissa = mantissa.trim_end_matches(['0', '.']);
        return format!("{mantissa}e+0{}", dot - 1);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_python() {
        assert_eq!(float_repr(1.0), "1.0");
        assert_eq!(float_repr(0.92), "0.92");
        assert_eq!(float_repr(5.31590001173754e-05), "5.31590001173754e-05");
        assert_eq!(float_repr(1795495603.2868874), "1795495603.2868874");
        assert_eq!(float_repr(18.259999999999998), "18.259999999999998");
        assert_eq!(float_repr(1e16), "1e+16");
        assert_eq!(float_repr(0.0001), "0.0001");
        assert_eq!(float_repr(2048.0), "2048.0");
        assert_eq!(go_float(1795495603.2868874), "1.7954956032868874e+09");
        assert_eq!(go_float(4892106752.0), "4.892106752e+09");
        assert_eq!(go_float(57207.0), "57207.0");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
        assert_eq!(go_float(1048576.0), "1.048576e+06");
    }

    #[test]
    fn dicts_like_python() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"max_new_tokens":3,"temperature":0.0}"#).unwrap();
        assert_eq!(
            PyVal::from_json(&v).repr(),
            "{'max_new_tokens': 3, 'temperature': 0.0}"
        );
        assert_eq!(str_repr("it's"), "\"it's\"");
    }
}
