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
        .with_store(move |s| Ok(s.record_audit(&rec).map(drop)?))
        .await
    {
        tracing::warn!(error = %e, tool, "audit record not stored");
    }
}

/// The audit log as a resource, listed by every server.
pub const LOG_URI: &str = "vllm://audit/log";

/// The resource `resources/list` shows.
pub fn resource() -> rmcp::model::Resource {
    rmcp::model::Resource::new(LOG_URI, "audit-log")
        .with_description(
            "Every tool call of every server on this store, refused ones too, newest first: tool, \
             redacted arguments, result code, duration. Filter with ?server=&tool=&result_code=&since=\
             (Unix seconds)&limit=(default 100, at most 1000)&before_id=(the last id of the previous page).",
        )
        .with_mime_type("application/json")
}

/// The template `resources/templates/list` shows.
pub fn template() -> rmcp::model::ResourceTemplate {
    rmcp::model::ResourceTemplate::new(
        "vllm://audit/log{?server,tool,result_code,since,limit,before_id}",
        "audit-log",
    )
    .with_description("The audit log, filtered: see the vllm://audit/log resource.")
    .with_mime_type("application/json")
}

/// Reads `vllm://audit/log[?...]`; `None` when the URI is not the audit log.
pub async fn read(kit: &Kit, uri: &str) -> Option<vllm_core::Result<crate::ResourceBody>> {
    let (path, query) = crate::uri::split(uri, "vllm://audit/")?;
    if path != "log" {
        return None;
    }
    Some(
        async {
            let q = query_of(query.unwrap_or(""))?;
            let limit = q.effective_limit();
            let entries = kit.with_store(move |s| Ok(s.audit_entries(&q)?)).await?;
            let next = (entries.len() == limit)
                .then(|| entries.last().and_then(|e| e.id))
                .flatten();
            Ok(crate::ResourceBody::json(&serde_json::json!({
                "entries": entries,
                "count": entries.len(),
                "next_before_id": next,
            })))
        }
        .await,
    )
}

fn query_of(query: &str) -> vllm_core::Result<vllm_core::store::AuditQuery> {
    use vllm_core::Error;
    let mut q = vllm_core::store::AuditQuery::default();
    for (k, v) in crate::uri::query_pairs(query)? {
        let number = |what: &str| Error::invalid(what, format!("`{v}` is not a number"));
        match k.as_str() {
            "server" => q.server = Some(v),
            "tool" => q.tool = Some(v),
            "result_code" => q.result_code = Some(v),
            "since" => {
                q.since = Some(
                    v.parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite())
                        .ok_or_else(|| number("since"))?,
                )
            }
            "limit" => {
                let n: usize = v.parse().map_err(|_| number("limit"))?;
                if n == 0 {
                    return Err(Error::invalid("limit", "must be at least 1"));
                }
                q.limit = Some(n);
            }
            "before_id" => q.before_id = Some(v.parse().map_err(|_| number("before_id"))?),
            other => {
                return Err(Error::invalid(
                    "uri",
                    format!(
                        "unknown filter `{other}`; use server, tool, result_code, since, limit or before_id"
                    ),
                ));
            }
        }
    }
    Ok(q)
}
