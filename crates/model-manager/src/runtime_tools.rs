//! Tools that act on a running server: runtime LoRA adapters, sleep mode, and a chat to try a model.

use crate::ModelManager;
use vllm_mcp_kit::Toolbox;

/// Registers the runtime tools.
pub fn register(_t: &mut Toolbox<ModelManager>) {}
