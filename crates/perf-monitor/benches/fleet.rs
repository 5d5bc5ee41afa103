//! Benchmark of the monitor at fleet scale, as it runs in production (the real binary).
//!
//! Run with `cargo build --release --workspace --bins && cargo bench -p vllm-perf-monitor
//! --bench fleet`. It measures:
//! - the CPU the monitor process spends sampling 32 mock-vllm endpoints every second
//!   (user + system time over 30 s of wall time) — target under 5 % of one core;
//! - its resident memory with 24 h of history for 8 models in the store (written as
//!   the sampler would, then downsampled past the first hour as maintenance does), after
//!   get-metrics over 1 h and 24 h with history — target under 30 MB.
//!
//! It prints the figures and stops everything it started.

use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use vllm_core::monitor::{Sample, history};
use vllm_core::prom;
use vllm_core::store::Store;
use vllm_mcp_testkit::{McpProcess, MockVllm, status_kb, temp_dir};

const ENDPOINTS: usize = 32;
const MODELS: usize = 8;
const CAPTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/vllm-reference/metrics_after_load.txt"
));

/// User + system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15: the 12th and 13th after the name.
    (ticks(11) + ticks(12)) / hz
}

fn config(dir: &Path, urls: &[String], interval: f64) -> std::path::PathBuf {
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
    std::fs::write(&path, text).unwrap();
    path
}

async fn monitor(config: &Path) -> McpProcess {
    McpProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_vllm-perf-monitor")),
        &[
            ("VLLM_MCP_CONFIG", config.to_str().unwrap()),
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

async fn sampling_cpu() {
    let mocks = mocks(ENDPOINTS);
    let urls: Vec<String> = mocks.iter().map(|m| m.base_url.clone()).collect();
    let dir = temp_dir();
    let m = monitor(&config(dir.path(), &urls, 1.0)).await;
    // Connections, statement caches and the first rounds settle first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (c0, t0) = (cpu_seconds(m.pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (c1, wall) = (cpu_seconds(m.pid), t0.elapsed().as_secs_f64());
    let share = (c1 - c0) / wall * 100.0;
    let store = Store::open(&dir.path().join("vllm-mcp.db")).unwrap();
    let rounds = history::count(&store, Some("ep-0")).unwrap();
    println!(
        "sampling {ENDPOINTS} endpoints every 1 s: {share:.2} % of one core over {wall:.0} s \
         ({rounds} samples of ep-0 stored); target < 5 %: {}",
        if share < 5.0 { "met" } else { "NOT met" }
    );
    m.close().await;
}

async fn memory_with_a_day_of_history() {
    let mocks = mocks(MODELS);
    let urls: Vec<String> = mocks.iter().map(|m| m.base_url.clone()).collect();
    let dir = temp_dir();
    let store = Store::open(&dir.path().join("vllm-mcp.db")).unwrap();
    let (expo, _) = prom::parse_lenient(CAPTURE);
    let snap = prom::VllmSnapshot::from_exposition(&expo);
    let base = Sample::from_snapshot(0.0, "ep", "http://127.0.0.1:1", &snap, Some(1.0)).remove(0);
    let now = vllm_core::time::unix_now();
    let rounds = 24 * 720;
    let t = Instant::now();
    for r in 0..rounds {
        let ts = now - 86_400.0 + f64::from(r) * 5.0;
        let round: Vec<Sample> = (0..MODELS)
            .map(|i| {
                let mut s = base.clone();
                s.ts = ts;
                s.endpoint = format!("ep-{i}");
                s.base_url = urls[i].clone();
                s.model = format!("mock/m{i}");
                s.generation_tokens = Some(f64::from(r) * 10.0);
                s.requests_finished = Some(f64::from(r));
                s
            })
            .collect();
        history::insert(&store, &round, &[], ts).unwrap();
    }
    let pruned = history::maintain(&store, now, 86_400.0).unwrap();
    store.incremental_vacuum().unwrap();
    let size = std::fs::metadata(dir.path().join("vllm-mcp.db")).map_or(0, |m| m.len());
    println!(
        "history: {} samples written in {:.1} s, {pruned} rows removed by downsampling, store {:.1} MiB",
        rounds as usize * MODELS,
        t.elapsed().as_secs_f64(),
        size as f64 / 1_048_576.0
    );
    drop(store);
    let m = monitor(&config(dir.path(), &urls, 5.0)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    println!(
        "monitor sampling {MODELS} endpoints with that history, before any call: RSS {:.1} MiB (peak {:.1} MiB)",
        status_kb(m.pid, "VmRSS:") as f64 / 1024.0,
        status_kb(m.pid, "VmHWM:") as f64 / 1024.0
    );
    for d in ["1h", "24h"] {
        let t = Instant::now();
        let r = m
            .call(
                "get-metrics",
                json!({"duration_seconds": d, "per_model": true, "include_history": true}),
            )
            .await;
        assert!(!r.is_error, "{}", r.json);
        println!(
            "get-metrics over {d} (per model, with history), over stdio: {:.1} ms; peak RSS so far {:.1} MiB",
            t.elapsed().as_secs_f64() * 1000.0,
            status_kb(m.pid, "VmHWM:") as f64 / 1024.0
        );
    }
    let _ = m.read("vllm://metrics/history/24h").await;
    let hwm = status_kb(m.pid, "VmHWM:") as f64 / 1024.0;
    let rss = status_kb(m.pid, "VmRSS:") as f64 / 1024.0;
    println!(
        "monitor with 24 h of history for {MODELS} models: peak RSS {hwm:.1} MiB, RSS now {rss:.1} MiB; \
         target < 30 MB: {}",
        if hwm * 1.048_576 < 30.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    m.close().await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo bench` passes flags such as --bench; this binary takes none but reads
    // FLEET_BENCH=memory to run only the memory part.
    if std::env::var("FLEET_BENCH").as_deref() != Ok("memory") {
        sampling_cpu().await;
    }
    memory_with_a_day_of_history().await;
}
