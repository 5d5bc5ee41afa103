//! `vllm-model-manager --gateway`, the front door as a service: the official OpenAI and
//! Anthropic Python clients against it (tests/clients/front_door.py), and its life: a
//! SIGKILL and a restart adopt the running models instead of launching them again, and
//! a SIGTERM ends it promptly, leaving them running.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vllm_core::store::Store;
use vllm_mcp_testkit::{ServerRig, free_port, http_status, process_alive};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python with the official clients (scripts/clients.sh installs them once).
/// Without it (no registry to install from), the test is skipped, except under CI.
fn clients_python() -> Option<String> {
    let lines = vllm_mcp_testkit::setup_or_skip("clients.sh", "the openai and anthropic clients")?;
    lines.last().cloned()
}

/// The service on `port`, once it answers /health.
fn start(rig: &ServerRig, port: u16) -> Child {
    rig.spawn_door(port, &[("VLLM_MCP_TEST_DOOR_KEY", "door-key")])
}

fn rig(port: u16) -> ServerRig {
    ServerRig::new(&format!(
        "[gateway]\nlisten = \"127.0.0.1:{port}\"\napi_key_env = \"VLLM_MCP_TEST_DOOR_KEY\"\n\
         [limits]\nmax_models = 1\n\
         [catalog.tiny]\nsource = \"mock/tiny\"\n[catalog.other]\nsource = \"mock/other\"\n"
    ))
}

#[test]
fn the_official_openai_and_anthropic_clients_use_the_front_door() {
    let Some(python) = clients_python() else {
        return;
    };
    let port = free_port();
    let rig = rig(port);
    let mut door = start(&rig, port);
    let out = Command::new(python)
        .arg(root().join("tests/clients/front_door.py"))
        .args([
            &format!("http://127.0.0.1:{port}"),
            "door-key",
            "tiny",
            "other",
        ])
        .output()
        .expect("run the clients");
    let _ = door.kill();
    let _ = door.wait();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the clients failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        10,
        "{stdout}"
    );
}

async fn chat(port: u16, model: &str) -> Value {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .bearer_auth("door-key")
        .json(&json!({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// list-models' entry of `id`, as an MCP client sees it.
async fn listed(m: &vllm_mcp_testkit::McpProcess, id: &str) -> Value {
    let list = m.call("list-models", json!({})).await;
    let found = list.json["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id);
    found
        .cloned()
        .unwrap_or_else(|| panic!("{id} is not listed: {}", list.json))
}

fn pid_of(rig: &ServerRig, model: &str) -> Option<u32> {
    let store = Store::open(&rig.store_path()).unwrap();
    vllm_core::models::get(&store, model)
        .unwrap()
        .and_then(|r| r.pid)
}

#[tokio::test]
async fn a_killed_gateway_restarts_adopting_its_models_and_a_stopped_one_leaves_them_running() {
    vllm_core::vllm::install_tls_provider();
    let port = free_port();
    let rig = rig(port);
    let mut door = start(&rig, port);
    chat(port, "tiny").await;
    let pid = pid_of(&rig, "tiny").expect("tiny runs");
    let processes = rig.marked_running("mock/tiny");

    // SIGKILL: the model outlives it, and the next gateway serves it as it is.
    door.kill().unwrap();
    door.wait().unwrap();
    assert!(process_alive(pid), "the model died with the gateway");
    let mut door = start(&rig, port);
    chat(port, "tiny").await;
    assert_eq!(
        pid_of(&rig, "tiny"),
        Some(pid),
        "the model was launched again"
    );
    assert_eq!(
        rig.marked_running("mock/tiny"),
        processes,
        "a second server of tiny"
    );

    // SIGTERM: a prompt, clean exit; the model keeps serving.
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(door.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let status = loop {
        if let Some(s) = door.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "SIGTERM did not end the gateway"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(process_alive(pid), "SIGTERM took the model down");
    assert_eq!(
        http_status(port, "/health"),
        None,
        "the port is still served"
    );
}

#[test]
fn gateway_without_an_address_is_refused_naming_the_key() {
    let rig = ServerRig::new("");
    let out = rig
        .command("vllm-model-manager")
        .arg("--gateway")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.listen"), "{err}");
    let help = rig
        .command("vllm-model-manager")
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--gateway"));
}

#[tokio::test]
async fn mcp_tools_see_the_requests_running_through_the_door_and_its_provider_block() {
    vllm_core::vllm::install_tls_provider();
    let port = free_port();
    let rig = rig(port).with_launcher_env(&[("MOCK_VLLM_TOKEN_LATENCY_MS", "50")]);
    let mut door = start(&rig, port);
    chat(port, "tiny").await;
    // A stream of 300 tokens at 50 ms (15 s) runs through the door.
    let stream = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .bearer_auth("door-key")
        .json(&json!({"model": "tiny", "max_tokens": 300, "stream": true,
                      "messages": [{"role": "user", "content": "go"}]}))
        .send()
        .await
        .unwrap();
    let mut body = stream.bytes_stream();
    use futures_util::StreamExt;
    body.next().await.unwrap().unwrap();

    let bin = vllm_mcp_testkit::bin("vllm-model-manager");
    let m = rig
        .spawn(&bin, &[("VLLM_MCP_TEST_DOOR_KEY", "door-key")])
        .await;
    let t = Instant::now();
    let list = loop {
        let tiny = listed(&m, "tiny").await;
        if tiny["front_door"]["in_flight"] == 1 {
            break tiny;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{tiny}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        list["front_door"]["url"],
        format!("http://127.0.0.1:{port}")
    );
    assert!(list["front_door"]["last_used"].is_string(), "{list}");
    let info = m.call("get-model-info", json!({"model_id": "tiny"})).await;
    assert_eq!(info.json["front_door"]["in_flight"], 1, "{}", info.json);

    // Crush unloading it meanwhile is told it is busy, and nothing is stopped.
    let u = m.call("unload-model", json!({"model_id": "tiny"})).await;
    assert_eq!(u.code(), Some("MODEL_BUSY"), "{}", u.json);
    assert!(u.json.to_string().contains("front door"), "{}", u.json);
    assert_eq!(pid_of(&rig, "tiny").map(process_alive), Some(true));

    // One provider block, at the door, with every model it can serve.
    let text = m.read("vllm://crush/provider-config").await.unwrap();
    let cfg: Value = serde_json::from_str(&text).unwrap();
    let block = &cfg["providers"]["vllm-mcp"];
    assert_eq!(
        block["base_url"],
        format!("http://127.0.0.1:{port}/v1"),
        "{cfg}"
    );
    assert_eq!(block["api_key"], "$VLLM_MCP_TEST_DOOR_KEY");
    let ids: Vec<&str> = block["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny", "other"], "{cfg}");
    assert_eq!(cfg["providers"].as_object().unwrap().len(), 1);

    drop(body);
    m.close().await;
    let _ = door.kill();
    let _ = door.wait();
}

#[tokio::test]
async fn a_load_model_during_a_start_the_door_began_waits_for_it_and_the_log_says_who_started_it() {
    vllm_core::vllm::install_tls_provider();
    let port = free_port();
    let rig = rig(port).with_launcher_env(&[("MOCK_VLLM_START_DELAY", "2")]);
    let mut door = start(&rig, port);
    let first = tokio::spawn(async move { chat(port, "tiny").await });
    let bin = vllm_mcp_testkit::bin("vllm-model-manager");
    let m = rig.spawn(&bin, &[]).await;
    let t = Instant::now();
    while pid_of(&rig, "tiny").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the door did not launch tiny"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tiny = listed(&m, "tiny").await;
    assert_eq!(tiny["status"], "loading", "{tiny}");

    // load-model asking for progress, as a client other than Crush may.
    let (load, progress) = load_with_progress(&rig, "tiny").await;
    assert!(!load.is_error, "{}", load.json);
    assert_eq!(load.json["status"], "loaded", "{}", load.json);
    assert_eq!(load.json["already_running"], true, "{}", load.json);
    assert!(progress > 0, "no progress was reported while it waited");
    first.await.unwrap();
    let log = m.read("vllm://model/tiny/logs").await.unwrap();
    assert!(log.contains("vllm-mcp front door"), "{log}");
    m.close().await;
    let _ = door.kill();
    let _ = door.wait();
}

/// Calls load-model (waiting) on a fresh model manager with a progress token: the answer
/// and how many progress notifications came.
async fn load_with_progress(rig: &ServerRig, model: &str) -> (vllm_mcp_testkit::Answer, usize) {
    use rmcp::ServiceExt;
    use rmcp::model::{CallToolRequestParams, NumberOrString, ProgressToken, RequestMetaObject};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Count(Arc<Mutex<usize>>);
    impl rmcp::ClientHandler for Count {
        async fn on_progress(
            &self,
            _: rmcp::model::ProgressNotificationParam,
            _: rmcp::service::NotificationContext<rmcp::service::RoleClient>,
        ) {
            *self.0.lock().unwrap() += 1;
        }
    }
    let cmd = tokio::process::Command::from(rig.command("vllm-model-manager"));
    let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = Count::default();
    let client = seen.clone().serve(transport).await.unwrap();
    let args = json!({"model_id": model, "wait_seconds": 30});
    let mut params =
        CallToolRequestParams::new("load-model").with_arguments(args.as_object().unwrap().clone());
    params.meta = Some(RequestMetaObject::with_progress_token(ProgressToken(
        NumberOrString::Number(1),
    )));
    let r = client.call_tool(params).await.unwrap();
    let _ = client.cancel().await;
    let n = *seen.0.lock().unwrap();
    (vllm_mcp_testkit::answer_of(r), n)
}

#[tokio::test]
async fn embedded_one_crush_session_serves_the_door_and_another_takes_it_over() {
    vllm_core::vllm::install_tls_provider();
    let port = free_port();
    let rig = rig(port);
    let bin = vllm_mcp_testkit::bin("vllm-model-manager");
    let key = [("VLLM_MCP_TEST_DOOR_KEY", "door-key")];
    let first = rig.spawn(&bin, &key).await;
    let wait_served = |what: &'static str| async move {
        let t = Instant::now();
        while http_status(port, "/health") != Some(200) {
            assert!(t.elapsed() < Duration::from_secs(20), "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_served("no session serves the door").await;
    let second = rig.spawn(&bin, &key).await;
    chat(port, "tiny").await;

    // The serving session ends (Crush closed it): the other one takes the door over.
    first.close().await;
    wait_served("the second session did not take the door over").await;
    let answer = chat(port, "tiny").await;
    assert_eq!(answer["model"], "tiny");
    let tiny = listed(&second, "tiny").await;
    assert_eq!(tiny["status"], "loaded", "{tiny}");
    second.close().await;
}
