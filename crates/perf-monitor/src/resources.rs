//! The monitor's resources: `vllm://metrics/current`, `vllm://metrics/history/{duration}`,
//! `vllm://alerts/active` and `vllm://alerts/history`.
//!
//! Crush lists only concrete resources, so `history/5m`, `history/1h` and `history/24h`
//! (those within the retention) are listed beside the template.
//!
//! Alerts: `vllm://alerts/active` (firing and pending) and `vllm://alerts/history`
//! (resolved) read what the alert engine (`vllm_core::monitor::alerts`, run by the
//! sampler's lease holder after each round) keeps in the store.

use crate::PerfMonitor;
use crate::figures::retention_seconds;
use crate::metrics::{self, DurationArg, MetricsParams};
use rmcp::model::{Resource, ResourceTemplate};
use serde_json::Value;
use std::sync::Arc;
use vllm_core::monitor::alerts::{self, Alert};
use vllm_core::{Error, Result};
use vllm_mcp_kit::ResourceBody;

pub const CURRENT_URI: &str = "vllm://metrics/current";
pub const HISTORY_PREFIX: &str = "vllm://metrics/history/";
pub const ALERTS_URI: &str = "vllm://alerts/active";
pub const ALERTS_HISTORY_URI: &str = "vllm://alerts/history";
/// Resolved alerts `vllm://alerts/history` shows.
pub const HISTORY_LIMIT: usize = 100;

/// The history durations listed as concrete resources.
const LISTED: &[(&str, f64)] = &[("5m", 300.0), ("1h", 3600.0), ("24h", 86_400.0)];

pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new("vllm://metrics/history/{duration}", "metrics-history")
            .with_description(
                "get-metrics over a window ending now, with time series (120 points at most): duration like 90s, 5m, \
                 1h30m, 1d or plain seconds, at most the retention.",
            )
            .with_mime_type("application/json"),
    ]
}

pub fn list(s: &PerfMonitor) -> Vec<Resource> {
    let retention = retention_seconds(&s.kit);
    let mut out = vec![
        Resource::new(CURRENT_URI, "metrics-current")
            .with_description(
                "get-metrics for the last minute: throughput, latency, memory, GPUs, requests.",
            )
            .with_mime_type("application/json"),
    ];
    for (d, secs) in LISTED {
        if *secs <= retention {
            out.push(
                Resource::new(
                    format!("{HISTORY_PREFIX}{d}"),
                    format!("metrics-history-{d}"),
                )
                .with_description(format!("get-metrics over the last {d}, with time series."))
                .with_mime_type("application/json"),
            );
        }
    }
    out.push(
        Resource::new(ALERTS_URI, "alerts-active")
            .with_description(
                "Alerts firing now and pending ones (every rule of [monitor.alerts]): rule, severity, target, since, \
                 value, threshold, summary. Subscribe to be told when the set changes.",
            )
            .with_mime_type("application/json"),
    );
    out.push(
        Resource::new(ALERTS_HISTORY_URI, "alerts-history")
            .with_description(
                "Resolved alerts, newest first (at most 100), with when they fired and resolved.",
            )
            .with_mime_type("application/json"),
    );
    out
}

pub async fn read(s: &Arc<PerfMonitor>, uri: &str) -> Option<Result<ResourceBody>> {
    if uri == CURRENT_URI {
        return Some(
            metrics::get_metrics(s, MetricsParams::default())
                .await
                .and_then(to_body),
        );
    }
    if let Some(d) = uri.strip_prefix(HISTORY_PREFIX) {
        let p = MetricsParams {
            duration_seconds: Some(DurationArg::Text(d.to_string())),
            include_history: true,
            ..MetricsParams::default()
        };
        return Some(metrics::get_metrics(s, p).await.and_then(to_body));
    }
    if uri == ALERTS_URI {
        return Some(alerts(s).await.map(|v| ResourceBody::json(&v)));
    }
    if uri == ALERTS_HISTORY_URI {
        return Some(alert_history(s).await.map(|v| ResourceBody::json(&v)));
    }
    None
}

fn to_body<T: serde::Serialize>(v: T) -> Result<ResourceBody> {
    let v = serde_json::to_value(v).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(ResourceBody::json(&v))
}

/// An alert as the resources show it.
pub fn alert_json(a: &Alert) -> Value {
    alerts::to_json(a)
}

/// The active alerts (firing) and the pending ones, with the rules in force.
pub async fn alerts(s: &Arc<PerfMonitor>) -> Result<Value> {
    let config = s.kit.config.clone();
    s.kit
        .with_store(move |st| alerts::active_json(st, &config))
        .await
}

/// Resolved alerts, newest first, at most [`HISTORY_LIMIT`].
pub async fn alert_history(s: &Arc<PerfMonitor>) -> Result<Value> {
    s.kit
        .with_store(|st| alerts::history_json(st, HISTORY_LIMIT))
        .await
}
