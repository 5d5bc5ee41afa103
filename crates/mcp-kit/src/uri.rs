//! Pieces of resource URIs every server parses: `%XX` escapes and `?a=b&c=d` queries.

use vllm_core::{Error, Result};

/// Decodes `%XX` escapes; `None` on a malformed escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `(key, value)` pairs of a query, decoded; empty pairs are skipped. A pair without
/// `=` or with a malformed escape is an `INVALID_ARGUMENT` naming it.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| Error::invalid("uri", format!("`{pair}` is not key=value")))?;
            let decode = |s: &str| {
                percent_decode(s)
                    .ok_or_else(|| Error::invalid("uri", format!("malformed escape in `{pair}`")))
            };
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Splits `uri` after `prefix` into path and optional query; `None` when the URI does
/// not start with `prefix`.
pub fn split<'a>(uri: &'a str, prefix: &str) -> Option<(&'a str, Option<&'a str>)> {
    let rest = uri.strip_prefix(prefix)?;
    Some(match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_and_queries() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(
            query_pairs("tool=load-model&&limit=5&server=a%20b").unwrap(),
            vec![
                ("tool".into(), "load-model".into()),
                ("limit".into(), "5".into()),
                ("server".into(), "a b".into())
            ]
        );
        assert!(query_pairs("limit").is_err());
        assert!(query_pairs("x=%").is_err());
        assert_eq!(
            split("vllm://audit/log?x=1", "vllm://audit/"),
            Some(("log", Some("x=1")))
        );
        assert_eq!(
            split("vllm://audit/log", "vllm://audit/"),
            Some(("log", None))
        );
        assert_eq!(split("vllm://other", "vllm://audit/"), None);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn encode(s: &str) -> String {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02x}")
                    }
                })
                .collect()
        }

        proptest! {
            #[test]
            fn decoding_undoes_encoding(s in any::<String>()) {
                prop_assert_eq!(percent_decode(&encode(&s)), Some(s));
            }

            #[test]
            fn no_query_makes_it_panic(q in any::<String>()) {
                let _ = query_pairs(&q);
                let _ = percent_decode(&q);
                let _ = split(&q, "vllm://audit/");
            }

            #[test]
            fn encoded_pairs_read_back(pairs in prop::collection::vec((any::<String>(), any::<String>()), 0..5)) {
                let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
                let back = query_pairs(&q.join("&")).unwrap();
                // Empty pairs (`=` alone comes from two empty strings) are kept; only
                // empty segments between `&` are skipped.
                prop_assert_eq!(back, pairs);
            }
        }
    }
}
