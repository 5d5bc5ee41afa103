//! `get-memory-stats`: GPU memory, the memory of the vLLM processes, and each model's
//! weights, KV cache and the rest.
//!
//! # Definitions
//! The PyTorch allocator inside vLLM is not visible from outside, so the GPU figures are
//! built from what is:
//! - `reserved_mb`: GPU memory in use on all GPUs (NVML `used`);
//! - `free_mb`: NVML `free` on all GPUs;
//! - `allocated_mb`: what the models we know hold for weights and KV cache (the sum over
//!   models where both are known: weights from vLLM's log or the launch estimate, KV
//!   cache from `vllm:cache_config_info`); null when no model has both;
//! - `cached_mb`: `reserved_mb − allocated_mb`: memory in use that holds neither weights
//!   nor KV cache (activations, CUDA graphs, the allocator's cache, other processes);
//! - `fragmentation_ratio`: `cached_mb / reserved_mb`, the share of used GPU memory not
//!   holding weights or KV cache (PyTorch's "reserved but not allocated" ratio, seen
//!   from outside); null when either is unknown.
//!
//! Per model, `activations_mb` is the model's GPU memory (what NVML attributes to its
//! processes) minus weights and KV cache; null when NVML attributes nothing to it.

use crate::PerfMonitor;
use schemars::JsonSchema;
use serde::Serialize;
use std::sync::Arc;
use vllm_core::gpu::GpuSnapshot;
use vllm_core::models::ModelRecord;
use vllm_core::monitor::Sample;
use vllm_core::monitor::history;
use vllm_core::monitor::memory::weights_mb_from_log_file;
use vllm_core::{Error, Result, models};
use vllm_fleet::launcher::process;
use vllm_mcp_kit::Kit;

/// GPU memory over all GPUs, MiB.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GpuMemory {
    /// Weights plus KV cache of the models we know.
    pub allocated_mb: Option<u64>,
    /// reserved_mb − allocated_mb.
    pub cached_mb: Option<u64>,
    /// GPU memory in use (NVML).
    pub reserved_mb: u64,
    pub free_mb: u64,
    pub total_mb: u64,
    /// cached_mb / reserved_mb.
    pub fragmentation_ratio: Option<f64>,
}

/// Host memory, MiB.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SystemMemory {
    /// Resident memory of every vLLM process of the launched models (/proc).
    pub process_mb: u64,
    /// Memory available for new processes (MemAvailable).
    pub available_mb: u64,
    /// Swap in use; null when /proc/meminfo is unreadable.
    pub swap_mb: Option<u64>,
}

/// One model's memory, MiB.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ModelMemory {
    pub model_id: String,
    /// The endpoint serving it (an attached endpoint's name or the launched model's id).
    pub endpoint: String,
    /// `launched` or `attached`.
    pub origin: String,
    pub weights_mb: Option<u64>,
    /// `log` (what vLLM logged when it loaded the model) or `estimate` (the launch estimate).
    pub weights_source: Option<String>,
    /// From vllm:cache_config_info kv_cache_memory_bytes.
    pub kv_cache_mb: Option<u64>,
    /// GPU memory of the model's processes minus weights and KV cache.
    pub activations_mb: Option<u64>,
    /// GPU memory NVML attributes to the model's processes.
    pub gpu_memory_mb: Option<u64>,
    /// Resident memory of the model's processes.
    pub process_mb: Option<u64>,
    /// Why a figure is null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The answer of get-memory-stats.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MemoryAnswer {
    pub timestamp: String,
    /// Null when no GPU is visible (see notes).
    pub gpu_memory: Option<GpuMemory>,
    pub system_memory: SystemMemory,
    pub model_memory: Vec<ModelMemory>,
    /// With the Ray backend: each node's memory and GPUs, as its agent reports them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<crate::nodes::NodeFigures>,
    pub notes: Vec<String>,
}

/// get-memory-stats.
pub async fn get_memory_stats(s: &Arc<PerfMonitor>) -> Result<MemoryAnswer> {
    let kit = s.kit.clone();
    let mut answer = tokio::task::spawn_blocking(move || compute(&kit))
        .await
        .map_err(|e| Error::Internal(format!("memory task failed: {e}")))??;
    match crate::nodes::of_cluster(&s.kit).await {
        Some(Ok(nodes)) => answer.nodes = nodes,
        Some(Err(note)) => answer.notes.push(note),
        None => {}
    }
    Ok(answer)
}

const MIB: u64 = 1 << 20;

fn compute(kit: &Kit) -> Result<MemoryAnswer> {
    let store = kit.store()?;
    let records = models::list(store)?;
    let groups = process::groups_recent(process::FIGURES_MAX_AGE);
    let live = crate::figures::live_groups(&records, &groups);
    // The newest sample of each series of the last retention period.
    let since = vllm_core::time::unix_now() - crate::figures::retention_seconds(kit);
    let latest = history::latest(store, since)?;
    let gpus = kit.gpus.snapshots();
    let mut notes = Vec::new();
    let snapshots = gpus.as_deref().ok();
    let mut model_memory: Vec<ModelMemory> = live
        .iter()
        .map(|(r, members)| launched_memory(r, members, &latest, snapshots))
        .collect();
    model_memory.extend(attached_memory(kit, &latest));
    let gpu_memory = gpu_memory(&gpus, &model_memory, &mut notes);
    let pids: Vec<u32> = live.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    if !kit.endpoints.is_empty() {
        notes.push(
            "system_memory.process_mb counts the processes of launched models only: attached endpoints' \
             processes are not visible to this monitor"
                .into(),
        );
    }
    Ok(MemoryAnswer {
        timestamp: vllm_core::time::now_rfc3339(),
        gpu_memory,
        system_memory: SystemMemory {
            process_mb: process::rss_mb_of(&pids),
            available_mb: process::available_memory_mb(),
            swap_mb: swap_used_mb(),
        },
        model_memory,
        nodes: Vec::new(),
        notes,
    })
}

/// A launched model's memory: weights (its log, else the launch's estimate), KV cache
/// (the server's own figure), GPU memory of its processes, and what is left for
/// activations.
fn launched_memory(
    r: &ModelRecord,
    members: &[u32],
    latest: &[Sample],
    gpus: Option<&[GpuSnapshot]>,
) -> ModelMemory {
    let url = r.base_url();
    let sample = latest
        .iter()
        .filter(|s| Some(&s.base_url) == url.as_ref() && s.up && !s.model.is_empty())
        .max_by(|a, b| a.ts.total_cmp(&b.ts));
    let (weights, source) = match r.log_path.as_deref().and_then(weights_mb_from_log_file) {
        Some(w) => (Some(w), Some("log")),
        None => match r.memory_estimate_mb {
            Some(e) => (Some(e), Some("estimate")),
            None => (None, None),
        },
    };
    let kv = sample
        .and_then(|s| s.detail.as_ref())
        .and_then(|d| d.kv_cache_memory_bytes)
        .map(|b| b.div_ceil(MIB));
    let gpu_mem = gpus.and_then(|g| vllm_core::gpu::memory_used_by(g, members));
    let mut why = Vec::new();
    if weights.is_none() {
        why.push("weights_mb: the log states no weight size and the launch has no estimate");
    }
    if kv.is_none() {
        why.push("kv_cache_mb: no sample of the server's vllm:cache_config_info yet");
    }
    let activations = match (gpu_mem, weights, kv) {
        (Some(t), Some(w), Some(k)) if t >= w + k => Some(t - w - k),
        (Some(_), Some(_), Some(_)) => {
            why.push("activations_mb: weights and KV cache exceed the GPU memory of the model's processes (an estimate is off)");
            None
        }
        (None, _, _) => {
            why.push("activations_mb: NVML attributes no GPU memory to the model's processes");
            None
        }
        _ => None,
    };
    ModelMemory {
        model_id: r.model_id.clone(),
        endpoint: sample.map_or(r.model_id.clone(), |s| s.endpoint.clone()),
        origin: "launched".into(),
        weights_mb: weights,
        weights_source: source.map(String::from),
        kv_cache_mb: kv,
        activations_mb: activations,
        gpu_memory_mb: gpu_mem,
        process_mb: Some(process::rss_mb_of(members)),
        note: (!why.is_empty()).then(|| why.join("; ")),
    }
}

/// The models attached endpoints serve: only their KV cache is visible from here.
fn attached_memory(kit: &Kit, latest: &[Sample]) -> Vec<ModelMemory> {
    let mut out = Vec::new();
    for c in &kit.endpoints {
        for s in latest
            .iter()
            .filter(|s| s.endpoint == c.name() && s.up && !s.model.is_empty())
        {
            out.push(ModelMemory {
                model_id: s.model.clone(),
                endpoint: s.endpoint.clone(),
                origin: "attached".into(),
                weights_mb: None,
                weights_source: None,
                kv_cache_mb: s
                    .detail
                    .as_ref()
                    .and_then(|d| d.kv_cache_memory_bytes)
                    .map(|b| b.div_ceil(MIB)),
                activations_mb: None,
                gpu_memory_mb: None,
                process_mb: None,
                note: Some(
                    "an attached endpoint's log and processes are not visible to this monitor: weights, \
                     activations and process memory are null"
                        .into(),
                ),
            });
        }
    }
    out
}

/// The GPUs' memory: reserved (in use), allocated (the models' weights and KV cache),
/// cached (the rest), free and total; `None` with a note without GPUs.
fn gpu_memory(
    gpus: &Result<Vec<GpuSnapshot>>,
    model_memory: &[ModelMemory],
    notes: &mut Vec<String>,
) -> Option<GpuMemory> {
    let g = match gpus {
        Ok(g) if !g.is_empty() => g,
        Ok(_) => {
            notes.push("gpu_memory: no GPU is visible".into());
            return None;
        }
        Err(e) => {
            notes.push(format!(
                "gpu_memory: {}: {}; {}",
                e.code(),
                e,
                e.suggestion()
            ));
            return None;
        }
    };
    let sum = |f: fn(&GpuSnapshot) -> Option<u64>| -> u64 { g.iter().filter_map(f).sum() };
    let reserved = sum(|x| x.memory_used_mb);
    let allocated: Option<u64> = model_memory
        .iter()
        .filter_map(|m| Some(m.weights_mb? + m.kv_cache_mb?))
        .fold(None, |a, v| Some(a.unwrap_or(0) + v));
    let cached = match allocated {
        Some(a) if a <= reserved => Some(reserved - a),
        Some(_) => {
            notes.push(
                "gpu_memory.cached_mb: the models' weights and KV cache exceed the GPU memory in use \
                 (they are not on these GPUs, or an estimate is off)"
                    .to_string(),
            );
            None
        }
        None => {
            notes.push(
                "gpu_memory.allocated_mb: no model has both its weights and KV cache size known"
                    .into(),
            );
            None
        }
    };
    Some(GpuMemory {
        allocated_mb: allocated,
        cached_mb: cached,
        reserved_mb: reserved,
        free_mb: sum(|x| x.memory_free_mb),
        total_mb: sum(|x| x.memory_total_mb),
        fragmentation_ratio: match cached {
            Some(c) if reserved > 0 => {
                Some((c as f64 / reserved as f64 * 10_000.0).round() / 10_000.0)
            }
            _ => None,
        },
    })
}

/// SwapTotal − SwapFree of /proc/meminfo, MiB.
fn swap_used_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(field("SwapTotal:")?.saturating_sub(field("SwapFree:")?) / 1024)
}
