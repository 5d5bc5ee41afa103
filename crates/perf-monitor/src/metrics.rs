//! `get-metrics`: throughput, latency, memory, GPU and request figures over a window,
//! computed from the samples in the store (see `vllm_core::monitor`), or from an existing
//! Prometheus when `monitor.source = "prometheus"` (see [`crate::prom_metrics`]).
//!
//! Units: fractions 0..1, milliseconds for latency, MiB for `_mb`, RFC 3339 UTC times.
//! A figure that cannot be measured is `null` and `notes` says why.
//!
//! Requests: `total` is every request vLLM finished in the window, `failed` those whose
//! `finished_reason` is `abort` or `error`, `successful` the rest (`stop`, `length`).
//! Requests refused before reaching the engine (HTTP 4xx/5xx from the API server) are
//! not in vLLM's request counters and so not here.

use crate::PerfMonitor;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use vllm_core::config::MetricsSource;
use vllm_core::gpu::GpuSnapshot;
use vllm_core::launcher::process;
use vllm_core::models::{self, ModelRecord};
use vllm_core::monitor::history::{self, EndpointStatus};
use vllm_core::monitor::sample::HistKind;
use vllm_core::monitor::window::{self, Counter, Latency, SeriesWindow, WindowFigures};
use vllm_core::{Error, Result};
use vllm_mcp_kit::Kit;

/// Default window of get-metrics, seconds.
pub const DEFAULT_DURATION: f64 = 60.0;
/// Default and largest `max_points`.
pub const DEFAULT_MAX_POINTS: u32 = 120;
pub const MAX_POINTS: u32 = 1000;

/// A window length: seconds, or a duration string.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DurationArg {
    /// Seconds.
    Seconds(f64),
    /// `90s`, `5m`, `1h30m`, `1d`, or seconds as text.
    Text(String),
}

impl DurationArg {
    pub fn to_value(&self) -> Value {
        match self {
            DurationArg::Seconds(s) => serde_json::json!(s),
            DurationArg::Text(t) => Value::String(t.clone()),
        }
    }
}

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

/// Parameters of get-metrics.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsParams {
    /// The window, ending now: seconds (e.g. 300) or a duration such as "90s", "5m",
    /// "1h30m", "1d". Default 60; at most the retention (monitor.retention_hours, 24 h by default).
    #[serde(default)]
    pub duration_seconds: Option<DurationArg>,
    /// Add time series of the window (`history`), downsampled to at most max_points points each. Default false.
    #[serde(default)]
    pub include_history: bool,
    /// Which groups to report: throughput, latency, memory, gpu, requests. Default all.
    #[serde(default)]
    pub metrics: Option<Vec<Group>>,
    /// Also report each served model on its own (`per_model`). Default false.
    #[serde(default)]
    pub per_model: bool,
    /// Most points per history series (1 to 1000). Default 120.
    #[serde(default)]
    pub max_points: Option<u32>,
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

impl From<Latency> for Quantiles {
    fn from(l: Latency) -> Quantiles {
        Quantiles {
            p50_ms: l.p50_ms.map(round2),
            p95_ms: l.p95_ms.map(round2),
            p99_ms: l.p99_ms.map(round2),
            avg_ms: l.avg_ms.map(round2),
        }
    }
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

/// get-metrics.
pub async fn get_metrics(s: &Arc<PerfMonitor>, p: MetricsParams) -> Result<MetricsAnswer> {
    let kit = s.kit.clone();
    let duration = match &p.duration_seconds {
        Some(d) => vllm_core::monitor::parse_duration(
            "duration_seconds",
            &d.to_value(),
            retention_seconds(&kit),
        )?,
        None => DEFAULT_DURATION.min(retention_seconds(&kit)),
    };
    let max_points = p.max_points.unwrap_or(DEFAULT_MAX_POINTS);
    if !(1..=MAX_POINTS).contains(&max_points) {
        return Err(Error::invalid(
            "max_points",
            format!("{max_points} is not between 1 and {MAX_POINTS}"),
        ));
    }
    let groups: Vec<Group> = match &p.metrics {
        Some(g) if g.is_empty() => {
            return Err(Error::invalid(
                "metrics",
                "an empty list: name at least one of throughput, latency, memory, gpu, requests, or leave it out for all",
            ));
        }
        Some(g) => g.clone(),
        None => Group::ALL.to_vec(),
    };
    if kit.config.monitor.source == MetricsSource::Prometheus {
        return crate::prom_metrics::compute(&kit, duration, &groups, &p, max_points).await;
    }
    let k = kit.clone();
    tokio::task::spawn_blocking(move || compute(&k, duration, &groups, &p, max_points))
        .await
        .map_err(|e| Error::Internal(format!("metrics task failed: {e}")))?
}

/// Everything get-metrics reads, read off the async threads.
fn compute(
    kit: &Kit,
    duration: f64,
    groups: &[Group],
    p: &MetricsParams,
    max_points: u32,
) -> Result<MetricsAnswer> {
    let store = kit.store()?;
    let now = vllm_core::time::unix_now();
    let since = now - duration;
    let rows = history::read_window(store, since, now)?;
    let fig = WindowFigures::compute(&rows);
    let statuses = history::endpoint_status(store)?;
    let records = models::list(store)?;
    let want = |g: Group| groups.contains(&g);
    let mut notes: Vec<String> = Vec::new();
    let interval = kit.config.monitor.sample_interval_seconds;

    let covered = fig.covered_seconds();
    if covered.is_none() {
        notes.push(format!(
            "fewer than two samples of any model in the last {duration} s ({} in all): rates, request counts and \
             latency need two, so they are null; the sampler scrapes every {interval} s",
            fig.sample_count()
        ));
    } else if fig.models().any(|s| s.resets > 0) {
        notes.push(
            "a server restarted inside the window: its counters were read across the restart"
                .into(),
        );
    }

    let mut m = Groups::default();
    if want(Group::Throughput) {
        m.throughput = Some(throughput(&fig));
    }
    if want(Group::Latency) {
        let l = latency(&fig);
        if l.p50_ms.is_none() && covered.is_some() {
            notes.push("latency: no request finished in the window, so latency is null".into());
        }
        m.latency = Some(l);
    }
    if want(Group::Requests) {
        let r = requests(&fig);
        if r.error_rate.is_none() && covered.is_some() {
            notes.push("requests.error_rate: no request finished in the window".into());
        }
        m.requests = Some(r);
    }
    local_groups(
        kit,
        &records,
        (since, now),
        groups,
        fig.kv_cache_usage(),
        &mut m,
        &mut notes,
    );

    let per_model = p.per_model.then(|| {
        let mut out = BTreeMap::new();
        let dup = |s: &SeriesWindow| fig.models().filter(|x| x.model == s.model).count() > 1;
        for s in fig.models() {
            let one = WindowFigures {
                series: vec![s.clone()],
            };
            let key = if dup(s) {
                format!("{}/{}", s.endpoint, s.model)
            } else {
                s.model.clone()
            };
            out.insert(
                key,
                ModelFigures {
                    model_id: s.model.clone(),
                    endpoint: s.endpoint.clone(),
                    base_url: s.base_url.clone(),
                    samples: s.samples,
                    window_covered_seconds: s.span().map(round2),
                    restarts: s.resets,
                    throughput: want(Group::Throughput).then(|| throughput(&one)),
                    latency: want(Group::Latency).then(|| latency(&one)),
                    requests: want(Group::Requests).then(|| requests(&one)),
                    kv_cache_usage: s.kv_cache_usage_mean.map(round4),
                },
            );
        }
        out
    });

    let history = p.include_history.then(|| {
        let gpus = history::gpu_window(store, since, now).unwrap_or_default();
        let all = window::history(&rows, &gpus, since, now, max_points as usize);
        let names: Vec<&str> = groups.iter().map(|g| g.as_str()).collect();
        window::HISTORY_SERIES
            .iter()
            .filter(|(_, g)| names.contains(g))
            .map(|(name, _)| {
                let pts = all
                    .get(name)
                    .map(|v| {
                        v.iter()
                            .map(|(t, v)| (rfc3339_ms(*t), round4(*v)))
                            .collect()
                    })
                    .unwrap_or_default();
                (name.to_string(), pts)
            })
            .collect()
    });

    Ok(MetricsAnswer {
        timestamp: vllm_core::time::now_rfc3339(),
        duration_seconds: duration,
        window_covered_seconds: covered.map(round2),
        samples: fig.sample_count(),
        sample_interval_seconds: interval,
        metrics: m,
        per_model,
        history,
        endpoints: endpoints(kit, &statuses),
        notes,
    })
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

fn throughput(f: &WindowFigures) -> Throughput {
    Throughput {
        tokens_per_second: f.rate(Counter::GenerationTokens).map(round4),
        prompt_tokens_per_second: f.rate(Counter::PromptTokens).map(round4),
        requests_per_second: f.rate(Counter::RequestsFinished).map(round4),
        avg_batch_size: f.avg_batch_size().map(round4),
    }
}

fn latency(f: &WindowFigures) -> LatencyGroup {
    let e2e = Latency::of(f.hist(HistKind::E2e).as_ref());
    LatencyGroup {
        p50_ms: e2e.p50_ms.map(round2),
        p95_ms: e2e.p95_ms.map(round2),
        p99_ms: e2e.p99_ms.map(round2),
        avg_ms: e2e.avg_ms.map(round2),
        requests_observed: e2e.count.round() as u64,
        time_to_first_token: Latency::of(f.hist(HistKind::Ttft).as_ref()).into(),
        inter_token_latency: Latency::of(f.hist(HistKind::Itl).as_ref()).into(),
        queue_time: Latency::of(f.hist(HistKind::Queue).as_ref()).into(),
    }
}

fn count(v: Option<f64>) -> Option<u64> {
    v.map(|v| v.max(0.0).round() as u64)
}

fn requests(f: &WindowFigures) -> Requests {
    let reasons = f.series.iter().flat_map(|s| s.by_reason.iter());
    requests_of(
        f.total(Counter::RequestsFinished),
        f.total(Counter::RequestsFailed),
        reasons.map(|(r, v)| (r.as_str(), *v)),
        f.total(Counter::Preemptions),
    )
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

/// The endpoint list: configured ones (sampled or not) and launched ones seen in samples.
fn endpoints(kit: &Kit, statuses: &[EndpointStatus]) -> Vec<EndpointState> {
    let interval = kit.config.monitor.sample_interval_seconds;
    let stale_before = vllm_core::time::unix_now() - (10.0 * interval).max(60.0);
    let mut out: Vec<EndpointState> = kit
        .endpoints
        .iter()
        .map(|c| {
            let st = statuses.iter().find(|s| s.endpoint == c.name());
            EndpointState {
                name: c.name().to_string(),
                base_url: c.base_url().to_string(),
                origin: "attached".into(),
                up: st.map(|s| s.up),
                last_sample_at: st.map(|s| rfc3339_ms(s.last_sample_at)),
                error: st.and_then(|s| s.error.clone()),
            }
        })
        .collect();
    for s in statuses {
        if out.iter().any(|e| e.name == s.endpoint) {
            continue;
        }
        // A launched server no longer sampled (unloaded) is history, not an endpoint.
        if s.last_sample_at < stale_before {
            continue;
        }
        out.push(EndpointState {
            name: s.endpoint.clone(),
            base_url: s.base_url.clone(),
            origin: "launched".into(),
            up: Some(s.up),
            last_sample_at: Some(rfc3339_ms(s.last_sample_at)),
            error: s.error.clone(),
        });
    }
    out
}
