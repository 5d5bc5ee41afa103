//! get-metrics answered from an existing Prometheus (`monitor.source = "prometheus"`):
//! the vLLM figures are PromQL over the window (`vllm_core::monitor::promql`), the memory
//! and GPU groups still this host's NVML and processes, the endpoints Prometheus's
//! targets. The answer has the same shape as the sampled one.
//!
//! Prometheus's `rate` and `increase` extrapolate to the window's edges, so counts over
//! a window are estimates, rounded to whole requests; a note says so.

use crate::figures::{
    EndpointState, Group, Groups, MetricsAnswer, MetricsQuery, ModelFigures, latency, local_groups,
    requests, retention_seconds, rfc3339_ms, round2, round4, throughput, vllm_groups,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use vllm_core::Result;
use vllm_core::models;
use vllm_core::monitor::history;
use vllm_core::monitor::promql::{self, PromSource, PromTarget};
use vllm_core::monitor::window;
use vllm_mcp_kit::Kit;

/// A target as an endpoint of the answer: named by its `instance`, its URL without the
/// metrics path.
fn endpoint(t: &PromTarget) -> EndpointState {
    let base = t
        .scrape_url
        .strip_suffix("/metrics")
        .unwrap_or(&t.scrape_url)
        .to_string();
    EndpointState {
        name: t.instance.clone(),
        base_url: base,
        origin: format!("prometheus job {}", t.job),
        up: match t.health.as_str() {
            "up" => Some(true),
            "down" => Some(false),
            _ => None,
        },
        last_sample_at: t.last_scrape.map(rfc3339_ms),
        error: t.last_error.clone(),
    }
}

/// get-metrics over `[now - duration, now]` from the configured Prometheus.
pub async fn compute(kit: &Arc<Kit>, q: &MetricsQuery) -> Result<MetricsAnswer> {
    let url = kit
        .config
        .monitor
        .prometheus_url
        .clone()
        .unwrap_or_default();
    let src = PromSource::new(&url, &kit.config.http)?;
    let now = vllm_core::time::unix_now();
    let since = now - q.duration.min(retention_seconds(kit));
    let fleet = promql::fleet(&src, q.duration, now).await?;
    let history = if q.include_history {
        Some(promql::history(&src, since, now, q.max_points as usize).await?)
    } else {
        None
    };
    let interval = fleet
        .targets
        .iter()
        .filter_map(|t| t.scrape_interval)
        .reduce(f64::min)
        .unwrap_or(kit.config.monitor.sample_interval_seconds);
    let total = &fleet.total;
    let covered = total.covered_seconds.filter(|c| *c > 0.0);
    let mut notes = window_notes(&url, q.duration, interval, &fleet, covered.is_some());
    let m = vllm_groups(q, total, covered.is_some(), &mut notes);
    let (m, notes, gpu_rows) =
        with_local_groups(kit, q, (since, now), total.kv_cache_usage, m, notes).await?;
    Ok(MetricsAnswer {
        timestamp: vllm_core::time::now_rfc3339(),
        duration_seconds: q.duration,
        window_covered_seconds: covered.map(round2),
        samples: total.samples.map(|v| v.round() as usize).unwrap_or(0),
        sample_interval_seconds: interval,
        metrics: m,
        per_model: q.per_model.then(|| per_model(q, &fleet)),
        history: history.map(|prom| history_series(q, &prom, &gpu_rows, (since, now))),
        endpoints: fleet.targets.iter().map(endpoint).collect(),
        notes,
    })
}

/// What the reader should know of the window: PromQL's estimates, too few samples, a
/// restart, no target.
fn window_notes(
    url: &str,
    duration: f64,
    interval: f64,
    fleet: &promql::Fleet,
    covered: bool,
) -> Vec<String> {
    let mut notes = vec![format!(
        "source = prometheus: vLLM figures are PromQL over {url}; rate() and increase() extrapolate to the \
         window's edges, so request and token counts are estimates rounded to whole numbers"
    )];
    if !covered {
        notes.push(format!(
            "fewer than two samples of any vLLM server in Prometheus in the last {duration} s: rates, request \
             counts and latency need two, so they are null; Prometheus scrapes every {interval} s"
        ));
    } else if fleet.total.restarts.is_some_and(|r| r > 0.0) {
        notes.push(
            "a server restarted inside the window: Prometheus read its counters across the restart"
                .into(),
        );
    }
    if fleet.targets.is_empty() {
        notes.push(
            "Prometheus has no target of a job exporting vllm: metrics in the last hour".into(),
        );
    }
    notes
}

/// The memory and GPU groups (this host's, as with the sampled source) and the GPU
/// history rows, read off the async threads.
async fn with_local_groups(
    kit: &Arc<Kit>,
    q: &MetricsQuery,
    (since, now): (f64, f64),
    kv: Option<f64>,
    mut m: Groups,
    mut notes: Vec<String>,
) -> Result<(Groups, Vec<String>, Vec<history::GpuRow>)> {
    let (k, groups) = (kit.clone(), q.groups.clone());
    tokio::task::spawn_blocking(move || {
        let records = k.store().and_then(models::list).unwrap_or_default();
        local_groups(&k, &records, (since, now), &groups, kv, &mut m, &mut notes);
        let gpu_rows = k
            .store()
            .and_then(|st| history::gpu_window(st, since, now))
            .unwrap_or_default();
        (m, notes, gpu_rows)
    })
    .await
    .map_err(|e| vllm_core::Error::Internal(format!("metrics task failed: {e}")))
}

/// Each model on its own, as Prometheus labels it (`model_name`), with its instances.
fn per_model(q: &MetricsQuery, fleet: &promql::Fleet) -> BTreeMap<String, ModelFigures> {
    fleet
        .models
        .iter()
        .map(|(model, f)| {
            let instances: Vec<&str> = f.instances.iter().map(String::as_str).collect();
            let figures = ModelFigures {
                model_id: model.clone(),
                endpoint: instances.join(","),
                base_url: fleet
                    .targets
                    .iter()
                    .find(|t| f.instances.contains(&t.instance))
                    .map(|t| endpoint(t).base_url)
                    .unwrap_or_default(),
                samples: f.samples.map(|v| v.round() as usize).unwrap_or(0),
                window_covered_seconds: f.covered_seconds.filter(|c| *c > 0.0).map(round2),
                restarts: f.restarts.map(|v| v.round() as usize).unwrap_or(0),
                throughput: q.wants(Group::Throughput).then(|| throughput(f)),
                latency: q.wants(Group::Latency).then(|| latency(f)),
                requests: q.wants(Group::Requests).then(|| requests(f)),
                kv_cache_usage: f.kv_cache_usage.map(round4),
            };
            (model.clone(), figures)
        })
        .collect()
}

/// The history series of the wanted groups: PromQL's, and the GPUs' from the store.
fn history_series(
    q: &MetricsQuery,
    prom: &BTreeMap<String, Vec<(f64, f64)>>,
    gpu_rows: &[history::GpuRow],
    (since, now): (f64, f64),
) -> BTreeMap<String, Vec<(String, f64)>> {
    let gpu = window::history(&[], gpu_rows, since, now, q.max_points as usize);
    let names: Vec<&str> = q.groups.iter().map(|g| g.as_str()).collect();
    window::HISTORY_SERIES
        .iter()
        .filter(|(_, g)| names.contains(g))
        .map(|(name, _)| {
            let pts: Vec<(f64, f64)> = match prom.get(*name) {
                Some(p) => p.clone(),
                None => gpu.get(name).cloned().unwrap_or_default(),
            };
            let pts = pts
                .into_iter()
                .map(|(t, v)| (rfc3339_ms(t), round4(v)))
                .collect();
            (name.to_string(), pts)
        })
        .collect()
}
