//! The `vllm-state-persistence` binary through a real MCP client: handshake, server-health, exit on EOF,
//! and a bad config refused.

use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_vllm-state-persistence");

#[tokio::test]
async fn serves_health_and_exits_when_stdin_closes() {
    vllm_mcp_testkit::check_server_binary(Path::new(BIN), "vllm-state-persistence").await;
}

#[test]
fn a_bad_config_fails_fast_naming_the_key() {
    vllm_mcp_testkit::check_bad_config_refused(Path::new(BIN));
}
