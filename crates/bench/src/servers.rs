//! Whole-process figures of the three servers and of the Python peer, through the same
//! bare client ([`vllm_mcp_testkit::wire`]): spawn to `initialize` answer, read-tool round trips
//! on one connection, and resident memory.

use crate::table::{Row, Samples, median_p99, mib, ms};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vllm_mcp_testkit::wire::{Wire, text_of};
use vllm_mcp_testkit::{MockVllm, bin, free_port, status_kb};

/// The servers measured, by binary name.
pub const OURS: [&str; 3] = [
    "vllm-model-manager",
    "vllm-state-persistence",
    "vllm-perf-monitor",
];

/// A mock-vllm endpoint and the data directory and config the servers share (as they
/// do when Crush spawns them side by side).
pub struct Fleet {
    pub mock: MockVllm,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Fleet {
    /// Starts one mock-vllm serving `bench/tiny` and writes the servers' config: that
    /// endpoint attached, mock-vllm as the launcher's `vllm`, two fake GPUs.
    pub fn start() -> Fleet {
        let mock = MockVllm::start(&["bench/tiny"], &[]);
        let dir = vllm_mcp_testkit::temp_dir();
        let base = free_port().clamp(20_000, 60_000);
        let config = dir.path().join("config.toml");
        std::fs::create_dir_all(dir.path().join("hf")).expect("hf dir");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[[endpoints]]\nname = \"bench\"\nbase_url = {:?}\n\
                 [launcher]\ncommand = [{:?}]\nport_range = [{base}, {}]\n\
                 [launcher.env]\nMOCK_VLLM_START_DELAY = \"0\"\n",
                dir.path().display().to_string(),
                mock.base_url,
                bin("mock-vllm").display().to_string(),
                base + 20
            ),
        )
        .expect("write config");
        Fleet { mock, dir, config }
    }

    /// The command that starts one of our servers with this fleet's config.
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(bin(name));
        cmd.env("VLLM_MCP_CONFIG", &self.config)
            .env("VLLM_MCP_FAKE_GPUS", "2")
            // An empty Hugging Face cache: list-models scans it, and the figures should
            // not depend on what this machine has downloaded.
            .env("HF_HOME", self.dir.path().join("hf"))
            .env("RUST_LOG", "warn");
        cmd
    }

    /// The command that starts the Python peer against the same mock.
    pub fn peer_command(&self, peer: &Path) -> Command {
        let mut cmd = Command::new(peer);
        cmd.env("VLLM_BASE_URL", &self.mock.base_url)
            .current_dir(self.dir.path());
        cmd
    }
}

/// Spawn to `initialize` answer, `runs` times; the process then leaves as a client
/// would have it (stdin closed).
pub fn cold_start(mut command: impl FnMut() -> Command, runs: usize) -> Samples {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let cmd = command();
        let t = Instant::now();
        let mut w = Wire::spawn(cmd);
        w.initialize();
        times.push(t.elapsed());
        w.close(Duration::from_secs(5));
    }
    Samples::new(times)
}

/// One read call, timed `calls` times on one connection after a warm-up; the first
/// answer must be a success.
pub fn round_trips(
    w: &mut Wire,
    mut call: impl FnMut(&mut Wire) -> Value,
    calls: usize,
) -> Samples {
    let first = call(w);
    assert_ne!(first["isError"], json!(true), "{}", text_of(&first));
    for _ in 0..calls / 20 {
        call(w);
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        call(w);
        times.push(t.elapsed());
    }
    Samples::new(times)
}

/// The median of a plain HTTP GET to the mock on a kept-alive connection: the vLLM call
/// a read tool makes, for the round-trip budget.
pub fn http_get(port: u16, path: &str, calls: usize) -> Samples {
    use std::io::{BufRead, BufReader, Read, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).ok();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut once = || {
        write!(writer, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("write");
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).expect("read head");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).expect("read body");
    };
    for _ in 0..calls / 20 {
        once();
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        once();
        times.push(t.elapsed());
    }
    Samples::new(times)
}

/// Resident memory of a process, kB: all of it, and the anonymous part (heap, stacks;
/// the rest is file-backed: the pages of the binary and its libraries, shared with the
/// page cache).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub total_kb: u64,
    pub anon_kb: u64,
}

impl Rss {
    /// Reads `/proc/<pid>/status`.
    pub fn of(pid: u32) -> Rss {
        Rss {
            total_kb: status_kb(pid, "VmRSS:"),
            anon_kb: status_kb(pid, "RssAnon:"),
        }
    }
}

/// Resident memory of `pid` after it has sat idle for `idle`.
pub fn idle_rss(pid: u32, idle: Duration) -> Rss {
    std::thread::sleep(idle);
    Rss::of(pid)
}

/// What the whole-process part of the suite measured, for the rows and the ratios.
#[derive(Default)]
pub struct Figures {
    pub start: Vec<(String, Samples)>,
    /// Each read tool's round trips, and the vLLM calls it makes (paths on mock-vllm).
    pub trips: Vec<(String, Samples, &'static [&'static str])>,
    pub rss: Vec<(String, Rss)>,
    /// Plain HTTP GETs to mock-vllm, per path: the vLLM calls within a round trip.
    pub vllm_calls: Vec<(&'static str, Samples)>,
    pub peer_start: Option<Samples>,
    pub peer_trip: Option<Samples>,
    pub peer_rss: Option<Rss>,
}

/// Start-up of each server, `runs` times.
pub fn measure_start(fleet: &Fleet, runs: usize, f: &mut Figures) {
    for name in OURS {
        eprintln!("start-up: {name} x {runs}");
        let s = cold_start(|| fleet.command(name), runs);
        f.start.push((name.to_string(), s));
    }
}

/// Read-tool round trips and idle memory of each server.
pub fn measure_servers(fleet: &Fleet, calls: usize, f: &mut Figures) {
    for path in ["/v1/models", "/metrics"] {
        f.vllm_calls
            .push((path, http_get(fleet.mock.port, path, calls)));
    }

    // The model manager: one model launched (a mock-vllm server), one attached.
    let mut m = Wire::spawn(fleet.command("vllm-model-manager"));
    m.initialize();
    f.rss.push((
        "vllm-model-manager".into(),
        idle_rss(m.pid(), Duration::from_secs(2)),
    ));
    let loaded = text_of(&m.call(
        "load-model",
        json!({"model_id": "bench/launched", "wait_seconds": 60}),
    ));
    assert_eq!(loaded["status"], "loaded", "{loaded}");
    eprintln!("round trips: vllm-model-manager x {calls}");
    let s = round_trips(&mut m, |w| w.call("list-models", json!({})), calls);
    f.trips.push(("list-models".into(), s, &["/v1/models"]));
    let s = round_trips(
        &mut m,
        |w| w.call("get-model-info", json!({"model_id": "bench/launched"})),
        calls,
    );
    f.trips
        .push(("get-model-info".into(), s, &["/v1/models", "/metrics"]));
    let unloaded = text_of(&m.call("unload-model", json!({"model_id": "bench/launched"})));
    assert_eq!(unloaded["success"], true, "{unloaded}");
    m.close(Duration::from_secs(10));

    // The monitor: the attached endpoint sampled, two fake GPUs.
    let mut p = Wire::spawn(fleet.command("vllm-perf-monitor"));
    p.initialize();
    f.rss.push((
        "vllm-perf-monitor".into(),
        idle_rss(p.pid(), Duration::from_secs(2)),
    ));
    eprintln!("round trips: vllm-perf-monitor x {calls}");
    let s = round_trips(
        &mut p,
        |w| w.call("get-metrics", json!({"duration_seconds": 60})),
        calls,
    );
    f.trips.push(("get-metrics".into(), s, &[]));
    let s = round_trips(&mut p, |w| w.call("get-gpu-stats", json!({})), calls);
    f.trips.push(("get-gpu-stats (2 fake GPUs)".into(), s, &[]));
    p.close(Duration::from_secs(5));

    let mut st = Wire::spawn(fleet.command("vllm-state-persistence"));
    st.initialize();
    f.rss.push((
        "vllm-state-persistence".into(),
        idle_rss(st.pid(), Duration::from_secs(2)),
    ));
    eprintln!("round trips: vllm-state-persistence x {calls}");
    let s = round_trips(&mut st, |w| w.call("server-health", json!({})), calls);
    f.trips
        .push(("server-health (state server)".into(), s, &[]));
    let s = round_trips(&mut st, |w| w.read("vllm://state/sessions"), calls);
    f.trips
        .push(("resources/read vllm://state/sessions".into(), s, &[]));
    st.close(Duration::from_secs(5));
}

/// The Python peer: start-up, `list_models` round trips, idle memory.
pub fn measure_peer(fleet: &Fleet, peer: &Path, runs: usize, calls: usize, f: &mut Figures) {
    eprintln!("start-up: Python peer x {runs}");
    f.peer_start = Some(cold_start(|| fleet.peer_command(peer), runs));
    let mut w = Wire::spawn(fleet.peer_command(peer));
    w.initialize();
    f.peer_rss = Some(idle_rss(w.pid(), Duration::from_secs(2)));
    let first = text_of(&w.call("list_models", json!({})));
    assert!(
        first.as_str().is_some_and(|t| t.contains("bench/tiny")),
        "the peer's list_models did not reach the mock: {first}"
    );
    eprintln!("round trips: Python peer list_models x {calls}");
    f.peer_trip = Some(round_trips(
        &mut w,
        |w| w.call("list_models", json!({})),
        calls,
    ));
    w.close(Duration::from_secs(5));
}

/// The rows of these figures, with their targets.
pub fn rows(f: &Figures) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, s) in &f.start {
        rows.push(Row::target(
            format!("{name}: spawn to `initialize` answer"),
            "< 15 ms",
            median_p99(s),
            ms(s.median()) < 15.0,
        ));
    }
    for (path, s) in &f.vllm_calls {
        rows.push(Row::info(
            format!("a vLLM call alone: GET {path} on mock-vllm, kept-alive connection"),
            median_p99(s),
        ));
    }
    for (tool, s, paths) in &f.trips {
        let vllm: f64 = paths
            .iter()
            .filter_map(|p| f.vllm_calls.iter().find(|(q, _)| q == p))
            .map(|(_, s)| ms(s.median()))
            .sum();
        let calls = if paths.is_empty() {
            "no vLLM call".to_string()
        } else {
            format!("vLLM calls {} = {vllm:.2} ms", paths.join(" + "))
        };
        rows.push(Row::target(
            format!("`{tool}` round trip over stdio, one connection ({calls})"),
            "median < 1 ms + its vLLM calls",
            median_p99(s),
            ms(s.median()) < 1.0 + vllm,
        ));
    }
    for (name, r) in &f.rss {
        rows.push(Row::target(
            format!("{name}: resident memory idle (after the handshake, 2 s)"),
            "< 12 MB",
            format!(
                "{:.1} MiB ({:.1} MB), of which {:.1} MiB anonymous",
                mib(r.total_kb),
                r.total_kb as f64 * 1024.0 / 1e6,
                mib(r.anon_kb)
            ),
            (r.total_kb as f64 * 1024.0) < 12e6,
        ));
    }
    match (&f.peer_start, &f.peer_trip, f.peer_rss) {
        (Some(ps), Some(pt), Some(pr)) => {
            rows.push(Row::info(
                "Python peer: spawn to `initialize` answer",
                median_p99(ps),
            ));
            rows.push(Row::info(
                "Python peer: `list_models` round trip",
                median_p99(pt),
            ));
            rows.push(Row::info(
                "Python peer: resident memory idle",
                format!(
                    "{:.1} MiB, of which {:.1} MiB anonymous",
                    mib(pr.total_kb),
                    mib(pr.anon_kb)
                ),
            ));
            let ours_start = f
                .start
                .iter()
                .map(|(_, s)| ms(s.median()))
                .fold(0.0, f64::max);
            let x = ms(ps.median()) / ours_start;
            rows.push(Row::target(
                "start-up, theirs / ours (our slowest server)",
                ">= 30x",
                format!("{x:.1}x ({:.1} ms / {ours_start:.2} ms)", ms(ps.median())),
                x >= 30.0,
            ));
            if let Some((_, lm, _)) = f.trips.iter().find(|(t, _, _)| t == "list-models") {
                rows.push(Row::info(
                    "`list_models` / `list-models` round trip, theirs / ours",
                    format!(
                        "{:.1}x ({:.2} ms / {:.2} ms)",
                        ms(pt.median()) / ms(lm.median()),
                        ms(pt.median()),
                        ms(lm.median())
                    ),
                ));
            }
            let ours = f
                .rss
                .iter()
                .map(|(_, r)| *r)
                .max_by_key(|r| r.total_kb)
                .unwrap_or_default();
            let x = pr.total_kb as f64 / ours.total_kb.max(1) as f64;
            rows.push(Row::target(
                "idle memory, theirs / ours (our largest server)",
                ">= 5x",
                format!(
                    "{x:.1}x ({:.1} MiB / {:.1} MiB); anonymous memory {:.0}x",
                    mib(pr.total_kb),
                    mib(ours.total_kb),
                    pr.anon_kb as f64 / ours.anon_kb.max(1) as f64
                ),
                x >= 5.0,
            ));
        }
        _ => rows.push(Row::info(
            "Python peer `vllm-mcp-server`",
            "not run: pass --peer (scripts/bench.sh installs it in a venv)".into(),
        )),
    }
    rows
}
