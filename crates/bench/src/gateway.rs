//! The front door beside the other OpenAI proxies, over one mock-vllm: the latency each
//! adds to a non-streamed chat (p50, p99) and to a stream's first chunk, requests per
//! second at 64 concurrent clients, the proxy's memory idle and under that load, and what
//! a start on demand adds to the server's own start-up.
//!
//! Our door is `vllm-model-manager --gateway`; `vllm-router` (vLLM's production-stack
//! router) and LiteLLM's proxy run when `scripts/bench.sh` installed them. Requests to the
//! targets are interleaved one by one, so a drift of the machine touches all alike.

use crate::servers::Rss;
use crate::table::{Row, Samples, mib, ms};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vllm_mcp_testkit::{MockVllm, bin, free_port, http_status};

/// The model the mock serves.
const MODEL: &str = "bench/tiny";

/// Concurrent clients of the throughput figure.
pub const CLIENTS: usize = 64;

/// How long each target is loaded for the throughput figure.
const LOAD_FOR: Duration = Duration::from_secs(5);

/// The competing proxies' entry points, when installed.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    pub router: Option<PathBuf>,
    pub litellm: Option<PathBuf>,
}

/// A proxy process (or the backend itself, `child: None`) and its port.
struct Target {
    name: &'static str,
    port: u16,
    child: Option<Child>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            // SAFETY: a signal to the group of a child we started.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

impl Target {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Spawns `cmd` in its own group and waits until `health` answers 200.
fn spawn(name: &'static str, mut cmd: Command, port: u16, health: &str) -> Option<Target> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let child = cmd.spawn().ok()?;
    let t = Target {
        name,
        port,
        child: Some(child),
    };
    let started = Instant::now();
    while http_status(port, health) != Some(200) {
        if started.elapsed() > Duration::from_secs(90) {
            eprintln!("gateway: {name} did not become healthy; left out");
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(t)
}

/// Our door over `mock`, as an attached endpoint, with a catalog of cold models for
/// the start figure.
fn our_door(dir: &Path, mock: &MockVllm) -> Option<Target> {
    let port = free_port();
    let base = free_port().clamp(20_000, 60_000);
    let mut text = format!(
        "data_dir = {:?}\n[[endpoints]]\nname = \"bench\"\nbase_url = {:?}\n\
         [gateway]\nlisten = \"127.0.0.1:{port}\"\n\
         [launcher]\ncommand = [{:?}]\nport_range = [{base}, {}]\n\
         [launcher.env]\nMOCK_VLLM_START_DELAY = {START_DELAY:?}\n",
        dir.display().to_string(),
        mock.base_url,
        bin("mock-vllm").display().to_string(),
        base + 20
    );
    for i in 0..START_RUNS {
        text.push_str(&format!("[catalog.cold{i}]\nsource = \"bench/cold{i}\"\n"));
    }
    let config = dir.join("config.toml");
    std::fs::write(&config, text).ok()?;
    let mut cmd = Command::new(bin("vllm-model-manager"));
    cmd.arg("--gateway")
        .env("VLLM_MCP_CONFIG", &config)
        .env("VLLM_MCP_FAKE_GPUS", "none")
        .env("HF_HOME", dir.join("hf"))
        .env("RUST_LOG", "warn");
    spawn("vllm-mcp gateway", cmd, port, "/health")
}

fn router(entry: &Path, mock: &MockVllm) -> Option<Target> {
    let port = free_port();
    let mut cmd = Command::new(entry);
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--worker-urls", &mock.base_url, "--policy", "round_robin"])
        .args(["--log-level", "warning"]);
    spawn("vllm-router", cmd, port, "/health")
}

fn litellm(entry: &Path, dir: &Path, mock: &MockVllm) -> Option<Target> {
    let port = free_port();
    let config = dir.join("litellm.yaml");
    let yaml = format!(
        "model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n      \
         api_base: {}/v1\n      api_key: none\n",
        mock.base_url
    );
    std::fs::write(&config, yaml).ok()?;
    let mut cmd = Command::new(entry);
    cmd.args(["--config", &config.display().to_string()])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env("LITELLM_LOG", "ERROR")
        // A loopback benchmark: no master key (LiteLLM refuses to start without one).
        .env(
            "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY",
            "true",
        );
    spawn("LiteLLM proxy", cmd, port, "/health/liveliness")
}

fn chat_body(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1,
        "stream": stream,
    })
}

/// One request: until the whole answer (non-streamed) or its first chunk (streamed).
async fn once(http: &reqwest::Client, port: u16, stream: bool) -> Option<Duration> {
    let t = Instant::now();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let mut r = http.post(url).json(&chat_body(stream)).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    if stream {
        r.chunk().await.ok()??;
        let took = t.elapsed();
        while r.chunk().await.ok()?.is_some() {}
        Some(took)
    } else {
        r.bytes().await.ok()?;
        Some(t.elapsed())
    }
}

/// `calls` requests to each target, interleaved; the samples per target.
async fn interleaved(targets: &[&Target], calls: usize, stream: bool) -> Vec<Samples> {
    let http = reqwest::Client::new();
    for t in targets {
        for _ in 0..20 {
            once(&http, t.port, stream).await;
        }
    }
    let mut times = vec![Vec::with_capacity(calls); targets.len()];
    for _ in 0..calls {
        for (i, t) in targets.iter().enumerate() {
            if let Some(d) = once(&http, t.port, stream).await {
                times[i].push(d);
            }
        }
    }
    times.into_iter().map(Samples::new).collect()
}

/// Requests per second at [`CLIENTS`] concurrent clients, and the peak resident memory
/// of the target's process group meanwhile.
async fn throughput(t: &Target) -> (f64, Option<u64>) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    let deadline = Instant::now() + LOAD_FOR;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (http, port) = (http.clone(), t.port);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                if once(&http, port, false).await.is_some() {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut peak = None;
    while Instant::now() < deadline {
        if let Some(pid) = t.pid() {
            let kb = group_rss_kb(pid);
            peak = Some(peak.unwrap_or(0).max(kb));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut done = 0;
    for task in tasks {
        done += task.await.unwrap_or(0);
    }
    (done as f64 / LOAD_FOR.as_secs_f64(), peak)
}

/// Resident memory of a process group (a Python proxy may run workers), kB.
fn group_rss_kb(pgid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut kb = 0;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: getpgid only reads.
        if unsafe { libc::getpgid(pid) } == pgid as i32 {
            kb += Rss::of(pid as u32).total_kb;
        }
    }
    kb
}

/// Cold starts measured for the start-on-demand figure.
const START_RUNS: usize = 5;

/// The mock's start-up (port bound, not yet listening), the same both ways.
const START_DELAY: &str = "0.3";

/// The server's own start (spawn to healthy), and a first request through the door for a
/// model not loaded (request to answer), `START_RUNS` times each.
async fn start_on_demand(door: &Target) -> (Samples, Samples) {
    let mut own = Vec::new();
    for i in 0..START_RUNS {
        let t = Instant::now();
        let m = MockVllm::start(
            &[&format!("bench/own{i}")],
            &[("MOCK_VLLM_START_DELAY", START_DELAY)],
        );
        own.push(t.elapsed());
        drop(m);
    }
    let http = reqwest::Client::new();
    let mut through = Vec::new();
    for i in 0..START_RUNS {
        let t = Instant::now();
        let body = serde_json::json!({"model": format!("cold{i}"), "max_tokens": 1,
            "messages": [{"role": "user", "content": "Hi"}]});
        let url = format!("http://127.0.0.1:{}/v1/chat/completions", door.port);
        match http.post(url).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                through.push(t.elapsed());
            }
            other => eprintln!("gateway: cold{i} did not start: {other:?}"),
        }
    }
    (Samples::new(own), Samples::new(through))
}

/// Stops the servers the door launched (each in its own process group, so they outlive
/// the door), by the store's records.
fn stop_launched(dir: &Path) {
    let Ok(store) = vllm_core::store::Store::open(&dir.join(vllm_core::store::DB_FILE_NAME)) else {
        return;
    };
    for r in vllm_core::models::list(&store).unwrap_or_default() {
        if let Some(pid) = r.pid.filter(|_| r.status.is_active()) {
            // SAFETY: a signal to the group of a server this benchmark had launched.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }
}

/// The section's rows.
pub async fn rows(peers: &Peers, calls: usize) -> Vec<Row> {
    vllm_core::vllm::install_tls_provider();
    let mock = MockVllm::start(&[MODEL], &[("MOCK_VLLM_TOKEN_LATENCY_MS", "0")]);
    let dir = vllm_mcp_testkit::temp_dir();
    let _ = std::fs::create_dir_all(dir.path().join("hf"));
    let direct = Target {
        name: "direct",
        port: mock.port,
        child: None,
    };
    let mut targets = vec![direct];
    targets.extend(our_door(dir.path(), &mock));
    if let Some(e) = &peers.router {
        targets.extend(router(e, &mock));
    }
    if let Some(e) = &peers.litellm {
        targets.extend(litellm(e, dir.path(), &mock));
    }
    let idle: Vec<Option<u64>> = targets.iter().map(|t| t.pid().map(group_rss_kb)).collect();
    let refs: Vec<&Target> = targets.iter().collect();
    eprintln!(
        "gateway: {calls} chats and {} streams through each of {} targets",
        calls / 2,
        refs.len()
    );
    let whole = interleaved(&refs, calls, false).await;
    let first = interleaved(&refs, calls / 2, true).await;
    let mut loaded = Vec::new();
    for t in &targets {
        eprintln!(
            "gateway: {CLIENTS} clients on {} for {} s",
            t.name,
            LOAD_FOR.as_secs()
        );
        loaded.push(throughput(t).await);
    }
    let (own, cold) = match targets.iter().find(|t| t.name == "vllm-mcp gateway") {
        Some(door) => start_on_demand(door).await,
        None => (Samples::new(vec![]), Samples::new(vec![])),
    };
    stop_launched(dir.path());
    let figures = Figures {
        names: targets.iter().map(|t| t.name).collect(),
        whole,
        first,
        loaded,
        idle,
        own,
        cold,
    };
    figures.rows()
}

/// What the section measured, per target (the first is the backend itself).
struct Figures {
    names: Vec<&'static str>,
    whole: Vec<Samples>,
    first: Vec<Samples>,
    loaded: Vec<(f64, Option<u64>)>,
    idle: Vec<Option<u64>>,
    own: Samples,
    cold: Samples,
}

impl Figures {
    /// Added time at quantile `q` over the direct request, ms.
    fn added(s: &[Samples], i: usize, q: f64) -> f64 {
        ms(s[i].quantile(q)) - ms(s[0].quantile(q))
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| *n == name)
    }

    fn rows(&self) -> Vec<Row> {
        let mut out = vec![Row::info(
            "a non-streamed chat straight to mock-vllm (1 token)",
            format!(
                "p50 {:.3} ms, p99 {:.3} ms; {:.0} req/s at {CLIENTS} clients",
                ms(self.whole[0].median()),
                ms(self.whole[0].quantile(0.99)),
                self.loaded[0].0
            ),
        )];
        let ours = self.index("vllm-mcp gateway");
        let router = self.index("vllm-router");
        let litellm = self.index("LiteLLM proxy");
        for i in 1..self.names.len() {
            out.extend(self.target_rows(i, ours, router, litellm));
        }
        if ours.is_some() {
            let added = ms(self.cold.median()) - ms(self.own.median());
            out.push(Row::target(
                "a start on demand: first answer through the door minus the server's own start",
                "≤ 50 ms",
                format!(
                    "{added:.1} ms (own start median {:.0} ms, through the door {:.0} ms, n={})",
                    ms(self.own.median()),
                    ms(self.cold.median()),
                    self.cold.len()
                ),
                !self.cold.is_empty() && added <= 50.0,
            ));
        }
        out
    }

    fn target_rows(
        &self,
        i: usize,
        ours: Option<usize>,
        router: Option<usize>,
        litellm: Option<usize>,
    ) -> Vec<Row> {
        let name = self.names[i];
        let p50 = Self::added(&self.whole, i, 0.5);
        let p99 = Self::added(&self.whole, i, 0.99);
        let ttft = Self::added(&self.first, i, 0.5);
        let (rps, peak) = self.loaded[i];
        let latency = format!(
            "p50 +{p50:.3} ms, p99 +{p99:.3} ms (n={})",
            self.whole[i].len()
        );
        let mut rows = Vec::new();
        if Some(i) == ours {
            let router_p50 = router.map(|r| Self::added(&self.whole, r, 0.5));
            rows.push(Row::target(
                format!("{name}: added latency, non-streamed chat"),
                "p50 ≤ 0.25 ms and ≤ vllm-router's",
                latency,
                p50 <= 0.25 && router_p50.is_none_or(|r| p50 <= r),
            ));
            let floor = [
                router.map(|r| self.loaded[r].0),
                litellm.map(|l| self.loaded[l].0 * 5.0),
            ];
            let need = floor.into_iter().flatten().fold(0.0, f64::max);
            rows.push(Row::target(
                format!("{name}: requests/s at {CLIENTS} clients"),
                "≥ vllm-router's and ≥ 5× LiteLLM's",
                format!("{rps:.0} req/s"),
                rps >= need,
            ));
        } else {
            rows.push(Row::info(
                format!("{name}: added latency, non-streamed chat"),
                latency,
            ));
            rows.push(Row::info(
                format!("{name}: requests/s at {CLIENTS} clients"),
                format!("{rps:.0} req/s"),
            ));
        }
        rows.push(Row::info(
            format!("{name}: added time to a stream's first chunk"),
            format!("p50 +{ttft:.3} ms (n={})", self.first[i].len()),
        ));
        let mem = |kb: Option<u64>| kb.map_or("-".to_string(), |k| format!("{:.1} MiB", mib(k)));
        rows.push(Row::info(
            format!("{name}: resident memory (process group)"),
            format!("idle {}, under load {}", mem(self.idle[i]), mem(peak)),
        ));
        rows
    }
}
