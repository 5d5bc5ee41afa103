//! Tests of `vllm_crush_db` against databases made with Crush's schema, the generator and hand-written rows.

use rusqlite::{Connection, params};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use vllm_crush_db::Error;
use vllm_crush_db::{self as crush_db, Conversation, CrushDb, Row};
use vllm_crush_gen::{self as generate, ConversationSpec};

/// A new database file with Crush's schema, and a connection to it like Crush's own.
fn crush_db(dir: &Path, name: &str) -> (PathBuf, Connection) {
    let path = dir.join(name);
    let conn = crush_connection(&path);
    crush_db::create_schema(&conn).unwrap();
    (path, conn)
}

/// A connection with Crush's pragmas (`internal/db/connect.go`).
fn crush_connection(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.pragma_update(None, "foreign_keys", true).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn
}

fn spec(
    seed: u64,
    messages: usize,
    sub_sessions: usize,
    target: Option<usize>,
) -> ConversationSpec {
    ConversationSpec {
        seed,
        messages,
        sub_sessions,
        target_bytes: target,
    }
}

fn id_of(row: &Row) -> &str {
    row["id"].as_str().unwrap()
}

fn session<'a>(conv: &'a Conversation, id: &str) -> &'a Row {
    conv.sessions.iter().find(|s| id_of(s) == id).unwrap()
}

/// Inserts a message the way Crush's `CreateMessage` does (the triggers fire).
fn crush_insert_message(conn: &Connection, id: &str, session: &str, parts: &str) {
    conn.execute(
        "INSERT INTO messages (id, session_id, role, parts, model, provider, is_summary_message, created_at, updated_at)
         VALUES (?1, ?2, 'assistant', ?3, 'm', 'vllm', 0, strftime('%s', 'now'), strftime('%s', 'now'))",
        params![id, session, parts],
    )
    .unwrap();
}

/// Crush's `CreateSession`, with explicit times.
fn crush_insert_session(conn: &Connection, id: &str, parent: Option<&str>, updated_at: i64) {
    conn.execute(
        "INSERT INTO sessions (id, parent_session_id, title, message_count, prompt_tokens, completion_tokens, cost, summary_message_id, updated_at, created_at)
         VALUES (?1, ?2, ?3, 0, 0, 0, 0.0, NULL, ?4, ?4)",
        params![id, parent, format!("title of {id}"), updated_at],
    )
    .unwrap();
}

fn storage_error(e: Error) -> (String, PathBuf) {
    match e {
        Error::Storage {
            message,
            path: Some(path),
        } => (message, path),
        other => panic!("expected a storage error with a path, got {other:?}"),
    }
}

fn assert_message_counts_match(conv: &Conversation) {
    for s in &conv.sessions {
        let n = conv
            .messages
            .iter()
            .filter(|m| m["session_id"] == s["id"])
            .count();
        assert_eq!(
            s["message_count"].as_i64().unwrap(),
            n as i64,
            "session {}",
            id_of(s)
        );
    }
}

#[test]
fn export_reads_the_tree_of_sub_agent_sessions_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = crush_db(dir.path(), "crush.db");
    let spec = spec(1, 300, 2, Some(1_000_000));
    let root = generate::insert(&conn, &spec).unwrap();
    let generated = generate::conversation(&spec);

    // The generator nests the second sub-session in the first: two levels.
    let db = CrushDb::open_read_only(&path).unwrap();
    let conv = db.export(&root).unwrap().unwrap();
    assert_eq!(
        conv, generated,
        "an export equals what was inserted, byte for byte"
    );
    assert_eq!(conv.session_count(), 3);
    let sub = conv
        .sessions
        .iter()
        .find(|s| s["parent_session_id"] == json!(root))
        .unwrap();
    let subsub = conv
        .sessions
        .iter()
        .find(|s| s["parent_session_id"] == sub["id"])
        .expect("a sub-sub-session");
    assert!(
        id_of(subsub).contains("$$"),
        "Crush's agent-tool session id"
    );
    assert!(conv.skipped.is_empty(), "{:?}", conv.skipped);
    assert_eq!(
        conv.title(),
        session(&conv, &root)["title"].as_str().map(String::from)
    );

    // A 5 MB message with every part type and other scripts, written as Crush writes.
    let huge_text: String = "日本語のテキストと🚀絵文字、עברית ومرحبا بالعالم, plain ASCII. "
        .repeat(5 * 1024 * 1024 / 90);
    let parts = json!([
        {"type": "reasoning", "data": {"thinking": "Let me look at the file.", "signature": "", "thought_signature": "", "tool_id": "", "responses_data": null}},
        {"type": "text", "data": {"text": "Reading it now 👀"}},
        {"type": "tool_call", "data": {"id": "call_1", "name": "view", "input": "{\"file_path\":\"/p/a.rs\"}", "provider_executed": false, "finished": true}},
        {"type": "tool_result", "data": {"tool_call_id": "call_1", "name": "view", "content": huge_text, "data": "", "mime_type": "", "metadata": "", "is_error": false}},
        {"type": "finish", "data": {"reason": "end_turn", "time": 1_750_000_000}}
    ])
    .to_string();
    assert!(parts.len() > 5_000_000);
    crush_insert_message(&conn, "huge-1", id_of(subsub), &parts);
    crush_insert_message(&conn, "after-huge", id_of(subsub), "[]");

    // Sessions outside the tree: an older top-level one with a newer sub-session.
    crush_insert_session(&conn, "other", None, 1_000_000_000);
    crush_insert_session(&conn, "other-sub", Some("other"), 4_000_000_000);

    let conv = db.export(&root).unwrap().unwrap();
    assert_eq!(conv.session_count(), 3, "other trees are not included");
    assert_eq!(conv.message_count(), 302);
    let huge = conv.messages.iter().find(|m| id_of(m) == "huge-1").unwrap();
    assert_eq!(
        huge["parts"].as_str().unwrap(),
        parts,
        "5 MB of parts, byte for byte"
    );
    let pos = |id: &str| conv.messages.iter().position(|m| id_of(m) == id).unwrap();
    assert!(
        pos("huge-1") < pos("after-huge"),
        "same second: insertion order"
    );
    let times: Vec<i64> = conv
        .messages
        .iter()
        .map(|m| m["created_at"].as_i64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "ordered by created_at"
    );
    assert_message_counts_match(&conv);
    // The trigger counted the new messages and stamped the time.
    assert_eq!(
        session(&conv, id_of(subsub))["message_count"],
        json!(spec_count(&generated, id_of(subsub)) + 2)
    );
    assert!(conv.skipped.is_empty(), "{:?}", conv.skipped);

    // latest_session: top-level only, greatest updated_at.
    assert_eq!(db.latest_session().unwrap().as_deref(), Some(root.as_str()));
    crush_insert_session(&conn, "newest", None, 3_000_000_000);
    assert_eq!(db.latest_session().unwrap().as_deref(), Some("newest"));
    let listed = db.sessions(3).unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].id, "other-sub");
    assert_eq!(listed[0].parent_session_id.as_deref(), Some("other"));
    assert_eq!(listed[1].id, "newest");

    assert!(db.session_exists(&root).unwrap());
    assert!(!db.session_exists("nope").unwrap());
    assert_eq!(db.export("nope").unwrap(), None);
    // Ids are bound, never spliced into SQL.
    assert_eq!(db.export("x' OR '1'='1").unwrap(), None);
    assert!(!db.session_exists("\"; DROP TABLE sessions; --").unwrap());
}

fn spec_count(conv: &Conversation, session: &str) -> i64 {
    conv.messages
        .iter()
        .filter(|m| m["session_id"] == json!(session))
        .count() as i64
}

#[test]
fn export_is_a_consistent_snapshot_while_crush_writes() {
    const MAX_CONCURRENT_WRITES: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = crush_db(dir.path(), "crush.db");
    let root = generate::insert(&conn, &spec(2, 400, 2, Some(400_000))).unwrap();
    drop(conn);

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (path, root, stop, writes) = (path.clone(), root.clone(), stop.clone(), writes.clone());
        std::thread::spawn(move || {
            let conn = crush_connection(&path);
            let parts = json!([{"type": "text", "data": {"text": "x".repeat(3000)}}]).to_string();
            let mut i = 0;
            // Bounded: under load an export takes longer as the session grows, and a
            // writer left free outran it until the disk was full (the readers' snapshots
            // keep the WAL from being checkpointed). 20,000 messages is 60 MB of parts.
            while !stop.load(Ordering::Relaxed) && i < MAX_CONCURRENT_WRITES {
                crush_insert_message(&conn, &format!("w-{i}"), &root, &parts);
                if i % 5 == 0 {
                    // Crush's UpdateSessionTitleAndUsage.
                    conn.execute(
                        "UPDATE sessions SET title = ?1, prompt_tokens = prompt_tokens + 10, updated_at = strftime('%s', 'now') WHERE id = ?2",
                        params![format!("t{i}"), root],
                    )
                    .unwrap();
                }
                i += 1;
                writes.store(i, Ordering::Relaxed);
            }
        })
    };

    let db = CrushDb::open_read_only(&path).unwrap();
    let started = Instant::now();
    let mut exports = 0;
    let mut seen_counts = std::collections::BTreeSet::new();
    while exports < 40 || writes.load(Ordering::Relaxed) < 200 {
        let conv = db.export(&root).unwrap().expect("the root exists");
        assert_message_counts_match(&conv);
        seen_counts.insert(conv.message_count());
        exports += 1;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "writer too slow"
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        seen_counts.len() > 5,
        "exports ran while messages were being added: {seen_counts:?}"
    );
}

#[test]
fn a_virtual_table_this_build_cannot_read_is_noted_not_fatal() {
    // A Crush that added a search index over messages, with a module this SQLite lacks
    // (the build leaves full-text search and R-tree out: .cargo/config.toml).
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = crush_db(dir.path(), "search.db");
    let root = generate::insert(&conn, &spec(2, 10, 1, None)).unwrap();
    conn.execute_batch(
        "PRAGMA writable_schema = ON;
         INSERT INTO sqlite_master (type, name, tbl_name, rootpage, sql) VALUES
           ('table', 'message_search', 'message_search', 0,
            'CREATE VIRTUAL TABLE message_search USING future_search(session_id, body)');
         PRAGMA writable_schema = OFF;",
    )
    .unwrap();
    drop(conn);
    let conv = CrushDb::open_read_only(&path)
        .unwrap()
        .export(&root)
        .unwrap()
        .expect("the session is found");
    assert_eq!(conv.sessions.len(), 2);
    assert!(conv.messages.len() >= 10, "{}", conv.messages.len());
    let skipped = conv.skipped.join("\n");
    assert!(
        skipped.contains("table `message_search` is a virtual table")
            && skipped.contains("no such module"),
        "{skipped}"
    );
}

#[test]
fn unknown_columns_are_kept_and_unknown_tables_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = crush_db(dir.path(), "newer.db");
    // A newer Crush: extra columns and tables.
    conn.execute_batch(
        "ALTER TABLE messages ADD COLUMN future_col TEXT;
         ALTER TABLE sessions ADD COLUMN future_num REAL DEFAULT 1.5;
         ALTER TABLE sessions ADD COLUMN future_blob BLOB;
         CREATE TABLE checkpoints (id TEXT PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE, data BLOB);
         CREATE TABLE worktrees (id TEXT PRIMARY KEY, owner TEXT REFERENCES sessions (id));
         CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT);",
    )
    .unwrap();
    let root = generate::insert(&conn, &spec(3, 40, 1, None)).unwrap();
    conn.execute_batch(&format!(
        "UPDATE messages SET future_col = 'future ' || id WHERE rowid % 3 = 0;
         UPDATE sessions SET future_blob = x'00ff10', future_num = 1e999 WHERE id = '{root}';
         INSERT INTO checkpoints VALUES ('c1', '{root}', x'01'), ('c2', '{root}', x'02');
         INSERT INTO worktrees VALUES ('w1', '{root}');
         INSERT INTO settings VALUES ('theme', 'dark');"
    ))
    .unwrap();
    // A message whose parts are not what Crush writes, and one with a future part type.
    let first_sub = crush_db::CrushDb::open_read_only(&path)
        .unwrap()
        .export(&root)
        .unwrap()
        .unwrap()
        .sessions
        .iter()
        .map(|s| id_of(s).to_owned())
        .find(|s| *s != root)
        .unwrap();
    crush_insert_message(&conn, "bad-parts", &first_sub, "{not json");
    crush_insert_message(
        &conn,
        "future-part",
        &first_sub,
        r#"[{"type":"hologram","data":{}}]"#,
    );
    // TEXT that is not UTF-8, as a careless writer could leave it.
    conn.execute(
        "UPDATE messages SET future_col = CAST(x'ff00fe' AS TEXT) WHERE id = 'bad-parts'",
        [],
    )
    .unwrap();

    let conv = CrushDb::open_read_only(&path)
        .unwrap()
        .export(&root)
        .unwrap()
        .unwrap();
    let tagged = conv
        .messages
        .iter()
        .filter(|m| {
            m["future_col"]
                .as_str()
                .is_some_and(|v| v.starts_with("future "))
        })
        .count();
    assert!(tagged > 5, "unknown column values are kept");
    assert!(conv.messages.iter().all(|m| m.contains_key("future_col")));
    let r = session(&conv, &root);
    assert_eq!(r["future_blob"], json!({"$blob_b64": "AP8Q"}));
    assert_eq!(r["future_num"], json!({"$real": "inf"}));
    assert_eq!(session(&conv, &first_sub)["future_num"], json!(1.5));
    let bad = conv
        .messages
        .iter()
        .find(|m| id_of(m) == "bad-parts")
        .unwrap();
    assert_eq!(bad["parts"], json!("{not json"), "kept as-is");
    assert_eq!(bad["future_col"], json!({"$text_b64": "/wD+"}));
    let skipped = conv.skipped.join("\n");
    assert!(
        skipped.contains("message `bad-parts`: `parts` is not a JSON array"),
        "{skipped}"
    );
    assert!(skipped.contains("`hologram`"), "{skipped}");
    assert!(
        skipped.contains("table `checkpoints`") && skipped.contains("2 row(s)"),
        "{skipped}"
    );
    assert!(skipped.contains("table `worktrees`"), "{skipped}");
    assert!(
        !skipped.contains("settings") && !skipped.contains("goose"),
        "{skipped}"
    );

    // Into a database with the same columns: exact, odd cells included.
    let (same, same_conn) = crush_db(dir.path(), "same.db");
    same_conn
        .execute_batch(
            "ALTER TABLE messages ADD COLUMN future_col TEXT;
             ALTER TABLE sessions ADD COLUMN future_num REAL DEFAULT 1.5;
             ALTER TABLE sessions ADD COLUMN future_blob BLOB;",
        )
        .unwrap();
    let report = crush_db::restore(&same, &conv).unwrap();
    assert!(report.columns_skipped.is_empty(), "{report:?}");
    assert!(report.differences.is_empty(), "{report:?}");
    let back = CrushDb::open_read_only(&same)
        .unwrap()
        .export(&root)
        .unwrap()
        .unwrap();
    assert_eq!(back.sessions, conv.sessions);
    assert_eq!(back.messages, conv.messages);
    assert_eq!(back.files, conv.files);
    assert_eq!(back.read_files, conv.read_files);

    // Into today's Crush: the extra columns are skipped and reported.
    let (older, _older_conn) = crush_db(dir.path(), "older.db");
    let report = crush_db::restore(&older, &conv).unwrap();
    assert_eq!(
        report.columns_skipped,
        vec![
            "messages.future_col".to_owned(),
            "sessions.future_blob".to_owned(),
            "sessions.future_num".to_owned()
        ]
    );
    assert!(report.differences.is_empty(), "{report:?}");
    assert_eq!(report.messages_inserted, conv.message_count());
    let back = CrushDb::open_read_only(&older)
        .unwrap()
        .export(&root)
        .unwrap()
        .unwrap();
    let strip = |rows: &[Row], col: &[&str]| -> Vec<Row> {
        rows.iter()
            .map(|r| {
                let mut r = r.clone();
                for c in col {
                    r.remove(*c);
                }
                r
            })
            .collect()
    };
    assert_eq!(back.messages, strip(&conv.messages, &["future_col"]));
    assert_eq!(
        back.sessions,
        strip(&conv.sessions, &["future_num", "future_blob"])
    );
}

/// Every row of the sessions with these ids, for before/after comparisons.
fn snapshot(path: &Path, ids: &[&str]) -> Vec<Conversation> {
    let db = CrushDb::open_read_only(path).unwrap();
    ids.iter()
        .map(|id| db.export(id).unwrap().unwrap())
        .collect()
}

#[test]
fn restore_is_exact_and_leaves_existing_sessions_alone_while_crush_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (source, source_conn) = crush_db(dir.path(), "source.db");
    let root = generate::insert(&source_conn, &spec(11, 2000, 3, Some(3_000_000))).unwrap();
    let conv = CrushDb::open_read_only(&source)
        .unwrap()
        .export(&root)
        .unwrap()
        .unwrap();

    let (target, target_conn) = crush_db(dir.path(), "target.db");
    let busy = generate::insert(&target_conn, &spec(12, 100, 1, None)).unwrap();
    let quiet = generate::insert(&target_conn, &spec(13, 100, 1, None)).unwrap();
    let quiet_before = snapshot(&target, &[&quiet]);
    drop(target_conn);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (target, busy, stop) = (target.clone(), busy.clone(), stop.clone());
        std::thread::spawn(move || {
            let conn = crush_connection(&target);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                crush_insert_message(
                    &conn,
                    &format!("busy-{i}"),
                    &busy,
                    r#"[{"type":"text","data":{"text":"hi"}}]"#,
                );
                i += 1;
            }
            i
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let report = crush_db::restore(&target, &conv).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0);

    assert_eq!(report.sessions_inserted, conv.session_count());
    assert_eq!(report.messages_inserted, conv.message_count());
    assert_eq!(report.files_inserted, conv.files.len());
    assert_eq!(report.read_files_inserted, conv.read_files.len());
    assert!(report.sessions_skipped_existing.is_empty());
    assert!(report.columns_skipped.is_empty());
    assert!(report.differences.is_empty(), "{:?}", report.differences);

    let back = CrushDb::open_read_only(&target)
        .unwrap()
        .export(&root)
        .unwrap()
        .unwrap();
    assert_eq!(
        back, conv,
        "the restored conversation exports byte for byte as saved"
    );
    assert_eq!(
        snapshot(&target, &[&quiet]),
        quiet_before,
        "untouched session"
    );
    let busy_now = snapshot(&target, &[&busy]).remove(0);
    assert_message_counts_match(&busy_now);
    assert!(
        busy_now
            .messages
            .iter()
            .all(|m| !id_of(m).starts_with("busy-") || m["session_id"] == json!(busy))
    );

    // Again: the root exists, so nothing at all is done.
    let all_before = snapshot(&target, &[&root, &quiet]);
    let again = crush_db::restore(&target, &conv).unwrap();
    assert_eq!(again.sessions_skipped_existing, vec![root.clone()]);
    assert_eq!(
        (
            again.sessions_inserted,
            again.messages_inserted,
            again.files_inserted
        ),
        (0, 0, 0)
    );
    assert_eq!(snapshot(&target, &[&root, &quiet]), all_before);

    // A target that has one sub-session already (and not the root): that sub-session
    // and its rows stay as they are, the rest is inserted.
    let (partial, _partial_conn) = crush_db(dir.path(), "partial.db");
    let sub = conv
        .sessions
        .iter()
        .map(|s| id_of(s).to_owned())
        .find(|s| *s != root)
        .unwrap();
    let mut sub_only = conv.clone();
    sub_only.root_id = sub.clone();
    sub_only.sessions.retain(|s| id_of(s) == sub);
    sub_only.messages.retain(|m| m["session_id"] == json!(sub));
    sub_only.messages.truncate(3);
    sub_only.files.retain(|m| m["session_id"] == json!(sub));
    sub_only
        .read_files
        .retain(|m| m["session_id"] == json!(sub));
    let kept = sub_only.messages.len();
    crush_db::restore(&partial, &sub_only).unwrap();
    let sub_before = snapshot(&partial, &[&sub]);
    let report = crush_db::restore(&partial, &conv).unwrap();
    assert_eq!(report.sessions_skipped_existing, vec![sub.clone()]);
    let sub_total = conv
        .messages
        .iter()
        .filter(|m| m["session_id"] == json!(sub))
        .count();
    assert_eq!(report.sessions_inserted, conv.session_count() - 1);
    assert_eq!(report.messages_inserted, conv.message_count() - sub_total);
    assert_eq!(snapshot(&partial, &[&sub]), sub_before);
    let back = CrushDb::open_read_only(&partial)
        .unwrap()
        .export(&root)
        .unwrap()
        .unwrap();
    assert_eq!(
        back.message_count(),
        conv.message_count() - sub_total + kept
    );
}

fn count(path: &Path, sql: &str) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[test]
fn restore_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let conv = generate::conversation(&spec(21, 500, 2, Some(500_000)));
    let last_id = id_of(conv.messages.last().unwrap()).to_owned();

    // A message id that another session already has: the last insert fails.
    let (target, conn) = crush_db(dir.path(), "dup.db");
    crush_insert_session(&conn, "someone-else", None, 1_700_000_000);
    crush_insert_message(&conn, &last_id, "someone-else", "[]");
    let before = snapshot(&target, &["someone-else"]);
    let e = crush_db::restore(&target, &conv).unwrap_err();
    let (message, path) = storage_error(e);
    assert_eq!(path, target);
    assert!(
        message.contains(&last_id) && message.contains("UNIQUE"),
        "{message}"
    );
    assert!(message.contains("nothing was restored"), "{message}");
    assert_eq!(count(&target, "SELECT count(*) FROM sessions"), 1);
    assert_eq!(count(&target, "SELECT count(*) FROM messages"), 1);
    assert_eq!(count(&target, "SELECT count(*) FROM files"), 0);
    assert_eq!(count(&target, "SELECT count(*) FROM read_files"), 0);
    assert_eq!(snapshot(&target, &["someone-else"]), before);

    // A trigger that refuses one message half-way.
    let (target, conn) = crush_db(dir.path(), "trigger.db");
    let victim = id_of(&conv.messages[conv.messages.len() / 2]).to_owned();
    conn.execute(
        &format!(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN new.id = '{victim}'
             BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
        ),
        [],
    )
    .unwrap();
    let (message, _) = storage_error(crush_db::restore(&target, &conv).unwrap_err());
    assert!(
        message.contains("refused by a test trigger") && message.contains(&victim),
        "{message}"
    );
    for table in ["sessions", "messages", "files", "read_files"] {
        assert_eq!(
            count(&target, &format!("SELECT count(*) FROM {table}")),
            0,
            "{table}"
        );
    }
    // Without the trigger the same conversation goes in.
    conn.execute("DROP TRIGGER refuse", []).unwrap();
    let report = crush_db::restore(&target, &conv).unwrap();
    assert_eq!(report.messages_inserted, conv.message_count());

    // A conversation that is inconsistent in itself is refused before any write.
    let mut broken = conv.clone();
    broken.messages[0].insert("session_id".into(), json!("ghost"));
    let (empty, _c) = crush_db(dir.path(), "empty.db");
    assert!(matches!(
        crush_db::restore(&empty, &broken),
        Err(Error::InvalidArgument { .. })
    ));
    let mut broken = conv.clone();
    broken.messages[3].insert("parts".into(), json!({"$blob_b64": "not base64!"}));
    assert!(matches!(
        crush_db::restore(&empty, &broken),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(count(&empty, "SELECT count(*) FROM sessions"), 0);
}

#[test]
fn bad_files_are_storage_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let conv = generate::conversation(&spec(31, 20, 0, None));

    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "this is not a database, it is a text file of some length ".repeat(100),
    )
    .unwrap();
    for e in [
        CrushDb::open_read_only(&text).unwrap_err(),
        crush_db::restore(&text, &conv).unwrap_err(),
    ] {
        let (message, path) = storage_error(e);
        assert_eq!(path, text);
        assert!(message.contains("not a SQLite database"), "{message}");
    }

    let missing = dir.path().join("nowhere/crush.db");
    for e in [
        CrushDb::open_read_only(&missing).unwrap_err(),
        crush_db::restore(&missing, &conv).unwrap_err(),
    ] {
        let (message, path) = storage_error(e);
        assert_eq!(path, missing);
        assert!(message.contains("no Crush database"), "{message}");
    }
    assert!(
        !missing.exists() && !missing.parent().unwrap().exists(),
        "nothing created"
    );

    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE sessions (id TEXT PRIMARY KEY);")
        .unwrap();
    for e in [
        CrushDb::open_read_only(&other).unwrap_err(),
        crush_db::restore(&other, &conv).unwrap_err(),
    ] {
        let (message, path) = storage_error(e);
        assert_eq!(path, other);
        assert!(message.contains("no `messages` table"), "{message}");
    }

    // A read-only file can be read, not restored into.
    let (ro, conn) = crush_db(dir.path(), "ro.db");
    let root = generate::insert(&conn, &spec(32, 20, 0, None)).unwrap();
    drop(conn);
    let mut perms = std::fs::metadata(&ro).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&ro, perms).unwrap();
    assert!(
        CrushDb::open_read_only(&ro)
            .unwrap()
            .export(&root)
            .unwrap()
            .is_some()
    );
    let (message, path) = storage_error(crush_db::restore(&ro, &conv).unwrap_err());
    assert_eq!(path, ro);
    assert!(message.contains("read-only"), "{message}");
}

#[test]
fn locks_held_past_the_timeout_are_storage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let conv = generate::conversation(&spec(41, 20, 0, None));

    // Restore waits for Crush's write transaction, then gives up.
    let (wal, conn) = crush_db(dir.path(), "wal.db");
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let e = crush_db::restore_with_timeout(&wal, &conv, Duration::from_millis(300)).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(250));
    let (message, path) = storage_error(e);
    assert_eq!(path, wal);
    assert!(message.contains("locked"), "{message}");
    // Reading is not blocked by a writer in WAL mode.
    let db = CrushDb::open_read_only_with_timeout(&wal, Duration::from_millis(300)).unwrap();
    assert_eq!(db.latest_session().unwrap(), None);
    // And once the writer is done the restore goes through.
    conn.execute_batch("COMMIT").unwrap();
    crush_db::restore_with_timeout(&wal, &conv, Duration::from_millis(300)).unwrap();

    // A rollback-journal database under an exclusive lock cannot even be read.
    let plain = dir.path().join("plain.db");
    let conn = Connection::open(&plain).unwrap();
    conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
    conn.execute_batch(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY); CREATE TABLE messages (id TEXT PRIMARY KEY);
         BEGIN EXCLUSIVE; INSERT INTO sessions VALUES ('s');",
    )
    .unwrap();
    let e = CrushDb::open_read_only_with_timeout(&plain, Duration::from_millis(200)).unwrap_err();
    let (message, path) = storage_error(e);
    assert_eq!(path, plain);
    assert!(
        message.contains("locked") && message.contains("200 ms"),
        "{message}"
    );
    conn.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn reads_a_wal_database_that_crush_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = crush_db(dir.path(), "closed.db");
    let root = generate::insert(&conn, &spec(51, 50, 1, None)).unwrap();
    drop(conn);
    // The last connection's close checkpoints and removes the -wal and -shm files.
    let side = |s: &str| PathBuf::from(format!("{}{s}", path.display()));
    assert!(!side("-wal").exists() && !side("-shm").exists());
    let db = CrushDb::open_read_only(&path).unwrap();
    let conv = db.export(&root).unwrap().unwrap();
    assert_eq!(conv.message_count(), 50);
    drop(db);
    let mode: String = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal", "the journal mode is Crush's, unchanged");
}

fn zstd_ratio(conv: &Conversation) -> f64 {
    let mut all = Vec::new();
    for m in &conv.messages {
        all.extend_from_slice(m["parts"].as_str().unwrap().as_bytes());
    }
    let packed = zstd::encode_all(&all[..], 3).unwrap();
    all.len() as f64 / packed.len() as f64
}

#[test]
fn generator_is_deterministic_realistic_and_sized() {
    let a = generate::conversation(&spec(7, 500, 3, Some(1_000_000)));
    let b = generate::conversation(&spec(7, 500, 3, Some(1_000_000)));
    assert_eq!(a, b);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let c = generate::conversation(&spec(8, 500, 3, Some(1_000_000)));
    assert_ne!(a.messages[0]["parts"], c.messages[0]["parts"]);
    assert_eq!(a.message_count(), 500);
    assert_eq!(a.session_count(), 4);

    for (seed, messages, target) in [
        (1, 200, 200_000),
        (2, 2_000, 2_000_000),
        (3, 1_000, 5_000_000),
        (4, 5_000, 5_000_000),
        (6, 1_000, 1_000_000),
    ] {
        let conv = generate::conversation(&spec(seed, messages, 2, Some(target)));
        let size = conv.parts_bytes() as f64;
        let off = (size - target as f64).abs() / target as f64;
        assert!(
            off < 0.05,
            "seed {seed}: {size} bytes for a target of {target}"
        );
        let ratio = zstd_ratio(&conv);
        assert!(
            (3.0..=12.0).contains(&ratio),
            "seed {seed}: zstd ratio {ratio:.2}"
        );
        assert_eq!(conv.message_count(), messages);
    }
    let natural = generate::conversation(&spec(5, 300, 0, None));
    let ratio = zstd_ratio(&natural);
    assert!((3.0..=12.0).contains(&ratio), "zstd ratio {ratio:.2}");

    // The content is varied: every part type, other scripts, tool calls with results.
    let big = generate::conversation(&spec(9, 3_000, 2, Some(6_000_000)));
    let all: String = big
        .messages
        .iter()
        .map(|m| m["parts"].as_str().unwrap())
        .collect();
    for needle in [
        "\"type\":\"reasoning\"",
        "\"type\":\"text\"",
        "\"type\":\"tool_call\"",
        "\"type\":\"tool_result\"",
        "\"type\":\"finish\"",
        "\"type\":\"binary\"",
        "```rust",
        "\\\"file_path\\\"",
        "的",
        "🚀",
        "שלום",
    ] {
        assert!(all.contains(needle), "{needle} missing");
    }
    let largest = big
        .messages
        .iter()
        .map(|m| m["parts"].as_str().unwrap().len())
        .max()
        .unwrap();
    assert!(
        largest > 100_000,
        "an occasional huge message: largest {largest}"
    );
    for m in &big.messages {
        let parts: Value = serde_json::from_str(m["parts"].as_str().unwrap()).unwrap();
        assert!(parts.as_array().is_some_and(|p| !p.is_empty()));
    }
}

#[test]
fn ten_thousand_messages_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(100, 10_000, 4, Some(20_000_000));
    let t = Instant::now();
    let conv = generate::conversation(&spec);
    let generated = t.elapsed();
    let (source, conn) = crush_db(dir.path(), "big.db");
    let t = Instant::now();
    let root = generate::insert(&conn, &spec).unwrap();
    let inserted = t.elapsed();
    drop(conn);

    let db = CrushDb::open_read_only(&source).unwrap();
    let t = Instant::now();
    let exported = db.export(&root).unwrap().unwrap();
    let export_time = t.elapsed();
    assert_eq!(exported, conv);

    let (target, _c) = crush_db(dir.path(), "big-target.db");
    let t = Instant::now();
    let report = crush_db::restore(&target, &exported).unwrap();
    let restore_time = t.elapsed();
    assert_eq!(report.messages_inserted, 10_000);
    let back = CrushDb::open_read_only(&target)
        .unwrap()
        .export(&root)
        .unwrap()
        .unwrap();
    assert_eq!(back, conv);
    eprintln!(
        "10,000 messages, {} bytes of parts: generate {generated:?}, insert {inserted:?}, export {export_time:?}, restore {restore_time:?}",
        conv.parts_bytes()
    );
}

#[test]
fn locate_uses_the_configured_path_when_the_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _conn) = crush_db(dir.path(), "crush.db");
    assert_eq!(crush_db::locate(Some(&path)), Some(path.clone()));
    assert_eq!(crush_db::locate(Some(&dir.path().join("missing.db"))), None);
    // A directory is not a database file.
    assert_eq!(crush_db::locate(Some(dir.path())), None);
}

/// `export_to` writes exactly the bytes of serializing `export`'s conversation, notes
/// included (an unknown table, a malformed row, an unknown part type).
#[test]
fn export_to_is_byte_exact_with_export() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crush.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    crush_db::create_schema(&conn).unwrap();
    let spec = |seed, messages, sub_sessions| generate::ConversationSpec {
        seed,
        messages,
        sub_sessions,
        target_bytes: None,
    };
    let root = generate::insert(&conn, &spec(7, 120, 2)).unwrap();
    let other = generate::insert(&conn, &spec(8, 3, 0)).unwrap();
    conn.execute_batch("CREATE TABLE extra (session_id TEXT, v TEXT);")
        .unwrap();
    conn.execute("INSERT INTO extra VALUES (?1, 'x')", [&root])
        .unwrap();
    conn.execute(
        "UPDATE messages SET parts = '[{\"type\":\"hologram\",\"data\":{}}]' \
         WHERE rowid = (SELECT min(rowid) FROM messages WHERE session_id = ?1)",
        [&root],
    )
    .unwrap();
    conn.execute(
        "UPDATE messages SET created_at = 'soon' \
         WHERE rowid = (SELECT max(rowid) FROM messages WHERE session_id = ?1)",
        [&root],
    )
    .unwrap();
    let db = CrushDb::open_read_only(&path).unwrap();
    for id in [&root, &other] {
        let conv = db.export(id).unwrap().unwrap();
        let mut out = Vec::new();
        let summary = db.export_to(id, &mut out).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            serde_json::to_string(&conv).unwrap()
        );
        assert_eq!(summary.title, conv.title());
        assert_eq!(summary.session_count, conv.session_count());
        assert_eq!(summary.message_count, conv.message_count());
        assert_eq!(summary.skipped, conv.skipped);
        let back: Conversation = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, conv);
    }
    let conv = db.export(&root).unwrap().unwrap();
    assert!(conv.skipped.len() >= 3, "{:?}", conv.skipped);
    let mut out = Vec::new();
    assert_eq!(db.export_to("missing", &mut out).unwrap(), None);
    assert!(out.is_empty());
}
