//! Models started on demand: a request for a model that does not serve starts it through
//! `load-model`'s path (or wakes it), and waits, with the others asking for it, in a
//! bounded queue, until it serves or `gateway.load_timeout_seconds` passes.
//!
//! One start per model at a time: the first request spawns it, later ones join it. The
//! start runs to its end even when every waiter has gone (a timeout is the client's
//! limit, not the model's).

use crate::Gateway;
use crate::error::{GatewayError, Result};
use crate::resolve::{BringUp, Route, Upstream};
use crate::usage::Waiting;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A start's end, as its waiters see it: `None` while it runs.
pub type StartState = Option<std::result::Result<(), Arc<vllm_core::Error>>>;

/// How many times a request resolves again after its model was brought up (another
/// swap may take it away between the start and the request).
const RESOLVE_TRIES: usize = 3;

/// What a request must wait for before it can be passed on.
pub enum Ready {
    /// Its server answers now.
    Now(Upstream),
    /// It must wait for `owner` (the model whose server serves it): a start, a wake or
    /// a drain.
    Later { owner: String },
}

impl Gateway {
    /// The server for `model` now, without waiting, when there is one.
    pub async fn route_now(&self, model: &str) -> Result<Ready> {
        if let Some(u) = self.routes.get(model)
            && !self.usage.get(&u.owner).draining
        {
            return Ok(Ready::Now(u));
        }
        match self.resolve(model).await? {
            Route::Ready(u) if !self.usage.get(&u.owner).draining => {
                self.routes.put(model, &u);
                Ok(Ready::Now(u))
            }
            Route::Unknown => Err(self.unknown_model(model).await),
            Route::Ready(u) => Ok(Ready::Later { owner: u.owner }),
            Route::BringUp { owner, how } => {
                // A launch the config refuses is refused now, before any answer begins.
                if let BringUp::Launch(req) = &how {
                    self.launcher
                        .validate(req)
                        .map_err(|e| GatewayError::Start {
                            model: model.to_string(),
                            source: Arc::new(e),
                        })?;
                }
                Ok(Ready::Later { owner })
            }
        }
    }

    /// A place in `owner`'s queue for a request for `model`, or `429 queue_full`.
    pub fn enqueue(&self, model: &str, owner: &str) -> Result<Waiting> {
        let max = self.config.gateway.max_queued_requests;
        self.usage
            .enqueue(owner, max)
            .ok_or_else(|| GatewayError::QueueFull {
                model: model.to_string(),
                waiting: max,
            })
    }

    /// The server for `model`, starting, waking or waiting for it as needed: at most
    /// `gateway.load_timeout_seconds`, holding a place in the model's queue meanwhile
    /// (`queued`, when the caller took it already).
    pub async fn acquire(
        self: &Arc<Self>,
        model: &str,
        queued: Option<Waiting>,
    ) -> Result<Upstream> {
        let timeout = Duration::from_secs_f64(self.config.gateway.load_timeout_seconds);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut waiting = queued;
        for _ in 0..RESOLVE_TRIES {
            let (owner, how) = match self.resolve(model).await? {
                Route::Unknown => return Err(self.unknown_model(model).await),
                Route::Ready(u) if !self.usage.get(&u.owner).draining => {
                    self.routes.put(model, &u);
                    return Ok(u);
                }
                Route::Ready(u) => (u.owner, None),
                Route::BringUp { owner, how } => (owner, Some(how)),
            };
            if waiting.is_none() {
                waiting = Some(self.enqueue(model, &owner)?);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let timed_out = || GatewayError::LoadTimeout {
                model: model.to_string(),
                after: timeout,
            };
            match how {
                // Being swapped out: wait for the drain to end, then look again.
                None => {
                    let drained = |u: &crate::usage::ModelUse| !u.draining;
                    if !self.usage.wait_until(&owner, left, drained).await {
                        return Err(timed_out());
                    }
                }
                Some(how) => {
                    let mut rx = self.start(&owner, how);
                    let ended = tokio::time::timeout(left, rx.wait_for(Option::is_some)).await;
                    let state = match ended {
                        Err(_) => return Err(timed_out()),
                        Ok(Err(_)) => Some(Err(Arc::new(vllm_core::Error::Internal(
                            "the start was abandoned".into(),
                        )))),
                        Ok(Ok(s)) => s.clone(),
                    };
                    match state {
                        // The start's own wait ran out (a request that joined it late).
                        Some(Err(e)) if matches!(*e, vllm_core::Error::BackendTimeout { .. }) => {
                            return Err(timed_out());
                        }
                        Some(Err(source)) => {
                            return Err(GatewayError::Start {
                                model: model.to_string(),
                                source,
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
        Err(GatewayError::Upstream {
            model: model.to_string(),
            message: "it was swapped out again before the request could be passed on".into(),
        })
    }

    /// The start of `owner` now running, if one is.
    pub(crate) fn running_start(&self, owner: &str) -> Option<watch::Receiver<StartState>> {
        let starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        starts
            .get(owner)
            .filter(|rx| rx.borrow().is_none())
            .cloned()
    }

    /// The running start of `owner`, or a new one.
    pub(crate) fn start(
        self: &Arc<Self>,
        owner: &str,
        how: BringUp,
    ) -> watch::Receiver<StartState> {
        let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = starts.get(owner)
            && rx.borrow().is_none()
        {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        starts.insert(owner.to_string(), rx.clone());
        let gw = self.clone();
        let owner = owner.to_string();
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let result = gw.bring_up(&owner, how).await;
            gw.metrics.start_ended(&owner, &result, began.elapsed());
            match &result {
                Ok(()) => {
                    tracing::info!(model = %owner, seconds = began.elapsed().as_secs_f64(), "started on demand")
                }
                Err(e) => {
                    tracing::warn!(model = %owner, code = e.code(), error = %e, "start on demand failed")
                }
            }
            let _ = tx.send(Some(result.map_err(Arc::new)));
            // Waiters hold their own receivers: the ended start leaves the table.
            let mut starts = gw.starts.lock().unwrap_or_else(|e| e.into_inner());
            if starts.get(&owner).is_some_and(|rx| rx.borrow().is_some()) {
                starts.remove(&owner);
            }
        });
        rx
    }

    /// The 404 for a name nothing answers to, naming what is there.
    async fn unknown_model(&self, model: &str) -> GatewayError {
        let available = match self.listing().await {
            Ok(l) => l.into_iter().map(|m| m.id).collect(),
            Err(_) => Vec::new(),
        };
        GatewayError::UnknownModel {
            model: model.to_string(),
            available,
        }
    }
}
