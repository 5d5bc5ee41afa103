//! A full store and a read-only one, through the servers: a clear `STORAGE_ERROR`, no
//! corruption, nothing launched or lost, and recovery when space (or write access)
//! returns. Root's chmod changes nothing and a real full disk needs mount rights, so
//! the faults are injected the way a user would set them: `store.max_size_mb` (SQLite's
//! `max_page_count`) and `store.read_only` (a read-only open).

mod common;

use common::Fleet;
use serde_json::json;
use std::time::Duration;
use vllm_core::states;
use vllm_core::store::Store;
use vllm_crush_gen::ConversationSpec;
use vllm_mcp_testkit::wire::text_of;

fn spec(seed: u64) -> ConversationSpec {
    ConversationSpec {
        seed,
        messages: 300,
        sub_sessions: 1,
        target_bytes: Some(1_500_000),
    }
}

fn rewrite_config(fleet: &Fleet, from: &str, to: &str) {
    let text = std::fs::read_to_string(&fleet.rig.config).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&fleet.rig.config, text.replace(from, to)).unwrap();
}

#[test]
fn a_full_store_answers_storage_error_loses_nothing_and_recovers() {
    let fleet = Fleet::new(
        "full/attached",
        "[store]\nmax_size_mb = 2\n[state]\nkeep_per_session = 1000\n",
        spec(21),
    );
    let mut w = fleet.spawn("vllm-state-persistence");
    let save = json!({"session_id": fleet.session});
    let mut saved = Vec::new();
    let refusal = loop {
        let a = text_of(&w.call("save-state", save.clone()));
        if a["success"] == true {
            saved.push(a["state_id"].as_str().unwrap().to_string());
            assert!(
                saved.len() < 60,
                "2 MiB held {} saves of 1.5 MB",
                saved.len()
            );
            continue;
        }
        break a;
    };
    assert!(
        saved.len() >= 2,
        "only {} saves fitted: {refusal}",
        saved.len()
    );
    assert_eq!(refusal["error"]["code"], "STORAGE_ERROR", "{refusal}");
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(message.contains("full"), "{message}");
    assert!(message.contains("store.max_size_mb = 2"), "{message}");

    // The server keeps serving, and what it saved before is listed and whole.
    let summary = w.read(&format!("vllm://state/session/{}/summary", fleet.session));
    assert!(summary.to_string().contains(&saved[0]), "{summary}");
    let health = text_of(&w.call("server-health", json!({})));
    assert_eq!(health["success"], true, "{health}");
    {
        let store = Store::open(&fleet.rig.store_path()).unwrap();
        assert!(store.integrity_check().unwrap());
        common::saved_states_whole(&store, &saved);
        assert_eq!(
            states::list_states(&store, &fleet.session).unwrap().len(),
            saved.len(),
            "the refused save left a state behind"
        );
    }

    // Space returns when old states go: the same server saves again.
    let cleared = text_of(&w.call("clear-state", json!({"session_id": fleet.session})));
    assert_eq!(cleared["success"], true, "{cleared}");
    let again = text_of(&w.call("save-state", save.clone()));
    assert_eq!(again["success"], true, "after clear-state: {again}");
    w.close(Duration::from_secs(5));

    // A larger cap on the next start: saves go on where the small one refused them.
    rewrite_config(&fleet, "max_size_mb = 2", "max_size_mb = 64");
    let mut w = fleet.spawn("vllm-state-persistence");
    let mut after = vec![again["state_id"].as_str().unwrap().to_string()];
    for _ in 0..saved.len() + 2 {
        let a = text_of(&w.call("save-state", save.clone()));
        assert_eq!(a["success"], true, "under the larger cap: {a}");
        after.push(a["state_id"].as_str().unwrap().to_string());
    }
    w.close(Duration::from_secs(5));
    let store = Store::open(&fleet.rig.store_path()).unwrap();
    assert!(store.integrity_check().unwrap());
    common::saved_states_whole(&store, &after);
    eprintln!(
        "2 MiB cap: {} saves of 1.5 MB, then STORAGE_ERROR; after clear-state 1 more, under 64 MiB {} more",
        saved.len(),
        after.len() - 1
    );
}

/// The database and WAL bytes, after every connection closed.
fn store_bytes(fleet: &Fleet) -> Vec<u8> {
    let db = fleet.rig.store_path();
    let mut bytes = std::fs::read(&db).unwrap();
    let mut wal = db.into_os_string();
    wal.push("-wal");
    bytes.extend(std::fs::read(wal).unwrap_or_default());
    bytes
}

#[test]
fn a_read_only_store_serves_reads_refuses_writes_and_launches_nothing() {
    let fleet = Fleet::new("ro/attached", "[store]\nread_only = false\n", spec(22));
    // A writable run first leaves a state, a model record and an audit trail.
    let mut w = fleet.spawn("vllm-state-persistence");
    let a = text_of(&w.call("save-state", json!({"session_id": fleet.session})));
    assert_eq!(a["success"], true, "{a}");
    let state_id = a["state_id"].as_str().unwrap().to_string();
    w.close(Duration::from_secs(5));
    let before = store_bytes(&fleet);

    rewrite_config(&fleet, "read_only = false", "read_only = true");
    let mut sp = fleet.spawn("vllm-state-persistence");
    let mut mm = fleet.spawn("vllm-model-manager");
    let mut pm = fleet.spawn("vllm-perf-monitor");

    // Reads work.
    let summary = sp.read(&format!("vllm://state/session/{}/summary", fleet.session));
    assert!(summary.to_string().contains(&state_id), "{summary}");
    let audit = sp.read("vllm://audit/log?limit=5");
    assert!(audit.to_string().contains("save-state"), "{audit}");
    let models = text_of(&mm.call("list-models", json!({})));
    assert_eq!(models["success"], true, "{models}");
    for w in [&mut sp, &mut mm, &mut pm] {
        let h = text_of(&w.call("server-health", json!({})));
        assert_eq!(h["success"], true, "{h}");
        assert!(h.to_string().contains("\"read_only\":true"), "{h}");
    }

    // Every write is a clear STORAGE_ERROR that says why.
    let writes = [
        (0, "save-state", json!({"session_id": fleet.session})),
        (0, "clear-state", json!({"session_id": fleet.session})),
        (
            1,
            "load-model",
            json!({"model_id": "ro/launched", "wait_seconds": 30}),
        ),
    ];
    for (server, tool, args) in writes {
        let w = if server == 0 { &mut sp } else { &mut mm };
        let a = text_of(&w.call(tool, args));
        assert_eq!(a["success"], false, "{tool}: {a}");
        assert_eq!(a["error"]["code"], "STORAGE_ERROR", "{tool}: {a}");
        let message = a["error"]["message"].as_str().unwrap();
        assert!(message.contains("read-only"), "{tool}: {message}");
    }
    // Nothing was launched for the refused load: only our three servers carry the marker.
    std::thread::sleep(Duration::from_millis(500));
    let launched = fleet.rig.marked_running("mock-vllm");
    assert!(
        launched.is_empty(),
        "launched under a read-only store: {launched:?}"
    );
    for w in [sp, mm, pm] {
        w.close(Duration::from_secs(5));
    }
    assert!(
        store_bytes(&fleet) == before,
        "the read-only servers changed the store"
    );

    // Writable again: nothing was lost, and the refused writes now work.
    rewrite_config(&fleet, "read_only = true", "read_only = false");
    let mut sp = fleet.spawn("vllm-state-persistence");
    let a = text_of(&sp.call("save-state", json!({"session_id": fleet.session})));
    assert_eq!(a["success"], true, "{a}");
    sp.close(Duration::from_secs(5));
    let store = Store::open(&fleet.rig.store_path()).unwrap();
    assert!(store.integrity_check().unwrap());
    common::saved_states_whole(
        &store,
        &[state_id, a["state_id"].as_str().unwrap().to_string()],
    );
}

#[test]
fn a_launch_the_store_cannot_record_is_stopped_not_orphaned() {
    let fleet = Fleet::new("rec/attached", "", spec(23));
    let mut mm = fleet.spawn("vllm-model-manager");
    // The process is spawned inside the transaction that records it; make the record's
    // insert fail the way a full disk would fail it, after the spawn.
    let conn = vllm_core::store::rusqlite::Connection::open(fleet.rig.store_path()).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER inject_full BEFORE INSERT ON models \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let a = text_of(&mm.call(
        "load-model",
        json!({"model_id": "rec/launched", "wait_seconds": 10}),
    ));
    assert_eq!(a["success"], false, "{a}");
    assert_eq!(a["error"]["code"], "STORAGE_ERROR", "{a}");
    let launched = || fleet.rig.marked_running("mock-vllm");
    let t = std::time::Instant::now();
    while !launched().is_empty() && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        launched().is_empty(),
        "the unrecorded launch is still running: {:?}",
        launched()
    );
    // Once the store takes writes again, the load works.
    conn.execute_batch("DROP TRIGGER inject_full").unwrap();
    let a = text_of(&mm.call(
        "load-model",
        json!({"model_id": "rec/launched", "wait_seconds": 60}),
    ));
    assert_eq!(a["success"], true, "{a}");
    let a = text_of(&mm.call("unload-model", json!({"model_id": "rec/launched"})));
    assert_eq!(a["success"], true, "{a}");
    mm.close(Duration::from_secs(5));
}
