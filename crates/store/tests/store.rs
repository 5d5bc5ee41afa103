//! Integration tests of the SQLite store: migrations, the audit log, error mapping,
//! several processes writing at once, and a writer killed with SIGKILL mid-transaction.
//!
//! Child processes are this test binary re-executed with `--exact child_entry` and
//! `VLLM_CORE_STORE_CHILD` naming their role; `child_entry` does nothing without it.

use rusqlite::params;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vllm_mcp_testkit::TestChild;
use vllm_store::StoreError as Error;
use vllm_store::{
    AuditQuery, AuditRecord, DB_FILE_NAME, MIGRATIONS, SCHEMA_VERSION, Store, StoreOptions,
};

const CHILD_ENV: &str = "VLLM_CORE_STORE_CHILD";
const DB_ENV: &str = "VLLM_CORE_STORE_DB";
const ARG_ENV: &str = "VLLM_CORE_STORE_ARG";

/// Transactions each writer process commits in `three_processes_write_at_once`.
const TXS_PER_WRITER: i64 = 300;
/// Rows per transaction there.
const ROWS_PER_TX: i64 = 3;
/// Rows per batch (one transaction) in `sigkill_mid_write_leaves_whole_transactions`.
const BATCH_ROWS: i64 = 400;

// ---------------------------------------------------------------------------
// Child processes

/// This binary re-executed as a child running `child_entry` in `role`.
fn spawn_child(role: &str, db: &Path, arg: &str) -> TestChild {
    TestChild::spawn(
        "child_entry",
        &[
            (CHILD_ENV, role.as_ref()),
            (DB_ENV, db.as_os_str()),
            (ARG_ENV, arg.as_ref()),
        ],
    )
}

/// Blocks until the parent writes a line (or closes stdin).
fn wait_for_parent() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = PathBuf::from(std::env::var(DB_ENV).expect("db path"));
    let arg = std::env::var(ARG_ENV).unwrap_or_default();
    match role.as_str() {
        "writer" => child_writer(&db, &arg),
        "batcher" => child_batcher(&db, arg.parse().expect("base")),
        "opener" => child_opener(&db),
        other => panic!("unknown child role {other}"),
    }
}

/// Commits `TXS_PER_WRITER` transactions of `ROWS_PER_TX` rows each.
fn child_writer(db: &Path, name: &str) {
    let store = Store::open(db).expect("child open");
    println!("READY");
    wait_for_parent();
    let started = Instant::now();
    for seq in 0..TXS_PER_WRITER {
        store
            .write(|tx| -> vllm_store::Result<_> {
                let mut stmt =
                    tx.prepare_cached("INSERT INTO t (writer, seq, k) VALUES (?1, ?2, ?3)")?;
                for k in 0..ROWS_PER_TX {
                    stmt.execute(params![name, seq, k])?;
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("writer {name} transaction {seq}: {e}"));
        // The first half hammers the lock back to back (the worst case for a waiting
        // writer); the second half is paced like real servers, so commits interleave.
        if seq >= TXS_PER_WRITER / 2 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    println!("DONE {}", started.elapsed().as_millis());
}

/// Writes big transactions (`BATCH_ROWS` rows with one batch id) until killed.
fn child_batcher(db: &Path, base: i64) {
    let store = Store::open(db).expect("child open");
    let payload = vec![0xA5u8; 512];
    let deadline = Instant::now() + Duration::from_secs(60); // in case the parent forgets us
    let mut batch = base;
    while Instant::now() < deadline {
        store
            .write(|tx| -> vllm_store::Result<_> {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO batches (batch, n, payload) VALUES (?1, ?2, ?3)",
                )?;
                for n in 0..BATCH_ROWS {
                    stmt.execute(params![batch, n, payload])?;
                }
                Ok(())
            })
            .expect("batch write");
        batch += 1;
    }
}

/// Opens a brand-new database at the same moment as its siblings.
fn child_opener(db: &Path) {
    println!("READY");
    wait_for_parent();
    let store = Store::open(db).expect("concurrent open");
    store
        .meta_set(&format!("opener-{}", std::process::id()), "1")
        .expect("meta");
    println!("OPENED");
}

// ---------------------------------------------------------------------------
// Helpers

fn pragma_i64(store: &Store, name: &str) -> i64 {
    store
        .read(|c| -> vllm_store::Result<_> {
            Ok(c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?)
        })
        .unwrap()
}

fn pragma_text(store: &Store, name: &str) -> String {
    store
        .read(|c| -> vllm_store::Result<_> {
            Ok(c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?)
        })
        .unwrap()
}

fn count(store: &Store, sql: &str) -> i64 {
    store
        .read(|c| -> vllm_store::Result<_> { Ok(c.query_row(sql, [], |r| r.get(0))?) })
        .unwrap()
}

fn record(server: &str, tool: &str, code: &str, ts: f64, i: i64) -> AuditRecord {
    AuditRecord {
        id: None,
        ts,
        ts_text: vllm_store::time::format_rfc3339(ts as i64),
        server: server.into(),
        tool: tool.into(),
        arguments: serde_json::json!({ "i": i, "model": "m", "nested": { "ok": true } }),
        result_code: code.into(),
        duration_ms: 1.5 + i as f64,
    }
}

// ---------------------------------------------------------------------------
// Migrations and pragmas

#[test]
fn migrations_from_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_dir(&dir.path().join("nested").join("data")).unwrap();
    assert_eq!(
        store.path(),
        dir.path().join("nested/data").join(DB_FILE_NAME)
    );
    assert!(store.path().exists());

    assert_eq!(pragma_i64(&store, "user_version"), SCHEMA_VERSION);
    assert_eq!(
        pragma_i64(&store, "auto_vacuum"),
        2,
        "INCREMENTAL from the first table on"
    );
    assert_eq!(pragma_text(&store, "journal_mode"), "wal");
    assert_eq!(pragma_i64(&store, "synchronous"), 1, "NORMAL");
    assert_eq!(pragma_i64(&store, "foreign_keys"), 1);
    assert_eq!(pragma_i64(&store, "busy_timeout"), 5000);

    let names: Vec<String> = store
        .read(|c| -> vllm_store::Result<_> {
            let mut s = c.prepare(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name",
            )?;
            let rows = s.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .unwrap();
    for want in [
        "audit_log",
        "audit_log_ts",
        "leases",
        "meta",
        "schema_migrations",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert_eq!(
        count(&store, "SELECT count(*) FROM schema_migrations"),
        MIGRATIONS.len() as i64
    );

    let health = store.health();
    assert!(health.ok, "{health:?}");
    assert_eq!(health.schema_version, SCHEMA_VERSION);
    assert_eq!(health.journal_mode, "wal");
    assert!(health.size_bytes > 0);
    assert_eq!(health.path, store.path());
    assert!(store.integrity_check().unwrap());
}

#[test]
fn reopening_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let first = Store::open(&path).unwrap();
    first.meta_set("k", "v1").unwrap();
    let applied: Vec<(i64, f64)> = first
        .read(|c| -> vllm_store::Result<_> {
            let mut s =
                c.prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")?;
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .unwrap();
    drop(first);

    let again = Store::open(&path).unwrap();
    let applied_again: Vec<(i64, f64)> = again
        .read(|c| -> vllm_store::Result<_> {
            let mut s =
                c.prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")?;
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .unwrap();
    assert_eq!(applied, applied_again, "no migration ran twice");
    assert_eq!(again.meta_get("k").unwrap().as_deref(), Some("v1"));
    assert_eq!(again.meta_get("absent").unwrap(), None);
    assert_eq!(pragma_i64(&again, "user_version"), SCHEMA_VERSION);
    assert_eq!(pragma_i64(&again, "auto_vacuum"), 2);
}

#[test]
fn a_newer_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Store::open(&path).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(raw);

    match Store::open(&path) {
        Err(Error::Storage { message, path: p }) => {
            assert!(message.contains("newer"), "{message}");
            assert!(
                message.contains(&(SCHEMA_VERSION + 1).to_string()),
                "{message}"
            );
            assert_eq!(p.as_deref(), Some(path.as_path()));
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    // And it was not touched.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION + 1);
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    match Store::open(&path) {
        Err(Error::Storage { message, path: p }) => {
            assert!(
                message.contains("corrupt or not a SQLite database"),
                "{message}"
            );
            assert_eq!(p.as_deref(), Some(path.as_path()));
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[test]
fn several_threads_opening_a_new_file_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let barrier = std::sync::Barrier::new(6);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                barrier.wait();
                Store::open(&path).expect("concurrent open");
            });
        }
    });
    let store = Store::open(&path).unwrap();
    assert_eq!(
        count(&store, "SELECT count(*) FROM schema_migrations"),
        MIGRATIONS.len() as i64
    );
    assert_eq!(pragma_i64(&store, "auto_vacuum"), 2);
}

#[test]
fn several_processes_opening_a_new_file_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut children: Vec<TestChild> = (0..4).map(|_| spawn_child("opener", &path, "")).collect();
    for c in &mut children {
        c.expect_line("READY");
    }
    for c in &mut children {
        c.send("go");
    }
    for c in &mut children {
        c.expect_line("OPENED");
    }
    for c in children {
        c.wait_success();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(
        count(&store, "SELECT count(*) FROM schema_migrations"),
        MIGRATIONS.len() as i64
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM meta WHERE key LIKE 'opener-%'"
        ),
        4
    );
    assert_eq!(pragma_i64(&store, "auto_vacuum"), 2);
    assert_eq!(pragma_text(&store, "journal_mode"), "wal");
}

// ---------------------------------------------------------------------------
// Transactions and errors

#[test]
fn a_failed_write_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let err = store
        .write(|tx| -> vllm_store::Result<_> {
            tx.execute("INSERT INTO meta (key, value) VALUES ('a', '1')", [])?;
            Err::<(), _>(Error::invalid("x", "refused after a write"))
        })
        .unwrap_err();
    assert_eq!(err.code(), "INVALID_ARGUMENT");
    assert_eq!(store.meta_get("a").unwrap(), None);

    // A SQL error in the closure carries the store's path.
    let err = store
        .write(|tx| -> vllm_store::Result<_> {
            tx.execute("INSERT INTO no_such_table VALUES (1)", [])?;
            Ok(())
        })
        .unwrap_err();
    match err {
        Error::Storage { path, .. } => assert_eq!(path.as_deref(), Some(store.path())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_panic_inside_a_write_does_not_wedge_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let s = store.clone();
    let r = std::panic::catch_unwind(move || {
        s.write(|tx| -> vllm_store::Result<_> {
            tx.execute("INSERT INTO meta (key, value) VALUES ('p', '1')", [])?;
            panic!("boom");
            #[allow(unreachable_code)]
            Ok(())
        })
    });
    assert!(r.is_err());
    assert_eq!(
        store.meta_get("p").unwrap(),
        None,
        "the half-done write was rolled back"
    );
    store.meta_set("after", "ok").unwrap();
    assert_eq!(store.meta_get("after").unwrap().as_deref(), Some("ok"));
}

#[test]
fn read_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let err = store
        .read(|c| -> vllm_store::Result<_> {
            c.execute("INSERT INTO meta (key, value) VALUES ('r', '1')", [])?;
            Ok(())
        })
        .unwrap_err();
    assert_eq!(err.code(), "STORAGE_ERROR");
    // query_only was lifted again.
    store.meta_set("w", "1").unwrap();
    assert_eq!(store.meta_get("r").unwrap(), None);
}

#[test]
fn a_lock_held_past_the_busy_timeout_is_a_clear_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Store::open_with(
        &path,
        StoreOptions {
            busy_timeout: Duration::from_millis(200),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let started = Instant::now();
    let err = store.meta_set("k", "v").unwrap_err();
    let waited = started.elapsed();
    match &err {
        Error::Storage { message, path: p } => {
            assert!(message.contains("locked"), "{message}");
            assert!(message.contains("200 ms"), "{message}");
            assert_eq!(p.as_deref(), Some(path.as_path()));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        waited >= Duration::from_millis(190),
        "gave up after {waited:?}"
    );

    // Reads still work while a writer holds the lock (WAL), and writes once it is gone.
    assert_eq!(store.meta_get("k").unwrap(), None);
    blocker.execute_batch("ROLLBACK").unwrap();
    store.meta_set("k", "v").unwrap();
}

// ---------------------------------------------------------------------------
// Audit log

#[test]
fn audit_round_trip_with_filters_and_paging() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let base = 1_700_000_000.0;
    let mut written = Vec::new();
    for i in 0..30i64 {
        let server = if i % 3 == 0 {
            "perf-monitor"
        } else {
            "model-manager"
        };
        let tool = if i % 2 == 0 {
            "load-model"
        } else {
            "list-models"
        };
        let code = if i % 5 == 0 { "MODEL_NOT_FOUND" } else { "OK" };
        let mut r = record(server, tool, code, base + i as f64, i);
        let id = store.record_audit(&r).unwrap();
        r.id = Some(id);
        written.push(r);
    }

    // Everything, newest first, fields intact.
    let all = store.audit_entries(&AuditQuery::default()).unwrap();
    assert_eq!(all.len(), 30);
    let mut newest_first = written.clone();
    newest_first.reverse();
    assert_eq!(all, newest_first);

    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery::default();
        f(&mut q);
        store.audit_entries(&q).unwrap()
    };
    let by_server = q(|q| q.server = Some("perf-monitor".into()));
    assert_eq!(by_server.len(), 10);
    assert!(by_server.iter().all(|r| r.server == "perf-monitor"));

    let by_tool = q(|q| q.tool = Some("list-models".into()));
    assert_eq!(by_tool.len(), 15);
    assert!(by_tool.iter().all(|r| r.tool == "list-models"));

    let failed = q(|q| q.result_code = Some("MODEL_NOT_FOUND".into()));
    assert_eq!(
        failed
            .iter()
            .map(|r| r.duration_ms as i64)
            .collect::<Vec<_>>(),
        vec![26, 21, 16, 11, 6, 1]
    );

    let recent = q(|q| q.since = Some(1_700_000_025.0));
    assert_eq!(recent.len(), 5);

    let combined = q(|q| {
        q.server = Some("model-manager".into());
        q.tool = Some("load-model".into());
        q.result_code = Some("OK".into());
        q.since = Some(1_700_000_010.0);
    });
    let want: Vec<i64> = (10..30)
        .rev()
        .filter(|i| i % 3 != 0 && i % 2 == 0 && i % 5 != 0)
        .collect();
    assert_eq!(
        combined
            .iter()
            .map(|r| r.arguments["i"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        want
    );

    // Paging by cursor: pages of 7 cover everything once, in order.
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .audit_entries(&AuditQuery {
                limit: Some(7),
                before_id: cursor,
                ..AuditQuery::default()
            })
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        cursor = page.last().unwrap().id;
        paged.extend(page);
    }
    assert_eq!(paged, newest_first);
}

#[test]
fn audit_limit_defaults_to_100_and_is_capped_at_1000() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    store
        .write(|tx| -> vllm_store::Result<_> {
            let mut stmt = tx.prepare(
                "INSERT INTO audit_log (ts, ts_text, server, tool, arguments, result_code, duration_ms)
                 VALUES (?1, '', 's', 't', '{}', 'OK', 0)",
            )?;
            for i in 0..1100 {
                stmt.execute([i as f64])?;
            }
            Ok(())
        })
        .unwrap();
    let n = |limit| {
        store
            .audit_entries(&AuditQuery {
                limit,
                ..AuditQuery::default()
            })
            .unwrap()
            .len()
    };
    assert_eq!(n(None), 100);
    assert_eq!(n(Some(250)), 250);
    assert_eq!(n(Some(5000)), 1000);
}

#[test]
fn prune_then_incremental_vacuum_frees_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let big = "x".repeat(2000);
    store
        .write(|tx| -> vllm_store::Result<_> {
            let mut stmt = tx.prepare(
                "INSERT INTO audit_log (ts, ts_text, server, tool, arguments, result_code, duration_ms)
                 VALUES (?1, '', 's', 't', json_object('blob', ?2), 'OK', 0)",
            )?;
            for i in 0..2000 {
                stmt.execute(params![i as f64, big])?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(store.prune_audit(1500.0).unwrap(), 1500);
    assert_eq!(count(&store, "SELECT count(*) FROM audit_log"), 500);
    assert_eq!(
        count(&store, "SELECT CAST(min(ts) AS INTEGER) FROM audit_log"),
        1500
    );
    let free_before = pragma_i64(&store, "freelist_count");
    assert!(
        free_before > 100,
        "deleting 3 MB freed only {free_before} pages"
    );
    let freed = store.incremental_vacuum().unwrap();
    assert_eq!(freed as i64, free_before);
    assert_eq!(pragma_i64(&store, "freelist_count"), 0);
    assert!(store.integrity_check().unwrap());
}

// ---------------------------------------------------------------------------
// Several processes

#[test]
fn three_processes_write_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Store::open(&path).unwrap();
    store
        .write(|tx| -> vllm_store::Result<_> {
            tx.execute_batch(
                "CREATE TABLE t (writer TEXT NOT NULL, seq INTEGER NOT NULL, k INTEGER NOT NULL,
                                 PRIMARY KEY (writer, seq, k))",
            )?;
            Ok(())
        })
        .unwrap();

    let names = ["w0", "w1", "w2"];
    let mut children: Vec<TestChild> = names
        .iter()
        .map(|n| spawn_child("writer", &path, n))
        .collect();
    for c in &mut children {
        c.expect_line("READY");
    }
    let started = Instant::now();
    for c in &mut children {
        c.send("go");
    }
    let child_ms: Vec<String> = children.iter_mut().map(|c| c.expect_line("DONE")).collect();
    let elapsed = started.elapsed();
    for c in children {
        c.wait_success(); // a `database is locked` error would have failed the child
    }
    eprintln!(
        "three_processes_write_at_once: 3 x {TXS_PER_WRITER} transactions in {elapsed:?} (per child ms: {child_ms:?})"
    );

    assert_eq!(
        count(&store, "SELECT count(*) FROM t"),
        names.len() as i64 * TXS_PER_WRITER * ROWS_PER_TX,
        "no row lost"
    );
    for n in names {
        let (txs, rows): (i64, i64) = store
            .read(|c| -> vllm_store::Result<_> {
                Ok(c.query_row(
                    "SELECT count(DISTINCT seq), count(*) FROM t WHERE writer = ?1",
                    [n],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .unwrap();
        assert_eq!(
            (txs, rows),
            (TXS_PER_WRITER, TXS_PER_WRITER * ROWS_PER_TX),
            "writer {n}"
        );
    }
    // The writers really ran at once: in commit order their transactions interleave
    // (run one after another, the writer would change only twice).
    let switches = store
        .read(|c| -> vllm_store::Result<_> {
            let mut s = c.prepare("SELECT writer FROM t WHERE k = 0 ORDER BY rowid")?;
            let writers = s
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(writers.windows(2).filter(|w| w[0] != w[1]).count())
        })
        .unwrap();
    eprintln!("three_processes_write_at_once: the committing writer changed {switches} times");
    assert!(
        switches > 50,
        "the writers barely interleaved: {switches} switches"
    );
    assert!(store.integrity_check().unwrap());
}

/// A few milliseconds that differ from run to run.
fn jitter(max_ms: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    Duration::from_millis(nanos.wrapping_mul(2_654_435_761) % max_ms.max(1))
}

#[test]
fn sigkill_mid_write_leaves_whole_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Store::open(&path).unwrap();
    store
        .write(|tx| -> vllm_store::Result<_> {
            tx.execute_batch(
                "CREATE TABLE batches (batch INTEGER NOT NULL, n INTEGER NOT NULL, payload BLOB NOT NULL,
                                       PRIMARY KEY (batch, n))",
            )?;
            Ok(())
        })
        .unwrap();

    for round in 0..3i64 {
        let base = round * 1_000_000;
        let mut child = spawn_child("batcher", &path, &base.to_string());
        // Let it commit a couple of batches (real progress, read from the file)...
        let deadline = Instant::now() + Duration::from_secs(30);
        let committed = |s: &Store| {
            s.read(|c| -> vllm_store::Result<_> {
                Ok(c.query_row(
                    "SELECT count(DISTINCT batch) FROM batches WHERE batch >= ?1",
                    [base],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .unwrap()
        };
        while committed(&store) < 2 {
            assert!(Instant::now() < deadline, "the child never committed");
            std::thread::sleep(Duration::from_millis(5));
        }
        // ...then kill it at some moment: it spends nearly all its time inside a transaction.
        std::thread::sleep(jitter(40));
        let killed_at = Instant::now();
        child.child.kill().expect("SIGKILL");
        let status = child.child.wait().unwrap();
        assert!(!status.success());

        // A new writer gets the lock at once, though the dead one held it.
        let fresh = Store::open_with(
            &path,
            StoreOptions {
                busy_timeout: Duration::from_millis(500),
                ..StoreOptions::default()
            },
        )
        .expect("reopen after SIGKILL");
        fresh
            .meta_set(&format!("after-kill-{round}"), "1")
            .expect("write right after SIGKILL");
        eprintln!(
            "sigkill round {round}: {} batches committed before the kill; next write done {:?} after it",
            committed(&fresh),
            killed_at.elapsed()
        );

        // Every batch is whole or absent.
        let partial: Vec<(i64, i64)> = fresh
            .read(|c| -> vllm_store::Result<_> {
                let mut s = c.prepare(
                    "SELECT batch, count(*) FROM batches GROUP BY batch HAVING count(*) != ?1",
                )?;
                let rows = s.query_map([BATCH_ROWS], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .unwrap();
        assert!(
            partial.is_empty(),
            "partial batches after SIGKILL: {partial:?}"
        );
        assert!(fresh.integrity_check().unwrap());
        assert!(fresh.health().ok);
    }
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM meta WHERE key LIKE 'after-kill-%'"
        ),
        3
    );
}

// ---------------------------------------------------------------------------
// A full store and a read-only one (store.max_size_mb, store.read_only): the injections
// of a full disk and a read-only data directory, which root cannot make with chmod.

fn blob_rows(store: &Store) -> i64 {
    count(store, "SELECT count(*) FROM meta WHERE key LIKE 'blob-%'")
}

/// Writes 64 KiB meta values until one fails; returns how many were written and the error.
fn fill(store: &Store, from: usize) -> (usize, Error) {
    let value = "x".repeat(64 * 1024);
    for i in from..from + 10_000 {
        if let Err(e) = store.meta_set(&format!("blob-{i}"), &value) {
            return (i - from, e);
        }
    }
    panic!("10,000 writes of 64 KiB fitted under the cap");
}

#[test]
fn a_full_store_refuses_the_write_whole_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE_NAME);
    let capped = |mb: u64| StoreOptions {
        max_size_bytes: Some(mb * 1024 * 1024),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&path, capped(2)).unwrap();
    let (written, err) = fill(&store, 0);
    assert!(
        (20..32).contains(&written),
        "2 MiB holds about 30 values of 64 KiB, took {written}"
    );
    match &err {
        Error::Storage { message, path: p } => {
            assert!(message.contains("full"), "{message}");
            assert!(message.contains("store.max_size_mb = 2"), "{message}");
            assert_eq!(p.as_deref(), Some(path.as_path()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), "STORAGE_ERROR");
    // The refused write left nothing behind; what was written before is whole.
    assert_eq!(blob_rows(&store), written as i64);
    assert!(store.integrity_check().unwrap());
    // Reads and small writes that reuse freed pages still work: delete half, write again.
    store
        .write(|tx| -> vllm_store::Result<_> { Ok(tx.execute("DELETE FROM meta WHERE key LIKE 'blob-%' AND CAST(substr(key, 6) AS INTEGER) % 2 = 0", [])?) })
        .unwrap();
    let left = blob_rows(&store);
    let (again, _) = fill(&store, 1000);
    assert!(
        again as i64 >= (written as i64 - left) - 2,
        "freed room for {again}"
    );
    assert!(store.integrity_check().unwrap());
    drop(store);
    // A larger cap on the next start: the writes go on.
    let store = Store::open_with(&path, capped(8)).unwrap();
    let (more, _) = fill(&store, 2000);
    assert!(more > 50, "6 more MiB took {more}");
    assert!(store.integrity_check().unwrap());
    assert_eq!(store.health().max_size_bytes, Some(8 * 1024 * 1024));
}

#[test]
fn a_cap_below_the_current_size_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE_NAME);
    let store = Store::open(&path).unwrap();
    let value = "y".repeat(64 * 1024);
    for i in 0..40 {
        store.meta_set(&format!("blob-{i}"), &value).unwrap();
    }
    drop(store);
    let store = Store::open_with(
        &path,
        StoreOptions {
            max_size_bytes: Some(1024 * 1024),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    assert_eq!(blob_rows(&store), 40);
    assert!(store.meta_set("blob-new", &value).is_err());
    assert!(store.meta_set("small", "ok").is_ok() || store.meta_get("small").unwrap().is_none());
    assert!(store.integrity_check().unwrap());
}

#[test]
fn a_read_only_store_reads_and_refuses_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE_NAME);
    let ro = StoreOptions {
        read_only: true,
        ..StoreOptions::default()
    };
    // Nothing to read yet: a clear error, and no file is created.
    let err = Store::open_with(&path, ro.clone()).unwrap_err();
    assert!(err.to_string().contains("no store to read"), "{err}");
    assert!(!path.exists());

    let store = Store::open(&path).unwrap();
    store.meta_set("kept", "1").unwrap();
    store.record_audit(&record("s", "t", "OK", 1.0, 1)).unwrap();
    drop(store);
    // Closing checkpointed the WAL: the file alone is the whole store now.
    let before = std::fs::read(&path).unwrap();

    let store = Store::open_with(&path, ro.clone()).unwrap();
    assert_eq!(store.meta_get("kept").unwrap().as_deref(), Some("1"));
    assert_eq!(
        store.audit_entries(&AuditQuery::default()).unwrap().len(),
        1
    );
    assert!(store.integrity_check().unwrap());
    let health = store.health();
    assert!(health.ok && health.read_only, "{health:?}");
    for err in [
        store.meta_set("new", "1").unwrap_err(),
        store
            .record_audit(&record("s", "t", "OK", 2.0, 2))
            .map(drop)
            .unwrap_err(),
        store.prune_audit(10.0).map(drop).unwrap_err(),
    ] {
        assert_eq!(err.code(), "STORAGE_ERROR");
        let text = err.to_string();
        assert!(text.contains("read-only"), "{text}");
        assert!(text.contains("store.read_only"), "{text}");
    }
    drop(store);
    assert!(
        std::fs::read(&path).unwrap() == before,
        "the read-only store's file changed"
    );

    // Writable again: nothing was lost and writes work.
    let store = Store::open(&path).unwrap();
    store.meta_set("new", "1").unwrap();
    assert_eq!(store.meta_get("kept").unwrap().as_deref(), Some("1"));
}

#[test]
fn a_read_only_store_is_not_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE_NAME);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0].sql).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let err = Store::open_with(
        &path,
        StoreOptions {
            read_only: true,
            ..StoreOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("schema version 1"), "{err}");
    assert!(err.to_string().contains("read_only"), "{err}");
}
