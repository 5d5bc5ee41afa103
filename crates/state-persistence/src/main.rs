//! The `vllm-state-persistence` binary: an MCP server on stdio.

fn main() -> std::process::ExitCode {
    vllm_mcp_kit::runtime::main(
        vllm_state_persistence::NAME,
        env!("CARGO_PKG_VERSION"),
        vllm_state_persistence::build,
    )
}
