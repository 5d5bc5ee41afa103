//! The fleet's inventory: every model it knows, each once, in [`Fleet::locate`]'s order of
//! precedence (launched, attached, catalog, cache), for a listing such as list-models or a
//! front door's `/v1/models`.

use crate::lifecycle::Fleet;
use vllm_core::config::CatalogEntry;
use vllm_core::models::{ModelRecord, ModelStatus};
use vllm_core::vllm::{ModelCard, VllmClient};
use vllm_core::{Result, model_files};

/// One model of the inventory.
#[derive(Debug, Clone)]
pub enum Entry<'a> {
    /// Launched by vllm-mcp, as observed now.
    Launched(Box<ModelRecord>),
    /// Served by an attached endpoint (`sleeping` when its server sleeps).
    Attached {
        endpoint: &'a VllmClient,
        card: ModelCard,
        status: ModelStatus,
    },
    /// A catalog alias not launched; its context window from its arguments or config.json.
    Catalog {
        alias: String,
        entry: &'a CatalogEntry,
        context_window: Option<u64>,
    },
    /// A model directory in the local Hugging Face cache, not launched.
    Cached {
        id: String,
        context_window: Option<u64>,
    },
}

impl Entry<'_> {
    /// The id a client asks for.
    pub fn id(&self) -> &str {
        match self {
            Entry::Launched(r) => &r.model_id,
            Entry::Attached { card, .. } => &card.id,
            Entry::Catalog { alias, .. } => alias,
            Entry::Cached { id, .. } => id,
        }
    }

    /// Its status now: a launched model's observed one, `unloaded` for what is not served.
    pub fn status(&self) -> ModelStatus {
        match self {
            Entry::Launched(r) => r.status,
            Entry::Attached { status, .. } => *status,
            Entry::Catalog { .. } | Entry::Cached { .. } => ModelStatus::Unloaded,
        }
    }
}

/// Every model the fleet knows, and the attached endpoints that did not answer.
#[derive(Debug, Clone, Default)]
pub struct Inventory<'a> {
    pub entries: Vec<Entry<'a>>,
    /// `name (CODE)` of each endpoint whose model list failed.
    pub unreachable: Vec<String>,
}

/// The inventory of `fleet`, launched models observed now (see [`Launcher::list_quick`]).
///
/// [`Launcher::list_quick`]: crate::launcher::supervisor::Launcher::list_quick
pub async fn inventory<'a>(fleet: &Fleet<'a>) -> Result<Inventory<'a>> {
    let launcher = fleet.launcher()?;
    let mut inv = Inventory::default();
    let mut seen = std::collections::HashSet::new();
    for r in launcher.list_quick().await? {
        seen.insert(r.model_id.clone());
        inv.entries.push(Entry::Launched(Box::new(r)));
    }
    for endpoint in fleet.endpoints {
        let cards = match endpoint.models().await {
            Ok(cards) => cards,
            Err(e) => {
                inv.unreachable
                    .push(format!("{} ({})", endpoint.name(), e.code()));
                continue;
            }
        };
        let status = attached_status(endpoint).await;
        for card in cards.into_iter().filter(|c| seen.insert(c.id.clone())) {
            inv.entries.push(Entry::Attached {
                endpoint,
                card,
                status,
            });
        }
    }
    for (alias, entry) in &fleet.config.catalog {
        if seen.insert(alias.clone()) {
            inv.entries.push(Entry::Catalog {
                alias: alias.clone(),
                entry,
                context_window: launcher.context_window(&entry.source, entry.args.max_model_len),
            });
        }
    }
    if let Some(cache) = launcher.hub_cache() {
        for id in model_files::cached_repo_ids(cache) {
            if seen.insert(id.clone()) {
                let context_window = launcher.context_window(&id, None);
                inv.entries.push(Entry::Cached { id, context_window });
            }
        }
    }
    Ok(inv)
}

/// An attached server's status: `sleeping` when it says so, else `loaded`.
pub async fn attached_status(endpoint: &VllmClient) -> ModelStatus {
    match endpoint.is_sleeping().await {
        Ok(true) => ModelStatus::Sleeping,
        _ => ModelStatus::Loaded,
    }
}
