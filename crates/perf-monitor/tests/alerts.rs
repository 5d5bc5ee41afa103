//! Alerts through a real MCP client: a mock-vllm that goes down raises `endpoint_down`
//! and resolves it when it comes back (resources, logging notifications,
//! `resources/updated` for a subscriber, and the webhook's Alertmanager payloads); a
//! queue on a mock with one sequence slot raises `requests_waiting`; a fake GPU above the
//! temperature threshold raises `gpu_temperature`.

// MCP logging and resources/subscribe are deprecated upstream, but they are what Crush
// (and this server) speak at protocol 2025-11-25.
#![allow(deprecated)]

use rmcp::model::{
    LoggingMessageNotificationParam, ReadResourceRequestParams, ResourceContents,
    ResourceUpdatedNotificationParam, SubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vllm_core::vllm::{EndpointSpec, VllmClient};
use vllm_mcp_testkit::{bin, free_port, http_status, temp_dir};

const INTERVAL: f64 = 0.2;

/// What the client was told.
#[derive(Clone, Default)]
struct Recorder {
    logs: Arc<Mutex<Vec<(String, Value)>>>,
    updated: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for Recorder {
    async fn on_logging_message(
        &self,
        p: LoggingMessageNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        let level = serde_json::to_value(p.level).unwrap();
        self.logs
            .lock()
            .unwrap()
            .push((level.as_str().unwrap_or_default().to_string(), p.data));
    }

    async fn on_resource_updated(
        &self,
        p: ResourceUpdatedNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.updated.lock().unwrap().push(p.uri);
    }
}

struct Monitor {
    client: RunningService<RoleClient, Recorder>,
    rec: Recorder,
}

impl Monitor {
    async fn spawn(config: &Path, gpus: &str) -> Monitor {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vllm-perf-monitor"));
        cmd.env("VLLM_MCP_CONFIG", config)
            .env("VLLM_MCP_FAKE_GPUS", gpus);
        let stderr = if std::env::var_os("VLLM_MCP_TEST_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let (transport, _) = TokioChildProcess::builder(cmd)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let rec = Recorder::default();
        let client = rec.clone().serve(transport).await.expect("handshake");
        Monitor { client, rec }
    }

    async fn read(&self, uri: &str) -> Value {
        let r = self
            .client
            .read_resource(ReadResourceRequestParams::new(uri))
            .await
            .unwrap();
        let text: String = r
            .contents
            .into_iter()
            .map(|c| match c {
                ResourceContents::TextResourceContents { text, .. } => text,
                _ => String::new(),
            })
            .collect();
        serde_json::from_str(&text).unwrap()
    }

    /// Polls `uri` until `f` finds something in it.
    async fn wait_for<T>(&self, uri: &str, what: &str, f: impl Fn(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.read(uri).await;
            if let Some(x) = f(&v) {
                return x;
            }
            assert!(Instant::now() < deadline, "{what}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn close(self) {
        let _ = self.client.cancel().await;
    }
}

fn config(extra: &str, endpoints: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = temp_dir();
    let path = dir.path().join("config.toml");
    let mut text = format!(
        "data_dir = {:?}\n[monitor]\nsample_interval_seconds = {INTERVAL}\n{extra}\n",
        dir.path().display().to_string()
    );
    for (name, url) in endpoints {
        text.push_str(&format!(
            "[[endpoints]]\nname = {name:?}\nbase_url = {url:?}\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn mock_on(port: u16, model: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(bin("mock-vllm"));
    cmd.args([
        "serve",
        &format!("mock/{model}"),
        "--served-model-name",
        model,
    ])
    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
    .args(args)
    .env("MOCK_VLLM_START_DELAY", "0")
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
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

/// A webhook receiver: every POSTed body, parsed.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = l.accept().await else {
                return;
            };
            let b = b.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body: Value =
                        serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null);
                    b.lock().unwrap().push(body);
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    (url, bodies)
}

fn find_rule(v: &Value, key: &str, rule: &str) -> Option<Value> {
    v[key]
        .as_array()?
        .iter()
        .find(|a| a["rule"] == rule)
        .cloned()
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn endpoint_down_fires_notifies_posts_the_webhook_and_resolves() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mock = mock_on(port, "d", &[], &[]);
    let (hook, bodies) = webhook().await;
    let (_dir, cfg) = config(
        &format!(
            "webhook_url = {hook:?}\n[monitor.alerts.endpoint_down]\nfor_seconds = 0.5\n\
             [monitor.alerts.gpu_temperature]\nenabled = false\n"
        ),
        &[("ep", &url)],
    );
    let m = Monitor::spawn(&cfg, "1").await;
    let caps = m.client.peer_info().unwrap().capabilities.clone();
    assert_eq!(caps.resources.and_then(|r| r.subscribe), Some(true));
    m.client
        .subscribe(SubscribeRequestParams::new("vllm://alerts/active"))
        .await
        .unwrap();
    m.client
        .subscribe(SubscribeRequestParams::new("vllm://alerts/history"))
        .await
        .unwrap();
    let uris: Vec<String> = m
        .client
        .list_all_resources()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.uri.clone())
        .collect();
    assert!(
        uris.iter().any(|u| u == "vllm://alerts/history"),
        "{uris:?}"
    );

    // Up and sampled: nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v = m.read("vllm://alerts/active").await;
    assert!(find_rule(&v, "alerts", "endpoint_down").is_none(), "{v}");
    assert_eq!(v["rules"].as_array().unwrap().len(), 8);

    kill(mock);
    let fired = m
        .wait_for("vllm://alerts/active", "endpoint_down fires", |v| {
            find_rule(v, "alerts", "endpoint_down")
        })
        .await;
    assert_eq!(fired["target"]["endpoint"], "ep");
    assert_eq!(fired["severity"], "critical");
    assert_eq!(fired["state"], "firing");
    assert_eq!(fired["value"], 1.0);
    assert_eq!(fired["threshold"], 0.0);
    assert!(fired["since"].as_str().unwrap().ends_with('Z'));
    assert!(fired["summary"].as_str().unwrap().contains("ep"));

    wait_until("a warning notification", || {
        m.rec.logs.lock().unwrap().iter().any(|(l, d)| {
            l == "warning" && d["alert"]["rule"] == "endpoint_down" && d["event"] == "alert firing"
        })
    })
    .await;
    wait_until("resources/updated for alerts/active", || {
        m.rec
            .updated
            .lock()
            .unwrap()
            .iter()
            .any(|u| u == "vllm://alerts/active")
    })
    .await;
    wait_until("the firing webhook", || !bodies.lock().unwrap().is_empty()).await;
    {
        let b = bodies.lock().unwrap();
        let a = &b[0][0];
        assert_eq!(a["labels"]["alertname"], "endpoint_down", "{}", b[0]);
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["labels"]["endpoint"], "ep");
        assert!(a["annotations"]["summary"].is_string());
        assert!(a["startsAt"].is_string());
        assert!(a.get("endsAt").is_none());
        assert_eq!(a["generatorURL"], "vllm://alerts/active");
    }

    // Back on the same port: resolved, into the history.
    let mock = mock_on(port, "d", &[], &[]);
    let resolved = m
        .wait_for("vllm://alerts/history", "endpoint_down resolves", |v| {
            find_rule(v, "alerts", "endpoint_down")
        })
        .await;
    assert_eq!(resolved["state"], "resolved");
    assert!(resolved["resolved_at"].is_string());
    let v = m.read("vllm://alerts/active").await;
    assert!(find_rule(&v, "alerts", "endpoint_down").is_none(), "{v}");
    wait_until("an info notification", || {
        m.rec
            .logs
            .lock()
            .unwrap()
            .iter()
            .any(|(l, d)| l == "info" && d["event"] == "alert resolved")
    })
    .await;
    wait_until("resources/updated for alerts/history", || {
        m.rec
            .updated
            .lock()
            .unwrap()
            .iter()
            .any(|u| u == "vllm://alerts/history")
    })
    .await;
    wait_until("the resolved webhook", || bodies.lock().unwrap().len() >= 2).await;
    {
        let b = bodies.lock().unwrap();
        assert_eq!(b.len(), 2, "one post per transition: {b:?}");
        let a = &b[1][0];
        assert_eq!(a["labels"]["alertname"], "endpoint_down");
        assert!(a["endsAt"].is_string(), "{a}");
    }
    m.close().await;
    kill(mock);
}

#[tokio::test]
async fn a_hot_fake_gpu_fires_gpu_temperature() {
    let mut g = vllm_core::gpu::FakeGpus::idle(0, 81_920);
    g.temperature_c = Some(91);
    let g1 = vllm_core::gpu::FakeGpus::idle(1, 81_920);
    let gpus = serde_json::to_string(&vec![g, g1]).unwrap();
    let (_dir, cfg) = config(
        "[monitor.alerts.gpu_temperature]\nfor_seconds = 0.4\nwindow_seconds = 0.5\n",
        &[],
    );
    let m = Monitor::spawn(&cfg, &gpus).await;
    let fired = m
        .wait_for("vllm://alerts/active", "gpu_temperature fires", |v| {
            find_rule(v, "alerts", "gpu_temperature")
        })
        .await;
    assert_eq!(fired["target"], json!({"gpu": "0"}));
    assert_eq!(fired["severity"], "warning");
    assert_eq!(fired["threshold"], 80.0);
    assert_eq!(fired["value"], 91.0);
    let v = m.read("vllm://alerts/active").await;
    let gpu_alerts: Vec<&Value> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "gpu_temperature")
        .collect();
    assert_eq!(gpu_alerts.len(), 1, "GPU 1 is cool: {v}");
    m.close().await;
}

#[tokio::test]
async fn a_queue_fires_requests_waiting() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mock = mock_on(
        port,
        "q",
        &["--max-num-seqs", "1"],
        &[("MOCK_VLLM_TOKEN_LATENCY_MS", "40")],
    );
    let (_dir, cfg) = config(
        "[monitor.alerts.requests_waiting]\nfor_seconds = 0.4\nwindow_seconds = 0.4\n",
        &[("ep", &url)],
    );
    let m = Monitor::spawn(&cfg, "1").await;
    let client = VllmClient::new(EndpointSpec::new("t", &url, &Default::default())).unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..4 {
        let c = client.clone();
        set.spawn(async move {
            let _ = c
                .completion(&json!({"model": "q", "prompt": format!("wait {i}"), "max_tokens": 60, "ignore_eos": true}))
                .await;
        });
    }
    let fired = m
        .wait_for("vllm://alerts/active", "requests_waiting fires", |v| {
            find_rule(v, "alerts", "requests_waiting")
        })
        .await;
    assert_eq!(fired["target"], json!({"endpoint": "ep", "model": "q"}));
    assert!(fired["value"].as_f64().unwrap() > 0.0);
    while set.join_next().await.is_some() {}
    m.wait_for("vllm://alerts/history", "requests_waiting resolves", |v| {
        find_rule(v, "alerts", "requests_waiting")
    })
    .await;
    m.close().await;
    kill(mock);
}
