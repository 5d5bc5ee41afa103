//! The performance monitor through a real MCP client: mock-vllm servers attached through
//! the config, known traffic sent to them, and the figures checked against it.
//!
//! Every test has its own data directory (store) and its own mocks; the sampler runs
//! every 0.2 s.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vllm_core::launch_args::LaunchArgs;
use vllm_core::models::{ModelRecord, ModelStatus};
use vllm_core::monitor::history;
use vllm_core::store::Store;
use vllm_core::vllm::{EndpointSpec, VllmClient};
use vllm_mcp_testkit::{Answer, McpProcess, MockVllm, bin, free_port, http_status, temp_dir};

const INTERVAL: f64 = 0.2;

struct Rig {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Rig {
    /// A config with these attached endpoints (name, base URL) and `extra` TOML.
    fn new(endpoints: &[(&str, &str)], extra: &str) -> Rig {
        let dir = temp_dir();
        let config = dir.path().join("config.toml");
        let mut text = format!(
            "data_dir = {:?}\n[monitor]\nsample_interval_seconds = {INTERVAL}\n{extra}\n",
            dir.path().display().to_string()
        );
        for (name, url) in endpoints {
            text.push_str(&format!(
                "[[endpoints]]\nname = {name:?}\nbase_url = {url:?}\n"
            ));
        }
        std::fs::write(&config, text).unwrap();
        Rig { dir, config }
    }

    async fn monitor(&self, gpus: &str) -> McpProcess {
        McpProcess::spawn(
            Path::new(env!("CARGO_BIN_EXE_vllm-perf-monitor")),
            &[
                ("VLLM_MCP_CONFIG", self.config.to_str().unwrap()),
                ("VLLM_MCP_FAKE_GPUS", gpus),
            ],
        )
        .await
    }

    fn store(&self) -> Store {
        Store::open(&self.dir.path().join("vllm-mcp.db")).unwrap()
    }

    /// Waits until `endpoint` has at least `n` samples in the store.
    async fn wait_samples(&self, endpoint: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let store = self.store();
        while history::count(&store, Some(endpoint)).unwrap() < n {
            assert!(Instant::now() < deadline, "no {n} samples of {endpoint}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for `n` more samples of `endpoint` than it has now.
    async fn wait_more_samples(&self, endpoint: &str, n: u64) {
        let now = history::count(&self.store(), Some(endpoint)).unwrap();
        self.wait_samples(endpoint, now + n).await;
    }
}

fn client(url: &str) -> VllmClient {
    VllmClient::new(EndpointSpec::new("t", url, &Default::default())).unwrap()
}

/// Sends `n` completions of `max_tokens` to `model`; returns (prompt, generated) tokens.
async fn traffic(url: &str, model: &str, n: usize, max_tokens: u64) -> (u64, u64) {
    let c = client(url);
    let (mut p, mut g) = (0, 0);
    for i in 0..n {
        let r = c
            .completion(&json!({"model": model, "prompt": format!("hello number {i}"), "max_tokens": max_tokens}))
            .await
            .unwrap();
        p += r["usage"]["prompt_tokens"].as_u64().unwrap();
        g += r["usage"]["completion_tokens"].as_u64().unwrap();
    }
    (p, g)
}

fn code(a: &Answer) -> &str {
    a.code().unwrap_or("OK")
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1.0)
}

#[tokio::test]
async fn rates_and_counts_match_the_traffic_sent() {
    let a = MockVllm::start(&["mock/a", "--served-model-name", "a"], &[]);
    let b = MockVllm::start(&["mock/b", "--served-model-name", "b"], &[]);
    let rig = Rig::new(&[("ep-a", &a.base_url), ("ep-b", &b.base_url)], "");
    let m = rig.monitor("2").await;
    rig.wait_samples("ep-a", 2).await;
    rig.wait_samples("ep-b", 2).await;

    let (pa, ga) = traffic(&a.base_url, "a", 6, 5).await;
    let (_, gb) = traffic(&b.base_url, "b", 4, 3).await;
    assert_eq!(ga, 30);
    assert_eq!(gb, 12);
    rig.wait_more_samples("ep-a", 3).await;
    rig.wait_more_samples("ep-b", 3).await;

    let t = Instant::now();
    let r = m
        .call(
            "get-metrics",
            json!({"duration_seconds": 60, "per_model": true, "include_history": true, "max_points": 20}),
        )
        .await;
    let took = t.elapsed();
    assert!(!r.is_error, "{}", r.json);
    let j = &r.json;
    assert_eq!(j["duration_seconds"], 60.0);
    assert!(j["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(j["window_covered_seconds"].as_f64().unwrap() > 0.5, "{j}");
    let req = &j["metrics"]["requests"];
    assert_eq!(req["total"], 10, "{j}");
    assert_eq!(req["successful"], 10);
    assert_eq!(req["failed"], 0);
    assert_eq!(req["error_rate"], 0.0);
    assert_eq!(req["by_reason"]["length"], 10, "{req}");

    let pm = &j["per_model"]["a"];
    assert_eq!(pm["endpoint"], "ep-a");
    assert_eq!(pm["requests"]["total"], 6);
    assert_eq!(pm["latency"]["requests_observed"], 6);
    // The rate times the span the model's samples cover is what was generated.
    let span = pm["window_covered_seconds"].as_f64().unwrap();
    let tps = pm["throughput"]["tokens_per_second"].as_f64().unwrap();
    assert!(close(tps * span, ga as f64, 0.01), "{tps} × {span} vs {ga}");
    let pps = pm["throughput"]["prompt_tokens_per_second"]
        .as_f64()
        .unwrap();
    assert!(close(pps * span, pa as f64, 0.01), "{pps} × {span} vs {pa}");
    let rps = pm["throughput"]["requests_per_second"].as_f64().unwrap();
    assert!(close(rps * span, 6.0, 0.01));
    assert_eq!(j["per_model"]["b"]["requests"]["total"], 4);

    // The fleet rate is the sum of the models' rates.
    let fleet = j["metrics"]["throughput"]["tokens_per_second"]
        .as_f64()
        .unwrap();
    let sb = j["per_model"]["b"]["throughput"]["tokens_per_second"]
        .as_f64()
        .unwrap();
    assert!(close(fleet, tps + sb, 0.001));
    let lat = &j["metrics"]["latency"];
    for k in ["p50_ms", "p95_ms", "p99_ms", "avg_ms"] {
        let v = lat[k].as_f64().unwrap_or_else(|| panic!("{k}: {lat}"));
        assert!(v > 0.0 && v < 10_000.0, "{k} = {v}");
        assert!(lat["time_to_first_token"][k].is_number(), "{lat}");
        assert!(lat["inter_token_latency"].get(k).is_some());
        assert!(lat["queue_time"][k].is_number());
    }
    assert!(lat["p50_ms"].as_f64() <= lat["p99_ms"].as_f64());
    assert_eq!(lat["requests_observed"], 10);
    assert!(j["metrics"]["throughput"]["avg_batch_size"].is_number());
    let mem = &j["metrics"]["memory"];
    assert_eq!(mem["gpu_total_mb"], 2 * 81_920);
    assert_eq!(mem["gpu_used_mb"], 0);
    assert_eq!(mem["gpu_utilization"], 0.0);
    assert!(mem["kv_cache_usage"].is_number());
    assert!(mem["system_ram_mb"].is_number());
    assert_eq!(j["metrics"]["gpu"]["count"], 2);

    let eps = j["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    for e in eps {
        assert_eq!(e["up"], true, "{e}");
        assert_eq!(e["origin"], "attached");
        assert!(e["last_sample_at"].as_str().unwrap().ends_with('Z'));
        assert!(e["error"].is_null());
    }

    let h = j["history"].as_object().unwrap();
    for name in [
        "tokens_per_second",
        "requests_per_second",
        "latency_avg_ms",
        "kv_cache_usage",
        "gpu_utilization",
    ] {
        let pts = h[name].as_array().unwrap_or_else(|| panic!("{name}"));
        assert!(!pts.is_empty() && pts.len() <= 20, "{name}: {}", pts.len());
        assert!(pts[0][0].as_str().unwrap().ends_with('Z'));
    }
    // The history's requests add up to what was sent: rate × bin width, summed.
    let rps_pts = h["requests_per_second"].as_array().unwrap();
    assert!(rps_pts.iter().any(|p| p[1].as_f64().unwrap() > 0.0));

    // The seed spec's own example call answers with its example's groups, `requests`
    // among them: the counts behind the throughput's rates.
    let r = m
        .call(
            "get-metrics",
            json!({"duration_seconds": 60, "include_history": true,
                   "metrics": ["throughput", "latency", "memory", "gpu"]}),
        )
        .await;
    assert!(!r.is_error, "{}", r.json);
    let groups = r.json["metrics"].as_object().unwrap();
    let names: Vec<&str> = groups.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["gpu", "latency", "memory", "requests", "throughput"]
    );
    assert_eq!(r.json["metrics"]["requests"]["total"], 10, "{}", r.json);

    // A subset of groups.
    let r = m
        .call(
            "get-metrics",
            json!({"metrics": ["latency"], "duration_seconds": "1m"}),
        )
        .await;
    assert!(!r.is_error, "{}", r.json);
    let groups = r.json["metrics"].as_object().unwrap();
    assert_eq!(groups.keys().collect::<Vec<_>>(), vec!["latency"]);
    assert!(took < Duration::from_secs(2), "get-metrics took {took:?}");
    m.close().await;
}

/// A mock-vllm on a given port, so it can be restarted on the same one.
fn mock_on(port: u16, model: &str) -> Child {
    use std::os::unix::process::CommandExt;
    let child = Command::new(bin("mock-vllm"))
        .args([
            "serve",
            &format!("mock/{model}"),
            "--served-model-name",
            model,
        ])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env("MOCK_VLLM_START_DELAY", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_status(port, "/health") != Some(200) {
        assert!(Instant::now() < deadline, "mock on {port} not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn kill(mut c: Child) {
    unsafe {
        libc::kill(-(c.id() as i32), libc::SIGKILL);
    }
    let _ = c.wait();
}

#[tokio::test]
async fn a_restarted_server_inside_the_window_is_counted_across_the_reset() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let first = mock_on(port, "r");
    let rig = Rig::new(&[("ep", &url)], "");
    let m = rig.monitor("1").await;
    rig.wait_samples("ep", 2).await;
    traffic(&url, "r", 3, 4).await;
    rig.wait_more_samples("ep", 3).await;
    kill(first);
    rig.wait_more_samples("ep", 2).await; // failed scrapes
    let second = mock_on(port, "r");
    traffic(&url, "r", 2, 4).await;
    rig.wait_more_samples("ep", 3).await;

    let r = m
        .call(
            "get-metrics",
            json!({"duration_seconds": 120, "per_model": true}),
        )
        .await;
    assert!(!r.is_error, "{}", r.json);
    let j = &r.json;
    assert_eq!(j["metrics"]["requests"]["total"], 5, "{j}");
    assert_eq!(j["per_model"]["r"]["restarts"], 1, "{j}");
    assert_eq!(j["metrics"]["latency"]["requests_observed"], 5);
    let span = j["per_model"]["r"]["window_covered_seconds"]
        .as_f64()
        .unwrap();
    let tps = j["per_model"]["r"]["throughput"]["tokens_per_second"]
        .as_f64()
        .unwrap();
    assert!(close(tps * span, 20.0, 0.01), "{tps} × {span}");
    assert!(
        j["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("restarted")),
        "{j}"
    );
    assert_eq!(j["endpoints"][0]["up"], true);
    kill(second);
    m.close().await;
}

#[tokio::test]
async fn history_survives_a_monitor_restart_and_two_monitors_sample_once() {
    let a = MockVllm::start(&["mock/h", "--served-model-name", "h"], &[]);
    let rig = Rig::new(&[("ep", &a.base_url)], "");
    let m1 = rig.monitor("1").await;
    rig.wait_samples("ep", 2).await;
    traffic(&a.base_url, "h", 4, 2).await;
    rig.wait_more_samples("ep", 2).await;
    m1.close().await;
    let before = history::count(&rig.store(), Some("ep")).unwrap();
    let restarted_at = vllm_core::time::unix_now();

    // Two instances at once: only the lease holder samples.
    let m2 = rig.monitor("1").await;
    let m3 = rig.monitor("1").await;
    let r = m2
        .call("get-metrics", json!({"duration_seconds": "5m"}))
        .await;
    assert!(!r.is_error, "{}", r.json);
    assert_eq!(r.json["metrics"]["requests"]["total"], 4, "{}", r.json);
    let r = m3
        .call("get-metrics", json!({"duration_seconds": "5m"}))
        .await;
    assert_eq!(r.json["metrics"]["requests"]["total"], 4, "{}", r.json);

    tokio::time::sleep(Duration::from_secs(3)).await;
    let store = rig.store();
    let rows = history::read_window(&store, restarted_at, vllm_core::time::unix_now()).unwrap();
    let ts: Vec<f64> = rows[0].iter().map(|s| s.ts).collect();
    let n = ts.len() as f64;
    let elapsed = vllm_core::time::unix_now() - restarted_at;
    assert!(
        n <= elapsed / INTERVAL + 3.0,
        "{n} samples in {elapsed} s: sampled twice?"
    );
    assert!(n >= 5.0, "{n} samples in {elapsed} s");
    let min_gap = ts
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::INFINITY, f64::min);
    assert!(min_gap > INTERVAL / 2.0, "two samplers: gap {min_gap}");
    assert!(history::count(&store, Some("ep")).unwrap() > before);
    m2.close().await;
    m3.close().await;
}

/// A launched-model record for a running mock, as the model manager would write it.
fn record(mock: &MockVllm, model: &str, log: Option<PathBuf>) -> ModelRecord {
    ModelRecord {
        model_id: model.into(),
        source: format!("mock/{model}"),
        status: ModelStatus::Loaded,
        host: "127.0.0.1".into(),
        port: Some(mock.port),
        pid: Some(mock.pid()),
        start_time: vllm_core::coordination::process_start_time(mock.pid()),
        args: LaunchArgs::default(),
        argv: vec![],
        env_names: vec![],
        gpu_ids: vec![0],
        log_path: log,
        launched_at: Some(vllm_core::time::unix_now()),
        loaded_at: Some(vllm_core::time::unix_now()),
        stopped_at: None,
        error: None,
        restart_policy: None,
        restarts: 0,
        idle_ttl_seconds: None,
        memory_estimate_mb: Some(500),
        updated_at: vllm_core::time::unix_now(),
        job: None,
    }
}

fn fake_gpus(pid: u32) -> String {
    let mut g0 = vllm_core::gpu::FakeGpus::idle(0, 81_920);
    g0.memory_used_mb = Some(40_960);
    g0.memory_free_mb = Some(40_960);
    g0.utilization_gpu = Some(0.75);
    g0.temperature_c = Some(65);
    g0.power_w = Some(280.0);
    g0.processes = Some(vec![
        vllm_core::gpu::GpuProcess {
            pid,
            used_mb: Some(4_000),
        },
        vllm_core::gpu::GpuProcess {
            pid: 1,
            used_mb: Some(100),
        },
    ]);
    let g1 = vllm_core::gpu::FakeGpus::idle(1, 81_920);
    serde_json::to_string(&vec![g0, g1]).unwrap()
}

#[tokio::test]
async fn gpu_stats_cover_every_field_and_map_processes_to_models() {
    let mock = MockVllm::start(&["mock/g", "--served-model-name", "g"], &[]);
    let rig = Rig::new(&[], "");
    let log = rig.dir.path().join("g.log");
    std::fs::write(
        &log,
        "INFO [gpu_model_runner.py:1] Model loading took 1.5 GiB memory and 2.0 seconds\n",
    )
    .unwrap();
    let store = rig.store();
    let rec = record(&mock, "g", Some(log));
    store.write(|tx| vllm_core::models::put(tx, &rec)).unwrap();
    let m = rig.monitor(&fake_gpus(mock.pid())).await;

    let r = m.call("get-gpu-stats", json!({})).await;
    assert!(!r.is_error, "{}", r.json);
    let g = &r.json["gpus"][0];
    assert_eq!(g["id"], 0);
    assert_eq!(g["name"], "Fake GPU 80GB");
    assert_eq!(g["uuid"], "GPU-fake-0000");
    assert_eq!(g["memory"]["used_mb"], 40_960);
    assert_eq!(g["memory"]["total_mb"], 81_920);
    assert_eq!(g["memory"]["free_mb"], 40_960);
    assert_eq!(g["memory"]["utilization"], 0.5);
    assert_eq!(g["compute"]["utilization"], 0.75);
    assert!(g["compute"]["sm_utilization"].is_null());
    assert!(g["compute"]["tensor_utilization"].is_null());
    assert!(g["compute"]["note"].as_str().unwrap().contains("DCGM"));
    assert_eq!(g["temperature"]["current_c"], 65);
    assert_eq!(g["temperature"]["max_c"], 85);
    assert_eq!(g["temperature"]["warning_c"], 80.0);
    assert_eq!(g["temperature"]["slowdown_c"], 87);
    assert_eq!(g["temperature"]["shutdown_c"], 92);
    assert_eq!(g["power"]["current_w"], 280.0);
    assert_eq!(g["power"]["max_w"], 400.0);
    assert_eq!(g["power"]["efficiency"], 0.7);
    assert_eq!(g["clocks"]["sm_max_mhz"], 1980);
    assert_eq!(g["throttle_reasons"], json!(["gpu_idle"]));
    assert_eq!(g["ecc"]["corrected"], 0);
    assert_eq!(g["ecc"]["uncorrected"], 0);
    let procs = g["processes"].as_array().unwrap();
    assert_eq!(procs[0]["pid"], mock.pid());
    assert_eq!(procs[0]["model_id"], "g");
    assert_eq!(procs[0]["used_mb"], 4_000);
    assert!(procs[1]["model_id"].is_null());
    assert_eq!(r.json["gpus"].as_array().unwrap().len(), 2);

    let r = m
        .call(
            "get-gpu-stats",
            json!({"gpu_ids": [1], "include_temperature": false, "include_power": false}),
        )
        .await;
    assert_eq!(r.json["gpus"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["gpus"][0]["id"], 1);
    assert!(r.json["gpus"][0].get("temperature").is_none());
    assert!(r.json["gpus"][0].get("power").is_none());

    // The launched model is sampled (from the store) and its memory is broken down.
    rig.wait_samples("g", 2).await;
    let r = m.call("get-memory-stats", json!({})).await;
    assert!(!r.is_error, "{}", r.json);
    let mm = &r.json["model_memory"][0];
    assert_eq!(mm["model_id"], "g");
    assert_eq!(mm["origin"], "launched");
    assert_eq!(mm["weights_mb"], 1536);
    assert_eq!(mm["weights_source"], "log");
    let kv = mm["kv_cache_mb"]
        .as_u64()
        .expect("kv from cache_config_info");
    assert_eq!(mm["gpu_memory_mb"], 4_000);
    if 1536 + kv <= 4_000 {
        assert_eq!(mm["activations_mb"], 4_000 - 1536 - kv);
    } else {
        assert!(mm["activations_mb"].is_null() && mm["note"].is_string());
    }
    assert!(mm["process_mb"].as_u64().unwrap() > 0);
    let gm = &r.json["gpu_memory"];
    assert_eq!(gm["reserved_mb"], 40_960);
    assert_eq!(gm["free_mb"], 40_960 + 81_920);
    assert_eq!(gm["allocated_mb"], 1536 + kv);
    assert_eq!(gm["cached_mb"], 40_960 - 1536 - kv);
    assert!(gm["fragmentation_ratio"].as_f64().unwrap() > 0.0);
    let sys = &r.json["system_memory"];
    assert!(sys["process_mb"].as_u64().unwrap() > 0);
    assert!(sys["available_mb"].as_u64().unwrap() > 0);
    assert!(sys["swap_mb"].is_number());

    let r = m.call("get-metrics", json!({"metrics": ["memory"]})).await;
    assert!(
        r.json["metrics"]["memory"]["system_ram_mb"]
            .as_u64()
            .unwrap()
            > 0
    );
    let eps = r.json["endpoints"].as_array().unwrap();
    assert_eq!(eps[0]["name"], "g");
    assert_eq!(eps[0]["origin"], "launched");
    m.close().await;
}

#[tokio::test]
async fn without_a_gpu_the_rest_still_answers() {
    let a = MockVllm::start(&["mock/n", "--served-model-name", "n"], &[]);
    let rig = Rig::new(&[("ep", &a.base_url)], "");
    let m = rig.monitor("none").await;
    let r = m.call("get-gpu-stats", json!({})).await;
    assert_eq!(code(&r), "GPU_UNAVAILABLE", "{}", r.json);
    assert!(
        r.json["error"]["details"]["suggestion"]
            .as_str()
            .unwrap()
            .contains("driver")
    );

    rig.wait_samples("ep", 2).await;
    let r = m.call("get-metrics", json!({})).await;
    assert!(!r.is_error, "{}", r.json);
    assert!(r.json["metrics"]["gpu"].is_null(), "{}", r.json);
    assert!(r.json["metrics"]["memory"]["gpu_used_mb"].is_null());
    assert!(r.json["metrics"]["throughput"].is_object());
    let notes = r.json["notes"].to_string();
    assert!(notes.contains("GPU_UNAVAILABLE"), "{notes}");

    let r = m.call("get-memory-stats", json!({})).await;
    assert!(!r.is_error, "{}", r.json);
    assert!(r.json["gpu_memory"].is_null());
    assert!(r.json["notes"].to_string().contains("GPU_UNAVAILABLE"));
    assert_eq!(r.json["model_memory"][0]["origin"], "attached");
    assert!(r.json["model_memory"][0]["kv_cache_mb"].is_number());
    m.close().await;
}

#[tokio::test]
async fn bad_inputs_have_stable_codes() {
    let rig = Rig::new(&[], "");
    let m = rig.monitor("2").await;
    let cases = [
        (
            "get-metrics",
            json!({"duration_seconds": -5}),
            "duration_seconds",
        ),
        (
            "get-metrics",
            json!({"duration_seconds": 0}),
            "duration_seconds",
        ),
        (
            "get-metrics",
            json!({"duration_seconds": "3650d"}),
            "duration_seconds",
        ),
        (
            "get-metrics",
            json!({"duration_seconds": 315_360_000}),
            "duration_seconds",
        ),
        (
            "get-metrics",
            json!({"duration_seconds": "5 minutes"}),
            "duration_seconds",
        ),
        (
            "get-metrics",
            json!({"metrics": ["throughput", "bogus"]}),
            "metrics[1]",
        ),
        ("get-metrics", json!({"metrics": []}), "metrics"),
        ("get-metrics", json!({"max_points": 0}), "max_points"),
        ("get-metrics", json!({"bogus": 1}), "bogus"),
        ("get-gpu-stats", json!({"gpu_ids": [0, 7]}), "gpu_ids"),
        ("get-gpu-stats", json!({"gpu_ids": [-1]}), "gpu_ids[0]"),
    ];
    for (tool, args, field) in cases {
        let r = m.call(tool, args.clone()).await;
        assert_eq!(code(&r), "INVALID_ARGUMENT", "{tool} {args}: {}", r.json);
        assert_eq!(
            r.json["error"]["details"]["field"], field,
            "{tool} {args}: {}",
            r.json
        );
    }
    let r = m
        .call("get-metrics", json!({"duration_seconds": "10y"}))
        .await;
    assert!(
        r.json["error"]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("1h30m"),
        "{}",
        r.json
    );
    let body = m.read("vllm://metrics/history/3650d").await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
    m.close().await;
}

#[tokio::test]
async fn resources_and_the_endpoint_down_alert() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let a = MockVllm::start(&["mock/x", "--served-model-name", "x"], &[]);
    let rig = Rig::new(
        &[("up", &a.base_url), ("down", &dead)],
        "[monitor.alerts.endpoint_down]\nfor_seconds = 0.5\n",
    );
    let m = rig.monitor("1").await;
    let uris = m.resource_uris().await;
    for u in [
        "vllm://metrics/current",
        "vllm://metrics/history/5m",
        "vllm://metrics/history/1h",
        "vllm://metrics/history/24h",
        "vllm://alerts/active",
        "vllm://alerts/history",
    ] {
        assert!(uris.iter().any(|x| x == u), "{u} in {uris:?}");
    }
    let templates = m.client.list_all_resource_templates().await.unwrap();
    assert!(
        templates
            .iter()
            .any(|t| t.uri_template == "vllm://metrics/history/{duration}")
    );

    rig.wait_samples("down", 5).await;
    rig.wait_samples("up", 5).await;
    let cur: Value =
        serde_json::from_str(&m.read("vllm://metrics/current").await.unwrap()).unwrap();
    assert_eq!(cur["duration_seconds"], 60.0);
    let down = cur["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "down")
        .unwrap()
        .clone();
    assert_eq!(down["up"], false);
    assert_eq!(down["error"], "BACKEND_UNREACHABLE");

    let h: Value =
        serde_json::from_str(&m.read("vllm://metrics/history/5m").await.unwrap()).unwrap();
    assert_eq!(h["duration_seconds"], 300.0);
    assert!(
        h["history"]["num_requests_running"]
            .as_array()
            .unwrap()
            .len()
            <= 120
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let al: Value =
            serde_json::from_str(&m.read("vllm://alerts/active").await.unwrap()).unwrap();
        let alerts = al["alerts"].as_array().unwrap();
        if let Some(x) = alerts.first() {
            assert_eq!(alerts.len(), 1, "{al}");
            assert_eq!(x["rule"], "endpoint_down");
            assert_eq!(x["target"]["endpoint"], "down");
            assert_eq!(x["severity"], "critical");
            break;
        }
        assert!(Instant::now() < deadline, "no endpoint_down alert: {al}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    m.close().await;
}

/// `/metrics` answers that are malformed, cut in half, an HTML error page or 50 MiB are
/// each an answer naming the endpoint's problem, within the call's time; the healthy
/// endpoint beside them is measured, and the monitor keeps its memory and keeps serving.
#[tokio::test]
async fn broken_metrics_endpoints_are_answers_and_the_healthy_one_is_measured() {
    let modes = ["none", "malformed", "truncated", "html", "huge"];
    let mocks: Vec<MockVllm> = modes
        .iter()
        .map(|m| MockVllm::start(&[&format!("fault/{m}")], &[("MOCK_VLLM_METRICS", m)]))
        .collect();
    let names: Vec<String> = modes.iter().map(|m| format!("ep-{m}")).collect();
    let endpoints: Vec<(&str, &str)> = names
        .iter()
        .zip(&mocks)
        .map(|(n, m)| (n.as_str(), m.base_url.as_str()))
        .collect();
    let rig = Rig::new(&endpoints, "");
    let m = rig.monitor("2").await;
    rig.wait_samples("ep-none", 3).await;
    // A few rounds of every broken endpoint too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    let a = m
        .call(
            "get-metrics",
            json!({"duration_seconds": 30, "per_model": true}),
        )
        .await;
    let took = t.elapsed();
    assert!(!a.is_error, "{}", a.json);
    assert!(took < Duration::from_secs(10), "get-metrics took {took:?}");
    let text = a.json.to_string();
    assert!(
        text.contains("fault/none"),
        "the healthy endpoint is measured: {text}"
    );
    let health = m.call("server-health", json!({})).await;
    assert!(!health.is_error, "{}", health.json);
    let current: Value =
        serde_json::from_str(&m.read("vllm://metrics/current").await.unwrap()).unwrap();
    let error_of = |name: &str| {
        current["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["error"].clone())
            .unwrap_or_else(|| panic!("metrics/current says nothing of {name}: {current}"))
    };
    // An HTML page and 50 MiB are errors; broken lines are skipped and a cut exposition
    // gives what it has (the lenient parser), so those two are measured.
    assert_eq!(error_of("ep-none"), Value::Null);
    assert_eq!(error_of("ep-malformed"), Value::Null);
    assert_eq!(error_of("ep-truncated"), Value::Null);
    assert_eq!(error_of("ep-html"), "BACKEND_ERROR");
    assert_eq!(error_of("ep-huge"), "BACKEND_ERROR");
    let hwm_mib = vllm_mcp_testkit::status_kb(m.pid, "VmHWM:") / 1024;
    assert!(hwm_mib < 120, "the monitor peaked at {hwm_mib} MiB");
    eprintln!("get-metrics with four broken endpoints: {took:?}; monitor peak {hwm_mib} MiB");
    m.close().await;
}
