//! The README's quick start: the tour does the main job against the bundled mock: the
//! front door starts a model on demand, streams, swaps under a one-model limit, the three
//! MCP servers answer, and the Crush configuration uses the door as its provider.

#[test]
fn the_tour_does_the_main_job_against_the_bundled_mock() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vllm-mcp-tour"))
        .env_remove("VLLM_BASE_URL")
        .env_remove("VLLM_MCP_DATA_DIR")
        .env_remove("VLLM_MCP_REAL_VLLM")
        .env_remove("VLLM_MCP_REAL_MODEL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "== The front door: vllm-model-manager --gateway on http://127.0.0.1:",
        "started on demand",
        "(14 chunks)",
        "tiny is loaded, small is unloaded: swapped out",
        "== MCP: mcp_vllm-model-manager_list-models",
        "through the door, last at",
        "== MCP: mcp_vllm-performance-monitor_get-metrics",
        "== MCP: mcp_vllm-state-persistence_save-state",
        ": 2 models, 0 conversations",
        "\"name\": \"vLLM (vllm-mcp front door)\"",
        "Done.",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
    let crush = &stdout[stdout.find("\n{\n").expect("the Crush config")..];
    let end = crush.find("\n}\n").expect("its end") + 2;
    let crush: serde_json::Value = serde_json::from_str(&crush[..end]).unwrap();
    let door = &crush["providers"]["vllm-mcp"];
    assert!(
        door["base_url"].as_str().unwrap().ends_with("/v1"),
        "{crush}"
    );
    assert_eq!(door["models"].as_array().unwrap().len(), 2, "{crush}");
    assert_eq!(crush["mcp"].as_object().unwrap().len(), 3, "{crush}");
}
