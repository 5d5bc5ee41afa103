//! The monitor's window arithmetic on hand-made sample series with hand-computed
//! expectations (counter resets included), the history in the store (round trip,
//! retention, downsampling), and the cost of an hour-long window.

use std::time::Instant;
use vllm_core::monitor::history;
use vllm_core::monitor::sample::{HistData, HistKind, Sample, SampleDetail};
use vllm_core::monitor::window::{self, Counter, Latency, SeriesWindow, WindowFigures};
use vllm_core::prom;
use vllm_core::store::Store;

/// Bounds of the hand-made e2e histogram (seconds); `+Inf` is implicit.
const LE: [f64; 3] = [0.1, 0.5, 1.0];

fn hist(c: [f64; 3], inf: f64, sum: f64) -> HistData {
    HistData {
        le: LE.to_vec(),
        c: c.to_vec(),
        inf,
        sum: Some(sum),
        count: inf,
    }
}

/// A sample of model `m` at `ts` with these counters, one running gauge and an e2e histogram.
fn s(
    ts: f64,
    gen_tokens: f64,
    prompt: f64,
    finished: f64,
    failed: f64,
    running: f64,
    e2e: HistData,
) -> Sample {
    let mut by_reason = std::collections::BTreeMap::new();
    by_reason.insert("stop".to_string(), finished - failed);
    by_reason.insert("abort".to_string(), failed);
    Sample {
        ts,
        endpoint: "ep".into(),
        base_url: "http://127.0.0.1:1".into(),
        model: "m".into(),
        up: true,
        start_time: Some(1000.0),
        prompt_tokens: Some(prompt),
        generation_tokens: Some(gen_tokens),
        requests_finished: Some(finished),
        requests_failed: Some(failed),
        preemptions: Some(0.0),
        running: Some(running),
        waiting: Some(0.0),
        kv_cache_usage: Some(0.25),
        e2e_count: Some(e2e.count),
        e2e_sum: e2e.sum,
        detail: Some(Box::new(SampleDetail {
            by_reason,
            e2e: Some(e2e),
            kv_cache_memory_bytes: Some(1 << 30),
            ..SampleDetail::default()
        })),
        ..Sample::default()
    }
}

fn zero() -> HistData {
    hist([0.0; 3], 0.0, 0.0)
}

#[test]
fn rates_counts_and_means_over_a_plain_window() {
    let rows = vec![
        s(0.0, 100.0, 1000.0, 10.0, 0.0, 2.0, zero()),
        s(5.0, 150.0, 1100.0, 12.0, 1.0, 4.0, zero()),
        s(
            10.0,
            250.0,
            1400.0,
            15.0,
            1.0,
            0.0,
            hist([2.0, 8.0, 10.0], 10.0, 3.0),
        ),
    ];
    let w = SeriesWindow::compute(&rows);
    assert_eq!(w.samples, 3);
    assert_eq!(w.span(), Some(10.0));
    assert_eq!(w.resets, 0);
    assert_eq!(w.generation_tokens, Some(150.0));
    assert_eq!(w.rate(Counter::GenerationTokens), Some(15.0));
    assert_eq!(w.rate(Counter::PromptTokens), Some(40.0));
    assert_eq!(w.requests_finished, Some(5.0));
    assert_eq!(w.requests_failed, Some(1.0));
    assert_eq!(w.by_reason["stop"], 4.0);
    assert_eq!(w.by_reason["abort"], 1.0);
    assert_eq!(w.running_mean, Some(2.0));
    assert_eq!(w.kv_cache_usage_mean, Some(0.25));
    assert_eq!(w.kv_cache_memory_bytes, Some(1 << 30));

    // 10 observations: 2 ≤ 0.1 s, 6 in (0.1, 0.5], 2 in (0.5, 1]; sum 3 s.
    let l = Latency::of(w.e2e.as_ref());
    assert_eq!(l.count, 10.0);
    // p50: rank 5 is the 3rd of 6 in (0.1, 0.5]: 0.1 + 0.4 × 3/6 = 0.3 s.
    assert!((l.p50_ms.unwrap() - 300.0).abs() < 1e-9, "{l:?}");
    // p95: rank 9.5, 1.5 of 2 in (0.5, 1]: 0.5 + 0.5 × 0.75 = 0.875 s.
    assert!((l.p95_ms.unwrap() - 875.0).abs() < 1e-9);
    // p99: rank 9.9: 0.5 + 0.5 × 1.9/2 = 0.975 s.
    assert!((l.p99_ms.unwrap() - 975.0).abs() < 1e-9);
    assert!((l.avg_ms.unwrap() - 300.0).abs() < 1e-9);
}

/// `figures()` is the history's answer in the shape PromQL's comes in: two models, one
/// restarted inside the window, added as get-metrics adds them.
#[test]
fn window_figures_are_one_figures_for_the_fleet() {
    let plain = vec![
        s(0.0, 100.0, 1000.0, 10.0, 0.0, 2.0, zero()),
        s(
            10.0,
            250.0,
            1400.0,
            15.0,
            1.0,
            4.0,
            hist([2.0, 8.0, 10.0], 10.0, 3.0),
        ),
    ];
    let mut restarted = vec![
        s(0.0, 100.0, 0.0, 10.0, 0.0, 0.0, zero()),
        s(5.0, 200.0, 0.0, 20.0, 0.0, 0.0, zero()),
        s(20.0, 30.0, 0.0, 4.0, 0.0, 0.0, zero()),
    ];
    for r in &mut restarted {
        r.model = "n".into();
    }
    restarted[2].start_time = Some(2000.0);
    let w = WindowFigures::compute(&[plain, restarted]);
    let f = w.figures();
    // Tokens: 150 in 10 s and (100 + 30) in 20 s.
    assert_eq!(f.generation_tokens_per_second, Some(15.0 + 6.5));
    assert_eq!(f.requests_finished, Some(5.0 + 14.0));
    assert_eq!(f.requests_failed, Some(1.0));
    assert_eq!(f.by_reason["abort"], 1.0);
    assert_eq!(f.by_reason["stop"], 4.0 + 14.0);
    // The batch: the mean over the window of the model that ran requests.
    assert_eq!(f.running_mean, Some(3.0));
    assert_eq!(f.kv_cache_usage, Some(0.25));
    assert_eq!(f.e2e.count, Some(10.0));
    assert!((f.e2e.p50.unwrap() - 0.3).abs() < 1e-9, "{:?}", f.e2e);
    assert!((f.e2e.avg.unwrap() - 0.3).abs() < 1e-9);
    assert_eq!(f.ttft, Default::default(), "no histogram, no figures");
    assert_eq!(
        (f.samples, f.covered_seconds, f.restarts),
        (Some(5.0), Some(20.0), Some(1.0))
    );
    assert_eq!(f.instances.len(), 1, "one endpoint serves both");
    // Each figure is what the window's own parts say.
    assert_eq!(f.requests_per_second, w.rate(Counter::RequestsFinished));
    assert_eq!(f.preemptions, w.total(Counter::Preemptions));
}

#[test]
fn one_sample_has_no_rate_and_no_window() {
    let rows = vec![s(0.0, 100.0, 1000.0, 10.0, 0.0, 2.0, zero())];
    let f = WindowFigures::compute(&[rows]);
    assert_eq!(f.covered_seconds(), None);
    assert_eq!(f.rate(Counter::GenerationTokens), None);
    assert_eq!(f.total(Counter::RequestsFinished), None);
    assert_eq!(Latency::of(f.hist(HistKind::E2e).as_ref()).p50_ms, None);
    // The gauge is still known from one sample.
    assert_eq!(f.avg_batch_size(), Some(2.0));
}

#[test]
fn counter_resets_inside_the_window() {
    // A drop: 100 → 200, restart, 30 → 80. Increase = (200 − 100) + 80 = 180.
    let mut rows = vec![
        s(
            0.0,
            100.0,
            0.0,
            10.0,
            0.0,
            0.0,
            hist([2.0, 8.0, 10.0], 10.0, 3.0),
        ),
        s(
            5.0,
            200.0,
            0.0,
            20.0,
            0.0,
            0.0,
            hist([4.0, 16.0, 20.0], 20.0, 6.0),
        ),
        s(
            10.0,
            30.0,
            0.0,
            4.0,
            0.0,
            0.0,
            hist([4.0, 4.0, 4.0], 4.0, 0.2),
        ),
        s(
            15.0,
            80.0,
            0.0,
            6.0,
            0.0,
            0.0,
            hist([6.0, 6.0, 6.0], 6.0, 0.3),
        ),
    ];
    rows[2].start_time = Some(2000.0);
    rows[3].start_time = Some(2000.0);
    let w = SeriesWindow::compute(&rows);
    assert_eq!(w.resets, 1);
    assert_eq!(w.generation_tokens, Some(180.0));
    assert_eq!(w.rate(Counter::GenerationTokens), Some(12.0));
    assert_eq!(w.requests_finished, Some(16.0));
    // Histogram: (h1 − h0) + h3 = [2, 8, 10, 10] + [6, 6, 6, 6] = [8, 14, 16, 16].
    let h = w.e2e.clone().unwrap();
    assert_eq!(h.count, 16.0);
    assert_eq!(
        h.buckets.iter().map(|b| b.count).collect::<Vec<_>>(),
        vec![8.0, 14.0, 16.0, 16.0]
    );
    // p50: rank 8 is reached in the first bucket: 0.1 × 8/8 = 100 ms.
    assert!((Latency::of(Some(&h)).p50_ms.unwrap() - 100.0).abs() < 1e-9);
    assert!((h.sum - 3.3).abs() < 1e-9);

    // A restart seen only in the start time: 100 → 200, restart, 250 → 300 (the new
    // process counted more than the old one had). Increase = 100 + 300 = 400.
    let mut rows = vec![
        s(0.0, 100.0, 0.0, 1.0, 0.0, 0.0, zero()),
        s(5.0, 200.0, 0.0, 2.0, 0.0, 0.0, zero()),
        s(10.0, 250.0, 0.0, 3.0, 0.0, 0.0, zero()),
        s(15.0, 300.0, 0.0, 4.0, 0.0, 0.0, zero()),
    ];
    rows[2].start_time = Some(3000.0);
    rows[3].start_time = Some(3000.0);
    let w = SeriesWindow::compute(&rows);
    assert_eq!(w.resets, 1);
    assert_eq!(w.generation_tokens, Some(400.0));
    assert_eq!(w.requests_finished, Some(5.0));
}

#[test]
fn only_the_edges_of_runs_need_their_detail() {
    let mut rows = vec![
        s(
            0.0,
            100.0,
            0.0,
            10.0,
            0.0,
            0.0,
            hist([2.0, 8.0, 10.0], 10.0, 3.0),
        ),
        s(
            5.0,
            150.0,
            0.0,
            15.0,
            0.0,
            0.0,
            hist([3.0, 12.0, 15.0], 15.0, 4.0),
        ),
        s(
            10.0,
            200.0,
            0.0,
            20.0,
            0.0,
            0.0,
            hist([4.0, 16.0, 20.0], 20.0, 6.0),
        ),
        Sample::down(12.0, "ep", "http://127.0.0.1:1", "BACKEND_UNREACHABLE"),
        s(
            15.0,
            30.0,
            0.0,
            4.0,
            0.0,
            0.0,
            hist([4.0, 4.0, 4.0], 4.0, 0.2),
        ),
        s(
            20.0,
            60.0,
            0.0,
            5.0,
            0.0,
            0.0,
            hist([5.0, 5.0, 5.0], 5.0, 0.25),
        ),
        s(
            25.0,
            80.0,
            0.0,
            6.0,
            0.0,
            0.0,
            hist([6.0, 6.0, 6.0], 6.0, 0.3),
        ),
    ];
    rows[3].model = "m".into();
    let refs: Vec<&Sample> = rows.iter().collect();
    assert_eq!(window::detail_rows(&refs), vec![0, 2, 4, 6]);
    let full = SeriesWindow::compute(&rows);
    for i in [1, 5] {
        rows[i].detail = None;
    }
    let thin = SeriesWindow::compute(&rows);
    assert_eq!(full, thin);
    assert_eq!(thin.down_samples, 1);
    assert_eq!(thin.e2e.unwrap().count, 16.0);
}

#[test]
fn fleet_figures_add_series() {
    let a = vec![
        s(0.0, 0.0, 0.0, 0.0, 0.0, 4.0, zero()),
        s(
            10.0,
            100.0,
            50.0,
            10.0,
            1.0,
            4.0,
            hist([10.0, 10.0, 10.0], 10.0, 0.5),
        ),
    ];
    let mut b = vec![
        s(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, zero()),
        s(
            20.0,
            100.0,
            0.0,
            10.0,
            0.0,
            0.0,
            hist([0.0, 0.0, 10.0], 10.0, 9.0),
        ),
    ];
    for x in &mut b {
        x.model = "n".into();
    }
    let f = WindowFigures::compute(&[a, b]);
    assert_eq!(f.covered_seconds(), Some(20.0));
    // 100 tokens in 10 s plus 100 tokens in 20 s.
    assert_eq!(f.rate(Counter::GenerationTokens), Some(15.0));
    assert_eq!(f.total(Counter::RequestsFinished), Some(20.0));
    assert_eq!(f.total(Counter::RequestsFailed), Some(1.0));
    // Model n ran nothing: the batch size is model m's.
    assert_eq!(f.avg_batch_size(), Some(4.0));
    let h = f.hist(HistKind::E2e).unwrap();
    assert_eq!(h.count, 20.0);
    // Half the requests took ≤ 0.1 s, half (0.5, 1]: p50 is at the top of the first bucket.
    assert!((Latency::of(Some(&h)).p50_ms.unwrap() - 100.0).abs() < 1e-9);
}

#[test]
fn history_bins_rates_and_gauges() {
    let rows: Vec<Sample> = (0..=12)
        .map(|i| {
            let t = f64::from(i) * 5.0;
            s(t, 10.0 * t, 0.0, t, 0.0, 1.0, zero())
        })
        .collect();
    let h = window::history(&[rows], &[], 0.0, 60.0, 6);
    let tps = &h["tokens_per_second"];
    assert!(tps.len() <= 6 && !tps.is_empty(), "{tps:?}");
    for (_, v) in tps {
        assert!((v - 10.0).abs() < 1e-9, "{tps:?}");
    }
    assert!(h["num_requests_running"].iter().all(|(_, v)| *v == 1.0));
    assert!(h["gpu_utilization"].is_empty());
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let st = Store::open(&dir.path().join("t.db")).unwrap();
    (dir, st)
}

#[test]
fn store_round_trip_reads_detail_only_at_run_edges() {
    let (_d, st) = store();
    let rows = vec![
        s(
            100.0,
            100.0,
            0.0,
            10.0,
            0.0,
            0.0,
            hist([2.0, 8.0, 10.0], 10.0, 3.0),
        ),
        s(
            105.0,
            150.0,
            0.0,
            15.0,
            0.0,
            0.0,
            hist([3.0, 12.0, 15.0], 15.0, 4.0),
        ),
        s(
            110.0,
            200.0,
            0.0,
            20.0,
            0.0,
            0.0,
            hist([4.0, 16.0, 20.0], 20.0, 6.0),
        ),
    ];
    for r in &rows {
        history::insert(&st, std::slice::from_ref(r), &[], r.ts).unwrap();
    }
    let read = history::read_window(&st, 0.0, 1000.0).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].len(), 3);
    assert!(
        read[0][1].detail.is_none(),
        "the middle row's blob is not read"
    );
    assert!(read[0][0].detail.is_some() && read[0][2].detail.is_some());
    assert_eq!(
        SeriesWindow::compute(&read[0]),
        SeriesWindow::compute(&rows)
    );
    let latest = history::latest(&st, 0.0).unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].ts, 110.0);
    assert_eq!(
        latest[0].detail.as_ref().unwrap().kv_cache_memory_bytes,
        Some(1 << 30)
    );
}

#[test]
fn retention_and_downsampling() {
    let (_d, st) = store();
    // A minute boundary two hours before `now`: ten minutes of samples are ten minutes.
    let now = 1_000_020.0;
    let mut batch = Vec::new();
    // 30 h ago (past a 24 h retention), 2 h ago for 10 minutes every 5 s, and the last 10 minutes.
    batch.push(s(now - 30.0 * 3600.0, 1.0, 0.0, 1.0, 0.0, 0.0, zero()));
    for i in 0..120 {
        batch.push(s(
            now - 7200.0 + f64::from(i) * 5.0,
            1.0,
            0.0,
            1.0,
            0.0,
            0.0,
            zero(),
        ));
    }
    for i in 0..120 {
        batch.push(s(
            now - 600.0 + f64::from(i) * 5.0,
            1.0,
            0.0,
            1.0,
            0.0,
            0.0,
            zero(),
        ));
    }
    history::insert(&st, &batch, &[], now).unwrap();
    assert_eq!(history::count(&st, None).unwrap(), 241);
    history::maintain(&st, now, 24.0 * 3600.0).unwrap();
    let old = history::read_window(&st, 0.0, now - 3600.0).unwrap();
    // Ten minutes of 5 s samples become one per minute (ten), the 30 h old one is gone.
    assert_eq!(
        old[0].len(),
        10,
        "{:?}",
        old[0].iter().map(|s| s.ts).collect::<Vec<_>>()
    );
    let recent = history::read_window(&st, now - 3600.0, now).unwrap();
    assert_eq!(recent[0].len(), 120, "the last hour keeps full resolution");
    // Idempotent.
    history::maintain(&st, now, 24.0 * 3600.0).unwrap();
    assert_eq!(history::count(&st, None).unwrap(), 130);
}

/// A realistic sample: 4 histograms of vLLM's real bucket bounds.
fn heavy(ts: f64, model: &str, n: f64) -> Sample {
    let text = include_str!("../../../tests/data/vllm-reference/metrics_after_load.txt");
    // The capture starts with the HTTP status line and headers: lenient parsing skips them.
    let snap = prom::VllmSnapshot::from_exposition(&prom::parse_lenient(text).0);
    assert!(!snap.models.is_empty());
    let mut v = Sample::from_snapshot(ts, model, "http://127.0.0.1:1", &snap, Some(1.0));
    let mut x = v.remove(0);
    x.model = model.into();
    x.generation_tokens = Some(n * 10.0);
    x.prompt_tokens = Some(n * 20.0);
    x.requests_finished = Some(n);
    x
}

#[test]
fn an_hour_of_5s_samples_for_8_models_is_cheap() {
    let (_d, st) = store();
    let now = vllm_core::time::unix_now();
    for i in 0..720 {
        let ts = now - 3600.0 + f64::from(i) * 5.0;
        let round: Vec<Sample> = (0..8)
            .map(|m| heavy(ts, &format!("model-{m}"), f64::from(i)))
            .collect();
        history::insert(&st, &round, &[], ts).unwrap();
    }
    // Warm the page cache and statement cache as a serving process would be.
    let _ = history::read_window(&st, now - 3600.0, now).unwrap();
    let t = Instant::now();
    let rows = history::read_window(&st, now - 3601.0, now).unwrap();
    let read = t.elapsed();
    let f = WindowFigures::compute(&rows);
    let took = t.elapsed();
    eprintln!("read {read:?}, computed {took:?}");
    assert_eq!(rows.len(), 8);
    assert_eq!(f.sample_count(), 5760);
    assert!((f.rate(Counter::GenerationTokens).unwrap() - 8.0 * 2.0).abs() < 1e-9);
    eprintln!("an hour of 5 s samples for 8 models: {took:?}");
    assert!(took.as_millis() < 250, "{took:?}");
}
