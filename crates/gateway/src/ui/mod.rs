//! The fleet's page on the front door: `GET /` and `/ui` serve one HTML page and its
//! assets, embedded in the binary; `/ui/api/*` is the JSON the page reads and the
//! actions it takes, behind the door's key.
//!
//! - [`assets`]: the embedded files (the page, its script and style, uPlot);
//! - [`view`]: `GET /ui/api/fleet`, every model with what a person asks of it;
//! - [`api`]: the charts, the alerts and the saved states;
//! - [`actions`]: load, unload, sleep, wake, pin and restore, through the core's
//!   operations, the permission gate and the audit log;
//! - [`logs`]: a model's log as server-sent events, secrets redacted.
//!
//! # Security
//! The key travels in a header the page's script adds (`Authorization: Bearer`), never a
//! cookie, so another site cannot act through a visitor's browser: it cannot read the
//! key, and a request with that header (or a JSON body) from another origin needs a
//! CORS preflight this door never grants. Without a key (a loopback door) the same holds
//! for actions, which take only `Content-Type: application/json`; a request whose
//! `Origin` or `Sec-Fetch-Site` says another site, or (on a door without a key) whose
//! `Host` is a name this door is not (DNS rebinding), is refused before anything else.
//! The door's `/v1` routes refuse a browser's request from another site too.

pub mod actions;
pub mod api;
pub mod assets;
pub mod logs;
pub mod view;

use crate::Gateway;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::Arc;
use vllm_core::Error;

/// The page's routes, added to the door's router.
pub fn routes(r: Router<Arc<Gateway>>) -> Router<Arc<Gateway>> {
    r.route("/", get(assets::page))
        .route("/ui", get(assets::page))
        .route("/ui/", get(assets::page))
        .route("/ui/assets/{name}", get(assets::asset))
        .route("/ui/api/fleet", get(view::fleet))
        .route("/ui/api/charts", get(api::charts))
        .route("/ui/api/alerts", get(api::alerts))
        .route("/ui/api/states", get(api::states))
        .route("/ui/api/models/{id}/logs", get(logs::stream))
        .route("/ui/api/models/{id}/{action}", post(actions::model))
        .route("/ui/api/states/{id}/restore", post(actions::restore))
}

/// The checks every API request passes first: the site it comes from, the key, and for
/// an action, a JSON body (which no other site can send without a preflight).
pub fn guard(
    gw: &Gateway,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), Box<Response<Body>>> {
    if let Some(why) = foreign(gw, headers) {
        return Err(Box::new(refusal(
            StatusCode::FORBIDDEN,
            "FOREIGN_ORIGIN",
            why,
            "Open the page from the door's own address (or gateway.public_url); other sites may not use its API.",
        )));
    }
    if gw.authorize(headers).is_err() {
        return Err(Box::new(refusal(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the front door's key is missing or wrong".into(),
            "Enter the key (the value of the variable gateway.api_key_env names) in the page's key box, \
             or send it as `Authorization: Bearer <key>`.",
        )));
    }
    if method == Method::POST {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(Box::new(refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "INVALID_ARGUMENT",
                "an action takes `Content-Type: application/json`".into(),
                "Send the action as JSON (`{}` will do); no other site can send JSON here.",
            )));
        }
    }
    Ok(())
}

/// A refusal before any work, in the servers' error shape.
fn refusal(status: StatusCode, code: &str, message: String, suggestion: &str) -> Response<Body> {
    let body = json!({"success": false, "error": {
        "code": code, "message": message, "details": {"suggestion": suggestion},
    }});
    no_store(status, body)
}

/// Why a request comes from another site, if it does. The `Host` is checked only on a
/// door without a key (a rebinding page gets nothing from a door with one, and a door
/// with a key may be reached by any name).
fn foreign(gw: &Gateway, headers: &HeaderMap) -> Option<String> {
    if let Some(why) = gw.cross_site(headers) {
        return Some(why);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if gw.api_key.is_none() && !gw.is_own_host(host) {
        return Some(format!(
            "`{host}` is not a name of this door: use its address, localhost, or gateway.public_url"
        ));
    }
    None
}

impl Gateway {
    /// Why a browser's request comes from another site, if it does: its `Origin` is
    /// neither this door (as its `Host` names it) nor `gateway.public_url`, or its
    /// `Sec-Fetch-Site` says `cross-site`. Clients that are not browsers send neither.
    pub fn cross_site(&self, headers: &HeaderMap) -> Option<String> {
        let value = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
            return Some("the request comes from another site".into());
        }
        let origin = value(header::ORIGIN)?;
        let host = value(header::HOST).unwrap_or("");
        let own = origin.split_once("://").map(|(_, h)| h) == Some(host)
            || self
                .config
                .gateway
                .public_url
                .as_deref()
                .is_some_and(|u| u.trim_end_matches('/').eq_ignore_ascii_case(origin));
        (!own).then(|| format!("the request's origin `{origin}` is not this door"))
    }

    /// Whether `host` (a `Host` header) names this door: an IP address, `localhost`, or
    /// the host of `gateway.public_url`. Another name resolving here is a rebinding.
    pub fn is_own_host(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        if name.is_empty() || name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" {
            return true;
        }
        let public = self.config.gateway.public_url.as_deref().unwrap_or("");
        let public_host = public
            .split_once("://")
            .map_or(public, |(_, rest)| rest)
            .split(['/', ':'])
            .next()
            .unwrap_or("");
        !public_host.is_empty() && public_host.eq_ignore_ascii_case(name)
    }
}

/// A JSON answer with `"success": true` (the servers' shape), never cached.
pub fn success(value: Value) -> Response<Body> {
    no_store(StatusCode::OK, vllm_core::error::with_success(value))
}

/// An error in the servers' shape, `{"success": false, "error": {code, message,
/// details}}`, with its suggestion, at the status its code calls for.
pub fn error(e: &Error) -> Response<Body> {
    let status = match e.code() {
        "INVALID_ARGUMENT" | "UNSUPPORTED" => StatusCode::BAD_REQUEST,
        "PERMISSION_DENIED" => StatusCode::FORBIDDEN,
        "MODEL_NOT_FOUND" | "STATE_NOT_FOUND" => StatusCode::NOT_FOUND,
        "MODEL_BUSY" | "NOT_MANAGED" | "LIMIT_EXCEEDED" | "STATE_INCOMPATIBLE" => {
            StatusCode::CONFLICT
        }
        "RATE_LIMITED" => StatusCode::TOO_MANY_REQUESTS,
        "BACKEND_UNREACHABLE" | "BACKEND_TIMEOUT" | "BACKEND_UNAVAILABLE" | "BACKEND_ERROR" => {
            StatusCode::BAD_GATEWAY
        }
        "GPU_UNAVAILABLE" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut error = e.to_value();
    if let Some(Value::Object(details)) = error.get_mut("details") {
        details.insert("suggestion".into(), Value::String(e.suggestion()));
    }
    no_store(status, json!({"success": false, "error": error}))
}

/// `body` as the answer, with `Cache-Control: no-store` (the fleet changes by the second).
fn no_store(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}
