//! Passing a request on to the model's server and its answer back, chunk by chunk: the
//! answer's body is never gathered, a client that goes away drops the upstream request
//! (vLLM aborts it), and a server that breaks off mid-stream ends the client's stream
//! with an error event instead of leaving it waiting.

use crate::Gateway;
use crate::error::{Dialect, GatewayError};
use crate::resolve::Upstream;
use crate::usage::InFlight;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, Response, StatusCode, header};
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Request headers that are the gateway's own business, not the model server's: the
/// connection's (hop by hop), the client's key (the server gets its own), and the length
/// (the body is passed as it came).
const DROPPED_REQUEST: [HeaderName; 9] = [
    header::HOST,
    header::CONNECTION,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Hop-by-hop headers without a constant of their own, and the client's other key header.
const DROPPED_BY_NAME: [&str; 3] = ["keep-alive", "proxy-connection", "x-api-key"];

/// Answer headers the gateway's own connection sets.
const DROPPED_RESPONSE: [HeaderName; 3] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// Why a pass failed before any answer began.
pub enum PassError {
    /// The server could not be reached: the route is stale, resolve again.
    Unreachable(GatewayError),
    /// It failed otherwise.
    Failed(GatewayError),
}

/// One request to pass on.
pub struct Pass<'a> {
    pub model: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    pub dialect: Dialect,
}

impl Gateway {
    /// Sends `pass` to `up` and answers with its server's answer as it comes.
    pub async fn pass(&self, up: &Upstream, pass: Pass<'_>) -> Result<Response<Body>, PassError> {
        let Some(guard) = self.usage.begin(&up.owner) else {
            // Being swapped out since it was routed: look again (and wait).
            return Err(PassError::Unreachable(GatewayError::Upstream {
                model: pass.model.to_string(),
                message: "it is being swapped out".into(),
            }));
        };
        let mut rb = up.client.forward(reqwest::Method::POST, pass.path);
        // Headers the client's Connection header names are hop by hop too.
        let named: Vec<String> = pass
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        for (name, value) in pass.headers {
            let hop = DROPPED_REQUEST.contains(name)
                || DROPPED_BY_NAME.contains(&name.as_str())
                || named.iter().any(|n| n == name.as_str());
            if !hop {
                rb = rb.header(name, value);
            }
        }
        let resp = match rb.body(pass.body).send().await {
            Ok(r) => r,
            Err(e) => {
                let err = GatewayError::Upstream {
                    model: pass.model.to_string(),
                    message: e.to_string(),
                };
                return Err(if e.is_connect() {
                    PassError::Unreachable(err)
                } else {
                    PassError::Failed(err)
                });
            }
        };
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        self.metrics.answered(pass.model, status.as_u16());
        let mut out = Response::builder().status(status);
        let sse = is_event_stream(resp.headers());
        for (name, value) in resp.headers() {
            if !DROPPED_RESPONSE.contains(name) {
                out = out.header(name, value);
            }
        }
        let body = Relay {
            inner: Box::pin(resp.bytes_stream()),
            _guard: guard,
            model: pass.model.to_string(),
            dialect: pass.dialect,
            sse,
            failed: false,
        };
        out.body(Body::from_stream(body))
            .map_err(|e| PassError::Failed(GatewayError::BadRequest(e.to_string())))
    }
}

fn is_event_stream(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The server's answer on its way to the client, counted in flight until it ends or is
/// dropped. A server that breaks off an event stream sends the client one error event
/// (which the OpenAI and Anthropic clients raise), without `[DONE]`, and the stream ends
/// there; any other answer broken off breaks the client's connection.
struct Relay {
    inner: ByteStream,
    _guard: InFlight,
    model: String,
    dialect: Dialect,
    sse: bool,
    failed: bool,
}

impl Stream for Relay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(model = %self.model, error = %e, "the model's server broke off an answer");
                if !self.sse {
                    return Poll::Ready(Some(Err(std::io::Error::other(e))));
                }
                self.failed = true;
                let err = GatewayError::Upstream {
                    model: self.model.clone(),
                    message: format!("the answer broke off: {e}"),
                };
                Poll::Ready(Some(Ok(Bytes::from(err.sse_event(self.dialect)))))
            }
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Chunks sent into a door-made event stream (a kept-alive start, the page's log).
pub type EventSender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A `200` event stream of what `rx` receives, until its senders are gone.
pub fn event_stream(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    cache_control: &'static str,
) -> Response<Body> {
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, cache_control)
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| {
            axum::response::IntoResponse::into_response(StatusCode::INTERNAL_SERVER_ERROR)
        })
}
