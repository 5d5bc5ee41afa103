//! The page's reads besides the fleet: charts of the monitor's stored history (5 m, 1 h,
//! 24 h), the alerts as `vllm://alerts/active` and `vllm://alerts/history` have them, and
//! the saved states with the models each would restore.

use crate::Gateway;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Response};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use vllm_core::Error;
use vllm_core::monitor::{alerts, charts};
use vllm_core::states;

/// Resolved alerts the page shows, as `vllm://alerts/history`.
pub const ALERT_HISTORY: usize = 100;
/// Saved states the page lists, newest first.
pub const STATES_SHOWN: usize = 50;

/// A chart range: its span and how many bins it is drawn in.
pub const RANGES: &[(&str, f64, usize)] = &[
    ("5m", 300.0, 60),
    ("1h", 3_600.0, 120),
    ("24h", 86_400.0, 144),
];

#[derive(Deserialize)]
pub struct ChartQuery {
    #[serde(default)]
    range: Option<String>,
}

type Gw = State<Arc<Gateway>>;

/// `GET /ui/api/charts?range=5m|1h|24h`.
pub async fn charts(
    State(gw): Gw,
    headers: HeaderMap,
    Query(q): Query<ChartQuery>,
) -> Response<Body> {
    if let Err(r) = super::guard(&gw, &Method::GET, &headers) {
        return *r;
    }
    let name = q.range.as_deref().unwrap_or("5m");
    let Some(&(_, span, bins)) = RANGES.iter().find(|(n, ..)| *n == name) else {
        return super::error(&Error::invalid(
            "range",
            format!("`{name}` is not one of 5m, 1h, 24h"),
        ));
    };
    // No bin narrower than a sampling interval: it would only draw gaps.
    let interval = gw.config.monitor.sample_interval_seconds.max(0.1);
    let bins = bins.min((span / interval).floor().max(1.0) as usize);
    let until = vllm_core::time::unix_now();
    let read = gw
        .launcher
        .on_store(move |s| charts::read(s, until - span, until, bins))
        .await;
    match read {
        Ok(c) => super::success(json!({"range": name, "charts": c})),
        Err(e) => super::error(&e),
    }
}

/// `GET /ui/api/alerts`: `{active, history}`, each the body of its resource.
pub async fn alerts(State(gw): Gw, headers: HeaderMap) -> Response<Body> {
    if let Err(r) = super::guard(&gw, &Method::GET, &headers) {
        return *r;
    }
    let config = gw.config.clone();
    let read = gw
        .launcher
        .on_store(move |s| {
            Ok(json!({
                "active": alerts::active_json(s, &config)?,
                "history": alerts::history_json(s, ALERT_HISTORY)?,
            }))
        })
        .await;
    match read {
        Ok(v) => super::success(v),
        Err(e) => super::error(&e),
    }
}

/// `GET /ui/api/states`: the newest saved states of every session.
pub async fn states(State(gw): Gw, headers: HeaderMap) -> Response<Body> {
    if let Err(r) = super::guard(&gw, &Method::GET, &headers) {
        return *r;
    }
    let read = gw
        .launcher
        .on_store(|s| states::list_recent(s, STATES_SHOWN))
        .await;
    match read {
        Ok(list) => {
            let rows: Vec<_> = list
                .iter()
                .map(|m| {
                    json!({
                        "state_id": m.state_id,
                        "session_id": m.session_id,
                        "timestamp": m.timestamp,
                        "title": m.title,
                        "models": m.models_index.keys().collect::<Vec<_>>(),
                        "has_models": m.has(states::PartKind::Models),
                        "size_bytes": m.size_bytes(),
                    })
                })
                .collect();
            super::success(json!({"states": rows}))
        }
        Err(e) => super::error(&e),
    }
}
