//! A client for one vLLM server's HTTP API: pooled, with timeouts, keys and typed calls.
//!
//! One [`VllmClient`] per endpoint is built once and reused across tool calls: it owns a
//! pooled `reqwest::Client` (keep-alive connections), the endpoint's API key (sent as
//! `Authorization: Bearer` on every request; real vLLM only checks it on `/v1/*`), and a
//! short-lived cache of model metadata. Failures become [`Error`]s a user can act on:
//! refused connections and TLS failures are `BACKEND_UNREACHABLE`, slow answers
//! `BACKEND_TIMEOUT`, error statuses `BACKEND_ERROR` carrying vLLM's own message.

use crate::config::{EndpointConfig, HttpConfig};
use crate::error::{Error, Result};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest `/metrics` body we read; a bigger one is an error, not an out-of-memory. A
/// real vLLM's is about 60 KB per model; parsed, an exposition takes about 17 times its
/// text (a 50 MB one peaked the monitor at 271 MiB when the cap was 64 MiB).
pub const MAX_METRICS_BYTES: usize = 8 * 1024 * 1024;
/// Largest body of any other answer.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Everything needed to talk to one server.
#[derive(Clone)]
pub struct EndpointSpec {
    /// Short name for answers and logs.
    pub name: String,
    /// `http(s)://host:port`, no trailing `/v1`.
    pub base_url: String,
    /// The key vLLM was started with (`--api-key`), if any.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub completion_timeout: Duration,
    pub metadata_ttl: Duration,
    /// Extra CA certificate (PEM) to trust.
    pub tls_ca_pem: Option<Vec<u8>>,
    pub tls_accept_invalid_certs: bool,
}

impl std::fmt::Debug for EndpointSpec {
    // Hand-written so that the key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSpec")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field(
                "api_key",
                &self.api_key.as_ref().map(|_| crate::redact::MASK),
            )
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl EndpointSpec {
    /// A spec with the given URL and the default timeouts.
    pub fn new(name: &str, base_url: &str, http: &HttpConfig) -> EndpointSpec {
        EndpointSpec {
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: None,
            connect_timeout: Duration::from_secs_f64(http.connect_timeout_seconds),
            request_timeout: Duration::from_secs_f64(http.request_timeout_seconds),
            completion_timeout: Duration::from_secs_f64(http.completion_timeout_seconds),
            metadata_ttl: Duration::from_secs_f64(http.metadata_ttl_seconds),
            tls_ca_pem: None,
            tls_accept_invalid_certs: false,
        }
    }

    /// A server we launched: the key `vllm serve` was given, read from the variable
    /// `launcher.api_key_env` names.
    pub fn launched(name: &str, base_url: &str, config: &crate::config::Config) -> EndpointSpec {
        let mut spec = EndpointSpec::new(name, base_url, &config.http);
        spec.api_key = config
            .launcher
            .api_key_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok())
            .filter(|v| !v.is_empty());
        spec
    }

    /// From the config, reading the key from the environment variable it names.
    pub fn from_config(e: &EndpointConfig, http: &HttpConfig) -> Result<EndpointSpec> {
        let mut spec = EndpointSpec::new(&e.name, &e.base_url, http);
        if let Some(var) = &e.api_key_env {
            spec.api_key = std::env::var(var).ok().filter(|v| !v.is_empty());
        }
        if let Some(t) = e.request_timeout_seconds {
            spec.request_timeout = Duration::from_secs_f64(t);
        }
        if let Some(ca) = &e.tls_ca_file {
            spec.tls_ca_pem = Some(std::fs::read(ca).map_err(|err| Error::Config {
                path: None,
                key: format!("endpoints.{}.tls_ca_file", e.name),
                message: format!("cannot read {}: {err}", ca.display()),
            })?);
        }
        spec.tls_accept_invalid_certs = e.tls_accept_invalid_certs;
        Ok(spec)
    }
}

/// One entry of `/v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The served name.
    pub id: String,
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub owned_by: Option<String>,
    /// The model path or repo the server loaded.
    #[serde(default)]
    pub root: Option<String>,
    /// For a LoRA adapter: the base model's served name.
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub max_model_len: Option<u64>,
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelCard>,
}

/// What `/health` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Health {
    /// 200: serving.
    Ready,
    /// Any other status: the engine is dead or dying (vLLM answers 503 then exits).
    Unhealthy(u16),
}

/// A client for one vLLM server. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct VllmClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    spec: EndpointSpec,
    http: reqwest::Client,
    /// `/v1/models` with the time it was fetched; refreshed after `metadata_ttl`.
    models: Mutex<Option<(Instant, Vec<ModelCard>)>>,
}

/// Installs ring as rustls' process-wide provider (reqwest is built without one, to spare a
/// C build of aws-lc). Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl VllmClient {
    /// Builds the pooled client. Fails only on a bad CA certificate.
    pub fn new(spec: EndpointSpec) -> Result<VllmClient> {
        install_tls_provider();
        let mut b = reqwest::Client::builder()
            .connect_timeout(spec.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("vllm-mcp/", env!("CARGO_PKG_VERSION")))
            .tls_danger_accept_invalid_certs(spec.tls_accept_invalid_certs);
        if let Some(pem) = &spec.tls_ca_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| Error::Config {
                path: None,
                key: format!("endpoints.{}.tls_ca_file", spec.name),
                message: format!("not a PEM certificate: {e}"),
            })?;
            b = b.add_root_certificate(cert);
        } else if spec.base_url.starts_with("http://") {
            // Plain HTTP needs no roots: without this, every client reads and parses the
            // system's CA store (300 files here) at construction, once per endpoint, for
            // nothing. An https:// endpoint gets the system's roots as before.
            b = b.tls_certs_only([]);
        }
        let http = b
            .build()
            .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
        Ok(VllmClient {
            inner: Arc::new(Inner {
                spec,
                http,
                models: Mutex::new(None),
            }),
        })
    }

    /// The endpoint's base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.spec.base_url
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.inner.spec.name
    }

    /// A request to pass a client's call through (the front door): the pooled connection
    /// and the endpoint's own key, with no time limit (a stream lasts as long as it
    /// lasts; the caller bounds what it must).
    pub fn forward(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.inner.http.request(method, self.url(path));
        if let Some(k) = &self.inner.spec.api_key {
            rb = rb.bearer_auth(k);
        }
        rb
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.spec.base_url, path)
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        let mut rb = self
            .inner
            .http
            .request(method, self.url(path))
            .timeout(timeout);
        if let Some(k) = &self.inner.spec.api_key {
            rb = rb.bearer_auth(k);
        }
        rb
    }

    /// Sends, maps transport errors, and checks the status; returns the body.
    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        path: &str,
        cap: usize,
    ) -> Result<(u16, Vec<u8>)> {
        let url = self.url(path);
        let resp = rb.send().await.map_err(|e| self.transport_error(&url, e))?;
        let status = resp.status().as_u16();
        let body = read_capped(resp, cap).await.map_err(|e| match e {
            ReadError::TooLarge => Error::BackendError {
                url: url.clone(),
                status,
                message: format!("answer larger than {} MiB", cap / (1024 * 1024)),
                kind: Some("TooLarge".into()),
            },
            ReadError::Http(e) => self.transport_error(&url, e),
        })?;
        if !(200..300).contains(&status) {
            let (message, kind) = vllm_error_message(&body);
            return Err(Error::BackendError {
                url,
                status,
                message,
                kind,
            });
        }
        Ok((status, body))
    }

    fn transport_error(&self, url: &str, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            // A connect timeout is also a timeout, but the connect timeout is the short one.
            return Error::BackendTimeout {
                url: url.to_string(),
                after: if e.is_connect() {
                    self.inner.spec.connect_timeout
                } else {
                    self.inner.spec.request_timeout
                },
            };
        }
        Error::BackendUnreachable {
            url: url.to_string(),
            message: error_chain(&e),
        }
    }

    /// GET `path` (with its query string) as JSON, with the client's pooling, timeouts,
    /// body limit and error mapping: for the HTTP APIs beside vLLM's own that the monitor
    /// reads (Prometheus's query API).
    pub async fn get_value(&self, path: &str) -> Result<Value> {
        self.get_json(path).await
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T> {
        let rb = self.request(reqwest::Method::GET, path, self.inner.spec.request_timeout);
        let (_, body) = self.send(rb, path, MAX_BODY_BYTES).await?;
        self.decode(path, &body)
    }

    fn decode<T: for<'de> Deserialize<'de>>(&self, path: &str, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| Error::BackendError {
            url: self.url(path),
            status: 200,
            message: format!("unexpected answer ({e}): {}", preview(body)),
            kind: Some("MalformedResponse".into()),
        })
    }

    async fn post_json(&self, path: &str, body: &Value, timeout: Duration) -> Result<Vec<u8>> {
        let rb = self
            .request(reqwest::Method::POST, path, timeout)
            .json(body);
        Ok(self.send(rb, path, MAX_BODY_BYTES).await?.1)
    }

    /// `GET /health`: `Ready` on 200, `Unhealthy(status)` otherwise; transport errors are errors.
    pub async fn health(&self) -> Result<Health> {
        let rb = self.request(
            reqwest::Method::GET,
            "/health",
            self.inner.spec.request_timeout,
        );
        match self.send(rb, "/health", MAX_BODY_BYTES).await {
            Ok(_) => Ok(Health::Ready),
            Err(Error::BackendError { status, .. }) => Ok(Health::Unhealthy(status)),
            Err(e) => Err(e),
        }
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<String> {
        #[derive(Deserialize)]
        struct V {
            version: String,
        }
        Ok(self.get_json::<V>("/version").await?.version)
    }

    /// `GET /v1/models`, from the cache when younger than the metadata TTL.
    pub async fn models(&self) -> Result<Vec<ModelCard>> {
        let ttl = self.inner.spec.metadata_ttl;
        if let Some((at, models)) = &*self.inner.models.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < ttl
        {
            return Ok(models.clone());
        }
        self.models_fresh().await
    }

    /// `GET /v1/models`, bypassing and refreshing the cache.
    pub async fn models_fresh(&self) -> Result<Vec<ModelCard>> {
        let list: ModelList = self.get_json("/v1/models").await?;
        *self.inner.models.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), list.data.clone()));
        Ok(list.data)
    }

    /// Forgets cached metadata (after a LoRA load or a relaunch).
    pub fn invalidate(&self) {
        *self.inner.models.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// `GET /metrics` as text, at most [`MAX_METRICS_BYTES`].
    pub async fn metrics_text(&self) -> Result<String> {
        let rb = self.request(
            reqwest::Method::GET,
            "/metrics",
            self.inner.spec.request_timeout,
        );
        let (_, body) = self.send(rb, "/metrics", MAX_METRICS_BYTES).await?;
        String::from_utf8(body).map_err(|_| Error::BackendError {
            url: self.url("/metrics"),
            status: 200,
            message: "metrics are not UTF-8 text".into(),
            kind: Some("MalformedResponse".into()),
        })
    }

    /// `POST /v1/load_lora_adapter`. vLLM answers plain text on success.
    pub async fn load_lora_adapter(&self, name: &str, path: &str) -> Result<String> {
        let body = serde_json::json!({"lora_name": name, "lora_path": path});
        let out = self
            .post_json(
                "/v1/load_lora_adapter",
                &body,
                self.inner.spec.completion_timeout,
            )
            .await?;
        self.invalidate();
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// `POST /v1/unload_lora_adapter`.
    pub async fn unload_lora_adapter(&self, name: &str) -> Result<String> {
        let body = serde_json::json!({"lora_name": name});
        let out = self
            .post_json(
                "/v1/unload_lora_adapter",
                &body,
                self.inner.spec.request_timeout,
            )
            .await?;
        self.invalidate();
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// `POST /sleep?level=N` (dev mode only).
    pub async fn sleep(&self, level: u8) -> Result<()> {
        let path = format!("/sleep?level={level}");
        let rb = self.request(
            reqwest::Method::POST,
            &path,
            self.inner.spec.completion_timeout,
        );
        self.send(rb, &path, MAX_BODY_BYTES).await.map(drop)
    }

    /// `POST /wake_up` (dev mode only).
    pub async fn wake_up(&self) -> Result<()> {
        let rb = self.request(
            reqwest::Method::POST,
            "/wake_up",
            self.inner.spec.completion_timeout,
        );
        self.send(rb, "/wake_up", MAX_BODY_BYTES).await.map(drop)
    }

    /// `GET /is_sleeping` (dev mode only).
    pub async fn is_sleeping(&self) -> Result<bool> {
        #[derive(Deserialize)]
        struct S {
            is_sleeping: bool,
        }
        Ok(self.get_json::<S>("/is_sleeping").await?.is_sleeping)
    }

    /// `POST /reset_prefix_cache` (dev mode only).
    pub async fn reset_prefix_cache(&self) -> Result<()> {
        let rb = self.request(
            reqwest::Method::POST,
            "/reset_prefix_cache",
            self.inner.spec.request_timeout,
        );
        self.send(rb, "/reset_prefix_cache", MAX_BODY_BYTES)
            .await
            .map(drop)
    }

    /// `POST /v1/completions` (non-streaming): vLLM's JSON answer.
    pub async fn completion(&self, request: &Value) -> Result<Value> {
        let out = self
            .post_json(
                "/v1/completions",
                request,
                self.inner.spec.completion_timeout,
            )
            .await?;
        self.decode("/v1/completions", &out)
    }

    /// `POST /v1/chat/completions` (non-streaming): vLLM's JSON answer.
    pub async fn chat(&self, request: &Value) -> Result<Value> {
        let out = self
            .post_json(
                "/v1/chat/completions",
                request,
                self.inner.spec.completion_timeout,
            )
            .await?;
        self.decode("/v1/chat/completions", &out)
    }

    /// `POST /v1/completions` with `stream: true`: every `data:` chunk, parsed, until `[DONE]`.
    pub async fn completion_stream(&self, request: &Value) -> Result<Vec<Value>> {
        Ok(self
            .completion_stream_timed(request)
            .await?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// [`completion_stream`](Self::completion_stream) with each chunk's arrival, measured
    /// from just before the request was sent: for client-side time to first token and
    /// inter-token latency. The body is read as it arrives, within `MAX_BODY_BYTES`.
    pub async fn completion_stream_timed(&self, request: &Value) -> Result<Vec<(Duration, Value)>> {
        let mut req = request.clone();
        req["stream"] = Value::Bool(true);
        let path = "/v1/completions";
        let url = self.url(path);
        let rb = self
            .request(
                reqwest::Method::POST,
                path,
                self.inner.spec.completion_timeout,
            )
            .json(&req);
        let started = Instant::now();
        let resp = rb.send().await.map_err(|e| self.transport_error(&url, e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = read_capped(resp, MAX_BODY_BYTES).await.unwrap_or_default();
            let (message, kind) = vllm_error_message(&body);
            return Err(Error::BackendError {
                url,
                status,
                message,
                kind,
            });
        }
        let too_large = || Error::BackendError {
            url: url.clone(),
            status,
            message: "stream too large".into(),
            kind: Some("TooLarge".into()),
        };
        let mut chunks = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut read = 0usize;
        let mut stream = resp.bytes_stream();
        while let Some(bytes) = stream.next().await {
            let bytes = bytes.map_err(|e| self.transport_error(&url, e))?;
            let at = started.elapsed();
            read += bytes.len();
            if read > MAX_BODY_BYTES {
                return Err(too_large());
            }
            pending.extend_from_slice(&bytes);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim_end().strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    return Ok(chunks);
                }
                chunks.push((at, self.decode(path, data.as_bytes())?));
            }
        }
        Ok(chunks)
    }
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

async fn read_capped(
    resp: reqwest::Response,
    cap: usize,
) -> std::result::Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n as usize > cap) {
        return Err(ReadError::TooLarge);
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Http)?;
        if out.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// vLLM's message from an error body: `{"error":{"message","type"}}` (OpenAI style),
/// `{"error":"Unauthorized"}` (API key), `{"detail":"Not Found"}` (FastAPI), or plain text.
pub fn vllm_error_message(body: &[u8]) -> (String, Option<String>) {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(m) = v.pointer("/error/message").and_then(Value::as_str) {
            let kind = v
                .pointer("/error/type")
                .and_then(Value::as_str)
                .map(String::from);
            return (m.to_string(), kind);
        }
        if let Some(m) = v.get("error").and_then(Value::as_str) {
            return (m.to_string(), None);
        }
        if let Some(d) = v.get("detail") {
            let m = d
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| d.to_string());
            return (m, None);
        }
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            return (m.to_string(), None);
        }
    }
    let text = preview(body);
    if text.is_empty() {
        ("(empty body)".into(), None)
    } else {
        (text, None)
    }
}

fn preview(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(300)]);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The error and its sources, joined: reqwest's top message alone says only
/// "error sending request", while the cause ("Connection refused", "invalid peer
/// certificate: UnknownIssuer") is what a user needs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = s.source();
    }
    crate::redact::redact_text(&parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_from_the_captures() {
        let cases: [(&str, &str, Option<&str>); 5] = [
            (
                r#"{"error":{"message":"The model `nope` does not exist. Valid aliases: tiny.","type":"NotFoundError","param":"model","code":404}}"#,
                "The model `nope` does not exist. Valid aliases: tiny.",
                Some("NotFoundError"),
            ),
            (r#"{"error":"Unauthorized"}"#, "Unauthorized", None),
            (r#"{"detail":"Not Found"}"#, "Not Found", None),
            ("Internal Server Error", "Internal Server Error", None),
            ("", "(empty body)", None),
        ];
        for (body, msg, kind) in cases {
            let (m, k) = vllm_error_message(body.as_bytes());
            assert_eq!(m, msg);
            assert_eq!(k.as_deref(), kind);
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let mut s = EndpointSpec::new("a", "http://x", &HttpConfig::default());
        s.api_key = Some("super-secret-key".into());
        assert!(!format!("{s:?}").contains("super-secret"));
    }
}
