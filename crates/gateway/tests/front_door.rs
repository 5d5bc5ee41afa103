//! The front door against mock-vllm as the launched `vllm serve`: routing by model,
//! starts on demand, streams passed through chunk by chunk, swaps under a one-model
//! limit, and the faults (a start that fails, a client that goes away, a server that
//! dies mid-stream, a crowd arriving while a model loads). The gateway runs in-process
//! on a loopback port; the rig kills whatever a failing test leaves.

use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vllm_core::config::Config;
use vllm_core::gpu::FakeGpus;
use vllm_core::models::ModelStatus;
use vllm_fleet::launcher::supervisor::running_requests;
use vllm_gateway::Gateway;
use vllm_mcp_testkit::ServerRig;

mod common;
use common::{CATALOG, chat, door, door_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_model_is_listed_then_started_by_its_first_request_and_streams() {
    let d = door(ServerRig::new(CATALOG)).await;

    // Before anything is loaded, every model the door can serve is listed.
    let tiny = d.listed("tiny").await;
    assert_eq!(tiny["object"], "model");
    assert_eq!(tiny["status"], "unloaded");
    assert_eq!(tiny["origin"], "catalog");
    assert_eq!(d.status("tiny").await, None, "listing starts nothing");

    // The first request starts it and is answered once it serves.
    let r = d.post("/v1/chat/completions", chat("tiny", 4, false)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert_eq!(body["model"], "tiny");
    assert_eq!(d.status("tiny").await, Some(ModelStatus::Loaded));

    // A stream arrives as the server sends it: several chunks, the last one [DONE].
    let r = d.post("/v1/chat/completions", chat("tiny", 16, true)).await;
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut stream = r.bytes_stream();
    let (mut chunks, mut text) = (0, String::new());
    while let Some(c) = stream.next().await {
        chunks += 1;
        text.push_str(&String::from_utf8_lossy(&c.unwrap()));
    }
    assert!(
        chunks > 3,
        "the stream came in {chunks} chunk(s): buffered?"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // Completions, tokenize and the listing's status follow the same route.
    let r = d
        .post(
            "/v1/completions",
            json!({"model": "tiny", "prompt": "Hi", "max_tokens": 2}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = d
        .post(
            "/tokenize",
            json!({"model": "tiny", "prompt": "Hello there"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let tiny = d.listed("tiny").await;
    assert_eq!(tiny["status"], "loaded");
    assert_eq!(tiny["origin"], "launched");
    assert!(tiny["last_used"].is_string(), "{tiny}");

    let metrics = d.metrics().await;
    assert!(
        metrics.contains("vllm_gateway_model_starts_total{model=\"tiny\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vllm_gateway_requests_total{model=\"tiny\",status=\"200\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_model_is_started_by_its_first_embeddings_request_and_scores_and_reranks() {
    let d = door(ServerRig::new(
        "[catalog.embed]\nsource = \"mock/embed\"\n\
         [catalog.embed.args]\nextra_args = [\"--runner\", \"pooling\", \"--convert\", \"embed\"]\n",
    ))
    .await;
    assert_eq!(d.listed("embed").await["status"], "unloaded");

    let r = d
        .post(
            "/v1/embeddings",
            json!({"model": "embed", "input": ["red fox", "blue sky"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(d.status("embed").await, Some(ModelStatus::Loaded));
    assert_eq!(body["model"], "embed", "{body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert!(data[0]["embedding"].as_array().unwrap().len() > 1, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 4);

    // Score and rerank go to the same server; the same text scores 1.0, and ranks first.
    let r = d
        .post(
            "/v1/score",
            json!({"model": "embed", "text_1": "red fox", "text_2": ["red fox", "blue sky"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let score: Value = r.json().await.unwrap();
    assert_eq!(score["data"][0]["score"], 1.0, "{score}");
    assert!(score["data"][1]["score"].as_f64().unwrap() < 1.0, "{score}");
    let r = d
        .post(
            "/v1/rerank",
            json!({"model": "embed", "query": "red fox", "documents": ["blue sky", "red fox"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let ranked: Value = r.json().await.unwrap();
    assert_eq!(ranked["results"][0]["index"], 1, "{ranked}");

    // vLLM's own answers pass through: a pooling server does not generate.
    let r = d
        .post("/v1/chat/completions", chat("embed", 2, false))
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), r#"{"detail":"Not Found"}"#);
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("vllm_gateway_requests_total{model=\"embed\",status=\"200\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_is_a_404_in_each_apis_shape_naming_what_is_there() {
    let d = door(ServerRig::new(CATALOG)).await;
    let r = d.post("/v1/chat/completions", chat("nope", 4, false)).await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "model_not_found", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("tiny"),
        "{e}"
    );
    assert_eq!(e["error"]["available"], json!(["other", "tiny"]));

    let msg =
        json!({"model": "nope", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]});
    let r = d.post("/v1/messages", msg).await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["error"]["type"], "not_found_error", "{e}");

    // A body without a model, or not JSON, is the client's error.
    let r = d
        .post("/v1/chat/completions", json!({"messages": []}))
        .await;
    assert_eq!(r.status(), 400);
    let r = d
        .http
        .post(format!("{}/v1/completions", d.url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(d.status("nope").await, None, "nothing was launched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_asked_for_when_configured_and_the_servers_own_is_never_shown() {
    // SAFETY: a variable only this test reads.
    unsafe { std::env::set_var("GATEWAY_TEST_KEY_A", "door-key") };
    let d = door(ServerRig::new(&format!(
        "{CATALOG}[gateway]\napi_key_env = \"GATEWAY_TEST_KEY_A\"\n"
    )))
    .await;
    let r = d.post("/v1/chat/completions", chat("tiny", 2, false)).await;
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_api_key");
    let models = d
        .http
        .get(format!("{}/v1/models", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401, "the listing needs the key too");
    let health = d
        .http
        .get(format!("{}/health", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "health does not");

    let ok = d
        .http
        .post(format!("{}/v1/chat/completions", d.url))
        .bearer_auth("door-key")
        .json(&chat("tiny", 2, false))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok = d
        .http
        .post(format!("{}/v1/completions", d.url))
        .header("x-api-key", "door-key")
        .json(&json!({"model": "tiny", "prompt": "x", "max_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(d.status("tiny").await, Some(ModelStatus::Loaded));

    // Unset, the door does not open without a key: it refuses to start.
    let config = Config::load(Some(&d.rig.config)).unwrap();
    let mut config = config;
    config.gateway.api_key_env = Some("GATEWAY_TEST_KEY_UNSET".into());
    let e = Gateway::new(d.launcher.clone(), Vec::new(), Arc::new(config))
        .err()
        .unwrap();
    assert_eq!(e.code(), "CONFIG_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_fails_to_start_is_a_503_with_the_classified_reason() {
    let rig = ServerRig::new(CATALOG).with_launcher_env(&[("MOCK_VLLM_FAIL", "port-in-use")]);
    let d = door(rig).await;
    let r = d.post("/v1/chat/completions", chat("tiny", 2, false)).await;
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "MODEL_LOAD_FAILED", "{e}");
    assert_eq!(e["error"]["reason"], "PORT_IN_USE", "{e}");
    let m = d.metrics().await;
    assert!(
        m.contains("vllm_gateway_model_starts_total{model=\"tiny\",result=\"failed\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_one_model_limit_a_second_model_swaps_the_first_out_but_never_a_pinned_one() {
    let rig = ServerRig::new(&format!(
        "{CATALOG}[catalog.pinned]\nsource = \"mock/pinned\"\npinned = true\n\
         [limits]\nmax_models = 1\n"
    ));
    let d = door(rig).await;
    assert_eq!(
        d.post("/v1/chat/completions", chat("tiny", 2, false))
            .await
            .status(),
        200
    );
    assert_eq!(
        d.post("/v1/chat/completions", chat("other", 2, false))
            .await
            .status(),
        200
    );
    assert_eq!(
        d.status("tiny").await,
        Some(ModelStatus::Unloaded),
        "tiny was swapped out"
    );
    assert_eq!(d.status("other").await, Some(ModelStatus::Loaded));
    // And back: a swap each way.
    assert_eq!(
        d.post("/v1/chat/completions", chat("tiny", 2, false))
            .await
            .status(),
        200
    );
    assert_eq!(d.status("other").await, Some(ModelStatus::Unloaded));
    let m = d.metrics().await;
    assert!(
        m.contains("vllm_gateway_swaps_total{model=\"other\",action=\"unload\"} 1"),
        "{m}"
    );

    // A pinned model stays: the one it would replace is the one swapped out, and once
    // it holds the only place, nothing else can start.
    assert_eq!(
        d.post("/v1/chat/completions", chat("pinned", 2, false))
            .await
            .status(),
        200
    );
    assert_eq!(d.status("tiny").await, Some(ModelStatus::Unloaded));
    let r = d
        .post("/v1/chat/completions", chat("other", 2, false))
        .await;
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "LIMIT_EXCEEDED", "{e}");
    assert_eq!(d.status("pinned").await, Some(ModelStatus::Loaded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_being_swapped_out_finishes_its_stream_first() {
    let rig = ServerRig::new(&format!("{CATALOG}[limits]\nmax_models = 1\n"))
        .with_launcher_env(&[("MOCK_VLLM_TOKEN_LATENCY_MS", "20")]);
    let d = door(rig).await;
    assert_eq!(
        d.post("/v1/chat/completions", chat("tiny", 1, false))
            .await
            .status(),
        200
    );
    // A stream of ~60 tokens (1.2 s) runs on tiny while `other` is asked for.
    let long = d.post("/v1/chat/completions", chat("tiny", 60, true)).await;
    assert_eq!(long.status(), 200);
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        let mut s = long.bytes_stream();
        while let Some(c) = s.next().await {
            text.push_str(&String::from_utf8_lossy(&c.expect("the stream was cut")));
        }
        text
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let r = d
        .post("/v1/chat/completions", chat("other", 1, false))
        .await;
    assert_eq!(r.status(), 200);
    let text = reader.await.unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream was not finished: {text}"
    );
    assert!(
        t.elapsed() > Duration::from_millis(500),
        "other did not wait for the drain"
    );
    assert_eq!(d.status("tiny").await, Some(ModelStatus::Unloaded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_stream_aborts_the_request_upstream() {
    let rig = ServerRig::new(CATALOG).with_launcher_env(&[("MOCK_VLLM_TOKEN_LATENCY_MS", "50")]);
    let d = door(rig).await;
    assert_eq!(
        d.post("/v1/chat/completions", chat("tiny", 1, false))
            .await
            .status(),
        200
    );
    // 400 tokens at 50 ms: 20 s if it ran to its end.
    let r = d
        .post("/v1/chat/completions", chat("tiny", 400, true))
        .await;
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    assert_eq!(running_requests(&d.backend_metrics("tiny").await), 1);
    drop(s);
    let t = Instant::now();
    while running_requests(&d.backend_metrics("tiny").await) != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the upstream request still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tiny = d.listed("tiny").await;
    assert_eq!(tiny["in_flight"], 0, "{tiny}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_mid_stream_ends_the_clients_stream_with_an_error() {
    let rig = ServerRig::new(CATALOG).with_launcher_env(&[("MOCK_VLLM_TOKEN_LATENCY_MS", "50")]);
    let d = door(rig).await;
    assert_eq!(
        d.post("/v1/chat/completions", chat("tiny", 1, false))
            .await
            .status(),
        200
    );
    let r = d
        .post("/v1/chat/completions", chat("tiny", 400, true))
        .await;
    assert_eq!(r.status(), 200);
    let mut s = r.bytes_stream();
    let mut text = String::from_utf8_lossy(&s.next().await.unwrap().unwrap()).to_string();
    // The server's whole process group dies at once, mid-answer.
    let pid = d.launcher.get("tiny").await.unwrap().unwrap().pid.unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut failed = false;
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(c) = s.next().await {
            match c {
                Ok(b) => text.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the client was left waiting");
    assert!(
        !text.contains("[DONE]"),
        "a cut stream must not look finished: {text}"
    );
    assert!(
        text.contains("data: {\"error\""),
        "no error event reached the client (cut: {failed}): {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_requests_arriving_while_a_model_loads_are_all_answered() {
    let rig = ServerRig::new(&format!("{CATALOG}[gateway]\nmax_queued_requests = 500\n"))
        .with_launcher_env(&[("MOCK_VLLM_START_DELAY", "2")]);
    let d = door(rig).await;
    let d = Arc::new(d);
    let mut tasks = Vec::new();
    for i in 0..500 {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "tiny", "prompt": format!("n{i}"), "max_tokens": 1});
            d.post("/v1/completions", body).await.status().as_u16()
        }));
    }
    let mut codes = std::collections::BTreeMap::new();
    for t in tasks {
        *codes.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        codes,
        [(200, 500)].into(),
        "every request answered with the model's answer"
    );
    let m = d.metrics().await;
    assert!(
        m.contains("vllm_gateway_model_starts_total{model=\"tiny\",result=\"ok\"} 1"),
        "one start: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_queue_a_request_is_told_when_to_come_back() {
    let rig = ServerRig::new(&format!("{CATALOG}[gateway]\nmax_queued_requests = 3\n"))
        .with_launcher_env(&[("MOCK_VLLM_START_DELAY", "2")]);
    let d = Arc::new(door(rig).await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let r = d.post("/v1/chat/completions", chat("tiny", 1, false)).await;
            (
                r.status().as_u16(),
                r.headers().get("retry-after").is_some(),
            )
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let later = answers.iter().filter(|a| **a == (429, true)).count();
    assert_eq!((ok, later), (3, 5), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_waiting_for_a_start_is_kept_alive_until_the_models_first_chunk() {
    let rig = ServerRig::new(&format!("{CATALOG}[gateway]\nkeep_alive_seconds = 0.2\n"))
        .with_launcher_env(&[("MOCK_VLLM_START_DELAY", "1.5")]);
    let d = door(rig).await;
    let t = Instant::now();
    let r = d.post("/v1/chat/completions", chat("tiny", 4, true)).await;
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "the answer began before the model served"
    );
    let text = r.text().await.unwrap();
    let first_data = text.find("data: ").unwrap_or_else(|| panic!("{text}"));
    assert!(
        text[..first_data].contains(": waiting"),
        "no keep-alive came first: {text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_slower_than_the_load_timeout_is_a_503_that_says_so_and_keeps_loading() {
    let rig = ServerRig::new(&format!("{CATALOG}[gateway]\nload_timeout_seconds = 0.5\n"))
        .with_launcher_env(&[("MOCK_VLLM_START_DELAY", "2")]);
    let d = door(rig).await;
    let r = d.post("/v1/chat/completions", chat("tiny", 1, false)).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "load_timeout", "{e}");
    // The start goes on: a later request is served.
    let t = Instant::now();
    while d.status("tiny").await != Some(ModelStatus::Loaded) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the start was abandoned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        d.post("/v1/chat/completions", chat("tiny", 1, false))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_id_starts_on_demand_only_with_load_unknown() {
    let d = door(ServerRig::new(CATALOG)).await;
    let r = d
        .post("/v1/chat/completions", chat("mock/free", 1, false))
        .await;
    assert_eq!(r.status(), 404, "an id outside the catalog was started");
    assert_eq!(d.status("mock/free").await, None);

    let d = door(ServerRig::new("[gateway]\nload_unknown = true\n")).await;
    let r = d
        .post("/v1/chat/completions", chat("mock/free", 1, false))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(d.status("mock/free").await, Some(ModelStatus::Loaded));
    // Still through the allow-list and the launcher's checks: a bad id is the client's.
    let r = d
        .post("/v1/chat/completions", chat("../etc", 1, false))
        .await;
    assert_eq!(r.status(), 400, "{:?}", r.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_code_in_a_catalog_entry_is_refused_at_the_door_unless_allowed() {
    let remote = "[catalog.remote]\nsource = \"mock/remote\"\n\
                  [catalog.remote.args]\nextra_args = [\"--trust-remote-code\"]\n";
    let d = door(ServerRig::new(remote)).await;
    let r = d
        .post("/v1/chat/completions", chat("remote", 1, false))
        .await;
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "PERMISSION_DENIED", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allow_remote_code"),
        "{e}"
    );
    assert_eq!(d.status("remote").await, None, "nothing was launched");

    let d = door(ServerRig::new(&format!(
        "{remote}[security]\nallow_remote_code = true\n"
    )))
    .await;
    let r = d
        .post("/v1/chat/completions", chat("remote", 1, false))
        .await;
    assert_eq!(r.status(), 200);
}

/// What the local model at `source` needs (max_model_len 512) on one fake 80 GiB GPU,
/// as the launcher reckons it: what a start counts against the budget.
async fn need_on_one_gpu(source: &str) -> u64 {
    let probe = door_on(ServerRig::new(""), FakeGpus::uniform(1, 81_920)).await;
    let args = vllm_core::launch_args::LaunchArgs {
        max_model_len: Some(512),
        ..Default::default()
    };
    let pre = probe
        .launcher
        .preflight("a", source, &args, None)
        .await
        .unwrap();
    pre.check
        .map(|c| c.required_mb)
        .or(pre.estimate.total_mb)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_swap_sleep_a_model_swapped_out_for_memory_sleeps_and_a_wake_brings_it_back() {
    let models = vllm_mcp_testkit::temp_dir();
    let (a, b) = (
        vllm_mcp_testkit::model_dir(models.path(), "a", 2),
        vllm_mcp_testkit::model_dir(models.path(), "b", 2),
    );
    let entry = |alias: &str, source: &str| {
        format!(
            "[catalog.{alias}]\nsource = {source:?}\n[catalog.{alias}.args]\nmax_model_len = 512\n\
             extra_args = [\"--enable-sleep-mode\"]\n"
        )
    };
    let gpu = || FakeGpus::uniform(1, 81_920);
    // The budget holds one of them, not two.
    let need = need_on_one_gpu(&a).await;
    let rig = ServerRig::new(&format!(
        "[gateway]\nswap = \"sleep\"\n[limits]\ngpu_memory_budget_mb = {}\n{}{}",
        need * 3 / 2,
        entry("a", &a),
        entry("b", &b)
    ))
    .with_launcher_env(&[("VLLM_SERVER_DEV_MODE", "1")]);
    let d = door_on(rig, gpu()).await;

    assert_eq!(
        d.post("/v1/chat/completions", chat("a", 1, false))
            .await
            .status(),
        200
    );
    assert_eq!(
        d.post("/v1/chat/completions", chat("b", 1, false))
            .await
            .status(),
        200
    );
    assert_eq!(
        d.status("a").await,
        Some(ModelStatus::Sleeping),
        "a was not put to sleep"
    );
    assert_eq!(d.status("b").await, Some(ModelStatus::Loaded));
    let a_pid = d.launcher.get("a").await.unwrap().unwrap().pid;

    // Back to a: a wake (same process), and b sleeps in its turn.
    assert_eq!(
        d.post("/v1/chat/completions", chat("a", 1, false))
            .await
            .status(),
        200
    );
    assert_eq!(d.status("a").await, Some(ModelStatus::Loaded));
    assert_eq!(
        d.launcher.get("a").await.unwrap().unwrap().pid,
        a_pid,
        "a was relaunched"
    );
    assert_eq!(d.status("b").await, Some(ModelStatus::Sleeping));
    let m = d.metrics().await;
    assert!(
        m.contains("vllm_gateway_swaps_total{model=\"a\",action=\"sleep\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("vllm_gateway_swaps_total{model=\"b\",action=\"sleep\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_beyond_the_queue_is_a_429_not_an_event_in_a_200() {
    let rig = ServerRig::new(&format!("{CATALOG}[gateway]\nmax_queued_requests = 1\n"))
        .with_launcher_env(&[("MOCK_VLLM_START_DELAY", "2")]);
    let d = Arc::new(door(rig).await);
    let first = d.post("/v1/chat/completions", chat("tiny", 2, true)).await;
    assert_eq!(first.status(), 200, "the first waits, kept alive");
    let second = d.post("/v1/chat/completions", chat("tiny", 2, true)).await;
    assert_eq!(second.status(), 429);
    assert!(second.headers().get("retry-after").is_some());
    let e: Value = second.json().await.unwrap();
    assert_eq!(e["error"]["code"], "queue_full", "{e}");
    assert!(
        first
            .text()
            .await
            .unwrap()
            .trim_end()
            .ends_with("data: [DONE]")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_is_refused_in_the_apis_shape_and_starts_nothing() {
    let d = door(ServerRig::new(CATALOG)).await;
    let big = "x".repeat(65 * 1024 * 1024);
    let body = json!({"model": "tiny", "prompt": big, "max_tokens": 1});
    let r = d.post("/v1/completions", body).await;
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "request_too_large", "{e}");
    assert_eq!(d.status("tiny").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_through_the_door_count_against_the_gpu_work_rate_limit() {
    let rig = ServerRig::new(&format!("{CATALOG}[limits]\ngpu_work_per_minute = 1\n"));
    let d = door(rig).await;
    assert_eq!(
        d.post("/v1/chat/completions", chat("tiny", 1, false))
            .await
            .status(),
        200
    );
    let r = d
        .post("/v1/chat/completions", chat("other", 1, false))
        .await;
    assert_eq!(r.status(), 429);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "RATE_LIMITED", "{e}");
    assert_eq!(
        d.status("other").await,
        None,
        "the refused start launched nothing"
    );
    // A model that serves is not GPU work to start: still answered.
    assert_eq!(
        d.post("/v1/chat/completions", chat("tiny", 1, false))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_could_never_fit_swaps_nothing_out() {
    let models = vllm_mcp_testkit::temp_dir();
    let (a, big) = (
        vllm_mcp_testkit::model_dir(models.path(), "a", 2),
        vllm_mcp_testkit::model_dir(models.path(), "big", 120),
    );
    let gpu = || FakeGpus::uniform(1, 81_920);
    let need = need_on_one_gpu(&a).await;
    let entry = |alias: &str, source: &str| {
        format!(
            "[catalog.{alias}]\nsource = {source:?}\n[catalog.{alias}.args]\nmax_model_len = 512\n"
        )
    };
    let rig = ServerRig::new(&format!(
        "[limits]\ngpu_memory_budget_mb = {}\n{}{}",
        need * 3 / 2,
        entry("a", &a),
        entry("big", &big)
    ));
    let d = door_on(rig, gpu()).await;
    assert_eq!(
        d.post("/v1/chat/completions", chat("a", 1, false))
            .await
            .status(),
        200
    );
    let r = d.post("/v1/chat/completions", chat("big", 1, false)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        d.status("a").await,
        Some(ModelStatus::Loaded),
        "a was swapped out for nothing"
    );
    assert_eq!(d.status("big").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_door_started_stays_while_used_through_it_and_goes_when_idle() {
    let d = door(ServerRig::new(&format!(
        "{CATALOG}[gateway]\nidle_ttl_seconds = 1.5\n"
    )))
    .await;
    assert_eq!(
        d.post("/v1/chat/completions", chat("tiny", 1, false))
            .await
            .status(),
        200
    );
    let r = d.launcher.get("tiny").await.unwrap().unwrap();
    assert_eq!(r.idle_ttl_seconds, Some(1.5));
    // Four seconds of use through the door, well past the TTL: it stays.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            d.post(
                "/v1/completions",
                json!({"model": "tiny", "prompt": "x", "max_tokens": 1})
            )
            .await
            .status(),
            200
        );
        assert_eq!(
            d.status("tiny").await,
            Some(ModelStatus::Loaded),
            "unloaded while in use"
        );
    }
    // Then idle: it goes.
    let t = Instant::now();
    while d.status("tiny").await != Some(ModelStatus::Unloaded) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the idle TTL did not unload it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
