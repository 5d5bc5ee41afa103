//! The `server-health` tool every server has: is this process, its store, its vLLMs and
//! its GPUs in a state to work?

use crate::context::Kit;
use crate::service::Service;
use crate::tool::{NoParams, ToolDef, Toolbox};
use schemars::JsonSchema;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vllm_core::Result;
use vllm_core::coordination;
use vllm_core::vllm::{Health, VllmClient};

/// The answer of `server-health`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthReport {
    /// The binary's name.
    pub server: String,
    pub version: String,
    /// `healthy` when the store works; `degraded` otherwise (tools may still answer).
    pub status: String,
    pub pid: u32,
    pub uptime_seconds: f64,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub data_dir: String,
    /// The config file in use, or null when only defaults and the environment apply.
    pub config_file: Option<String>,
    pub store: StoreStatus,
    /// Singleton duties (sampler, exporter, ...) and which process holds each.
    pub leases: Vec<LeaseStatus>,
    /// Attached vLLM endpoints, each checked now.
    pub endpoints: Vec<EndpointStatus>,
    pub nvml: NvmlStatus,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StoreStatus {
    pub ok: bool,
    pub path: Option<String>,
    pub schema_version: Option<i64>,
    pub size_bytes: Option<u64>,
    pub journal_mode: Option<String>,
    /// Opened read-only (`store.read_only`): every write answers `STORAGE_ERROR`.
    pub read_only: bool,
    /// The size cap (`store.max_size_mb`) in bytes; none: the disk's size.
    pub max_size_bytes: Option<u64>,
    /// Why the store is not usable, when it is not.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct LeaseStatus {
    pub duty: String,
    pub holder_pid: u32,
    pub host: String,
    /// This process holds it.
    pub mine: bool,
    /// RFC 3339 UTC.
    pub expires_at: String,
    pub expired: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EndpointStatus {
    pub name: String,
    pub base_url: String,
    /// `/health` answered 200.
    pub reachable: bool,
    /// `/health`'s status code when it answered.
    pub health_status: Option<u16>,
    pub vllm_version: Option<String>,
    pub latency_ms: Option<f64>,
    /// The error code and message when it could not be reached.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct NvmlStatus {
    pub available: bool,
    pub gpu_count: Option<u32>,
    pub driver_version: Option<String>,
    /// Why NVML is not available, with what to do.
    pub note: Option<String>,
}

/// Registers `server-health` on a toolbox.
pub fn add_health_tool<S: Service>(tools: &mut Toolbox<S>) {
    tools.add(
        ToolDef::read(
            "server-health",
            "Health of this MCP server: version, uptime, data directory, store status, \
             singleton duties held, whether each attached vLLM endpoint answers, and whether NVML (GPU figures) is available.",
        ),
        |s: Arc<S>, _: NoParams, _| async move { report(s.kit()).await },
    );
}

/// Builds the health report. Never fails: every problem is a field of the answer.
pub async fn report(kit: &Kit) -> Result<HealthReport> {
    let store = store_status(kit).await;
    let leases = kit
        .with_store(|s| Ok(coordination::holders(s)?))
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|l| LeaseStatus {
            mine: l.holder == kit.holder.as_str(),
            duty: l.duty,
            holder_pid: l.pid,
            host: l.host,
            expires_at: vllm_core::time::format_rfc3339(l.expires_at as i64),
            expired: l.expired,
        })
        .collect();
    let checks = kit.endpoints.iter().map(endpoint_status);
    let endpoints = futures_util::future::join_all(checks).await;
    let nvml = nvml_status(kit).await;
    Ok(HealthReport {
        server: kit.server.to_string(),
        version: kit.version.to_string(),
        status: if store.ok { "healthy" } else { "degraded" }.into(),
        pid: std::process::id(),
        uptime_seconds: (kit.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        started_at: kit.started_at.clone(),
        data_dir: kit.config.data_dir.display().to_string(),
        config_file: kit.config.source.as_ref().map(|p| p.display().to_string()),
        store,
        leases,
        endpoints,
        nvml,
    })
}

/// The store's health, or why it is unavailable.
async fn store_status(kit: &Kit) -> StoreStatus {
    match kit.store() {
        Ok(st) => {
            let st = st.clone();
            let h = tokio::task::spawn_blocking(move || st.health()).await.ok();
            match h {
                Some(h) => StoreStatus {
                    ok: h.ok,
                    path: Some(h.path.display().to_string()),
                    schema_version: Some(h.schema_version),
                    size_bytes: Some(h.size_bytes),
                    journal_mode: Some(h.journal_mode),
                    read_only: h.read_only,
                    max_size_bytes: h.max_size_bytes,
                    error: (!h.ok).then(|| "the store did not answer as expected".to_string()),
                },
                None => unavailable_store("the health check failed".into()),
            }
        }
        Err(e) => unavailable_store(e.to_string()),
    }
}

/// One endpoint's `/health` (at most 5 s) and, when it answers, its version.
async fn endpoint_status(c: &VllmClient) -> EndpointStatus {
    let t = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(5), c.health()).await;
    let latency_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (reachable, health_status, error) = match health {
        Ok(Ok(Health::Ready)) => (true, Some(200), None),
        Ok(Ok(Health::Unhealthy(s))) => (false, Some(s), Some(format!("/health answered {s}"))),
        Ok(Err(e)) => (false, None, Some(format!("{}: {e}", e.code()))),
        Err(_) => (
            false,
            None,
            Some("BACKEND_TIMEOUT: no answer within 5 s".into()),
        ),
    };
    let vllm_version = if reachable {
        c.version().await.ok()
    } else {
        None
    };
    EndpointStatus {
        name: c.name().to_string(),
        base_url: c.base_url().to_string(),
        reachable,
        health_status,
        vllm_version,
        latency_ms: reachable.then_some(latency_ms),
        error,
    }
}

/// Whether NVML answers, and what it sees.
async fn nvml_status(kit: &Kit) -> NvmlStatus {
    let gpus = kit.gpus.clone();
    tokio::task::spawn_blocking(move || match gpus.count() {
        Ok(n) => NvmlStatus {
            available: true,
            gpu_count: Some(n),
            driver_version: gpus.driver_version().ok(),
            note: None,
        },
        Err(e) => NvmlStatus {
            available: false,
            gpu_count: None,
            driver_version: None,
            note: Some(format!("{e}. {}", e.suggestion())),
        },
    })
    .await
    .unwrap_or(NvmlStatus {
        available: false,
        gpu_count: None,
        driver_version: None,
        note: Some("the NVML check failed".into()),
    })
}

fn unavailable_store(error: String) -> StoreStatus {
    StoreStatus {
        ok: false,
        path: None,
        schema_version: None,
        size_bytes: None,
        journal_mode: None,
        read_only: false,
        max_size_bytes: None,
        error: Some(error),
    }
}
