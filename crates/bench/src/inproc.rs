//! In-process figures: the Prometheus parse of the captured expositions, and a
//! `get-metrics` window of one hour for 8 models (the criterion benches in vllm-core
//! measure the same paths in more detail).

use crate::table::{Row, Samples, ms};
use std::hint::black_box;
use std::time::{Duration, Instant};
use vllm_core::monitor::{Sample, WindowFigures, history};
use vllm_core::prom;
use vllm_core::store::Store;

const CAPTURES: [(&str, &str); 3] = [
    (
        "metrics_idle.txt",
        include_str!("../../../tests/data/vllm-reference/metrics_idle.txt"),
    ),
    (
        "metrics_after_load.txt",
        include_str!("../../../tests/data/vllm-reference/metrics_after_load.txt"),
    ),
    (
        "metrics_devlora.txt",
        include_str!("../../../tests/data/vllm-reference/metrics_devlora.txt"),
    ),
];

/// The exposition of a capture (some start with the HTTP response head).
fn body(capture: &str) -> &str {
    capture
        .split_once("\r\n\r\n")
        .filter(|_| capture.starts_with("HTTP/"))
        .map_or(capture, |(_, b)| b)
}

/// Times `f` in batches long enough for the clock, `rounds` batches; per-call samples.
fn per_call(rounds: usize, mut f: impl FnMut()) -> Samples {
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed() < Duration::from_millis(20) {
        f();
        n += 1;
    }
    let batch = n.max(1);
    let mut v = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        v.push(t.elapsed() / batch);
    }
    Samples::new(v)
}

/// Parse speed of each capture; the 57 KB one carries the target.
pub fn parse_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, capture) in CAPTURES {
        let text = body(capture);
        let s = per_call(50, || {
            black_box(prom::parse(black_box(text)).expect("capture parses"));
        });
        let us = s.median().as_secs_f64() * 1e6;
        let mbs = text.len() as f64 / s.median().as_secs_f64() / 1e6;
        let measured = format!(
            "{us:.0} µs, {mbs:.0} MB/s ({:.1} KB)",
            text.len() as f64 / 1e3
        );
        rows.push(if name == "metrics_after_load.txt" {
            Row::target(
                format!("Prometheus parse of {name}"),
                "< 250 µs",
                measured,
                us < 250.0,
            )
        } else {
            Row::info(format!("Prometheus parse of {name}"), measured)
        });
    }
    rows
}

/// One hour of 5 s samples for 8 models, read and computed as get-metrics does.
pub fn window_rows() -> Vec<Row> {
    let dir = vllm_mcp_testkit::temp_dir();
    let store = Store::open(&dir.path().join("bench.db")).expect("store");
    let (expo, _) = prom::parse_lenient(CAPTURES[1].1);
    let snap = prom::VllmSnapshot::from_exposition(&expo);
    let base = Sample::from_snapshot(0.0, "ep", "http://127.0.0.1:1", &snap, Some(1.0)).remove(0);
    let now = vllm_core::time::unix_now();
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
        history::insert(&store, &round, &[], ts).expect("insert");
    }
    let mut v = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let rows = history::read_window(&store, now - 3601.0, now).expect("window");
        let f = WindowFigures::compute(&rows);
        assert_eq!(f.sample_count(), 5760);
        v.push(t.elapsed());
    }
    let s = Samples::new(v);
    vec![Row::target(
        "`get-metrics` window: 1 h of 5 s samples for 8 models (5,760 rows), read and computed",
        "< 5 ms",
        format!(
            "median {:.2} ms, p99 {:.2} ms",
            ms(s.median()),
            ms(s.quantile(0.99))
        ),
        ms(s.median()) < 5.0,
    )]
}
