//! The README's quick start: the tour drives all three servers against the bundled mock.

#[test]
fn the_tour_succeeds_against_the_bundled_mock() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vllm-mcp-tour"))
        .env_remove("VLLM_BASE_URL")
        .env_remove("VLLM_MCP_DATA_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for server in [
        "vllm-model-manager",
        "vllm-state-persistence",
        "vllm-performance-monitor",
    ] {
        assert!(stdout.contains(&format!("== {server}")), "{stdout}");
    }
    assert_eq!(
        stdout.matches("reachable, vLLM 0.32.0").count(),
        3,
        "{stdout}"
    );
}
