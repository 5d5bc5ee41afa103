//! The gateway's use, published to the store for every instance (`vllm_core::door_use`):
//! requests in flight and waiting and the last use per model, so an `unload-model` from
//! any Crush session sees requests running through the door, and list-models shows them.

use crate::Gateway;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vllm_core::door_use::{self, Published};

/// How often the figures are looked at; they are written when they changed.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// Unchanged figures are written again this often, so they stay fresh
/// (`door_use::FRESH_SECONDS`).
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

impl Gateway {
    /// The figures as published.
    fn published(&self) -> Vec<Published> {
        let rows = self.usage.all().into_iter().map(|(model_id, u)| Published {
            model_id,
            in_flight: u.in_flight,
            waiting: u.waiting,
            last_used: u.last_used,
        });
        rows.collect()
    }

    /// Publishes the figures under `holder` until dropped; the caller withdraws them when
    /// the door closes.
    pub async fn publish_use(self: Arc<Self>, holder: String) {
        let url = self.config.gateway.url().unwrap_or_default();
        let mut last: Option<(Instant, Vec<Published>)> = None;
        loop {
            let rows = self.published();
            let due = match &last {
                Some((at, before)) => *before != rows || at.elapsed() >= REFRESH_EVERY,
                None => true,
            };
            if due {
                let (h, u, r) = (holder.clone(), url.clone(), rows.clone());
                let written = self
                    .launcher
                    .on_store(move |s| door_use::publish(s, &h, &u, &r))
                    .await;
                match written {
                    Ok(()) => last = Some((Instant::now(), rows)),
                    Err(e) => tracing::warn!(error = %e, "cannot publish the front door's use"),
                }
            }
            tokio::time::sleep(PUBLISH_EVERY).await;
        }
    }

    /// Removes this door's figures (it stopped serving).
    pub async fn withdraw_use(&self, holder: String) {
        let gone = self
            .launcher
            .on_store(move |s| door_use::withdraw(s, &holder))
            .await;
        if let Err(e) = gone {
            tracing::warn!(error = %e, "cannot withdraw the front door's use");
        }
    }
}
