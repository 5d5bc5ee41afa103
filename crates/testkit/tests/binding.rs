//! Loopback by default: a launched vLLM server binds 127.0.0.1 unless `launcher.host`
//! says otherwise, and is seen listening there and nowhere else.

use serde_json::json;
use std::time::Duration;
use vllm_mcp_testkit::ServerRig;
use vllm_mcp_testkit::wire::{Wire, text_of};

/// Local addresses (hex `IP:PORT` as in /proc/net/tcp) listening on `port`.
fn listeners(port: u16) -> Vec<String> {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // field 1: local address; field 3: state, 0A = LISTEN
            (f.len() > 3 && f[3] == "0A" && f[1].ends_with(&want)).then(|| f[1].to_string())
        })
        .collect()
}

#[test]
fn a_launched_server_listens_on_loopback_only() {
    let rig = ServerRig::new("");
    let mut m = Wire::spawn(rig.command("vllm-model-manager"));
    m.initialize();
    let a = text_of(&m.call(
        "load-model",
        json!({"model_id": "bind/tiny", "wait_seconds": 60}),
    ));
    assert_eq!(a["status"], "loaded", "{a}");
    let info = text_of(&m.call("get-model-info", json!({"model_id": "bind/tiny"})));
    let argv: Vec<String> = serde_json::from_value(info["server"]["argv"].clone()).unwrap();
    let host = argv
        .iter()
        .position(|a| a == "--host")
        .map(|i| argv[i + 1].clone());
    assert_eq!(host.as_deref(), Some("127.0.0.1"), "{argv:?}");
    let port = info["server"]["port"].as_u64().unwrap() as u16;
    let addrs = listeners(port);
    assert!(!addrs.is_empty(), "nothing listens on {port}");
    // 0100007F is 127.0.0.1 in /proc/net/tcp's byte order.
    assert!(
        addrs.iter().all(|a| a.starts_with("0100007F:")),
        "port {port} listens beyond loopback: {addrs:?}"
    );
    let u = text_of(&m.call("unload-model", json!({"model_id": "bind/tiny"})));
    assert_eq!(u["success"], true, "{u}");
    m.close(Duration::from_secs(5));
}

/// The Prometheus export is off unless configured; configured beyond loopback, the
/// monitor says so in its log.
#[test]
fn an_export_beyond_loopback_is_warned_about() {
    for (host, warned) in [("127.0.0.1", false), ("0.0.0.0", true)] {
        let port = vllm_mcp_testkit::free_port();
        let rig = ServerRig::new(&format!("[prometheus]\nlisten = \"{host}:{port}\"\n"));
        let log = rig.dir.path().join("monitor.stderr");
        let cmd = rig.command("vllm-perf-monitor");
        let mut w = Wire::spawn_with_stderr(cmd, std::fs::File::create(&log).unwrap().into());
        w.initialize();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("serving Prometheus metrics") || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            text.contains("serving Prometheus metrics"),
            "{host}: {text}"
        );
        assert_eq!(
            text.contains("listens beyond loopback"),
            warned,
            "{host}: {text}"
        );
        w.close(Duration::from_secs(5));
    }
}
