//! vllm-ray: Ray's Jobs REST API and node list, spoken over plain HTTP from Rust.
//!
//! Ray's dashboard (the head node's `:8265`) runs any shell command on any node as a job
//! and reports its status, its driver's node and its logs. That is all the launcher's
//! Ray backend needs to place `vllm serve` on a cluster: no Python in our process, no
//! agent of our own on the hosts.
//!
//! - [`client`]: [`RayClient`], one call per endpoint, each bounded by a timeout;
//! - [`job`]: what is submitted ([`JobSpec`]) and what Ray reports ([`Job`]);
//! - [`node`]: the cluster's nodes ([`Node`]) and their resources;
//! - [`error`]: [`Error`], where an unreachable dashboard is its own case.

pub mod client;
pub mod error;
pub mod job;
pub mod node;

pub use client::RayClient;
pub use error::{Error, Result};
pub use job::{DriverInfo, Job, JobSpec, JobStatus};
pub use node::{Node, NodeGpu, NodeStats};
