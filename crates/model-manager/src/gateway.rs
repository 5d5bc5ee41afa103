//! The front door in the model manager. Embedded: any instance with `gateway.listen` set
//! serves it while it holds the `gateway` lease (as the Prometheus listener is served), so
//! one of several Crush sessions always does. Standalone: `vllm-model-manager --gateway`
//! serves it as a long-lived service without MCP on stdio, with the supervision duties
//! and the monitor's sampler (for the page's charts; one sampler across processes, by
//! its lease), and leaves the models running when it stops.

use std::sync::Arc;
use vllm_core::Error;
use vllm_core::coordination::duties;
use vllm_core::monitor::Sampler;
use vllm_core::store::Store;
use vllm_fleet::launcher::supervisor::Launcher;
use vllm_gateway::Gateway;
use vllm_mcp_kit::Kit;
use vllm_mcp_kit::leased::{self, Listen};
use vllm_mcp_kit::runtime::{Mode, ServiceFuture};

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
        // The page's charts read the monitor's history: a door alone keeps it too. The
        // sampler runs only while this process holds its lease, so with a performance
        // monitor running as well there is still one sampler.
        let sampler = Sampler::new(
            kit.config.clone(),
            store.clone(),
            kit.gpus.clone(),
            kit.endpoints.clone(),
        );
        tokio::spawn(vllm_core::monitor::sampler::run(
            Arc::new(sampler),
            kit.holder.clone(),
        ));
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

/// Serves `listen` while this process holds the `gateway` lease, for the process's
/// life, publishing the door's use to the store while it serves.
async fn serve_while_held(kit: Arc<Kit>, store: Store, gw: Arc<Gateway>, listen: String) {
    let l = Listen {
        store,
        duty: duties::GATEWAY,
        holder: kit.holder.clone(),
        address: &listen,
        what: "the front door (OpenAI and Anthropic APIs)",
        beyond_loopback: kit.config.gateway.api_key_env.is_none().then_some(
            "the front door listens beyond loopback without a key: anyone who can reach it can start models",
        ),
    };
    let holder = kit.holder.as_str().to_string();
    leased::serve_while_held(l, |listener, shutdown| {
        let (gw, holder) = (gw.clone(), holder.clone());
        async move {
            let publisher = tokio::spawn(gw.clone().publish_use(holder.clone()));
            let served = gw.clone().serve(listener, shutdown).await;
            publisher.abort();
            gw.withdraw_use(holder).await;
            served
        }
    })
    .await;
}
