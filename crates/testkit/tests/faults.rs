//! A vLLM that hangs, dies mid-request or loses its engine is an answer, never a stuck
//! call: each server answers within its timeouts and goes on serving.

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use vllm_mcp_testkit::wire::{Wire, text_of};
use vllm_mcp_testkit::{MockVllm, ServerRig, http_status};

fn spawn(rig: &ServerRig, name: &str) -> Wire {
    let mut cmd = rig.command(name);
    cmd.env("VLLM_MCP_FAKE_GPUS", "2");
    let mut w = Wire::spawn(cmd);
    w.initialize();
    w
}

/// Polls list-models until `model_id` is in status `error`; its entry.
fn wait_marked_error(w: &mut Wire, model_id: &str, limit: Duration) -> Value {
    let t = Instant::now();
    loop {
        let l = text_of(&w.call("list-models", json!({"status": "error"})));
        if let Some(x) = l["models"]
            .as_array()
            .and_then(|ms| ms.iter().find(|x| x["id"] == model_id))
        {
            return x.clone();
        }
        assert!(t.elapsed() < limit, "{model_id} never marked: {l}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Calls a tool and returns its answer and how long it took.
fn timed(w: &mut Wire, tool: &str, args: Value) -> (Value, Duration) {
    let t = Instant::now();
    let a = text_of(&w.call(tool, args));
    (a, t.elapsed())
}

#[test]
fn a_hanging_endpoint_is_a_timeout_for_every_server() {
    // Every answer of this server takes ten minutes.
    let hang = MockVllm::spawn(&["hang/model"], &[("MOCK_VLLM_SLOW_MS", "600000")]);
    let t = Instant::now();
    while http_status(hang.port, "/nothing").is_none() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let rig = ServerRig::new(&format!(
        "[http]\nrequest_timeout_seconds = 1.5\ncompletion_timeout_seconds = 2.0\n\
         [[endpoints]]\nname = \"hang\"\nbase_url = {:?}\n",
        hang.base_url
    ));
    let limit = Duration::from_secs(6);
    let calls: Vec<(&str, &str, Value)> = vec![
        ("vllm-model-manager", "list-models", json!({})),
        (
            "vllm-model-manager",
            "get-model-info",
            json!({"model_id": "hang/model"}),
        ),
        (
            "vllm-model-manager",
            "chat",
            json!({"model_id": "hang/model", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("vllm-model-manager", "server-health", json!({})),
        (
            "vllm-perf-monitor",
            "get-metrics",
            json!({"duration_seconds": 30}),
        ),
        (
            "vllm-perf-monitor",
            "benchmark-model",
            json!({"model_id": "hang/model", "requests": 2, "timeout_seconds": 3}),
        ),
        ("vllm-perf-monitor", "server-health", json!({})),
        ("vllm-state-persistence", "server-health", json!({})),
    ];
    let mut report = Vec::new();
    for server in [
        "vllm-model-manager",
        "vllm-perf-monitor",
        "vllm-state-persistence",
    ] {
        let mut w = spawn(&rig, server);
        for (_, tool, args) in calls.iter().filter(|(s, _, _)| *s == server) {
            let (a, took) = timed(&mut w, tool, args.clone());
            assert!(took < limit, "{server} {tool} took {took:?}: {a}");
            if a["success"] == false {
                let code = a["error"]["code"].as_str().unwrap_or("");
                assert!(code.starts_with("BACKEND_"), "{server} {tool}: {a}");
            }
            if ["get-model-info", "chat", "benchmark-model"].contains(tool) {
                // The endpoint that did not answer may serve it: its timeout, not "not found".
                assert_eq!(a["error"]["code"], "BACKEND_TIMEOUT", "{a}");
            }
            report.push(format!(
                "{tool} {:.1} s ({})",
                took.as_secs_f64(),
                a["error"]["code"].as_str().unwrap_or("ok")
            ));
        }
        // Still serving at once.
        let t = Instant::now();
        assert_eq!(w.request_raw("ping", json!({}))["result"], json!({}));
        assert!(t.elapsed() < Duration::from_secs(1));
        w.close(Duration::from_secs(5));
    }
    eprintln!("against a hanging endpoint: {}", report.join(", "));
}

#[test]
fn a_server_killed_mid_request_or_losing_its_engine_is_an_answer() {
    let rig = ServerRig::new("").with_launcher_env(&[
        ("MOCK_VLLM_START_DELAY", "0.3"),
        ("MOCK_VLLM_TOKEN_LATENCY_MS", "20"),
    ]);
    let mut m = spawn(&rig, "vllm-model-manager");
    let a = text_of(&m.call(
        "load-model",
        json!({"model_id": "fault/killed", "wait_seconds": 60}),
    ));
    assert_eq!(a["status"], "loaded", "{a}");
    let info = text_of(&m.call("get-model-info", json!({"model_id": "fault/killed"})));
    let pid = info["server"]["pid"].as_i64().expect("a pid") as i32;
    // A chat of 1000 tokens at 20 ms each, and the server's group killed one second in.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        // SAFETY: kill only sends a signal to the group this test's manager launched.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    });
    let (a, took) = timed(
        &mut m,
        "chat",
        json!({"model_id": "fault/killed", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 1000}),
    );
    killer.join().unwrap();
    assert_eq!(a["success"], false, "{a}");
    let code = a["error"]["code"].as_str().unwrap();
    assert!(code.starts_with("BACKEND_"), "{a}");
    assert!(took < Duration::from_secs(5), "chat took {took:?}");
    // The supervision notices: the model is no longer `loaded`, and says why.
    let status = wait_marked_error(&mut m, "fault/killed", Duration::from_secs(15));
    assert_eq!(status["error"]["reason"], "PROCESS_EXITED", "{status}");
    assert_eq!(status["error"]["details"]["signal"], 9, "{status}");

    // The worker-death pattern (/health 503, then exit 0): marked, with the reason.
    let rig2 = ServerRig::new("").with_launcher_env(&[
        ("MOCK_VLLM_START_DELAY", "0.3"),
        ("MOCK_VLLM_WORKER_DEATH_AFTER", "1"),
        ("MOCK_VLLM_DEATH_503_SECONDS", "1"),
    ]);
    let mut m2 = spawn(&rig2, "vllm-model-manager");
    let a = text_of(&m2.call(
        "load-model",
        json!({"model_id": "fault/worker", "wait_seconds": 60}),
    ));
    assert_eq!(a["status"], "loaded", "{a}");
    let dead = wait_marked_error(&mut m2, "fault/worker", Duration::from_secs(20));
    assert!(!dead["error"].is_null(), "{dead}");
    eprintln!(
        "killed mid-chat: {code} after {took:?}; marked {}; worker death marked {}",
        status["error"], dead["error"]
    );
    for (w, r) in [(m, &rig), (m2, &rig2)] {
        w.close(Duration::from_secs(5));
        assert!(r.marked_pids().is_empty(), "{:?}", r.marked_pids());
    }
}

#[test]
fn a_server_killed_while_it_loads_is_a_load_failure_and_the_next_load_works() {
    let rig = ServerRig::new("").with_launcher_env(&[("MOCK_VLLM_START_DELAY", "6")]);
    let mut m = spawn(&rig, "vllm-model-manager");
    // The group of the `serve` process once it is up, found by the rig's marker.
    let serve_group = |rig: &ServerRig| -> Option<i32> {
        let leader = *rig.marked_running("mock-vllm\0serve\0").first()?;
        Some(unsafe { libc::getpgid(leader) })
    };
    let started = Instant::now();
    let ((a, took), killed_at) = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            // Two seconds into a six-second start-up: SIGKILL the launched group.
            std::thread::sleep(Duration::from_secs(2));
            let group = serve_group(&rig).expect("no launched server to kill");
            // SAFETY: kill only signals the group this test's manager launched.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
            started.elapsed()
        });
        let answer = timed(
            &mut m,
            "load-model",
            json!({"model_id": "fault/loading", "wait_seconds": 60}),
        );
        (answer, killer.join().unwrap())
    });
    assert_eq!(a["success"], false, "{a}");
    assert_eq!(a["error"]["code"], "MODEL_LOAD_FAILED", "{a}");
    assert_eq!(a["error"]["details"]["reason"], "PROCESS_EXITED", "{a}");
    assert_eq!(a["error"]["details"]["signal"], 9, "{a}");
    // The answer came soon after the kill, not at the end of wait_seconds.
    assert!(
        took < killed_at + Duration::from_secs(4),
        "answered after {took:?}"
    );
    let status = wait_marked_error(&mut m, "fault/loading", Duration::from_secs(5));
    assert_eq!(status["error"]["reason"], "PROCESS_EXITED", "{status}");
    assert_eq!(
        serve_group(&rig),
        None,
        "a process of the killed load is left"
    );
    // Still serving, and loading again works.
    assert_eq!(m.request_raw("ping", json!({}))["result"], json!({}));
    let rig = rig.with_launcher_env(&[("MOCK_VLLM_START_DELAY", "0.3")]);
    let a = text_of(&m.call(
        "load-model",
        json!({"model_id": "fault/loading", "wait_seconds": 60}),
    ));
    assert_eq!(a["status"], "loaded", "{a}");
    let a = text_of(&m.call("unload-model", json!({"model_id": "fault/loading"})));
    assert_eq!(a["success"], true, "{a}");
    eprintln!("killed {killed_at:?} into loading: MODEL_LOAD_FAILED after {took:?}");
    m.close(Duration::from_secs(5));
    assert!(rig.marked_pids().is_empty(), "{:?}", rig.marked_pids());
}
