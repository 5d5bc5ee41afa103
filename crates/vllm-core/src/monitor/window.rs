//! Figures over a window of samples: increases and rates of counters, latency quantiles
//! from histogram increases, gauge means, and time series for charts.
//!
//! # Runs and resets
//! The answering samples of one series (endpoint, model) in time order are cut into runs:
//! a new run starts where the server restarted, seen as a changed
//! `process_start_time_seconds` or any counter (or histogram count) lower than before.
//! Over a run, counters and histograms only grow, so what happened in a run is its last
//! sample minus its first; at a restart, what the new process counted is its value itself
//! (as Prometheus' `increase()` treats resets). The increase over the window is therefore:
//! (last − first) of the first run, plus the last sample of every later run. That needs
//! the histogram buckets of two samples per run only ([`detail_rows`]), which is what
//! makes a window of thousands of samples cheap to compute from the store.
//!
//! Nothing is extrapolated: rates divide the increase by the time between the first and
//! the last answering sample of the series, so a window with fewer than two samples of
//! a series has no rate for it (`None`), never an invented figure.

use super::figures::{Figures, LatencyFigures};
use super::history::GpuRow;
use super::sample::{HistKind, Sample};
use crate::prom::{Histogram, gauge_mean};
use std::collections::BTreeMap;

/// The counters a sample carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    PromptTokens,
    GenerationTokens,
    RequestsFinished,
    RequestsFailed,
    Preemptions,
}

impl Counter {
    pub const ALL: [Counter; 5] = [
        Counter::PromptTokens,
        Counter::GenerationTokens,
        Counter::RequestsFinished,
        Counter::RequestsFailed,
        Counter::Preemptions,
    ];

    /// The counter's value in `s`.
    pub fn of(self, s: &Sample) -> Option<f64> {
        match self {
            Counter::PromptTokens => s.prompt_tokens,
            Counter::GenerationTokens => s.generation_tokens,
            Counter::RequestsFinished => s.requests_finished,
            Counter::RequestsFailed => s.requests_failed,
            Counter::Preemptions => s.preemptions,
        }
    }
}

/// Whether `b`, the answering sample after `a` in one series, comes from a restarted
/// server: another start time, or a counter that went down.
pub fn is_reset(a: &Sample, b: &Sample) -> bool {
    if let (Some(x), Some(y)) = (a.start_time, b.start_time)
        && (x - y).abs() > 0.01
    {
        return true;
    }
    let down = |x: Option<f64>, y: Option<f64>| matches!((x, y), (Some(x), Some(y)) if y < x);
    Counter::ALL.iter().any(|c| down(c.of(a), c.of(b)))
        || down(a.e2e_count, b.e2e_count)
        || down(a.ttft_count, b.ttft_count)
        || down(a.itl_count, b.itl_count)
        || down(a.queue_count, b.queue_count)
}

/// The runs of answering samples (index ranges into `up`, inclusive start, exclusive end).
fn runs<S: std::borrow::Borrow<Sample>>(up: &[S]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..up.len() {
        if is_reset(up[i - 1].borrow(), up[i].borrow()) {
            out.push((start, i));
            start = i;
        }
    }
    if !up.is_empty() {
        out.push((start, up.len()));
    }
    out
}

/// Indices into `rows` (one series in time order, failed samples included) of the rows
/// whose detail blob the window needs: the first and last answering sample of each run.
pub fn detail_rows(rows: &[&Sample]) -> Vec<usize> {
    let up: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].up).collect();
    let samples: Vec<&Sample> = up.iter().map(|&i| rows[i]).collect();
    let mut out = Vec::new();
    for (s, e) in runs(&samples) {
        out.push(up[s]);
        if e - 1 != s {
            out.push(up[e - 1]);
        }
    }
    out
}

/// What one series did over the window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesWindow {
    pub endpoint: String,
    pub base_url: String,
    pub model: String,
    /// Answering samples in the window.
    pub samples: usize,
    /// Failed scrapes in the window.
    pub down_samples: usize,
    /// Unix seconds of the first and last answering sample.
    pub first_ts: Option<f64>,
    pub last_ts: Option<f64>,
    /// Restarts seen inside the window.
    pub resets: usize,
    pub prompt_tokens: Option<f64>,
    pub generation_tokens: Option<f64>,
    pub requests_finished: Option<f64>,
    pub requests_failed: Option<f64>,
    pub preemptions: Option<f64>,
    /// Finished requests by `finished_reason` over the window.
    pub by_reason: BTreeMap<String, f64>,
    pub running_mean: Option<f64>,
    pub waiting_mean: Option<f64>,
    pub kv_cache_usage_mean: Option<f64>,
    pub kv_cache_usage_last: Option<f64>,
    pub e2e: Option<Histogram>,
    pub ttft: Option<Histogram>,
    pub itl: Option<Histogram>,
    pub queue: Option<Histogram>,
    /// From the newest answering sample with a cache configuration.
    pub kv_cache_memory_bytes: Option<u64>,
}

impl SeriesWindow {
    /// Computes a series' figures from its samples in time order (one endpoint and
    /// model). Only the detail of [`detail_rows`] is used; other rows may lack it.
    pub fn compute(rows: &[Sample]) -> SeriesWindow {
        let Some(first) = rows.first() else {
            return SeriesWindow::default();
        };
        let up: Vec<&Sample> = rows.iter().filter(|s| s.up).collect();
        let runs = runs(&up);
        let mut w = SeriesWindow {
            endpoint: first.endpoint.clone(),
            base_url: first.base_url.clone(),
            model: first.model.clone(),
            samples: up.len(),
            down_samples: rows.len() - up.len(),
            first_ts: up.first().map(|s| s.ts),
            last_ts: up.last().map(|s| s.ts),
            resets: runs.len().saturating_sub(1),
            ..SeriesWindow::default()
        };
        if up.len() >= 2 {
            let inc = |c: Counter| increase(&up, &runs, |s| c.of(s));
            w.prompt_tokens = inc(Counter::PromptTokens);
            w.generation_tokens = inc(Counter::GenerationTokens);
            w.requests_finished = inc(Counter::RequestsFinished);
            w.requests_failed = inc(Counter::RequestsFailed);
            w.preemptions = inc(Counter::Preemptions);
            w.by_reason = reasons_increase(&up, &runs);
            w.e2e = hist_increase(&up, &runs, HistKind::E2e);
            w.ttft = hist_increase(&up, &runs, HistKind::Ttft);
            w.itl = hist_increase(&up, &runs, HistKind::Itl);
            w.queue = hist_increase(&up, &runs, HistKind::Queue);
        }
        let points = |f: fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
            up.iter().filter_map(|s| f(s).map(|v| (s.ts, v))).collect()
        };
        w.running_mean = gauge_mean(&points(|s| s.running));
        w.waiting_mean = gauge_mean(&points(|s| s.waiting));
        w.kv_cache_usage_mean = gauge_mean(&points(|s| s.kv_cache_usage));
        w.kv_cache_usage_last = up.iter().rev().find_map(|s| s.kv_cache_usage);
        w.kv_cache_memory_bytes = up
            .iter()
            .rev()
            .find_map(|s| s.detail.as_ref().and_then(|d| d.kv_cache_memory_bytes));
        w
    }

    /// Seconds between the first and the last answering sample; `None` with fewer than two.
    pub fn span(&self) -> Option<f64> {
        match (self.first_ts, self.last_ts) {
            (Some(a), Some(b)) if self.samples >= 2 && b > a => Some(b - a),
            _ => None,
        }
    }

    /// The increase of a counter over the window.
    pub fn increase(&self, c: Counter) -> Option<f64> {
        match c {
            Counter::PromptTokens => self.prompt_tokens,
            Counter::GenerationTokens => self.generation_tokens,
            Counter::RequestsFinished => self.requests_finished,
            Counter::RequestsFailed => self.requests_failed,
            Counter::Preemptions => self.preemptions,
        }
    }

    /// Per second over [`SeriesWindow::span`].
    pub fn rate(&self, c: Counter) -> Option<f64> {
        Some(self.increase(c)? / self.span()?)
    }

    /// The histogram increase of one kind.
    pub fn hist(&self, k: HistKind) -> Option<&Histogram> {
        match k {
            HistKind::E2e => self.e2e.as_ref(),
            HistKind::Ttft => self.ttft.as_ref(),
            HistKind::Itl => self.itl.as_ref(),
            HistKind::Queue => self.queue.as_ref(),
        }
    }
}

/// Sum over runs: the first run's last − first, every later run's last value.
fn increase(
    up: &[&Sample],
    runs: &[(usize, usize)],
    f: impl Fn(&Sample) -> Option<f64>,
) -> Option<f64> {
    let mut total: Option<f64> = None;
    for (i, &(s, e)) in runs.iter().enumerate() {
        // Within a run the counter only grows; a value missing at the edges of the run is
        // looked for inwards.
        let vals: Vec<f64> = up[s..e].iter().filter_map(|x| f(x)).collect();
        let (Some(a), Some(b)) = (vals.first(), vals.last()) else {
            continue;
        };
        let add = if i == 0 { b - a } else { *b };
        *total.get_or_insert(0.0) += add;
    }
    total
}

fn reasons_increase(up: &[&Sample], runs: &[(usize, usize)]) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for (i, &(s, e)) in runs.iter().enumerate() {
        let last = up[e - 1].detail.as_ref().map(|d| &d.by_reason);
        let first = up[s].detail.as_ref().map(|d| &d.by_reason);
        let Some(last) = last else { continue };
        for (reason, v) in last {
            let base = if i == 0 {
                first.and_then(|f| f.get(reason)).copied().unwrap_or(0.0)
            } else {
                0.0
            };
            *out.entry(reason.clone()).or_insert(0.0) += v - base;
        }
    }
    out
}

fn hist_increase(up: &[&Sample], runs: &[(usize, usize)], k: HistKind) -> Option<Histogram> {
    let mut total: Option<Histogram> = None;
    for (i, &(s, e)) in runs.iter().enumerate() {
        let Some(last) = up[e - 1].hist(k) else {
            continue;
        };
        let part = if i == 0 {
            match up[s].hist(k) {
                Some(first) => Histogram::delta(&last, &first),
                None => continue,
            }
        } else {
            last
        };
        match &mut total {
            Some(t) => t.add(&part),
            None => total = Some(part),
        }
    }
    total
}

/// p50, p95, p99 and mean of a latency histogram, in milliseconds; every figure `None`
/// when nothing was observed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Latency {
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub avg_ms: Option<f64>,
    /// Observations in the window.
    pub count: f64,
}

impl Latency {
    /// From a histogram of seconds.
    pub fn of(h: Option<&Histogram>) -> Latency {
        let Some(h) = h.filter(|h| h.count > 0.0) else {
            return Latency::default();
        };
        let ms = |v: f64| (v.is_finite()).then_some(v * 1000.0);
        Latency {
            p50_ms: ms(h.quantile(0.5)),
            p95_ms: ms(h.quantile(0.95)),
            p99_ms: ms(h.quantile(0.99)),
            avg_ms: h.mean().and_then(ms),
            count: h.count,
        }
    }
}

/// Figures of several series together (the whole fleet, or one model).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WindowFigures {
    pub series: Vec<SeriesWindow>,
}

impl WindowFigures {
    /// Computes each series of `rows` (as [`super::history::read_window`] groups them).
    pub fn compute(rows: &[Vec<Sample>]) -> WindowFigures {
        WindowFigures {
            series: rows.iter().map(|r| SeriesWindow::compute(r)).collect(),
        }
    }

    /// Series with a model (failed scrapes of an endpoint have none).
    pub fn models(&self) -> impl Iterator<Item = &SeriesWindow> {
        self.series.iter().filter(|s| !s.model.is_empty())
    }

    /// Seconds the samples cover: the longest span of a series; `None` when no series has
    /// two answering samples.
    pub fn covered_seconds(&self) -> Option<f64> {
        self.series
            .iter()
            .filter_map(SeriesWindow::span)
            .fold(None, |m, s| Some(m.map_or(s, |m: f64| m.max(s))))
    }

    /// Answering samples in all series.
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples).sum()
    }

    /// The sum of the series' increases; `None` when no series has one.
    pub fn total(&self, c: Counter) -> Option<f64> {
        self.sum(|s| s.increase(c))
    }

    /// The sum of the series' rates (each over its own span); `None` when none has one.
    pub fn rate(&self, c: Counter) -> Option<f64> {
        self.sum(|s| s.rate(c))
    }

    fn sum(&self, f: impl Fn(&SeriesWindow) -> Option<f64>) -> Option<f64> {
        self.series
            .iter()
            .filter_map(f)
            .fold(None, |t, v| Some(t.unwrap_or(0.0) + v))
    }

    /// Every series' histogram increase of one kind, added.
    pub fn hist(&self, k: HistKind) -> Option<Histogram> {
        let mut total: Option<Histogram> = None;
        for h in self.series.iter().filter_map(|s| s.hist(k)) {
            match &mut total {
                Some(t) => t.add(h),
                None => total = Some(h.clone()),
            }
        }
        total
    }

    /// The mean number of running requests per engine batch: the mean over the window of
    /// `num_requests_running`, averaged over the models that ran any request (idle models
    /// run no batch); 0 when none did; `None` when no series reports the gauge.
    pub fn avg_batch_size(&self) -> Option<f64> {
        let means: Vec<f64> = self.series.iter().filter_map(|s| s.running_mean).collect();
        if means.is_empty() {
            return None;
        }
        let busy: Vec<f64> = means.into_iter().filter(|m| *m > 0.0).collect();
        Some(if busy.is_empty() {
            0.0
        } else {
            busy.iter().sum::<f64>() / busy.len() as f64
        })
    }

    /// The mean KV-cache usage over the window, averaged over the models.
    pub fn kv_cache_usage(&self) -> Option<f64> {
        let v: Vec<f64> = self
            .series
            .iter()
            .filter_map(|s| s.kv_cache_usage_mean)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// These series' figures as one [`Figures`], the shape PromQL's come in too: rates
    /// and counts added over the series, the batch as [`Self::avg_batch_size`], waiting
    /// requests added, the KV-cache usage averaged, latency from the added histograms.
    pub fn figures(&self) -> Figures {
        let mut by_reason: BTreeMap<String, f64> = BTreeMap::new();
        for (r, v) in self.series.iter().flat_map(|s| s.by_reason.iter()) {
            *by_reason.entry(r.clone()).or_default() += v;
        }
        let latency = |k: HistKind| LatencyFigures::of(self.hist(k).as_ref());
        Figures {
            generation_tokens_per_second: self.rate(Counter::GenerationTokens),
            prompt_tokens_per_second: self.rate(Counter::PromptTokens),
            requests_per_second: self.rate(Counter::RequestsFinished),
            failed_requests_per_second: self.rate(Counter::RequestsFailed),
            requests_finished: self.total(Counter::RequestsFinished),
            requests_failed: self.total(Counter::RequestsFailed),
            by_reason,
            preemptions: self.total(Counter::Preemptions),
            running_mean: self.avg_batch_size(),
            waiting_mean: self.sum(|s| s.waiting_mean),
            kv_cache_usage: self.kv_cache_usage(),
            e2e: latency(HistKind::E2e),
            ttft: latency(HistKind::Ttft),
            itl: latency(HistKind::Itl),
            queue: latency(HistKind::Queue),
            samples: Some(self.sample_count() as f64),
            covered_seconds: self.covered_seconds(),
            restarts: self.series.iter().map(|s| s.resets as f64).reduce(f64::max),
            instances: self.models().map(|s| s.endpoint.clone()).collect(),
        }
    }
}

/// One chart series: `(unix seconds, value)` points.
pub type Points = Vec<(f64, f64)>;

/// The metric group each history series belongs to (the `metrics` names of get-metrics).
pub const HISTORY_SERIES: &[(&str, &str)] = &[
    ("tokens_per_second", "throughput"),
    ("prompt_tokens_per_second", "throughput"),
    ("requests_per_second", "throughput"),
    ("num_requests_running", "throughput"),
    ("latency_avg_ms", "latency"),
    ("failed_requests_per_second", "requests"),
    ("num_requests_waiting", "requests"),
    ("kv_cache_usage", "memory"),
    ("gpu_memory_used_mb", "memory"),
    ("gpu_utilization", "gpu"),
    ("gpu_temperature_max_c", "gpu"),
];

/// Time series over `[since, until]` in at most `max_points` bins (points only where a bin
/// has data), for the names of [`HISTORY_SERIES`].
///
/// In each bin: rates are each series' increase over the time between its samples in the
/// bin, added over series; running and waiting requests are each series' mean, added;
/// the KV-cache usage is the mean over series; `latency_avg_ms` is the e2e latency sum's
/// increase over its count's; GPU utilization is the mean over GPUs, memory the sum of
/// each GPU's mean, temperature the highest. A point's time is its bin's middle.
pub fn history(
    series: &[Vec<Sample>],
    gpus: &[GpuRow],
    since: f64,
    until: f64,
    max_points: usize,
) -> BTreeMap<&'static str, Points> {
    let bins = Bins::new(since, until, max_points);
    let mut acc = vec![BinAcc::default(); bins.n];
    for rows in series {
        let up: Vec<&Sample> = rows
            .iter()
            .filter(|s| s.up && !s.model.is_empty())
            .collect();
        add_counters(&bins, &up, &mut acc);
        add_gauges(&bins, &up, &mut acc);
    }
    let mut out: BTreeMap<&'static str, Points> = HISTORY_SERIES
        .iter()
        .map(|(name, _)| (*name, Vec::new()))
        .collect();
    push_model_points(&bins, &acc, &mut out);
    push_gpu_points(&bins, gpus, &mut out);
    out
}

/// `n` equal bins over `[since, until]` (the history series' and the charts').
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bins {
    pub(crate) since: f64,
    pub(crate) width: f64,
    pub(crate) n: usize,
}

impl Bins {
    /// At least one bin, none narrower than a nanosecond.
    pub(crate) fn new(since: f64, until: f64, max_points: usize) -> Bins {
        let n = max_points.max(1);
        let width = ((until - since) / n as f64).max(1e-9);
        Bins { since, width, n }
    }

    /// The bin of time `t` (times outside the range go to the first or last).
    pub(crate) fn of(&self, t: f64) -> usize {
        (((t - self.since) / self.width).floor().max(0.0) as usize).min(self.n - 1)
    }

    /// The middle of bin `b`: a point's time.
    pub(crate) fn mid(&self, b: usize) -> f64 {
        self.since + (b as f64 + 0.5) * self.width
    }
}

/// What one bin gathers over the model series.
#[derive(Default, Clone)]
struct BinAcc {
    /// Generation tokens, prompt tokens, finished requests per second, summed over series.
    rate: [f64; 3],
    rate_any: bool,
    failed: f64,
    running: f64,
    waiting: f64,
    kv: (f64, usize),
    gauges_any: bool,
    e2e: (f64, f64),
}

/// Each series' counter increases in a bin over the time its samples there cover,
/// added over series (a reset counts the new value whole).
fn add_counters(bins: &Bins, up: &[&Sample], acc: &mut [BinAcc]) {
    let mut inc = vec![([0.0f64; 4], 0.0f64, (0.0f64, 0.0f64)); bins.n];
    for pair in up.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let reset = is_reset(a, b);
        let d = |f: fn(&Sample) -> Option<f64>| match (f(a), f(b)) {
            (Some(x), Some(y)) => {
                if reset {
                    y
                } else {
                    y - x
                }
            }
            _ => 0.0,
        };
        let e = &mut inc[bins.of(b.ts)];
        e.0[0] += d(|s| s.generation_tokens);
        e.0[1] += d(|s| s.prompt_tokens);
        e.0[2] += d(|s| s.requests_finished);
        e.0[3] += d(|s| s.requests_failed);
        e.1 += b.ts - a.ts;
        e.2.0 += d(|s| s.e2e_sum);
        e.2.1 += d(|s| s.e2e_count);
    }
    for (k, (v, dt, e2e)) in inc.into_iter().enumerate() {
        if dt > 0.0 {
            let a = &mut acc[k];
            a.rate[0] += v[0] / dt;
            a.rate[1] += v[1] / dt;
            a.rate[2] += v[2] / dt;
            a.failed += v[3] / dt;
            a.rate_any = true;
            a.e2e.0 += e2e.0;
            a.e2e.1 += e2e.1;
        }
    }
}

/// Each series' gauge means in a bin (running, waiting, KV cache), added over series
/// (the KV-cache usage is averaged over them).
fn add_gauges(bins: &Bins, up: &[&Sample], acc: &mut [BinAcc]) {
    let mut gauges = vec![(0.0f64, 0.0f64, 0.0f64, 0usize, 0usize); bins.n];
    for s in up {
        let g = &mut gauges[bins.of(s.ts)];
        g.0 += s.running.unwrap_or(0.0);
        g.1 += s.waiting.unwrap_or(0.0);
        if let Some(kv) = s.kv_cache_usage {
            g.2 += kv;
            g.4 += 1;
        }
        g.3 += 1;
    }
    for (k, g) in gauges.into_iter().enumerate() {
        if g.3 > 0 {
            let a = &mut acc[k];
            a.running += g.0 / g.3 as f64;
            a.waiting += g.1 / g.3 as f64;
            if g.4 > 0 {
                a.kv.0 += g.2 / g.4 as f64;
                a.kv.1 += 1;
            }
            a.gauges_any = true;
        }
    }
}

fn push_point(out: &mut BTreeMap<&'static str, Points>, name: &'static str, t: f64, v: f64) {
    if let Some(p) = out.get_mut(name) {
        p.push((t, v));
    }
}

/// The model series' points, where a bin has data.
fn push_model_points(bins: &Bins, acc: &[BinAcc], out: &mut BTreeMap<&'static str, Points>) {
    for (k, a) in acc.iter().enumerate() {
        let t = bins.mid(k);
        if a.rate_any {
            push_point(out, "tokens_per_second", t, a.rate[0]);
            push_point(out, "prompt_tokens_per_second", t, a.rate[1]);
            push_point(out, "requests_per_second", t, a.rate[2]);
            push_point(out, "failed_requests_per_second", t, a.failed);
            if a.e2e.1 > 0.0 {
                push_point(out, "latency_avg_ms", t, a.e2e.0 / a.e2e.1 * 1000.0);
            }
        }
        if a.gauges_any {
            push_point(out, "num_requests_running", t, a.running);
            push_point(out, "num_requests_waiting", t, a.waiting);
            if a.kv.1 > 0 {
                push_point(out, "kv_cache_usage", t, a.kv.0 / a.kv.1 as f64);
            }
        }
    }
}

/// The GPU series' points: per bin, each GPU's means, then over GPUs (utilization
/// averaged, memory added, the highest temperature).
fn push_gpu_points(bins: &Bins, gpus: &[GpuRow], out: &mut BTreeMap<&'static str, Points>) {
    // Per GPU: utilization sum and count, memory sum and count, highest temperature.
    type Gpu = (f64, usize, f64, usize, u32);
    type PerGpu = BTreeMap<u32, Gpu>;
    let mut g: Vec<PerGpu> = vec![BTreeMap::new(); bins.n];
    for r in gpus {
        let e = g[bins.of(r.ts)].entry(r.gpu).or_default();
        if let Some(u) = r.utilization {
            e.0 += u;
            e.1 += 1;
        }
        if let Some(m) = r.memory_used_mb {
            e.2 += m as f64;
            e.3 += 1;
        }
        if let Some(t) = r.temperature_c {
            e.4 = e.4.max(t);
        }
    }
    for (k, per_gpu) in g.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
        let t = bins.mid(k);
        let mean = |sum: fn(&Gpu) -> (f64, usize)| -> Vec<f64> {
            per_gpu
                .values()
                .map(sum)
                .filter(|(_, c)| *c > 0)
                .map(|(s, c)| s / c as f64)
                .collect()
        };
        let utils = mean(|e| (e.0, e.1));
        if !utils.is_empty() {
            let avg = utils.iter().sum::<f64>() / utils.len() as f64;
            push_point(out, "gpu_utilization", t, avg);
        }
        let mems = mean(|e| (e.2, e.3));
        if !mems.is_empty() {
            push_point(out, "gpu_memory_used_mb", t, mems.iter().sum());
        }
        let temp = per_gpu.values().map(|e| e.4).max().unwrap_or(0);
        if temp > 0 {
            push_point(out, "gpu_temperature_max_c", t, f64::from(temp));
        }
    }
}
