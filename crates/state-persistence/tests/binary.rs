//! The `vllm-state-persistence` binary through a real MCP client: handshake, server-health, exit on EOF.

#[tokio::test]
async fn serves_health_and_exits_when_stdin_closes() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_vllm-state-persistence"));
    vllm_mcp_testkit::check_server_binary(bin, "vllm-state-persistence").await;
}

#[test]
fn a_bad_config_fails_fast_naming_the_key() {
    let dir = vllm_mcp_testkit::temp_dir();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[launcher]\nport_range = [9, 1]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vllm-state-persistence"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "stdout is the protocol channel");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("launcher.port_range") && err.contains("config.toml"),
        "{err}"
    );
}
