//! The monitor at fleet scale, the real binary: the CPU it spends sampling 32 mock-vllm
//! endpoints every second, and its memory with 24 h of history for 8 models.

use crate::table::{Row, mib};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vllm_core::monitor::{Sample, history};
use vllm_core::prom;
use vllm_core::store::Store;
use vllm_mcp_testkit::{McpProcess, MockVllm, bin, cpu_seconds, status_kb, temp_dir};

const ENDPOINTS: usize = 32;
const MODELS: usize = 8;
const CAPTURE: &str = include_str!("../../../tests/data/vllm-reference/metrics_after_load.txt");

fn config(dir: &Path, urls: &[String], interval: f64) -> PathBuf {
    let mut text = format!(
        "data_dir = {:?}\n[monitor]\nsample_interval_seconds = {interval}\n",
        dir.display().to_string()
    );
    for (i, url) in urls.iter().enumerate() {
        text.push_str(&format!(
            "[[endpoints]]\nname = \"ep-{i}\"\nbase_url = {url:?}\n"
        ));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

async fn monitor(config: &Path) -> McpProcess {
    McpProcess::spawn(
        &bin("vllm-perf-monitor"),
        &[
            ("VLLM_MCP_CONFIG", config.to_str().expect("utf-8 path")),
            ("VLLM_MCP_FAKE_GPUS", "2"),
        ],
    )
    .await
}

fn mocks(n: usize) -> Vec<MockVllm> {
    let mocks: Vec<MockVllm> = (0..n)
        .map(|i| MockVllm::spawn(&[&format!("mock/m{i}")], &[]))
        .collect();
    for m in &mocks {
        m.wait_ready(Duration::from_secs(60));
    }
    mocks
}

/// User + system CPU of the monitor over `seconds` of sampling 32 endpoints at 1 s.
pub async fn sampling_cpu(seconds: u64) -> Vec<Row> {
    eprintln!("fleet: the monitor sampling {ENDPOINTS} endpoints every 1 s for {seconds} s");
    let mocks = mocks(ENDPOINTS);
    let urls: Vec<String> = mocks.iter().map(|m| m.base_url.clone()).collect();
    let dir = temp_dir();
    let m = monitor(&config(dir.path(), &urls, 1.0)).await;
    // Connections, statement caches and the first rounds settle first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (c0, t0) = (cpu_seconds(m.pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (c1, wall) = (cpu_seconds(m.pid), t0.elapsed().as_secs_f64());
    let share = (c1 - c0) / wall * 100.0;
    let store = Store::open(&dir.path().join("vllm-mcp.db")).expect("store");
    let rounds = history::count(&store, Some("ep-0")).expect("count");
    m.close().await;
    vec![Row::target(
        format!(
            "the monitor sampling {ENDPOINTS} mock-vllm endpoints every 1 s (user + system CPU)"
        ),
        "< 5 % of one core",
        format!("{share:.2} % over {wall:.0} s ({rounds} rounds stored)"),
        share < 5.0,
    )]
}

/// The monitor's memory with a day of history for 8 models, after get-metrics over 1 h
/// and 24 h with history and a read of `metrics/history/24h`.
pub async fn memory_with_a_day_of_history() -> Vec<Row> {
    eprintln!("fleet: writing 24 h of history for {MODELS} models");
    let mocks = mocks(MODELS);
    let urls: Vec<String> = mocks.iter().map(|m| m.base_url.clone()).collect();
    let dir = temp_dir();
    let store = Store::open(&dir.path().join("vllm-mcp.db")).expect("store");
    let now = vllm_core::time::unix_now();
    day_of_history(&store, &urls, now);
    store.incremental_vacuum().expect("vacuum");
    drop(store);
    let m = monitor(&config(dir.path(), &urls, 5.0)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let idle = status_kb(m.pid, "VmRSS:");
    let mut took = Vec::new();
    for d in ["1h", "24h"] {
        let t = Instant::now();
        let r = m
            .call(
                "get-metrics",
                json!({"duration_seconds": d, "per_model": true, "include_history": true}),
            )
            .await;
        assert!(!r.is_error, "{}", r.json);
        took.push(format!("{d} {:.0} ms", t.elapsed().as_secs_f64() * 1000.0));
    }
    let _ = m.read("vllm://metrics/history/24h").await;
    let hwm = status_kb(m.pid, "VmHWM:");
    let rss = status_kb(m.pid, "VmRSS:");
    m.close().await;
    vec![
        Row::target(
            format!(
                "the monitor with 24 h of history for {MODELS} models: peak resident memory \
                 (get-metrics 1 h and 24 h, metrics/history/24h)"
            ),
            "< 30 MB",
            format!(
                "peak {:.1} MiB ({:.1} MB); idle {:.1} MiB, after {:.1} MiB",
                mib(hwm),
                hwm as f64 * 1024.0 / 1e6,
                mib(idle),
                mib(rss)
            ),
            (hwm as f64 * 1024.0) < 30e6,
        ),
        Row::info(
            "get-metrics per model with history over stdio, on that store",
            took.join(", "),
        ),
    ]
}

/// 24 h of 5 s samples up to `now`, one series per URL (model `mock/m{i}`), thinned as
/// the monitor's retention keeps them: full resolution for the last hour, one a minute
/// before.
pub fn day_of_history(store: &Store, urls: &[String], now: f64) {
    let (expo, _) = prom::parse_lenient(CAPTURE);
    let snap = prom::VllmSnapshot::from_exposition(&expo);
    let base = Sample::from_snapshot(0.0, "ep", "http://127.0.0.1:1", &snap, Some(1.0)).remove(0);
    let rounds = 24 * 720;
    for r in 0..rounds {
        let ts = now - 86_400.0 + f64::from(r) * 5.0;
        let round: Vec<Sample> = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let mut s = base.clone();
                s.ts = ts;
                s.endpoint = format!("ep-{i}");
                s.base_url = url.clone();
                s.model = format!("mock/m{i}");
                s.generation_tokens = Some(f64::from(r) * 10.0);
                s.requests_finished = Some(f64::from(r));
                s
            })
            .collect();
        history::insert(store, &round, &[], ts).expect("insert");
    }
    history::maintain(store, now, 86_400.0).expect("maintain");
}
