//! One chat completion with a served model, not streamed: the request sent as vLLM's
//! OpenAI-compatible API takes it, and the reply read back (text, reasoning, usage).
//!
//! A sleeping server holds requests until it is woken, so a sleeping model is answered
//! [`Chatted::Asleep`] at once (and its record says so) rather than left to hang.

use crate::launcher::supervisor::Launcher;
use crate::power::{self, Served};
use serde_json::{Map, Value, json};
use std::time::Instant;
use vllm_core::models::ModelStatus;
use vllm_core::{Error, Result};

/// What to ask: the messages (OpenAI's shape) and the sampling the caller chose; what it
/// leaves out is the model's own default.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    pub messages: Value,
    pub max_tokens: u32,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<Vec<String>>,
}

/// The model's reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatReply {
    /// The assistant's text (empty when it produced none).
    pub content: String,
    /// The reasoning of a model served with a reasoning parser.
    pub reasoning: Option<String>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// From sending the request to the whole reply, to a tenth of a millisecond.
    pub latency_ms: f64,
}

/// What [`chat`] got.
#[derive(Debug, Clone, PartialEq)]
pub enum Chatted {
    Replied(ChatReply),
    /// The server sleeps: nothing was sent.
    Asleep,
}

/// Sends `req` to `m` and reads the reply. An adapter or model gone between the look-up
/// and the request is `MODEL_NOT_FOUND`.
pub async fn chat(
    launcher: Option<&Launcher>,
    m: Served<'_>,
    req: &ChatRequest,
) -> Result<Chatted> {
    // A server without the dev-mode routes answers 404 here, and cannot sleep.
    if let Ok(true) = m.client.is_sleeping().await {
        power::record_status(launcher, m.record, ModelStatus::Sleeping).await?;
        return Ok(Chatted::Asleep);
    }
    let t0 = Instant::now();
    let answer = m
        .client
        .chat(&body(m.model_id, req))
        .await
        .map_err(|e| match e {
            Error::BackendError {
                status: 404,
                kind: Some(ref k),
                ..
            } if k == "NotFoundError" => Error::ModelNotFound(m.model_id.to_string()),
            e => e,
        })?;
    let latency_ms = (t0.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
    Ok(Chatted::Replied(reply_of(&answer, latency_ms)))
}

/// The request body: only what the caller set, so the server's defaults apply otherwise.
fn body(model_id: &str, req: &ChatRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model_id));
    body.insert("messages".into(), req.messages.clone());
    body.insert("max_tokens".into(), json!(req.max_tokens));
    body.insert("stream".into(), json!(false));
    let optional = [
        ("temperature", req.temperature.map(|v| json!(v))),
        ("top_p", req.top_p.map(|v| json!(v))),
        ("seed", req.seed.map(|v| json!(v))),
        ("stop", req.stop.as_ref().map(|v| json!(v))),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    }
    Value::Object(body)
}

/// The first choice and the usage of a chat completion.
fn reply_of(answer: &Value, latency_ms: f64) -> ChatReply {
    let choice = answer.pointer("/choices/0");
    let text = |ptr: &str| {
        choice
            .and_then(|c| c.pointer(ptr))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let count = |k: &str| {
        answer
            .pointer(&format!("/usage/{k}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    ChatReply {
        content: text("/message/content").unwrap_or_default(),
        reasoning: text("/message/reasoning").or_else(|| text("/message/reasoning_content")),
        finish_reason: text("/finish_reason"),
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        total_tokens: count("total_tokens"),
        latency_ms,
    }
}
