//! The `vllm-state-persistence` binary through a real MCP client: handshake, server-health, exit on EOF,
//! and a bad config refused.

use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_vllm-state-persistence");

#[tokio::test]
async fn serves_health_and_exits_when_stdin_closes() {
    vllm_mcp_testkit::check_server_binary(Path::new(BIN), "vllm-state-persistence").await;
}

#[test]
fn a_bad_config_fails_fast_naming_the_key() {
    vllm_mcp_testkit::check_bad_config_refused(Path::new(BIN));
}

/// A restore's model actions are an enum: load-state's output schema lists them.
#[tokio::test]
async fn load_state_lists_its_model_actions() {
    let rig = vllm_mcp_testkit::ServerRig::new("");
    let s = rig.spawn(Path::new(BIN), &[]).await;
    let tools = s.tools().await;
    let load = tools.iter().find(|t| t.name == "load-state").unwrap();
    let out = serde_json::Value::Object(load.output_schema.as_ref().unwrap().as_ref().clone());
    let action = &out["properties"]["model_actions"]["items"]["properties"]["action"];
    let mut values: Vec<&str> = action["enum"]
        .as_array()
        .or_else(|| action["oneOf"].as_array())
        .unwrap_or_else(|| panic!("{action}"))
        .iter()
        .map(|x| x.as_str().or(x["const"].as_str()).unwrap())
        .collect();
    values.sort();
    let expected = [
        "already_running",
        "drift",
        "failed",
        "launched",
        "not_running_when_saved",
        "queued",
        "replaced",
    ];
    assert_eq!(values, expected);
    s.close().await;
}
