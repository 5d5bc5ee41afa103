//! vllm-state-persistence: saves and restores vLLM serving state and Crush conversations.
//!
//! The library holds the server so tests can run it in-process; `main.rs` only starts it.
//! - one file per tool (or tight pair), parameters, answer and handler: [`save`],
//!   [`load`], [`clear`], [`transfer`] (export-state, import-state), and [`common`],
//!   what they share;
//! - [`resources`]: `vllm://state/sessions`, `vllm://state/session/{id}/summary`,
//!   `vllm://state/session/{id}/conversation`.
//!
//! The format, checksums and store rows are `vllm_core::states`; Crush's database is
//! `vllm_core::crush_db`; saving is `vllm_fleet::snapshot` and relaunching models is
//! `vllm_fleet::restore`, through the model manager's `Launcher`, so its queue and
//! limits apply.

pub mod clear;
pub mod common;
pub mod load;
pub mod resources;
pub mod save;
pub mod transfer;

use rmcp::model::{Resource, ResourceTemplate};
use std::sync::Arc;
use vllm_core::{Error, Result};
use vllm_fleet::launcher::supervisor::Launcher;
use vllm_mcp_kit::{Kit, ResourceBody, Service, Toolbox};

/// The binary's name, also `serverInfo.name`.
pub const NAME: &str = "vllm-state-persistence";

/// The server's state.
pub struct StatePersistence {
    kit: Arc<Kit>,
    /// `None` when the store could not be opened (tools then answer STORAGE_ERROR).
    launcher: Option<Arc<Launcher>>,
}

impl StatePersistence {
    /// The shared context.
    pub fn kit_ref(&self) -> &Kit {
        &self.kit
    }

    /// The launcher, or why it is unavailable.
    pub fn launcher(&self) -> Result<&Launcher> {
        match &self.launcher {
            Some(l) => Ok(l),
            None => Err(self
                .kit
                .store()
                .err()
                .unwrap_or_else(|| Error::storage("the store is not available"))),
        }
    }
}

impl Service for StatePersistence {
    fn kit(&self) -> &Kit {
        &self.kit
    }

    fn instructions(&self) -> String {
        "Saves and restores vLLM serving state and Crush conversations. save-state records every launched model \
         (source, arguments, sampling defaults, GPUs) and the Crush session's conversation (session_id `current` \
         means Crush's most recent session); load-state relaunches the models with the same arguments and makes \
         the conversation readable (vllm://state/session/{id}/conversation), or puts it back into Crush's database \
         with restore_to_crush; clear-state deletes saved states; export-state and import-state move a state \
         through a file under the data directory's exports/ (or a configured [state] export_dirs directory). vllm://state/sessions lists what is saved."
            .into()
    }

    async fn resources(&self) -> Vec<Resource> {
        resources::list(self).await
    }

    fn resource_templates(&self) -> Vec<ResourceTemplate> {
        resources::templates()
    }

    async fn read_resource(&self, uri: &str) -> Option<Result<ResourceBody>> {
        resources::read(self, uri).await
    }
}

/// Builds the server and its tools over a kit.
pub fn build(kit: Arc<Kit>) -> Result<(StatePersistence, Toolbox<StatePersistence>)> {
    vllm_mcp_kit::runtime::tune_allocator();
    let launcher = kit.store().ok().map(|s| {
        Arc::new(Launcher::new(
            kit.config.clone(),
            s.clone(),
            kit.gpus.clone(),
        ))
    });
    let mut tools = Toolbox::default();
    vllm_mcp_kit::health::add_health_tool(&mut tools);
    save::register(&mut tools);
    load::register(&mut tools);
    clear::register(&mut tools);
    transfer::register(&mut tools);
    Ok((StatePersistence { kit, launcher }, tools))
}
