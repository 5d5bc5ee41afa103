//! `/metrics`: the Prometheus exposition of vLLM 0.32. The family list, HELP/TYPE text, label sets
//! and their order come from the captured `metrics_devlora.txt` (embedded); the values come from
//! the live engine and HTTP statistics.

use std::fmt::Write as _;
use std::sync::OnceLock;

use crate::engine::{Engine, SleepLevel};
use crate::pyrepr::go_float;
use crate::stats::{FinishReason, Histogram, HttpStats};

const CAPTURE: &str = include_str!("../../../tests/data/vllm-reference/metrics_devlora.txt");

/// Label pairs of a sample, in order.
pub type Labels = Vec<(String, String)>;
/// (sample name, labels, value text)
pub type Sample = (String, Labels, String);

/// One metric family of the capture.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub typ: String,
    /// (sample name, labels, captured value text)
    pub samples: Vec<Sample>,
}

/// Parses a Prometheus text exposition (HTTP header lines before the first `#` are skipped).
pub fn parse_exposition(text: &str) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    let start = text.find("# HELP").unwrap_or(0);
    for line in text[start..].lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push(Family {
                name: name.to_string(),
                help: help.to_string(),
                typ: String::new(),
                samples: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, typ) = rest.split_once(' ').unwrap_or((rest, ""));
            match out.last_mut() {
                Some(f) if f.name == name => f.typ = typ.to_string(),
                _ => out.push(Family {
                    name: name.to_string(),
                    help: String::new(),
                    typ: typ.to_string(),
                    samples: Vec::new(),
                }),
            }
        } else if !line.starts_with('#')
            && !line.trim().is_empty()
            && let Some((sample, labels, value)) = parse_sample(line)
            && let Some(f) = out.last_mut()
        {
            f.samples.push((sample, labels, value));
        }
    }
    out
}

/// Splits `name{a="b",c="d"} value` into its parts.
pub fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let mut parsed = Vec::new();
    let mut rest = labels;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"")?;
        let mut val = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => val.push(c),
            }
        }
        let end = end?;
        parsed.push((k.trim_start_matches(',').to_string(), val));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some((name.to_string(), parsed, value.to_string()))
}

/// The capture's families, parsed once.
pub fn template() -> &'static [Family] {
    static T: OnceLock<Vec<Family>> = OnceLock::new();
    T.get_or_init(|| parse_exposition(CAPTURE))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels_text(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut sorted: Vec<&(String, String)> = labels.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let parts: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn sample(out: &mut String, name: &str, labels: &[(String, String)], value: f64) {
    let _ = writeln!(out, "{name}{} {}", labels_text(labels), go_float(value));
}

fn histogram(out: &mut String, name: &str, labels: &[(String, String)], h: &Histogram) {
    let cum = h.cumulative();
    for (i, c) in cum.iter().enumerate() {
        let le = h
            .bounds
            .get(i)
            .map(|b| go_float(*b))
            .unwrap_or_else(|| "+Inf".into());
        let mut l = labels.to_vec();
        l.push(("le".into(), le));
        sample(out, &format!("{name}_bucket"), &l, *c as f64);
    }
    sample(out, &format!("{name}_count"), labels, h.count as f64);
    sample(out, &format!("{name}_sum"), labels, h.sum);
}

/// What the renderer needs besides the engine.
pub struct RenderCtx<'a> {
    pub engine: &'a Engine,
    pub http: &'a HttpStats,
    pub model_name: &'a str,
    /// Unix time the metrics were created (server start).
    pub created: f64,
    pub include_lora: bool,
    pub include_sleep: bool,
    pub cache_config: &'a [(String, String)],
}

/// `process_*` values read from /proc/self.
fn process_value(name: &str) -> f64 {
    let page = 4096.0;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    match name {
        // fields are numbered from state (field 3 in proc(5)) = index 0
        "process_virtual_memory_bytes" => field(20),
        "process_resident_memory_bytes" => field(21) * page,
        "process_start_time_seconds" => {
            let boot = std::fs::read_to_string("/proc/stat")
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("btime ")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                })
                .unwrap_or(0.0);
            boot + field(19) / ticks
        }
        "process_cpu_seconds_total" => (field(11) + field(12)) / ticks,
        "process_open_fds" => std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as f64)
            .unwrap_or(0.0),
        "process_max_fds" => {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes into the struct.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
            lim.rlim_cur as f64
        }
        _ => 0.0,
    }
}

/// Renders the whole exposition.
pub fn render(ctx: &RenderCtx<'_>) -> String {
    let gauges = ctx.engine.gauges();
    let stats = ctx.engine.with_stats(|s| s.clone());
    let mut out = String::with_capacity(64 * 1024);
    let model = ctx.model_name.to_string();
    let fix = |labels: &[(String, String)]| -> Vec<(String, String)> {
        labels
            .iter()
            .map(|(k, v)| {
                if k == "model_name" {
                    (k.clone(), model.clone())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    };
    let base = vec![
        ("engine".to_string(), "0".to_string()),
        ("model_name".to_string(), model.clone()),
    ];
    for fam in template() {
        let name = fam.name.as_str();
        if name == "vllm:lora_requests_info" && !ctx.include_lora {
            continue;
        }
        // vLLM declares the sleep-mode families at the first sleep or wake of a dev-mode
        // server: before that they are absent (the real-vLLM fidelity test saw it).
        if name.starts_with("vllm:sleep_mode_")
            && (!ctx.include_sleep || stats.sleep_ops.values().all(|h| h.count == 0))
        {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", fam.name, fam.help);
        let _ = writeln!(out, "# TYPE {} {}", fam.name, fam.typ);
        if name.starts_with("python_") {
            for (s, l, v) in &fam.samples {
                let _ = writeln!(out, "{s}{} {v}", labels_text(l));
            }
            continue;
        }
        if name.starts_with("process_") {
            sample(&mut out, name, &[], process_value(name));
            continue;
        }
        if name.starts_with("http_") {
            render_http(&mut out, name, ctx.http);
            continue;
        }
        if name.starts_with("vllm:sleep_mode_") {
            for op in ["sleep", "wake"] {
                let l = vec![("operation".to_string(), op.to_string())];
                match name {
                    "vllm:sleep_mode_operation_duration_seconds" => {
                        if let Some(h) = stats.sleep_ops.get(op) {
                            histogram(&mut out, name, &l, h);
                        }
                    }
                    "vllm:sleep_mode_operation_duration_seconds_created" => {
                        sample(&mut out, name, &l, ctx.created)
                    }
                    _ => sample(
                        &mut out,
                        name,
                        &l,
                        stats.sleep_in_flight.get(op).copied().unwrap_or(0) as f64,
                    ),
                }
            }
            continue;
        }
        match name {
            "vllm:lora_requests_info" => {
                for ((running, waiting), ts) in &stats.lora_info {
                    let l = vec![
                        ("max_lora".to_string(), ctx.engine.cfg.max_loras.to_string()),
                        ("running_lora_adapters".to_string(), running.clone()),
                        ("waiting_lora_adapters".to_string(), waiting.clone()),
                    ];
                    sample(&mut out, name, &l, *ts);
                }
                continue;
            }
            "vllm:cache_config_info" => {
                let _ = writeln!(out, "{name}{} 1.0", labels_text(ctx.cache_config));
                continue;
            }
            _ => {}
        }
        if fam.typ == "histogram" {
            if let Some(h) = stats.histograms.get(name) {
                histogram(&mut out, name, &base, h);
            }
            continue;
        }
        for (s, l, _) in &fam.samples {
            let labels = fix(l);
            let label = |k: &str| {
                l.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("")
            };
            let cached = stats.cached_prompt_tokens as f64;
            let value = if s.ends_with("_created") {
                ctx.created
            } else {
                match s.as_str() {
                    "vllm:num_requests_running" => gauges.running as f64,
                    "vllm:num_requests_waiting" => gauges.waiting as f64,
                    "vllm:num_requests_waiting_by_reason" if label("reason") == "capacity" => {
                        gauges.waiting as f64
                    }
                    "vllm:engine_sleep_state" => {
                        let on = match label("sleep_state") {
                            "awake" => gauges.sleep == SleepLevel::Awake,
                            "weights_offloaded" => gauges.sleep == SleepLevel::Level1,
                            "discard_all" => gauges.sleep == SleepLevel::Level2,
                            _ => false,
                        };
                        if on { 1.0 } else { 0.0 }
                    }
                    "vllm:kv_cache_usage_perc" => gauges.kv_usage,
                    "vllm:prefix_cache_queries_total" => stats.prefix_queries as f64,
                    "vllm:prefix_cache_hits_total" => stats.prefix_hits as f64,
                    "vllm:prompt_tokens_total" => stats.prompt_tokens as f64,
                    "vllm:prompt_tokens_by_source_total" => match label("source") {
                        "local_compute" => stats.prompt_tokens as f64 - cached,
                        "local_cache_hit" => cached,
                        _ => 0.0,
                    },
                    "vllm:prompt_tokens_cached_total" => cached,
                    "vllm:prompt_tokens_cached_by_source_total" if label("source") == "device" => {
                        cached
                    }
                    "vllm:generation_tokens_total" => stats.generation_tokens as f64,
                    "vllm:request_success_total" => FinishReason::ALL
                        .iter()
                        .find(|r| r.as_str() == label("finished_reason"))
                        .map(|r| stats.success_of(*r) as f64)
                        .unwrap_or(0.0),
                    _ => 0.0,
                }
            };
            sample(&mut out, s, &labels, value);
        }
    }
    out
}

fn render_http(out: &mut String, name: &str, http: &HttpStats) {
    let h = |k: &str, v: &str| (k.to_string(), v.to_string());
    match name {
        "http_requests_total" | "http_requests_created" => {
            for ((handler, method, status), count, created) in &http.requests {
                let l = vec![
                    h("handler", handler),
                    h("method", method),
                    h("status", status),
                ];
                let v = if name.ends_with("_created") {
                    *created
                } else {
                    *count as f64
                };
                sample(out, name, &l, v);
            }
        }
        "http_request_size_bytes" | "http_response_size_bytes" => {
            for (handler, count, req, resp, _) in &http.sizes {
                let l = vec![h("handler", handler)];
                sample(out, &format!("{name}_count"), &l, *count as f64);
                sample(
                    out,
                    &format!("{name}_sum"),
                    &l,
                    if name.starts_with("http_request") {
                        *req
                    } else {
                        *resp
                    },
                );
            }
        }
        "http_request_size_bytes_created" | "http_response_size_bytes_created" => {
            for (handler, _, _, _, created) in &http.sizes {
                sample(out, name, &[h("handler", handler)], *created);
            }
        }
        "http_request_duration_highr_seconds" => {
            if let Some(hist) = &http.highr {
                histogram(out, name, &[], hist);
            }
        }
        "http_request_duration_highr_seconds_created" if http.highr.is_some() => {
            let first = http
                .requests
                .iter()
                .map(|r| r.2)
                .fold(f64::INFINITY, f64::min);
            sample(out, name, &[], if first.is_finite() { first } else { 0.0 });
        }
        "http_request_duration_seconds" => {
            for ((handler, method), hist, _) in &http.durations {
                histogram(
                    out,
                    name,
                    &[h("handler", handler), h("method", method)],
                    hist,
                );
            }
        }
        "http_request_duration_seconds_created" => {
            for ((handler, method), _, created) in &http.durations {
                sample(
                    out,
                    name,
                    &[h("handler", handler), h("method", method)],
                    *created,
                );
            }
        }
        _ => {}
    }
}

/// The `vllm:cache_config_info` labels: the capture's, with the values the flags change.
pub fn cache_config_labels(
    block_size: u64,
    user_block_size: bool,
    cache_dtype: &str,
    prefix_caching: bool,
    gpu_memory_utilization: f64,
    kv_cache_tokens: u64,
    max_model_len: u64,
) -> Vec<(String, String)> {
    let fam = template()
        .iter()
        .find(|f| f.name == "vllm:cache_config_info");
    let mut labels: Vec<(String, String)> = fam
        .and_then(|f| f.samples.first())
        .map(|s| s.1.clone())
        .unwrap_or_default();
    let py_bool = |b: bool| if b { "True" } else { "False" }.to_string();
    let blocks = kv_cache_tokens / block_size.max(1);
    for (k, v) in labels.iter_mut() {
        match k.as_str() {
            "block_size" | "effective_attention_block_size" => *v = block_size.to_string(),
            "cache_dtype" => *v = cache_dtype.to_string(),
            "enable_prefix_caching" => *v = py_bool(prefix_caching),
            "gpu_memory_utilization" => *v = crate::pyrepr::float_repr(gpu_memory_utilization),
            "kv_cache_size_tokens" => *v = kv_cache_tokens.to_string(),
            "num_gpu_blocks" => *v = blocks.to_string(),
            "kv_cache_memory_bytes" => *v = (kv_cache_tokens * 1024).to_string(),
            "kv_cache_max_concurrency" => {
                *v = crate::pyrepr::float_repr(kv_cache_tokens as f64 / max_model_len.max(1) as f64)
            }
            "user_specified_block_size" => *v = py_bool(user_block_size),
            _ => {}
        }
    }
    labels
}
