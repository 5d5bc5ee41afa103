//! The `vllm-model-manager` binary through a real MCP client: handshake, server-health, exit on EOF,
//! and a bad config refused.

use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_vllm-model-manager");

#[tokio::test]
async fn serves_health_and_exits_when_stdin_closes() {
    vllm_mcp_testkit::check_server_binary(Path::new(BIN), "vllm-model-manager").await;
}

#[test]
fn a_bad_config_fails_fast_naming_the_key() {
    vllm_mcp_testkit::check_bad_config_refused(Path::new(BIN));
}

/// Statuses, origins, restart modes and failure reasons are enums: the schemas list their
/// values, so a client sees what `status` can be without reading the docs.
#[tokio::test]
async fn schemas_list_the_values_of_statuses_origins_and_modes() {
    let rig = vllm_mcp_testkit::ServerRig::new("");
    let m = rig.spawn(Path::new(BIN), &[]).await;
    let tools = m.tools().await;
    let schema = |name: &str, output: bool| {
        let t = tools.iter().find(|t| t.name == name).unwrap();
        let s = if output {
            t.output_schema.as_ref().unwrap().as_ref().clone()
        } else {
            t.input_schema.as_ref().clone()
        };
        serde_json::Value::Object(s)
    };
    let values = |v: &serde_json::Value| -> Vec<String> {
        let mut out: Vec<String> = v["enum"]
            .as_array()
            .or_else(|| v["oneOf"].as_array())
            .map(|a| {
                a.iter()
                    .map(|x| {
                        x.as_str()
                            .or(x["const"].as_str())
                            .unwrap_or("?")
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    };
    let list = schema("list-models", true);
    let model = &list["properties"]["models"]["items"]["properties"];
    let statuses = [
        "error", "loaded", "loading", "sleeping", "stopping", "unloaded",
    ];
    assert_eq!(values(&model["status"]), statuses, "{}", model["status"]);
    assert_eq!(
        values(&model["origin"]),
        ["adapter", "attached", "cache", "catalog", "launched"]
    );
    // Why a model is in error, ENGINE_DIED and START_TIMEOUT included, in both answers.
    let info = schema("get-model-info", true);
    for error in [&model["error"], &info["properties"]["error"]] {
        let error = error["anyOf"]
            .as_array()
            .map(|a| a[0].clone())
            .unwrap_or(error.clone());
        let reasons = values(&error["properties"]["reason"]);
        for r in [
            "ENGINE_DIED",
            "START_TIMEOUT",
            "PORT_IN_USE",
            "PROCESS_EXITED",
        ] {
            assert!(reasons.iter().any(|x| x == r), "{r} missing: {error}");
        }
        assert_eq!(reasons.len(), 13, "{reasons:?}");
    }
    let set = schema("set-model-config", true);
    assert_eq!(
        values(&set["properties"]["takes_effect"]),
        ["next_launch", "now"]
    );
    let filter = &schema("list-models", false)["properties"]["status"];
    let any = filter["anyOf"]
        .as_array()
        .map(|a| a[0].clone())
        .unwrap_or(filter.clone());
    assert_eq!(values(&any), statuses, "{filter}");
    let load = schema("load-model", false);
    let policy = &load["properties"]["restart_policy"];
    let policy = policy["anyOf"]
        .as_array()
        .map(|a| a[0].clone())
        .unwrap_or(policy.clone());
    assert_eq!(
        values(&policy["properties"]["mode"]),
        ["on-failure"],
        "{policy}"
    );
    m.close().await;
}
