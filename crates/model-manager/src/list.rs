//! `list-models`: launched models with their status, attached endpoints' models, catalog
//! aliases and the local cache, paged.

use crate::ModelManager;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use vllm_core::door_use::{self, DoorUse};
use vllm_core::launch_args::SamplingDefaults;
use vllm_core::models::{ModelStatus, RecordedError, display_name};
use vllm_core::{Result, models};
use vllm_fleet::inventory::{self, Entry};
use vllm_fleet::launcher::process;
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
    /// With the Ray backend: the address of the cluster node it runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The attached endpoint's name, for `attached` models.
    pub endpoint: Option<String>,
    /// Why the model is in `error`.
    pub error: Option<RecordedError>,
    /// Its use through the front door, when one serves and passed it requests: the
    /// door's URL, requests in flight and waiting, the last use.
    pub front_door: Option<DoorUse>,
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
    let fleet = s.managed_fleet()?;
    let groups = process::groups_recent(process::FIGURES_MAX_AGE);
    let sampling = s.launcher()?.on_store(models::all_sampling).await?;
    let inv = inventory::inventory(&fleet).await?;
    let mut doors: HashMap<String, DoorUse> = s
        .launcher()?
        .on_store(door_use::all)
        .await?
        .into_iter()
        .collect();
    let all: Vec<ModelSummary> = inv
        .entries
        .into_iter()
        .filter(|e| p.status.is_none_or(|st| e.status() == st))
        .map(|e| {
            let mut m = summary(s, e, &groups, &sampling);
            m.front_door = doors.remove(&m.id);
            m
        })
        .collect();
    let Page {
        items,
        total,
        next_cursor,
    } = paginate(all, &p.page, &s.kit.config.limits, "models")?;
    Ok(ListAnswer {
        models: items,
        total,
        next_cursor,
        unreachable_endpoints: inv.unreachable,
    })
}

/// One inventory entry as list-models shows it.
fn summary(
    s: &ModelManager,
    e: Entry<'_>,
    groups: &HashMap<u32, Vec<u32>>,
    sampling: &HashMap<String, SamplingDefaults>,
) -> ModelSummary {
    let unlaunched = |id: String, origin, source: &str, window, tp, pp| ModelSummary {
        id,
        name: display_name(source),
        status: ModelStatus::Unloaded,
        origin,
        source: Some(source.to_string()),
        memory_usage_mb: Some(0),
        context_window: window,
        max_tokens: window,
        tensor_parallel_size: tp,
        pipeline_parallel_size: pp,
        base_url: None,
        node: None,
        endpoint: None,
        error: None,
        front_door: None,
    };
    match e {
        Entry::Launched(r) => s.summary_of_record(&r, groups, sampling),
        Entry::Attached {
            endpoint,
            card,
            status,
        } => ModelSummary {
            name: display_name(&card.id),
            status,
            origin: Origin::Attached,
            source: card.root.clone(),
            memory_usage_mb: None,
            context_window: card.max_model_len,
            max_tokens: card.max_model_len,
            tensor_parallel_size: 1,
            pipeline_parallel_size: 1,
            base_url: Some(endpoint.base_url().to_string()),
            node: None,
            endpoint: Some(endpoint.name().to_string()),
            error: None,
            front_door: None,
            id: card.id,
        },
        Entry::Catalog {
            alias,
            entry,
            context_window,
        } => {
            let (tp, pp) = (
                entry.args.tensor_parallel_size,
                entry.args.pipeline_parallel_size,
            );
            let mut m = unlaunched(
                alias,
                Origin::Catalog,
                &entry.source,
                context_window,
                tp.unwrap_or(1),
                pp.unwrap_or(1),
            );
            if let Some(name) = &entry.name {
                m.name = name.clone();
            }
            m
        }
        Entry::Cached { id, context_window } => {
            let source = id.clone();
            unlaunched(id, Origin::Cache, &source, context_window, 1, 1)
        }
    }
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
