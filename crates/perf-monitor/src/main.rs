//! The `vllm-perf-monitor` binary: an MCP server on stdio.

fn main() -> std::process::ExitCode {
    vllm_mcp_kit::runtime::main(
        vllm_perf_monitor::NAME,
        env!("CARGO_PKG_VERSION"),
        vllm_perf_monitor::build,
    )
}
