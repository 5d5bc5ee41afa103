//! Turns answers and errors into MCP tool results: JSON in the text, structured copies.
//!
//! Crush shows the model only the text content, so the whole JSON answer (errors too)
//! is the text. Successes also carry `structuredContent` matching the tool's
//! `outputSchema`; failures set `isError` and carry no `structuredContent`, since MCP
//! Inspector validates structured content against the schema.

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::Value;
use vllm_core::Error;

/// Adds `"success": true` to an object answer (first, for readability).
pub fn with_success(value: Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut out = serde_json::Map::with_capacity(m.len() + 1);
            out.insert("success".into(), Value::Bool(true));
            out.extend(m.into_iter().filter(|(k, _)| k != "success"));
            Value::Object(out)
        }
        other => serde_json::json!({"success": true, "result": other}),
    }
}

/// A successful tool result.
pub fn success(value: Value) -> CallToolResult {
    let text = value.to_string();
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(value);
    r
}

/// A failed tool result in the spec's error shape.
pub fn failure(err: &Error) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(err.to_json().to_string())])
}
