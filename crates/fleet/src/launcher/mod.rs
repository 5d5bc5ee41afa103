//! Launching and supervising `vllm serve` processes.
//!
//! - [`process`]: detached process groups, logs, stopping a whole group, ports, RSS;
//! - [`classify`]: why a start failed, read from the server's log.
//! - [`ray`]: the Ray backend, `vllm serve` as a job on a Ray cluster (`[launcher] backend`).
//! - [`supervisor`]: [`supervisor::Launcher`], launch, observe and stop over the store records.
//!
//! What is launched, [`vllm_core::launch_args::LaunchArgs`] and its argument vector, lives
//! below this module, so the configuration's catalog can name it without a cycle.

pub mod classify;
pub mod process;
pub mod ray;
pub mod supervisor;
