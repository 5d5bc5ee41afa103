//! One sample: what one scrape of one vLLM server says about one served model.
//!
//! The scalar figures a window query scans (counters, gauges, histogram counts) are plain
//! fields, stored as columns; the bulky rest (histogram buckets, requests by
//! `finished_reason`, the KV-cache configuration) is a [`SampleDetail`], stored as a JSON
//! blob and read only where a window needs it (its edges and counter resets).
//!
//! A figure the server did not export is `None`, never 0.

use crate::prom::{Histogram, VllmSnapshot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Finished requests counted as failed: vLLM's `finished_reason` `abort` (the client went
/// away or the request was cancelled) and `error`. `stop` and `length` (and any other
/// reason) are successful: the model produced an answer.
pub const FAILED_REASONS: &[&str] = &["abort", "error"];

/// One endpoint and model at one instant.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Unix seconds when the scrape answered (or failed).
    pub ts: f64,
    /// The endpoint's name: an attached endpoint's configured name, or a launched model's id.
    pub endpoint: String,
    pub base_url: String,
    /// The served model name (`model_name` label); empty when the scrape found no model
    /// (the endpoint did not answer).
    pub model: String,
    /// The scrape answered with metrics.
    pub up: bool,
    /// The stable error code of a failed scrape (`BACKEND_UNREACHABLE`, ...).
    pub error: Option<String>,
    /// `process_start_time_seconds` of the server: a change means a restart.
    pub start_time: Option<f64>,
    pub prompt_tokens: Option<f64>,
    pub generation_tokens: Option<f64>,
    /// Finished requests, every `finished_reason`.
    pub requests_finished: Option<f64>,
    /// Finished requests whose reason is in [`FAILED_REASONS`].
    pub requests_failed: Option<f64>,
    pub preemptions: Option<f64>,
    pub running: Option<f64>,
    pub waiting: Option<f64>,
    /// Fraction 0..1.
    pub kv_cache_usage: Option<f64>,
    pub e2e_count: Option<f64>,
    /// Seconds.
    pub e2e_sum: Option<f64>,
    pub ttft_count: Option<f64>,
    pub itl_count: Option<f64>,
    pub queue_count: Option<f64>,
    /// The blob; `None` when it was not read from the store. Boxed: a 24 h window holds
    /// thousands of samples and most have no detail read, so the row stays small.
    pub detail: Option<Box<SampleDetail>>,
}

/// The bulky part of a sample.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SampleDetail {
    /// Finished requests by `finished_reason`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_reason: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e: Option<HistData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft: Option<HistData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl: Option<HistData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<HistData>,
    /// `vllm:cache_config_info`'s `kv_cache_memory_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_gpu_blocks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
}

/// A histogram in compact form: bounds and cumulative counts side by side (`+Inf` is
/// written as `null` in JSON, so it is kept out of `le` and its count is `count`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HistData {
    /// Finite upper bounds, ascending.
    pub le: Vec<f64>,
    /// Cumulative count at each bound of `le`.
    pub c: Vec<f64>,
    /// `+Inf` bucket's count (every observation).
    pub inf: f64,
    /// `None` when the exposition had no `_sum`.
    pub sum: Option<f64>,
    pub count: f64,
}

impl HistData {
    /// From a parsed histogram; `None` without a `+Inf` bucket (it could not be used for
    /// quantiles) or without a count.
    pub fn from_histogram(h: &Histogram) -> Option<HistData> {
        let inf = h.buckets.last().filter(|b| b.le == f64::INFINITY)?.count;
        let finite = &h.buckets[..h.buckets.len() - 1];
        let count = if h.count.is_nan() { inf } else { h.count };
        Some(HistData {
            le: finite.iter().map(|b| b.le).collect(),
            c: finite.iter().map(|b| b.count).collect(),
            inf,
            sum: (!h.sum.is_nan()).then_some(h.sum),
            count,
        })
    }

    /// Back to a [`Histogram`].
    pub fn to_histogram(&self) -> Histogram {
        Histogram::new(
            self.le
                .iter()
                .copied()
                .zip(self.c.iter().copied())
                .chain(std::iter::once((f64::INFINITY, self.inf))),
            self.sum.unwrap_or(f64::NAN),
            self.count,
        )
    }
}

impl Sample {
    /// A failed scrape of an endpoint: no model, no figures.
    pub fn down(ts: f64, endpoint: &str, base_url: &str, error: &str) -> Sample {
        Sample {
            ts,
            endpoint: endpoint.into(),
            base_url: base_url.into(),
            up: false,
            error: Some(error.into()),
            ..Sample::default()
        }
    }

    /// One sample per model of a scrape (one with an empty model name when the server
    /// reported none). `start_time` is the exposition's `process_start_time_seconds`.
    pub fn from_snapshot(
        ts: f64,
        endpoint: &str,
        base_url: &str,
        snap: &VllmSnapshot,
        start_time: Option<f64>,
    ) -> Vec<Sample> {
        let cache = snap.cache_config.as_ref();
        let base = Sample {
            ts,
            endpoint: endpoint.into(),
            base_url: base_url.into(),
            up: true,
            start_time,
            detail: Some(Box::new(SampleDetail {
                kv_cache_memory_bytes: cache.and_then(|c| c.kv_cache_memory_bytes),
                num_gpu_blocks: cache.and_then(|c| c.num_gpu_blocks),
                block_size: cache.and_then(|c| c.block_size),
                ..SampleDetail::default()
            })),
            ..Sample::default()
        };
        if snap.models.is_empty() {
            return vec![base];
        }
        snap.models
            .values()
            .map(|m| {
                let hist = |h: &Option<Histogram>| h.as_ref().and_then(HistData::from_histogram);
                let by_reason = m.request_success_by_reason.clone().unwrap_or_default();
                let failed = m.request_success_by_reason.as_ref().map(|r| {
                    r.iter()
                        .filter(|(k, _)| FAILED_REASONS.contains(&k.as_str()))
                        .map(|(_, v)| v)
                        .sum()
                });
                let mut detail = base.detail.clone().unwrap_or_default();
                detail.by_reason = by_reason;
                detail.e2e = hist(&m.e2e_request_latency_seconds);
                detail.ttft = hist(&m.time_to_first_token_seconds);
                detail.itl = hist(&m.inter_token_latency_seconds);
                detail.queue = hist(&m.request_queue_time_seconds);
                Sample {
                    model: m.model_name.clone(),
                    prompt_tokens: m.prompt_tokens_total,
                    generation_tokens: m.generation_tokens_total,
                    requests_finished: m.request_success_total,
                    requests_failed: failed,
                    preemptions: m.num_preemptions_total,
                    running: m.num_requests_running,
                    waiting: m.num_requests_waiting,
                    kv_cache_usage: m.kv_cache_usage,
                    e2e_count: detail.e2e.as_ref().map(|h| h.count),
                    e2e_sum: detail.e2e.as_ref().and_then(|h| h.sum),
                    ttft_count: detail.ttft.as_ref().map(|h| h.count),
                    itl_count: detail.itl.as_ref().map(|h| h.count),
                    queue_count: detail.queue.as_ref().map(|h| h.count),
                    detail: Some(detail),
                    ..base.clone()
                }
            })
            .collect()
    }

    /// The sample's histograms by the short names the window uses.
    pub fn hist(&self, which: HistKind) -> Option<Histogram> {
        let d = self.detail.as_ref()?;
        let h = match which {
            HistKind::E2e => &d.e2e,
            HistKind::Ttft => &d.ttft,
            HistKind::Itl => &d.itl,
            HistKind::Queue => &d.queue,
        };
        h.as_ref().map(HistData::to_histogram)
    }
}

/// The four latency histograms a sample keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistKind {
    /// `vllm:e2e_request_latency_seconds`.
    E2e,
    /// `vllm:time_to_first_token_seconds`.
    Ttft,
    /// `vllm:inter_token_latency_seconds`.
    Itl,
    /// `vllm:request_queue_time_seconds`.
    Queue,
}

impl HistKind {
    pub const ALL: [HistKind; 4] = [
        HistKind::E2e,
        HistKind::Ttft,
        HistKind::Itl,
        HistKind::Queue,
    ];
}
