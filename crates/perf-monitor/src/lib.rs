//! vllm-perf-monitor: watches vLLM throughput, latency, GPU health and alerts.
//!
//! The library holds the server so tests can run it in-process; `main.rs` only starts it.

use std::sync::Arc;
use vllm_core::Result;
use vllm_mcp_kit::{Kit, Service, Toolbox};

/// The binary's name, also `serverInfo.name`.
pub const NAME: &str = "vllm-perf-monitor";

/// The server's state.
pub struct PerfMonitor {
    kit: Arc<Kit>,
}

impl Service for PerfMonitor {
    fn kit(&self) -> &Kit {
        &self.kit
    }

    fn instructions(&self) -> String {
        "Reports vLLM performance: throughput, latency percentiles, memory, GPU health and active alerts. Call server-health to check the server, its store, the vLLM endpoints and NVML.".into()
    }
}

/// Builds the server and its tools over a kit.
pub fn build(kit: Arc<Kit>) -> Result<(PerfMonitor, Toolbox<PerfMonitor>)> {
    let mut tools = Toolbox::default();
    vllm_mcp_kit::health::add_health_tool(&mut tools);
    Ok((PerfMonitor { kit }, tools))
}
