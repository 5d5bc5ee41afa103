//! The `vllm-model-manager` binary: an MCP server on stdio, or the front door with
//! `--gateway`.

fn main() -> std::process::ExitCode {
    vllm_mcp_kit::runtime::main_with_modes(
        vllm_model_manager::NAME,
        env!("CARGO_PKG_VERSION"),
        &[vllm_model_manager::gateway::MODE],
        vllm_model_manager::build,
    )
}
