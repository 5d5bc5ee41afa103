//! What the tests that replay real vLLM captures share: reading a capture, comparing JSON
//! shapes (keys in written order), a client and a POST.
#![allow(dead_code)]

use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// One captured exchange.
pub struct Exchange {
    /// The `-d '…'` body of the curl command on the first line (abbreviated in the captures of
    /// long prompts, which the tests rebuild with [`words`]).
    pub request: String,
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// The exchange in `DIR/NAME.txt`.
pub fn exchange(dir: &str, name: &str) -> Exchange {
    let text = std::fs::read_to_string(format!("{dir}/{name}.txt"))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .replace("\r\n", "\n");
    let (curl, rest) = text.split_once('\n').expect("curl line");
    assert!(
        curl.starts_with("# curl "),
        "{name}: first line is the curl command"
    );
    let request = curl
        .split_once(" -d '")
        .map(|(_, d)| d.trim_end_matches('\'').to_string())
        .unwrap_or_default();
    let (head, body) = rest
        .split_once("\n\n")
        .expect("blank line after the headers");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let content_type = lines
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_string();
    Exchange {
        request,
        status,
        content_type,
        body: body.trim_end_matches('\n').to_string(),
    }
}

/// A JSON value's skeleton, keys in the order they were written: what the mock must share with
/// the capture whatever text the model generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Null,
    Bool,
    Number,
    String,
    Array(Vec<Shape>),
    Object(Vec<(String, Shape)>),
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Shape, D::Error> {
        struct ShapeVisitor;
        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Shape, E> {
                Ok(Shape::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Bool)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Number)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Number)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Number)
            }
            fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
                Ok(Shape::String)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Shape::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry()? {
                    fields.push(field);
                }
                Ok(Shape::Object(fields))
            }
        }
        d.deserialize_any(ShapeVisitor)
    }
}

pub fn shape(json: &str) -> Shape {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// (status, content type, body) of a POST.
pub async fn post(
    c: &reqwest::Client,
    m: &mock_vllm::MockHandle,
    path: &str,
    body: &str,
) -> (u16, String, String) {
    let r = c
        .post(format!("{}{path}", m.base_url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    let content_type = r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    (status, content_type, r.text().await.expect("body"))
}

/// A model directory holding `config` as its config.json, served as `tiny` (max_model_len
/// 512) with `extra` flags and `env`; the directory lives as long as the returned guard.
pub async fn start_tiny(
    config: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (tempfile::TempDir, mock_vllm::MockHandle) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.json"), config).expect("config");
    let model = dir.path().to_str().expect("utf8").to_string();
    let mut args: Vec<&str> = vec![
        &model,
        "--max-model-len",
        "512",
        "--served-model-name",
        "tiny",
    ];
    args.extend_from_slice(extra);
    let mock = mock_vllm::spawn_for_test(&args, env)
        .await
        .expect("mock starts");
    (dir, mock)
}
