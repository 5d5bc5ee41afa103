//! The store's one error enum, and the trait that lets a caller's own error pass through a transaction.

use std::path::PathBuf;
use std::time::Duration;

/// What the store can fail with. Each variant becomes the vllm-core error of the same
/// name, so the stable codes (`STORAGE_ERROR`, `INVALID_ARGUMENT`, `INTERNAL`) are
/// the ones clients already branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite store failed (disk full, read-only, locked past the timeout, ...).
    #[error("storage error: {message}")]
    Storage {
        message: String,
        path: Option<PathBuf>,
    },

    /// An argument is missing, malformed or out of range.
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument { field: String, reason: String },

    /// A bug or an unexpected condition; never expected in normal operation.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Shorthand for [`StoreError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> StoreError {
        StoreError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The stable code, the same as the vllm-core error this becomes.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Storage { .. } => "STORAGE_ERROR",
            StoreError::InvalidArgument { .. } => "INVALID_ARGUMENT",
            StoreError::Internal(_) => "INTERNAL",
        }
    }
}

/// Shorthand for a result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Every SQLite failure is a storage error, described for the person reading it.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Storage {
            message: describe_sqlite(&e, None),
            path: None,
        }
    }
}

/// The error a closure given to [`Store::write`](crate::Store::write) or
/// [`Store::read`](crate::Store::read) fails with: the caller's own type, built from the
/// store's errors and from SQLite's (so `?` works on both inside the closure).
///
/// The store completes a storage failure the closure returns: it adds the database's
/// path and, on a full store under a size cap, the setting to raise.
pub trait FromStoreError: From<StoreError> + From<rusqlite::Error> {
    /// The message and path of the storage failure this is; `None` for any other error.
    fn storage_failure(&mut self) -> Option<(&mut String, &mut Option<PathBuf>)>;
}

impl FromStoreError for StoreError {
    fn storage_failure(&mut self) -> Option<(&mut String, &mut Option<PathBuf>)> {
        match self {
            StoreError::Storage { message, path } => Some((message, path)),
            _ => None,
        }
    }
}

/// What a SQLite failure means for the person reading it; `busy_timeout` when known.
pub(crate) fn describe_sqlite(e: &rusqlite::Error, busy_timeout: Option<Duration>) -> String {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked) => {
            let of = busy_timeout.map_or(String::new(), |t| format!(" of {} ms", t.as_millis()));
            format!(
                "the database is locked by another process and stayed locked past the busy timeout{of} ({e})"
            )
        }
        Some(C::DiskFull) => format!("the disk holding the database is full ({e})"),
        Some(C::ReadOnly) => {
            format!("the database is read-only: check file and directory permissions ({e})")
        }
        Some(C::DatabaseCorrupt | C::NotADatabase) => {
            format!("the database file is corrupt or not a SQLite database ({e})")
        }
        Some(C::SystemIoFailure) => format!("an I/O error occurred on the database file ({e})"),
        Some(C::CannotOpen | C::PermissionDenied) => format!("cannot open the database file ({e})"),
        _ => format!("SQLite error: {e}"),
    }
}
