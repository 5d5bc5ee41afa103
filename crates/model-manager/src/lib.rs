//! vllm-model-manager: loads, unloads and inspects vLLM models.
//!
//! The library holds the server so tests can run it in-process; `main.rs` only starts it.

use std::sync::Arc;
use vllm_core::Result;
use vllm_mcp_kit::{Kit, Service, Toolbox};

/// The binary's name, also `serverInfo.name`.
pub const NAME: &str = "vllm-model-manager";

/// The server's state.
pub struct ModelManager {
    kit: Arc<Kit>,
}

impl Service for ModelManager {
    fn kit(&self) -> &Kit {
        &self.kit
    }

    fn instructions(&self) -> String {
        "Manages vLLM models: list, load, unload, inspect and configure them. Call server-health to check the server, its store and the vLLM endpoints.".into()
    }
}

/// Builds the server and its tools over a kit.
pub fn build(kit: Arc<Kit>) -> Result<(ModelManager, Toolbox<ModelManager>)> {
    let mut tools = Toolbox::default();
    vllm_mcp_kit::health::add_health_tool(&mut tools);
    Ok((ModelManager { kit }, tools))
}
