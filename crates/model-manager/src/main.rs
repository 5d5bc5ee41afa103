//! The `vllm-model-manager` binary: an MCP server on stdio.

fn main() -> std::process::ExitCode {
    vllm_mcp_kit::runtime::main(
        vllm_model_manager::NAME,
        env!("CARGO_PKG_VERSION"),
        vllm_model_manager::build,
    )
}
