//! The mock's pooling server (`--runner pooling --convert embed`): `/v1/embeddings`, `/v1/score`
//! and `/v1/rerank` checked against the real vLLM 0.32 captures in tests/data/vllm-embeddings.
//! Each capture's request is replayed; the answers must have its status, content type, key order
//! and value types, and its exact body wherever the mock's tokenizer does not enter.

mod common;

use common::{Exchange, client, json, post, shape};
use mock_vllm::MockHandle;
use serde_json::Value;

const CAPTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/vllm-embeddings"
);

fn exchange(name: &str) -> Exchange {
    common::exchange(CAPTURES, name)
}

/// The tiny model's config (hidden size 64, as the captured model), served with `extra`.
async fn start(extra: &[&str]) -> (tempfile::TempDir, MockHandle) {
    let config =
        r#"{"architectures":["LlamaForCausalLM"],"max_position_embeddings":2048,"hidden_size":64}"#;
    common::start_tiny(config, extra, &[]).await
}

async fn pooling() -> (tempfile::TempDir, MockHandle) {
    start(&["--runner", "pooling", "--convert", "embed"]).await
}

/// Replays capture `name` on `path`: same status and content type; returns (ours, theirs).
async fn replay(c: &reqwest::Client, m: &MockHandle, path: &str, name: &str) -> (String, String) {
    let cap = exchange(name);
    let (status, content_type, ours) = post(c, m, path, &cap.request).await;
    assert_eq!(status, cap.status, "{name}: status; body {ours}");
    assert_eq!(content_type, cap.content_type, "{name}: content type");
    (ours, cap.body)
}

fn prefix(v: &Value) -> &str {
    v["id"]
        .as_str()
        .expect("id")
        .split('-')
        .next()
        .expect("prefix")
}

fn norm(embedding: &Value) -> f64 {
    let floats = embedding.as_array().expect("floats");
    floats
        .iter()
        .map(|x| x.as_f64().expect("float").powi(2))
        .sum::<f64>()
        .sqrt()
}

#[tokio::test]
async fn embeddings_match_captures() {
    let c = client();
    let (_dir, m) = pooling().await;
    for name in ["single", "batch", "base64", "token-ids"] {
        let (ours, theirs) = replay(&c, &m, "/v1/embeddings", name).await;
        assert_eq!(shape(&ours), shape(&theirs), "{name}: {ours}\nvs {theirs}");
        let (o, t) = (json(&ours), json(&theirs));
        assert_eq!(prefix(&o), prefix(&t), "{name}: id prefix");
        assert_eq!(o["model"], t["model"]);
        for (ours, theirs) in o["data"]
            .as_array()
            .unwrap()
            .iter()
            .zip(t["data"].as_array().unwrap())
        {
            assert_eq!(ours["index"], theirs["index"]);
            match &theirs["embedding"] {
                Value::String(b64) => assert_eq!(
                    ours["embedding"].as_str().expect("base64").len(),
                    b64.len(),
                    "{name}: 64 f32 in base64"
                ),
                floats => {
                    assert!(
                        (norm(&ours["embedding"]) - 1.0).abs() < 1e-5,
                        "{name}: unit length"
                    );
                    assert!(
                        (norm(floats) - 1.0).abs() < 1e-5,
                        "the capture is unit length too"
                    );
                }
            }
        }
    }
    // Token ids are counted as given, as the real server did.
    let (ours, theirs) = replay(&c, &m, "/v1/embeddings", "token-ids").await;
    assert_eq!(json(&ours)["usage"], json(&theirs)["usage"]);
    // The same text embeds the same way in floats and in base64 (little-endian f32).
    let plain = embedding(&c, &m, r#"{"model":"tiny","input":"Hi"}"#).await;
    let again = embedding(&c, &m, r#"{"model":"tiny","input":"Hi"}"#).await;
    assert_eq!(plain, again, "deterministic");
    let encoded = embedding(
        &c,
        &m,
        r#"{"model":"tiny","input":"Hi","encoding_format":"base64"}"#,
    )
    .await;
    let bytes = decode_base64(encoded.as_str().expect("base64"));
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let plain: Vec<f32> = plain
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(decoded, plain);
    m.shutdown().await;
}

#[tokio::test]
async fn errors_match_captures_exactly() {
    let c = client();
    let (_dir, m) = pooling().await;
    for (path, name) in [
        ("/v1/embeddings", "unknown"),
        ("/v1/embeddings", "noinput"),
        ("/v1/embeddings", "dimensions"),
        ("/v1/score", "score-missing"),
        ("/v1/score", "score-unknown"),
        ("/v1/chat/completions", "chat-on-pooling"),
    ] {
        let (ours, theirs) = replay(&c, &m, path, name).await;
        assert_eq!(ours, theirs, "{name}");
    }
    m.shutdown().await;
}

#[tokio::test]
async fn score_and_rerank_match_captures() {
    let c = client();
    let (_dir, m) = pooling().await;
    for name in ["score", "score-batch"] {
        let (ours, theirs) = replay(&c, &m, "/v1/score", name).await;
        assert_eq!(shape(&ours), shape(&theirs), "{name}: {ours}\nvs {theirs}");
        assert_eq!(prefix(&json(&ours)), "score");
    }
    // A text against itself scores 1.0, as the real server answered; another text less.
    let (ours, theirs) = replay(&c, &m, "/v1/score", "score-batch").await;
    let (o, t) = (json(&ours), json(&theirs));
    assert_eq!(o["data"][0]["score"], t["data"][0]["score"]);
    assert!(o["data"][1]["score"].as_f64().unwrap() < 1.0);
    // `/score` is the same route.
    let (status, _, again) = post(&c, &m, "/score", &exchange("score-batch").request).await;
    assert_eq!(
        (status, json(&again)["data"].clone()),
        (200, o["data"].clone())
    );

    let (ours, theirs) = replay(&c, &m, "/v1/rerank", "rerank").await;
    assert_eq!(shape(&ours), shape(&theirs), "{ours}\nvs {theirs}");
    let (o, t) = (json(&ours), json(&theirs));
    assert_eq!(o["results"][0]["index"], t["results"][0]["index"]);
    assert_eq!(o["results"][0]["relevance_score"], 1.0);
    // Best first, and top_n keeps that many.
    let (_, _, top) = post(
        &c,
        &m,
        "/v2/rerank",
        r#"{"model":"tiny","query":"red fox","documents":["blue sky","red fox","red sky"],"top_n":2}"#,
    )
    .await;
    let top = json(&top);
    let order: Vec<u64> = top["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(order[0], 1, "the same text ranks first: {top}");
    assert_eq!(order.len(), 2);
    m.shutdown().await;
}

#[tokio::test]
async fn a_generating_server_has_no_pooling_routes_and_the_reverse() {
    let c = client();
    let (_dir, m) = start(&[]).await;
    let (status, _, body) =
        post(&c, &m, "/v1/embeddings", r#"{"model":"tiny","input":"Hi"}"#).await;
    assert_eq!((status, body.as_str()), (404, r#"{"detail":"Not Found"}"#));
    m.shutdown().await;
    let (_dir, m) = pooling().await;
    let (status, _, body) = post(
        &c,
        &m,
        "/v1/messages",
        r#"{"model":"tiny","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (404, r#"{"detail":"Not Found"}"#));
    // Its tokenizer still works, and pooling requests show in the HTTP metrics by route.
    let (status, _, _) = post(&c, &m, "/tokenize", r#"{"model":"tiny","prompt":"a b"}"#).await;
    assert_eq!(status, 200);
    let (status, _, _) = post(
        &c,
        &m,
        "/v1/embeddings",
        r#"{"model":"tiny","input":"a b"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let text = c
        .get(format!("{}/metrics", m.base_url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        text.lines().any(|l| l.starts_with("http_requests_total{")
            && l.contains(r#"handler="/v1/embeddings""#)
            && l.contains(r#"status="2xx""#)),
        "{text}"
    );
    m.shutdown().await;
}

/// The first embedding of a `/v1/embeddings` request.
async fn embedding(c: &reqwest::Client, m: &MockHandle, body: &str) -> Value {
    let (_, _, text) = post(c, m, "/v1/embeddings", body).await;
    json(&text)["data"][0]["embedding"].clone()
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let digits: Vec<u32> = text
        .bytes()
        .filter(|b| *b != b'=')
        .map(|b| ALPHABET.find(b as char).expect("base64 digit") as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | d << (18 - 6 * i));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
