//! vllm-mcp-kit: the MCP plumbing the three servers share, and the only place besides the
//! server crates that knows rmcp.
//!
//! Read in this order:
//! - [`tool`]: the tool registry (typed handlers, inline schemas, tiers, annotations).
//! - [`envelope`]: answers and errors as MCP results (JSON in the text, structured copies).
//! - [`gate`]: the permission gate checked before any side effect.
//! - [`audit`]: every call recorded in the store and in tracing.
//! - [`context`]: [`Kit`], what every server holds.
//! - [`service`]: [`Service`], what a server provides besides its tools.
//! - [`notify`]: log and resource-updated notifications to the client.
//! - [`server`]: [`McpServer`], the `ServerHandler` over a [`Service`].
//! - [`health`]: the `server-health` tool.
//! - [`page`]: bounded list answers (limit and cursor).
//! - [`runtime`]: flags, tracing to stderr, stdio until EOF.
//! - [`leased`]: a listener served by the holder of a duty's lease (one instance of many).

pub mod audit;
pub mod context;
pub mod envelope;
pub mod framing;
pub mod gate;
pub mod health;
pub mod leased;
pub mod notify;
pub mod page;
pub mod runtime;
pub mod server;
pub mod service;
pub mod tool;
pub mod uri;

pub use context::Kit;
pub use server::McpServer;
pub use service::{ResourceBody, Service};
pub use tool::{CallCtx, NoParams, ToolDef, Toolbox};
