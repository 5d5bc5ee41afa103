//! LoRA adapters on a served model at runtime: load and unload, and why a server refuses.
//!
//! vLLM serves adapters loaded at runtime when it was started with `--enable-lora` and
//! `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`; `/v1/models` then lists each adapter with its
//! base model as `parent` and its path as `root`. What the server refuses comes back as a
//! typed [`Refusal`], so each front end words the fix for its own users.

use vllm_core::vllm::{ModelCard, VllmClient};
use vllm_core::{Error, Result};

/// The ranks vLLM's `--max-lora-rank` takes.
const LORA_RANKS: [u64; 9] = [1, 8, 16, 32, 64, 128, 256, 320, 512];

/// Why a server would not load or unload an adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// It has no runtime LoRA routes (`VLLM_ALLOW_RUNTIME_LORA_UPDATING` is not set).
    NoRuntimeUpdates,
    /// It was started without `--enable-lora`.
    LoraDisabled,
    /// The name already names something else on this server: an adapter (of `parent`,
    /// from `root`) or, without a parent, a base model.
    NameTaken {
        parent: Option<String>,
        root: Option<String>,
    },
    /// The server found no adapter at the path (vLLM's message).
    NoAdapterAtPath { message: String },
    /// The adapter's rank is above the server's `--max-lora-rank`; `need` is the smallest
    /// rank vLLM accepts that fits, when the adapter's rank is known.
    RankTooHigh { need: Option<u64>, message: String },
    /// (unload) The name is a base model, not an adapter.
    NotAnAdapter,
}

/// What [`load`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// Loaded now; `listed`: `/v1/models` lists it under the model afterwards.
    Now {
        adapters: Vec<String>,
        listed: bool,
    },
    /// Already served from this path under this model: nothing was changed.
    Already {
        adapters: Vec<String>,
    },
    Refused(Refusal),
}

/// What [`unload`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Unloaded {
    /// Unloaded; `path` it was served from, `still_listed` if `/v1/models` still shows it.
    Now {
        adapters: Vec<String>,
        path: Option<String>,
        still_listed: bool,
    },
    Refused(Refusal),
}

/// Loads adapter `name` from `path` onto `model_id`'s server. `rank` (read from the
/// adapter's config where its files are visible) sizes the fix for a rank refusal.
pub async fn load(
    client: &VllmClient,
    model_id: &str,
    name: &str,
    path: &str,
    rank: Option<u64>,
) -> Result<Loaded> {
    let cards = client.models_fresh().await?;
    if let Some(card) = cards.iter().find(|c| c.id == name) {
        let same = card.parent.as_deref() == Some(model_id)
            && card.root.as_deref().is_some_and(|r| same_path(r, path));
        return Ok(if same {
            Loaded::Already {
                adapters: adapters_of(&cards, model_id),
            }
        } else {
            Loaded::Refused(Refusal::NameTaken {
                parent: card.parent.clone(),
                root: card.root.clone(),
            })
        });
    }
    if let Err(e) = client.load_lora_adapter(name, path).await {
        return refusal_of(e, rank).map(Loaded::Refused);
    }
    let adapters = adapters_of(&client.models_fresh().await?, model_id);
    Ok(Loaded::Now {
        listed: adapters.iter().any(|a| a == name),
        adapters,
    })
}

/// Unloads adapter `name` from `model_id`'s server; `MODEL_NOT_FOUND` when it does not
/// serve one of that name.
pub async fn unload(client: &VllmClient, model_id: &str, name: &str) -> Result<Unloaded> {
    let cards = client.models_fresh().await?;
    let card = cards
        .iter()
        .find(|c| c.id == name)
        .ok_or_else(|| Error::ModelNotFound(name.to_string()))?;
    if card.parent.is_none() {
        return Ok(Unloaded::Refused(Refusal::NotAnAdapter));
    }
    let path = card.root.clone();
    match client.unload_lora_adapter(name).await {
        Err(e) if crate::power::route_missing(&e) => {
            return Ok(Unloaded::Refused(Refusal::NoRuntimeUpdates));
        }
        Err(Error::BackendError { status: 404, .. }) => {
            return Err(Error::ModelNotFound(name.to_string()));
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let cards = client.models_fresh().await?;
    Ok(Unloaded::Now {
        adapters: adapters_of(&cards, model_id),
        path,
        still_listed: cards.iter().any(|c| c.id == name),
    })
}

/// A load's failure as a refusal, or the error itself when vLLM failed otherwise.
fn refusal_of(e: Error, rank: Option<u64>) -> Result<Refusal> {
    if crate::power::route_missing(&e) {
        return Ok(Refusal::NoRuntimeUpdates);
    }
    let Error::BackendError {
        status, message, ..
    } = &e
    else {
        return Err(e);
    };
    if message.contains("LoRA is not enabled") || message.contains("--enable-lora") {
        return Ok(Refusal::LoraDisabled);
    }
    if *status == 404 && message.contains("No adapter found") {
        return Ok(Refusal::NoAdapterAtPath {
            message: message.clone(),
        });
    }
    if message.contains("max_lora_rank") {
        let need = rank.and_then(|r| LORA_RANKS.into_iter().find(|&v| v >= r));
        return Ok(Refusal::RankTooHigh {
            need,
            message: message.clone(),
        });
    }
    Err(e)
}

/// Adapters served with `parent` = the model.
pub fn adapters_of(cards: &[ModelCard], model_id: &str) -> Vec<String> {
    cards
        .iter()
        .filter(|c| c.parent.as_deref() == Some(model_id))
        .map(|c| c.id.clone())
        .collect()
}

fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}
