//! Benchmark of the model manager as a client sees it: round trips over stdio MCP.
//!
//! Run with `cargo bench -p vllm-model-manager --bench manager`. It starts the real
//! binary with mock-vllm as the vLLM command, loads 20 models (20 mock server process
//! trees), then times:
//! - `list-models` with those 20 loaded (each server's process checked live; the
//!   supervision round checks their HTTP health every second) — target under 5 ms;
//! - `load-model` answering without `wait_seconds` (validation, memory check, the
//!   placement transaction and the spawn) — target under 50 ms.
//!
//! It prints median, p90 and p99 for each and stops everything it started.

use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use vllm_mcp_testkit::{McpProcess, bin, free_port, temp_dir};

const MODELS: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut samples: Vec<Duration>, target_ms: f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(percentile(&samples, 0.5));
    println!(
        "{name:<44} n={:<4} median {median:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  target < {target_ms} ms: {}",
        samples.len(),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
        if median < target_ms { "met" } else { "NOT met" }
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo bench` passes flags such as --bench; this binary takes none.
    let dir = temp_dir();
    let base = free_port().clamp(20_000, 60_000);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[limits]\nmax_models = 64\n[launcher]\ncommand = [{:?}]\nport_range = [{base}, {}]\n\
             [launcher.env]\nMOCK_VLLM_START_DELAY = \"0\"\n",
            dir.path().display().to_string(),
            bin("mock-vllm").display().to_string(),
            base + 200
        ),
    )
    .unwrap();
    let m = McpProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_vllm-model-manager")),
        &[("VLLM_MCP_CONFIG", config.to_str().unwrap())],
    )
    .await;

    let ids: Vec<String> = (0..MODELS).map(|i| format!("bench/m{i:02}")).collect();
    let a = m
        .call("load-model", json!({"model_ids": ids, "wait_seconds": 60}))
        .await;
    let loaded = a.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "loaded")
        .count();
    assert_eq!(loaded, MODELS, "{}", a.json);

    // Warm up connections and caches the way a session would.
    for _ in 0..20 {
        m.call("list-models", json!({})).await;
    }
    let mut list = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        let r = m.call("list-models", json!({})).await;
        list.push(t.elapsed());
        assert_eq!(r.json["total"], MODELS);
    }

    let mut load = Vec::new();
    for i in 0..30 {
        let id = format!("bench/new{i:02}");
        let t = Instant::now();
        let r = m.call("load-model", json!({"model_id": id})).await;
        load.push(t.elapsed());
        assert_eq!(r.json["status"], "loading", "{}", r.json);
        m.call("unload-model", json!({"model_id": id, "force": true}))
            .await;
    }

    println!("\nvllm-model-manager over stdio MCP, mock-vllm backends, {MODELS} models loaded");
    report(&format!("list-models ({MODELS} loaded)"), list, 5.0);
    report("load-model answer (no wait)", load, 50.0);

    let u = m
        .call("unload-model", json!({"model_ids": ids, "force": true}))
        .await;
    assert!(!u.is_error, "{}", u.json);
    m.close().await;
}
