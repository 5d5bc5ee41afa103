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

/// What a node's agent reports of its machine now (`GET /nodes?view=summary`): memory,
/// and each GPU with its memory, utilisation and temperature.
#[derive(Debug, Clone, Default)]
pub struct NodeStats {
    pub node_id: String,
    pub ip: String,
    pub hostname: String,
    pub alive: bool,
    pub mem_total_mb: u64,
    pub mem_available_mb: u64,
    /// The node's resources as Ray counts them (custom ones included).
    pub resources_total: BTreeMap<String, f64>,
    pub gpus: Vec<NodeGpu>,
}

/// One GPU of a node, as Ray's reporter agent reads it (NVML on NVIDIA).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGpu {
    pub index: u32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uuid: Option<String>,
    /// Percent.
    #[serde(default, alias = "utilization_gpu")]
    pub utilization_gpu: Option<f64>,
    /// MiB.
    #[serde(default, alias = "memory_used")]
    pub memory_used: Option<u64>,
    /// MiB.
    #[serde(default, alias = "memory_total")]
    pub memory_total: Option<u64>,
    #[serde(default, alias = "temperature_c")]
    pub temperature_c: Option<u32>,
    #[serde(default, alias = "power_mw")]
    pub power_mw: Option<u64>,
}

/// The node stats out of the dashboard's `{"data": {"summary": [...]}}`.
pub(crate) fn stats_from_summary(v: &serde_json::Value) -> Result<Vec<NodeStats>> {
    let list = v
        .pointer("/data/summary")
        .and_then(|s| s.as_array())
        .ok_or_else(|| Error::Decode {
            what: "the node stats".into(),
            reason: format!("no data.summary in {}", short(v)),
        })?;
    Ok(list.iter().map(one_stats).collect())
}

fn one_stats(n: &serde_json::Value) -> NodeStats {
    let mib = |x: Option<&serde_json::Value>| {
        x.and_then(serde_json::Value::as_f64)
            .map_or(0, |b| (b / 1_048_576.0) as u64)
    };
    let raylet = &n["raylet"];
    NodeStats {
        node_id: raylet["nodeId"].as_str().unwrap_or_default().to_string(),
        ip: n["ip"].as_str().unwrap_or_default().to_string(),
        hostname: n["hostname"].as_str().unwrap_or_default().to_string(),
        alive: raylet["state"].as_str() == Some("ALIVE"),
        // [total, available, percent, used], in bytes.
        mem_total_mb: mib(n["mem"].get(0)),
        mem_available_mb: mib(n["mem"].get(1)),
        resources_total: serde_json::from_value(raylet["resourcesTotal"].clone())
            .unwrap_or_default(),
        gpus: serde_json::from_value(n["gpus"].clone()).unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_stats_read_memory_and_gpus_as_the_dashboard_sends_them() {
        // The shape of Ray 2.60's /nodes?view=summary (a CPU node captured here; the GPU
        // entry in the reporter's camelCase, as its GpuUtilizationInfo is sent).
        let v = serde_json::json!({"result": true, "data": {"summary": [{
            "ip": "127.0.0.3", "hostname": "h", "mem": [25276194816u64, 24690106368u64, 2.3, 586088448u64],
            "gpus": [{"index": 0, "name": "NVIDIA H100", "uuid": "GPU-1", "utilizationGpu": 37.0,
                      "memoryUsed": 1024, "memoryTotal": 81559, "temperatureC": 41, "processesPids": null}],
            "raylet": {"nodeId": "abc", "state": "ALIVE", "resourcesTotal": {"CPU": 2.0, "worker": 1.0}}
        }]}});
        let stats = stats_from_summary(&v).unwrap();
        let n = &stats[0];
        assert_eq!(
            (n.ip.as_str(), n.node_id.as_str(), n.alive),
            ("127.0.0.3", "abc", true)
        );
        assert_eq!((n.mem_total_mb, n.mem_available_mb), (24105, 23546));
        assert_eq!(n.resources_total["worker"], 1.0);
        assert_eq!(n.gpus[0].memory_total, Some(81559));
        assert_eq!(n.gpus[0].utilization_gpu, Some(37.0));
        assert_eq!(n.gpus[0].temperature_c, Some(41));
    }
}
