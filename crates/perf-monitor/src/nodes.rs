//! The Ray cluster's nodes in the monitor's answers (`[launcher] backend = "ray"`): each
//! node's memory and GPUs as its agent reports them, labelled by node, beside this host's.

use schemars::JsonSchema;
use serde::Serialize;
use vllm_fleet::launcher::ray::RayBackend;
use vllm_mcp_kit::Kit;

/// One node of the cluster.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NodeFigures {
    /// The node's address (what list-models' `node` says).
    pub node: String,
    pub hostname: String,
    pub node_id: String,
    pub memory_total_mb: u64,
    pub memory_available_mb: u64,
    pub gpus: Vec<NodeGpuFigures>,
}

/// One GPU of a node.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NodeGpuFigures {
    pub id: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub memory_used_mb: Option<u64>,
    pub memory_total_mb: Option<u64>,
    /// Fraction (0..1) of the last sample period a kernel was running.
    pub utilization: Option<f64>,
    pub temperature_c: Option<u32>,
}

/// The cluster's nodes now; `None` off Ray, `Err` (words for a note) when the dashboard
/// cannot be asked.
pub async fn of_cluster(kit: &Kit) -> Option<Result<Vec<NodeFigures>, String>> {
    let ray = match RayBackend::from_config(&kit.config) {
        Ok(Some(ray)) => ray,
        Ok(None) => return None,
        Err(e) => return Some(Err(e.to_string())),
    };
    Some(
        ray.node_stats()
            .await
            .map(|nodes| {
                nodes
                    .into_iter()
                    .map(|n| NodeFigures {
                        node: n.ip,
                        hostname: n.hostname,
                        node_id: n.node_id,
                        memory_total_mb: n.mem_total_mb,
                        memory_available_mb: n.mem_available_mb,
                        gpus: n
                            .gpus
                            .into_iter()
                            .map(|g| NodeGpuFigures {
                                id: g.index,
                                name: g.name,
                                uuid: g.uuid,
                                memory_used_mb: g.memory_used,
                                memory_total_mb: g.memory_total,
                                utilization: g.utilization_gpu.map(|p| p / 100.0),
                                temperature_c: g.temperature_c,
                            })
                            .collect(),
                    })
                    .collect()
            })
            .map_err(|e| format!("the Ray cluster's nodes are unknown: {e}")),
    )
}
