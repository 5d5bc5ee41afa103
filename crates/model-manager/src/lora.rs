//! `load-lora-adapter` and `unload-lora-adapter`: runtime LoRA adapters on a served model.

use crate::ModelManager;
use crate::target::{Target, capitalized, endpoint_name, has_arg, has_env, resolve};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Component, Path};
use std::sync::Arc;
use vllm_core::launch_args::validate_model_id;
use vllm_core::models::ModelStatus;
use vllm_core::{Error, Result};
use vllm_fleet::adapters::{self, Loaded, Refusal, Unloaded};
use vllm_mcp_kit::{ToolDef, Toolbox};

/// Registers `load-lora-adapter` and `unload-lora-adapter`.
pub fn register(t: &mut Toolbox<ModelManager>) {
    t.add(
        ToolDef {
            idempotent: true,
            ..ToolDef::control(
                "load-lora-adapter",
                "Load a LoRA adapter into a loaded model's running vLLM server, without a restart. The adapter \
                 is then served under lora_name: use it as model_id in chat (or as `model` in requests). \
                 lora_path is the absolute adapter directory (with adapter_config.json). Needs a server started \
                 with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (else UNSUPPORTED says what to set).",
            )
        },
        |s: Arc<ModelManager>, p: LoadLoraParams, _| async move { load_lora(&s, p).await },
    );
    t.add(
        ToolDef {
            idempotent: true,
            ..ToolDef::control(
                "unload-lora-adapter",
                "Remove a LoRA adapter that load-lora-adapter (or --lora-modules) added to a model's server. \
                 The base model keeps serving.",
            )
        },
        |s: Arc<ModelManager>, p: UnloadLoraParams, _| async move { unload_lora(&s, p).await },
    );
}

/// Parameters of `load-lora-adapter`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadLoraParams {
    /// The loaded base model to add the adapter to, as list-models shows it.
    pub model_id: String,
    /// The name the adapter is served under (what requests give as `model`). Letters,
    /// digits and `._-/:` only.
    pub lora_name: String,
    /// Absolute path of the adapter directory, holding `adapter_config.json` and the
    /// adapter weights (a PEFT adapter), on the machine the vLLM server runs on.
    pub lora_path: String,
}

/// Parameters of `unload-lora-adapter`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnloadLoraParams {
    /// The base model the adapter was loaded into.
    pub model_id: String,
    /// The adapter's served name.
    pub lora_name: String,
}

/// The answer of `load-lora-adapter` and `unload-lora-adapter`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LoraAnswer {
    /// The base model.
    pub model_id: String,
    pub lora_name: String,
    /// The adapter's directory (null after an unload).
    pub lora_path: Option<String>,
    /// Whether the adapter is served after the call.
    pub loaded: bool,
    /// The adapter was already served from this path: nothing was changed.
    pub already_loaded: bool,
    /// Every adapter the server now serves on this model (their `parent` in `/v1/models`).
    pub adapters: Vec<String>,
    pub note: Option<String>,
}

/// `lora_path` as the server will read it: absolute, no `..`, no control characters.
fn check_lora_path(path: &str) -> Result<()> {
    let bad = |reason: String| Err(Error::invalid("lora_path", reason));
    if path.is_empty() || path.len() > 4096 {
        return bad("must be 1 to 4096 characters".into());
    }
    if path.chars().any(char::is_control) {
        return bad("control characters are not allowed".into());
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return bad(format!(
            "`{path}` is relative: give the adapter directory's absolute path"
        ));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return bad("`..` path segments are not allowed".into());
    }
    Ok(())
}

/// The adapter directory on this machine: a directory with a readable `adapter_config.json`.
/// Returns that config (its `r` is the adapter's rank).
fn check_lora_dir(path: &str) -> Result<Value> {
    let bad = |reason: String| Err(Error::invalid("lora_path", reason));
    let p = Path::new(path);
    if !p.exists() {
        return bad(format!("`{path}` does not exist"));
    }
    if !p.is_dir() {
        return bad(format!(
            "`{path}` is not a directory: give the adapter's directory"
        ));
    }
    let cfg = p.join("adapter_config.json");
    if !cfg.is_file() {
        return bad(format!(
            "`{path}` has no adapter_config.json: it is not a (PEFT) LoRA adapter directory"
        ));
    }
    let text = match std::fs::read_to_string(&cfg) {
        Ok(t) => t,
        Err(e) => return bad(format!("cannot read {}: {e}", cfg.display())),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.is_object() => Ok(v),
        _ => bad(format!("{} is not a JSON object", cfg.display())),
    }
}

/// `UNSUPPORTED` for a server that cannot load adapters at run time, saying what to set.
fn lora_unsupported(t: &Target, route_absent: bool) -> Error {
    let what = if route_absent {
        format!(
            "runtime LoRA loading on `{}`: its server has no /v1/load_lora_adapter (VLLM_ALLOW_RUNTIME_LORA_UPDATING is not set)",
            t.model_id
        )
    } else {
        format!(
            "LoRA on `{}`: its server was started without --enable-lora",
            t.model_id
        )
    };
    let suggestion = match &t.record {
        Some(r) => {
            let need_env = route_absent || !has_env(r, "VLLM_ALLOW_RUNTIME_LORA_UPDATING");
            let need_flag = !route_absent || !has_arg(r, "--enable-lora");
            let mut steps = Vec::new();
            if need_env {
                steps.push(
                    "add `VLLM_ALLOW_RUNTIME_LORA_UPDATING = \"True\"` under [launcher.env] in the config",
                );
            }
            steps.push(if need_flag {
                "relaunch the model with load-model {\"extra_args\": [\"--enable-lora\"], \"replace\": true} \
                 (add \"--max-lora-rank\", \"N\" for adapters of rank above 16)"
            } else {
                "relaunch the model with load-model (replace: true) so its server gets the new environment"
            });
            format!(
                "{}; then call load-lora-adapter again.",
                capitalized(&steps.join(", then "))
            )
        }
        None => format!(
            "Restart the vLLM server of endpoint `{}` with --enable-lora and the environment variable \
             VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, then call load-lora-adapter again.",
            endpoint_name(t)
        ),
    };
    Error::Unsupported { what, suggestion }
}

/// vLLM's refusals of a load, as errors a user can act on.
/// A server's refusal in this tool's words: the exact flags, config lines and calls that fix it.
fn refused(t: &Target, lora_name: &str, lora_path: Option<&str>, r: Refusal) -> Error {
    match r {
        Refusal::NoRuntimeUpdates => lora_unsupported(t, true),
        Refusal::LoraDisabled => lora_unsupported(t, false),
        Refusal::NameTaken { parent, root } => {
            let what = match (parent, root) {
                (Some(parent), Some(root)) => {
                    format!("an adapter of `{parent}` loaded from `{root}`")
                }
                (Some(parent), None) => format!("an adapter of `{parent}`"),
                (None, _) => "a base model".to_string(),
            };
            Error::invalid(
                "lora_name",
                format!(
                    "`{lora_name}` already names {what} on this server: unload-lora-adapter it first, or choose another name"
                ),
            )
        }
        Refusal::NoAdapterAtPath { message } => Error::invalid(
            "lora_path",
            format!(
                "the server found no adapter at `{}` (vLLM: {message}); the path must exist on the machine vLLM runs on",
                lora_path.unwrap_or_default()
            ),
        ),
        Refusal::RankTooHigh { need, message } => {
            let need =
                need.map_or_else(|| "<the adapter's rank or more>".into(), |v| v.to_string());
            let fix = match &t.record {
                Some(_) => format!(
                    "Relaunch with load-model, extra_args [\"--enable-lora\", \"--max-lora-rank\", \"{need}\"] and replace: true."
                ),
                None => format!(
                    "Restart the server of endpoint `{}` with --max-lora-rank {need}.",
                    endpoint_name(t)
                ),
            };
            Error::Unsupported {
                what: format!("this adapter on `{}`: {message}", t.model_id),
                suggestion: fix,
            }
        }
        Refusal::NotAnAdapter => Error::invalid(
            "lora_name",
            format!("`{lora_name}` is a base model, not an adapter: unload-model stops a model"),
        ),
    }
}

async fn load_lora(s: &ModelManager, p: LoadLoraParams) -> Result<LoraAnswer> {
    validate_model_id("model_id", &p.model_id)?;
    validate_model_id("lora_name", &p.lora_name)?;
    check_lora_path(&p.lora_path)?;
    let t = resolve(s, &p.model_id, &[ModelStatus::Loaded]).await?;
    t.require_base("load-lora-adapter")?;
    if p.lora_name == t.model_id {
        return Err(Error::invalid(
            "lora_name",
            "is the base model's own name: give the adapter a name of its own",
        ));
    }
    // An adapter is loaded content like a model: the same allow-list applies.
    s.kit
        .config
        .security
        .check_allowed(&p.lora_name, &p.lora_path)?;
    // The path is checked here only where this machine's filesystem is the server's.
    let rank = if t.is_local() {
        check_lora_dir(&p.lora_path)?
            .get("r")
            .and_then(Value::as_u64)
    } else {
        None
    };
    let outcome = adapters::load(&t.client, &t.model_id, &p.lora_name, &p.lora_path, rank).await?;
    let answer = |adapters: Vec<String>, already: bool, note: Option<&str>| LoraAnswer {
        model_id: t.model_id.clone(),
        lora_name: p.lora_name.clone(),
        lora_path: Some(p.lora_path.clone()),
        loaded: adapters.contains(&p.lora_name) || already,
        already_loaded: already,
        adapters,
        note: note.map(str::to_string),
    };
    match outcome {
        Loaded::Already { adapters } => Ok(answer(
            adapters,
            true,
            Some("already served from this path: nothing was changed"),
        )),
        Loaded::Now { adapters, listed } => {
            let event =
                json!({"event": "lora_loaded", "model_id": t.model_id, "lora_name": p.lora_name});
            s.kit.notifier.info("model-manager", event).await;
            let note = (!listed).then_some(
                "vLLM accepted the adapter but /v1/models does not list it under this model",
            );
            Ok(answer(adapters, false, note))
        }
        Loaded::Refused(r) => Err(refused(&t, &p.lora_name, Some(&p.lora_path), r)),
    }
}

async fn unload_lora(s: &ModelManager, p: UnloadLoraParams) -> Result<LoraAnswer> {
    validate_model_id("model_id", &p.model_id)?;
    validate_model_id("lora_name", &p.lora_name)?;
    let t = resolve(s, &p.model_id, &[ModelStatus::Loaded]).await?;
    t.require_base("unload-lora-adapter")?;
    let (adapters, path, still_listed) =
        match adapters::unload(&t.client, &t.model_id, &p.lora_name).await? {
            Unloaded::Now {
                adapters,
                path,
                still_listed,
            } => (adapters, path, still_listed),
            Unloaded::Refused(r) => return Err(refused(&t, &p.lora_name, None, r)),
        };
    let event = json!({"event": "lora_unloaded", "model_id": t.model_id, "lora_name": p.lora_name});
    s.kit.notifier.info("model-manager", event).await;
    Ok(LoraAnswer {
        adapters,
        loaded: still_listed,
        model_id: t.model_id,
        lora_name: p.lora_name,
        lora_path: path,
        already_loaded: false,
        note: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_paths() {
        assert!(check_lora_path("/models/tiny-lora").is_ok());
        for bad in ["", "relative/dir", "/models/../etc", "/a/\u{0}b", "./x"] {
            let e = check_lora_path(bad).unwrap_err();
            assert_eq!(e.code(), "INVALID_ARGUMENT", "{bad}");
            assert_eq!(e.details()["field"], "lora_path");
        }
    }
}
