//! `save-state`: the session resolved, then `vllm_fleet::snapshot` gathers and writes.

use crate::StatePersistence;
use crate::common::{blocking, no_crush_note, release_memory, resolve_session, round2, yes};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use vllm_core::Result;
use vllm_core::crush_db::{self, CrushDb};
use vllm_core::states::{self};
use vllm_fleet::snapshot::{self, Snapshot};
use vllm_mcp_kit::{CallCtx, ToolDef, Toolbox};

/// Registers `save-state`.
pub fn register(t: &mut Toolbox<StatePersistence>) {
    t.add(
        ToolDef {
            ..ToolDef::control(
                "save-state",
                "Save the serving state: every launched model (source, launch arguments, GPUs, sampling defaults, vLLM \
                 version) and the Crush session's conversation with its sub-agent sessions. session_id `current` means \
                 Crush's most recently updated session. Answers state_id, size_bytes and timestamp.",
            )
        },
        |s: Arc<StatePersistence>, p: SaveParams, _ctx: CallCtx| async move { save(&s, p).await },
    );
}

/// save-state's arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveParams {
    /// A label for the state: a Crush session id (its conversation is saved with it), or `current` for
    /// Crush's most recently updated session. Letters, digits and `._-:`, at most 128 characters.
    pub session_id: String,
    /// Save every launched model: source, launch arguments, GPUs, sampling defaults (default true).
    #[serde(default = "yes")]
    pub include_models: bool,
    /// Save the Crush session's conversation and its sub-agent sessions (default true).
    #[serde(default = "yes")]
    pub include_conversations: bool,
    /// Save the performance monitor's samples of the last hour, per endpoint and model (at most
    /// 5,000, the newest; default false). Null with a note when the monitor has never sampled.
    #[serde(default)]
    pub include_metrics: bool,
    /// zstd-compress the payload (default true).
    #[serde(default = "yes")]
    pub compression: bool,
}

/// save-state's answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SaveAnswer {
    /// The session saved: `current` resolved to Crush's session id.
    pub session_id: String,
    pub state_id: String,
    /// Bytes stored (compressed frames).
    pub size_bytes: u64,
    /// Bytes before compression.
    pub raw_bytes: u64,
    pub compression_ratio: f64,
    /// When the state was saved, RFC 3339 UTC.
    pub timestamp: String,
    /// Models saved.
    pub models: u64,
    /// Monitor samples saved (include_metrics): those of the last hour, 5,000 at most; null when
    /// metrics were not asked for or the monitor has never sampled.
    pub metric_samples: Option<u64>,
    /// Crush sessions saved (the session and its sub-agent sessions).
    pub conversations: u64,
    pub messages: u64,
    /// vLLM versions of the servers saved (from their /version).
    pub vllm_versions: Vec<String>,
    pub format_version: u16,
    /// Crush's database the conversation came from; null when none was found.
    pub conversation_source: Option<String>,
    /// Older states of the session deleted by the retention policy.
    pub pruned_states: Vec<String>,
    pub notes: Vec<String>,
}

async fn save(s: &StatePersistence, p: SaveParams) -> Result<SaveAnswer> {
    states::validate_session_id("session_id", &p.session_id)?;
    let store = s.kit.store()?.clone();
    let mut notes = Vec::new();
    // The conversation first: `current` decides the session id.
    let crush_path = crush_db::locate(s.kit.config.crush.db_path.as_deref());
    let (session_id, conversation) = conversation_to_save(s, &p).await?;
    if crush_path.is_none() {
        notes.push(no_crush_note(s));
    } else if p.include_conversations && conversation.is_none() {
        notes.push(format!(
            "Crush's database has no session `{session_id}`: no conversation saved"
        ));
    }
    let now = vllm_core::time::unix_now();
    let metrics = if p.include_metrics {
        let store = store.clone();
        let recent = blocking(move || snapshot::recent_metrics(&store, now)).await?;
        notes.push(recent.note.clone());
        Some(recent)
    } else {
        None
    };
    let mut models = None;
    if p.include_models || p.include_metrics {
        let mut part = snapshot::models_part(s.launcher()?, p.include_models).await?;
        if let Some(recent) = &metrics {
            part.metrics = recent.saved.clone();
            part.metrics_note = Some(recent.note.clone());
        }
        models = Some(part);
    }
    if models.is_none() && conversation.is_none() {
        return Err(snapshot::nothing_to_save());
    }
    let metric_samples = metrics
        .as_ref()
        .and_then(|m| m.saved.as_ref().map(|s| s.samples));
    let snap = Snapshot {
        session_id: session_id.clone(),
        models,
        conversation: conversation.map(|db| (db, session_id)),
        metrics: metrics.map(|m| m.info),
        compress: p.compression,
        keep: s.kit.config.state.keep_per_session as usize,
    };
    let written = blocking(move || {
        let written = snapshot::write(&store, snap, now);
        release_memory();
        written
    })
    .await?;
    if !written.skipped.is_empty() {
        let skipped = written.skipped.join("; ");
        notes.push(format!("skipped while reading Crush's database: {skipped}"));
    }
    let meta = written.meta;
    Ok(SaveAnswer {
        session_id: meta.session_id.clone(),
        state_id: meta.state_id.clone(),
        size_bytes: meta.size_bytes(),
        raw_bytes: meta.raw_bytes(),
        compression_ratio: round2(meta.compression_ratio()),
        timestamp: meta.timestamp.clone(),
        models: meta.model_count,
        metric_samples,
        conversations: meta.session_count,
        messages: meta.message_count,
        vllm_versions: meta.vllm_versions.clone(),
        format_version: meta.format_version,
        conversation_source: crush_path.map(|p| p.display().to_string()),
        pruned_states: written.pruned,
        notes,
    })
}

/// The session a save is for (`current` resolved through Crush's database) and, when
/// its conversation is wanted and exists, the database to stream it from.
async fn conversation_to_save(
    s: &StatePersistence,
    p: &SaveParams,
) -> Result<(String, Option<CrushDb>)> {
    let label = p.session_id.clone();
    let want = p.include_conversations;
    let path = crush_db::locate(s.kit.config.crush.db_path.as_deref());
    blocking(move || {
        let Some(path) = path else {
            return Ok((label, None));
        };
        let db = CrushDb::open_read_only(&path)?;
        let id = resolve_session(Some(&db), &label)?;
        let db = (want && db.session_exists(&id)?).then_some(db);
        Ok((id, db))
    })
    .await
}
