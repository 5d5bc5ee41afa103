//! The state server, the real binary: `save-state` and `load-state` of a 10,000-message
//! session (~20 MB of parts from the fixed-seed generator: prose, code, JSON tool
//! output), its peak memory while saving, and `clear-state` of 1,000 states.
//!
//! The peak is the server's VmHWM after resetting it (`echo 5 > /proc/<pid>/clear_refs`)
//! just before the save, so it is the peak of the save alone.

use crate::table::{Row, Samples, mib, ms};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use vllm_core::crush_db::{self, CrushDb};
use vllm_core::states::{self, EncodedPart, PartKind, StateMeta};
use vllm_core::store::{Store, rusqlite};
use vllm_crush_gen::{self as generate, ConversationSpec};
use vllm_mcp_testkit::{McpProcess, bin, status_kb, temp_dir};

async fn call(s: &McpProcess, tool: &str, args: Value) -> (Value, Duration) {
    let t = Instant::now();
    let a = s.call(tool, args).await;
    let took = t.elapsed();
    assert!(!a.is_error, "{tool}: {}", a.json);
    (a.json, took)
}

/// Saves and loads the generated session `runs` times each, then clears 1,000 states.
pub async fn save_and_load(runs: usize) -> Vec<Row> {
    eprintln!("state: generating a 10,000-message session");
    let dir = temp_dir();
    let crush = dir.path().join(".crush/crush.db");
    std::fs::create_dir_all(crush.parent().expect("parent")).expect("crush dir");
    let spec = ConversationSpec {
        seed: 42,
        messages: 10_000,
        sub_sessions: 3,
        target_bytes: Some(20_000_000),
    };
    let root = {
        let conn = rusqlite::Connection::open(&crush).expect("crush db");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        crush_db::create_schema(&conn).expect("schema");
        generate::insert(&conn, &spec).expect("generate")
    };
    let parts_mb = CrushDb::open_read_only(&crush)
        .expect("open")
        .export(&root)
        .expect("export")
        .expect("session")
        .parts_bytes() as f64
        / 1e6;

    let data = dir.path().to_str().expect("utf-8 path").to_string();
    let s = McpProcess::spawn(
        &bin("vllm-state-persistence"),
        &[
            ("VLLM_MCP_DATA_DIR", &data),
            ("VLLM_MCP_CRUSH_DB", crush.to_str().expect("utf-8 path")),
        ],
    )
    .await;
    let pid = s.pid;

    eprintln!("state: save-state x {runs}");
    let (mut saves, mut peaks) = (Vec::new(), Vec::new());
    let mut last = Value::Null;
    for _ in 0..runs {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        let (a, took) = call(&s, "save-state", json!({"session_id": root})).await;
        peaks.push(status_kb(pid, "VmHWM:"));
        saves.push(took);
        last = a;
    }
    let raw = last["raw_bytes"].as_f64().unwrap_or(0.0);
    let stored = last["size_bytes"].as_f64().unwrap_or(0.0);
    let ratio = last["compression_ratio"].as_f64().unwrap_or(0.0);
    let saves = Samples::new(saves);
    let save_mbs = raw / saves.median().as_secs_f64() / 1e6;
    let peak = peaks.iter().copied().max().unwrap_or(0);

    eprintln!("state: load-state x {runs}");
    let mut loads = Vec::new();
    for _ in 0..runs {
        let (a, took) = call(&s, "load-state", json!({"session_id": root})).await;
        assert_eq!(a["messages"], spec.messages as u64, "{a}");
        loads.push(took);
    }
    let loads = Samples::new(loads);
    let load_mbs = raw / loads.median().as_secs_f64() / 1e6;

    // Clear of 1,000 small states, written straight into the store.
    let store = Store::open_in_dir(dir.path()).expect("store");
    let part: EncodedPart =
        states::encode_part(PartKind::Models, &states::ModelsPart::default(), true).expect("part");
    for i in 0..1000 {
        let meta = StateMeta {
            state_id: format!("bench-{i:04}"),
            session_id: format!("bench-session-{i:04}"),
            created_at: 1.0e9 + f64::from(i),
            timestamp: vllm_core::time::format_rfc3339(1_000_000_000 + i64::from(i)),
            format_version: states::FORMAT_VERSION,
            vllm_versions: vec![],
            title: None,
            model_count: 0,
            session_count: 0,
            message_count: 0,
            models_index: Default::default(),
            note: None,
            metrics: None,
            parts: states::part_infos(std::slice::from_ref(&part)),
        };
        states::insert(&store, &meta, std::slice::from_ref(&part), 20).expect("insert");
    }
    drop(store);
    let (a, clear) = call(
        &s,
        "clear-state",
        json!({"older_than_hours": 24, "include_conversations": true}),
    )
    .await;
    assert_eq!(a["cleared_items"], 1000, "{a}");
    s.close().await;

    vec![
        Row::target(
            format!(
                "`save-state` of a 10,000-message session ({parts_mb:.1} MB of parts, {:.1} MB JSON)",
                raw / 1e6
            ),
            ">= 100 MB/s, ratio >= 4",
            format!(
                "{save_mbs:.0} MB/s (median {:.0} ms of {}), ratio {ratio:.2} ({:.2} MB stored)",
                ms(saves.median()),
                saves.len(),
                stored / 1e6
            ),
            save_mbs >= 100.0 && ratio >= 4.0,
        ),
        Row::target(
            "state server peak resident memory while saving it",
            "< 3x the payload",
            format!(
                "{:.1} MiB ({:.1} MB)",
                mib(peak),
                peak as f64 * 1024.0 / 1e6
            ),
            (peak as f64 * 1024.0) < 3.0 * raw,
        ),
        Row::info(
            "`load-state` of the same",
            format!("{load_mbs:.0} MB/s (median {:.0} ms)", ms(loads.median())),
        ),
        Row::target(
            "`clear-state` of 1,000 states",
            "< 200 ms",
            format!("{:.0} ms", ms(clear)),
            ms(clear) < 200.0,
        ),
    ]
}
