//! The model manager's tools: list, load, unload, inspect and configure models.

use crate::ModelManager;
use crate::params::{InfoParams, ListParams, LoadParams, SetConfigParams, UnloadParams};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use vllm_core::launch_args::{LaunchArgs, SamplingDefaults};
use vllm_core::launcher::supervisor::{LaunchOutcome, LaunchRequest, Preflight};
use vllm_core::lifecycle::{
    LoadEvent, LoadReport, Located, Origin, UnloadReport, supports_function_calling,
};
use vllm_core::models::{ModelRecord, ModelStatus, RestartPolicy, display_name};
use vllm_core::vllm::{ModelCard, VllmClient};
use vllm_core::{Error, Result, estimate, model_files, models};
use vllm_mcp_kit::page::{Page, paginate};
use vllm_mcp_kit::{CallCtx, ToolDef, Toolbox};

/// Registers every tool of the model manager.
pub fn register(t: &mut Toolbox<ModelManager>) {
    t.add(
        ToolDef::read(
            "list-models",
            "List models: those launched by this manager (with status loading, loaded, error or unloaded and why), \
             models served by attached vLLM endpoints, catalog aliases and models in the local Hugging Face cache. \
             Paged: pass next_cursor as cursor for more.",
        ),
        |s: Arc<ModelManager>, p: ListParams, _| async move { list_models(&s, p).await },
    );
    t.add(
        ToolDef {
            gpu_work: true,
            raising_args: &["force", "replace"],
            idempotent: true,
            ..ToolDef::control(
                "load-model",
                "Load a model by starting a vLLM server for it. Returns at once with status loading, \
                 estimated_load_time (s) and memory_required_mb; wait_seconds waits until it is served. \
                 Checks memory first (dry_run: check only; force: load anyway). Loading a model that runs \
                 returns its state; with other arguments the answer lists the differences (replace: true relaunches).",
            )
        },
        |s: Arc<ModelManager>, p: LoadParams, ctx| async move { load_model(&s, p, ctx).await },
    );
    t.add(
        ToolDef {
            raising_args: &["force"],
            destructive: true,
            idempotent: true,
            ..ToolDef::control(
                "unload-model",
                "Unload a model launched by this manager: stops its vLLM server (SIGTERM, grace period, then SIGKILL) \
                 and reports the memory freed. With requests running it waits for them, then refuses with MODEL_BUSY \
                 unless force is true.",
            )
        },
        |s: Arc<ModelManager>, p: UnloadParams, _| async move { unload_model(&s, p).await },
    );
    t.add(
        ToolDef::read(
            "get-model-info",
            "Details of one model: status, launch configuration, context window, sampling defaults, performance \
             (tokens per second, latency, memory, GPU utilization; null where unknown) and capabilities.",
        ),
        |s: Arc<ModelManager>, p: InfoParams, _| async move { get_model_info(&s, p).await },
    );
    t.add(
        ToolDef {
            idempotent: true,
            ..ToolDef::control(
                "set-model-config",
                "Set a model's sampling defaults (max_tokens, temperature, top_p, top_k, repetition_penalty, ...) used \
                 for requests that do not set them. They apply at the next launch; restart: true relaunches a loaded \
                 model now. The answer says when they take effect.",
            )
        },
        |s: Arc<ModelManager>, p: SetConfigParams, _| async move { set_model_config(&s, p).await },
    );
}

/// One model in `list-models`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ModelSummary {
    /// The model id (the served name for loaded models).
    pub id: String,
    /// A human-readable name.
    pub name: String,
    /// `loaded`, `loading`, `unloaded`, `error`, `stopping` or `sleeping`.
    pub status: ModelStatus,
    /// `launched` (by this manager), `attached` (an endpoint we did not start),
    /// `catalog` (a configured alias) or `cache` (the local Hugging Face cache).
    pub origin: Origin,
    /// What vLLM loads (repo id or directory).
    pub source: Option<String>,
    /// Memory the serving processes use now, MiB (0 when not loaded; null when unknown).
    pub memory_usage_mb: Option<u64>,
    /// Context window in tokens.
    pub context_window: Option<u64>,
    /// Most tokens one answer may have: the sampling default when set, else the context window.
    pub max_tokens: Option<u64>,
    pub tensor_parallel_size: u32,
    pub pipeline_parallel_size: u32,
    /// Where the model is served (OpenAI-compatible API under `/v1`).
    pub base_url: Option<String>,
    /// The attached endpoint's name, for `attached` models.
    pub endpoint: Option<String>,
    /// Why the model is in `error`.
    pub error: Option<Value>,
}

/// The answer of `list-models`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListAnswer {
    pub models: Vec<ModelSummary>,
    /// Models in the whole list (all pages).
    pub total: usize,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
    /// Attached endpoints that did not answer (their models are missing from the list).
    pub unreachable_endpoints: Vec<String>,
}

/// `sleeping` when an attached server says so (dev-mode endpoint), else `loaded`: it
/// answered `/v1/models`. Servers without the endpoint answer 404, which means awake.
async fn attached_status(ep: &vllm_core::vllm::VllmClient) -> ModelStatus {
    match ep.is_sleeping().await {
        Ok(true) => ModelStatus::Sleeping,
        _ => ModelStatus::Loaded,
    }
}

async fn list_models(s: &ModelManager, p: ListParams) -> Result<ListAnswer> {
    let launcher = s.launcher()?;
    let mut all = Vec::new();
    let mut seen = HashSet::new();
    let groups =
        vllm_core::launcher::process::groups_recent(vllm_core::launcher::process::FIGURES_MAX_AGE);
    let sampling = launcher.on_store(models::all_sampling).await?;
    for r in launcher.list_quick().await? {
        seen.insert(r.model_id.clone());
        all.push(s.summary_of_record(&r, &groups, &sampling));
    }
    let mut unreachable = Vec::new();
    for ep in &s.kit.endpoints {
        match ep.models().await {
            Ok(cards) => {
                let status = attached_status(ep).await;
                for c in cards {
                    if !seen.insert(c.id.clone()) {
                        continue;
                    }
                    all.push(ModelSummary {
                        name: display_name(&c.id),
                        status,
                        origin: Origin::Attached,
                        source: c.root.clone(),
                        memory_usage_mb: None,
                        context_window: c.max_model_len,
                        max_tokens: c.max_model_len,
                        tensor_parallel_size: 1,
                        pipeline_parallel_size: 1,
                        base_url: Some(ep.base_url().to_string()),
                        endpoint: Some(ep.name().to_string()),
                        error: None,
                        id: c.id,
                    });
                }
            }
            Err(e) => unreachable.push(format!("{} ({})", ep.name(), e.code())),
        }
    }
    for (alias, entry) in &s.kit.config.catalog {
        if !seen.insert(alias.clone()) {
            continue;
        }
        let window = entry.args.max_model_len.or_else(|| {
            launcher
                .config_json(&entry.source)
                .as_ref()
                .and_then(estimate::model_max_len)
        });
        all.push(ModelSummary {
            id: alias.clone(),
            name: entry
                .name
                .clone()
                .unwrap_or_else(|| display_name(&entry.source)),
            status: ModelStatus::Unloaded,
            origin: Origin::Catalog,
            source: Some(entry.source.clone()),
            memory_usage_mb: Some(0),
            context_window: window,
            max_tokens: window,
            tensor_parallel_size: entry.args.tensor_parallel_size.unwrap_or(1),
            pipeline_parallel_size: entry.args.pipeline_parallel_size.unwrap_or(1),
            base_url: None,
            endpoint: None,
            error: None,
        });
    }
    if let Some(cache) = launcher.hub_cache() {
        for id in model_files::cached_repo_ids(cache) {
            if !seen.insert(id.clone()) {
                continue;
            }
            let window = launcher
                .config_json(&id)
                .as_ref()
                .and_then(estimate::model_max_len);
            all.push(ModelSummary {
                name: display_name(&id),
                status: ModelStatus::Unloaded,
                origin: Origin::Cache,
                source: Some(id.clone()),
                memory_usage_mb: Some(0),
                context_window: window,
                max_tokens: window,
                tensor_parallel_size: 1,
                pipeline_parallel_size: 1,
                base_url: None,
                endpoint: None,
                error: None,
                id,
            });
        }
    }
    if let Some(st) = &p.status {
        all.retain(|m| m.status == *st);
    }
    let Page {
        items,
        total,
        next_cursor,
    } = paginate(all, &p.page, &s.kit.config.limits, "models")?;
    Ok(ListAnswer {
        models: items,
        total,
        next_cursor,
        unreachable_endpoints: unreachable,
    })
}

/// The answer of `load-model` for one model.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct LoadAnswer {
    pub model_id: String,
    /// `loading`, `loaded`, `error`, ... (for `dry_run`: `unloaded` or the current status).
    pub status: ModelStatus,
    /// Seconds the load is expected to take: this model's past loads, else a size-based estimate.
    pub estimated_load_time: Option<u64>,
    /// Memory needed per GPU (or system memory on the CPU platform), MiB; null when unknown.
    pub memory_required_mb: Option<u64>,
    /// The served API (`<base_url>/v1`).
    pub base_url: Option<String>,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub gpu_ids: Vec<u32>,
    /// The memory check: platform, required_mb, available_mb, fits, notes.
    pub memory_check: Option<Value>,
    /// How the requirement was estimated (weights, KV cache, sources, notes).
    pub estimate: Option<Value>,
    /// Another model is loading on the same GPUs: this one waits its turn (status `loading`).
    pub queued: bool,
    /// The model already ran with the same arguments: nothing was launched.
    pub already_running: bool,
    /// What differs from the running model's arguments (`replace: true` relaunches).
    pub differences: Option<Map<String, Value>>,
    pub dry_run: bool,
    /// Seconds it took to be served, when `wait_seconds` saw it load.
    pub load_seconds: Option<f64>,
    /// The model's log, as a resource.
    pub log_uri: Option<String>,
    pub note: Option<String>,
}

/// The answer of `load-model` (or of `unload-model`): one model, or `results` for a batch.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Batch<T> {
    One(T),
    Many {
        /// One answer per model, in order; each has its own `success`.
        results: Vec<Value>,
    },
}

fn ids_of(one: &Option<String>, many: &Option<Vec<String>>) -> Result<Vec<String>> {
    match (one, many) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "model_ids",
            "give model_id or model_ids, not both",
        )),
        (Some(id), None) => Ok(vec![id.clone()]),
        (None, Some(ids)) if !ids.is_empty() && ids.len() <= 32 => Ok(ids.clone()),
        (None, Some(_)) => Err(Error::invalid("model_ids", "give 1 to 32 model ids")),
        (None, None) => Err(Error::invalid(
            "model_id",
            "missing: give the model to act on",
        )),
    }
}

async fn batch<F, Fut, T>(ids: Vec<String>, single: bool, f: F) -> Result<Batch<T>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
    T: Serialize,
{
    if single {
        return Ok(Batch::One(
            f(ids.into_iter().next().unwrap_or_default()).await?,
        ));
    }
    let mut results = Vec::new();
    for id in ids {
        results.push(match f(id).await {
            Ok(v) => {
                vllm_mcp_kit::envelope::with_success(serde_json::to_value(v).unwrap_or_default())
            }
            Err(e) => vllm_mcp_kit::envelope::error_json(&e),
        });
    }
    Ok(Batch::Many { results })
}

async fn load_model(s: &ModelManager, p: LoadParams, ctx: CallCtx) -> Result<Batch<LoadAnswer>> {
    let ids = ids_of(&p.model_id, &p.model_ids)?;
    if let Some(w) = p.wait_seconds
        && !(0.0..=3600.0).contains(&w)
    {
        return Err(Error::invalid(
            "wait_seconds",
            format!("{w} is not between 0 and 3600"),
        ));
    }
    if p.model_ids.is_some() && p.source.is_some() {
        return Err(Error::invalid(
            "source",
            "source applies to one model_id, not to model_ids",
        ));
    }
    let restart_policy = p.restart_policy.as_ref().map(|r| RestartPolicy {
        mode: r.mode,
        max_restarts: r.max_restarts.unwrap_or(3),
        backoff_seconds: r.backoff_seconds.unwrap_or(5.0),
    });
    if let Some(t) = p.idle_ttl_seconds
        && !(t.is_finite() && t >= 1.0)
    {
        return Err(Error::invalid(
            "idle_ttl_seconds",
            format!("{t} must be at least 1 second"),
        ));
    }
    let single = p.model_ids.is_none();
    batch(ids, single, |id| {
        let req = LaunchRequest {
            model_id: id,
            source: p.source.clone(),
            args: p.launch_args(),
            gpu_ids: p.gpu_ids.clone(),
            force: p.force,
            replace: p.replace,
            dry_run: p.dry_run,
            restart_policy: restart_policy.clone(),
            idle_ttl_seconds: p.idle_ttl_seconds,
        };
        let ctx = ctx.clone();
        async move { load_one(s, req, p.wait_seconds.unwrap_or(0.0), ctx).await }
    })
    .await
}

fn preflight_parts(pre: &Preflight) -> (Option<u64>, Option<Value>, Option<Value>) {
    (
        pre.check
            .as_ref()
            .map(|c| c.required_mb)
            .or(pre.estimate.per_gpu_mb),
        pre.check
            .as_ref()
            .map(|c| serde_json::to_value(c).unwrap_or_default()),
        Some(serde_json::to_value(&pre.estimate).unwrap_or_default()),
    )
}

async fn load_one(
    s: &ModelManager,
    req: LaunchRequest,
    wait: f64,
    ctx: CallCtx,
) -> Result<LoadAnswer> {
    let report = s
        .managed_fleet()?
        .load(&req, Duration::from_secs_f64(wait), |event| match event {
            LoadEvent::Started { record, .. } => {
                let event = json!({"event": "model_launched", "model_id": record.model_id,
                                   "pid": record.pid, "port": record.port});
                let kit = s.kit.clone();
                tokio::spawn(async move { kit.notifier.info("model-manager", event).await });
            }
            LoadEvent::Waited {
                waited,
                estimated_seconds,
            } => {
                let ctx = ctx.clone();
                let total = Some(estimated_seconds.max(waited));
                tokio::spawn(async move { ctx.progress(waited, total, "loading").await });
            }
        })
        .await
        .map_err(with_log_uri)?;
    Ok(load_answer(&req.model_id, report, wait))
}

/// `load-model`'s answer for what the load did.
fn load_answer(model_id: &str, report: LoadReport, wait: f64) -> LoadAnswer {
    match report.outcome {
        LaunchOutcome::DryRun { preflight, source } => {
            let fits = preflight.check.as_ref().map(|c| c.fits);
            LoadAnswer {
                model_id: model_id.to_string(),
                status: report.current,
                gpu_ids: preflight.gpu_ids.clone(),
                dry_run: true,
                note: Some(match fits {
                    Some(true) => {
                        format!("`{source}` fits: load-model without dry_run launches it.")
                    }
                    Some(false) => {
                        format!("`{source}` does not fit: free memory or use force: true.")
                    }
                    None => format!(
                        "nothing is known locally about `{source}` to check; a load would proceed."
                    ),
                }),
                ..with_preflight(LoadAnswer::default(), &preflight)
            }
        }
        LaunchOutcome::Queued {
            record,
            preflight,
            ahead,
        } => LoadAnswer {
            queued: true,
            note: Some(format!(
                "{ahead} load(s) on the same GPUs go first; it starts when they are served \
                 (list-models shows its progress)"
            )),
            ..with_preflight(answer_of_record(&record), &preflight)
        },
        LaunchOutcome::AlreadyRunning { record } => LoadAnswer {
            already_running: true,
            note: Some("already running with the same arguments: nothing was launched".into()),
            ..answer_of_record(&record)
        },
        LaunchOutcome::Differs {
            record,
            differences,
        } => LoadAnswer {
            note: Some(
                "the model runs with other arguments; call again with replace: true to relaunch it"
                    .into(),
            ),
            differences: Some(differences),
            ..answer_of_record(&record)
        },
        LaunchOutcome::Started { record, preflight } => {
            let mut answer = with_preflight(answer_of_record(&record), &preflight);
            match report.settled {
                Some(r) if r.status == ModelStatus::Loaded => {
                    answer.load_seconds = r
                        .loaded_at
                        .zip(r.launched_at)
                        .map(|(l, s)| ((l - s) * 10.0).round() / 10.0);
                    answer.status = ModelStatus::Loaded;
                }
                Some(r) => {
                    answer.status = r.status;
                    answer.note = Some(format!(
                        "still {} after {wait} s; list-models or get-model-info shows when it is served",
                        r.status.as_str()
                    ));
                }
                None => {}
            }
            answer
        }
    }
}

fn with_preflight(answer: LoadAnswer, pre: &Preflight) -> LoadAnswer {
    let (memory_required_mb, memory_check, estimate) = preflight_parts(pre);
    LoadAnswer {
        estimated_load_time: Some(pre.estimated_load_seconds),
        memory_required_mb,
        memory_check,
        estimate,
        ..answer
    }
}

/// A start failure as the model manager answers it: with the model's log as a resource.
pub fn with_log_uri(e: Error) -> Error {
    match e {
        Error::ModelLoadFailed {
            model,
            reason,
            message,
            mut details,
        } => {
            details.insert("log_uri".into(), json!(crate::resources::logs_uri(&model)));
            Error::ModelLoadFailed {
                model,
                reason,
                message,
                details,
            }
        }
        other => other,
    }
}

fn answer_of_record(r: &ModelRecord) -> LoadAnswer {
    LoadAnswer {
        model_id: r.model_id.clone(),
        status: r.status,
        base_url: r.base_url(),
        port: r.port,
        pid: r.pid,
        gpu_ids: r.gpu_ids.clone(),
        memory_required_mb: r.memory_estimate_mb,
        log_uri: Some(crate::resources::logs_uri(&r.model_id)),
        ..LoadAnswer::default()
    }
}

/// The answer of `unload-model` for one model.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UnloadAnswer {
    pub model_id: String,
    /// `unloaded`.
    pub status: ModelStatus,
    /// Memory given back, measured (GPU memory via NVML, else the processes' resident
    /// memory), MiB; null for an attached server whose processes are not visible here.
    pub memory_freed_mb: Option<u64>,
    /// It was running when asked (false: already unloaded, nothing to do).
    pub was_running: bool,
    /// It stopped on SIGTERM within the grace period (false: it had to be killed).
    pub terminated_gracefully: bool,
    pub seconds: f64,
    pub note: Option<String>,
}

async fn unload_model(s: &ModelManager, p: UnloadParams) -> Result<Batch<UnloadAnswer>> {
    let ids = ids_of(&p.model_id, &p.model_ids)?;
    let single = p.model_ids.is_none();
    batch(ids, single, |id| async move {
        unload_one(s, &id, p.force).await
    })
    .await
}

async fn unload_one(s: &ModelManager, model_id: &str, force: bool) -> Result<UnloadAnswer> {
    let seconds = |s: f64| (s * 1000.0).round() / 1000.0;
    match s.managed_fleet()?.unload(model_id, force).await? {
        UnloadReport::Stopped(out) => {
            if out.was_running {
                let event = json!({"event": "model_unloaded", "model_id": model_id,
                                   "memory_freed_mb": out.memory_freed_mb});
                s.kit.notifier.info("model-manager", event).await;
            }
            Ok(UnloadAnswer {
                model_id: model_id.to_string(),
                status: ModelStatus::Unloaded,
                memory_freed_mb: Some(out.memory_freed_mb),
                note: None,
                was_running: out.was_running,
                terminated_gracefully: out.terminated_gracefully,
                seconds: seconds(out.seconds),
            })
        }
        // A model on an endpoint we did not start cannot be stopped: sleeping frees
        // its accelerator memory instead.
        UnloadReport::PutToSleep {
            endpoint,
            was_running,
            seconds: took,
        } => Ok(UnloadAnswer {
            model_id: model_id.to_string(),
            status: ModelStatus::Sleeping,
            memory_freed_mb: None,
            was_running,
            terminated_gracefully: true,
            seconds: seconds(took),
            note: Some(format!(
                "`{model_id}` is served by {endpoint}, which vllm-mcp did not start: it was put to sleep (level 1) \
                 rather than stopped; wake-model brings it back. Its memory is not visible from here."
            )),
        }),
    }
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
    pub error: Option<Value>,
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
    match fleet.locate(&p.model_id, &ModelStatus::ALL).await? {
        Located::Launched(r) => Ok(info_of_launched(s, r, sampling).await),
        Located::Attached { endpoint, card } => {
            let status = attached_status(&endpoint).await;
            Ok(info_of_served(s, &endpoint, card, Origin::Attached, status, sampling).await)
        }
        Located::Adapter { base, client, card } => {
            let status = base.status;
            Ok(info_of_served(s, &client, card, Origin::Adapter, status, sampling).await)
        }
        Located::Catalog { source, args } => Ok(info_of_unloaded(
            s,
            &p.model_id,
            source,
            args,
            Origin::Catalog,
            sampling,
        )),
        Located::Cached { source } => {
            let args = LaunchArgs::default();
            Ok(info_of_unloaded(
                s,
                &p.model_id,
                source,
                args,
                Origin::Cache,
                sampling,
            ))
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
            queued: r.status == ModelStatus::Loading && r.pid.is_none(),
        }),
        error: r
            .error
            .as_ref()
            .map(|e| serde_json::to_value(e).unwrap_or_default()),
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

/// The answer of `set-model-config`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SetConfigAnswer {
    pub model_id: String,
    /// Every sampling default now in force for the model.
    pub updated_config: Map<String, Value>,
    /// `next_launch`, or `now` when the model was relaunched (restart: true).
    pub takes_effect: String,
    /// The model's status after the call.
    pub status: ModelStatus,
    pub note: String,
}

async fn set_model_config(s: &ModelManager, p: SetConfigParams) -> Result<SetConfigAnswer> {
    vllm_core::launch_args::validate_model_id("model_id", &p.model_id)?;
    // Ranges first: a bad value is wrong whatever the model; max_tokens is checked
    // against the context window below, once the model is known.
    p.config.validate(None)?;
    let launcher = s.launcher()?;
    let record = launcher.get(&p.model_id).await?;
    let known = record.is_some()
        || s.kit.config.catalog.contains_key(&p.model_id)
        || model_files::resolve_dir(&p.model_id, launcher.hub_cache()).is_some();
    if !known {
        for ep in &s.kit.endpoints {
            if let Ok(cards) = ep.models().await
                && cards.iter().any(|c| c.id == p.model_id)
            {
                return Err(Error::Unsupported {
                    what: format!(
                        "sampling defaults for `{}`, served by an attached endpoint",
                        p.model_id
                    ),
                    suggestion:
                        "Sampling defaults apply when vllm-mcp launches the model; set them with \
                                 --override-generation-config where that server is started."
                            .into(),
                });
            }
        }
        return Err(Error::ModelNotFound(p.model_id));
    }
    let max_len = record
        .as_ref()
        .and_then(|r| r.args.max_model_len)
        .or_else(|| {
            let source = record
                .as_ref()
                .map(|r| r.source.clone())
                .unwrap_or_else(|| p.model_id.clone());
            launcher
                .config_json(&source)
                .as_ref()
                .and_then(estimate::model_max_len)
        });
    p.config.validate(max_len)?;
    let given = p.config.to_map();
    if given.is_empty() {
        return Err(Error::invalid(
            "config",
            "give at least one sampling default to set",
        ));
    }
    let id = p.model_id.clone();
    let merged = launcher
        .on_store(move |st| {
            let mut merged = models::sampling(st, &id)?;
            merged.extend(given);
            models::set_sampling(st, &id, &merged)?;
            Ok(merged)
        })
        .await?;
    let running = record.as_ref().is_some_and(|r| r.status.is_active());
    let (takes_effect, status, note) = if p.restart && running {
        let r = record.expect("running implies a record");
        let req = LaunchRequest {
            model_id: r.model_id.clone(),
            source: Some(r.source.clone()),
            args: r.args.clone(),
            gpu_ids: (!r.gpu_ids.is_empty()).then(|| r.gpu_ids.clone()),
            force: true,
            replace: true,
            restart_policy: r.restart_policy.clone(),
            idle_ttl_seconds: r.idle_ttl_seconds,
            dry_run: false,
        };
        launcher.stop(&r.model_id, false).await?;
        let status = match launcher.launch(&req).await? {
            LaunchOutcome::Started { record, .. } => record.status,
            LaunchOutcome::AlreadyRunning { record }
            | LaunchOutcome::Differs { record, .. }
            | LaunchOutcome::Queued { record, .. } => record.status,
            LaunchOutcome::DryRun { .. } => ModelStatus::Unloaded,
        };
        (
            "now",
            status,
            "relaunched with the new defaults; it is loading (list-models shows when it is served)"
                .to_string(),
        )
    } else if running {
        (
            "next_launch",
            record.map(|r| r.status).unwrap_or(ModelStatus::Unloaded),
            "stored; the running server keeps its defaults until it is relaunched (restart: true does it now)".into(),
        )
    } else {
        (
            "next_launch",
            record.map(|r| r.status).unwrap_or(ModelStatus::Unloaded),
            "stored; applied when the model is next loaded".into(),
        )
    };
    Ok(SetConfigAnswer {
        model_id: p.model_id,
        updated_config: merged.into_iter().collect(),
        takes_effect: takes_effect.into(),
        status,
        note,
    })
}
