//! The one error type of vllm-core, with the stable codes that reach MCP clients.
//!
//! Every failure an operation can report is a variant here. [`Error::code`] is the
//! stable string a client may branch on (documented in `docs/ERRORS.md`),
//! [`Error::details`] the machine-readable context, always with a `suggestion` a person
//! can act on, worded for any front end (it names no MCP tool or resource).
//! [`Error::to_value`] is the error as a value to embed in a record or a report. The
//! envelope (`{"success":false,"error":{...}}`) and suggestions that name tools belong
//! to the MCP edge (`vllm_mcp_kit::envelope`).

use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// The store's failures keep their codes: each variant is ours of the same name.
impl From<vllm_store::StoreError> for Error {
    fn from(e: vllm_store::StoreError) -> Error {
        use vllm_store::StoreError as S;
        match e {
            S::Storage { message, path } => Error::Storage { message, path },
            S::InvalidArgument { field, reason } => Error::InvalidArgument { field, reason },
            S::Internal(message) => Error::Internal(message),
        }
    }
}

/// Every SQLite failure is a storage error, described as the store describes it.
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        vllm_store::StoreError::from(e).into()
    }
}

/// A transaction's closure may fail with any of our errors; the store completes a
/// storage one with its path.
impl vllm_store::FromStoreError for Error {
    fn storage_failure(&mut self) -> Option<(&mut String, &mut Option<PathBuf>)> {
        match self {
            Error::Storage { message, path } => Some((message, path)),
            _ => None,
        }
    }
}

/// A `BACKEND_ERROR` with `kind: "MalformedMetrics"`: the server answered 200 with a body
/// that is not valid exposition text (`url` is filled in by the caller that knows it).
impl From<vllm_prom::ParseProblem> for Error {
    fn from(p: vllm_prom::ParseProblem) -> Error {
        Error::BackendError {
            url: String::new(),
            status: 200,
            message: p.to_string(),
            kind: Some("MalformedMetrics".into()),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a `vllm serve` start failed, as classified from its log.
///
/// Rendered as `details.reason` of a `MODEL_LOAD_FAILED` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoadFailure {
    InsufficientGpuMemory,
    PortInUse,
    ModelPathNotFound,
    EmptyModelDirectory,
    MaxModelLenTooLarge,
    OutOfMemory,
    InsufficientKvCache,
    UnknownFlag,
    HubUnreachable,
    ProcessExited,
    Unknown,
}

impl LoadFailure {
    /// Every classification, in the order `docs/ERRORS.md` lists them.
    pub const ALL: [LoadFailure; 11] = [
        LoadFailure::InsufficientGpuMemory,
        LoadFailure::PortInUse,
        LoadFailure::ModelPathNotFound,
        LoadFailure::EmptyModelDirectory,
        LoadFailure::MaxModelLenTooLarge,
        LoadFailure::OutOfMemory,
        LoadFailure::InsufficientKvCache,
        LoadFailure::UnknownFlag,
        LoadFailure::HubUnreachable,
        LoadFailure::ProcessExited,
        LoadFailure::Unknown,
    ];

    /// The stable string, as it appears in `details.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadFailure::InsufficientGpuMemory => "INSUFFICIENT_GPU_MEMORY",
            LoadFailure::PortInUse => "PORT_IN_USE",
            LoadFailure::ModelPathNotFound => "MODEL_PATH_NOT_FOUND",
            LoadFailure::EmptyModelDirectory => "EMPTY_MODEL_DIRECTORY",
            LoadFailure::MaxModelLenTooLarge => "MAX_MODEL_LEN_TOO_LARGE",
            LoadFailure::OutOfMemory => "OUT_OF_MEMORY",
            LoadFailure::InsufficientKvCache => "INSUFFICIENT_KV_CACHE",
            LoadFailure::UnknownFlag => "UNKNOWN_FLAG",
            LoadFailure::HubUnreachable => "HUB_UNREACHABLE",
            LoadFailure::ProcessExited => "PROCESS_EXITED",
            LoadFailure::Unknown => "UNKNOWN",
        }
    }
}

/// Every failure vllm-core reports. See `docs/ERRORS.md` for when each happens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is missing, malformed or out of range.
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument { field: String, reason: String },

    /// The model is known neither to the catalog, the cache, the store nor an endpoint.
    #[error("model `{0}` not found")]
    ModelNotFound(String),

    /// A load was refused before launch or the launched server failed to start.
    #[error("model `{model}` failed to load: {message}")]
    ModelLoadFailed {
        model: String,
        reason: LoadFailure,
        message: String,
        /// Extra context (`required_mb`, `available_mb`, `limit`, `log_tail`, ...).
        details: Map<String, Value>,
    },

    /// The model is serving requests and the operation would cut them off.
    #[error("model `{model}` is busy: {reason}")]
    ModelBusy { model: String, reason: String },

    /// The model is served by a vLLM we did not start.
    #[error("model `{0}` is served by an attached endpoint that vllm-mcp did not start")]
    NotManaged(String),

    /// The backend or platform cannot do this (e.g. sleep mode is off).
    #[error("unsupported: {what}")]
    Unsupported { what: String, suggestion: String },

    /// No TCP connection could be made (refused, DNS, TLS handshake).
    #[error("cannot reach vLLM at {url}: {message}")]
    BackendUnreachable { url: String, message: String },

    /// The launcher's cluster (Ray's dashboard) cannot be reached or did not answer in
    /// time: nothing can be launched, stopped or observed there until it is back.
    #[error("the Ray cluster at {address} is unavailable: {message}")]
    ClusterUnavailable { address: String, message: String },

    /// The backend accepted the connection but did not answer in time.
    #[error("vLLM at {url} did not answer within {after:?}")]
    BackendTimeout { url: String, after: Duration },

    /// The backend answered with an error status; vLLM's own message is carried.
    #[error("vLLM at {url} answered {status}: {message}")]
    BackendError {
        url: String,
        status: u16,
        message: String,
        /// vLLM's `error.type`, when its body had one.
        kind: Option<String>,
    },

    /// NVML is not available (no driver, no GPU) or failed.
    #[error("GPU information unavailable: {0}")]
    GpuUnavailable(String),

    /// No saved state matches.
    #[error("state `{0}` not found")]
    StateNotFound(String),

    /// A saved state was written by a newer format or an incompatible setup.
    #[error("state `{state}` is incompatible: {reason}")]
    StateIncompatible { state: String, reason: String },

    /// A saved state failed its checksum or could not be decoded.
    #[error("state `{state}` is corrupted: {reason}")]
    StateCorrupted { state: String, reason: String },

    /// A configured limit would be exceeded.
    #[error("limit `{limit}` exceeded: {message}")]
    LimitExceeded { limit: String, message: String },

    /// Too many calls in too short a time.
    #[error("rate limited by `{limit}`: retry in {retry_after_s} s")]
    RateLimited { limit: String, retry_after_s: u64 },

    /// The permission gate refused the call before any side effect.
    #[error("permission denied for `{tool}`: {reason}")]
    PermissionDenied { tool: String, reason: String },

    /// The SQLite store failed (disk full, read-only, locked past the timeout, ...).
    #[error("storage error: {message}")]
    Storage {
        message: String,
        path: Option<PathBuf>,
    },

    /// The configuration file or environment is invalid.
    #[error("invalid configuration{}: `{key}`: {message}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Config {
        path: Option<PathBuf>,
        key: String,
        message: String,
    },

    /// A bug or an unexpected condition; never expected in normal operation.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Storage`] from anything displayable.
    pub fn storage(message: impl std::fmt::Display) -> Error {
        Error::Storage {
            message: message.to_string(),
            path: None,
        }
    }

    /// The stable code clients may branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Error::ModelNotFound(_) => "MODEL_NOT_FOUND",
            Error::ModelLoadFailed { .. } => "MODEL_LOAD_FAILED",
            Error::ModelBusy { .. } => "MODEL_BUSY",
            Error::NotManaged(_) => "NOT_MANAGED",
            Error::Unsupported { .. } => "UNSUPPORTED",
            Error::BackendUnreachable { .. } => "BACKEND_UNREACHABLE",
            Error::ClusterUnavailable { .. } => "BACKEND_UNAVAILABLE",
            Error::BackendTimeout { .. } => "BACKEND_TIMEOUT",
            Error::BackendError { .. } => "BACKEND_ERROR",
            Error::GpuUnavailable(_) => "GPU_UNAVAILABLE",
            Error::StateNotFound(_) => "STATE_NOT_FOUND",
            Error::StateIncompatible { .. } => "STATE_INCOMPATIBLE",
            Error::StateCorrupted { .. } => "STATE_CORRUPTED",
            Error::LimitExceeded { .. } => "LIMIT_EXCEEDED",
            Error::RateLimited { .. } => "RATE_LIMITED",
            Error::PermissionDenied { .. } => "PERMISSION_DENIED",
            Error::Storage { .. } => "STORAGE_ERROR",
            Error::Config { .. } => "CONFIG_INVALID",
            Error::Internal(_) => "INTERNAL",
        }
    }

    /// What a person can do about it.
    pub fn suggestion(&self) -> String {
        match self {
            Error::InvalidArgument { field, .. } => {
                format!("Correct `{field}` and ask again.")
            }
            Error::ModelNotFound(_) => {
                "List the known models, or give a Hugging Face repo id or an absolute model directory.".into()
            }
            Error::ModelLoadFailed { reason, .. } => match reason {
                LoadFailure::InsufficientGpuMemory => {
                    "Reduce tensor_parallel_size or unload other models".into()
                }
                LoadFailure::PortInUse => "Free the port or configure another launcher port range.".into(),
                LoadFailure::ModelPathNotFound => {
                    "Check the model path or repo id; local paths must be absolute.".into()
                }
                LoadFailure::EmptyModelDirectory => {
                    "The directory holds no config.json or weights: point at a complete model directory.".into()
                }
                LoadFailure::MaxModelLenTooLarge => {
                    "Lower max_model_len to at most the model's limit given in details.limit.".into()
                }
                LoadFailure::OutOfMemory | LoadFailure::InsufficientKvCache => {
                    "Lower max_model_len or gpu_memory_utilization, use quantization, or unload other models.".into()
                }
                LoadFailure::UnknownFlag => {
                    "Remove the flag from extra_args; `vllm serve --help` lists the flags this vLLM knows.".into()
                }
                LoadFailure::HubUnreachable => {
                    "Check the repo id, network access and HF_TOKEN for gated models, or use a local directory.".into()
                }
                LoadFailure::ProcessExited | LoadFailure::Unknown => {
                    "Read the model's log for the cause.".into()
                }
            },
            Error::ModelBusy { .. } => {
                "Wait for the running requests to finish, or force the unload.".into()
            }
            Error::NotManaged(_) => {
                "Stop that vLLM server where it was started, or put it to sleep if its sleep mode is on.".into()
            }
            Error::Unsupported { suggestion, .. } => suggestion.clone(),
            Error::BackendUnreachable { .. } => {
                "Check that the vLLM server is running and the endpoint's base_url in the config is right.".into()
            }
            Error::ClusterUnavailable { .. } => {
                "Check that the Ray cluster's dashboard answers at [launcher.ray] address (ray status on the head node), or set [launcher] backend = \"local\".".into()
            }
            Error::BackendTimeout { .. } => {
                "The server may be overloaded or still starting: retry later or raise the request timeout in the config.".into()
            }
            Error::BackendError { status, .. } if *status == 401 => {
                "Set the endpoint's api_key_env in the config to a variable holding vLLM's --api-key.".into()
            }
            Error::BackendError { .. } => "See the message from vLLM; the request may need different arguments.".into(),
            Error::GpuUnavailable(_) => {
                "No NVIDIA driver or GPU is visible to this process; GPU figures are unavailable, everything else keeps working.".into()
            }
            Error::StateNotFound(_) => "List the saved states to see which exist.".into(),
            Error::StateIncompatible { .. } => {
                "Load it with the vllm-mcp version that saved it, or save a new state.".into()
            }
            Error::StateCorrupted { .. } => {
                "Load an earlier state of this session; this one cannot be restored.".into()
            }
            Error::LimitExceeded { .. } => {
                "Unload something first or raise the limit in the config's [limits] section.".into()
            }
            Error::RateLimited { limit, retry_after_s } => format!(
                "Wait {retry_after_s} s and ask again, or raise `{limit}` in the config."
            ),
            Error::PermissionDenied { .. } => {
                "The config's [security] section forbids this; ask whoever runs vllm-mcp to allow it.".into()
            }
            Error::Storage { .. } => {
                "Check free disk space and that the data directory is writable; nothing was half-written.".into()
            }
            Error::Config { key, .. } => format!("Fix `{key}`; docs/CONFIG.md lists every key."),
            Error::Internal(_) => "This is a bug: please report it with the server's stderr log.".into(),
        }
    }

    /// Machine-readable context for `error.details`, `suggestion` included.
    pub fn details(&self) -> Map<String, Value> {
        let mut d = Map::new();
        match self {
            Error::InvalidArgument { field, reason } => {
                d.insert("field".into(), json!(field));
                d.insert("reason".into(), json!(reason));
            }
            Error::ModelNotFound(m) | Error::NotManaged(m) => {
                d.insert("model_id".into(), json!(m));
            }
            Error::ModelLoadFailed {
                model,
                reason,
                details,
                ..
            } => {
                d.insert("model_id".into(), json!(model));
                d.insert("reason".into(), json!(reason.as_str()));
                d.extend(details.clone());
            }
            Error::ModelBusy { model, reason } => {
                d.insert("model_id".into(), json!(model));
                d.insert("reason".into(), json!(reason));
            }
            Error::Unsupported { what, .. } => {
                d.insert("what".into(), json!(what));
            }
            Error::BackendUnreachable { url, .. } => {
                d.insert("url".into(), json!(url));
            }
            Error::ClusterUnavailable { address, .. } => {
                d.insert("address".into(), json!(address));
            }
            Error::BackendTimeout { url, after } => {
                d.insert("url".into(), json!(url));
                d.insert("timeout_seconds".into(), json!(after.as_secs_f64()));
            }
            Error::BackendError {
                url, status, kind, ..
            } => {
                d.insert("url".into(), json!(url));
                d.insert("status".into(), json!(status));
                if let Some(k) = kind {
                    d.insert("vllm_error_type".into(), json!(k));
                }
            }
            Error::StateNotFound(s) => {
                d.insert("state".into(), json!(s));
            }
            Error::StateIncompatible { state, reason }
            | Error::StateCorrupted { state, reason } => {
                d.insert("state".into(), json!(state));
                d.insert("reason".into(), json!(reason));
            }
            Error::LimitExceeded { limit, .. } => {
                d.insert("limit".into(), json!(limit));
            }
            Error::RateLimited {
                limit,
                retry_after_s,
            } => {
                d.insert("limit".into(), json!(limit));
                d.insert("retry_after_seconds".into(), json!(retry_after_s));
            }
            Error::PermissionDenied { tool, reason } => {
                d.insert("tool".into(), json!(tool));
                d.insert("reason".into(), json!(reason));
            }
            Error::Storage { path, .. } => {
                if let Some(p) = path {
                    d.insert("path".into(), json!(p.display().to_string()));
                }
            }
            Error::Config { path, key, .. } => {
                d.insert("key".into(), json!(key));
                if let Some(p) = path {
                    d.insert("file".into(), json!(p.display().to_string()));
                }
            }
            Error::GpuUnavailable(_) | Error::Internal(_) => {}
        }
        d.entry("suggestion")
            .or_insert_with(|| json!(self.suggestion()));
        d
    }

    /// The error of a refusal the core made for some caller (`PERMISSION_DENIED` with no
    /// `tool`), attributed to the front-end call `tool` that asked; any other error as
    /// it is.
    pub fn attributed_to(self, tool: &str) -> Error {
        match self {
            Error::PermissionDenied { tool: t, reason } if t.is_empty() => {
                Error::PermissionDenied {
                    tool: tool.to_string(),
                    reason,
                }
            }
            other => other,
        }
    }

    /// The error as a value to embed in a record or a report: `{code, message, details}`
    /// (the `error` object of the spec's shape, without the envelope around it).
    pub fn to_value(&self) -> Value {
        json!({
            "code": self.code(),
            "message": self.to_string(),
            "details": Value::Object(self.details()),
        })
    }
}

/// A successful answer in every front end's shape: `"success": true` first, then an
/// object answer's fields (any other answer as `result`). The MCP servers' envelope and
/// the front door's page both use it.
pub fn with_success(value: Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut out = Map::with_capacity(m.len() + 1);
            out.insert("success".into(), Value::Bool(true));
            out.extend(m.into_iter().filter(|(k, _)| k != "success"));
            Value::Object(out)
        }
        other => json!({"success": true, "result": other}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_shape() {
        let mut details = Map::new();
        details.insert("required_mb".into(), json!(32768));
        details.insert("available_mb".into(), json!(16384));
        let e = Error::ModelLoadFailed {
            model: "m".into(),
            reason: LoadFailure::InsufficientGpuMemory,
            message: "Insufficient GPU memory to load model".into(),
            details,
        };
        let v = e.to_value();
        assert_eq!(v["code"], "MODEL_LOAD_FAILED");
        assert_eq!(v["details"]["reason"], "INSUFFICIENT_GPU_MEMORY");
        assert_eq!(v["details"]["required_mb"], 32768);
        assert_eq!(
            v["details"]["suggestion"],
            "Reduce tensor_parallel_size or unload other models"
        );
    }

    /// The core's suggestions are for any front end: no MCP tool or resource named.
    #[test]
    fn suggestions_name_no_mcp_tool_or_resource() {
        let errors = [
            Error::invalid("x", "y"),
            Error::ModelNotFound("m".into()),
            Error::NotManaged("m".into()),
            Error::StateNotFound("s".into()),
            Error::ModelBusy {
                model: "m".into(),
                reason: "r".into(),
            },
            Error::ModelLoadFailed {
                model: "m".into(),
                reason: LoadFailure::ProcessExited,
                message: "exited".into(),
                details: Map::new(),
            },
        ];
        for e in errors {
            let s = e.suggestion();
            for word in [
                "vllm://",
                "list-models",
                "sleep-model",
                "force: true",
                "the tool",
            ] {
                assert!(!s.contains(word), "{e:?}: {s}");
            }
        }
    }

    #[test]
    fn malformed_metrics_are_a_backend_error_naming_the_line() {
        let err = Error::from(vllm_prom::parse("a 1\nb 2\nc{ 3\n").unwrap_err());
        assert_eq!(err.code(), "BACKEND_ERROR");
        assert!(
            err.to_string().contains("malformed metrics at line 3"),
            "{err}"
        );
        match err {
            Error::BackendError { status, kind, .. } => {
                assert_eq!(status, 200);
                assert_eq!(kind.as_deref(), Some("MalformedMetrics"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_error_has_a_suggestion() {
        let errors = [
            Error::invalid("x", "y"),
            Error::GpuUnavailable("no driver".into()),
            Error::RateLimited {
                limit: "limits.gpu_work_per_minute".into(),
                retry_after_s: 3,
            },
            Error::storage("disk full"),
        ];
        for e in errors {
            let d = e.details();
            assert!(
                d["suggestion"].as_str().is_some_and(|s| !s.is_empty()),
                "{e:?}"
            );
        }
    }
}
