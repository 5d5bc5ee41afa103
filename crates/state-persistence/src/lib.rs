//! vllm-state-persistence: saves and restores vLLM serving state and Crush conversations.
//!
//! The library holds the server so tests can run it in-process; `main.rs` only starts it.

use std::sync::Arc;
use vllm_core::Result;
use vllm_mcp_kit::{Kit, Service, Toolbox};

/// The binary's name, also `serverInfo.name`.
pub const NAME: &str = "vllm-state-persistence";

/// The server's state.
pub struct StatePersistence {
    kit: Arc<Kit>,
}

impl Service for StatePersistence {
    fn kit(&self) -> &Kit {
        &self.kit
    }

    fn instructions(&self) -> String {
        "Saves and restores vLLM serving state (models, their arguments and sampling defaults) and Crush conversations. Call server-health to check the server and its store.".into()
    }
}

/// Builds the server and its tools over a kit.
pub fn build(kit: Arc<Kit>) -> Result<(StatePersistence, Toolbox<StatePersistence>)> {
    let mut tools = Toolbox::default();
    vllm_mcp_kit::health::add_health_tool(&mut tools);
    Ok((StatePersistence { kit }, tools))
}
