//! `unload-model`: parameters → `lifecycle::Fleet::unload` → the answer, one model or a batch.

use crate::ModelManager;
use crate::batch::{Batch, batch, ids_of};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use vllm_core::Result;
use vllm_core::models::ModelStatus;
use vllm_fleet::lifecycle::UnloadReport;
use vllm_mcp_kit::{ToolDef, Toolbox};

/// Registers `unload-model`.
pub fn register(t: &mut Toolbox<ModelManager>) {
    t.add(
        ToolDef {
            raising_args: &["force"],
            destructive: true,
            idempotent: true,
            ..ToolDef::control(
                "unload-model",
                "Unload a model launched by this manager: stops its vLLM server (SIGTERM, grace period, then SIGKILL) \
                 and reports the memory freed. With requests running it waits for them, then refuses with MODEL_BUSY \
                 unless force is true.",
            )
        },
        |s: Arc<ModelManager>, p: UnloadParams, _| async move { unload_model(&s, p).await },
    );
}

/// The answer of `unload-model` for one model.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UnloadAnswer {
    pub model_id: String,
    /// `unloaded`.
    pub status: ModelStatus,
    /// Memory given back, measured (GPU memory via NVML, else the processes' resident
    /// memory), MiB; null for an attached server whose processes are not visible here.
    pub memory_freed_mb: Option<u64>,
    /// It was running when asked (false: already unloaded, nothing to do).
    pub was_running: bool,
    /// It stopped on SIGTERM within the grace period (false: it had to be killed).
    pub terminated_gracefully: bool,
    pub seconds: f64,
    pub note: Option<String>,
}

async fn unload_model(s: &ModelManager, p: UnloadParams) -> Result<Batch<UnloadAnswer>> {
    let ids = ids_of(&p.model_id, &p.model_ids)?;
    let single = p.model_ids.is_none();
    batch(ids, single, |id| async move {
        unload_one(s, &id, p.force).await
    })
    .await
}

async fn unload_one(s: &ModelManager, model_id: &str, force: bool) -> Result<UnloadAnswer> {
    let seconds = |s: f64| (s * 1000.0).round() / 1000.0;
    match s.managed_fleet()?.unload(model_id, force).await? {
        UnloadReport::Stopped(out) => {
            if out.was_running {
                let event = json!({"event": "model_unloaded", "model_id": model_id,
                                   "memory_freed_mb": out.memory_freed_mb});
                s.kit.notifier.info("model-manager", event).await;
            }
            Ok(UnloadAnswer {
                model_id: model_id.to_string(),
                status: ModelStatus::Unloaded,
                memory_freed_mb: Some(out.memory_freed_mb),
                note: None,
                was_running: out.was_running,
                terminated_gracefully: out.terminated_gracefully,
                seconds: seconds(out.seconds),
            })
        }
        // A model on an endpoint we did not start cannot be stopped: sleeping frees
        // its accelerator memory instead.
        UnloadReport::PutToSleep {
            endpoint,
            was_running,
            seconds: took,
        } => Ok(UnloadAnswer {
            model_id: model_id.to_string(),
            status: ModelStatus::Sleeping,
            memory_freed_mb: None,
            was_running,
            terminated_gracefully: true,
            seconds: seconds(took),
            note: Some(format!(
                "`{model_id}` is served by {endpoint}, which vllm-mcp did not start: it was put to sleep (level 1) \
                 rather than stopped; wake-model brings it back. Its memory is not visible from here."
            )),
        }),
    }
}

/// Parameters of `unload-model`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnloadParams {
    /// The model to unload.
    pub model_id: Option<String>,
    /// Several models at once: one answer per model in `results`.
    pub model_ids: Option<Vec<String>>,
    /// Kill at once, even with requests running (default false: wait for them up to
    /// the grace period, then refuse with MODEL_BUSY).
    #[serde(default)]
    pub force: bool,
}
