//! `sleep-model` and `wake-model`: vLLM's sleep mode, with the memory it gives back.

use crate::ModelManager;
use crate::target::{Target, endpoint_name, has_arg, resolve};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use vllm_core::models::ModelStatus;
use vllm_core::{Error, Result};
use vllm_fleet::power::{self, MemorySource, Served, SleepLevel, SleepReport};
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

/// `sleep_unsupported` in place of the core's `UNSUPPORTED`, which cannot name our tools.
fn worded(t: &Target) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Unsupported { .. } => sleep_unsupported(t),
        e => e,
    }
}

fn served(t: &Target) -> Served<'_> {
    Served {
        model_id: &t.model_id,
        client: &t.client,
        record: t.record.as_ref(),
    }
}

async fn sleep_model(s: &ModelManager, p: SleepParams) -> Result<SleepAnswer> {
    let level = SleepLevel::from_number(p.level.unwrap_or(1))?;
    let statuses = [ModelStatus::Loaded, ModelStatus::Sleeping];
    let t = resolve(s, &p.model_id, &statuses).await?;
    t.require_base("sleep-model")?;
    let launcher = s.launcher().ok();
    let r = power::sleep(launcher, s.kit.gpus.as_ref(), served(&t), level)
        .await
        .map_err(worded(&t))?;
    if !r.already_sleeping {
        let event = json!({"event": "model_sleeping", "model_id": t.model_id,
            "level": level.number(), "memory_freed_mb": r.memory_freed_mb});
        s.kit.notifier.info("model-manager", event).await;
    }
    Ok(SleepAnswer {
        note: sleep_note(&r, t.record.is_none()),
        model_id: t.model_id,
        status: ModelStatus::Sleeping,
        level: r.level.number(),
        memory_freed_mb: r.memory_freed_mb,
        memory_source: r.memory_source.map(|m| m.as_str().to_string()),
        already_sleeping: r.already_sleeping,
    })
}

/// What a person should know about a sleep: why nothing was freed, what level 2 means.
fn sleep_note(r: &SleepReport, attached: bool) -> Option<String> {
    if r.already_sleeping {
        return Some("it was already asleep: nothing was done (wake-model wakes it)".into());
    }
    let mut notes = Vec::new();
    if attached {
        notes.push(
            "memory freed is not measured for an attached endpoint (its processes are not visible here)",
        );
    } else if r.memory_source == Some(MemorySource::Rss) {
        notes.push(
            "no GPU memory is attributed to this server (CPU platform): sleep mode frees nothing there; \
             unload-model frees the memory",
        );
    } else if r.memory_freed_mb == Some(0) {
        notes.push(if r.without_sleep_flag {
            "no GPU memory was freed: the server was launched without --enable-sleep-mode"
        } else {
            "no GPU memory was freed"
        });
    }
    if r.level == SleepLevel::DiscardAll {
        notes.push(
            "level 2 discarded the weights: after wake-model they must be reloaded before answers are \
             meaningful (use level 1 to pause a model you will use again)",
        );
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

async fn wake_model(s: &ModelManager, p: WakeParams) -> Result<WakeAnswer> {
    let statuses = [ModelStatus::Loaded, ModelStatus::Sleeping];
    let t = resolve(s, &p.model_id, &statuses).await?;
    t.require_base("wake-model")?;
    let r = power::wake(s.launcher().ok(), served(&t), WAKE_TIMEOUT)
        .await
        .map_err(worded(&t))?;
    let note = if !r.was_sleeping {
        Some("it was awake: nothing was done".to_string())
    } else {
        let event = json!({"event": "model_woken", "model_id": t.model_id});
        s.kit.notifier.info("model-manager", event).await;
        (r.slept_at == Some(SleepLevel::DiscardAll)).then(|| {
            "it slept at level 2, which discarded the weights: reload them before relying on its answers"
                .to_string()
        })
    };
    Ok(WakeAnswer {
        model_id: t.model_id,
        status: ModelStatus::Loaded,
        seconds: r.seconds,
        was_sleeping: r.was_sleeping,
        note,
    })
}
