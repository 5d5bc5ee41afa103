//! Crush stops servers with SIGKILL of their process group, at any moment. Here each
//! of the three servers is killed at a pseudo-random moment in the middle of writing,
//! again and again (`VLLM_MCP_KILL_LOOPS`, default 100): after every kill the store
//! passes `PRAGMA integrity_check`, and at the end every state that a save reported
//! saved decodes whole.

mod common;

use common::Fleet;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vllm_core::states::PartKind;
use vllm_core::store::Store;
use vllm_crush_gen::ConversationSpec;
use vllm_mcp_testkit::wire::text_of;

/// A small deterministic generator (xorshift), so a failing round can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn servers_killed_mid_write_leave_a_whole_store_and_every_reported_save() {
    let loops: usize = std::env::var("VLLM_MCP_KILL_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let fleet = Fleet::new(
        "kill/attached",
        "[monitor]\nsample_interval_seconds = 0.2\n[state]\nkeep_per_session = 100000\n",
        ConversationSpec {
            seed: 11,
            messages: 400,
            sub_sessions: 1,
            target_bytes: Some(1_000_000),
        },
    );
    let rig = &fleet.rig;
    // One launched model, whose sampling defaults the manager rounds rewrite.
    fleet.load("kill/launched");

    let saved: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut completed_before_kill = 0usize;
    let t = Instant::now();
    for round in 0..loops {
        let name = [
            "vllm-state-persistence",
            "vllm-model-manager",
            "vllm-perf-monitor",
        ][round % 3];
        let mut w = fleet.spawn(name);
        let pid = w.pid() as i32;
        let saved = saved.clone();
        let session = fleet.session.clone();
        let worker = std::thread::spawn(move || {
            let mut done = 0usize;
            for i in 0.. {
                let (method, params) = match round % 3 {
                    0 => (
                        "tools/call",
                        json!({"name": "save-state", "arguments": {"session_id": session}}),
                    ),
                    1 => (
                        "tools/call",
                        json!({"name": "set-model-config", "arguments": {
                            "model_id": "kill/launched",
                            "config": {"temperature": (i % 100) as f64 / 100.0, "max_tokens": 8 + i % 50}
                        }}),
                    ),
                    _ => (
                        "tools/call",
                        json!({"name": "get-metrics", "arguments": {"duration_seconds": 60}}),
                    ),
                };
                let Some(msg) = w.try_request_raw(method, params) else {
                    break;
                };
                let a = text_of(&msg["result"]);
                assert_eq!(a["success"], true, "round {round}: {a}");
                if let Some(id) = a["state_id"].as_str() {
                    saved.lock().unwrap().push(id.to_string());
                }
                done += 1;
            }
            done
        });
        let delay = 20 + rng.next() % 400;
        std::thread::sleep(Duration::from_millis(delay));
        // SAFETY: kill only sends a signal to the group this test started.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        completed_before_kill += worker.join().expect("the worker panicked");
        let store = Store::open(&rig.store_path()).unwrap();
        assert!(
            store.integrity_check().unwrap(),
            "round {round} ({name}, killed after {delay} ms): integrity_check failed"
        );
    }
    let store = Store::open(&rig.store_path()).unwrap();
    let saved = saved.lock().unwrap().clone();
    for meta in common::saved_states_whole(&store, &saved) {
        assert_eq!(meta.parts.len(), 2, "{meta:?}");
        for kind in [PartKind::Models, PartKind::Conversations] {
            assert!(
                meta.parts.iter().any(|p| p.part == kind),
                "no {kind:?}: {meta:?}"
            );
        }
    }
    eprintln!(
        "{loops} kills in {:.0} s: integrity_check passed after each; {completed_before_kill} calls \
         answered before the kills, {} reported saves all whole",
        t.elapsed().as_secs_f64(),
        saved.len()
    );
    assert!(
        saved.len() >= loops / 6,
        "too few saves finished to prove anything: {}",
        saved.len()
    );
    // A later manager adopts the launched model and unloads it.
    fleet.manage("unload-model", json!({"model_id": "kill/launched"}));
    assert!(rig.marked_pids().is_empty(), "{:?}", rig.marked_pids());
}
