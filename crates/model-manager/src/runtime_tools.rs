//! Tools that act on a running server: runtime LoRA adapters, sleep mode, and a chat to try a model.
//!
//! A model is found among the launched models (the store's records, observed now), then the
//! models served by attached endpoints, then (for `chat` only) the LoRA adapters served by
//! launched servers. Error choices, so a client can branch on them:
//! - an id known nowhere is `MODEL_NOT_FOUND`;
//! - a known model that is not serving now (loading, unloaded, error, stopping, or sleeping
//!   for `chat` and LoRA) is `INVALID_ARGUMENT` on `model_id`, the reason saying its status
//!   and the call that fixes it: the request is wrong for the model's state, the backend is
//!   not at fault (`UNSUPPORTED` is kept for what only a relaunch with other flags fixes);
//! - a server started without what the call needs (`--enable-lora` and
//!   `VLLM_ALLOW_RUNTIME_LORA_UPDATING`, `VLLM_SERVER_DEV_MODE`) is `UNSUPPORTED`, with the
//!   exact flags and `[launcher.env]` entries to set;
//! - anything else vLLM refuses is `BACKEND_ERROR` carrying vLLM's own message.

use crate::ModelManager;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::path::{Component, Path};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vllm_core::launch_args::validate_model_id;
use vllm_core::launcher::process;
use vllm_core::lifecycle::Located;
use vllm_core::models::{self, ModelRecord, ModelStatus};
use vllm_core::vllm::{ModelCard, VllmClient};
use vllm_core::{Error, Result};
use vllm_mcp_kit::{ToolDef, Toolbox};

/// Longest `wake-model` waits for `/is_sleeping` to turn false.
const WAKE_TIMEOUT: Duration = Duration::from_secs(120);
/// Most messages one `chat` call may send.
const MAX_MESSAGES: usize = 64;
/// Largest content of one chat message, bytes.
const MAX_CONTENT_BYTES: usize = 32 * 1024;
/// Default and largest `max_tokens` of a `chat` call.
const DEFAULT_MAX_TOKENS: u32 = 64;
const MAX_MAX_TOKENS: u32 = 1024;
/// vLLM's own limit on stop strings (`VLLM_MAX_STOP_STRINGS`).
const MAX_STOP: usize = 4;

/// Registers the runtime tools.
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
    t.add(
        ToolDef {
            idempotent: true,
            ..ToolDef::control(
                "sleep-model",
                "Put a loaded model to sleep: its server stays up but frees its GPU memory (level 1 offloads the \
                 weights to CPU memory for a fast wake-model; level 2 discards them). Requests wait until \
                 wake-model. Works on attached endpoints too. Needs a server started with --enable-sleep-mode and \
                 VLLM_SERVER_DEV_MODE=1 (else UNSUPPORTED says what to set); on CPU it frees nothing.",
            )
        },
        |s: Arc<ModelManager>, p: SleepParams, _| async move { sleep_model(&s, p).await },
    );
    t.add(
        ToolDef {
            gpu_work: true,
            idempotent: true,
            ..ToolDef::control(
                "wake-model",
                "Wake a model put to sleep by sleep-model: reloads its memory and waits until it serves again \
                 (status loaded). A model that is awake is left as it is.",
            )
        },
        |s: Arc<ModelManager>, p: WakeParams, _| async move { wake_model(&s, p).await },
    );
    t.add(
        ToolDef {
            gpu_work: true,
            ..ToolDef::control(
                "chat",
                "Send a short chat (non-streaming, at most 1024 output tokens) to a loaded model or LoRA adapter to \
                 try it, e.g. right after load-model. Answers the assistant's text, finish_reason, token usage and \
                 latency. Not for long conversations: use the model through Crush for that.",
            )
        },
        |s: Arc<ModelManager>, p: ChatParams, _| async move { chat(&s, p).await },
    );
}

// ---------------------------------------------------------------------------------------
// Parameters

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

/// Parameters of `sleep-model`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepParams {
    /// The loaded model to put to sleep.
    pub model_id: String,
    /// 1 (default): weights offloaded to CPU memory, KV cache discarded; wake-model is
    /// fast. 2: weights and KV cache discarded; the weights must be reloaded after waking
    /// (only for weight updates).
    pub level: Option<u32>,
}

/// Parameters of `wake-model`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WakeParams {
    /// The sleeping model.
    pub model_id: String,
}

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: Role,
    /// The text, at most 32 KiB.
    pub content: String,
}

/// Parameters of `chat`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatParams {
    /// A loaded model or a LoRA adapter served by one, as list-models shows it.
    pub model_id: String,
    /// The conversation, oldest first: 1 to 64 messages.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate: 1 to 1024 (default 64).
    pub max_tokens: Option<u32>,
    /// 0 to 2; 0 is greedy (default: the model's sampling default).
    pub temperature: Option<f64>,
    /// In (0, 1].
    pub top_p: Option<f64>,
    /// Seed for reproducible sampling.
    pub seed: Option<i64>,
    /// Up to 4 strings that end the answer when generated.
    pub stop: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------------------
// Answers

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

/// The answer of `sleep-model`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SleepAnswer {
    pub model_id: String,
    /// `sleeping`.
    pub status: ModelStatus,
    /// The sleep level asked (or, when it already slept, the level it sleeps at when known).
    pub level: u32,
    /// Memory given back, measured before and after (GPU memory via NVML, else the server
    /// processes' resident memory), MiB; null for an attached endpoint (its processes are
    /// not visible here).
    pub memory_freed_mb: Option<u64>,
    /// `nvml` or `rss`: where memory_freed_mb was measured.
    pub memory_source: Option<String>,
    /// It was already asleep: nothing was done.
    pub already_sleeping: bool,
    pub note: Option<String>,
}

/// The answer of `wake-model`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WakeAnswer {
    pub model_id: String,
    /// `loaded`.
    pub status: ModelStatus,
    /// Seconds until the server said it was awake.
    pub seconds: f64,
    /// It was asleep when asked (false: it was awake, nothing was done).
    pub was_sleeping: bool,
    pub note: Option<String>,
}

/// Token counts of one chat.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// The answer of `chat`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ChatAnswer {
    pub model_id: String,
    /// The assistant's text (empty when it produced none).
    pub content: String,
    /// The model's reasoning, for reasoning models served with a reasoning parser.
    pub reasoning: Option<String>,
    /// `stop` (finished or hit a stop string) or `length` (ran into max_tokens).
    pub finish_reason: Option<String>,
    pub usage: Usage,
    /// Milliseconds from sending the request to the whole answer.
    pub latency_ms: f64,
}

// ---------------------------------------------------------------------------------------
// Finding the server of a model

/// Where a model is served, found by [`resolve`].
pub(crate) struct Target {
    /// The id asked for (the served name).
    pub model_id: String,
    pub client: VllmClient,
    /// The launched record serving it (for an adapter: its base model's record).
    pub record: Option<ModelRecord>,
    /// The attached endpoint's name, for attached models.
    pub endpoint: Option<String>,
    /// For a LoRA adapter: its base model's served name.
    pub parent: Option<String>,
}

impl Target {
    /// Whether this host's filesystem is the server's: launched servers, and attached
    /// endpoints on loopback.
    fn is_local(&self) -> bool {
        self.record.is_some() || is_loopback_url(self.client.base_url())
    }

    /// An `INVALID_ARGUMENT` on `model_id` for a call that needs a base model.
    fn require_base(&self, tool: &str) -> Result<()> {
        match &self.parent {
            Some(parent) => Err(Error::invalid(
                "model_id",
                format!(
                    "`{}` is a LoRA adapter of `{parent}`: {tool} acts on the base model; give `{parent}`",
                    self.model_id
                ),
            )),
            None => Ok(()),
        }
    }
}

/// `http://127.0.0.1:8000` and friends.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(h) = authority.strip_prefix('[') {
        h.split(']').next().unwrap_or(h)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// What the status of a launched model means for a call that needs it serving.
fn not_serving(model_id: &str, status: ModelStatus) -> Error {
    let next = match status {
        ModelStatus::Loading => {
            "wait until list-models shows it loaded (load-model with wait_seconds waits)"
        }
        ModelStatus::Sleeping => "call wake-model first",
        ModelStatus::Stopping => "it is being unloaded; load it again with load-model",
        ModelStatus::Loaded => "call again",
        ModelStatus::Unloaded | ModelStatus::Error => "load it with load-model first",
    };
    Error::invalid(
        "model_id",
        format!(
            "model `{model_id}` is {}, not serving: {next}",
            status.as_str()
        ),
    )
}

/// Finds the server of `model_id` (in [`Fleet::locate`]'s order). A launched model
/// must have one of `statuses`. LoRA adapters served by launched servers are found too
/// (tools that need a base model then say "give the base model" rather than "not found").
async fn resolve(s: &ModelManager, model_id: &str, statuses: &[ModelStatus]) -> Result<Target> {
    let fleet = s.fleet();
    let target = |client, record, endpoint, parent| Target {
        model_id: model_id.to_string(),
        client,
        record,
        endpoint,
        parent,
    };
    match fleet.locate(model_id, statuses).await? {
        Located::Launched(r) if statuses.contains(&r.status) => {
            let client = fleet
                .launcher
                .and_then(|l| l.client_for(&r))
                .ok_or_else(|| Error::Internal(format!("no address recorded for `{model_id}`")))?;
            Ok(target(client, Some(r), None, None))
        }
        Located::Launched(r) => Err(not_serving(model_id, r.status)),
        Located::Attached { endpoint, card } => {
            let name = Some(endpoint.name().to_string());
            Ok(target(endpoint, None, name, card.parent))
        }
        Located::Adapter { base, client, card } => {
            Ok(target(client, Some(base), None, card.parent))
        }
        Located::Catalog { .. } => Err(not_loaded(model_id, "a catalog alias")),
        Located::Cached { .. } => Err(not_loaded(model_id, "in the local model cache")),
    }
}

fn not_loaded(model_id: &str, origin: &str) -> Error {
    Error::invalid(
        "model_id",
        format!("model `{model_id}` is {origin} but not loaded: load it with load-model first"),
    )
}

/// A route the server does not have: FastAPI's `{"detail":"Not Found"}` (vLLM registers
/// the LoRA and sleep routes only when their switches are on).
fn route_missing(e: &Error) -> bool {
    matches!(e, Error::BackendError { status: 404, message, kind: None, .. } if message == "Not Found")
}

/// Whether a launched record was started with this `[launcher.env]` entry / argument.
fn has_env(r: &ModelRecord, name: &str) -> bool {
    r.env_names.iter().any(|n| n == name)
}

fn has_arg(r: &ModelRecord, flag: &str) -> bool {
    r.argv
        .iter()
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn endpoint_name(t: &Target) -> String {
    t.endpoint
        .clone()
        .unwrap_or_else(|| t.client.base_url().to_string())
}

// ---------------------------------------------------------------------------------------
// LoRA

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
fn map_load_error(t: &Target, p: &LoadLoraParams, rank: Option<u64>, e: Error) -> Error {
    if route_missing(&e) {
        return lora_unsupported(t, true);
    }
    let Error::BackendError {
        status, message, ..
    } = &e
    else {
        return e;
    };
    if message.contains("LoRA is not enabled") || message.contains("--enable-lora") {
        return lora_unsupported(t, false);
    }
    if *status == 404 && message.contains("No adapter found") {
        return Error::invalid(
            "lora_path",
            format!(
                "the server found no adapter at `{}` (vLLM: {message}); the path must exist on the machine vLLM runs on",
                p.lora_path
            ),
        );
    }
    if message.contains("max_lora_rank") {
        // vLLM takes 1, 8, 16, 32, 64, 128, 256, 320 or 512.
        let need = rank
            .and_then(|r| {
                [1u64, 8, 16, 32, 64, 128, 256, 320, 512]
                    .into_iter()
                    .find(|&v| v >= r)
            })
            .map(|v| v.to_string())
            .unwrap_or_else(|| "<the adapter's rank or more>".into());
        let fix = match &t.record {
            Some(_) => format!(
                "Relaunch with load-model, extra_args [\"--enable-lora\", \"--max-lora-rank\", \"{need}\"] and replace: true."
            ),
            None => format!(
                "Restart the server of endpoint `{}` with --max-lora-rank {need}.",
                endpoint_name(t)
            ),
        };
        return Error::Unsupported {
            what: format!("this adapter on `{}`: {message}", t.model_id),
            suggestion: fix,
        };
    }
    e
}

/// Adapters served with `parent` = the model, from a fresh `/v1/models`.
fn adapters_of(cards: &[ModelCard], model_id: &str) -> Vec<String> {
    cards
        .iter()
        .filter(|c| c.parent.as_deref() == Some(model_id))
        .map(|c| c.id.clone())
        .collect()
}

fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
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
    let cards = t.client.models_fresh().await?;
    if let Some(card) = cards.iter().find(|c| c.id == p.lora_name) {
        let same = card.parent.as_deref() == Some(t.model_id.as_str())
            && card
                .root
                .as_deref()
                .is_some_and(|r| same_path(r, &p.lora_path));
        if same {
            return Ok(LoraAnswer {
                model_id: t.model_id.clone(),
                lora_name: p.lora_name.clone(),
                lora_path: Some(p.lora_path.clone()),
                loaded: true,
                already_loaded: true,
                adapters: adapters_of(&cards, &t.model_id),
                note: Some("already served from this path: nothing was changed".into()),
            });
        }
        let what = match (&card.parent, &card.root) {
            (Some(parent), Some(root)) => format!("an adapter of `{parent}` loaded from `{root}`"),
            (Some(parent), None) => format!("an adapter of `{parent}`"),
            (None, _) => "a base model".to_string(),
        };
        return Err(Error::invalid(
            "lora_name",
            format!(
                "`{}` already names {what} on this server: unload-lora-adapter it first, or choose another name",
                p.lora_name
            ),
        ));
    }
    t.client
        .load_lora_adapter(&p.lora_name, &p.lora_path)
        .await
        .map_err(|e| map_load_error(&t, &p, rank, e))?;
    let cards = t.client.models_fresh().await?;
    let adapters = adapters_of(&cards, &t.model_id);
    s.kit
        .notifier
        .info(
            "model-manager",
            json!({"event": "lora_loaded", "model_id": t.model_id, "lora_name": p.lora_name}),
        )
        .await;
    Ok(LoraAnswer {
        loaded: adapters.contains(&p.lora_name),
        note: (!adapters.contains(&p.lora_name)).then(|| {
            "vLLM accepted the adapter but /v1/models does not list it under this model".to_string()
        }),
        model_id: t.model_id,
        lora_name: p.lora_name,
        lora_path: Some(p.lora_path),
        already_loaded: false,
        adapters,
    })
}

async fn unload_lora(s: &ModelManager, p: UnloadLoraParams) -> Result<LoraAnswer> {
    validate_model_id("model_id", &p.model_id)?;
    validate_model_id("lora_name", &p.lora_name)?;
    let t = resolve(s, &p.model_id, &[ModelStatus::Loaded]).await?;
    t.require_base("unload-lora-adapter")?;
    let cards = t.client.models_fresh().await?;
    match cards.iter().find(|c| c.id == p.lora_name) {
        None => return Err(Error::ModelNotFound(p.lora_name)),
        Some(c) if c.parent.is_none() => {
            return Err(Error::invalid(
                "lora_name",
                format!(
                    "`{}` is a base model, not an adapter: unload-model stops a model",
                    p.lora_name
                ),
            ));
        }
        Some(_) => {}
    }
    let path = cards
        .iter()
        .find(|c| c.id == p.lora_name)
        .and_then(|c| c.root.clone());
    if let Err(e) = t.client.unload_lora_adapter(&p.lora_name).await {
        return Err(if route_missing(&e) {
            lora_unsupported(&t, true)
        } else if matches!(&e, Error::BackendError { status: 404, .. }) {
            Error::ModelNotFound(p.lora_name)
        } else {
            e
        });
    }
    let cards = t.client.models_fresh().await?;
    s.kit
        .notifier
        .info(
            "model-manager",
            json!({"event": "lora_unloaded", "model_id": t.model_id, "lora_name": p.lora_name}),
        )
        .await;
    Ok(LoraAnswer {
        adapters: adapters_of(&cards, &t.model_id),
        loaded: cards.iter().any(|c| c.id == p.lora_name),
        model_id: t.model_id,
        lora_name: p.lora_name,
        lora_path: path,
        already_loaded: false,
        note: None,
    })
}

// ---------------------------------------------------------------------------------------
// Sleep mode

/// `UNSUPPORTED` for a server without the dev-mode sleep endpoints, saying what to set.
fn sleep_unsupported(t: &Target) -> Error {
    let what = format!(
        "sleep mode on `{}`: its server has no /sleep endpoint (VLLM_SERVER_DEV_MODE is not set)",
        t.model_id
    );
    let cpu = " On the CPU platform sleep mode frees nothing (vLLM refuses --enable-sleep-mode there): \
               unload-model frees the memory instead.";
    let suggestion = match &t.record {
        Some(r) => {
            let flag = if has_arg(r, "--enable-sleep-mode") {
                String::new()
            } else {
                ", extra_args [\"--enable-sleep-mode\"] on a GPU".to_string()
            };
            format!(
                "Add `VLLM_SERVER_DEV_MODE = \"1\"` under [launcher.env] in the config, then relaunch with \
                 load-model (replace: true{flag}).{cpu}"
            )
        }
        None => format!(
            "Restart the vLLM server of endpoint `{}` with --enable-sleep-mode and the environment variable \
             VLLM_SERVER_DEV_MODE=1.{cpu}",
            endpoint_name(t)
        ),
    };
    Error::Unsupported { what, suggestion }
}

/// Memory of a launched server's process group: (GPU MiB from NVML when it attributes
/// any, resident MiB).
fn measure(s: &ModelManager, r: &ModelRecord) -> Option<(Option<u64>, u64)> {
    let pid = r.pid?;
    let members = process::group_members(pid);
    let gpu = s.kit.gpus.snapshots().ok().map(|gpus| {
        gpus.iter()
            .flat_map(|g| g.processes.iter().flatten())
            .filter(|p| members.contains(&p.pid))
            .filter_map(|p| p.used_mb)
            .sum::<u64>()
    });
    Some((gpu, process::group_rss_mb(pid)))
}

/// The level a server sleeps at, from `vllm:engine_sleep_state` (None when unknown).
async fn sleep_level(client: &VllmClient) -> Option<u32> {
    let text = client.metrics_text().await.ok()?;
    let (exp, _) = vllm_core::prom::parse_lenient(&text);
    let family = exp.family("vllm:engine_sleep_state")?;
    let on = |state: &str| {
        family
            .sum_where(|l| l.get("sleep_state") == Some(state))
            .is_some_and(|v| v > 0.0)
    };
    if on("discard_all") {
        Some(2)
    } else if on("weights_offloaded") {
        Some(1)
    } else {
        None
    }
}

/// Records a launched model's new status (compare-and-set: a concurrent change wins).
async fn record_status(s: &ModelManager, t: &Target, to: ModelStatus) -> Result<()> {
    let (Some(r), Ok(l)) = (&t.record, s.launcher()) else {
        return Ok(());
    };
    if r.status != to {
        let (id, from, pid) = (r.model_id.clone(), r.status, r.pid);
        l.on_store(move |st| models::transition(st, &id, from, pid, to, None))
            .await?;
    }
    Ok(())
}

async fn sleep_model(s: &ModelManager, p: SleepParams) -> Result<SleepAnswer> {
    let level = p.level.unwrap_or(1);
    if !(1..=2).contains(&level) {
        return Err(Error::invalid(
            "level",
            format!("{level} is not a sleep level: give 1 (offload weights) or 2 (discard them)"),
        ));
    }
    let t = resolve(
        s,
        &p.model_id,
        &[ModelStatus::Loaded, ModelStatus::Sleeping],
    )
    .await?;
    t.require_base("sleep-model")?;
    let asleep = match t.client.is_sleeping().await {
        Ok(b) => b,
        Err(e) if route_missing(&e) => return Err(sleep_unsupported(&t)),
        Err(e) => return Err(e),
    };
    if asleep {
        record_status(s, &t, ModelStatus::Sleeping).await?;
        return Ok(SleepAnswer {
            model_id: t.model_id.clone(),
            status: ModelStatus::Sleeping,
            level: sleep_level(&t.client).await.unwrap_or(level),
            memory_freed_mb: Some(0).filter(|_| t.record.is_some()),
            memory_source: None,
            already_sleeping: true,
            note: Some("it was already asleep: nothing was done (wake-model wakes it)".into()),
        });
    }
    let before = t.record.as_ref().and_then(|r| measure(s, r));
    t.client.sleep(level as u8).await.map_err(|e| {
        if route_missing(&e) {
            sleep_unsupported(&t)
        } else {
            e
        }
    })?;
    record_status(s, &t, ModelStatus::Sleeping).await?;
    // NVML may lag the free by a moment: look again briefly before calling it nothing.
    let mut after = t.record.as_ref().and_then(|r| measure(s, r));
    for _ in 0..5 {
        match (before, after) {
            (Some((Some(b), _)), Some((Some(a), _))) if b > 0 && a >= b => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                after = t.record.as_ref().and_then(|r| measure(s, r));
            }
            _ => break,
        }
    }
    let (freed, source) = match (before, after) {
        (Some((Some(b), _)), Some((Some(a), _))) if b > 0 => (Some(b.saturating_sub(a)), "nvml"),
        (Some((_, b)), Some((_, a))) => (Some(b.saturating_sub(a)), "rss"),
        _ => (None, ""),
    };
    let mut notes = Vec::new();
    if t.record.is_none() {
        notes.push(
            "memory freed is not measured for an attached endpoint (its processes are not visible here)"
                .to_string(),
        );
    } else if source == "rss" {
        notes.push(
            "no GPU memory is attributed to this server (CPU platform): sleep mode frees nothing there; \
             unload-model frees the memory"
                .to_string(),
        );
    } else if freed == Some(0) {
        let flag = t
            .record
            .as_ref()
            .is_some_and(|r| !has_arg(r, "--enable-sleep-mode"));
        notes.push(if flag {
            "no GPU memory was freed: the server was launched without --enable-sleep-mode"
                .to_string()
        } else {
            "no GPU memory was freed".to_string()
        });
    }
    if level == 2 {
        notes.push(
            "level 2 discarded the weights: after wake-model they must be reloaded before answers are \
             meaningful (use level 1 to pause a model you will use again)"
                .to_string(),
        );
    }
    s.kit
        .notifier
        .info(
            "model-manager",
            json!({"event": "model_sleeping", "model_id": t.model_id, "level": level, "memory_freed_mb": freed}),
        )
        .await;
    Ok(SleepAnswer {
        model_id: t.model_id,
        status: ModelStatus::Sleeping,
        level,
        memory_freed_mb: freed,
        memory_source: (!source.is_empty()).then(|| source.to_string()),
        already_sleeping: false,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

async fn wake_model(s: &ModelManager, p: WakeParams) -> Result<WakeAnswer> {
    let t = resolve(
        s,
        &p.model_id,
        &[ModelStatus::Loaded, ModelStatus::Sleeping],
    )
    .await?;
    t.require_base("wake-model")?;
    let started = Instant::now();
    let recorded_asleep = t
        .record
        .as_ref()
        .is_some_and(|r| r.status == ModelStatus::Sleeping);
    let asleep = match t.client.is_sleeping().await {
        Ok(b) => b,
        // Without the sleep endpoints a server cannot sleep: it is awake, unless our record
        // says otherwise (the server was relaunched with other settings by hand).
        Err(e) if route_missing(&e) && !recorded_asleep => false,
        Err(e) if route_missing(&e) => return Err(sleep_unsupported(&t)),
        Err(e) => return Err(e),
    };
    let mut note = None;
    if asleep {
        if sleep_level(&t.client).await == Some(2) {
            note = Some(
                "it slept at level 2, which discarded the weights: reload them before relying on its answers"
                    .to_string(),
            );
        }
        t.client.wake_up().await?;
        loop {
            if !t.client.is_sleeping().await? {
                break;
            }
            if started.elapsed() >= WAKE_TIMEOUT {
                return Err(Error::BackendTimeout {
                    url: format!("{}/is_sleeping", t.client.base_url()),
                    after: WAKE_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s.kit
            .notifier
            .info(
                "model-manager",
                json!({"event": "model_woken", "model_id": t.model_id}),
            )
            .await;
    } else {
        note = Some("it was awake: nothing was done".into());
    }
    record_status(s, &t, ModelStatus::Loaded).await?;
    Ok(WakeAnswer {
        model_id: t.model_id,
        status: ModelStatus::Loaded,
        seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        was_sleeping: asleep,
        note,
    })
}

// ---------------------------------------------------------------------------------------
// Chat

fn validate_chat(p: &ChatParams) -> Result<u32> {
    if p.messages.is_empty() || p.messages.len() > MAX_MESSAGES {
        return Err(Error::invalid(
            "messages",
            format!(
                "{} messages given: give 1 to {MAX_MESSAGES}",
                p.messages.len()
            ),
        ));
    }
    for (i, m) in p.messages.iter().enumerate() {
        if m.content.len() > MAX_CONTENT_BYTES {
            return Err(Error::invalid(
                format!("messages[{i}].content"),
                format!(
                    "{} bytes: at most {MAX_CONTENT_BYTES} per message",
                    m.content.len()
                ),
            ));
        }
    }
    let max_tokens = p.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if !(1..=MAX_MAX_TOKENS).contains(&max_tokens) {
        return Err(Error::invalid(
            "max_tokens",
            format!("{max_tokens} is not between 1 and {MAX_MAX_TOKENS}"),
        ));
    }
    if let Some(t) = p.temperature
        && !(t.is_finite() && (0.0..=2.0).contains(&t))
    {
        return Err(Error::invalid(
            "temperature",
            format!("{t} is not between 0 and 2"),
        ));
    }
    if let Some(v) = p.top_p
        && !(v > 0.0 && v <= 1.0)
    {
        return Err(Error::invalid("top_p", format!("{v} must be in (0, 1]")));
    }
    if let Some(stop) = &p.stop {
        if stop.len() > MAX_STOP {
            return Err(Error::invalid(
                "stop",
                format!("{} strings given: at most {MAX_STOP}", stop.len()),
            ));
        }
        if let Some(i) = stop.iter().position(|s| s.is_empty() || s.len() > 256) {
            return Err(Error::invalid(
                format!("stop[{i}]"),
                "must be 1 to 256 bytes",
            ));
        }
    }
    Ok(max_tokens)
}

async fn chat(s: &ModelManager, p: ChatParams) -> Result<ChatAnswer> {
    validate_model_id("model_id", &p.model_id)?;
    let max_tokens = validate_chat(&p)?;
    let t = resolve(s, &p.model_id, &[ModelStatus::Loaded]).await?;
    // A sleeping server holds requests until it is woken: refuse now rather than hang.
    // (A server without the dev-mode endpoints answers 404 here, and cannot sleep.)
    if let Ok(true) = t.client.is_sleeping().await {
        record_status(s, &t, ModelStatus::Sleeping).await?;
        return Err(not_serving(
            t.parent.as_deref().unwrap_or(&t.model_id),
            ModelStatus::Sleeping,
        ));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(t.model_id));
    body.insert(
        "messages".into(),
        serde_json::to_value(&p.messages).unwrap_or_default(),
    );
    body.insert("max_tokens".into(), json!(max_tokens));
    body.insert("stream".into(), json!(false));
    if let Some(v) = p.temperature {
        body.insert("temperature".into(), json!(v));
    }
    if let Some(v) = p.top_p {
        body.insert("top_p".into(), json!(v));
    }
    if let Some(v) = p.seed {
        body.insert("seed".into(), json!(v));
    }
    if let Some(v) = &p.stop {
        body.insert("stop".into(), json!(v));
    }
    let t0 = Instant::now();
    let answer = t
        .client
        .chat(&Value::Object(body))
        .await
        .map_err(|e| match e {
            // The adapter (or model) went away between the look-up and the request.
            Error::BackendError {
                status: 404,
                kind: Some(ref k),
                ..
            } if k == "NotFoundError" => Error::ModelNotFound(t.model_id.clone()),
            e => e,
        })?;
    let latency_ms = (t0.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
    let choice = answer.pointer("/choices/0");
    let text = |ptr: &str| {
        choice
            .and_then(|c| c.pointer(ptr))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let count = |k: &str| {
        answer
            .pointer(&format!("/usage/{k}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(ChatAnswer {
        content: text("/message/content").unwrap_or_default(),
        reasoning: text("/message/reasoning").or_else(|| text("/message/reasoning_content")),
        finish_reason: text("/finish_reason"),
        usage: Usage {
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
            total_tokens: count("total_tokens"),
        },
        latency_ms,
        model_id: t.model_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls() {
        for u in [
            "http://127.0.0.1:8000",
            "http://localhost:8000/v1",
            "https://[::1]:443",
            "http://127.0.0.2",
        ] {
            assert!(is_loopback_url(u), "{u}");
        }
        for u in [
            "http://10.0.0.1:8000",
            "https://vllm.example.com",
            "http://[fe80::1]:80",
        ] {
            assert!(!is_loopback_url(u), "{u}");
        }
    }

    #[test]
    fn lora_paths() {
        assert!(check_lora_path("/models/tiny-lora").is_ok());
        for bad in ["", "relative/dir", "/models/../etc", "/a/\u{0}b", "./x"] {
            let e = check_lora_path(bad).unwrap_err();
            assert_eq!(e.code(), "INVALID_ARGUMENT", "{bad}");
            assert_eq!(e.details()["field"], "lora_path");
        }
    }

    #[test]
    fn missing_routes_are_recognised() {
        let e = Error::BackendError {
            url: "u".into(),
            status: 404,
            message: "Not Found".into(),
            kind: None,
        };
        assert!(route_missing(&e));
        let e = Error::BackendError {
            url: "u".into(),
            status: 404,
            message: "The lora adapter 'x' cannot be found.".into(),
            kind: Some("NotFoundError".into()),
        };
        assert!(!route_missing(&e));
    }
}
