//! `vllm-mcp-bench`: runs the benchmark suite and prints its table (see `scripts/bench.sh`).

use clap::Parser;
use std::path::PathBuf;
use vllm_mcp_bench::{Options, SECTIONS, machine, run, table};

/// The benchmark suite of the three servers, with the Python peer side by side.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Sections to run, comma-separated (start, trips, parse, window, fleet-cpu,
    /// fleet-memory, state, gateway, ray, page); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Cold starts per binary.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Round trips per read tool, on one connection.
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Seconds of sampling for the fleet CPU figure.
    #[arg(long, default_value_t = 30)]
    fleet_seconds: u64,
    /// The Python peer's `vllm-mcp-server` entry point (scripts/bench.sh installs it).
    #[arg(long)]
    peer: Option<PathBuf>,
    /// vLLM's router (`vllm-router` from PyPI), compared with the front door.
    #[arg(long)]
    router: Option<PathBuf>,
    /// LiteLLM's proxy (`litellm` from PyPI), compared with the front door.
    #[arg(long)]
    litellm: Option<PathBuf>,
    /// A python with Playwright, for the page section (scripts/browser.sh installs it).
    #[arg(long, requires = "chromium")]
    browser_python: Option<PathBuf>,
    /// Debian's chromium, for the page section.
    #[arg(long, requires = "browser_python")]
    chromium: Option<PathBuf>,
    /// Also write the table to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    if let Some(bad) = a.only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        eprintln!(
            "unknown section {bad:?}: choose from {}",
            SECTIONS.join(", ")
        );
        return std::process::ExitCode::from(2);
    }
    let opts = Options {
        only: a.only,
        runs: a.runs,
        calls: a.calls,
        fleet_seconds: a.fleet_seconds,
        peer: a.peer,
        proxies: vllm_mcp_bench::gateway::Peers {
            router: a.router,
            litellm: a.litellm,
        },
        browser: a
            .browser_python
            .zip(a.chromium)
            .map(|(python, chromium)| vllm_mcp_bench::page::Browser { python, chromium }),
    };
    let rows = run(&opts).await;
    let text = format!("Machine: {}\n\n{}", machine(), table::markdown(&rows));
    println!("{text}");
    if let Some(path) = a.markdown
        && let Err(e) = std::fs::write(&path, &text)
    {
        eprintln!("cannot write {}: {e}", path.display());
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
