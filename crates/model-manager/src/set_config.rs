//! `set-model-config`: sampling defaults, applied at the next launch or at once.

use crate::ModelManager;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use vllm_core::models::ModelStatus;
use vllm_core::{Error, Result, estimate, model_files, models};
use vllm_fleet::launcher::supervisor::{LaunchOutcome, LaunchRequest};
use vllm_mcp_kit::{ToolDef, Toolbox};

/// Registers `set-model-config`.
pub fn register(t: &mut Toolbox<ModelManager>) {
    t.add(
        ToolDef {
            idempotent: true,
            ..ToolDef::control(
                "set-model-config",
                "Set a model's sampling defaults (max_tokens, temperature, top_p, top_k, repetition_penalty, ...) used \
                 for requests that do not set them. They apply at the next launch; restart: true relaunches a loaded \
                 model now. The answer says when they take effect.",
            )
        },
        |s: Arc<ModelManager>, p: SetConfigParams, _| async move { set_model_config(&s, p).await },
    );
}

/// The answer of `set-model-config`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SetConfigAnswer {
    pub model_id: String,
    /// Every sampling default now in force for the model.
    pub updated_config: Map<String, Value>,
    /// `next_launch`, or `now` when the model was relaunched (restart: true).
    pub takes_effect: String,
    /// The model's status after the call.
    pub status: ModelStatus,
    pub note: String,
}

async fn set_model_config(s: &ModelManager, p: SetConfigParams) -> Result<SetConfigAnswer> {
    vllm_core::launch_args::validate_model_id("model_id", &p.model_id)?;
    // Ranges first: a bad value is wrong whatever the model; max_tokens is checked
    // against the context window below, once the model is known.
    p.config.validate(None)?;
    let launcher = s.launcher()?;
    let record = launcher.get(&p.model_id).await?;
    let known = record.is_some()
        || s.kit.config.catalog.contains_key(&p.model_id)
        || model_files::resolve_dir(&p.model_id, launcher.hub_cache()).is_some();
    if !known {
        for ep in &s.kit.endpoints {
            if let Ok(cards) = ep.models().await
                && cards.iter().any(|c| c.id == p.model_id)
            {
                return Err(Error::Unsupported {
                    what: format!(
                        "sampling defaults for `{}`, served by an attached endpoint",
                        p.model_id
                    ),
                    suggestion:
                        "Sampling defaults apply when vllm-mcp launches the model; set them with \
                                 --override-generation-config where that server is started."
                            .into(),
                });
            }
        }
        return Err(Error::ModelNotFound(p.model_id));
    }
    let max_len = record
        .as_ref()
        .and_then(|r| r.args.max_model_len)
        .or_else(|| {
            let source = record
                .as_ref()
                .map(|r| r.source.clone())
                .unwrap_or_else(|| p.model_id.clone());
            launcher
                .config_json(&source)
                .as_ref()
                .and_then(estimate::model_max_len)
        });
    p.config.validate(max_len)?;
    let given = p.config.to_map();
    if given.is_empty() {
        return Err(Error::invalid(
            "config",
            "give at least one sampling default to set",
        ));
    }
    let id = p.model_id.clone();
    let merged = launcher
        .on_store(move |st| {
            let mut merged = models::sampling(st, &id)?;
            merged.extend(given);
            models::set_sampling(st, &id, &merged)?;
            Ok(merged)
        })
        .await?;
    let running = record.as_ref().is_some_and(|r| r.status.is_active());
    let (takes_effect, status, note) = if p.restart && running {
        let r = record.expect("running implies a record");
        let req = LaunchRequest {
            model_id: r.model_id.clone(),
            source: Some(r.source.clone()),
            args: r.args.clone(),
            gpu_ids: (!r.gpu_ids.is_empty()).then(|| r.gpu_ids.clone()),
            force: true,
            replace: true,
            restart_policy: r.restart_policy.clone(),
            idle_ttl_seconds: r.idle_ttl_seconds,
            dry_run: false,
        };
        launcher.stop(&r.model_id, false).await?;
        let status = match launcher.launch(&req).await? {
            LaunchOutcome::Started { record, .. } => record.status,
            LaunchOutcome::AlreadyRunning { record }
            | LaunchOutcome::Differs { record, .. }
            | LaunchOutcome::Queued { record, .. } => record.status,
            LaunchOutcome::DryRun { .. } => ModelStatus::Unloaded,
        };
        (
            "now",
            status,
            "relaunched with the new defaults; it is loading (list-models shows when it is served)"
                .to_string(),
        )
    } else if running {
        (
            "next_launch",
            record.map(|r| r.status).unwrap_or(ModelStatus::Unloaded),
            "stored; the running server keeps its defaults until it is relaunched (restart: true does it now)".into(),
        )
    } else {
        (
            "next_launch",
            record.map(|r| r.status).unwrap_or(ModelStatus::Unloaded),
            "stored; applied when the model is next loaded".into(),
        )
    };
    Ok(SetConfigAnswer {
        model_id: p.model_id,
        updated_config: merged.into_iter().collect(),
        takes_effect: takes_effect.into(),
        status,
        note,
    })
}

/// Sampling defaults a model applies to requests that do not set them.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Default output length in tokens (at most the model's context window).
    pub max_tokens: Option<u64>,
    /// ≥ 0; 0 is greedy.
    pub temperature: Option<f64>,
    /// In (0, 1].
    pub top_p: Option<f64>,
    /// -1 (off) or ≥ 1.
    pub top_k: Option<i64>,
    /// In [0, 1].
    pub min_p: Option<f64>,
    /// > 0; 1 is off.
    pub repetition_penalty: Option<f64>,
    /// In [-2, 2].
    pub presence_penalty: Option<f64>,
    /// In [-2, 2].
    pub frequency_penalty: Option<f64>,
    /// Seed for reproducible sampling.
    pub seed: Option<i64>,
}

impl SamplingConfig {
    /// Checks vLLM's ranges; `max_len` is the model's context window when known.
    pub fn validate(&self, max_len: Option<u64>) -> vllm_core::Result<()> {
        use vllm_core::Error;
        let bad = |f: &str, r: String| Err(Error::invalid(format!("config.{f}"), r));
        if let Some(t) = self.temperature
            && !(t.is_finite() && t >= 0.0)
        {
            return bad("temperature", format!("{t} must be ≥ 0"));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad("top_p", format!("{p} must be in (0, 1]"));
        }
        if let Some(k) = self.top_k
            && !(k == -1 || k >= 1)
        {
            return bad("top_k", format!("{k} must be -1 (off) or ≥ 1"));
        }
        if let Some(m) = self.min_p
            && !(0.0..=1.0).contains(&m)
        {
            return bad("min_p", format!("{m} must be in [0, 1]"));
        }
        if let Some(r) = self.repetition_penalty
            && !(r.is_finite() && r > 0.0)
        {
            return bad("repetition_penalty", format!("{r} must be > 0"));
        }
        for (f, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(v) = v
                && !(-2.0..=2.0).contains(&v)
            {
                return bad(f, format!("{v} must be in [-2, 2]"));
            }
        }
        if let Some(m) = self.max_tokens {
            if m == 0 {
                return bad("max_tokens", "must be at least 1".into());
            }
            if let Some(len) = max_len
                && m > len
            {
                return bad(
                    "max_tokens",
                    format!("{m} is above the model's context window of {len}"),
                );
            }
        }
        Ok(())
    }

    /// The fields given, as stored sampling defaults.
    pub fn to_map(&self) -> BTreeMap<String, Value> {
        let v = serde_json::json!({
            "max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
            "top_k": self.top_k, "min_p": self.min_p, "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty, "frequency_penalty": self.frequency_penalty,
            "seed": self.seed,
        });
        v.as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Parameters of `set-model-config`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetConfigParams {
    /// The model.
    pub model_id: String,
    /// The sampling defaults to set; fields left out keep their current value.
    pub config: SamplingConfig,
    /// Relaunch a loaded model now so the defaults apply at once (default false: they
    /// apply at the next launch).
    #[serde(default)]
    pub restart: bool,
}
