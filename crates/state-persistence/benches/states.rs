//! Benchmark of the state tools through the real server binary (`cargo bench -p
//! vllm-state-persistence`): save of a 10,000-message session (~20 MB of parts), its
//! load, a clear of 1,000 states, and the server's peak RSS while saving.
//!
//! Targets: save < 500 ms with a compression ratio >= 4, load < 300 ms, clear of 1,000
//! states < 200 ms, peak RSS while saving < 3x the payload. The peak is the server's
//! VmHWM from /proc after resetting it (`echo 5 > /proc/<pid>/clear_refs`) just before
//! the save, so it is the peak of the save alone; the baseline RSS is printed beside it.

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use vllm_core::crush_db::generate::{self, ConversationSpec};
use vllm_core::crush_db::{self, CrushDb};
use vllm_core::states::{self, EncodedPart, PartKind, StateMeta};
use vllm_core::store::{Store, rusqlite};
use vllm_mcp_testkit::{McpProcess, status_kb, temp_dir};

const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

async fn call(s: &McpProcess, tool: &str, args: Value) -> (Value, Duration) {
    let t = Instant::now();
    let a = s.call(tool, args).await;
    let took = t.elapsed();
    assert!(!a.is_error, "{tool}: {}", a.json);
    (a.json, took)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = temp_dir();
    let crush = dir.path().join(".crush/crush.db");
    std::fs::create_dir_all(crush.parent().unwrap()).unwrap();
    let spec = ConversationSpec {
        seed: 42,
        messages: 10_000,
        sub_sessions: 3,
        target_bytes: Some(20_000_000),
    };
    let t = Instant::now();
    let root = {
        let conn = rusqlite::Connection::open(&crush).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        crush_db::create_schema(&conn).unwrap();
        generate::insert(&conn, &spec).unwrap()
    };
    let conv = CrushDb::open_read_only(&crush)
        .unwrap()
        .export(&root)
        .unwrap()
        .unwrap();
    let parts_mb = conv.parts_bytes() as f64 / 1e6;
    println!(
        "generated: {} messages, {} sessions, {:.1} MB of parts in {:.0} ms",
        conv.message_count(),
        conv.session_count(),
        parts_mb,
        ms(t.elapsed())
    );
    drop(conv);

    let data = dir.path().to_str().unwrap().to_string();
    let bin = Path::new(env!("CARGO_BIN_EXE_vllm-state-persistence"));
    let s = McpProcess::spawn(
        bin,
        &[
            ("VLLM_MCP_DATA_DIR", &data),
            ("VLLM_MCP_CRUSH_DB", crush.to_str().unwrap()),
        ],
    )
    .await;
    let pid = s.pid;

    // Save.
    let mut saves = Vec::new();
    let mut peaks = Vec::new();
    let mut split = Vec::new();
    let mut last = Value::Null;
    for _ in 0..RUNS {
        let base_kb = status_kb(pid, "VmRSS:");
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        let (a, took) = call(&s, "save-state", json!({"session_id": root})).await;
        peaks.push((base_kb, status_kb(pid, "VmHWM:"), status_kb(pid, "VmRSS:")));
        split.push((status_kb(pid, "RssAnon:"), status_kb(pid, "RssFile:")));
        saves.push(ms(took));
        last = a;
    }
    let (base_kb, peak_kb, _) = peaks[0];
    let raw_mb = last["raw_bytes"].as_f64().unwrap() / 1e6;
    let stored_mb = last["size_bytes"].as_f64().unwrap() / 1e6;
    let ratio = last["compression_ratio"].as_f64().unwrap();
    let save_ms = median(saves.clone());
    println!(
        "save-state: median {save_ms:.0} ms (runs {:?}), payload {raw_mb:.1} MB JSON -> {stored_mb:.2} MB stored, ratio {ratio:.2}",
        saves.iter().map(|v| v.round()).collect::<Vec<_>>()
    );
    println!(
        "  target < 500 ms: {}; ratio >= 4: {}",
        verdict(save_ms < 500.0),
        verdict(ratio >= 4.0)
    );
    let peak_mb = peak_kb as f64 / 1024.0;
    println!(
        "  server peak RSS during the first save (VmHWM): {peak_mb:.1} MiB (baseline RSS {:.1} MiB); 3x payload = {:.1} MB: {}",
        base_kb as f64 / 1024.0,
        3.0 * raw_mb,
        verdict(peak_mb * 1.048_576 < 3.0 * raw_mb)
    );
    println!(
        "  every run (MiB RSS before / peak / after): {:?}",
        peaks
            .iter()
            .map(|(b, p, a)| format!(
                "{:.0}/{:.0}/{:.0}",
                *b as f64 / 1024.0,
                *p as f64 / 1024.0,
                *a as f64 / 1024.0
            ))
            .collect::<Vec<_>>()
    );

    println!(
        "  RSS after each run, anonymous / file-backed (MiB): {:?}",
        split
            .iter()
            .map(|(a, f)| format!("{:.0}/{:.0}", *a as f64 / 1024.0, *f as f64 / 1024.0))
            .collect::<Vec<_>>()
    );

    // Load (conversations made readable; no models to launch).
    let mut loads = Vec::new();
    for _ in 0..RUNS {
        let (a, took) = call(&s, "load-state", json!({"session_id": root})).await;
        assert_eq!(a["messages"], spec.messages as u64);
        loads.push(ms(took));
    }
    let load_ms = median(loads.clone());
    println!(
        "load-state: median {load_ms:.0} ms (runs {:?}); target < 300 ms: {}",
        loads.iter().map(|v| v.round()).collect::<Vec<_>>(),
        verdict(load_ms < 300.0)
    );

    // Clear of 1,000 states (small ones, as saved without a conversation), written
    // straight into the store.
    let store = Store::open_in_dir(dir.path()).unwrap();
    let part: EncodedPart =
        states::encode_part(PartKind::Models, &states::ModelsPart::default(), true).unwrap();
    let t = Instant::now();
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
        states::insert(&store, &meta, std::slice::from_ref(&part), 20).unwrap();
    }
    println!("  (1,000 states inserted in {:.0} ms)", ms(t.elapsed()));
    drop(store);
    let (a, took) = call(
        &s,
        "clear-state",
        json!({"older_than_hours": 24, "include_conversations": true}),
    )
    .await;
    assert_eq!(a["cleared_items"], 1000, "{a}");
    println!(
        "clear-state of 1,000 states: {:.0} ms, {} bytes freed; target < 200 ms: {}",
        ms(took),
        a["space_freed_bytes"],
        verdict(ms(took) < 200.0)
    );
    s.close().await;
}
