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
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use vllm_core::models::{ModelRecord, ModelStatus};
use vllm_fleet::launcher::supervisor::LaunchRequest;
use vllm_fleet::lifecycle::load_failure;
use vllm_fleet::power::{self, Served};

/// A start's end, as its waiters see it: `None` while it runs.
pub type StartState = Option<std::result::Result<(), Arc<vllm_core::Error>>>;

/// How often a start is looked at while a request waits for it.
pub const SETTLE_POLL: Duration = Duration::from_millis(20);

/// How many times a request resolves again after its model was brought up (another
/// swap may take it away between the start and the request).
const RESOLVE_TRIES: usize = 3;

/// What a request must wait for before it can be passed on.
pub enum Ready {
    /// Its server answers now.
    Now(Upstream),
    /// It must wait: for a start, a wake or a drain.
    Later,
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
            Route::Ready(_) | Route::BringUp { .. } => Ok(Ready::Later),
        }
    }

    /// The server for `model`, starting, waking or waiting for it as needed: at most
    /// `gateway.load_timeout_seconds`, holding a place in the model's queue meanwhile.
    pub async fn acquire(self: &Arc<Self>, model: &str) -> Result<Upstream> {
        let timeout = Duration::from_secs_f64(self.config.gateway.load_timeout_seconds);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut waiting = None;
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
                let max = self.config.gateway.max_queued_requests;
                let queued =
                    self.usage
                        .enqueue(&owner, max)
                        .ok_or_else(|| GatewayError::QueueFull {
                            model: model.to_string(),
                            waiting: max,
                        })?;
                waiting = Some(queued);
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
                    if let Some(Err(source)) = state {
                        return Err(GatewayError::Start {
                            model: model.to_string(),
                            source,
                        });
                    }
                }
            }
        }
        Err(GatewayError::Upstream {
            model: model.to_string(),
            message: "it was swapped out again before the request could be passed on".into(),
        })
    }

    /// The running start of `owner`, or a new one.
    fn start(self: &Arc<Self>, owner: &str, how: BringUp) -> watch::Receiver<StartState> {
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
        });
        rx
    }

    /// Brings `owner` up and waits until it serves (or fails).
    async fn bring_up(&self, owner: &str, how: BringUp) -> vllm_core::Result<()> {
        let timeout = Duration::from_secs_f64(self.config.gateway.load_timeout_seconds);
        match how {
            BringUp::Launch(req) => {
                self.launch_making_room(&req).await?;
                self.note_in_log(owner).await;
            }
            BringUp::Wake(r) => {
                self.room_to_wake(&r).await?;
                let client = self.launcher.client_for(&r).ok_or_else(|| {
                    vllm_core::Error::Internal(format!("`{owner}` has no server to wake"))
                })?;
                let served = Served {
                    model_id: owner,
                    client: &client,
                    record: Some(&r),
                };
                power::wake(Some(&self.launcher), served, timeout).await?;
                return Ok(());
            }
            BringUp::Settle(_) => {}
        }
        settled(&self.settle(owner, timeout).await?)
    }

    /// Waits until `owner` is loaded or failed, or `timeout` passes, looking every
    /// [`SETTLE_POLL`]: a request waits for the start, so the first look that sees the
    /// server healthy ends it (the launcher's own wait looks four times a second).
    async fn settle(&self, owner: &str, timeout: Duration) -> vllm_core::Result<ModelRecord> {
        let started = tokio::time::Instant::now();
        loop {
            let r = self
                .launcher
                .get(owner)
                .await?
                .ok_or_else(|| vllm_core::Error::ModelNotFound(owner.to_string()))?;
            if r.status != ModelStatus::Loading || started.elapsed() >= timeout {
                return Ok(r);
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// Before a wake: `limits.gpu_memory_budget_mb` must hold the model again (a sleeping
    /// model counts for none); others are swapped out until it does, while one may go.
    async fn room_to_wake(&self, r: &ModelRecord) -> vllm_core::Result<()> {
        let (Some(budget), Some(need)) = (
            self.config.limits.gpu_memory_budget_mb,
            r.memory_estimate_mb,
        ) else {
            return Ok(());
        };
        if r.gpu_ids.is_empty() {
            return Ok(()); // the budget is GPU memory
        }
        loop {
            let records = self.launcher.list().await?;
            let awake = records.iter().filter(|o| {
                o.model_id != r.model_id
                    && matches!(o.status, ModelStatus::Loaded | ModelStatus::Loading)
            });
            let used: u64 = awake.filter_map(|o| o.memory_estimate_mb).sum();
            if used + need <= budget {
                return Ok(());
            }
            if !self
                .make_room(&r.model_id, crate::swap::Shortage::Memory)
                .await?
            {
                return Err(vllm_core::Error::LimitExceeded {
                    limit: "limits.gpu_memory_budget_mb".into(),
                    message: format!(
                        "waking `{}` needs {need} MiB; awake models take {used} MiB of the {budget} MiB budget and none may be swapped out",
                        r.model_id
                    ),
                });
            }
        }
    }

    /// Says in the model's log that the front door started it, for whoever reads the
    /// log resource while it loads. A log that cannot be written is no failure.
    async fn note_in_log(&self, owner: &str) {
        let Ok(Some(r)) = self.launcher.get(owner).await else {
            return;
        };
        let (Some(path), waiting) = (r.log_path, self.usage.get(owner).waiting) else {
            return;
        };
        let line = format!(
            "---- vllm-mcp front door {}: started on demand for a request ({waiting} waiting)\n",
            vllm_core::time::now_rfc3339()
        );
        let _ = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
            f.write_all(line.as_bytes())
        })
        .await;
    }

    /// Launches `req`; when the limits or the memory refuse it, swaps a model out and
    /// tries again, while there is one to swap.
    async fn launch_making_room(&self, req: &LaunchRequest) -> vllm_core::Result<()> {
        loop {
            let fleet = self.fleet();
            let refusal = match fleet.load(req, Duration::ZERO, |_| {}).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let Some(room) = crate::swap::Shortage::of(&refusal) else {
                return Err(refusal);
            };
            if !self.make_room(&req.model_id, room).await? {
                return Err(refusal);
            }
        }
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

/// A settled record as the start's result: loaded, or its classified failure.
fn settled(r: &ModelRecord) -> vllm_core::Result<()> {
    match r.status {
        ModelStatus::Loaded => Ok(()),
        ModelStatus::Error => Err(load_failure(r)),
        other => Err(vllm_core::Error::Internal(format!(
            "`{}` is {} instead of loaded",
            r.model_id,
            other.as_str()
        ))),
    }
}
