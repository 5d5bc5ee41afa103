//! MCP notifications to the connected client: log messages at the level it asked for,
//! and `resources/updated` for the resources it subscribed to.

// MCP logging is deprecated upstream (SEP-2577) but Crush still writes logging
// notifications into its own log, which is how operational events reach the user there.
#![allow(deprecated)]

use rmcp::model::{
    LoggingLevel, LoggingMessageNotificationParam, ResourceUpdatedNotificationParam,
};
use rmcp::service::{Peer, RoleServer};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};

/// Sends MCP logging notifications to the connected client, when there is one and the
/// level is at or above what the client asked for (`info` until it says otherwise).
#[derive(Clone, Default)]
pub struct Notifier {
    peer: Arc<OnceLock<Peer<RoleServer>>>,
    min_level: Arc<Mutex<Option<LoggingLevel>>>,
    /// Resource URIs the client subscribed to.
    subscribed: Arc<Mutex<BTreeSet<String>>>,
}

fn rank(l: LoggingLevel) -> u8 {
    match l {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

impl Notifier {
    /// Sends `data` as a log message from `logger` (e.g. `model-manager`).
    pub async fn log(&self, level: LoggingLevel, logger: &str, data: Value) {
        let min = self
            .min_level
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(LoggingLevel::Info);
        if rank(level) < rank(min) {
            return;
        }
        if let Some(peer) = self.peer.get() {
            let p = LoggingMessageNotificationParam::new(level, data).with_logger(logger);
            let _ = peer.notify_logging_message(p).await;
        }
    }

    /// An operational event at `info` (model loaded, ...).
    pub async fn info(&self, logger: &str, data: Value) {
        self.log(LoggingLevel::Info, logger, data).await
    }

    /// An event that needs attention (alert fired, model failed, ...).
    pub async fn warning(&self, logger: &str, data: Value) {
        self.log(LoggingLevel::Warning, logger, data).await
    }

    /// Sends `notifications/resources/updated` for `uri` when the client subscribed to it.
    pub async fn resource_updated(&self, uri: &str) {
        if !self.is_subscribed(uri) {
            return;
        }
        if let Some(peer) = self.peer.get() {
            let _ = peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                .await;
        }
    }

    /// Whether the client subscribed to `uri`.
    pub fn is_subscribed(&self, uri: &str) -> bool {
        self.subscriptions().contains(uri)
    }

    pub(crate) fn subscriptions(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.subscribed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the server puts the client's peer once it initialises.
    pub(crate) fn peer_cell(&self) -> &OnceLock<Peer<RoleServer>> {
        &self.peer
    }

    /// The level the client asked for with `logging/setLevel`, if it did.
    pub(crate) fn min_level(&self) -> &Mutex<Option<LoggingLevel>> {
        &self.min_level
    }

    /// The connected client, once initialised.
    pub fn peer(&self) -> Option<&Peer<RoleServer>> {
        self.peer.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_remembered_per_uri() {
        let n = Notifier::default();
        assert!(!n.is_subscribed("vllm://alerts/active"));
        n.subscriptions().insert("vllm://alerts/active".into());
        let clone = n.clone();
        assert!(clone.is_subscribed("vllm://alerts/active"));
        assert!(!clone.is_subscribed("vllm://alerts/history"));
        clone.subscriptions().remove("vllm://alerts/active");
        assert!(!n.is_subscribed("vllm://alerts/active"));
    }
}
