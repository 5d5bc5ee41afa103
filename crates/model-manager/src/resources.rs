//! The model manager's resources: a model's configuration and log, and Crush provider blocks.
//!
//! URIs use the `vllm://` scheme. A model id containing `/` may be given raw
//! (`vllm://model/meta-llama/Llama-3.1-8B/config`) or percent-encoded
//! (`vllm://model/meta-llama%2FLlama-3.1-8B/config`). Crush lists only concrete
//! resources, so every known model's URIs are listed, beside the templates.

use crate::ModelManager;
use rmcp::model::{Resource, ResourceTemplate};
use serde_json::{Value, json};
use vllm_core::models::ModelStatus;
use vllm_core::{Error, Result, estimate, models};
use vllm_fleet::inventory::Entry;
use vllm_mcp_kit::{ResourceBody, Service};

/// Default and largest `lines` of the logs resource.
pub const LOG_LINES_DEFAULT: usize = 200;
pub const LOG_LINES_MAX: usize = 5000;

/// `vllm://model/{id}/config`.
pub fn config_uri(model_id: &str) -> String {
    format!("vllm://model/{model_id}/config")
}

/// `vllm://model/{id}/logs`.
pub fn logs_uri(model_id: &str) -> String {
    format!("vllm://model/{model_id}/logs")
}

/// The provider-config resource's URI.
pub const PROVIDER_CONFIG_URI: &str = "vllm://crush/provider-config";

/// The URI templates, for clients that use them.
pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new("vllm://model/{model_id}/config", "model-config")
            .with_description("A model's launch configuration, sampling defaults, status and config.json.")
            .with_mime_type("application/json"),
        ResourceTemplate::new("vllm://model/{model_id}/logs{?lines}", "model-logs")
            .with_description("The last lines of a launched model's vLLM log (default 200, at most 5000), secrets redacted.")
            .with_mime_type("text/plain"),
    ]
}

/// Concrete resources: every launched or catalog model's config, launched models' logs,
/// and the provider config.
pub async fn list(s: &ModelManager) -> Vec<Resource> {
    let mut out = vec![
        Resource::new(PROVIDER_CONFIG_URI, "crush-provider-config")
            .with_description(
                "Ready-to-paste Crush provider blocks (openai-compat): one for the front door with every model when it is configured, else one per loaded model.",
            )
            .with_mime_type("application/json"),
    ];
    let Ok(launcher) = s.launcher() else {
        return out;
    };
    for r in launcher.on_store(models::list).await.unwrap_or_default() {
        out.push(
            Resource::new(config_uri(&r.model_id), format!("{} config", r.model_id))
                .with_mime_type("application/json"),
        );
        out.push(
            Resource::new(logs_uri(&r.model_id), format!("{} logs", r.model_id))
                .with_mime_type("text/plain"),
        );
    }
    for alias in s.kit().config.catalog.keys() {
        let uri = config_uri(alias);
        if !out.iter().any(|r| r.uri == uri) {
            out.push(
                Resource::new(uri, format!("{alias} config")).with_mime_type("application/json"),
            );
        }
    }
    out
}

use vllm_mcp_kit::uri::percent_decode;

/// What a model URI names.
#[derive(Debug, PartialEq)]
pub enum ModelUri {
    Config(String),
    Logs { model_id: String, lines: usize },
}

/// Parses `vllm://model/{id}/config` and `vllm://model/{id}/logs[?lines=N]`.
/// `None` for anything else; `Some(Err)` for a model URI with a bad id or query.
pub fn parse_model_uri(uri: &str) -> Option<Result<ModelUri>> {
    let rest = uri.strip_prefix("vllm://model/")?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let (raw_id, kind) = if let Some(id) = path.strip_suffix("/config") {
        (id, "config")
    } else if let Some(id) = path.strip_suffix("/logs") {
        (id, "logs")
    } else {
        return None;
    };
    Some((|| {
        let id = percent_decode(raw_id)
            .ok_or_else(|| Error::invalid("uri", "malformed percent-encoding"))?;
        vllm_core::launch_args::validate_model_id("uri", &id)?;
        match kind {
            "config" => {
                if query.is_some() {
                    return Err(Error::invalid("uri", "the config resource takes no query"));
                }
                Ok(ModelUri::Config(id))
            }
            _ => {
                let mut lines = LOG_LINES_DEFAULT;
                for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                    match pair.split_once('=') {
                        Some(("lines", n)) => {
                            lines = n
                                .parse::<usize>()
                                .ok()
                                .filter(|n| (1..=LOG_LINES_MAX).contains(n))
                                .ok_or_else(|| {
                                    Error::invalid(
                                        "lines",
                                        format!("`{n}` is not between 1 and {LOG_LINES_MAX}"),
                                    )
                                })?;
                        }
                        _ => {
                            return Err(Error::invalid(
                                "uri",
                                format!("unknown query `{pair}`; only lines=N"),
                            ));
                        }
                    }
                }
                Ok(ModelUri::Logs {
                    model_id: id,
                    lines,
                })
            }
        }
    })())
}

/// Reads one resource; `None` when the URI is not ours.
pub async fn read(s: &ModelManager, uri: &str) -> Option<Result<ResourceBody>> {
    if uri == PROVIDER_CONFIG_URI {
        return Some(provider_config(s).await.map(|v| ResourceBody::json(&v)));
    }
    let parsed = parse_model_uri(uri)?;
    Some(match parsed {
        Err(e) => Err(e),
        Ok(ModelUri::Config(id)) => model_config(s, &id).await.map(|v| ResourceBody::json(&v)),
        Ok(ModelUri::Logs { model_id, lines }) => model_logs(s, &model_id, lines).await,
    })
}

async fn model_config(s: &ModelManager, id: &str) -> Result<Value> {
    let launcher = s.launcher()?;
    let model = id.to_string();
    let sampling = launcher
        .on_store(move |st| models::sampling(st, &model))
        .await?;
    if let Some(r) = launcher.get(id).await? {
        let config_json = launcher.config_json(&r.source);
        return Ok(json!({
            "model_id": r.model_id,
            "source": r.source,
            "status": r.status.as_str(),
            "launch_args": r.args,
            "argv": r.argv,
            "env_names": r.env_names,
            "gpu_ids": r.gpu_ids,
            "base_url": r.base_url(),
            "sampling_defaults": sampling,
            "context_window": r.args.max_model_len.or_else(|| config_json.as_ref().and_then(estimate::model_max_len)),
            "restart_policy": r.restart_policy,
            "idle_ttl_seconds": r.idle_ttl_seconds,
            "model_config_json": config_json,
        }));
    }
    if let Some(entry) = s.kit().config.catalog.get(id) {
        let config_json = launcher.config_json(&entry.source);
        return Ok(json!({
            "model_id": id,
            "source": entry.source,
            "status": "unloaded",
            "launch_args": entry.args,
            "sampling_defaults": sampling,
            "context_window": entry.args.max_model_len.or_else(|| config_json.as_ref().and_then(estimate::model_max_len)),
            "model_config_json": config_json,
        }));
    }
    Err(Error::ModelNotFound(id.to_string()))
}

async fn model_logs(s: &ModelManager, id: &str, lines: usize) -> Result<ResourceBody> {
    let launcher = s.launcher()?;
    let model = id.to_string();
    let r = launcher
        .on_store(move |st| models::get(st, &model))
        .await?
        .ok_or_else(|| Error::ModelNotFound(id.to_string()))?;
    Ok(ResourceBody {
        text: launcher.log_tail(&r, lines).await,
        mime_type: "text/plain",
    })
}

/// Crush provider blocks: with a front door, one block pointing at it with every model
/// it can serve (started on demand); else one per served model (each vLLM server has
/// its own base URL).
async fn provider_config(s: &ModelManager) -> Result<Value> {
    if let Some(url) = s.kit().config.gateway.url() {
        return gateway_provider(s, url).await;
    }
    let launcher = s.launcher()?;
    let mut providers = serde_json::Map::new();
    let key = s
        .kit()
        .config
        .launcher
        .api_key_env
        .as_ref()
        .map(|v| format!("${v}"));
    for r in launcher.list().await? {
        if r.status != ModelStatus::Loaded {
            continue;
        }
        let window = match launcher.client_for(&r) {
            Some(c) => c
                .models()
                .await
                .ok()
                .and_then(|cs| cs.into_iter().find(|c| c.id == r.model_id))
                .and_then(|c| c.max_model_len),
            None => None,
        }
        .or(r.args.max_model_len);
        let model = r.model_id.clone();
        let sampling = launcher
            .on_store(move |st| models::sampling(st, &model))
            .await?;
        providers.insert(
            format!("vllm-{}", provider_key(&r.model_id)),
            provider_block(
                r.base_url().unwrap_or_default(),
                key.clone(),
                &r.model_id,
                window,
                &sampling,
            ),
        );
    }
    for ep in &s.kit().endpoints {
        if let Ok(cards) = ep.models().await {
            for c in cards.into_iter().filter(|c| c.parent.is_none()) {
                let k = format!("vllm-{}", provider_key(&c.id));
                if providers.contains_key(&k) {
                    continue;
                }
                let key = s
                    .kit()
                    .config
                    .endpoints
                    .iter()
                    .find(|e| e.name == ep.name())
                    .and_then(|e| e.api_key_env.as_ref())
                    .map(|v| format!("${v}"));
                providers.insert(
                    k,
                    provider_block(
                        ep.base_url().to_string(),
                        key,
                        &c.id,
                        c.max_model_len,
                        &Default::default(),
                    ),
                );
            }
        }
    }
    Ok(json!({ "providers": providers }))
}

/// The one provider block of a front door: every model of the inventory (launched,
/// catalog, attached), since the door starts what is not loaded.
async fn gateway_provider(s: &ModelManager, url: String) -> Result<Value> {
    let launcher = s.launcher()?;
    let fleet = s.managed_fleet()?;
    let inv = vllm_fleet::inventory::inventory(&fleet).await?;
    let sampling = launcher.on_store(models::all_sampling).await?;
    let mut entries = Vec::new();
    for e in &inv.entries {
        let window = match e {
            Entry::Launched(r) => launcher.context_window(&r.source, r.args.max_model_len),
            Entry::Attached { card, .. } => card.max_model_len,
            Entry::Catalog { context_window, .. } => *context_window,
            // A cached model starts only with gateway.load_unknown; Crush lists it then.
            Entry::Cached { context_window, .. } if s.kit().config.gateway.load_unknown => {
                *context_window
            }
            Entry::Cached { .. } => continue,
        };
        let defaults = sampling.get(e.id()).cloned().unwrap_or_default();
        entries.push(model_entry(e.id(), window, &defaults));
    }
    let mut block = json!({
        "type": "openai-compat",
        "name": "vLLM (vllm-mcp front door)",
        "base_url": format!("{url}/v1"),
        "models": entries,
    });
    if let Some(v) = &s.kit().config.gateway.api_key_env {
        block["api_key"] = json!(format!("${v}"));
    }
    Ok(json!({ "providers": { "vllm-mcp": block } }))
}

fn provider_key(id: &str) -> String {
    id.rsplit('/')
        .next()
        .unwrap_or(id)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn provider_block(
    base_url: String,
    api_key: Option<String>,
    id: &str,
    window: Option<u64>,
    sampling: &vllm_core::launch_args::SamplingDefaults,
) -> Value {
    let mut block = json!({
        "type": "openai-compat",
        "base_url": format!("{base_url}/v1"),
        "models": [model_entry(id, window, sampling)],
    });
    if let Some(k) = api_key {
        block["api_key"] = json!(k);
    }
    block
}

/// One model of a provider block, with Crush's answer length.
fn model_entry(
    id: &str,
    window: Option<u64>,
    sampling: &vllm_core::launch_args::SamplingDefaults,
) -> Value {
    let mut model = json!({
        "id": id,
        "name": format!("{} (vLLM)", vllm_core::models::display_name(id)),
        "context_window": window,
    });
    if let Some(m) = sampling.get("max_tokens") {
        model["default_max_tokens"] = m.clone();
    } else if let Some(w) = window {
        // Crush's default answer length: a quarter of the window, so prompts keep room.
        model["default_max_tokens"] = json!((w / 4).max(1));
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_uris() {
        let ok = |uri: &str| parse_model_uri(uri).unwrap().unwrap();
        assert_eq!(
            ok("vllm://model/tiny/config"),
            ModelUri::Config("tiny".into())
        );
        assert_eq!(
            ok("vllm://model/meta-llama/Llama-3.1-8B/config"),
            ModelUri::Config("meta-llama/Llama-3.1-8B".into())
        );
        assert_eq!(
            ok("vllm://model/meta-llama%2FLlama-3.1-8B/logs?lines=10"),
            ModelUri::Logs {
                model_id: "meta-llama/Llama-3.1-8B".into(),
                lines: 10
            }
        );
        assert_eq!(
            ok("vllm://model/tiny/logs"),
            ModelUri::Logs {
                model_id: "tiny".into(),
                lines: LOG_LINES_DEFAULT
            }
        );
        for bad in [
            "vllm://model/../etc/passwd/config",
            "vllm://model/a%2F..%2Fb/config",
            "vllm://model/tiny/logs?lines=0",
            "vllm://model/tiny/logs?lines=99999",
            "vllm://model/tiny/logs?cmd=rm",
            "vllm://model/%zz/config",
            "vllm://model/a b/config",
        ] {
            assert!(parse_model_uri(bad).unwrap().is_err(), "{bad}");
        }
        for not_ours in [
            "vllm://model/tiny",
            "file:///etc/passwd",
            "vllm://state/sessions",
        ] {
            assert!(parse_model_uri(not_ours).is_none(), "{not_ours}");
        }
    }

    #[test]
    fn provider_blocks() {
        let b = provider_block(
            "http://127.0.0.1:8100".into(),
            None,
            "org/Tiny_1",
            Some(512),
            &Default::default(),
        );
        assert_eq!(b["base_url"], "http://127.0.0.1:8100/v1");
        assert_eq!(b["models"][0]["context_window"], 512);
        assert_eq!(b["models"][0]["default_max_tokens"], 128);
        assert_eq!(provider_key("org/Tiny_1"), "tiny-1");
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// Model ids as the validator allows them: segments of letters, digits and
        /// `._-:`, starting with a letter or digit (so never `..` nor a leading `-`).
        fn model_id() -> impl Strategy<Value = String> {
            prop::collection::vec("[a-zA-Z0-9][a-zA-Z0-9._:-]{0,15}", 1..4)
                .prop_map(|s| s.join("/"))
        }

        proptest! {
            #[test]
            fn no_uri_makes_the_router_panic(uri in any::<String>(), tail in any::<String>()) {
                let _ = parse_model_uri(&uri);
                let _ = parse_model_uri(&format!("vllm://model/{tail}"));
                let _ = parse_model_uri(&format!("vllm://model/{tail}/logs?{tail}"));
            }

            #[test]
            fn every_valid_id_routes_to_its_resource(id in model_id(), lines in 1..=LOG_LINES_MAX) {
                prop_assert_eq!(
                    parse_model_uri(&format!("vllm://model/{id}/config")).unwrap().unwrap(),
                    ModelUri::Config(id.clone())
                );
                prop_assert_eq!(
                    parse_model_uri(&format!("vllm://model/{id}/logs?lines={lines}")).unwrap().unwrap(),
                    ModelUri::Logs { model_id: id.clone(), lines }
                );
                // Percent-encoded, it is the same model.
                let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
                prop_assert_eq!(
                    parse_model_uri(&format!("vllm://model/{encoded}/config")).unwrap().unwrap(),
                    ModelUri::Config(id)
                );
            }

            #[test]
            fn lines_out_of_range_are_refused(id in model_id(), lines in prop_oneof![Just(0usize), (LOG_LINES_MAX + 1)..usize::MAX]) {
                let uri = format!("vllm://model/{id}/logs?lines={lines}");
                prop_assert!(parse_model_uri(&uri).unwrap().is_err(), "{}", uri);
            }
        }
    }
}
