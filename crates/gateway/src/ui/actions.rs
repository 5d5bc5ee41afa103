//! The page's actions: load, unload, sleep, wake, pin and unpin a model, and restore a
//! saved state. Each is the MCP tool's operation in the core (a load or wake is the
//! door's own start on demand, through `load-model`'s path and making room), behind the
//! same gate (`security.max_tier`, `allow_tools`, `deny_tools`, `allowed_models`), and
//! each is recorded in the audit log as server `vllm-gateway` under the tool's name,
//! refused ones too.

use crate::Gateway;
use crate::error::GatewayError;
use crate::resolve::{BringUp, Route};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;
use vllm_core::config::Tier;
use vllm_core::models::ModelStatus;
use vllm_core::store::AuditRecord;
use vllm_core::{Error, Result};
use vllm_fleet::lifecycle::{Located, UnloadReport};
use vllm_fleet::power::{self, Served, SleepLevel};
use vllm_fleet::restore;

/// How long a load or wake waits for a start of the same model that is ending.
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The audit log's `server` for the page's actions.
pub const AUDIT_SERVER: &str = "vllm-gateway";

/// What the page can do to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Load,
    Unload,
    Sleep,
    Wake,
    Pin,
    Unpin,
    Restore,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Load,
        Action::Unload,
        Action::Sleep,
        Action::Wake,
        Action::Pin,
        Action::Unpin,
        Action::Restore,
    ];

    /// The tool name the gate and the audit log know it by.
    pub fn tool(self) -> &'static str {
        match self {
            Action::Load => "load-model",
            Action::Unload => "unload-model",
            Action::Sleep => "sleep-model",
            Action::Wake => "wake-model",
            Action::Pin => "pin-model",
            Action::Unpin => "unpin-model",
            Action::Restore => "load-state",
        }
    }

    fn of_path(name: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .filter(|a| *a != Action::Restore)
            .find(|a| a.tool().trim_end_matches("-model") == name)
    }
}

type Gw = State<Arc<Gateway>>;

/// `POST /ui/api/models/{id}/{load|unload|sleep|wake|pin|unpin}`, body `{}` (or
/// `{"force": true}` for an unload that does not wait for requests: tier destructive).
pub async fn model(
    State(gw): Gw,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Err(r) = super::guard(&gw, &Method::POST, &headers) {
        return *r;
    }
    let Some(action) = Action::of_path(&action) else {
        return super::error(&Error::invalid(
            "action",
            format!("`{action}` is not one of load, unload, sleep, wake, pin, unpin"),
        ));
    };
    let force = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("force").and_then(Value::as_bool))
        .unwrap_or(false);
    let tier = if force {
        Tier::Destructive
    } else {
        Tier::Control
    };
    let args = json!({"model_id": id, "force": force, "via": "page"});
    gw.audited(action, tier, args, async {
        vllm_core::launch_args::validate_model_id("model_id", &id)?;
        match action {
            Action::Load | Action::Wake => gw.start_from_page(&id).await,
            Action::Unload => gw.unload_from_page(&id, force).await,
            Action::Sleep => gw.sleep_from_page(&id).await,
            Action::Pin | Action::Unpin => gw.pin_from_page(&id, action == Action::Pin).await,
            Action::Restore => unreachable!("not a model action"),
        }
    })
    .await
}

/// `POST /ui/api/states/{state_id}/restore`: load-state's models part (the models that
/// were running are launched, ones running otherwise are left as drift).
pub async fn restore(
    State(gw): Gw,
    Path(state_id): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    if let Err(r) = super::guard(&gw, &Method::POST, &headers) {
        return *r;
    }
    let args = json!({"state_id": state_id, "restore_conversations": false, "via": "page"});
    gw.audited(
        Action::Restore,
        Tier::Control,
        args,
        gw.restore_from_page(&state_id),
    )
    .await
}

impl Gateway {
    /// Checks the gate, runs `work`, records the call in the audit log, answers.
    async fn audited(
        &self,
        action: Action,
        tier: Tier,
        arguments: Value,
        work: impl Future<Output = Result<Value>>,
    ) -> Response<Body> {
        let began = Instant::now();
        let result = match self.config.security.check_call(action.tool(), tier) {
            Ok(()) => work.await,
            Err(e) => Err(e),
        };
        let code = result.as_ref().map_or_else(|e| e.code(), |_| "OK");
        tracing::info!(target: "audit", server = AUDIT_SERVER, tool = action.tool(), result = code, "page action");
        let rec = AuditRecord::new(
            AUDIT_SERVER,
            action.tool(),
            arguments,
            code,
            began.elapsed(),
        );
        if let Err(e) = self
            .launcher
            .on_store(move |s| Ok(s.record_audit(&rec)?))
            .await
        {
            tracing::warn!(error = %e, "audit record not stored");
        }
        match result {
            Ok(v) => super::success(v),
            Err(e) => super::error(&e.attributed_to(action.tool())),
        }
    }

    /// A load or wake: the door's start on demand (room made as for a request), begun and
    /// not waited for; the page watches the model's status.
    async fn start_from_page(self: &Arc<Self>, id: &str) -> Result<Value> {
        let mut route = self.resolve(id).await.map_err(core_error)?;
        // A start of the same model still running (a load that served a moment ago and
        // is finishing) would take this one's place: let it end, then look again. One
        // that goes on is this action's answer.
        if let Route::BringUp { owner, .. } = &route
            && let Some(mut rx) = self.running_start(owner)
        {
            let ended = tokio::time::timeout(JOIN_WAIT, rx.wait_for(Option::is_some))
                .await
                .is_ok();
            if !ended {
                return Ok(
                    json!({"model_id": id, "owner": owner, "started": false, "status": "loading"}),
                );
            }
            route = self.resolve(id).await.map_err(core_error)?;
        }
        match route {
            Route::Unknown => Err(Error::ModelNotFound(id.to_string())),
            Route::Ready(u) => {
                Ok(json!({"model_id": id, "owner": u.owner, "started": false, "status": "loaded"}))
            }
            Route::BringUp { owner, how } => {
                if let BringUp::Launch(req) = &how {
                    self.launcher.validate(req)?;
                }
                let what = match &how {
                    BringUp::Launch(_) => "loading",
                    BringUp::Wake(_) => "waking",
                    BringUp::Settle(_) => "loading",
                };
                drop(self.start(&owner, how));
                Ok(json!({"model_id": id, "owner": owner, "started": true, "status": what}))
            }
        }
    }

    async fn unload_from_page(&self, id: &str, force: bool) -> Result<Value> {
        let report = self.fleet().unload(id, force).await?;
        self.routes.forget_owner(id);
        Ok(match report {
            UnloadReport::Stopped(out) => json!({
                "model_id": id, "status": "unloaded", "was_running": out.was_running,
            }),
            UnloadReport::PutToSleep { endpoint, .. } => json!({
                "model_id": id, "status": "sleeping", "endpoint": endpoint,
            }),
        })
    }

    async fn sleep_from_page(&self, id: &str) -> Result<Value> {
        let fleet = self.fleet();
        let located = fleet
            .locate(id, &[ModelStatus::Loaded, ModelStatus::Sleeping])
            .await?;
        let record = match &located {
            Located::Launched(r) => Some(r),
            Located::Attached { .. } => None,
            _ => return Err(power::unsupported(id)),
        };
        let client = located.client(&fleet).ok_or_else(|| {
            Error::invalid(
                "model_id",
                format!("`{id}` is not serving: nothing to put to sleep"),
            )
        })?;
        let served = Served {
            model_id: id,
            client: &client,
            record,
        };
        let gpus = self.launcher.gpus();
        let r = power::sleep(
            Some(&self.launcher),
            gpus.as_ref(),
            served,
            SleepLevel::OffloadWeights,
        )
        .await?;
        self.routes.forget_owner(id);
        Ok(json!({
            "model_id": id, "status": "sleeping",
            "already_sleeping": r.already_sleeping, "memory_freed_mb": r.memory_freed_mb,
        }))
    }

    async fn pin_from_page(&self, id: &str, pinned: bool) -> Result<Value> {
        if !pinned && self.config.catalog.get(id).is_some_and(|e| e.pinned) {
            return Err(Error::invalid(
                "model_id",
                format!(
                    "`{id}` is pinned by its catalog entry (`pinned = true`): change the config to unpin it"
                ),
            ));
        }
        let model = id.to_string();
        let pins = self
            .launcher
            .on_store(move |s| vllm_core::door_use::set_pinned(s, &model, pinned))
            .await?;
        Ok(json!({"model_id": id, "pinned": self.pinned(id, &pins)}))
    }

    async fn restore_from_page(&self, state_id: &str) -> Result<Value> {
        vllm_core::states::validate_state_id("state_id", state_id)?;
        let id = state_id.to_string();
        let opened = self
            .launcher
            .on_store(move |s| {
                let meta = vllm_core::states::find(s, None, Some(&id))?;
                vllm_core::states::open(s, meta, &[vllm_core::states::PartKind::Models])
            })
            .await?;
        let Some(models) = opened.models else {
            return Err(Error::invalid(
                "state_id",
                format!(
                    "the state `{state_id}` has no models part (saved without models, or cleared)"
                ),
            ));
        };
        let plan = restore::plan(&self.launcher, &models)?;
        self.take_gpu_work_slot().await?;
        let report = restore::carry_out(&self.launcher, plan, false).await?;
        Ok(json!({
            "state_id": state_id,
            "model_actions": report.actions,
            "drift": report.drift,
            "models": report.models,
        }))
    }
}

/// The core's error behind a door's refusal (a failed start is the lifecycle's own).
fn core_error(e: GatewayError) -> Error {
    match e {
        GatewayError::Start { source, .. } => {
            Arc::try_unwrap(source).unwrap_or_else(|a| Error::Internal(a.to_string()))
        }
        GatewayError::UnknownModel { model, .. } => Error::ModelNotFound(model),
        other => Error::Internal(other.to_string()),
    }
}
