//! The three servers through a real MCP client against a real vLLM, and the mock's
//! fidelity to it. Runs when `VLLM_MCP_REAL_VLLM` is set (see the crate's docs).
//!
//! Real starts cost a minute each on 2 cores, so they are planned: one server, launched
//! by `load-model` with LoRA and dev mode on, serves the info, LoRA, fidelity and metrics
//! phases; then the same model goes through set-config restart → save → unload → restore.
//! The start failures run in a test of their own, never beside the other (one lock).

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use vllm_core::LoadFailure;
use vllm_core::monitor::history;
use vllm_core::store::Store;
use vllm_core::vllm::{EndpointSpec, VllmClient};
use vllm_fleet::launcher::classify::classify;
use vllm_fleet::launcher::process::group_members;
use vllm_mcp_e2e::{
    Phase, Raw, Real, buckets, family_labels, health_sequence, http, metrics, quantile_bucket, raw,
    shape, shape_differences, sum,
};
use vllm_mcp_testkit::{Answer, McpProcess, MockVllm, ServerRig, bin};

/// One real-vLLM test at a time: two would double the memory and halve the CPU of each.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a real start may take here (66 to 141 s measured, more on a loaded machine).
const START: Duration = Duration::from_secs(300);

fn ok(a: Answer) -> Value {
    assert!(!a.is_error, "{}", a.json);
    a.json
}

fn code(a: &Answer) -> &str {
    a.code().unwrap_or("OK")
}

fn client(base: &str) -> VllmClient {
    VllmClient::new(EndpointSpec::new("real", base, &Default::default())).unwrap()
}

/// Polls get-model-info until `id` is loaded with a pid other than `not_pid`.
async fn wait_loaded(m: &McpProcess, id: &str, not_pid: Option<u64>) -> Value {
    let deadline = Instant::now() + START;
    loop {
        let info = m.call("get-model-info", json!({"model_id": id})).await.json;
        let pid = info["server"]["pid"].as_u64();
        if info["status"] == "loaded" && pid.is_some() && pid != not_pid {
            return info;
        }
        assert!(info["status"] != "error", "{id} failed to start: {info}");
        assert!(
            Instant::now() < deadline,
            "{id} not loaded in {START:?}: {info}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The launch argv without the port (which a relaunch may change).
fn without_port(argv: &Value) -> Vec<String> {
    let argv: Vec<String> = argv
        .as_array()
        .expect("argv")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut out = Vec::new();
    let mut skip = false;
    for a in argv {
        if skip {
            skip = false;
            continue;
        }
        if a == "--port" {
            skip = true;
            continue;
        }
        if !a.starts_with("--port=") {
            out.push(a);
        }
    }
    out
}

/// No process of `pgid`'s group is left (a second of slack for the reaper).
async fn group_gone(pgid: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !group_members(pgid as u32).is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes of group {pgid} are left: {:?}",
            group_members(pgid as u32)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the monitor's store holds more samples than now.
async fn wait_more_samples(store: &Store, n: u64) {
    let start = history::count(store, None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while history::count(store, None).unwrap() < start + n {
        assert!(Instant::now() < deadline, "no {n} new samples in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same traffic for the real server and the mock: completions, a chat, a stream,
/// all of a fixed length.
async fn common_traffic(base: &str) {
    let c = client(base);
    for i in 0..2 {
        let r = c
            .completion(&json!({"model": "tiny", "prompt": format!("fidelity {i}"), "max_tokens": 4, "ignore_eos": true}))
            .await
            .unwrap();
        assert_eq!(r["usage"]["completion_tokens"], 4, "{r}");
    }
    let r = c
        .chat(&json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "ignore_eos": true}))
        .await
        .unwrap();
    assert_eq!(r["usage"]["completion_tokens"], 3, "{r}");
    let chunks = c
        .completion_stream(
            &json!({"model": "tiny", "prompt": "stream", "max_tokens": 3, "ignore_eos": true}),
        )
        .await
        .unwrap();
    assert!(!chunks.is_empty());
}

/// Requests whose errors the mock must answer as vLLM does.
fn error_requests(lora: &str) -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        (
            "POST",
            "/v1/completions",
            Some(json!({"model": "nope", "prompt": "x", "max_tokens": 2})),
        ),
        (
            "POST",
            "/v1/completions",
            Some(json!({"model": "tiny", "prompt": "x", "max_tokens": -1})),
        ),
        (
            "POST",
            "/v1/completions",
            Some(json!({"model": "tiny", "prompt": "x", "max_tokens": 4096})),
        ),
        (
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "tiny"})),
        ),
        ("GET", "/v1/no-such-route", None),
        (
            "POST",
            "/v1/unload_lora_adapter",
            Some(json!({"lora_name": "never-loaded"})),
        ),
        (
            "POST",
            "/v1/load_lora_adapter",
            Some(json!({"lora_name": "ad1", "lora_path": lora})),
        ),
    ]
}

/// What the fidelity phase compares of one answer: status, content type, body shape, and
/// the error's `type` and `code` (clients branch on them).
fn comparable(r: &Raw) -> Value {
    let j = r.json();
    json!({
        "status": r.status,
        "content_type": r.content_type,
        "shape": shape(&j),
        "error_type": j["error"]["type"],
        "error_code": j["error"]["code"],
    })
}

/// Everything the fidelity phase looks at on one server (LoRA `ad1` loaded).
async fn fidelity_view(base: &str, lora: &str) -> (Value, Vec<Value>, Value) {
    let h = http();
    let models = raw(&h, "GET", base, "/v1/models", None).await.json();
    let mut errors = Vec::new();
    for (method, path, body) in error_requests(lora) {
        let r = raw(&h, method, base, path, body.as_ref()).await;
        errors.push(json!({"request": format!("{method} {path} {}", body.unwrap_or(Value::Null)), "answer": comparable(&r)}));
    }
    let version = raw(&h, "GET", base, "/version", None).await;
    let health = raw(&h, "GET", base, "/health", None).await;
    let misc = json!({
        "version": comparable(&version),
        "health": {"status": health.status, "body": health.body},
    });
    (models, errors, misc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_through_the_three_servers() {
    let Some(real) = Real::from_env("the_fleet_through_the_three_servers") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let suite = Instant::now();
    let rig = real.rig("[monitor]\nsample_interval_seconds = 1.0\n");
    let m = rig.spawn(&bin("vllm-model-manager"), &[]).await;
    let h = http();
    let model_path = real.model.to_str().unwrap().to_string();
    let lora_path = real.lora.to_str().unwrap().to_string();

    // ---- load-model: the real `vllm serve`, its /health watched while it starts.
    let phase = Phase::start("load-model of the tiny model (a real start)");
    let mut args = real.load_args("tiny");
    args["extra_args"] = json!(["--enable-lora", "--max-lora-rank", "8", "--max-loras", "1"]);
    args["wait_seconds"] = json!(0);
    let loading = ok(m.call("load-model", args).await);
    assert_eq!(loading["status"], "loading", "{loading}");
    let base = loading["base_url"].as_str().unwrap().to_string();
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let real_health = tokio::task::spawn_blocking(move || health_sequence(port, START))
        .await
        .unwrap();
    let info = wait_loaded(&m, "tiny", None).await;
    let load_s = phase.done();
    eprintln!("[real-vllm] /health while starting: {real_health:?}");
    assert_eq!(
        real_health.last().map(String::as_str),
        Some("200"),
        "{real_health:?}"
    );
    let pgid = info["server"]["pid"].as_u64().unwrap();
    assert!(
        group_members(pgid as u32).len() >= 3,
        "vLLM runs an API server, EngineCore and a worker: {:?}",
        group_members(pgid as u32)
    );

    // ---- list-models and get-model-info agree with /v1/models.
    let phase = Phase::start("list-models and get-model-info against /v1/models");
    let cards = raw(&h, "GET", &base, "/v1/models", None).await.json();
    let card = &cards["data"][0];
    assert_eq!(card["id"], "tiny", "{cards}");
    assert_eq!(card["root"], model_path.as_str(), "{cards}");
    assert_eq!(card["max_model_len"], 512);
    let listed = ok(m.call("list-models", json!({})).await);
    let entry = listed["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "tiny")
        .unwrap_or_else(|| panic!("tiny not listed: {listed}"))
        .clone();
    assert_eq!(entry["status"], "loaded");
    assert_eq!(entry["origin"], "launched");
    assert_eq!(entry["context_window"], card["max_model_len"], "{entry}");
    assert_eq!(entry["base_url"], base.as_str());
    assert_eq!(
        info["config"]["context_window"], card["max_model_len"],
        "{info}"
    );
    assert!(
        info["server"]["argv"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == model_path.as_str()),
        "{info}"
    );
    assert!(
        info["performance"]["memory_usage_mb"].as_u64().unwrap() > 500,
        "a real vLLM takes gigabytes: {info}"
    );
    phase.done();

    // ---- Runtime LoRA, load and unload.
    let phase = Phase::start("runtime LoRA load and unload");
    let loaded = ok(m
        .call(
            "load-lora-adapter",
            json!({"model_id": "tiny", "lora_name": "ad1", "lora_path": lora_path}),
        )
        .await);
    assert_eq!(loaded["loaded"], true, "{loaded}");
    let cards = raw(&h, "GET", &base, "/v1/models", None).await.json();
    let ad = cards["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "ad1")
        .unwrap_or_else(|| panic!("ad1 not served: {cards}"))
        .clone();
    assert_eq!(ad["parent"], "tiny");
    assert_eq!(ad["root"], lora_path.as_str());
    let r = client(&base)
        .completion(
            &json!({"model": "ad1", "prompt": "adapter", "max_tokens": 2, "ignore_eos": true}),
        )
        .await
        .unwrap();
    assert_eq!(r["usage"]["completion_tokens"], 2, "{r}");
    assert_eq!(r["model"], "ad1");

    // ---- Fidelity: mock-vllm beside the real server, the same requests to both.
    let fidelity = Phase::start("fidelity: mock-vllm against the real server");
    let mock_health = {
        let mock = MockVllm::spawn(
            &[
                &model_path,
                "--served-model-name",
                "tiny",
                "--max-model-len",
                "512",
            ],
            &[("MOCK_VLLM_START_DELAY", "2")],
        );
        let port = mock.port;
        tokio::task::spawn_blocking(move || health_sequence(port, Duration::from_secs(30)))
            .await
            .unwrap()
    };
    assert_eq!(
        mock_health, real_health,
        "/health during start-up: mock {mock_health:?}, real {real_health:?}"
    );
    let lora_env = [
        ("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True"),
        ("VLLM_SERVER_DEV_MODE", "1"),
    ];
    let mock = MockVllm::start(
        &[
            &model_path,
            "--served-model-name",
            "tiny",
            "--max-model-len",
            "512",
            "--dtype",
            "float32",
            "--enforce-eager",
            "--enable-lora",
            "--max-lora-rank",
            "8",
            "--max-loras",
            "1",
        ],
        &lora_env,
    );
    let on_mock = client(&mock.base_url)
        .load_lora_adapter("ad1", &lora_path)
        .await;
    assert!(on_mock.is_ok(), "{on_mock:?}");
    common_traffic(&base).await;
    common_traffic(&mock.base_url).await;
    for b in [&base, &mock.base_url] {
        client(b)
            .completion(
                &json!({"model": "ad1", "prompt": "adapter", "max_tokens": 2, "ignore_eos": true}),
            )
            .await
            .unwrap();
    }
    let real_families = family_labels(&metrics(&h, &base).await);
    let mock_families = family_labels(&metrics(&h, &mock.base_url).await);
    let missing: Vec<_> = real_families
        .iter()
        .filter(|(k, _)| !mock_families.contains_key(*k))
        .collect();
    let extra: Vec<_> = mock_families
        .keys()
        .filter(|k| !real_families.contains_key(*k))
        .collect();
    let labels_differ: Vec<_> = real_families
        .iter()
        .filter_map(|(k, v)| {
            let mv = mock_families.get(k)?;
            (mv != v).then(|| format!("{k}: real {v:?}, mock {mv:?}"))
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && labels_differ.is_empty(),
        "metric families: the mock lacks {missing:?}; only the mock has {extra:?}; labels differ: {labels_differ:?}"
    );
    let (real_models, real_errors, real_misc) = fidelity_view(&base, &lora_path).await;
    let (mock_models, mock_errors, mock_misc) = fidelity_view(&mock.base_url, &lora_path).await;
    let mut problems = Vec::new();
    let (rd, md) = (
        real_models["data"].as_array().unwrap(),
        mock_models["data"].as_array().unwrap(),
    );
    assert_eq!(
        rd.len(),
        md.len(),
        "/v1/models: real {real_models}, mock {mock_models}"
    );
    for (i, (r, mk)) in rd.iter().zip(md).enumerate() {
        for d in shape_differences(&shape(r), &shape(mk)) {
            problems.push(format!("/v1/models data[{i}]{d}"));
        }
        for k in [
            "id",
            "object",
            "owned_by",
            "root",
            "parent",
            "max_model_len",
        ] {
            if r[k] != mk[k] {
                problems.push(format!(
                    "/v1/models data[{i}].{k}: real {}, mock {}",
                    r[k], mk[k]
                ));
            }
        }
    }
    for d in shape_differences(&shape(&real_models), &shape(&mock_models)) {
        if !d.starts_with(".data[]") {
            problems.push(format!("/v1/models{d}"));
        }
    }
    for (r, mk) in real_errors.iter().zip(&mock_errors) {
        let (ra, ma) = (&r["answer"], &mk["answer"]);
        for k in ["status", "content_type", "error_type", "error_code"] {
            if ra[k] != ma[k] {
                problems.push(format!(
                    "{}: {k} real {}, mock {}",
                    r["request"], ra[k], ma[k]
                ));
            }
        }
        for d in shape_differences(&ra["shape"], &ma["shape"]) {
            problems.push(format!("{}: body{d}", r["request"]));
        }
    }
    if real_misc != mock_misc {
        problems.push(format!(
            "/version, /health: real {real_misc}, mock {mock_misc}"
        ));
    }
    assert!(
        problems.is_empty(),
        "the mock differs from vLLM:\n{}",
        problems.join("\n")
    );
    drop(mock);
    fidelity.done();
    let unloaded = ok(m
        .call(
            "unload-lora-adapter",
            json!({"model_id": "tiny", "lora_name": "ad1"}),
        )
        .await);
    assert_eq!(unloaded["loaded"], false, "{unloaded}");
    assert_eq!(unloaded["adapters"], json!([]), "{unloaded}");
    let cards = raw(&h, "GET", &base, "/v1/models", None).await.json();
    assert_eq!(cards["data"].as_array().unwrap().len(), 1, "{cards}");
    phase.done();

    // ---- Traffic shows in get-metrics as vLLM counted it.
    let phase = Phase::start("get-metrics against vLLM's own counters");
    let monitor = rig.spawn(&bin("vllm-perf-monitor"), &[]).await;
    let store = Store::open(&rig.store_path()).unwrap();
    wait_more_samples(&store, 2).await;
    wait_more_samples(&store, 1).await;
    let window_start = Instant::now();
    let before = metrics(&h, &base).await;
    let c = client(&base);
    let (n, max_tokens) = (6u64, 5u64);
    let (mut prompt, mut generated) = (0, 0);
    for i in 0..n {
        let r = c
            .completion(&json!({"model": "tiny", "prompt": format!("count me {i}"), "max_tokens": max_tokens, "ignore_eos": true}))
            .await
            .unwrap();
        prompt += r["usage"]["prompt_tokens"].as_u64().unwrap();
        generated += r["usage"]["completion_tokens"].as_u64().unwrap();
    }
    assert_eq!(generated, n * max_tokens);
    // vLLM counts a request when its engine step reports it: wait until it has.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let e = metrics(&h, &base).await;
        if sum(&e, "vllm:request_success_total") - sum(&before, "vllm:request_success_total")
            >= n as f64
        {
            break e;
        }
        assert!(Instant::now() < deadline, "vLLM did not count {n} requests");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delta = |name: &str| sum(&after, name) - sum(&before, name);
    assert_eq!(delta("vllm:request_success_total"), n as f64);
    assert_eq!(delta("vllm:generation_tokens_total"), generated as f64);
    assert_eq!(delta("vllm:prompt_tokens_total"), prompt as f64);
    wait_more_samples(&store, 2).await;
    let window = window_start.elapsed().as_secs_f64() + 0.5;
    let g = ok(monitor
        .call(
            "get-metrics",
            json!({"duration_seconds": window, "per_model": true}),
        )
        .await);
    let req = &g["metrics"]["requests"];
    assert_eq!(req["total"], n, "{g}");
    assert_eq!(req["successful"], n);
    assert_eq!(req["failed"], 0);
    assert_eq!(req["by_reason"]["length"], n, "{req}");
    let pm = &g["per_model"]["tiny"];
    let span = pm["window_covered_seconds"].as_f64().unwrap();
    let tps = pm["throughput"]["tokens_per_second"].as_f64().unwrap();
    let pps = pm["throughput"]["prompt_tokens_per_second"]
        .as_f64()
        .unwrap();
    let near = |v: f64, want: u64| (v - want as f64).abs() <= 0.01 * want as f64;
    assert!(
        near(tps * span, generated),
        "{tps} tok/s × {span} s vs {generated}: {pm}"
    );
    assert!(
        near(pps * span, prompt),
        "{pps} tok/s × {span} s vs {prompt}: {pm}"
    );
    let lat = &g["metrics"]["latency"];
    assert_eq!(lat["requests_observed"], n, "{lat}");
    for (key, q) in [("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)] {
        let (lo, hi) = quantile_bucket(
            &buckets(&before, "vllm:e2e_request_latency_seconds"),
            &buckets(&after, "vllm:e2e_request_latency_seconds"),
            q,
        );
        let v = lat[key].as_f64().unwrap() / 1000.0;
        assert!(
            v >= lo - 1e-9 && v <= hi + 1e-9,
            "{key} = {v} s lies outside vLLM's bucket ({lo}, {hi}]: {lat}"
        );
    }
    let (lo, hi) = quantile_bucket(
        &buckets(&before, "vllm:time_to_first_token_seconds"),
        &buckets(&after, "vllm:time_to_first_token_seconds"),
        0.5,
    );
    let ttft = lat["time_to_first_token"]["p50_ms"].as_f64().unwrap() / 1000.0;
    assert!(
        ttft >= lo - 1e-9 && ttft <= hi + 1e-9,
        "ttft p50 {ttft} outside ({lo}, {hi}]"
    );
    let avg = lat["avg_ms"].as_f64().unwrap() / 1000.0;
    let exact = delta("vllm:e2e_request_latency_seconds_sum")
        / delta("vllm:e2e_request_latency_seconds_count");
    // avg_ms is given to 0.01 ms.
    assert!(
        (avg - exact).abs() <= 0.5e-5 + 1e-9,
        "avg {avg} vs vLLM's {exact}"
    );

    // benchmark-model on the real server: its counts are vLLM's counts.
    let b = ok(monitor
        .call(
            "benchmark-model",
            json!({"model_id": "tiny", "requests": 8, "concurrency": 2, "prompt_tokens": 16, "output_tokens": 8}),
        )
        .await);
    assert_eq!(b["completed"], 8, "{b}");
    assert_eq!(b["failed"], 0);
    assert_eq!(b["client"]["output_tokens"], 64, "{b}");
    assert_eq!(b["client"]["prompt_tokens"], 8 * 16, "{b}");
    let s = &b["server"];
    assert_eq!(s["requests_finished"], 8.0, "{b}");
    assert_eq!(s["generation_tokens"], 64.0);
    assert_eq!(s["prompt_tokens"], 128.0);
    assert_eq!(s["other_traffic"], false);
    eprintln!(
        "[real-vllm] benchmark-model: {} req/s, {} output tok/s, latency p50 {} ms",
        b["client"]["requests_per_second"],
        b["client"]["output_tokens_per_second"],
        b["client"]["latency"]["p50_ms"]
    );
    monitor.close().await;
    phase.done();

    // ---- set-model-config with restart: the new default applies to a real completion.
    let phase = Phase::start("set-model-config restart (a real restart)");
    let set = ok(m
        .call(
            "set-model-config",
            json!({"model_id": "tiny", "config": {"max_tokens": 3, "temperature": 0.0}, "restart": true}),
        )
        .await);
    assert_eq!(set["takes_effect"], "now", "{set}");
    group_gone(pgid).await;
    let info = wait_loaded(&m, "tiny", Some(pgid)).await;
    let restart_s = phase.done();
    let pgid = info["server"]["pid"].as_u64().unwrap();
    let base = info["server"]["base_url"].as_str().unwrap().to_string();
    let r = client(&base)
        .completion(&json!({"model": "tiny", "prompt": "defaults", "ignore_eos": true}))
        .await
        .unwrap();
    assert_eq!(
        r["usage"]["completion_tokens"], 3,
        "the new default applies: {r}"
    );

    // ---- save-state, unload-model, load-state brings it back with the same arguments.
    let phase = Phase::start("save-state, unload-model, load-state (a real start)");
    let state = rig.spawn(&bin("vllm-state-persistence"), &[]).await;
    let saved = ok(state
        .call(
            "save-state",
            json!({"session_id": "e2e", "include_conversations": false}),
        )
        .await);
    assert_eq!(saved["models"], 1, "{saved}");
    assert!(
        saved["vllm_versions"].to_string().contains("0.32"),
        "{saved}"
    );
    let argv = without_port(&info["server"]["argv"]);
    let u = ok(m.call("unload-model", json!({"model_id": "tiny"})).await);
    assert_eq!(u["status"], "unloaded", "{u}");
    group_gone(pgid).await;
    let l = ok(state.call("load-state", json!({"session_id": "e2e"})).await);
    assert_eq!(l["restored"]["models"], 1, "{l}");
    assert_eq!(l["model_actions"][0]["action"], "launched", "{l}");
    let back = wait_loaded(&m, "tiny", None).await;
    let restore_s = phase.done();
    assert_eq!(without_port(&back["server"]["argv"]), argv, "{back}");
    let base = back["server"]["base_url"].as_str().unwrap().to_string();
    let r = client(&base)
        .completion(&json!({"model": "tiny", "prompt": "restored", "ignore_eos": true}))
        .await
        .unwrap();
    assert_eq!(
        r["usage"]["completion_tokens"], 3,
        "sampling restored too: {r}"
    );
    state.close().await;

    // ---- unload: nothing of ours is left.
    let pgid = back["server"]["pid"].as_u64().unwrap();
    let u = ok(m.call("unload-model", json!({"model_id": "tiny"})).await);
    assert_eq!(u["was_running"], true, "{u}");
    group_gone(pgid).await;
    m.close().await;
    assert_no_process_left(&rig).await;
    eprintln!(
        "[real-vllm] suite: load-model {load_s:.1} s, restart {restart_s:.1} s, restore {restore_s:.1} s, all {:.1} s",
        suite.elapsed().as_secs_f64()
    );
}

/// After the servers closed, no process carrying the rig's marker is alive.
async fn assert_no_process_left(rig: &ServerRig) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = rig.marked_pids();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_start_failures_are_classified() {
    let Some(real) = Real::from_env("real_start_failures_are_classified") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let rig = real.rig("");
    let m = rig.spawn(&bin("vllm-model-manager"), &[]).await;

    // Through load-model: the real vLLM fails, its log is classified.
    let mut missing = real.load_args("missing");
    missing["source"] = json!("/nonexistent/vllm-mcp-e2e/model");
    let mut flag = real.load_args("badflag");
    flag["extra_args"] = json!(["--no-such-flag"]);
    for (args, reason) in [(missing, "MODEL_PATH_NOT_FOUND"), (flag, "UNKNOWN_FLAG")] {
        let phase = Phase::start(&format!("a failed start: {reason}"));
        let mut args = args;
        args["wait_seconds"] = json!(START.as_secs());
        let a = m.call("load-model", args.clone()).await;
        phase.done();
        assert_eq!(code(&a), "MODEL_LOAD_FAILED", "{args}: {}", a.json);
        let d = &a.json["error"]["details"];
        assert_eq!(d["reason"], reason, "{args}: {}", a.json);
        assert!(
            d["suggestion"].as_str().is_some_and(|s| !s.is_empty()),
            "{d}"
        );
        assert!(
            !m.call("server-health", json!({})).await.is_error,
            "still serving"
        );
    }

    // max_model_len above the model's limit: refused before a launch ...
    let mut long = real.load_args("long");
    long["max_model_len"] = json!(4096);
    let t = Instant::now();
    let a = m.call("load-model", long).await;
    assert_eq!(code(&a), "MODEL_LOAD_FAILED", "{}", a.json);
    assert_eq!(
        a.json["error"]["details"]["reason"],
        "MAX_MODEL_LEN_TOO_LARGE"
    );
    assert_eq!(a.json["error"]["details"]["limit"], 2048);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "refused before any launch"
    );
    m.close().await;

    // ... and what the real vLLM says when it is launched anyway is classified the same.
    let phase = Phase::start("a failed start: MAX_MODEL_LEN_TOO_LARGE (vllm serve itself)");
    let tmp = rig.dir.path().join("tmp");
    let out = tokio::process::Command::new(&real.vllm)
        .args(["serve", real.model.to_str().unwrap(), "--host", "127.0.0.1"])
        .args(["--port", &vllm_mcp_testkit::free_port().to_string()])
        .args([
            "--max-model-len",
            "4096",
            "--dtype",
            "float32",
            "--enforce-eager",
        ])
        .envs(Real::launcher_env(&tmp))
        .env(rig.marker_env().0, rig.marker_env().1)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(START, out)
        .await
        .expect("vllm serve --max-model-len 4096 did not exit")
        .unwrap();
    phase.done();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let c = classify(&log, out.status.code());
    assert_eq!(c.reason, LoadFailure::MaxModelLenTooLarge, "{c:#?}\n{log}");
    assert_eq!(c.details.get("limit"), Some(&json!(2048)), "{c:#?}");
    assert_no_process_left(&rig).await;
}

#[test]
fn the_helpers_find_the_bucket_of_a_quantile() {
    // Not real-vLLM: the suite's own arithmetic, so that its assertions mean something.
    let before = [(0.1, 1.0), (0.5, 1.0), (1.0, 1.0), (f64::INFINITY, 1.0)];
    let after = [(0.1, 1.0), (0.5, 5.0), (1.0, 9.0), (f64::INFINITY, 11.0)];
    // Ten new observations: 4 in (0.1, 0.5], 4 in (0.5, 1], 2 above 1.
    assert_eq!(quantile_bucket(&before, &after, 0.4), (0.1, 0.5));
    assert_eq!(quantile_bucket(&before, &after, 0.5), (0.5, 1.0));
    assert_eq!(quantile_bucket(&before, &after, 0.95), (1.0, f64::INFINITY));
    let a = json!({"data": [{"id": "x", "n": 1, "parent": null}], "object": "list"});
    let b = json!({"data": [{"id": "y", "n": 2}], "object": "list", "extra": true});
    let d = shape_differences(&shape(&a), &shape(&b));
    assert_eq!(
        d,
        vec![
            ".data[].parent: the mock lacks it (real: \"null\")".to_string(),
            ".extra: only the mock has it".to_string()
        ]
    );
}

/// Runs a phase of tests/clients/real_front_door.py against the door on `port`.
fn door_phase(python: &str, port: u16, args: &[&str]) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(python)
        .arg(root.join("tests/clients/real_front_door.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .args(args)
        .output()
        .expect("run the OpenAI client");
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprint!("{o}");
    assert!(
        out.status.success(),
        "the OpenAI client failed in {args:?}:\n{o}\n{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_door_on_real_vllm() {
    let Some(real) = Real::from_env("the_front_door_on_real_vllm") else {
        return;
    };
    let clients = vllm_mcp_testkit::setup_script("clients.sh").expect("scripts/clients.sh failed");
    let python = clients
        .last()
        .cloned()
        .expect("scripts/clients.sh printed no python");
    let _serial = SERIAL.lock().await;
    let port = vllm_mcp_testkit::free_port();
    let model = real.model.to_str().unwrap();
    let entry = |alias: &str| {
        format!(
            "[catalog.{alias}]\nsource = {model:?}\n[catalog.{alias}.args]\nmax_model_len = 512\n\
             dtype = \"float32\"\nenforce_eager = true\n\
             extra_args = [\"--enable-lora\", \"--max-lora-rank\", \"8\", \"--max-loras\", \"1\"]\n"
        )
    };
    let embed = format!(
        "[catalog.embed]\nsource = {model:?}\n[catalog.embed.args]\nmax_model_len = 512\n\
         dtype = \"float32\"\nenforce_eager = true\n\
         extra_args = [\"--runner\", \"pooling\", \"--convert\", \"embed\"]\n"
    );
    let rig = real.rig(&format!(
        "[gateway]\nlisten = \"127.0.0.1:{port}\"\n[limits]\nmax_models = 1\n\
         [monitor]\nsample_interval_seconds = 1.0\n{}{}{embed}",
        entry("tiny"),
        entry("tiny2")
    ));
    let mut door = rig
        .command("vllm-model-manager")
        .arg("--gateway")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn the door");
    let t = Instant::now();
    while vllm_mcp_testkit::http_status(port, "/health") != Some(200) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the door never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let py = python.clone();
    let phase = Phase::start("the door: a real start on demand and a stream (OpenAI client)");
    tokio::task::spawn_blocking(move || door_phase(&py, port, &["start", "tiny"]))
        .await
        .unwrap();
    phase.done();

    let phase = Phase::start("the door: a LoRA adapter by name");
    let m = rig.spawn(&bin("vllm-model-manager"), &[]).await;
    let lora = real.lora.to_str().unwrap();
    ok(m.call(
        "load-lora-adapter",
        json!({"model_id": "tiny", "lora_name": "tiny-lora", "lora_path": lora}),
    )
    .await);
    let py = python.clone();
    tokio::task::spawn_blocking(move || door_phase(&py, port, &["lora", "tiny-lora"]))
        .await
        .unwrap();
    phase.done();

    let phase = Phase::start("the door: a swap between two real models under max_models = 1");
    let py = python.clone();
    tokio::task::spawn_blocking(move || door_phase(&py, port, &["swap", "tiny", "tiny2"]))
        .await
        .unwrap();
    phase.done();
    let listed = ok(m.call("list-models", json!({})).await);
    let tiny2 = listed["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "tiny2")
        .unwrap();
    assert_eq!(tiny2["status"], "loaded", "{tiny2}");
    assert_eq!(
        tiny2["front_door"]["url"],
        format!("http://127.0.0.1:{port}"),
        "{tiny2}"
    );
    let phase = Phase::start("the door's page: a real model's row, charts and log");
    page_phase(port, "tiny2").await;
    phase.done();
    ok(m.call("unload-model", json!({"model_id": "tiny2"})).await);

    let phase = Phase::start("the door: a pooling model's embeddings, score and rerank");
    tokio::task::spawn_blocking(move || door_phase(&python, port, &["embed", "embed"]))
        .await
        .unwrap();
    phase.done();
    ok(m.call("unload-model", json!({"model_id": "embed"})).await);
    m.close().await;
    let _ = door.kill();
    let _ = door.wait();
    assert_no_process_left(&rig).await;
}

/// The page's API on a real vLLM served through the door: the model's row (its server,
/// the KV cache vLLM reports), its chart points after traffic, and its real log.
async fn page_phase(port: u16, model: &str) {
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move {
            http.get(path)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let t = Instant::now();
    let (row, points) = loop {
        // Traffic through the door, for the door's own sampler (1 s here) to see.
        let chat = json!({"model": model, "max_tokens": 8,
                          "messages": [{"role": "user", "content": "Say hi."}]});
        let r = http
            .post(format!("{url}/v1/chat/completions"))
            .json(&chat)
            .send()
            .await;
        assert_eq!(r.unwrap().status(), 200);
        let fleet = get(format!("{url}/ui/api/fleet")).await;
        let row = fleet["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == model)
            .cloned();
        let charts = get(format!("{url}/ui/api/charts?range=5m")).await;
        let points = charts["charts"]["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["model"] == model)
            .flat_map(|m| m["tokens_per_second"].as_array().unwrap().clone())
            .filter(|v| v.as_f64().is_some_and(|v| v > 0.0))
            .count();
        if let Some(row) = row
            && row["kv_cache_mb"].as_u64().is_some_and(|kv| kv > 0)
            && points > 0
        {
            break (row, points);
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no KV cache or chart points: {fleet}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(row["status"], "loaded", "{row}");
    assert!(
        row["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
        "{row}"
    );
    eprintln!("  page: {model} {row}; {points} chart points");
    let mut r = http
        .get(format!("{url}/ui/api/models/{model}/logs?lines=5000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut text = String::new();
    while !text.contains("event: status") {
        let c = tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .expect("the log's first event in time");
        text.push_str(&String::from_utf8_lossy(&c.unwrap().expect("a chunk")));
    }
    assert!(
        text.contains("Starting vLLM"),
        "the real log's start: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tiny_model_as_a_ray_job() {
    use vllm_mcp_testkit::ray::{RayCluster, WORKER_IP};
    let Some(real) = Real::from_env("the_tiny_model_as_a_ray_job") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let cluster = RayCluster::start();
    let rig = real.rig("").on_ray(&cluster.dashboard(), "");
    let m = rig.spawn(&bin("vllm-model-manager"), &[]).await;

    let phase = Phase::start("a real vLLM as a Ray job on the second node");
    let mut args = real.load_args("tiny");
    args["node"] = json!(WORKER_IP);
    args["wait_seconds"] = json!(START.as_secs());
    let a = ok(m.call("load-model", args).await);
    assert_eq!(a["status"], "loaded", "{a}");
    assert_eq!(a["node"], WORKER_IP);
    phase.done();
    let base = a["base_url"].as_str().unwrap().to_string();
    assert!(base.starts_with(&format!("http://{WORKER_IP}:")), "{base}");

    // It answers from its node, and its log is the job's.
    let body = json!({"model": "tiny", "prompt": "Hello", "max_tokens": 4, "ignore_eos": true});
    let r = raw(&http(), "POST", &base, "/v1/completions", Some(&body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["usage"]["completion_tokens"], 4);
    let log = m.read("vllm://model/tiny/logs").await.unwrap();
    assert!(log.contains("non-default args"), "{log}");

    // Unload stops the job; nothing of the server is left on the node.
    let out = ok(m.call("unload-model", json!({"model_id": "tiny"})).await);
    assert_eq!(out["status"], "unloaded", "{out}");
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        vllm_mcp_testkit::http_status_at([127, 0, 0, 3], port, "/health"),
        None
    );
    m.close().await;
    drop(cluster);
    assert_no_process_left(&rig).await;
}
