//! The front door's HTTP surface: the routes, the client's key, reading the request's
//! `model`, and the answer while a model starts (held, or for a stream, kept alive with
//! SSE comments until the model's first chunk).

use crate::Gateway;
use crate::demand::Ready;
use crate::error::{Dialect, GatewayError};
use crate::proxy::{Pass, PassError};
use crate::usage::Waiting;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Response, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// The largest request body passed on (a long prompt, images inline).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// The routes passed on by the body's `model`.
pub const MODEL_ROUTES: [&str; 13] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/score",
    "/score",
    "/v1/rerank",
    "/rerank",
    "/v2/rerank",
    "/tokenize",
    "/detokenize",
];

/// What the gateway reads of a request body.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    /// `null` is no stream, as vLLM takes it.
    #[serde(default)]
    stream: Option<bool>,
}

type Gw = State<Arc<Gateway>>;

/// The front door's router.
pub fn router(gw: Arc<Gateway>) -> Router {
    let mut r = Router::new();
    for path in MODEL_ROUTES {
        r = r.route(path, post(relay));
    }
    r = r
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics));
    crate::ui::routes(r).with_state(gw)
}

/// A request for a model: the key is checked before its body is read; then it is
/// passed on, or held while its model starts.
async fn relay(State(gw): Gw, request: axum::extract::Request) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let dialect = if path.starts_with("/v1/messages") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    // A page elsewhere cannot make a visitor's browser start models here (a keyless
    // door takes any body, `text/plain` too, which needs no preflight).
    if let Some(why) = gw.cross_site(&parts.headers) {
        return GatewayError::ForeignOrigin(why).response(dialect);
    }
    if let Err(e) = gw.authorize(&parts.headers) {
        return e.response(dialect);
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return GatewayError::TooLarge(MAX_BODY).response(dialect),
    };
    let (model, stream) = match probe(&body) {
        Ok(p) => p,
        Err(e) => return e.response(dialect),
    };
    let req = Request {
        model,
        path,
        headers: parts.headers,
        body,
        dialect,
    };
    let answer = gw.clone().answer(req, stream).await;
    answer.unwrap_or_else(|(e, model)| {
        // A name nothing answers to is no series of its own: clients choose names.
        let label = if matches!(e, GatewayError::UnknownModel { .. }) {
            ""
        } else {
            &model
        };
        gw.metrics.answered(label, e.status().as_u16());
        e.response(dialect)
    })
}

/// The body's `model` and whether it asks for a stream.
fn probe(body: &[u8]) -> Result<(String, bool), GatewayError> {
    match serde_json::from_slice::<Probe<'_>>(body) {
        Ok(Probe {
            model: Some(m),
            stream,
        }) => Ok((m.into_owned(), stream.unwrap_or(false))),
        Ok(Probe { model: None, .. }) => Err(GatewayError::BadRequest(
            "the request names no `model`; GET /v1/models lists them".into(),
        )),
        Err(e) => Err(GatewayError::BadRequest(format!(
            "the body is not a JSON request: {e}"
        ))),
    }
}

/// A request to pass on, owned (it may wait in a task).
struct Request {
    model: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    dialect: Dialect,
}

impl Request {
    fn pass(&self) -> Pass<'_> {
        Pass {
            model: &self.model,
            path: &self.path,
            headers: &self.headers,
            body: self.body.clone(),
            dialect: self.dialect,
        }
    }
}

type Answer = Result<Response<Body>, (GatewayError, String)>;

impl Gateway {
    /// Passes `req` on now, or once its model serves. A stream that must wait is answered
    /// at once, kept alive, after its place in the queue is taken (a full queue is a 429,
    /// not an event in a 200).
    async fn answer(self: Arc<Self>, req: Request, stream: bool) -> Answer {
        let owner = match self.route_now(&req.model).await {
            Ok(Ready::Now(up)) => match self.pass(&up, req.pass()).await {
                Ok(r) => return Ok(r),
                Err(PassError::Unreachable(_)) => {
                    self.routes.forget_owner(&up.owner);
                    up.owner
                }
                Err(PassError::Failed(e)) => return Err((e, req.model)),
            },
            Ok(Ready::Later { owner }) => owner,
            Err(e) => return Err((e, req.model)),
        };
        if !stream {
            return self.waited(req, None).await;
        }
        match self.enqueue(&req.model, &owner) {
            Ok(ticket) => Ok(self.kept_alive(req, ticket)),
            Err(e) => Err((e, req.model)),
        }
    }

    /// Waits for the model (starting it if need be), then passes the request on.
    async fn waited(self: Arc<Self>, req: Request, ticket: Option<Waiting>) -> Answer {
        let up = self
            .acquire(&req.model, ticket)
            .await
            .map_err(|e| (e, req.model.clone()))?;
        match self.pass(&up, req.pass()).await {
            Ok(r) => Ok(r),
            Err(PassError::Unreachable(e) | PassError::Failed(e)) => Err((e, req.model)),
        }
    }

    /// A stream whose model must start first: answered at once as an event stream that
    /// carries SSE comments until the model's own events follow (or an error event). A
    /// client that goes away ends the wait, and the upstream request with it.
    fn kept_alive(self: Arc<Self>, req: Request, ticket: Waiting) -> Response<Body> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        let every = Duration::from_secs_f64(self.config.gateway.keep_alive_seconds);
        tokio::spawn(async move {
            let acquire = self.acquire(&req.model, Some(ticket));
            tokio::pin!(acquire);
            let mut tick = tokio::time::interval(every);
            let up = loop {
                tokio::select! {
                    r = &mut acquire => break r,
                    _ = tick.tick() => {
                        if tx.send(Ok(Bytes::from_static(b": waiting for the model to start\n\n"))).await.is_err() {
                            return; // the client went away: so does its place in the queue
                        }
                    }
                }
            };
            let answer = match up {
                Ok(up) => self.pass(&up, req.pass()).await,
                Err(e) => Err(PassError::Failed(e)),
            };
            match answer {
                Ok(resp) => relay_events(resp, &tx, req.dialect).await,
                Err(PassError::Unreachable(e) | PassError::Failed(e)) => {
                    self.metrics.answered(&req.model, e.status().as_u16());
                    let _ = tx.send(Ok(Bytes::from(e.sse_event(req.dialect)))).await;
                }
            }
        });
        crate::proxy::event_stream(rx, "no-cache")
    }
}

/// The model's answer into an event stream already begun: its events as they come, or
/// an error answer (a bad parameter) whole, as one error event. Stops when the client
/// goes away, dropping the upstream request.
async fn relay_events(resp: Response<Body>, tx: &Sender, dialect: Dialect) {
    let ok = resp.status().is_success();
    let mut body = resp.into_body().into_data_stream();
    if !ok {
        let mut whole = Vec::new();
        while let Some(Ok(b)) = body.next().await {
            whole.extend_from_slice(&b);
        }
        let text = String::from_utf8_lossy(&whole);
        let event = match dialect {
            Dialect::OpenAi => format!("data: {text}\n\n"),
            Dialect::Anthropic => format!("event: error\ndata: {text}\n\n"),
        };
        let _ = tx.send(Ok(Bytes::from(event))).await;
        return;
    }
    loop {
        let chunk = tokio::select! {
            c = body.next() => c,
            _ = tx.closed() => return,
        };
        let Some(chunk) = chunk else { return };
        if tx.send(chunk.map_err(std::io::Error::other)).await.is_err() {
            return;
        }
    }
}

/// Where a kept-alive stream's chunks go.
type Sender = crate::proxy::EventSender;

async fn models(State(gw): Gw, headers: HeaderMap) -> Response<Body> {
    if let Err(e) = gw.authorize(&headers) {
        return e.response(Dialect::OpenAi);
    }
    match gw.listing().await {
        Ok(data) => axum::Json(serde_json::json!({"object": "list", "data": data})).into_response(),
        Err(e) => {
            let e = GatewayError::Upstream {
                model: String::new(),
                message: e.to_string(),
            };
            e.response(Dialect::OpenAi)
        }
    }
}

async fn health() -> Response<Body> {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn metrics(State(gw): Gw) -> Response<Body> {
    let text = gw.metrics.render(&gw.usage);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}
