//! `GET /v1/models`: everything the front door can serve, before anything is loaded
//! (launched models, catalog aliases, attached servers' models, LoRA adapters loaded on
//! launched servers), in OpenAI's list shape with the fleet's status beside it.

use crate::Gateway;
use serde::Serialize;
use vllm_core::models::{ModelRecord, ModelStatus};
use vllm_fleet::inventory::{self, Entry};

/// One model of the listing: OpenAI's fields, then the fleet's.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: String,
    /// `loaded`, `loading`, `sleeping`, `unloaded`, `error`, ...: a request for an
    /// `unloaded` model starts it.
    pub status: &'static str,
    /// `launched`, `attached`, `adapter`, `catalog` or `cache`.
    pub origin: &'static str,
    /// For an adapter, its base model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub max_model_len: Option<u64>,
    /// Requests passed on now and waiting for a start, through this gateway.
    pub in_flight: u32,
    pub waiting: u32,
    /// The last request through this gateway, RFC 3339.
    pub last_used: Option<String>,
    /// Never swapped out to make room (the catalog's `pinned`, or pinned on the page).
    pub pinned: bool,
}

impl Gateway {
    /// Everything the gateway can serve, in the inventory's order, adapters after their
    /// base model.
    pub async fn listing(&self) -> vllm_core::Result<Vec<Listed>> {
        Ok(self.listing_and_records().await?.0)
    }

    /// [`Gateway::listing`], and the launched models' records it was made from (the
    /// page shows more of them), from one look at the fleet.
    pub async fn listing_and_records(&self) -> vllm_core::Result<(Vec<Listed>, Vec<ModelRecord>)> {
        let fleet = self.fleet();
        let inv = inventory::inventory(&fleet).await?;
        let pins = self.launcher.on_store(vllm_core::door_use::pins).await?;
        let mut out = Vec::new();
        let mut records = Vec::new();
        for entry in &inv.entries {
            if let Entry::Launched(r) = entry {
                records.push(ModelRecord::clone(r));
            }
            if matches!(entry, Entry::Cached { .. }) && !self.config.gateway.load_unknown {
                continue;
            }
            out.push(self.listed(entry));
            if let Entry::Launched(r) = entry
                && matches!(r.status, ModelStatus::Loaded | ModelStatus::Sleeping)
                && let Some(client) = self.launcher.client_for(r)
                && let Ok(cards) = client.models().await
            {
                for card in cards.into_iter().filter(|c| c.parent.is_some()) {
                    let mut a = self.blank(&card.id, r.status, "adapter");
                    a.parent = card.parent;
                    a.created = card.created.unwrap_or(a.created);
                    a.max_model_len = card.max_model_len;
                    out.push(a);
                }
            }
        }
        for l in &mut out {
            l.pinned = self.pinned(&l.id, &pins);
        }
        Ok((out, records))
    }

    fn listed(&self, entry: &Entry<'_>) -> Listed {
        let id = entry.id();
        match entry {
            Entry::Launched(r) => {
                let mut l = self.blank(id, r.status, "launched");
                l.created = r.launched_at.map_or(l.created, |t| t as i64);
                l.max_model_len = r
                    .args
                    .max_model_len
                    .or_else(|| self.launcher.context_window(&r.source, None));
                l
            }
            Entry::Attached { card, status, .. } => {
                let origin = if card.parent.is_some() {
                    "adapter"
                } else {
                    "attached"
                };
                let mut l = self.blank(id, *status, origin);
                l.parent = card.parent.clone();
                l.created = card.created.unwrap_or(l.created);
                l.owned_by = card.owned_by.clone().unwrap_or(l.owned_by);
                l.max_model_len = card.max_model_len;
                l
            }
            Entry::Catalog { context_window, .. } => {
                let mut l = self.blank(id, ModelStatus::Unloaded, "catalog");
                l.max_model_len = *context_window;
                l
            }
            Entry::Cached { context_window, .. } => {
                let mut l = self.blank(id, ModelStatus::Unloaded, "cache");
                l.max_model_len = *context_window;
                l
            }
        }
    }

    fn blank(&self, id: &str, status: ModelStatus, origin: &'static str) -> Listed {
        let u = self.usage.get(id);
        Listed {
            id: id.to_string(),
            object: "model",
            created: self.started_at,
            owned_by: "vllm-mcp".into(),
            status: status.as_str(),
            origin,
            parent: None,
            max_model_len: None,
            in_flight: u.in_flight,
            waiting: u.waiting,
            last_used: u
                .last_used
                .map(|t| vllm_core::time::format_rfc3339(t as i64)),
            // The catalog's; `listing_and_records` adds the pins set at run time.
            pinned: self.config.catalog.get(id).is_some_and(|e| e.pinned),
        }
    }
}
