//! A typed view of the metric families vLLM exports, per served model.
//!
//! Family names are those of vLLM 0.32 (the captures in `tests/data/vllm-reference`),
//! each with the names earlier releases used for the same quantity, newest first (see
//! [`names`]). When a server exports both (releases that kept the old name as
//! deprecated), only the first present is read, so nothing is counted twice.
//!
//! Samples are grouped by their `model_name` label; samples without one are not part of
//! any model. Several data-parallel engines of one model (`engine="0"`, `engine="1"`) are
//! added up (counters, request counts, histograms), except the KV-cache usage, a fraction,
//! which is their mean. A family the server did not export, or exported with no sample for
//! a model, is `None`: never an invented 0.

use crate::{Exposition, Family, Histogram, Labels};
use std::collections::BTreeMap;

/// vLLM's family names, current name first, then older names for the same quantity.
pub mod names {
    pub const NUM_REQUESTS_RUNNING: &[&str] = &["vllm:num_requests_running"];
    pub const NUM_REQUESTS_WAITING: &[&str] = &["vllm:num_requests_waiting"];
    /// Renamed from `gpu_cache_usage_perc` when the V1 engine became the default.
    pub const KV_CACHE_USAGE: &[&str] = &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"];
    pub const ENGINE_SLEEP_STATE: &[&str] = &["vllm:engine_sleep_state"];
    /// Counters are listed by their sample name (`_total`, as `# TYPE` names them in the
    /// 0.0.4 format) and by their OpenMetrics family name (without `_total`).
    pub const PROMPT_TOKENS: &[&str] = &["vllm:prompt_tokens_total", "vllm:prompt_tokens"];
    pub const GENERATION_TOKENS: &[&str] =
        &["vllm:generation_tokens_total", "vllm:generation_tokens"];
    pub const REQUEST_SUCCESS: &[&str] = &["vllm:request_success_total", "vllm:request_success"];
    pub const NUM_PREEMPTIONS: &[&str] = &["vllm:num_preemptions_total", "vllm:num_preemptions"];
    /// Early V1 releases called these `gpu_prefix_cache_*`.
    pub const PREFIX_CACHE_QUERIES: &[&str] = &[
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_queries",
        "vllm:gpu_prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_queries",
    ];
    pub const PREFIX_CACHE_HITS: &[&str] = &[
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_hits",
        "vllm:gpu_prefix_cache_hits_total",
        "vllm:gpu_prefix_cache_hits",
    ];
    pub const E2E_REQUEST_LATENCY: &[&str] = &["vllm:e2e_request_latency_seconds"];
    pub const TIME_TO_FIRST_TOKEN: &[&str] = &["vllm:time_to_first_token_seconds"];
    /// Renamed from `time_per_output_token_seconds`. Not to be confused with
    /// `request_time_per_output_token_seconds`, a per-request mean that newer releases
    /// added beside it.
    pub const INTER_TOKEN_LATENCY: &[&str] = &[
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",
    ];
    pub const REQUEST_QUEUE_TIME: &[&str] = &["vllm:request_queue_time_seconds"];
    pub const REQUEST_PREFILL_TIME: &[&str] = &["vllm:request_prefill_time_seconds"];
    pub const REQUEST_DECODE_TIME: &[&str] = &["vllm:request_decode_time_seconds"];
    pub const REQUEST_INFERENCE_TIME: &[&str] = &["vllm:request_inference_time_seconds"];
    pub const REQUEST_PROMPT_TOKENS: &[&str] = &["vllm:request_prompt_tokens"];
    pub const REQUEST_GENERATION_TOKENS: &[&str] = &["vllm:request_generation_tokens"];
    pub const ITERATION_TOKENS: &[&str] = &["vllm:iteration_tokens_total"];
    pub const CACHE_CONFIG_INFO: &[&str] = &["vllm:cache_config_info"];
    pub const LORA_REQUESTS_INFO: &[&str] = &["vllm:lora_requests_info"];
}

/// What one scrape of a vLLM server says, per model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VllmSnapshot {
    /// By `model_name`, the served model name. (vLLM 0.32 counts requests to a LoRA
    /// adapter under its base model: `metrics_devlora.txt` has only `model_name="tiny"`.)
    pub models: BTreeMap<String, ModelMetrics>,
    /// `vllm:cache_config_info`, which has an `engine` label but no `model_name`: the
    /// first engine's (data-parallel engines share one configuration).
    pub cache_config: Option<CacheConfig>,
    /// `vllm:lora_requests_info`, when LoRA is enabled.
    pub lora: Option<LoraInfo>,
}

/// One model's metrics at the instant of the scrape. Counters and histograms are totals
/// since the server started: subtract two snapshots (`window` functions) for a window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelMetrics {
    pub model_name: String,
    /// `vllm:num_requests_running`.
    pub num_requests_running: Option<f64>,
    /// `vllm:num_requests_waiting`.
    pub num_requests_waiting: Option<f64>,
    /// Fraction of KV-cache blocks in use, 0 to 1 (despite the `_perc` in the name).
    pub kv_cache_usage: Option<f64>,
    /// The `sleep_state` label of the `vllm:engine_sleep_state` series whose value is 1
    /// (`awake`, `weights_offloaded`, `discard_all`).
    pub sleep_state: Option<String>,
    pub prompt_tokens_total: Option<f64>,
    pub generation_tokens_total: Option<f64>,
    /// Finished requests, every `finished_reason` added.
    pub request_success_total: Option<f64>,
    /// Finished requests by `finished_reason` (`stop`, `length`, `abort`, `error`, ...).
    pub request_success_by_reason: Option<BTreeMap<String, f64>>,
    pub num_preemptions_total: Option<f64>,
    /// Prefix-cache lookups, in tokens.
    pub prefix_cache_queries_total: Option<f64>,
    /// Prefix-cache hits, in tokens.
    pub prefix_cache_hits_total: Option<f64>,
    pub e2e_request_latency_seconds: Option<Histogram>,
    pub time_to_first_token_seconds: Option<Histogram>,
    pub inter_token_latency_seconds: Option<Histogram>,
    pub request_queue_time_seconds: Option<Histogram>,
    pub request_prefill_time_seconds: Option<Histogram>,
    pub request_decode_time_seconds: Option<Histogram>,
    pub request_inference_time_seconds: Option<Histogram>,
    pub request_prompt_tokens: Option<Histogram>,
    pub request_generation_tokens: Option<Histogram>,
    /// Tokens per engine step.
    pub iteration_tokens: Option<Histogram>,
}

/// `vllm:cache_config_info`: the KV cache's configuration, carried in labels ("None"
/// reads as absent).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CacheConfig {
    pub engine: Option<String>,
    pub num_gpu_blocks: Option<u64>,
    pub num_cpu_blocks: Option<u64>,
    /// Tokens per block.
    pub block_size: Option<u64>,
    /// Bytes given to the KV cache (present in vLLM 0.32).
    pub kv_cache_memory_bytes: Option<u64>,
    pub gpu_memory_utilization: Option<f64>,
    pub enable_prefix_caching: Option<bool>,
    pub cache_dtype: Option<String>,
    /// Every label as exported, for what is not typed above.
    pub labels: BTreeMap<String, String>,
}

/// `vllm:lora_requests_info`: the adapters in use. vLLM keeps one series per combination
/// ever seen, valued with the time it was last set, so the newest one is current.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoraInfo {
    pub max_lora: Option<u64>,
    pub running: Vec<String>,
    pub waiting: Vec<String>,
    /// Unix time in seconds when vLLM last updated this series.
    pub updated_at: f64,
}

impl VllmSnapshot {
    /// Reads every family this view knows from `expo`.
    pub fn from_exposition(expo: &Exposition) -> VllmSnapshot {
        let mut b = Builder::default();

        b.gauge_sum(expo, names::NUM_REQUESTS_RUNNING, |m| {
            &mut m.num_requests_running
        });
        b.gauge_sum(expo, names::NUM_REQUESTS_WAITING, |m| {
            &mut m.num_requests_waiting
        });
        b.kv_cache_usage(expo);
        b.sleep_state(expo);
        b.gauge_sum(expo, names::PROMPT_TOKENS, |m| &mut m.prompt_tokens_total);
        b.gauge_sum(expo, names::GENERATION_TOKENS, |m| {
            &mut m.generation_tokens_total
        });
        b.gauge_sum(expo, names::NUM_PREEMPTIONS, |m| {
            &mut m.num_preemptions_total
        });
        b.gauge_sum(expo, names::PREFIX_CACHE_QUERIES, |m| {
            &mut m.prefix_cache_queries_total
        });
        b.gauge_sum(expo, names::PREFIX_CACHE_HITS, |m| {
            &mut m.prefix_cache_hits_total
        });
        b.request_success(expo);

        let histograms: [(&[&str], Field<Histogram>); 10] = [
            (names::E2E_REQUEST_LATENCY, |m| {
                &mut m.e2e_request_latency_seconds
            }),
            (names::TIME_TO_FIRST_TOKEN, |m| {
                &mut m.time_to_first_token_seconds
            }),
            (names::INTER_TOKEN_LATENCY, |m| {
                &mut m.inter_token_latency_seconds
            }),
            (names::REQUEST_QUEUE_TIME, |m| {
                &mut m.request_queue_time_seconds
            }),
            (names::REQUEST_PREFILL_TIME, |m| {
                &mut m.request_prefill_time_seconds
            }),
            (names::REQUEST_DECODE_TIME, |m| {
                &mut m.request_decode_time_seconds
            }),
            (names::REQUEST_INFERENCE_TIME, |m| {
                &mut m.request_inference_time_seconds
            }),
            (names::REQUEST_PROMPT_TOKENS, |m| {
                &mut m.request_prompt_tokens
            }),
            (names::REQUEST_GENERATION_TOKENS, |m| {
                &mut m.request_generation_tokens
            }),
            (names::ITERATION_TOKENS, |m| &mut m.iteration_tokens),
        ];
        for (names, field) in histograms {
            b.histogram(expo, names, field);
        }

        VllmSnapshot {
            models: b.models,
            cache_config: expo
                .first_family(names::CACHE_CONFIG_INFO)
                .and_then(|f| f.samples.first())
                .map(|s| CacheConfig::from_labels(&s.labels)),
            lora: expo
                .first_family(names::LORA_REQUESTS_INFO)
                .and_then(LoraInfo::from_family),
        }
    }

    /// The metrics of model `name`.
    pub fn model(&self, name: &str) -> Option<&ModelMetrics> {
        self.models.get(name)
    }

    /// The only model's metrics, when the server reports exactly one model name (the
    /// common case: one `vllm serve` serves one model).
    pub fn single_model(&self) -> Option<&ModelMetrics> {
        match self.models.len() {
            1 => self.models.values().next(),
            _ => None,
        }
    }
}

type Field<T> = fn(&mut ModelMetrics) -> &mut Option<T>;

#[derive(Default)]
struct Builder {
    models: BTreeMap<String, ModelMetrics>,
}

impl Builder {
    fn model(&mut self, labels: &Labels) -> Option<&mut ModelMetrics> {
        self.model_named(labels.get("model_name")?)
    }

    fn model_named(&mut self, name: &str) -> Option<&mut ModelMetrics> {
        // get_mut first: the entry API would allocate the key on every call.
        if !self.models.contains_key(name) {
            self.models.insert(
                name.to_string(),
                ModelMetrics {
                    model_name: name.to_string(),
                    ..ModelMetrics::default()
                },
            );
        }
        self.models.get_mut(name)
    }

    /// Adds the value samples (not `_created`) of the first present family per model.
    fn gauge_sum(&mut self, expo: &Exposition, names: &[&str], field: Field<f64>) {
        let Some(f) = expo.first_family(names) else {
            return;
        };
        for s in &f.samples {
            if f.is_value_sample(s)
                && let Some(m) = self.model(&s.labels)
            {
                *field(m).get_or_insert(0.0) += s.value;
            }
        }
    }

    /// The mean over engines: usage is a fraction of each engine's own cache.
    fn kv_cache_usage(&mut self, expo: &Exposition) {
        let Some(f) = expo.first_family(names::KV_CACHE_USAGE) else {
            return;
        };
        let mut acc: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
        for s in &f.samples {
            if let Some(model) = s.labels.get("model_name") {
                let e = acc.entry(model).or_default();
                e.0 += s.value;
                e.1 += 1;
            }
        }
        for (model, (sum, n)) in acc {
            if let Some(m) = self.model_named(model) {
                m.kv_cache_usage = Some(sum / n as f64);
            }
        }
    }

    fn sleep_state(&mut self, expo: &Exposition) {
        let Some(f) = expo.first_family(names::ENGINE_SLEEP_STATE) else {
            return;
        };
        for s in &f.samples {
            if s.value >= 1.0
                && let Some(state) = s.labels.get("sleep_state")
                && let Some(m) = self.model(&s.labels)
                && m.sleep_state.is_none()
            {
                m.sleep_state = Some(state.to_string());
            }
        }
    }

    fn request_success(&mut self, expo: &Exposition) {
        let Some(f) = expo.first_family(names::REQUEST_SUCCESS) else {
            return;
        };
        for s in &f.samples {
            if !f.is_value_sample(s) {
                continue;
            }
            let reason = s.labels.get("finished_reason").map(str::to_string);
            if let Some(m) = self.model(&s.labels) {
                *m.request_success_total.get_or_insert(0.0) += s.value;
                if let Some(reason) = reason {
                    *m.request_success_by_reason
                        .get_or_insert_with(BTreeMap::new)
                        .entry(reason)
                        .or_insert(0.0) += s.value;
                }
            }
        }
    }

    fn histogram(&mut self, expo: &Exposition, names: &[&str], field: Field<Histogram>) {
        let Some(f) = expo.first_family(names) else {
            return;
        };
        for (labels, h) in f.histograms() {
            if let Some(m) = self.model(&labels) {
                match field(m) {
                    Some(total) => total.add(&h),
                    slot => *slot = Some(h),
                }
            }
        }
    }
}

impl CacheConfig {
    /// Reads the labels of a `vllm:cache_config_info` sample.
    pub fn from_labels(labels: &Labels) -> CacheConfig {
        let get = |name: &str| labels.get(name).filter(|v| !v.is_empty() && *v != "None");
        let int = |name: &str| get(name).and_then(parse_count);
        CacheConfig {
            engine: get("engine").map(str::to_string),
            num_gpu_blocks: int("num_gpu_blocks"),
            num_cpu_blocks: int("num_cpu_blocks"),
            block_size: int("block_size"),
            kv_cache_memory_bytes: int("kv_cache_memory_bytes"),
            gpu_memory_utilization: get("gpu_memory_utilization").and_then(|v| v.parse().ok()),
            enable_prefix_caching: get("enable_prefix_caching").and_then(parse_python_bool),
            cache_dtype: get("cache_dtype").map(str::to_string),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl LoraInfo {
    /// The newest series of a `vllm:lora_requests_info` family; `None` without samples.
    pub fn from_family(f: &Family) -> Option<LoraInfo> {
        let newest = f
            .samples
            .iter()
            .filter(|s| f.is_value_sample(s) && !s.value.is_nan())
            .max_by(|a, b| a.value.total_cmp(&b.value))?;
        let list = |name: &str| -> Vec<String> {
            newest
                .labels
                .get(name)
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect()
        };
        Some(LoraInfo {
            max_lora: newest.labels.get("max_lora").and_then(parse_count),
            running: list("running_lora_adapters"),
            waiting: list("waiting_lora_adapters"),
            updated_at: newest.value,
        })
    }
}

/// A count written by Python: `8192`, or `8192.0` from a float.
fn parse_count(v: &str) -> Option<u64> {
    v.parse::<u64>().ok().or_else(|| {
        v.parse::<f64>()
            .ok()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
            .map(|f| f as u64)
    })
}

fn parse_python_bool(v: &str) -> Option<bool> {
    match v {
        "True" | "true" => Some(true),
        "False" | "false" => Some(false),
        _ => None,
    }
}
