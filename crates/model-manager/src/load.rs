//! `load-model`: parameters → `lifecycle::Fleet::load` → the answer, one model or a batch.

use crate::ModelManager;
use crate::batch::{Batch, batch, ids_of};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use vllm_core::launch_args::LaunchArgs;
use vllm_core::models::{ModelRecord, ModelStatus, RestartPolicy};
use vllm_core::{Error, Result};
use vllm_fleet::launcher::supervisor::{LaunchOutcome, LaunchRequest, Preflight};
use vllm_fleet::lifecycle::{LoadEvent, LoadReport};
use vllm_mcp_kit::{CallCtx, ToolDef, Toolbox};

/// Registers `load-model`.
pub fn register(t: &mut Toolbox<ModelManager>) {
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
    /// With the Ray backend: the node it runs on (once Ray placed it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
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
        LaunchOutcome::AlreadyRunning { record } => match report.settled {
            // It was loading (the front door or another session started it): waited for.
            Some(r) => LoadAnswer {
                already_running: true,
                note: Some(format!(
                    "it was already loading (started elsewhere, the front door say): waited until it was {}",
                    r.status.as_str()
                )),
                ..answer_of_record(&r)
            },
            None => LoadAnswer {
                already_running: true,
                note: Some("already running with the same arguments: nothing was launched".into()),
                ..answer_of_record(&record)
            },
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
        node: r.job.as_ref().and_then(|j| j.node_ip.clone()),
        gpu_ids: r.gpu_ids.clone(),
        memory_required_mb: r.memory_estimate_mb,
        log_uri: Some(crate::resources::logs_uri(&r.model_id)),
        ..LoadAnswer::default()
    }
}

/// vLLM's `--dtype`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Auto,
    Half,
    Float16,
    Bfloat16,
    Float,
    Float32,
}

/// Weight quantization (`none`: the flag is left out).
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Quantization {
    None,
    Awq,
    AwqMarlin,
    Gptq,
    GptqMarlin,
    Fp8,
    Bitsandbytes,
}

impl Dtype {
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::Auto => "auto",
            Dtype::Half => "half",
            Dtype::Float16 => "float16",
            Dtype::Bfloat16 => "bfloat16",
            Dtype::Float => "float",
            Dtype::Float32 => "float32",
        }
    }
}

impl Quantization {
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::None => "none",
            Quantization::Awq => "awq",
            Quantization::AwqMarlin => "awq_marlin",
            Quantization::Gptq => "gptq",
            Quantization::GptqMarlin => "gptq_marlin",
            Quantization::Fp8 => "fp8",
            Quantization::Bitsandbytes => "bitsandbytes",
        }
    }
}

/// A restart policy for a launched model.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicyParam {
    /// Restart after the server dies or fails to start.
    pub mode: vllm_core::models::RestartMode,
    /// Most restarts before the model stays in `error` (default 3).
    pub max_restarts: Option<u32>,
    /// Seconds before the first restart, doubled each time (default 5).
    pub backoff_seconds: Option<f64>,
}

/// Parameters of `load-model`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadParams {
    /// The model's identity and served name: a Hugging Face repo id
    /// (`meta-llama/Llama-3.1-8B-Instruct`), a catalog alias, or an absolute model
    /// directory. Letters, digits and `._-/:` only.
    pub model_id: Option<String>,
    /// Several models at once (instead of `model_id`): one answer per model in `results`.
    pub model_ids: Option<Vec<String>>,
    /// What to load when it differs from `model_id` (a local directory or another repo);
    /// `model_id` stays the served name.
    pub source: Option<String>,
    /// GPUs to shard each layer over (default 1).
    pub tensor_parallel_size: Option<u32>,
    /// Pipeline stages (default 1).
    pub pipeline_parallel_size: Option<u32>,
    /// Fraction (0, 1] of each GPU's memory vLLM may take (vLLM's default 0.9).
    pub gpu_memory_utilization: Option<f64>,
    /// Context window in tokens (default: the model's limit).
    pub max_model_len: Option<u64>,
    /// Weight quantization.
    pub quantization: Option<Quantization>,
    /// Weight and activation dtype (default `auto`).
    pub dtype: Option<Dtype>,
    /// Disable CUDA graphs (slower, less memory, faster start).
    pub enforce_eager: Option<bool>,
    /// Reuse the KV cache of shared prompt prefixes.
    pub enable_prefix_caching: Option<bool>,
    /// More `vllm serve` arguments, one element per argument (e.g.
    /// `["--enable-auto-tool-choice", "--tool-call-parser", "llama3_json"]`).
    pub extra_args: Option<Vec<String>>,
    /// GPU ids to use (as many as tensor × pipeline parallel size); default: those with
    /// the most free memory.
    pub gpu_ids: Option<Vec<u32>>,
    /// With `[launcher] backend = "ray"`: the Ray node to run on, by address or node id
    /// (default: Ray's scheduler chooses).
    pub node: Option<String>,
    /// Only run the memory check and say what would happen.
    #[serde(default)]
    pub dry_run: bool,
    /// Launch even when the memory check says it will not fit.
    #[serde(default)]
    pub force: bool,
    /// Relaunch a running model whose arguments differ from these.
    #[serde(default)]
    pub replace: bool,
    /// Seconds to wait for the model to be served (0: answer at once with
    /// `status: loading`). When it runs out, the answer is still a success with
    /// `status: loading`.
    pub wait_seconds: Option<f64>,
    /// Restart the server automatically when it dies.
    pub restart_policy: Option<RestartPolicyParam>,
    /// Unload the model after this many seconds without requests.
    pub idle_ttl_seconds: Option<f64>,
}

impl LoadParams {
    /// The launch arguments given.
    pub fn launch_args(&self) -> LaunchArgs {
        LaunchArgs {
            tensor_parallel_size: self.tensor_parallel_size,
            pipeline_parallel_size: self.pipeline_parallel_size,
            gpu_memory_utilization: self.gpu_memory_utilization,
            max_model_len: self.max_model_len,
            quantization: self.quantization.map(|q| q.as_str().to_string()),
            dtype: self.dtype.map(|d| d.as_str().to_string()),
            enforce_eager: self.enforce_eager,
            enable_prefix_caching: self.enable_prefix_caching,
            extra_args: self.extra_args.clone().unwrap_or_default(),
            node: self.node.clone(),
        }
    }
}
