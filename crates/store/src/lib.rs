//! vllm-store: the SQLite state store shared by every server process: opening, pragmas,
//! migrations, the audit log, and the leases of [`coordination`].
//!
//! # Why it looks like this
//!
//! Each Crush session spawns its own three servers, so several processes of each
//! server work on **one** SQLite file at once, and Crush ends them with SIGKILL.
//! Hence:
//!
//! - every write is one `BEGIN IMMEDIATE` transaction ([`Store::write`]): the write
//!   lock is taken up front, so a second writer waits in SQLite's busy handler
//!   (up to [`StoreOptions::busy_timeout`]) instead of failing on a read-to-write
//!   lock upgrade;
//! - a committed write is in the WAL file (the kernel's page cache) when the call
//!   returns, which survives the process being killed; nothing a later read needs
//!   lives only in memory;
//! - migrations are re-checked inside their `BEGIN IMMEDIATE` transaction, so
//!   processes opening a new file at the same moment apply each one exactly once.
//!
//! # Pragmas (set on every open)
//!
//! | pragma | value | why |
//! |---|---|---|
//! | `busy_timeout` | 5 s (configurable) | wait for another process's write instead of failing at once |
//! | `auto_vacuum` | `INCREMENTAL` | set before the first table exists, so it is in effect from migration 1; [`Store::incremental_vacuum`] returns freed pages to the OS |
//! | `journal_mode` | `WAL` | readers never block the writer nor the writer readers; a commit is one append |
//! | `synchronous` | `NORMAL` (configurable) | in WAL mode a commit is written (not fsynced) to the WAL before it returns: durable against the process being killed (our threat: SIGKILL), and never corrupt; only an OS crash or power loss can lose the last commits. `FULL` adds an fsync per commit for that case |
//! | `foreign_keys` | `ON` | later migrations may rely on `REFERENCES` |
//! | `journal_size_limit` | 64 MiB | a burst of writes does not leave a huge WAL file behind forever |
//!
//! # Threads and async
//!
//! A [`Store`] is `Clone` (an `Arc` inside) and `Send + Sync`; it holds one
//! connection behind a mutex, so its calls block. From async code call it through
//! `tokio::task::spawn_blocking`:
//!
//! ```no_run
//! # async fn f(store: vllm_store::Store) -> vllm_store::Result<()> {
//! let s = store.clone();
//! let entries = tokio::task::spawn_blocking(move || {
//!     s.audit_entries(&vllm_store::AuditQuery::default())
//! })
//! .await
//! .map_err(|e| vllm_store::StoreError::Internal(e.to_string()))??;
//! # Ok(()) }
//! ```
//!
//! # Adding a migration
//!
//! Append one [`Migration`] to [`MIGRATIONS`] with the next version number (they
//! must be 1, 2, 3, ... in order; a unit test checks it) and its SQL. Never edit
//! or reorder a migration that has shipped: databases in the field have already
//! applied it. The SQL runs inside the runner's transaction, so it must not
//! contain `BEGIN`/`COMMIT`, `VACUUM`, or pragmas that cannot run inside a
//! transaction (`foreign_keys`, `journal_mode`). Prefer `STRICT` tables. The
//! runner records the migration in `schema_migrations` and `PRAGMA user_version`
//! in the same transaction.
//!
//! # Errors
//!
//! [`StoreError`] is this crate's one error enum. A closure given to [`Store::write`] or
//! [`Store::read`] returns its caller's own error type ([`FromStoreError`]), so a
//! transaction can fail with a domain error (a refused placement) and roll back.

mod config;
pub mod coordination;
mod error;
mod store;
pub mod time;

pub use config::{StoreConfig, StoreOptions, Synchronous};
pub use error::{FromStoreError, Result, StoreError};
pub use store::*;
