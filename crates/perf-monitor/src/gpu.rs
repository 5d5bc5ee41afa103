//! `get-gpu-stats`: every figure NVML gives per GPU, with the processes on it mapped to
//! our launched models.
//!
//! `sm_utilization` and `tensor_utilization` are profiling counters that only DCGM
//! reads; NVML has no call for them, so they are always `null` with a note. `warning_c`
//! is the threshold of the `gpu_temperature` alert rule in the config.

use crate::PerfMonitor;
use crate::figures::round2;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use vllm_core::config::AlertRuleName;
use vllm_core::gpu::GpuSnapshot;
use vllm_core::{Error, Result, models};
use vllm_fleet::launcher::process;
use vllm_mcp_kit::Kit;

/// Parameters of get-gpu-stats.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuParams {
    /// GPU indices (NVML order, as CUDA_VISIBLE_DEVICES takes them). Default all.
    #[serde(default)]
    pub gpu_ids: Option<Vec<u32>>,
    /// Report temperatures. Default true.
    #[serde(default = "yes")]
    pub include_temperature: bool,
    /// Report power draw and limit. Default true.
    #[serde(default = "yes")]
    pub include_power: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GpuMemory {
    pub used_mb: Option<u64>,
    pub total_mb: Option<u64>,
    pub free_mb: Option<u64>,
    /// Memory the driver reserves for itself.
    pub reserved_mb: Option<u64>,
    /// used_mb / total_mb.
    pub utilization: Option<f64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Compute {
    /// Fraction of the last sample period a kernel ran (NVML).
    pub utilization: Option<f64>,
    /// Fraction of the period device memory was read or written (NVML).
    pub memory_bandwidth_utilization: Option<f64>,
    /// Always null: needs DCGM's profiling counters (see note).
    pub sm_utilization: Option<f64>,
    /// Always null: needs DCGM's profiling counters (see note).
    pub tensor_utilization: Option<f64>,
    pub note: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Temperature {
    pub current_c: Option<u32>,
    /// NVML's maximum operating temperature.
    pub max_c: Option<u32>,
    /// The gpu_temperature alert rule's threshold (config); null when the rule is disabled.
    pub warning_c: Option<f64>,
    /// Where the GPU starts slowing itself down.
    pub slowdown_c: Option<u32>,
    /// Where the GPU shuts down.
    pub shutdown_c: Option<u32>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Power {
    pub current_w: Option<f64>,
    /// The power limit in force.
    pub max_w: Option<f64>,
    /// current_w / max_w.
    pub efficiency: Option<f64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Clocks {
    pub sm_mhz: Option<u32>,
    pub sm_max_mhz: Option<u32>,
    pub memory_mhz: Option<u32>,
    pub memory_max_mhz: Option<u32>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Ecc {
    /// Volatile (since the driver loaded) corrected errors.
    pub corrected: Option<u64>,
    pub uncorrected: Option<u64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GpuProcessInfo {
    pub pid: u32,
    pub used_mb: Option<u64>,
    /// The launched model whose process group holds this pid; null for other processes.
    pub model_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GpuStats {
    pub id: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub memory: GpuMemory,
    pub compute: Compute,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Temperature>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<Power>,
    pub clocks: Clocks,
    /// Why clocks are held down now (gpu_idle, sw_power_cap, hw_slowdown, ...).
    pub throttle_reasons: Option<Vec<String>>,
    pub ecc: Ecc,
    /// Compute processes on this GPU; null when NVML could not list them.
    pub processes: Option<Vec<GpuProcessInfo>>,
}

/// The answer of get-gpu-stats.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GpuAnswer {
    pub timestamp: String,
    /// This host's GPUs (NVML).
    pub gpus: Vec<GpuStats>,
    /// With the Ray backend: every node of the cluster with its GPUs, as its agent reports them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<crate::nodes::NodeFigures>,
    /// What could not be read (this host's GPUs, the cluster's nodes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// get-gpu-stats.
/// With the Ray backend, the cluster's nodes come beside this host's GPUs, and a host
/// without a GPU is a note rather than the answer (its GPUs are on the nodes).
pub async fn get_gpu_stats(s: &Arc<PerfMonitor>, p: GpuParams) -> Result<GpuAnswer> {
    let kit = s.kit.clone();
    let local = tokio::task::spawn_blocking(move || compute(&kit, &p))
        .await
        .map_err(|e| Error::Internal(format!("gpu task failed: {e}")))?;
    let Some(cluster) = crate::nodes::of_cluster(&s.kit).await else {
        return local;
    };
    let mut answer = match local {
        Ok(a) => a,
        Err(e @ Error::GpuUnavailable(_)) => GpuAnswer {
            timestamp: vllm_core::time::now_rfc3339(),
            gpus: Vec::new(),
            nodes: Vec::new(),
            notes: vec![format!("no GPU on this host: {e}")],
        },
        Err(e) => return Err(e),
    };
    match cluster {
        Ok(nodes) => answer.nodes = nodes,
        Err(note) => answer.notes.push(note),
    }
    Ok(answer)
}

/// pid → launched model id, from one scan of the process table.
pub(crate) fn pid_models(kit: &Kit) -> HashMap<u32, String> {
    let Ok(store) = kit.store() else {
        return HashMap::new();
    };
    let records = models::list(store).unwrap_or_default();
    let groups = process::groups_recent(process::FIGURES_MAX_AGE);
    let mut out = HashMap::new();
    for (r, members) in crate::figures::live_groups(&records, &groups) {
        for pid in members {
            out.insert(pid, r.model_id.clone());
        }
    }
    out
}

fn compute(kit: &Kit, p: &GpuParams) -> Result<GpuAnswer> {
    let count = kit.gpus.count()?;
    let ids: Vec<u32> = match &p.gpu_ids {
        Some(ids) => {
            let mut v = ids.clone();
            v.sort_unstable();
            v.dedup();
            if let Some(bad) = v.iter().find(|i| **i >= count) {
                return Err(Error::invalid(
                    "gpu_ids",
                    format!(
                        "GPU {bad} does not exist: {count} visible (ids 0..{}){}",
                        count.saturating_sub(1),
                        if count == 0 { "; there is no GPU" } else { "" }
                    ),
                ));
            }
            v
        }
        None => (0..count).collect(),
    };
    let warning = kit
        .config
        .alert_rules()
        .into_iter()
        .find(|r| r.name == AlertRuleName::GpuTemperature && r.enabled)
        .map(|r| r.threshold);
    let owners = pid_models(kit);
    let gpus = ids
        .into_iter()
        .map(|i| kit.gpus.snapshot(i).map(|g| stats(&g, p, warning, &owners)))
        .collect::<Result<Vec<_>>>()?;
    Ok(GpuAnswer {
        timestamp: vllm_core::time::now_rfc3339(),
        gpus,
        nodes: Vec::new(),
        notes: Vec::new(),
    })
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b * 10_000.0).round() / 10_000.0),
        _ => None,
    }
}

fn stats(
    g: &GpuSnapshot,
    p: &GpuParams,
    warning_c: Option<f64>,
    owners: &HashMap<u32, String>,
) -> GpuStats {
    GpuStats {
        id: g.index,
        name: g.name.clone(),
        uuid: g.uuid.clone(),
        memory: GpuMemory {
            used_mb: g.memory_used_mb,
            total_mb: g.memory_total_mb,
            free_mb: g.memory_free_mb,
            reserved_mb: g.memory_reserved_mb,
            utilization: ratio(
                g.memory_used_mb.map(|v| v as f64),
                g.memory_total_mb.map(|v| v as f64),
            ),
        },
        compute: Compute {
            utilization: g.utilization_gpu,
            memory_bandwidth_utilization: g.utilization_memory,
            sm_utilization: None,
            tensor_utilization: None,
            note: "sm_utilization and tensor_utilization are DCGM profiling counters (DCGM_FI_PROF_SM_ACTIVE, \
                   DCGM_FI_PROF_PIPE_TENSOR_ACTIVE); NVML does not give them, so they are null"
                .into(),
        },
        temperature: p.include_temperature.then_some(Temperature {
            current_c: g.temperature_c,
            max_c: g.temperature_max_c,
            warning_c,
            slowdown_c: g.temperature_slowdown_c,
            shutdown_c: g.temperature_shutdown_c,
        }),
        power: p.include_power.then(|| Power {
            current_w: g.power_w.map(round2),
            max_w: g.power_limit_w.map(round2),
            efficiency: ratio(g.power_w, g.power_limit_w),
        }),
        clocks: Clocks {
            sm_mhz: g.clock_sm_mhz,
            sm_max_mhz: g.clock_sm_max_mhz,
            memory_mhz: g.clock_memory_mhz,
            memory_max_mhz: g.clock_memory_max_mhz,
        },
        throttle_reasons: g.throttle_reasons.clone(),
        ecc: Ecc {
            corrected: g.ecc_corrected,
            uncorrected: g.ecc_uncorrected,
        },
        processes: g.processes.as_ref().map(|ps| {
            ps.iter()
                .map(|x| GpuProcessInfo {
                    pid: x.pid,
                    used_mb: x.used_mb,
                    model_id: owners.get(&x.pid).cloned(),
                })
                .collect()
        }),
    }
}
