//! `GET /ui/api/fleet`: every model the door can serve (its `/v1/models` listing) with
//! what a person watching asks of it: status and why it failed, how far a start has
//! come, node and URL, memory, requests, last use, idle time left, pin; and which
//! actions this door allows, so the page shows only the controls that would work.

use super::actions::Action;
use crate::Gateway;
use crate::listing::Listed;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use vllm_core::config::Tier;
use vllm_core::models::{ModelRecord, ModelStatus};
use vllm_core::monitor::Sample;
use vllm_core::monitor::history;

/// One model as the page shows it.
#[derive(Debug, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub listed: Listed,
    /// A failed model's classified reason (`PORT_IN_USE`, `ENGINE_DIED`, ...) and message.
    pub reason: Option<String>,
    pub error: Option<String>,
    /// A start (or wake) through the door is under way: it may not be swapped out yet.
    pub starting: bool,
    /// A loading model: seconds since it was launched, and its log's last line.
    pub loading_seconds: Option<f64>,
    pub progress: Option<String>,
    /// The host (or Ray node) and the server's URL.
    pub node: Option<String>,
    pub url: Option<String>,
    /// The weights' size as the model's log says, the KV cache's as vLLM reports it, and
    /// the launch's estimate.
    pub weights_mb: Option<u64>,
    pub kv_cache_mb: Option<u64>,
    pub estimate_mb: Option<u64>,
    /// vLLM's own running and waiting requests and KV-cache usage (0..1), at the
    /// monitor's last sample.
    pub running: Option<f64>,
    pub queued: Option<f64>,
    pub kv_cache_usage: Option<f64>,
    /// Seconds until the idle TTL unloads it, counted from its last request through a
    /// door (or its start): traffic that bypasses the doors resets the reaper's clock
    /// but not this one.
    pub ttl_left_seconds: Option<f64>,
}

/// `GET /ui/api/fleet`.
pub async fn fleet(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response<Body> {
    if let Err(r) = super::guard(&gw, &Method::GET, &headers) {
        return *r;
    }
    match gw.fleet_view().await {
        Ok(v) => super::success(v),
        Err(e) => super::error(&e),
    }
}

impl Gateway {
    /// The page's view of the fleet.
    pub async fn fleet_view(&self) -> vllm_core::Result<serde_json::Value> {
        let (listing, records) = self.listing_and_records().await?;
        let records: HashMap<String, ModelRecord> = records
            .into_iter()
            .map(|r| (r.model_id.clone(), r))
            .collect();
        let now = vllm_core::time::unix_now();
        let window = (3.0 * self.config.monitor.sample_interval_seconds).max(30.0);
        let (latest, door_use) = self
            .launcher
            .on_store(move |s| {
                Ok((
                    history::latest(s, now - window)?,
                    vllm_core::door_use::all(s)?,
                ))
            })
            .await?;
        let last_sample = latest.iter().map(|s| s.ts).reduce(f64::max);
        let door_use: HashMap<String, vllm_core::door_use::DoorUse> =
            door_use.into_iter().collect();
        let mut models = Vec::with_capacity(listing.len());
        for l in listing {
            let record = records.get(&l.id);
            // The newest answering sample of the model (a failed scrape names none).
            let sample = latest
                .iter()
                .filter(|s| s.up && (s.endpoint == l.id || s.model == l.id))
                .max_by(|a, b| a.ts.total_cmp(&b.ts));
            let last_door_use = door_use
                .get(&l.id)
                .and_then(|u| u.last_used.as_deref())
                .and_then(vllm_core::time::parse_rfc3339)
                .map(|t| t as f64);
            models.push(self.row(l, record, sample, last_door_use, now).await);
        }
        let actions: BTreeMap<&str, bool> = Action::ALL
            .iter()
            .map(|a| {
                (
                    a.tool(),
                    self.config
                        .security
                        .check_call(a.tool(), Tier::Control)
                        .is_ok(),
                )
            })
            .collect();
        Ok(json!({
            "now": now,
            "url": self.config.gateway.url(),
            "version": env!("CARGO_PKG_VERSION"),
            "max_tier": self.config.security.max_tier.as_str(),
            "controls": actions.values().any(|a| *a),
            "actions": actions,
            "sample_interval_seconds": self.config.monitor.sample_interval_seconds,
            "last_sample_at": last_sample,
            "models": models,
        }))
    }

    async fn row(
        &self,
        listed: Listed,
        r: Option<&ModelRecord>,
        sample: Option<&Sample>,
        last_door_use: Option<f64>,
        now: f64,
    ) -> Row {
        let loading = r.filter(|r| r.status == ModelStatus::Loading);
        let progress = match loading {
            Some(r) => last_line(&self.launcher.log_tail(r, 3).await),
            None => None,
        };
        let serving = r.filter(|r| matches!(r.status, ModelStatus::Loaded | ModelStatus::Sleeping));
        // A stopped model's last server and samples are history, not where it is.
        let active = r.filter(|r| r.status.is_active());
        let sample = sample.filter(|_| serving.is_some() || r.is_none());
        Row {
            reason: r
                .and_then(|r| r.error.as_ref())
                .and_then(|e| serde_json::to_value(e.reason).ok())
                .and_then(|v| v.as_str().map(str::to_string)),
            error: r.and_then(|r| r.error.as_ref()).map(|e| e.message.clone()),
            starting: self.running_start(&listed.id).is_some(),
            loading_seconds: loading
                .and_then(|r| r.launched_at)
                .map(|t| (now - t).max(0.0)),
            progress,
            node: active.map(|r| {
                r.job
                    .as_ref()
                    .and_then(|j| j.node_ip.clone())
                    .unwrap_or_else(|| r.host.clone())
            }),
            url: active.and_then(ModelRecord::base_url),
            weights_mb: match serving {
                Some(r) => self.page.weights_mb(r).await,
                None => None,
            },
            kv_cache_mb: sample
                .and_then(|s| s.detail.as_ref())
                .and_then(|d| d.kv_cache_memory_bytes)
                .map(|b| b / (1024 * 1024)),
            estimate_mb: r.and_then(|r| r.memory_estimate_mb),
            running: sample.and_then(|s| s.running),
            queued: sample.and_then(|s| s.waiting),
            kv_cache_usage: sample.and_then(|s| s.kv_cache_usage),
            ttl_left_seconds: r.filter(|r| r.status == ModelStatus::Loaded).and_then(|r| {
                let ttl = r.idle_ttl_seconds?;
                let since = last_door_use
                    .into_iter()
                    .chain(r.loaded_at)
                    .fold(0.0, f64::max);
                Some((ttl - (now - since)).max(0.0))
            }),
            listed,
        }
    }
}

/// The last line of a log tail that says something: a progress bar redrawn with `\r`
/// counts by its newest drawing; blank lines are skipped.
fn last_line(tail: &str) -> Option<String> {
    tail.lines()
        .rev()
        .find_map(|l| l.rsplit('\r').map(str::trim).find(|p| !p.is_empty()))
        .map(|l| l.chars().take(240).collect())
}

/// What the page keeps between requests: the weights' size read from each model's log
/// (a read of up to 8 MiB, off the runtime's threads), once per launch; a log that does
/// not say it yet is read again after [`WEIGHTS_RETRY`].
#[derive(Default)]
pub struct PageCache {
    weights: std::sync::Mutex<HashMap<String, Weights>>,
}

/// How long a log without the weights' size is left before it is read again.
pub const WEIGHTS_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// A launch (its `launched_at`), the weights' size its log gave, and when it was read.
type Weights = (Option<f64>, Option<u64>, std::time::Instant);

impl PageCache {
    async fn weights_mb(&self, r: &ModelRecord) -> Option<u64> {
        let cached = {
            let m = self.weights.lock().unwrap_or_else(|e| e.into_inner());
            m.get(&r.model_id).copied()
        };
        if let Some((at, mb, read)) = cached
            && at == r.launched_at
            && (mb.is_some() || read.elapsed() < WEIGHTS_RETRY)
        {
            return mb;
        }
        let path = r.log_path.clone()?;
        let mb = tokio::task::spawn_blocking(move || {
            vllm_core::monitor::memory::weights_mb_from_log_file(&path)
        })
        .await
        .ok()
        .flatten();
        let mut m = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(
            r.model_id.clone(),
            (r.launched_at, mb, std::time::Instant::now()),
        );
        mb
    }
}

#[cfg(test)]
mod tests {
    use super::last_line;

    #[test]
    fn progress_is_the_newest_drawing_of_the_last_line() {
        let tail = "INFO loading\nLoading weights:  10%|#  \rLoading weights:  60%|######  \r\n\n";
        assert_eq!(
            last_line(tail).as_deref(),
            Some("Loading weights:  60%|######")
        );
        assert_eq!(last_line("\n \n"), None);
    }
}
