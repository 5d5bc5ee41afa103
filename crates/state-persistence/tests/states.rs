//! The state tools through a real MCP client spawning the server binary, with a Crush
//! database made by the test (`crush_db::create_schema` + the generator) and mock-vllm
//! as the vLLM command.
//!
//! Each test has its own data directory, Crush database and port range, so tests run in
//! parallel. Models a test launches are killed by the rig's drop.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use vllm_core::crush_db::{self, Conversation, CrushDb};
use vllm_core::launch_args::LaunchArgs;
use vllm_core::models::{self, ModelStatus};
use vllm_core::monitor::{Sample, history};
use vllm_core::states::{self, ModelsPart, PartKind};
use vllm_core::store::{Store, rusqlite};
use vllm_crush_gen::{self as generate, ConversationSpec};
use vllm_fleet::launcher::supervisor::{LaunchOutcome, LaunchRequest, Launcher};
use vllm_mcp_testkit::{Answer, McpProcess, ServerRig, temp_dir};

/// The shared rig plus Crush's database of the "project" the server runs in.
struct Rig {
    base: ServerRig,
    crush: PathBuf,
}

impl Rig {
    fn new(extra: &str) -> Rig {
        let base = ServerRig::new(extra);
        let crush = base.dir.path().join("project/.crush/crush.db");
        Rig { base, crush }
    }

    /// Creates Crush's database with generated conversations; returns their root ids.
    fn crush_with(&self, specs: &[ConversationSpec]) -> Vec<String> {
        std::fs::create_dir_all(self.crush.parent().unwrap()).unwrap();
        let conn = rusqlite::Connection::open(&self.crush).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        crush_db::create_schema(&conn).unwrap();
        specs
            .iter()
            .map(|s| generate::insert(&conn, s).unwrap())
            .collect()
    }

    async fn server(&self) -> McpProcess {
        self.server_with(&[]).await
    }

    async fn server_with(&self, env: &[(&str, &str)]) -> McpProcess {
        let mut all = vec![("VLLM_MCP_CRUSH_DB", self.crush.to_str().unwrap())];
        all.extend_from_slice(env);
        self.base
            .spawn(
                Path::new(env!("CARGO_BIN_EXE_vllm-state-persistence")),
                &all,
            )
            .await
    }

    fn store_path(&self) -> PathBuf {
        self.base.store_path()
    }

    fn export(&self, id: &str) -> Option<Conversation> {
        CrushDb::open_read_only(&self.crush)
            .unwrap()
            .export(id)
            .unwrap()
    }

    /// Deletes a conversation from Crush's database, as if it had been lost.
    fn forget(&self, conv: &Conversation) {
        let conn = rusqlite::Connection::open(&self.crush).unwrap();
        for s in &conv.sessions {
            let id = s["id"].as_str().unwrap();
            for t in ["messages", "files", "read_files"] {
                conn.execute(&format!("DELETE FROM {t} WHERE session_id = ?1"), [id])
                    .unwrap();
            }
            conn.execute("DELETE FROM sessions WHERE id = ?1", [id])
                .unwrap();
        }
    }

    fn launcher(&self) -> Launcher {
        let config = vllm_core::config::Config::load(Some(&self.base.config)).unwrap();
        let store = Store::open(&self.store_path()).unwrap();
        let gpus: vllm_core::gpu::Gpus = Arc::new(vllm_core::gpu::FakeGpus::without_driver());
        Launcher::new(Arc::new(config), store, gpus)
    }
}

fn spec(seed: u64, messages: usize, sub_sessions: usize) -> ConversationSpec {
    ConversationSpec {
        seed,
        messages,
        sub_sessions,
        target_bytes: None,
    }
}

fn code(a: &Answer) -> &str {
    a.code().unwrap_or("OK")
}

fn ok(a: Answer) -> Value {
    assert!(!a.is_error, "{}", a.json);
    a.json
}

#[tokio::test]
async fn save_forget_load_round_trips_byte_exact() {
    let rig = Rig::new("");
    let ids = rig.crush_with(&[spec(1, 300, 2)]);
    let root = &ids[0];
    let original = rig.export(root).unwrap();
    assert_eq!(original.session_count(), 3);
    let s = rig.server().await;

    let saved = ok(s.call("save-state", json!({"session_id": root})).await);
    assert_eq!(saved["success"], true);
    assert_eq!(saved["session_id"], root.as_str());
    assert!(saved["state_id"].as_str().unwrap().starts_with("st-"));
    assert!(saved["size_bytes"].as_u64().unwrap() > 0);
    assert!(vllm_core::time::parse_rfc3339(saved["timestamp"].as_str().unwrap()).is_some());
    assert!(saved["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(saved["conversations"], 3);
    assert_eq!(saved["messages"], original.message_count() as u64);
    assert!(
        saved["compression_ratio"].as_f64().unwrap() > 1.5,
        "{saved}"
    );
    let state_id = saved["state_id"].as_str().unwrap().to_string();

    // Lost from Crush, then put back: byte-exact.
    rig.forget(&original);
    assert!(rig.export(root).is_none());
    let loaded = ok(s
        .call(
            "load-state",
            json!({"session_id": root, "restore_to_crush": true}),
        )
        .await);
    assert_eq!(loaded["state_id"], state_id.as_str());
    assert_eq!(loaded["restored"]["conversations"], 3);
    assert_eq!(loaded["restored"]["models"], 0);
    assert_eq!(loaded["restored"]["configurations"], 0);
    assert_eq!(loaded["messages"], original.message_count() as u64);
    assert_eq!(loaded["crush"]["sessions_inserted"], 3, "{loaded}");
    assert_eq!(loaded["timestamp"], saved["timestamp"]);
    let back = rig.export(root).unwrap();
    assert_eq!(back, original, "the restored conversation is byte-exact");

    // Readable, paged.
    let uri = format!("vllm://state/session/{root}/conversation?limit=7");
    let page: Value = serde_json::from_str(&s.read(&uri).await.unwrap()).unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 7);
    let root_messages = original
        .messages
        .iter()
        .filter(|m| m["session_id"] == root.as_str())
        .count();
    assert_eq!(page["total"], root_messages as u64);
    assert_eq!(
        page["messages"][0],
        json!(
            original
                .messages
                .iter()
                .find(|m| m["session_id"] == root.as_str())
                .unwrap()
        )
    );
    let next = page["next_cursor"].as_str().unwrap();
    let page2: Value = serde_json::from_str(
        &s.read(&format!(
            "vllm://state/session/{root}/conversation?limit=7&cursor={next}"
        ))
        .await
        .unwrap(),
    )
    .unwrap();
    assert_ne!(page2["messages"][0], page["messages"][0]);

    // Listed concretely, for Crush.
    let uris = s.resource_uris().await;
    assert!(uris.contains(&"vllm://state/sessions".to_string()));
    assert!(
        uris.contains(&format!("vllm://state/session/{root}/summary")),
        "{uris:?}"
    );
    assert!(uris.contains(&format!("vllm://state/session/{root}/conversation")));

    // A second restore leaves Crush's (now existing) sessions alone.
    let again = ok(s
        .call(
            "load-state",
            json!({"session_id": root, "restore_to_crush": true}),
        )
        .await);
    assert_eq!(again["crush"]["sessions_inserted"], 0);
    assert_eq!(rig.export(root).unwrap(), original);

    // Summary: two states, their differences.
    ok(s.call("save-state", json!({"session_id": root})).await);
    let summary: Value = serde_json::from_str(
        &s.read(&format!("vllm://state/session/{root}/summary"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(summary["state_count"], 2, "{summary}");
    assert_eq!(
        summary["states"][0]["message_count"],
        original.message_count() as u64
    );
    assert!(summary["states"][0]["compression_ratio"].as_f64().unwrap() > 1.0);
    assert_eq!(summary["differences"]["message_count_change"], 0);
    assert!(summary["states"][0]["title"].is_string());
    s.close().await;
}

#[tokio::test]
async fn clear_parts_then_load_reports_what_is_left() {
    let rig = Rig::new("");
    let ids = rig.crush_with(&[spec(2, 40, 0)]);
    let s = rig.server().await;
    let a = ok(s.call("save-state", json!({"session_id": ids[0]})).await);
    let dry = ok(s
        .call(
            "clear-state",
            json!({"session_id": ids[0], "include_models": false, "dry_run": true}),
        )
        .await);
    assert_eq!(dry["cleared_items"], 1);
    assert_eq!(dry["dry_run"], true);
    let cleared = ok(s
        .call(
            "clear-state",
            json!({"session_id": ids[0], "include_models": false}),
        )
        .await);
    assert_eq!(cleared["cleared_items"], 1);
    assert_eq!(cleared["states_trimmed"], 1);
    assert!(cleared.get("space_freed_bytes").unwrap().is_u64());
    let l = ok(s.call("load-state", json!({"session_id": ids[0]})).await);
    assert_eq!(l["state_id"], a["state_id"]);
    assert_eq!(l["restored"]["conversations"], 0);
    // Now the models part goes too, and with it the state.
    let c = ok(s.call("clear-state", json!({"session_id": ids[0]})).await);
    assert_eq!(c["states_deleted"], 1);
    let l = s.call("load-state", json!({"session_id": ids[0]})).await;
    assert_eq!(code(&l), "STATE_NOT_FOUND");
    s.close().await;
}

#[tokio::test]
async fn current_resolves_to_the_latest_session_with_sub_agents() {
    let rig = Rig::new("");
    rig.crush_with(&[spec(3, 50, 1), spec(4, 60, 2)]);
    let latest = CrushDb::open_read_only(&rig.crush)
        .unwrap()
        .latest_session()
        .unwrap()
        .unwrap();
    let expected = rig.export(&latest).unwrap();
    let s = rig.server().await;
    let a = ok(s.call("save-state", json!({"session_id": "current"})).await);
    assert_eq!(a["session_id"], latest.as_str());
    assert_eq!(a["conversations"], expected.session_count() as u64);
    assert!(expected.session_count() > 1, "sub-agent sessions are saved");
    assert_eq!(a["messages"], expected.message_count() as u64);
    let l = ok(s.call("load-state", json!({"session_id": "current"})).await);
    assert_eq!(l["session_id"], latest.as_str());
    assert_eq!(
        l["restored"]["conversations"],
        expected.session_count() as u64
    );
    // Each sub-agent session is readable too.
    for sess in &expected.sessions {
        let id = sess["id"].as_str().unwrap();
        let body = s
            .read(&format!("vllm://state/session/{id}/conversation"))
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["session_id"], id, "{v}");
    }
    s.close().await;
}

#[tokio::test]
async fn without_crush_db_models_and_configurations_only() {
    let rig = Rig::new("");
    let s = rig.server().await;
    let a = ok(s.call("save-state", json!({"session_id": "current"})).await);
    assert_eq!(a["session_id"], "current");
    assert_eq!(a["conversations"], 0);
    assert_eq!(a["messages"], 0);
    assert!(a["conversation_source"].is_null());
    assert!(
        a["notes"][0]
            .as_str()
            .unwrap()
            .contains("no conversation source"),
        "{a}"
    );
    let l = ok(s.call("load-state", json!({"session_id": "current"})).await);
    assert_eq!(l["restored"]["conversations"], 0);
    let e = s
        .call(
            "load-state",
            json!({"session_id": "current", "restore_to_crush": true}),
        )
        .await;
    assert_eq!(code(&e), "INVALID_ARGUMENT");
    // Nothing at all to save is refused.
    let e = s
        .call(
            "save-state",
            json!({"session_id": "x", "include_models": false}),
        )
        .await;
    assert_eq!(code(&e), "INVALID_ARGUMENT");
    // Metrics: the monitor never sampled, so null with a note, never invented.
    let m = ok(s
        .call(
            "save-state",
            json!({"session_id": "x", "include_metrics": true}),
        )
        .await);
    assert!(m["notes"].to_string().contains("has never sampled"), "{m}");
    assert!(m["metric_samples"].is_null(), "{m}");
    let store = Store::open(&rig.store_path()).unwrap();
    let frame = states::read_frame(&store, m["state_id"].as_str().unwrap(), PartKind::Models)
        .unwrap()
        .unwrap();
    let part: ModelsPart = states::decode_part("x", PartKind::Models, &frame).unwrap();
    assert_eq!(part.metrics, None);
    assert!(part.metrics_note.unwrap().contains("never sampled"));
    // Retention keeps the newest 20 per session.
    let mut pruned = 0;
    for _ in 0..21 {
        let a = ok(s.call("save-state", json!({"session_id": "ret"})).await);
        pruned += a["pruned_states"].as_array().unwrap().len();
    }
    assert_eq!(pruned, 1);
    s.close().await;
}

#[tokio::test]
async fn restore_into_crush_while_another_connection_writes() {
    let rig = Rig::new("");
    let ids = rig.crush_with(&[spec(5, 200, 1), spec(6, 100, 0)]);
    let (saved_id, other_id) = (ids[0].clone(), ids[1].clone());
    let s = rig.server().await;
    ok(s.call("save-state", json!({"session_id": saved_id})).await);
    let original = rig.export(&saved_id).unwrap();
    let other = rig.export(&other_id).unwrap();
    rig.forget(&original);

    // Another connection keeps writing sessions of its own meanwhile.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let path = rig.crush.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                conn.execute(
                    "INSERT INTO sessions (id, title, message_count, updated_at, created_at) VALUES (?1, 'w', 0, 1, 1)",
                    [format!("writer-{n}")],
                )
                .unwrap();
                std::thread::sleep(Duration::from_millis(3));
                conn.execute_batch("COMMIT").unwrap();
                n += 1;
                // Crush writes in bursts: between its transactions others get the lock
                // (SQLite's busy handler polls, so a writer that never pauses starves it).
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };
    let l = ok(s
        .call(
            "load-state",
            json!({"session_id": saved_id, "restore_to_crush": true}),
        )
        .await);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0);
    assert_eq!(l["crush"]["sessions_inserted"], 2, "{l}");
    assert_eq!(rig.export(&saved_id).unwrap(), original);
    assert_eq!(
        rig.export(&other_id).unwrap(),
        other,
        "existing sessions untouched"
    );
    let c = rusqlite::Connection::open(&rig.crush).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    s.close().await;
}

#[tokio::test]
async fn kill_9_during_a_big_save_leaves_the_whole_state_or_none() {
    let rig = Rig::new("");
    let ids = rig.crush_with(&[ConversationSpec {
        seed: 7,
        messages: 3000,
        sub_sessions: 1,
        target_bytes: Some(8_000_000),
    }]);
    let s = rig.server().await;
    let first = ok(s.call("save-state", json!({"session_id": ids[0]})).await);
    let first_id = first["state_id"].as_str().unwrap().to_string();
    drop(s);
    for delay_ms in [5u64, 40, 120, 300] {
        let s = rig.server().await;
        let pid = s.pid;
        let call = {
            let peer = s.client.peer().clone();
            let id = ids[0].clone();
            tokio::spawn(async move {
                let mut p = rmcp::model::CallToolRequestParams::new("save-state");
                p = p.with_arguments(json!({"session_id": id}).as_object().unwrap().clone());
                let _ = peer.call_tool(p).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        let _ = call.await;
        drop(s);
        let store = Store::open(&rig.store_path()).unwrap();
        assert!(
            store.integrity_check().unwrap(),
            "after kill at {delay_ms} ms"
        );
        // Every state present is whole.
        for m in vllm_core::states::list_states(&store, &ids[0]).unwrap() {
            assert_eq!(m.parts.len(), 2, "{m:?}");
        }
    }
    let s = rig.server().await;
    let l = ok(s
        .call(
            "load-state",
            json!({"session_id": ids[0], "state_id": first_id}),
        )
        .await);
    assert_eq!(l["restored"]["conversations"], 2);
    let newest = ok(s.call("load-state", json!({"session_id": ids[0]})).await);
    assert_eq!(newest["restored"]["conversations"], 2);
    s.close().await;
}

#[tokio::test]
async fn corrupted_and_newer_states_are_refused_whole() {
    let rig = Rig::new("");
    let ids = rig.crush_with(&[spec(8, 50, 0)]);
    let s = rig.server().await;
    let a = ok(s.call("save-state", json!({"session_id": ids[0]})).await);
    let state_id = a["state_id"].as_str().unwrap().to_string();
    let conn = rusqlite::Connection::open(rig.store_path()).unwrap();
    let blob: Vec<u8> = conn
        .query_row(
            "SELECT data FROM state_parts WHERE state_id = ?1 AND part = 'conversations'",
            [&state_id],
            |r| r.get(0),
        )
        .unwrap();
    let set = |b: &[u8]| {
        conn.execute(
            "UPDATE state_parts SET data = ?2 WHERE state_id = ?1 AND part = 'conversations'",
            rusqlite::params![state_id, b],
        )
        .unwrap();
    };
    let mut bad = blob.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    bad[mid + 1] ^= 0x55;
    set(&bad);
    let e = s.call("load-state", json!({"session_id": ids[0]})).await;
    assert_eq!(code(&e), "STATE_CORRUPTED", "{}", e.json);
    assert_eq!(e.json["error"]["details"]["state"], state_id.as_str());
    // Nothing was half-restored.
    assert!(
        !s.resource_uris()
            .await
            .iter()
            .any(|u| u.ends_with("/conversation"))
    );
    set(&blob[..10]);
    let e = s.call("load-state", json!({"session_id": ids[0]})).await;
    assert_eq!(code(&e), "STATE_CORRUPTED");
    let mut newer = blob.clone();
    newer[4] = 99;
    set(&newer);
    let e = s.call("load-state", json!({"session_id": ids[0]})).await;
    assert_eq!(code(&e), "STATE_INCOMPATIBLE", "{}", e.json);
    set(&blob);
    ok(s.call("load-state", json!({"session_id": ids[0]})).await);
    s.close().await;
}

/// The argument vector with the port's value blanked: the launcher gives a model its old
/// port back when it is free, another when the old one is still held (a restart).
fn without_port(argv: &[String]) -> Vec<String> {
    let mut out = argv.to_vec();
    if let Some(i) = out.iter().position(|a| a == "--port") {
        out[i + 1] = "<port>".into();
    }
    out
}

async fn wait_loaded(l: &Launcher, id: &str) -> vllm_core::models::ModelRecord {
    let r = l
        .wait_settled(id, Duration::from_secs(30), |_| {})
        .await
        .unwrap();
    assert_eq!(r.status, ModelStatus::Loaded, "{r:?}");
    r
}

#[tokio::test]
async fn restore_relaunches_models_with_the_same_argv_and_reports_drift() {
    let rig = Rig::new("");
    let l = rig.launcher();
    let mut sampling = vllm_core::launch_args::SamplingDefaults::new();
    sampling.insert("temperature".into(), json!(0.3));
    models::set_sampling(l.store(), "tiny", &sampling).unwrap();
    let args = LaunchArgs {
        max_model_len: Some(512),
        dtype: Some("float16".into()),
        extra_args: vec!["--seed".into(), "7".into()],
        ..LaunchArgs::default()
    };
    let req = LaunchRequest {
        model_id: "tiny".into(),
        source: Some("mock/tiny".into()),
        args: args.clone(),
        ..LaunchRequest::default()
    };
    assert!(matches!(
        l.launch(&req).await.unwrap(),
        LaunchOutcome::Started { .. }
    ));
    let before = wait_loaded(&l, "tiny").await;
    assert!(before.argv.iter().any(|a| a.contains("temperature")));

    let s = rig.server().await;
    let saved = ok(s
        .call(
            "save-state",
            json!({"session_id": "fleet", "include_conversations": false}),
        )
        .await);
    assert_eq!(saved["models"], 1);
    assert!(
        !saved["vllm_versions"].as_array().unwrap().is_empty(),
        "{saved}"
    );

    // Same args running: skipped.
    let same = ok(s.call("load-state", json!({"session_id": "fleet"})).await);
    assert_eq!(same["restored"]["models"], 0);
    assert_eq!(same["model_actions"][0]["action"], "already_running");

    // Stopped, sampling changed: relaunched with exactly the saved argv.
    l.stop("tiny", true).await.unwrap();
    models::set_sampling(l.store(), "tiny", &Default::default()).unwrap();
    let r = ok(s.call("load-state", json!({"session_id": "fleet"})).await);
    assert_eq!(r["restored"]["models"], 1, "{r}");
    assert_eq!(r["restored"]["configurations"], 1);
    assert_eq!(r["model_actions"][0]["action"], "launched");
    let after = wait_loaded(&l, "tiny").await;
    assert_eq!(without_port(&after.argv), without_port(&before.argv));

    // Drift: running with other args is reported, not touched.
    l.stop("tiny", true).await.unwrap();
    let other = LaunchRequest {
        args: LaunchArgs {
            max_model_len: Some(256),
            ..args.clone()
        },
        ..req.clone()
    };
    l.launch(&other).await.unwrap();
    wait_loaded(&l, "tiny").await;
    let d = ok(s.call("load-state", json!({"session_id": "fleet"})).await);
    assert_eq!(d["drift"], json!(["tiny"]), "{d}");
    assert_eq!(d["restored"]["models"], 0);
    assert_eq!(
        d["model_actions"][0]["differences"]["max_model_len"],
        json!({"current": 256, "requested": 512})
    );
    assert_eq!(
        models::get(l.store(), "tiny")
            .unwrap()
            .unwrap()
            .args
            .max_model_len,
        Some(256)
    );
    let rep = ok(s
        .call(
            "load-state",
            json!({"session_id": "fleet", "replace_drifted": true}),
        )
        .await);
    assert_eq!(rep["model_actions"][0]["action"], "replaced", "{rep}");
    assert_eq!(rep["restored"]["models"], 1);
    let replaced = wait_loaded(&l, "tiny").await;
    assert_eq!(without_port(&replaced.argv), without_port(&before.argv));

    // Summary differences between the newest two states.
    ok(s.call(
        "save-state",
        json!({"session_id": "fleet", "include_conversations": false}),
    )
    .await);
    let sum: Value =
        serde_json::from_str(&s.read("vllm://state/session/fleet/summary").await.unwrap()).unwrap();
    assert_eq!(sum["states"][0]["model_count"], 1);
    assert_eq!(sum["differences"]["models_added"], json!([]));
    l.stop("tiny", true).await.unwrap();
    s.close().await;
}

#[tokio::test]
async fn bad_inputs_give_stable_codes_and_tiers_apply() {
    let rig = Rig::new("[security]\nmax_tier = \"control\"\n");
    let s = rig.server().await;
    let cases = [
        (
            "save-state",
            json!({"session_id": "x'; DROP TABLE states;--"}),
            "INVALID_ARGUMENT",
        ),
        (
            "save-state",
            json!({"session_id": "../../etc/passwd"}),
            "INVALID_ARGUMENT",
        ),
        (
            "save-state",
            json!({"session_id": "x".repeat(129)}),
            "INVALID_ARGUMENT",
        ),
        ("save-state", json!({}), "INVALID_ARGUMENT"),
        (
            "load-state",
            json!({"session_id": "nobody"}),
            "STATE_NOT_FOUND",
        ),
        (
            "load-state",
            json!({"session_id": "a", "state_id": "st-0-0-0"}),
            "STATE_NOT_FOUND",
        ),
        (
            "load-state",
            json!({"session_id": "a", "state_id": "a/b"}),
            "INVALID_ARGUMENT",
        ),
        (
            "load-state",
            json!({"session_id": "a", "restore_to_crush": true}),
            "PERMISSION_DENIED",
        ),
        (
            "load-state",
            json!({"session_id": "a", "replace_drifted": true}),
            "PERMISSION_DENIED",
        ),
        ("clear-state", json!({"all": true}), "PERMISSION_DENIED"),
        ("import-state", json!({"path": "x"}), "PERMISSION_DENIED"),
        (
            "export-state",
            json!({"state_id": "nope", "path": "x.vmsx"}),
            "STATE_NOT_FOUND",
        ),
    ];
    for (tool, args, want) in cases {
        let a = s.call(tool, args.clone()).await;
        assert_eq!(code(&a), want, "{tool} {args}: {}", a.json);
    }
    s.close().await;

    let rig = Rig::new("");
    let s = rig.server().await;
    for (args, field) in [
        (json!({"older_than_hours": -1}), "older_than_hours"),
        (json!({}), "all"),
        (json!({"session_id": "a b"}), "session_id"),
        (
            json!({"all": true, "include_models": false, "include_conversations": false}),
            "include_models",
        ),
    ] {
        let a = s.call("clear-state", args.clone()).await;
        assert_eq!(code(&a), "INVALID_ARGUMENT", "{args}");
        assert_eq!(a.json["error"]["details"]["field"], field, "{args}");
    }
    let a = ok(s
        .call("clear-state", json!({"all": true, "dry_run": true}))
        .await);
    assert_eq!(a["cleared_items"], 0);
    // Tools carry their tiers in annotations.
    let tools = s.tools().await;
    let destructive = |n: &str| {
        tools
            .iter()
            .find(|t| t.name == n)
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()
            .destructive_hint
    };
    assert_eq!(destructive("clear-state"), Some(true));
    assert_eq!(destructive("import-state"), Some(true));
    assert_eq!(destructive("save-state"), Some(false));
    s.close().await;
}

#[tokio::test]
async fn export_import_round_trip_and_path_escapes() {
    let rig = Rig::new("");
    let ids = rig.crush_with(&[spec(9, 80, 1)]);
    let original = rig.export(&ids[0]).unwrap();
    let s = rig.server().await;
    let a = ok(s.call("save-state", json!({"session_id": ids[0]})).await);
    let state_id = a["state_id"].as_str().unwrap();
    let e = ok(s
        .call(
            "export-state",
            json!({"state_id": state_id, "path": "one.vmsx"}),
        )
        .await);
    let file = PathBuf::from(e["path"].as_str().unwrap());
    assert!(file.starts_with(rig.base.dir.path().canonicalize().unwrap().join("exports")));
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        e["size_bytes"].as_u64().unwrap()
    );
    let again = s
        .call(
            "export-state",
            json!({"state_id": state_id, "path": "one.vmsx"}),
        )
        .await;
    assert_eq!(code(&again), "INVALID_ARGUMENT", "never overwritten");

    // Imported into an empty store: the same state comes back.
    let rig2 = Rig::new("");
    std::fs::create_dir_all(rig2.base.dir.path().join("exports")).unwrap();
    std::fs::copy(&file, rig2.base.dir.path().join("exports/one.vmsx")).unwrap();
    rig2.crush_with(&[]);
    let s2 = rig2.server().await;
    let i = ok(s2.call("import-state", json!({"path": "one.vmsx"})).await);
    assert_eq!(i["state_id"], state_id);
    assert_eq!(i["session_id"], ids[0].as_str());
    assert_eq!(i["messages"], original.message_count() as u64);
    let l = ok(s2
        .call(
            "load-state",
            json!({"session_id": ids[0], "restore_to_crush": true}),
        )
        .await);
    assert_eq!(l["crush"]["sessions_inserted"], 2);
    assert_eq!(rig2.export(&ids[0]).unwrap(), original);
    s2.close().await;

    // Escapes.
    let outside = temp_dir();
    std::os::unix::fs::symlink(outside.path(), rig.base.dir.path().join("exports/link")).unwrap();
    std::os::unix::fs::symlink(
        "/etc/hostname",
        rig.base.dir.path().join("exports/file-link"),
    )
    .unwrap();
    for (tool, path, want) in [
        ("export-state", "../escape.vmsx", "INVALID_ARGUMENT"),
        ("export-state", "sub/../../x.vmsx", "INVALID_ARGUMENT"),
        ("export-state", "/tmp/x.vmsx", "PERMISSION_DENIED"),
        ("export-state", "link/x.vmsx", "PERMISSION_DENIED"),
        ("import-state", "/etc/passwd", "PERMISSION_DENIED"),
        ("import-state", "file-link", "PERMISSION_DENIED"),
        ("import-state", "link/x.vmsx", "PERMISSION_DENIED"),
        ("import-state", "missing.vmsx", "INVALID_ARGUMENT"),
    ] {
        let args = if tool == "import-state" {
            json!({"path": path})
        } else {
            json!({"state_id": state_id, "path": path})
        };
        let a = s.call(tool, args).await;
        assert_eq!(code(&a), want, "{tool} {path}: {}", a.json);
    }
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    // A damaged file is refused whole.
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n / 3] ^= 1;
    std::fs::write(rig.base.dir.path().join("exports/bad.vmsx"), &bytes).unwrap();
    let b = s.call("import-state", json!({"path": "bad.vmsx"})).await;
    assert_eq!(code(&b), "STATE_CORRUPTED");
    s.close().await;
}

fn sample(ts: f64, endpoint: &str, model: &str, tokens: f64) -> Sample {
    Sample {
        ts,
        endpoint: endpoint.into(),
        base_url: format!("http://127.0.0.1:1/{endpoint}"),
        model: model.into(),
        up: true,
        start_time: Some(1.0e9),
        generation_tokens: Some(tokens),
        running: Some(1.0),
        ..Sample::default()
    }
}

#[tokio::test]
async fn include_metrics_saves_the_monitors_last_hour() {
    let rig = Rig::new("");
    let ids = rig.crush_with(&[spec(12, 10, 0)]);
    // Written through the monitor's own API, as its sampler would (no live sampler).
    let store = Store::open(&rig.store_path()).unwrap();
    let now = vllm_core::time::unix_now();
    let old = now - 2.0 * 3600.0;
    history::insert(&store, &[sample(old, "a", "m1", 1.0)], &[], old).unwrap();
    for i in 0..3 {
        let ts = now - 600.0 + f64::from(i) * 5.0;
        let round = [
            sample(ts, "a", "m1", 10.0 + f64::from(i)),
            sample(ts, "b", "m2", 20.0 + f64::from(i)),
        ];
        history::insert(&store, &round, &[], ts).unwrap();
    }
    let s = rig.server().await;
    let a = ok(s
        .call(
            "save-state",
            json!({"session_id": ids[0], "include_metrics": true}),
        )
        .await);
    assert_eq!(a["metric_samples"], 6, "{a}");
    assert!(
        a["notes"].to_string().contains("6 sample(s) of 2 series"),
        "{a}"
    );
    let state_id = a["state_id"].as_str().unwrap().to_string();

    // The summary shows the count.
    let summary: Value = serde_json::from_str(
        &s.read(&format!("vllm://state/session/{}/summary", ids[0]))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(summary["states"][0]["metric_samples"], 6, "{summary}");
    assert_eq!(summary["states"][0]["metrics"]["series"], 2, "{summary}");

    // load-state says how many the state holds.
    let l = ok(s.call("load-state", json!({"session_id": ids[0]})).await);
    assert_eq!(l["metric_samples"], 6, "{l}");

    // The part holds the samples, by series in time order; the old one is left out.
    let frame = states::read_frame(&store, &state_id, PartKind::Models)
        .unwrap()
        .unwrap();
    let part: ModelsPart = states::decode_part(&state_id, PartKind::Models, &frame).unwrap();
    let m = part.metrics.unwrap();
    assert_eq!(m.samples, 6);
    assert!(!m.truncated);
    assert_eq!(m.series.len(), 2);
    assert_eq!(
        (m.series[0].endpoint.as_str(), m.series[0].model.as_str()),
        ("a", "m1")
    );
    let tokens: Vec<f64> = m.series[0]
        .samples
        .iter()
        .map(|x| x.generation_tokens.unwrap())
        .collect();
    assert_eq!(tokens, [10.0, 11.0, 12.0]);
    assert_eq!(m.series[1].samples[2], {
        let mut x = sample(now - 600.0 + 10.0, "b", "m2", 22.0);
        x.ts = m.series[1].samples[2].ts;
        x
    });
    assert!(m.first_ts.unwrap() >= now - 3600.0);

    // Without include_metrics: nothing about metrics.
    let b = ok(s.call("save-state", json!({"session_id": ids[0]})).await);
    assert!(b["metric_samples"].is_null(), "{b}");
    s.close().await;
}

#[tokio::test]
async fn retention_honours_keep_per_session() {
    let rig = Rig::new("[state]\nkeep_per_session = 2\n");
    let s = rig.server().await;
    let mut saved = Vec::new();
    let mut pruned = Vec::new();
    for _ in 0..4 {
        let a = ok(s.call("save-state", json!({"session_id": "ret"})).await);
        saved.push(a["state_id"].as_str().unwrap().to_string());
        pruned.extend(
            a["pruned_states"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string()),
        );
    }
    assert_eq!(pruned, saved[..2], "the oldest two go");
    let summary: Value =
        serde_json::from_str(&s.read("vllm://state/session/ret/summary").await.unwrap()).unwrap();
    assert_eq!(summary["state_count"], 2, "{summary}");
    s.close().await;
}

#[tokio::test]
async fn export_dirs_are_accepted_and_others_refused() {
    let allowed = temp_dir();
    let other = temp_dir();
    let allowed_dir = allowed.path().canonicalize().unwrap();
    let rig = Rig::new(&format!(
        "[state]\nexport_dirs = [{:?}]\n",
        allowed_dir.display().to_string()
    ));
    let s = rig.server().await;
    let a = ok(s.call("save-state", json!({"session_id": "ex"})).await);
    let state_id = a["state_id"].as_str().unwrap();
    let target = allowed_dir.join("ex.vmsx");
    let e = ok(s
        .call(
            "export-state",
            json!({"state_id": state_id, "path": target.to_str().unwrap()}),
        )
        .await);
    assert_eq!(e["path"], target.to_str().unwrap());
    assert!(target.is_file());
    // Relative paths still go to <data_dir>/exports.
    let r = ok(s
        .call(
            "export-state",
            json!({"state_id": state_id, "path": "rel.vmsx"}),
        )
        .await);
    assert!(r["path"].as_str().unwrap().contains("/exports/"), "{r}");
    // Another directory is refused both ways.
    let refused = other.path().join("no.vmsx");
    let x = s
        .call(
            "export-state",
            json!({"state_id": state_id, "path": refused.to_str().unwrap()}),
        )
        .await;
    assert_eq!(code(&x), "PERMISSION_DENIED", "{}", x.json);
    assert!(!refused.exists());
    std::fs::copy(&target, &refused).unwrap();
    let x = s
        .call("import-state", json!({"path": refused.to_str().unwrap()}))
        .await;
    assert_eq!(code(&x), "PERMISSION_DENIED", "{}", x.json);
    // A symlink inside the allowed directory pointing elsewhere is refused too.
    std::os::unix::fs::symlink(other.path(), allowed_dir.join("link")).unwrap();
    let x = s
        .call(
            "export-state",
            json!({"state_id": state_id, "path": allowed_dir.join("link/y.vmsx").to_str().unwrap()}),
        )
        .await;
    assert_eq!(code(&x), "PERMISSION_DENIED", "{}", x.json);
    // Import from the allowed directory works.
    let i = ok(s
        .call("import-state", json!({"path": target.to_str().unwrap()}))
        .await);
    assert_eq!(i["session_id"], "ex");
    s.close().await;
}
