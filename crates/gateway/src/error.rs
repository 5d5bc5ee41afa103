//! What the front door answers when it cannot pass a request on, in the shape the
//! client's API uses: OpenAI's `{"error": {"message", "type", "code"}}`, or Anthropic's
//! `{"type": "error", "error": {"type", "message"}}` on `/v1/messages`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::time::Duration;

/// Which API's error shape a route answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

/// Why the front door answered instead of a model.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No key, or not the configured one.
    #[error(
        "a valid API key is required: send it as `Authorization: Bearer KEY` or `x-api-key: KEY`"
    )]
    Unauthorized,
    /// A browser's request from another site (its `Origin` or `Sec-Fetch-Site`).
    #[error("{0}: the front door takes no request another site's page makes")]
    ForeignOrigin(String),
    /// The body is not JSON, or names no model.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than the door takes (bytes).
    #[error("the request body is larger than {} MiB", .0 / (1024 * 1024))]
    TooLarge(usize),
    /// Nothing the fleet knows answers to this name.
    #[error("the model `{model}` does not exist; available: {}", .available.join(", "))]
    UnknownModel {
        model: String,
        available: Vec<String>,
    },
    /// Too many requests already wait for this model to start.
    #[error("{waiting} requests already wait for `{model}` to start (gateway.max_queued_requests)")]
    QueueFull { model: String, waiting: u32 },
    /// The model did not serve within `gateway.load_timeout_seconds`.
    #[error("`{model}` did not start within {} s (gateway.load_timeout_seconds); it may still be loading", .after.as_secs())]
    LoadTimeout { model: String, after: Duration },
    /// The start failed (or was refused): the lifecycle's own error, code and reason.
    #[error("`{model}` could not be started: {source}")]
    Start {
        model: String,
        #[source]
        source: std::sync::Arc<vllm_core::Error>,
    },
    /// The model's server could not be reached or broke off.
    #[error("the server of `{model}` did not answer: {message}")]
    Upstream { model: String, message: String },
}

impl GatewayError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Unauthorized => StatusCode::UNAUTHORIZED,
            GatewayError::ForeignOrigin(_) => StatusCode::FORBIDDEN,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UnknownModel { .. } => StatusCode::NOT_FOUND,
            GatewayError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Start { source, .. } => match source.code() {
                // Refusals of the request itself, not failures of the start.
                "PERMISSION_DENIED" => StatusCode::FORBIDDEN,
                "INVALID_ARGUMENT" => StatusCode::BAD_REQUEST,
                "RATE_LIMITED" => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            GatewayError::LoadTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Upstream { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// A stable code: the lifecycle's for a failed start, else the gateway's own.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Unauthorized => "invalid_api_key",
            GatewayError::ForeignOrigin(_) => "foreign_origin",
            GatewayError::BadRequest(_) => "invalid_request",
            GatewayError::TooLarge(_) => "request_too_large",
            GatewayError::UnknownModel { .. } => "model_not_found",
            GatewayError::QueueFull { .. } => "queue_full",
            GatewayError::LoadTimeout { .. } => "load_timeout",
            GatewayError::Start { source, .. } => source.code(),
            GatewayError::Upstream { .. } => "upstream_unavailable",
        }
    }

    /// Seconds a client should wait before asking again, when that helps.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::QueueFull { .. } => Some(5),
            GatewayError::LoadTimeout { .. } => Some(10),
            _ => None,
        }
    }

    /// OpenAI's `type` and Anthropic's for this error.
    fn types(&self) -> (&'static str, &'static str) {
        match self {
            GatewayError::Unauthorized => ("invalid_request_error", "authentication_error"),
            GatewayError::ForeignOrigin(_) => ("permission_error", "permission_error"),
            GatewayError::BadRequest(_) => ("invalid_request_error", "invalid_request_error"),
            GatewayError::TooLarge(_) => ("invalid_request_error", "request_too_large"),
            GatewayError::UnknownModel { .. } => ("invalid_request_error", "not_found_error"),
            GatewayError::QueueFull { .. } => ("rate_limit_error", "rate_limit_error"),
            GatewayError::Start { .. } if self.status() == StatusCode::FORBIDDEN => {
                ("permission_error", "permission_error")
            }
            GatewayError::Start { .. } if self.status() == StatusCode::BAD_REQUEST => {
                ("invalid_request_error", "invalid_request_error")
            }
            GatewayError::LoadTimeout { .. } | GatewayError::Start { .. } => {
                ("service_unavailable", "overloaded_error")
            }
            GatewayError::Upstream { .. } => ("api_error", "api_error"),
        }
    }

    /// The error object, with what a client or a person needs to act on it: the models
    /// there are, the start's classified reason and details.
    fn object(&self, type_: &str) -> Value {
        let mut e = json!({"message": self.to_string(), "type": type_, "code": self.code()});
        match self {
            GatewayError::UnknownModel { available, .. } => {
                e["param"] = json!("model");
                e["available"] = json!(available);
            }
            GatewayError::Start { source, .. } => {
                let mut details = source.details();
                if let Some(reason) = details.remove("reason") {
                    e["reason"] = reason;
                }
                e["details"] = Value::Object(details);
            }
            _ => {}
        }
        e
    }

    /// The body in `dialect`'s shape.
    pub fn body(&self, dialect: Dialect) -> Value {
        let (openai, anthropic) = self.types();
        match dialect {
            Dialect::OpenAi => json!({"error": self.object(openai)}),
            Dialect::Anthropic => json!({"type": "error", "error": self.object(anthropic)}),
        }
    }

    /// The full response in `dialect`'s shape.
    pub fn response(&self, dialect: Dialect) -> Response {
        let mut r = (self.status(), axum::Json(self.body(dialect))).into_response();
        if let Some(s) = self.retry_after() {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }

    /// The error as one SSE event, for a stream that already answered 200.
    pub fn sse_event(&self, dialect: Dialect) -> String {
        match dialect {
            Dialect::OpenAi => format!("data: {}\n\n", self.body(dialect)),
            Dialect::Anthropic => format!("event: error\ndata: {}\n\n", self.body(dialect)),
        }
    }
}

/// The gateway's results.
pub type Result<T, E = GatewayError> = std::result::Result<T, E>;
