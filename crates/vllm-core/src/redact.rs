//! Keeps secrets out of answers, logs, the audit log and saved states.
//!
//! Two shapes of secret reach us: JSON arguments whose key names a secret
//! (`api_key`, `hf_token`, `password`, ...) and text such as a command line or a log line
//! (`--api-key X`, `Authorization: Bearer X`, `HF_TOKEN=X`, `hf_...` tokens).

use serde_json::Value;

/// What replaces a secret.
pub const MASK: &str = "***";

/// True when a key or flag name denotes a secret.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('-', "_");
    // Whole parts, so that `max_tokens` or `tokenizer` are not taken for secrets.
    let parts: Vec<&str> = n.split('_').filter(|p| !p.is_empty()).collect();
    parts.iter().any(|p| {
        matches!(
            *p,
            "token"
                | "key"
                | "apikey"
                | "secret"
                | "password"
                | "passwd"
                | "credential"
                | "credentials"
                | "authorization"
                | "auth"
        )
    })
}

/// A copy of `v` with the values of secret-named keys masked, at any depth.
pub fn redact_json(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if is_secret_name(k) && !v.is_null() {
                        Value::String(MASK.into())
                    } else {
                        redact_json(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        // An argument vector (`["--api-key", "X"]`): the value after a secret flag too.
        Value::Array(a)
            if a.iter()
                .any(|v| v.as_str().is_some_and(|s| s.starts_with("--"))) =>
        {
            let mut out = Vec::with_capacity(a.len());
            let mut mask_next = false;
            for v in a {
                let flag = v.as_str().and_then(|s| s.strip_prefix("--"));
                if mask_next && !v.is_null() {
                    out.push(Value::String(MASK.into()));
                    mask_next = false;
                    continue;
                }
                mask_next = flag.is_some_and(|f| !f.contains('=') && is_secret_name(f));
                out.push(match flag.and_then(|f| f.split_once('=')) {
                    Some((name, _)) if is_secret_name(name) => {
                        Value::String(format!("--{name}={MASK}"))
                    }
                    _ => redact_json(v),
                });
            }
            Value::Array(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(redact_json).collect()),
        Value::String(s) => Value::String(redact_text(s)),
        other => other.clone(),
    }
}

/// An argument vector with the values of secret flags masked
/// (`--api-key X` and `--api-key=X` both).
pub fn redact_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut mask_next = false;
    for a in args {
        if mask_next {
            out.push(MASK.to_string());
            mask_next = false;
            continue;
        }
        if let Some(flag) = a.strip_prefix("--") {
            match flag.split_once('=') {
                Some((name, _)) if is_secret_name(name) => {
                    out.push(format!("--{name}={MASK}"));
                    continue;
                }
                None if is_secret_name(flag) => mask_next = true,
                _ => {}
            }
        }
        out.push(redact_text(a));
    }
    out
}

/// Text with secrets masked: `--api-key X`, `Bearer X`, `NAME_TOKEN=X`, `hf_…` tokens.
pub fn redact_text(s: &str) -> String {
    if !s
        .bytes()
        .any(|b| matches!(b, b'-' | b'=' | b':' | b'_' | b' '))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let words = s.split_inclusive(char::is_whitespace);
    let mut mask_next = false;
    for w in words {
        let core = w.trim_end();
        let ws = &w[core.len()..];
        if mask_next && !core.is_empty() {
            out.push_str(&mask_word(core));
            out.push_str(ws);
            mask_next = false;
            continue;
        }
        let lower = core.to_ascii_lowercase();
        let bare = lower.trim_start_matches('-').trim_end_matches(':');
        // `'api_key': 'x'` (Python dicts in vLLM's log) and `"token": "x"` (JSON).
        let keyish = lower.ends_with(':')
            && is_secret_name(
                lower
                    .trim_end_matches(':')
                    .trim_matches(['{', '\'', '"', ',']),
            );
        if (lower.starts_with("--") && is_secret_name(bare) && !core.contains('='))
            || bare == "bearer"
            || keyish
        {
            mask_next = bare != "authorization";
            out.push_str(w);
            continue;
        }
        if let Some((name, value)) = core.split_once(['=', ':'])
            && !value.is_empty()
            && is_secret_name(
                name.trim_start_matches('-')
                    .trim_matches(['"', '\'', ' ', '{']),
            )
        {
            let sep = &core[name.len()..name.len() + 1];
            out.push_str(name);
            out.push_str(sep);
            out.push_str(&mask_word(value));
            out.push_str(ws);
            continue;
        }
        if looks_like_token(core) {
            out.push_str(MASK);
            out.push_str(ws);
            continue;
        }
        out.push_str(w);
    }
    out
}

/// Masks a value while keeping the quotes and punctuation around it.
fn mask_word(w: &str) -> String {
    let start = w.find(|c: char| c.is_alphanumeric()).unwrap_or(0);
    let end = w
        .rfind(|c: char| c.is_alphanumeric())
        .map(|i| i + 1)
        .unwrap_or(w.len());
    if start >= end || w[start..end] == *MASK {
        return w.to_string();
    }
    format!("{}{MASK}{}", &w[..start], &w[end..])
}

/// Well-known token shapes: Hugging Face `hf_…`, OpenAI-style `sk-…`.
fn looks_like_token(w: &str) -> bool {
    let w = w.trim_matches(|c: char| !c.is_alphanumeric() && c != '_' && c != '-');
    (w.starts_with("hf_") || w.starts_with("sk-"))
        && w.len() >= 20
        && w[3..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_keys() {
        let v = json!({"model_id": "m", "api_key": "k1", "nested": {"HF_TOKEN": "k2", "list": [{"password": "k3"}]}, "max_tokens": 5});
        let r = redact_json(&v).to_string();
        for k in ["k1", "k2", "k3"] {
            assert!(!r.contains(k), "{r}");
        }
        assert!(
            r.contains("\"max_tokens\":5"),
            "max_tokens is no secret: {r}"
        );
        assert!(r.contains("\"model_id\":\"m\""));
    }

    #[test]
    fn argument_vectors_inside_json() {
        let v = serde_json::json!({"extra_args": ["--api-key", "plain-value-1", "--port", "8000", "--hf-token=abc"], "n": [1, 2]});
        let r = redact_json(&v);
        assert_eq!(
            r["extra_args"],
            serde_json::json!([
                "--api-key",
                MASK,
                "--port",
                "8000",
                format!("--hf-token={MASK}")
            ])
        );
        assert_eq!(r["n"], serde_json::json!([1, 2]));
        assert!(!r.to_string().contains("plain-value-1"));
    }

    #[test]
    fn argument_vectors() {
        let args: Vec<String> = [
            "serve",
            "m",
            "--api-key",
            "k1",
            "--hf-token=k2",
            "--port",
            "8000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            redact_args(&args),
            [
                "serve",
                "m",
                "--api-key",
                "***",
                "--hf-token=***",
                "--port",
                "8000"
            ]
        );
    }

    #[test]
    fn text() {
        let cases = [
            (
                "vllm serve m --api-key abc123 --port 1",
                "vllm serve m --api-key *** --port 1",
            ),
            ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
            ("HF_TOKEN=abcdef rest", "HF_TOKEN=*** rest"),
            (
                "args: {'api_key': 'abc', 'port': 1}",
                "args: {'api_key': '***', 'port': 1}",
            ),
            ("token hf_abcdefghijklmnopqrstu end", "token *** end"),
            ("max_tokens=16 keep", "max_tokens=16 keep"),
            ("plain words stay", "plain words stay"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_text(input), want, "{input}");
        }
    }
}
