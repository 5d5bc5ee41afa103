//! vllm-crush-db: Crush's session database: read conversations safely while Crush writes,
//! restore missing sessions.
//!
//! Crush keeps its sessions in SQLite at `<project>/.crush/crush.db` (the directory it
//! starts MCP servers in), in WAL mode, and writes to it while we read. The schema is
//! Crush's, not ours ([`schema`] quotes its migrations); this crate never creates,
//! migrates or re-configures that file.
//!
//! # Reading
//!
//! [`CrushDb::open_read_only`] opens with `SQLITE_OPEN_READ_ONLY` (no journal-mode change,
//! no write, no create). [`CrushDb::export`] reads a session, its sub-agent sessions
//! (recursively, by `parent_session_id`), their messages, files and read files inside one
//! read transaction: in WAL mode that is one consistent snapshot, taken without blocking
//! Crush and without being blocked by it. [`CrushDb::export_to`] writes the same
//! conversation as JSON to a writer row by row (a save streams it into the compressor),
//! byte for byte what serializing `export`'s [`Conversation`] gives.
//!
//! # Rows
//!
//! A [`Row`] is every column the table had, by name, as JSON cells ([`values`] gives the
//! mapping; the SQLite storage class is kept, so a 1.0 stays REAL and a TEXT never
//! becomes a BLOB). Columns vllm-mcp does not know (a newer Crush's) are kept like the
//! known ones, so a round trip is byte-exact across Crush versions. Keys are in
//! `serde_json::Map` order (sorted: this workspace does not enable `preserve_order`);
//! the order of columns is the target table's at restore, so it does not matter here.
//! Known columns are also checked (`parts` must be a JSON array of `{"type","data"}`
//! objects, timestamps integers, ...): a row that fails is kept as it is and noted in
//! [`Conversation::skipped`], as are rows of unknown tables tied to the sessions, which
//! are not saved.
//!
//! # Restoring
//!
//! [`restore`] inserts the sessions of a [`Conversation`] that are missing, in one
//! `BEGIN IMMEDIATE` transaction (the busy timeout makes it wait for Crush's own write
//! transactions), and never touches a session that exists. Crush's triggers make the
//! obvious order (sessions, then messages, then `UPDATE` the counters back) impossible
//! to get exact: inserting a message updates its session, and every `UPDATE` of a
//! session sets its `updated_at` to *now*. So, with foreign keys deferred to the commit,
//! messages, files and read files go in first (the count trigger finds no session row
//! and does nothing), then the sessions with their saved `message_count`, `updated_at`
//! and the rest, so no `UPDATE` ever runs. Every inserted row is then read back in the
//! same transaction and compared with the saved one; a difference (a target whose column
//! types or triggers differ) is reported in [`RestoreReport::differences`].
//!
//! IDs from callers are always bound as parameters. Table and column names in SQL come
//! from constants or from the database's own schema, quoted.
//!
//! # Errors
//!
//! Crush's database is SQLite like ours, and fails the same ways: this crate's errors are
//! the store's [`Error`] (`vllm_store::StoreError`), described as the store describes them.

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use vllm_store::{Result, StoreError as Error};

pub mod schema;
pub mod values;

pub use schema::create_schema;

/// One row: every column Crush had, by name, as JSON cells (see [`values`]).
pub type Row = serde_json::Map<String, Value>;

/// How long a read or the restore transaction waits for Crush's own writes.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SESSIONS: &str = "sessions";
const MESSAGES: &str = "messages";
const FILES: &str = "files";
const READ_FILES: &str = "read_files";

/// The tables holding a conversation's rows besides `sessions`, in `Conversation`'s
/// field order, with the column each is ordered by (then `rowid`, so rows written in
/// the same second keep their order). `export` and `export_to` both read through it,
/// which keeps their output byte for byte the same.
const TREE_TABLES: [(&str, &str); 3] = [
    (MESSAGES, "created_at"),
    (FILES, "created_at"),
    (READ_FILES, "read_at"),
];

/// The rows of `table` belonging to the sessions whose ids are the JSON array `?1`.
fn tree_rows_sql(table: &str, order: &str) -> String {
    format!(
        "SELECT * FROM {table} WHERE session_id IN (SELECT value FROM json_each(?1)) \
         ORDER BY {order}, rowid"
    )
}

/// One note per message part type the row checks did not know.
fn note_unknown_parts(notes: &mut Notes, kinds: BTreeSet<String>) {
    for kind in kinds {
        notes.push(format!(
            "message part type `{kind}` is unknown to vllm-mcp (a newer Crush's?); kept as-is"
        ));
    }
}

/// Part types Crush writes (`internal/message/message.go`, `partType`).
const PART_TYPES: &[&str] = &[
    "reasoning",
    "text",
    "image_url",
    "binary",
    "tool_call",
    "tool_result",
    "finish",
    "shell_command",
];

/// Tables of Crush's that are not session data and need no mention.
const IGNORED_TABLES: &[&str] = &["goose_db_version"];

/// The most notes [`Conversation::skipped`] lists one by one; the rest are counted.
const MAX_NOTES: usize = 100;

/// Where Crush's database is: the `configured` path (the config's `crush.db_path`, which
/// `VLLM_MCP_CRUSH_DB` already overrides), else `./.crush/crush.db` in the working
/// directory. `Some` only when that file exists; a relative path is made absolute against
/// the working directory.
pub fn locate(configured: Option<&Path>) -> Option<PathBuf> {
    let p = configured
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".crush").join("crush.db"));
    if !p.is_file() {
        return None;
    }
    Some(std::path::absolute(&p).unwrap_or(p))
}

/// A read-only connection to Crush's database.
#[derive(Debug)]
pub struct CrushDb {
    conn: Connection,
    path: PathBuf,
    busy_timeout: Duration,
}

/// A saved conversation: a root session, its sub-agent sessions and their rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The session that was asked for; the others descend from it.
    pub root_id: String,
    /// The root first when it is the oldest (by `created_at`, then insertion order).
    pub sessions: Vec<Row>,
    /// Ordered by `created_at`, then insertion order (Crush's ids are random UUIDs, so
    /// the id would shuffle the messages of one second).
    pub messages: Vec<Row>,
    /// Crush's file history rows of these sessions.
    pub files: Vec<Row>,
    /// Crush's record of which files each session has read.
    pub read_files: Vec<Row>,
    /// What was not understood and skipped (rows of unknown tables, undecodable
    /// values), for the answer to say. Rows with such values are still saved as-is.
    pub skipped: Vec<String>,
}

impl Conversation {
    /// Messages of all its sessions.
    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    /// The root session and its sub-agent sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The root session's title.
    pub fn title(&self) -> Option<String> {
        self.sessions
            .iter()
            .find(|s| str_cell(s, "id") == Some(self.root_id.as_str()))
            .and_then(|s| str_cell(s, "title"))
            .map(str::to_owned)
    }

    /// Total bytes of the messages' `parts` (the bulk of a conversation).
    pub fn parts_bytes(&self) -> usize {
        self.messages
            .iter()
            .map(|m| match m.get("parts") {
                Some(Value::String(s)) => s.len(),
                Some(other) => other.to_string().len(),
                None => 0,
            })
            .sum()
    }
}

/// What [`CrushDb::export_to`] wrote, besides the JSON: what an answer says of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// The root session's title.
    pub title: Option<String>,
    pub session_count: usize,
    pub message_count: usize,
    /// As [`Conversation::skipped`].
    pub skipped: Vec<String>,
}

/// A write error while streaming a conversation out.
fn write_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("writing the conversation: {e}"))
}

/// Streams the rows of a query as JSON objects separated by commas (the inside of a
/// JSON array), checking each as [`CrushDb::export`] does. Returns the row count.
#[allow(clippy::too_many_arguments)]
fn stream_rows(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    table: &str,
    out: &mut dyn std::io::Write,
    notes: &mut Notes,
    unknown_parts: &mut BTreeSet<String>,
    map: &dyn Fn(rusqlite::Error) -> Error,
) -> Result<usize> {
    let mut st = conn.prepare(sql).map_err(map)?;
    let names: Vec<String> = st.column_names().map(str::to_owned).collect();
    let mut rows = st.query(params).map_err(map)?;
    let mut n = 0usize;
    while let Some(r) = rows.next().map_err(map)? {
        let mut m = Row::new();
        for (i, name) in names.iter().enumerate() {
            m.insert(name.clone(), values::to_json(r.get_ref(i).map_err(map)?));
        }
        check_row(table, &m, notes, unknown_parts);
        if n > 0 {
            out.write_all(b",").map_err(write_error)?;
        }
        serde_json::to_writer(&mut *out, &m).map_err(write_error)?;
        n += 1;
    }
    Ok(n)
}

/// A session, for listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    pub id: String,
    pub title: Option<String>,
    pub message_count: i64,
    pub updated_at: i64,
    /// `None` for a top-level session, the parent for a sub-agent's.
    pub parent_session_id: Option<String>,
}

/// What [`restore`] did. Counts are rows actually inserted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub sessions_inserted: usize,
    pub messages_inserted: usize,
    pub files_inserted: usize,
    pub read_files_inserted: usize,
    /// Sessions of the conversation that Crush's database already has, left untouched
    /// (with their messages and files). When the root is among them nothing is inserted.
    pub sessions_skipped_existing: Vec<String>,
    /// `table.column` saved but absent from the target (not written), or
    /// `table (...)` for a whole table the target lacks.
    pub columns_skipped: Vec<String>,
    /// Inserted cells that read back different from the saved ones (a target whose
    /// column types or triggers differ from the source's). Empty on a Crush database.
    pub differences: Vec<String>,
}

fn str_cell<'a>(row: &'a Row, key: &str) -> Option<&'a str> {
    row.get(key).and_then(Value::as_str)
}

/// A closure mapping a SQLite failure to [`Error::Storage`] naming `path`.
fn storage(path: &Path, busy: Duration) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| vllm_store::storage_error(&e, path, busy)
}

fn storage_msg(path: &Path, message: impl Into<String>) -> Error {
    Error::Storage {
        message: message.into(),
        path: Some(path.to_path_buf()),
    }
}

/// `"name"` with inner quotes doubled: for table and column names read from the schema.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Reads `sqlite_master` (which fails on a file that is not a database) and checks the
/// two tables without which this is not a Crush database.
fn check_crush_tables(conn: &Connection, path: &Path, busy: Duration) -> Result<Vec<String>> {
    let mut st = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .map_err(storage(path, busy))?;
    let tables = st
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(storage(path, busy))?;
    for needed in [SESSIONS, MESSAGES] {
        if !tables.iter().any(|t| t == needed) {
            return Err(storage_msg(
                path,
                format!(
                    "not a Crush session database: it has no `{needed}` table (is the path right, and has Crush run here?)"
                ),
            ));
        }
    }
    Ok(tables)
}

/// A column of a target table.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// False for generated and hidden columns, which an INSERT cannot name.
    writable: bool,
}

/// The columns of `table` in order, or `None` when the table does not exist.
fn table_columns(conn: &Connection, table: &str) -> rusqlite::Result<Option<Vec<Column>>> {
    let mut st = conn.prepare("SELECT name, hidden FROM pragma_table_xinfo(?1) ORDER BY cid")?;
    let cols = st
        .query_map([table], |r| {
            Ok(Column {
                name: r.get(0)?,
                writable: r.get::<_, i64>(1)? == 0,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((!cols.is_empty()).then_some(cols))
}

/// Runs a query and returns every row as a [`Row`].
fn query_rows(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Row>> {
    let mut st = conn.prepare(sql)?;
    let names: Vec<String> = st.column_names().map(str::to_owned).collect();
    let mut rows = st.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut m = Row::new();
        for (i, n) in names.iter().enumerate() {
            m.insert(n.clone(), values::to_json(r.get_ref(i)?));
        }
        out.push(m);
    }
    Ok(out)
}

/// Notes for [`Conversation::skipped`], capped at [`MAX_NOTES`].
#[derive(Default)]
struct Notes {
    list: Vec<String>,
    more: usize,
}

impl Notes {
    fn push(&mut self, note: String) {
        if self.list.len() < MAX_NOTES {
            self.list.push(note);
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.list
                .push(format!("... and {} more notes like these", self.more));
        }
        self.list
    }
}

/// A cell's text, for checks: TEXT as is, a BLOB's bytes if they are UTF-8.
fn text_of(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        Value::Object(m) => m
            .get(values::BLOB_KEY)
            .and_then(Value::as_str)
            .and_then(|b| values::b64_decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .map(std::borrow::Cow::Owned),
        _ => None,
    }
}

/// Checks one `messages.parts` cell (text, or a blob as the value codec writes it) the
/// way a save reads it: why it is not what Crush writes (`None` when it is), and the
/// part types this version does not know. The fuzz target drives it.
pub fn check_parts_cell(parts: &Value) -> (Option<String>, BTreeSet<String>) {
    let mut unknown = BTreeSet::new();
    let problem = check_parts(parts, &mut unknown);
    (problem, unknown)
}

/// Why `parts` is not what Crush writes, or `None` when it is. Unknown part types are
/// listed in `unknown` (a newer Crush's; kept like the rest).
fn check_parts(parts: &Value, unknown: &mut BTreeSet<String>) -> Option<String> {
    #[derive(Deserialize)]
    struct Part {
        #[serde(rename = "type")]
        kind: String,
        #[allow(dead_code)]
        data: serde::de::IgnoredAny,
    }
    let Some(text) = text_of(parts) else {
        return Some("`parts` is not text".into());
    };
    match serde_json::from_str::<Vec<Part>>(&text) {
        Ok(list) => {
            for p in list {
                if !PART_TYPES.contains(&p.kind.as_str()) {
                    unknown.insert(p.kind);
                }
            }
            None
        }
        Err(e) => Some(format!(
            "`parts` is not a JSON array of {{\"type\", \"data\"}} objects ({e})"
        )),
    }
}

fn check_row(table: &str, row: &Row, notes: &mut Notes, unknown_parts: &mut BTreeSet<String>) {
    let id = match table {
        READ_FILES => format!(
            "{}:{}",
            str_cell(row, "session_id").unwrap_or("?"),
            str_cell(row, "path").unwrap_or("?")
        ),
        _ => str_cell(row, "id").unwrap_or("?").to_owned(),
    };
    let (texts, ints): (&[&str], &[&str]) = match table {
        SESSIONS => (&["id"], &["message_count", "updated_at", "created_at"]),
        MESSAGES => (&["id", "session_id", "role"], &["created_at", "updated_at"]),
        FILES => (&["id", "session_id", "path"], &["created_at", "updated_at"]),
        _ => (&["session_id", "path"], &["read_at"]),
    };
    for c in texts {
        if let Some(v) = row.get(*c)
            && !v.is_string()
        {
            notes.push(format!(
                "{table} `{id}`: `{c}` is {v} where text was expected (kept as-is)"
            ));
        }
    }
    for c in ints {
        if let Some(v) = row.get(*c)
            && !(v.is_i64() || v.is_null())
        {
            notes.push(format!(
                "{table} `{id}`: `{c}` is {} where a Unix time or count was expected (kept as-is)",
                short(v)
            ));
        }
    }
    if table == MESSAGES
        && let Some(parts) = row.get("parts")
        && let Some(why) = check_parts(parts, unknown_parts)
    {
        notes.push(format!("message `{id}`: {why}; kept as-is"));
    }
}

/// A value shortened for a note.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 60 {
        s
    } else {
        let mut end = 60;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

impl CrushDb {
    /// Opens Crush's database read-only (`SQLITE_OPEN_READ_ONLY | SQLITE_OPEN_NO_MUTEX`:
    /// never creates, writes, nor changes the journal mode) with [`BUSY_TIMEOUT`]. Works
    /// while Crush writes in WAL mode. A missing file, a file that is not a database, or
    /// one without Crush's `sessions` and `messages` tables is an [`Error::Storage`].
    pub fn open_read_only(path: &Path) -> Result<CrushDb> {
        CrushDb::open_read_only_with_timeout(path, BUSY_TIMEOUT)
    }

    /// [`CrushDb::open_read_only`] with another busy timeout.
    pub fn open_read_only_with_timeout(path: &Path, busy_timeout: Duration) -> Result<CrushDb> {
        if !path.is_file() {
            return Err(storage_msg(path, "no Crush database at this path"));
        }
        let map = storage(path, busy_timeout);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&map)?;
        conn.busy_timeout(busy_timeout).map_err(&map)?;
        check_crush_tables(&conn, path, busy_timeout)?;
        Ok(CrushDb {
            conn,
            path: path.to_path_buf(),
            busy_timeout,
        })
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn map(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        storage(&self.path, self.busy_timeout)
    }

    /// The most recently updated top-level session (Crush's `current`): greatest
    /// `updated_at` among sessions without a parent; ties go to the newest created.
    pub fn latest_session(&self) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT id FROM sessions WHERE parent_session_id IS NULL \
                 ORDER BY updated_at DESC, created_at DESC, rowid DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.map())
    }

    /// Whether a session (top-level or not) with this id exists.
    pub fn session_exists(&self, id: &str) -> Result<bool> {
        self.conn
            .query_row("SELECT 1 FROM sessions WHERE id = ?1", [id], |_| Ok(()))
            .optional()
            .map(|o| o.is_some())
            .map_err(self.map())
    }

    /// Sessions for listing, sub-agent sessions included (see `parent_session_id`),
    /// newest `updated_at` first, at most `limit`.
    pub fn sessions(&self, limit: usize) -> Result<Vec<SessionRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, title, message_count, updated_at, parent_session_id FROM sessions \
                 ORDER BY updated_at DESC, created_at DESC, rowid DESC LIMIT ?1",
            )
            .map_err(self.map())?;
        st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(SessionRow {
                id: r.get(0)?,
                title: r.get(1)?,
                message_count: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                updated_at: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                parent_session_id: r.get(4)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(self.map())
    }

    /// The session `id` and all its sub-agent sessions (recursively), their messages,
    /// files and read files, read in one transaction: one consistent snapshot even while
    /// Crush writes. `None` when the session does not exist.
    pub fn export(&self, id: &str) -> Result<Option<Conversation>> {
        let map = self.map();
        // A deferred transaction: the snapshot is taken at the first read and held to
        // the end; dropping it (a read-only one) just ends it.
        let tx = self.conn.unchecked_transaction().map_err(&map)?;
        let Some((sessions, ids_json)) = self.session_tree(&tx, id)? else {
            return Ok(None);
        };
        let tables = check_crush_tables(&tx, &self.path, self.busy_timeout)?;
        // Messages are always there (check_crush_tables insists); files and read_files
        // only in some Crush versions.
        let mut rows = Vec::with_capacity(TREE_TABLES.len());
        for (table, order) in TREE_TABLES {
            rows.push(if table == MESSAGES || tables.iter().any(|t| t == table) {
                query_rows(&tx, &tree_rows_sql(table, order), [&ids_json]).map_err(&map)?
            } else {
                Vec::new()
            });
        }
        let [messages, files, read_files]: [Vec<Row>; 3] = rows
            .try_into()
            .map_err(|_| Error::Internal("three conversation tables".into()))?;

        let mut notes = Notes::default();
        self.note_unknown_tables(&tx, &tables, &ids_json, &mut notes)?;
        // End the snapshot before the (CPU-only) checks: a reader holding one keeps
        // Crush's checkpoints from emptying the WAL.
        drop(tx);

        let mut unknown_parts = BTreeSet::new();
        for (table, rows) in [
            (SESSIONS, &sessions),
            (MESSAGES, &messages),
            (FILES, &files),
            (READ_FILES, &read_files),
        ] {
            for row in rows {
                check_row(table, row, &mut notes, &mut unknown_parts);
            }
        }
        note_unknown_parts(&mut notes, unknown_parts);
        Ok(Some(Conversation {
            root_id: id.to_owned(),
            sessions,
            messages,
            files,
            read_files,
            skipped: notes.finish(),
        }))
    }

    /// Writes the conversation [`CrushDb::export`] would return, as the JSON that
    /// serializing that [`Conversation`] gives (byte for byte), straight to `out`, one row
    /// at a time: the rows never exist in memory together. `None` (nothing written) when
    /// the session does not exist.
    ///
    /// One read transaction, as for `export`, but held while `out` takes the rows (for a
    /// save, the zstd encoder: a few hundred ms for tens of MB), so Crush's WAL
    /// checkpoints wait that long to empty the WAL. `skipped` comes last in the JSON, so
    /// the notes of the row checks are known by then.
    pub fn export_to(
        &self,
        id: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<Option<ExportSummary>> {
        let map = self.map();
        let tx = self.conn.unchecked_transaction().map_err(&map)?;
        let Some((sessions, ids_json)) = self.session_tree(&tx, id)? else {
            return Ok(None);
        };
        let tables = check_crush_tables(&tx, &self.path, self.busy_timeout)?;
        let mut notes = Notes::default();
        // Same order of notes as `export`: unknown tables, then the rows' checks by table.
        self.note_unknown_tables(&tx, &tables, &ids_json, &mut notes)?;
        let mut unknown_parts = BTreeSet::new();
        let title = sessions
            .iter()
            .find(|s| str_cell(s, "id") == Some(id))
            .and_then(|s| str_cell(s, "title"))
            .map(str::to_owned);

        // The field order of `Conversation`'s derived Serialize.
        out.write_all(b"{\"root_id\":").map_err(write_error)?;
        serde_json::to_writer(&mut *out, id).map_err(write_error)?;
        out.write_all(b",\"sessions\":").map_err(write_error)?;
        for row in &sessions {
            check_row(SESSIONS, row, &mut notes, &mut unknown_parts);
        }
        serde_json::to_writer(&mut *out, &sessions).map_err(write_error)?;
        // `Conversation`'s field names are the table names, in TREE_TABLES order.
        let mut message_count = 0;
        for (table, order) in TREE_TABLES {
            let opening = if table == MESSAGES { "," } else { "]," };
            out.write_all(format!("{opening}\"{table}\":[").as_bytes())
                .map_err(write_error)?;
            if table == MESSAGES || tables.iter().any(|t| t == table) {
                let n = stream_rows(
                    &tx,
                    &tree_rows_sql(table, order),
                    [&ids_json],
                    table,
                    out,
                    &mut notes,
                    &mut unknown_parts,
                    &map,
                )?;
                if table == MESSAGES {
                    message_count = n;
                }
            }
        }
        drop(tx);
        note_unknown_parts(&mut notes, unknown_parts);
        let skipped = notes.finish();
        out.write_all(b"],\"skipped\":").map_err(write_error)?;
        serde_json::to_writer(&mut *out, &skipped).map_err(write_error)?;
        out.write_all(b"}").map_err(write_error)?;
        Ok(Some(ExportSummary {
            title,
            session_count: sessions.len(),
            message_count,
            skipped,
        }))
    }

    /// The session `id` and its sub-agent sessions (recursively), oldest first, with
    /// their ids as a JSON array for the `?1` of [`tree_rows_sql`]; `None` when the
    /// session does not exist.
    fn session_tree(&self, conn: &Connection, id: &str) -> Result<Option<(Vec<Row>, String)>> {
        // UNION (not UNION ALL) drops ids already seen, so a parent cycle cannot loop.
        let sessions = query_rows(
            conn,
            "WITH RECURSIVE tree(id) AS (
                 SELECT id FROM sessions WHERE id = ?1
                 UNION
                 SELECT s.id FROM sessions s JOIN tree t ON s.parent_session_id = t.id
             )
             SELECT * FROM sessions WHERE id IN (SELECT id FROM tree) ORDER BY created_at, rowid",
            [id],
        )
        .map_err(self.map())?;
        if sessions.is_empty() {
            return Ok(None);
        }
        let ids: Vec<&str> = sessions.iter().filter_map(|s| str_cell(s, "id")).collect();
        let ids_json = serde_json::to_string(&ids).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Some((sessions, ids_json)))
    }

    /// Notes the tables Crush has that this module does not know and that hold rows of
    /// these sessions (a `session_id` column, or a foreign key to `sessions`): those rows
    /// are not saved. Unrelated tables (goose's version table, SQLite's) are ignored.
    fn note_unknown_tables(
        &self,
        conn: &Connection,
        tables: &[String],
        ids_json: &str,
        notes: &mut Notes,
    ) -> Result<()> {
        let map = self.map();
        for table in tables {
            if [SESSIONS, MESSAGES, FILES, READ_FILES].contains(&table.as_str())
                || IGNORED_TABLES.contains(&table.as_str())
                || table.starts_with("sqlite_")
            {
                continue;
            }
            // A virtual table of a module this build leaves out of SQLite (FTS, R-tree:
            // Crush uses none today) cannot be read: say so rather than fail the save.
            let columns = match table_columns(conn, table) {
                Err(e) if e.to_string().contains("no such module") => {
                    notes.push(format!(
                        "table `{table}` is a virtual table vllm-mcp cannot read ({e}): rows it holds of these sessions were not saved"
                    ));
                    continue;
                }
                other => other.map_err(&map)?,
            };
            let mut links: BTreeSet<String> = columns
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.name.eq_ignore_ascii_case("session_id"))
                .map(|c| c.name)
                .collect();
            let mut st = conn
                .prepare(
                    "SELECT \"from\" FROM pragma_foreign_key_list(?1) WHERE \"table\" = 'sessions'",
                )
                .map_err(&map)?;
            for from in st
                .query_map([table], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(&map)?
            {
                links.insert(from);
            }
            if links.is_empty() {
                continue;
            }
            let cond = links
                .iter()
                .map(|c| format!("{} IN (SELECT value FROM json_each(?1))", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(" OR ");
            let n: i64 = conn
                .query_row(
                    &format!("SELECT count(*) FROM {} WHERE {cond}", quote_ident(table)),
                    [ids_json],
                    |r| r.get(0),
                )
                .map_err(&map)?;
            if n > 0 {
                notes.push(format!(
                    "table `{table}` is unknown to vllm-mcp: its {n} row(s) of these sessions were not saved"
                ));
            }
        }
        Ok(())
    }
}

/// Restores the sessions of `conv` that are missing from Crush's database at `path`, in
/// one `BEGIN IMMEDIATE` transaction that waits up to [`BUSY_TIMEOUT`] for Crush's own
/// writes. See the module docs for the order and why.
///
/// - A conversation whose root session exists is skipped entirely (reported in
///   `sessions_skipped_existing`); so is any other existing session with its rows.
/// - Only columns the target has are written (read with `PRAGMA table_xinfo` first);
///   the others are listed in `columns_skipped`.
/// - All or nothing: any failure (an id already used elsewhere, a constraint, a
///   trigger, a lock held past the timeout) rolls everything back; the error says which
///   row. A conversation that is inconsistent in itself (a message of a session it does
///   not have) is refused before the database is opened ([`Error::InvalidArgument`]).
pub fn restore(path: &Path, conv: &Conversation) -> Result<RestoreReport> {
    restore_with_timeout(path, conv, BUSY_TIMEOUT)
}

/// [`restore`] with another busy timeout.
pub fn restore_with_timeout(
    path: &Path,
    conv: &Conversation,
    busy_timeout: Duration,
) -> Result<RestoreReport> {
    validate(conv)?;
    let map = storage(path, busy_timeout);
    let meta = std::fs::metadata(path)
        .map_err(|e| storage_msg(path, format!("no Crush database at this path ({e})")))?;
    // Checked here too because a process running as root would otherwise write a file
    // its owner marked read-only.
    if meta.permissions().readonly() {
        return Err(storage_msg(
            path,
            "Crush's database file is read-only: check its permissions; nothing was restored",
        ));
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(&map)?;
    conn.busy_timeout(busy_timeout).map_err(&map)?;
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(&map)? {
        return Err(storage_msg(
            path,
            "Crush's database could only be opened read-only: check the permissions of the file and its directory; nothing was restored",
        ));
    }
    // Per connection, and only outside a transaction: Crush runs with it on too.
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(&map)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&map)?;
    let report = write_conversation(&tx, conv, path, busy_timeout)?;
    tx.commit().map_err(|e| {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) {
            storage_msg(
                path,
                format!("restoring would leave rows pointing at missing sessions ({e}); nothing was restored"),
            )
        } else {
            map(e)
        }
    })?;
    tracing::info!(
        path = %path.display(),
        root = %conv.root_id,
        sessions = report.sessions_inserted,
        messages = report.messages_inserted,
        skipped = report.sessions_skipped_existing.len(),
        "restored a conversation into Crush's database"
    );
    Ok(report)
}

/// The session ids of `conv`; refuses a conversation that is inconsistent in itself.
fn validate(conv: &Conversation) -> Result<HashSet<&str>> {
    let bad = |reason: String| Error::invalid("conversation", reason);
    let mut ids = HashSet::new();
    for s in &conv.sessions {
        let id = str_cell(s, "id").ok_or_else(|| bad("a session has no text `id`".into()))?;
        if !ids.insert(id) {
            return Err(bad(format!("session `{id}` appears twice")));
        }
    }
    if !ids.contains(conv.root_id.as_str()) {
        return Err(bad(format!(
            "its root session `{}` is not among its sessions",
            conv.root_id
        )));
    }
    for (table, rows) in [
        (MESSAGES, &conv.messages),
        (FILES, &conv.files),
        (READ_FILES, &conv.read_files),
    ] {
        let mut seen = HashSet::new();
        for r in rows {
            let sid = str_cell(r, "session_id")
                .ok_or_else(|| bad(format!("a row of {table} has no text `session_id`")))?;
            if !ids.contains(sid) {
                return Err(bad(format!(
                    "a row of {table} belongs to session `{sid}`, which the conversation does not have"
                )));
            }
            if table != READ_FILES {
                let id = str_cell(r, "id")
                    .ok_or_else(|| bad(format!("a row of {table} has no text `id`")))?;
                if !seen.insert(id) {
                    return Err(bad(format!("{table} row `{id}` appears twice")));
                }
            }
        }
    }
    Ok(ids)
}

/// Inserts the missing sessions of `conv` and their rows through `conn` (the database
/// at `path`), which must be inside a transaction the caller commits (or drops on
/// error): [`restore`]'s insert path, for tools that build Crush databases (the test
/// and benchmark generator).
pub fn insert_conversation(
    conn: &Connection,
    conv: &Conversation,
    path: &Path,
) -> Result<RestoreReport> {
    write_conversation(conn, conv, path, BUSY_TIMEOUT)
}

fn write_conversation(
    conn: &Connection,
    conv: &Conversation,
    path: &Path,
    busy: Duration,
) -> Result<RestoreReport> {
    let map = storage(path, busy);
    validate(conv)?;
    let tables = check_crush_tables(conn, path, busy)?;
    let mut report = RestoreReport::default();

    let mut existing = HashSet::new();
    for s in &conv.sessions {
        let id = str_cell(s, "id").unwrap_or_default();
        let found = conn
            .query_row("SELECT 1 FROM sessions WHERE id = ?1", [id], |_| Ok(()))
            .optional()
            .map_err(&map)?
            .is_some();
        if found {
            existing.insert(id);
        }
    }
    if existing.contains(conv.root_id.as_str()) {
        report.sessions_skipped_existing.push(conv.root_id.clone());
        return Ok(report);
    }
    for s in &conv.sessions {
        if let Some(id) = str_cell(s, "id")
            && existing.contains(id)
        {
            report.sessions_skipped_existing.push(id.to_owned());
        }
    }
    // Checked at commit, so that rows can go in before their session (module docs).
    conn.pragma_update(None, "defer_foreign_keys", true)
        .map_err(&map)?;

    let mut inserted: Vec<(&'static str, &Row, Vec<String>)> = Vec::new();
    for (table, rows) in [
        (MESSAGES, &conv.messages),
        (FILES, &conv.files),
        (READ_FILES, &conv.read_files),
        (SESSIONS, &conv.sessions),
    ] {
        // A session is written when it is missing; the other rows with their session.
        let owner = if table == SESSIONS {
            "id"
        } else {
            "session_id"
        };
        let rows: Vec<&Row> = rows
            .iter()
            .filter(|r| str_cell(r, owner).is_some_and(|id| !existing.contains(id)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let Some(columns) = (if tables.iter().any(|t| t == table) {
            table_columns(conn, table).map_err(&map)?
        } else {
            None
        }) else {
            report.columns_skipped.push(format!(
                "{table} (the target has no such table: {} row(s) not restored)",
                rows.len()
            ));
            continue;
        };
        let by_name: HashMap<String, &Column> = columns
            .iter()
            .map(|c| (c.name.to_ascii_lowercase(), c))
            .collect();
        let mut skipped_here = BTreeSet::new();
        for row in &rows {
            for key in row.keys() {
                match by_name.get(&key.to_ascii_lowercase()) {
                    Some(c) if c.writable => {}
                    Some(_) => {
                        skipped_here.insert(format!("{table}.{key} (generated in the target)"));
                    }
                    None => {
                        skipped_here.insert(format!("{table}.{key}"));
                    }
                }
            }
        }
        report.columns_skipped.extend(skipped_here);
        for row in rows {
            let cols = insert_row(conn, table, &columns, row, path)?;
            inserted.push((table, row, cols));
        }
        let n = inserted.iter().filter(|(t, ..)| *t == table).count();
        match table {
            SESSIONS => report.sessions_inserted = n,
            MESSAGES => report.messages_inserted = n,
            FILES => report.files_inserted = n,
            _ => report.read_files_inserted = n,
        }
    }
    report.differences = verify(conn, &inserted).map_err(&map)?;
    Ok(report)
}

/// Inserts one row, writing the target's columns that the row has, in the target's
/// order. Returns the row's keys that were written.
fn insert_row(
    conn: &Connection,
    table: &str,
    columns: &[Column],
    row: &Row,
    path: &Path,
) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut placeholders = Vec::new();
    let mut keys = Vec::new();
    let mut binds: Vec<ToSqlOutput<'_>> = Vec::new();
    for c in columns.iter().filter(|c| c.writable) {
        let Some((key, value)) = row
            .get_key_value(&c.name)
            .or_else(|| row.iter().find(|(k, _)| k.eq_ignore_ascii_case(&c.name)))
        else {
            continue;
        };
        let bind = values::to_sql(value).map_err(|why| {
            Error::invalid(
                "conversation",
                format!(
                    "{table} row {}: column `{key}`: {why}",
                    row_label(table, row)
                ),
            )
        })?;
        binds.push(bind);
        names.push(quote_ident(&c.name));
        let n = binds.len();
        placeholders.push(if values::needs_text_cast(value) {
            format!("CAST(?{n} AS TEXT)")
        } else {
            format!("?{n}")
        });
        keys.push(key.clone());
    }
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote_ident(table),
        names.join(", "),
        placeholders.join(", ")
    );
    let result = conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.execute(rusqlite::params_from_iter(binds.iter())));
    if let Err(e) = result {
        let hint = if e.to_string().contains("UNIQUE") || e.to_string().contains("PRIMARY KEY") {
            " (a row with this key already exists in Crush's database, perhaps under another session)"
        } else {
            ""
        };
        return Err(storage_msg(
            path,
            format!(
                "restoring {table} row {} failed: {e}{hint}; nothing was restored",
                row_label(table, row)
            ),
        ));
    }
    Ok(keys)
}

fn row_label(table: &str, row: &Row) -> String {
    if table == READ_FILES {
        format!(
            "(session `{}`, path `{}`)",
            str_cell(row, "session_id").unwrap_or("?"),
            str_cell(row, "path").unwrap_or("?")
        )
    } else {
        format!("`{}`", str_cell(row, "id").unwrap_or("?"))
    }
}

/// Reads every inserted row back and lists the written cells that differ.
fn verify(
    conn: &Connection,
    inserted: &[(&'static str, &Row, Vec<String>)],
) -> rusqlite::Result<Vec<String>> {
    let mut notes = Notes::default();
    for (table, row, keys) in inserted {
        let found = if *table == READ_FILES {
            let mut st = conn
                .prepare_cached("SELECT * FROM read_files WHERE session_id = ?1 AND path = ?2")?;
            let names: Vec<String> = st.column_names().map(str::to_owned).collect();
            let sid = row
                .get("session_id")
                .map(values::to_sql)
                .and_then(|r| r.ok());
            let p = row.get("path").map(values::to_sql).and_then(|r| r.ok());
            let mut rows = st.query([sid, p])?;
            read_one(&mut rows, &names)?
        } else {
            let mut st = conn.prepare_cached(&format!(
                "SELECT * FROM {} WHERE id = ?1",
                quote_ident(table)
            ))?;
            let names: Vec<String> = st.column_names().map(str::to_owned).collect();
            let id = row.get("id").map(values::to_sql).and_then(|r| r.ok());
            let mut rows = st.query([id])?;
            read_one(&mut rows, &names)?
        };
        let label = row_label(table, row);
        let Some(found) = found else {
            notes.push(format!("{table} row {label} is missing after its insert"));
            continue;
        };
        for key in keys {
            let got = found.get(key).or_else(|| {
                found
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            });
            let want = &row[key.as_str()];
            if got != Some(want) {
                notes.push(format!(
                    "{table} row {label}: `{key}` reads back as {}, saved {}",
                    got.map(short).unwrap_or_else(|| "nothing".into()),
                    short(want)
                ));
            }
        }
    }
    Ok(notes.finish())
}

fn read_one(rows: &mut rusqlite::Rows<'_>, names: &[String]) -> rusqlite::Result<Option<Row>> {
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let mut m = Row::new();
    for (i, n) in names.iter().enumerate() {
        m.insert(n.clone(), values::to_json(r.get_ref(i)?));
    }
    Ok(Some(m))
}

#[cfg(test)]
mod parts_props {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn part_kind() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(PART_TYPES).prop_map(String::from),
            1 => "[a-z_]{1,12}",
        ]
    }

    proptest! {
        #[test]
        fn well_formed_parts_pass_and_unknown_types_are_named(
            parts in prop::collection::vec((part_kind(), json_value()), 0..6),
            as_blob in any::<bool>(),
        ) {
            let list: Vec<Value> = parts
                .iter()
                .map(|(k, d)| serde_json::json!({"type": k, "data": d}))
                .collect();
            let text = serde_json::to_string(&list).unwrap();
            let cell = if as_blob {
                serde_json::json!({ values::BLOB_KEY: values::b64_encode(text.as_bytes()) })
            } else {
                Value::String(text)
            };
            let mut unknown = BTreeSet::new();
            prop_assert_eq!(check_parts(&cell, &mut unknown), None);
            let expected: BTreeSet<String> = parts
                .iter()
                .map(|(k, _)| k.clone())
                .filter(|k| !PART_TYPES.contains(&k.as_str()))
                .collect();
            prop_assert_eq!(unknown, expected);
        }

        #[test]
        fn anything_else_is_a_reason_not_a_panic(cell in json_value(), text in any::<String>()) {
            let mut unknown = BTreeSet::new();
            let _ = check_parts(&cell, &mut unknown);
            let r = check_parts(&Value::String(text.clone()), &mut unknown);
            if serde_json::from_str::<Vec<Value>>(&text).is_err() {
                prop_assert!(r.is_some());
            }
        }
    }
}
