//! The server a runtime tool (LoRA, sleep, wake, chat) acts on: [`resolve`] finds it and
//! [`Target`] says what it is.
//!
//! A model is found among the launched models (the store's records, observed now), then the
//! models served by attached endpoints, then (for `chat` only) the LoRA adapters served by
//! launched servers. Error choices, so a client can branch on them:
//! - an id known nowhere is `MODEL_NOT_FOUND`;
//! - a known model that is not serving now (loading, unloaded, error, stopping, or sleeping
//!   for `chat` and LoRA) is `INVALID_ARGUMENT` on `model_id`, the reason saying its status
//!   and the call that fixes it: the request is wrong for the model's state, the backend is
//!   not at fault (`UNSUPPORTED` is kept for what only a relaunch with other flags fixes);
//! - a server started without what the call needs (`--enable-lora` and
//!   `VLLM_ALLOW_RUNTIME_LORA_UPDATING`, `VLLM_SERVER_DEV_MODE`) is `UNSUPPORTED`, with the
//!   exact flags and `[launcher.env]` entries to set;
//! - anything else vLLM refuses is `BACKEND_ERROR` carrying vLLM's own message.

use crate::ModelManager;
use vllm_core::models::{ModelRecord, ModelStatus};
use vllm_core::vllm::VllmClient;
use vllm_core::{Error, Result};
use vllm_fleet::lifecycle::Located;
pub(crate) use vllm_fleet::power::has_arg;

// ---------------------------------------------------------------------------------------
// Parameters

// ---------------------------------------------------------------------------------------
// Answers

// ---------------------------------------------------------------------------------------
// Finding the server of a model

/// Where a model is served, found by [`resolve`].
pub(crate) struct Target {
    /// The id asked for (the served name).
    pub model_id: String,
    pub client: VllmClient,
    /// The launched record serving it (for an adapter: its base model's record).
    pub record: Option<ModelRecord>,
    /// The attached endpoint's name, for attached models.
    pub endpoint: Option<String>,
    /// For a LoRA adapter: its base model's served name.
    pub parent: Option<String>,
}

impl Target {
    /// Whether this host's filesystem is the server's: launched servers, and attached
    /// endpoints on loopback.
    pub(crate) fn is_local(&self) -> bool {
        self.record.is_some() || is_loopback_url(self.client.base_url())
    }

    /// An `INVALID_ARGUMENT` on `model_id` for a call that needs a base model.
    pub(crate) fn require_base(&self, tool: &str) -> Result<()> {
        match &self.parent {
            Some(parent) => Err(Error::invalid(
                "model_id",
                format!(
                    "`{}` is a LoRA adapter of `{parent}`: {tool} acts on the base model; give `{parent}`",
                    self.model_id
                ),
            )),
            None => Ok(()),
        }
    }
}

/// `http://127.0.0.1:8000` and friends.
pub(crate) fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(h) = authority.strip_prefix('[') {
        h.split(']').next().unwrap_or(h)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// What the status of a launched model means for a call that needs it serving.
pub(crate) fn not_serving(model_id: &str, status: ModelStatus) -> Error {
    let next = match status {
        ModelStatus::Loading => {
            "wait until list-models shows it loaded (load-model with wait_seconds waits)"
        }
        ModelStatus::Sleeping => "call wake-model first",
        ModelStatus::Stopping => "it is being unloaded; load it again with load-model",
        ModelStatus::Loaded => "call again",
        ModelStatus::Unloaded | ModelStatus::Error => "load it with load-model first",
    };
    Error::invalid(
        "model_id",
        format!(
            "model `{model_id}` is {}, not serving: {next}",
            status.as_str()
        ),
    )
}

/// Finds the server of `model_id` (in [`Fleet::locate`]'s order). A launched model
/// must have one of `statuses`. LoRA adapters served by launched servers are found too
/// (tools that need a base model then say "give the base model" rather than "not found").
pub(crate) async fn resolve(
    s: &ModelManager,
    model_id: &str,
    statuses: &[ModelStatus],
) -> Result<Target> {
    let fleet = s.fleet();
    let target = |client, record, endpoint, parent| Target {
        model_id: model_id.to_string(),
        client,
        record,
        endpoint,
        parent,
    };
    match fleet.locate(model_id, statuses).await? {
        Located::Launched(r) if statuses.contains(&r.status) => {
            let client = fleet
                .launcher
                .and_then(|l| l.client_for(&r))
                .ok_or_else(|| Error::Internal(format!("no address recorded for `{model_id}`")))?;
            Ok(target(client, Some(r), None, None))
        }
        Located::Launched(r) => Err(not_serving(model_id, r.status)),
        Located::Attached { endpoint, card } => {
            let name = Some(endpoint.name().to_string());
            Ok(target(endpoint, None, name, card.parent))
        }
        Located::Adapter { base, client, card } => {
            Ok(target(client, Some(base), None, card.parent))
        }
        Located::Catalog { .. } => Err(not_loaded(model_id, "a catalog alias")),
        Located::Cached { .. } => Err(not_loaded(model_id, "in the local model cache")),
    }
}

pub(crate) fn not_loaded(model_id: &str, origin: &str) -> Error {
    Error::invalid(
        "model_id",
        format!("model `{model_id}` is {origin} but not loaded: load it with load-model first"),
    )
}

/// Whether a launched record was started with this `[launcher.env]` entry / argument.
pub(crate) fn has_env(r: &ModelRecord, name: &str) -> bool {
    r.env_names.iter().any(|n| n == name)
}

pub(crate) fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

pub(crate) fn endpoint_name(t: &Target) -> String {
    t.endpoint
        .clone()
        .unwrap_or_else(|| t.client.base_url().to_string())
}

// ---------------------------------------------------------------------------------------
// LoRA

// ---------------------------------------------------------------------------------------
// Sleep mode

// ---------------------------------------------------------------------------------------
// Chat

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls() {
        for u in [
            "http://127.0.0.1:8000",
            "http://localhost:8000/v1",
            "https://[::1]:443",
            "http://127.0.0.2",
        ] {
            assert!(is_loopback_url(u), "{u}");
        }
        for u in [
            "http://10.0.0.1:8000",
            "https://vllm.example.com",
            "http://[fe80::1]:80",
        ] {
            assert!(!is_loopback_url(u), "{u}");
        }
    }
}
