//! The front door in the model manager. Embedded: any instance with `gateway.listen` set
//! serves it while it holds the `gateway` lease (as the Prometheus listener is served), so
//! one of several Crush sessions always does. Standalone: `vllm-model-manager --gateway`
//! serves it as a long-lived service without MCP on stdio, with the supervision duties,
//! and leaves the models running when it stops.

use std::sync::Arc;
use std::time::Duration;
use vllm_core::Error;
use vllm_core::coordination::{LeaseKeeper, duties};
use vllm_core::store::Store;
use vllm_fleet::launcher::supervisor::Launcher;
use vllm_gateway::Gateway;
use vllm_mcp_kit::Kit;
use vllm_mcp_kit::runtime::{Mode, ServiceFuture};

/// How long the holder's lease lasts without renewal (a dead holder on this host is
/// replaced at once; elsewhere after this).
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// Wait between tries when the address cannot be bound.
pub const BIND_RETRY: Duration = Duration::from_secs(2);

/// `--gateway`: the front door as a service.
pub const MODE: Mode = Mode {
    flag: "--gateway",
    help: "Serve the front door ([gateway] listen) as a service, not MCP on stdio",
    run: standalone,
};

fn standalone(kit: Arc<Kit>) -> ServiceFuture {
    Box::pin(async move {
        let Some(listen) = kit.config.gateway.listen.clone() else {
            return Err(Error::Config {
                path: kit.config.source.clone(),
                key: "gateway.listen".into(),
                message: "--gateway needs an address to serve on (listen = \"127.0.0.1:4000\")"
                    .into(),
            });
        };
        let store = kit.store()?.clone();
        let launcher = Arc::new(Launcher::new(
            kit.config.clone(),
            store.clone(),
            kit.gpus.clone(),
        ));
        tokio::spawn(crate::supervise(launcher.clone(), store.clone()));
        let gw = Gateway::new(launcher, kit.endpoints.clone(), kit.config.clone())?;
        serve_while_held(kit, store, gw, listen).await;
        Ok(())
    })
}

/// Serves the front door from this MCP server while it holds the lease. A gateway that
/// cannot be made (its key is unset) is logged and not served.
pub async fn embedded(kit: Arc<Kit>, launcher: Arc<Launcher>, store: Store, listen: String) {
    match Gateway::new(launcher, kit.endpoints.clone(), kit.config.clone()) {
        Ok(gw) => serve_while_held(kit, store, gw, listen).await,
        Err(e) => tracing::error!(code = e.code(), "the front door is not served: {e}"),
    }
}

/// Serves `listen` while this process holds the `gateway` lease, for the process's life.
async fn serve_while_held(kit: Arc<Kit>, store: Store, gw: Arc<Gateway>, listen: String) {
    let keeper = LeaseKeeper::spawn(store, duties::GATEWAY, kit.holder.clone(), LEASE_TTL);
    let mut held = keeper.subscribe();
    loop {
        if held.wait_for(|h| *h).await.is_err() {
            break;
        }
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%listen, error = %e, "the front door could not bind; retrying");
                tokio::time::sleep(BIND_RETRY).await;
                continue;
            }
        };
        if let Ok(addr) = listener.local_addr()
            && !addr.ip().is_loopback()
            && kit.config.gateway.api_key_env.is_none()
        {
            tracing::warn!(%addr, "the front door listens beyond loopback without a key: anyone who can reach it can start models");
        }
        tracing::info!(%listen, "serving the front door (OpenAI and Anthropic APIs)");
        let mut lost = held.clone();
        let shutdown = async move {
            let _ = lost.wait_for(|h| !*h).await;
        };
        let holder = kit.holder.as_str().to_string();
        let publisher = tokio::spawn(gw.clone().publish_use(holder.clone()));
        if let Err(e) = gw.clone().serve(listener, shutdown).await {
            tracing::warn!(error = %e, "the front door stopped");
        }
        publisher.abort();
        gw.withdraw_use(holder).await;
        tracing::info!(%listen, "the front door closed (lease lost)");
    }
    keeper.shutdown().await;
}
