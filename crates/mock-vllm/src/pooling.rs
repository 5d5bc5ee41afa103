//! What a pooling server (`--runner pooling`) serves instead of generation: `/v1/embeddings`,
//! `/v1/score` (and `/score`) and `/v1/rerank` (and `/rerank`, `/v2/rerank`), checked against
//! the captures in tests/data/vllm-embeddings.
//!
//! The mock's embedding of a text is the mean of one fixed pseudo-random vector per token (the
//! mock tokenizer's words), L2-normalised, as many floats as the model's `hidden_size`: the same
//! text always gives the same vector, texts sharing words lean together, and a score is the
//! cosine of two embeddings (1.0 for the same text). Token counts follow the tokenizer's rules:
//! one per word of a string, one per id of a token list, no BOS (the captured tokenizer adds none).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::http::{
    AppState, FieldError, error_response, json_response, lookup_model, parse_body, rand_hex,
    unix_now, validation_errors,
};
use crate::json::{J, arr, obj, v};

/// The request types FastAPI tries for `/v1/embeddings`, in the order pydantic reports them.
const EMBED_MISSING: &[&str] = &[
    "body.input",
    "body.messages",
    "body.messages",
    "body.messages",
    "body.input",
    "body.messages",
    "body.input",
];

/// The same for `/v1/score` when `text_2` is missing.
const SCORE_MISSING: &[&str] = &[
    "body.queries",
    "body.documents",
    "body.queries",
    "body.items",
    "body.data_1",
    "body.data_2",
    "body.text_2",
];

/// One input of a pooling request: its token ids.
type Tokens = Vec<u32>;

/// `POST /v1/embeddings`.
pub async fn embeddings(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(input) = body.get("input") else {
        return missing(&body, EMBED_MISSING);
    };
    let name = match served_name(&st, &body) {
        Ok(n) => n,
        Err(r) => return r,
    };
    if let Some(d) = body.get("dimensions").filter(|d| !d.is_null()) {
        return pooling_error(&format!(
            "Model '{}' does not support Matryoshka embeddings; dimensions must be unset \
             (received dimensions={d}).",
            st.served[0]
        ));
    }
    let inputs = match inputs_of(input) {
        Some(i) if !i.is_empty() => i,
        _ => return pooling_error("Input must be a string, a list of strings or of token ids."),
    };
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<J> = inputs
        .iter()
        .enumerate()
        .map(|(index, tokens)| {
            let e = embed(tokens, hidden_size(&st));
            let embedding = if base64 {
                v(&base64_f32(&e))
            } else {
                floats(&e)
            };
            obj(&[
                ("index", v(&index)),
                ("object", v("embedding")),
                ("embedding", embedding),
            ])
        })
        .collect();
    let tokens: usize = inputs.iter().map(Vec::len).sum();
    answer("embd", &name, "data", arr(&data), usage(tokens, true))
}

/// `POST /v1/score` and `/score`: `text_1` against each of `text_2` (or pairwise, two lists).
pub async fn score(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (Some(left), Some(right)) = (body.get("text_1"), body.get("text_2")) else {
        return missing(&body, SCORE_MISSING);
    };
    let name = match served_name(&st, &body) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let (Some(left), Some(right)) = (inputs_of(left), inputs_of(right)) else {
        return pooling_error("text_1 and text_2 must be strings or lists of strings.");
    };
    let pairs: Vec<(&Tokens, &Tokens)> = match (left.len(), right.len()) {
        (1, _) => right.iter().map(|r| (&left[0], r)).collect(),
        (l, r) if l == r => left.iter().zip(right.iter()).collect(),
        (l, r) => {
            return pooling_error(&format!(
                "text_1 has {l} items and text_2 {r}: give one text_1, or as many as text_2."
            ));
        }
    };
    let size = hidden_size(&st);
    let data: Vec<J> = pairs
        .iter()
        .enumerate()
        .map(|(index, (a, b))| {
            obj(&[
                ("index", v(&index)),
                ("object", v("score")),
                ("score", v(&cosine(&embed(a, size), &embed(b, size)))),
            ])
        })
        .collect();
    let tokens = left.iter().chain(right.iter()).map(Vec::len).sum();
    answer("score", &name, "data", arr(&data), usage(tokens, true))
}

/// `POST /v1/rerank`, `/rerank` and `/v2/rerank` (Jina's and Cohere's shape): the documents by
/// relevance to the query, best first, `top_n` of them when given.
pub async fn rerank(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (Some(query), Some(documents)) = (
        body.get("query").and_then(Value::as_str),
        body.get("documents").and_then(Value::as_array),
    ) else {
        let loc = if body.contains_key("query") {
            "body.documents"
        } else {
            "body.query"
        };
        return missing(&body, &[loc]);
    };
    let name = match served_name(&st, &body) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let size = hidden_size(&st);
    let q = crate::tokenizer::encode(query);
    let mut tokens = q.len();
    let mut results: Vec<(usize, &str, f32)> = Vec::new();
    for (index, doc) in documents.iter().enumerate() {
        let text = doc.as_str().unwrap_or_default();
        let d = crate::tokenizer::encode(text);
        tokens += d.len();
        results.push((index, text, cosine(&embed(&q, size), &embed(&d, size))));
    }
    results.sort_by(|a, b| b.2.total_cmp(&a.2));
    if let Some(n) = body.get("top_n").and_then(Value::as_u64).filter(|n| *n > 0) {
        results.truncate(n as usize);
    }
    let results: Vec<J> = results
        .iter()
        .map(|(index, text, score)| {
            obj(&[
                ("index", v(index)),
                (
                    "document",
                    obj(&[("text", v(text)), ("multi_modal", J::null())]),
                ),
                ("relevance_score", v(score)),
            ])
        })
        .collect();
    json_response(
        StatusCode::OK,
        obj(&[
            ("id", v(&format!("score-{}", rand_hex()))),
            ("model", v(&name)),
            ("usage", usage(tokens, false)),
            ("results", arr(&results)),
        ]),
    )
}

/// The answer every pooling route shares: id, object, created, model, the items, usage.
fn answer(prefix: &str, model: &str, key: &str, items: J, usage: J) -> Response {
    json_response(
        StatusCode::OK,
        obj(&[
            ("id", v(&format!("{prefix}-{}", rand_hex()))),
            ("object", v("list")),
            ("created", v(&(unix_now() as u64))),
            ("model", v(model)),
            (key, items),
            ("usage", usage),
        ]),
    )
}

fn usage(tokens: usize, full: bool) -> J {
    if !full {
        return obj(&[("prompt_tokens", v(&tokens)), ("total_tokens", v(&tokens))]);
    }
    obj(&[
        ("prompt_tokens", v(&tokens)),
        ("total_tokens", v(&tokens)),
        ("completion_tokens", v(&0)),
        ("prompt_tokens_details", J::null()),
        ("completion_tokens_details", J::null()),
    ])
}

/// pydantic's "Field required", once per request type that lacks the field.
fn missing(body: &serde_json::Map<String, Value>, locs: &[&str]) -> Response {
    let input = format!("'<dict of {} items>'", body.len());
    let errors: Vec<FieldError<'_>> = locs
        .iter()
        .map(|loc| FieldError {
            kind: "missing",
            loc,
            msg: "Field required",
            input: input.clone(),
            ctx: None,
        })
        .collect();
    validation_errors(&errors)
}

/// The name to echo; a pooling route's 404 has no list of aliases and no `param`, as captured.
fn served_name(st: &AppState, body: &serde_json::Map<String, Value>) -> Result<String, Response> {
    let Some(name) = body.get("model").and_then(Value::as_str) else {
        return Ok(st.served[0].clone());
    };
    match lookup_model(st, name) {
        Ok(_) => Ok(name.to_string()),
        Err(_) => Err(error_response(
            StatusCode::NOT_FOUND,
            &format!("The model `{name}` does not exist."),
            "NotFoundError",
            None,
        )),
    }
}

fn pooling_error(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, message, "BadRequestError", None)
}

fn hidden_size(st: &AppState) -> usize {
    st.hidden_size.max(1) as usize
}

/// A string, a list of strings, a list of token ids or a list of such lists.
fn inputs_of(value: &Value) -> Option<Vec<Tokens>> {
    let ids = |items: &[Value]| -> Option<Tokens> {
        items.iter().map(|t| t.as_u64().map(|t| t as u32)).collect()
    };
    match value {
        Value::String(s) => Some(vec![crate::tokenizer::encode(s)]),
        Value::Array(items) if items.iter().all(Value::is_u64) && !items.is_empty() => {
            Some(vec![ids(items)?])
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Some(crate::tokenizer::encode(s)),
                Value::Array(inner) => ids(inner),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// The mean of each token's fixed vector, L2-normalised, as f32 like the real engine's output.
fn embed(tokens: &[u32], size: usize) -> Vec<f32> {
    let mut sum = vec![0f64; size];
    for token in tokens {
        let mut state = crate::tokenizer::fnv(&token.to_le_bytes());
        for x in sum.iter_mut() {
            // xorshift64: a fixed stream per token, values in [-1, 1).
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *x += (state >> 11) as f64 / (1u64 << 52) as f64 - 1.0;
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
    sum.iter()
        .map(|x| if norm > 0.0 { (x / norm) as f32 } else { 0.0 })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    dot.clamp(-1.0, 1.0) as f32
}

/// Floats as Python prints a float32 widened to float64 (`0.0009933251421898603`).
fn floats(values: &[f32]) -> J {
    let wide: Vec<f64> = values.iter().map(|x| *x as f64).collect();
    v(&wide)
}

/// The floats as little-endian f32 bytes, in standard base64 (`encoding_format: base64`).
fn base64_f32(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
    }

    #[test]
    fn the_same_text_scores_one_and_shared_words_lean_together() {
        let a = embed(&crate::tokenizer::encode("a b"), 64);
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(cosine(&a, &a), 1.0);
        let near = embed(&crate::tokenizer::encode("a b c"), 64);
        let far = embed(&crate::tokenizer::encode("x y z"), 64);
        assert!(cosine(&a, &near) > cosine(&a, &far));
    }
}
