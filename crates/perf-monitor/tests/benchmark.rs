//! benchmark-model through a real MCP client against mock-vllm servers: the client's
//! counts agree with vLLM's own counters, percentiles are ordered, caps are refused
//! before any request is sent, and dead or slow servers are answers.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vllm_core::launch_args::LaunchArgs;
use vllm_core::models::{ModelRecord, ModelStatus};
use vllm_core::store::Store;
use vllm_core::vllm::{EndpointSpec, VllmClient};
use vllm_mcp_testkit::{McpProcess, MockVllm, free_port, temp_dir};

struct Rig {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Rig {
    fn new(endpoints: &[(&str, &str)]) -> Rig {
        Rig::sampling(endpoints, 5.0)
    }

    /// With the sampler running every `interval` seconds.
    fn sampling(endpoints: &[(&str, &str)], interval: f64) -> Rig {
        let dir = temp_dir();
        let config = dir.path().join("config.toml");
        let mut text = format!(
            "data_dir = {:?}\n[monitor]\nsample_interval_seconds = {interval}\n",
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

    async fn monitor(&self) -> McpProcess {
        McpProcess::spawn(
            Path::new(env!("CARGO_BIN_EXE_vllm-perf-monitor")),
            &[
                ("VLLM_MCP_CONFIG", self.config.to_str().unwrap()),
                ("VLLM_MCP_FAKE_GPUS", "0"),
            ],
        )
        .await
    }

    /// Records `model` as launched and loaded at `port`, as the model manager would.
    fn launched(&self, model: &str, port: u16) {
        let now = vllm_core::time::unix_now();
        let rec = ModelRecord {
            model_id: model.into(),
            source: format!("mock/{model}"),
            status: ModelStatus::Loaded,
            host: "127.0.0.1".into(),
            port: Some(port),
            pid: None,
            start_time: None,
            args: LaunchArgs::default(),
            argv: vec![],
            env_names: vec![],
            gpu_ids: vec![],
            log_path: None,
            launched_at: Some(now),
            loaded_at: Some(now),
            stopped_at: None,
            error: None,
            restart_policy: None,
            restarts: 0,
            idle_ttl_seconds: None,
            memory_estimate_mb: None,
            updated_at: now,
            job: None,
        };
        let store = Store::open(&self.dir.path().join("vllm-mcp.db")).unwrap();
        store.write(|tx| vllm_core::models::put(tx, &rec)).unwrap();
    }
}

/// `vllm:request_success_total` of a mock, every reason.
async fn finished(url: &str) -> f64 {
    let c = VllmClient::new(EndpointSpec::new("t", url, &Default::default())).unwrap();
    let text = c.metrics_text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("vllm:request_success_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn assert_ordered(s: &Value) {
    let k = ["min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms"];
    for w in k.windows(2) {
        assert!(f(&s[w[0]]) <= f(&s[w[1]]), "{} > {}: {s}", w[0], w[1]);
    }
    assert!(f(&s["min_ms"]) <= f(&s["mean_ms"]) && f(&s["mean_ms"]) <= f(&s["max_ms"]));
    assert!(f(&s["min_ms"]) > 0.0, "{s}");
}

#[tokio::test]
async fn client_counts_match_vllm_counters_and_percentiles_are_ordered() {
    let mock = MockVllm::start(
        &["mock/tiny", "--served-model-name", "tiny"],
        &[("MOCK_VLLM_TOKEN_LATENCY_MS", "4")],
    );
    let rig = Rig::new(&[("ep", &mock.base_url)]);
    let m = rig.monitor().await;
    let r = m
        .call(
            "benchmark-model",
            json!({"model_id": "tiny", "requests": 12, "concurrency": 3, "prompt_tokens": 40, "output_tokens": 8}),
        )
        .await;
    assert!(!r.is_error, "{}", r.json);
    let j = &r.json;
    assert_eq!(j["success"], true);
    assert_eq!(j["endpoint"], "ep");
    assert_eq!(j["base_url"], mock.base_url.as_str());
    assert_eq!(j["config"]["concurrency"], 3);
    assert_eq!(j["config"]["stream"], true);
    assert_eq!(
        (j["completed"].as_u64(), j["failed"].as_u64()),
        (Some(12), Some(0)),
        "{j}"
    );
    assert_eq!(j["not_started"], 0);
    assert_eq!(j["timed_out"], false);
    assert!(j["failures"].as_array().unwrap().is_empty());

    // Client-side: exact token counts, as the server's usage reported them.
    let c = &j["client"];
    assert_eq!(c["prompt_tokens"], 12 * 40, "{c}");
    assert_eq!(c["output_tokens"], 12 * 8);
    let secs = f(&j["duration_seconds"]);
    assert!(secs > 0.0);
    // Rates times the run's duration (given to the millisecond) are the counts.
    let near = |v: f64, n: f64| (v * secs - n).abs() <= 0.02 * n;
    assert!(near(f(&c["output_tokens_per_second"]), 96.0), "{c}");
    assert!(near(f(&c["requests_per_second"]), 12.0), "{c}");
    for k in ["latency", "ttft", "itl", "tpot"] {
        assert_ordered(&c[k]);
    }
    assert_eq!(c["latency"]["count"], 12);
    assert_eq!(c["ttft"]["count"], 12);
    // Eight tokens, one chunk each: seven gaps per request.
    assert_eq!(c["itl"]["count"], 12 * 7, "{c}");
    // Eight steps of at least 4 ms each.
    assert!(f(&c["latency"]["min_ms"]) >= 8.0 * 4.0 * 0.9, "{c}");
    assert!(f(&c["ttft"]["mean_ms"]) < f(&c["latency"]["mean_ms"]));

    // Server-side: vLLM's counters over the run say the same.
    let s = &j["server"];
    assert_eq!(s["model_label"], "tiny");
    assert_eq!(s["requests_finished"], 12.0, "{s}");
    assert_eq!(s["by_finished_reason"]["length"], 12.0);
    assert_eq!(s["prompt_tokens"], 12.0 * 40.0);
    assert_eq!(s["generation_tokens"], 12.0 * 8.0);
    assert_eq!(s["other_traffic"], false);
    let e2e = &s["latency"]["e2e"];
    assert!(f(&e2e["p50_ms"]) <= f(&e2e["p99_ms"]), "{e2e}");
    // The server's mean is exact (sum / count) and cannot exceed what the client saw.
    let server_avg = f(&e2e["avg_ms"]);
    let client_avg = f(&c["latency"]["mean_ms"]);
    assert!(
        server_avg <= client_avg * 1.05 && server_avg >= client_avg * 0.3,
        "{server_avg} vs {client_avg}"
    );
    assert!(s["latency"]["ttft"]["p50_ms"].is_number());
    assert!(s["latency"]["queue"]["avg_ms"].is_number());
    assert_eq!(finished(&mock.base_url).await, 12.0);

    // Without streaming the client has no per-token figures, and says so.
    let r = m
        .call(
            "benchmark-model",
            json!({"model_id": "tiny", "requests": 4, "concurrency": 4, "prompt_tokens": 8, "output_tokens": 3, "stream": false}),
        )
        .await;
    let j = &r.json;
    assert_eq!(j["completed"], 4, "{j}");
    assert!(j["client"]["ttft"].is_null() && j["client"]["itl"].is_null());
    assert_ordered(&j["client"]["latency"]);
    assert_eq!(j["client"]["output_tokens"], 12);
    assert_eq!(j["server"]["requests_finished"], 4.0);
    assert!(j["notes"].to_string().contains("stream is false"), "{j}");
    m.close().await;
}

#[tokio::test]
async fn other_traffic_is_flagged_and_launched_models_are_found() {
    let mock = MockVllm::start(
        &["mock/tiny", "--served-model-name", "tiny"],
        &[("MOCK_VLLM_TOKEN_LATENCY_MS", "20")],
    );
    let rig = Rig::new(&[]);
    rig.launched("tiny", mock.port);
    let m = rig.monitor().await;
    let url = mock.base_url.clone();
    // Someone else's requests while the benchmark runs.
    let other = tokio::spawn(async move {
        let c = VllmClient::new(EndpointSpec::new("t", &url, &Default::default())).unwrap();
        // Well inside the run (three rounds of ten 20 ms steps), after its first scrape.
        tokio::time::sleep(Duration::from_millis(150)).await;
        for _ in 0..3 {
            c.completion(&json!({"model": "tiny", "prompt": "other", "max_tokens": 2}))
                .await
                .unwrap();
        }
    });
    let r = m
        .call(
            "benchmark-model",
            json!({"model_id": "tiny", "requests": 6, "concurrency": 2, "prompt_tokens": 4, "output_tokens": 10}),
        )
        .await;
    other.await.unwrap();
    let j = &r.json;
    assert_eq!(j["endpoint"], "tiny", "{j}");
    assert_eq!(j["completed"], 6);
    assert_eq!(j["client"]["output_tokens"], 60);
    assert!(f(&j["server"]["requests_finished"]) >= 7.0, "{j}");
    assert_eq!(j["server"]["other_traffic"], true, "{j}");
    assert!(j["notes"].to_string().contains("other traffic"));
    m.close().await;
}

#[tokio::test]
async fn caps_and_bad_inputs_are_refused_before_any_request() {
    let mock = MockVllm::start(
        &[
            "mock/tiny",
            "--served-model-name",
            "tiny",
            "--max-model-len",
            "64",
        ],
        &[],
    );
    let rig = Rig::new(&[("ep", &mock.base_url)]);
    let m = rig.monitor().await;
    let cases = [
        (
            json!({"model_id": "tiny", "requests": 1001}),
            "INVALID_ARGUMENT",
            "requests",
        ),
        (
            json!({"model_id": "tiny", "concurrency": 65}),
            "INVALID_ARGUMENT",
            "concurrency",
        ),
        (
            json!({"model_id": "tiny", "concurrency": 0}),
            "INVALID_ARGUMENT",
            "concurrency",
        ),
        (
            json!({"model_id": "tiny", "prompt_tokens": 8193}),
            "INVALID_ARGUMENT",
            "prompt_tokens",
        ),
        (
            json!({"model_id": "tiny", "output_tokens": 4097}),
            "INVALID_ARGUMENT",
            "output_tokens",
        ),
        (
            json!({"model_id": "tiny", "timeout_seconds": 315_360_000}),
            "INVALID_ARGUMENT",
            "timeout_seconds",
        ),
        (
            json!({"model_id": "tiny", "timeout_seconds": -1}),
            "INVALID_ARGUMENT",
            "timeout_seconds",
        ),
        (
            json!({"model_id": "tiny", "requests": -3}),
            "INVALID_ARGUMENT",
            "requests",
        ),
        (
            json!({"model_id": "tiny", "prompt_tokens": 60, "output_tokens": 8}),
            "INVALID_ARGUMENT",
            "max_model_len",
        ),
        (
            json!({"model_id": "tiny", "warmup": 3}),
            "INVALID_ARGUMENT",
            "warmup",
        ),
        (json!({"model_id": ""}), "INVALID_ARGUMENT", "model_id"),
        (json!({"model_id": "nope"}), "MODEL_NOT_FOUND", "nope"),
    ];
    for (args, code, mention) in cases {
        let r = m.call("benchmark-model", args.clone()).await;
        assert!(r.is_error, "{args}: {}", r.json);
        assert_eq!(r.json["success"], false);
        assert_eq!(r.code(), Some(code), "{args}: {}", r.json);
        assert!(
            r.json["error"].to_string().contains(mention),
            "{args}: {}",
            r.json
        );
        assert!(
            r.json["error"]["details"]["suggestion"].is_string()
                || r.json["error"]["suggestion"].is_string(),
            "{}",
            r.json
        );
    }
    assert_eq!(
        finished(&mock.base_url).await,
        0.0,
        "a refused benchmark sent requests"
    );
    m.close().await;
}

#[tokio::test]
async fn failing_dead_and_slow_servers_are_answers() {
    // Every second /v1 request answered 500 (the first is the /v1/models lookup): the
    // failures are counted by code and the run still reports.
    let bad = MockVllm::start(
        &["mock/tiny", "--served-model-name", "tiny"],
        &[("MOCK_VLLM_HTTP_500", "0.5")],
    );
    // Slow: 8 tokens of 250 ms cannot finish within a 1 s deadline.
    let slow = MockVllm::start(
        &["mock/slow", "--served-model-name", "slow"],
        &[("MOCK_VLLM_TOKEN_LATENCY_MS", "250")],
    );
    let rig = Rig::new(&[("bad", &bad.base_url), ("slow", &slow.base_url)]);
    let dead_port = free_port();
    rig.launched("gone", dead_port);
    let m = rig.monitor().await;

    let r = m
        .call(
            "benchmark-model",
            json!({"model_id": "tiny", "requests": 5, "concurrency": 2}),
        )
        .await;
    let j = &r.json;
    assert!(!r.is_error, "{j}");
    assert_eq!(
        (j["completed"].as_u64(), j["failed"].as_u64()),
        (Some(2), Some(3)),
        "{j}"
    );
    assert_eq!(j["failures"][0]["code"], "BACKEND_ERROR", "{j}");
    assert_eq!(j["failures"][0]["count"], 3);
    assert_ordered(&j["client"]["latency"]);
    assert_eq!(j["client"]["latency"]["count"], 2);
    // Requests refused by the API server never reach the engine's counters.
    assert_eq!(j["server"]["requests_finished"], 2.0, "{j}");
    assert_eq!(j["server"]["other_traffic"], false);

    // A launched model whose server is gone: every request unreachable, no server figures.
    let t = Instant::now();
    let r = m
        .call(
            "benchmark-model",
            json!({"model_id": "gone", "requests": 3}),
        )
        .await;
    let j = &r.json;
    assert!(!r.is_error, "{j}");
    assert_eq!(j["failed"], 3, "{j}");
    assert_eq!(j["failures"][0]["code"], "BACKEND_UNREACHABLE", "{j}");
    assert!(j["server"].is_null());
    assert!(j["notes"].to_string().contains("could not be read"), "{j}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());

    let t = Instant::now();
    let r = m
        .call(
            "benchmark-model",
            json!({"model_id": "slow", "requests": 6, "concurrency": 2, "output_tokens": 8, "timeout_seconds": 1}),
        )
        .await;
    let took = t.elapsed();
    let j = &r.json;
    assert!(!r.is_error, "{j}");
    assert_eq!(j["timed_out"], true, "{j}");
    assert_eq!(j["completed"], 0);
    assert_eq!(j["failed"], 2, "the two in flight at the deadline: {j}");
    assert_eq!(j["not_started"], 4);
    assert_eq!(j["failures"][0]["code"], "BACKEND_TIMEOUT");
    assert!(j["notes"].to_string().contains("timeout"), "{j}");
    // The deadline, then at most the final scrape's wait.
    assert!(took < Duration::from_secs(8), "{took:?}");
    m.close().await;
}

#[tokio::test]
async fn a_benchmark_that_fills_the_kv_cache_shows_in_get_metrics() {
    // 32 blocks of 16 tokens; eight requests of 48 prompt tokens take 24 of them on
    // admission and grow towards 6 each (88 tokens): the cache runs nearly full.
    let mock = MockVllm::start(
        &["mock/tiny", "--served-model-name", "tiny"],
        &[
            ("MOCK_VLLM_KV_CACHE_TOKENS", "512"),
            ("MOCK_VLLM_TOKEN_LATENCY_MS", "25"),
        ],
    );
    let rig = Rig::sampling(&[("ep", &mock.base_url)], 0.2);
    let m = rig.monitor().await;
    let r = m
        .call(
            "benchmark-model",
            json!({"model_id": "tiny", "requests": 16, "concurrency": 8, "prompt_tokens": 48, "output_tokens": 40}),
        )
        .await;
    let j = &r.json;
    assert_eq!(j["completed"], 16, "{j}");
    let secs = f(&j["duration_seconds"]).floor().max(1.0);
    let g = m
        .call(
            "get-metrics",
            json!({"duration_seconds": secs, "metrics": ["memory"], "include_history": true}),
        )
        .await;
    let kv = f(&g.json["metrics"]["memory"]["kv_cache_usage"]);
    assert!(
        kv > 0.5 && kv <= 1.0,
        "mean KV-cache usage {kv}: {}",
        g.json
    );
    let peak = g.json["history"]["kv_cache_usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| f(&p[1]))
        .fold(0.0, f64::max);
    assert!(peak > 0.8, "peak KV-cache usage {peak}: {}", g.json);
    m.close().await;
}
