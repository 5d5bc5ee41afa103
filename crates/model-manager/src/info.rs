//! `get-model-info`: where a model is (`lifecycle::Fleet::locate`) and what is known of it.

use crate::ModelManager;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use vllm_core::door_use::{self, DoorUse};
use vllm_core::launch_args::{LaunchArgs, SamplingDefaults};
use vllm_core::models::{ModelRecord, ModelStatus, RecordedError, display_name};
use vllm_core::vllm::{ModelCard, VllmClient};
use vllm_core::{Result, estimate, models};
use vllm_fleet::inventory;
use vllm_fleet::lifecycle::{Located, Origin, supports_function_calling};
use vllm_mcp_kit::{ToolDef, Toolbox};

/// Registers `get-model-info`.
pub fn register(t: &mut Toolbox<ModelManager>) {
    t.add(
        ToolDef::read(
            "get-model-info",
            "Details of one model: status, launch configuration, context window, sampling defaults, performance \
             (tokens per second, latency, memory, GPU utilization; null where unknown) and capabilities.",
        ),
        |s: Arc<ModelManager>, p: InfoParams, _| async move { get_model_info(&s, p).await },
    );
}

/// The answer of `get-model-info`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct InfoAnswer {
    pub model_id: String,
    pub name: String,
    pub status: ModelStatus,
    pub origin: Origin,
    pub source: Option<String>,
    pub config: ModelConfigInfo,
    pub performance: Performance,
    pub capabilities: Capabilities,
    pub server: Option<ServerInfo>,
    /// Why the model is in `error`.
    pub error: Option<RecordedError>,
    /// Its use through the front door, when one serves and passed it requests.
    pub front_door: Option<DoorUse>,
}

/// How the model is (or would be) served.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModelConfigInfo {
    pub context_window: Option<u64>,
    /// Most tokens one answer may have: the sampling default when set, else the context window.
    pub max_tokens: Option<u64>,
    pub tensor_parallel_size: u32,
    pub pipeline_parallel_size: u32,
    /// `none` unless quantized.
    pub quantization: String,
    /// The `--dtype` given (`auto` when none), or config.json's `torch_dtype` for `auto`.
    pub dtype: String,
    pub gpu_memory_utilization: Option<f64>,
    pub enforce_eager: Option<bool>,
    pub enable_prefix_caching: Option<bool>,
    pub extra_args: Vec<String>,
    /// Sampling defaults from set-model-config.
    pub sampling_defaults: Map<String, Value>,
}

/// Measured performance; null where it cannot be measured.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Performance {
    /// Resident memory of the serving processes (or their GPU memory with NVML), MiB.
    pub memory_usage_mb: Option<u64>,
    /// Generated tokens per second over the window.
    pub throughput_tokens_per_second: Option<f64>,
    /// Mean end-to-end request latency over the window, ms.
    pub latency_ms: Option<f64>,
    /// Mean time to first token over the window, ms.
    pub time_to_first_token_ms: Option<f64>,
    /// Fraction 0..1 of the GPUs' compute in use (NVML); null on CPU.
    pub gpu_utilization: Option<f64>,
    /// KV-cache usage, fraction 0..1.
    pub kv_cache_usage: Option<f64>,
    pub requests_running: Option<f64>,
    pub requests_waiting: Option<f64>,
    /// Seconds the rates are computed over.
    pub window_seconds: Option<f64>,
    /// Why a figure is null.
    pub note: Option<String>,
}

/// What requests the model supports.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Capabilities {
    pub supports_streaming: bool,
    pub supports_logprobs: bool,
    /// `n` > 1.
    pub supports_multiple_choice: bool,
    /// Launched with a tool-call parser (`--enable-auto-tool-choice --tool-call-parser ...`).
    pub supports_function_calling: bool,
}

/// The vLLM server process.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ServerInfo {
    pub base_url: Option<String>,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    /// With the Ray backend: the job serving it and the node it runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ray_job: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub gpu_ids: Vec<u32>,
    /// RFC 3339 UTC.
    pub launched_at: Option<String>,
    pub loaded_at: Option<String>,
    /// The command line, secrets removed.
    pub argv: Vec<String>,
    /// Names of the environment variables set for it (values are never shown).
    pub env_names: Vec<String>,
    pub log_uri: String,
    pub config_uri: String,
    /// Relaunches so far by the restart policy or after port conflicts.
    pub restarts: u32,
    /// `{mode, max_restarts, backoff_seconds}` when set.
    pub restart_policy: Option<Value>,
    /// Unloaded after this many seconds without requests, when set.
    pub idle_ttl_seconds: Option<f64>,
    /// Waiting in the launch queue for GPUs another model is loading onto.
    pub queued: bool,
}

fn rfc(t: Option<f64>) -> Option<String> {
    t.map(|t| vllm_core::time::format_rfc3339(t as i64))
}

async fn get_model_info(s: &ModelManager, p: InfoParams) -> Result<InfoAnswer> {
    vllm_core::launch_args::validate_model_id("model_id", &p.model_id)?;
    let fleet = s.managed_fleet()?;
    let id = p.model_id.clone();
    let sampling = fleet
        .launcher()?
        .on_store(move |st| models::sampling(st, &id))
        .await?;
    let located = fleet.locate(&p.model_id, &ModelStatus::ALL).await?;
    let id = p.model_id.clone();
    let door = fleet
        .launcher()?
        .on_store(move |st| door_use::of_model(st, &id))
        .await?;
    let mut answer = answer_of(s, &p, located, sampling).await;
    answer.front_door = door;
    Ok(answer)
}

/// get-model-info's answer for a located model.
async fn answer_of(
    s: &ModelManager,
    p: &InfoParams,
    located: Located,
    sampling: SamplingDefaults,
) -> InfoAnswer {
    let origin = located.origin();
    match located {
        Located::Launched(r) => info_of_launched(s, r, sampling).await,
        Located::Attached { endpoint, card } => {
            let status = inventory::attached_status(&endpoint).await;
            info_of_served(s, &endpoint, card, origin, status, sampling).await
        }
        Located::Adapter { base, client, card } => {
            info_of_served(s, &client, card, origin, base.status, sampling).await
        }
        Located::Catalog { source, args } => {
            info_of_unloaded(s, &p.model_id, source, args, origin, sampling)
        }
        Located::Cached { source } => {
            let args = LaunchArgs::default();
            info_of_unloaded(s, &p.model_id, source, args, origin, sampling)
        }
    }
}

/// How a model is (or would be) served, from its launch arguments.
fn config_info(
    args: &LaunchArgs,
    window: Option<u64>,
    config_json: Option<&Value>,
    sampling: SamplingDefaults,
) -> ModelConfigInfo {
    let sampling_max = sampling.get("max_tokens").and_then(Value::as_u64);
    ModelConfigInfo {
        context_window: window,
        max_tokens: sampling_max.or(window),
        tensor_parallel_size: args.tensor_parallel_size.unwrap_or(1),
        pipeline_parallel_size: args.pipeline_parallel_size.unwrap_or(1),
        quantization: args.quantization.clone().unwrap_or_else(|| "none".into()),
        dtype: effective_dtype(args.dtype.as_deref(), config_json),
        gpu_memory_utilization: args.gpu_memory_utilization,
        enforce_eager: args.enforce_eager,
        enable_prefix_caching: args.enable_prefix_caching,
        extra_args: args.extra_args.clone(),
        sampling_defaults: sampling.into_iter().collect(),
    }
}

fn capabilities(supports_function_calling: bool) -> Capabilities {
    Capabilities {
        supports_streaming: true,
        supports_logprobs: true,
        supports_multiple_choice: true,
        supports_function_calling,
    }
}

async fn info_of_launched(
    s: &ModelManager,
    r: ModelRecord,
    sampling: SamplingDefaults,
) -> InfoAnswer {
    let launcher = s.launcher().ok();
    let config_json = launcher.and_then(|l| l.config_json(&r.source));
    let card = match launcher.and_then(|l| l.client_for(&r)) {
        Some(c) if r.status == ModelStatus::Loaded => c
            .models()
            .await
            .ok()
            .and_then(|cs| cs.into_iter().find(|c| c.id == r.model_id)),
        _ => None,
    };
    let window = card
        .as_ref()
        .and_then(|c| c.max_model_len)
        .or(r.args.max_model_len)
        .or_else(|| config_json.as_ref().and_then(estimate::model_max_len));
    let performance = if r.status == ModelStatus::Loaded {
        s.performance(&r).await
    } else {
        Performance {
            memory_usage_mb: Some(0),
            note: Some(format!(
                "the model is {}: nothing to measure",
                r.status.as_str()
            )),
            ..Performance::default()
        }
    };
    InfoAnswer {
        model_id: r.model_id.clone(),
        name: display_name(&r.model_id),
        status: r.status,
        origin: Origin::Launched,
        source: Some(r.source.clone()),
        config: config_info(&r.args, window, config_json.as_ref(), sampling),
        performance,
        capabilities: capabilities(supports_function_calling(&r.argv)),
        server: Some(ServerInfo {
            base_url: r.base_url(),
            port: r.port,
            pid: r.pid.filter(|_| r.status.is_active()),
            ray_job: r.job.as_ref().map(|j| j.submission_id.clone()),
            node: r.job.as_ref().and_then(|j| j.node_ip.clone()),
            gpu_ids: r.gpu_ids.clone(),
            launched_at: rfc(r.launched_at),
            loaded_at: rfc(r.loaded_at),
            argv: r.argv.clone(),
            env_names: r.env_names.clone(),
            log_uri: crate::resources::logs_uri(&r.model_id),
            config_uri: crate::resources::config_uri(&r.model_id),
            restarts: r.restarts,
            restart_policy: r
                .restart_policy
                .as_ref()
                .map(|p| serde_json::to_value(p).unwrap_or_default()),
            idle_ttl_seconds: r.idle_ttl_seconds,
            queued: r.is_queued(),
        }),
        error: r.error.clone(),
        front_door: None,
    }
}

/// A model a server we did not launch serves (an attached endpoint's, or a LoRA
/// adapter loaded on one of ours): its flags are not visible, its card is.
async fn info_of_served(
    s: &ModelManager,
    client: &VllmClient,
    card: ModelCard,
    origin: Origin,
    status: ModelStatus,
    sampling: SamplingDefaults,
) -> InfoAnswer {
    let performance = s.performance_of_endpoint(client, &card.id).await;
    let args = LaunchArgs::default();
    InfoAnswer {
        model_id: card.id.clone(),
        name: display_name(&card.id),
        status,
        origin,
        source: card.root.clone(),
        config: ModelConfigInfo {
            dtype: "auto".into(),
            ..config_info(&args, card.max_model_len, None, sampling)
        },
        performance,
        capabilities: capabilities(false),
        server: Some(ServerInfo {
            base_url: Some(client.base_url().to_string()),
            port: None,
            pid: None,
            ray_job: None,
            node: None,
            gpu_ids: Vec::new(),
            launched_at: None,
            loaded_at: None,
            argv: Vec::new(),
            env_names: Vec::new(),
            log_uri: crate::resources::logs_uri(&card.id),
            config_uri: crate::resources::config_uri(&card.id),
            restarts: 0,
            restart_policy: None,
            idle_ttl_seconds: None,
            queued: false,
        }),
        error: None,
        front_door: None,
    }
}

/// A catalog alias or a cached model that is not launched.
fn info_of_unloaded(
    s: &ModelManager,
    model_id: &str,
    source: String,
    args: LaunchArgs,
    origin: Origin,
    sampling: SamplingDefaults,
) -> InfoAnswer {
    let config_json = s.launcher().ok().and_then(|l| l.config_json(&source));
    let window = args
        .max_model_len
        .or_else(|| config_json.as_ref().and_then(estimate::model_max_len));
    InfoAnswer {
        name: display_name(&source),
        model_id: model_id.to_string(),
        status: ModelStatus::Unloaded,
        origin,
        config: config_info(&args, window, config_json.as_ref(), sampling),
        source: Some(source),
        performance: Performance {
            memory_usage_mb: Some(0),
            note: Some("the model is not loaded: nothing to measure".into()),
            ..Performance::default()
        },
        capabilities: capabilities(supports_function_calling(&args.extra_args)),
        server: None,
        error: None,
        front_door: None,
    }
}

/// `auto` resolved through config.json's `torch_dtype` when known.
fn effective_dtype(given: Option<&str>, config: Option<&Value>) -> String {
    match given {
        Some(d) if d != "auto" => d.to_string(),
        _ => config
            .and_then(|c| c.get("torch_dtype").or_else(|| c.get("dtype")))
            .and_then(Value::as_str)
            .map(|d| match d {
                "float16" => "half".to_string(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "auto".into()),
    }
}

/// Parameters of `get-model-info`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfoParams {
    /// The model, as list-models shows it.
    pub model_id: String,
}
