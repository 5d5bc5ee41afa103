//! Turns answers and errors into MCP tool results: JSON in the text, structured copies.
//!
//! Crush shows the model only the text content, so the whole JSON answer (errors too)
//! is the text. Successes also carry `structuredContent` matching the tool's
//! `outputSchema`; failures set `isError` and carry no `structuredContent`, since MCP
//! Inspector validates structured content against the schema.

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::Value;
use vllm_core::{Error, LoadFailure};

/// Adds `"success": true` to an object answer (first, for readability).
pub use vllm_core::error::with_success;

/// A successful tool result.
pub fn success(value: Value) -> CallToolResult {
    let text = value.to_string();
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(value);
    r
}

/// A failed tool result in the spec's error shape.
pub fn failure(err: &Error) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(error_json(err).to_string())])
}

/// The error in the spec's shape, `{"success": false, "error": {code, message,
/// details}}`, its suggestion worded for an MCP client (naming the tools and resources
/// that help).
pub fn error_json(err: &Error) -> Value {
    let mut error = err.to_value();
    if let Some(Value::Object(details)) = error.get_mut("details") {
        details.insert("suggestion".into(), Value::String(suggestion(err)));
    }
    serde_json::json!({"success": false, "error": error})
}

/// What a person can do about `err`, through this server's tools and resources; the
/// core's own suggestion where no tool helps.
pub fn suggestion(err: &Error) -> String {
    match err {
        Error::InvalidArgument { field, .. } => format!(
            "Correct `{field}` and call again; the tool's input schema lists the allowed values."
        ),
        Error::ModelNotFound(_) => "Call list-models to see the known models, or give a Hugging \
            Face repo id or an absolute model directory."
            .into(),
        Error::ModelLoadFailed {
            model,
            reason: LoadFailure::ProcessExited | LoadFailure::Unknown,
            ..
        } => {
            format!("Read the model's log resource (vllm://model/{model}/logs) for the cause.")
        }
        Error::ModelBusy { .. } => {
            "Wait for the running requests to finish, or call again with force: true.".into()
        }
        Error::NotManaged(_) => "Stop that vLLM server where it was started, or use sleep-model \
            if its sleep mode is on."
            .into(),
        Error::StateNotFound(_) => "Read vllm://state/sessions to see the saved states.".into(),
        Error::RateLimited {
            limit,
            retry_after_s,
        } => {
            format!("Wait {retry_after_s} s and call again, or raise `{limit}` in the config.")
        }
        Error::PermissionDenied { .. } => "The config's [security] section forbids this call; \
            ask whoever runs vllm-mcp to allow it."
            .into(),
        other => other.suggestion(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_take_the_spec_shape_with_suggestions_naming_tools() {
        let v = error_json(&Error::ModelNotFound("m".into()));
        assert_eq!(v["success"], false);
        assert_eq!(v["error"]["code"], "MODEL_NOT_FOUND");
        assert_eq!(v["error"]["details"]["model_id"], "m");
        let s = v["error"]["details"]["suggestion"].as_str().unwrap();
        assert!(s.contains("list-models"), "{s}");
        let exited = Error::ModelLoadFailed {
            model: "tiny".into(),
            reason: LoadFailure::ProcessExited,
            message: "the server exited".into(),
            details: Default::default(),
        };
        let s = suggestion(&exited);
        assert!(s.contains("vllm://model/tiny/logs"), "{s}");
        // Where no tool helps, the core's own words.
        let full = Error::storage("disk full");
        assert_eq!(suggestion(&full), full.suggestion());
    }
}
