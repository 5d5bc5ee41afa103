//! Bringing a model up for the front door: a launch through `load-model`'s path that
//! makes room when the limits or the memory refuse it, a wake that makes room under the
//! budget, and the wait until the server answers. A start the door causes costs a slot of
//! `limits.gpu_work_per_minute`, as an MCP launch does.

use crate::Gateway;
use crate::resolve::BringUp;
use crate::swap::Shortage;
use std::time::Duration;
use vllm_core::models::{ModelRecord, ModelStatus};
use vllm_core::{Error, Result};
use vllm_fleet::launcher::supervisor::LaunchRequest;
use vllm_fleet::lifecycle::load_failure;
use vllm_fleet::power::{self, Served};

/// How often a start is looked at while a request waits for it (the launcher's own
/// wait looks four times a second).
pub const SETTLE_POLL: Duration = Duration::from_millis(20);

impl Gateway {
    /// Brings `owner` up and waits until it serves (or fails).
    pub(crate) async fn bring_up(&self, owner: &str, how: BringUp) -> Result<()> {
        let timeout = Duration::from_secs_f64(self.config.gateway.load_timeout_seconds);
        match how {
            BringUp::Launch(req) => {
                self.until_stopped(owner, timeout).await?;
                self.take_gpu_work_slot().await?;
                self.launch_making_room(&req).await?;
                self.note_in_log(owner).await;
            }
            BringUp::Wake(r) => {
                self.room_to_wake(&r).await?;
                let client = self
                    .launcher
                    .client_for(&r)
                    .ok_or_else(|| Error::Internal(format!("`{owner}` has no server to wake")))?;
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
        let r = self
            .launcher
            .wait_settled_every(owner, timeout, SETTLE_POLL, |_| {})
            .await?;
        settled(&r, timeout)
    }

    /// Waits while `owner` is being stopped (the idle reaper, an unload): it is launched
    /// again once it is down.
    async fn until_stopped(&self, owner: &str, timeout: Duration) -> Result<()> {
        let started = tokio::time::Instant::now();
        while let Some(r) = self.launcher.get(owner).await?
            && r.status == ModelStatus::Stopping
        {
            if started.elapsed() >= timeout {
                return Err(Error::BackendTimeout {
                    url: format!("the stop of `{owner}`"),
                    after: timeout,
                });
            }
            tokio::time::sleep(SETTLE_POLL * 5).await;
        }
        Ok(())
    }

    /// A slot of `limits.gpu_work_per_minute` for a launch the door causes, shared with
    /// the MCP tools; `RATE_LIMITED` saying when one frees.
    pub(crate) async fn take_gpu_work_slot(&self) -> Result<()> {
        let limit = self.config.limits.gpu_work_per_minute;
        if limit == 0 {
            return Ok(());
        }
        self.launcher
            .on_store(move |s| vllm_core::gpu_work::take_slot(s, "front-door", limit))
            .await
    }

    /// Before a wake: `limits.gpu_memory_budget_mb` must hold the model again (a sleeping
    /// model counts for none); others are swapped out until it does, while one may go.
    async fn room_to_wake(&self, r: &ModelRecord) -> Result<()> {
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
            if !self.make_room(&r.model_id, Shortage::Memory).await? {
                return Err(Error::LimitExceeded {
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
    async fn launch_making_room(&self, req: &LaunchRequest) -> Result<()> {
        let mut checked = false;
        loop {
            let fleet = self.fleet();
            let refusal = match fleet.load(req, Duration::ZERO, |_| {}).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let Some(room) = Shortage::of(&refusal) else {
                return Err(refusal);
            };
            // Swap nothing out for a model that would not fit with every other gone.
            if !checked && !self.could_fit(req, &refusal).await? {
                return Err(refusal);
            }
            checked = true;
            if !self.make_room(&req.model_id, room).await? {
                return Err(refusal);
            }
        }
    }
}

/// A settled record as the start's result: loaded, or its classified failure.
fn settled(r: &ModelRecord, waited: Duration) -> Result<()> {
    match r.status {
        ModelStatus::Loaded => Ok(()),
        ModelStatus::Error => Err(load_failure(r)),
        // Still loading when the wait ran out: the waiters' timeout, not a failure.
        ModelStatus::Loading => Err(Error::BackendTimeout {
            url: format!("the start of `{}`", r.model_id),
            after: waited,
        }),
        other => Err(Error::Internal(format!(
            "`{}` is {} instead of loaded",
            r.model_id,
            other.as_str()
        ))),
    }
}
