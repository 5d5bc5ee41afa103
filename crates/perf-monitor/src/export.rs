//! The Prometheus export listener: `/metrics` in Prometheus text format, served by one
//! monitor instance for all of them (the holder of the `prometheus_listener` lease).
//!
//! The body is `vllm_core::monitor::export::render_now`, read from the store at each
//! scrape, so whichever instance serves it answers the same. When the holder dies, the
//! socket closes with the process and the next instance to take the lease binds the
//! same address. A bind that fails (the port is taken by something else) is retried,
//! logged, and never stops the MCP server.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::time::Duration;
use vllm_core::coordination::{LeaseKeeper, duties};
use vllm_core::monitor::export;
use vllm_core::store::Store;
use vllm_mcp_kit::Kit;

/// How long a holder's lease lasts without renewal (a dead holder on this host is
/// replaced at once; elsewhere after this).
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// Wait between tries when the address cannot be bound.
pub const BIND_RETRY: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Ctx {
    kit: Arc<Kit>,
    store: Store,
}

/// Serves `listen` while this process holds the listener lease, for the process's life.
pub async fn run(kit: Arc<Kit>, store: Store, listen: String) {
    let keeper = LeaseKeeper::spawn(
        store.clone(),
        duties::PROMETHEUS_LISTENER,
        kit.holder.clone(),
        LEASE_TTL,
    );
    let mut held = keeper.subscribe();
    let ctx = Ctx { kit, store };
    loop {
        if held.wait_for(|h| *h).await.is_err() {
            break;
        }
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%listen, error = %e, "the Prometheus listener could not bind; retrying");
                tokio::time::sleep(BIND_RETRY).await;
                continue;
            }
        };
        tracing::info!(%listen, "serving Prometheus metrics on /metrics");
        if let Ok(addr) = listener.local_addr()
            && !addr.ip().is_loopback()
        {
            // Model names, endpoints and load are visible to whoever reaches it.
            tracing::warn!(%addr, "the Prometheus export listens beyond loopback: anyone who can reach this address can read the fleet's metrics");
        }
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/", get(index))
            .with_state(ctx.clone());
        let mut lost = held.clone();
        let shutdown = async move {
            let _ = lost.wait_for(|h| !*h).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "the Prometheus listener stopped");
        }
        tracing::info!(%listen, "Prometheus listener closed (lease lost)");
    }
    keeper.shutdown().await;
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    let kit = ctx.kit.clone();
    let store = ctx.store.clone();
    let body = tokio::task::spawn_blocking(move || {
        export::render_now(&kit.config, &store, &kit.gpus, kit.version)
    })
    .await;
    match body {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, export::CONTENT_TYPE)], text).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}: {e}\n", e.code()),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("INTERNAL: {e}\n"),
        )
            .into_response(),
    }
}

async fn index() -> &'static str {
    "vllm-perf-monitor: Prometheus metrics on /metrics\n"
}
