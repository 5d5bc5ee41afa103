//! The figures of a window, whichever source computed them: the sampler's history in the
//! store ([`super::window`]) or an existing Prometheus ([`super::promql`]). Front ends
//! render one type, so get-metrics answers the same shape from both.

use crate::prom::Histogram;
use std::collections::{BTreeMap, BTreeSet};

/// Latency figures of one histogram over the window, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencyFigures {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub avg: Option<f64>,
    /// Observations in the window (extrapolated by `increase`).
    pub count: Option<f64>,
}

impl LatencyFigures {
    /// The figures of a histogram's increase over the window; every figure `None` (and no
    /// count) when nothing was observed.
    pub fn of(h: Option<&Histogram>) -> LatencyFigures {
        let Some(h) = h.filter(|h| h.count > 0.0) else {
            return LatencyFigures::default();
        };
        let finite = |v: f64| v.is_finite().then_some(v);
        LatencyFigures {
            p50: finite(h.quantile(0.5)),
            p95: finite(h.quantile(0.95)),
            p99: finite(h.quantile(0.99)),
            avg: h.mean().and_then(finite),
            count: Some(h.count),
        }
    }
}

/// The figures of one model (or of the fleet) over a window, from either source.
///
/// Counts and rates: the history's are exact increases between the first and last
/// samples (across restarts); PromQL's are `increase`/`rate`, which Prometheus
/// extrapolates to the window's edges, so they may be fractional.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figures {
    pub generation_tokens_per_second: Option<f64>,
    pub prompt_tokens_per_second: Option<f64>,
    pub requests_per_second: Option<f64>,
    pub failed_requests_per_second: Option<f64>,
    pub requests_finished: Option<f64>,
    pub requests_failed: Option<f64>,
    pub by_reason: BTreeMap<String, f64>,
    pub preemptions: Option<f64>,
    /// The mean batch: `num_requests_running` over the window (the history's averages the
    /// models that ran a request, 0 when none did; PromQL's averages the replicas).
    pub running_mean: Option<f64>,
    /// Mean of `num_requests_waiting`, added over replicas.
    pub waiting_mean: Option<f64>,
    /// Mean KV-cache usage (0..1), averaged over replicas.
    pub kv_cache_usage: Option<f64>,
    pub e2e: LatencyFigures,
    pub ttft: LatencyFigures,
    pub itl: LatencyFigures,
    pub queue: LatencyFigures,
    /// Samples in the window (answering scrapes of the history; samples of
    /// `num_requests_running` over the model's series in Prometheus).
    pub samples: Option<f64>,
    /// The longest span of one of its series' samples in the window.
    pub covered_seconds: Option<f64>,
    /// Counter resets (server restarts) in the window, most over its series.
    pub restarts: Option<f64>,
    /// The servers serving it (Prometheus' `instance` labels; the history's endpoints).
    pub instances: BTreeSet<String>,
}
