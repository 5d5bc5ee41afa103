//! The monitor's own metrics in Prometheus text format: GPU gauges, per-model rates and
//! quantiles over a window, endpoint scrape health and alert states.
//!
//! [`render`] builds the exposition from the store (the sampler's history and the alert
//! state) and a live NVML read; the perf-monitor's listener serves it on `/metrics`. A
//! figure that cannot be measured is left out, never written as 0: Prometheus then has
//! no sample, which is what "unknown" means there.
//!
//! Every family is prefixed `vllm_mcp_`. Per-model families carry `endpoint` and `model`
//! labels; GPU families `gpu` (the NVML index), `name` and `uuid`. Quantiles are gauges
//! with a `quantile` label, computed as `histogram_quantile` over the window's bucket
//! increases. The window is [`EXPORT_WINDOW_SECONDS`] (also exported, as
//! `vllm_mcp_window_seconds`), so a dashboard reads rates without PromQL of its own.

use super::alerts;
use super::history;
use super::sample::HistKind;
use super::window::{Counter, Latency, SeriesWindow, WindowFigures};
use crate::config::Config;
use crate::error::Result;
use crate::gpu::{GpuSnapshot, Gpus};
use crate::store::Store;
use std::fmt::Write as _;

/// The window of the exported rates and quantiles, seconds.
pub const EXPORT_WINDOW_SECONDS: f64 = 60.0;

/// The content type of the text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.95, "0.95"), (0.99, "0.99")];

/// Writes families one at a time: `# HELP`, `# TYPE`, then samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family; `None` writes nothing.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Option<f64>) {
        let Some(v) = value else { return };
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(&mut self.out, v);
        self.out.push('\n');
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Label values escape backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Everything the exposition is made of, read at one instant.
#[derive(Debug)]
pub struct ExportInput {
    pub version: String,
    /// Configured endpoints (name, base URL): exported even before their first sample.
    pub attached: Vec<(String, String)>,
    pub statuses: Vec<history::EndpointStatus>,
    pub figures: WindowFigures,
    /// `Err` holds the error code (`GPU_UNAVAILABLE`).
    pub gpus: std::result::Result<Vec<GpuSnapshot>, String>,
    pub alerts: Vec<alerts::Alert>,
    pub sample_interval_seconds: f64,
    pub now: f64,
}

impl Default for ExportInput {
    fn default() -> ExportInput {
        ExportInput {
            version: String::new(),
            attached: Vec::new(),
            statuses: Vec::new(),
            figures: WindowFigures::default(),
            gpus: Ok(Vec::new()),
            alerts: Vec::new(),
            sample_interval_seconds: 0.0,
            now: 0.0,
        }
    }
}

impl ExportInput {
    /// Reads the store and NVML (blocking).
    pub fn gather(config: &Config, store: &Store, gpus: &Gpus, version: &str) -> Result<Self> {
        let now = crate::time::unix_now();
        let rows = history::read_window(store, now - EXPORT_WINDOW_SECONDS, now)?;
        Ok(ExportInput {
            version: version.to_string(),
            attached: config
                .endpoints
                .iter()
                .map(|e| (e.name.clone(), e.base_url.clone()))
                .collect(),
            statuses: history::endpoint_status(store)?,
            figures: WindowFigures::compute(&rows),
            gpus: gpus.snapshots().map_err(|e| e.code().to_string()),
            alerts: alerts::active(store)?,
            sample_interval_seconds: config.monitor.sample_interval_seconds,
            now,
        })
    }
}

/// Reads and renders in one go (blocking).
pub fn render_now(config: &Config, store: &Store, gpus: &Gpus, version: &str) -> Result<String> {
    Ok(render(&ExportInput::gather(config, store, gpus, version)?))
}

/// The exposition of `input`.
pub fn render(input: &ExportInput) -> String {
    let mut e = Exposition::default();
    e.family("vllm_mcp_build_info", "gauge", "The exporter's version.");
    e.sample(
        "vllm_mcp_build_info",
        &[("version", &input.version)],
        Some(1.0),
    );
    e.family(
        "vllm_mcp_window_seconds",
        "gauge",
        "The window of the per-model rates and quantiles.",
    );
    e.sample("vllm_mcp_window_seconds", &[], Some(EXPORT_WINDOW_SECONDS));
    e.family(
        "vllm_mcp_sample_interval_seconds",
        "gauge",
        "Seconds between the monitor's scrapes of each vLLM endpoint.",
    );
    e.sample(
        "vllm_mcp_sample_interval_seconds",
        &[],
        Some(input.sample_interval_seconds),
    );
    endpoints(&mut e, input);
    models(&mut e, &input.figures);
    gpus(&mut e, &input.gpus);
    alert_states(&mut e, &input.alerts);
    e.finish()
}

fn endpoints(e: &mut Exposition, input: &ExportInput) {
    // Attached endpoints always; launched ones while they are being sampled (an unloaded
    // model's last sample is history, as in get-metrics).
    let stale_before = input.now - (10.0 * input.sample_interval_seconds).max(60.0);
    let mut rows: Vec<(String, String, Option<&history::EndpointStatus>)> = input
        .attached
        .iter()
        .map(|(n, u)| {
            let st = input.statuses.iter().find(|s| &s.endpoint == n);
            (n.clone(), u.clone(), st)
        })
        .collect();
    for s in &input.statuses {
        if rows.iter().any(|(n, _, _)| n == &s.endpoint) || s.last_sample_at < stale_before {
            continue;
        }
        rows.push((s.endpoint.clone(), s.base_url.clone(), Some(s)));
    }
    e.family(
        "vllm_mcp_endpoint_up",
        "gauge",
        "1 when the last scrape of the vLLM endpoint answered with metrics, 0 when it failed.",
    );
    for (n, u, st) in &rows {
        e.sample(
            "vllm_mcp_endpoint_up",
            &[("endpoint", n), ("base_url", u)],
            st.map(|s| if s.up { 1.0 } else { 0.0 }),
        );
    }
    e.family(
        "vllm_mcp_endpoint_last_sample_timestamp_seconds",
        "gauge",
        "Unix time of the last scrape of the endpoint.",
    );
    for (n, u, st) in &rows {
        e.sample(
            "vllm_mcp_endpoint_last_sample_timestamp_seconds",
            &[("endpoint", n), ("base_url", u)],
            st.map(|s| s.last_sample_at),
        );
    }
}

type Figure = fn(&SeriesWindow) -> Option<f64>;

fn error_ratio(s: &SeriesWindow) -> Option<f64> {
    let total = s.increase(Counter::RequestsFinished)?;
    (total > 0.0).then(|| s.increase(Counter::RequestsFailed).unwrap_or(0.0) / total)
}

const MODEL_GAUGES: &[(&str, &str, Figure)] = &[
    (
        "vllm_mcp_model_window_covered_seconds",
        "Seconds the model's samples cover of the window: the rates are over this span.",
        |s| s.span(),
    ),
    (
        "vllm_mcp_model_generation_tokens_per_second",
        "Generated tokens per second over the window.",
        |s| s.rate(Counter::GenerationTokens),
    ),
    (
        "vllm_mcp_model_prompt_tokens_per_second",
        "Prompt tokens processed per second over the window.",
        |s| s.rate(Counter::PromptTokens),
    ),
    (
        "vllm_mcp_model_requests_per_second",
        "Finished requests per second over the window.",
        |s| s.rate(Counter::RequestsFinished),
    ),
    (
        "vllm_mcp_model_failed_requests_per_second",
        "Requests finished with reason abort or error, per second over the window.",
        |s| s.rate(Counter::RequestsFailed),
    ),
    (
        "vllm_mcp_model_error_ratio",
        "Failed over finished requests in the window (absent when none finished).",
        error_ratio,
    ),
    (
        "vllm_mcp_model_preemptions_per_second",
        "Preemptions per second over the window.",
        |s| s.rate(Counter::Preemptions),
    ),
    (
        "vllm_mcp_model_requests_running",
        "Mean of vllm:num_requests_running over the window (the batch size).",
        |s| s.running_mean,
    ),
    (
        "vllm_mcp_model_requests_waiting",
        "Mean of vllm:num_requests_waiting over the window.",
        |s| s.waiting_mean,
    ),
    (
        "vllm_mcp_model_kv_cache_usage_ratio",
        "KV-cache usage at the last sample (0 to 1).",
        |s| s.kv_cache_usage_last,
    ),
    (
        "vllm_mcp_model_kv_cache_memory_bytes",
        "Memory vLLM gave the KV cache (vllm:cache_config_info).",
        |s| s.kv_cache_memory_bytes.map(|b| b as f64),
    ),
    (
        "vllm_mcp_model_restarts_in_window",
        "Server restarts (counter resets) seen in the window.",
        |s| Some(s.resets as f64),
    ),
];

const LATENCIES: &[(&str, &str, HistKind)] = &[
    (
        "vllm_mcp_model_e2e_latency_seconds",
        "End-to-end request latency quantiles over the window.",
        HistKind::E2e,
    ),
    (
        "vllm_mcp_model_time_to_first_token_seconds",
        "Time to first token quantiles over the window.",
        HistKind::Ttft,
    ),
    (
        "vllm_mcp_model_inter_token_latency_seconds",
        "Inter-token latency quantiles over the window.",
        HistKind::Itl,
    ),
    (
        "vllm_mcp_model_queue_time_seconds",
        "Queue time quantiles over the window.",
        HistKind::Queue,
    ),
];

fn models(e: &mut Exposition, f: &WindowFigures) {
    let series: Vec<&SeriesWindow> = f.models().collect();
    for (name, help, get) in MODEL_GAUGES {
        e.family(name, "gauge", help);
        for s in &series {
            e.sample(
                name,
                &[("endpoint", &s.endpoint), ("model", &s.model)],
                get(s),
            );
        }
    }
    for (name, help, kind) in LATENCIES {
        e.family(name, "gauge", help);
        for s in &series {
            let Some(h) = s.hist(*kind).filter(|h| h.count > 0.0) else {
                continue;
            };
            for (q, qs) in QUANTILES {
                let v = h.quantile(q);
                e.sample(
                    name,
                    &[
                        ("endpoint", &s.endpoint),
                        ("model", &s.model),
                        ("quantile", qs),
                    ],
                    v.is_finite().then_some(v),
                );
            }
        }
        let mean = format!("{name}_mean");
        e.family(&mean, "gauge", "Mean over the window.");
        for s in &series {
            let l = Latency::of(s.hist(*kind));
            e.sample(
                &mean,
                &[("endpoint", &s.endpoint), ("model", &s.model)],
                l.avg_ms.map(|ms| ms / 1000.0),
            );
        }
    }
}

type GpuFigure = fn(&GpuSnapshot) -> Option<f64>;

const MIB: f64 = 1024.0 * 1024.0;

const GPU_GAUGES: &[(&str, &str, GpuFigure)] = &[
    (
        "vllm_mcp_gpu_utilization_ratio",
        "GPU compute utilization (0 to 1), NVML.",
        |g| g.utilization_gpu,
    ),
    (
        "vllm_mcp_gpu_memory_used_bytes",
        "GPU memory in use, NVML.",
        |g| g.memory_used_mb.map(|m| m as f64 * MIB),
    ),
    (
        "vllm_mcp_gpu_memory_total_bytes",
        "GPU memory in all, NVML.",
        |g| g.memory_total_mb.map(|m| m as f64 * MIB),
    ),
    (
        "vllm_mcp_gpu_temperature_celsius",
        "GPU temperature, NVML.",
        |g| g.temperature_c.map(f64::from),
    ),
    (
        "vllm_mcp_gpu_temperature_slowdown_celsius",
        "Temperature at which the GPU slows down, NVML.",
        |g| g.temperature_slowdown_c.map(f64::from),
    ),
    ("vllm_mcp_gpu_power_watts", "GPU power draw, NVML.", |g| {
        g.power_w
    }),
    (
        "vllm_mcp_gpu_power_limit_watts",
        "GPU power limit, NVML.",
        |g| g.power_limit_w,
    ),
    ("vllm_mcp_gpu_sm_clock_hertz", "SM clock, NVML.", |g| {
        g.clock_sm_mhz.map(|m| f64::from(m) * 1e6)
    }),
    (
        "vllm_mcp_gpu_ecc_errors_uncorrected",
        "Uncorrected ECC errors since the driver loaded, NVML.",
        |g| g.ecc_uncorrected.map(|v| v as f64),
    ),
];

fn gpus(e: &mut Exposition, g: &std::result::Result<Vec<GpuSnapshot>, String>) {
    e.family(
        "vllm_mcp_gpu_available",
        "gauge",
        "1 when NVML answered (even with no GPU), 0 when it could not be read.",
    );
    e.sample(
        "vllm_mcp_gpu_available",
        &[],
        Some(if g.is_ok() { 1.0 } else { 0.0 }),
    );
    let list: &[GpuSnapshot] = g.as_deref().unwrap_or(&[]);
    let ids: Vec<(String, String, String)> = list
        .iter()
        .map(|x| {
            (
                x.index.to_string(),
                x.name.clone().unwrap_or_default(),
                x.uuid.clone().unwrap_or_default(),
            )
        })
        .collect();
    for (name, help, get) in GPU_GAUGES {
        e.family(name, "gauge", help);
        for (x, (i, n, u)) in list.iter().zip(&ids) {
            e.sample(name, &[("gpu", i), ("name", n), ("uuid", u)], get(x));
        }
    }
}

fn alert_states(e: &mut Exposition, list: &[alerts::Alert]) {
    e.family(
        "vllm_mcp_alert_active",
        "gauge",
        "1 for each pending or firing alert of the monitor's rules (labels: rule, state, severity, and the target).",
    );
    for a in list {
        let mut labels: Vec<(&str, &str)> = vec![
            ("rule", a.rule.as_str()),
            ("state", a.state.as_str()),
            ("severity", a.severity.as_str()),
        ];
        for (k, v) in &a.target {
            if !matches!(k.as_str(), "rule" | "state" | "severity") {
                labels.push((k, v));
            }
        }
        e.sample("vllm_mcp_alert_active", &labels, Some(1.0));
    }
    e.family(
        "vllm_mcp_alerts_firing",
        "gauge",
        "How many alerts are firing.",
    );
    let firing = list
        .iter()
        .filter(|a| a.state == super::alerts::AlertState::Firing)
        .count();
    e.sample("vllm_mcp_alerts_firing", &[], Some(firing as f64));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut e = Exposition::default();
        e.family("x", "gauge", "a\nb");
        e.sample("x", &[("l", "a\"b\\c\nd")], Some(1.5));
        e.sample("x", &[], None);
        assert_eq!(
            e.finish(),
            "# HELP x a\\nb\n# TYPE x gauge\nx{l=\"a\\\"b\\\\c\\nd\"} 1.5\n"
        );
    }

    #[test]
    fn an_empty_monitor_still_exports_its_own_state() {
        let text = render(&ExportInput {
            version: "1.2.3".into(),
            gpus: Err("GPU_UNAVAILABLE".into()),
            sample_interval_seconds: 5.0,
            ..Default::default()
        });
        assert!(text.contains("vllm_mcp_build_info{version=\"1.2.3\"} 1\n"));
        assert!(text.contains("vllm_mcp_gpu_available 0\n"));
        assert!(text.contains("vllm_mcp_alerts_firing 0\n"));
        // Nothing measured, nothing invented.
        assert!(!text.contains("vllm_mcp_gpu_temperature_celsius{"));
        let (expo, problems) = crate::prom::parse_lenient(&text);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(expo.family("vllm_mcp_endpoint_up").is_some());
    }
}
