//! Sleep and wake: vLLM's sleep mode on a served model, with the memory it gives back.
//!
//! A server started with `--enable-sleep-mode` and `VLLM_SERVER_DEV_MODE=1` has
//! `/sleep`, `/wake_up` and `/is_sleeping`; asleep, it keeps its process and port and
//! frees its GPU memory (level 1 offloads the weights to CPU memory, level 2 discards
//! them). Without those routes the server cannot sleep: [`sleep`] says `UNSUPPORTED`.
//! A launched model's record follows (`sleeping`, then `loaded`), by compare-and-set.

use crate::launcher::process;
use crate::launcher::supervisor::Launcher;
use std::time::{Duration, Instant};
use vllm_core::gpu::GpuSource;
use vllm_core::models::{self, ModelRecord, ModelStatus};
use vllm_core::vllm::VllmClient;
use vllm_core::{Error, Result};

/// The served model sleep and wake act on: its server, and our record when we launched it.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    pub model_id: &'a str,
    pub client: &'a VllmClient,
    pub record: Option<&'a ModelRecord>,
}

/// How deep a server sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepLevel {
    /// Weights offloaded to CPU memory, KV cache discarded: a wake is fast.
    OffloadWeights,
    /// Weights and KV cache discarded: they must be reloaded after the wake.
    DiscardAll,
}

impl SleepLevel {
    /// Level 1 or 2, as vLLM numbers them; anything else is `INVALID_ARGUMENT` on `level`.
    pub fn from_number(level: u32) -> Result<SleepLevel> {
        match level {
            1 => Ok(SleepLevel::OffloadWeights),
            2 => Ok(SleepLevel::DiscardAll),
            _ => Err(Error::invalid(
                "level",
                format!(
                    "{level} is not a sleep level: give 1 (offload weights) or 2 (discard them)"
                ),
            )),
        }
    }

    /// vLLM's number for it.
    pub fn number(self) -> u32 {
        match self {
            SleepLevel::OffloadWeights => 1,
            SleepLevel::DiscardAll => 2,
        }
    }
}

/// Where freed memory was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySource {
    /// GPU memory NVML attributes to the server's processes.
    Nvml,
    /// The processes' resident memory (no GPU memory attributed: the CPU platform).
    Rss,
}

impl MemorySource {
    /// `nvml` or `rss`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemorySource::Nvml => "nvml",
            MemorySource::Rss => "rss",
        }
    }
}

/// What [`sleep`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct SleepReport {
    /// The level asked, or the one it already sleeps at when known.
    pub level: SleepLevel,
    /// It was asleep already: nothing was done.
    pub already_sleeping: bool,
    /// Memory given back, MiB; `None` for a server we did not launch (its processes are
    /// not visible here).
    pub memory_freed_mb: Option<u64>,
    pub memory_source: Option<MemorySource>,
    /// A launched server started without `--enable-sleep-mode` (so it frees nothing).
    pub without_sleep_flag: bool,
}

/// What [`wake`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct WakeReport {
    /// Seconds until the server said it was awake.
    pub seconds: f64,
    /// It was asleep when asked (false: awake, nothing was done).
    pub was_sleeping: bool,
    /// The level it slept at, when known (level 2 discarded the weights).
    pub slept_at: Option<SleepLevel>,
}

/// `UNSUPPORTED`: the server has no sleep routes. Front ends word the fix for their users.
pub fn unsupported(model_id: &str) -> Error {
    Error::Unsupported {
        what: format!(
            "sleep mode on `{model_id}`: its server has no /sleep endpoint (VLLM_SERVER_DEV_MODE is not set)"
        ),
        suggestion: "Start the server with --enable-sleep-mode and the environment variable \
                     VLLM_SERVER_DEV_MODE=1 (on the CPU platform sleep mode frees nothing: unload \
                     the model instead)."
            .into(),
    }
}

/// A route the server does not have: FastAPI's `{"detail":"Not Found"}` (vLLM registers
/// the LoRA and sleep routes only when their switches are on).
pub fn route_missing(e: &Error) -> bool {
    matches!(e, Error::BackendError { status: 404, message, kind: None, .. } if message == "Not Found")
}

/// Whether a launched record was started with this argument.
pub fn has_arg(r: &ModelRecord, flag: &str) -> bool {
    crate::lifecycle::argv_has(&r.argv, flag)
}

/// Puts `m` to sleep at `level` and measures what it gave back (`gpus` for NVML's view).
pub async fn sleep(
    launcher: Option<&Launcher>,
    gpus: &dyn GpuSource,
    m: Served<'_>,
    level: SleepLevel,
) -> Result<SleepReport> {
    let asleep = m
        .client
        .is_sleeping()
        .await
        .map_err(|e| or_unsupported(e, m))?;
    let without_sleep_flag = m.record.is_some_and(|r| !has_arg(r, "--enable-sleep-mode"));
    if asleep {
        record_status(launcher, m.record, ModelStatus::Sleeping).await?;
        return Ok(SleepReport {
            level: sleep_level(m.client).await.unwrap_or(level),
            already_sleeping: true,
            memory_freed_mb: m.record.map(|_| 0),
            memory_source: None,
            without_sleep_flag,
        });
    }
    let before = m.record.and_then(|r| measure(gpus, r));
    let n = level.number() as u8;
    m.client.sleep(n).await.map_err(|e| or_unsupported(e, m))?;
    record_status(launcher, m.record, ModelStatus::Sleeping).await?;
    // NVML may lag the free by a moment: look again briefly before calling it nothing.
    let mut after = m.record.and_then(|r| measure(gpus, r));
    for _ in 0..5 {
        match (before, after) {
            (Some((Some(b), _)), Some((Some(a), _))) if b > 0 && a >= b => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                after = m.record.and_then(|r| measure(gpus, r));
            }
            _ => break,
        }
    }
    let (memory_freed_mb, memory_source) = match (before, after) {
        (Some((Some(b), _)), Some((Some(a), _))) if b > 0 => {
            (Some(b.saturating_sub(a)), Some(MemorySource::Nvml))
        }
        (Some((_, b)), Some((_, a))) => (Some(b.saturating_sub(a)), Some(MemorySource::Rss)),
        _ => (None, None),
    };
    Ok(SleepReport {
        level,
        already_sleeping: false,
        memory_freed_mb,
        memory_source,
        without_sleep_flag,
    })
}

/// Wakes `m` and waits until it says it is awake (at most `timeout`). A model that is
/// awake is left as it is.
pub async fn wake(
    launcher: Option<&Launcher>,
    m: Served<'_>,
    timeout: Duration,
) -> Result<WakeReport> {
    let started = Instant::now();
    let recorded_asleep = m.record.is_some_and(|r| r.status == ModelStatus::Sleeping);
    let asleep = match m.client.is_sleeping().await {
        Ok(b) => b,
        // Without the sleep routes a server cannot sleep: it is awake, unless our record
        // says otherwise (the server was relaunched with other settings by hand).
        Err(e) if route_missing(&e) && !recorded_asleep => false,
        Err(e) => return Err(or_unsupported(e, m)),
    };
    let mut slept_at = None;
    if asleep {
        slept_at = sleep_level(m.client).await;
        m.client.wake_up().await?;
        while m.client.is_sleeping().await? {
            if started.elapsed() >= timeout {
                return Err(Error::BackendTimeout {
                    url: format!("{}/is_sleeping", m.client.base_url()),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    record_status(launcher, m.record, ModelStatus::Loaded).await?;
    Ok(WakeReport {
        seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        was_sleeping: asleep,
        slept_at,
    })
}

fn or_unsupported(e: Error, m: Served<'_>) -> Error {
    if route_missing(&e) {
        unsupported(m.model_id)
    } else {
        e
    }
}

/// Records a launched model's new status (compare-and-set: a concurrent change wins).
pub async fn record_status(
    launcher: Option<&Launcher>,
    record: Option<&ModelRecord>,
    to: ModelStatus,
) -> Result<()> {
    let (Some(r), Some(l)) = (record, launcher) else {
        return Ok(());
    };
    if r.status != to {
        let (id, from, pid) = (r.model_id.clone(), r.status, r.pid);
        l.on_store(move |st| models::transition(st, &id, from, pid, to, None))
            .await?;
    }
    Ok(())
}

/// Memory of a launched server's process group: (GPU MiB from NVML when it attributes
/// any, resident MiB).
fn measure(gpus: &dyn GpuSource, r: &ModelRecord) -> Option<(Option<u64>, u64)> {
    let pid = r.pid?;
    let members = process::group_members(pid);
    let gpu = gpus
        .snapshots()
        .ok()
        .map(|g| vllm_core::gpu::memory_used_by(&g, &members).unwrap_or(0));
    Some((gpu, process::group_rss_mb(pid)))
}

/// The level a server sleeps at, from `vllm:engine_sleep_state` (None when unknown).
async fn sleep_level(client: &VllmClient) -> Option<SleepLevel> {
    let text = client.metrics_text().await.ok()?;
    let (exp, _) = vllm_core::prom::parse_lenient(&text);
    let family = exp.family("vllm:engine_sleep_state")?;
    let on = |state: &str| {
        family
            .sum_where(|l| l.get("sleep_state") == Some(state))
            .is_some_and(|v| v > 0.0)
    };
    if on("discard_all") {
        Some(SleepLevel::DiscardAll)
    } else if on("weights_offloaded") {
        Some(SleepLevel::OffloadWeights)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_routes_are_recognised() {
        let e = Error::BackendError {
            url: "u".into(),
            status: 404,
            message: "Not Found".into(),
            kind: None,
        };
        assert!(route_missing(&e));
        let e = Error::BackendError {
            url: "u".into(),
            status: 404,
            message: "The lora adapter 'x' cannot be found.".into(),
            kind: Some("NotFoundError".into()),
        };
        assert!(!route_missing(&e));
    }
}
