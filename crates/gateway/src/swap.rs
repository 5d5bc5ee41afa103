//! Making room for a model the front door starts: when `limits.max_models`,
//! `limits.gpu_memory_budget_mb` or the GPUs' free memory refuse a start, the least
//! recently used model is swapped out (never a pinned one, never one being started or
//! waited for), after its requests in flight finish or `gateway.drain_timeout_seconds`
//! passes. With `swap = "sleep"`, a model swapped out for memory sleeps (level 1) instead,
//! so swapping it back is a wake.

use crate::Gateway;
use std::time::Duration;
use vllm_core::config::SwapMode;
use vllm_core::error::LoadFailure;
use vllm_core::models::{ModelRecord, ModelStatus};
use vllm_fleet::launcher::supervisor::LaunchRequest;
use vllm_fleet::power::{self, Served, SleepLevel};

/// What a refused start lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// A place under `limits.max_models`: only an unload gives one back.
    Places,
    /// Memory (the budget, or the GPUs' free memory): a sleep gives it back too.
    Memory,
}

impl Shortage {
    /// What `refusal` says is short, when it is a shortage.
    pub fn of(refusal: &vllm_core::Error) -> Option<Shortage> {
        match refusal {
            vllm_core::Error::LimitExceeded { limit, .. } if limit == "limits.max_models" => {
                Some(Shortage::Places)
            }
            vllm_core::Error::LimitExceeded { limit, .. }
                if limit == "limits.gpu_memory_budget_mb" =>
            {
                Some(Shortage::Memory)
            }
            vllm_core::Error::ModelLoadFailed {
                reason: LoadFailure::InsufficientGpuMemory,
                ..
            } => Some(Shortage::Memory),
            _ => None,
        }
    }
}

/// What a swap did to the model it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swapped {
    Unloaded,
    Slept,
}

impl Swapped {
    pub fn as_str(self) -> &'static str {
        match self {
            Swapped::Unloaded => "unload",
            Swapped::Slept => "sleep",
        }
    }
}

impl Gateway {
    /// Swaps out one model to make room for `for_model`, the least recently used first;
    /// `false` when none may go. A model whose server still runs requests from clients
    /// of its own after the drain (`MODEL_BUSY`) is passed over for the next.
    pub async fn make_room(&self, for_model: &str, short: Shortage) -> vllm_core::Result<bool> {
        let _one_at_a_time = self.swap_lock.lock().await;
        for victim in self.candidates(for_model, short).await? {
            match self.swap_one(&victim, for_model, short).await {
                Ok(()) => return Ok(true),
                Err(e @ vllm_core::Error::ModelBusy { .. }) => {
                    tracing::info!(model = %victim.model_id, error = %e, "busy: trying the next model to swap out");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Drains `victim` (new requests wait; those in flight finish, up to the drain
    /// timeout), then sleeps or unloads it.
    async fn swap_one(
        &self,
        victim: &ModelRecord,
        for_model: &str,
        short: Shortage,
    ) -> vllm_core::Result<()> {
        let id = victim.model_id.clone();
        tracing::info!(model = %id, for_model, "swapping out to make room");
        self.usage.set_draining(&id, true);
        self.routes.forget_owner(&id);
        let drain = Duration::from_secs_f64(self.config.gateway.drain_timeout_seconds);
        let drained = self
            .usage
            .wait_until(&id, drain, |u| u.in_flight == 0)
            .await;
        if !drained {
            tracing::warn!(model = %id, seconds = drain.as_secs_f64(), "drain timeout: stopping with requests in flight");
        }
        let result = self.swap_out(victim, short, !drained).await;
        self.usage.set_draining(&id, false);
        self.metrics.swapped(&id, result?);
        Ok(())
    }

    /// Whether `req` could fit at all with every model that may go swapped out: a model
    /// larger than the budget, than a GPU holds at its utilization, or than the GPUs'
    /// free memory and all that swaps could free, is refused at once rather than after
    /// emptying the fleet.
    pub async fn could_fit(
        &self,
        req: &LaunchRequest,
        refusal: &vllm_core::Error,
    ) -> vllm_core::Result<bool> {
        if Shortage::of(refusal) != Some(Shortage::Memory) {
            return Ok(true);
        }
        let (source, args) = self.launcher.resolve(req);
        let pre = self
            .launcher
            .preflight(&req.model_id, &source, &args, req.gpu_ids.as_deref())
            .await?;
        let need = pre
            .check
            .as_ref()
            .map(|c| c.required_mb)
            .or(pre.estimate.total_mb);
        let budget = self.config.limits.gpu_memory_budget_mb;
        if let (Some(n), Some(b)) = (need, budget)
            && n > b
            && !pre.gpu_ids.is_empty()
        {
            return Ok(false);
        }
        let util = args.gpu_memory_utilization.unwrap_or(0.9);
        let smallest = self
            .launcher
            .gpus()
            .snapshots()
            .unwrap_or_default()
            .into_iter()
            .filter(|g| pre.gpu_ids.contains(&g.index))
            .filter_map(|g| g.memory_total_mb)
            .min();
        if let (Some(per_gpu), Some(total)) = (pre.estimate.per_gpu_mb, smallest)
            && per_gpu as f64 > total as f64 * util
        {
            return Ok(false);
        }
        let freeable: u64 = self
            .candidates(&req.model_id, Shortage::Memory)
            .await?
            .iter()
            .filter_map(|r| r.memory_estimate_mb)
            .sum();
        Ok(match &pre.check {
            Some(c) if !c.fits => c.available_mb + freeable >= c.required_mb,
            _ => true,
        })
    }

    /// The models that may be swapped out for `for_model`, least recently used first.
    async fn candidates(
        &self,
        for_model: &str,
        short: Shortage,
    ) -> vllm_core::Result<Vec<ModelRecord>> {
        let starting: Vec<String> = {
            let starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
            let running = starts.iter().filter(|(_, rx)| rx.borrow().is_none());
            running.map(|(k, _)| k.clone()).collect()
        };
        let mut candidates: Vec<(f64, ModelRecord)> = Vec::new();
        let pins = self.launcher.on_store(vllm_core::door_use::pins).await?;
        for r in self.launcher.list().await? {
            let frees = match r.status {
                ModelStatus::Loaded => true,
                // A sleeping model holds a place but (at level 1) little memory.
                ModelStatus::Sleeping => short == Shortage::Places,
                _ => false,
            };
            let pinned = self.pinned(&r.model_id, &pins);
            let u = self.usage.get(&r.model_id);
            if !frees
                || pinned
                || r.model_id == for_model
                || u.waiting > 0
                || u.draining
                || starting.contains(&r.model_id)
            {
                continue;
            }
            let last = u.last_used.or(r.loaded_at).or(r.launched_at).unwrap_or(0.0);
            candidates.push((last, r));
        }
        candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(candidates.into_iter().map(|(_, r)| r).collect())
    }

    /// Sleeps or unloads `r` as its swap mode and the shortage allow.
    async fn swap_out(
        &self,
        r: &ModelRecord,
        short: Shortage,
        force: bool,
    ) -> vllm_core::Result<Swapped> {
        let mode = self
            .config
            .catalog
            .get(&r.model_id)
            .and_then(|e| e.swap)
            .unwrap_or(self.config.gateway.swap);
        let can_sleep = mode == SwapMode::Sleep
            && short == Shortage::Memory
            && r.status == ModelStatus::Loaded
            && power::has_arg(r, "--enable-sleep-mode")
            && self.host_holds(r);
        if can_sleep && let Some(client) = self.launcher.client_for(r) {
            let served = Served {
                model_id: &r.model_id,
                client: &client,
                record: Some(r),
            };
            let gpus = self.launcher.gpus();
            match power::sleep(
                Some(&self.launcher),
                gpus.as_ref(),
                served,
                SleepLevel::OffloadWeights,
            )
            .await
            {
                Ok(_) => return Ok(Swapped::Slept),
                Err(e) => {
                    tracing::warn!(model = %r.model_id, error = %e, "sleep failed: unloading instead")
                }
            }
        }
        self.fleet().unload(&r.model_id, force).await?;
        Ok(Swapped::Unloaded)
    }
}

impl Gateway {
    /// Whether the host has memory for `r`'s weights, which a level-1 sleep moves to CPU
    /// memory: their size on disk when the model is local, else the whole estimate.
    fn host_holds(&self, r: &ModelRecord) -> bool {
        let dir = vllm_core::model_files::resolve_dir(&r.source, self.launcher.hub_cache());
        let weights_mb = dir
            .as_deref()
            .and_then(vllm_core::model_files::weights_bytes)
            .map(|b| b / (1024 * 1024))
            .or(r.memory_estimate_mb)
            .unwrap_or(0);
        vllm_fleet::launcher::process::available_memory_mb() > weights_mb
    }
}

impl Gateway {
    /// Never swapped out: pinned in the catalog, or at run time (`pins`, the page's).
    pub fn pinned(&self, model_id: &str, pins: &[String]) -> bool {
        self.config.catalog.get(model_id).is_some_and(|e| e.pinned)
            || pins.iter().any(|p| p == model_id)
    }
}
