//! The audit trail: every tool call, refused ones too, in the store and in tracing.

use crate::context::Kit;
use serde_json::Value;
use std::time::Duration;
use vllm_core::store::AuditRecord;

/// Records one call. `arguments` must already be redacted. A store that cannot take the
/// record (disk full, read-only) costs a warning, never the call's answer.
pub async fn record(kit: &Kit, tool: &str, arguments: Value, code: &str, took: Duration) {
    tracing::info!(
        target: "audit",
        server = kit.server,
        tool,
        result = code,
        duration_ms = took.as_secs_f64() * 1000.0,
        arguments = %arguments,
        "tool call"
    );
    let rec = AuditRecord::new(kit.server, tool, arguments, code, took);
    if let Err(e) = kit
        .with_store(move |s| s.record_audit(&rec).map(drop))
        .await
    {
        tracing::warn!(error = %e, tool, "audit record not stored");
    }
}
