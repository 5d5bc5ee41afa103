//! The runtime tools (LoRA adapters, sleep mode, chat) through a real MCP client, with
//! mock-vllm as the vLLM command and as an attached endpoint.
//!
//! The rig is lifecycle.rs's, copied so each test file stands alone: a data directory and
//! a port range per test, and every launched process group SIGKILLed when the rig drops.

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use vllm_core::vllm::{EndpointSpec, Health, VllmClient};
use vllm_mcp_testkit::{Answer, McpProcess, MockVllm, ServerRig, temp_dir};

/// The shared rig, with this server's binary.
struct Rig(ServerRig);

impl Rig {
    fn new() -> Rig {
        Rig(ServerRig::new(""))
    }

    fn with_env(self, pairs: &[(&str, &str)]) -> Rig {
        Rig(self.0.with_launcher_env(pairs))
    }

    async fn manager(&self, env: &[(&str, &str)]) -> McpProcess {
        self.0
            .spawn(Path::new(env!("CARGO_BIN_EXE_vllm-model-manager")), env)
            .await
    }
}

const LORA_ENV: (&str, &str) = ("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True");
const DEV_MODE: (&str, &str) = ("VLLM_SERVER_DEV_MODE", "1");

fn code(a: &Answer) -> &str {
    a.code().unwrap_or("OK")
}

fn field(a: &Answer) -> &str {
    a.json["error"]["details"]["field"].as_str().unwrap_or("")
}

fn suggestion(a: &Answer) -> &str {
    a.json["error"]["details"]["suggestion"]
        .as_str()
        .unwrap_or("")
}

fn client(base_url: &str) -> VllmClient {
    VllmClient::new(EndpointSpec::new("t", base_url, &Default::default())).unwrap()
}

/// Launches `id` from mock/tiny with `extra` load arguments and waits until it is served;
/// returns its base URL.
async fn load(m: &McpProcess, id: &str, extra: Value) -> String {
    let mut args =
        json!({"model_id": id, "source": "mock/tiny", "max_model_len": 512, "wait_seconds": 30});
    if let (Some(a), Some(e)) = (args.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    let a = m.call("load-model", args).await;
    assert_eq!(a.json["status"], "loaded", "{}", a.json);
    a.json["base_url"].as_str().unwrap().to_string()
}

/// The status list-models shows for `id`.
async fn listed_status(m: &McpProcess, id: &str) -> Value {
    let a = m.call("list-models", json!({})).await;
    a.json["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .map(|x| x["status"].clone())
        .unwrap_or(Value::Null)
}

/// An adapter directory like a PEFT LoRA's (the mock reads only `r`).
fn adapter_dir(rank: u64) -> tempfile::TempDir {
    let d = temp_dir();
    let cfg = json!({
        "base_model_name_or_path": "/models/tiny-model", "peft_type": "LORA", "task_type": "CAUSAL_LM",
        "r": rank, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
    });
    std::fs::write(d.path().join("adapter_config.json"), cfg.to_string()).unwrap();
    d
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[tokio::test]
async fn lora_round_trip_on_a_launched_model() {
    let rig = Rig::new().with_env(&[LORA_ENV]);
    let m = rig.manager(&[]).await;
    let base = load(&m, "tiny", json!({"extra_args": ["--enable-lora"]})).await;
    let vllm = client(&base);
    let dir = adapter_dir(8);
    let path = dir.path().to_str().unwrap().to_string();

    let a = m
        .call(
            "load-lora-adapter",
            json!({"model_id": "tiny", "lora_name": "tiny-lora", "lora_path": path}),
        )
        .await;
    assert!(!a.is_error, "{}", a.json);
    assert_eq!(a.json["loaded"], true);
    assert_eq!(a.json["already_loaded"], false);
    assert_eq!(a.json["adapters"], json!(["tiny-lora"]));
    assert_eq!(a.json["lora_path"], path);
    // The server serves it as its own model, with the base as parent.
    let cards = vllm.models_fresh().await.unwrap();
    let card = cards.iter().find(|c| c.id == "tiny-lora").expect("listed");
    assert_eq!(card.parent.as_deref(), Some("tiny"));
    assert_eq!(card.root.as_deref(), Some(path.as_str()));

    // Usable as a model: through the chat tool and directly.
    let c = m
        .call(
            "chat",
            json!({"model_id": "tiny-lora", "messages": user("hello adapter"), "max_tokens": 4}),
        )
        .await;
    assert!(!c.is_error, "{}", c.json);
    assert_eq!(c.json["model_id"], "tiny-lora");
    assert_eq!(c.json["usage"]["completion_tokens"], 4);
    let direct = vllm
        .chat(&json!({"model": "tiny-lora", "messages": user("hello adapter"), "max_tokens": 4}))
        .await
        .unwrap();
    assert_eq!(direct["model"], "tiny-lora");

    // Idempotent: the same adapter again changes nothing.
    let again = m
        .call(
            "load-lora-adapter",
            json!({"model_id": "tiny", "lora_name": "tiny-lora", "lora_path": path}),
        )
        .await;
    assert!(!again.is_error, "{}", again.json);
    assert_eq!(again.json["already_loaded"], true);

    // Refusals before vLLM is asked, each naming its field.
    let other = adapter_dir(8);
    let no_config = temp_dir();
    let file = format!("{path}/adapter_config.json");
    let dotdot = format!("{path}/../x");
    let other_path = other.path().to_str().unwrap();
    let no_config_path = no_config.path().to_str().unwrap();
    let cases = [
        ("tiny", "tiny-lora", other_path, "lora_name"),
        ("tiny", "tiny", other_path, "lora_name"),
        ("tiny", "bad name", other_path, "lora_name"),
        ("tiny", "../x", other_path, "lora_name"),
        ("tiny", "l2", "adapters/relative", "lora_path"),
        ("tiny", "l2", "/no/such/adapter/dir", "lora_path"),
        ("tiny", "l2", dotdot.as_str(), "lora_path"),
        ("tiny", "l2", no_config_path, "lora_path"),
        ("tiny", "l2", file.as_str(), "lora_path"),
        ("tiny-lora", "l2", other_path, "model_id"),
    ];
    for (model, name, p, want) in cases {
        let a = m
            .call(
                "load-lora-adapter",
                json!({"model_id": model, "lora_name": name, "lora_path": p}),
            )
            .await;
        assert_eq!(
            code(&a),
            "INVALID_ARGUMENT",
            "{model} {name} {p}: {}",
            a.json
        );
        assert_eq!(field(&a), want, "{model} {name} {p}: {}", a.json);
    }
    let unknown = m
        .call(
            "load-lora-adapter",
            json!({"model_id": "nobody/nothing", "lora_name": "l2", "lora_path": other_path}),
        )
        .await;
    assert_eq!(code(&unknown), "MODEL_NOT_FOUND", "{}", unknown.json);

    let u = m
        .call(
            "unload-lora-adapter",
            json!({"model_id": "tiny", "lora_name": "tiny-lora"}),
        )
        .await;
    assert!(!u.is_error, "{}", u.json);
    assert_eq!(u.json["loaded"], false);
    assert_eq!(u.json["adapters"], json!([]));
    assert_eq!(u.json["lora_path"], path);
    assert!(
        !vllm
            .models_fresh()
            .await
            .unwrap()
            .iter()
            .any(|c| c.id == "tiny-lora")
    );
    let twice = m
        .call(
            "unload-lora-adapter",
            json!({"model_id": "tiny", "lora_name": "tiny-lora"}),
        )
        .await;
    assert_eq!(code(&twice), "MODEL_NOT_FOUND", "{}", twice.json);
    assert_eq!(twice.json["error"]["details"]["model_id"], "tiny-lora");
    let base_as_adapter = m
        .call(
            "unload-lora-adapter",
            json!({"model_id": "tiny", "lora_name": "tiny"}),
        )
        .await;
    assert_eq!(field(&base_as_adapter), "lora_name");
    let gone = m
        .call(
            "chat",
            json!({"model_id": "tiny-lora", "messages": user("hi")}),
        )
        .await;
    assert_eq!(code(&gone), "MODEL_NOT_FOUND", "{}", gone.json);

    // An adapter of too high a rank for the server: what to relaunch with.
    let big = adapter_dir(64);
    let a = m
        .call(
            "load-lora-adapter",
            json!({"model_id": "tiny", "lora_name": "big", "lora_path": big.path().to_str().unwrap()}),
        )
        .await;
    assert_eq!(code(&a), "UNSUPPORTED", "{}", a.json);
    assert!(
        suggestion(&a).contains("\"--max-lora-rank\", \"64\""),
        "{}",
        a.json
    );
    // Following the suggestion works.
    load(
        &m,
        "tiny",
        json!({"extra_args": ["--enable-lora", "--max-lora-rank", "64"], "replace": true}),
    )
    .await;
    let a = m
        .call(
            "load-lora-adapter",
            json!({"model_id": "tiny", "lora_name": "big", "lora_path": big.path().to_str().unwrap()}),
        )
        .await;
    assert!(!a.is_error, "{}", a.json);

    assert!(
        !m.call("unload-model", json!({"model_id": "tiny"}))
            .await
            .is_error
    );
}

#[tokio::test]
async fn lora_on_a_server_without_enable_lora_is_unsupported_with_what_to_set() {
    let rig = Rig::new().with_env(&[LORA_ENV]);
    let m = rig.manager(&[]).await;
    load(&m, "plain", json!({})).await;
    let dir = adapter_dir(8);
    let a = m
        .call(
            "load-lora-adapter",
            json!({"model_id": "plain", "lora_name": "l", "lora_path": dir.path().to_str().unwrap()}),
        )
        .await;
    assert_eq!(code(&a), "UNSUPPORTED", "{}", a.json);
    let s = suggestion(&a);
    assert!(s.contains("\"extra_args\": [\"--enable-lora\"]"), "{s}");
    assert!(
        !s.contains("[launcher.env]"),
        "the variable is already set: {s}"
    );
    assert!(
        a.json["error"]["details"]["what"]
            .as_str()
            .unwrap()
            .contains("--enable-lora")
    );
    m.call("unload-model", json!({"model_id": "plain"})).await;
}

#[tokio::test]
async fn without_dev_mode_or_the_lora_variable_sleep_and_lora_are_unsupported() {
    let rig = Rig::new();
    let m = rig.manager(&[]).await;
    load(&m, "tiny", json!({"extra_args": ["--enable-lora"]})).await;

    let s = m.call("sleep-model", json!({"model_id": "tiny"})).await;
    assert_eq!(code(&s), "UNSUPPORTED", "{}", s.json);
    assert!(
        suggestion(&s).contains("VLLM_SERVER_DEV_MODE = \"1\""),
        "{}",
        s.json
    );
    assert!(suggestion(&s).contains("[launcher.env]"));
    assert!(suggestion(&s).contains("CPU"), "the CPU caveat is said");
    assert_eq!(listed_status(&m, "tiny").await, "loaded");

    // It cannot sleep, so it is awake: waking it is a no-op, not an error.
    let w = m.call("wake-model", json!({"model_id": "tiny"})).await;
    assert!(!w.is_error, "{}", w.json);
    assert_eq!(w.json["was_sleeping"], false);
    assert_eq!(w.json["status"], "loaded");

    let dir = adapter_dir(8);
    let l = m
        .call(
            "load-lora-adapter",
            json!({"model_id": "tiny", "lora_name": "l", "lora_path": dir.path().to_str().unwrap()}),
        )
        .await;
    assert_eq!(code(&l), "UNSUPPORTED", "{}", l.json);
    assert!(
        suggestion(&l).contains("VLLM_ALLOW_RUNTIME_LORA_UPDATING = \"True\""),
        "{}",
        l.json
    );
    assert!(
        !suggestion(&l).contains("extra_args"),
        "--enable-lora is already there: {}",
        l.json
    );
    m.call("unload-model", json!({"model_id": "tiny"})).await;
}

#[tokio::test]
async fn sleep_and_wake_with_dev_mode() {
    let rig = Rig::new().with_env(&[DEV_MODE]);
    let m = rig.manager(&[]).await;
    let base = load(&m, "tiny", json!({})).await;
    let vllm = client(&base);
    let pid = m
        .call("get-model-info", json!({"model_id": "tiny"}))
        .await
        .json["server"]["pid"]
        .as_u64()
        .unwrap() as u32;

    let bad = m
        .call("sleep-model", json!({"model_id": "tiny", "level": 3}))
        .await;
    assert_eq!(field(&bad), "level", "{}", bad.json);

    let s = m.call("sleep-model", json!({"model_id": "tiny"})).await;
    assert!(!s.is_error, "{}", s.json);
    assert_eq!(s.json["status"], "sleeping");
    assert_eq!(s.json["level"], 1);
    assert_eq!(s.json["already_sleeping"], false);
    assert!(s.json["memory_freed_mb"].is_u64(), "{}", s.json);
    assert_eq!(s.json["memory_source"], "rss");
    assert!(
        s.json["note"].as_str().unwrap().contains("CPU"),
        "{}",
        s.json
    );
    assert!(vllm.is_sleeping().await.unwrap());

    // The observer keeps it sleeping: /health and /v1/models still answer while asleep.
    assert_eq!(vllm.health().await.unwrap(), Health::Ready);
    assert!(
        vllm.models_fresh()
            .await
            .unwrap()
            .iter()
            .any(|c| c.id == "tiny")
    );
    for _ in 0..3 {
        assert_eq!(listed_status(&m, "tiny").await, "sleeping");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let info = m.call("get-model-info", json!({"model_id": "tiny"})).await;
    assert_eq!(info.json["status"], "sleeping", "{}", info.json);

    // A chat would wait for the wake-up: it is refused at once, saying what to do.
    let t = Instant::now();
    let c = m
        .call("chat", json!({"model_id": "tiny", "messages": user("hi")}))
        .await;
    assert_eq!(code(&c), "INVALID_ARGUMENT", "{}", c.json);
    assert_eq!(field(&c), "model_id");
    assert!(
        c.json["error"]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("wake-model")
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    let lora = m
        .call(
            "load-lora-adapter",
            json!({"model_id": "tiny", "lora_name": "l", "lora_path": "/x"}),
        )
        .await;
    assert_eq!(field(&lora), "model_id", "{}", lora.json);

    let again = m.call("sleep-model", json!({"model_id": "tiny"})).await;
    assert!(!again.is_error, "{}", again.json);
    assert_eq!(again.json["already_sleeping"], true);
    assert_eq!(again.json["level"], 1);

    let w = m.call("wake-model", json!({"model_id": "tiny"})).await;
    assert!(!w.is_error, "{}", w.json);
    assert_eq!(w.json["status"], "loaded");
    assert_eq!(w.json["was_sleeping"], true);
    assert!(w.json["seconds"].as_f64().unwrap() < 10.0);
    assert!(!vllm.is_sleeping().await.unwrap());
    assert_eq!(listed_status(&m, "tiny").await, "loaded");
    let c = m
        .call(
            "chat",
            json!({"model_id": "tiny", "messages": user("hi"), "max_tokens": 2}),
        )
        .await;
    assert!(!c.is_error, "{}", c.json);
    let w2 = m.call("wake-model", json!({"model_id": "tiny"})).await;
    assert_eq!(w2.json["was_sleeping"], false, "{}", w2.json);

    // Level 2, then unload while asleep: the process group goes away.
    let s2 = m
        .call("sleep-model", json!({"model_id": "tiny", "level": 2}))
        .await;
    assert!(!s2.is_error, "{}", s2.json);
    assert_eq!(s2.json["level"], 2);
    assert!(
        s2.json["note"].as_str().unwrap().contains("level 2"),
        "{}",
        s2.json
    );
    let u = m.call("unload-model", json!({"model_id": "tiny"})).await;
    assert!(!u.is_error, "{}", u.json);
    assert_eq!(u.json["was_running"], true);
    assert!(vllm_fleet::launcher::process::group_members(pid).is_empty());
    let asleep_unloaded = m.call("wake-model", json!({"model_id": "tiny"})).await;
    assert_eq!(field(&asleep_unloaded), "model_id");
}

#[tokio::test]
async fn chat_answers_validates_and_carries_vllm_errors() {
    let rig = Rig::new();
    let m = rig.manager(&[]).await;
    let base = load(&m, "tiny", json!({})).await;
    let vllm = client(&base);

    let messages = user("hello there");
    let a = m
        .call(
            "chat",
            json!({"model_id": "tiny", "messages": messages, "max_tokens": 5}),
        )
        .await;
    assert!(!a.is_error, "{}", a.json);
    assert_eq!(a.json["model_id"], "tiny");
    assert_eq!(a.json["finish_reason"], "length");
    // The mock's rules: BOS + (role + 2 words) + generation prompt; 5 tokens generated.
    assert_eq!(
        a.json["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
    );
    assert!(a.json["latency_ms"].as_f64().unwrap() > 0.0);
    // Deterministic: the same request straight to the server gives the same text.
    let direct = vllm
        .chat(&json!({"model": "tiny", "messages": messages, "max_tokens": 5}))
        .await
        .unwrap();
    let content = a.json["content"].as_str().unwrap();
    assert_eq!(content, direct["choices"][0]["message"]["content"]);
    assert_eq!(content.split_whitespace().count(), 5, "{content}");

    let d = m
        .call(
            "chat",
            json!({"model_id": "tiny", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "again"}],
                "temperature": 0.0, "seed": 7}),
        )
        .await;
    assert!(!d.is_error, "{}", d.json);
    assert_eq!(
        d.json["usage"]["completion_tokens"], 64,
        "max_tokens defaults to 64"
    );

    let many: Vec<Value> = (0..2000)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    let huge = "a".repeat(40 * 1024);
    let cases = [
        (json!({"model_id": "tiny", "messages": []}), "messages"),
        (
            json!({"model_id": "tiny", "messages": [{"role": "robot", "content": "hi"}]}),
            "messages[0].role",
        ),
        (json!({"model_id": "tiny", "messages": many}), "messages"),
        (
            json!({"model_id": "tiny", "messages": user(&huge)}),
            "messages[0].content",
        ),
        (
            json!({"model_id": "tiny", "messages": user("hi"), "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"model_id": "tiny", "messages": user("hi"), "max_tokens": 1025}),
            "max_tokens",
        ),
        (
            json!({"model_id": "tiny", "messages": user("hi"), "temperature": -1}),
            "temperature",
        ),
        (
            json!({"model_id": "tiny", "messages": user("hi"), "stop": ["a", "b", "c", "d", "e"]}),
            "stop",
        ),
        (json!({"model_id": "tiny"}), "messages"),
        (
            json!({"model_id": "$(reboot)", "messages": user("hi")}),
            "model_id",
        ),
    ];
    for (args, want) in cases {
        let a = m.call("chat", args.clone()).await;
        assert_eq!(code(&a), "INVALID_ARGUMENT", "{}", a.json);
        assert_eq!(field(&a), want, "{}", a.json);
    }
    let unknown = m
        .call(
            "chat",
            json!({"model_id": "nobody/nothing", "messages": user("hi")}),
        )
        .await;
    assert_eq!(code(&unknown), "MODEL_NOT_FOUND", "{}", unknown.json);

    // A prompt beyond the context window: vLLM's own message comes back.
    let long = vec!["word"; 600].join(" ");
    let too_long = m
        .call("chat", json!({"model_id": "tiny", "messages": user(&long)}))
        .await;
    assert_eq!(code(&too_long), "BACKEND_ERROR", "{}", too_long.json);
    assert_eq!(too_long.json["error"]["details"]["status"], 400);
    assert!(
        too_long.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length"),
        "{}",
        too_long.json
    );

    // The server keeps serving, and so does the model.
    assert!(!m.call("server-health", json!({})).await.is_error);
    let ok = m
        .call(
            "chat",
            json!({"model_id": "tiny", "messages": user("still there"), "max_tokens": 1}),
        )
        .await;
    assert!(!ok.is_error, "{}", ok.json);

    assert!(
        !m.call("unload-model", json!({"model_id": "tiny"}))
            .await
            .is_error
    );
    let unloaded = m
        .call("chat", json!({"model_id": "tiny", "messages": user("hi")}))
        .await;
    assert_eq!(code(&unloaded), "INVALID_ARGUMENT", "{}", unloaded.json);
    assert!(
        unloaded.json["error"]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("unloaded")
    );
}

#[tokio::test]
async fn an_attached_endpoint_chats_sleeps_takes_adapters_and_is_not_managed() {
    let mock = MockVllm::start(
        &[
            "mock/tiny",
            "--served-model-name",
            "ext",
            "--max-model-len",
            "512",
            "--enable-lora",
        ],
        &[DEV_MODE, LORA_ENV],
    );
    let rig = Rig::new();
    let m = rig.manager(&[("VLLM_BASE_URL", &mock.base_url)]).await;

    let c = m
        .call(
            "chat",
            json!({"model_id": "ext", "messages": user("hello"), "max_tokens": 3}),
        )
        .await;
    assert!(!c.is_error, "{}", c.json);
    assert_eq!(c.json["usage"]["completion_tokens"], 3);

    // Its server has sleep mode: unloading puts it to sleep instead of refusing.
    let u = m.call("unload-model", json!({"model_id": "ext"})).await;
    assert!(!u.is_error, "{}", u.json);
    assert_eq!(u.json["status"], "sleeping");
    assert!(
        u.json["memory_freed_mb"].is_null(),
        "not visible from here: {}",
        u.json
    );
    let w0 = m.call("wake-model", json!({"model_id": "ext"})).await;
    assert_eq!(w0.json["was_sleeping"], true, "{}", w0.json);

    let s = m.call("sleep-model", json!({"model_id": "ext"})).await;
    assert!(!s.is_error, "{}", s.json);
    assert_eq!(s.json["status"], "sleeping");
    assert!(s.json["memory_freed_mb"].is_null(), "{}", s.json);
    assert!(s.json["note"].as_str().unwrap().contains("attached"));
    // The attached server's sleep shows in the listing and the model's info.
    let listed = m.call("list-models", json!({})).await;
    let ext = listed.json["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "ext")
        .unwrap();
    assert_eq!(ext["status"], "sleeping", "{}", listed.json);
    let info = m.call("get-model-info", json!({"model_id": "ext"})).await;
    assert_eq!(info.json["status"], "sleeping");
    let asleep = m
        .call("chat", json!({"model_id": "ext", "messages": user("hi")}))
        .await;
    assert_eq!(field(&asleep), "model_id", "{}", asleep.json);
    let w = m.call("wake-model", json!({"model_id": "ext"})).await;
    assert!(!w.is_error, "{}", w.json);
    assert_eq!(w.json["was_sleeping"], true);

    let dir = adapter_dir(8);
    let l = m
        .call(
            "load-lora-adapter",
            json!({"model_id": "ext", "lora_name": "ext-lora", "lora_path": dir.path().to_str().unwrap()}),
        )
        .await;
    assert!(!l.is_error, "{}", l.json);
    assert_eq!(l.json["adapters"], json!(["ext-lora"]));
    let c = m
        .call(
            "chat",
            json!({"model_id": "ext-lora", "messages": user("hello"), "max_tokens": 2}),
        )
        .await;
    assert!(!c.is_error, "{}", c.json);
    let missing = m
        .call(
            "load-lora-adapter",
            json!({"model_id": "ext", "lora_name": "l2", "lora_path": "/no/such/adapter"}),
        )
        .await;
    assert_eq!(
        field(&missing),
        "lora_path",
        "a loopback endpoint's paths are checked here: {}",
        missing.json
    );
    let ul = m
        .call(
            "unload-lora-adapter",
            json!({"model_id": "ext", "lora_name": "ext-lora"}),
        )
        .await;
    assert!(!ul.is_error, "{}", ul.json);
    assert_eq!(ul.json["adapters"], json!([]));
    m.close().await;
    drop(mock);
}

#[tokio::test]
async fn the_runtime_tools_are_listed_with_their_annotations_and_schemas() {
    let rig = Rig::new();
    let m = rig.manager(&[]).await;
    let tools: Vec<Value> = m
        .tools()
        .await
        .into_iter()
        .map(|t| serde_json::to_value(t).unwrap())
        .collect();
    let expected = [
        ("load-lora-adapter", true),
        ("unload-lora-adapter", true),
        ("sleep-model", true),
        ("wake-model", true),
        ("chat", false),
    ];
    for (name, idempotent) in expected {
        let t = tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} is listed"));
        let a = &t["annotations"];
        assert_eq!(a["readOnlyHint"], false, "{name}");
        assert_eq!(a["destructiveHint"], false, "{name}");
        assert_eq!(a["idempotentHint"], idempotent, "{name}");
        let schema = t["inputSchema"].to_string();
        assert!(
            !schema.contains("$ref") && !schema.contains("$defs"),
            "{name}: {schema}"
        );
        assert!(
            t["inputSchema"]["required"]
                .as_array()
                .unwrap()
                .contains(&json!("model_id"))
        );
    }
    let chat = tools.iter().find(|t| t["name"] == "chat").unwrap();
    let role = &chat["inputSchema"]["properties"]["messages"]["items"]["properties"]["role"];
    assert!(role.to_string().contains("assistant"), "{role}");
    m.close().await;
}
