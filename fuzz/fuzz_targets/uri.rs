//! Fuzz target: resource URIs and their queries, as a client may send them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|uri: &str| {
    let _ = vllm_model_manager::resources::parse_model_uri(uri);
    let _ = vllm_mcp_kit::uri::query_pairs(uri);
    let _ = vllm_mcp_kit::uri::percent_decode(uri);
    let _ = vllm_mcp_kit::uri::split(uri, "vllm://audit/");
});
