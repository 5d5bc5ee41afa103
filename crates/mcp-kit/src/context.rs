//! What every server holds: config, store, GPUs, endpoint clients, gate, identity.

use crate::gate::Gate;
use crate::notify::Notifier;
use std::sync::Arc;
use std::time::Instant;
use vllm_core::config::Config;
use vllm_core::coordination::HolderId;
use vllm_core::gpu::Gpus;
use vllm_core::store::Store;
use vllm_core::vllm::{EndpointSpec, VllmClient};
use vllm_core::{Error, Result};

/// The shared context of one server process. Cheap to share behind an `Arc`.
pub struct Kit {
    /// The binary's name (`vllm-model-manager`), also `serverInfo.name`.
    pub server: &'static str,
    /// The binary's version.
    pub version: &'static str,
    /// When the process started, for uptime.
    pub started: Instant,
    /// Wall-clock start, RFC 3339.
    pub started_at: String,
    pub config: Arc<Config>,
    /// The store, or why it could not be opened. A server without a store still answers
    /// (server-health says what is wrong; store-backed tools answer `STORAGE_ERROR`).
    store: std::result::Result<Store, String>,
    pub gpus: Gpus,
    /// One pooled client per attached endpoint, built once and reused by every call.
    pub endpoints: Vec<VllmClient>,
    pub gate: Gate,
    /// This process's identity in leases.
    pub holder: HolderId,
    /// MCP logging notifications to the connected client (model loaded, alert fired).
    pub notifier: Notifier,
}

impl Kit {
    /// Builds the context: opens the store (recording, not failing on, an error),
    /// builds endpoint clients and picks the GPU source.
    pub fn new(
        server: &'static str,
        version: &'static str,
        config: Config,
        gpus: Gpus,
    ) -> Result<Kit> {
        let store = Store::open_with(
            &config.data_dir.join(vllm_core::store::DB_FILE_NAME),
            vllm_core::store::StoreOptions::from(&config.store),
        )
        .map_err(|e| e.to_string());
        if let Err(e) = &store {
            tracing::error!(error = %e, "the store could not be opened; store-backed tools will fail");
        }
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| EndpointSpec::from_config(e, &config.http).and_then(VllmClient::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Kit {
            server,
            version,
            started: Instant::now(),
            started_at: vllm_core::time::now_rfc3339(),
            gate: Gate::new(&config.security),
            config: Arc::new(config),
            store,
            gpus,
            endpoints,
            holder: HolderId::for_process().clone(),
            notifier: Notifier::default(),
        })
    }

    /// The store, or `STORAGE_ERROR` saying why it is not available.
    pub fn store(&self) -> Result<&Store> {
        self.store.as_ref().map_err(|e| Error::Storage {
            message: format!("the store is not available: {e}"),
            path: Some(self.config.data_dir.clone()),
        })
    }

    /// Runs a blocking store operation off the async threads.
    pub async fn with_store<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.store()?.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::Internal(format!("store task failed: {e}")))?
    }
}
