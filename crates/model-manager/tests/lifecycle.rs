//! The model manager through a real MCP client, with mock-vllm as the vLLM command.
//!
//! Each test gets its own data directory and its own port range, so tests run in
//! parallel without sharing a store or a port. Every process a test starts is stopped
//! by the test (unload) or by the rig's drop (SIGKILL of each launched group).

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vllm_mcp_testkit::{Answer, McpProcess, ServerRig, process_alive, temp_dir};

/// The shared rig, with this server's binary.
struct Rig(ServerRig);

impl Rig {
    fn new(extra: &str) -> Rig {
        Rig(ServerRig::new(extra))
    }

    fn with_env(self, pairs: &[(&str, &str)]) -> Rig {
        Rig(self.0.with_launcher_env(pairs))
    }

    async fn manager(&self, env: &[(&str, &str)]) -> McpProcess {
        self.0
            .spawn(Path::new(env!("CARGO_BIN_EXE_vllm-model-manager")), env)
            .await
    }

    fn store_path(&self) -> PathBuf {
        self.0.store_path()
    }
}

/// Polls list-models until `id` has `status` (or fails the test after `timeout`).
async fn wait_status(m: &McpProcess, id: &str, status: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let a = m.call("list-models", json!({})).await;
        let found = a.json["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .cloned();
        if let Some(x) = &found
            && x["status"] == status
        {
            return x.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{id} not {status} in time: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Live processes whose process group is `pgid`.
fn group_pids(pgid: u32) -> Vec<u32> {
    vllm_fleet::launcher::process::group_members(pgid)
}

fn code(a: &Answer) -> &str {
    a.code().unwrap_or("OK")
}

#[tokio::test]
async fn load_then_loaded_then_unload_leaves_no_process() {
    let rig = Rig::new("");
    let m = rig.manager(&[]).await;
    let a = m
        .call(
            "load-model",
            json!({"model_id": "tiny", "source": "mock/tiny", "max_model_len": 512}),
        )
        .await;
    assert!(!a.is_error, "{}", a.json);
    assert_eq!(a.json["status"], "loading");
    assert!(a.json["estimated_load_time"].as_u64().unwrap() > 0);
    assert!(a.json.get("memory_required_mb").is_some());
    let pid = a.json["pid"].as_u64().unwrap() as u32;
    let base_url = a.json["base_url"].as_str().unwrap().to_string();

    let listed = wait_status(&m, "tiny", "loaded", Duration::from_secs(20)).await;
    assert_eq!(listed["context_window"], 512);
    assert_eq!(listed["origin"], "launched");
    assert!(listed["memory_usage_mb"].as_u64().unwrap() > 0, "{listed}");
    assert_eq!(
        group_pids(pid).len(),
        3,
        "the mock runs a three-process tree like vLLM"
    );

    // The launched server really serves the model under its id.
    let client = vllm_core::vllm::VllmClient::new(vllm_core::vllm::EndpointSpec::new(
        "t",
        &base_url,
        &Default::default(),
    ))
    .unwrap();
    let r = client
        .completion(&json!({"model": "tiny", "prompt": "hello", "max_tokens": 2}))
        .await
        .unwrap();
    assert_eq!(r["usage"]["completion_tokens"], 2);

    let info = m.call("get-model-info", json!({"model_id": "tiny"})).await;
    assert!(!info.is_error, "{}", info.json);
    assert_eq!(info.json["status"], "loaded");
    assert_eq!(info.json["config"]["context_window"], 512);
    assert_eq!(info.json["config"]["tensor_parallel_size"], 1);
    assert_eq!(info.json["config"]["quantization"], "none");
    assert_eq!(info.json["capabilities"]["supports_streaming"], true);
    assert!(
        info.json["performance"]["memory_usage_mb"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(info.json["performance"]["window_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        info.json["server"]["argv"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--max-model-len")
    );

    let u = m.call("unload-model", json!({"model_id": "tiny"})).await;
    assert!(!u.is_error, "{}", u.json);
    assert_eq!(u.json["status"], "unloaded");
    assert_eq!(u.json["was_running"], true);
    assert!(
        u.json["memory_freed_mb"].as_u64().unwrap() > 0,
        "{}",
        u.json
    );
    assert!(
        group_pids(pid).is_empty(),
        "no process of the group is left"
    );
    assert!(!process_alive(pid));
    wait_status(&m, "tiny", "unloaded", Duration::from_secs(5)).await;
    m.close().await;
}

#[tokio::test]
async fn wait_seconds_blocks_until_served() {
    let rig = Rig::new("");
    let m = rig.manager(&[]).await;
    let a = m
        .call(
            "load-model",
            json!({"model_id": "tiny", "source": "mock/tiny", "wait_seconds": 30}),
        )
        .await;
    assert!(!a.is_error, "{}", a.json);
    assert_eq!(a.json["status"], "loaded");
    assert!(a.json["load_seconds"].as_f64().unwrap() > 0.0);
    let u = m.call("unload-model", json!({"model_id": "tiny"})).await;
    assert!(!u.is_error);
}

/// Starts a load that must fail and returns the error answer.
async fn failed_load(rig: &Rig, args: Value) -> Answer {
    let m = rig.manager(&[]).await;
    let mut args = args;
    args["wait_seconds"] = json!(30);
    let a = m.call("load-model", args).await;
    assert!(a.is_error, "{}", a.json);
    // The server keeps serving after a failure.
    assert!(!m.call("server-health", json!({})).await.is_error);
    a
}

#[tokio::test]
async fn every_start_failure_is_classified() {
    let empty = temp_dir();
    // (launcher environment, load arguments, expected details.reason)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Value, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![],
            json!({"model_id": "m", "source": "/no/such/model/dir"}),
            "MODEL_PATH_NOT_FOUND",
        ),
        (
            vec![],
            json!({"model_id": "m", "source": empty.path().to_str().unwrap()}),
            "EMPTY_MODEL_DIRECTORY",
        ),
        (
            vec![],
            json!({"model_id": "m", "source": "mock/tiny", "extra_args": ["--no-such-flag"]}),
            "UNKNOWN_FLAG",
        ),
        (
            vec![("MOCK_VLLM_HUB", "unreachable")],
            json!({"model_id": "org/model"}),
            "HUB_UNREACHABLE",
        ),
        (
            vec![("MOCK_VLLM_HUB", "offline")],
            json!({"model_id": "org/model"}),
            "HUB_UNREACHABLE",
        ),
        (
            vec![("MOCK_VLLM_FAIL", "oom")],
            json!({"model_id": "m", "source": "mock/tiny"}),
            "OUT_OF_MEMORY",
        ),
        (
            vec![("MOCK_VLLM_FAIL", "kv-cache")],
            json!({"model_id": "m", "source": "mock/tiny"}),
            "INSUFFICIENT_KV_CACHE",
        ),
        (
            vec![("MOCK_VLLM_FAIL", "maxlen")],
            json!({"model_id": "m", "source": "mock/tiny"}),
            "MAX_MODEL_LEN_TOO_LARGE",
        ),
    ];
    for (env, args, reason) in cases {
        let rig = Rig::new("").with_env(&env);
        let a = failed_load(&rig, args.clone()).await;
        assert_eq!(code(&a), "MODEL_LOAD_FAILED", "{args}: {}", a.json);
        assert_eq!(
            a.json["error"]["details"]["reason"], reason,
            "{args} {env:?}: {}",
            a.json
        );
        assert!(a.json["error"]["details"]["suggestion"].as_str().is_some());
        assert!(
            a.json["error"]["details"]["log_uri"]
                .as_str()
                .unwrap()
                .starts_with("vllm://model/")
        );
    }
}

#[tokio::test]
async fn max_model_len_above_a_local_models_limit_is_refused_before_launch() {
    let model = temp_dir();
    std::fs::write(
        model.path().join("config.json"),
        r#"{"architectures":["LlamaForCausalLM"],"max_position_embeddings":2048,"hidden_size":64,
            "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "head_dim":32,"vocab_size":1024,"torch_dtype":"float32"}"#,
    )
    .unwrap();
    let rig = Rig::new("");
    let m = rig.manager(&[]).await;
    let t = Instant::now();
    let a = m
        .call(
            "load-model",
            json!({"model_id": "tiny", "source": model.path().to_str().unwrap(), "max_model_len": 4096}),
        )
        .await;
    assert_eq!(code(&a), "MODEL_LOAD_FAILED");
    assert_eq!(
        a.json["error"]["details"]["reason"],
        "MAX_MODEL_LEN_TOO_LARGE"
    );
    assert_eq!(a.json["error"]["details"]["limit"], 2048);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "refused before any launch"
    );
}

#[tokio::test]
async fn same_load_is_idempotent_other_args_are_reported_and_replace_relaunches() {
    let rig = Rig::new("");
    let m = rig.manager(&[]).await;
    let args = json!({"model_id": "tiny", "source": "mock/tiny", "max_model_len": 512, "wait_seconds": 30});
    let first = m.call("load-model", args.clone()).await;
    assert_eq!(first.json["status"], "loaded", "{}", first.json);
    let again = m.call("load-model", args.clone()).await;
    assert_eq!(again.json["already_running"], true);
    assert_eq!(again.json["pid"], first.json["pid"]);

    let mut other = args.clone();
    other["max_model_len"] = json!(1024);
    let differs = m.call("load-model", other.clone()).await;
    assert!(!differs.is_error);
    assert_eq!(differs.json["differences"]["max_model_len"]["current"], 512);
    assert_eq!(
        differs.json["differences"]["max_model_len"]["requested"],
        1024
    );
    assert_eq!(differs.json["pid"], first.json["pid"], "nothing relaunched");

    other["replace"] = json!(true);
    let replaced = m.call("load-model", other).await;
    assert_eq!(replaced.json["status"], "loaded", "{}", replaced.json);
    assert_ne!(replaced.json["pid"], first.json["pid"]);
    assert_eq!(
        replaced.json["port"], first.json["port"],
        "the port is sticky"
    );
    assert!(group_pids(first.json["pid"].as_u64().unwrap() as u32).is_empty());
    m.call("unload-model", json!({"model_id": "tiny"})).await;
}

#[tokio::test]
async fn a_restarted_manager_adopts_running_models_and_reports_dead_ones() {
    let rig = Rig::new("");
    let m = rig.manager(&[]).await;
    for id in ["alive", "doomed"] {
        let a = m
            .call(
                "load-model",
                json!({"model_id": id, "source": "mock/tiny", "wait_seconds": 30}),
            )
            .await;
        assert_eq!(a.json["status"], "loaded", "{}", a.json);
    }
    // Crush kills its servers with SIGKILL; the vLLM servers live on.
    unsafe {
        libc::kill(m.pid as i32, libc::SIGKILL);
    }
    drop(m);
    let store = vllm_core::store::Store::open(&rig.store_path()).unwrap();
    let doomed = vllm_core::models::get(&store, "doomed").unwrap().unwrap();
    unsafe {
        libc::kill(-(doomed.pid.unwrap() as i32), libc::SIGKILL);
    }
    let m2 = rig.manager(&[]).await;
    wait_status(&m2, "alive", "loaded", Duration::from_secs(5)).await;
    let dead = wait_status(&m2, "doomed", "error", Duration::from_secs(5)).await;
    assert!(dead["error"]["reason"].is_string(), "{dead}");
    let u = m2.call("unload-model", json!({"model_id": "alive"})).await;
    assert_eq!(u.json["was_running"], true, "{}", u.json);
}

#[tokio::test]
async fn two_managers_share_the_model_limit() {
    let rig = Rig::new("[limits]\nmax_models = 1\n");
    let a = rig.manager(&[]).await;
    let b = rig.manager(&[]).await;
    let first = a
        .call(
            "load-model",
            json!({"model_id": "one", "source": "mock/tiny"}),
        )
        .await;
    assert!(!first.is_error, "{}", first.json);
    let second = b
        .call(
            "load-model",
            json!({"model_id": "two", "source": "mock/tiny"}),
        )
        .await;
    assert_eq!(code(&second), "LIMIT_EXCEEDED", "{}", second.json);
    assert_eq!(
        second.json["error"]["details"]["limit"],
        "limits.max_models"
    );
    wait_status(&b, "one", "loaded", Duration::from_secs(20)).await;
    assert!(
        !b.call("unload-model", json!({"model_id": "one"}))
            .await
            .is_error
    );
}

fn fake_gpus(free: &[u64]) -> String {
    let gpus: Vec<Value> = free
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut g =
                serde_json::to_value(vllm_core::gpu::FakeGpus::idle(i as u32, 24_576)).unwrap();
            g["memory_free_mb"] = json!(f);
            g["memory_used_mb"] = json!(24_576 - f);
            g
        })
        .collect();
    serde_json::to_string(&gpus).unwrap()
}

#[tokio::test]
async fn memory_check_refuses_dry_run_reports_force_loads_and_gpus_are_placed() {
    let model = temp_dir();
    std::fs::write(
        model.path().join("config.json"),
        r#"{"max_position_embeddings":8192,"hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,
            "num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,"torch_dtype":"bfloat16"}"#,
    )
    .unwrap();
    let source = model.path().to_str().unwrap().to_string();
    let rig = Rig::new("");
    let gpus = fake_gpus(&[10_240, 20_000, 4_000]);
    let m = rig.manager(&[("VLLM_MCP_FAKE_GPUS", &gpus)]).await;

    let refused = m
        .call(
            "load-model",
            json!({"model_id": "big", "source": source, "max_model_len": 8192}),
        )
        .await;
    assert_eq!(code(&refused), "MODEL_LOAD_FAILED", "{}", refused.json);
    let d = &refused.json["error"]["details"];
    assert_eq!(d["reason"], "INSUFFICIENT_GPU_MEMORY");
    assert!(d["required_mb"].as_u64().unwrap() > d["available_mb"].as_u64().unwrap());
    assert_eq!(
        d["available_mb"], 20_000,
        "the GPU with the most free memory was chosen"
    );
    assert_eq!(
        d["suggestion"],
        "Reduce tensor_parallel_size or unload other models"
    );

    let dry = m
        .call(
            "load-model",
            json!({"model_id": "big", "source": source, "max_model_len": 8192, "dry_run": true}),
        )
        .await;
    assert!(!dry.is_error, "{}", dry.json);
    assert_eq!(dry.json["dry_run"], true);
    assert_eq!(dry.json["memory_check"]["fits"], false);
    assert_eq!(dry.json["gpu_ids"], json!([1]));

    let forced = m
        .call(
            "load-model",
            json!({"model_id": "big", "source": "mock/tiny", "force": true, "gpu_ids": [2]}),
        )
        .await;
    assert!(!forced.is_error, "{}", forced.json);
    assert_eq!(forced.json["gpu_ids"], json!([2]));
    let info = m.call("get-model-info", json!({"model_id": "big"})).await;
    assert!(
        info.json["server"]["env_names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "CUDA_VISIBLE_DEVICES"),
        "{}",
        info.json
    );
    let bad_gpu = m
        .call(
            "load-model",
            json!({"model_id": "x", "source": "mock/tiny", "gpu_ids": [9]}),
        )
        .await;
    assert_eq!(code(&bad_gpu), "INVALID_ARGUMENT");
    m.call("unload-model", json!({"model_id": "big", "force": true}))
        .await;
}

#[tokio::test]
async fn bad_inputs_get_stable_codes_and_the_server_keeps_serving() {
    let rig = Rig::new("");
    let m = rig.manager(&[]).await;
    let cases = [
        (
            "get-model-info",
            json!({"model_id": "nobody/nothing"}),
            "MODEL_NOT_FOUND",
        ),
        (
            "unload-model",
            json!({"model_id": "never-loaded"}),
            "MODEL_NOT_FOUND",
        ),
        (
            "load-model",
            json!({"model_id": "m", "tensor_parallel_size": 0}),
            "INVALID_ARGUMENT",
        ),
        (
            "load-model",
            json!({"model_id": "m", "gpu_memory_utilization": 1.5}),
            "INVALID_ARGUMENT",
        ),
        (
            "load-model",
            json!({"model_id": "m", "dtype": "float8"}),
            "INVALID_ARGUMENT",
        ),
        (
            "load-model",
            json!({"model_id": "../../etc/passwd"}),
            "INVALID_ARGUMENT",
        ),
        (
            "load-model",
            json!({"model_id": "m; rm -rf /"}),
            "INVALID_ARGUMENT",
        ),
        (
            "load-model",
            json!({"model_id": "$(reboot)"}),
            "INVALID_ARGUMENT",
        ),
        ("load-model", json!({}), "INVALID_ARGUMENT"),
        (
            "load-model",
            json!({"model_id": "m", "extra_args": ["--port", "1"]}),
            "INVALID_ARGUMENT",
        ),
        (
            "load-model",
            json!({"model_id": "m", "wait_seconds": -1}),
            "INVALID_ARGUMENT",
        ),
        (
            "set-model-config",
            json!({"model_id": "m", "config": {"top_p": 0}}),
            "INVALID_ARGUMENT",
        ),
        ("list-models", json!({"limit": 0}), "INVALID_ARGUMENT"),
    ];
    for (tool, args, want) in cases {
        let a = m.call(tool, args.clone()).await;
        assert_eq!(code(&a), want, "{tool} {args}: {}", a.json);
    }
    assert!(!m.call("list-models", json!({})).await.is_error);
}

#[tokio::test]
async fn sampling_defaults_apply_on_restart() {
    let rig = Rig::new("");
    let m = rig.manager(&[]).await;
    let a = m
        .call("load-model", json!({"model_id": "tiny", "source": "mock/tiny", "max_model_len": 512, "wait_seconds": 30}))
        .await;
    assert_eq!(a.json["status"], "loaded", "{}", a.json);
    let too_long = m
        .call(
            "set-model-config",
            json!({"model_id": "tiny", "config": {"max_tokens": 100000}}),
        )
        .await;
    assert_eq!(code(&too_long), "INVALID_ARGUMENT");
    assert_eq!(
        too_long.json["error"]["details"]["field"],
        "config.max_tokens"
    );

    let set = m
        .call(
            "set-model-config",
            json!({"model_id": "tiny", "config": {"max_tokens": 3, "temperature": 0.0}, "restart": true}),
        )
        .await;
    assert!(!set.is_error, "{}", set.json);
    assert_eq!(set.json["takes_effect"], "now");
    assert_eq!(set.json["updated_config"]["max_tokens"], 3);
    let listed = wait_status(&m, "tiny", "loaded", Duration::from_secs(20)).await;
    assert_eq!(listed["max_tokens"], 3);
    let base = listed["base_url"].as_str().unwrap();
    let client = vllm_core::vllm::VllmClient::new(vllm_core::vllm::EndpointSpec::new(
        "t",
        base,
        &Default::default(),
    ))
    .unwrap();
    let r = client
        .completion(&json!({"model": "tiny", "prompt": "one two"}))
        .await
        .unwrap();
    assert_eq!(
        r["usage"]["completion_tokens"], 3,
        "the new default applies: {r}"
    );
    let info = m.call("get-model-info", json!({"model_id": "tiny"})).await;
    assert!(
        info.json["server"]["argv"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains("max_new_tokens")),
        "{}",
        info.json
    );
    m.call("unload-model", json!({"model_id": "tiny"})).await;
}

#[tokio::test]
async fn resources_list_and_read_config_logs_and_provider_blocks() {
    let rig = Rig::new("");
    let m = rig.manager(&[]).await;
    let a = m
        .call(
            "load-model",
            json!({"model_id": "org/tiny", "source": "mock/tiny", "max_model_len": 512, "wait_seconds": 30}),
        )
        .await;
    assert_eq!(a.json["status"], "loaded", "{}", a.json);
    let uris = m.resource_uris().await;
    assert!(
        uris.contains(&"vllm://model/org/tiny/config".to_string()),
        "{uris:?}"
    );
    assert!(uris.contains(&"vllm://model/org/tiny/logs".to_string()));
    assert!(uris.contains(&"vllm://crush/provider-config".to_string()));

    let config: Value =
        serde_json::from_str(&m.read("vllm://model/org%2Ftiny/config").await.unwrap()).unwrap();
    assert_eq!(config["status"], "loaded");
    assert_eq!(config["launch_args"]["max_model_len"], 512);
    let logs = m.read("vllm://model/org/tiny/logs?lines=5").await.unwrap();
    assert!(logs.lines().count() <= 5 && !logs.is_empty(), "{logs}");
    let provider: Value =
        serde_json::from_str(&m.read("vllm://crush/provider-config").await.unwrap()).unwrap();
    let block = &provider["providers"]["vllm-tiny"];
    assert_eq!(block["type"], "openai-compat");
    assert_eq!(block["models"][0]["id"], "org/tiny");
    assert_eq!(block["models"][0]["context_window"], 512);
    assert!(block["base_url"].as_str().unwrap().ends_with("/v1"));
    assert!(
        m.read("vllm://model/nobody/config")
            .await
            .unwrap()
            .contains("MODEL_NOT_FOUND")
    );
    assert!(m.read("vllm://nowhere").await.is_err());
    m.call("unload-model", json!({"model_id": "org/tiny"}))
        .await;
}

/// Polls get-model-info until `done` holds for it.
async fn wait_info(
    m: &McpProcess,
    id: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let a = m.call("get-model-info", json!({"model_id": id})).await;
        if done(&a.json) {
            return a.json;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met in time: {}",
            a.json
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn restart_policy_relaunches_a_crashing_model_up_to_its_maximum() {
    let rig = Rig::new("").with_env(&[("MOCK_VLLM_CRASH_AFTER", "0.5")]);
    let m = rig.manager(&[]).await;
    let a = m
        .call(
            "load-model",
            json!({"model_id": "crashy", "source": "mock/tiny",
                   "restart_policy": {"mode": "on-failure", "max_restarts": 2, "backoff_seconds": 0.2}}),
        )
        .await;
    assert!(!a.is_error, "{}", a.json);
    let first_pid = a.json["pid"].clone();
    let done = wait_info(&m, "crashy", Duration::from_secs(40), |j| {
        j["status"] == "error" && j["server"]["restarts"] == 2
    })
    .await;
    assert_ne!(done["server"]["pid"], first_pid);
    assert_eq!(done["server"]["restart_policy"]["max_restarts"], 2);
    // It stays in error: no third restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = m
        .call("get-model-info", json!({"model_id": "crashy"}))
        .await;
    assert_eq!(later.json["server"]["restarts"], 2);
    assert_eq!(later.json["status"], "error");
}

#[tokio::test]
async fn a_port_conflict_is_retried_on_other_ports() {
    let rig = Rig::new("").with_env(&[("MOCK_VLLM_FAIL", "port-in-use")]);
    let m = rig.manager(&[]).await;
    let a = m
        .call(
            "load-model",
            json!({"model_id": "p", "source": "mock/tiny"}),
        )
        .await;
    let first_port = a.json["port"].clone();
    let done = wait_info(&m, "p", Duration::from_secs(30), |j| {
        j["status"] == "error" && j["server"]["restarts"] == 3
    })
    .await;
    assert_eq!(done["error"]["reason"], "PORT_IN_USE");
    assert_ne!(
        done["server"]["port"], first_port,
        "the retries moved to another port"
    );
}

#[tokio::test]
async fn an_idle_model_is_unloaded_after_its_ttl() {
    let rig = Rig::new("");
    let m = rig.manager(&[]).await;
    let a = m
        .call(
            "load-model",
            json!({"model_id": "idle", "source": "mock/tiny", "idle_ttl_seconds": 2, "wait_seconds": 30}),
        )
        .await;
    assert_eq!(a.json["status"], "loaded", "{}", a.json);
    let pid = a.json["pid"].as_u64().unwrap() as u32;
    let t = Instant::now();
    wait_status(&m, "idle", "unloaded", Duration::from_secs(20)).await;
    assert!(t.elapsed() >= Duration::from_secs(2), "not before its TTL");
    assert!(group_pids(pid).is_empty());
}

#[tokio::test]
async fn loads_on_the_same_gpu_wait_in_order() {
    let rig = Rig::new("").with_env(&[("MOCK_VLLM_START_DELAY", "1.5")]);
    let m = rig.manager(&[("VLLM_MCP_FAKE_GPUS", "1")]).await;
    let a = m
        .call(
            "load-model",
            json!({"model_id": "first", "source": "mock/tiny"}),
        )
        .await;
    assert!(!a.is_error, "{}", a.json);
    assert_eq!(a.json["queued"], false);
    let b = m
        .call(
            "load-model",
            json!({"model_id": "second", "source": "mock/tiny"}),
        )
        .await;
    assert!(!b.is_error, "{}", b.json);
    assert_eq!(b.json["queued"], true, "{}", b.json);
    assert_eq!(b.json["status"], "loading");
    assert!(b.json["pid"].is_null(), "no process before its turn");
    let first = wait_status(&m, "first", "loaded", Duration::from_secs(20)).await;
    assert!(first["status"] == "loaded");
    let second = wait_info(&m, "second", Duration::from_secs(20), |j| {
        j["status"] == "loaded"
    })
    .await;
    let first_info = m.call("get-model-info", json!({"model_id": "first"})).await;
    let loaded_first =
        vllm_core::time::parse_rfc3339(first_info.json["server"]["loaded_at"].as_str().unwrap())
            .unwrap();
    let launched_second =
        vllm_core::time::parse_rfc3339(second["server"]["launched_at"].as_str().unwrap()).unwrap();
    assert!(
        launched_second >= loaded_first,
        "the second started after the first was served"
    );
    for id in ["first", "second"] {
        m.call("unload-model", json!({"model_id": id})).await;
    }
}

#[tokio::test]
async fn autostart_models_start_once_per_boot() {
    let rig = Rig::new(
        "[catalog.auto]\nsource = \"mock/tiny\"\n[catalog.auto.args]\nmax_model_len = 256\n",
    );
    let mut text = std::fs::read_to_string(&rig.0.config).unwrap();
    text = text.replace("[launcher]\n", "[launcher]\nautostart = [\"auto\"]\n");
    std::fs::write(&rig.0.config, text).unwrap();
    let m = rig.manager(&[]).await;
    let auto = wait_status(&m, "auto", "loaded", Duration::from_secs(20)).await;
    assert_eq!(auto["context_window"], 256, "catalog presets applied");
    assert!(
        !m.call("unload-model", json!({"model_id": "auto"}))
            .await
            .is_error
    );
    m.close().await;
    // A new manager (another Crush session) does not start it again on this boot.
    let m2 = rig.manager(&[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = wait_status(&m2, "auto", "unloaded", Duration::from_secs(1)).await;
    assert_eq!(still["status"], "unloaded");
}

#[tokio::test]
async fn unload_waits_for_running_requests_then_refuses_unless_forced() {
    // Slow tokens: a 100-token answer runs for about 20 s.
    let rig = Rig::new("").with_env(&[("MOCK_VLLM_TOKEN_LATENCY_MS", "200")]);
    let m = rig.manager(&[]).await;
    let a = m
        .call(
            "load-model",
            json!({"model_id": "busy", "source": "mock/tiny", "wait_seconds": 30}),
        )
        .await;
    assert_eq!(a.json["status"], "loaded", "{}", a.json);
    let base = a.json["base_url"].as_str().unwrap().to_string();
    let client = vllm_core::vllm::VllmClient::new(vllm_core::vllm::EndpointSpec::new(
        "t",
        &base,
        &Default::default(),
    ))
    .unwrap();
    let long = tokio::spawn(async move {
        client
            .completion(&json!({"model": "busy", "prompt": "go", "max_tokens": 100}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let refused = m.call("unload-model", json!({"model_id": "busy"})).await;
    assert_eq!(code(&refused), "MODEL_BUSY", "{}", refused.json);
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "it waited the grace period first"
    );
    wait_status(&m, "busy", "loaded", Duration::from_secs(2)).await;
    let forced = m
        .call("unload-model", json!({"model_id": "busy", "force": true}))
        .await;
    assert!(!forced.is_error, "{}", forced.json);
    assert_eq!(forced.json["terminated_gracefully"], false);
    assert!(long.await.unwrap().is_err(), "the cut-off request failed");
}

#[tokio::test]
async fn batch_load_and_unload_answer_per_model() {
    let rig = Rig::new("");
    let m = rig.manager(&[]).await;
    let a = m
        .call(
            "load-model",
            json!({"model_ids": ["mock/a", "mock/b", "bad id!"], "wait_seconds": 30}),
        )
        .await;
    assert!(!a.is_error, "{}", a.json);
    let results = a.json["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["status"], "loaded", "{}", a.json);
    assert_eq!(results[1]["status"], "loaded");
    assert_eq!(results[2]["success"], false);
    assert_eq!(results[2]["error"]["code"], "INVALID_ARGUMENT");
    let u = m
        .call("unload-model", json!({"model_ids": ["mock/a", "mock/b"]}))
        .await;
    let results = u.json["results"].as_array().unwrap();
    assert!(
        results
            .iter()
            .all(|r| r["status"] == "unloaded" && r["success"] == true),
        "{}",
        u.json
    );
}

mod progress {
    //! `wait_seconds` reports progress to clients that ask for it (Crush does not).

    use super::*;
    use rmcp::ClientHandler;
    use rmcp::ServiceExt;
    use rmcp::model::{
        CallToolRequestParams, NumberOrString, ProgressNotificationParam, ProgressToken,
        RequestMetaObject,
    };
    use rmcp::service::{NotificationContext, RoleClient};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Progress(Arc<Mutex<Vec<ProgressNotificationParam>>>);

    impl ClientHandler for Progress {
        async fn on_progress(
            &self,
            p: ProgressNotificationParam,
            _: NotificationContext<RoleClient>,
        ) {
            self.0.lock().unwrap().push(p);
        }
    }

    #[tokio::test]
    async fn a_waited_load_sends_progress_notifications() {
        let rig = Rig::new("").with_env(&[("MOCK_VLLM_START_DELAY", "1.5")]);
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vllm-model-manager"));
        cmd.env("VLLM_MCP_CONFIG", &rig.0.config);
        let (k, v) = rig.0.marker_env();
        cmd.env(k, v);
        let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let seen = Progress::default();
        let client = seen.clone().serve(transport).await.unwrap();
        let mut params = CallToolRequestParams::new("load-model").with_arguments(
            json!({"model_id": "tiny", "source": "mock/tiny", "wait_seconds": 30})
                .as_object()
                .unwrap()
                .clone(),
        );
        params.meta = Some(RequestMetaObject::with_progress_token(ProgressToken(
            NumberOrString::Number(7),
        )));
        let r = client.call_tool(params).await.unwrap();
        let a = vllm_mcp_testkit::answer_of(r);
        assert_eq!(a.json["status"], "loaded", "{}", a.json);
        let seen = seen.0.lock().unwrap().clone();
        assert!(!seen.is_empty(), "progress was reported while loading");
        // rmcp's client gives each request its own token: all notifications carry it.
        assert!(
            seen.iter()
                .all(|p| p.progress_token == seen[0].progress_token)
        );
        assert!(
            seen.windows(2).all(|w| w[0].progress <= w[1].progress),
            "progress only grows"
        );
        let p = serde_json::json!({"model_id": "tiny"});
        client
            .call_tool(
                CallToolRequestParams::new("unload-model")
                    .with_arguments(p.as_object().unwrap().clone()),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_attached_model_without_sleep_mode_is_not_managed() {
    let ext = vllm_mcp_testkit::MockVllm::start(&["mock/ext", "--served-model-name", "ext"], &[]);
    let rig = Rig::new("");
    let m = rig.manager(&[("VLLM_BASE_URL", &ext.base_url)]).await;
    let listed = wait_status(&m, "ext", "loaded", Duration::from_secs(5)).await;
    assert_eq!(listed["origin"], "attached");
    let u = m.call("unload-model", json!({"model_id": "ext"})).await;
    assert_eq!(code(&u), "NOT_MANAGED", "{}", u.json);
    assert!(
        u.json["error"]["details"]["suggestion"]
            .as_str()
            .unwrap()
            .contains("sleep")
    );
    // Still served: nothing was done to it.
    assert_eq!(
        vllm_mcp_testkit::http_status(ext.port, "/health"),
        Some(200)
    );
}

#[tokio::test]
async fn catalog_and_hf_cache_models_are_listed_as_unloaded() {
    let hub = temp_dir();
    let snap = hub.path().join("models--org--cached-model/snapshots/abc");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(hub.path().join("models--org--cached-model/refs")).unwrap();
    std::fs::write(
        hub.path().join("models--org--cached-model/refs/main"),
        "abc",
    )
    .unwrap();
    std::fs::write(
        snap.join("config.json"),
        r#"{"max_position_embeddings": 4096}"#,
    )
    .unwrap();
    let rig = Rig::new("[catalog.fast]\nsource = \"org/fast-model\"\nname = \"Fast Model\"\n");
    let m = rig
        .manager(&[("HF_HUB_CACHE", hub.path().to_str().unwrap())])
        .await;
    let a = m.call("list-models", json!({})).await;
    let models = a.json["models"].as_array().unwrap();
    let cached = models
        .iter()
        .find(|x| x["id"] == "org/cached-model")
        .expect("cache model listed");
    assert_eq!(cached["origin"], "cache");
    assert_eq!(cached["status"], "unloaded");
    assert_eq!(cached["context_window"], 4096);
    assert_eq!(cached["memory_usage_mb"], 0);
    let fast = models
        .iter()
        .find(|x| x["id"] == "fast")
        .expect("catalog alias listed");
    assert_eq!(
        (fast["origin"].as_str(), fast["name"].as_str()),
        (Some("catalog"), Some("Fast Model"))
    );
    let info = m
        .call("get-model-info", json!({"model_id": "org/cached-model"}))
        .await;
    assert_eq!(info.json["status"], "unloaded", "{}", info.json);
    assert_eq!(info.json["config"]["context_window"], 4096);
    let only_loaded = m.call("list-models", json!({"status": "loaded"})).await;
    assert_eq!(only_loaded.json["total"], 0);
}

#[tokio::test]
async fn a_model_outside_the_allowed_patterns_is_refused_before_launch() {
    let rig = Rig::new("[security]\nallowed_models = [\"mock/*\"]\n");
    let m = rig.manager(&[]).await;
    let refused = m
        .call("load-model", json!({"model_id": "other/model"}))
        .await;
    assert_eq!(code(&refused), "PERMISSION_DENIED", "{}", refused.json);
    let listed = m.call("list-models", json!({})).await;
    assert_eq!(
        listed.json["total"], 0,
        "nothing was launched: {}",
        listed.json
    );
    let allowed = m
        .call(
            "load-model",
            json!({"model_id": "tiny", "source": "mock/tiny", "wait_seconds": 30}),
        )
        .await;
    assert_eq!(allowed.json["status"], "loaded", "{}", allowed.json);
    assert!(
        !m.call("unload-model", json!({"model_id": "tiny"}))
            .await
            .is_error
    );
}
