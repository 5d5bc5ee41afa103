//! Jobs as Ray's Jobs API has them: the submission and the details it reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A job to submit: a shell command, where it may run, and what to remember with it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobSpec {
    /// The shell command run on the chosen node (a `vllm serve ...` line, quoted).
    pub entrypoint: String,
    /// Our own id for the job, unique on the cluster; Ray makes one when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submission_id: Option<String>,
    /// Ray's runtime environment: `env_vars`, `working_dir`... passed as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_env: Option<serde_json::Value>,
    /// Strings kept with the job and listed with it: how any client finds our jobs.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_gpus: Option<f64>,
    /// Bytes of memory reserved for the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_memory: Option<u64>,
    /// Custom resources; `node:<address>` pins the command to that node.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub entrypoint_resources: BTreeMap<String, f64>,
}

impl JobSpec {
    /// A job running `entrypoint` only on the node whose address is `node_ip`, through the
    /// resource `node:<ip>` every Ray node has (a tiny fraction of it, so that any number
    /// of jobs fit).
    pub fn pin_to_node(&mut self, node_ip: &str) {
        self.entrypoint_resources
            .insert(format!("node:{node_ip}"), 0.001);
    }
}

/// A job's state in Ray.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Waiting for its resources or for its driver to start.
    Pending,
    Running,
    /// Stopped by a request (ours, or anyone's).
    Stopped,
    /// The command exited 0.
    Succeeded,
    /// The command exited non-zero, could not start, or its node was lost.
    Failed,
}

impl JobStatus {
    /// Whether the job has ended and will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Stopped | JobStatus::Succeeded | JobStatus::Failed
        )
    }
}

/// Where a job's command runs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DriverInfo {
    #[serde(default)]
    pub id: Option<String>,
    /// The node's address: where a server the command starts can be reached.
    #[serde(default)]
    pub node_ip_address: Option<String>,
    #[serde(default, deserialize_with = "pid_from_string_or_number")]
    pub pid: Option<u64>,
}

/// A job as Ray reports it (`GET /api/jobs/{id}` and each entry of the list).
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    #[serde(default)]
    pub submission_id: Option<String>,
    /// Ray's own id of the driver, once it started.
    #[serde(default)]
    pub job_id: Option<String>,
    /// `None` for a driver that was not submitted through the Jobs API.
    #[serde(default)]
    pub status: Option<JobStatus>,
    /// Ray's words on the status (why it failed, what it waits for).
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub entrypoint: Option<String>,
    #[serde(default, deserialize_with = "map_or_null")]
    pub metadata: BTreeMap<String, String>,
    /// Milliseconds since the epoch; 0 or absent before it starts / ends.
    #[serde(default)]
    pub start_time: Option<u64>,
    #[serde(default)]
    pub end_time: Option<u64>,
    #[serde(default)]
    pub driver_node_id: Option<String>,
    #[serde(default)]
    pub driver_info: Option<DriverInfo>,
    #[serde(default)]
    pub driver_exit_code: Option<i64>,
    #[serde(default)]
    pub error_type: Option<String>,
    /// `SUBMISSION` for jobs of the Jobs API, `DRIVER` for scripts that called `ray.init`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl Job {
    /// The address of the node the command runs on, once Ray placed it.
    pub fn node_ip(&self) -> Option<&str> {
        self.driver_info
            .as_ref()
            .and_then(|d| d.node_ip_address.as_deref())
            .filter(|ip| !ip.is_empty())
    }
}

fn map_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

fn pid_from_string_or_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_pinned_to_a_node_asks_for_its_node_resource_and_skips_what_is_unset() {
        let mut spec = JobSpec {
            entrypoint: "sleep 1".into(),
            ..Default::default()
        };
        spec.pin_to_node("127.0.0.3");
        let body = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"entrypoint": "sleep 1", "entrypoint_resources": {"node:127.0.0.3": 0.001}})
        );
    }

    #[test]
    fn a_job_reads_with_nulls_and_a_pid_as_text() {
        let job: Job = serde_json::from_str(
            r#"{"type":"SUBMISSION","job_id":null,"submission_id":"m-1","driver_info":{"id":"01","node_ip_address":"127.0.0.2","pid":"4242"},
                "status":"RUNNING","entrypoint":"x","message":null,"error_type":null,"start_time":1,"end_time":null,
                "metadata":null,"runtime_env":{},"driver_agent_http_address":null,"driver_node_id":"abc","driver_exit_code":null}"#,
        )
        .unwrap();
        assert_eq!(job.status, Some(JobStatus::Running));
        assert_eq!(job.node_ip(), Some("127.0.0.2"));
        assert_eq!(job.driver_info.unwrap().pid, Some(4242));
        assert!(job.metadata.is_empty());
    }
}
