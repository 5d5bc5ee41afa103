//! SQLite values as JSON and back, without loss: the cell representation of a [`Row`](super::Row).
//!
//! | SQLite storage class | JSON |
//! |---|---|
//! | NULL | `null` |
//! | INTEGER | an integer number |
//! | REAL | a float number (`1.0`, never `1`, so the class survives a JSON round trip) |
//! | REAL ±infinity (JSON has none) | `{"$real": "inf"}` / `{"$real": "-inf"}` |
//! | TEXT (valid UTF-8, what Crush writes) | a string |
//! | TEXT that is not valid UTF-8 | `{"$text_b64": "..."}` |
//! | BLOB | `{"$blob_b64": "..."}` (standard base64, padded) |
//!
//! Keeping the storage class, not just the value, is what makes a restore byte-exact:
//! binding a string stores TEXT, binding bytes stores BLOB, whatever the column's type.

use rusqlite::types::{ToSqlOutput, Value as Sql, ValueRef};
use serde_json::{Map, Number, Value};

/// The key of a BLOB cell.
pub const BLOB_KEY: &str = "$blob_b64";
/// The key of a TEXT cell whose bytes are not UTF-8.
pub const TEXT_KEY: &str = "$text_b64";
/// The key of a non-finite REAL cell.
pub const REAL_KEY: &str = "$real";

fn tagged(key: &str, value: String) -> Value {
    let mut m = Map::new();
    m.insert(key.to_owned(), Value::String(value));
    Value::Object(m)
}

/// One SQLite cell as JSON.
pub fn to_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => match Number::from_f64(f) {
            Some(n) => Value::Number(n),
            // SQLite stores no NaN (it becomes NULL), so only the infinities get here.
            None => tagged(REAL_KEY, if f > 0.0 { "inf" } else { "-inf" }.to_owned()),
        },
        ValueRef::Text(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => tagged(TEXT_KEY, b64_encode(b)),
        },
        ValueRef::Blob(b) => tagged(BLOB_KEY, b64_encode(b)),
    }
}

/// A JSON cell as something to bind, borrowing strings (a 5 MB `parts` is not copied).
/// `Err` says why the value is not a cell this module wrote.
pub fn to_sql(v: &Value) -> Result<ToSqlOutput<'_>, String> {
    Ok(match v {
        Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        Value::Bool(b) => ToSqlOutput::Owned(Sql::Integer(i64::from(*b))),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ToSqlOutput::Owned(Sql::Integer(i))
            } else if n.is_u64() {
                return Err(format!("integer {n} does not fit SQLite's 64-bit integers"));
            } else {
                ToSqlOutput::Owned(Sql::Real(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Value::String(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Value::Object(m) if m.len() == 1 => {
            let (k, inner) = m.iter().next().expect("one entry");
            let Some(s) = inner.as_str() else {
                return Err(format!("`{k}` must hold a string"));
            };
            match k.as_str() {
                BLOB_KEY => ToSqlOutput::Owned(Sql::Blob(b64_decode(s)?)),
                TEXT_KEY => {
                    // rusqlite binds TEXT from a String only; bytes that are not UTF-8
                    // can only be bound as a BLOB and cast back in SQL, see `needs_text_cast`.
                    ToSqlOutput::Owned(Sql::Blob(b64_decode(s)?))
                }
                REAL_KEY => match s {
                    "inf" => ToSqlOutput::Owned(Sql::Real(f64::INFINITY)),
                    "-inf" => ToSqlOutput::Owned(Sql::Real(f64::NEG_INFINITY)),
                    other => {
                        return Err(format!("`{REAL_KEY}` must be inf or -inf, not {other:?}"));
                    }
                },
                other => return Err(format!("unknown cell tag `{other}`")),
            }
        }
        Value::Object(_) | Value::Array(_) => {
            return Err("a cell must be null, a number, a string or a tagged object".into());
        }
    })
}

/// Whether the cell is TEXT that must be bound as bytes and cast back (`CAST(? AS TEXT)`).
pub fn needs_text_cast(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.contains_key(TEXT_KEY))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding. Written here because the crate has no base64 dependency
/// and BLOB cells are rare (Crush writes TEXT).
pub fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[*s as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes [`b64_encode`]'s output; `Err` on anything else.
pub fn b64_decode(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err("base64 length is not a multiple of 4".into());
    }
    let value = |c: u8| -> Result<u32, String> {
        match c {
            b'A'..=b'Z' => Ok(u32::from(c - b'A')),
            b'a'..=b'z' => Ok(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Ok(u32::from(c - b'0') + 52),
            b'+' => Ok(62),
            b'/' => Ok(63),
            _ => Err(format!("invalid base64 character {:?}", char::from(c))),
        }
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (qi, q) in bytes.chunks(4).enumerate() {
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && qi + 1 != quads) {
            return Err("misplaced base64 padding".into());
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let enc = b64_encode(&bytes);
            assert_eq!(b64_decode(&enc).unwrap(), bytes, "{enc}");
        }
        assert_eq!(b64_encode(b"Man"), "TWFu");
        assert_eq!(b64_encode(b"Ma"), "TWE=");
        assert_eq!(b64_encode(b"M"), "TQ==");
        assert!(b64_decode("TQ=").is_err());
        assert!(b64_decode("T===").is_err());
        assert!(b64_decode("TQ==TQ==").is_err());
    }

    #[test]
    fn cells_keep_their_storage_class() {
        assert_eq!(to_json(ValueRef::Real(3.0)).to_string(), "3.0");
        assert_eq!(to_json(ValueRef::Integer(3)).to_string(), "3");
        assert_eq!(
            to_json(ValueRef::Blob(b"ab")),
            serde_json::json!({"$blob_b64": "YWI="})
        );
        assert_eq!(
            to_json(ValueRef::Text(b"\xff")),
            serde_json::json!({"$text_b64": "/w=="})
        );
        assert_eq!(
            to_json(ValueRef::Real(f64::INFINITY)),
            serde_json::json!({"$real": "inf"})
        );
        let back: Value = serde_json::from_str("3.0").unwrap();
        assert!(matches!(to_sql(&back).unwrap(), ToSqlOutput::Owned(Sql::Real(f)) if f == 3.0));
        assert!(to_sql(&serde_json::json!([1])).is_err());
        assert!(to_sql(&serde_json::json!({"$what": "x"})).is_err());
    }
}
