//! Eight clients, each with its own server process as Crush spawns them (three kinds
//! side by side on one store), 500 mixed calls each at once: no `database is locked`,
//! no storage error, no lost write (every call is in the audit log, every reported
//! save is in the store).

mod common;

use common::Fleet;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use vllm_core::states;
use vllm_core::store::{AuditQuery, Store};
use vllm_crush_gen::ConversationSpec;
use vllm_mcp_testkit::wire::{Wire, text_of};

const CLIENTS: usize = 8;
const CALLS: usize = 500;

#[test]
fn eight_clients_of_three_servers_share_one_store_without_losing_a_write() {
    let fleet = Fleet::new(
        "conc/attached",
        "[monitor]\nsample_interval_seconds = 0.5\n[state]\nkeep_per_session = 100000\n",
        ConversationSpec {
            seed: 5,
            messages: 40,
            sub_sessions: 1,
            target_bytes: None,
        },
    );
    let rig = &fleet.rig;
    // One launched model, whose sampling defaults the manager clients rewrite.
    fleet.load("conc/launched");
    let t = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let name = ["vllm-state-persistence", "vllm-model-manager", "vllm-perf-monitor"][c % 3];
            let cmd = fleet.command(name);
            let session = fleet.session.clone();
            std::thread::spawn(move || {
                let mut w = Wire::spawn(cmd);
                w.initialize();
                let mut saves = Vec::new();
                let mut problems = Vec::new();
                for i in 0..CALLS {
                    let (tool, args): (&str, Value) = match (c % 3, i % 5) {
                        (0, 0) => ("save-state", json!({"session_id": session})),
                        (0, 1) => ("clear-state", json!({"session_id": "conc-none", "dry_run": true})),
                        (1, 0) => (
                            "set-model-config",
                            json!({"model_id": "conc/launched", "config": {"temperature": (i % 10) as f64 / 10.0}}),
                        ),
                        (1, 1) => ("get-model-info", json!({"model_id": "conc/attached"})),
                        (1, _) => ("list-models", json!({})),
                        (2, 0) => ("get-metrics", json!({"duration_seconds": 30})),
                        (2, _) => ("get-gpu-stats", json!({})),
                        _ => ("server-health", json!({})),
                    };
                    let r = w.call(tool, args);
                    let a = text_of(&r);
                    if a["success"] != true || r.to_string().contains("locked") {
                        problems.push(format!("client {c} call {i} {tool}: {a}"));
                    }
                    if let Some(id) = a["state_id"].as_str() {
                        saves.push(id.to_string());
                    }
                }
                w.close(Duration::from_secs(10));
                (saves, problems)
            })
        })
        .collect();
    let mut saves = Vec::new();
    let mut problems = Vec::new();
    for w in workers {
        let (s, p) = w.join().expect("a client panicked");
        saves.extend(s);
        problems.extend(p);
    }
    let took = t.elapsed().as_secs_f64();
    assert!(
        problems.is_empty(),
        "{} failed calls:\n{}",
        problems.len(),
        problems.join("\n")
    );

    let store = Store::open(&rig.store_path()).unwrap();
    assert!(store.integrity_check().unwrap());
    // Every call is in the audit log: none was lost.
    let mut audited = 0;
    let mut before = None;
    loop {
        let page = store
            .audit_entries(&AuditQuery {
                limit: Some(AuditQuery::MAX_LIMIT),
                before_id: before,
                ..AuditQuery::default()
            })
            .unwrap();
        audited += page.len();
        match page.last() {
            Some(last) if page.len() == AuditQuery::MAX_LIMIT => before = last.id,
            _ => break,
        }
    }
    // Plus the one load-model call of the set-up.
    assert_eq!(audited, CLIENTS * CALLS + 1, "audit records");
    // Every reported save is whole in the store.
    for id in &saves {
        assert!(states::get(&store, id).unwrap().is_some(), "{id} lost");
    }
    let stored = states::list_states(&store, &fleet.session).unwrap().len();
    assert_eq!(stored, saves.len());
    eprintln!(
        "{CLIENTS} clients x {CALLS} calls on one store in {took:.1} s ({:.0} calls/s): \
         {audited} audited, {} saves, no lock error",
        (CLIENTS * CALLS) as f64 / took,
        saves.len()
    );
    fleet.manage("unload-model", json!({"model_id": "conc/launched"}));
    assert!(rig.marked_pids().is_empty(), "{:?}", rig.marked_pids());
}
