//! The environment the mock reads (`MOCK_VLLM_*` fault injection and the real `VLLM_*` switches),
//! held as a map so that the in-process test server can be given one without touching the process's.

use std::collections::HashMap;
use std::time::Duration;

/// Environment variables as seen by one mock server.
#[derive(Debug, Clone, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    /// The real process environment.
    pub fn from_process() -> Env {
        Env(std::env::vars().collect())
    }

    /// An environment made of exactly these pairs.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Env {
        Env(pairs
            .iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Python-ish truthiness: 1, true, yes, on (any case).
    pub fn truthy(&self, key: &str) -> bool {
        matches!(
            self.get(key)
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref(),
            Some("1" | "true" | "yes" | "on")
        )
    }

    pub fn float(&self, key: &str) -> Option<f64> {
        self.get(key)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    }

    pub fn secs(&self, key: &str) -> Option<Duration> {
        self.float(key).map(Duration::from_secs_f64)
    }
}

/// How `/metrics` should be broken (`MOCK_VLLM_METRICS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFault {
    None,
    Malformed,
    Truncated,
    Html,
    Huge,
}

/// Every knob the mock takes from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `MOCK_VLLM_START_DELAY`: seconds during which the port is bound but not listening (default 0.3).
    pub start_delay: Duration,
    /// `MOCK_VLLM_FAIL_DELAY`: seconds before a failed start-up prints its error and exits (default 0.2).
    pub fail_delay: Duration,
    /// `MOCK_VLLM_FAIL`: forced start-up failure.
    pub forced_failure: Option<String>,
    /// `MOCK_VLLM_HUB` = unreachable | offline, or `HF_HUB_OFFLINE=1`.
    pub hub: Option<String>,
    /// `MOCK_VLLM_CRASH_AFTER`: seconds after serving starts; then the tree dies with code 1.
    pub crash_after: Option<Duration>,
    /// `MOCK_VLLM_WORKER_DEATH_AFTER`: seconds after serving starts; then the worker dies.
    pub worker_death_after: Option<Duration>,
    /// `MOCK_VLLM_DEATH_503_SECONDS`: how long /health answers 503 after the engine died (default 2).
    pub death_503: Duration,
    /// `MOCK_VLLM_SLOW_MS`: delay added to every answer.
    pub slow: Duration,
    /// `MOCK_VLLM_HTTP_500`: fraction (0..1) of /v1 requests answering 500, deterministically.
    pub http_500_rate: f64,
    /// `MOCK_VLLM_METRICS`: malformed | truncated | html | huge (50 MiB).
    pub metrics_fault: MetricsFault,
    /// `MOCK_VLLM_TOKEN_LATENCY_MS`: duration of one engine step, i.e. per generated token (default 2).
    pub token_latency: Duration,
    /// `MOCK_VLLM_KV_CACHE_TOKENS`: KV-cache capacity in tokens (default 1048576, as in the capture).
    pub kv_cache_tokens: u64,
    /// `VLLM_SERVER_DEV_MODE=1`: /sleep, /wake_up, /is_sleeping, /reset_prefix_cache...
    pub dev_mode: bool,
    /// `VLLM_ALLOW_RUNTIME_LORA_UPDATING=true`: /v1/load_lora_adapter and /v1/unload_lora_adapter.
    pub runtime_lora: bool,
    /// `VLLM_ALLOW_LONG_MAX_MODEL_LEN=1`: a --max-model-len above the model's limit is only a warning.
    pub allow_long_max_model_len: bool,
    /// `VLLM_API_KEY`: the API key when --api-key is not given.
    pub api_key: Option<String>,
}

impl Settings {
    pub fn from_env(env: &Env) -> Settings {
        let hub = if env.truthy("HF_HUB_OFFLINE") {
            Some("offline".to_string())
        } else {
            env.get("MOCK_VLLM_HUB")
                .map(|v| v.trim().to_ascii_lowercase())
        };
        let metrics_fault = match env
            .get("MOCK_VLLM_METRICS")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("malformed") => MetricsFault::Malformed,
            Some("truncated") => MetricsFault::Truncated,
            Some("html") => MetricsFault::Html,
            Some("huge") => MetricsFault::Huge,
            _ => MetricsFault::None,
        };
        let runtime_lora = matches!(
            env.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING")
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref(),
            Some("1" | "true")
        );
        Settings {
            start_delay: env
                .secs("MOCK_VLLM_START_DELAY")
                .unwrap_or(Duration::from_millis(300)),
            fail_delay: env
                .secs("MOCK_VLLM_FAIL_DELAY")
                .unwrap_or(Duration::from_millis(200)),
            forced_failure: env
                .get("MOCK_VLLM_FAIL")
                .map(|v| v.trim().to_ascii_lowercase()),
            hub,
            crash_after: env.secs("MOCK_VLLM_CRASH_AFTER"),
            worker_death_after: env.secs("MOCK_VLLM_WORKER_DEATH_AFTER"),
            death_503: env
                .secs("MOCK_VLLM_DEATH_503_SECONDS")
                .unwrap_or(Duration::from_secs(2)),
            slow: env
                .float("MOCK_VLLM_SLOW_MS")
                .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                .unwrap_or_default(),
            http_500_rate: env
                .float("MOCK_VLLM_HTTP_500")
                .map(|r| r.min(1.0))
                .unwrap_or(0.0),
            metrics_fault,
            token_latency: env
                .float("MOCK_VLLM_TOKEN_LATENCY_MS")
                .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                .unwrap_or(Duration::from_millis(2)),
            kv_cache_tokens: env
                .get("MOCK_VLLM_KV_CACHE_TOKENS")
                .and_then(|v| v.trim().parse().ok())
                .filter(|v| *v > 0)
                .unwrap_or(1_048_576),
            dev_mode: env.truthy("VLLM_SERVER_DEV_MODE"),
            runtime_lora,
            allow_long_max_model_len: env.truthy("VLLM_ALLOW_LONG_MAX_MODEL_LEN"),
            api_key: env.get("VLLM_API_KEY").map(str::to_string),
        }
    }
}
