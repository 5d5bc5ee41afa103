//! The fleet's page on `vllm-model-manager --gateway`, in a real headless Chromium
//! (Debian's `chromium`, driven by Playwright from PyPI: tests/browser/page.py). The
//! fleet is mock-vllm's; the door samples for the charts itself; two fake GPUs give the
//! GPU charts something to draw. The screenshots are kept under
//! `target/ci-artifacts/page/` (`VLLM_MCP_ARTIFACTS` moves them).

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use vllm_mcp_testkit::{ServerRig, bin, free_port};

const KEY: &str = "page-key";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python with Playwright, and Debian's chromium (scripts/browser.sh installs
/// both once). Without them (no registry to install from) the test is skipped, except
/// under CI.
fn browser() -> Option<(String, String)> {
    let lines = vllm_mcp_testkit::setup_or_skip("browser.sh", "chromium and playwright")?;
    match &lines[..] {
        [python, chromium] => Some((python.clone(), chromium.clone())),
        other => panic!("scripts/browser.sh printed {other:?}, not a python and a chromium"),
    }
}

/// Where the screenshots go.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("VLLM_MCP_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/ci-artifacts"))
        .join("page");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

fn door_rig(port: u16, security: &str) -> ServerRig {
    ServerRig::new(&format!(
        "[gateway]\nlisten = \"127.0.0.1:{port}\"\napi_key_env = \"VLLM_MCP_TEST_DOOR_KEY\"\n\
         [monitor]\nsample_interval_seconds = 1.0\n\
         [monitor.alerts.gpu_temperature]\nthreshold = 10.0\nfor_seconds = 0.0\nwindow_seconds = 5.0\n\
         {security}\n\
         [catalog.tiny]\nsource = \"mock/tiny\"\n[catalog.other]\nsource = \"mock/other\"\n"
    ))
}

/// The door as a service on `port`, once it answers /health. The fake GPUs run at
/// about 34 °C: with the temperature rule's threshold at 10 °C, its alert fires.
fn start(rig: &ServerRig, port: u16) -> Child {
    rig.spawn_door(
        port,
        &[("VLLM_MCP_TEST_DOOR_KEY", KEY), ("VLLM_MCP_FAKE_GPUS", "2")],
    )
}

/// Runs the page's script in `mode`; returns its `ok` lines and figures.
fn drive(mode: &str, port: u16, (python, chromium): &(String, String)) -> Vec<String> {
    let out = Command::new(python)
        .arg(root().join("tests/browser/page.py"))
        .args([mode, &format!("http://127.0.0.1:{port}"), KEY])
        .arg(artifacts())
        .arg(chromium)
        .output()
        .expect("run the browser");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the page failed in Chromium:\n{stdout}\n{stderr}"
    );
    stdout.lines().map(str::to_string).collect()
}

async fn api(port: u16, method: &str, path: &str) -> Value {
    let url = format!("http://127.0.0.1:{port}{path}");
    let http = reqwest::Client::new();
    let req = if method == "POST" {
        http.post(url).json(&json!({}))
    } else {
        http.get(url)
    };
    req.bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_status(port: u16, model: &str, status: &str) {
    let t = Instant::now();
    loop {
        let f = api(port, "GET", "/ui/api/fleet").await;
        let now = f["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == model)
            .cloned();
        if now.as_ref().is_some_and(|m| m["status"] == status) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{model} never {status}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_drives_the_mock_fleet_in_chromium_and_a_read_only_door_shows_no_control() {
    let Some(browser) = browser() else {
        return;
    };
    vllm_core::vllm::install_tls_provider();
    let port = free_port();
    let rig = door_rig(port, "");
    let mut door = start(&rig, port);

    // A saved state with `tiny` running, for the page to restore once it is unloaded.
    assert_eq!(
        api(port, "POST", "/ui/api/models/tiny/load").await["success"],
        true
    );
    wait_status(port, "tiny", "loaded").await;
    let state = rig.spawn(&bin("vllm-state-persistence"), &[]).await;
    let saved = state
        .call("save-state", json!({"session_id": "page-test"}))
        .await;
    assert_eq!(saved.json["success"], true, "{}", saved.json);
    drop(state);
    assert_eq!(
        api(port, "POST", "/ui/api/models/tiny/unload").await["success"],
        true
    );

    let full = tokio::task::spawn_blocking(move || drive("full", port, &browser))
        .await
        .unwrap();
    let _ = door.kill();
    let _ = door.wait();
    assert_eq!(
        full.iter().filter(|l| l.starts_with("ok ")).count(),
        15,
        "{full:#?}"
    );
    for f in full.iter().filter(|l| l.starts_with("figure ")) {
        println!("{f}");
    }
    // The actions went through the audit log, as MCP calls do.
    let store = vllm_core::store::Store::open(&rig.store_path()).unwrap();
    let audit = store.audit_entries(&Default::default()).unwrap();
    let by_page: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e.server == "vllm-gateway")
        .map(|e| (e.tool.as_str(), e.result_code.as_str()))
        .collect();
    for tool in ["load-model", "unload-model", "pin-model", "load-state"] {
        assert!(
            by_page.contains(&(tool, "OK")),
            "{tool} not audited: {by_page:?}"
        );
    }
    drop(rig);

    let Some(browser) = self::browser() else {
        return;
    };
    let port = free_port();
    let rig = door_rig(port, "[security]\nmax_tier = \"read\"\n");
    let mut door = start(&rig, port);
    let read = tokio::task::spawn_blocking(move || drive("read", port, &browser))
        .await
        .unwrap();
    let _ = door.kill();
    let _ = door.wait();
    assert_eq!(
        read.iter().filter(|l| l.starts_with("ok ")).count(),
        4,
        "{read:#?}"
    );
    let store = vllm_core::store::Store::open(&rig.store_path()).unwrap();
    let refused = store.audit_entries(&Default::default()).unwrap();
    assert!(
        refused
            .iter()
            .any(|e| e.server == "vllm-gateway" && e.result_code == "PERMISSION_DENIED"),
        "the refused action is not in the audit log"
    );
}
