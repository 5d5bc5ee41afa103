//! `export-state` and `import-state`: one portable file per state, confined to the
//! exports directory and `[state] export_dirs`.

use crate::StatePersistence;
use crate::common::blocking;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use vllm_core::config::Tier;
use vllm_core::crush_db::Conversation;
use vllm_core::states::{self, ModelsPart, PartKind};
use vllm_core::{Error, Result};
use vllm_mcp_kit::{CallCtx, ToolDef, Toolbox};

/// Registers `export-state` and `import-state`.
pub fn register(t: &mut Toolbox<StatePersistence>) {
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
