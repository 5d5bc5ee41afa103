//! The monitor and a real Prometheus (Debian's `prometheus` package, or the binary named
//! by `VLLM_MCP_PROMETHEUS`): Prometheus scrapes the monitor's export listener, and the
//! monitor reads Prometheus (`monitor.source = "prometheus"`) scraping mock-vllm servers.
//!
//! Without a Prometheus binary these tests say so and pass, except when `CI` is set:
//! then a missing Prometheus fails them, so CI never skips them silently.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vllm_core::vllm::{EndpointSpec, VllmClient};
use vllm_mcp_testkit::{McpProcess, MockVllm, free_port, http_status, temp_dir};

/// The `prometheus` binary, or None (after saying why) when the test should be skipped.
fn prometheus_bin() -> Option<PathBuf> {
    let named = std::env::var_os("VLLM_MCP_PROMETHEUS").map(PathBuf::from);
    let found = named.or_else(|| which("prometheus"));
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but no prometheus binary was found (install Debian's prometheus package or set VLLM_MCP_PROMETHEUS)"
        );
        eprintln!(
            "skipped: no prometheus binary (install Debian's prometheus package or set VLLM_MCP_PROMETHEUS)"
        );
    }
    found
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A real Prometheus on loopback scraping `jobs` (name → `host:port` targets) every
/// second; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(bin: &Path, jobs: &[(&str, Vec<String>)]) -> Prometheus {
        let dir = temp_dir();
        let mut cfg = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, targets) in jobs {
            let t: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
            cfg.push_str(&format!(
                "  - job_name: {job:?}\n    static_configs:\n      - targets: [{}]\n",
                t.join(", ")
            ));
        }
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, cfg).unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(port, "/-/ready") != Some(200) {
            assert!(Instant::now() < deadline, "prometheus not ready in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Prometheus {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn query(&self, expr: &str) -> Vec<Value> {
        let src =
            vllm_core::monitor::promql::PromSource::new(&self.url, &Default::default()).unwrap();
        src.query(expr, vllm_core::time::unix_now())
            .await
            .unwrap()
            .into_iter()
            .map(|s| json!({"labels": s.labels, "value": s.value}))
            .collect()
    }

    /// Waits until `expr` has a series for which `ok` holds; returns its value.
    async fn wait_for(&self, expr: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.query(expr).await;
            if let Some(v) = r
                .iter()
                .filter_map(|s| s["value"].as_f64())
                .find(|v| ok(*v))
            {
                return v;
            }
            assert!(Instant::now() < deadline, "`{expr}` never held: {r:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.port;
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// A monitor config: data dir, a 0.2 s sampler, the attached endpoints, `extra` TOML.
fn config(dir: &Path, endpoints: &[(&str, &str)], extra: &str) -> PathBuf {
    let mut text = format!("data_dir = {:?}\n{extra}\n", dir.display().to_string());
    for (name, url) in endpoints {
        text.push_str(&format!(
            "[[endpoints]]\nname = {name:?}\nbase_url = {url:?}\n"
        ));
    }
    let file = dir.join("config.toml");
    std::fs::write(&file, text).unwrap();
    file
}

async fn monitor(config: &Path, gpus: &str) -> McpProcess {
    McpProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_vllm-perf-monitor")),
        &[
            ("VLLM_MCP_CONFIG", config.to_str().unwrap()),
            ("VLLM_MCP_FAKE_GPUS", gpus),
        ],
    )
    .await
}

/// Sends `n` completions of `max_tokens` tokens to `model`.
async fn traffic(url: &str, model: &str, n: usize, max_tokens: u64) -> u64 {
    let c = VllmClient::new(EndpointSpec::new("t", url, &Default::default())).unwrap();
    let mut generated = 0;
    for i in 0..n {
        let r = c
            .completion(
                &json!({"model": model, "prompt": format!("hello {i}"), "max_tokens": max_tokens}),
            )
            .await
            .unwrap();
        generated += r["usage"]["completion_tokens"].as_u64().unwrap();
    }
    generated
}

fn get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Waits until something answers `/metrics` on `port`.
async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_status(port, "/metrics") != Some(200) {
        assert!(Instant::now() < deadline, "no listener on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_export_listener() {
    let Some(bin) = prometheus_bin() else { return };
    let a = MockVllm::start(&["mock/a", "--served-model-name", "a"], &[]);
    let dir = temp_dir();
    let port = free_port();
    let cfg = config(
        dir.path(),
        &[("ep-a", &a.base_url)],
        &format!(
            "[monitor]\nsample_interval_seconds = 0.2\n[monitor.alerts.endpoint_down]\nfor_seconds = 0.5\n\
             [prometheus]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    let m = monitor(&cfg, "2").await;
    wait_listening(port).await;

    // The body is valid exposition text by Prometheus's own linter, where it is installed.
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200);
    if let Some(promtool) = which("promtool") {
        let mut p = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{body}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let prom = Prometheus::start(&bin, &[("vllm-mcp", vec![format!("127.0.0.1:{port}")])]);
    prom.wait_for(r#"up{job="vllm-mcp"}"#, |v| v == 1.0).await;
    let generated = traffic(&a.base_url, "a", 6, 5).await;
    assert_eq!(generated, 30);

    // GPU gauges are what get-gpu-stats says of the same (fake) GPUs.
    let gpus = m.call("get-gpu-stats", json!({})).await;
    assert!(!gpus.is_error, "{}", gpus.json);
    for g in gpus.json["gpus"].as_array().unwrap() {
        let id = g["id"].as_u64().unwrap();
        let total = g["memory"]["total_mb"].as_f64().unwrap() * 1024.0 * 1024.0;
        let v = prom
            .wait_for(
                &format!(r#"vllm_mcp_gpu_memory_total_bytes{{gpu="{id}"}}"#),
                |_| true,
            )
            .await;
        assert_eq!(v, total, "gpu {id}");
    }
    assert_eq!(prom.query("vllm_mcp_gpu_available").await[0]["value"], 1.0);

    // The traffic shows as a per-model rate: 30 tokens over the span the samples cover
    // (both gauges come from one scrape of the listener).
    prom.wait_for(r#"vllm_mcp_endpoint_up{endpoint="ep-a"}"#, |v| v == 1.0)
        .await;
    let tokens = prom
        .wait_for(
            r#"vllm_mcp_model_generation_tokens_per_second{endpoint="ep-a",model="a"} * on (endpoint, model) vllm_mcp_model_window_covered_seconds"#,
            |v| v > 29.0,
        )
        .await;
    assert!(
        (tokens - 30.0).abs() < 0.01,
        "{tokens} tokens in the window"
    );
    let p50 = prom
        .wait_for(
            r#"vllm_mcp_model_e2e_latency_seconds{model="a",quantile="0.5"}"#,
            |v| v > 0.0,
        )
        .await;
    assert!(p50 < 10.0, "{p50}");

    // The endpoint going down: its up gauge drops to 0 and the alert shows as firing.
    drop(a);
    prom.wait_for(r#"vllm_mcp_endpoint_up{endpoint="ep-a"}"#, |v| v == 0.0)
        .await;
    prom.wait_for(
        r#"vllm_mcp_alert_active{rule="endpoint_down",state="firing"}"#,
        |v| v == 1.0,
    )
    .await;
    prom.wait_for("vllm_mcp_alerts_firing", |v| v >= 1.0).await;
    m.close().await;
}

#[tokio::test]
async fn the_listener_moves_to_another_instance_when_its_holder_is_killed() {
    let dir = temp_dir();
    let port = free_port();
    let cfg = config(
        dir.path(),
        &[],
        &format!(
            "[monitor]\nsample_interval_seconds = 0.2\n[prometheus]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    let m1 = monitor(&cfg, "1").await;
    wait_listening(port).await;
    let m2 = monitor(&cfg, "1").await;
    // One listener for both: the second instance could not bind, nor did it try.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get(port, "/metrics").0, 200);
    unsafe {
        libc::kill(m1.pid as i32, libc::SIGKILL);
    }
    let killed = Instant::now();
    // The socket closed with the holder; the other instance takes the lease and binds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http_status(port, "/metrics") == Some(200)
            && killed.elapsed() > Duration::from_millis(200)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no instance took over the listener"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = get(port, "/metrics");
    assert!(body.contains("vllm_mcp_gpu_available 1"), "{body}");
    m2.close().await;
}

#[tokio::test]
async fn source_prometheus_reads_mock_vllm_servers_through_a_real_prometheus() {
    let Some(bin) = prometheus_bin() else { return };
    let a = MockVllm::start(&["mock/a", "--served-model-name", "a"], &[]);
    let b = MockVllm::start(&["mock/b", "--served-model-name", "b"], &[]);
    let prom = Prometheus::start(
        &bin,
        &[("vllm", vec![host_port(&a.base_url), host_port(&b.base_url)])],
    );
    prom.wait_for(r#"count(up{job="vllm"} == 1)"#, |v| v == 2.0)
        .await;
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        &[],
        &format!(
            "[monitor]\nsample_interval_seconds = 0.5\nsource = \"prometheus\"\nprometheus_url = {:?}\n",
            prom.url
        ),
    );
    let m = monitor(&cfg, "2").await;

    // Some samples before the traffic, so that extrapolation to the window's edges stays
    // small against the series' span.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let ga = traffic(&a.base_url, "a", 6, 5).await;
    let gb = traffic(&b.base_url, "b", 4, 3).await;
    assert_eq!((ga, gb), (30, 12));
    prom.wait_for(r#"sum(vllm:request_success_total)"#, |v| v == 10.0)
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;

    let r = m
        .call(
            "get-metrics",
            json!({"duration_seconds": 30, "per_model": true, "include_history": true, "max_points": 10}),
        )
        .await;
    assert!(!r.is_error, "{}", r.json);
    let j = &r.json;
    let near = |v: &Value, want: f64, tol: f64| {
        let v = v.as_f64().unwrap_or(f64::NAN);
        assert!(
            (v - want).abs() <= tol * want,
            "{v} is not {want} ± {tol}: {j}"
        );
    };
    // Prometheus extrapolates increase() past the first and last sample: within 15 %.
    near(&j["metrics"]["requests"]["total"], 10.0, 0.15);
    assert_eq!(j["metrics"]["requests"]["failed"], 0, "{j}");
    near(&j["per_model"]["a"]["requests"]["total"], 6.0, 0.2);
    near(&j["per_model"]["b"]["requests"]["total"], 4.0, 0.25);
    let tps = j["metrics"]["throughput"]["tokens_per_second"]
        .as_f64()
        .unwrap();
    near(&json!(tps * 30.0), 42.0, 0.15);
    let lat = &j["metrics"]["latency"];
    assert!(lat["p50_ms"].as_f64().unwrap() > 0.0, "{lat}");
    assert!(lat["p99_ms"].as_f64().unwrap() >= lat["p50_ms"].as_f64().unwrap());
    assert!(
        lat["time_to_first_token"]["p50_ms"].as_f64().is_some(),
        "{lat}"
    );
    let covered = j["window_covered_seconds"].as_f64().unwrap();
    assert!(covered > 10.0 && covered <= 30.0, "{covered}");
    assert!(j["samples"].as_u64().unwrap() >= 20, "{j}");
    assert_eq!(
        j["sample_interval_seconds"], 1.0,
        "Prometheus's scrape interval"
    );
    assert!(j["notes"][0].as_str().unwrap().contains("PromQL"), "{j}");
    // Memory and GPUs are still this host's.
    assert_eq!(j["metrics"]["gpu"]["count"], 2, "{j}");
    assert!(
        j["metrics"]["memory"]["kv_cache_usage"].as_f64().is_some(),
        "{j}"
    );
    let eps = j["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2, "{j}");
    assert!(
        eps.iter()
            .all(|e| e["up"] == true && e["origin"] == "prometheus job vllm")
    );
    assert_eq!(j["per_model"]["a"]["endpoint"], host_port(&a.base_url));
    assert_eq!(j["per_model"]["a"]["base_url"], a.base_url);
    let h = &j["history"];
    assert!(
        !h["tokens_per_second"].as_array().unwrap().is_empty(),
        "{h}"
    );
    assert!(h["tokens_per_second"].as_array().unwrap().len() <= 10);

    // A server going down is Prometheus's target health.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = m
            .call("get-metrics", json!({"metrics": ["requests"]}))
            .await;
        let eps = r.json["endpoints"].as_array().unwrap().clone();
        if eps.iter().any(|e| e["up"] == false) {
            break;
        }
        assert!(Instant::now() < deadline, "b never seen down: {}", r.json);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // An unreachable Prometheus is an answer with a stable code, not a hang.
    drop(prom);
    let r = m.call("get-metrics", json!({})).await;
    assert!(r.is_error);
    assert_eq!(r.code(), Some("BACKEND_UNREACHABLE"), "{}", r.json);
    m.close().await;
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Every `prefix…` metric name in `text` (names are `[a-z_:]`).
fn metric_names(text: &str, prefix: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// A histogram's series name, as its family.
fn family_of(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[tokio::test]
async fn the_example_prometheus_files_pass_promtool_and_name_real_metrics() {
    // The rules name vLLM's metrics: every one is one mock-vllm (faithful to vLLM) exports.
    let rules = std::fs::read_to_string(examples().join("prometheus/vllm-alerts.yml")).unwrap();
    let mock = MockVllm::start(&["mock/r", "--served-model-name", "r"], &[]);
    let (_, exposition) = get(mock.port, "/metrics");
    for name in metric_names(&rules, "vllm:") {
        let family = family_of(&name);
        assert!(
            exposition.contains(&format!("# TYPE {family} ")),
            "{name} of vllm-alerts.yml is not a vLLM metric"
        );
    }
    let body = vllm_core::monitor::export::render(&Default::default());
    for name in metric_names(&rules, "vllm_mcp_") {
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} is not exported"
        );
    }
    let Some(promtool) = which("promtool") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but promtool is missing"
        );
        eprintln!("skipped the promtool check: no promtool");
        return;
    };
    // `check config` checks the rule files it names too.
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(examples().join("prometheus/prometheus.yml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("8 rules found"), "{text}");
}

#[test]
fn every_metric_of_the_grafana_dashboard_is_exported() {
    let text = std::fs::read_to_string(examples().join("grafana/vllm-mcp-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let body = vllm_core::monitor::export::render(&Default::default());
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut queried = 0;
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id {}",
            p["id"]
        );
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{p}"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names = metric_names(expr, "vllm_mcp_");
            assert!(!names.is_empty(), "{expr}");
            for n in names {
                assert!(
                    body.contains(&format!("# TYPE {n} ")),
                    "{n} of {} is not exported",
                    p["title"]
                );
            }
            queried += 1;
        }
    }
    assert!(queried >= 20, "{queried}");
    // Every exported family is on the dashboard, save the bookkeeping ones.
    let shown = metric_names(&text, "vllm_mcp_");
    for family in metric_names(&body, "vllm_mcp_") {
        let family = family.trim_end_matches("_mean");
        if [
            "vllm_mcp_build_info",
            "vllm_mcp_window_seconds",
            "vllm_mcp_sample_interval_seconds",
            "vllm_mcp_gpu_available",
            "vllm_mcp_model_window_covered_seconds",
            "vllm_mcp_model_kv_cache_memory_bytes",
        ]
        .contains(&family)
        {
            continue;
        }
        assert!(
            shown.contains(family),
            "{family} is exported but not on the dashboard"
        );
    }
}
