//! The Ray backend: `vllm serve` run as a job on a Ray cluster, through its dashboard's
//! Jobs API ([`vllm_ray`]), instead of a process group of this host.
//!
//! The launcher keeps its one lifecycle; at the few places where a launch touches the
//! machine (start, look, stop, log), a record with a [`RayJob`] comes here. A job runs
//! the same argument vector as a local launch, on the node the caller named (through the
//! `node:<address>` resource every Ray node has) or where Ray's scheduler puts it, and
//! serves on that node's address. Its metadata names the model and its launch, so any
//! manager pointed at the cluster can tell our jobs from others'.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vllm_core::config::{Config, LauncherBackend};
use vllm_core::error::{Error, LoadFailure, Result};
use vllm_core::models::{FailureReason, RayJob, RecordedError};
use vllm_ray::{Job, JobSpec, JobStatus, Node, NodeStats, RayClient};

/// Metadata key naming the model a job serves.
pub const META_MODEL: &str = "vllm_mcp.model_id";
/// Metadata key holding the launch (source and arguments) as JSON.
pub const META_LAUNCH: &str = "vllm_mcp.launch";

/// The cluster a launcher submits to.
#[derive(Debug, Clone)]
pub struct RayBackend {
    client: RayClient,
    runtime_env: Option<Value>,
    resources: BTreeMap<String, f64>,
    bind_host: String,
}

/// What a job's state says of its server.
#[derive(Debug)]
pub enum JobLook {
    /// Waiting for resources or for its command to start.
    Pending,
    /// Its command runs on this node (address, Ray's id), once Ray says which.
    Running { node: Option<(String, String)> },
    /// It ended: how, in Ray's words, and the command's exit code.
    Ended {
        status: JobStatus,
        message: String,
        exit_code: Option<i64>,
    },
    /// Ray no longer knows the job (the cluster was replaced).
    Gone,
}

/// A job of ours found running on the cluster: what a manager that did not launch it
/// needs to take it in.
#[derive(Debug, Clone)]
pub struct Found {
    pub model_id: String,
    /// `{"source", "args", "host", "port"}` as the launching manager wrote it.
    pub launch: Value,
    pub job: RayJob,
    /// The job's command line.
    pub entrypoint: String,
    /// When Ray started it (seconds since the epoch).
    pub started_at: Option<f64>,
}

/// A launch, as the placement hands it to the cluster.
pub struct Submission<'a> {
    pub model_id: &'a str,
    pub program: &'a str,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    /// The node to run on, already resolved.
    pub node: Option<&'a Node>,
    /// GPUs to reserve for the command (tensor × pipeline parallel size).
    pub gpus: Option<u32>,
    /// The launch as JSON, kept in the job's metadata for adoption.
    pub launch: Value,
}

impl RayBackend {
    /// The Ray backend of this configuration; `None` for the local backend.
    pub fn from_config(config: &Config) -> Result<Option<RayBackend>> {
        let (LauncherBackend::Ray, Some(ray)) = (config.launcher.backend, &config.launcher.ray)
        else {
            return Ok(None);
        };
        let mut headers: Vec<(String, String)> = ray
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(var) = &ray.api_key_env
            && let Ok(key) = std::env::var(var)
        {
            headers.push(("Authorization".into(), format!("Bearer {key}")));
        }
        let client = RayClient::new(
            &ray.address,
            &headers,
            Duration::from_secs_f64(ray.timeout_seconds),
        )
        .map_err(|e| Error::Config {
            path: None,
            key: "launcher.ray".into(),
            message: e.to_string(),
        })?;
        Ok(Some(RayBackend {
            client,
            runtime_env: ray.runtime_env.clone(),
            resources: ray.resources.clone(),
            bind_host: ray.bind_host.clone(),
        }))
    }

    /// The dashboard's address.
    pub fn address(&self) -> &str {
        self.client.address()
    }

    /// The address a server binds: its node's, or the configured one when Ray chooses.
    pub fn bind_host(&self, node: Option<&Node>) -> String {
        node.map_or_else(|| self.bind_host.clone(), |n| n.node_ip.clone())
    }

    /// Where a launch goes, from one look at the node list: the alive node named by
    /// `name` (its address or Ray's node id), and whether any alive node has a GPU (on a
    /// CPU-only cluster, reserving GPUs would leave a job pending for ever).
    pub async fn placement(&self, name: Option<&str>) -> Result<(Option<Node>, bool)> {
        let nodes = self.client.nodes().await.map_err(|e| self.unavailable(e))?;
        let alive: Vec<&Node> = nodes.iter().filter(|n| n.is_alive()).collect();
        let has_gpus = alive.iter().any(|n| n.gpus() > 0);
        let Some(name) = name else {
            return Ok((None, has_gpus));
        };
        let node = alive
            .iter()
            .find(|n| n.node_ip == name || n.node_id == name)
            .map(|n| (*n).clone())
            .ok_or_else(|| {
                let known: Vec<&str> = alive.iter().map(|n| n.node_ip.as_str()).collect();
                Error::invalid(
                    "node",
                    format!(
                        "no alive node of the Ray cluster at {} is `{name}` (alive: {})",
                        self.address(),
                        known.join(", ")
                    ),
                )
            })?;
        Ok((Some(node), has_gpus))
    }

    /// What every alive node's agent reports now: memory and GPUs (the monitor's view).
    pub async fn node_stats(&self) -> Result<Vec<NodeStats>> {
        let stats = self
            .client
            .node_stats()
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(stats.into_iter().filter(|n| n.alive).collect())
    }

    /// What each alive node's agent reports now (memory, GPUs) that this manager's jobs
    /// may land on: the node named (by address or Ray's id) alone, else the nodes
    /// offering the configured resources.
    pub async fn candidates(&self, node: Option<&str>) -> Result<Vec<NodeStats>> {
        Ok(self
            .node_stats()
            .await?
            .into_iter()
            .filter(|n| match node {
                Some(name) => n.ip == name || n.node_id == name,
                None => self
                    .resources
                    .keys()
                    .all(|k| n.resources_total.contains_key(k)),
            })
            .collect())
    }

    /// Submits the launch as a job; returns it with its node when pinned.
    pub async fn submit(&self, s: &Submission<'_>) -> Result<RayJob> {
        let mut env_vars: BTreeMap<String, Value> = BTreeMap::new();
        let mut runtime_env = self.runtime_env.clone().unwrap_or_else(|| json!({}));
        if let Some(Value::Object(given)) = runtime_env.get("env_vars") {
            env_vars.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        env_vars.extend(s.env.iter().map(|(k, v)| (k.clone(), json!(v))));
        runtime_env["env_vars"] = json!(env_vars);
        let submission_id = format!(
            "vllm-mcp-{}-{}",
            job_safe(s.model_id),
            (vllm_core::time::unix_now() * 1000.0) as u64
        );
        let mut spec = JobSpec {
            entrypoint: entrypoint(s.program, s.argv),
            submission_id: Some(submission_id.clone()),
            runtime_env: Some(runtime_env),
            metadata: [
                (META_MODEL.to_string(), s.model_id.to_string()),
                (META_LAUNCH.to_string(), s.launch.to_string()),
            ]
            .into(),
            entrypoint_num_gpus: s.gpus.map(f64::from),
            ..Default::default()
        };
        match s.node {
            Some(node) => spec.pin_to_node(&node.node_ip),
            None => spec.entrypoint_resources.extend(self.resources.clone()),
        }
        self.client
            .submit(&spec)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(RayJob {
            submission_id,
            node_ip: s.node.map(|n| n.node_ip.clone()),
            node_id: s.node.map(|n| n.node_id.clone()),
        })
    }

    /// Every job of ours that has not ended, with the node each runs on: what a manager
    /// adopts (`Launcher::adopt`).
    pub async fn ours(&self) -> Result<Vec<Found>> {
        let jobs = self.client.jobs().await.map_err(|e| self.unavailable(e))?;
        let live: Vec<Job> = jobs
            .into_iter()
            .filter(|j| j.status.is_some_and(|s| !s.is_terminal()))
            .filter(|j| j.metadata.contains_key(META_MODEL) && j.submission_id.is_some())
            .collect();
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let nodes = self.client.nodes().await.map_err(|e| self.unavailable(e))?;
        Ok(live
            .into_iter()
            .map(|j| {
                let node = j
                    .driver_node_id
                    .as_deref()
                    .and_then(|id| nodes.iter().find(|n| n.node_id == id));
                Found {
                    model_id: j.metadata[META_MODEL].clone(),
                    launch: j
                        .metadata
                        .get(META_LAUNCH)
                        .and_then(|l| serde_json::from_str(l).ok())
                        .unwrap_or(Value::Null),
                    job: RayJob {
                        submission_id: j.submission_id.clone().unwrap_or_default(),
                        node_ip: node.map(|n| n.node_ip.clone()),
                        node_id: node.map(|n| n.node_id.clone()),
                    },
                    entrypoint: j.entrypoint.clone().unwrap_or_default(),
                    started_at: j.start_time.map(|ms| ms as f64 / 1000.0),
                }
            })
            .collect())
    }

    /// What Ray says of the job now, with the node it runs on; an error when the
    /// cluster cannot be asked (the record is then left as it was).
    pub async fn look(&self, job: &RayJob) -> Result<JobLook> {
        let found = match self.client.job(&job.submission_id).await {
            Ok(j) => j,
            Err(vllm_ray::Error::NotFound { .. }) => return Ok(JobLook::Gone),
            Err(e) => return Err(self.unavailable(e)),
        };
        Ok(match found.status {
            None | Some(JobStatus::Pending) => JobLook::Pending,
            Some(JobStatus::Running) => JobLook::Running {
                node: self.node_of(&found).await,
            },
            Some(status) => JobLook::Ended {
                status,
                message: found.message.clone().unwrap_or_default(),
                exit_code: found.driver_exit_code,
            },
        })
    }

    /// The node (address, Ray's id) a running job's command is on.
    async fn node_of(&self, job: &Job) -> Option<(String, String)> {
        let id = job.driver_node_id.as_deref()?;
        let nodes = self.client.nodes().await.ok()?;
        nodes
            .into_iter()
            .find(|n| n.node_id == id)
            .map(|n| (n.node_ip, n.node_id))
    }

    /// Stops the job and waits up to `grace` (plus Ray's own kill delay) for it to end;
    /// returns whether it ended.
    pub async fn stop(&self, job: &RayJob, grace: Duration) -> Result<bool> {
        match self.client.stop(&job.submission_id).await {
            Ok(_) | Err(vllm_ray::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.unavailable(e)),
        }
        let deadline = Instant::now() + grace + Duration::from_secs(10);
        loop {
            match self.look(job).await? {
                JobLook::Ended { .. } | JobLook::Gone => return Ok(true),
                _ if Instant::now() >= deadline => return Ok(false),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The last `lines` of the job's log (its command's output), as Ray keeps it.
    pub async fn log_tail(&self, job: &RayJob, lines: usize) -> String {
        match self.client.logs(&job.submission_id).await {
            Ok(text) => last_lines(&text, lines),
            Err(e) => format!("(the job's log cannot be read: {e})"),
        }
    }

    /// Why an ended job's server is gone: the start failure its log shows, else Ray's
    /// own words (a node that died, a stop from elsewhere).
    pub async fn failure(&self, job: &RayJob, message: &str, exit: Option<i64>) -> RecordedError {
        let tail = vllm_core::redact::redact_text(&self.log_tail(job, 200).await);
        let c = super::classify::classify(&tail, exit.map(|c| c as i32));
        if c.reason != LoadFailure::Unknown {
            return RecordedError {
                reason: c.reason.into(),
                message: c.message,
                details: Value::Object(c.details),
            };
        }
        RecordedError {
            reason: FailureReason::Start(LoadFailure::ProcessExited),
            message: format!("the Ray job {} ended: {message}", job.submission_id),
            details: json!({
                "job": job.submission_id,
                "node": job.node_ip,
                "exit_code": exit,
                "log_excerpt": last_lines(&tail, 20),
            }),
        }
    }

    fn unavailable(&self, e: vllm_ray::Error) -> Error {
        match e {
            vllm_ray::Error::Refused {
                status: 400, body, ..
            } => Error::invalid("launch", format!("the Ray cluster refused the job: {body}")),
            other => Error::ClusterUnavailable {
                address: self.address().to_string(),
                message: other.to_string(),
            },
        }
    }
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// The job's shell command: the argument vector, each argument quoted, run with `exec` so
/// that Ray's stop signals reach `vllm serve` itself.
pub fn entrypoint(program: &str, argv: &[String]) -> String {
    let mut line = format!("exec {}", quote(program));
    for a in argv {
        line.push(' ');
        line.push_str(&quote(a));
    }
    line
}

/// One argument for `sh`: bare when it holds only characters the shell leaves alone.
fn quote(s: &str) -> String {
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if bare {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A model id as part of a submission id: Ray's ids are free text, ours stay readable.
fn job_safe(model_id: &str) -> String {
    model_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entrypoint_quotes_what_the_shell_would_read() {
        let argv = vec![
            "serve".to_string(),
            "org/model".into(),
            "--override-generation-config".into(),
            r#"{"temperature": 0.5}"#.into(),
            "it's".into(),
            "*".into(),
        ];
        assert_eq!(
            entrypoint("/opt/vllm env/bin/vllm", &argv),
            r#"exec '/opt/vllm env/bin/vllm' serve org/model --override-generation-config '{"temperature": 0.5}' 'it'\''s' '*'"#
        );
        assert_eq!(job_safe("org/model:v1"), "org_model_v1");
    }
}
