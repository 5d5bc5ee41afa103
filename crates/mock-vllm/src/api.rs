//! The HTTP API: routes, vLLM's error bodies, API-key guard, access log, HTTP metrics and the
//! request-level fault injection (`MOCK_VLLM_SLOW_MS`, `MOCK_VLLM_HTTP_500`, `MOCK_VLLM_METRICS`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::env::{MetricsFault, Settings};
use crate::http::{
    AppState, Lora, Peer, bad_request, error_response, json_response, parse_body, rand_hex,
    resolve_model, unix_now, validation_error,
};
use crate::json::{J, arr, obj, v};
use crate::pyrepr::str_repr;

fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

/// Plain text with no content type (LoRA load/unload success, as captured).
fn bare_text(text: String) -> Response {
    Response::new(Body::from(text))
}

/// What a generating server serves, in the order vLLM logs them.
pub const GENERATE_ROUTES: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
];

/// What a pooling server serves instead, in the order vLLM logs them.
pub const POOLING_ROUTES: [&str; 6] = [
    "/v1/embeddings",
    "/score",
    "/v1/score",
    "/rerank",
    "/v1/rerank",
    "/v2/rerank",
];

/// The paths served with this configuration.
pub fn routes(settings: &Settings, pooling: bool) -> Vec<&'static str> {
    let mut r = vec![
        "/health",
        "/ping",
        "/version",
        "/load",
        "/metrics",
        "/tokenize",
        "/detokenize",
        "/v1/models",
    ];
    r.extend(if pooling {
        &POOLING_ROUTES[..]
    } else {
        &GENERATE_ROUTES[..]
    });
    if settings.runtime_lora {
        r.extend(["/v1/load_lora_adapter", "/v1/unload_lora_adapter"]);
    }
    if settings.dev_mode {
        r.extend([
            "/sleep",
            "/wake_up",
            "/is_sleeping",
            "/reset_prefix_cache",
            "/is_paused",
            "/server_info",
        ]);
    }
    r
}

/// Builds the router for this server's configuration.
pub fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new()
        .route("/health", get(health))
        .route("/ping", get(ping).post(ping))
        .route("/version", get(version))
        .route("/load", get(load))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/v1/models", get(models));
    r = if state.pooling {
        use crate::pooling::{embeddings, rerank, score};
        r.route("/v1/embeddings", post(embeddings))
            .route("/score", post(score))
            .route("/v1/score", post(score))
            .route("/rerank", post(rerank))
            .route("/v1/rerank", post(rerank))
            .route("/v2/rerank", post(rerank))
    } else {
        r.route("/v1/completions", post(crate::openai::completions))
            .route(
                "/v1/chat/completions",
                post(crate::openai::chat_completions),
            )
            .route("/v1/messages", post(crate::messages::messages))
            .route(
                "/v1/messages/count_tokens",
                post(crate::messages::count_tokens),
            )
    };
    if state.settings.runtime_lora {
        r = r
            .route("/v1/load_lora_adapter", post(load_lora))
            .route("/v1/unload_lora_adapter", post(unload_lora));
    }
    if state.settings.dev_mode {
        r = r
            .route("/sleep", post(sleep))
            .route("/wake_up", post(wake_up))
            .route("/is_sleeping", get(is_sleeping))
            .route("/reset_prefix_cache", post(reset_prefix_cache))
            .route("/is_paused", get(is_paused))
            .route("/server_info", get(server_info));
    }
    r.fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), outer))
        .with_state(state)
}

async fn not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, obj(&[("detail", v("Not Found"))]))
}

/// Handlers prometheus-fastapi-instrumentator leaves out in vLLM.
const UNINSTRUMENTED: &[&str] = &[
    "/metrics",
    "/health",
    "/load",
    "/ping",
    "/version",
    "/server_info",
];

async fn outer(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let handler = if routes(&st.settings, st.pooling).contains(&path.as_str()) {
        path.clone()
    } else {
        "none".to_string()
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.0)
        .or_else(|| req.extensions().get::<Peer>().map(|p| p.0));
    let req_bytes: f64 = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let version = format!("{:?}", req.version())
        .trim_start_matches("HTTP/")
        .to_string();

    if !st.settings.slow.is_zero() {
        tokio::time::sleep(st.settings.slow).await;
    }
    let is_v1 = path.starts_with("/v1");
    let mut resp = if is_v1 && method != Method::OPTIONS && !authorized(&st, &req) {
        json_response(
            StatusCode::UNAUTHORIZED,
            obj(&[("error", v("Unauthorized"))]),
        )
    } else if is_v1 && inject_500(&st) {
        error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error (injected by MOCK_VLLM_HTTP_500)",
            "InternalServerError",
            None,
        )
    } else {
        next.run(req).await
    };
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        let allow = resp.headers().get(header::ALLOW).cloned();
        resp = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            obj(&[("detail", v("Method Not Allowed"))]),
        );
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    }
    let headers = resp.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static("uvicorn"));
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    let status = resp.status();
    if !UNINSTRUMENTED.contains(&handler.as_str()) {
        let resp_bytes: f64 = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                axum::body::HttpBody::size_hint(resp.body())
                    .exact()
                    .unwrap_or(0) as f64
            });
        if let Ok(mut h) = st.http.lock() {
            h.record(
                &handler,
                method.as_str(),
                status.as_u16(),
                req_bytes,
                resp_bytes,
                start.elapsed().as_secs_f64(),
                unix_now(),
            );
        }
    }
    if !st.args.disable_uvicorn_access_log {
        let who = peer
            .map(|p| p.to_string())
            .unwrap_or_else(|| "127.0.0.1:0".into());
        crate::logging::plain(&format!(
            "INFO:     {who} - \"{method} {path_q} HTTP/{version}\" {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ));
    }
    resp
}

fn authorized(st: &AppState, req: &Request) -> bool {
    let Some(key) = &st.api_key else { return true };
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {key}"))
}

/// Every k-th /v1 request fails, k = round(1 / rate).
fn inject_500(st: &AppState) -> bool {
    let rate = st.settings.http_500_rate;
    if rate <= 0.0 {
        return false;
    }
    let k = (1.0 / rate).round().max(1.0) as u64;
    let n = st.v1_counter.fetch_add(1, Ordering::Relaxed) + 1;
    n.is_multiple_of(k)
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    if st.dead.load(Ordering::SeqCst) {
        empty(StatusCode::SERVICE_UNAVAILABLE)
    } else {
        empty(StatusCode::OK)
    }
}

async fn ping(State(st): State<Arc<AppState>>) -> Response {
    health(State(st)).await
}

async fn version() -> Response {
    json_response(StatusCode::OK, obj(&[("version", v("0.32.0"))]))
}

async fn load(State(st): State<Arc<AppState>>) -> Response {
    let n = if st.args.enable_server_load_tracking {
        st.engine.load()
    } else {
        0
    };
    json_response(StatusCode::OK, obj(&[("server_load", v(&n))]))
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let text = {
        let http = st.http.lock().map(|h| h.clone()).unwrap_or_default();
        crate::metrics::render(&crate::metrics::RenderCtx {
            engine: &st.engine,
            http: &http,
            model_name: &st.served[0],
            created: st.created,
            include_lora: st.args.enable_lora,
            include_sleep: st.settings.dev_mode,
            cache_config: &st.cache_config,
        })
    };
    let (body, ctype) = match st.settings.metrics_fault {
        MetricsFault::None => (text, "text/plain; version=1.0.0; charset=utf-8"),
        MetricsFault::Malformed => {
            let mut t = text;
            t.push_str("vllm:num_requests_running{engine=\"0\",model_name= 1.0\nthis is not prometheus text\nvllm:kv_cache_usage_perc{engine=\"0\"} not-a-number\n# TYPE vllm:broken histogram_of_doom\n");
            (t, "text/plain; version=1.0.0; charset=utf-8")
        }
        MetricsFault::Truncated => {
            let mut cut = text.len() / 2;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            // End in the middle of a line.
            let cut = text[..cut].rfind('\n').map(|p| p + 8).unwrap_or(cut).min(text.len());
            (text[..cut].to_string(), "text/plain; version=1.0.0; charset=utf-8")
        }
        MetricsFault::Html => (
            "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1><p>nginx</p></body></html>\n".to_string(),
            "text/html; charset=utf-8",
        ),
        MetricsFault::Huge => {
            let mut t = text;
            t.push_str("# HELP vllm:mock_padding Padding series (MOCK_VLLM_METRICS=huge).\n# TYPE vllm:mock_padding gauge\n");
            let mut i = 0u64;
            while t.len() < 50 * 1024 * 1024 {
                t.push_str(&format!(
                    "vllm:mock_padding{{engine=\"0\",model_name=\"{}\",series=\"{i}\"}} {i}.0\n",
                    st.served[0]
                ));
                i += 1;
            }
            (t, "text/plain; version=1.0.0; charset=utf-8")
        }
    };
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

async fn tokenize(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = resolve_model(&st, &body) {
        return r;
    }
    let tokens: Vec<u32> = if let Some(messages) = body.get("messages") {
        let msgs = crate::openai::chat_messages(messages);
        let agp = body
            .get("add_generation_prompt")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        crate::tokenizer::encode_chat(&msgs, agp)
    } else if let Some(p) = body.get("prompt").and_then(|p| p.as_str()) {
        crate::tokenizer::encode(p)
    } else {
        return validation_error(
            "missing",
            "body.prompt",
            "Field required",
            &format!("'<dict of {} items>'", body.len()),
            None,
        );
    };
    let strs = if body.get("return_token_strs").and_then(|v| v.as_bool()) == Some(true) {
        let s: Vec<String> = tokens
            .iter()
            .map(|t| crate::tokenizer::id_text(*t))
            .collect();
        v(&s)
    } else {
        J::null()
    };
    json_response(
        StatusCode::OK,
        obj(&[
            ("count", v(&tokens.len())),
            ("max_model_len", v(&st.max_model_len)),
            ("tokens", v(&tokens)),
            ("token_strs", strs),
        ]),
    )
}

async fn detokenize(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = resolve_model(&st, &body) {
        return r;
    }
    let Some(tokens) = body.get("tokens").and_then(|t| t.as_array()) else {
        return validation_error(
            "missing",
            "body.tokens",
            "Field required",
            &format!("'<dict of {} items>'", body.len()),
            None,
        );
    };
    let ids: Vec<u32> = tokens
        .iter()
        .filter_map(|t| t.as_u64())
        .map(|t| t as u32)
        .collect();
    json_response(
        StatusCode::OK,
        obj(&[("prompt", v(&crate::tokenizer::decode(&ids)))]),
    )
}

fn model_card(
    id: &str,
    root: &str,
    parent: Option<&str>,
    max_model_len: Option<u64>,
    created: u64,
) -> J {
    obj(&[
        ("id", v(id)),
        ("object", v("model")),
        ("created", v(&created)),
        ("owned_by", v("vllm")),
        ("root", v(root)),
        ("parent", parent.map(v).unwrap_or_else(J::null)),
        (
            "max_model_len",
            max_model_len.map(|m| v(&m)).unwrap_or_else(J::null),
        ),
        (
            "permission",
            arr(&[obj(&[
                ("id", v(&format!("modelperm-{}", rand_hex()))),
                ("object", v("model_permission")),
                ("created", v(&created)),
                ("allow_create_engine", v(&false)),
                ("allow_sampling", v(&true)),
                ("allow_logprobs", v(&true)),
                ("allow_search_indices", v(&false)),
                ("allow_view", v(&true)),
                ("allow_fine_tuning", v(&false)),
                ("organization", v("*")),
                ("group", J::null()),
                ("is_blocking", v(&false)),
            ])]),
        ),
    ])
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    let created = unix_now() as u64;
    let mut data: Vec<J> = st
        .served
        .iter()
        .map(|name| model_card(name, &st.args.model, None, Some(st.max_model_len), created))
        .collect();
    for l in st.loras.lock().map(|l| l.clone()).unwrap_or_default() {
        data.push(model_card(&l.name, &l.path, Some(&l.base), None, created));
    }
    json_response(
        StatusCode::OK,
        obj(&[("object", v("list")), ("data", arr(&data))]),
    )
}

/// Checks a LoRA adapter directory; Err is the message after "Loading lora NAME failed: ".
pub fn check_lora_dir(path: &str, max_rank: u64) -> Result<(), (StatusCode, String)> {
    let dir = std::path::Path::new(path);
    let cfg = dir.join("adapter_config.json");
    if !dir.is_dir() || !cfg.is_file() {
        return Err((
            StatusCode::NOT_FOUND,
            format!("No adapter found for {path}"),
        ));
    }
    let rank = std::fs::read_to_string(&cfg)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("r").and_then(|r| r.as_u64()));
    if let Some(r) = rank
        && r > max_rank
    {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("LoRA rank {r} is greater than max_lora_rank {max_rank}."),
        ));
    }
    Ok(())
}

async fn load_lora(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let input = format!("'<dict of {} items>'", body.len());
    let Some(name) = body
        .get("lora_name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
    else {
        return validation_error("missing", "body.lora_name", "Field required", &input, None);
    };
    let Some(path) = body
        .get("lora_path")
        .and_then(|v| v.as_str())
        .map(str::to_string)
    else {
        return validation_error("missing", "body.lora_path", "Field required", &input, None);
    };
    let inplace = body
        .get("load_inplace")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let exists = st
        .loras
        .lock()
        .map(|l| l.iter().any(|x| x.name == name))
        .unwrap_or(false);
    if exists && !inplace {
        return error_response(
            StatusCode::BAD_REQUEST,
            &format!(
                "The lora adapter '{name}' has already been loaded. If you want to load the adapter in place, set 'load_inplace' to True."
            ),
            "InvalidUserInput",
            None,
        );
    }
    if !st.args.enable_lora {
        return bad_request(
            &format!(
                "Loading lora {name} failed: LoRA is not enabled. Use --enable-lora to enable LoRA."
            ),
            None,
        );
    }
    if let Err((status, msg)) = check_lora_dir(&path, st.args.max_lora_rank) {
        let typ = if status == StatusCode::NOT_FOUND {
            "NotFoundError"
        } else {
            "BadRequestError"
        };
        return error_response(
            status,
            &format!("Loading lora {name} failed: {msg}"),
            typ,
            None,
        );
    }
    if let Ok(mut l) = st.loras.lock() {
        l.retain(|x| x.name != name);
        l.push(Lora {
            name: name.clone(),
            path,
            base: st.served[0].clone(),
        });
    }
    crate::logging::api_info(
        "serving_models.py:219",
        &format!("Loaded new LoRA adapter: name '{name}'"),
    );
    bare_text(format!(
        "Success: LoRA adapter '{name}' added successfully."
    ))
}

async fn unload_lora(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let input = format!("'<dict of {} items>'", body.len());
    let Some(name) = body
        .get("lora_name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
    else {
        return validation_error("missing", "body.lora_name", "Field required", &input, None);
    };
    let removed = st
        .loras
        .lock()
        .map(|mut l| {
            let before = l.len();
            l.retain(|x| x.name != name);
            before != l.len()
        })
        .unwrap_or(false);
    if !removed {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("The lora adapter '{name}' cannot be found."),
            "NotFoundError",
            None,
        );
    }
    crate::logging::api_info(
        "serving_models.py:251",
        &format!("Removed LoRA adapter: name '{name}'"),
    );
    bare_text(format!(
        "Success: LoRA adapter '{name}' removed successfully."
    ))
}

/// Values of one query parameter (repeated or comma-free), URL-decoded.
fn query_values(req_query: Option<&str>, key: &str) -> Vec<String> {
    let Some(q) = req_query else {
        return Vec::new();
    };
    q.split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn sleep(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let raw = query_values(req.uri().query(), "level").into_iter().next();
    let level: i64 = match raw {
        None => 1,
        Some(r) => match r.trim().parse::<i64>() {
            Ok(l) => l,
            Err(_) => {
                return validation_error(
                    "int_parsing",
                    "query.level",
                    "Input should be a valid integer, unable to parse string as an integer",
                    &str_repr(&r),
                    None,
                );
            }
        },
    };
    if level > 2 {
        return validation_error(
            "less_than_equal",
            "query.level",
            "Input should be less than or equal to 2",
            &str_repr(&level.to_string()),
            Some("{'le': 2}"),
        );
    }
    if level < 0 {
        return validation_error(
            "greater_than_equal",
            "query.level",
            "Input should be greater than or equal to 0",
            &str_repr(&level.to_string()),
            Some("{'ge': 0}"),
        );
    }
    st.engine.sleep(level as u8);
    json_response(
        StatusCode::OK,
        obj(&[("status", v("sleeping")), ("level", v(&level))]),
    )
}

async fn wake_up(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let tags = query_values(req.uri().query(), "tags");
    let awake = if tags.is_empty() {
        st.engine.wake(None)
    } else {
        st.engine.wake(Some(&tags))
    };
    let tags_json = if tags.is_empty() { J::null() } else { v(&tags) };
    json_response(
        StatusCode::OK,
        obj(&[
            ("status", v(if awake { "awake" } else { "sleeping" })),
            ("tags", tags_json),
        ]),
    )
}

async fn is_sleeping(State(st): State<Arc<AppState>>) -> Response {
    json_response(
        StatusCode::OK,
        obj(&[("is_sleeping", v(&st.engine.is_sleeping()))]),
    )
}

async fn reset_prefix_cache(State(st): State<Arc<AppState>>) -> Response {
    st.engine.reset_prefix_cache();
    json_response(StatusCode::OK, obj(&[("success", v(&true))]))
}

async fn is_paused() -> Response {
    json_response(StatusCode::OK, obj(&[("is_paused", v(&false))]))
}

async fn server_info(State(st): State<Arc<AppState>>) -> Response {
    let a = &st.args;
    let config = format!(
        "model={}, speculative_config=None, tokenizer={}, skip_tokenizer_init=False, tokenizer_mode=auto, revision=None, tokenizer_revision=None, trust_remote_code=False, dtype={}, max_seq_len={}, download_dir=None, load_format=auto, tensor_parallel_size={}, pipeline_parallel_size={}, data_parallel_size=1, quantization=None, enforce_eager={}, kv_cache_dtype={}, seed={}, served_model_name={}, enable_prefix_caching={}, enable_chunked_prefill=True",
        str_repr(&a.model),
        str_repr(&a.model),
        a.dtype,
        st.max_model_len,
        a.tensor_parallel_size,
        a.pipeline_parallel_size,
        if a.enforce_eager { "True" } else { "False" },
        a.kv_cache_dtype,
        a.seed,
        st.served.join(", "),
        if a.enable_prefix_caching {
            "True"
        } else {
            "False"
        },
    );
    json_response(
        StatusCode::OK,
        obj(&[
            ("vllm_config", v(&config)),
            ("vllm_env", obj(&[("VLLM_SERVER_DEV_MODE", v(&true))])),
            ("system_env", obj(&[("vllm_version", v("0.32.0"))])),
        ]),
    )
}
