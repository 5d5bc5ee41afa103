//! Criterion benchmark of the monitor's hot paths: one scrape's parse, samples and store
//! write (target under 1 ms of CPU for a 60 KB exposition), and a get-metrics window of
//! one hour of 5 s samples for 8 models (target under 5 ms).
//!
//! Run with `cargo bench -p vllm-core --bench monitor`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use vllm_core::monitor::{Sample, WindowFigures, history};
use vllm_core::prom;
use vllm_core::store::Store;

const CAPTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/vllm-reference/metrics_after_load.txt"
));

/// Parse, typed view and samples of one exposition (lenient parsing skips the HTTP head
/// the capture starts with).
fn samples_of(text: &str, ts: f64, endpoint: &str) -> Vec<Sample> {
    let (expo, _) = prom::parse_lenient(text);
    let snap = prom::VllmSnapshot::from_exposition(&expo);
    let start = expo
        .family("process_start_time_seconds")
        .and_then(|f| f.sum_where(|_| true));
    Sample::from_snapshot(ts, endpoint, "http://127.0.0.1:8000", &snap, start)
}

fn bench_scrape(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("bench.db")).unwrap();
    let mut group = c.benchmark_group("scrape");
    group.bench_function("parse_and_sample/metrics_after_load", |b| {
        b.iter(|| samples_of(black_box(CAPTURE), 1.0, "ep"))
    });
    let mut ts = 1.0e9;
    group.bench_function("parse_sample_and_store/metrics_after_load", |b| {
        b.iter(|| {
            ts += 5.0;
            let s = samples_of(black_box(CAPTURE), ts, "ep");
            history::insert(&store, &s, &[], ts).unwrap();
        })
    });
    group.finish();
}

fn bench_window(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("bench.db")).unwrap();
    let now = vllm_core::time::unix_now();
    let base = samples_of(CAPTURE, 0.0, "ep").remove(0);
    for i in 0..720 {
        let ts = now - 3600.0 + f64::from(i) * 5.0;
        let round: Vec<Sample> = (0..8)
            .map(|m| {
                let mut s = base.clone();
                s.ts = ts;
                s.endpoint = format!("ep-{m}");
                s.model = format!("model-{m}");
                s.generation_tokens = Some(f64::from(i) * 10.0);
                s.requests_finished = Some(f64::from(i));
                s
            })
            .collect();
        history::insert(&store, &round, &[], ts).unwrap();
    }
    c.bench_function("window/1h_5s_8_models/read", |b| {
        b.iter(|| history::read_window(&store, now - 3601.0, now).unwrap())
    });
    c.bench_function("window/1h_5s_8_models/read_and_compute", |b| {
        b.iter(|| {
            let rows = history::read_window(&store, now - 3601.0, now).unwrap();
            let f = WindowFigures::compute(&rows);
            assert_eq!(f.sample_count(), 5760);
            f
        })
    });
}

criterion_group!(benches, bench_scrape, bench_window);
criterion_main!(benches);
