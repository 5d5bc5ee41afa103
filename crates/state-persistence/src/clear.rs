//! `clear-state`: removes states or their parts by session and age.

use crate::StatePersistence;
use crate::common::{LISTED_IDS_MAX, blocking, open_crush, resolve_session, yes};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use vllm_core::config::Tier;
use vllm_core::states::{self, PartKind, Selection};
use vllm_core::{Error, Result};
use vllm_mcp_kit::{CallCtx, ToolDef, Toolbox};

/// Registers `clear-state`.
pub fn register(t: &mut Toolbox<StatePersistence>) {
    t.add(
        ToolDef {
            tier: Tier::Destructive,
            read_only: false,
            destructive: true,
            idempotent: true,
            ..ToolDef::read(
                "clear-state",
                "Delete saved states selected by session_id and/or older_than_hours (all: true for every state). \
                 include_models / include_conversations choose which parts go; a state left empty is deleted. \
                 dry_run reports what would go. Answers cleared_items and space_freed_bytes (measured).",
            )
        },
        |s: Arc<StatePersistence>, p: ClearParams, _ctx: CallCtx| async move { clear(&s, p).await },
    );
}

/// clear-state's arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearParams {
    /// Only this session's states.
    pub session_id: Option<String>,
    /// Only states saved more than this many hours ago (0 to 1,000,000).
    pub older_than_hours: Option<f64>,
    /// Remove the models part (models, configurations, metrics) of matching states (default true).
    #[serde(default = "yes")]
    pub include_models: bool,
    /// Remove the conversations part of matching states (default true).
    #[serde(default = "yes")]
    pub include_conversations: bool,
    /// Required to clear every state when neither session_id nor older_than_hours is given.
    #[serde(default)]
    pub all: bool,
    /// Report what would be removed, remove nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// clear-state's answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ClearAnswer {
    /// States deleted or trimmed.
    pub cleared_items: u64,
    /// Measured on disk (database + WAL, after a checkpoint and incremental vacuum); on a dry run,
    /// the stored bytes that would go.
    pub space_freed_bytes: u64,
    pub dry_run: bool,
    pub states_deleted: u64,
    pub states_trimmed: u64,
    pub parts_removed: u64,
    /// Ids of the states deleted or trimmed (the first 100).
    pub state_ids: Vec<String>,
}

/// The largest `older_than_hours` (about 114 years).
const MAX_AGE_HOURS: f64 = 1_000_000.0;

async fn clear(s: &StatePersistence, p: ClearParams) -> Result<ClearAnswer> {
    if let Some(id) = &p.session_id {
        states::validate_session_id("session_id", id)?;
    }
    // More hours than since 1970 selects nothing and is a mistake, not a request.
    if let Some(h) = p.older_than_hours
        && !(h.is_finite() && (0.0..=MAX_AGE_HOURS).contains(&h))
    {
        return Err(Error::invalid(
            "older_than_hours",
            format!("{h} is not a number of hours between 0 and {MAX_AGE_HOURS}"),
        ));
    }
    if p.session_id.is_none() && p.older_than_hours.is_none() && !p.all {
        return Err(Error::invalid(
            "all",
            "give session_id and/or older_than_hours, or all: true to clear every saved state",
        ));
    }
    let mut parts = Vec::new();
    if p.include_models {
        parts.push(PartKind::Models);
    }
    if p.include_conversations {
        parts.push(PartKind::Conversations);
    }
    if parts.is_empty() {
        return Err(Error::invalid(
            "include_models",
            "include_models and include_conversations are both false: nothing would be cleared",
        ));
    }
    let crush = open_crush(s);
    let session = match &p.session_id {
        Some(label) => {
            let label = label.clone();
            Some(blocking(move || resolve_session(crush?.as_ref(), &label)).await?)
        }
        None => None,
    };
    let sel = Selection {
        session_id: session,
        before: p
            .older_than_hours
            .map(|h| vllm_core::time::unix_now() - h * 3600.0),
    };
    let store = s.kit.store()?.clone();
    let dry = p.dry_run;
    let r = blocking(move || states::clear(&store, &sel, &parts, dry)).await?;
    Ok(ClearAnswer {
        cleared_items: r.cleared_items,
        space_freed_bytes: r.space_freed_bytes,
        dry_run: p.dry_run,
        states_deleted: r.states_deleted.len() as u64,
        states_trimmed: r.states_trimmed.len() as u64,
        parts_removed: r.parts_removed,
        state_ids: r
            .states_deleted
            .iter()
            .chain(r.states_trimmed.iter())
            .take(LISTED_IDS_MAX)
            .cloned()
            .collect(),
    })
}
