//! Criterion benchmark of `vllm_core::prom`: parsing each real vLLM `/metrics` capture, and
//! building the typed view. Target: under 250 µs per parse of metrics_after_load.txt.
//!
//! Run with `cargo bench -p vllm-core --bench prom_parse`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vllm_prom as prom;

const CAPTURES: [(&str, &str); 3] = [
    (
        "metrics_idle",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/vllm-reference/metrics_idle.txt"
        )),
    ),
    (
        "metrics_after_load",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/vllm-reference/metrics_after_load.txt"
        )),
    ),
    (
        "metrics_devlora",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/vllm-reference/metrics_devlora.txt"
        )),
    ),
];

/// The `/metrics` body: two captures start with the HTTP response head, which is not
/// exposition text.
fn body(capture: &str) -> &str {
    if capture.starts_with("HTTP/") {
        capture
            .split_once("\r\n\r\n")
            .map_or(capture, |(_, body)| body)
    } else {
        capture
    }
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, capture) in CAPTURES {
        let text = body(capture);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| b.iter(|| prom::parse(black_box(text)).unwrap()));
    }
    group.finish();

    // The same parse without the time to free the result (about a quarter of the total:
    // every sample owns a label vector and shares Arcs that must be released).
    let mut group = c.benchmark_group("parse_without_drop");
    let text = body(CAPTURES[1].1);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("metrics_after_load", |b| {
        b.iter_with_large_drop(|| prom::parse(black_box(text)).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("parse_lenient");
    let text = body(CAPTURES[1].1);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("metrics_after_load", |b| {
        b.iter(|| prom::parse_lenient(black_box(text)))
    });
    group.finish();
}

fn bench_typed_view(c: &mut Criterion) {
    let mut group = c.benchmark_group("vllm_snapshot");
    for (name, capture) in CAPTURES {
        let expo = prom::parse(body(capture)).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| prom::VllmSnapshot::from_exposition(black_box(&expo)))
        });
    }
    let text = body(CAPTURES[1].1);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("parse_and_view/metrics_after_load", |b| {
        b.iter(|| prom::VllmSnapshot::from_exposition(&prom::parse(black_box(text)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench_parse, bench_typed_view);
criterion_main!(benches);
