//! `list-models`: launched models with their status, attached endpoints' models, catalog
//! aliases and the local cache, paged.

use crate::ModelManager;
use crate::info::attached_status;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use vllm_core::models::{ModelStatus, RecordedError, display_name};
use vllm_core::{Result, estimate, model_files, models};
use vllm_fleet::lifecycle::Origin;
use vllm_mcp_kit::page::{Page, PageParams, paginate};
use vllm_mcp_kit::{ToolDef, Toolbox};

/// Registers `list-models`.
pub fn register(t: &mut Toolbox<ModelManager>) {
    t.add(
        ToolDef::read(
            "list-models",
            "List models: those launched by this manager (with status loading, loaded, error or unloaded and why), \
             models served by attached vLLM endpoints, catalog aliases and models in the local Hugging Face cache. \
             Paged: pass next_cursor as cursor for more.",
        ),
        |s: Arc<ModelManager>, p: ListParams, _| async move { list_models(&s, p).await },
    );
}

/// One model in `list-models`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ModelSummary {
    /// The model id (the served name for loaded models).
    pub id: String,
    /// A human-readable name.
    pub name: String,
    /// `loaded`, `loading`, `unloaded`, `error`, `stopping` or `sleeping`.
    pub status: ModelStatus,
    /// `launched` (by this manager), `attached` (an endpoint we did not start),
    /// `catalog` (a configured alias) or `cache` (the local Hugging Face cache).
    pub origin: Origin,
    /// What vLLM loads (repo id or directory).
    pub source: Option<String>,
    /// Memory the serving processes use now, MiB (0 when not loaded; null when unknown).
    pub memory_usage_mb: Option<u64>,
    /// Context window in tokens.
    pub context_window: Option<u64>,
    /// Most tokens one answer may have: the sampling default when set, else the context window.
    pub max_tokens: Option<u64>,
    pub tensor_parallel_size: u32,
    pub pipeline_parallel_size: u32,
    /// Where the model is served (OpenAI-compatible API under `/v1`).
    pub base_url: Option<String>,
    /// The attached endpoint's name, for `attached` models.
    pub endpoint: Option<String>,
    /// Why the model is in `error`.
    pub error: Option<RecordedError>,
}

/// The answer of `list-models`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListAnswer {
    pub models: Vec<ModelSummary>,
    /// Models in the whole list (all pages).
    pub total: usize,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
    /// Attached endpoints that did not answer (their models are missing from the list).
    pub unreachable_endpoints: Vec<String>,
}

async fn list_models(s: &ModelManager, p: ListParams) -> Result<ListAnswer> {
    let launcher = s.launcher()?;
    let mut all = Vec::new();
    let mut seen = HashSet::new();
    let groups = vllm_fleet::launcher::process::groups_recent(
        vllm_fleet::launcher::process::FIGURES_MAX_AGE,
    );
    let sampling = launcher.on_store(models::all_sampling).await?;
    for r in launcher.list_quick().await? {
        seen.insert(r.model_id.clone());
        all.push(s.summary_of_record(&r, &groups, &sampling));
    }
    let mut unreachable = Vec::new();
    for ep in &s.kit.endpoints {
        match ep.models().await {
            Ok(cards) => {
                let status = attached_status(ep).await;
                for c in cards {
                    if !seen.insert(c.id.clone()) {
                        continue;
                    }
                    all.push(ModelSummary {
                        name: display_name(&c.id),
                        status,
                        origin: Origin::Attached,
                        source: c.root.clone(),
                        memory_usage_mb: None,
                        context_window: c.max_model_len,
                        max_tokens: c.max_model_len,
                        tensor_parallel_size: 1,
                        pipeline_parallel_size: 1,
                        base_url: Some(ep.base_url().to_string()),
                        endpoint: Some(ep.name().to_string()),
                        error: None,
                        id: c.id,
                    });
                }
            }
            Err(e) => unreachable.push(format!("{} ({})", ep.name(), e.code())),
        }
    }
    for (alias, entry) in &s.kit.config.catalog {
        if !seen.insert(alias.clone()) {
            continue;
        }
        let window = entry.args.max_model_len.or_else(|| {
            launcher
                .config_json(&entry.source)
                .as_ref()
                .and_then(estimate::model_max_len)
        });
        all.push(ModelSummary {
            id: alias.clone(),
            name: entry
                .name
                .clone()
                .unwrap_or_else(|| display_name(&entry.source)),
            status: ModelStatus::Unloaded,
            origin: Origin::Catalog,
            source: Some(entry.source.clone()),
            memory_usage_mb: Some(0),
            context_window: window,
            max_tokens: window,
            tensor_parallel_size: entry.args.tensor_parallel_size.unwrap_or(1),
            pipeline_parallel_size: entry.args.pipeline_parallel_size.unwrap_or(1),
            base_url: None,
            endpoint: None,
            error: None,
        });
    }
    if let Some(cache) = launcher.hub_cache() {
        for id in model_files::cached_repo_ids(cache) {
            if !seen.insert(id.clone()) {
                continue;
            }
            let window = launcher
                .config_json(&id)
                .as_ref()
                .and_then(estimate::model_max_len);
            all.push(ModelSummary {
                name: display_name(&id),
                status: ModelStatus::Unloaded,
                origin: Origin::Cache,
                source: Some(id.clone()),
                memory_usage_mb: Some(0),
                context_window: window,
                max_tokens: window,
                tensor_parallel_size: 1,
                pipeline_parallel_size: 1,
                base_url: None,
                endpoint: None,
                error: None,
                id,
            });
        }
    }
    if let Some(st) = &p.status {
        all.retain(|m| m.status == *st);
    }
    let Page {
        items,
        total,
        next_cursor,
    } = paginate(all, &p.page, &s.kit.config.limits, "models")?;
    Ok(ListAnswer {
        models: items,
        total,
        next_cursor,
        unreachable_endpoints: unreachable,
    })
}

/// Parameters of `list-models`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only models with this status.
    pub status: Option<vllm_core::models::ModelStatus>,
    #[serde(flatten)]
    pub page: PageParams,
}
