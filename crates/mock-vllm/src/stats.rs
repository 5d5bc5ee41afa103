//! Live counters and histograms fed by the requests actually served; `/metrics` renders them.

use std::collections::BTreeMap;

/// A Prometheus histogram with fixed upper bounds (`+Inf` implicit).
#[derive(Debug, Clone)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    /// Non-cumulative counts, one per bound plus one for +Inf.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: Vec<f64>) -> Histogram {
        let n = bounds.len();
        Histogram {
            bounds,
            counts: vec![0; n + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let idx = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[idx] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Cumulative count for each bound, then +Inf.
    pub fn cumulative(&self) -> Vec<u64> {
        let mut acc = 0;
        self.counts
            .iter()
            .map(|c| {
                acc += c;
                acc
            })
            .collect()
    }
}

/// vLLM's `build_1_2_5_buckets(max_value)`: 1, 2, 5, 10, 20, 50, ... up to max_value.
pub fn buckets_1_2_5(max_value: u64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut exp = 1u64;
    loop {
        for m in [1u64, 2, 5] {
            let v = m * exp;
            if v > max_value {
                return out;
            }
            out.push(v as f64);
        }
        exp *= 10;
    }
}

pub const TIME_BUCKETS_LONG: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
pub const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
pub const ITERATION_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];
pub const N_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0];
pub const PREEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0];
pub const SLEEP_OP_BUCKETS: &[f64] = &[0.01, 0.1, 1.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
pub const HTTP_HIGHR_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0,
    7.5, 10.0, 30.0, 60.0,
];
pub const HTTP_BUCKETS: &[f64] = &[0.1, 0.5, 1.0];

/// Why a request finished (the `finished_reason` label values, in the capture's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    Abort,
    Error,
    Repetition,
}

impl FinishReason {
    pub const ALL: [FinishReason; 5] = [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::Abort,
        FinishReason::Error,
        FinishReason::Repetition,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
            FinishReason::Error => "error",
            FinishReason::Repetition => "repetition",
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

/// Engine-side statistics (the `vllm:` families).
#[derive(Debug, Clone)]
pub struct EngineStats {
    pub prompt_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub generation_tokens: u64,
    pub prefix_queries: u64,
    pub prefix_hits: u64,
    pub success: [u64; 5],
    pub histograms: BTreeMap<&'static str, Histogram>,
    pub sleep_ops: BTreeMap<&'static str, Histogram>,
    pub sleep_in_flight: BTreeMap<&'static str, u64>,
    /// `vllm:lora_requests_info` label sets seen: (max_lora, running, waiting) -> last time (unix s).
    pub lora_info: Vec<((String, String), f64)>,
}

impl EngineStats {
    pub fn new(max_model_len: u64) -> EngineStats {
        let tok = buckets_1_2_5(max_model_len);
        let mut h = BTreeMap::new();
        for name in [
            "vllm:request_prompt_tokens",
            "vllm:request_generation_tokens",
            "vllm:request_max_num_generation_tokens",
            "vllm:request_params_max_tokens",
            "vllm:request_prefill_kv_computed_tokens",
        ] {
            h.insert(name, Histogram::new(tok.clone()));
        }
        h.insert(
            "vllm:iteration_tokens_total",
            Histogram::new(ITERATION_BUCKETS.to_vec()),
        );
        h.insert("vllm:request_params_n", Histogram::new(N_BUCKETS.to_vec()));
        h.insert(
            "vllm:time_to_first_token_seconds",
            Histogram::new(TTFT_BUCKETS.to_vec()),
        );
        h.insert(
            "vllm:inter_token_latency_seconds",
            Histogram::new(ITL_BUCKETS.to_vec()),
        );
        h.insert(
            "vllm:request_time_per_output_token_seconds",
            Histogram::new(ITL_BUCKETS.to_vec()),
        );
        for name in [
            "vllm:e2e_request_latency_seconds",
            "vllm:request_queue_time_seconds",
            "vllm:request_inference_time_seconds",
            "vllm:request_prefill_time_seconds",
            "vllm:request_decode_time_seconds",
        ] {
            h.insert(name, Histogram::new(TIME_BUCKETS_LONG.to_vec()));
        }
        h.insert(
            "vllm:request_num_preemptions",
            Histogram::new(PREEMPT_BUCKETS.to_vec()),
        );
        let mut sleep_ops = BTreeMap::new();
        sleep_ops.insert("sleep", Histogram::new(SLEEP_OP_BUCKETS.to_vec()));
        sleep_ops.insert("wake", Histogram::new(SLEEP_OP_BUCKETS.to_vec()));
        let mut sleep_in_flight = BTreeMap::new();
        sleep_in_flight.insert("sleep", 0);
        sleep_in_flight.insert("wake", 0);
        EngineStats {
            prompt_tokens: 0,
            cached_prompt_tokens: 0,
            generation_tokens: 0,
            prefix_queries: 0,
            prefix_hits: 0,
            success: [0; 5],
            histograms: h,
            sleep_ops,
            sleep_in_flight,
            lora_info: Vec::new(),
        }
    }

    pub fn observe(&mut self, name: &'static str, v: f64) {
        if let Some(h) = self.histograms.get_mut(name) {
            h.observe(v);
        }
    }

    pub fn finished(&mut self, reason: FinishReason) {
        self.success[reason.idx()] += 1;
    }

    pub fn success_of(&self, reason: FinishReason) -> u64 {
        self.success[reason.idx()]
    }

    pub fn note_lora(&mut self, running: String, waiting: String, now: f64) {
        let key = (running, waiting);
        if let Some(slot) = self.lora_info.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = now;
        } else {
            self.lora_info.push((key, now));
        }
    }
}

/// Per-handler HTTP statistics (prometheus-fastapi-instrumentator's families).
#[derive(Debug, Clone, Default)]
pub struct HttpStats {
    /// (handler, method, status class) -> (count, first seen).
    pub requests: Vec<((String, String, String), u64, f64)>,
    /// handler -> (count, request bytes, response bytes, first seen).
    pub sizes: Vec<(String, u64, f64, f64, f64)>,
    /// (handler, method) -> histogram, first seen.
    pub durations: Vec<((String, String), Histogram, f64)>,
    pub highr: Option<Histogram>,
}

impl HttpStats {
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        handler: &str,
        method: &str,
        status: u16,
        req_bytes: f64,
        resp_bytes: f64,
        secs: f64,
        now: f64,
    ) {
        let class = format!("{}xx", status / 100);
        let key = (handler.to_string(), method.to_string(), class);
        match self.requests.iter_mut().find(|(k, _, _)| *k == key) {
            Some(slot) => slot.1 += 1,
            None => self.requests.push((key, 1, now)),
        }
        match self.sizes.iter_mut().find(|s| s.0 == handler) {
            Some(slot) => {
                slot.1 += 1;
                slot.2 += req_bytes;
                slot.3 += resp_bytes;
            }
            None => self
                .sizes
                .push((handler.to_string(), 1, req_bytes, resp_bytes, now)),
        }
        let dkey = (handler.to_string(), method.to_string());
        match self.durations.iter_mut().find(|(k, _, _)| *k == dkey) {
            Some(slot) => slot.1.observe(secs),
            None => {
                let mut h = Histogram::new(HTTP_BUCKETS.to_vec());
                h.observe(secs);
                self.durations.push((dkey, h, now));
            }
        }
        self.highr
            .get_or_insert_with(|| Histogram::new(HTTP_HIGHR_BUCKETS.to_vec()))
            .observe(secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_two_five() {
        assert_eq!(
            buckets_1_2_5(512),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
        );
    }
}
