//! What the front door knows of each model's use: requests in flight, requests waiting
//! for a start, the last use, and whether it is being drained to be swapped out.
//!
//! Keyed by the model whose server serves the request (an adapter's base model), so
//! in-flight counts and least-recently-used order are per server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One model's figures.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ModelUse {
    pub in_flight: u32,
    /// Requests waiting for the model to start (or for a drain to end).
    pub waiting: u32,
    /// Unix seconds of the last request passed on, if any.
    pub last_used: Option<f64>,
    pub draining: bool,
    /// Requests passed on since the gateway started.
    pub served: u64,
}

/// Every model's figures, shared by the gateway's tasks.
#[derive(Debug, Default)]
pub struct Usage {
    models: Mutex<HashMap<String, ModelUse>>,
    /// Woken when a request ends or a drain ends.
    changed: Notify,
}

impl Usage {
    fn with<T>(&self, model: &str, f: impl FnOnce(&mut ModelUse) -> T) -> T {
        let mut m = self.models.lock().unwrap_or_else(|e| e.into_inner());
        f(m.entry(model.to_string()).or_default())
    }

    /// One model's figures now.
    pub fn get(&self, model: &str) -> ModelUse {
        let m = self.models.lock().unwrap_or_else(|e| e.into_inner());
        m.get(model).copied().unwrap_or_default()
    }

    /// Every model's figures now.
    pub fn all(&self) -> Vec<(String, ModelUse)> {
        let m = self.models.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = m.iter().map(|(k, u)| (k.clone(), *u)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// A request for `model` starts: counted until the guard drops (its answer, streamed
    /// or not, ended or the client went away). `None` while the model is being drained:
    /// the test and the count are one step, so a drain that saw no request in flight
    /// never has one begin behind it.
    pub fn begin(self: &Arc<Self>, model: &str) -> Option<InFlight> {
        let begun = self.with(model, |u| {
            if u.draining {
                return false;
            }
            u.in_flight += 1;
            u.served += 1;
            u.last_used = Some(vllm_core::time::unix_now());
            true
        });
        begun.then(|| InFlight {
            usage: self.clone(),
            model: model.to_string(),
        })
    }

    /// A request waits for `model`, unless `max` already do: `None` then.
    pub fn enqueue(self: &Arc<Self>, model: &str, max: u32) -> Option<Waiting> {
        let admitted = self.with(model, |u| {
            if u.waiting >= max {
                return false;
            }
            u.waiting += 1;
            true
        });
        admitted.then(|| Waiting {
            usage: self.clone(),
            model: model.to_string(),
        })
    }

    /// Marks `model` draining (new requests wait) or not.
    pub fn set_draining(&self, model: &str, draining: bool) {
        self.with(model, |u| u.draining = draining);
        self.changed.notify_waiters();
    }

    /// Waits until `test` holds for `model`'s figures, or `within` passes; whether it held.
    pub async fn wait_until(
        &self,
        model: &str,
        within: std::time::Duration,
        test: impl Fn(&ModelUse) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            if test(&self.get(model)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return test(&self.get(model));
            }
        }
    }
}

/// A request in flight; dropping it ends it.
#[derive(Debug)]
pub struct InFlight {
    usage: Arc<Usage>,
    model: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.usage.with(&self.model, |u| {
            u.in_flight = u.in_flight.saturating_sub(1);
            u.last_used = Some(vllm_core::time::unix_now());
        });
        self.usage.changed.notify_waiters();
    }
}

/// A request waiting for its model; dropping it leaves the queue.
#[derive(Debug)]
pub struct Waiting {
    usage: Arc<Usage>,
    model: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.usage
            .with(&self.model, |u| u.waiting = u.waiting.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn requests_are_counted_until_their_guard_drops_and_the_queue_is_bounded() {
        let usage = Arc::new(Usage::default());
        let a = usage.begin("m").unwrap();
        let b = usage.begin("m").unwrap();
        assert_eq!(usage.get("m").in_flight, 2);
        drop(a);
        assert_eq!(usage.get("m").in_flight, 1);
        assert!(usage.get("m").last_used.is_some());
        drop(b);
        assert_eq!(usage.get("m").in_flight, 0);
        assert_eq!(usage.get("m").served, 2);

        let w1 = usage.enqueue("m", 2).unwrap();
        let _w2 = usage.enqueue("m", 2).unwrap();
        assert!(usage.enqueue("m", 2).is_none(), "a third waiter is refused");
        drop(w1);
        assert!(
            usage.enqueue("m", 2).is_some(),
            "a place freed is taken again"
        );
    }

    #[tokio::test]
    async fn a_drain_waits_for_the_last_request_and_no_longer_than_asked() {
        let usage = Arc::new(Usage::default());
        let r = usage.begin("m").unwrap();
        let idle = |u: &ModelUse| u.in_flight == 0;
        assert!(!usage.wait_until("m", Duration::from_millis(50), idle).await);
        let u2 = usage.clone();
        let waiter = tokio::spawn(async move {
            u2.wait_until("m", Duration::from_secs(10), |u| u.in_flight == 0)
                .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(r);
        assert!(
            waiter.await.unwrap(),
            "the end of the request ends the wait"
        );
    }
}
