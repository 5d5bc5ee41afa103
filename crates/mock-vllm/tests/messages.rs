//! The mock's Anthropic Messages API (`/v1/messages`, `/v1/messages/count_tokens`) checked
//! against the real vLLM 0.32 captures in tests/data/vllm-messages: each capture's own request
//! is replayed to the mock, and the answers must have the capture's status, content type, key
//! order, value types, SSE event sequence and, where the mock's tokenizer allows, the same values.

use std::time::{Duration, Instant};

use mock_vllm::MockHandle;
use mock_vllm::metrics::parse_sample;
use serde_json::Value;

mod common;

use common::{Exchange, Shape, client, json, post, shape};

const CAPTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/vllm-messages"
);

fn exchange(name: &str) -> Exchange {
    common::exchange(CAPTURES, name)
}

/// An SSE stream's events as (event name, data's shape), runs of the same event merged: the
/// number of text deltas depends on the generated text, their order and shapes do not.
fn events(sse: &str) -> Vec<(String, Shape)> {
    let mut out: Vec<(String, Shape)> = Vec::new();
    for block in sse.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap_or_else(|| panic!("no event line in {block:?}"));
        let data = block
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or_else(|| panic!("no data line in {block:?}"));
        assert_eq!(json(data)["type"], name, "event name is the data's type");
        let item = (name.to_string(), shape(data));
        if out.last() != Some(&item) {
            out.push(item);
        }
    }
    out
}

/// The data of the stream's event `name`.
fn event_data(sse: &str, name: &str) -> Value {
    let marker = format!("event: {name}\ndata: ");
    let start = sse.find(&marker).unwrap_or_else(|| panic!("no {name}")) + marker.len();
    json(sse[start..].lines().next().expect("data"))
}

/// `n` words of prompt: the mock's chat prompt of one user message is `n + 3` tokens (BOS, the
/// role, the words, the generation prompt).
fn words(n: usize) -> String {
    vec!["hello"; n].join(" ")
}

async fn start(extra: &[&str], env: &[(&str, &str)]) -> (tempfile::TempDir, MockHandle) {
    let config = r#"{"architectures":["LlamaForCausalLM"],"max_position_embeddings":2048}"#;
    common::start_tiny(config, extra, env).await
}

/// Replays a capture's request (or `body` when the capture abbreviates it) and checks the status
/// and content type; returns the mock's body.
async fn replay(c: &reqwest::Client, m: &MockHandle, name: &str, body: Option<&str>) -> String {
    let cap = exchange(name);
    let path = if name.starts_with("count_tokens") {
        "/v1/messages/count_tokens"
    } else {
        "/v1/messages"
    };
    let (status, content_type, ours) = post(c, m, path, body.unwrap_or(&cap.request)).await;
    assert_eq!(status, cap.status, "{name}: status; body {ours}");
    assert_eq!(content_type, cap.content_type, "{name}: content type");
    ours
}

fn metric(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    text.lines()
        .filter_map(parse_sample)
        .find(|(n, l, _)| {
            n == name && label.is_none_or(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|(_, _, v)| v.parse::<f64>().expect("number"))
        .unwrap_or_else(|| panic!("no sample {name}"))
}

async fn metrics(c: &reqwest::Client, m: &MockHandle) -> String {
    let r = c
        .get(format!("{}/metrics", m.base_url()))
        .send()
        .await
        .expect("metrics");
    r.text().await.expect("body")
}

#[tokio::test]
async fn whole_answers_match_captures() {
    let c = client();
    let (_dir, m) = start(&[], &[]).await;
    for name in [
        "messages_sample",
        "messages_content_blocks",
        "messages_stop_sequence",
    ] {
        let ours = replay(&c, &m, name, None).await;
        let theirs = exchange(name).body;
        assert_eq!(shape(&ours), shape(&theirs), "{name}: {ours}\nvs {theirs}");
        let (o, t) = (json(&ours), json(&theirs));
        for key in ["type", "role", "model", "stop_reason", "stop_sequence"] {
            assert_eq!(o[key], t[key], "{name}: {key}");
        }
        let prefix = |v: &Value| {
            v["id"]
                .as_str()
                .expect("id")
                .split('-')
                .next()
                .map(String::from)
        };
        assert_eq!(prefix(&o), prefix(&t), "{name}: id prefix");
        if t["stop_reason"] == "max_tokens" {
            assert_eq!(
                o["usage"]["output_tokens"], t["usage"]["output_tokens"],
                "{name}"
            );
        }
    }
    // A prompt that leaves 10 tokens of context: the budget is clamped, not refused.
    let body = format!(
        r#"{{"model":"tiny","max_tokens":20,"messages":[{{"role":"user","content":"{}"}}]}}"#,
        words(499)
    );
    let ours = replay(&c, &m, "messages_max_tokens_clamped", Some(&body)).await;
    let theirs = exchange("messages_max_tokens_clamped").body;
    assert_eq!(shape(&ours), shape(&theirs));
    assert_eq!(json(&ours)["usage"], json(&theirs)["usage"]);
    assert_eq!(json(&ours)["stop_reason"], json(&theirs)["stop_reason"]);
    m.shutdown().await;
}

#[tokio::test]
async fn streams_match_captures() {
    let c = client();
    let (_dir, m) = start(&[], &[]).await;
    for name in ["messages_stream_sample", "messages_stream_stop_sequence"] {
        let ours = replay(&c, &m, name, None).await;
        let theirs = exchange(name).body;
        assert_eq!(
            events(&ours),
            events(&theirs),
            "{name}: {ours}\nvs {theirs}"
        );
        let delta = |sse: &str| event_data(sse, "message_delta")["delta"].clone();
        assert_eq!(delta(&ours), delta(&theirs), "{name}: stop reason");
        assert!(ours.ends_with("\n\n") && !ours.contains("[DONE]"));
        // Usage: the prompt's tokens from the start, the generated count at the end.
        let start = event_data(&ours, "message_start")["message"]["usage"].clone();
        let end = event_data(&ours, "message_delta")["usage"].clone();
        assert_eq!(start["input_tokens"], end["input_tokens"]);
        assert_eq!(start["output_tokens"], 0);
        let text_deltas = ours.matches("event: content_block_delta").count() as u64;
        assert!(end["output_tokens"].as_u64().expect("count") >= text_deltas);
    }
    let ours = replay(&c, &m, "messages_stream_sample", None).await;
    let theirs = exchange("messages_stream_sample").body;
    assert_eq!(
        event_data(&ours, "message_delta")["usage"]["output_tokens"],
        event_data(&theirs, "message_delta")["usage"]["output_tokens"]
    );
    m.shutdown().await;
}

#[tokio::test]
async fn errors_match_captures() {
    let c = client();
    let (_dir, m) = start(&[], &[]).await;
    let long = |n: usize, max_tokens: u32| {
        format!(
            r#"{{"model":"tiny","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"{}"}}]}}"#,
            words(n)
        )
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("messages_unknown_model", None),
        ("messages_stream_unknown_model", None),
        ("messages_missing_max_tokens", None),
        ("messages_missing_model", None),
        ("messages_missing_messages", None),
        ("messages_max_tokens_zero", None),
        ("messages_max_tokens_too_large", None),
        ("messages_invalid_json", None),
        ("messages_prompt_too_long", Some(long(600, 8))),
        // 509 words: a prompt of exactly max_model_len tokens leaves nothing to generate.
        ("messages_prompt_fills_context", Some(long(509, 20))),
        ("count_tokens_unknown_model", None),
        ("count_tokens_missing_messages", None),
        (
            "count_tokens_prompt_too_long",
            Some(format!(
                r#"{{"model":"tiny","messages":[{{"role":"user","content":"{}"}}]}}"#,
                words(600)
            )),
        ),
    ];
    for (name, body) in cases {
        let ours = replay(&c, &m, name, body.as_deref()).await;
        assert_eq!(ours, exchange(name).body, "{name}");
    }
    // Two fields missing: pydantic reports both, vLLM's `param` names the first.
    let (status, _, body) = post(&c, &m, "/v1/messages", r#"{"messages":[]}"#).await;
    assert_eq!(status, 400);
    let v = json(&body);
    assert_eq!(v["error"]["param"], "body.model");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("2 validation errors:\n")
    );
    // The route takes POST only, like every other.
    let cap = exchange("messages_get");
    let r = c
        .get(format!("{}/v1/messages", m.base_url()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), cap.status);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(r.text().await.expect("body"), cap.body);
    m.shutdown().await;
}

#[tokio::test]
async fn count_tokens_matches_capture_and_the_messages_prompt() {
    let c = client();
    let (_dir, m) = start(&[], &[]).await;
    let ours = replay(&c, &m, "count_tokens_sample", None).await;
    let theirs = exchange("count_tokens_sample").body;
    assert_eq!(shape(&ours), shape(&theirs));
    let counted = json(&ours);
    assert_eq!(
        counted["input_tokens"],
        counted["context_management"]["original_input_tokens"]
    );
    // As on the real server (41 and 41), the count is the input_tokens a message request with
    // the same system prompt and messages is charged, whether content is a string or blocks.
    for name in ["messages_sample", "messages_content_blocks"] {
        assert_eq!(
            json(&exchange(name).body)["usage"]["input_tokens"],
            json(&theirs)["input_tokens"],
            "{name}: the capture's own consistency"
        );
        let (_, _, body) = post(&c, &m, "/v1/messages", &exchange(name).request).await;
        assert_eq!(
            json(&body)["usage"]["input_tokens"],
            counted["input_tokens"],
            "{name}"
        );
    }
    m.shutdown().await;
}

#[tokio::test]
async fn messages_count_in_metrics_and_running_like_chat() {
    let c = client();
    let (_dir, m) = start(&[], &[("MOCK_VLLM_TOKEN_LATENCY_MS", "20")]).await;
    let before = metrics(&c, &m).await;
    let request = exchange("messages_sample").request;
    let url = format!("{}/v1/messages", m.base_url());
    let slow = request.replace(r#""max_tokens":8"#, r#""max_tokens":40"#);
    let pending = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move {
            c.post(url)
                .body(slow)
                .send()
                .await
                .expect("post")
                .status()
                .as_u16()
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&metrics(&c, &m).await, "vllm:num_requests_running", None) != 1.0 {
        assert!(Instant::now() < deadline, "the message request never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pending.await.expect("join"), 200);
    let stream = exchange("messages_stream_sample").request;
    assert_eq!(post(&c, &m, "/v1/messages", &stream).await.0, 200);
    let after = metrics(&c, &m).await;
    let d = |name: &str, label: Option<(&str, &str)>| {
        metric(&after, name, label) - metric(&before, name, label)
    };
    assert_eq!(
        d(
            "vllm:request_success_total",
            Some(("finished_reason", "length"))
        ),
        2.0
    );
    assert_eq!(d("vllm:generation_tokens_total", None), 40.0 + 5.0);
    assert_eq!(d("vllm:request_prompt_tokens_count", None), 2.0);
    assert_eq!(metric(&after, "vllm:num_requests_running", None), 0.0);
    let handler = Some(("handler", "/v1/messages"));
    assert_eq!(metric(&after, "http_requests_total", handler), 2.0);
    m.shutdown().await;
}

#[tokio::test]
async fn api_key_sleep_and_engine_death_apply() {
    let c = client();
    let request = exchange("messages_sample").request;
    let (_dir, m) = start(&["--api-key", "sekrit"], &[]).await;
    let url = format!("{}/v1/messages", m.base_url());
    let r = c
        .post(&url)
        .body(request.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .header("authorization", "Bearer sekrit")
        .body(request.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    m.shutdown().await;

    let (_dir, m) = start(&[], &[("VLLM_SERVER_DEV_MODE", "1")]).await;
    assert_eq!(post(&c, &m, "/sleep?level=1", "").await.0, 200);
    let pending = tokio::spawn({
        let (c, url, request) = (
            c.clone(),
            format!("{}/v1/messages", m.base_url()),
            request.clone(),
        );
        async move {
            c.post(url)
                .body(request)
                .send()
                .await
                .expect("post")
                .status()
                .as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !pending.is_finished(),
        "a message request waits while the engine sleeps"
    );
    assert_eq!(post(&c, &m, "/wake_up", "").await.0, 200);
    assert_eq!(pending.await.expect("join"), 200);
    m.shutdown().await;

    let (_dir, m) = start(&[], &[("MOCK_VLLM_DEATH_503_SECONDS", "0.5")]).await;
    m.kill_engine();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = c
            .get(format!("{}/health", m.base_url()))
            .send()
            .await
            .expect("health");
        if r.status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/health never said 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _, body) = post(&c, &m, "/v1/messages", &request).await;
    assert_eq!(status, 500);
    assert_eq!(json(&body)["type"], "error");
    assert_eq!(json(&body)["error"]["type"], "InternalServerError");
    let code = tokio::time::timeout(Duration::from_secs(5), m.wait()).await;
    assert_eq!(code.expect("stops by itself"), 0);
}
