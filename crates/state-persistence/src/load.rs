//! `load-state`: the state read and checked whole, its models put back through
//! `vllm_fleet::restore`'s checked plan, its conversation made readable.

use crate::StatePersistence;
use crate::common::{blocking, no_crush_note, open_crush, release_memory, resolve_session, yes};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use vllm_core::crush_db::{self, Conversation, RestoreReport};
use vllm_core::states::{self, PartKind, StateMeta};
use vllm_core::{Error, Result};
use vllm_fleet::restore::{self, ModelAction};
use vllm_mcp_kit::{CallCtx, ToolDef, Toolbox};

/// Registers `load-state`.
pub fn register(t: &mut Toolbox<StatePersistence>) {
    t.add(
        ToolDef {
            gpu_work: true,
            raising_args: &["restore_to_crush", "replace_drifted"],
            ..ToolDef::control(
                "load-state",
                "Restore a saved state (the session's newest unless state_id is given): relaunch its models with their \
                 saved arguments (skipping those already running the same way, reporting drift), and make its \
                 conversation readable at vllm://state/session/{id}/conversation. restore_to_crush puts missing \
                 sessions back into Crush's database; replace_drifted relaunches models running with other arguments.",
            )
        },
        |s: Arc<StatePersistence>, p: LoadParams, _ctx: CallCtx| async move { load(&s, p).await },
    );
}

/// load-state's arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadParams {
    /// The session whose state to load (`current`: Crush's most recently updated session).
    pub session_id: String,
    /// A state of that session; default its newest.
    pub state_id: Option<String>,
    /// Relaunch the saved models with their saved arguments (default true).
    #[serde(default = "yes")]
    pub restore_models: bool,
    /// Make the saved conversation readable at vllm://state/session/{id}/conversation (default true).
    #[serde(default = "yes")]
    pub restore_conversations: bool,
    /// Also insert the saved sessions into Crush's database when missing there (never touches
    /// existing ones). Destructive tier.
    #[serde(default)]
    pub restore_to_crush: bool,
    /// Relaunch models running with arguments other than the saved ones. Destructive tier.
    #[serde(default)]
    pub replace_drifted: bool,
}

/// Counts of what load-state really restored.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Restored {
    /// Models launched (or queued to launch).
    pub models: u64,
    /// Crush sessions made readable.
    pub conversations: u64,
    /// Models whose sampling defaults were set back.
    pub configurations: u64,
}

/// load-state's answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LoadAnswer {
    pub session_id: String,
    pub state_id: String,
    pub restored: Restored,
    /// Monitor samples the state holds (saved with include_metrics); null when metrics were not
    /// asked for when it was saved.
    pub metric_samples: Option<u64>,
    /// Messages in the conversations made readable.
    pub messages: u64,
    /// When the state was saved, RFC 3339 UTC.
    pub timestamp: String,
    pub model_actions: Vec<ModelAction>,
    /// Models running with arguments other than the saved ones.
    pub drift: Vec<String>,
    /// What restore_to_crush inserted into Crush's database.
    pub crush: Option<Value>,
    /// Resources where the restored conversations are readable.
    pub conversation_uris: Vec<String>,
    /// The effective configuration differs from the one the state was saved under.
    pub config_changed: Option<bool>,
    pub notes: Vec<String>,
}

async fn load(s: &StatePersistence, p: LoadParams) -> Result<LoadAnswer> {
    states::validate_session_id("session_id", &p.session_id)?;
    if let Some(id) = &p.state_id {
        states::validate_state_id("state_id", id)?;
    }
    let crush_path = crush_db::locate(s.kit.config.crush.db_path.as_deref());
    if p.restore_to_crush && crush_path.is_none() {
        return Err(Error::invalid("restore_to_crush", no_crush_note(s)));
    }
    let opened = open_state(s, &p).await?;
    let meta = &opened.meta;
    let mut answer = LoadAnswer {
        session_id: meta.session_id.clone(),
        state_id: meta.state_id.clone(),
        restored: Restored::default(),
        metric_samples: meta.metrics.as_ref().map(|m| m.samples),
        messages: 0,
        timestamp: meta.timestamp.clone(),
        model_actions: Vec::new(),
        drift: Vec::new(),
        crush: None,
        conversation_uris: Vec::new(),
        config_changed: None,
        notes: missing_parts(meta, &p),
    };
    // Every launch is checked before any of them (or the conversation) happens.
    let plan = match &opened.models {
        Some(mp) => {
            let saved_under = &mp.configurations.config_digest;
            answer.config_changed = Some(*saved_under != states::config_digest(&s.kit.config)?);
            Some(restore::plan(s.launcher()?, mp)?)
        }
        None => None,
    };
    if let Some(conv) = opened.conversation {
        let to_crush = p.restore_to_crush.then_some(crush_path).flatten();
        restore_conversation(s, &opened.meta.state_id, conv, to_crush, &mut answer).await?;
    }
    if let Some(plan) = plan {
        let report = restore::carry_out(s.launcher()?, plan, p.replace_drifted).await?;
        answer.model_actions = report.actions;
        answer.drift = report.drift;
        answer.restored.models = report.models;
        answer.restored.configurations = report.configurations;
    }
    Ok(answer)
}

/// The state load-state names, read and checked whole, its asked-for parts decoded.
async fn open_state(s: &StatePersistence, p: &LoadParams) -> Result<states::Opened> {
    let store = s.kit.store()?.clone();
    let label = p.session_id.clone();
    let state_id = p.state_id.clone();
    let mut decode = Vec::new();
    if p.restore_models {
        decode.push(PartKind::Models);
    }
    if p.restore_conversations {
        decode.push(PartKind::Conversations);
    }
    let crush = open_crush(s);
    blocking(move || {
        let session = resolve_session(crush?.as_ref(), &label)?;
        // A state saved as `current` before Crush had sessions is found under its label.
        let meta = match states::find(&store, Some(&session), state_id.as_deref()) {
            Err(e) if session != label && state_id.is_none() => {
                states::find(&store, Some(&label), None).map_err(|_| e)?
            }
            other => other?,
        };
        states::open(&store, meta, &decode)
    })
    .await
}

/// Notes for the parts asked for that the state does not have.
fn missing_parts(meta: &StateMeta, p: &LoadParams) -> Vec<String> {
    let mut notes = Vec::new();
    if p.restore_models && !meta.has(PartKind::Models) {
        notes.push("the state has no models part (saved without models, or cleared)".into());
    }
    if p.restore_conversations && !meta.has(PartKind::Conversations) {
        notes.push(
            "the state has no conversation (none was found when saved, or it was cleared)".into(),
        );
    }
    notes
}

/// Makes a saved conversation readable here, and puts it into Crush's database when
/// `to_crush` names it.
async fn restore_conversation(
    s: &StatePersistence,
    state_id: &str,
    conv: Conversation,
    to_crush: Option<PathBuf>,
    answer: &mut LoadAnswer,
) -> Result<()> {
    let ids: Vec<String> = conv
        .sessions
        .iter()
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(String::from))
        .collect();
    let store = s.kit.store()?.clone();
    let (sid, marked) = (state_id.to_string(), ids.clone());
    let (report, messages) = blocking(move || {
        let report = match to_crush {
            Some(path) => Some(crush_db::restore(&path, &conv)?),
            None => None,
        };
        states::mark_restored(&store, &sid, &marked)?;
        let n = conv.message_count() as u64;
        drop(conv);
        release_memory();
        Ok((report, n))
    })
    .await?;
    answer.crush = report.map(|r: RestoreReport| serde_json::to_value(r).unwrap_or_default());
    answer.messages = messages;
    answer.restored.conversations = ids.len() as u64;
    answer.conversation_uris = ids
        .iter()
        .map(|i| crate::resources::conversation_uri(i))
        .collect();
    Ok(())
}
