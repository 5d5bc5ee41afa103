//! Crush's schema, statement for statement as its goose migrations create it, for tests and benchmarks.
//!
//! Source: `internal/db/migrations/*.sql` of github.com/charmbracelet/crush at commit
//! 37f36e93824e5c4f892e4a817f7f628e2682fe14 (2026-08-21), the seven migrations from
//! `20250424200609_initial.sql` to `20260127000000_add_read_files_table.sql`. The
//! statements are Crush's own (comments dropped): the columns added by `ALTER TABLE`
//! come after the original ones, as in a real `crush.db`, and `sqlite_master` holds the
//! same SQL text. Note `messages.parts` is declared `BLOB` (BLOB affinity: a bound
//! string stays TEXT, which is what Crush's Go driver binds), and the triggers:
//! inserting or deleting a message moves `sessions.message_count`, and every `UPDATE`
//! of a session, message or file row sets its `updated_at` to the current time.

use crate::Result;
use rusqlite::Connection;

/// The migrations, oldest first: (goose version id, SQL of its `Up` section).
pub const MIGRATIONS: &[(i64, &str)] = &[
    (20250424200609, INITIAL),
    (
        20250515105448,
        "ALTER TABLE sessions ADD COLUMN summary_message_id TEXT;",
    ),
    (
        20250624000000,
        "CREATE INDEX IF NOT EXISTS idx_sessions_created_at ON sessions (created_at);
CREATE INDEX IF NOT EXISTS idx_messages_created_at ON messages (created_at);
CREATE INDEX IF NOT EXISTS idx_files_created_at ON files (created_at);",
    ),
    (
        20250627000000,
        "ALTER TABLE messages ADD COLUMN provider TEXT;",
    ),
    (
        20250810000000,
        "ALTER TABLE messages ADD COLUMN is_summary_message INTEGER DEFAULT 0 NOT NULL;",
    ),
    (
        20250812000000,
        "ALTER TABLE sessions ADD COLUMN todos TEXT;",
    ),
    (20260127000000, READ_FILES),
];

const INITIAL: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    parent_session_id TEXT,
    title TEXT NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    prompt_tokens  INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens  INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens>= 0),
    cost REAL NOT NULL DEFAULT 0.0 CHECK (cost >= 0.0),
    updated_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TRIGGER IF NOT EXISTS update_sessions_updated_at
AFTER UPDATE ON sessions
BEGIN
UPDATE sessions SET updated_at = strftime('%s', 'now')
WHERE id = new.id;
END;

CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    path TEXT NOT NULL,
    content TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE,
    UNIQUE(path, session_id, version)
);

CREATE INDEX IF NOT EXISTS idx_files_session_id ON files (session_id);
CREATE INDEX IF NOT EXISTS idx_files_path ON files (path);

CREATE TRIGGER IF NOT EXISTS update_files_updated_at
AFTER UPDATE ON files
BEGIN
UPDATE files SET updated_at = strftime('%s', 'now')
WHERE id = new.id;
END;

CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL,
    parts BLOB NOT NULL default '[]',
    model TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER,
    FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS idx_messages_session_id ON messages (session_id);

CREATE TRIGGER IF NOT EXISTS update_messages_updated_at
AFTER UPDATE ON messages
BEGIN
UPDATE messages SET updated_at = strftime('%s', 'now')
WHERE id = new.id;
END;

CREATE TRIGGER IF NOT EXISTS update_session_message_count_on_insert
AFTER INSERT ON messages
BEGIN
UPDATE sessions SET
    message_count = message_count + 1
WHERE id = new.session_id;
END;

CREATE TRIGGER IF NOT EXISTS update_session_message_count_on_delete
AFTER DELETE ON messages
BEGIN
UPDATE sessions SET
    message_count = message_count - 1
WHERE id = old.session_id;
END;
";

const READ_FILES: &str = "
CREATE TABLE IF NOT EXISTS read_files (
    session_id TEXT NOT NULL CHECK (session_id != ''),
    path TEXT NOT NULL CHECK (path != ''),
    read_at INTEGER NOT NULL,
    FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE,
    PRIMARY KEY (path, session_id)
);

CREATE INDEX IF NOT EXISTS idx_read_files_session_id ON read_files (session_id);
CREATE INDEX IF NOT EXISTS idx_read_files_path ON read_files (path);
";

/// goose's bookkeeping table (its SQLite dialect), present in every real `crush.db`.
const GOOSE: &str = "
CREATE TABLE goose_db_version (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version_id INTEGER NOT NULL,
    is_applied INTEGER NOT NULL,
    tstamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
";

/// Creates Crush's schema (tables, indexes, triggers, goose's version table) in a new
/// database, in one transaction, in WAL mode with foreign keys on like Crush's own
/// connection. Fails on a database that already has any of these tables.
pub fn create_schema(conn: &Connection) -> Result<()> {
    // journal_mode cannot change inside a transaction; Crush sets it on every connect.
    let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(GOOSE)?;
    tx.execute(
        "INSERT INTO goose_db_version (version_id, is_applied) VALUES (0, 1)",
        [],
    )?;
    for (version, sql) in MIGRATIONS {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO goose_db_version (version_id, is_applied) VALUES (?1, 1)",
            [version],
        )?;
    }
    tx.commit()?;
    Ok(())
}
