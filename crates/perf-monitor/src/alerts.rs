//! Alert notifications of one server instance: tails the transitions the evaluator (the
//! sampler's lease holder, maybe another process) records in the store, and tells this
//! instance's client: an MCP logging notification per transition (`warning` when an
//! alert fires, `info` when it resolves) and `notifications/resources/updated` for
//! `vllm://alerts/active` when the set of alerts (firing or pending) changes, and for
//! `vllm://alerts/history` when one resolves, if the client subscribed.
//!
//! The webhook is not here: only the evaluator posts it (`vllm_core::monitor::alerts`).

use crate::NAME;
use crate::resources::{ALERTS_HISTORY_URI, ALERTS_URI, alert_json};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use vllm_core::config::AlertRuleName;
use vllm_core::monitor::alerts::{self, AlertState};
use vllm_core::store::Store;
use vllm_mcp_kit::Kit;

/// How often the store is polled: the sampling interval, within 0.1 s and 2 s.
pub fn poll_interval(kit: &Kit) -> Duration {
    Duration::from_secs_f64(kit.config.monitor.sample_interval_seconds.clamp(0.1, 2.0))
}

/// Watches for as long as the process lives. Starts from the newest event: what fired
/// before this instance started is in the resources, not replayed as notifications.
pub async fn watch(kit: Arc<Kit>, store: Store) {
    let interval = poll_interval(&kit);
    let st = store.clone();
    let mut cursor = tokio::task::spawn_blocking(move || alerts::last_event_id(&st))
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or(0);
    let mut last_set: Option<Vec<(AlertRuleName, String, AlertState)>> = None;
    loop {
        tokio::time::sleep(interval).await;
        let st = store.clone();
        let after = cursor;
        let read = tokio::task::spawn_blocking(move || {
            Ok::<_, vllm_core::Error>((alerts::events_after(&st, after)?, alerts::active(&st)?))
        })
        .await;
        let (events, active) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "reading alerts failed");
                continue;
            }
            Err(_) => continue,
        };
        let mut resolved = false;
        for e in &events {
            cursor = cursor.max(e.id);
            let data = json!({
                "event": format!("alert {}", e.kind),
                "alert": alert_json(&e.alert),
                "message": format!("{} {}: {}", e.alert.rule, e.kind, e.alert.summary),
            });
            if e.kind == AlertState::Firing {
                kit.notifier.warning(NAME, data).await;
            } else {
                resolved = true;
                kit.notifier.info(NAME, data).await;
            }
        }
        let set: Vec<(AlertRuleName, String, AlertState)> = active
            .iter()
            .map(|a| {
                (
                    a.rule,
                    serde_json::to_string(&a.target).unwrap_or_default(),
                    a.state,
                )
            })
            .collect();
        let changed = last_set.as_ref().is_some_and(|l| *l != set);
        if changed || !events.is_empty() {
            kit.notifier.resource_updated(ALERTS_URI).await;
        }
        if resolved {
            kit.notifier.resource_updated(ALERTS_HISTORY_URI).await;
        }
        last_set = Some(set);
    }
}
