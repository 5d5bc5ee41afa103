//! mock-vllm: a faithful test double of vLLM 0.32's OpenAI-compatible server (with its Anthropic
//! Messages API, [`messages`]) and `vllm serve` command line, checked against the captures in
//! tests/data/vllm-reference and tests/data/vllm-messages.
//!
//! Two ways to use it:
//! - the binary, `mock-vllm serve MODEL [flags]`, a process tree like vLLM's (see [`process`]),
//!   configured by the `MOCK_VLLM_*` / `VLLM_*` environment variables documented in [`env`];
//! - in process, [`spawn_for_test`], returning a [`MockHandle`].

// Handlers return an axum `Response` as their early-exit error; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod cli;
pub mod engine;
pub mod env;
pub mod http;
pub mod json;
pub mod logging;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod pooling;
pub mod process;
pub mod pyrepr;
pub mod server;
pub mod stats;
pub mod testing;
pub mod tokenizer;

pub use process::main_entry;
pub use testing::{MockHandle, StartError, spawn_for_test};
