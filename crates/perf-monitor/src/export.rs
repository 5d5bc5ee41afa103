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
use vllm_core::coordination::duties;
use vllm_core::monitor::export;
use vllm_core::store::Store;
use vllm_mcp_kit::Kit;
use vllm_mcp_kit::leased::{Listen, serve_while_held};

#[derive(Clone)]
struct Ctx {
    kit: Arc<Kit>,
    store: Store,
}

/// Serves `listen` while this process holds the listener lease, for the process's life.
pub async fn run(kit: Arc<Kit>, store: Store, listen: String) {
    let ctx = Ctx {
        kit: kit.clone(),
        store: store.clone(),
    };
    let l = Listen {
        store,
        duty: duties::PROMETHEUS_LISTENER,
        holder: kit.holder.clone(),
        address: &listen,
        what: "Prometheus metrics on /metrics",
        // Model names, endpoints and load are visible to whoever reaches it.
        beyond_loopback: Some(
            "the Prometheus export listens beyond loopback: anyone who can reach this address can read the fleet's metrics",
        ),
    };
    serve_while_held(l, |listener, shutdown| {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/", get(index))
            .with_state(ctx.clone());
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .into_future()
    })
    .await;
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
