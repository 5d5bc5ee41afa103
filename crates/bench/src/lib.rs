//! The benchmark suite: each section measures one part of what a Crush session pays
//! for our servers, and [`run`] prints every figure as one table with its target.
//!
//! Whole processes (start-up, round trips, memory, the Python peer, the monitor at fleet
//! scale, state save and load) are the release binaries next to this one, driven over
//! stdio; in-process figures (parse, a metrics window) call vllm-core directly.

pub mod fleet;
pub mod gateway;
pub mod inproc;
pub mod page;
pub mod ray;
pub mod servers;
pub mod state;
pub mod table;

use std::path::PathBuf;
use table::Row;

/// Every section, in the order they run.
pub const SECTIONS: [&str; 10] = [
    "start",
    "trips",
    "parse",
    "window",
    "fleet-cpu",
    "fleet-memory",
    "state",
    "gateway",
    "ray",
    "page",
];

/// What to run and how much.
#[derive(Debug, Clone)]
pub struct Options {
    /// The sections to run (all when empty).
    pub only: Vec<String>,
    /// Cold starts per binary.
    pub runs: usize,
    /// Round trips per read tool.
    pub calls: usize,
    /// Seconds of sampling for the fleet CPU figure.
    pub fleet_seconds: u64,
    /// The Python peer's `vllm-mcp-server` entry point, if installed.
    pub peer: Option<PathBuf>,
    /// The proxies the front door is compared with, if installed.
    pub proxies: gateway::Peers,
    /// The browser the front door's page is measured in, if installed.
    pub browser: Option<page::Browser>,
}

/// A short description of the machine, for the table's heading.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    format!(
        "{cores} cores ({model}), {:.0} GiB, release build",
        mem_kb as f64 / 1_048_576.0
    )
}

/// Runs the chosen sections and returns their rows.
pub async fn run(opts: &Options) -> Vec<(String, Vec<Row>)> {
    let wanted = |s: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == s);
    let mut out = Vec::new();
    if wanted("start") || wanted("trips") {
        let fleet = servers::Fleet::start();
        let mut f = servers::Figures::default();
        if wanted("start") {
            servers::measure_start(&fleet, opts.runs, &mut f);
        }
        if wanted("trips") {
            servers::measure_servers(&fleet, opts.calls, &mut f);
        }
        if let Some(peer) = &opts.peer {
            servers::measure_peer(&fleet, peer, opts.runs, opts.calls, &mut f);
        }
        out.push(("servers".to_string(), servers::rows(&f)));
    }
    if wanted("parse") {
        eprintln!("parse: the captured expositions");
        out.push(("parse".to_string(), inproc::parse_rows()));
    }
    if wanted("window") {
        eprintln!("window: one hour for 8 models");
        out.push(("window".to_string(), inproc::window_rows()));
    }
    if wanted("fleet-cpu") {
        out.push((
            "fleet".to_string(),
            fleet::sampling_cpu(opts.fleet_seconds).await,
        ));
    }
    if wanted("fleet-memory") {
        out.push((
            "fleet".to_string(),
            fleet::memory_with_a_day_of_history().await,
        ));
    }
    if wanted("state") {
        out.push(("state".to_string(), state::save_and_load(5).await));
    }
    if wanted("gateway") {
        let calls = opts.calls.min(2000);
        out.push((
            "gateway".to_string(),
            gateway::rows(&opts.proxies, calls).await,
        ));
    }
    if wanted("ray") {
        out.push(("ray".to_string(), ray::rows(opts.runs).await));
    }
    if wanted("page") {
        out.push(("page".to_string(), page::rows(opts.browser.as_ref()).await));
    }
    out
}
