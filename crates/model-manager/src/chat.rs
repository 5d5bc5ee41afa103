//! `chat`: a bounded chat completion to try a served model.

use crate::ModelManager;
use crate::target::{not_serving, resolve};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use vllm_core::launch_args::validate_model_id;
use vllm_core::models::ModelStatus;
use vllm_core::{Error, Result};
use vllm_fleet::chat::{self, ChatRequest, Chatted};
use vllm_fleet::power::Served;
use vllm_mcp_kit::{ToolDef, Toolbox};

/// Registers `chat`.
pub fn register(t: &mut Toolbox<ModelManager>) {
    t.add(
        ToolDef {
            gpu_work: true,
            ..ToolDef::control(
                "chat",
                "Send a short chat (non-streaming, at most 1024 output tokens) to a loaded model or LoRA adapter to \
                 try it, e.g. right after load-model. Answers the assistant's text, finish_reason, token usage and \
                 latency. Not for long conversations: use the model through Crush for that.",
            )
        },
        |s: Arc<ModelManager>, p: ChatParams, _| async move { chat(&s, p).await },
    );
}

/// Most messages one `chat` call may send.
const MAX_MESSAGES: usize = 64;

/// Largest content of one chat message, bytes.
const MAX_CONTENT_BYTES: usize = 32 * 1024;

/// Default and largest `max_tokens` of a `chat` call.
const DEFAULT_MAX_TOKENS: u32 = 64;

const MAX_MAX_TOKENS: u32 = 1024;

/// vLLM's own limit on stop strings (`VLLM_MAX_STOP_STRINGS`).
const MAX_STOP: usize = 4;

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: Role,
    /// The text, at most 32 KiB.
    pub content: String,
}

/// Parameters of `chat`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatParams {
    /// A loaded model or a LoRA adapter served by one, as list-models shows it.
    pub model_id: String,
    /// The conversation, oldest first: 1 to 64 messages.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate: 1 to 1024 (default 64).
    pub max_tokens: Option<u32>,
    /// 0 to 2; 0 is greedy (default: the model's sampling default).
    pub temperature: Option<f64>,
    /// In (0, 1].
    pub top_p: Option<f64>,
    /// Seed for reproducible sampling.
    pub seed: Option<i64>,
    /// Up to 4 strings that end the answer when generated.
    pub stop: Option<Vec<String>>,
}

/// Token counts of one chat.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// The answer of `chat`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ChatAnswer {
    pub model_id: String,
    /// The assistant's text (empty when it produced none).
    pub content: String,
    /// The model's reasoning, for reasoning models served with a reasoning parser.
    pub reasoning: Option<String>,
    /// `stop` (finished or hit a stop string) or `length` (ran into max_tokens).
    pub finish_reason: Option<String>,
    pub usage: Usage,
    /// Milliseconds from sending the request to the whole answer.
    pub latency_ms: f64,
}

fn validate_chat(p: &ChatParams) -> Result<u32> {
    if p.messages.is_empty() || p.messages.len() > MAX_MESSAGES {
        return Err(Error::invalid(
            "messages",
            format!(
                "{} messages given: give 1 to {MAX_MESSAGES}",
                p.messages.len()
            ),
        ));
    }
    for (i, m) in p.messages.iter().enumerate() {
        if m.content.len() > MAX_CONTENT_BYTES {
            return Err(Error::invalid(
                format!("messages[{i}].content"),
                format!(
                    "{} bytes: at most {MAX_CONTENT_BYTES} per message",
                    m.content.len()
                ),
            ));
        }
    }
    let max_tokens = p.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if !(1..=MAX_MAX_TOKENS).contains(&max_tokens) {
        return Err(Error::invalid(
            "max_tokens",
            format!("{max_tokens} is not between 1 and {MAX_MAX_TOKENS}"),
        ));
    }
    if let Some(t) = p.temperature
        && !(t.is_finite() && (0.0..=2.0).contains(&t))
    {
        return Err(Error::invalid(
            "temperature",
            format!("{t} is not between 0 and 2"),
        ));
    }
    if let Some(v) = p.top_p
        && !(v > 0.0 && v <= 1.0)
    {
        return Err(Error::invalid("top_p", format!("{v} must be in (0, 1]")));
    }
    if let Some(stop) = &p.stop {
        if stop.len() > MAX_STOP {
            return Err(Error::invalid(
                "stop",
                format!("{} strings given: at most {MAX_STOP}", stop.len()),
            ));
        }
        if let Some(i) = stop.iter().position(|s| s.is_empty() || s.len() > 256) {
            return Err(Error::invalid(
                format!("stop[{i}]"),
                "must be 1 to 256 bytes",
            ));
        }
    }
    Ok(max_tokens)
}

async fn chat(s: &ModelManager, p: ChatParams) -> Result<ChatAnswer> {
    validate_model_id("model_id", &p.model_id)?;
    let max_tokens = validate_chat(&p)?;
    let t = resolve(s, &p.model_id, &[ModelStatus::Loaded]).await?;
    let req = ChatRequest {
        messages: serde_json::to_value(&p.messages)
            .map_err(|e| Error::Internal(format!("messages are not serialisable: {e}")))?,
        max_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        seed: p.seed,
        stop: p.stop,
    };
    let served = Served {
        model_id: &t.model_id,
        client: &t.client,
        record: t.record.as_ref(),
    };
    let r = match chat::chat(s.launcher().ok(), served, &req).await? {
        Chatted::Replied(r) => r,
        Chatted::Asleep => {
            let model = t.parent.as_deref().unwrap_or(&t.model_id);
            return Err(not_serving(model, ModelStatus::Sleeping));
        }
    };
    Ok(ChatAnswer {
        content: r.content,
        reasoning: r.reasoning,
        finish_reason: r.finish_reason,
        usage: Usage {
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            total_tokens: r.total_tokens,
        },
        latency_ms: r.latency_ms,
        model_id: t.model_id,
    })
}
