//! The cluster's nodes as Ray's state API lists them (`GET /api/v0/nodes`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One node of the cluster.
#[derive(Debug, Clone, Deserialize)]
pub struct Node {
    pub node_id: String,
    /// The address the node registered with (`ray start --node-ip-address`).
    pub node_ip: String,
    #[serde(default)]
    pub is_head_node: bool,
    /// `ALIVE` or `DEAD`.
    pub state: String,
    /// Why a dead node died, in Ray's words.
    #[serde(default)]
    pub state_message: Option<String>,
    /// `CPU`, `GPU`, `memory` (bytes), `node:<ip>`... as Ray counts them.
    #[serde(default)]
    pub resources_total: BTreeMap<String, f64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Node {
    pub fn is_alive(&self) -> bool {
        self.state == "ALIVE"
    }

    /// GPUs Ray counts on the node.
    pub fn gpus(&self) -> u64 {
        self.resources_total.get("GPU").copied().unwrap_or(0.0) as u64
    }

    /// Memory Ray may hand out on the node, in MiB.
    pub fn memory_mb(&self) -> u64 {
        (self.resources_total.get("memory").copied().unwrap_or(0.0) / 1_048_576.0) as u64
    }
}

/// The nodes out of the state API's envelope: `{"data": {"result": {"result": [...]}}}`.
pub(crate) fn from_state_api(v: &serde_json::Value) -> Result<Vec<Node>> {
    let list = v
        .pointer("/data/result/result")
        .cloned()
        .ok_or_else(|| Error::Decode {
            what: "the node list".into(),
            reason: format!("no data.result.result in {}", short(v)),
        })?;
    serde_json::from_value(list).map_err(|e| Error::Decode {
        what: "the node list".into(),
        reason: e.to_string(),
    })
}

fn short(v: &serde_json::Value) -> String {
    v.to_string().chars().take(300).collect()
}
