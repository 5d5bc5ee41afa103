//! `set-model-config`: sampling defaults, applied at the next launch or at once.

use crate::ModelManager;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use vllm_core::Result;
use vllm_core::models::ModelStatus;
use vllm_fleet::sampling::{self, TakesEffect};
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
    pub takes_effect: TakesEffect,
    /// The model's status after the call.
    pub status: ModelStatus,
    pub note: String,
}

async fn set_model_config(s: &ModelManager, p: SetConfigParams) -> Result<SetConfigAnswer> {
    vllm_core::launch_args::validate_model_id("model_id", &p.model_id)?;
    // Ranges first: a bad value is wrong whatever the model; max_tokens is checked
    // against the context window once the model is known.
    p.config.validate(None)?;
    let fleet = s.managed_fleet()?;
    let target = sampling::target(&fleet, &p.model_id).await?;
    p.config.validate(target.max_model_len)?;
    let r = sampling::set(&fleet, target, p.config.to_map(), p.restart).await?;
    let note = match r.takes_effect {
        TakesEffect::Now => {
            "relaunched with the new defaults; it is loading (list-models shows when it is served)"
        }
        TakesEffect::NextLaunch if r.running_unchanged => {
            "stored; the running server keeps its defaults until it is relaunched (restart: true does it now)"
        }
        TakesEffect::NextLaunch => "stored; applied when the model is next loaded",
    };
    Ok(SetConfigAnswer {
        model_id: p.model_id,
        updated_config: r.merged.into_iter().collect(),
        takes_effect: r.takes_effect,
        status: r.status,
        note: note.into(),
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
