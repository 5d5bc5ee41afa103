//! `GET /ui/api/models/{id}/logs?lines=N`: a model's log as server-sent events, secrets
//! redacted as in `vllm://model/{id}/logs`. The first `lines` event is the log's last
//! `lines` lines (default 200, at most 5 000); later ones carry what was written since.
//!
//! A local log file is followed by its length (a relaunch that starts a new, shorter
//! file starts over); a Ray job's log has no length to follow, so its tail is read again
//! and what follows the previous tail is sent. A `status` event tells the model's status
//! when it changes; a comment every 15 s keeps proxies from closing the stream. The
//! stream ends when the client goes away or the door shuts down. The page
//! reads the stream with `fetch`, which sends the key as a header (an `EventSource`
//! cannot).

use crate::Gateway;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, Response};
use serde::Deserialize;
use serde_json::json;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use vllm_core::Error;
use vllm_core::models::ModelRecord;
use vllm_core::redact::redact_text;

/// How often the log is looked at.
pub const POLL: Duration = Duration::from_millis(500);
/// The most lines the first event carries.
pub const MAX_LINES: usize = 5_000;
/// The most bytes read from a local log in one look (a burst beyond waits for the next).
const MAX_READ: u64 = 1 << 20;
/// Lines of a Ray job's log read at each look.
const RAY_TAIL: usize = 400;

#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    lines: Option<usize>,
}

type Tx = crate::proxy::EventSender;

/// `GET /ui/api/models/{id}/logs`.
pub async fn stream(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<LogQuery>,
) -> Response<Body> {
    if let Err(r) = super::guard(&gw, &Method::GET, &headers) {
        return *r;
    }
    let lines = q.lines.unwrap_or(200).clamp(1, MAX_LINES);
    let record = match gw.launcher.get(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            let e = Error::ModelNotFound(id.clone());
            return super::error(&e.attributed_to("logs"));
        }
        Err(e) => return super::error(&e),
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move { follow(gw, record, lines, tx).await });
    crate::proxy::event_stream(rx, "no-store")
}

/// One event.
fn event(name: &str, data: &serde_json::Value) -> Result<Bytes, std::io::Error> {
    Ok(Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
}

/// Sends the tail, then what is written, until the client goes away or the door closes.
async fn follow(gw: Arc<Gateway>, mut record: ModelRecord, lines: usize, tx: Tx) {
    let mut closing = gw.closing.subscribe();
    // A Ray job's tail is compared with the one before: keep as much as each look reads.
    let tail = gw.launcher.log_tail(&record, lines.max(RAY_TAIL)).await;
    let mut previous: Vec<String> = tail.lines().map(str::to_string).collect();
    let first = &previous[previous.len().saturating_sub(lines)..];
    if tx
        .send(event("lines", &json!({"lines": first})))
        .await
        .is_err()
    {
        return;
    }
    let _ = tx
        .send(event("status", &json!({"status": record.status.as_str()})))
        .await;
    let mut local = record.log_path.clone().map(Follow::at_end);
    let mut quiet = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = closing.wait_for(|c| *c) => return,
            _ = tx.closed() => return,
        }
        if let Ok(Some(r)) = gw.launcher.get(&record.model_id).await {
            if r.status != record.status
                && tx
                    .send(event("status", &json!({"status": r.status.as_str()})))
                    .await
                    .is_err()
            {
                return;
            }
            // A relaunch writes its log anew (maybe at the same path): from its start.
            if r.log_path != record.log_path || r.launched_at != record.launched_at {
                local = r.log_path.clone().map(Follow::from_start);
            }
            record = r;
        }
        let new = match local.take() {
            Some(f) => {
                let read = tokio::task::spawn_blocking(move || {
                    let mut f = f;
                    let new = f.read_new();
                    (f, new)
                })
                .await;
                let Ok((f, new)) = read else { return };
                local = Some(f);
                new
            }
            None => {
                let tail = gw.launcher.log_tail(&record, RAY_TAIL).await;
                let now: Vec<String> = tail.lines().map(str::to_string).collect();
                let new = after_overlap(&previous, &now);
                previous = now;
                new
            }
        };
        if new.is_empty() {
            quiet += POLL;
            if quiet >= Duration::from_secs(15) {
                quiet = Duration::ZERO;
                if tx
                    .send(Ok(Bytes::from_static(b": keep-alive\n\n")))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            continue;
        }
        quiet = Duration::ZERO;
        if tx
            .send(event("lines", &json!({"lines": new})))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A local log followed by its length.
struct Follow {
    path: std::path::PathBuf,
    offset: u64,
    /// The start of a line not yet ended.
    partial: Vec<u8>,
}

impl Follow {
    fn at_end(path: std::path::PathBuf) -> Follow {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Follow {
            path,
            offset,
            partial: Vec::new(),
        }
    }

    fn from_start(path: std::path::PathBuf) -> Follow {
        Follow {
            offset: 0,
            ..Follow::at_end(path)
        }
    }

    /// The whole lines written since the last look, redacted.
    fn read_new(&mut self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // A new file in its place: from its start.
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset || f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if (&mut f).take(MAX_READ).read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let done: Vec<u8> = self.partial.drain(..=end).collect();
        let text = redact_text(&String::from_utf8_lossy(&done));
        text.lines().map(str::to_string).collect()
    }
}

/// The lines of `now` after the longest run at its start that ends `previous` (a tail
/// read again): all of `now` when they share nothing.
fn after_overlap(previous: &[String], now: &[String]) -> Vec<String> {
    let most = previous.len().min(now.len());
    for k in (1..=most).rev() {
        if previous[previous.len() - k..] == now[..k] {
            return now[k..].to_vec();
        }
    }
    now.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_tail_read_again_yields_only_what_follows() {
        assert_eq!(
            after_overlap(&v(&["a", "b", "c"]), &v(&["b", "c", "d"])),
            v(&["d"])
        );
        assert_eq!(after_overlap(&v(&["a", "b"]), &v(&["a", "b"])), v(&[]));
        assert_eq!(after_overlap(&v(&["a"]), &v(&["x", "y"])), v(&["x", "y"]));
    }

    #[test]
    fn a_local_log_is_followed_by_whole_lines_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.log");
        std::fs::write(&path, "old line\n").unwrap();
        let mut f = Follow::at_end(path.clone());
        assert!(f.read_new().is_empty());
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(w, "HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz123456\nhalf").unwrap();
        let got = f.read_new();
        assert_eq!(got.len(), 1);
        assert!(
            !got[0].contains("hf_abcdefghijklmnopqrstuvwxyz123456"),
            "{got:?}"
        );
        writeln!(w, " done").unwrap();
        assert_eq!(f.read_new(), v(&["half done"]));
        // A new, shorter file: read from its start.
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(f.read_new(), v(&["new"]));
    }
}
