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
use crate::figures::{
    EndpointState, Group, MetricsAnswer, MetricsQuery, ModelFigures, latency, local_groups,
    requests, retention_seconds, rfc3339_ms, round2, round4, throughput, vllm_groups,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use vllm_core::config::MetricsSource;
use vllm_core::models::{self};
use vllm_core::monitor::history::{self, EndpointStatus};
use vllm_core::monitor::window::{self, SeriesWindow, WindowFigures};
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
    /// `requests` (the counts behind the rates) also comes with `throughput`.
    #[serde(default)]
    pub metrics: Option<Vec<Group>>,
    /// Also report each served model on its own (`per_model`). Default false.
    #[serde(default)]
    pub per_model: bool,
    /// Most points per history series (1 to 1000). Default 120.
    #[serde(default)]
    pub max_points: Option<u32>,
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
    let query = MetricsQuery::new(duration, groups, p.include_history, p.per_model, max_points);
    if kit.config.monitor.source == MetricsSource::Prometheus {
        return crate::prom_metrics::compute(&kit, &query).await;
    }
    let k = kit.clone();
    tokio::task::spawn_blocking(move || compute(&k, &query))
        .await
        .map_err(|e| Error::Internal(format!("metrics task failed: {e}")))?
}

/// Everything get-metrics reads, read off the async threads.
fn compute(kit: &Kit, q: &MetricsQuery) -> Result<MetricsAnswer> {
    let (duration, groups, max_points) = (q.duration, &q.groups[..], q.max_points);
    let store = kit.store()?;
    let now = vllm_core::time::unix_now();
    let since = now - duration;
    let rows = history::read_window(store, since, now)?;
    let fig = WindowFigures::compute(&rows);
    let statuses = history::endpoint_status(store)?;
    let records = models::list(store)?;
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

    let total = fig.figures();
    let mut m = vllm_groups(q, &total, covered.is_some(), &mut notes);
    local_groups(
        kit,
        &records,
        (since, now),
        groups,
        total.kv_cache_usage,
        &mut m,
        &mut notes,
    );

    let per_model = q.per_model.then(|| per_model(q, &fig));
    let history = q
        .include_history
        .then(|| history_series(store, &rows, groups, (since, now), max_points));
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

/// Each model series on its own, keyed by model (by `endpoint/model` when two endpoints
/// serve the same id).
fn per_model(q: &MetricsQuery, fig: &WindowFigures) -> BTreeMap<String, ModelFigures> {
    let mut out = BTreeMap::new();
    let dup = |s: &SeriesWindow| fig.models().filter(|x| x.model == s.model).count() > 1;
    for s in fig.models() {
        let one = WindowFigures {
            series: vec![s.clone()],
        }
        .figures();
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
                throughput: q.wants(Group::Throughput).then(|| throughput(&one)),
                latency: q.wants(Group::Latency).then(|| latency(&one)),
                requests: q.wants(Group::Requests).then(|| requests(&one)),
                kv_cache_usage: s.kv_cache_usage_mean.map(round4),
            },
        );
    }
    out
}

/// The history series of the wanted groups, binned to at most `max_points` points.
fn history_series(
    store: &vllm_core::store::Store,
    rows: &[Vec<vllm_core::monitor::Sample>],
    groups: &[Group],
    (since, now): (f64, f64),
    max_points: u32,
) -> BTreeMap<String, Vec<(String, f64)>> {
    let gpus = history::gpu_window(store, since, now).unwrap_or_default();
    let all = window::history(rows, &gpus, since, now, max_points as usize);
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
