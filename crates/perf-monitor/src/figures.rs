//! The get-metrics answer and the query behind it, shared by both sources (the sampled
//! history in [`crate::metrics`], PromQL in [`crate::prom_metrics`]), and the figures
//! both take from this host (memory, GPUs, process groups).

/// A metric group of get-metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Throughput,
    Latency,
    Memory,
    Gpu,
    Requests,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Throughput,
        Group::Latency,
        Group::Memory,
        Group::Gpu,
        Group::Requests,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Group::Throughput => "throughput",
            Group::Latency => "latency",
            Group::Memory => "memory",
            Group::Gpu => "gpu",
            Group::Requests => "requests",
        }
    }
}

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vllm_core::gpu::GpuSnapshot;
use vllm_core::models::ModelRecord;
use vllm_core::monitor::history;
use vllm_core::monitor::{Figures, LatencyFigures};
use vllm_fleet::launcher::process;
use vllm_mcp_kit::Kit;

/// One get-metrics question, resolved from its parameters: what both sources answer.
#[derive(Debug, Clone)]
pub struct MetricsQuery {
    /// The window, seconds, ending now.
    pub duration: f64,
    /// The groups to report.
    pub groups: Vec<Group>,
    /// Add the window's time series.
    pub include_history: bool,
    /// Add each served model on its own.
    pub per_model: bool,
    /// Most points per history series.
    pub max_points: u32,
}

impl MetricsQuery {
    /// The query for `groups`. The request counts come with throughput, whose rates are
    /// computed from them (the seed spec's example asks for throughput, latency, memory
    /// and gpu, and its answer has `requests`).
    pub fn new(
        duration: f64,
        mut groups: Vec<Group>,
        include_history: bool,
        per_model: bool,
        max_points: u32,
    ) -> MetricsQuery {
        if groups.contains(&Group::Throughput) && !groups.contains(&Group::Requests) {
            groups.push(Group::Requests);
        }
        MetricsQuery {
            duration,
            groups,
            include_history,
            per_model,
            max_points,
        }
    }

    /// Whether the answer reports `group`.
    pub fn wants(&self, group: Group) -> bool {
        self.groups.contains(&group)
    }
}

/// Throughput over the window.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Throughput {
    /// Generated tokens per second.
    pub tokens_per_second: Option<f64>,
    /// Prompt tokens processed per second.
    pub prompt_tokens_per_second: Option<f64>,
    /// Finished requests per second.
    pub requests_per_second: Option<f64>,
    /// Mean of num_requests_running over the window, over the models that ran requests.
    pub avg_batch_size: Option<f64>,
}

/// Four figures of a latency distribution, ms.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Quantiles {
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub avg_ms: Option<f64>,
}

/// Request latency (end to end) and its parts, from vLLM's histograms over the window.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LatencyGroup {
    /// End-to-end request latency.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub avg_ms: Option<f64>,
    /// Requests whose latency was observed in the window.
    pub requests_observed: u64,
    pub time_to_first_token: Quantiles,
    pub inter_token_latency: Quantiles,
    pub queue_time: Quantiles,
}

/// Memory now (GPU from NVML, system from /proc) and the KV-cache usage over the window.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MemoryGroup {
    /// GPU memory in use on all GPUs, MiB.
    pub gpu_used_mb: Option<u64>,
    pub gpu_total_mb: Option<u64>,
    /// gpu_used_mb / gpu_total_mb.
    pub gpu_utilization: Option<f64>,
    /// Resident memory of the vLLM processes this monitor knows (launched models), MiB.
    pub system_ram_mb: Option<u64>,
    /// Mean KV-cache usage over the window, averaged over the models (0..1).
    pub kv_cache_usage: Option<f64>,
}

/// One GPU in get-metrics.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GpuBrief {
    pub id: u32,
    /// Compute utilization now (0..1).
    pub utilization: Option<f64>,
    /// Mean compute utilization over the window, from the sampler's GPU samples.
    pub utilization_window_avg: Option<f64>,
    pub memory_used_mb: Option<u64>,
    pub memory_total_mb: Option<u64>,
    pub temperature_c: Option<u32>,
}

/// GPUs now.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GpuGroup {
    pub count: u32,
    /// Mean compute utilization over GPUs now.
    pub avg_utilization: Option<f64>,
    pub max_temperature_c: Option<u32>,
    pub gpus: Vec<GpuBrief>,
}

/// Finished requests over the window.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Requests {
    pub total: Option<u64>,
    /// finished_reason stop or length.
    pub successful: Option<u64>,
    /// finished_reason abort or error.
    pub failed: Option<u64>,
    /// failed / total; null when no request finished.
    pub error_rate: Option<f64>,
    /// Finished requests by vLLM's finished_reason.
    pub by_reason: BTreeMap<String, u64>,
    /// Requests preempted (KV cache full) in the window.
    pub preemptions: Option<u64>,
}

/// The metric groups asked for (absent when not asked; null when unavailable).
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Groups {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyGroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryGroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Option<GpuGroup>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<Requests>,
}

/// One served model's figures.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ModelFigures {
    pub model_id: String,
    pub endpoint: String,
    pub base_url: String,
    pub samples: usize,
    pub window_covered_seconds: Option<f64>,
    /// Restarts of its server seen in the window.
    pub restarts: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyGroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<Requests>,
    /// Mean KV-cache usage over the window (0..1).
    pub kv_cache_usage: Option<f64>,
}

/// An endpoint the sampler scrapes.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EndpointState {
    pub name: String,
    pub base_url: String,
    /// `attached` (configured) or `launched` (started by the model manager).
    pub origin: String,
    /// Its last scrape answered; null when it was never sampled.
    pub up: Option<bool>,
    pub last_sample_at: Option<String>,
    /// The error code of the last scrape when it failed.
    pub error: Option<String>,
}

/// The answer of get-metrics.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MetricsAnswer {
    /// When the answer was computed.
    pub timestamp: String,
    /// The window asked for, seconds.
    pub duration_seconds: f64,
    /// What the samples really cover (first to last sample of the longest-covered
    /// series); null when no series has two samples in the window.
    pub window_covered_seconds: Option<f64>,
    /// Answering samples in the window (all series).
    pub samples: usize,
    pub sample_interval_seconds: f64,
    pub metrics: Groups,
    /// By model id, when per_model was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_model: Option<BTreeMap<String, ModelFigures>>,
    /// Series name → [[time, value], ...], when include_history was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<BTreeMap<String, Vec<(String, f64)>>>,
    pub endpoints: Vec<EndpointState>,
    /// Why a figure is null, or anything else worth knowing about the answer.
    pub notes: Vec<String>,
}

pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub(crate) fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Unix seconds as RFC 3339 with milliseconds.
pub fn rfc3339_ms(t: f64) -> String {
    let secs = t.floor();
    let ms = ((t - secs) * 1000.0).round().min(999.0) as u32;
    let base = vllm_core::time::format_rfc3339(secs as i64);
    format!("{}.{ms:03}Z", base.trim_end_matches('Z'))
}

/// The window's retention bound, seconds.
pub fn retention_seconds(kit: &Kit) -> f64 {
    kit.config.monitor.retention_hours * 3600.0
}

/// The groups measured on this host whatever the source: memory (NVML, the launched
/// processes; the KV-cache usage is the caller's) and the GPUs (NVML now, the sampler's
/// GPU samples over `window`).
pub(crate) fn local_groups(
    kit: &Kit,
    records: &[ModelRecord],
    window: (f64, f64),
    groups: &[Group],
    kv_cache_usage: Option<f64>,
    m: &mut Groups,
    notes: &mut Vec<String>,
) {
    let want = |g: Group| groups.contains(&g);
    if !want(Group::Memory) && !want(Group::Gpu) {
        return;
    }
    let gpu_now = kit.gpus.snapshots();
    if want(Group::Memory) {
        let (gpu_used, gpu_total) = match &gpu_now {
            Ok(g) if !g.is_empty() => (
                sum_opt(g.iter().map(|x| x.memory_used_mb)),
                sum_opt(g.iter().map(|x| x.memory_total_mb)),
            ),
            Ok(_) => {
                notes.push("memory.gpu_*: no GPU is visible".into());
                (None, None)
            }
            Err(e) => {
                notes.push(format!("memory.gpu_*: {} ({})", e.code(), e));
                (None, None)
            }
        };
        let (ram, ram_note) = system_ram_mb(records, kit);
        if let Some(n) = ram_note {
            notes.push(n);
        }
        m.memory = Some(MemoryGroup {
            gpu_used_mb: gpu_used,
            gpu_total_mb: gpu_total,
            gpu_utilization: match (gpu_used, gpu_total) {
                (Some(u), Some(t)) if t > 0 => Some(round4(u as f64 / t as f64)),
                _ => None,
            },
            system_ram_mb: ram,
            kv_cache_usage: kv_cache_usage.map(round4),
        });
    }
    if want(Group::Gpu) {
        m.gpu = Some(match &gpu_now {
            Ok(g) => {
                let rows = kit
                    .store()
                    .and_then(|st| history::gpu_window(st, window.0, window.1))
                    .unwrap_or_default();
                Some(gpu_group(g, &rows))
            }
            Err(e) => {
                notes.push(format!("gpu: {}: {}; {}", e.code(), e, e.suggestion()));
                None
            }
        });
    }
}

fn sum_opt(it: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    it.fold(None, |acc, v| match v {
        Some(v) => Some(acc.unwrap_or(0) + v),
        None => acc,
    })
}

/// The requests group from counts over the window (possibly fractional: Prometheus
/// extrapolates), rounded to whole requests.
pub(crate) fn requests_of<'a>(
    total: Option<f64>,
    failed: Option<f64>,
    by_reason: impl Iterator<Item = (&'a str, f64)>,
    preemptions: Option<f64>,
) -> Requests {
    let total = count(total);
    let failed = count(failed).or(total.map(|_| 0));
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for (r, v) in by_reason {
        *reasons.entry(r.to_string()).or_default() += v.max(0.0).round() as u64;
    }
    Requests {
        total,
        successful: match (total, failed) {
            (Some(t), Some(fl)) => Some(t.saturating_sub(fl)),
            _ => None,
        },
        failed,
        error_rate: match (total, failed) {
            (Some(t), Some(fl)) if t > 0 => Some(round4(fl as f64 / t as f64)),
            _ => None,
        },
        by_reason: reasons,
        preemptions: count(preemptions),
    }
}

fn gpu_group(g: &[GpuSnapshot], rows: &[history::GpuRow]) -> GpuGroup {
    let gpus: Vec<GpuBrief> = g
        .iter()
        .map(|x| {
            let mine: Vec<f64> = rows
                .iter()
                .filter(|r| r.gpu == x.index)
                .filter_map(|r| r.utilization)
                .collect();
            GpuBrief {
                id: x.index,
                utilization: x.utilization_gpu,
                utilization_window_avg: (!mine.is_empty())
                    .then(|| round4(mine.iter().sum::<f64>() / mine.len() as f64)),
                memory_used_mb: x.memory_used_mb,
                memory_total_mb: x.memory_total_mb,
                temperature_c: x.temperature_c,
            }
        })
        .collect();
    let utils: Vec<f64> = g.iter().filter_map(|x| x.utilization_gpu).collect();
    GpuGroup {
        count: g.len() as u32,
        avg_utilization: (!utils.is_empty())
            .then(|| round4(utils.iter().sum::<f64>() / utils.len() as f64)),
        max_temperature_c: g.iter().filter_map(|x| x.temperature_c).max(),
        gpus,
    }
}

/// Launched models whose processes should be alive, with their process group's members.
pub(crate) fn live_groups(
    records: &[ModelRecord],
    groups: &std::collections::HashMap<u32, Vec<u32>>,
) -> Vec<(ModelRecord, Vec<u32>)> {
    records
        .iter()
        .filter(|r| r.status.is_active())
        .filter_map(|r| {
            let pid = r.pid?;
            let members = groups.get(&pid)?;
            Some((r.clone(), members.clone()))
        })
        .collect()
}

/// Resident memory of the launched models' processes, and a note on what it leaves out.
pub(crate) fn system_ram_mb(records: &[ModelRecord], kit: &Kit) -> (Option<u64>, Option<String>) {
    let groups = process::groups_recent(process::FIGURES_MAX_AGE);
    let live = live_groups(records, &groups);
    let pids: Vec<u32> = live.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    let note = (!kit.endpoints.is_empty()).then(|| {
        "memory.system_ram_mb counts the processes of launched models only: attached endpoints' processes are not visible to this monitor"
            .to_string()
    });
    (Some(process::rss_mb_of(&pids)), note)
}

fn count(v: Option<f64>) -> Option<u64> {
    v.map(|v| v.max(0.0).round() as u64)
}

/// Milliseconds to two decimals, of seconds.
fn ms(v: Option<f64>) -> Option<f64> {
    v.map(|s| round2(s * 1000.0))
}

/// A latency distribution's four figures, ms.
pub(crate) fn quantiles(l: &LatencyFigures) -> Quantiles {
    Quantiles {
        p50_ms: ms(l.p50),
        p95_ms: ms(l.p95),
        p99_ms: ms(l.p99),
        avg_ms: ms(l.avg),
    }
}

/// The throughput group of a window's figures, whichever source computed them.
pub(crate) fn throughput(f: &Figures) -> Throughput {
    Throughput {
        tokens_per_second: f.generation_tokens_per_second.map(round4),
        prompt_tokens_per_second: f.prompt_tokens_per_second.map(round4),
        requests_per_second: f.requests_per_second.map(round4),
        avg_batch_size: f.running_mean.map(round4),
    }
}

/// The latency group: end to end, and its parts.
pub(crate) fn latency(f: &Figures) -> LatencyGroup {
    let e2e = quantiles(&f.e2e);
    LatencyGroup {
        p50_ms: e2e.p50_ms,
        p95_ms: e2e.p95_ms,
        p99_ms: e2e.p99_ms,
        avg_ms: e2e.avg_ms,
        requests_observed: f.e2e.count.map_or(0, |c| c.max(0.0).round() as u64),
        time_to_first_token: quantiles(&f.ttft),
        inter_token_latency: quantiles(&f.itl),
        queue_time: quantiles(&f.queue),
    }
}

/// The requests group.
pub(crate) fn requests(f: &Figures) -> Requests {
    requests_of(
        f.requests_finished,
        f.requests_failed,
        f.by_reason.iter().map(|(r, v)| (r.as_str(), *v)),
        f.preemptions,
    )
}

/// The vLLM groups the query wants (throughput, latency, requests) of the fleet's
/// figures, with a note where a figure is null although the window has samples.
pub(crate) fn vllm_groups(
    q: &MetricsQuery,
    total: &Figures,
    covered: bool,
    notes: &mut Vec<String>,
) -> Groups {
    let mut m = Groups::default();
    if q.wants(Group::Throughput) {
        m.throughput = Some(throughput(total));
    }
    if q.wants(Group::Latency) {
        let l = latency(total);
        if l.p50_ms.is_none() && covered {
            notes.push("latency: no request finished in the window, so latency is null".into());
        }
        m.latency = Some(l);
    }
    if q.wants(Group::Requests) {
        let r = requests(total);
        if r.error_rate.is_none() && covered {
            notes.push("requests.error_rate: no request finished in the window".into());
        }
        m.requests = Some(r);
    }
    m
}
