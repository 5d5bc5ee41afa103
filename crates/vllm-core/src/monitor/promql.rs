//! `source = "prometheus"`: the monitor's figures read from an existing Prometheus server
//! through its HTTP API (PromQL `rate`, `increase`, `histogram_quantile`,
//! `avg_over_time`), for fleets that already scrape their vLLM servers.
//!
//! [`PromSource`] runs queries; [`fleet`] computes, over one window, the same figures the
//! sampled history gives (`get-metrics`), per served model (`model_name`, added over the
//! replicas of a model) and for the fleet. Prometheus extrapolates `rate` and `increase`
//! to the window's edges, so counts over a window are estimates (not whole numbers),
//! rounded where get-metrics reports counts. Figures a query leaves empty (no series, or
//! fewer than two samples in the window) are `None`.
//!
//! Targets come from `/api/v1/targets`: every target of a job that exported vLLM metrics
//! in the last hour, with Prometheus's own health of its last scrape.

use super::figures::{Figures, LatencyFigures};
use crate::config::HttpConfig;
use crate::error::{Error, Result};
use crate::vllm::{EndpointSpec, VllmClient};
use futures_util::future::join_all;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Labels of one series.
pub type Labels = BTreeMap<String, String>;

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSample {
    pub labels: Labels,
    pub value: f64,
}

/// One series of a range query: `(unix seconds, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Labels,
    pub points: Vec<(f64, f64)>,
}

/// A Prometheus scrape target.
#[derive(Debug, Clone, PartialEq)]
pub struct PromTarget {
    pub job: String,
    pub instance: String,
    pub scrape_url: String,
    /// Prometheus's `health`: `up`, `down` or `unknown`.
    pub health: String,
    /// Unix seconds of the last scrape; `None` before the first.
    pub last_scrape: Option<f64>,
    pub last_error: Option<String>,
    /// The job's scrape interval, seconds (`scrapeInterval`, Prometheus 2.35 and later).
    pub scrape_interval: Option<f64>,
}

/// A Prometheus server's query API.
#[derive(Debug, Clone)]
pub struct PromSource {
    client: VllmClient,
}

impl PromSource {
    /// A client of the Prometheus at `base_url`, with the config's HTTP timeouts.
    pub fn new(base_url: &str, http: &HttpConfig) -> Result<PromSource> {
        let spec = EndpointSpec::new("prometheus", base_url, http);
        Ok(PromSource {
            client: VllmClient::new(spec)?,
        })
    }

    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    async fn api(&self, path: &str, params: &[(&str, String)]) -> Result<Value> {
        let mut p = String::from(path);
        for (i, (k, v)) in params.iter().enumerate() {
            p.push(if i == 0 { '?' } else { '&' });
            p.push_str(k);
            p.push('=');
            p.push_str(&form_encode(v));
        }
        let v = self.client.get_value(&p).await?;
        if v["status"] != "success" {
            return Err(Error::BackendError {
                url: format!("{}{path}", self.base_url()),
                status: 200,
                message: format!(
                    "Prometheus answered {}: {}",
                    v["errorType"].as_str().unwrap_or("an error"),
                    v["error"].as_str().unwrap_or("no message")
                ),
                kind: v["errorType"].as_str().map(str::to_string),
            });
        }
        Ok(v["data"].clone())
    }

    /// An instant query at `at` (unix seconds).
    pub async fn query(&self, expr: &str, at: f64) -> Result<Vec<VectorSample>> {
        let data = self
            .api(
                "/api/v1/query",
                &[("query", expr.to_string()), ("time", format!("{at:.3}"))],
            )
            .await?;
        parse_vector(&data).ok_or_else(|| self.malformed("/api/v1/query", &data))
    }

    /// A range query over `[start, end]` every `step` seconds.
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<RangeSeries>> {
        let data = self
            .api(
                "/api/v1/query_range",
                &[
                    ("query", expr.to_string()),
                    ("start", format!("{start:.3}")),
                    ("end", format!("{end:.3}")),
                    ("step", format!("{step:.3}")),
                ],
            )
            .await?;
        parse_matrix(&data).ok_or_else(|| self.malformed("/api/v1/query_range", &data))
    }

    /// Every active scrape target.
    pub async fn targets(&self) -> Result<Vec<PromTarget>> {
        let data = self
            .api("/api/v1/targets", &[("state", "active".into())])
            .await?;
        let list = data["activeTargets"]
            .as_array()
            .ok_or_else(|| self.malformed("/api/v1/targets", &data))?;
        Ok(list
            .iter()
            .map(|t| PromTarget {
                job: t["labels"]["job"].as_str().unwrap_or_default().into(),
                instance: t["labels"]["instance"].as_str().unwrap_or_default().into(),
                scrape_url: t["scrapeUrl"].as_str().unwrap_or_default().into(),
                health: t["health"].as_str().unwrap_or("unknown").into(),
                last_scrape: t["lastScrape"]
                    .as_str()
                    .and_then(crate::time::parse_rfc3339)
                    .filter(|s| *s > 0)
                    .map(|s| s as f64),
                last_error: t["lastError"]
                    .as_str()
                    .filter(|e| !e.is_empty())
                    .map(str::to_string),
                scrape_interval: t["scrapeInterval"].as_str().and_then(|d| {
                    super::parse_duration("scrapeInterval", &d.into(), f64::MAX).ok()
                }),
            })
            .collect())
    }

    fn malformed(&self, path: &str, data: &Value) -> Error {
        Error::BackendError {
            url: format!("{}{path}", self.base_url()),
            status: 200,
            message: format!(
                "Prometheus answered data of an unexpected shape: {}",
                data.to_string().chars().take(200).collect::<String>()
            ),
            kind: Some("MalformedResponse".into()),
        }
    }
}

/// `application/x-www-form-urlencoded` for a query parameter.
pub fn form_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn value_of(v: &Value) -> Option<f64> {
    // [ts, "value"]; Prometheus writes NaN and ±Inf as strings too.
    v.get(1)?.as_str()?.parse().ok()
}

fn labels_of(v: &Value) -> Labels {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The `data` of an instant query whose `resultType` is `vector` (or `scalar`).
pub fn parse_vector(data: &Value) -> Option<Vec<VectorSample>> {
    match data["resultType"].as_str()? {
        "vector" => data["result"]
            .as_array()?
            .iter()
            .map(|s| {
                Some(VectorSample {
                    labels: labels_of(&s["metric"]),
                    value: value_of(&s["value"])?,
                })
            })
            .collect(),
        "scalar" => Some(vec![VectorSample {
            labels: Labels::new(),
            value: value_of(&data["result"])?,
        }]),
        _ => None,
    }
}

/// The `data` of a range query (`resultType` `matrix`).
pub fn parse_matrix(data: &Value) -> Option<Vec<RangeSeries>> {
    if data["resultType"].as_str()? != "matrix" {
        return None;
    }
    data["result"]
        .as_array()?
        .iter()
        .map(|s| {
            let points = s["values"]
                .as_array()?
                .iter()
                .filter_map(|p| Some((p.get(0)?.as_f64()?, value_of(p)?)))
                .collect();
            Some(RangeSeries {
                labels: labels_of(&s["metric"]),
                points,
            })
        })
        .collect()
}

/// A PromQL range duration for `seconds` (whole milliseconds).
pub fn range(seconds: f64) -> String {
    let ms = (seconds * 1000.0).round().max(1.0) as u64;
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The fleet over one window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fleet {
    pub total: Figures,
    /// By `model_name`.
    pub models: BTreeMap<String, Figures>,
    /// Targets of the jobs that export vLLM metrics.
    pub targets: Vec<PromTarget>,
}

/// vLLM's histograms: (get-metrics name, metric name).
pub const HISTOGRAMS: [(&str, &str); 4] = [
    ("e2e", "vllm:e2e_request_latency_seconds"),
    ("ttft", "vllm:time_to_first_token_seconds"),
    ("itl", "vllm:inter_token_latency_seconds"),
    ("queue", "vllm:request_queue_time_seconds"),
];

/// The quantiles get-metrics reports.
const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

const FAILED: &str = r#"finished_reason=~"abort|error""#;

/// What one query of [`fleet`] fills in.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Gen,
    Prompt,
    Rps,
    FailedRps,
    Reasons,
    Preemptions,
    Running,
    Waiting,
    Kv,
    /// A histogram of [`HISTOGRAMS`] and a quantile of [`QUANTILES`], by index.
    Quantile(usize, usize),
    Avg(usize),
    Count(usize),
    Samples,
    Covered,
    Restarts,
    Instances,
}

fn lat(f: &mut Figures, h: usize) -> &mut LatencyFigures {
    match h {
        0 => &mut f.e2e,
        1 => &mut f.ttft,
        2 => &mut f.itl,
        _ => &mut f.queue,
    }
}

/// The queries of one window: per model (`by (model_name)`) and, where a fleet figure
/// is not the sum of the models' (quantiles, averages), for the fleet.
fn queries(w: &str, step: &str) -> Vec<(Slot, bool, String)> {
    let per = |e: String| (e, true);
    let ts = "timestamp(vllm:num_requests_running)";
    let mut q: Vec<(Slot, (String, bool))> = vec![
        (
            Slot::Gen,
            per(format!(
                "sum by (model_name) (rate(vllm:generation_tokens_total[{w}]))"
            )),
        ),
        (
            Slot::Prompt,
            per(format!(
                "sum by (model_name) (rate(vllm:prompt_tokens_total[{w}]))"
            )),
        ),
        (
            Slot::Rps,
            per(format!(
                "sum by (model_name) (rate(vllm:request_success_total[{w}]))"
            )),
        ),
        (
            Slot::FailedRps,
            per(format!(
                "sum by (model_name) (rate(vllm:request_success_total{{{FAILED}}}[{w}]))"
            )),
        ),
        (
            Slot::Reasons,
            per(format!(
                "sum by (model_name, finished_reason) (increase(vllm:request_success_total[{w}]))"
            )),
        ),
        (
            Slot::Preemptions,
            per(format!(
                "sum by (model_name) (increase(vllm:num_preemptions_total[{w}]))"
            )),
        ),
        (
            Slot::Running,
            per(format!(
                "avg by (model_name) (avg_over_time(vllm:num_requests_running[{w}]))"
            )),
        ),
        (
            Slot::Waiting,
            per(format!(
                "sum by (model_name) (avg_over_time(vllm:num_requests_waiting[{w}]))"
            )),
        ),
        (
            Slot::Kv,
            per(format!(
                "avg by (model_name) (avg_over_time(vllm:kv_cache_usage_perc[{w}]))"
            )),
        ),
        (
            Slot::Samples,
            per(format!(
                "sum by (model_name) (count_over_time(vllm:num_requests_running[{w}]))"
            )),
        ),
        (
            Slot::Covered,
            per(format!(
                "max by (model_name) (max_over_time({ts}[{w}:{step}]) - min_over_time({ts}[{w}:{step}]))"
            )),
        ),
        (
            Slot::Restarts,
            per(format!(
                "max by (model_name) (resets(vllm:prompt_tokens_total[{w}]))"
            )),
        ),
        (
            Slot::Instances,
            per(format!(
                "count by (model_name, instance) (last_over_time(vllm:num_requests_running[{w}]))"
            )),
        ),
        (
            Slot::Samples,
            (
                format!("sum(count_over_time(vllm:num_requests_running[{w}]))"),
                false,
            ),
        ),
        (
            Slot::Covered,
            (
                format!("max(max_over_time({ts}[{w}:{step}]) - min_over_time({ts}[{w}:{step}]))"),
                false,
            ),
        ),
    ];
    q.extend(histogram_queries(w));
    q.into_iter().map(|(s, (e, by))| (s, by, e)).collect()
}

/// The histogram families' queries, per model and for the fleet: each quantile of
/// [`QUANTILES`], the mean, and the count over the window.
fn histogram_queries(w: &str) -> Vec<(Slot, (String, bool))> {
    let mut q = Vec::new();
    for (i, (_, h)) in HISTOGRAMS.iter().enumerate() {
        for by in [true, false] {
            let (g, gl) = if by {
                ("by (model_name)", "by (model_name, le)")
            } else {
                ("", "by (le)")
            };
            for (qi, qv) in QUANTILES.iter().enumerate() {
                q.push((
                    Slot::Quantile(i, qi),
                    (
                        format!("histogram_quantile({qv}, sum {gl} (rate({h}_bucket[{w}])))"),
                        by,
                    ),
                ));
            }
            q.push((
                Slot::Avg(i),
                (
                    format!("sum {g} (rate({h}_sum[{w}])) / sum {g} (rate({h}_count[{w}]))"),
                    by,
                ),
            ));
            q.push((
                Slot::Count(i),
                (format!("sum {g} (increase({h}_count[{w}]))"), by),
            ));
        }
    }
    q
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn put(f: &mut Figures, slot: Slot, v: f64, labels: &Labels) {
    let v = match finite(v) {
        Some(v) => v,
        None => return,
    };
    let add = |o: &mut Option<f64>| *o = Some(o.unwrap_or(0.0) + v);
    match slot {
        Slot::Gen => add(&mut f.generation_tokens_per_second),
        Slot::Prompt => add(&mut f.prompt_tokens_per_second),
        Slot::Rps => add(&mut f.requests_per_second),
        Slot::FailedRps => add(&mut f.failed_requests_per_second),
        Slot::Reasons => {
            let r = labels.get("finished_reason").cloned().unwrap_or_default();
            *f.by_reason.entry(r.clone()).or_default() += v;
            add(&mut f.requests_finished);
            if r == "abort" || r == "error" {
                add(&mut f.requests_failed);
            } else if f.requests_failed.is_none() {
                f.requests_failed = Some(0.0);
            }
        }
        Slot::Preemptions => add(&mut f.preemptions),
        Slot::Running => f.running_mean = Some(v),
        Slot::Waiting => add(&mut f.waiting_mean),
        Slot::Kv => f.kv_cache_usage = Some(v),
        Slot::Quantile(h, q) => {
            let l = lat(f, h);
            *[&mut l.p50, &mut l.p95, &mut l.p99][q] = Some(v);
        }
        Slot::Avg(h) => lat(f, h).avg = Some(v),
        Slot::Count(h) => lat(f, h).count = Some(v),
        Slot::Samples => add(&mut f.samples),
        Slot::Covered => f.covered_seconds = Some(v),
        Slot::Restarts => f.restarts = Some(f.restarts.unwrap_or(0.0).max(v)),
        Slot::Instances => {
            if let Some(i) = labels.get("instance") {
                f.instances.insert(i.clone());
            }
        }
    }
}

/// Everything get-metrics needs over `[now - window, now]`, in concurrent queries.
pub async fn fleet(src: &PromSource, window_seconds: f64, now: f64) -> Result<Fleet> {
    let w = range(window_seconds);
    let step = range((window_seconds / 120.0).max(1.0));
    let qs = queries(&w, &step);
    let answers = join_all(qs.iter().map(|(_, _, e)| src.query(e, now))).await;
    let mut fleet = Fleet::default();
    for ((slot, by_model, _), answer) in qs.iter().zip(answers) {
        for s in answer? {
            if *by_model {
                let model = s.labels.get("model_name").cloned().unwrap_or_default();
                let f = fleet.models.entry(model).or_default();
                put(f, *slot, s.value, &s.labels);
                // Fleet figures that are sums of the models'.
                if !matches!(
                    slot,
                    Slot::Quantile(..)
                        | Slot::Avg(_)
                        | Slot::Count(_)
                        | Slot::Running
                        | Slot::Kv
                        | Slot::Samples
                        | Slot::Covered
                ) {
                    put(&mut fleet.total, *slot, s.value, &s.labels);
                }
            } else {
                put(&mut fleet.total, *slot, s.value, &s.labels);
            }
        }
    }
    // Means over models, as the sampled history computes them: the batch size over the
    // models that ran requests, the KV-cache usage over every model.
    let running: Vec<f64> = fleet
        .models
        .values()
        .filter_map(|m| m.running_mean)
        .collect();
    if !running.is_empty() {
        let busy: Vec<f64> = running.iter().copied().filter(|v| *v > 0.0).collect();
        fleet.total.running_mean = Some(if busy.is_empty() {
            0.0
        } else {
            busy.iter().sum::<f64>() / busy.len() as f64
        });
    }
    let kv: Vec<f64> = fleet
        .models
        .values()
        .filter_map(|m| m.kv_cache_usage)
        .collect();
    if !kv.is_empty() {
        fleet.total.kv_cache_usage = Some(kv.iter().sum::<f64>() / kv.len() as f64);
    }
    let (jobs, targets) = tokio::join!(
        src.query(
            "group by (job) (last_over_time(vllm:num_requests_running[1h]))",
            now
        ),
        src.targets(),
    );
    // A subquery's first step can look back before the window.
    for f in std::iter::once(&mut fleet.total).chain(fleet.models.values_mut()) {
        f.covered_seconds = f.covered_seconds.map(|c| c.min(window_seconds));
    }
    let jobs: BTreeSet<String> = jobs?
        .into_iter()
        .filter_map(|s| s.labels.get("job").cloned())
        .collect();
    fleet.targets = targets?
        .into_iter()
        .filter(|t| jobs.contains(&t.job))
        .collect();
    Ok(fleet)
}

/// The history series of get-metrics that Prometheus answers (the GPU ones come from
/// the monitor's own NVML samples), as PromQL over a rate range `r`.
pub fn history_queries(r: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "tokens_per_second",
            format!("sum(rate(vllm:generation_tokens_total[{r}]))"),
        ),
        (
            "prompt_tokens_per_second",
            format!("sum(rate(vllm:prompt_tokens_total[{r}]))"),
        ),
        (
            "requests_per_second",
            format!("sum(rate(vllm:request_success_total[{r}]))"),
        ),
        (
            "num_requests_running",
            "sum(vllm:num_requests_running)".into(),
        ),
        (
            "latency_avg_ms",
            format!(
                "1000 * sum(rate(vllm:e2e_request_latency_seconds_sum[{r}])) / sum(rate(vllm:e2e_request_latency_seconds_count[{r}]))"
            ),
        ),
        (
            "failed_requests_per_second",
            format!("sum(rate(vllm:request_success_total{{{FAILED}}}[{r}]))"),
        ),
        (
            "num_requests_waiting",
            "sum(vllm:num_requests_waiting)".into(),
        ),
        ("kv_cache_usage", "avg(vllm:kv_cache_usage_perc)".into()),
    ]
}

/// History series over `[since, until]` in at most `max_points` steps.
pub async fn history(
    src: &PromSource,
    since: f64,
    until: f64,
    max_points: usize,
) -> Result<BTreeMap<String, Vec<(f64, f64)>>> {
    let step = ((until - since) / max_points.max(1) as f64).max(1.0);
    // A rate range of at least a minute, so a 15 s scrape interval still has samples.
    let r = range(step.max(60.0));
    let qs = history_queries(&r);
    let answers = join_all(
        qs.iter()
            .map(|(_, e)| src.query_range(e, since + step, until, step)),
    )
    .await;
    let mut out = BTreeMap::new();
    for ((name, _), a) in qs.iter().zip(answers) {
        let pts: Vec<(f64, f64)> = a?
            .into_iter()
            .next()
            .map(|s| {
                s.points
                    .into_iter()
                    .filter(|(_, v)| v.is_finite())
                    .collect()
            })
            .unwrap_or_default();
        out.insert(name.to_string(), pts);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vectors_and_matrices_are_read() {
        let v = json!({"resultType": "vector", "result": [
            {"metric": {"model_name": "a"}, "value": [1700000000.5, "2.5"]},
            {"metric": {}, "value": [1700000000.5, "NaN"]}
        ]});
        let s = parse_vector(&v).unwrap();
        assert_eq!(s[0].labels["model_name"], "a");
        assert_eq!(s[0].value, 2.5);
        assert!(s[1].value.is_nan());
        let m = json!({"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1.0, "1"], [2.0, "3"]]}
        ]});
        assert_eq!(
            parse_matrix(&m).unwrap()[0].points,
            vec![(1.0, 1.0), (2.0, 3.0)]
        );
        assert!(parse_matrix(&v).is_none());
    }

    #[test]
    fn ranges_and_encoding() {
        assert_eq!(range(60.0), "60s");
        assert_eq!(range(1.5), "1500ms");
        assert_eq!(
            form_encode("rate(x[1m]) / 2"),
            "rate%28x%5B1m%5D%29%20%2F%202"
        );
    }

    #[test]
    fn fleet_sums_models_and_counts_failures() {
        let mut f = Figures::default();
        let l = |r: &str| Labels::from([("finished_reason".to_string(), r.to_string())]);
        put(&mut f, Slot::Reasons, 4.0, &l("stop"));
        assert_eq!(f.requests_failed, Some(0.0));
        put(&mut f, Slot::Reasons, 1.0, &l("abort"));
        put(&mut f, Slot::Gen, f64::NAN, &Labels::new());
        assert_eq!(f.requests_finished, Some(5.0));
        assert_eq!(f.requests_failed, Some(1.0));
        assert_eq!(f.generation_tokens_per_second, None);
    }
}
