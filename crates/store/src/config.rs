//! The `[store]` settings and the options a store is opened with.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the SQLite store is opened (every server opens the same file).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The most the database may hold, in MiB; 0: no cap but the disk. A write past it
    /// answers `STORAGE_ERROR` and changes nothing; clear-state makes room again.
    pub max_size_mb: u64,
    /// Open the store read-only (a read-only mount, a look at someone's store): reads
    /// work, every write answers `STORAGE_ERROR`.
    pub read_only: bool,
    /// `normal` (durable when the process is killed) or `full` (also on power loss).
    pub synchronous: Synchronous,
}

/// `PRAGMA synchronous` in WAL mode (see the crate's docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Durable against the process being killed; an OS crash may lose the last commits.
    #[default]
    Normal,
    /// Also durable against an OS crash or power loss, at one fsync per commit.
    Full,
}

impl Synchronous {
    pub(crate) fn as_sql(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// How [`Store::open_with`](crate::Store::open_with) opens the database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a statement waits for another connection's lock before failing
    /// with a storage error. Default 5 s.
    pub busy_timeout: Duration,
    /// Default [`Synchronous::Normal`].
    pub synchronous: Synchronous,
    /// The most the database file may hold, in bytes (`PRAGMA max_page_count` on the
    /// connection). A write that needs more fails whole with a storage error, as on a
    /// full disk; deleting rows frees pages for the next write. `None`: the disk's size.
    pub max_size_bytes: Option<u64>,
    /// Opens the file read-only: reads work, every write fails with a storage error.
    /// The file must exist and be at [`SCHEMA_VERSION`](crate::SCHEMA_VERSION) (nothing can migrate it).
    pub read_only: bool,
}

impl From<&StoreConfig> for StoreOptions {
    /// The options the `[store]` settings ask for.
    fn from(config: &StoreConfig) -> StoreOptions {
        StoreOptions {
            synchronous: config.synchronous,
            max_size_bytes: (config.max_size_mb > 0).then(|| config.max_size_mb * 1024 * 1024),
            read_only: config.read_only,
            ..StoreOptions::default()
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Normal,
            max_size_bytes: None,
            read_only: false,
        }
    }
}
