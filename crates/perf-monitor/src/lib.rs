//! vllm-perf-monitor: watches vLLM throughput, latency, GPU health and alerts.
//!
//! The library holds the server so tests can run it in-process; `main.rs` only starts it.
//! - [`metrics`]: get-metrics, figures over a window from the sampled history;
//! - [`prom_metrics`]: get-metrics from an existing Prometheus (`source = "prometheus"`);
//! - [`gpu`]: get-gpu-stats, NVML per GPU with processes mapped to launched models;
//! - [`memory`]: get-memory-stats, GPU, host and per-model memory;
//! - [`benchmark`]: benchmark-model, a bounded load test of a served model;
//! - [`resources`]: `vllm://metrics/current`, `vllm://metrics/history/{duration}`,
//!   `vllm://alerts/active`, `vllm://alerts/history`;
//! - [`alerts`]: alert notifications (logging and `resources/updated`) of this instance;
//! - [`export`]: the Prometheus listener (`[prometheus] listen`), one for all instances.
//!
//! Sampling, history and window arithmetic are `vllm_core::monitor`. Every instance runs
//! the sampling loop, which samples only while its process holds the `metrics_sampler`
//! lease, so several instances (one per Crush session) sample once, not once each; the
//! holder also evaluates the alert rules and posts the webhook; every instance answers
//! and notifies its own client from the store.

pub mod alerts;
pub mod benchmark;
pub mod export;
pub mod figures;
pub mod gpu;
pub mod memory;
pub mod metrics;
pub mod nodes;
pub mod prom_metrics;
pub mod resources;

use rmcp::model::{Resource, ResourceTemplate};
use std::sync::Arc;
use vllm_core::monitor::Sampler;
use vllm_core::{Result, monitor};
use vllm_fleet::launcher::supervisor::Launcher;
use vllm_fleet::lifecycle::Fleet;
use vllm_mcp_kit::{Kit, NoParams, ResourceBody, Service, ToolDef, Toolbox};

/// The binary's name, also `serverInfo.name`.
pub const NAME: &str = "vllm-perf-monitor";

/// The server's state.
pub struct PerfMonitor {
    pub(crate) kit: Arc<Kit>,
    /// The fleet's view of launched models (to find what a benchmark targets); `None`
    /// without a store. The monitor never launches.
    pub(crate) launcher: Option<Arc<Launcher>>,
}

impl PerfMonitor {
    /// The launched models and the attached endpoints.
    pub(crate) fn fleet(&self) -> Fleet<'_> {
        Fleet {
            launcher: self.launcher.as_deref(),
            endpoints: &self.kit.endpoints,
            config: &self.kit.config,
        }
    }
}

impl Service for PerfMonitor {
    fn kit(&self) -> &Kit {
        &self.kit
    }

    fn instructions(&self) -> String {
        "Reports vLLM performance from metrics sampled every few seconds and kept in a history: get-metrics gives \
         throughput, latency percentiles, memory, GPU and request figures over a window (duration_seconds, e.g. 300 \
         or \"1h\"; per_model and include_history for more); get-gpu-stats gives per-GPU utilization, memory, \
         temperature, power and processes; get-memory-stats gives GPU, host and per-model memory; benchmark-model load-tests a loaded model. Resources: \
         vllm://metrics/current, vllm://metrics/history/{duration}, vllm://alerts/active (subscribable), \
         vllm://alerts/history. Call server-health to \
         check the server, its store, the vLLM endpoints and NVML."
            .into()
    }

    async fn resources(&self) -> Vec<Resource> {
        resources::list(self)
    }

    fn supports_subscriptions(&self) -> bool {
        true
    }

    fn resource_templates(&self) -> Vec<ResourceTemplate> {
        resources::templates()
    }

    async fn read_resource(&self, uri: &str) -> Option<Result<ResourceBody>> {
        // The readers take an Arc (they hand work to blocking threads); the state is cheap
        // to rebuild around the shared kit.
        let me = Arc::new(PerfMonitor {
            kit: self.kit.clone(),
            launcher: self.launcher.clone(),
        });
        resources::read(&me, uri).await
    }
}

/// Builds the server and its tools over a kit, and starts the sampling loop.
pub fn build(kit: Arc<Kit>) -> Result<(PerfMonitor, Toolbox<PerfMonitor>)> {
    vllm_mcp_kit::runtime::tune_allocator();
    if let Ok(store) = kit.store()
        && tokio::runtime::Handle::try_current().is_ok()
    {
        let sampler = Arc::new(Sampler::new(
            kit.config.clone(),
            store.clone(),
            kit.gpus.clone(),
            kit.endpoints.clone(),
        ));
        tokio::spawn(monitor::sampler::run(sampler, kit.holder.clone()));
        tokio::spawn(alerts::watch(kit.clone(), store.clone()));
        if let Some(listen) = kit.config.prometheus.listen.clone() {
            tokio::spawn(export::run(kit.clone(), store.clone(), listen));
        }
    }
    let mut t = Toolbox::default();
    vllm_mcp_kit::health::add_health_tool(&mut t);
    t.add(
        ToolDef::read(
            "get-metrics",
            "Performance over a window ending now (duration_seconds: seconds or \"90s\", \"5m\", \"1h30m\", \"1d\"; \
             default 60): throughput (tokens/s, requests/s, batch size), latency (p50/p95/p99/avg ms, plus time to \
             first token, inter-token latency and queue time), memory (GPU used/total, vLLM process RAM, KV-cache \
             usage), GPUs, and requests (total, successful, failed, error rate). metrics picks groups; per_model \
             splits by model; include_history adds time series. Null figures are explained in notes.",
        ),
        |s: Arc<PerfMonitor>, p: metrics::MetricsParams, _| async move {
            metrics::get_metrics(&s, p).await
        },
    );
    t.add(
        ToolDef::read(
            "get-gpu-stats",
            "Per-GPU statistics from NVML: memory, utilization, temperature (with the alert threshold), power, \
             clocks, throttle reasons, ECC errors, and the processes on each GPU mapped to launched models. \
             gpu_ids picks GPUs (default all).",
        ),
        |s: Arc<PerfMonitor>, p: gpu::GpuParams, _| async move { gpu::get_gpu_stats(&s, p).await },
    );
    t.add(
        ToolDef::read(
            "get-memory-stats",
            "Memory now: GPU memory (allocated to weights and KV cache, the rest, free, fragmentation), host memory \
             of the vLLM processes, available and swap, and each model's weights, KV cache and activations (MiB).",
        ),
        |s: Arc<PerfMonitor>, _: NoParams, _| async move { memory::get_memory_stats(&s).await },
    );
    t.add(
        ToolDef {
            gpu_work: true,
            ..ToolDef::control(
                "benchmark-model",
                "Load-test a loaded model with a bounded run: requests (default 20, at most 1000) completions of \
                 prompt_tokens (default 128) prompt and output_tokens (default 64) generated tokens each, \
                 concurrency (default 4, at most 64) at a time, within timeout_seconds (default 120). Reports \
                 client-side throughput (requests/s, tokens/s) and latency percentiles (end to end, time to first \
                 token, inter-token, time per output token) beside vLLM's own counters and histograms over the run. \
                 It loads the server: run it when the model is not serving users.",
            )
        },
        |s: Arc<PerfMonitor>, p: benchmark::BenchmarkParams, ctx| async move {
            benchmark::benchmark(&s, p, ctx).await
        },
    );
    let launcher = kit.store().ok().map(|store| {
        Arc::new(Launcher::new(
            kit.config.clone(),
            store.clone(),
            kit.gpus.clone(),
        ))
    });
    Ok((PerfMonitor { kit, launcher }, t))
}
