//! How much memory a model needs, estimated before launching it.
//!
//! vLLM reserves `gpu_memory_utilization` × each GPU's total memory at start-up and refuses
//! to start when less than that is free; the weights and the KV cache must then fit inside
//! the reservation. These pure functions let the model manager refuse a load that cannot
//! work before spending a minute on a doomed `vllm serve`:
//!
//! - [`model_max_len`], [`param_count`], [`dtype_bytes`], [`quant_bytes`]: facts from `config.json`.
//! - [`estimate`]: weights and the KV cache of one sequence of `max_model_len`, per GPU.
//! - [`check_gpus`], [`check_cpu`]: whether that fits what is free.
//! - [`estimated_load_seconds`]: how long a start will take, for progress and timeouts.
//!
//! Everything is an estimate: `None` where a figure cannot be known, and the load proceeds
//! (vLLM checks for itself) rather than being refused on a guess.

use crate::gpu::GpuSnapshot;
use serde::Serialize;
use serde_json::Value;

/// Bytes in a MiB. Every `_mb` figure here is MiB, as NVML reports them.
const MIB: f64 = 1024.0 * 1024.0;

/// What vLLM assumes when a config names no length key (`_get_and_verify_max_len`).
pub const VLLM_DEFAULT_MAX_LEN: u64 = 2048;

/// Memory vLLM's CPU platform takes besides weights and KV cache: three Python processes
/// (API server, EngineCore, Worker) with torch loaded. Measured with the tiny model of the
/// reference captures: 4.2 GiB resident with a 1 GiB KV cache and 1 MiB of weights, and
/// EngineCore plus Worker alone held 3 GiB after the API server was killed.
pub const CPU_RUNTIME_OVERHEAD_MB: u64 = 3072;

/// `VLLM_CPU_KVCACHE_SPACE` when it is unset or 0: vLLM's CPU platform used 4 GiB up to at
/// least 0.11 ("VLLM_CPU_KVCACHE_SPACE (GiB) for CPU backend is not set, using 4 by
/// default"). vLLM 0.32 instead sizes the CPU KV cache from `gpu_memory_utilization` × RAM
/// when it is unset, which fails on a busy machine: the launcher should always set it.
pub const CPU_DEFAULT_KVCACHE_SPACE_GIB: f64 = 4.0;

/// Fixed part of a start: Python imports in three processes, engine start, warm-up. The
/// reference captures took 66 to 88 s warm for a 1 MiB model on 2 CPU cores, almost all of
/// it this part; GPU starts add CUDA graph capture and torch.compile in about the same time.
pub const LOAD_FIXED_SECONDS: u64 = 60;

/// Weight loading speed: about 1 GiB/s, a local NVMe disk or a warm page cache through
/// safetensors' mmap. Network file systems are slower; past loads correct for that.
pub const LOAD_MB_PER_SECOND: u64 = 1024;

fn get<'a>(config: &'a Value, key: &str) -> Option<&'a Value> {
    config.get(key).filter(|v| !v.is_null())
}

fn get_u64(config: &Value, key: &str) -> Option<u64> {
    let v = get(config, key)?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

fn get_f64(config: &Value, key: &str) -> Option<f64> {
    get(config, key)?.as_f64().filter(|f| f.is_finite())
}

/// The first of `keys` present as a number.
fn first_u64(config: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| get_u64(config, k))
}

/// The language model's part of a config: `text_config` for multimodal models (what vLLM
/// calls `hf_text_config`), else the config itself.
fn text_config(config: &Value) -> &Value {
    match config.get("text_config") {
        Some(t) if t.is_object() => t,
        _ => config,
    }
}

/// The model's longest sequence, derived the way vLLM's `_get_and_verify_max_len` does:
///
/// 1. The smallest of `max_position_embeddings`, `n_positions`, `max_seq_len`, `seq_length`,
///    `model_max_length`, `max_target_positions`, `max_sequence_length`, `max_seq_length`,
///    `seq_len`; a `model_max_length` in the config then overrides (Command-R).
/// 2. RoPE scaling (`rope_scaling`, or transformers 5's `rope_parameters`, possibly one per
///    layer type): unless the type is `su`, `longrope` or `llama3` (whose positions already
///    count the scaling), the length is multiplied by `factor`; for `yarn` the base is
///    `original_max_position_embeddings`. Gemma 3 is skipped: its length is already scaled.
///
/// Keys are read from `text_config` for multimodal configs, falling back to the top level.
/// `None` when no key is present (vLLM then assumes [`VLLM_DEFAULT_MAX_LEN`]). Not modelled:
/// vLLM also caps by a `model_max_length` in `tokenizer_config.json`, and by the sliding
/// window when it is disabled.
pub fn model_max_len(config: &Value) -> Option<u64> {
    let text = text_config(config);
    derived_max_len(text).or_else(|| derived_max_len(config))
}

fn derived_max_len(c: &Value) -> Option<u64> {
    const KEYS: [&str; 9] = [
        "max_position_embeddings",
        "n_positions",
        "max_seq_len",
        "seq_length",
        "model_max_length",
        "max_target_positions",
        "max_sequence_length",
        "max_seq_length",
        "seq_len",
    ];
    let mut len = KEYS
        .iter()
        .filter_map(|k| get_f64(c, k))
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))))?;
    if let Some(m) = get_f64(c, "model_max_length").filter(|m| *m > 0.0) {
        len = m;
    }
    let model_type = c.get("model_type").and_then(Value::as_str).unwrap_or("");
    let rope = get(c, "rope_scaling").or_else(|| get(c, "rope_parameters"));
    if let Some(rope) = rope.filter(|r| r.is_object())
        && !model_type.contains("gemma3")
    {
        // One set of parameters, or one per layer type (`{"full_attention": {...}, ...}`).
        let per_layer: Vec<&Value> =
            if rope.get("rope_type").is_some() || rope.get("type").is_some() {
                vec![rope]
            } else {
                rope.as_object()
                    .map(|m| m.values().filter(|v| v.is_object()).collect())
                    .unwrap_or_default()
            };
        let mut factor = 1.0;
        for rp in per_layer {
            let kind = rp
                .get("rope_type")
                .or_else(|| rp.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            if !matches!(kind, "su" | "longrope" | "llama3") {
                factor = get_f64(rp, "factor").unwrap_or(factor);
                if kind == "yarn"
                    && let Some(orig) = get_f64(rp, "original_max_position_embeddings")
                {
                    len = orig;
                }
            }
        }
        len *= factor;
    }
    (len.is_finite() && len > 0.0).then_some(len as u64)
}

/// A model's parameters, split by how quantization treats them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    /// Input embedding and, unless tied, the output head: never quantized by AWQ/GPTQ.
    embeddings: u64,
    /// The decoder layers' linear weights (attention and MLP/experts): what quantization shrinks.
    linear: u64,
    /// Norms, biases and MoE routers: kept in the model dtype.
    other: u64,
}

impl Params {
    fn total(self) -> u64 {
        self.embeddings + self.linear + self.other
    }
}

/// The shape a Llama-style decoder is described by.
#[derive(Debug, Clone, Copy)]
struct Shape {
    vocab: u64,
    hidden: u64,
    layers: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
}

fn shape(c: &Value) -> Option<Shape> {
    let hidden = first_u64(c, &["hidden_size", "n_embd", "d_model"])?;
    let layers = first_u64(c, &["num_hidden_layers", "n_layer", "num_layers"])?;
    let heads = first_u64(c, &["num_attention_heads", "n_head", "num_heads"])?;
    if hidden == 0 || layers == 0 || heads == 0 {
        return None;
    }
    let kv_heads = first_u64(c, &["num_key_value_heads", "num_kv_heads", "n_head_kv"])
        .filter(|k| *k > 0)
        .unwrap_or(heads);
    let head_dim = get_u64(c, "head_dim")
        .filter(|d| *d > 0)
        .unwrap_or(hidden / heads);
    Some(Shape {
        vocab: get_u64(c, "vocab_size").unwrap_or(0),
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
    })
}

fn params(config: &Value) -> Option<Params> {
    let c = text_config(config);
    let s = shape(c)?;
    if s.vocab == 0 {
        return None;
    }
    let model_type = c.get("model_type").and_then(Value::as_str).unwrap_or("");
    let q = s.heads * s.head_dim;
    let kv = s.kv_heads * s.head_dim;
    // q, k, v and o projections.
    let attn = s.hidden * q + 2 * s.hidden * kv + q * s.hidden;
    let attn_bias = if c.get("attention_bias").and_then(Value::as_bool) == Some(true) {
        q + 2 * kv + s.hidden
    } else if model_type.starts_with("qwen2") {
        // Qwen2 has biases on q, k and v, without saying so in its config.
        q + 2 * kv
    } else {
        0
    };
    // Qwen3's per-head q and k norms.
    let qk_norm = if model_type.starts_with("qwen3") {
        2 * s.head_dim
    } else {
        0
    };

    let experts =
        first_u64(c, &["num_local_experts", "num_experts", "n_routed_experts"]).unwrap_or(0);
    let (mlp, router) = if experts > 1 {
        let expert_inter = first_u64(c, &["moe_intermediate_size", "intermediate_size"])?;
        let mut mlp = experts * 3 * s.hidden * expert_inter;
        let mut router = s.hidden * experts;
        // Qwen2-MoE: one shared expert with its own size and a one-output gate.
        if let Some(shared) = get_u64(c, "shared_expert_intermediate_size").filter(|v| *v > 0) {
            mlp += 3 * s.hidden * shared;
            router += s.hidden;
        }
        // DeepSeek: n_shared_experts of the routed experts' size.
        if let Some(n) = get_u64(c, "n_shared_experts") {
            mlp += n * 3 * s.hidden * expert_inter;
        }
        (mlp, router)
    } else {
        let inter = first_u64(c, &["intermediate_size", "n_inner", "ffn_dim"])?;
        // gate, up and down projections (SwiGLU).
        (3 * s.hidden * inter, 0)
    };
    let tied = c
        .get("tie_word_embeddings")
        .or_else(|| config.get("tie_word_embeddings"))
        .and_then(Value::as_bool)
        // Llama, Mistral and Qwen2 configs all default to untied.
        .unwrap_or(false);
    let embed = s.vocab * s.hidden;
    Some(Params {
        embeddings: if tied { embed } else { 2 * embed },
        linear: s.layers * (attn + mlp),
        // Two RMSNorms per layer, the final norm, biases, routers.
        other: s.layers * (2 * s.hidden + attn_bias + qk_norm + router) + s.hidden,
    })
}

/// The number of parameters of a Llama-style decoder (Llama, Mistral, Qwen2/3, Mixtral,
/// Qwen-MoE), from `vocab_size`, `hidden_size`, `intermediate_size`, `num_hidden_layers`,
/// `num_attention_heads`, `num_key_value_heads`, `head_dim`, `tie_word_embeddings` and, for
/// MoE, `num_local_experts`/`num_experts` with `moe_intermediate_size`:
///
/// embedding (vocab × hidden, twice unless tied) + per layer [q, k, v, o projections
/// (hidden × heads·head_dim, 2 × hidden × kv_heads·head_dim, heads·head_dim × hidden) + MLP
/// (3 × hidden × intermediate, or that per expert plus a router) + two norms] + final norm.
///
/// Exact for Llama, Mistral and Qwen2 shapes. Approximate for others: a vision tower is not
/// counted (only `text_config`), MoE models with some dense layers count every layer as MoE,
/// and MLA attention (DeepSeek V2/V3) is counted as plain attention. `None` when a size is
/// missing.
pub fn param_count(config: &Value) -> Option<u64> {
    params(config).map(Params::total)
}

/// Bytes per element of a `torch_dtype`/`dtype` string.
fn named_dtype_bytes(name: &str) -> Option<f64> {
    match name
        .trim()
        .to_ascii_lowercase()
        .trim_start_matches("torch.")
    {
        "half" | "float16" | "fp16" | "bfloat16" | "bf16" => Some(2.0),
        "float" | "float32" | "fp32" => Some(4.0),
        "float8" | "fp8" | "float8_e4m3fn" | "float8_e5m2" | "int8" | "uint8" => Some(1.0),
        _ => None,
    }
}

/// Bytes per weight and activation element for vLLM's `--dtype`:
/// `half`/`float16`/`bfloat16` → 2, `float`/`float32` → 4, and `auto` (or none):
///
/// Under `auto` vLLM takes the config's `torch_dtype` (or `dtype`, also in `text_config`),
/// and on a GPU casts a float32 checkpoint down to the platform's preferred 16-bit type
/// (`_resolve_auto_dtype`: "Downcast for float32 models"); a config without a dtype is
/// treated as float32, so also 2. On vLLM's CPU platform float32 may be kept: pass `--dtype
/// float32` there (as the reference captures do) to have it counted as 4.
///
/// Quantized weights are smaller: see [`quant_bytes`]. This is the activation and KV dtype.
pub fn dtype_bytes(dtype: Option<&str>, _config: &Value) -> f64 {
    // `auto`, no dtype, or one vLLM would reject: whatever the checkpoint's 16- or 32-bit
    // dtype, a GPU runs it in 16 bits.
    dtype
        .filter(|d| !d.eq_ignore_ascii_case("auto"))
        .and_then(named_dtype_bytes)
        .filter(|b| *b >= 2.0)
        .unwrap_or(2.0)
}

/// Bytes per quantized weight, from `--quantization` or the config's
/// `quantization_config.quant_method` (with its `bits`): AWQ and GPTQ in all their kernels
/// (`awq`, `gptq`, `awq_marlin`, `gptq_marlin`, `marlin`, ...) → bits / 8, 4 bits (0.5) by
/// default; `fp8` and its variants → 1; `bitsandbytes` → 0.5 (1 with `load_in_8bit`).
/// `None` when the weights are not quantized or the method is not known here.
pub fn quant_bytes(quantization: Option<&str>, config: &Value) -> Option<f64> {
    let qc = get(config, "quantization_config")
        .or_else(|| get(text_config(config), "quantization_config"))
        .cloned()
        .unwrap_or(Value::Null);
    let method = quantization
        .filter(|q| !q.is_empty() && !q.eq_ignore_ascii_case("none"))
        .map(str::to_string)
        .or_else(|| {
            qc.get("quant_method")
                .and_then(Value::as_str)
                .map(str::to_string)
        })?
        .to_ascii_lowercase();
    let bits = first_u64(&qc, &["bits", "w_bit", "weight_bits"]).filter(|b| (1..=16).contains(b));
    match method.as_str() {
        m if m.starts_with("awq") || m.starts_with("gptq") || m.starts_with("marlin") => {
            Some(bits.unwrap_or(4) as f64 / 8.0)
        }
        m if m.contains("fp8") || m == "modelopt" => Some(1.0),
        "bitsandbytes" => {
            let eight = qc.get("load_in_8bit").and_then(Value::as_bool) == Some(true);
            Some(if eight { 1.0 } else { 0.5 })
        }
        _ => None,
    }
}

/// Bytes per KV cache element for `--kv-cache-dtype`: `auto` (or none) → the model dtype,
/// `fp8*` → 1, 16-bit names → 2, 32-bit → 4. `None` for a name not known here.
fn kv_bytes(kv_cache_dtype: Option<&str>, model_dtype_bytes: f64) -> Option<f64> {
    match kv_cache_dtype.map(|k| k.trim().to_ascii_lowercase()) {
        None => Some(model_dtype_bytes),
        Some(k) if k == "auto" || k.is_empty() => Some(model_dtype_bytes),
        Some(k) if k.starts_with("fp8") || k.starts_with("int8") => Some(1.0),
        Some(k) => named_dtype_bytes(&k),
    }
}

/// What [`estimate`] is given.
#[derive(Debug, Clone, Copy, Default)]
pub struct EstimateInput<'a> {
    /// The model's `config.json`, when known.
    pub config: Option<&'a Value>,
    /// Total size of the safetensors files, when known (already reflects quantization).
    pub weights_bytes: Option<u64>,
    /// `--dtype` (`auto` when `None`).
    pub dtype: Option<&'a str>,
    /// `--quantization` (else the config's `quantization_config`).
    pub quantization: Option<&'a str>,
    /// `--kv-cache-dtype` (`auto` when `None`).
    pub kv_cache_dtype: Option<&'a str>,
    /// `--tensor-parallel-size`; 0 is taken as 1.
    pub tensor_parallel_size: u32,
    /// `--pipeline-parallel-size`; 0 is taken as 1.
    pub pipeline_parallel_size: u32,
    /// `--max-model-len`, else the model's own ([`model_max_len`]).
    pub max_model_len: Option<u64>,
}

/// The memory a model needs; every `_mb` is MiB, rounded up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryEstimate {
    /// All the weights, over all GPUs.
    pub weights_mb: Option<u64>,
    /// The KV cache of one sequence of `max_model_len`, summed over the GPUs holding it
    /// (more than the plain formula when tensor parallelism replicates KV heads).
    pub kv_cache_mb: Option<u64>,
    /// What one GPU holds: its share of the weights and of that KV cache.
    pub per_gpu_mb: Option<u64>,
    /// `weights_mb` + `kv_cache_mb`.
    pub total_mb: Option<u64>,
    /// The length the KV cache was sized for.
    pub max_model_len: Option<u64>,
    /// Where the weights figure came from: `safetensors`, `config_params` or `unknown`.
    pub weights_source: &'static str,
    /// Assumptions and gaps, for people.
    pub notes: Vec<String>,
}

fn mb(bytes: f64) -> u64 {
    // Round up, ignoring floating-point dust (9000.000000000002 is 9000).
    ((bytes / MIB) - 1e-9).ceil().max(0.0) as u64
}

/// Estimates the memory a model needs before it is launched.
///
/// - Weights: the safetensors size when known, else [`param_count`] × bytes per parameter
///   (the quantized width for the decoder's linear layers, the model dtype for embeddings
///   and norms); each GPU holds 1 / (tensor_parallel_size × pipeline_parallel_size).
/// - KV cache of one sequence: 2 (K and V) × layers × kv_heads × head_dim × bytes ×
///   max_model_len. Per GPU, KV heads are split across tensor-parallel ranks (at least one
///   head each: vLLM replicates them when there are fewer heads than ranks) and layers
///   across pipeline stages (rounded up). vLLM fills the rest of its reservation with more
///   KV cache; one full sequence is what it needs to start at all.
///
/// When neither weights nor config are known every figure is `None`, with a note: the load
/// proceeds and vLLM checks for itself.
pub fn estimate(input: EstimateInput<'_>) -> MemoryEstimate {
    let tp = u64::from(input.tensor_parallel_size.max(1));
    let pp = u64::from(input.pipeline_parallel_size.max(1));
    let null = Value::Null;
    let config = input.config.unwrap_or(&null);
    let mut notes = Vec::new();

    let dtype_b = dtype_bytes(input.dtype, config);
    let quant_b = quant_bytes(input.quantization, config);
    if let Some(q) = input
        .quantization
        .filter(|q| !q.eq_ignore_ascii_case("none"))
        && quant_b.is_none()
    {
        notes.push(format!(
            "quantization `{q}` is not known here: weights counted at the model dtype"
        ));
    }

    let (weights_bytes, weights_source) = match (input.weights_bytes, params(config)) {
        (Some(b), _) if b > 0 => (Some(b as f64), "safetensors"),
        (_, Some(p)) => {
            let linear_b = quant_b.unwrap_or(dtype_b);
            if quant_b.is_some() {
                notes.push(format!(
                    "weights from config.json: decoder linear layers at {linear_b} bytes per parameter (quantized), embeddings and norms at {dtype_b}"
                ));
            } else {
                notes.push(format!(
                    "weights from config.json: {} parameters at {dtype_b} bytes each",
                    p.total()
                ));
            }
            let bytes = p.linear as f64 * linear_b + (p.embeddings + p.other) as f64 * dtype_b;
            (Some(bytes), "config_params")
        }
        _ => (None, "unknown"),
    };

    let max_len = input.max_model_len.or_else(|| {
        let derived = model_max_len(config);
        if derived.is_none() && input.config.is_some() {
            notes.push(format!(
                "config.json names no maximum length: vLLM assumes {VLLM_DEFAULT_MAX_LEN}"
            ));
            return Some(VLLM_DEFAULT_MAX_LEN);
        }
        derived
    });

    // KV cache per GPU, in bytes.
    let kv_per_gpu = match (shape(text_config(config)), max_len) {
        (Some(s), Some(len)) => {
            if get(text_config(config), "kv_lora_rank").is_some() {
                notes.push(
                    "MLA attention (kv_lora_rank) is counted as plain attention: the KV cache is overestimated"
                        .to_string(),
                );
            }
            let b = kv_bytes(input.kv_cache_dtype, dtype_b).unwrap_or_else(|| {
                notes.push(format!(
                    "kv_cache_dtype `{}` is not known here: counted at the model dtype",
                    input.kv_cache_dtype.unwrap_or("")
                ));
                dtype_b
            });
            let heads = (s.kv_heads / tp).max(1);
            let layers = s.layers.div_ceil(pp);
            Some(2.0 * (layers * heads * s.head_dim) as f64 * b * len as f64)
        }
        _ => None,
    };

    if weights_bytes.is_none() && kv_per_gpu.is_none() {
        notes.push(
            "neither config.json nor the weight files are known: memory not estimated; the load proceeds and vLLM checks for itself"
                .to_string(),
        );
        return MemoryEstimate {
            weights_mb: None,
            kv_cache_mb: None,
            per_gpu_mb: None,
            total_mb: None,
            max_model_len: max_len,
            weights_source,
            notes,
        };
    }
    if kv_per_gpu.is_none() {
        notes.push(
            "no usable config.json: the KV cache is not counted, so the figures are a lower bound"
                .to_string(),
        );
    }
    if weights_bytes.is_none() {
        notes.push(
            "weights unknown: only the KV cache is counted, so the figures are a lower bound"
                .to_string(),
        );
    }

    let kv_total = kv_per_gpu.map(|k| k * (tp * pp) as f64);
    let weights_per_gpu = weights_bytes.map(|w| w / (tp * pp) as f64);
    let sum = |a: Option<f64>, b: Option<f64>| a.unwrap_or(0.0) + b.unwrap_or(0.0);
    MemoryEstimate {
        weights_mb: weights_bytes.map(mb),
        kv_cache_mb: kv_total.map(mb),
        per_gpu_mb: Some(mb(sum(weights_per_gpu, kv_per_gpu))),
        total_mb: Some(mb(sum(weights_bytes, kv_total))),
        max_model_len: max_len,
        weights_source,
        notes,
    }
}

/// Whether a model fits, and the figures that say why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryCheck {
    /// `cuda` or `cpu`.
    pub platform: &'static str,
    /// What one GPU (or the host) must have free: the larger of the reservation and the estimate.
    pub required_mb: u64,
    /// Free memory: the least over the chosen GPUs, or the host's available memory.
    pub available_mb: u64,
    /// What vLLM will take: `gpu_memory_utilization` × the smallest chosen GPU's total, or
    /// the CPU KV cache space.
    pub reservation_mb: u64,
    pub fits: bool,
    /// Why, for people.
    pub notes: Vec<String>,
}

/// Checks an estimate against the GPUs chosen for the model.
///
/// vLLM takes `gpu_memory_utilization` × total memory on every GPU (the smallest GPU is the
/// one that binds) and refuses to start when any has less free: `required_mb` is the larger
/// of that reservation and the per-GPU estimate, `available_mb` the least free memory.
/// `fits` is `required_mb <= available_mb`, and also that the estimate fits inside the
/// reservation: weights plus one sequence's KV cache above it make vLLM fail after loading
/// (no memory for the KV cache), however much is free, so such a load is refused too.
/// A GPU whose figures NVML could not give is left out, with a note; with no figure at all,
/// nothing can be checked and `fits` is true (vLLM checks for itself).
pub fn check_gpus(
    est: &MemoryEstimate,
    gpus: &[GpuSnapshot],
    gpu_memory_utilization: f64,
) -> MemoryCheck {
    let mut notes = Vec::new();
    let util = if gpu_memory_utilization.is_finite() && gpu_memory_utilization > 0.0 {
        gpu_memory_utilization.min(1.0)
    } else {
        notes.push(format!(
            "gpu_memory_utilization {gpu_memory_utilization} is invalid: 0.9 (vLLM's default) used"
        ));
        0.9
    };
    let estimate = est.per_gpu_mb;
    if gpus.is_empty() {
        notes.push("no GPU was chosen for the model".to_string());
        return MemoryCheck {
            platform: "cuda",
            required_mb: estimate.unwrap_or(0),
            available_mb: 0,
            reservation_mb: 0,
            fits: false,
            notes,
        };
    }
    let free_of = |g: &GpuSnapshot| {
        g.memory_free_mb
            .or_else(|| Some(g.memory_total_mb?.saturating_sub(g.memory_used_mb?)))
    };
    for g in gpus {
        if g.memory_total_mb.is_none() || free_of(g).is_none() {
            notes.push(format!(
                "GPU {}: memory figures unavailable, not checked",
                g.index
            ));
        }
    }
    let smallest_total = gpus.iter().filter_map(|g| g.memory_total_mb).min();
    let least_free = gpus.iter().filter_map(free_of).min();
    let reservation = smallest_total
        .map(|t| ((t as f64 * util) - 1e-9).ceil().max(0.0) as u64)
        .unwrap_or(0);
    let required = reservation.max(estimate.unwrap_or(0));

    let mut fits = true;
    match least_free {
        Some(free) if free < required => {
            fits = false;
            notes.push(format!(
                "{required} MiB must be free on each GPU but only {free} MiB is: unload other models or free the GPU"
            ));
        }
        Some(_) => {}
        None => notes.push("free GPU memory unknown: not checked".to_string()),
    }
    match estimate {
        Some(e) if smallest_total.is_some() && e > reservation => {
            fits = false;
            let need = smallest_total.map(|t| e as f64 / t as f64).unwrap_or(1.0);
            let fix = if need < 1.0 {
                format!(
                    "raise it to at least {:.2}, ",
                    (need * 100.0).ceil() / 100.0
                )
            } else {
                String::new()
            };
            notes.push(format!(
                "the model needs about {e} MiB per GPU but gpu_memory_utilization {util} reserves only {reservation} MiB: {fix}lower max_model_len, quantize, or use more GPUs"
            ));
        }
        Some(_) => {}
        None => notes.push(
            "the model's own needs are unknown: only vLLM's reservation is checked".to_string(),
        ),
    }
    MemoryCheck {
        platform: "cuda",
        required_mb: required,
        available_mb: least_free.unwrap_or(0),
        reservation_mb: reservation,
        fits,
        notes,
    }
}

/// Checks a load on vLLM's CPU platform: it takes `VLLM_CPU_KVCACHE_SPACE` GiB for the KV
/// cache (0 or less is taken as unset: [`CPU_DEFAULT_KVCACHE_SPACE_GIB`]), the runtime
/// overhead ([`CPU_RUNTIME_OVERHEAD_MB`] is the measured default) and the weights, all out
/// of system memory, which must have that much available.
pub fn check_cpu(
    kv_cache_space_gib: f64,
    runtime_overhead_mb: u64,
    weights_mb: Option<u64>,
    available_system_mb: u64,
) -> MemoryCheck {
    let mut notes =
        vec!["CPU platform: vLLM keeps weights and KV cache in system memory".to_string()];
    let kv_gib = if kv_cache_space_gib.is_finite() && kv_cache_space_gib > 0.0 {
        kv_cache_space_gib
    } else {
        notes.push(format!(
            "VLLM_CPU_KVCACHE_SPACE unset: {CPU_DEFAULT_KVCACHE_SPACE_GIB} GiB assumed"
        ));
        CPU_DEFAULT_KVCACHE_SPACE_GIB
    };
    let reservation = (kv_gib * 1024.0).ceil() as u64;
    if weights_mb.is_none() {
        notes.push("weights unknown: not counted".to_string());
    }
    let required = reservation + runtime_overhead_mb + weights_mb.unwrap_or(0);
    notes.push(format!(
        "{reservation} MiB of KV cache (VLLM_CPU_KVCACHE_SPACE) + {runtime_overhead_mb} MiB for vLLM's processes + {} MiB of weights",
        weights_mb.unwrap_or(0)
    ));
    let fits = required <= available_system_mb;
    if !fits {
        notes.push(format!(
            "{required} MiB is needed but only {available_system_mb} MiB of system memory is available: lower VLLM_CPU_KVCACHE_SPACE or unload other models"
        ));
    }
    MemoryCheck {
        platform: "cpu",
        required_mb: required,
        available_mb: available_system_mb,
        reservation_mb: reservation,
        fits,
        notes,
    }
}

/// How many seconds a start of this model will take: the median of its past loads when
/// there are any (they include this machine's disk and compile caches), else
/// [`LOAD_FIXED_SECONDS`] plus the weights at [`LOAD_MB_PER_SECOND`]. Never 0.
pub fn estimated_load_seconds(weights_mb: Option<u64>, past_load_seconds: &[f64]) -> u64 {
    let mut past: Vec<f64> = past_load_seconds
        .iter()
        .copied()
        .filter(|s| s.is_finite() && *s > 0.0)
        .collect();
    if !past.is_empty() {
        past.sort_by(f64::total_cmp);
        let n = past.len();
        let median = if n % 2 == 1 {
            past[n / 2]
        } else {
            (past[n / 2 - 1] + past[n / 2]) / 2.0
        };
        return (median.round() as u64).max(1);
    }
    LOAD_FIXED_SECONDS + weights_mb.unwrap_or(0).div_ceil(LOAD_MB_PER_SECOND)
}
