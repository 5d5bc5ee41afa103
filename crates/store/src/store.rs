//! The store itself: opening and migrating the file, transactions, the audit log, health.

use crate::config::StoreOptions;
use crate::error::{FromStoreError, Result, StoreError, describe_sqlite};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The rusqlite this crate was built with, so callers of [`Store::write`] and
/// [`Store::read`] can name its types without depending on it themselves.
pub use rusqlite;

/// The file name of the store inside the data directory.
pub const DB_FILE_NAME: &str = "vllm-mcp.db";

/// One schema change: applied once, in order, in its own transaction.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// 1, 2, 3, ...: stored in `PRAGMA user_version` once applied.
    pub version: i64,
    /// A short name, recorded in `schema_migrations`.
    pub name: &'static str,
    /// The SQL, run with `execute_batch` inside the migration's transaction.
    pub sql: &'static str,
}

/// Every migration, oldest first. Append only; see the module docs.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "leases, audit log, meta",
        sql: r#"
CREATE TABLE schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
) STRICT;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- One row per singleton duty; see vllm_core::coordination.
CREATE TABLE leases (
    duty        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    host        TEXT NOT NULL,
    -- /proc/<pid>/stat field 22 (clock ticks after boot) and the kernel boot id:
    -- a recycled pid, or a pid from before a reboot, is not the holder.
    start_time  INTEGER,
    boot_id     TEXT,
    acquired_at REAL NOT NULL,
    renewed_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
) STRICT;

-- AUTOINCREMENT: ids are never reused after pruning, so a paging cursor stays valid.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          REAL NOT NULL,
    ts_text     TEXT NOT NULL,
    server      TEXT NOT NULL,
    tool        TEXT NOT NULL,
    arguments   TEXT NOT NULL,
    result_code TEXT NOT NULL,
    duration_ms REAL NOT NULL
) STRICT;
CREATE INDEX audit_log_ts ON audit_log(ts);
"#,
    },
    Migration {
        version: 2,
        name: "launched models, sampling defaults, load history",
        sql: r#"
-- One row per model the manager launched, kept after unload so a model gets its
-- port back and its arguments can be restored. See vllm_core::models.
CREATE TABLE models (
    model_id        TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    status          TEXT NOT NULL,
    host            TEXT NOT NULL,
    port            INTEGER,
    pid             INTEGER,
    pgid            INTEGER,
    start_time      INTEGER,
    args            TEXT NOT NULL,
    argv            TEXT NOT NULL,
    env_names       TEXT NOT NULL,
    gpu_ids         TEXT NOT NULL,
    log_path        TEXT,
    launched_at     REAL,
    loaded_at       REAL,
    stopped_at      REAL,
    error           TEXT,
    restart_policy  TEXT,
    restarts        INTEGER NOT NULL DEFAULT 0,
    idle_ttl_seconds REAL,
    memory_estimate_mb INTEGER,
    updated_at      REAL NOT NULL
) STRICT;

-- set-model-config's sampling defaults, applied at the next launch.
CREATE TABLE model_sampling (
    model_id   TEXT PRIMARY KEY,
    sampling   TEXT NOT NULL,
    updated_at REAL NOT NULL
) STRICT;

-- How long each launch took to be served, for estimated_load_time.
CREATE TABLE load_history (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id TEXT NOT NULL,
    seconds  REAL NOT NULL,
    ok       INTEGER NOT NULL,
    at       REAL NOT NULL
) STRICT;
CREATE INDEX load_history_model ON load_history(model_id, at);
"#,
    },
    Migration {
        version: 3,
        name: "saved states, their parts, restored conversations",
        sql: r#"
-- One row per saved state: what summaries need, so listing never decodes a blob.
-- See vllm_core::states.
CREATE TABLE states (
    state_id       TEXT PRIMARY KEY,
    session_id     TEXT NOT NULL,
    created_at     REAL NOT NULL,
    created_text   TEXT NOT NULL,
    format_version INTEGER NOT NULL,
    vllm_versions  TEXT NOT NULL,
    title          TEXT,
    model_count    INTEGER NOT NULL,
    session_count  INTEGER NOT NULL,
    message_count  INTEGER NOT NULL,
    -- {model_id: {source, args, status}}: summaries diff two states without decoding them.
    models_index   TEXT NOT NULL,
    note           TEXT
) STRICT;
CREATE INDEX states_session ON states(session_id, created_at);
CREATE INDEX states_created ON states(created_at);

-- The payload of a state, one self-checking frame per part (`models`, `conversations`),
-- so clear-state can drop one part and keep the other.
CREATE TABLE state_parts (
    state_id    TEXT NOT NULL REFERENCES states(state_id) ON DELETE CASCADE,
    part        TEXT NOT NULL,
    codec       TEXT NOT NULL,
    raw_size    INTEGER NOT NULL,
    stored_size INTEGER NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (state_id, part)
) STRICT;

-- Crush sessions made readable by load-state (restore_conversations), and from which state.
CREATE TABLE restored_conversations (
    session_id  TEXT PRIMARY KEY,
    state_id    TEXT NOT NULL REFERENCES states(state_id) ON DELETE CASCADE,
    restored_at REAL NOT NULL
) STRICT;
CREATE INDEX restored_conversations_state ON restored_conversations(state_id);
"#,
    },
    Migration {
        version: 4,
        name: "metric samples and GPU samples of the performance monitor",
        sql: r#"
-- One row per endpoint, served model and scrape; see vllm_core::monitor::history.
-- The figures window queries scan are columns of this small row; the rest (histogram
-- buckets, requests by finished_reason, the KV-cache configuration) is a JSON blob in
-- metric_sample_details, read only at the edges of a window. `model` is '' for a scrape
-- that found no model (the endpoint was down).
CREATE TABLE metric_samples (
    id                INTEGER PRIMARY KEY,
    ts                REAL NOT NULL,
    endpoint          TEXT NOT NULL,
    base_url          TEXT NOT NULL,
    model             TEXT NOT NULL,
    up                INTEGER NOT NULL,
    error             TEXT,
    start_time        REAL,
    prompt_tokens     REAL,
    generation_tokens REAL,
    requests_finished REAL,
    requests_failed   REAL,
    preemptions       REAL,
    running           REAL,
    waiting           REAL,
    kv_cache_usage    REAL,
    e2e_count         REAL,
    e2e_sum           REAL,
    ttft_count        REAL,
    itl_count         REAL,
    queue_count       REAL
) STRICT;
CREATE INDEX metric_samples_ts ON metric_samples(ts);
CREATE INDEX metric_samples_series ON metric_samples(endpoint, model, ts);

-- Kept apart so that scanning a window does not page through the blobs.
CREATE TABLE metric_sample_details (
    id     INTEGER PRIMARY KEY REFERENCES metric_samples(id) ON DELETE CASCADE,
    detail TEXT NOT NULL
) STRICT;

-- One row per GPU and sampling round.
CREATE TABLE gpu_samples (
    ts              REAL NOT NULL,
    gpu             INTEGER NOT NULL,
    utilization     REAL,
    memory_used_mb  INTEGER,
    memory_total_mb INTEGER,
    temperature_c   INTEGER,
    power_w         REAL,
    PRIMARY KEY (gpu, ts)
) STRICT, WITHOUT ROWID;
CREATE INDEX gpu_samples_ts ON gpu_samples(ts);
"#,
    },
    Migration {
        version: 5,
        name: "alerts: active, resolved history, transition events",
        sql: r#"
-- Pending and firing alerts, one per rule and target; see vllm_core::monitor::alerts.
CREATE TABLE alerts (
    rule           TEXT NOT NULL,
    -- Canonical JSON of the target labels (endpoint, model or gpu).
    target         TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('pending', 'firing')),
    severity       TEXT NOT NULL,
    pending_since  REAL NOT NULL,
    fired_at       REAL,
    value          REAL,
    threshold      REAL NOT NULL,
    summary        TEXT NOT NULL,
    last_evaluated REAL NOT NULL,
    PRIMARY KEY (rule, target)
) STRICT;

CREATE TABLE alert_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    rule          TEXT NOT NULL,
    target        TEXT NOT NULL,
    severity      TEXT NOT NULL,
    pending_since REAL NOT NULL,
    fired_at      REAL,
    resolved_at   REAL NOT NULL,
    value         REAL,
    threshold     REAL NOT NULL,
    summary       TEXT NOT NULL
) STRICT;
CREATE INDEX alert_history_resolved ON alert_history(resolved_at);

-- Firing and resolved transitions, tailed by every server instance for notifications.
CREATE TABLE alert_events (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    ts    REAL NOT NULL,
    kind  TEXT NOT NULL CHECK (kind IN ('firing', 'resolved')),
    alert TEXT NOT NULL
) STRICT;
CREATE INDEX alert_events_ts ON alert_events(ts);
"#,
    },
    Migration {
        version: 6,
        name: "rate limit slots",
        sql: r#"
-- One row per call that started GPU work, for limits.gpu_work_per_minute, shared by
-- every server on the store; rows older than the window are deleted as slots are taken.
CREATE TABLE rate_slots (
    id   INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    ts   REAL NOT NULL,
    tool TEXT NOT NULL
) STRICT;
CREATE INDEX rate_slots_kind_ts ON rate_slots(kind, ts);
"#,
    },
    Migration {
        version: 7,
        name: "front door use",
        sql: r#"
-- What each front door (gateway) passes on, per model, republished while it serves, so
-- every instance sees requests in flight through any door; see vllm_core::door_use.
CREATE TABLE door_use (
    model_id   TEXT NOT NULL,
    holder     TEXT NOT NULL,
    url        TEXT NOT NULL,
    in_flight  INTEGER NOT NULL,
    waiting    INTEGER NOT NULL,
    last_used  REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (model_id, holder)
) STRICT;
"#,
    },
    Migration {
        version: 8,
        name: "launches on a Ray cluster",
        sql: r#"
-- The Ray job serving a model launched with [launcher] backend = "ray" (JSON: its
-- submission id and node); NULL for a process group of this host (pid).
ALTER TABLE models ADD COLUMN job TEXT;
"#,
    },
];

/// The schema version this binary writes: the last migration's.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The shared SQLite store. Cheap to clone; every clone uses the same connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

// Servers share one Store between tasks and threads.
const _: () = {
    const fn assert_shareable<T: Send + Sync + Clone>() {}
    assert_shareable::<Store>();
};

struct Inner {
    conn: Mutex<Connection>,
    path: PathBuf,
    options: StoreOptions,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// A cheap summary for the server-health tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreHealth {
    pub path: PathBuf,
    /// `PRAGMA user_version`; 0 when it could not be read.
    pub schema_version: i64,
    /// The database file plus its WAL file.
    pub size_bytes: u64,
    /// `wal` when all is well.
    pub journal_mode: String,
    /// The database answered, is in WAL mode and at this binary's schema version.
    pub ok: bool,
    /// Opened read-only (`store.read_only`): every write fails.
    pub read_only: bool,
    /// The size cap (`store.max_size_mb`) in bytes; none: the disk's size.
    pub max_size_bytes: Option<u64>,
}

/// One tool call in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Assigned by the store; ignored by [`Store::record_audit`]. Increases with
    /// every insert, across processes, and is the paging cursor.
    pub id: Option<i64>,
    /// When the call started, Unix seconds.
    pub ts: f64,
    /// `ts` as RFC 3339.
    pub ts_text: String,
    /// The server that handled the call (`model-manager`, ...).
    pub server: String,
    pub tool: String,
    /// The call's arguments, already redacted by the caller.
    pub arguments: serde_json::Value,
    /// `OK` or the error's stable code.
    pub result_code: String,
    pub duration_ms: f64,
}

impl AuditRecord {
    /// A record stamped now.
    pub fn new(
        server: impl Into<String>,
        tool: impl Into<String>,
        arguments: serde_json::Value,
        result_code: impl Into<String>,
        duration: Duration,
    ) -> AuditRecord {
        let ts = crate::time::unix_now();
        AuditRecord {
            id: None,
            ts,
            ts_text: crate::time::format_rfc3339(ts as i64),
            server: server.into(),
            tool: tool.into(),
            arguments,
            result_code: result_code.into(),
            duration_ms: duration.as_secs_f64() * 1000.0,
        }
    }
}

/// Filters for [`Store::audit_entries`]. `Default` is "the newest 100".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditQuery {
    pub server: Option<String>,
    pub tool: Option<String>,
    pub result_code: Option<String>,
    /// Only entries with `ts >= since` (Unix seconds).
    pub since: Option<f64>,
    /// At most this many entries: default [`AuditQuery::DEFAULT_LIMIT`], at most
    /// [`AuditQuery::MAX_LIMIT`] (larger values are capped).
    pub limit: Option<usize>,
    /// Paging cursor: only entries with an id below this one. Pass the id of the
    /// last entry of the previous page.
    pub before_id: Option<i64>,
}

impl AuditQuery {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 1000;

    /// The limit actually applied.
    pub fn effective_limit(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT)
    }
}

impl Store {
    /// Opens (creating it and its parent directories if needed) and migrates the
    /// store at `path` with default options.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, StoreOptions::default())
    }

    /// Opens `data_dir/vllm-mcp.db`.
    pub fn open_in_dir(data_dir: &Path) -> Result<Store> {
        Store::open(&data_dir.join(DB_FILE_NAME))
    }

    /// Opens with explicit options.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Store> {
        if options.read_only {
            return Store::open_read_only(path, options);
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Storage {
                message: format!("cannot create the data directory: {e}"),
                path: Some(parent.to_path_buf()),
            })?;
        }
        let map = |e: rusqlite::Error| storage_error(&e, path, options.busy_timeout);
        let mut conn = Connection::open(path).map_err(map)?;
        configure(&conn, &options).map_err(map)?;
        let version = migrate(&mut conn, path, &options)?;
        tracing::debug!(path = %path.display(), schema_version = version, "store opened");
        Ok(Store::over(conn, path, options))
    }

    /// The store over a connection already opened, configured and at our schema.
    fn over(conn: Connection, path: &Path, options: StoreOptions) -> Store {
        Store {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: path.to_path_buf(),
                options,
            }),
        }
    }

    /// Opens an existing store that must not be written to.
    fn open_read_only(path: &Path, options: StoreOptions) -> Result<Store> {
        use rusqlite::OpenFlags;
        let map = |e: rusqlite::Error| storage_error(&e, path, options.busy_timeout);
        if !path.is_file() {
            return Err(StoreError::Storage {
                message: "store.read_only is set but there is no store to read: start once \
                          without it to create one"
                    .into(),
                path: Some(path.to_path_buf()),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map)?;
        conn.busy_timeout(options.busy_timeout).map_err(map)?;
        let version = user_version(&conn).map_err(map)?;
        if version > SCHEMA_VERSION {
            return Err(newer_schema(version, path));
        }
        if version < SCHEMA_VERSION {
            return Err(StoreError::Storage {
                message: format!(
                    "the store is at schema version {version} and this vllm-mcp needs \
                     {SCHEMA_VERSION}; store.read_only forbids the migration: start once without it"
                ),
                path: Some(path.to_path_buf()),
            });
        }
        tracing::info!(path = %path.display(), "store opened read-only");
        Ok(Store::over(conn, path, options))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction and commits it if `f`
    /// returns `Ok`; rolls it back otherwise. When this returns `Ok` the write is
    /// in the WAL and survives the process being killed.
    ///
    /// Waits up to the busy timeout for another writer. Blocking: see the module
    /// docs for async callers.
    pub fn write<T, E: FromStoreError>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        if self.inner.options.read_only {
            // Before `f` runs: a closure may act outside the database (spawn a process)
            // before its first statement would have failed.
            return Err(StoreError::Storage {
                message: "the database is read-only (the store was opened with store.read_only = \
                          true): this write was not attempted"
                    .into(),
                path: Some(self.inner.path.clone()),
            }
            .into());
        }
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.error(e))?;
        let value = f(&tx).map_err(|e| self.with_path(e))?;
        tx.commit().map_err(|e| self.error(e))?;
        Ok(value)
    }

    /// Runs `f` on one consistent snapshot (a deferred read transaction). `f`
    /// must not write: the connection is `query_only` meanwhile, so a write fails
    /// (use [`Store::write`]).
    pub fn read<T, E: FromStoreError>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.lock();
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| self.error(e))?;
        let result = (|| -> Result<T, E> {
            let tx = conn.transaction().map_err(|e| self.error(e))?;
            let value = f(&tx).map_err(|e| self.with_path(e))?;
            // Ending a read transaction cannot lose anything; commit just releases the snapshot.
            tx.commit().map_err(|e| self.error(e))?;
            Ok(value)
        })();
        let reset = conn
            .pragma_update(None, "query_only", false)
            .map_err(|e| self.error(e));
        let value = result?;
        reset?;
        Ok(value)
    }

    /// Reads `meta.value` for `key`.
    pub fn meta_get(&self, key: &str) -> Result<Option<String>> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    /// Sets `meta.value` for `key`.
    pub fn meta_set(&self, key: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )?;
            Ok(())
        })
    }

    /// Appends one record to the audit log; returns its id.
    pub fn record_audit(&self, record: &AuditRecord) -> Result<i64> {
        let arguments = serde_json::to_string(&record.arguments).map_err(|e| {
            StoreError::Internal(format!("audit arguments are not serialisable: {e}"))
        })?;
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO audit_log (ts, ts_text, server, tool, arguments, result_code, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                record.ts,
                record.ts_text,
                record.server,
                record.tool,
                arguments,
                record.result_code,
                record.duration_ms
            ])?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Audit records matching `query`, newest (highest id) first.
    pub fn audit_entries(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let mut sql = String::from(
            "SELECT id, ts, ts_text, server, tool, arguments, result_code, duration_ms
             FROM audit_log WHERE 1 = 1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut filter = |clause: &str, value: rusqlite::types::Value| {
            args.push(value);
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        };
        if let Some(s) = &query.server {
            filter("server =", s.clone().into());
        }
        if let Some(t) = &query.tool {
            filter("tool =", t.clone().into());
        }
        if let Some(c) = &query.result_code {
            filter("result_code =", c.clone().into());
        }
        if let Some(since) = query.since {
            filter("ts >=", since.into());
        }
        if let Some(before) = query.before_id {
            filter("id <", before.into());
        }
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {}",
            query.effective_limit()
        ));
        self.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                let arguments: String = r.get(5)?;
                Ok(AuditRecord {
                    id: Some(r.get(0)?),
                    ts: r.get(1)?,
                    ts_text: r.get(2)?,
                    server: r.get(3)?,
                    tool: r.get(4)?,
                    // Written by record_audit, so JSON; anything else is kept as text.
                    arguments: serde_json::from_str(&arguments)
                        .unwrap_or(serde_json::Value::String(arguments)),
                    result_code: r.get(6)?,
                    duration_ms: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Deletes audit records with `ts < older_than` (Unix seconds); returns how
    /// many. Call [`Store::incremental_vacuum`] afterwards to give the space back.
    pub fn prune_audit(&self, older_than: f64) -> Result<usize> {
        self.write(|tx| Ok(tx.execute("DELETE FROM audit_log WHERE ts < ?1", [older_than])?))
    }

    /// Takes one of `limit` slots of `kind` in the `window` seconds ending at `now`, for
    /// `tool`, in one write transaction (so servers sharing the store share the limit):
    /// `Ok(None)` when taken, `Ok(Some(seconds))` when all are taken, with the seconds
    /// until the oldest leaves the window (at least 1).
    pub fn take_rate_slot(
        &self,
        kind: &str,
        tool: &str,
        limit: u32,
        window: f64,
        now: f64,
    ) -> Result<Option<u64>> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM rate_slots WHERE kind = ?1 AND ts <= ?2")?
                .execute(params![kind, now - window])?;
            let (taken, oldest): (u32, Option<f64>) = tx
                .prepare_cached("SELECT count(*), min(ts) FROM rate_slots WHERE kind = ?1")?
                .query_row([kind], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if taken >= limit {
                let wait = oldest.map_or(window, |t| t + window - now);
                return Ok(Some(wait.ceil().max(1.0) as u64));
            }
            tx.prepare_cached("INSERT INTO rate_slots (kind, ts, tool) VALUES (?1, ?2, ?3)")?
                .execute(params![kind, now, tool])?;
            Ok(None)
        })
    }

    /// Moves free pages to the end of the file and truncates it; returns how
    /// many pages were freed. (In WAL mode the file shrinks at the next checkpoint.)
    pub fn incremental_vacuum(&self) -> Result<u64> {
        self.write(|tx| {
            let before: i64 = tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            // Each step frees one page: step until done (execute_batch steps once).
            let mut stmt = tx.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
            drop(rows);
            drop(stmt);
            let after: i64 = tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            Ok(before.saturating_sub(after).max(0) as u64)
        })
    }

    /// A cheap health summary: never runs a full integrity check, never fails.
    pub fn health(&self) -> StoreHealth {
        let path = self.inner.path.clone();
        let size_bytes = file_len(&path) + file_len(&wal_path(&path));
        let probe = self.read(|c| -> Result<_> {
            let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            Ok((version, mode))
        });
        let read_only = self.inner.options.read_only;
        let max_size_bytes = self.inner.options.max_size_bytes;
        match probe {
            Ok((schema_version, journal_mode)) => StoreHealth {
                ok: journal_mode.eq_ignore_ascii_case("wal") && schema_version == SCHEMA_VERSION,
                path,
                schema_version,
                size_bytes,
                journal_mode,
                read_only,
                max_size_bytes,
            },
            Err(e) => {
                tracing::warn!(error = %e, "store health probe failed");
                StoreHealth {
                    path,
                    schema_version: 0,
                    size_bytes,
                    journal_mode: String::new(),
                    ok: false,
                    read_only,
                    max_size_bytes,
                }
            }
        }
    }

    /// Runs `PRAGMA integrity_check` (reads the whole file: not for hot paths).
    /// `Ok(false)` when it found problems; they are logged.
    pub fn integrity_check(&self) -> Result<bool> {
        let problems = self.read(|c| -> Result<_> {
            let mut stmt = c.prepare("PRAGMA integrity_check")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        let ok = problems.len() == 1 && problems[0] == "ok";
        if !ok {
            tracing::error!(path = %self.inner.path.display(), ?problems, "store integrity check failed");
        }
        Ok(ok)
    }

    /// The connection, even after a panic inside a `write`/`read` closure: the
    /// transaction was rolled back as the panic unwound; undo `query_only` too.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        match self.inner.conn.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                let guard = poisoned.into_inner();
                self.inner.conn.clear_poison();
                if !guard.is_autocommit() {
                    let _ = guard.execute_batch("ROLLBACK");
                }
                let _ = guard.pragma_update(None, "query_only", false);
                guard
            }
        }
    }

    fn error(&self, e: rusqlite::Error) -> StoreError {
        self.with_path(storage_error(
            &e,
            &self.inner.path,
            self.inner.options.busy_timeout,
        ))
    }

    /// Errors from a caller's closure went through `From<rusqlite::Error>`, which knows
    /// no path: add ours. A "full" one under a size cap also names the setting.
    fn with_path<E: FromStoreError>(&self, mut e: E) -> E {
        if let Some((message, path)) = e.storage_failure() {
            if let Some(cap) = self.inner.options.max_size_bytes
                && message.contains("is full")
            {
                message.push_str(&format!(
                    "; the store is capped at store.max_size_mb = {} MiB: clear old saved states \
                     or raise the cap",
                    cap / (1024 * 1024)
                ));
            }
            path.get_or_insert_with(|| self.inner.path.clone());
        }
        e
    }
}

/// Maps a SQLite failure to [`StoreError::Storage`] with a message a person can act on.
pub fn storage_error(e: &rusqlite::Error, path: &Path, busy_timeout: Duration) -> StoreError {
    StoreError::Storage {
        message: describe_sqlite(e, Some(busy_timeout)),
        path: Some(path.to_path_buf()),
    }
}

/// A JSON text column decoded as `T`. Text that does not decode is SQLite's conversion
/// error for that column (a `STORAGE_ERROR` naming it), never a default standing in for
/// what was stored.
pub fn json_column<T: serde::de::DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        let column = row.as_ref().column_name(i).unwrap_or("?");
        let why = format!("`{column}` holds JSON that does not decode ({e})");
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, why.into())
    })
}

fn wal_path(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push("-wal");
    PathBuf::from(s)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Sets the pragmas. `auto_vacuum` must come before anything writes the first
/// page (`journal_mode = WAL` on a new file does), so it is in effect from the
/// first table on; on an existing database it is a no-op.
fn configure(conn: &Connection, options: &StoreOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(options.busy_timeout)?;
    // Two processes creating the file at once can collide on the switch to WAL,
    // which takes an exclusive lock; SQLite does not always use the busy handler
    // for it, so retry for as long as the busy timeout.
    let started = Instant::now();
    loop {
        let attempt = (|| -> rusqlite::Result<()> {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode");
            }
            Ok(())
        })();
        match attempt {
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) && started.elapsed() < options.busy_timeout =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other?,
        }
    }
    conn.pragma_update(None, "synchronous", options.synchronous.as_sql())?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    if let Some(bytes) = options.max_size_bytes {
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        // SQLite keeps the current size when the cap is below it: nothing is lost.
        let pages = (bytes as i64 / page_size.max(512)).max(1);
        conn.pragma_update(None, "max_page_count", pages)?;
    }
    Ok(())
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

fn newer_schema(version: i64, path: &Path) -> StoreError {
    StoreError::Storage {
        message: format!(
            "the database has schema version {version}, newer than the {SCHEMA_VERSION} this vllm-mcp knows: \
             it was written by a newer vllm-mcp; upgrade this one (it will not downgrade the database)"
        ),
        path: Some(path.to_path_buf()),
    }
}

/// Applies the pending migrations; returns the schema version.
fn migrate(conn: &mut Connection, path: &Path, options: &StoreOptions) -> Result<i64> {
    let map = |e: rusqlite::Error| storage_error(&e, path, options.busy_timeout);
    let current = user_version(conn).map_err(map)?;
    if current > SCHEMA_VERSION {
        return Err(newer_schema(current, path));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        // IMMEDIATE takes the write lock first; the version read under it is the
        // truth, so a migration another process applied meanwhile is skipped.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map)?;
        let version = user_version(&tx).map_err(map)?;
        if version > SCHEMA_VERSION {
            return Err(newer_schema(version, path));
        }
        if version >= m.version {
            continue;
        }
        if version != m.version - 1 {
            return Err(StoreError::Internal(format!(
                "migration {} found the database at version {version}",
                m.version
            )));
        }
        tx.execute_batch(m.sql).map_err(|e| StoreError::Storage {
            message: format!("migration {} ({}) failed: {e}", m.version, m.name),
            path: Some(path.to_path_buf()),
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, crate::time::unix_now()],
        )
        .map_err(map)?;
        tx.pragma_update(None, "user_version", m.version)
            .map_err(map)?;
        tx.commit().map_err(map)?;
        tracing::info!(path = %path.display(), version = m.version, name = m.name, "store migration applied");
    }
    Ok(user_version(conn).map_err(map)?.max(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration {} ({})", i, m.name);
            assert!(!m.sql.trim().is_empty());
        }
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
    }

    #[test]
    fn limit_is_capped() {
        let q = |limit| AuditQuery {
            limit,
            ..AuditQuery::default()
        };
        assert_eq!(q(None).effective_limit(), 100);
        assert_eq!(q(Some(5000)).effective_limit(), 1000);
        assert_eq!(q(Some(0)).effective_limit(), 1);
    }
}
