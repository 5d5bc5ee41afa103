//! vllm-gateway: the front door. One OpenAI- and Anthropic-compatible endpoint for every
//! model of the fleet, routed by the request's `model`, started on demand and swapped by
//! memory, on the lifecycle operations of `vllm_fleet` (the same path `load-model` takes).
//!
//! - [`http`]: the routes, the client's key, the answer while a model starts;
//! - [`resolve`]: a model name → the server that answers it, or what must happen first;
//! - [`demand`]: starts and wakes on demand, one per model, with a bounded queue;
//! - [`bringup`]: a start that makes room, a wake that makes room, the wait for either;
//! - [`swap`]: making room by the least recently used model, drained first;
//! - [`proxy`]: passing a request on and its answer back, chunk by chunk;
//! - [`usage`]: requests in flight and waiting, last use, per model;
//! - [`shared`]: that use published to the store, for every instance;
//! - [`listing`]: `GET /v1/models`; [`metrics`]: `GET /metrics`; [`error`]: the answers;
//! - [`ui`]: the fleet's page (`GET /`, `/ui`) and the JSON API behind it (`/ui/api`).

pub mod bringup;
pub mod demand;
pub mod error;
pub mod http;
pub mod listing;
pub mod metrics;
pub mod proxy;
pub mod resolve;
pub mod shared;
pub mod swap;
pub mod ui;
pub mod usage;

use axum::http::{HeaderMap, header};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use vllm_core::config::Config;
use vllm_core::vllm::VllmClient;
use vllm_fleet::launcher::supervisor::Launcher;
use vllm_fleet::lifecycle::Fleet;

pub use error::{Dialect, GatewayError};

/// The front door's state, shared by its connections.
pub struct Gateway {
    launcher: Arc<Launcher>,
    endpoints: Vec<VllmClient>,
    config: Arc<Config>,
    /// The key clients must send, read once from `gateway.api_key_env`.
    api_key: Option<String>,
    /// Unix seconds the gateway started: `created` of models without their own.
    started_at: i64,
    pub usage: Arc<usage::Usage>,
    metrics: metrics::Metrics,
    routes: resolve::RouteCache,
    /// Starts in progress (and the last one of each model), by model.
    starts: Mutex<HashMap<String, watch::Receiver<demand::StartState>>>,
    /// One swap at a time: two starts must not each swap the other out.
    swap_lock: tokio::sync::Mutex<()>,
    /// What the page keeps between its requests.
    page: ui::view::PageCache,
    /// `true` once `serve`'s shutdown began: long-lived answers (the page's log
    /// streams) end, so the graceful shutdown does not wait for them forever.
    closing: watch::Sender<bool>,
}

impl Gateway {
    /// A gateway over the launcher and the attached endpoints. `CONFIG_INVALID` when
    /// `gateway.api_key_env` names a variable that is unset or empty: the door would
    /// otherwise be open to anyone.
    pub fn new(
        launcher: Arc<Launcher>,
        endpoints: Vec<VllmClient>,
        config: Arc<Config>,
    ) -> vllm_core::Result<Arc<Gateway>> {
        let api_key = match &config.gateway.api_key_env {
            None => None,
            Some(var) => Some(std::env::var(var).ok().filter(|v| !v.is_empty()).ok_or_else(
                || vllm_core::Error::Config {
                    path: config.source.clone(),
                    key: "gateway.api_key_env".into(),
                    message: format!("the environment variable `{var}` is not set: the gateway would be open to anyone"),
                },
            )?),
        };
        Ok(Arc::new(Gateway {
            launcher,
            endpoints,
            config,
            api_key,
            started_at: vllm_core::time::unix_now() as i64,
            usage: Arc::default(),
            metrics: metrics::Metrics::default(),
            routes: resolve::RouteCache::default(),
            starts: Mutex::new(HashMap::new()),
            swap_lock: tokio::sync::Mutex::new(()),
            page: ui::view::PageCache::default(),
            closing: watch::Sender::new(false),
        }))
    }

    /// The fleet the gateway acts on.
    pub fn fleet(&self) -> Fleet<'_> {
        Fleet {
            launcher: Some(&self.launcher),
            endpoints: &self.endpoints,
            config: &self.config,
        }
    }

    /// The HTTP routes.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(self.clone())
    }

    /// Serves `listener` until `shutdown` completes; answers in progress are ended then.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.closing.send_replace(false);
        let gw = self.clone();
        let shutdown = async move {
            shutdown.await;
            gw.closing.send_replace(true);
        };
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

impl Gateway {
    /// `Ok` when no key is configured or the request carries it.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let bearer = value(header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
        let given = [bearer, value(header::HeaderName::from_static("x-api-key"))];
        if given
            .iter()
            .flatten()
            .any(|g| constant_time_eq(g.as_bytes(), key.as_bytes()))
        {
            Ok(())
        } else {
            Err(GatewayError::Unauthorized)
        }
    }
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
