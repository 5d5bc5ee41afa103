//! The monitor's resources: `vllm://metrics/current`, `vllm://metrics/history/{duration}`
//! and `vllm://alerts/active`.
//!
//! Crush lists only concrete resources, so `history/5m`, `history/1h` and `history/24h`
//! (those within the retention) are listed beside the template.
//!
//! Alerts: only the `endpoint_down` rule is evaluated so far (from the samples in the
//! store: an endpoint whose scrapes have all failed for at least the rule's `for_seconds`).
//! The other rules of `[monitor.alerts]` land with the alert engine.

use crate::PerfMonitor;
use crate::metrics::{self, DurationArg, MetricsParams, rfc3339_ms};
use rmcp::model::{Resource, ResourceTemplate};
use serde_json::{Value, json};
use std::sync::Arc;
use vllm_core::monitor::history;
use vllm_core::{Error, Result};
use vllm_mcp_kit::ResourceBody;

pub const CURRENT_URI: &str = "vllm://metrics/current";
pub const HISTORY_PREFIX: &str = "vllm://metrics/history/";
pub const ALERTS_URI: &str = "vllm://alerts/active";

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
    let retention = metrics::retention_seconds(&s.kit);
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
            .with_description("Alerts firing now (endpoint_down so far).")
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
    None
}

fn to_body<T: serde::Serialize>(v: T) -> Result<ResourceBody> {
    let v = serde_json::to_value(v).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(ResourceBody::json(&v))
}

/// The active alerts: `endpoint_down` evaluated on the stored samples.
pub async fn alerts(s: &Arc<PerfMonitor>) -> Result<Value> {
    let kit = s.kit.clone();
    let rule = kit
        .config
        .alert_rules()
        .into_iter()
        .find(|r| r.name == "endpoint_down");
    let statuses = s.kit.with_store(history::endpoint_status).await?;
    let now = vllm_core::time::unix_now();
    let interval = kit.config.monitor.sample_interval_seconds;
    let mut active = Vec::new();
    let mut pending = Vec::new();
    if let Some(rule) = rule.filter(|r| r.enabled) {
        for e in statuses {
            // A status older than a few intervals is a server no longer sampled.
            if e.up || now - e.last_sample_at > (10.0 * interval).max(60.0) {
                continue;
            }
            let Some(since) = e.down_since else { continue };
            let alert = json!({
                "rule": "endpoint_down",
                "severity": rule.severity,
                "endpoint": e.endpoint,
                "base_url": e.base_url,
                "error": e.error,
                "down_since": rfc3339_ms(since),
                "down_seconds": metrics::round2(now - since),
                "last_up_at": e.last_up_at.map(rfc3339_ms),
                "for_seconds": rule.for_seconds,
                "message": format!("endpoint {} ({}) has not answered /metrics since {}", e.endpoint, e.base_url, rfc3339_ms(since)),
            });
            if now - since >= rule.for_seconds {
                active.push(alert);
            } else {
                pending.push(alert);
            }
        }
    }
    Ok(json!({
        "timestamp": vllm_core::time::now_rfc3339(),
        "alerts": active,
        "pending": pending,
        "rules_evaluated": ["endpoint_down"],
        "note": "only the endpoint_down rule is evaluated so far; the other rules of [monitor.alerts] \
                 (gpu_temperature, gpu_memory, kv_cache_usage, error_rate, p99_latency_ms, requests_waiting, \
                 preemptions) land with the alert engine",
    }))
}
