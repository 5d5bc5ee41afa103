//! Putting a saved state's models back. [`plan`] checks every saved model before anything
//! runs, so a refused restore changed nothing; [`carry_out`] then compares each with what
//! runs now and launches, relaunches or leaves it, one typed [`ModelAction`] per model.

use crate::launcher::supervisor::{LaunchOutcome, LaunchRequest, Launcher};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value, json};
use vllm_core::error::{Error, Result};
use vllm_core::models::{self, ModelRecord, ModelStatus};
use vllm_core::states::{ModelsPart, SavedModel};

/// What a restore did with one saved model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Launched with the saved arguments.
    Launched,
    /// Waits in the launch queue for GPUs another model is loading onto.
    Queued,
    /// It runs now with the saved arguments and sampling defaults: left as it is.
    AlreadyRunning,
    /// It runs with other arguments (see `differences`): not touched.
    Drift,
    /// It had drifted and was relaunched with the saved arguments.
    Replaced,
    /// It was not running when saved: nothing to do.
    NotRunningWhenSaved,
    /// Its launch failed (see `error`).
    Failed,
}

/// What a restore did with one saved model.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ModelAction {
    pub model_id: String,
    pub action: Action,
    /// For drift: `{field: {current, requested}}`.
    pub differences: Option<Map<String, Value>>,
    /// The launched command line, secrets removed.
    pub argv: Option<Vec<String>>,
    /// For `failed`: the error.
    pub error: Option<Value>,
}

impl ModelAction {
    fn new(model_id: &str, action: Action) -> ModelAction {
        ModelAction {
            model_id: model_id.to_string(),
            action,
            differences: None,
            argv: None,
            error: None,
        }
    }

    fn failed(model_id: &str, e: &Error) -> ModelAction {
        ModelAction {
            error: Some(e.to_value()),
            ..ModelAction::new(model_id, Action::Failed)
        }
    }
}

/// A restore checked and ready: the saved models that were running, each with its
/// launch request, and what is already decided for the others.
#[derive(Debug)]
pub struct Plan {
    launches: Vec<(SavedModel, LaunchRequest)>,
    decided: Vec<ModelAction>,
}

/// What [`carry_out`] did.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// One action per saved model, in the saved order (models not running when saved
    /// first).
    pub actions: Vec<ModelAction>,
    /// Models running with arguments other than the saved ones.
    pub drift: Vec<String>,
    /// Models launched (or queued to launch).
    pub models: u64,
    /// Models whose sampling defaults were set back.
    pub configurations: u64,
}

/// Checks every saved model that was running as the launcher would (ids, arguments,
/// the allow-list): the first that would be refused refuses the whole restore.
pub fn plan(launcher: &Launcher, part: &ModelsPart) -> Result<Plan> {
    let mut plan = Plan {
        launches: Vec::new(),
        decided: Vec::new(),
    };
    for m in &part.models {
        let active = ModelStatus::from_name(&m.status).is_some_and(ModelStatus::is_active);
        if !active {
            let action = ModelAction::new(&m.model_id, Action::NotRunningWhenSaved);
            plan.decided.push(action);
            continue;
        }
        let req = LaunchRequest {
            model_id: m.model_id.clone(),
            source: Some(m.source.clone()),
            args: m.args.clone(),
            gpu_ids: (!m.gpu_ids.is_empty()).then(|| m.gpu_ids.clone()),
            restart_policy: m.restart_policy.clone(),
            idle_ttl_seconds: m.idle_ttl_seconds,
            ..LaunchRequest::default()
        };
        launcher.validate(&req)?;
        plan.launches.push((m.clone(), req));
    }
    Ok(plan)
}

/// Restores a checked plan: a model running with the saved arguments and sampling is
/// left; one running otherwise is drift, relaunched only with `replace_drifted`; the
/// others are launched. A launch that fails is that model's `failed` action, not the
/// restore's error; a store that cannot be read is.
pub async fn carry_out(
    launcher: &Launcher,
    plan: Plan,
    replace_drifted: bool,
) -> Result<RestoreReport> {
    let mut report = RestoreReport {
        actions: plan.decided,
        ..RestoreReport::default()
    };
    for (saved, req) in plan.launches {
        restore_one(launcher, &saved, req, replace_drifted, &mut report).await?;
    }
    report.drift.dedup();
    Ok(report)
}

async fn restore_one(
    launcher: &Launcher,
    m: &SavedModel,
    mut req: LaunchRequest,
    replace_drifted: bool,
    report: &mut RestoreReport,
) -> Result<()> {
    let current = launcher.get(&m.model_id).await?;
    let id = m.model_id.clone();
    let current_sampling = launcher.on_store(move |s| models::sampling(s, &id)).await?;
    let sampling_differs = current_sampling != m.sampling;
    let mut differences = Map::new();
    if let Some(r) = current.as_ref().filter(|r| r.status.is_active()) {
        differences = drift_of(r, m, &current_sampling)?;
        let argv = Some(r.argv.clone());
        if differences.is_empty() {
            let action = ModelAction::new(&m.model_id, Action::AlreadyRunning);
            report.actions.push(ModelAction { argv, ..action });
            return Ok(());
        }
        report.drift.push(m.model_id.clone());
        if !replace_drifted {
            let action = ModelAction::new(&m.model_id, Action::Drift);
            let differences = Some(differences);
            report.actions.push(ModelAction {
                differences,
                argv,
                ..action
            });
            return Ok(());
        }
        req.replace = true;
        // `drift_of` names argument fields, `source` and `sampling`: arguments are
        // never called `sampling`.
        if differences.keys().all(|k| k == "sampling") {
            // Only the sampling defaults differ: launch would find it already running,
            // so stop it first; the launch below applies the saved ones.
            if let Err(e) = launcher.stop(&m.model_id, true).await {
                report.actions.push(ModelAction::failed(&m.model_id, &e));
                return Ok(());
            }
        }
    }
    if sampling_differs {
        let (id, sampling) = (m.model_id.clone(), m.sampling.clone());
        launcher
            .on_store(move |s| models::set_sampling(s, &id, &sampling))
            .await?;
        report.configurations += 1;
    }
    let outcome = launcher.launch(&req).await;
    record_launch(&m.model_id, outcome, req.replace, differences, report);
    Ok(())
}

/// How a running model differs from the saved one: arguments, source, sampling.
fn drift_of(
    r: &ModelRecord,
    m: &SavedModel,
    current_sampling: &vllm_core::launch_args::SamplingDefaults,
) -> Result<Map<String, Value>> {
    let mut differences = r.args.differences(&m.args)?;
    if r.source != m.source {
        let change = json!({"current": r.source, "requested": m.source});
        differences.insert("source".into(), change);
    }
    if *current_sampling != m.sampling {
        let change = json!({"current": current_sampling, "requested": m.sampling});
        differences.insert("sampling".into(), change);
    }
    Ok(differences)
}

fn record_launch(
    model_id: &str,
    outcome: Result<LaunchOutcome>,
    replaced: bool,
    differences: Map<String, Value>,
    report: &mut RestoreReport,
) {
    let differences = replaced.then_some(differences);
    let action = match outcome {
        Ok(LaunchOutcome::Started { record, .. }) => {
            report.models += 1;
            let kind = if replaced {
                Action::Replaced
            } else {
                Action::Launched
            };
            let argv = Some(record.argv);
            ModelAction {
                differences,
                argv,
                ..ModelAction::new(model_id, kind)
            }
        }
        Ok(LaunchOutcome::Queued { .. }) => {
            report.models += 1;
            ModelAction {
                differences,
                ..ModelAction::new(model_id, Action::Queued)
            }
        }
        Ok(LaunchOutcome::AlreadyRunning { record }) => ModelAction {
            argv: Some(record.argv),
            ..ModelAction::new(model_id, Action::AlreadyRunning)
        },
        Ok(LaunchOutcome::Differs {
            record,
            differences,
        }) => {
            report.drift.push(model_id.to_string());
            ModelAction {
                differences: Some(differences),
                argv: Some(record.argv),
                ..ModelAction::new(model_id, Action::Drift)
            }
        }
        Ok(LaunchOutcome::DryRun { .. }) => return,
        Err(e) => ModelAction::failed(model_id, &e),
    };
    report.actions.push(action);
}
