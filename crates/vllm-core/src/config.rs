//! The TOML configuration shared by the three servers, with environment overrides.
//!
//! Every key has a default, so no file is needed. Where the file comes from, in order:
//! `--config PATH`, `VLLM_MCP_CONFIG`, then `$XDG_CONFIG_HOME/vllm-mcp/config.toml` when it
//! exists. Environment variables override the file: `VLLM_MCP_DATA_DIR`,
//! `VLLM_MCP_VLLM_COMMAND`, `VLLM_MCP_CRUSH_DB`, and `VLLM_BASE_URL` (+ `VLLM_API_KEY`), which
//! attaches one endpoint without a file. Unknown keys and bad values are errors that name
//! the key and the file. `docs/CONFIG.md` documents every key; keep the two in step.
//!
//! Secrets never live here: an endpoint names the *environment variable* holding its key.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
pub use vllm_store::{StoreConfig, Synchronous};

/// The whole configuration, after defaults, the file and the environment are merged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the store, launched servers' logs and other state live.
    pub data_dir: PathBuf,
    /// vLLM servers we did not start but should list, inspect and monitor.
    pub endpoints: Vec<EndpointConfig>,
    /// HTTP client settings shared by every endpoint.
    pub http: HttpConfig,
    /// How `vllm serve` processes are launched.
    pub launcher: LauncherConfig,
    /// Named models: alias → source and default launch arguments.
    pub catalog: BTreeMap<String, CatalogEntry>,
    /// Limits on what the servers may do.
    pub limits: LimitsConfig,
    /// Permission tiers, tool allow/deny lists, allowed model patterns, audit retention.
    pub security: SecurityConfig,
    /// Metrics sampling, retention and alert rules.
    pub monitor: MonitorConfig,
    /// The optional Prometheus export listener.
    pub prometheus: PrometheusConfig,
    /// The optional front door: one OpenAI- and Anthropic-compatible endpoint.
    pub gateway: GatewayConfig,
    /// Where Crush keeps its sessions.
    pub crush: CrushConfig,
    /// Saved states: retention and export directories.
    pub state: StateConfig,
    /// How the SQLite store is opened: size cap, read-only, durability.
    pub store: StoreConfig,
    /// The file this configuration was read from, if any (not a key).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: default_data_dir(&|k| std::env::var(k).ok()),
            endpoints: Vec::new(),
            http: HttpConfig::default(),
            launcher: LauncherConfig::default(),
            catalog: BTreeMap::new(),
            limits: LimitsConfig::default(),
            security: SecurityConfig::default(),
            monitor: MonitorConfig::default(),
            prometheus: PrometheusConfig::default(),
            gateway: GatewayConfig::default(),
            crush: CrushConfig::default(),
            state: StateConfig::default(),
            store: StoreConfig::default(),
            source: None,
        }
    }
}

/// One attached vLLM server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// A short name used in answers and metrics (`local`, `gpu-box-2`).
    pub name: String,
    /// `http://host:port` or `https://host:port`, without `/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the key given to vLLM's `--api-key`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Overrides `http.request_timeout_seconds` for this endpoint.
    #[serde(default)]
    pub request_timeout_seconds: Option<f64>,
    /// PEM file of an extra CA to trust for this endpoint's https (a private CA).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Accept any certificate (self-signed, wrong host). Only for trusted networks.
    #[serde(default)]
    pub tls_accept_invalid_certs: bool,
}

/// HTTP client settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Seconds to wait for a TCP (and TLS) connection.
    pub connect_timeout_seconds: f64,
    /// Seconds to wait for a whole answer (completions use `completion_timeout_seconds`).
    pub request_timeout_seconds: f64,
    /// Seconds for a completion or chat request.
    pub completion_timeout_seconds: f64,
    /// Seconds model metadata (`/v1/models`, config.json) is cached.
    pub metadata_ttl_seconds: f64,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            connect_timeout_seconds: 3.0,
            request_timeout_seconds: 10.0,
            completion_timeout_seconds: 120.0,
            metadata_ttl_seconds: 5.0,
        }
    }
}

/// How `vllm serve` is launched.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LauncherConfig {
    /// The vLLM command as an argument vector; `serve MODEL ...` is appended.
    pub command: Vec<String>,
    /// Address launched servers bind to. Loopback unless you need remote clients.
    pub host: String,
    /// Inclusive port range launched servers get ports from.
    pub port_range: [u16; 2],
    /// Directory of per-model logs (default: `<data_dir>/logs`).
    pub log_dir: Option<PathBuf>,
    /// Seconds a start may take before the model is marked `error`.
    pub health_timeout_seconds: f64,
    /// Seconds between SIGTERM and SIGKILL on unload.
    pub grace_period_seconds: f64,
    /// Extra environment for launched servers (e.g. `VLLM_CPU_KVCACHE_SPACE = "1"`).
    pub env: BTreeMap<String, String>,
    /// Name of the environment variable whose value becomes launched servers' API key.
    pub api_key_env: Option<String>,
    /// Executor for tensor × pipeline parallel sizes beyond the visible GPUs (`"ray"`).
    pub distributed_executor_backend: Option<String>,
    /// Models (catalog aliases or ids) the lease holder starts when none is running.
    pub autostart: Vec<String>,
    /// Where launched servers run: `local` (process groups of this host) or `ray`
    /// (jobs on the Ray cluster of `[launcher.ray]`).
    pub backend: LauncherBackend,
    /// The Ray cluster, for `backend = "ray"`.
    pub ray: Option<RayConfig>,
}

/// Where the launcher runs `vllm serve`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LauncherBackend {
    /// A detached process group on the host the manager runs on.
    #[default]
    Local,
    /// A job on a Ray cluster, submitted through its dashboard's Jobs API.
    Ray,
}

/// `[launcher.ray]`: the cluster the Ray backend submits to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RayConfig {
    /// The dashboard's URL, `http://head:8265`.
    pub address: String,
    /// Name of the environment variable holding a bearer token for the dashboard.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Headers sent with every request to the dashboard (a proxy's own).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Ray's runtime environment for every job (`env_vars`, `working_dir`), passed as
    /// given; `[launcher.env]` and the API key are added to its `env_vars`.
    #[serde(default)]
    pub runtime_env: Option<serde_json::Value>,
    /// Custom resources every job asks for (`{ "gpu-pool" = 0.001 }`): the nodes that
    /// offer them are where this manager's models run, unless a model names its node.
    #[serde(default)]
    pub resources: BTreeMap<String, f64>,
    /// The address a server binds on its node when Ray chooses the node (a model given
    /// a `node` binds that node's address).
    #[serde(default = "RayConfig::default_bind")]
    pub bind_host: String,
    /// Seconds one request to the dashboard may take.
    #[serde(default = "RayConfig::default_timeout")]
    pub timeout_seconds: f64,
}

impl RayConfig {
    fn default_bind() -> String {
        "0.0.0.0".into()
    }

    fn default_timeout() -> f64 {
        10.0
    }
}

impl Default for LauncherConfig {
    fn default() -> LauncherConfig {
        LauncherConfig {
            command: vec!["vllm".into()],
            host: "127.0.0.1".into(),
            port_range: [8100, 8199],
            log_dir: None,
            health_timeout_seconds: 900.0,
            grace_period_seconds: 20.0,
            env: BTreeMap::new(),
            api_key_env: None,
            distributed_executor_backend: None,
            autostart: Vec::new(),
            backend: LauncherBackend::Local,
            ray: None,
        }
    }
}

/// A named model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Hugging Face repo id or absolute model directory.
    pub source: String,
    /// Human-readable name shown by list-models.
    #[serde(default)]
    pub name: Option<String>,
    /// Default launch arguments (the same names as load-model's parameters).
    #[serde(default)]
    pub args: crate::launch_args::LaunchArgs,
    /// The front door never swaps it out to make room for another model.
    #[serde(default)]
    pub pinned: bool,
    /// How the front door swaps it out: `gateway.swap` when absent.
    #[serde(default)]
    pub swap: Option<SwapMode>,
    /// When the front door starts it: unloaded after this long without a request
    /// (`gateway.idle_ttl_seconds` when absent).
    #[serde(default)]
    pub idle_ttl_seconds: Option<f64>,
}

/// What the front door does with a model it swaps out to make room.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SwapMode {
    /// Stop its server: memory and a `limits.max_models` place are given back.
    #[default]
    Unload,
    /// Put it to sleep (level 1) when the host has memory for its weights, so swapping
    /// back is a wake, not a cold start; else unload it.
    Sleep,
}

/// The front door (`docs/GATEWAY.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// `host:port` to serve on; none (the default) serves no front door.
    pub listen: Option<String>,
    /// The URL clients reach the front door at, for provider blocks (else `http://listen`).
    pub public_url: Option<String>,
    /// Environment variable holding the key clients must send (`Authorization: Bearer`
    /// or `x-api-key`); unset: no key is asked for.
    pub api_key_env: Option<String>,
    /// Requests held per model while it starts; beyond them, 429 with `Retry-After`.
    pub max_queued_requests: u32,
    /// Seconds a request waits for its model to start before a 503.
    pub load_timeout_seconds: f64,
    /// Seconds a model being swapped out may finish its requests before it is stopped.
    pub drain_timeout_seconds: f64,
    /// Seconds between SSE comments sent to a streaming request waiting for a start.
    pub keep_alive_seconds: f64,
    /// Start on demand a model that is neither launched before nor in the catalog.
    pub load_unknown: bool,
    /// What a swapped-out model becomes (a catalog entry's `swap` wins).
    pub swap: SwapMode,
    /// Models the door starts are unloaded after this long without a request (a
    /// catalog entry's `idle_ttl_seconds` wins); none: they stay.
    pub idle_ttl_seconds: Option<f64>,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            listen: None,
            public_url: None,
            api_key_env: None,
            max_queued_requests: 256,
            load_timeout_seconds: 600.0,
            drain_timeout_seconds: 30.0,
            keep_alive_seconds: 5.0,
            load_unknown: false,
            swap: SwapMode::Unload,
            idle_ttl_seconds: None,
        }
    }
}

impl GatewayConfig {
    /// The URL clients use: `public_url`, else `http://listen`, without a trailing `/`.
    pub fn url(&self) -> Option<String> {
        let url = match (&self.public_url, &self.listen) {
            (Some(u), _) => u.clone(),
            (None, Some(l)) => format!("http://{l}"),
            (None, None) => return None,
        };
        Some(url.trim_end_matches('/').to_string())
    }
}

/// Limits on what the servers may do, all instances together.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most launched models at once.
    pub max_models: u32,
    /// Total GPU memory (MiB) our launched models may take; none: no budget.
    pub gpu_memory_budget_mb: Option<u64>,
    /// Largest `max_model_len` a load may ask for; none: the model's own limit.
    pub max_model_len: Option<u64>,
    /// Tool calls that start GPU work (load, benchmark, chat) per minute.
    pub gpu_work_per_minute: u32,
    /// Default size of a list or history answer.
    pub list_default: u32,
    /// Largest `limit` a caller may ask for.
    pub list_max: u32,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_models: 8,
            gpu_memory_budget_mb: None,
            max_model_len: None,
            gpu_work_per_minute: 30,
            list_default: 50,
            list_max: 1000,
        }
    }
}

/// Permission tiers, from least to most dangerous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Looks only: lists, info, metrics, summaries.
    Read,
    /// Changes serving state: load, unload, config, save and load state.
    Control,
    /// Can lose data: clear-state, import-state, forced operations.
    Destructive,
}

impl Tier {
    /// The lowercase name used in the config and in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Read => "read",
            Tier::Control => "control",
            Tier::Destructive => "destructive",
        }
    }
}

/// Who may call what.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Highest tier a call may have. The default allows every tier because Crush asks
    /// the user before each tool call; `"read"` makes the servers read-only.
    pub max_tier: Tier,
    /// When not empty, only these tools may be called.
    pub allow_tools: Vec<String>,
    /// These tools may never be called (wins over `allow_tools`).
    pub deny_tools: Vec<String>,
    /// Glob patterns (`*` and `?`) a model id or source must match to be loaded.
    pub allowed_models: Vec<String>,
    /// Days audit records are kept.
    pub audit_retention_days: u32,
    /// Allow `--trust-remote-code` in a launch's `extra_args` (or a catalog entry's):
    /// it runs Python from the model's repository on this host. Off by default, since
    /// any MCP call or front-door request may cause a launch.
    pub allow_remote_code: bool,
}

impl SecurityConfig {
    /// `Ok` when a call of `tool` at `tier` is allowed: not in `deny_tools`, in
    /// `allow_tools` when that is not empty, and at most `max_tier`; `PERMISSION_DENIED`
    /// saying why otherwise. Names in the lists may be bare (`load-model`) or as Crush
    /// shows them (`mcp_vllm-model-manager_load-model`). Every front end asks this before
    /// any side effect: the MCP servers' gate and the front door's page.
    pub fn check_call(&self, tool: &str, tier: Tier) -> crate::Result<()> {
        let named = |list: &[String]| {
            list.iter().any(|t| {
                t == tool
                    || t.strip_prefix("mcp_")
                        .and_then(|r| r.rsplit_once('_'))
                        .map(|(_, n)| n)
                        == Some(tool)
            })
        };
        let deny = |reason: String| {
            Err(Error::PermissionDenied {
                tool: tool.to_string(),
                reason,
            })
        };
        if named(&self.deny_tools) {
            return deny("the tool is in security.deny_tools".into());
        }
        if !self.allow_tools.is_empty() && !named(&self.allow_tools) {
            return deny("the tool is not in security.allow_tools".into());
        }
        if tier > self.max_tier {
            return deny(format!(
                "this call is tier `{}` and security.max_tier is `{}`",
                tier.as_str(),
                self.max_tier.as_str()
            ));
        }
        Ok(())
    }

    /// `Ok` when `name` or `source` (a model id and what it loads, or an adapter's name
    /// and path) matches one of `allowed_models`; `PERMISSION_DENIED` naming the patterns
    /// otherwise. The core does not know which front-end call asked: the error's `tool`
    /// is empty, and the caller's edge names it ([`crate::Error::attributed_to`]).
    pub fn check_allowed(&self, name: &str, source: &str) -> crate::Result<()> {
        let patterns = &self.allowed_models;
        if patterns
            .iter()
            .any(|p| glob_match(p, name) || glob_match(p, source))
        {
            return Ok(());
        }
        Err(Error::PermissionDenied {
            tool: String::new(),
            reason: format!(
                "`{source}` matches none of security.allowed_models ({})",
                patterns.join(", ")
            ),
        })
    }
}

impl SecurityConfig {
    /// `Ok` unless `argv` (a launch's `extra_args`) asks for `--trust-remote-code` and
    /// `allow_remote_code` is off: then `PERMISSION_DENIED` saying how to allow it.
    pub fn check_remote_code(&self, argv: &[String]) -> crate::Result<()> {
        let asks = argv
            .iter()
            .any(|a| a == TRUST_REMOTE_CODE || a.starts_with("--trust-remote-code="));
        if !asks || self.allow_remote_code {
            return Ok(());
        }
        Err(Error::PermissionDenied {
            tool: String::new(),
            reason: format!(
                "`{TRUST_REMOTE_CODE}` runs Python from the model's repository on this host; \
                 it is refused unless security.allow_remote_code = true"
            ),
        })
    }
}

/// vLLM's flag that runs a model repository's own Python code.
pub const TRUST_REMOTE_CODE: &str = "--trust-remote-code";

impl Default for SecurityConfig {
    fn default() -> SecurityConfig {
        SecurityConfig {
            max_tier: Tier::Destructive,
            allow_tools: Vec::new(),
            deny_tools: Vec::new(),
            allowed_models: vec!["*".into()],
            audit_retention_days: 30,
            allow_remote_code: false,
        }
    }
}

/// Metrics sampling and alerting.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Seconds between scrapes of every endpoint.
    pub sample_interval_seconds: f64,
    /// Hours of history kept in the store (older data is downsampled, then dropped).
    pub retention_hours: f64,
    /// Where metrics come from: each endpoint's `/metrics`, or an existing Prometheus.
    pub source: MetricsSource,
    /// Base URL of the Prometheus server when `source = "prometheus"`.
    pub prometheus_url: Option<String>,
    /// URL receiving an Alertmanager-compatible payload when an alert fires or resolves.
    pub webhook_url: Option<String>,
    /// Overrides of the default alert rules, by rule name (see [`AlertRule::defaults`]).
    pub alerts: BTreeMap<String, AlertRuleOverride>,
}

impl Default for MonitorConfig {
    fn default() -> MonitorConfig {
        MonitorConfig {
            sample_interval_seconds: 5.0,
            retention_hours: 24.0,
            source: MetricsSource::Scrape,
            prometheus_url: None,
            webhook_url: None,
            alerts: BTreeMap::new(),
        }
    }
}

/// Where the monitor reads metrics from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsSource {
    Scrape,
    Prometheus,
}

/// An alert rule after defaults and overrides are merged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRule {
    pub name: AlertRuleName,
    pub enabled: bool,
    /// Threshold in the rule's unit (°C, fraction, milliseconds, count).
    pub threshold: f64,
    /// Seconds the condition must hold before the alert fires.
    pub for_seconds: f64,
    /// Seconds of data the condition is computed over (rates, percentiles).
    pub window_seconds: f64,
    pub severity: Severity,
}

/// The built-in alert rules, by their stable names (`gpu_temperature`, ...).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertRuleName {
    GpuTemperature,
    GpuMemory,
    KvCacheUsage,
    ErrorRate,
    P99LatencyMs,
    RequestsWaiting,
    Preemptions,
    EndpointDown,
}

impl AlertRuleName {
    /// Every rule, in the order the defaults list them.
    pub const ALL: [AlertRuleName; 8] = [
        AlertRuleName::GpuTemperature,
        AlertRuleName::GpuMemory,
        AlertRuleName::KvCacheUsage,
        AlertRuleName::ErrorRate,
        AlertRuleName::P99LatencyMs,
        AlertRuleName::RequestsWaiting,
        AlertRuleName::Preemptions,
        AlertRuleName::EndpointDown,
    ];

    /// The stable name, as in `[monitor.alerts.<name>]` and in every alert.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertRuleName::GpuTemperature => "gpu_temperature",
            AlertRuleName::GpuMemory => "gpu_memory",
            AlertRuleName::KvCacheUsage => "kv_cache_usage",
            AlertRuleName::ErrorRate => "error_rate",
            AlertRuleName::P99LatencyMs => "p99_latency_ms",
            AlertRuleName::RequestsWaiting => "requests_waiting",
            AlertRuleName::Preemptions => "preemptions",
            AlertRuleName::EndpointDown => "endpoint_down",
        }
    }

    /// The rule of that name.
    pub fn from_name(name: &str) -> Option<AlertRuleName> {
        AlertRuleName::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for AlertRuleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    /// Both, mildest first.
    pub const ALL: [Severity; 2] = [Severity::Warning, Severity::Critical];

    /// `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The severity of that name.
    pub fn from_name(name: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fields a config file may override in one alert rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertRuleOverride {
    pub enabled: Option<bool>,
    pub threshold: Option<f64>,
    pub for_seconds: Option<f64>,
    pub window_seconds: Option<f64>,
    /// `warning` or `critical`.
    pub severity: Option<Severity>,
}

impl AlertRule {
    /// The built-in rules: sensible thresholds for a single-node vLLM fleet.
    pub fn defaults() -> Vec<AlertRule> {
        use AlertRuleName as N;
        use Severity::{Critical, Warning};
        let r = |name, threshold: f64, for_s: f64, window_s: f64, severity| AlertRule {
            name,
            enabled: true,
            threshold,
            for_seconds: for_s,
            window_seconds: window_s,
            severity,
        };
        vec![
            r(N::GpuTemperature, 80.0, 30.0, 30.0, Warning),
            r(N::GpuMemory, 0.95, 60.0, 60.0, Warning),
            r(N::KvCacheUsage, 0.90, 60.0, 60.0, Warning),
            r(N::ErrorRate, 0.01, 0.0, 300.0, Critical),
            r(N::P99LatencyMs, 30_000.0, 60.0, 300.0, Warning),
            r(N::RequestsWaiting, 0.0, 60.0, 60.0, Warning),
            r(N::Preemptions, 0.0, 0.0, 300.0, Warning),
            r(N::EndpointDown, 0.0, 15.0, 15.0, Critical),
        ]
    }
}

/// The optional Prometheus export listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusConfig {
    /// `host:port` to serve `/metrics` on; none: no listener. Loopback unless you mean it.
    pub listen: Option<String>,
}

/// Where Crush's own session database is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CrushConfig {
    /// Path of `crush.db`; default `./.crush/crush.db` (Crush starts servers in the project).
    pub db_path: Option<PathBuf>,
}

/// The default of `[state] keep_per_session`: states kept per session; older ones are
/// pruned when a new one is saved.
pub const KEEP_PER_SESSION: u32 = 20;

/// Saved states (the state persistence server).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// States kept per session (at least 1); a save beyond it prunes the oldest.
    pub keep_per_session: u32,
    /// Absolute directories export-state and import-state may use besides
    /// `<data_dir>/exports/` (which relative paths are taken from). They must exist.
    pub export_dirs: Vec<PathBuf>,
}

impl Default for StateConfig {
    fn default() -> StateConfig {
        StateConfig {
            keep_per_session: KEEP_PER_SESSION,
            export_dirs: Vec::new(),
        }
    }
}

/// Environment lookups, injectable so tests need not touch the process environment.
pub type EnvFn<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Loads from the process environment and the file it points at.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Config::load_with(explicit, &env)
    }

    /// Loads with an injected environment.
    pub fn load_with(explicit: Option<&Path>, env: EnvFn<'_>) -> Result<Config> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => match env("VLLM_MCP_CONFIG") {
                Some(p) => Some(PathBuf::from(p)),
                None => xdg_config_file(env).filter(|p| p.is_file()),
            },
        };
        let mut config = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::Config {
                    path: Some(p.clone()),
                    key: "(file)".into(),
                    message: format!("cannot read: {e}"),
                })?;
                Config::from_toml(&text, Some(p), env)?
            }
            None => Config::from_toml("", None, env)?,
        };
        config.source = path;
        Ok(config)
    }

    /// Parses TOML text, applies the environment, validates.
    pub fn from_toml(text: &str, path: Option<&Path>, env: EnvFn<'_>) -> Result<Config> {
        let mut c: Config = toml::from_str(text).map_err(|e| {
            // toml names the unknown or mistyped key in its message; keep its line too.
            let key = e
                .message()
                .split('`')
                .nth(1)
                .unwrap_or("(syntax)")
                .to_string();
            Error::Config {
                path: path.map(Path::to_path_buf),
                key,
                message: e.to_string().trim().replace('\n', " "),
            }
        })?;
        if !text.contains("data_dir") {
            c.data_dir = default_data_dir(env);
        }
        c.apply_env(env);
        c.validate(path)?;
        Ok(c)
    }

    fn apply_env(&mut self, env: EnvFn<'_>) {
        if let Some(d) = env("VLLM_MCP_DATA_DIR") {
            self.data_dir = PathBuf::from(d);
        }
        if let Some(cmd) = env("VLLM_MCP_VLLM_COMMAND") {
            self.launcher.command = vec![cmd];
        }
        if let Some(db) = env("VLLM_MCP_CRUSH_DB") {
            self.crush.db_path = Some(PathBuf::from(db));
        }
        if let Some(url) = env("VLLM_BASE_URL") {
            let url = url
                .trim_end_matches('/')
                .trim_end_matches("/v1")
                .to_string();
            if !self.endpoints.iter().any(|e| e.base_url == url) {
                self.endpoints.push(EndpointConfig {
                    name: "default".into(),
                    base_url: url,
                    api_key_env: env("VLLM_API_KEY").map(|_| "VLLM_API_KEY".into()),
                    request_timeout_seconds: None,
                    tls_ca_file: None,
                    tls_accept_invalid_certs: false,
                });
            }
        }
    }

    fn validate(&self, path: Option<&Path>) -> Result<()> {
        self.validate_timings()
            .and_then(|()| self.validate_endpoints())
            .and_then(|()| self.validate_launcher())
            .and_then(|()| self.validate_catalog())
            .and_then(|()| self.validate_gateway())
            .and_then(|()| self.validate_monitor())
            .and_then(|()| self.validate_state_and_store())
            .map_err(|(key, message)| Error::Config {
                path: path.map(Path::to_path_buf),
                key,
                message,
            })
    }

    /// Every timeout and interval is a positive number of seconds.
    fn validate_timings(&self) -> std::result::Result<(), Bad> {
        positive(
            "http.connect_timeout_seconds",
            self.http.connect_timeout_seconds,
        )?;
        positive(
            "http.request_timeout_seconds",
            self.http.request_timeout_seconds,
        )?;
        positive(
            "http.completion_timeout_seconds",
            self.http.completion_timeout_seconds,
        )?;
        // NaN fails this check too.
        if !self.http.metadata_ttl_seconds.is_finite() || self.http.metadata_ttl_seconds < 0.0 {
            return Err(bad(
                "http.metadata_ttl_seconds",
                "must be zero or more".into(),
            ));
        }
        positive(
            "launcher.health_timeout_seconds",
            self.launcher.health_timeout_seconds,
        )?;
        positive(
            "launcher.grace_period_seconds",
            self.launcher.grace_period_seconds,
        )?;
        positive(
            "monitor.sample_interval_seconds",
            self.monitor.sample_interval_seconds,
        )?;
        positive("monitor.retention_hours", self.monitor.retention_hours)?;
        Ok(())
    }

    /// Endpoints: a usable base URL, a unique name, positive timeouts.
    fn validate_endpoints(&self) -> std::result::Result<(), Bad> {
        let mut names = std::collections::BTreeSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let key = format!("endpoints[{i}].base_url");
            validate_base_url(&e.base_url).map_err(|m| bad(&key, m))?;
            if e.name.is_empty() || !names.insert(e.name.as_str()) {
                return Err(bad(
                    &format!("endpoints[{i}].name"),
                    format!("`{}` is empty or used twice", e.name),
                ));
            }
            if let Some(t) = e.request_timeout_seconds {
                positive(&format!("endpoints[{i}].request_timeout_seconds"), t)?;
            }
        }
        Ok(())
    }

    /// The launcher's command and port range, and the listing limits.
    fn validate_launcher(&self) -> std::result::Result<(), Bad> {
        if self.launcher.command.is_empty() || self.launcher.command[0].is_empty() {
            return Err(bad(
                "launcher.command",
                "must name the vLLM executable".into(),
            ));
        }
        let [lo, hi] = self.launcher.port_range;
        if lo == 0 || lo > hi {
            return Err(bad(
                "launcher.port_range",
                format!("[{lo}, {hi}] is not a range of ports"),
            ));
        }
        match (self.launcher.backend, &self.launcher.ray) {
            (LauncherBackend::Ray, None) => {
                return Err(bad(
                    "launcher.ray.address",
                    "backend = \"ray\" needs [launcher.ray] address = \"http://head:8265\"".into(),
                ));
            }
            (_, Some(ray)) => {
                validate_base_url(&ray.address).map_err(|m| bad("launcher.ray.address", m))?;
                positive("launcher.ray.timeout_seconds", ray.timeout_seconds)?;
                if ray.runtime_env.as_ref().is_some_and(|r| !r.is_object()) {
                    return Err(bad(
                        "launcher.ray.runtime_env",
                        "must be a table (env_vars, working_dir...)".into(),
                    ));
                }
            }
            _ => {}
        }
        if self.limits.list_default == 0 || self.limits.list_default > self.limits.list_max {
            return Err(bad(
                "limits.list_default",
                "must be between 1 and limits.list_max".into(),
            ));
        }
        Ok(())
    }

    /// Catalog entries: a source and launch arguments the launcher accepts.
    fn validate_gateway(&self) -> std::result::Result<(), Bad> {
        let g = &self.gateway;
        positive("gateway.load_timeout_seconds", g.load_timeout_seconds)?;
        positive("gateway.drain_timeout_seconds", g.drain_timeout_seconds)?;
        positive("gateway.keep_alive_seconds", g.keep_alive_seconds)?;
        let ttls = std::iter::once(("gateway.idle_ttl_seconds".to_string(), g.idle_ttl_seconds))
            .chain(self.catalog.iter().map(|(alias, e)| {
                (
                    format!("catalog.{alias}.idle_ttl_seconds"),
                    e.idle_ttl_seconds,
                )
            }));
        for (key, ttl) in ttls {
            if let Some(t) = ttl
                && !(t.is_finite() && t >= 1.0)
            {
                return Err(bad(&key, format!("{t} must be at least 1 second")));
            }
        }
        if g.max_queued_requests == 0 {
            return Err(bad(
                "gateway.max_queued_requests",
                "must be at least 1".into(),
            ));
        }
        if let Some(l) = &g.listen
            && l.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(bad(
                "gateway.listen",
                format!("`{l}` is not host:port with an IP address (127.0.0.1:4000)"),
            ));
        }
        if let Some(u) = &g.public_url {
            validate_base_url(u).map_err(|m| bad("gateway.public_url", m))?;
        }
        Ok(())
    }

    fn validate_catalog(&self) -> std::result::Result<(), Bad> {
        for (alias, entry) in &self.catalog {
            if entry.source.is_empty() {
                return Err(bad(&format!("catalog.{alias}.source"), "is empty".into()));
            }
            if let Err(e) = entry.args.validate() {
                let field = e.details()["field"].as_str().unwrap_or("args").to_string();
                let reason = e.details()["reason"].as_str().unwrap_or("").to_string();
                return Err(bad(&format!("catalog.{alias}.args.{field}"), reason));
            }
        }
        Ok(())
    }

    /// Alert overrides name known rules (a severity is typed); URLs the monitor calls.
    fn validate_monitor(&self) -> std::result::Result<(), Bad> {
        for name in self.monitor.alerts.keys() {
            if AlertRuleName::from_name(name).is_none() {
                let known: Vec<&str> = AlertRuleName::ALL.iter().map(|r| r.as_str()).collect();
                return Err(bad(
                    &format!("monitor.alerts.{name}"),
                    format!("unknown rule; known rules: {}", known.join(", ")),
                ));
            }
        }
        if self.monitor.source == MetricsSource::Prometheus {
            match &self.monitor.prometheus_url {
                Some(u) => validate_base_url(u).map_err(|m| bad("monitor.prometheus_url", m))?,
                None => {
                    return Err(bad(
                        "monitor.prometheus_url",
                        "is required when monitor.source = \"prometheus\"".into(),
                    ));
                }
            }
        }
        if let Some(u) = &self.monitor.webhook_url {
            validate_base_url(u).map_err(|m| bad("monitor.webhook_url", m))?;
        }
        Ok(())
    }

    /// Saved states, the store's cap, export directories, the Prometheus listener.
    fn validate_state_and_store(&self) -> std::result::Result<(), Bad> {
        if self.state.keep_per_session == 0 {
            return Err(bad(
                "state.keep_per_session",
                "must be at least 1 (the state just saved is always kept)".into(),
            ));
        }
        // Past 2^44 bytes SQLite's page count overflows its 32-bit limit anyway.
        if self.store.max_size_mb > 16 * 1024 * 1024 {
            return Err(bad(
                "store.max_size_mb",
                format!(
                    "{} MiB is beyond what SQLite can address (16 TiB); use 0 for no cap",
                    self.store.max_size_mb
                ),
            ));
        }
        for (i, d) in self.state.export_dirs.iter().enumerate() {
            if !d.is_absolute() || d.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(bad(
                    &format!("state.export_dirs[{i}]"),
                    format!("`{}` must be an absolute path without `..`", d.display()),
                ));
            }
        }
        if let Some(l) = &self.prometheus.listen
            && l.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(bad(
                "prometheus.listen",
                format!("`{l}` is not host:port (e.g. 127.0.0.1:9464)"),
            ));
        }
        Ok(())
    }

    /// The alert rules in force: defaults with the file's overrides applied.
    pub fn alert_rules(&self) -> Vec<AlertRule> {
        let mut rules = AlertRule::defaults();
        for r in &mut rules {
            if let Some(o) = self.monitor.alerts.get(r.name.as_str()) {
                r.enabled = o.enabled.unwrap_or(r.enabled);
                r.threshold = o.threshold.unwrap_or(r.threshold);
                r.for_seconds = o.for_seconds.unwrap_or(r.for_seconds);
                r.window_seconds = o.window_seconds.unwrap_or(r.window_seconds);
                r.severity = o.severity.unwrap_or(r.severity);
            }
        }
        rules
    }

    /// Directory of launched servers' logs.
    pub fn log_dir(&self) -> PathBuf {
        self.launcher
            .log_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("logs"))
    }
}

/// `*` (any run) and `?` (one character) glob matching, for `security.allowed_models`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A configuration problem: the key and what is wrong with it.
type Bad = (String, String);

fn bad(key: &str, message: String) -> Bad {
    (key.to_string(), message)
}

/// `Ok` for a finite number of seconds above zero.
fn positive(key: &str, v: f64) -> std::result::Result<(), Bad> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(bad(
            key,
            format!("must be a positive number of seconds, got {v}"),
        ))
    }
}

fn validate_base_url(u: &str) -> std::result::Result<(), String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| format!("`{u}` must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("`{u}` has no host"));
    }
    Ok(())
}

fn xdg_config_file(env: EnvFn<'_>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("vllm-mcp").join("config.toml"))
}

/// `VLLM_MCP_DATA_DIR`, else `$XDG_DATA_HOME/vllm-mcp`, else `~/.local/share/vllm-mcp`.
pub fn default_data_dir(env: EnvFn<'_>) -> PathBuf {
    if let Some(d) = env("VLLM_MCP_DATA_DIR") {
        return PathBuf::from(d);
    }
    let base = env("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("vllm-mcp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn no_file_gives_defaults() {
        let env = env_of(&[("HOME", "/home/u")]);
        let c = Config::from_toml("", None, &env).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/home/u/.local/share/vllm-mcp"));
        assert_eq!(c.launcher.command, vec!["vllm"]);
        assert_eq!(c.security.max_tier, Tier::Destructive);
        assert!(c.endpoints.is_empty());
        assert_eq!(c.alert_rules().len(), 8);
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = env_of(&[
            ("VLLM_MCP_DATA_DIR", "/d"),
            ("VLLM_MCP_VLLM_COMMAND", "/bin/mock-vllm"),
            ("VLLM_BASE_URL", "http://127.0.0.1:8000/v1"),
            ("VLLM_API_KEY", "sekrit"),
        ]);
        let c = Config::from_toml("data_dir = \"/f\"\n", None, &env).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.launcher.command, vec!["/bin/mock-vllm"]);
        assert_eq!(c.endpoints[0].base_url, "http://127.0.0.1:8000");
        assert_eq!(c.endpoints[0].api_key_env.as_deref(), Some("VLLM_API_KEY"));
        // The key's value never enters the configuration.
        assert!(!format!("{c:?}").contains("sekrit"));
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let env = env_of(&[]);
        let e = Config::from_toml(
            "[launcher]\nportrange = [1, 2]\n",
            Some(Path::new("/etc/x.toml")),
            &env,
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("portrange"), "{s}");
        assert!(s.contains("/etc/x.toml"), "{s}");
        assert_eq!(e.code(), "CONFIG_INVALID");
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let env = env_of(&[]);
        let cases = [
            (
                "[http]\nrequest_timeout_seconds = -1\n",
                "http.request_timeout_seconds",
            ),
            (
                "[[endpoints]]\nname = \"a\"\nbase_url = \"ftp://x\"\n",
                "endpoints[0].base_url",
            ),
            (
                "[launcher]\nport_range = [9000, 8000]\n",
                "launcher.port_range",
            ),
            (
                "[monitor.alerts.nonsense]\nthreshold = 1\n",
                "monitor.alerts.nonsense",
            ),
            ("[security]\nmax_tier = \"root\"\n", "max_tier"),
            (
                "[prometheus]\nlisten = \"everywhere\"\n",
                "prometheus.listen",
            ),
            (
                "[monitor]\nsource = \"prometheus\"\n",
                "monitor.prometheus_url",
            ),
            ("[state]\nkeep_per_session = 0\n", "state.keep_per_session"),
            (
                "[state]\nexport_dirs = [\"relative/dir\"]\n",
                "state.export_dirs[0]",
            ),
            ("[state]\nkeep = 3\n", "keep"),
            ("[store]\nmax_size_mb = 99999999999\n", "store.max_size_mb"),
            ("[store]\nsynchronous = \"extra\"\n", "synchronous"),
            ("[gateway]\nlisten = \"localhost\"\n", "gateway.listen"),
            ("[launcher]\nbackend = \"ray\"\n", "launcher.ray.address"),
            (
                "[launcher]\nbackend = \"ray\"\n[launcher.ray]\naddress = \"head:8265\"\n",
                "launcher.ray.address",
            ),
            (
                "[launcher.ray]\naddress = \"http://h:8265\"\nruntime_env = 3\n",
                "launcher.ray.runtime_env",
            ),
            ("[launcher]\nbackend = \"k8s\"\n", "backend"),
            (
                "[gateway]\nmax_queued_requests = 0\n",
                "gateway.max_queued_requests",
            ),
            (
                "[gateway]\nload_timeout_seconds = 0\n",
                "gateway.load_timeout_seconds",
            ),
            ("[gateway]\nswap = \"evict\"\n", "swap"),
            ("[gateway]\npublic_url = \"door\"\n", "gateway.public_url"),
            (
                "[gateway]\nidle_ttl_seconds = 0.5\n",
                "gateway.idle_ttl_seconds",
            ),
            (
                "[catalog.a]\nsource = \"org/a\"\nidle_ttl_seconds = -1\n",
                "catalog.a.idle_ttl_seconds",
            ),
        ];
        for (text, key) in cases {
            let e = Config::from_toml(text, None, &env).unwrap_err();
            assert!(e.to_string().contains(key), "{text:?} gave {e}");
        }
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*", "anything/at-all", true),
            ("meta-llama/*", "meta-llama/Llama-3.1-8B", true),
            ("meta-llama/*", "mistralai/x", false),
            ("/models/?iny*", "/models/tiny-model", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("", "", true),
        ] {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn allowed_models_match_the_name_or_the_source() {
        let sec = SecurityConfig {
            allowed_models: vec!["meta-llama/*".into(), "/models/*".into()],
            ..SecurityConfig::default()
        };
        assert!(
            sec.check_allowed("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B")
                .is_ok()
        );
        assert!(
            sec.check_allowed("tiny", "/models/tiny").is_ok(),
            "by source"
        );
        let e = sec.check_allowed("evil/model", "evil/model").unwrap_err();
        assert_eq!(e.code(), "PERMISSION_DENIED");
        assert!(e.to_string().contains("meta-llama/*, /models/*"), "{e}");
        assert_eq!(
            e.attributed_to("load-state").details()["tool"],
            "load-state"
        );
        assert!(
            SecurityConfig::default()
                .check_allowed("anything", "anything")
                .is_ok()
        );
    }

    #[test]
    fn alert_overrides_merge_into_defaults() {
        let env = env_of(&[]);
        let c = Config::from_toml(
            "[monitor.alerts.kv_cache_usage]\nthreshold = 0.8\nfor_seconds = 5\n",
            None,
            &env,
        )
        .unwrap();
        let kv = c
            .alert_rules()
            .into_iter()
            .find(|r| r.name == AlertRuleName::KvCacheUsage)
            .unwrap();
        assert_eq!(
            (kv.threshold, kv.for_seconds, kv.window_seconds),
            (0.8, 5.0, 60.0)
        );
        assert_eq!(kv.severity, Severity::Warning);
        let c = Config::from_toml(
            "[monitor.alerts.preemptions]\nseverity = \"critical\"\n",
            None,
            &env,
        )
        .unwrap();
        let rules = c.alert_rules();
        let p = rules.iter().find(|r| r.name.as_str() == "preemptions");
        assert_eq!(p.unwrap().severity, Severity::Critical);
        // Every rule is known by its stable name, and only those are.
        assert_eq!(rules.len(), AlertRuleName::ALL.len());
        for r in AlertRuleName::ALL {
            assert_eq!(AlertRuleName::from_name(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(AlertRuleName::from_name("p99_latency"), None);
    }

    #[test]
    fn a_severity_is_warning_or_critical() {
        let env = env_of(&[]);
        let e = Config::from_toml(
            "[monitor.alerts.preemptions]\nseverity = \"fatal\"\n",
            None,
            &env,
        )
        .unwrap_err();
        assert_eq!(e.code(), "CONFIG_INVALID");
        let m = e.to_string();
        for word in ["fatal", "warning", "critical", "line 2"] {
            assert!(m.contains(word), "{word} missing: {m}");
        }
    }

    #[test]
    fn the_gateway_is_off_by_default_and_its_url_follows_listen() {
        let env = env_of(&[]);
        let c = Config::from_toml("", None, &env).unwrap();
        assert_eq!((c.gateway.listen.as_deref(), c.gateway.url()), (None, None));
        assert!(!c.security.allow_remote_code);
        let text = "[gateway]\nlisten = \"127.0.0.1:4000\"\nswap = \"sleep\"\n\
                    [catalog.a]\nsource = \"org/a\"\npinned = true\nswap = \"unload\"\n";
        let c = Config::from_toml(text, None, &env).unwrap();
        assert_eq!(c.gateway.url().as_deref(), Some("http://127.0.0.1:4000"));
        assert_eq!(c.gateway.swap, SwapMode::Sleep);
        assert!(c.catalog["a"].pinned);
        assert_eq!(c.catalog["a"].swap, Some(SwapMode::Unload));
        let text = "[gateway]\nlisten = \"0.0.0.0:4000\"\npublic_url = \"https://door.example/\"\n";
        let c = Config::from_toml(text, None, &env).unwrap();
        assert_eq!(c.gateway.url().as_deref(), Some("https://door.example"));
    }

    #[test]
    fn full_example_config_parses() {
        let text = include_str!("../../../examples/config.toml");
        let env = env_of(&[]);
        let c = Config::from_toml(text, None, &env).unwrap();
        assert!(!c.endpoints.is_empty());
        assert!(!c.catalog.is_empty());
        assert_eq!(c.state.keep_per_session, 20);
        assert_eq!(c.state.export_dirs, vec![PathBuf::from("/srv/vllm-states")]);
    }

    #[test]
    fn state_defaults() {
        let env = env_of(&[]);
        let c = Config::from_toml("", None, &env).unwrap();
        assert_eq!(c.state.keep_per_session, KEEP_PER_SESSION);
        assert!(c.state.export_dirs.is_empty());
        let c = Config::from_toml("[state]\nkeep_per_session = 3\n", None, &env).unwrap();
        assert_eq!(c.state.keep_per_session, 3);
    }

    #[test]
    fn store_settings_become_open_options() {
        let env = env_of(&[]);
        let o = Config::from_toml("", None, &env).unwrap().store;
        let o = crate::store::StoreOptions::from(&o);
        assert_eq!(o.max_size_bytes, None);
        assert!(!o.read_only);
        assert_eq!(o.synchronous, Synchronous::Normal);
        let text = "[store]\nmax_size_mb = 64\nread_only = true\nsynchronous = \"full\"\n";
        let o = Config::from_toml(text, None, &env).unwrap().store;
        let o = crate::store::StoreOptions::from(&o);
        assert_eq!(o.max_size_bytes, Some(64 * 1024 * 1024));
        assert!(o.read_only);
        assert_eq!(o.synchronous, Synchronous::Full);
    }
}
