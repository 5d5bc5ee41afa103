//! The audit log keeps `security.audit_retention_days` of records: older ones go soon
//! after a server starts, newer ones stay.

use serde_json::json;
use std::time::{Duration, Instant};
use vllm_core::store::{AuditQuery, AuditRecord, Store};
use vllm_mcp_testkit::ServerRig;
use vllm_mcp_testkit::wire::Wire;

#[test]
fn records_past_the_retention_are_pruned() {
    let rig = ServerRig::new("[security]\naudit_retention_days = 7\n");
    {
        let store = Store::open(&rig.store_path()).unwrap();
        for (tool, days_ago) in [("old-call", 8.0), ("recent-call", 6.0)] {
            let mut r = AuditRecord::new("test", tool, json!({}), "OK", Duration::ZERO);
            r.ts -= days_ago * 86_400.0;
            store.record_audit(&r).unwrap();
        }
    }
    let mut w = Wire::spawn(rig.command("vllm-state-persistence"));
    w.initialize();
    let store = Store::open(&rig.store_path()).unwrap();
    let tools = || -> Vec<String> {
        store
            .audit_entries(&AuditQuery::default())
            .unwrap()
            .into_iter()
            .map(|e| e.tool)
            .collect()
    };
    let t = Instant::now();
    while tools().contains(&"old-call".to_string()) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "never pruned: {:?}",
            tools()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        tools().contains(&"recent-call".to_string()),
        "{:?}",
        tools()
    );
    w.close(Duration::from_secs(5));
}
