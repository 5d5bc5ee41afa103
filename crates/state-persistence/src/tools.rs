//! The state tools: save-state, load-state, clear-state, export-state, import-state.
//!
//! Every tool validates all of its input (ids, hours, paths, and for load-state the
//! whole saved payload) before it acts, so a refused call changed nothing. Blocking
//! work (SQLite, zstd, Crush's database) runs on the blocking pool.

use crate::StatePersistence;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use vllm_core::config::Tier;
use vllm_core::crush_db::{self, Conversation, CrushDb, RestoreReport};
use vllm_core::restore::{self, ModelAction};
use vllm_core::snapshot::{self, Snapshot};
use vllm_core::states::{self, ModelsPart, PartKind, Selection, StateMeta};
use vllm_core::{Error, Result};
use vllm_mcp_kit::{CallCtx, ToolDef, Toolbox};

/// Ids listed in an answer at most (the counts are always whole).
const LISTED_IDS_MAX: usize = 100;
/// The session label that means Crush's most recently updated session.
pub const CURRENT: &str = "current";

fn yes() -> bool {
    true
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

/// export-state's arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    pub state_id: String,
    /// A file name or path under the data directory's `exports/` (relative paths are taken from there)
    /// or under a directory of the `[state] export_dirs` setting.
    pub path: String,
}

/// export-state's answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ExportAnswer {
    pub state_id: String,
    pub session_id: String,
    /// The file written (absolute).
    pub path: String,
    pub size_bytes: u64,
}

/// import-state's arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// A file written by export-state, under the data directory's `exports/` (relative paths are
    /// taken from there) or a directory of the `[state] export_dirs` setting.
    pub path: String,
}

/// import-state's answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ImportAnswer {
    /// The id it was stored under (a new one when the original is taken).
    pub state_id: String,
    pub session_id: String,
    /// When the state was originally saved, RFC 3339 UTC.
    pub timestamp: String,
    pub size_bytes: u64,
    pub models: u64,
    pub messages: u64,
}

/// Registers the state tools.
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
    t.add(
        ToolDef {
            ..ToolDef::control(
                "export-state",
                "Write a saved state to one portable, checksummed file under the data directory's exports/ (or a \
                 directory of the [state] export_dirs setting, by absolute path).",
            )
        },
        |s: Arc<StatePersistence>, p: ExportParams, _ctx: CallCtx| async move {
            export(&s, p).await
        },
    );
    t.add(
        ToolDef {
            tier: Tier::Destructive,
            read_only: false,
            destructive: true,
            idempotent: false,
            ..ToolDef::read(
                "import-state",
                "Store a state from a file written by export-state (under the data directory's exports/ or an \
                 [state] export_dirs directory). It counts \
                 toward its session's retention, so it may prune the session's oldest state.",
            )
        },
        |s: Arc<StatePersistence>, p: ImportParams, _ctx: CallCtx| async move {
            import(&s, p).await
        },
    );
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

/// Resolves `current` to Crush's most recently updated top-level session; any other
/// label is itself. Without a Crush database (or sessions), `current` stays `current`.
fn resolve_session(crush: Option<&CrushDb>, label: &str) -> Result<String> {
    if label == CURRENT
        && let Some(db) = crush
        && let Some(id) = db.latest_session()?
    {
        states::validate_session_id("session_id", &id).map_err(|_| {
            Error::Internal(format!(
                "Crush's latest session id `{id}` is not a valid session id"
            ))
        })?;
        return Ok(id);
    }
    Ok(label.to_string())
}

fn open_crush(s: &StatePersistence) -> Result<Option<CrushDb>> {
    match crush_db::locate(&s.kit.config) {
        Some(p) => CrushDb::open_read_only(&p).map(Some),
        None => Ok(None),
    }
}

fn no_crush_note(s: &StatePersistence) -> String {
    let where_ = s
        .kit
        .config
        .crush
        .db_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(".crush/crush.db"));
    format!(
        "no conversation source was found: Crush's database is not at {} (set crush.db_path or VLLM_MCP_CRUSH_DB); \
         models and configurations only",
        where_.display()
    )
}

async fn save(s: &StatePersistence, p: SaveParams) -> Result<SaveAnswer> {
    states::validate_session_id("session_id", &p.session_id)?;
    let store = s.kit.store()?.clone();
    let mut notes = Vec::new();
    // The conversation first: `current` decides the session id.
    let crush_path = crush_db::locate(&s.kit.config);
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
    let path = crush_db::locate(&s.kit.config);
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

/// Gives freed heap memory back to the OS. A save or load allocates tens of MB on a
/// blocking-pool thread; glibc keeps that thread's arena otherwise, and each thread has
/// its own, so the resident size would grow with every large call instead of returning
/// to the baseline.
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

async fn load(s: &StatePersistence, p: LoadParams) -> Result<LoadAnswer> {
    states::validate_session_id("session_id", &p.session_id)?;
    if let Some(id) = &p.state_id {
        states::validate_state_id("state_id", id)?;
    }
    let crush_path = crush_db::locate(&s.kit.config);
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

/// The directory export and import files live in: `<data_dir>/exports`, created if needed.
pub fn exports_dir(s: &StatePersistence) -> PathBuf {
    s.kit.config.data_dir.join("exports")
}

/// The directories export and import may also use (`[state] export_dirs`).
pub fn extra_export_dirs(s: &StatePersistence) -> &[PathBuf] {
    &s.kit.config.state.export_dirs
}

/// Resolves `given` to a file inside `base` or one of `extra`: relative paths are taken
/// from `base` (created when missing); `..` is refused (INVALID_ARGUMENT); anything that
/// lands outside all of them once symlinks are resolved, or is itself a symlink, is
/// refused (PERMISSION_DENIED). An `extra` directory that does not exist allows nothing.
pub fn confine(tool: &str, base: &Path, extra: &[PathBuf], given: &str) -> Result<PathBuf> {
    if given.is_empty() || given.contains('\0') {
        return Err(Error::invalid("path", "must be a non-empty path"));
    }
    let p = Path::new(given);
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid("path", "`..` is not allowed"));
    }
    std::fs::create_dir_all(base).map_err(|e| Error::Storage {
        message: format!("cannot create the exports directory: {e}"),
        path: Some(base.to_path_buf()),
    })?;
    let base = base.canonicalize().map_err(|e| Error::Storage {
        message: format!("cannot resolve the exports directory: {e}"),
        path: Some(base.to_path_buf()),
    })?;
    let mut roots = vec![base.clone()];
    roots.extend(extra.iter().filter_map(|d| d.canonicalize().ok()));
    let allowed = || {
        let mut names = vec![base.display().to_string()];
        names.extend(extra.iter().map(|d| d.display().to_string()));
        names.join(", ")
    };
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let denied = |reason: String| Error::PermissionDenied {
        tool: tool.to_string(),
        reason,
    };
    let name = full
        .file_name()
        .ok_or_else(|| Error::invalid("path", "must name a file"))?;
    let parent = full.parent().unwrap_or(&base);
    let parent = match parent.canonicalize() {
        Ok(p) => p,
        Err(_)
            if !p.is_absolute()
                || parent.starts_with(&base)
                || roots.iter().any(|r| parent.starts_with(r)) =>
        {
            return Err(Error::invalid(
                "path",
                format!("the directory {} does not exist", parent.display()),
            ));
        }
        Err(_) => {
            return Err(denied(format!(
                "{} is outside the export directories ({}; more with [state] export_dirs)",
                full.display(),
                allowed()
            )));
        }
    };
    if !roots.iter().any(|r| parent.starts_with(r)) {
        return Err(denied(format!(
            "{} is outside the export directories ({}; more with [state] export_dirs; symlinks are followed)",
            full.display(),
            allowed()
        )));
    }
    let target = parent.join(name);
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(denied(format!("{} is a symlink", target.display())));
    }
    Ok(target)
}

async fn export(s: &StatePersistence, p: ExportParams) -> Result<ExportAnswer> {
    states::validate_state_id("state_id", &p.state_id)?;
    let target = confine(
        "export-state",
        &exports_dir(s),
        extra_export_dirs(s),
        &p.path,
    )?;
    if target.exists() {
        return Err(Error::invalid(
            "path",
            format!(
                "{} exists; choose another name (exports are never overwritten)",
                target.display()
            ),
        ));
    }
    let store = s.kit.store()?.clone();
    let id = p.state_id.clone();
    blocking(move || {
        let meta = states::find(&store, None, Some(&id))?;
        let mut frames = Vec::new();
        for part in meta.parts.iter().map(|p| p.part) {
            let f = states::read_frame(&store, &meta.state_id, part)?.ok_or_else(|| {
                Error::StateCorrupted {
                    state: meta.state_id.clone(),
                    reason: format!("part `{}` is listed but missing", part.as_str()),
                }
            })?;
            // A damaged state is not exported as if it were whole.
            states::check_frame(&meta.state_id, &f)?;
            frames.push(f);
        }
        let size = states::write_export(&target, &meta, &frames)?;
        Ok(ExportAnswer {
            state_id: meta.state_id,
            session_id: meta.session_id,
            path: target.display().to_string(),
            size_bytes: size,
        })
    })
    .await
}

async fn import(s: &StatePersistence, p: ImportParams) -> Result<ImportAnswer> {
    let source = confine(
        "import-state",
        &exports_dir(s),
        extra_export_dirs(s),
        &p.path,
    )?;
    if !source.is_file() {
        return Err(Error::invalid(
            "path",
            format!("{} is not a file", source.display()),
        ));
    }
    let store = s.kit.store()?.clone();
    let keep = s.kit.config.state.keep_per_session as usize;
    blocking(move || {
        let (meta, frames) = states::read_export(&source)?;
        states::validate_session_id("session_id", &meta.session_id)?;
        states::validate_state_id("state_id", &meta.state_id)?;
        // Decode every part fully: an import that would not load is refused now.
        for f in &frames {
            let h = states::check_frame(&meta.state_id, f)?;
            match h.kind {
                PartKind::Models => {
                    states::decode_part::<ModelsPart>(&meta.state_id, h.kind, f)?;
                }
                PartKind::Conversations => {
                    states::decode_part::<Conversation>(&meta.state_id, h.kind, f)?;
                }
            }
        }
        let m = states::import(&store, meta, frames, keep)?;
        Ok(ImportAnswer {
            state_id: m.state_id.clone(),
            session_id: m.session_id.clone(),
            timestamp: m.timestamp.clone(),
            size_bytes: m.size_bytes(),
            models: m.model_count,
            messages: m.message_count,
        })
    })
    .await
}
