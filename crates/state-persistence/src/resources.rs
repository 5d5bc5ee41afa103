//! The state resources: saved sessions, a session's summary, a restored conversation.
//!
//! - `vllm://state/sessions[?limit=N&cursor=C]`: sessions with saved states, newest first;
//! - `vllm://state/session/{id}/summary[?limit=N&cursor=C]`: its states (id, time, size,
//!   compression ratio, model and message counts, title) and what changed between the
//!   newest two;
//! - `vllm://state/session/{id}/conversation[?limit=N&cursor=C]`: the messages of a Crush
//!   session restored by load-state (restore_conversations), oldest first.
//!
//! Crush reads only resources/list, so besides the templates every saved session's
//! summary and every restored conversation is listed concretely (bounded by
//! `limits.list_max`). Every list inside a body is paged with `limit` and `cursor`.

use crate::StatePersistence;
use rmcp::model::{Resource, ResourceTemplate};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use vllm_core::crush_db::Conversation;
use vllm_core::states::{self, PartKind, StateMeta};
use vllm_core::{Error, Result};
use vllm_mcp_kit::page::{PageParams, paginate};
use vllm_mcp_kit::{ResourceBody, Service};

/// The sessions list's URI.
pub const SESSIONS_URI: &str = "vllm://state/sessions";

/// `vllm://state/session/{id}/summary`.
pub fn summary_uri(session_id: &str) -> String {
    format!("vllm://state/session/{session_id}/summary")
}

/// `vllm://state/session/{id}/conversation`.
pub fn conversation_uri(session_id: &str) -> String {
    format!("vllm://state/session/{session_id}/conversation")
}

/// The URI templates, for clients that use them.
pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new("vllm://state/session/{session_id}/summary{?limit,cursor}", "state-session-summary")
            .with_description(
                "A session's saved states (id, time, size, compression ratio, models, messages, title) and the \
                 differences between its newest two.",
            )
            .with_mime_type("application/json"),
        ResourceTemplate::new(
            "vllm://state/session/{session_id}/conversation{?limit,cursor}",
            "state-session-conversation",
        )
        .with_description("The messages of a Crush session restored by load-state, oldest first, paged.")
        .with_mime_type("application/json"),
        ResourceTemplate::new("vllm://state/sessions{?limit,cursor}", "state-sessions")
            .with_description("Sessions with saved states, the most recently saved first.")
            .with_mime_type("application/json"),
    ]
}

/// Concrete resources: the sessions list, each saved session's summary, each restored
/// conversation.
pub async fn list(s: &StatePersistence) -> Vec<Resource> {
    let mut out = vec![
        Resource::new(SESSIONS_URI, "state-sessions")
            .with_description("Sessions with saved states, the most recently saved first.")
            .with_mime_type("application/json"),
    ];
    let Ok(store) = s.kit().store().cloned() else {
        return out;
    };
    let max = s.kit().config.limits.list_max as usize;
    let found = tokio::task::spawn_blocking(move || {
        let sessions = states::list_sessions(&store).unwrap_or_default();
        let restored = states::restored_sessions(&store, max).unwrap_or_default();
        (sessions, restored)
    })
    .await
    .unwrap_or_default();
    for sess in found.0.into_iter().take(max) {
        let title = sess.title.as_deref().unwrap_or("untitled");
        out.push(
            Resource::new(
                summary_uri(&sess.session_id),
                format!("state summary {}", sess.session_id),
            )
            .with_description(format!(
                "{} saved state(s) of `{title}`, newest {}",
                sess.state_count, sess.newest
            ))
            .with_mime_type("application/json"),
        );
    }
    for (session, state) in found.1 {
        out.push(
            Resource::new(
                conversation_uri(&session),
                format!("restored conversation {session}"),
            )
            .with_description(format!("Restored from state {state}."))
            .with_mime_type("application/json"),
        );
    }
    out
}

/// What a state URI names.
#[derive(Debug, PartialEq)]
enum StateUri {
    Sessions,
    Summary(String),
    Conversation(String),
}

use vllm_mcp_kit::uri::percent_decode;

fn page_params(query: Option<&str>) -> Result<PageParams> {
    let mut p = PageParams::default();
    for pair in query.unwrap_or("").split('&').filter(|x| !x.is_empty()) {
        match pair.split_once('=') {
            Some(("limit", n)) => {
                p.limit = Some(
                    n.parse()
                        .map_err(|_| Error::invalid("limit", format!("`{n}` is not a number")))?,
                )
            }
            Some(("cursor", c)) => p.cursor = Some(c.to_string()),
            _ => {
                return Err(Error::invalid(
                    "uri",
                    format!("unknown query `{pair}`; only limit=N and cursor=C"),
                ));
            }
        }
    }
    Ok(p)
}

fn parse(uri: &str) -> Option<Result<(StateUri, PageParams)>> {
    let rest = uri.strip_prefix("vllm://state/")?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let what = if path == "sessions" {
        StateUri::Sessions
    } else {
        let inner = path.strip_prefix("session/")?;
        let (raw, kind) = inner.rsplit_once('/')?;
        if kind != "summary" && kind != "conversation" {
            return None;
        }
        let Some(id) = percent_decode(raw) else {
            return Some(Err(Error::invalid("uri", "malformed percent-encoding")));
        };
        if kind == "summary" {
            if let Err(e) = states::validate_session_id("uri", &id) {
                return Some(Err(e));
            }
            StateUri::Summary(id)
        } else {
            // Crush names sub-agent sessions `<message id>$$<tool call id>`: `$` is
            // allowed here (the id is only ever a bound parameter), nothing else more.
            if let Err(e) = states::validate_session_id("uri", &id.replace('$', "_")) {
                return Some(Err(e));
            }
            StateUri::Conversation(id)
        }
    };
    Some(page_params(query).map(|p| (what, p)))
}

/// Reads one resource; `None` when the URI is not ours.
pub async fn read(s: &StatePersistence, uri: &str) -> Option<Result<ResourceBody>> {
    let parsed = parse(uri)?;
    let result = async {
        let (what, page) = parsed?;
        let store = s.kit().store()?.clone();
        let limits = s.kit().config.limits.clone();
        tokio::task::spawn_blocking(move || match what {
            StateUri::Sessions => {
                let all = states::list_sessions(&store)?;
                let p = paginate(all, &page, &limits, "sessions")?;
                Ok(json!({"sessions": p.items, "total": p.total, "next_cursor": p.next_cursor}))
            }
            StateUri::Summary(id) => summary(&store, &id, &page, &limits),
            StateUri::Conversation(id) => conversation(&store, &id, &page, &limits),
        })
        .await
        .map_err(|e| Error::Internal(format!("resource task failed: {e}")))?
    }
    .await;
    Some(result.map(|v| ResourceBody::json(&v)))
}

fn summary(
    store: &vllm_core::store::Store,
    id: &str,
    page: &PageParams,
    limits: &vllm_core::config::LimitsConfig,
) -> Result<Value> {
    let all = states::list_states(store, id)?;
    if all.is_empty() {
        return Err(Error::StateNotFound(format!("session {id}")));
    }
    let diff = match (all.first(), all.get(1)) {
        (Some(new), Some(old)) => Some(differences(old, new)?),
        _ => None,
    };
    let count = all.len();
    let p = paginate(all, page, limits, "states")?;
    let items: Vec<Value> = p
        .items
        .iter()
        .map(|m| {
            json!({
                "state_id": m.state_id,
                "timestamp": m.timestamp,
                "size_bytes": m.size_bytes(),
                "raw_bytes": m.raw_bytes(),
                "compression_ratio": (m.compression_ratio() * 100.0).round() / 100.0,
                "model_count": m.model_count,
                // Monitor samples saved (include_metrics); null when metrics were not asked for.
                "metric_samples": m.metrics.as_ref().map(|x| x.samples),
                "metrics": m.metrics,
                "conversations": m.session_count,
                "message_count": m.message_count,
                "title": m.title,
                "parts": m.parts.iter().map(|x| x.part.as_str()).collect::<Vec<_>>(),
                "vllm_versions": m.vllm_versions,
                "format_version": m.format_version,
            })
        })
        .collect();
    Ok(json!({
        "session_id": id,
        "state_count": count,
        "states": items,
        "total": p.total,
        "next_cursor": p.next_cursor,
        "differences": diff,
    }))
}

/// What changed from `old` to `new`: models added, removed, with changed arguments, and
/// the message count.
pub fn differences(old: &StateMeta, new: &StateMeta) -> Result<Value> {
    let a: BTreeSet<&String> = old.models_index.keys().collect();
    let b: BTreeSet<&String> = new.models_index.keys().collect();
    let mut changed = serde_json::Map::new();
    for id in a.intersection(&b) {
        let (x, y) = (&old.models_index[*id], &new.models_index[*id]);
        let mut d = x.args.differences(&y.args)?;
        if x.source != y.source {
            d.insert(
                "source".into(),
                json!({"current": x.source, "requested": y.source}),
            );
        }
        if !d.is_empty() {
            // `current` is the older state's value, `requested` the newer's.
            changed.insert((*id).clone(), Value::Object(d));
        }
    }
    Ok(json!({
        "from_state": old.state_id,
        "to_state": new.state_id,
        "models_added": b.difference(&a).collect::<Vec<_>>(),
        "models_removed": a.difference(&b).collect::<Vec<_>>(),
        "models_changed_args": changed,
        "message_count_change": new.message_count as i64 - old.message_count as i64,
    }))
}

fn conversation(
    store: &vllm_core::store::Store,
    id: &str,
    page: &PageParams,
    limits: &vllm_core::config::LimitsConfig,
) -> Result<Value> {
    let state_id = states::restored_from(store, id)?.ok_or_else(|| {
        Error::StateNotFound(format!(
            "conversation {id}: not restored (call load-state with restore_conversations)"
        ))
    })?;
    let frame = states::read_frame(store, &state_id, PartKind::Conversations)?
        .ok_or_else(|| Error::StateNotFound(format!("conversation {id} in state {state_id}")))?;
    let conv: Conversation = states::decode_part(&state_id, PartKind::Conversations, &frame)?;
    drop(frame);
    let session = conv
        .sessions
        .iter()
        .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
        .cloned();
    let messages: Vec<_> = conv
        .messages
        .into_iter()
        .filter(|m| m.get("session_id").and_then(Value::as_str) == Some(id))
        .collect();
    let p = paginate(messages, page, limits, "messages")?;
    Ok(json!({
        "session_id": id,
        "state_id": state_id,
        "root_session_id": conv.root_id,
        "session": session,
        "messages": p.items,
        "total": p.total,
        "next_cursor": p.next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let ok = |u: &str| parse(u).unwrap().unwrap().0;
        assert_eq!(ok("vllm://state/sessions"), StateUri::Sessions);
        assert_eq!(
            ok("vllm://state/session/abc-1/summary?limit=3"),
            StateUri::Summary("abc-1".into())
        );
        assert_eq!(
            ok("vllm://state/session/x:y/conversation?cursor=messages:50"),
            StateUri::Conversation("x:y".into())
        );
        assert_eq!(
            ok("vllm://state/session/m1$$call_2/conversation"),
            StateUri::Conversation("m1$$call_2".into())
        );
        assert_eq!(
            ok("vllm://state/session/m1%24%24c/conversation"),
            StateUri::Conversation("m1$$c".into())
        );
        for bad in [
            "vllm://state/session/a b/summary",
            "vllm://state/session/../x/summary",
            "vllm://state/session/a$b/summary",
            "vllm://state/session/a%2Fb/conversation",
            "vllm://state/session/%zz/conversation",
            "vllm://state/sessions?drop=1",
            "vllm://state/sessions?limit=x",
        ] {
            assert!(parse(bad).unwrap().is_err(), "{bad}");
        }
        for not_ours in ["vllm://model/x/config", "vllm://state/session/x/other"] {
            assert!(parse(not_ours).is_none(), "{not_ours}");
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn no_uri_makes_the_router_panic(uri in any::<String>(), tail in any::<String>()) {
                let _ = parse(&uri);
                let _ = parse(&format!("vllm://state/session/{tail}/summary"));
                let _ = parse(&format!("vllm://state/session/{tail}/conversation?{tail}"));
                let _ = parse(&format!("vllm://state/sessions?{tail}"));
            }

            #[test]
            fn every_valid_session_id_routes_to_its_resource(id in "[a-zA-Z0-9._:-]{1,64}") {
                prop_assert_eq!(
                    parse(&format!("vllm://state/session/{id}/summary")).unwrap().unwrap().0,
                    StateUri::Summary(id.clone())
                );
                prop_assert_eq!(
                    parse(&format!("vllm://state/session/{id}/conversation")).unwrap().unwrap().0,
                    StateUri::Conversation(id)
                );
            }

            #[test]
            fn ids_with_other_characters_are_refused(
                id in "[a-zA-Z0-9]{0,4}[ '\";<>|&$/*?]{1,3}[a-zA-Z0-9]{0,4}"
            ) {
                let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
                let uri = format!("vllm://state/session/{encoded}/summary");
                prop_assert!(parse(&uri).unwrap().is_err(), "{}", uri);
            }
        }
    }
}
