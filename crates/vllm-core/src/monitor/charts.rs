//! Charts of the stored history: per model and per GPU time series on one shared time
//! axis, binned for drawing (the front door's page), read from the samples the monitor
//! keeps. Nothing here samples: a chart is only as fresh as the sampler's last round.
//!
//! Every series of a chart has one value per bin, `None` where the bin has no data (a gap
//! in the line), so a client can plot them against [`Charts::t`] as they are.
//!
//! Per bin and model: rates are each series' counter increase over the time its samples
//! in the bin cover, added over the model's series; latency and time-to-first-token
//! quantiles come from the histograms' increase since the previous bin (their buckets
//! are read for the last sample of each bin); the KV-cache usage is the mean of its
//! samples. Per bin and GPU: utilization and memory are means, temperature the highest.

use super::history::{self, GpuRow};
use super::sample::{HistKind, Sample};
use super::window::{Bins, detail_rows, is_reset};
use crate::error::Result;
use crate::prom::Histogram;
use crate::store::Store;
use serde::Serialize;
use std::collections::BTreeMap;

/// One value per bin; `None`: no data there.
pub type Line = Vec<Option<f64>>;

/// A model's series over the bins.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ModelLines {
    /// The served model name.
    pub model: String,
    pub tokens_per_second: Line,
    pub requests_per_second: Line,
    pub latency_p50_ms: Line,
    pub latency_p95_ms: Line,
    pub ttft_p50_ms: Line,
    pub ttft_p95_ms: Line,
    /// Fraction 0..1.
    pub kv_cache_usage: Line,
}

/// A GPU's series over the bins.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct GpuLines {
    pub gpu: u32,
    pub memory_used_mb: Line,
    /// The newest total seen in the window.
    pub memory_total_mb: Option<u64>,
    /// Fraction 0..1 of the time a kernel ran.
    pub utilization: Line,
    pub temperature_c: Line,
}

/// The charts of `[since, until]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Charts {
    pub since: f64,
    pub until: f64,
    /// Seconds per bin.
    pub step: f64,
    /// Each bin's middle, Unix seconds: the x of every line.
    pub t: Vec<f64>,
    pub models: Vec<ModelLines>,
    pub gpus: Vec<GpuLines>,
}

/// Reads `[since, until]` from the store and bins it into `bins` bins (at least one).
pub fn read(store: &Store, since: f64, until: f64, bins: usize) -> Result<Charts> {
    let grid = Grid::new(since, until, bins);
    let series = history::read_window_picking(store, since, until, |rows| grid.detail_rows(rows))?;
    let gpus = history::gpu_window(store, since, until)?;
    Ok(compute(&series, &gpus, &grid))
}

/// Equal bins over a window ([`Bins`]), and which rows' histograms a chart reads.
#[derive(Debug, Clone, Copy)]
struct Grid {
    bins: Bins,
    until: f64,
}

impl Grid {
    fn new(since: f64, until: f64, bins: usize) -> Grid {
        Grid {
            bins: Bins::new(since, until, bins),
            until,
        }
    }

    fn of(&self, t: f64) -> usize {
        self.bins.of(t)
    }

    /// The rows whose histograms a chart reads: the window's own (each run's first and
    /// last answering sample) and the last answering sample of every bin.
    fn detail_rows(&self, rows: &[&Sample]) -> Vec<usize> {
        let mut out = detail_rows(rows);
        let mut last: BTreeMap<usize, usize> = BTreeMap::new();
        for (i, s) in rows.iter().enumerate().filter(|(_, s)| s.up) {
            last.insert(self.of(s.ts), i);
        }
        out.extend(last.into_values());
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The charts of samples already read (grouped by series, in time order) and GPU rows.
fn compute(series: &[Vec<Sample>], gpus: &[GpuRow], grid: &Grid) -> Charts {
    let mut models: BTreeMap<String, ModelAcc> = BTreeMap::new();
    for rows in series {
        let up: Vec<&Sample> = rows
            .iter()
            .filter(|s| s.up && !s.model.is_empty())
            .collect();
        let Some(first) = up.first() else { continue };
        let acc = models
            .entry(first.model.clone())
            .or_insert_with(|| ModelAcc::new(grid.bins.n));
        acc.add_series(grid, &up);
    }
    Charts {
        since: grid.bins.since,
        until: grid.until,
        step: grid.bins.width,
        t: (0..grid.bins.n).map(|b| grid.bins.mid(b)).collect(),
        models: models
            .into_iter()
            .map(|(model, acc)| acc.lines(model))
            .collect(),
        gpus: gpu_lines(grid, gpus),
    }
}

/// One model's bins, over its series (one per endpoint serving it).
struct ModelAcc {
    /// Generation tokens and finished requests per second, added over series.
    tokens: Line,
    requests: Line,
    /// Histogram increases per bin, merged over series.
    e2e: Vec<Option<Histogram>>,
    ttft: Vec<Option<Histogram>>,
    /// Sum and count of KV-cache usage samples.
    kv: Vec<(f64, usize)>,
}

impl ModelAcc {
    fn new(n: usize) -> ModelAcc {
        ModelAcc {
            tokens: vec![None; n],
            requests: vec![None; n],
            e2e: vec![None; n],
            ttft: vec![None; n],
            kv: vec![(0.0, 0); n],
        }
    }

    /// Adds one series' answering samples, in time order.
    fn add_series(&mut self, grid: &Grid, up: &[&Sample]) {
        self.add_rates(grid, up);
        for s in up {
            if let Some(v) = s.kv_cache_usage {
                let k = &mut self.kv[grid.of(s.ts)];
                k.0 += v;
                k.1 += 1;
            }
        }
        self.add_histograms(grid, up);
    }

    /// Counter increases between consecutive samples, each in the bin of the later one,
    /// over the seconds they cover there (a restart counts the new value whole).
    fn add_rates(&mut self, grid: &Grid, up: &[&Sample]) {
        let mut inc = vec![(0.0f64, 0.0f64, 0.0f64); grid.bins.n];
        for pair in up.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let reset = is_reset(a, b);
            let d = |f: fn(&Sample) -> Option<f64>| match (f(a), f(b)) {
                (_, Some(y)) if reset => y,
                (Some(x), Some(y)) => y - x,
                _ => 0.0,
            };
            let e = &mut inc[grid.of(b.ts)];
            e.0 += d(|s| s.generation_tokens);
            e.1 += d(|s| s.requests_finished);
            e.2 += b.ts - a.ts;
        }
        for (k, (tokens, requests, dt)) in inc.into_iter().enumerate() {
            if dt > 0.0 {
                add(&mut self.tokens[k], tokens / dt);
                add(&mut self.requests[k], requests / dt);
            }
        }
    }

    /// Per bin, the histograms' increase from the previous sample with buckets (in the
    /// same run of the server) to the bin's last one.
    fn add_histograms(&mut self, grid: &Grid, up: &[&Sample]) {
        let mut prev: Option<usize> = None;
        for (i, s) in up.iter().enumerate() {
            if s.detail.is_none() {
                continue;
            }
            let last_of_bin = up
                .get(i + 1)
                .is_none_or(|next| grid.of(next.ts) != grid.of(s.ts));
            if prev.is_some_and(|p| up[p..=i].windows(2).any(|w| is_reset(w[0], w[1]))) {
                prev = None;
            }
            if let (Some(p), true) = (prev, last_of_bin) {
                let k = grid.of(s.ts);
                merge(&mut self.e2e[k], delta(s, up[p], HistKind::E2e));
                merge(&mut self.ttft[k], delta(s, up[p], HistKind::Ttft));
            }
            if last_of_bin || prev.is_none() {
                prev = Some(i);
            }
        }
    }

    fn lines(self, model: String) -> ModelLines {
        let q = |hs: &[Option<Histogram>], q: f64| -> Line {
            hs.iter()
                .map(|h| {
                    h.as_ref()
                        .filter(|h| h.count > 0.0)
                        .map(|h| h.quantile(q) * 1000.0)
                        .filter(|v| v.is_finite())
                })
                .collect()
        };
        ModelLines {
            latency_p50_ms: q(&self.e2e, 0.5),
            latency_p95_ms: q(&self.e2e, 0.95),
            ttft_p50_ms: q(&self.ttft, 0.5),
            ttft_p95_ms: q(&self.ttft, 0.95),
            kv_cache_usage: self
                .kv
                .iter()
                .map(|&(sum, n)| (n > 0).then(|| sum / n as f64))
                .collect(),
            tokens_per_second: self.tokens,
            requests_per_second: self.requests,
            model,
        }
    }
}

fn add(slot: &mut Option<f64>, v: f64) {
    *slot = Some(slot.unwrap_or(0.0) + v);
}

/// `later`'s histogram minus `earlier`'s, when both have it.
fn delta(later: &Sample, earlier: &Sample, which: HistKind) -> Option<Histogram> {
    Some(Histogram::delta(&later.hist(which)?, &earlier.hist(which)?))
}

/// Adds `h` into `slot` bucket by bucket (same bounds; other bounds keep the first).
fn merge(slot: &mut Option<Histogram>, h: Option<Histogram>) {
    let Some(h) = h else { return };
    match slot {
        None => *slot = Some(h),
        Some(s) if s.buckets.len() == h.buckets.len() => {
            for (a, b) in s.buckets.iter_mut().zip(&h.buckets) {
                a.count += b.count;
            }
            s.sum += h.sum;
            s.count += h.count;
        }
        Some(_) => {}
    }
}

/// Each GPU's lines: utilization and memory means per bin, the highest temperature.
fn gpu_lines(grid: &Grid, rows: &[GpuRow]) -> Vec<GpuLines> {
    // Per GPU and bin: utilization sum and count, memory sum and count, temperature.
    type Bin = (f64, usize, f64, usize, Option<u32>);
    let mut per: BTreeMap<u32, (Vec<Bin>, Option<u64>)> = BTreeMap::new();
    for r in rows {
        let (bins, total) = per
            .entry(r.gpu)
            .or_insert_with(|| (vec![(0.0, 0, 0.0, 0, None); grid.bins.n], None));
        let b = &mut bins[grid.of(r.ts)];
        if let Some(u) = r.utilization {
            b.0 += u;
            b.1 += 1;
        }
        if let Some(m) = r.memory_used_mb {
            b.2 += m as f64;
            b.3 += 1;
        }
        if let Some(t) = r.temperature_c {
            b.4 = Some(b.4.map_or(t, |x| x.max(t)));
        }
        if r.memory_total_mb.is_some() {
            *total = r.memory_total_mb;
        }
    }
    let mean = |sum: f64, n: usize| (n > 0).then(|| sum / n as f64);
    per.into_iter()
        .map(|(gpu, (bins, total))| GpuLines {
            gpu,
            utilization: bins.iter().map(|b| mean(b.0, b.1)).collect(),
            memory_used_mb: bins.iter().map(|b| mean(b.2, b.3)).collect(),
            temperature_c: bins.iter().map(|b| b.4.map(f64::from)).collect(),
            memory_total_mb: total,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::sample::{HistData, SampleDetail};

    /// A sample of `model` at `ts` with counters `n` (tokens 10n, requests n) and an e2e
    /// histogram whose every observation took 0.1 s (bounds 0.05, 0.2, 1).
    fn at(model: &str, ts: f64, n: f64, start: f64) -> Sample {
        let hist = HistData {
            le: vec![0.05, 0.2, 1.0],
            c: vec![0.0, n, n],
            inf: n,
            sum: Some(0.1 * n),
            count: n,
        };
        Sample {
            ts,
            endpoint: model.into(),
            model: model.into(),
            up: true,
            start_time: Some(start),
            generation_tokens: Some(10.0 * n),
            requests_finished: Some(n),
            e2e_count: Some(n),
            kv_cache_usage: Some(0.25),
            detail: Some(Box::new(SampleDetail {
                e2e: Some(hist.clone()),
                ttft: Some(hist),
                ..SampleDetail::default()
            })),
            ..Sample::default()
        }
    }

    #[test]
    fn rates_quantiles_and_gaps_per_bin() {
        // Bins of 10 s over [0, 40): traffic in the first two, nothing in the third,
        // a restart (new start time, counters from 0) in the fourth.
        let rows = vec![
            at("m", 1.0, 0.0, 100.0),
            at("m", 6.0, 5.0, 100.0),
            at("m", 11.0, 10.0, 100.0),
            at("m", 16.0, 20.0, 100.0),
            at("m", 31.0, 1.0, 200.0),
            at("m", 36.0, 3.0, 200.0),
        ];
        let grid = Grid::new(0.0, 40.0, 4);
        let c = compute(&[rows], &[], &grid);
        assert_eq!(c.t, vec![5.0, 15.0, 25.0, 35.0]);
        let m = &c.models[0];
        assert_eq!(m.model, "m");
        // 50 tokens in the 5 s from t=1 to t=6.
        assert_eq!(m.tokens_per_second[0], Some(10.0));
        // 150 tokens over the 10 s from t=6 to t=16.
        assert_eq!(m.tokens_per_second[1], Some(15.0));
        assert_eq!(m.tokens_per_second[2], None);
        // The restart counts the new 10 tokens whole, then 20 more: 30 over 20 s.
        assert_eq!(m.tokens_per_second[3], Some(1.5));
        assert_eq!(m.requests_per_second[1], Some(1.5));
        // Every request took 0.1 s: the quantiles lie in the (0.05, 0.2] bucket.
        let p50 = m.latency_p50_ms[1].unwrap();
        assert!((50.0..=200.0).contains(&p50), "{p50}");
        assert!(m.latency_p95_ms[1].unwrap() >= p50);
        assert_eq!(m.latency_p50_ms[2], None);
        assert!(
            m.ttft_p95_ms[3].is_some(),
            "the run after the restart has its own"
        );
        assert_eq!(m.kv_cache_usage[0], Some(0.25));
        assert_eq!(m.kv_cache_usage[2], None);
    }

    #[test]
    fn gpu_lines_are_means_and_the_highest_temperature() {
        let row = |ts: f64, gpu: u32, u: f64, t: u32| GpuRow {
            ts,
            gpu,
            utilization: Some(u),
            memory_used_mb: Some(1000),
            memory_total_mb: Some(8000),
            temperature_c: Some(t),
            power_w: None,
        };
        let rows = [
            row(1.0, 0, 10.0, 50),
            row(2.0, 0, 30.0, 60),
            row(1.0, 1, 90.0, 70),
        ];
        let c = compute(&[], &rows, &Grid::new(0.0, 10.0, 2));
        assert_eq!(c.gpus.len(), 2);
        assert_eq!(c.gpus[0].utilization, vec![Some(20.0), None]);
        assert_eq!(c.gpus[0].temperature_c, vec![Some(60.0), None]);
        assert_eq!(c.gpus[0].memory_total_mb, Some(8000));
        assert_eq!(c.gpus[1].memory_used_mb, vec![Some(1000.0), None]);
    }

    #[test]
    fn the_last_sample_of_each_bin_is_read_with_its_buckets() {
        let rows: Vec<Sample> = (0..9).map(|i| at("m", i as f64, i as f64, 1.0)).collect();
        let refs: Vec<&Sample> = rows.iter().collect();
        // Bins of 3 s: the run's first row, and rows 2, 5 and 8 (the last row too).
        assert_eq!(Grid::new(0.0, 9.0, 3).detail_rows(&refs), vec![0, 2, 5, 8]);
    }
}
