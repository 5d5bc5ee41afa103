//! What the state tools share: blocking work off the runtime, the `current` session
//! resolved through Crush's database, and giving memory back after a large call.

use crate::StatePersistence;
use std::path::PathBuf;
use vllm_core::crush_db::{self, CrushDb};
use vllm_core::states;
use vllm_core::{Error, Result};

/// Ids listed in an answer at most (the counts are always whole).
pub(crate) const LISTED_IDS_MAX: usize = 100;

/// The session label that means Crush's most recently updated session.
pub const CURRENT: &str = "current";

pub(crate) fn yes() -> bool {
    true
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

/// Resolves `current` to Crush's most recently updated top-level session; any other
/// label is itself. Without a Crush database (or sessions), `current` stays `current`.
pub(crate) fn resolve_session(crush: Option<&CrushDb>, label: &str) -> Result<String> {
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

pub(crate) fn open_crush(s: &StatePersistence) -> Result<Option<CrushDb>> {
    match crush_db::locate(s.kit.config.crush.db_path.as_deref()) {
        Some(p) => Ok(Some(CrushDb::open_read_only(&p)?)),
        None => Ok(None),
    }
}

pub(crate) fn no_crush_note(s: &StatePersistence) -> String {
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

pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
