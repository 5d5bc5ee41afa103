//! Tool parameters of the model manager, as the model sees them in the input schemas.
//!
//! Doc comments here become the schema descriptions a model reads to call the tools:
//! they say units, ranges and defaults.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use vllm_core::launch_args::LaunchArgs;
use vllm_mcp_kit::page::PageParams;

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
        }
    }
}

/// Parameters of `unload-model`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnloadParams {
    /// The model to unload.
    pub model_id: Option<String>,
    /// Several models at once: one answer per model in `results`.
    pub model_ids: Option<Vec<String>>,
    /// Kill at once, even with requests running (default false: wait for them up to
    /// the grace period, then refuse with MODEL_BUSY).
    #[serde(default)]
    pub force: bool,
}

/// Parameters of `get-model-info`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfoParams {
    /// The model, as list-models shows it.
    pub model_id: String,
}

/// Parameters of `list-models`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only models with this status.
    pub status: Option<vllm_core::models::ModelStatus>,
    #[serde(flatten)]
    pub page: PageParams,
}

/// Sampling defaults a model applies to requests that do not set them.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Default output length in tokens (at most the model's context window).
    pub max_tokens: Option<u64>,
    /// ≥ 0; 0 is greedy.
    pub temperature: Option<f64>,
    /// In (0, 1].
    pub top_p: Option<f64>,
    /// -1 (off) or ≥ 1.
    pub top_k: Option<i64>,
    /// In [0, 1].
    pub min_p: Option<f64>,
    /// > 0; 1 is off.
    pub repetition_penalty: Option<f64>,
    /// In [-2, 2].
    pub presence_penalty: Option<f64>,
    /// In [-2, 2].
    pub frequency_penalty: Option<f64>,
    /// Seed for reproducible sampling.
    pub seed: Option<i64>,
}

impl SamplingConfig {
    /// Checks vLLM's ranges; `max_len` is the model's context window when known.
    pub fn validate(&self, max_len: Option<u64>) -> vllm_core::Result<()> {
        use vllm_core::Error;
        let bad = |f: &str, r: String| Err(Error::invalid(format!("config.{f}"), r));
        if let Some(t) = self.temperature
            && !(t.is_finite() && t >= 0.0)
        {
            return bad("temperature", format!("{t} must be ≥ 0"));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad("top_p", format!("{p} must be in (0, 1]"));
        }
        if let Some(k) = self.top_k
            && !(k == -1 || k >= 1)
        {
            return bad("top_k", format!("{k} must be -1 (off) or ≥ 1"));
        }
        if let Some(m) = self.min_p
            && !(0.0..=1.0).contains(&m)
        {
            return bad("min_p", format!("{m} must be in [0, 1]"));
        }
        if let Some(r) = self.repetition_penalty
            && !(r.is_finite() && r > 0.0)
        {
            return bad("repetition_penalty", format!("{r} must be > 0"));
        }
        for (f, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(v) = v
                && !(-2.0..=2.0).contains(&v)
            {
                return bad(f, format!("{v} must be in [-2, 2]"));
            }
        }
        if let Some(m) = self.max_tokens {
            if m == 0 {
                return bad("max_tokens", "must be at least 1".into());
            }
            if let Some(len) = max_len
                && m > len
            {
                return bad(
                    "max_tokens",
                    format!("{m} is above the model's context window of {len}"),
                );
            }
        }
        Ok(())
    }

    /// The fields given, as stored sampling defaults.
    pub fn to_map(&self) -> BTreeMap<String, Value> {
        let v = serde_json::json!({
            "max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
            "top_k": self.top_k, "min_p": self.min_p, "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty, "frequency_penalty": self.frequency_penalty,
            "seed": self.seed,
        });
        v.as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Parameters of `set-model-config`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetConfigParams {
    /// The model.
    pub model_id: String,
    /// The sampling defaults to set; fields left out keep their current value.
    pub config: SamplingConfig,
    /// Relaunch a loaded model now so the defaults apply at once (default false: they
    /// apply at the next launch).
    #[serde(default)]
    pub restart: bool,
}
