//! The rmcp `ServerHandler` every server uses: tools through the gate, resources, logging.
//!
//! A server implements [`Service`] (its state, resources and instructions) and builds a
//! [`Toolbox`]; [`McpServer`] does the protocol: versions capped at 2025-11-25 (Crush's
//! Go client pings without `_meta` after a stateless `server/discover`, which a newer
//! version would refuse), `ping`, tool calls gated, audited and enveloped, resources by
//! URI (-32002 for an unknown one), and MCP logging notifications.

// MCP logging is deprecated upstream (SEP-2577) but Crush still writes logging
// notifications into its own log, which is how operational events reach the user there.
#![allow(deprecated)]

use crate::audit;
use crate::envelope;
use crate::notify::Notifier;
use crate::service::{ResourceBody, Service};
use crate::tool::{CallCtx, Toolbox};
use futures_util::FutureExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, InitializeResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    ResourceContents, ServerCapabilities, ServerConfig, SetLevelRequestParams,
    SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler};
use serde_json::Value;
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use vllm_core::{Error, Result};

/// The newest protocol version we speak; see the module doc for why not newer.
pub const MAX_PROTOCOL: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// The MCP server for a [`Service`] `S` and its tools.
pub struct McpServer<S> {
    state: Arc<S>,
    tools: Arc<Toolbox<S>>,
    notifier: Notifier,
}

impl<S> Clone for McpServer<S> {
    fn clone(&self) -> Self {
        McpServer {
            state: self.state.clone(),
            tools: self.tools.clone(),
            notifier: self.notifier.clone(),
        }
    }
}

impl<S: Service> McpServer<S> {
    /// A server over `state` with `tools`.
    pub fn new(state: Arc<S>, tools: Toolbox<S>) -> McpServer<S> {
        let notifier = state.kit().notifier.clone();
        McpServer {
            state,
            tools: Arc::new(tools),
            notifier,
        }
    }

    /// Calls a tool as a client would, through gate, envelope and audit.
    pub async fn call(
        &self,
        name: &str,
        args: Value,
        ctx: CallCtx,
    ) -> std::result::Result<rmcp::model::CallToolResult, McpError> {
        let Some(entry) = self.tools.get(name) else {
            let known: Vec<_> = self.tools.defs().map(|d| d.name).collect();
            return Err(McpError::invalid_params(
                format!(
                    "unknown tool `{name}`; this server has: {}",
                    known.join(", ")
                ),
                None,
            ));
        };
        let kit = self.state.kit();
        let started = Instant::now();
        let tier = entry.def.tier_for(&args);
        let audited_args = vllm_core::redact::redact_json(&args);
        let outcome: Result<Value> = match kit.gate.check(name, tier) {
            Err(e) => Err(e),
            Ok(()) => {
                let fut = (entry.handler)(self.state.clone(), args, ctx);
                // A panic in a handler must become an answer, not a request left hanging.
                match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(r) => r,
                    Err(p) => {
                        let what = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "panic".into());
                        Err(Error::Internal(format!("the tool panicked: {what}")))
                    }
                }
            }
        };
        let code = match &outcome {
            Ok(_) => "OK",
            Err(e) => e.code(),
        };
        audit::record(kit, name, audited_args, code, started.elapsed()).await;
        Ok(match outcome {
            Ok(v) => envelope::success(v),
            Err(e) => envelope::failure(&e),
        })
    }
}

impl<S: Service> ServerHandler for McpServer<S> {
    fn get_info(&self) -> ServerConfig {
        let kit = self.state.kit();
        let mut caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_logging();
        if self.state.supports_subscriptions() {
            caps = caps.enable_resources_subscribe();
        }
        let caps = caps.build();
        InitializeResult::new(caps)
            .with_server_info(Implementation::new(kit.server, kit.version))
            .with_instructions(self.state.instructions())
            .with_protocol_version(MAX_PROTOCOL)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&MAX_PROTOCOL))
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let _ = self.notifier.peer_cell().set(context.peer);
        tracing::debug!("client initialized");
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _: RequestContext<RoleServer>,
    ) -> std::result::Result<(), McpError> {
        *self
            .notifier
            .min_level()
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(request.level);
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.get(name).map(|e| e.tool.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResponse, McpError> {
        let ctx = CallCtx {
            progress_token: context.meta.get_progress_token(),
            peer: context.peer.clone(),
        };
        let _ = self.notifier.peer_cell().set(context.peer);
        let args = Value::Object(request.arguments.unwrap_or_default());
        self.call(&request.name, args, ctx).await.map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListResourcesResult, McpError> {
        let mut all = self.state.resources().await;
        all.push(audit::resource());
        Ok(ListResourcesResult::with_all_items(all))
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<(), McpError> {
        if !self.state.supports_subscriptions() {
            return Err(McpError::method_not_found::<
                rmcp::model::SubscribeRequestMethod,
            >());
        }
        let _ = self.notifier.peer_cell().set(context.peer);
        self.notifier.subscriptions().insert(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<(), McpError> {
        if !self.state.supports_subscriptions() {
            return Err(McpError::method_not_found::<
                rmcp::model::UnsubscribeRequestMethod,
            >());
        }
        self.notifier.subscriptions().remove(&request.uri);
        Ok(())
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListResourceTemplatesResult, McpError> {
        let mut all = self.state.resource_templates();
        all.push(audit::template());
        Ok(ListResourceTemplatesResult::with_all_items(all))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ReadResourceResponse, McpError> {
        let uri = request.uri;
        let body = match audit::read(self.state.kit(), &uri).await {
            Some(body) => Some(body),
            None => self.state.read_resource(&uri).await,
        };
        match body {
            None => Err(McpError::resource_not_found(
                format!(
                    "unknown resource `{uri}`; resources/list and resources/templates/list show what exists"
                ),
                Some(serde_json::json!({"uri": uri})),
            )),
            Some(body) => {
                // Domain errors (a backend down, a state missing) are content in our error
                // shape, so that Crush, which shows text only, can show them.
                let body =
                    body.unwrap_or_else(|e| ResourceBody::json(&crate::envelope::error_json(&e)));
                Ok(ReadResourceResult::new(vec![
                    ResourceContents::text(body.text, uri).with_mime_type(body.mime_type),
                ])
                .into())
            }
        }
    }
}
