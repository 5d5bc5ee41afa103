//! vllm-core: what the vllm-mcp servers know about vLLM, and nothing about MCP: the
//! vocabulary, the sources and the records the fleet's operations (`vllm-fleet`) work on.
//!
//! Read in this order:
//! - [`error`]: the one error enum and its stable codes.
//! - [`config`]: the TOML file shared by the three servers, and the environment.
//! - [`vllm`]: a pooled HTTP client for one vLLM server.
//! - [`prom`]: Prometheus text parsing, vLLM's metric families, window arithmetic.
//! - [`gpu`]: NVML behind a trait, with a fake for tests.
//! - [`model_files`]: `config.json` and weight sizes from model directories and the HF cache.
//! - [`store`]: the SQLite file every process shares; migrations; the audit log.
//! - [`launch_args`]: what a launch is, validated, and its `vllm serve` argument vector.
//! - [`models`]: records of launched models and their observed status.
//! - [`estimate`]: memory a model needs, checked before launching.
//! - [`coordination`]: leases that give singleton duties one owner across processes.
//! - [`states`]: saved serving states (format, compression, checksums, store rows).
//! - [`crush_db`]: Crush's session database, read and restored.
//! - [`monitor`]: the metrics sampler, its history in the store, and window figures.
//! - [`loadtest`]: bounded load tests of a served model, client-side and server-side figures.
//! - [`redact`], [`time`]: secrets out of logs, RFC 3339 timestamps.

pub mod config;
pub mod door_use;
pub mod error;
pub mod estimate;
pub mod gpu;
pub mod gpu_work;
pub mod launch_args;
pub mod loadtest;
pub mod model_files;
pub mod models;
pub mod monitor;
pub mod redact;
pub mod states;
pub mod vllm;

pub use error::{Error, LoadFailure, Result};
/// Crush's session database, read and restored (the `vllm-crush-db` crate).
pub use vllm_crush_db as crush_db;
/// Prometheus parsing, vLLM's metric views and window arithmetic (the `vllm-prom` crate).
pub use vllm_prom as prom;
/// The SQLite file every process shares; migrations; the audit log (the `vllm-store` crate).
pub use vllm_store as store;
/// Leases that give singleton duties one owner across processes (from `vllm-store`).
pub use vllm_store::coordination;
/// RFC 3339 timestamps (from `vllm-store`).
pub use vllm_store::time;
