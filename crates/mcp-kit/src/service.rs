//! What a server provides besides its tools: its context, instructions and resources.

use crate::context::Kit;
use rmcp::model::{Resource, ResourceTemplate};
use serde_json::Value;
use std::future::Future;
use vllm_core::Result;

/// A resource's content.
#[derive(Debug, Clone)]
pub struct ResourceBody {
    pub text: String,
    pub mime_type: &'static str,
}

impl ResourceBody {
    /// A JSON body.
    pub fn json(v: &Value) -> ResourceBody {
        ResourceBody {
            text: serde_json::to_string_pretty(v).unwrap_or_default(),
            mime_type: "application/json",
        }
    }
}

/// What a server provides besides its tools.
pub trait Service: Send + Sync + 'static {
    /// The shared context.
    fn kit(&self) -> &Kit;

    /// Instructions the client may show the model.
    fn instructions(&self) -> String;

    /// Concrete resources: Crush lists only these (it ignores templates).
    fn resources(&self) -> impl Future<Output = Vec<Resource>> + Send {
        async { Vec::new() }
    }

    /// URI templates, for clients that use them.
    fn resource_templates(&self) -> Vec<ResourceTemplate> {
        Vec::new()
    }

    /// Reads a resource: `None` when the URI is unknown (the client gets -32002).
    fn read_resource(
        &self,
        uri: &str,
    ) -> impl Future<Output = Option<Result<ResourceBody>>> + Send {
        let _ = uri;
        async { None }
    }

    /// Whether clients may subscribe to resources (`resources.subscribe`): the server
    /// then calls [`Notifier::resource_updated`] when a resource changes.
    fn supports_subscriptions(&self) -> bool {
        false
    }
}
