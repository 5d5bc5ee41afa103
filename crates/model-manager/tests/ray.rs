//! The model manager with `[launcher] backend = "ray"`, on a real two-node Ray cluster of
//! this machine: the MCP tools and the front door work unchanged on models that run as
//! Ray jobs on either node (load-model with `node`, list-models and get-model-info
//! showing it, the log resource, a catalog model pinned to the second node started by a
//! request through the door, unload).

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use vllm_mcp_testkit::ray::{HEAD_IP, RayCluster, WORKER_IP};
use vllm_mcp_testkit::{McpProcess, ServerRig, bin, free_port, http_status};

fn ok(a: vllm_mcp_testkit::Answer) -> Value {
    assert!(!a.is_error, "{}", a.json);
    a.json
}

async fn listed(m: &McpProcess, id: &str) -> Value {
    let models = ok(m.call("list-models", json!({})).await);
    models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} is not listed: {models}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tools_and_the_front_door_on_a_ray_cluster() {
    vllm_core::vllm::install_tls_provider();
    let cluster = RayCluster::start();
    let door = free_port();
    let rig = ServerRig::new(&format!(
        "[gateway]\nlisten = \"127.0.0.1:{door}\"\n\
         [catalog.far]\nsource = \"mock/far\"\n[catalog.far.args]\nnode = \"{WORKER_IP}\"\n"
    ))
    .on_ray(&cluster.dashboard(), "");
    let m = rig.spawn(&bin("vllm-model-manager"), &[]).await;

    // load-model with a node: served from that node, and said so everywhere.
    let a = ok(m
        .call(
            "load-model",
            json!({"model_id": "near", "source": "mock/near", "node": HEAD_IP, "wait_seconds": 60}),
        )
        .await);
    assert_eq!(a["status"], "loaded", "{a}");
    assert_eq!(a["node"], HEAD_IP);
    assert!(
        a["base_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{HEAD_IP}:")),
        "{a}"
    );
    let near = listed(&m, "near").await;
    assert_eq!(
        (near["status"].as_str(), near["node"].as_str()),
        (Some("loaded"), Some(HEAD_IP))
    );
    assert!(
        near["memory_usage_mb"].is_null(),
        "not measured from here: {near}"
    );
    let info = ok(m.call("get-model-info", json!({"model_id": "near"})).await);
    assert!(
        info["server"]["ray_job"]
            .as_str()
            .unwrap()
            .starts_with("vllm-mcp-near-"),
        "{info}"
    );
    let log = m.read("vllm://model/near/logs").await.unwrap();
    assert!(log.contains("mock/near"), "{log}");

    // The front door starts the catalog model on the node its entry names.
    let t = Instant::now();
    while http_status(door, "/health") != Some(200) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the door never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{door}/v1/chat/completions"))
        .json(&json!({"model": "far", "max_tokens": 3,
                      "messages": [{"role": "user", "content": "Hi"}]}))
        .timeout(Duration::from_secs(90))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let far = listed(&m, "far").await;
    assert_eq!(far["node"], WORKER_IP, "{far}");

    // A saved state keeps where each model ran: restored, near goes back to its node.
    let state = rig.spawn(&bin("vllm-state-persistence"), &[]).await;
    let saved = ok(state
        .call(
            "save-state",
            json!({"session_id": "ray", "include_conversations": false}),
        )
        .await);
    assert_eq!(saved["models"], 2, "{saved}");
    ok(m.call("unload-model", json!({"model_id": "near"})).await);
    let restored = ok(state.call("load-state", json!({"session_id": "ray"})).await);
    assert_eq!(restored["restored"]["models"], 1, "{restored}");
    let action = |id: &str| {
        restored["model_actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["model_id"] == id)
            .map(|a| a["action"].clone())
    };
    assert_eq!(action("near"), Some(json!("launched")), "{restored}");
    assert_eq!(action("far"), Some(json!("already_running")), "{restored}");
    let t = Instant::now();
    let near = loop {
        let near = listed(&m, "near").await;
        if near["status"] == "loaded" {
            break near;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{near}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(near["node"], HEAD_IP, "{near}");
    state.close().await;

    // The monitor shows the cluster's nodes, and scrapes the models where they run.
    let monitor = rig.spawn(&bin("vllm-perf-monitor"), &[]).await;
    let mem = ok(monitor.call("get-memory-stats", json!({})).await);
    let nodes: Vec<&str> = mem["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes: {mem}"))
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert!(
        nodes.contains(&HEAD_IP) && nodes.contains(&WORKER_IP),
        "{mem}"
    );
    assert!(
        mem["nodes"][0]["memory_total_mb"].as_u64().unwrap() > 0,
        "{mem}"
    );
    let gpu = ok(monitor.call("get-gpu-stats", json!({})).await);
    assert_eq!(gpu["nodes"].as_array().map(Vec::len), Some(2), "{gpu}");
    let t = Instant::now();
    loop {
        let metrics = ok(monitor
            .call("get-metrics", json!({"per_model": true}))
            .await);
        if metrics.to_string().contains("\"near\"") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "near is not scraped: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    monitor.close().await;

    // Unload stops the jobs.
    for id in ["near", "far"] {
        let out = ok(m.call("unload-model", json!({"model_id": id})).await);
        assert_eq!(out["status"], "unloaded", "{out}");
    }
    m.close().await;
    drop(cluster);
}
