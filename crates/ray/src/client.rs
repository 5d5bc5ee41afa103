//! [`RayClient`]: one method per endpoint of Ray's dashboard that the launcher uses, each
//! bounded by a time limit so that a dead cluster is an error, never a hang.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::job::{Job, JobSpec};
use crate::node::{Node, NodeStats};

/// How long a connection may take before the dashboard counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A client of one Ray cluster's dashboard (`http://head:8265`).
#[derive(Clone)]
pub struct RayClient {
    address: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for RayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The headers may carry a key: only the address is shown.
        f.debug_struct("RayClient")
            .field("address", &self.address)
            .finish()
    }
}

impl RayClient {
    /// A client of the dashboard at `address`, sending `headers` with every request (an
    /// `Authorization` for a cluster behind a proxy), each request limited to `timeout`.
    pub fn new(address: &str, headers: &[(String, String)], timeout: Duration) -> Result<Self> {
        let address = address.trim_end_matches('/').to_string();
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(Error::Invalid(format!(
                "the Ray address {address:?} is not an http:// or https:// URL of the dashboard"
            )));
        }
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Invalid(format!("{name:?} is not a header name")))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                Error::Invalid(format!("the value of {name} is not a header value"))
            })?;
            value.set_sensitive(true);
            map.insert(name, value);
        }
        // reqwest is built without a TLS provider of its own: the process picks ring once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .default_headers(map)
            .build()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(RayClient { address, http })
    }

    /// The dashboard's URL, as configured (no trailing slash).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Ray's version (`GET /api/version`): the cheapest proof the dashboard answers.
    pub async fn version(&self) -> Result<String> {
        let v: serde_json::Value = self.get("/api/version", "the version").await?;
        Ok(v["ray_version"].as_str().unwrap_or_default().to_string())
    }

    /// Submits a job; returns its submission id.
    pub async fn submit(&self, spec: &JobSpec) -> Result<String> {
        let what = "a job submission";
        let r = self
            .send(self.http.post(self.url("/api/jobs/")).json(spec), what)
            .await?;
        let v: serde_json::Value = self.read(r, what).await?;
        v["submission_id"]
            .as_str()
            .or_else(|| v["job_id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Decode {
                what: what.into(),
                reason: format!("no submission_id in {v}"),
            })
    }

    /// One job's details.
    pub async fn job(&self, id: &str) -> Result<Job> {
        self.get(&format!("/api/jobs/{id}"), &format!("the job {id}"))
            .await
    }

    /// Every job the cluster knows, ours and others', running or ended.
    pub async fn jobs(&self) -> Result<Vec<Job>> {
        self.get("/api/jobs/", "the job list").await
    }

    /// Asks Ray to stop a job (SIGTERM to its command, SIGKILL after Ray's grace);
    /// returns whether it was still running. Ray answers at once: watch [`RayClient::job`]
    /// for the end.
    pub async fn stop(&self, id: &str) -> Result<bool> {
        let what = format!("stopping the job {id}");
        let r = self
            .send(
                self.http.post(self.url(&format!("/api/jobs/{id}/stop"))),
                &what,
            )
            .await?;
        let v: serde_json::Value = self.read(r, &what).await?;
        Ok(v["stopped"].as_bool().unwrap_or(false))
    }

    /// Forgets an ended job (its record and logs); Ray refuses while it runs.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let what = format!("deleting the job {id}");
        let r = self
            .send(
                self.http.delete(self.url(&format!("/api/jobs/{id}"))),
                &what,
            )
            .await?;
        let _: serde_json::Value = self.read(r, &what).await?;
        Ok(())
    }

    /// The job's whole log (its command's stdout and stderr) as Ray keeps it.
    pub async fn logs(&self, id: &str) -> Result<String> {
        let v: serde_json::Value = self
            .get(
                &format!("/api/jobs/{id}/logs"),
                &format!("the logs of {id}"),
            )
            .await?;
        Ok(v["logs"].as_str().unwrap_or_default().to_string())
    }

    /// The cluster's nodes, alive and dead, with their resources.
    pub async fn nodes(&self) -> Result<Vec<Node>> {
        let v: serde_json::Value = self
            .get("/api/v0/nodes?limit=10000&detail=1", "the node list")
            .await?;
        crate::node::from_state_api(&v)
    }

    /// What each node's agent reports now: memory and GPUs (`/nodes?view=summary`).
    pub async fn node_stats(&self) -> Result<Vec<NodeStats>> {
        let v: serde_json::Value = self.get("/nodes?view=summary", "the node stats").await?;
        crate::node::stats_from_summary(&v)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, what: &str) -> Result<T> {
        let r = self.send(self.http.get(self.url(path)), what).await?;
        self.read(r, what).await
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response> {
        req.send().await.map_err(|e| Error::Unreachable {
            address: self.address.clone(),
            reason: if e.is_timeout() {
                format!("no answer to {what} in time")
            } else {
                root_cause(&e)
            },
        })
    }

    async fn read<T: DeserializeOwned>(&self, r: reqwest::Response, what: &str) -> Result<T> {
        let status = r.status();
        let body = r.text().await.map_err(|e| Error::Unreachable {
            address: self.address.clone(),
            reason: format!("the answer to {what} broke off: {}", root_cause(&e)),
        })?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(Error::NotFound {
                address: self.address.clone(),
                what: what.trim_start_matches("the ").to_string(),
            });
        }
        if !status.is_success() {
            return Err(Error::Refused {
                address: self.address.clone(),
                what: what.to_string(),
                status: status.as_u16(),
                body: last_line(&body),
            });
        }
        serde_json::from_str(&body).map_err(|e| Error::Decode {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }
}

/// The innermost cause of a transport error ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The last non-empty line of an error body: Ray answers with a Python traceback whose
/// last line says what went wrong.
fn last_line(body: &str) -> String {
    body.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .chars()
        .take(500)
        .collect()
}
