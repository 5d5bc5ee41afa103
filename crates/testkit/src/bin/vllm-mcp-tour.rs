//! The quick-start tour: drives the three MCP servers through a real MCP client.
//!
//! Against the bundled mock-vllm by default, or against a real vLLM when `VLLM_BASE_URL`
//! is set (with `VLLM_API_KEY` if it needs one). It spawns each server as Crush would,
//! lists its tools, and calls them, printing what a client sees.

use serde_json::{Value, json};
use std::time::Instant;
use vllm_mcp_testkit::{McpProcess, MockVllm, bin, temp_dir};

const SERVERS: [(&str, &str); 3] = [
    ("vllm-model-manager", "vllm-model-manager"),
    ("vllm-state-persistence", "vllm-state-persistence"),
    ("vllm-performance-monitor", "vllm-perf-monitor"),
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let data = temp_dir();
    let data_dir =
        std::env::var("VLLM_MCP_DATA_DIR").unwrap_or_else(|_| data.path().display().to_string());
    let (_mock, base_url) = match std::env::var("VLLM_BASE_URL") {
        Ok(url) if !url.is_empty() => {
            println!("Using the vLLM at {url} (VLLM_BASE_URL).");
            (None, url)
        }
        _ => {
            print!("Starting the bundled mock vLLM (mock-vllm serve mock/tiny-llama) ... ");
            let t = Instant::now();
            let m = MockVllm::start(
                &[
                    "mock/tiny-llama",
                    "--served-model-name",
                    "tiny",
                    "--max-model-len",
                    "2048",
                ],
                &[],
            );
            println!("ready on {} in {} ms.", m.base_url, t.elapsed().as_millis());
            let url = m.base_url.clone();
            (Some(m), url)
        }
    };
    println!("Data directory: {data_dir}\n");
    let mut failures = 0;
    for (key, exe) in SERVERS {
        let path = bin(exe);
        let t = Instant::now();
        let server = McpProcess::spawn(
            &path,
            &[
                ("VLLM_MCP_DATA_DIR", &data_dir),
                ("VLLM_BASE_URL", &base_url),
            ],
        )
        .await;
        println!(
            "== {key} ({}), connected in {} ms",
            path.display(),
            t.elapsed().as_millis()
        );
        for tool in server.tools().await {
            let desc = tool.description.as_deref().unwrap_or("");
            let first = desc.split(". ").next().unwrap_or(desc);
            println!("   tool mcp_{key}_{:<16} {first}", tool.name);
        }
        let t = Instant::now();
        let health = server.call("server-health", json!({})).await;
        let h = &health.json;
        println!(
            "   server-health ({} ms): {}",
            t.elapsed().as_millis(),
            summary(h)
        );
        if health.is_error || h["store"]["ok"] != true {
            failures += 1;
        }
        for ep in h["endpoints"].as_array().into_iter().flatten() {
            println!(
                "     endpoint {} {}: {}",
                ep["name"].as_str().unwrap_or("?"),
                ep["base_url"].as_str().unwrap_or("?"),
                if ep["reachable"] == true {
                    format!(
                        "reachable, vLLM {}",
                        ep["vllm_version"].as_str().unwrap_or("?")
                    )
                } else {
                    failures += 1;
                    format!("NOT reachable: {}", ep["error"].as_str().unwrap_or("?"))
                }
            );
        }
        server.close().await;
        println!();
    }
    if failures == 0 {
        println!(
            "All three servers answered. Add them to Crush with the `mcp` block in README.md."
        );
        std::process::ExitCode::SUCCESS
    } else {
        println!("{failures} problem(s) above.");
        std::process::ExitCode::FAILURE
    }
}

fn summary(h: &Value) -> String {
    format!(
        "{} v{}, store {} (schema {}), NVML {}",
        h["status"].as_str().unwrap_or("?"),
        h["version"].as_str().unwrap_or("?"),
        if h["store"]["ok"] == true {
            "ok"
        } else {
            "NOT ok"
        },
        h["store"]["schema_version"],
        if h["nvml"]["available"] == true {
            format!("{} GPU(s)", h["nvml"]["gpu_count"])
        } else {
            "unavailable (no NVIDIA driver: GPU figures are null)".into()
        }
    )
}
