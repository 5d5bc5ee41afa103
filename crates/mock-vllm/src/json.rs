//! A tiny ordered JSON writer: vLLM's responses list their keys in a fixed order (as captured),
//! and serde_json's default map would sort them.

use serde::Serialize;

/// A JSON value already serialized.
#[derive(Debug, Clone)]
pub struct J(pub String);

impl J {
    pub fn null() -> J {
        J("null".into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Serializes any value.
pub fn v<T: Serialize + ?Sized>(x: &T) -> J {
    J(serde_json::to_string(x).unwrap_or_else(|_| "null".into()))
}

/// An object with keys in the given order.
pub fn obj(pairs: &[(&str, J)]) -> J {
    let mut s = String::from("{");
    for (i, (k, val)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&serde_json::to_string(k).unwrap_or_default());
        s.push(':');
        s.push_str(&val.0);
    }
    s.push('}');
    J(s)
}

/// An array.
pub fn arr(items: &[J]) -> J {
    let parts: Vec<&str> = items.iter().map(|j| j.0.as_str()).collect();
    J(format!("[{}]", parts.join(",")))
}
