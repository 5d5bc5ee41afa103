//! The model lifecycle every front end drives (the MCP tools today, the front door
//! next): where a model is ([`Fleet::locate`]), loading it with a wait and progress
//! ([`Fleet::load`]) and unloading it ([`Fleet::unload`]). The decisions live here, once;
//! a caller turns its parameters into a request and shapes the report it gets back.
//!
//! A [`Fleet`] is a borrowed view (the launcher and the attached endpoints), built for a
//! call: it holds nothing of its own.

use crate::launcher::supervisor::{LaunchOutcome, LaunchRequest, Launcher, StopOutcome};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};
use vllm_core::config::Config;
use vllm_core::error::{Error, LoadFailure, Result};
use vllm_core::launch_args::{LaunchArgs, validate_model_id};
use vllm_core::model_files;
use vllm_core::models::{FailureReason, ModelRecord, ModelStatus};
use vllm_core::vllm::{ModelCard, VllmClient};

/// The launcher and the attached endpoints, as one fleet.
#[derive(Clone, Copy)]
pub struct Fleet<'a> {
    /// `None` when the store could not be opened: models we launched are then unknown,
    /// and what an attached endpoint serves is still found.
    pub launcher: Option<&'a Launcher>,
    pub endpoints: &'a [VllmClient],
    pub config: &'a Config,
}

/// Where a model is. The resolution order is [`Fleet::locate`]'s.
#[derive(Debug, Clone)]
pub enum Located {
    /// A model we launched, in the status the caller accepts, or (when nothing serves
    /// the id) in whatever status it is.
    Launched(ModelRecord),
    /// A model (or a LoRA adapter: `card.parent`) an attached endpoint serves.
    Attached {
        endpoint: VllmClient,
        card: ModelCard,
    },
    /// A LoRA adapter loaded on a server we launched (loaded or sleeping).
    Adapter {
        base: ModelRecord,
        client: VllmClient,
        card: ModelCard,
    },
    /// A catalog alias that is not launched.
    Catalog { source: String, args: LaunchArgs },
    /// A model directory in the local Hugging Face cache, not launched.
    Cached { source: String },
}

impl Located {
    /// The client that serves it, when one does.
    pub fn client(&self, fleet: &Fleet<'_>) -> Option<VllmClient> {
        match self {
            Located::Launched(r) => fleet.launcher?.client_for(r),
            Located::Attached { endpoint, .. } => Some(endpoint.clone()),
            Located::Adapter { client, .. } => Some(client.clone()),
            Located::Catalog { .. } | Located::Cached { .. } => None,
        }
    }
}

/// Where a model comes from, as answers name it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Launched by vllm-mcp (a `vllm serve` we started).
    Launched,
    /// Served by an attached endpoint (a vLLM we did not start).
    Attached,
    /// A LoRA adapter loaded on a server we launched.
    Adapter,
    /// A catalog alias, not launched.
    Catalog,
    /// A model directory in the local Hugging Face cache, not launched.
    Cache,
}

impl Located {
    /// Where the located model comes from.
    pub fn origin(&self) -> Origin {
        match self {
            Located::Launched(_) => Origin::Launched,
            Located::Attached { .. } => Origin::Attached,
            Located::Adapter { .. } => Origin::Adapter,
            Located::Catalog { .. } => Origin::Catalog,
            Located::Cached { .. } => Origin::Cache,
        }
    }
}

/// What [`Fleet::load`] did.
#[derive(Debug)]
pub struct LoadReport {
    /// What the launcher decided (started, queued, already running, differs, dry run).
    pub outcome: LaunchOutcome,
    /// After a wait (`wait` > 0 and a launch started, or one already loading): the
    /// record as it settled, loaded or still loading. A start that failed while waited
    /// for is the error instead.
    pub settled: Option<ModelRecord>,
    /// For a dry run: the model's status now (`unloaded` when never launched).
    pub current: ModelStatus,
}

/// What a load in progress tells its caller.
#[derive(Debug, Clone, Copy)]
pub enum LoadEvent<'a> {
    /// The server was spawned.
    Started {
        record: &'a ModelRecord,
        estimated_seconds: f64,
    },
    /// Still loading after `waited` seconds.
    Waited { waited: f64, estimated_seconds: f64 },
}

/// What [`Fleet::unload`] did.
#[derive(Debug)]
pub enum UnloadReport {
    /// A server we launched, stopped with its whole process group.
    Stopped(StopOutcome),
    /// A model of an attached endpoint (which we cannot stop), put to sleep (level 1):
    /// its accelerator memory is freed and wake brings it back.
    PutToSleep {
        endpoint: String,
        was_running: bool,
        seconds: f64,
    },
}

impl<'a> Fleet<'a> {
    /// The launcher, which loading and unloading need.
    pub fn launcher(&self) -> Result<&'a Launcher> {
        self.launcher
            .ok_or_else(|| Error::storage("the store is not available: nothing can be launched"))
    }

    /// Where `model_id` is, in one order for every caller:
    /// 1. a launched model whose status is one of `serving` (every status, for a caller
    ///    that describes rather than uses the model);
    /// 2. a model or adapter an attached endpoint serves;
    /// 3. a LoRA adapter loaded on a launched server that is loaded or sleeping;
    /// 4. the launched model in another status;
    /// 5. a catalog alias; 6. a model directory in the local cache.
    ///
    /// When none matches, an endpoint that did not say what it serves may serve it: its
    /// error (a timeout naming its URL) is the answer, else `MODEL_NOT_FOUND`.
    pub async fn locate(&self, model_id: &str, serving: &[ModelStatus]) -> Result<Located> {
        validate_model_id("model_id", model_id)?;
        let record = match self.launcher {
            Some(l) => l.get(model_id).await?,
            None => None,
        };
        if let Some(r) = record.as_ref().filter(|r| serving.contains(&r.status)) {
            return Ok(Located::Launched(r.clone()));
        }
        let mut unanswered = None;
        for endpoint in self.endpoints {
            match endpoint.models().await {
                Ok(cards) => {
                    if let Some(card) = cards.into_iter().find(|c| c.id == model_id) {
                        let endpoint = endpoint.clone();
                        return Ok(Located::Attached { endpoint, card });
                    }
                }
                Err(e) => {
                    unanswered.get_or_insert(e);
                }
            }
        }
        if let Some(found) = self.adapter_on_launched(model_id).await? {
            return Ok(found);
        }
        if let Some(r) = record {
            return Ok(Located::Launched(r));
        }
        if let Some(e) = self.config.catalog.get(model_id) {
            let (source, args) = (e.source.clone(), e.args.clone());
            return Ok(Located::Catalog { source, args });
        }
        let hub_cache = self.launcher.and_then(|l| l.hub_cache());
        if model_files::resolve_dir(model_id, hub_cache).is_some() {
            let source = model_id.to_string();
            return Ok(Located::Cached { source });
        }
        Err(unanswered.unwrap_or_else(|| Error::ModelNotFound(model_id.to_string())))
    }

    /// Adapters are in no record: the launched servers that run now are asked.
    async fn adapter_on_launched(&self, model_id: &str) -> Result<Option<Located>> {
        let Some(launcher) = self.launcher else {
            return Ok(None);
        };
        for base in launcher.list().await? {
            if !matches!(base.status, ModelStatus::Loaded | ModelStatus::Sleeping) {
                continue;
            }
            let Some(client) = launcher.client_for(&base) else {
                continue;
            };
            if let Ok(cards) = client.models().await
                && let Some(card) = cards
                    .into_iter()
                    .find(|c| c.id == model_id && c.parent.is_some())
            {
                return Ok(Some(Located::Adapter { base, client, card }));
            }
        }
        Ok(None)
    }

    /// Launches a model (or reports why not) and, when `wait` is above zero and a
    /// launch started, waits up to `wait` for it to settle. `progress` hears of the
    /// start and of each second waited. A start that fails while waited for is its
    /// classified `MODEL_LOAD_FAILED` ([`load_failure`]).
    pub async fn load(
        &self,
        req: &LaunchRequest,
        wait: Duration,
        mut progress: impl FnMut(LoadEvent<'_>),
    ) -> Result<LoadReport> {
        let launcher = self.launcher()?;
        let outcome = launcher.launch(req).await?;
        let id = req.model_id.clone();
        let current = match &outcome {
            LaunchOutcome::DryRun { .. } => launcher
                .on_store(move |s| vllm_core::models::get(s, &id))
                .await?
                .map(|r| r.status)
                .unwrap_or(ModelStatus::Unloaded),
            LaunchOutcome::Queued { record, .. }
            | LaunchOutcome::AlreadyRunning { record }
            | LaunchOutcome::Differs { record, .. }
            | LaunchOutcome::Started { record, .. } => record.status,
        };
        // A start already under way (by the front door, another session, the queue's
        // holder) is waited for like one of our own.
        let estimated_seconds = match &outcome {
            LaunchOutcome::Started { record, preflight } => {
                let estimated_seconds = preflight.estimated_load_seconds as f64;
                progress(LoadEvent::Started {
                    record,
                    estimated_seconds,
                });
                Some(estimated_seconds)
            }
            LaunchOutcome::AlreadyRunning { record } if record.status == ModelStatus::Loading => {
                Some(0.0)
            }
            _ => None,
        };
        let mut settled = None;
        if let Some(estimated_seconds) = estimated_seconds
            && !wait.is_zero()
        {
            let tick = |waited| {
                progress(LoadEvent::Waited {
                    waited,
                    estimated_seconds,
                })
            };
            let r = launcher.wait_settled(&req.model_id, wait, tick).await?;
            if r.status == ModelStatus::Error {
                return Err(load_failure(&r));
            }
            settled = Some(r);
        }
        Ok(LoadReport {
            outcome,
            settled,
            current,
        })
    }

    /// Unloads a model: a launched one is stopped with its whole group (`force` skips
    /// the wait for running requests); one an attached endpoint serves is put to sleep
    /// when that server has sleep mode (else `NOT_MANAGED`). Processes that survive
    /// SIGKILL are an internal error, never a success.
    pub async fn unload(&self, model_id: &str, force: bool) -> Result<UnloadReport> {
        validate_model_id("model_id", model_id)?;
        let launcher = self.launcher()?;
        let id = model_id.to_string();
        if launcher
            .on_store(move |s| vllm_core::models::get(s, &id))
            .await?
            .is_none()
        {
            for endpoint in self.endpoints {
                if let Ok(cards) = endpoint.models().await
                    && cards.iter().any(|c| c.id == model_id)
                {
                    return sleep_attached(endpoint, model_id).await;
                }
            }
            return Err(Error::ModelNotFound(model_id.to_string()));
        }
        let out = launcher.stop(model_id, force).await?;
        if !out.remaining_pids.is_empty() {
            return Err(Error::Internal(format!(
                "processes {:?} of {model_id}'s group survived SIGKILL",
                out.remaining_pids
            )));
        }
        Ok(UnloadReport::Stopped(out))
    }
}

async fn sleep_attached(endpoint: &VllmClient, model_id: &str) -> Result<UnloadReport> {
    let t = Instant::now();
    let asleep = endpoint
        .is_sleeping()
        .await
        .map_err(|_| Error::NotManaged(model_id.to_string()))?;
    if !asleep {
        endpoint.sleep(1).await?;
    }
    Ok(UnloadReport::PutToSleep {
        endpoint: endpoint.base_url().to_string(),
        was_running: !asleep,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// A failed launch as `MODEL_LOAD_FAILED` with its classified reason: the recorded one, or
/// `PROCESS_EXITED` with `details.cause` (`ENGINE_DIED`, `START_TIMEOUT`) for a server
/// that died or never became healthy.
pub fn load_failure(r: &ModelRecord) -> Error {
    let rec = r.error.clone();
    let reason = rec
        .as_ref()
        .map_or(LoadFailure::ProcessExited, |e| e.reason.load_failure());
    let mut details = match rec.as_ref().map(|e| e.details.clone()) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if let Some(e) = &rec
        && !matches!(e.reason, FailureReason::Start(_))
    {
        details.insert("cause".into(), json!(e.reason.as_str()));
    }
    Error::ModelLoadFailed {
        model: r.model_id.clone(),
        reason,
        message: rec
            .map(|e| e.message)
            .unwrap_or_else(|| "the server exited".into()),
        details,
    }
}

/// Whether a server launched with `argv` (or a catalog entry's `extra_args`) parses
/// tool calls: vLLM needs both `--enable-auto-tool-choice` and a `--tool-call-parser`.
pub fn supports_function_calling(argv: &[String]) -> bool {
    argv_has(argv, "--enable-auto-tool-choice") && argv_has(argv, "--tool-call-parser")
}

/// Whether an argument vector carries `flag`, alone or as `flag=value`.
pub fn argv_has(argv: &[String], flag: &str) -> bool {
    argv.iter()
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of a model in `error` for `reason`, as the store holds it.
    fn failed(reason: FailureReason) -> ModelRecord {
        serde_json::from_value(json!({
            "model_id": "tiny", "source": "/models/tiny", "status": "error",
            "host": "127.0.0.1", "port": 8001, "pid": null, "start_time": null,
            "args": {}, "argv": [], "env_names": [], "gpu_ids": [], "log_path": null,
            "launched_at": 1.0, "loaded_at": null, "stopped_at": null,
            "error": {"reason": reason, "message": "it failed", "details": {"exit_code": 1}},
            "restart_policy": null, "restarts": 0, "idle_ttl_seconds": null,
            "memory_estimate_mb": null, "updated_at": 2.0
        }))
        .unwrap()
    }

    #[test]
    fn a_recorded_failure_is_its_load_error_with_the_cause_when_not_a_start_failure() {
        let e = load_failure(&failed(LoadFailure::PortInUse.into()));
        assert_eq!(e.details()["reason"], "PORT_IN_USE");
        assert!(e.details().get("cause").is_none(), "{:?}", e.details());
        for (reason, cause) in [
            (FailureReason::EngineDied, "ENGINE_DIED"),
            (FailureReason::StartTimeout, "START_TIMEOUT"),
        ] {
            let e = load_failure(&failed(reason));
            assert_eq!(e.code(), "MODEL_LOAD_FAILED");
            assert_eq!(e.details()["reason"], "PROCESS_EXITED");
            assert_eq!(e.details()["cause"], cause);
            assert_eq!(e.details()["exit_code"], 1);
        }
    }

    #[test]
    fn function_calling_needs_the_switch_and_a_parser() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(supports_function_calling(&argv(&[
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "hermes"
        ])));
        assert!(supports_function_calling(&argv(&[
            "--tool-call-parser=llama3_json",
            "--enable-auto-tool-choice"
        ])));
        assert!(!supports_function_calling(&argv(&[
            "--tool-call-parser",
            "hermes"
        ])));
        assert!(!supports_function_calling(&argv(&[
            "--enable-auto-tool-choice"
        ])));
    }
}
