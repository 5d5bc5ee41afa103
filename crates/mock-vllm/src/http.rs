//! What every route handler shares: the server's state, vLLM's JSON replies and error
//! bodies, request parsing and model resolution. [`crate::api`] routes to handlers here,
//! in [`crate::openai`] and in [`crate::messages`] (which borrows the chat's collection and SSE
//! helpers from `openai`); none of them imports `api`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::cli::ServeArgs;
use crate::engine::Engine;
use crate::env::Settings;
use crate::json::{J, obj, v};
use crate::pyrepr::str_repr;
use crate::stats::HttpStats;

/// The peer address of a connection (set by the server's listener).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// A LoRA adapter known to the server.
#[derive(Debug, Clone)]
pub struct Lora {
    pub name: String,
    pub path: String,
    pub base: String,
}

/// Everything the handlers share.
pub struct AppState {
    pub args: ServeArgs,
    pub settings: Settings,
    pub engine: Arc<Engine>,
    pub served: Vec<String>,
    pub max_model_len: u64,
    /// `max_new_tokens` of the generation config (model's generation_config.json and the override).
    pub default_max_tokens: Option<u64>,
    pub loras: Mutex<Vec<Lora>>,
    pub http: Mutex<HttpStats>,
    pub created: f64,
    pub api_key: Option<String>,
    pub dead: AtomicBool,
    pub v1_counter: AtomicU64,
    pub fingerprint: String,
    pub cache_config: Vec<(String, String)>,
    /// A pooling server (`--runner pooling`, or `auto` on an embedding architecture): it serves
    /// embeddings, score and rerank ([`crate::pooling`]) and no generation route.
    pub pooling: bool,
    /// The length of an embedding (config.json's `hidden_size`).
    pub hidden_size: u64,
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// 16 random-looking hex digits (request and permission ids).
pub fn rand_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut bytes = t.to_le_bytes().to_vec();
    bytes.extend(n.to_le_bytes());
    bytes.extend(std::process::id().to_le_bytes());
    format!("{:016x}", crate::tokenizer::fnv(&bytes))
}

/// A JSON response with vLLM's headers.
pub fn json_response(status: StatusCode, body: J) -> Response {
    let mut resp = Response::new(Body::from(body.0));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// vLLM's OpenAI-style error body: `{"error":{"message","type","param","code"}}`.
/// Also what a stream sends as its last `data:` chunk when the engine dies mid-answer.
pub fn error_body(status: StatusCode, message: &str, typ: &str, param: Option<&str>) -> J {
    obj(&[(
        "error",
        obj(&[
            ("message", v(message)),
            ("type", v(typ)),
            ("param", param.map(v).unwrap_or_else(J::null)),
            ("code", v(&status.as_u16())),
        ]),
    )])
}

/// [`error_body`] as a response with that status.
pub fn error_response(
    status: StatusCode,
    message: &str,
    typ: &str,
    param: Option<&str>,
) -> Response {
    json_response(status, error_body(status, message, typ, param))
}

pub fn bad_request(message: &str, param: Option<&str>) -> Response {
    error_response(StatusCode::BAD_REQUEST, message, "BadRequestError", param)
}

/// A pydantic validation error as vLLM reports it (type "Bad Request").
pub fn validation_error(
    kind: &str,
    loc: &str,
    msg: &str,
    input: &str,
    ctx: Option<&str>,
) -> Response {
    validation_errors(&[FieldError {
        kind,
        loc,
        msg,
        input: input.to_string(),
        ctx,
    }])
}

/// One entry of a pydantic validation error, as vLLM's handler prints it.
pub struct FieldError<'a> {
    /// pydantic's error type (`missing`, `value_error`, `int_parsing`...).
    pub kind: &'a str,
    /// The dotted location, `body.max_tokens`.
    pub loc: &'a str,
    pub msg: &'a str,
    /// The offending input, already as Python's repr (see [`py_input`]).
    pub input: String,
    /// The `ctx` dict as Python prints it, when pydantic gives one.
    pub ctx: Option<&'a str>,
}

/// Every validation error of a request in one body, as vLLM's handler writes it: "N validation
/// errors:" then one line per error (at most 10), `param` taken from the first error.
pub fn validation_errors(errors: &[FieldError<'_>]) -> Response {
    let label = if errors.len() == 1 { "error" } else { "errors" };
    let mut message = format!("{} validation {label}:", errors.len());
    for e in errors.iter().take(10) {
        let ctx = e.ctx.map(|c| format!(", 'ctx': {c}")).unwrap_or_default();
        message.push_str(&format!(
            "\n  {{'type': {}, 'loc': {}, 'msg': {}, 'input': {}{ctx}}}",
            str_repr(e.kind),
            str_repr(e.loc),
            str_repr(e.msg),
            e.input
        ));
    }
    if errors.len() > 10 {
        message.push_str(&format!("\n  ...and {} more {label}", errors.len() - 10));
    }
    let param = errors.first().map(|e| e.loc);
    error_response(StatusCode::BAD_REQUEST, &message, "Bad Request", param)
}

/// A request value as vLLM's validation handler echoes it under `input`: containers described
/// (`'<dict of 2 items>'`), anything else as its Python `str()`, cut at 200 characters.
pub fn py_input(value: &serde_json::Value) -> String {
    use serde_json::Value;
    let text = match value {
        Value::Object(m) => format!("<dict of {} items>", m.len()),
        Value::Array(a) => format!("<list of {} items>", a.len()),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Number(n) => n.to_string(),
    };
    let text = match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...[truncated]", &text[..cut]),
        None => text,
    };
    str_repr(&text)
}

/// Parses a JSON request body, answering like vLLM (pydantic) when it is not a JSON object.
pub fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, serde_json::Value>, Response> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(validation_error(
            "model_attributes_type",
            "body",
            "Input should be a valid dictionary or object to extract fields from",
            "'<non-dict>'",
            None,
        )),
        Err(e) => {
            let text = String::from_utf8_lossy(body);
            let mut pos = 0usize;
            for (i, line) in text.split('\n').enumerate() {
                if i + 1 == e.line() {
                    pos += e.column().saturating_sub(1);
                    break;
                }
                pos += line.len() + 1;
            }
            // Python points at where the missing value should start: the end, for a cut body.
            let pos = if e.is_eof() {
                text.len()
            } else {
                pos.min(text.len())
            };
            Err(validation_error(
                "json_invalid",
                &format!("body.{pos}"),
                "JSON decode error",
                "'<dict of 0 items>'",
                Some("{'error': 'Expecting value'}"),
            ))
        }
    }
}

/// Resolves the request's `model` to (name to echo, LoRA name if any); vLLM's 404 otherwise.
pub fn resolve_model(
    st: &AppState,
    body: &serde_json::Map<String, serde_json::Value>,
) -> Result<(String, Option<String>), Response> {
    let requested = body.get("model").and_then(|m| m.as_str());
    let Some(name) = requested else {
        return Ok((st.served[0].clone(), None));
    };
    match lookup_model(st, name) {
        Ok(lora) => Ok((name.to_string(), lora)),
        Err(message) => Err(error_response(
            StatusCode::NOT_FOUND,
            &message,
            "NotFoundError",
            Some("model"),
        )),
    }
}

/// Whether `name` is served: `Ok(None)` for a served name, `Ok(Some(adapter))` for a LoRA
/// adapter, else vLLM's 404 message (each API wraps it in its own error shape).
pub fn lookup_model(st: &AppState, name: &str) -> Result<Option<String>, String> {
    if st.served.iter().any(|s| s == name) {
        return Ok(None);
    }
    let loras = st.loras.lock().map(|l| l.clone()).unwrap_or_default();
    if loras.iter().any(|l| l.name == name) {
        return Ok(Some(name.to_string()));
    }
    Err(format!(
        "The model `{name}` does not exist. Valid aliases: {}.",
        st.served.join(", ")
    ))
}

impl IntoResponse for J {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, self)
    }
}
