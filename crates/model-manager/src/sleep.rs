//! `sleep-model` and `wake-model`: vLLM's sleep mode, with the memory it gives back.

use crate::ModelManager;
use crate::target::{Target, endpoint_name, has_arg, record_status, resolve, route_missing};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vllm_core::models::{ModelRecord, ModelStatus};
use vllm_core::vllm::VllmClient;
use vllm_core::{Error, Result};
use vllm_fleet::launcher::process;
use vllm_mcp_kit::{ToolDef, Toolbox};

/// Registers `sleep-model` and `wake-model`.
pub fn register(t: &mut Toolbox<ModelManager>) {
    t.add(
        ToolDef {
            idempotent: true,
            ..ToolDef::control(
                "sleep-model",
                "Put a loaded model to sleep: its server stays up but frees its GPU memory (level 1 offloads the \
                 weights to CPU memory for a fast wake-model; level 2 discards them). Requests wait until \
                 wake-model. Works on attached endpoints too. Needs a server started with --enable-sleep-mode and \
                 VLLM_SERVER_DEV_MODE=1 (else UNSUPPORTED says what to set); on CPU it frees nothing.",
            )
        },
        |s: Arc<ModelManager>, p: SleepParams, _| async move { sleep_model(&s, p).await },
    );
    t.add(
        ToolDef {
            gpu_work: true,
            idempotent: true,
            ..ToolDef::control(
                "wake-model",
                "Wake a model put to sleep by sleep-model: reloads its memory and waits until it serves again \
                 (status loaded). A model that is awake is left as it is.",
            )
        },
        |s: Arc<ModelManager>, p: WakeParams, _| async move { wake_model(&s, p).await },
    );
}

/// Longest `wake-model` waits for `/is_sleeping` to turn false.
const WAKE_TIMEOUT: Duration = Duration::from_secs(120);

/// Parameters of `sleep-model`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepParams {
    /// The loaded model to put to sleep.
    pub model_id: String,
    /// 1 (default): weights offloaded to CPU memory, KV cache discarded; wake-model is
    /// fast. 2: weights and KV cache discarded; the weights must be reloaded after waking
    /// (only for weight updates).
    pub level: Option<u32>,
}

/// Parameters of `wake-model`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WakeParams {
    /// The sleeping model.
    pub model_id: String,
}

/// The answer of `sleep-model`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SleepAnswer {
    pub model_id: String,
    /// `sleeping`.
    pub status: ModelStatus,
    /// The sleep level asked (or, when it already slept, the level it sleeps at when known).
    pub level: u32,
    /// Memory given back, measured before and after (GPU memory via NVML, else the server
    /// processes' resident memory), MiB; null for an attached endpoint (its processes are
    /// not visible here).
    pub memory_freed_mb: Option<u64>,
    /// `nvml` or `rss`: where memory_freed_mb was measured.
    pub memory_source: Option<String>,
    /// It was already asleep: nothing was done.
    pub already_sleeping: bool,
    pub note: Option<String>,
}

/// The answer of `wake-model`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WakeAnswer {
    pub model_id: String,
    /// `loaded`.
    pub status: ModelStatus,
    /// Seconds until the server said it was awake.
    pub seconds: f64,
    /// It was asleep when asked (false: it was awake, nothing was done).
    pub was_sleeping: bool,
    pub note: Option<String>,
}

/// `UNSUPPORTED` for a server without the dev-mode sleep endpoints, saying what to set.
fn sleep_unsupported(t: &Target) -> Error {
    let what = format!(
        "sleep mode on `{}`: its server has no /sleep endpoint (VLLM_SERVER_DEV_MODE is not set)",
        t.model_id
    );
    let cpu = " On the CPU platform sleep mode frees nothing (vLLM refuses --enable-sleep-mode there): \
               unload-model frees the memory instead.";
    let suggestion = match &t.record {
        Some(r) => {
            let flag = if has_arg(r, "--enable-sleep-mode") {
                String::new()
            } else {
                ", extra_args [\"--enable-sleep-mode\"] on a GPU".to_string()
            };
            format!(
                "Add `VLLM_SERVER_DEV_MODE = \"1\"` under [launcher.env] in the config, then relaunch with \
                 load-model (replace: true{flag}).{cpu}"
            )
        }
        None => format!(
            "Restart the vLLM server of endpoint `{}` with --enable-sleep-mode and the environment variable \
             VLLM_SERVER_DEV_MODE=1.{cpu}",
            endpoint_name(t)
        ),
    };
    Error::Unsupported { what, suggestion }
}

/// Memory of a launched server's process group: (GPU MiB from NVML when it attributes
/// any, resident MiB).
fn measure(s: &ModelManager, r: &ModelRecord) -> Option<(Option<u64>, u64)> {
    let pid = r.pid?;
    let members = process::group_members(pid);
    let gpu = s
        .kit
        .gpus
        .snapshots()
        .ok()
        .map(|gpus| vllm_core::gpu::memory_used_by(&gpus, &members).unwrap_or(0));
    Some((gpu, process::group_rss_mb(pid)))
}

/// The level a server sleeps at, from `vllm:engine_sleep_state` (None when unknown).
async fn sleep_level(client: &VllmClient) -> Option<u32> {
    let text = client.metrics_text().await.ok()?;
    let (exp, _) = vllm_core::prom::parse_lenient(&text);
    let family = exp.family("vllm:engine_sleep_state")?;
    let on = |state: &str| {
        family
            .sum_where(|l| l.get("sleep_state") == Some(state))
            .is_some_and(|v| v > 0.0)
    };
    if on("discard_all") {
        Some(2)
    } else if on("weights_offloaded") {
        Some(1)
    } else {
        None
    }
}

async fn sleep_model(s: &ModelManager, p: SleepParams) -> Result<SleepAnswer> {
    let level = p.level.unwrap_or(1);
    if !(1..=2).contains(&level) {
        return Err(Error::invalid(
            "level",
            format!("{level} is not a sleep level: give 1 (offload weights) or 2 (discard them)"),
        ));
    }
    let t = resolve(
        s,
        &p.model_id,
        &[ModelStatus::Loaded, ModelStatus::Sleeping],
    )
    .await?;
    t.require_base("sleep-model")?;
    let asleep = match t.client.is_sleeping().await {
        Ok(b) => b,
        Err(e) if route_missing(&e) => return Err(sleep_unsupported(&t)),
        Err(e) => return Err(e),
    };
    if asleep {
        record_status(s, &t, ModelStatus::Sleeping).await?;
        return Ok(SleepAnswer {
            model_id: t.model_id.clone(),
            status: ModelStatus::Sleeping,
            level: sleep_level(&t.client).await.unwrap_or(level),
            memory_freed_mb: Some(0).filter(|_| t.record.is_some()),
            memory_source: None,
            already_sleeping: true,
            note: Some("it was already asleep: nothing was done (wake-model wakes it)".into()),
        });
    }
    let before = t.record.as_ref().and_then(|r| measure(s, r));
    t.client.sleep(level as u8).await.map_err(|e| {
        if route_missing(&e) {
            sleep_unsupported(&t)
        } else {
            e
        }
    })?;
    record_status(s, &t, ModelStatus::Sleeping).await?;
    // NVML may lag the free by a moment: look again briefly before calling it nothing.
    let mut after = t.record.as_ref().and_then(|r| measure(s, r));
    for _ in 0..5 {
        match (before, after) {
            (Some((Some(b), _)), Some((Some(a), _))) if b > 0 && a >= b => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                after = t.record.as_ref().and_then(|r| measure(s, r));
            }
            _ => break,
        }
    }
    let (freed, source) = match (before, after) {
        (Some((Some(b), _)), Some((Some(a), _))) if b > 0 => (Some(b.saturating_sub(a)), "nvml"),
        (Some((_, b)), Some((_, a))) => (Some(b.saturating_sub(a)), "rss"),
        _ => (None, ""),
    };
    let mut notes = Vec::new();
    if t.record.is_none() {
        notes.push(
            "memory freed is not measured for an attached endpoint (its processes are not visible here)"
                .to_string(),
        );
    } else if source == "rss" {
        notes.push(
            "no GPU memory is attributed to this server (CPU platform): sleep mode frees nothing there; \
             unload-model frees the memory"
                .to_string(),
        );
    } else if freed == Some(0) {
        let flag = t
            .record
            .as_ref()
            .is_some_and(|r| !has_arg(r, "--enable-sleep-mode"));
        notes.push(if flag {
            "no GPU memory was freed: the server was launched without --enable-sleep-mode"
                .to_string()
        } else {
            "no GPU memory was freed".to_string()
        });
    }
    if level == 2 {
        notes.push(
            "level 2 discarded the weights: after wake-model they must be reloaded before answers are \
             meaningful (use level 1 to pause a model you will use again)"
                .to_string(),
        );
    }
    s.kit
        .notifier
        .info(
            "model-manager",
            json!({"event": "model_sleeping", "model_id": t.model_id, "level": level, "memory_freed_mb": freed}),
        )
        .await;
    Ok(SleepAnswer {
        model_id: t.model_id,
        status: ModelStatus::Sleeping,
        level,
        memory_freed_mb: freed,
        memory_source: (!source.is_empty()).then(|| source.to_string()),
        already_sleeping: false,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

async fn wake_model(s: &ModelManager, p: WakeParams) -> Result<WakeAnswer> {
    let t = resolve(
        s,
        &p.model_id,
        &[ModelStatus::Loaded, ModelStatus::Sleeping],
    )
    .await?;
    t.require_base("wake-model")?;
    let started = Instant::now();
    let recorded_asleep = t
        .record
        .as_ref()
        .is_some_and(|r| r.status == ModelStatus::Sleeping);
    let asleep = match t.client.is_sleeping().await {
        Ok(b) => b,
        // Without the sleep endpoints a server cannot sleep: it is awake, unless our record
        // says otherwise (the server was relaunched with other settings by hand).
        Err(e) if route_missing(&e) && !recorded_asleep => false,
        Err(e) if route_missing(&e) => return Err(sleep_unsupported(&t)),
        Err(e) => return Err(e),
    };
    let mut note = None;
    if asleep {
        if sleep_level(&t.client).await == Some(2) {
            note = Some(
                "it slept at level 2, which discarded the weights: reload them before relying on its answers"
                    .to_string(),
            );
        }
        t.client.wake_up().await?;
        loop {
            if !t.client.is_sleeping().await? {
                break;
            }
            if started.elapsed() >= WAKE_TIMEOUT {
                return Err(Error::BackendTimeout {
                    url: format!("{}/is_sleeping", t.client.base_url()),
                    after: WAKE_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s.kit
            .notifier
            .info(
                "model-manager",
                json!({"event": "model_woken", "model_id": t.model_id}),
            )
            .await;
    } else {
        note = Some("it was awake: nothing was done".into());
    }
    record_status(s, &t, ModelStatus::Loaded).await?;
    Ok(WakeAnswer {
        model_id: t.model_id,
        status: ModelStatus::Loaded,
        seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        was_sleeping: asleep,
        note,
    })
}
