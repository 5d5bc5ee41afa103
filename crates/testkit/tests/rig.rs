//! The server rig's guard: whatever a test leaves running is killed when its rig drops.

use serde_json::json;
use std::time::{Duration, Instant};
use vllm_mcp_testkit::{ServerRig, bin, process_alive};

#[tokio::test]
async fn dropping_the_rig_kills_what_its_servers_launched() {
    let rig = ServerRig::new("");
    let m = rig.spawn(&bin("vllm-model-manager"), &[]).await;
    let a = m
        .call(
            "load-model",
            json!({"model_id": "left", "source": "mock/left", "wait_seconds": 30}),
        )
        .await;
    assert_eq!(a.json["status"], "loaded", "{}", a.json);
    let pid = a.json["pid"].as_u64().unwrap() as u32;
    let manager = m.pid;
    // A test that "forgets" to unload: the launched server outlives its manager...
    drop(m);
    assert!(process_alive(pid));
    // ...until the rig goes.
    drop(rig);
    let t = Instant::now();
    while (process_alive(pid) || process_alive(manager)) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!process_alive(pid), "the launched server was killed");
    assert!(!process_alive(manager), "the manager was killed");
}
