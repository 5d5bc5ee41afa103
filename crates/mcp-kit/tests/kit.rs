//! The MCP plumbing seen from a client: envelope, gate, errors, audit, resources, health.
//!
//! Client and server are wired in-process through `tokio::io::duplex`, so these tests
//! exercise rmcp's real protocol handling without spawning processes.

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ReadResourceRequestParams, Resource, ResourceContents};
use rmcp::service::{RoleClient, RunningService};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use vllm_core::config::{Config, Tier};
use vllm_core::gpu::FakeGpus;
use vllm_core::store::AuditQuery;
use vllm_core::{Error, Result};
use vllm_mcp_kit::{Kit, McpServer, ResourceBody, Service, ToolDef, Toolbox};
use vllm_mcp_testkit::{Answer, answer_of};

struct TestService {
    kit: Arc<Kit>,
    side_effects: AtomicUsize,
}

impl Service for TestService {
    fn kit(&self) -> &Kit {
        &self.kit
    }
    fn instructions(&self) -> String {
        "test".into()
    }
    async fn resources(&self) -> Vec<Resource> {
        vec![Resource::new("vllm://test/thing", "thing")]
    }
    async fn read_resource(&self, uri: &str) -> Option<Result<ResourceBody>> {
        match uri {
            "vllm://test/thing" => Some(Ok(ResourceBody::json(&json!({"thing": 1})))),
            "vllm://test/broken" => Some(Err(Error::BackendUnreachable {
                url: "http://127.0.0.1:9".into(),
                message: "refused".into(),
            })),
            _ => None,
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // api_key is there to be redacted in the audit log, not read.
struct EchoParams {
    /// How many.
    count: u32,
    nested: Option<Nested>,
    api_key: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
struct Nested {
    ratio: f64,
}

#[derive(Serialize, JsonSchema)]
struct EchoOut {
    count: u32,
    ratio: Option<f64>,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)] // force matters to the gate, not to the handler.
struct TouchParams {
    force: Option<bool>,
}

#[derive(Serialize, JsonSchema)]
struct TouchOut {
    touched: usize,
}

fn toolbox() -> Toolbox<TestService> {
    let mut t = Toolbox::default();
    vllm_mcp_kit::health::add_health_tool(&mut t);
    t.add(
        ToolDef::read("echo", "Echoes."),
        |_s: Arc<TestService>, p: EchoParams, _| async move {
            Ok(EchoOut {
                count: p.count,
                ratio: p.nested.map(|n| n.ratio),
            })
        },
    );
    t.add(
        ToolDef {
            raising_args: &["force"],
            ..ToolDef::control("touch", "Has a side effect.")
        },
        |s: Arc<TestService>, _: TouchParams, _| async move {
            Ok(TouchOut {
                touched: s.side_effects.fetch_add(1, Ordering::SeqCst) + 1,
            })
        },
    );
    t.add(
        ToolDef {
            gpu_work: true,
            ..ToolDef::control("generate", "Starts GPU work.")
        },
        |s: Arc<TestService>, _: TouchParams, _| async move {
            Ok(TouchOut {
                touched: s.side_effects.fetch_add(1, Ordering::SeqCst) + 1,
            })
        },
    );
    t.add(
        ToolDef::control("restore-thing", "Refused by the allow-list in the core."),
        |s: Arc<TestService>, _: TouchParams, _| async move {
            s.kit
                .config
                .security
                .check_allowed("evil/model", "evil/model")?;
            Ok(TouchOut { touched: 0 })
        },
    );
    t.add(
        ToolDef::read("boom", "Panics."),
        |_s: Arc<TestService>, _: vllm_mcp_kit::NoParams, _| async move {
            if true {
                panic!("kaboom");
            }
            Ok(TouchOut { touched: 0 })
        },
    );
    t
}

struct Rig {
    client: RunningService<RoleClient, ()>,
    state: Arc<TestService>,
    _dir: Option<tempfile::TempDir>,
}

async fn rig(edit: impl FnOnce(&mut Config)) -> Rig {
    let dir = vllm_mcp_testkit::temp_dir();
    let mut r = rig_in(dir.path(), edit).await;
    r._dir = Some(dir);
    r
}

/// A rig whose store is in `dir` (two rigs on one directory are two servers sharing it).
async fn rig_in(dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> Rig {
    let mut config = Config::from_toml("", None, &|_| None).unwrap();
    config.data_dir = dir.to_path_buf();
    edit(&mut config);
    let kit = Kit::new(
        "test-server",
        "9.9.9",
        config,
        Arc::new(FakeGpus::uniform(2, 24_576)),
    )
    .unwrap();
    let state = Arc::new(TestService {
        kit: Arc::new(kit),
        side_effects: AtomicUsize::new(0),
    });
    let server = McpServer::new(state.clone(), toolbox());
    let (a, b) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let running = server.serve(a).await.expect("server handshake");
        let _ = running.waiting().await;
    });
    let client = ().serve(b).await.expect("client handshake");
    Rig {
        client,
        state,
        _dir: None,
    }
}

impl Rig {
    async fn call(&self, tool: &str, args: Value) -> Answer {
        let p = CallToolRequestParams::new(tool.to_string())
            .with_arguments(args.as_object().unwrap().clone());
        answer_of(self.client.call_tool(p).await.unwrap())
    }
}

#[tokio::test]
async fn success_carries_json_text_and_matching_structured_content() {
    let r = rig(|_| {}).await;
    let a = r
        .call("echo", json!({"count": 3, "nested": {"ratio": 0.5}}))
        .await;
    assert!(!a.is_error);
    assert_eq!(a.json, json!({"success": true, "count": 3, "ratio": 0.5}));
    assert_eq!(a.structured.as_ref(), Some(&a.json));
    let info = r.client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "test-server");
    assert!(info.protocol_version.as_str() <= "2025-11-25");
}

#[tokio::test]
async fn tool_schemas_are_inline_with_annotations_and_output_schema() {
    let r = rig(|_| {}).await;
    let tools = r.client.list_all_tools().await.unwrap();
    let echo = tools.iter().find(|t| t.name == "echo").unwrap();
    let schema = serde_json::to_string(&echo.input_schema).unwrap();
    assert!(
        !schema.contains("$ref") && !schema.contains("$defs"),
        "{schema}"
    );
    assert!(schema.contains("ratio"), "nested type inlined: {schema}");
    let out = echo.output_schema.as_ref().unwrap();
    assert!(out["properties"]["success"].is_object());
    let ann = echo.annotations.as_ref().unwrap();
    assert_eq!(ann.read_only_hint, Some(true));
    let touch = tools.iter().find(|t| t.name == "touch").unwrap();
    assert_eq!(
        touch.annotations.as_ref().unwrap().read_only_hint,
        Some(false)
    );
}

#[tokio::test]
async fn bad_arguments_get_our_error_shape_naming_the_field() {
    let r = rig(|_| {}).await;
    for (args, field) in [
        (json!({"count": "many"}), "count"),
        (json!({}), "count"),
        (
            json!({"count": 1, "nested": {"ratio": "x"}}),
            "nested.ratio",
        ),
        (json!({"count": 1, "surprise": true}), "surprise"),
    ] {
        let a = r.call("echo", args.clone()).await;
        assert!(a.is_error);
        assert_eq!(a.code(), Some("INVALID_ARGUMENT"), "{args}");
        assert_eq!(
            a.json["error"]["details"]["field"], field,
            "{args}: {}",
            a.json
        );
        assert!(a.json["error"]["details"]["suggestion"].is_string());
    }
    // The server keeps serving.
    assert!(!r.call("echo", json!({"count": 1})).await.is_error);
}

#[tokio::test]
async fn the_gate_refuses_before_any_side_effect() {
    let r = rig(|c| c.security.max_tier = Tier::Read).await;
    let a = r.call("touch", json!({})).await;
    assert_eq!(a.code(), Some("PERMISSION_DENIED"));
    assert_eq!(r.state.side_effects.load(Ordering::SeqCst), 0);
    // Reading is still allowed.
    assert!(!r.call("echo", json!({"count": 1})).await.is_error);

    // `force: true` raises the tier past control.
    let r = rig(|c| c.security.max_tier = Tier::Control).await;
    assert!(!r.call("touch", json!({"force": false})).await.is_error);
    assert_eq!(
        r.call("touch", json!({"force": true})).await.code(),
        Some("PERMISSION_DENIED")
    );
    assert_eq!(r.state.side_effects.load(Ordering::SeqCst), 1);

    // A refusal the core makes names the tool that asked, whichever it is.
    let r = rig(|c| c.security.allowed_models = vec!["good/*".into()]).await;
    let a = r.call("restore-thing", json!({})).await;
    assert_eq!(a.code(), Some("PERMISSION_DENIED"));
    assert_eq!(
        a.json["error"]["details"]["tool"], "restore-thing",
        "{}",
        a.json
    );
    assert!(
        a.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`restore-thing`")
    );

    let r = rig(|c| c.security.deny_tools = vec!["echo".into()]).await;
    assert_eq!(
        r.call("echo", json!({"count": 1})).await.code(),
        Some("PERMISSION_DENIED")
    );
}

#[tokio::test]
async fn gpu_work_is_rate_limited_across_the_servers_of_a_store() {
    let r = rig(|c| c.limits.gpu_work_per_minute = 3).await;
    // Malformed calls are refused before they take a slot.
    for _ in 0..5 {
        let a = r.call("generate", json!({"force": "yes"})).await;
        assert_eq!(a.code(), Some("INVALID_ARGUMENT"), "{}", a.json);
    }
    for i in 1..=3 {
        let a = r.call("generate", json!({})).await;
        assert!(!a.is_error, "call {i}: {}", a.json);
    }
    let a = r.call("generate", json!({})).await;
    assert_eq!(a.code(), Some("RATE_LIMITED"), "{}", a.json);
    let details = &a.json["error"]["details"];
    assert_eq!(details["limit"], "limits.gpu_work_per_minute");
    let wait = details["retry_after_seconds"].as_u64().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(
        details["suggestion"]
            .as_str()
            .unwrap()
            .contains("gpu_work_per_minute"),
        "{details}"
    );
    // Refused before the handler ran, and audited as refused.
    assert_eq!(r.state.side_effects.load(Ordering::SeqCst), 3);
    let store = r.state.kit.store().unwrap();
    let refused = store
        .audit_entries(&AuditQuery {
            tool: Some("generate".into()),
            result_code: Some("RATE_LIMITED".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(refused.len(), 1);
    // Tools that start no GPU work are not counted.
    assert!(!r.call("touch", json!({})).await.is_error);

    // A second server on the same store shares the count.
    let shared = vllm_mcp_testkit::temp_dir();
    let first = rig_in(shared.path(), |c| c.limits.gpu_work_per_minute = 2).await;
    let second = rig_in(shared.path(), |c| c.limits.gpu_work_per_minute = 2).await;
    assert!(!first.call("generate", json!({})).await.is_error);
    assert!(!second.call("generate", json!({})).await.is_error);
    assert_eq!(
        first.call("generate", json!({})).await.code(),
        Some("RATE_LIMITED")
    );
    assert_eq!(
        second.call("generate", json!({})).await.code(),
        Some("RATE_LIMITED")
    );

    // 0 turns the limit off.
    let r = rig(|c| c.limits.gpu_work_per_minute = 0).await;
    for _ in 0..50 {
        assert!(!r.call("generate", json!({})).await.is_error);
    }
}

impl Rig {
    async fn read_json(&self, uri: &str) -> Value {
        let r = self
            .client
            .read_resource(ReadResourceRequestParams::new(uri))
            .await
            .unwrap();
        match &r.contents[0] {
            ResourceContents::TextResourceContents { text, .. } => {
                serde_json::from_str(text).unwrap()
            }
            other => panic!("not text: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_audit_log_is_a_resource_newest_first_and_filterable() {
    let r = rig(|c| c.security.max_tier = Tier::Read).await;
    let list = r.client.list_all_resources().await.unwrap();
    assert!(list.iter().any(|x| x.uri == "vllm://audit/log"), "{list:?}");
    let templates = r.client.list_all_resource_templates().await.unwrap();
    assert!(
        templates
            .iter()
            .any(|t| t.uri_template.starts_with("vllm://audit/log{?")),
        "{templates:?}"
    );
    for i in 0..3 {
        assert!(!r.call("echo", json!({"count": i})).await.is_error);
    }
    assert_eq!(
        r.call("touch", json!({"token": "s3cret-planted"}))
            .await
            .code(),
        Some("PERMISSION_DENIED")
    );
    let all = r.read_json("vllm://audit/log").await;
    let entries = all["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{all}");
    // Newest first: the refused touch, then the echoes from the last to the first.
    assert_eq!(entries[0]["tool"], "touch");
    assert_eq!(entries[0]["result_code"], "PERMISSION_DENIED");
    assert_eq!(entries[1]["arguments"]["count"], 2);
    assert_eq!(entries[3]["arguments"]["count"], 0);
    assert!(!all.to_string().contains("s3cret-planted"), "{all}");

    let refused = r
        .read_json("vllm://audit/log?result_code=PERMISSION_DENIED")
        .await;
    assert_eq!(refused["count"], 1);
    let echoes = r.read_json("vllm://audit/log?tool=echo&limit=2").await;
    assert_eq!(echoes["count"], 2);
    assert_eq!(echoes["entries"][0]["arguments"]["count"], 2);
    let next = echoes["next_before_id"].as_i64().expect("a next page");
    let page2 = r
        .read_json(&format!(
            "vllm://audit/log?tool=echo&limit=2&before_id={next}"
        ))
        .await;
    assert_eq!(page2["count"], 1);
    assert_eq!(page2["entries"][0]["arguments"]["count"], 0);
    assert_eq!(page2["next_before_id"], Value::Null);
    let none = r.read_json("vllm://audit/log?server=another").await;
    assert_eq!(none["count"], 0);

    // A bad filter is our error shape, as content.
    for bad in [
        "vllm://audit/log?limit=0",
        "vllm://audit/log?limit=x",
        "vllm://audit/log?colour=red",
        "vllm://audit/log?since=NaN",
        "vllm://audit/log?tool",
    ] {
        let e = r.read_json(bad).await;
        assert_eq!(e["success"], false, "{bad}: {e}");
        assert_eq!(e["error"]["code"], "INVALID_ARGUMENT", "{bad}: {e}");
    }
}

#[tokio::test]
async fn a_panicking_tool_is_an_answer_and_the_server_lives_on() {
    let r = rig(|_| {}).await;
    let a = r.call("boom", json!({})).await;
    assert_eq!(a.code(), Some("INTERNAL"));
    assert!(
        a.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kaboom")
    );
    assert!(!r.call("echo", json!({"count": 2})).await.is_error);
}

#[tokio::test]
async fn unknown_tool_and_resource_are_jsonrpc_errors() {
    let r = rig(|_| {}).await;
    let e = r
        .client
        .call_tool(CallToolRequestParams::new("nope"))
        .await
        .unwrap_err();
    let s = format!("{e:?}");
    assert!(
        s.contains("-32602") || s.contains("InvalidParams") || s.contains("INVALID_PARAMS"),
        "{s}"
    );
    let e = r
        .client
        .read_resource(ReadResourceRequestParams::new("vllm://nowhere"))
        .await
        .unwrap_err();
    let s = format!("{e:?}");
    assert!(
        s.contains("-32002") || s.contains("RESOURCE_NOT_FOUND"),
        "{s}"
    );
}

#[tokio::test]
async fn resources_list_and_read_including_domain_errors_as_content() {
    let r = rig(|_| {}).await;
    let list = r.client.list_all_resources().await.unwrap();
    assert_eq!(list[0].uri, "vllm://test/thing");
    let ok = r
        .client
        .read_resource(ReadResourceRequestParams::new("vllm://test/thing"))
        .await
        .unwrap();
    assert_eq!(ok.contents.len(), 1);
    let broken = r
        .client
        .read_resource(ReadResourceRequestParams::new("vllm://test/broken"))
        .await
        .unwrap();
    let text = serde_json::to_string(&broken.contents[0]).unwrap();
    assert!(text.contains("BACKEND_UNREACHABLE"), "{text}");
}

#[tokio::test]
async fn every_call_is_audited_with_secrets_redacted() {
    let r = rig(|c| c.security.deny_tools = vec!["touch".into()]).await;
    r.call("echo", json!({"count": 7, "api_key": "planted-secret-123"}))
        .await;
    r.call("touch", json!({})).await;
    r.call("echo", json!({"count": "bad"})).await;
    let store = r.state.kit.store().unwrap().clone();
    let entries = store.audit_entries(&AuditQuery::default()).unwrap();
    let codes: Vec<_> = entries
        .iter()
        .map(|e| (e.tool.as_str(), e.result_code.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            ("echo", "INVALID_ARGUMENT"),
            ("touch", "PERMISSION_DENIED"),
            ("echo", "OK")
        ],
        "newest first"
    );
    let all = serde_json::to_string(&entries).unwrap();
    assert!(!all.contains("planted-secret-123"), "{all}");
    assert!(
        entries
            .iter()
            .all(|e| e.server == "test-server" && e.duration_ms >= 0.0)
    );
}

#[tokio::test]
async fn server_health_reports_store_nvml_and_endpoints() {
    let r = rig(|c| {
        c.endpoints.push(vllm_core::config::EndpointConfig {
            name: "dead".into(),
            base_url: format!("http://127.0.0.1:{}", vllm_mcp_testkit::free_port()),
            api_key_env: None,
            request_timeout_seconds: None,
            tls_ca_file: None,
            tls_accept_invalid_certs: false,
        })
    })
    .await;
    let a = r.call("server-health", json!({})).await;
    assert!(!a.is_error, "{}", a.json);
    let h = &a.json;
    assert_eq!(h["server"], "test-server");
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["store"]["ok"], true);
    assert_eq!(h["store"]["journal_mode"], "wal");
    assert_eq!(h["nvml"]["available"], true);
    assert_eq!(h["nvml"]["gpu_count"], 2);
    assert_eq!(h["endpoints"][0]["reachable"], false);
    assert!(
        h["endpoints"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("BACKEND_UNREACHABLE")
    );
    assert!(vllm_core::time::parse_rfc3339(h["started_at"].as_str().unwrap()).is_some());
}

#[tokio::test]
async fn a_server_without_a_store_still_answers_and_says_why() {
    let file = tempfile::NamedTempFile::new().unwrap();
    // The data directory is a regular file: the store cannot be created under it.
    let r = rig(|c| c.data_dir = file.path().join("sub")).await;
    let a = r.call("server-health", json!({})).await;
    assert_eq!(a.json["status"], "degraded");
    assert_eq!(a.json["store"]["ok"], false);
    assert!(
        a.json["store"]["error"]
            .as_str()
            .unwrap()
            .contains("storage error")
    );
    assert!(!r.call("echo", json!({"count": 1})).await.is_error);
}

mod notifications {
    //! Operational events reach the client as MCP logging notifications.
    #![allow(deprecated)] // MCP logging: see crates/mcp-kit/src/server.rs.

    use super::*;
    use rmcp::ClientHandler;
    use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam, SetLevelRequestParams};
    use rmcp::service::NotificationContext;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<LoggingMessageNotificationParam>>>);

    impl ClientHandler for Recorder {
        async fn on_logging_message(
            &self,
            params: LoggingMessageNotificationParam,
            _: NotificationContext<RoleClient>,
        ) {
            self.0.lock().unwrap().push(params);
        }
    }

    #[derive(Deserialize, JsonSchema)]
    struct AnnounceParams {
        level: String,
    }

    #[tokio::test]
    async fn events_are_sent_at_or_above_the_clients_level() {
        let dir = vllm_mcp_testkit::temp_dir();
        let mut config = Config::from_toml("", None, &|_| None).unwrap();
        config.data_dir = dir.path().to_path_buf();
        let kit = Kit::new(
            "test-server",
            "1",
            config,
            Arc::new(FakeGpus::uniform(1, 1024)),
        )
        .unwrap();
        let state = Arc::new(TestService {
            kit: Arc::new(kit),
            side_effects: AtomicUsize::new(0),
        });
        let mut tools = toolbox();
        tools.add(
            ToolDef::read("announce", "Sends a log event."),
            |s: Arc<TestService>, p: AnnounceParams, _| async move {
                let level = if p.level == "debug" {
                    LoggingLevel::Debug
                } else {
                    LoggingLevel::Warning
                };
                s.kit
                    .notifier
                    .log(level, "test", json!({"event": p.level}))
                    .await;
                Ok(TouchOut { touched: 0 })
            },
        );
        let server = McpServer::new(state, tools);
        let (a, b) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let running = server.serve(a).await.unwrap();
            let _ = running.waiting().await;
        });
        let rec = Recorder::default();
        let client = rec.clone().serve(b).await.unwrap();
        let call = |level: &str| {
            CallToolRequestParams::new("announce")
                .with_arguments(json!({"level": level}).as_object().unwrap().clone())
        };
        client.call_tool(call("debug")).await.unwrap();
        client.call_tool(call("warning")).await.unwrap();
        client
            .set_level(SetLevelRequestParams::new(LoggingLevel::Debug))
            .await
            .unwrap();
        client.call_tool(call("debug")).await.unwrap();
        // Notifications travel ahead of the answer on the same ordered stream, but the
        // handler runs on the client's task: give it a moment to record them.
        for _ in 0..100 {
            if rec.0.lock().unwrap().len() >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let got: Vec<_> = rec
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.data["event"].clone())
            .collect();
        assert_eq!(
            got,
            [json!("warning"), json!("debug")],
            "debug is sent only after setLevel(debug)"
        );
    }
}
