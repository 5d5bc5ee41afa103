//! Which server answers a model name, and what must happen first when none does yet:
//! the lifecycle's [`Fleet::locate`] turned into a route, with a short-lived cache so a
//! model that serves costs no store read per request.

use crate::Gateway;
use crate::error::{GatewayError, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vllm_core::models::{ModelRecord, ModelStatus};
use vllm_core::vllm::VllmClient;
use vllm_fleet::launcher::supervisor::LaunchRequest;
use vllm_fleet::lifecycle::Located;

/// How long a resolved route is trusted without looking again. A route that fails to
/// connect is dropped at once, so this bounds only how late a model swapped behind the
/// gateway's back (by another instance) is noticed.
pub const ROUTE_TTL: Duration = Duration::from_secs(2);

/// The server a request goes to.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub client: VllmClient,
    /// The model whose server it is (an adapter's base model): in-flight counts and
    /// least-recently-used order are kept under this name.
    pub owner: String,
}

/// What it takes to serve a model.
#[derive(Debug)]
pub enum Route {
    /// It serves now.
    Ready(Upstream),
    /// `owner` must be brought up first (`how`), then the name resolved again.
    BringUp { owner: String, how: BringUp },
    /// Nothing the fleet knows answers to the name.
    Unknown,
}

/// How a model that does not serve is brought up.
#[derive(Debug)]
pub enum BringUp {
    /// Launched through `load-model`'s path (a catalog alias, a model launched before
    /// with its recorded arguments, or with `load_unknown` any id).
    Launch(Box<LaunchRequest>),
    /// Asleep: woken.
    Wake(Box<ModelRecord>),
    /// Already loading (started by someone else): waited for.
    Settle(Box<ModelRecord>),
}

/// Resolved routes, by model name.
#[derive(Debug, Default)]
pub struct RouteCache {
    routes: Mutex<HashMap<String, (Instant, Upstream)>>,
}

impl RouteCache {
    /// A route resolved less than [`ROUTE_TTL`] ago.
    pub fn get(&self, model: &str) -> Option<Upstream> {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .get(model)
            .filter(|(at, _)| at.elapsed() < ROUTE_TTL)
            .map(|(_, u)| u.clone())
    }

    pub fn put(&self, model: &str, upstream: &Upstream) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.insert(model.to_string(), (Instant::now(), upstream.clone()));
    }

    /// Forgets every route to `owner`'s server (it failed, or is being swapped out).
    pub fn forget_owner(&self, owner: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.retain(|_, (_, u)| u.owner != owner);
    }
}

impl Gateway {
    /// What serving `model` takes now.
    pub async fn resolve(&self, model: &str) -> Result<Route> {
        let fleet = self.fleet();
        let located = match fleet.locate(model, &[ModelStatus::Loaded]).await {
            Ok(l) => l,
            Err(vllm_core::Error::ModelNotFound(_)) => return Ok(self.unknown(model)),
            Err(e @ vllm_core::Error::InvalidArgument { .. }) => {
                return Err(GatewayError::Start {
                    model: model.into(),
                    source: std::sync::Arc::new(e),
                });
            }
            Err(e) => {
                return Err(GatewayError::Upstream {
                    model: model.into(),
                    message: e.to_string(),
                });
            }
        };
        let launch = |req: LaunchRequest| Route::BringUp {
            owner: req.model_id.clone(),
            how: BringUp::Launch(Box::new(req)),
        };
        Ok(match located {
            Located::Launched(r) => self.route_of_record(r),
            Located::Attached { endpoint, card } => Route::Ready(Upstream {
                client: endpoint,
                owner: card.parent.unwrap_or(card.id),
            }),
            Located::Adapter { base, client, .. } => match base.status {
                ModelStatus::Sleeping => Route::BringUp {
                    owner: base.model_id.clone(),
                    how: BringUp::Wake(Box::new(base)),
                },
                _ => Route::Ready(Upstream {
                    client,
                    owner: base.model_id,
                }),
            },
            Located::Catalog { .. } => launch(self.first_launch(model)),
            Located::Cached { .. } => return Ok(self.unknown(model)),
        })
    }

    /// A launched model's route: its server when loaded, else what brings it back.
    fn route_of_record(&self, r: ModelRecord) -> Route {
        let owner = r.model_id.clone();
        match r.status {
            ModelStatus::Loaded => match self.launcher.client_for(&r) {
                Some(client) => Route::Ready(Upstream { client, owner }),
                None => Route::BringUp {
                    owner,
                    how: BringUp::Launch(Box::new(LaunchRequest::again(&r))),
                },
            },
            ModelStatus::Sleeping => Route::BringUp {
                owner,
                how: BringUp::Wake(Box::new(r)),
            },
            ModelStatus::Loading => Route::BringUp {
                owner,
                how: BringUp::Settle(Box::new(r)),
            },
            ModelStatus::Stopping | ModelStatus::Unloaded | ModelStatus::Error => Route::BringUp {
                owner,
                how: BringUp::Launch(Box::new(LaunchRequest::again(&r))),
            },
        }
    }

    /// A name nothing answers to: launched on demand with `gateway.load_unknown`, else
    /// unknown.
    fn unknown(&self, model: &str) -> Route {
        if !self.config.gateway.load_unknown {
            return Route::Unknown;
        }
        Route::BringUp {
            owner: model.to_string(),
            how: BringUp::Launch(Box::new(self.first_launch(model))),
        }
    }

    /// The launch of a model never launched before: its catalog presets (the launcher
    /// adds them) and the door's idle TTL.
    fn first_launch(&self, model: &str) -> LaunchRequest {
        let entry = self.config.catalog.get(model);
        LaunchRequest {
            model_id: model.to_string(),
            idle_ttl_seconds: entry
                .and_then(|e| e.idle_ttl_seconds)
                .or(self.config.gateway.idle_ttl_seconds),
            ..LaunchRequest::default()
        }
    }
}
