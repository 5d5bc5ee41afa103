//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: Anthropic's Messages API as vLLM 0.32
//! serves it, checked against the captures in tests/data/vllm-messages.
//!
//! vLLM turns a Messages request into a chat completion, so this runs on the chat's engine,
//! tokenizer and metrics (the helpers of [`crate::openai`]): a message request is a chat request
//! to `/metrics` and to the running count. What is Anthropic's here:
//! - the request: `model`, `messages` and `max_tokens` are required (pydantic's validation errors
//!   keep vLLM's OpenAI error shape), `system` is a separate field, `stop_sequences`;
//! - every later error: `{"type":"error","error":{"type","message"}}`, the type being the name of
//!   the exception vLLM raised (`NotFoundError`, `BadRequestError`);
//! - the answer: the chat's id (`chatcmpl-…`, not `msg_…`), one `text` block, `stop_reason`
//!   (`max_tokens`, `stop_sequence`, `end_turn`) with null fields left out, `usage` with
//!   `input_tokens`/`output_tokens`;
//! - the stream: named SSE events `message_start`, `content_block_start`, `content_block_delta`…,
//!   `content_block_stop`, `message_delta`, `message_stop`, with no `ping` and no `[DONE]`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendError;

use crate::engine::{Event, GenRequest};
use crate::http::{
    AppState, FieldError, json_response, lookup_model, parse_body, py_input, rand_hex,
    validation_errors,
};
use crate::json::{J, arr, obj, v};
use crate::openai::{ENGINE_DEAD, chat_messages, collect, sse_response};
use crate::stats::FinishReason;
use crate::tokenizer::encode_chat;

type Body_ = serde_json::Map<String, Value>;

/// A Messages request that passed vLLM's checks.
struct MessagesRequest {
    /// The name to echo (a served name or a LoRA adapter).
    model: String,
    lora: Option<String>,
    prompt: Vec<u32>,
    /// The budget after clamping to the context left (see [`budget`]).
    max_tokens: u32,
    stop: Vec<String>,
    stream: bool,
}

/// `POST /v1/messages`
pub async fn messages(State(st): State<Arc<AppState>>, raw: Bytes) -> Response {
    let req = match parse_request(&st, &raw) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if st.dead.load(Ordering::SeqCst) {
        return dead_response();
    }
    let id = format!("chatcmpl-{}", rand_hex());
    let rx = submit(&st, &req);
    if req.stream {
        stream(st, req, id, rx)
    } else {
        whole(&st, &req, &id, rx).await
    }
}

/// `POST /v1/messages/count_tokens`: the rendered prompt's length; no engine work.
pub async fn count_tokens(State(st): State<Arc<AppState>>, raw: Bytes) -> Response {
    count(&st, &raw).unwrap_or_else(|resp| resp)
}

fn count(st: &AppState, raw: &Bytes) -> Result<Response, Response> {
    let body = parse_body(raw)?;
    check_fields(&body, Fields::CountTokens)?;
    check_model(st, &body)?;
    let n = encode_chat(&conversation(&body), true).len() as u64;
    check_prompt_len(st, n)?;
    Ok(json_response(
        StatusCode::OK,
        obj(&[
            ("input_tokens", v(&n)),
            (
                "context_management",
                obj(&[("original_input_tokens", v(&n))]),
            ),
        ]),
    ))
}

/// Anthropic's error shape, as vLLM translates its own errors after validation.
fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(
        status,
        obj(&[
            ("type", v("error")),
            ("error", obj(&[("type", v(kind)), ("message", v(message))])),
        ]),
    )
}

fn bad_request(message: &str) -> Response {
    anthropic_error(StatusCode::BAD_REQUEST, "BadRequestError", message)
}

fn dead_response() -> Response {
    anthropic_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        ENGINE_DEAD,
    )
}

/// Which pydantic model checks the body: count_tokens has no `max_tokens`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fields {
    Messages,
    CountTokens,
}

/// pydantic's lax integer: an integer, an integral float, or a string holding one.
fn int_value(value: &Value) -> Result<i64, (&'static str, &'static str)> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or((
                "int_from_float",
                "Input should be a valid integer, got a number with a fractional part",
            )),
        Value::String(s) => s.trim().parse().map_err(|_| {
            (
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            )
        }),
        Value::Bool(b) => Ok(i64::from(*b)),
        _ => Err(("int_type", "Input should be a valid integer")),
    }
}

/// The required fields, checked in the model's field order; every error is reported at once,
/// as pydantic does.
fn check_fields(body: &Body_, fields: Fields) -> Result<(), Response> {
    let whole = py_input(&Value::Object(body.clone()));
    let missing = |loc| FieldError {
        kind: "missing",
        loc,
        msg: "Field required",
        input: whole.clone(),
        ctx: None,
    };
    let mut errors = Vec::new();
    match body.get("model") {
        None => errors.push(missing("body.model")),
        Some(Value::String(s)) if s.is_empty() => errors.push(FieldError {
            kind: "value_error",
            loc: "body.model",
            msg: "Value error, Model is required",
            input: py_input(&Value::String(String::new())),
            ctx: Some("{'error': ValueError('Model is required')}"),
        }),
        Some(Value::String(_)) => {}
        Some(other) => errors.push(FieldError {
            kind: "string_type",
            loc: "body.model",
            msg: "Input should be a valid string",
            input: py_input(other),
            ctx: None,
        }),
    }
    match body.get("messages") {
        None => errors.push(missing("body.messages")),
        Some(Value::Array(_)) => {}
        Some(other) => errors.push(FieldError {
            kind: "list_type",
            loc: "body.messages",
            msg: "Input should be a valid list",
            input: py_input(other),
            ctx: None,
        }),
    }
    if fields == Fields::Messages {
        match body.get("max_tokens").map(|m| (m, int_value(m))) {
            None => errors.push(missing("body.max_tokens")),
            Some((_, Ok(n))) if n > 0 => {}
            Some((m, Ok(_))) => errors.push(FieldError {
                kind: "value_error",
                loc: "body.max_tokens",
                msg: "Value error, max_tokens must be positive",
                input: py_input(m),
                ctx: Some("{'error': ValueError('max_tokens must be positive')}"),
            }),
            Some((m, Err((kind, msg)))) => errors.push(FieldError {
                kind,
                loc: "body.max_tokens",
                msg,
                input: py_input(m),
                ctx: None,
            }),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(validation_errors(&errors))
    }
}

/// The requested model's LoRA adapter, if any; vLLM's 404 in Anthropic's shape otherwise.
fn check_model(st: &AppState, body: &Body_) -> Result<(String, Option<String>), Response> {
    let name = body.get("model").and_then(|m| m.as_str()).unwrap_or("");
    lookup_model(st, name)
        .map(|lora| (name.to_string(), lora))
        .map_err(|message| anthropic_error(StatusCode::NOT_FOUND, "NotFoundError", &message))
}

/// The conversation the chat template sees: the `system` field as a first system message, then
/// the messages (text of string or block content).
fn conversation(body: &Body_) -> Vec<(String, String)> {
    let mut turns = Vec::new();
    if let Some(system) = body.get("system").filter(|s| !s.is_null()) {
        turns.extend(chat_messages(
            &serde_json::json!([{"role": "system", "content": system}]),
        ));
    }
    if let Some(messages) = body.get("messages") {
        turns.extend(chat_messages(messages));
    }
    turns
}

/// A prompt longer than the context. vLLM's tokenizer stops one token past the limit, so the
/// count it reports is at most `max_model_len + 1`, said "at least".
fn check_prompt_len(st: &AppState, prompt_len: u64) -> Result<(), Response> {
    let m = st.max_model_len;
    if prompt_len <= m {
        return Ok(());
    }
    let count = prompt_len.min(m + 1);
    let qualifier = if count == m + 1 { "at least " } else { "" };
    Err(bad_request(&format!(
        "This model's maximum context length is {m} tokens. However, your prompt contains {qualifier}{count} input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value={count})"
    )))
}

/// `max_new_tokens` of `--override-generation-config`, which caps every request's budget (with
/// `--generation-config auto|vllm`; with a folder, that folder's default does).
fn override_max_tokens(st: &AppState) -> Option<u64> {
    match st.args.generation_config.as_str() {
        "auto" | "vllm" => st
            .args
            .override_generation_config
            .get("max_new_tokens")
            .and_then(|m| m.as_u64()),
        _ => st.default_max_tokens,
    }
}

/// vLLM 0.32's length rules, in its order: `max_tokens` (as `max_completion_tokens`) above the
/// context, a prompt over the context, then the budget clamped to the context left, which must
/// leave at least one token.
fn budget(st: &AppState, prompt_len: u64, requested: u64) -> Result<u32, Response> {
    let m = st.max_model_len;
    if requested > m {
        return Err(bad_request(&format!(
            "max_completion_tokens={requested} cannot be greater than max_model_len={m}. Please request fewer output tokens. (parameter=max_completion_tokens, value={requested})"
        )));
    }
    check_prompt_len(st, prompt_len)?;
    let budget = [
        Some(m - prompt_len),
        Some(requested),
        override_max_tokens(st),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(requested);
    if budget < 1 {
        return Err(bad_request(&format!(
            "max_tokens must be at least 1, got {budget}. (parameter=max_tokens, value={budget})"
        )));
    }
    Ok(budget as u32)
}

fn parse_request(st: &AppState, raw: &Bytes) -> Result<MessagesRequest, Response> {
    let body = parse_body(raw)?;
    check_fields(&body, Fields::Messages)?;
    let (model, lora) = check_model(st, &body)?;
    let prompt = encode_chat(&conversation(&body), true);
    let requested = body
        .get("max_tokens")
        .and_then(|m| int_value(m).ok())
        .unwrap_or(1)
        .max(1) as u64;
    let max_tokens = budget(st, prompt.len() as u64, requested)?;
    let stop = body
        .get("stop_sequences")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let stream = body.get("stream").and_then(|s| s.as_bool()) == Some(true);
    Ok(MessagesRequest {
        model,
        lora,
        prompt,
        max_tokens,
        stop,
        stream,
    })
}

fn submit(st: &AppState, req: &MessagesRequest) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    st.engine.submit(GenRequest {
        index: 0,
        prompt: req.prompt.clone(),
        max_tokens: req.max_tokens,
        n_param: 1,
        seed: st.args.seed as u64,
        stop: req.stop.clone(),
        lora: req.lora.clone(),
        tx,
    });
    rx
}

/// The chat's finish reason as Anthropic's `(stop_reason, stop_sequence)`: a matched stop string
/// is a stop sequence, any other stop the end of the turn; an abort or error has none.
fn anthropic_stop(
    finish: Option<FinishReason>,
    stop: Option<&str>,
) -> (Option<&'static str>, Option<String>) {
    match (finish, stop) {
        (Some(FinishReason::Length), _) => (Some("max_tokens"), None),
        (Some(FinishReason::Stop), Some(s)) => (Some("stop_sequence"), Some(s.to_string())),
        (Some(FinishReason::Stop), None) => (Some("end_turn"), None),
        _ => (None, None),
    }
}

fn usage(input: u64, output: u64) -> J {
    obj(&[("input_tokens", v(&input)), ("output_tokens", v(&output))])
}

/// The whole answer. vLLM drops its null fields (`stop_sequence` unless one matched).
async fn whole(
    st: &AppState,
    req: &MessagesRequest,
    id: &str,
    rx: mpsc::UnboundedReceiver<Event>,
) -> Response {
    let Some(choices) = collect(st, rx, 1).await else {
        return dead_response();
    };
    let choice = &choices[0];
    let (stop_reason, stop_sequence) = anthropic_stop(choice.finish, choice.stop_reason.as_deref());
    let text_block = obj(&[("type", v("text")), ("text", v(&choice.text))]);
    let mut fields = vec![
        ("id", v(id)),
        ("type", v("message")),
        ("role", v("assistant")),
        ("content", arr(&[text_block])),
        ("model", v(&req.model)),
    ];
    if let Some(r) = stop_reason {
        fields.push(("stop_reason", v(r)));
    }
    if let Some(s) = stop_sequence {
        fields.push(("stop_sequence", v(&s)));
    }
    let output = choice.ids.len() as u64;
    fields.push(("usage", usage(req.prompt.len() as u64, output)));
    json_response(StatusCode::OK, obj(&fields))
}

fn stream(
    st: Arc<AppState>,
    req: MessagesRequest,
    id: String,
    rx: mpsc::UnboundedReceiver<Event>,
) -> Response {
    let (out_tx, out_rx) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        // An error only means the client went away.
        let _ = relay(&st, &req, &id, rx, &out_tx).await;
    });
    sse_response(out_rx)
}

/// One named SSE event, as vLLM writes it.
fn event(name: &str, data: &J) -> String {
    format!("event: {name}\ndata: {}\n\n", data.as_str())
}

fn message_start(id: &str, model: &str, input: u64) -> J {
    let message = obj(&[
        ("id", v(id)),
        ("type", v("message")),
        ("role", v("assistant")),
        ("content", arr(&[])),
        ("model", v(model)),
        ("stop_reason", J::null()),
        ("stop_sequence", J::null()),
        ("usage", usage(input, 0)),
    ]);
    obj(&[("type", v("message_start")), ("message", message)])
}

/// Turns the engine's tokens into Anthropic's events. A text block opens on the first non-empty
/// piece (vLLM skips empty deltas) and closes before `message_delta`; the engine dying mid-answer
/// ends the stream with an `error` event.
async fn relay(
    st: &AppState,
    req: &MessagesRequest,
    id: &str,
    mut rx: mpsc::UnboundedReceiver<Event>,
    out: &mpsc::Sender<String>,
) -> Result<(), SendError<String>> {
    let input = req.prompt.len() as u64;
    out.send(event(
        "message_start",
        &message_start(id, &req.model, input),
    ))
    .await?;
    let (mut open, mut generated) = (false, 0u64);
    let (mut finish, mut stop) = (None, None);
    while let Some(ev) = rx.recv().await {
        let (text, end) = match ev {
            Event::Token { text, finish, .. } => {
                generated += 1;
                (text, finish)
            }
            Event::Finished { reason, .. } => (String::new(), Some((reason, None))),
        };
        let failed = end.as_ref().is_some_and(|e| e.0 == FinishReason::Error);
        if failed || st.dead.load(Ordering::SeqCst) {
            let error = obj(&[("type", v("internal_error")), ("message", v(ENGINE_DEAD))]);
            let data = obj(&[("type", v("error")), ("error", error)]);
            return out.send(event("error", &data)).await;
        }
        if !text.is_empty() {
            if !open {
                let block = obj(&[("type", v("text")), ("text", v(""))]);
                let start = obj(&[
                    ("type", v("content_block_start")),
                    ("content_block", block),
                    ("index", v(&0)),
                ]);
                out.send(event("content_block_start", &start)).await?;
                open = true;
            }
            let delta = obj(&[
                ("type", v("content_block_delta")),
                (
                    "delta",
                    obj(&[("type", v("text_delta")), ("text", v(&text))]),
                ),
                ("index", v(&0)),
            ]);
            out.send(event("content_block_delta", &delta)).await?;
        }
        if let Some((reason, matched)) = end {
            (finish, stop) = (Some(reason), matched);
            break;
        }
    }
    if open {
        let stop_block = obj(&[("type", v("content_block_stop")), ("index", v(&0))]);
        out.send(event("content_block_stop", &stop_block)).await?;
    }
    // vLLM reads a stream that ended without a finish reason as a plain stop.
    let (reason, sequence) = anthropic_stop(finish.or(Some(FinishReason::Stop)), stop.as_deref());
    let delta = obj(&[
        ("stop_reason", reason.map(v).unwrap_or_else(J::null)),
        (
            "stop_sequence",
            sequence.as_ref().map(v).unwrap_or_else(J::null),
        ),
    ]);
    let message_delta = obj(&[
        ("type", v("message_delta")),
        ("delta", delta),
        ("usage", usage(input, generated)),
    ]);
    out.send(event("message_delta", &message_delta)).await?;
    out.send(event("message_stop", &obj(&[("type", v("message_stop"))])))
        .await
}
