//! `/v1/completions` and `/v1/chat/completions`, plain and streamed (SSE), with vLLM 0.32's
//! response shapes, validation errors and sampling defaults.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::sync::mpsc;

use crate::engine::{Event, GenRequest};
use crate::http::{
    AppState, bad_request, error_body, error_response, json_response, parse_body, rand_hex,
    resolve_model, unix_now, validation_error,
};
use crate::json::{J, arr, obj, v};
use crate::stats::FinishReason;

type Body_ = serde_json::Map<String, serde_json::Value>;

/// Sampling parameters of one request.
struct Params {
    max_tokens: u32,
    n: u32,
    stop: Vec<String>,
    seed: u64,
    stream: bool,
    include_usage: bool,
    continuous_usage: bool,
    logprobs: Option<u32>,
    echo: bool,
}

/// What vLLM says when its engine died: as a whole answer, or as a stream's last chunk.
pub(crate) const ENGINE_DEAD: &str =
    "EngineCore encountered an issue. See stack trace (above) for the root cause.";

fn dead_body() -> J {
    error_body(
        StatusCode::INTERNAL_SERVER_ERROR,
        ENGINE_DEAD,
        "InternalServerError",
        None,
    )
}

fn dead_response() -> Response {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        ENGINE_DEAD,
        "InternalServerError",
        None,
    )
}

fn int_field(body: &Body_, key: &str) -> Option<i64> {
    body.get(key)
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
}

/// Checks lengths like vLLM and returns the max_tokens to use.
fn max_tokens_for(st: &AppState, prompt_len: u64, requested: Option<i64>) -> Result<u32, Response> {
    let m = st.max_model_len;
    if let Some(mt) = requested {
        if mt < 1 {
            return Err(bad_request(
                &format!("max_tokens must be at least 1, got {mt}."),
                Some("max_tokens"),
            ));
        }
        if mt as u64 > m {
            return Err(bad_request(
                &format!(
                    "max_tokens={mt} cannot be greater than max_model_len={m}. Please request fewer output tokens. (parameter=max_tokens, value={mt})"
                ),
                Some("max_tokens"),
            ));
        }
    }
    if prompt_len >= m {
        return Err(bad_request(
            &format!(
                "This model's maximum context length is {m} tokens. However, your request has {prompt_len} input tokens. Please reduce the length of the input messages. (parameter=input_tokens, value={prompt_len})"
            ),
            Some("input_tokens"),
        ));
    }
    match requested {
        Some(mt) => {
            let mt = mt as u64;
            if mt + prompt_len > m {
                return Err(bad_request(
                    &format!(
                        "'max_tokens' or 'max_completion_tokens' is too large: {mt}. This model's maximum context length is {m} tokens and your request has {prompt_len} input tokens ({mt} > {m} - {prompt_len}). (parameter=max_tokens, value={mt})"
                    ),
                    Some("max_tokens"),
                ));
            }
            Ok(mt as u32)
        }
        None => {
            let room = m - prompt_len;
            Ok(st
                .default_max_tokens
                .map(|d| d.min(room))
                .unwrap_or(room)
                .max(1) as u32)
        }
    }
}

fn common_params(st: &AppState, body: &Body_, max_tokens: u32) -> Result<Params, Response> {
    let n = int_field(body, "n").unwrap_or(1);
    if n < 1 {
        return Err(bad_request(
            &format!("n must be at least 1, got {n}."),
            Some("n"),
        ));
    }
    let stop = match body.get("stop") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    let opts = body.get("stream_options");
    Ok(Params {
        max_tokens,
        n: n as u32,
        stop,
        seed: int_field(body, "seed").unwrap_or(st.args.seed) as u64,
        stream: body
            .get("stream")
            .and_then(|s| s.as_bool())
            .unwrap_or(false),
        include_usage: opts
            .and_then(|o| o.get("include_usage"))
            .and_then(|b| b.as_bool())
            .unwrap_or(false),
        continuous_usage: opts
            .and_then(|o| o.get("continuous_usage_stats"))
            .and_then(|b| b.as_bool())
            .unwrap_or(false),
        logprobs: None,
        echo: false,
    })
}

/// Token-level log probabilities (made up, deterministic).
fn logprob_of(id: u32) -> f64 {
    -0.05 - (id % 17) as f64 * 0.11
}

/// One finished or in-progress choice.
#[derive(Default, Clone)]
pub(crate) struct Choice {
    pub(crate) text: String,
    pub(crate) ids: Vec<u32>,
    pub(crate) pieces: Vec<String>,
    pub(crate) finish: Option<FinishReason>,
    pub(crate) stop_reason: Option<String>,
}

fn completion_logprobs(pieces: &[String], ids: &[u32], k: u32, offset0: usize) -> J {
    let mut offsets = Vec::new();
    let mut off = offset0;
    for p in pieces {
        offsets.push(off);
        off += p.len();
    }
    let lps: Vec<f64> = ids.iter().map(|i| logprob_of(*i)).collect();
    let tops: Vec<J> = pieces
        .iter()
        .zip(ids)
        .map(|(p, id)| {
            let mut pairs: Vec<(String, J)> = vec![(p.clone(), v(&logprob_of(*id)))];
            for j in 1..k.max(1) {
                pairs.push((format!(" alt{j}"), v(&(logprob_of(*id) - j as f64))));
            }
            let refs: Vec<(&str, J)> = pairs.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
            obj(&refs)
        })
        .collect();
    obj(&[
        ("text_offset", v(&offsets)),
        ("token_logprobs", v(&lps)),
        ("tokens", v(pieces)),
        ("top_logprobs", arr(&tops)),
    ])
}

fn chat_logprobs(pieces: &[String], ids: &[u32], k: u32) -> J {
    let content: Vec<J> = pieces
        .iter()
        .zip(ids)
        .map(|(p, id)| {
            let tops: Vec<J> = (0..k)
                .map(|j| {
                    let tok = if j == 0 {
                        p.clone()
                    } else {
                        format!(" alt{j}")
                    };
                    obj(&[
                        ("token", v(&tok)),
                        ("logprob", v(&(logprob_of(*id) - j as f64))),
                        ("bytes", v(&tok.as_bytes().to_vec())),
                    ])
                })
                .collect();
            obj(&[
                ("token", v(p)),
                ("logprob", v(&logprob_of(*id))),
                ("bytes", v(&p.as_bytes().to_vec())),
                ("top_logprobs", arr(&tops)),
            ])
        })
        .collect();
    obj(&[("content", arr(&content))])
}

fn finish_json(f: Option<FinishReason>) -> J {
    f.map(|r| v(r.as_str())).unwrap_or_else(J::null)
}

fn opt_str(s: &Option<String>) -> J {
    s.as_ref().map(v).unwrap_or_else(J::null)
}

fn usage_full(prompt: u64, completion: u64) -> J {
    obj(&[
        ("prompt_tokens", v(&prompt)),
        ("total_tokens", v(&(prompt + completion))),
        ("completion_tokens", v(&completion)),
        ("prompt_tokens_details", J::null()),
        ("completion_tokens_details", J::null()),
    ])
}

fn usage_short(prompt: u64, completion: u64) -> J {
    obj(&[
        ("prompt_tokens", v(&prompt)),
        ("total_tokens", v(&(prompt + completion))),
        ("completion_tokens", v(&completion)),
    ])
}

/// Submits every (prompt x n) sequence; events come back on the returned receiver.
fn submit(
    st: &AppState,
    prompts: &[Vec<u32>],
    p: &Params,
    lora: Option<String>,
) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (pi, prompt) in prompts.iter().enumerate() {
        for c in 0..p.n {
            st.engine.submit(GenRequest {
                index: pi as u32 * p.n + c,
                prompt: prompt.clone(),
                max_tokens: p.max_tokens,
                n_param: p.n,
                seed: p.seed.wrapping_add(c as u64),
                stop: p.stop.clone(),
                lora: lora.clone(),
                tx: tx.clone(),
            });
        }
    }
    rx
}

/// Waits for every sequence; None when the engine died meanwhile.
pub(crate) async fn collect(
    st: &AppState,
    mut rx: mpsc::UnboundedReceiver<Event>,
    total: usize,
) -> Option<Vec<Choice>> {
    let mut choices = vec![Choice::default(); total];
    let mut done = 0;
    while done < total {
        let Some(ev) = rx.recv().await else { break };
        match ev {
            Event::Token {
                index,
                id,
                text,
                finish,
            } => {
                let c = &mut choices[index as usize];
                c.text.push_str(&text);
                c.pieces.push(text);
                c.ids.push(id);
                if let Some((reason, stop)) = finish {
                    c.finish = Some(reason);
                    c.stop_reason = stop;
                    done += 1;
                }
            }
            Event::Finished { index, reason } => {
                choices[index as usize].finish = Some(reason);
                done += 1;
            }
        }
    }
    if st.dead.load(Ordering::SeqCst)
        || choices
            .iter()
            .any(|c| c.finish == Some(FinishReason::Error))
    {
        return None;
    }
    Some(choices)
}

pub(crate) fn sse_response(rx: mpsc::Receiver<String>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|s| (Ok::<Bytes, Infallible>(Bytes::from(s)), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    resp
}

fn data(j: &J) -> String {
    format!("data: {}\n\n", j.as_str())
}

/// Extracts the text of a prompt field: string, list of strings, token ids, or lists of ids.
fn prompts_of(body: &Body_) -> Option<(Vec<Vec<u32>>, Vec<String>)> {
    use serde_json::Value;
    let p = body.get("prompt")?;
    let (ids, texts): (Vec<Vec<u32>>, Vec<String>) = match p {
        Value::String(s) => (vec![crate::tokenizer::encode(s)], vec![s.clone()]),
        Value::Array(items) if items.iter().all(|i| i.is_string()) => items
            .iter()
            .map(|i| {
                let s = i.as_str().unwrap_or_default();
                (crate::tokenizer::encode(s), s.to_string())
            })
            .unzip(),
        Value::Array(items) if items.iter().all(|i| i.is_u64()) => {
            let ids: Vec<u32> = items
                .iter()
                .filter_map(|i| i.as_u64())
                .map(|i| i as u32)
                .collect();
            let text = crate::tokenizer::decode(&ids);
            (vec![ids], vec![text])
        }
        Value::Array(items) if items.iter().all(|i| i.is_array()) => items
            .iter()
            .map(|i| {
                let ids: Vec<u32> = i
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_u64())
                            .map(|x| x as u32)
                            .collect()
                    })
                    .unwrap_or_default();
                let text = crate::tokenizer::decode(&ids);
                (ids, text)
            })
            .unzip(),
        _ => return None,
    };
    if ids.is_empty() || ids.iter().any(|i| i.is_empty()) {
        return None;
    }
    Some((ids, texts))
}

/// `POST /v1/completions`
pub async fn completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (model, lora) = match resolve_model(&st, &body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some((prompts, texts)) = prompts_of(&body) else {
        return bad_request(
            "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)",
            Some("prompt"),
        );
    };
    let longest = prompts.iter().map(|p| p.len() as u64).max().unwrap_or(0);
    let max_tokens = match max_tokens_for(&st, longest, int_field(&body, "max_tokens")) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut p = match common_params(&st, &body, max_tokens) {
        Ok(p) => p,
        Err(r) => return r,
    };
    p.logprobs = int_field(&body, "logprobs").map(|l| l.max(0) as u32);
    p.echo = body.get("echo").and_then(|e| e.as_bool()).unwrap_or(false);
    if st.dead.load(Ordering::SeqCst) {
        return dead_response();
    }
    let id = format!("cmpl-{}", rand_hex());
    let created = unix_now() as u64;
    let total = prompts.len() * p.n as usize;
    let prompt_tokens: u64 = prompts.iter().map(|p| p.len() as u64).sum();
    let rx = submit(&st, &prompts, &p, lora);
    let fp = st.fingerprint.clone();
    if !p.stream {
        let Some(choices) = collect(&st, rx, total).await else {
            return dead_response();
        };
        let completion: u64 = choices.iter().map(|c| c.ids.len() as u64).sum();
        let items: Vec<J> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let prefix = if p.echo {
                    texts[i / p.n as usize].clone()
                } else {
                    String::new()
                };
                let lp = p
                    .logprobs
                    .map(|k| completion_logprobs(&c.pieces, &c.ids, k, prefix.len()))
                    .unwrap_or_else(J::null);
                obj(&[
                    ("index", v(&i)),
                    ("text", v(&format!("{prefix}{}", c.text))),
                    ("logprobs", lp),
                    ("finish_reason", finish_json(c.finish)),
                    ("stop_reason", opt_str(&c.stop_reason)),
                    ("token_ids", J::null()),
                    ("prompt_logprobs", J::null()),
                    ("prompt_token_ids", J::null()),
                    ("routed_experts", J::null()),
                ])
            })
            .collect();
        return json_response(
            StatusCode::OK,
            obj(&[
                ("id", v(&id)),
                ("object", v("text_completion")),
                ("created", v(&created)),
                ("model", v(&model)),
                ("choices", arr(&items)),
                ("service_tier", J::null()),
                ("system_fingerprint", v(&fp)),
                ("usage", usage_full(prompt_tokens, completion)),
                ("kv_transfer_params", J::null()),
                ("ec_transfer_params", J::null()),
                ("metrics", J::null()),
            ]),
        );
    }
    let (out_tx, out_rx) = mpsc::channel::<String>(64);
    let st2 = st.clone();
    tokio::spawn(async move {
        let mut rx = rx;
        let mut done = 0usize;
        let mut generated: BTreeMap<u32, u64> = BTreeMap::new();
        let mut echoed: Vec<bool> = vec![!p.echo; total];
        let head = |choice: J, extra: &[(&str, J)]| {
            let mut pairs: Vec<(&str, J)> = vec![
                ("id", v(&id)),
                ("object", v("text_completion")),
                ("created", v(&created)),
                ("model", v(&model)),
                ("choices", arr(&[choice])),
            ];
            pairs.extend(extra.iter().cloned());
            obj(&pairs)
        };
        while done < total {
            let Some(ev) = rx.recv().await else { break };
            let (index, text, ids, finish, stop_reason) = match ev {
                Event::Token {
                    index,
                    id,
                    text,
                    finish,
                } => {
                    *generated.entry(index).or_default() += 1;
                    let (f, s) = match finish {
                        Some((f, s)) => (Some(f), s),
                        None => (None, None),
                    };
                    (index, text, vec![id], f, s)
                }
                Event::Finished { index, reason } => {
                    (index, String::new(), vec![], Some(reason), None)
                }
            };
            if finish == Some(FinishReason::Error) || st2.dead.load(Ordering::SeqCst) {
                let _ = out_tx.send(data(&dead_body())).await;
                break;
            }
            let mut text = text;
            if !echoed[index as usize] {
                echoed[index as usize] = true;
                text = format!("{}{text}", texts[index as usize / p.n as usize]);
            }
            let lp = p
                .logprobs
                .map(|k| completion_logprobs(std::slice::from_ref(&text), &ids, k, 0))
                .unwrap_or_else(J::null);
            let choice = obj(&[
                ("index", v(&index)),
                ("text", v(&text)),
                ("logprobs", lp),
                ("finish_reason", finish_json(finish)),
                ("stop_reason", opt_str(&stop_reason)),
                ("prompt_token_ids", J::null()),
                ("token_ids", J::null()),
            ]);
            let mut extra: Vec<(&str, J)> = Vec::new();
            let gen_total: u64 = generated.values().sum();
            if p.continuous_usage && p.include_usage {
                extra.push(("usage", usage_short(prompt_tokens, gen_total)));
            }
            if finish.is_some() {
                done += 1;
                if !p.include_usage {
                    extra.push(("system_fingerprint", v(&fp)));
                }
            }
            if out_tx.send(data(&head(choice, &extra))).await.is_err() {
                return;
            }
        }
        if p.include_usage && !st2.dead.load(Ordering::SeqCst) {
            let gen_total: u64 = generated.values().sum();
            let last = obj(&[
                ("id", v(&id)),
                ("object", v("text_completion")),
                ("created", v(&created)),
                ("model", v(&model)),
                ("choices", arr(&[])),
                ("usage", usage_short(prompt_tokens, gen_total)),
                ("system_fingerprint", v(&fp)),
            ]);
            let _ = out_tx.send(data(&last)).await;
        }
        let _ = out_tx.send("data: [DONE]\n\n".to_string()).await;
    });
    sse_response(out_rx)
}

/// (role, text) of each chat message; content may be a string or a list of text parts.
pub fn chat_messages(messages: &serde_json::Value) -> Vec<(String, String)> {
    messages
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    let role = m
                        .get("role")
                        .and_then(|r| r.as_str())
                        .unwrap_or("user")
                        .to_string();
                    let content = match m.get("content") {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(serde_json::Value::Array(parts)) => parts
                            .iter()
                            .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                            .collect::<Vec<_>>()
                            .join(" "),
                        _ => String::new(),
                    };
                    (role, content)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(messages) = body.get("messages").filter(|m| m.is_array()) else {
        return validation_error(
            "missing",
            "body.messages",
            "Field required",
            &format!("'<dict of {} items>'", body.len()),
            None,
        );
    };
    let (model, lora) = match resolve_model(&st, &body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let has_tools = body
        .get("tools")
        .and_then(|t| t.as_array())
        .is_some_and(|t| !t.is_empty());
    let choice = body.get("tool_choice").and_then(|c| c.as_str());
    if has_tools
        && matches!(choice, None | Some("auto"))
        && !(st.args.enable_auto_tool_choice && st.args.tool_call_parser.is_some())
    {
        return bad_request(
            "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set",
            None,
        );
    }
    let agp = body
        .get("add_generation_prompt")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let prompt = crate::tokenizer::encode_chat(&chat_messages(messages), agp);
    let requested =
        int_field(&body, "max_completion_tokens").or_else(|| int_field(&body, "max_tokens"));
    let max_tokens = match max_tokens_for(&st, prompt.len() as u64, requested) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut p = match common_params(&st, &body, max_tokens) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if body.get("logprobs").and_then(|l| l.as_bool()) == Some(true) {
        p.logprobs = Some(int_field(&body, "top_logprobs").unwrap_or(0).max(0) as u32);
    }
    if st.dead.load(Ordering::SeqCst) {
        return dead_response();
    }
    let id = format!("chatcmpl-{}", rand_hex());
    let created = unix_now() as u64;
    let total = p.n as usize;
    let prompt_tokens = prompt.len() as u64;
    let rx = submit(&st, std::slice::from_ref(&prompt), &p, lora);
    let fp = st.fingerprint.clone();
    if !p.stream {
        let Some(choices) = collect(&st, rx, total).await else {
            return dead_response();
        };
        let completion: u64 = choices.iter().map(|c| c.ids.len() as u64).sum();
        let items: Vec<J> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let lp = p
                    .logprobs
                    .map(|k| chat_logprobs(&c.pieces, &c.ids, k))
                    .unwrap_or_else(J::null);
                obj(&[
                    ("index", v(&i)),
                    (
                        "message",
                        obj(&[
                            ("role", v("assistant")),
                            ("content", v(&c.text)),
                            ("refusal", J::null()),
                            ("annotations", J::null()),
                            ("audio", J::null()),
                            ("function_call", J::null()),
                            ("reasoning", J::null()),
                        ]),
                    ),
                    ("logprobs", lp),
                    ("finish_reason", finish_json(c.finish)),
                    ("stop_reason", opt_str(&c.stop_reason)),
                    ("token_ids", J::null()),
                    ("routed_experts", J::null()),
                ])
            })
            .collect();
        return json_response(
            StatusCode::OK,
            obj(&[
                ("id", v(&id)),
                ("object", v("chat.completion")),
                ("created", v(&created)),
                ("model", v(&model)),
                ("choices", arr(&items)),
                ("service_tier", J::null()),
                ("system_fingerprint", v(&fp)),
                ("usage", usage_full(prompt_tokens, completion)),
                ("prompt_logprobs", J::null()),
                ("prompt_token_ids", J::null()),
                ("prompt_text", J::null()),
                ("kv_transfer_params", J::null()),
                ("ec_transfer_params", J::null()),
                ("metrics", J::null()),
            ]),
        );
    }
    let (out_tx, out_rx) = mpsc::channel::<String>(64);
    let st2 = st.clone();
    tokio::spawn(async move {
        let mut rx = rx;
        let chunk = |choice: J, extra: &[(&str, J)]| {
            let mut pairs: Vec<(&str, J)> = vec![
                ("id", v(&id)),
                ("object", v("chat.completion.chunk")),
                ("created", v(&created)),
                ("model", v(&model)),
                ("choices", arr(&[choice])),
            ];
            pairs.extend(extra.iter().cloned());
            obj(&pairs)
        };
        for i in 0..total {
            let first = obj(&[
                ("index", v(&i)),
                (
                    "delta",
                    obj(&[("role", v("assistant")), ("content", v(""))]),
                ),
                ("logprobs", J::null()),
                ("finish_reason", J::null()),
            ]);
            let extra = [("prompt_token_ids", J::null()), ("prompt_text", J::null())];
            if out_tx.send(data(&chunk(first, &extra))).await.is_err() {
                return;
            }
        }
        let mut done = 0usize;
        let mut generated = 0u64;
        while done < total {
            let Some(ev) = rx.recv().await else { break };
            let (index, text, ids, finish, stop_reason) = match ev {
                Event::Token {
                    index,
                    id,
                    text,
                    finish,
                } => {
                    generated += 1;
                    let (f, s) = match finish {
                        Some((f, s)) => (Some(f), s),
                        None => (None, None),
                    };
                    (index, text, vec![id], f, s)
                }
                Event::Finished { index, reason } => {
                    (index, String::new(), vec![], Some(reason), None)
                }
            };
            if finish == Some(FinishReason::Error) || st2.dead.load(Ordering::SeqCst) {
                let _ = out_tx.send(data(&dead_body())).await;
                break;
            }
            let lp = p
                .logprobs
                .map(|k| chat_logprobs(std::slice::from_ref(&text), &ids, k))
                .unwrap_or_else(J::null);
            let mut fields: Vec<(&str, J)> = vec![
                ("index", v(&index)),
                ("delta", obj(&[("content", v(&text))])),
                ("logprobs", lp),
                ("finish_reason", finish_json(finish)),
            ];
            if finish.is_some() {
                fields.push(("stop_reason", opt_str(&stop_reason)));
            }
            fields.push(("token_ids", J::null()));
            let mut extra: Vec<(&str, J)> = Vec::new();
            if p.continuous_usage && p.include_usage {
                extra.push(("usage", usage_short(prompt_tokens, generated)));
            }
            if finish.is_some() {
                done += 1;
                if !p.include_usage {
                    extra.push(("system_fingerprint", v(&fp)));
                }
            }
            if out_tx
                .send(data(&chunk(obj(&fields), &extra)))
                .await
                .is_err()
            {
                return;
            }
        }
        if p.include_usage && !st2.dead.load(Ordering::SeqCst) {
            let last = obj(&[
                ("id", v(&id)),
                ("object", v("chat.completion.chunk")),
                ("created", v(&created)),
                ("model", v(&model)),
                ("choices", arr(&[])),
                ("usage", usage_short(prompt_tokens, generated)),
                ("system_fingerprint", v(&fp)),
            ]);
            let _ = out_tx.send(data(&last)).await;
        }
        let _ = out_tx.send("data: [DONE]\n\n".to_string()).await;
    });
    sse_response(out_rx)
}
