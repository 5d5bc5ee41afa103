//! Criterion benchmark of `vllm_crush_db`: export and restore of a generated 10,000-message, 20 MB conversation.
//!
//! Run with `cargo bench -p vllm-core --bench crush_db` (needs `[[bench]] name = "crush_db"`,
//! `harness = false` in crates/vllm-core/Cargo.toml). Targets: export under 150 ms,
//! restore into an empty database under 600 ms, on one core of a 2024 server.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::Connection;
use std::hint::black_box;
use vllm_crush_db::{self as crush_db, CrushDb};
use vllm_crush_gen::{self as generate, ConversationSpec};

const SPEC: ConversationSpec = ConversationSpec {
    seed: 100,
    messages: 10_000,
    sub_sessions: 4,
    target_bytes: Some(20_000_000),
};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    let conn = Connection::open(&source).unwrap();
    let root = generate::insert(&conn, &SPEC).unwrap();
    drop(conn);
    let db = CrushDb::open_read_only(&source).unwrap();
    let conv = db.export(&root).unwrap().unwrap();

    let mut group = c.benchmark_group("crush_db");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(conv.parts_bytes() as u64));
    group.bench_function("generate_10k_20MB", |b| {
        b.iter(|| black_box(generate::conversation(black_box(&SPEC))))
    });
    group.bench_function("export_10k_20MB", |b| {
        b.iter(|| black_box(db.export(black_box(&root)).unwrap()))
    });
    let mut n = 0;
    group.bench_function("restore_10k_20MB", |b| {
        b.iter_batched(
            || {
                n += 1;
                let path = dir.path().join(format!("target-{n}.db"));
                let conn = Connection::open(&path).unwrap();
                crush_db::create_schema(&conn).unwrap();
                path
            },
            |path| {
                let report = crush_db::restore(&path, &conv).unwrap();
                std::fs::remove_file(&path).ok();
                black_box(report)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
