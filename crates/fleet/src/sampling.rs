//! Sampling defaults of a model (what `--override-generation-config` carries): where they
//! may be set, and setting them, relaunching a running server when asked.
//!
//! Defaults belong to models vllm-mcp launches: a launched model, a catalog alias or a
//! model directory in the cache. A model served by an attached endpoint is `UNSUPPORTED`
//! (its server is started elsewhere); anything else is `MODEL_NOT_FOUND`.

use crate::launcher::supervisor::{LaunchOutcome, LaunchRequest, Launcher};
use crate::lifecycle::Fleet;
use serde::Serialize;
use vllm_core::launch_args::SamplingDefaults;
use vllm_core::models::{self, ModelRecord, ModelStatus};
use vllm_core::{Error, Result, model_files};

/// A model whose defaults may be set: its record when it was launched, and the context
/// window a `max_tokens` must fit in (its `max_model_len`, else its `config.json`'s).
#[derive(Debug, Clone)]
pub struct SamplingTarget {
    pub model_id: String,
    pub record: Option<ModelRecord>,
    pub max_model_len: Option<u64>,
}

/// When new defaults take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TakesEffect {
    /// The running server was relaunched with them.
    Now,
    /// At the model's next launch.
    NextLaunch,
}

/// What [`set`] did.
#[derive(Debug, Clone)]
pub struct SamplingReport {
    /// Every default now in force (the stored ones with the new ones over them).
    pub merged: SamplingDefaults,
    pub takes_effect: TakesEffect,
    /// The model runs and keeps its old defaults until relaunched.
    pub running_unchanged: bool,
    /// The model's status after the call.
    pub status: ModelStatus,
}

/// Finds where `model_id`'s defaults may be set (see the module docs).
pub async fn target(fleet: &Fleet<'_>, model_id: &str) -> Result<SamplingTarget> {
    vllm_core::launch_args::validate_model_id("model_id", model_id)?;
    let launcher = fleet.launcher()?;
    let record = launcher.get(model_id).await?;
    let known = record.is_some()
        || fleet.config.catalog.contains_key(model_id)
        || model_files::resolve_dir(model_id, launcher.hub_cache()).is_some();
    if !known {
        for ep in fleet.endpoints {
            if let Ok(cards) = ep.models().await
                && cards.iter().any(|c| c.id == model_id)
            {
                return Err(Error::Unsupported {
                    what: format!(
                        "sampling defaults for `{model_id}`, served by an attached endpoint"
                    ),
                    suggestion:
                        "Sampling defaults apply when vllm-mcp launches the model; set them \
                                 with --override-generation-config where that server is started."
                            .into(),
                });
            }
        }
        return Err(Error::ModelNotFound(model_id.to_string()));
    }
    let max_model_len = match &record {
        Some(r) => launcher.context_window(&r.source, r.args.max_model_len),
        None => launcher.context_window(model_id, None),
    };
    Ok(SamplingTarget {
        model_id: model_id.to_string(),
        record,
        max_model_len,
    })
}

/// Stores `given` over the model's defaults and, with `restart`, relaunches a running
/// server with its launch arguments so they apply now (it is then loading).
pub async fn set(
    fleet: &Fleet<'_>,
    t: SamplingTarget,
    given: SamplingDefaults,
    restart: bool,
) -> Result<SamplingReport> {
    if given.is_empty() {
        return Err(Error::invalid(
            "config",
            "give at least one sampling default to set",
        ));
    }
    let launcher = fleet.launcher()?;
    let id = t.model_id.clone();
    let merged = launcher
        .on_store(move |st| {
            let mut merged = models::sampling(st, &id)?;
            merged.extend(given);
            models::set_sampling(st, &id, &merged)?;
            Ok(merged)
        })
        .await?;
    let status = t
        .record
        .as_ref()
        .map_or(ModelStatus::Unloaded, |r| r.status);
    let running = t.record.as_ref().is_some_and(|r| r.status.is_active());
    let report = |takes_effect, running_unchanged, status| SamplingReport {
        merged: merged.clone(),
        takes_effect,
        running_unchanged,
        status,
    };
    match t.record {
        Some(r) if restart && running => {
            let status = relaunch(launcher, &r).await?;
            Ok(report(TakesEffect::Now, false, status))
        }
        _ => Ok(report(TakesEffect::NextLaunch, running, status)),
    }
}

/// Stops `r`'s server and launches it again with the same arguments; its status after.
async fn relaunch(launcher: &Launcher, r: &ModelRecord) -> Result<ModelStatus> {
    let req = LaunchRequest {
        force: true,
        replace: true,
        ..LaunchRequest::again(r)
    };
    launcher.stop(&r.model_id, false).await?;
    Ok(match launcher.launch(&req).await? {
        LaunchOutcome::Started { record, .. }
        | LaunchOutcome::AlreadyRunning { record }
        | LaunchOutcome::Differs { record, .. }
        | LaunchOutcome::Queued { record, .. } => record.status,
        LaunchOutcome::DryRun { .. } => ModelStatus::Unloaded,
    })
}
