//! vllm-fleet: the fleet's operations, over vllm-core's vocabulary, sources and records.
//!
//! Read in this order:
//! - [`launcher`]: `vllm serve` process groups, start-up failure classification, and the
//!   [`launcher::supervisor::Launcher`] that launches, observes and stops over the store.
//! - [`lifecycle`]: locate, load and unload: the decisions every front end shares.
//! - [`adapters`]: LoRA adapters loaded and unloaded at runtime, and why a server refuses.
//! - [`chat`]: one chat completion with a served model, and its reply read back.
//! - [`inventory`]: every model the fleet knows, each once, in locate's precedence.
//! - [`power`]: sleep and wake (vLLM's sleep mode), with the memory a sleep gives back.
//! - [`sampling`]: a model's sampling defaults, set and (when asked) applied now.
//! - [`snapshot`]: what a save gathers and how a state is written.
//! - [`restore`]: a saved state's models put back, as a checked plan of typed actions.
//!
//! Its failures are vllm-core's [`vllm_core::Error`]: a launch refused or failed is a
//! `MODEL_LOAD_FAILED` with its [`vllm_core::LoadFailure`], the codes clients already
//! branch on, so this crate adds no error enum of its own.

pub mod adapters;
pub mod chat;
pub mod inventory;
pub mod launcher;
pub mod lifecycle;
pub mod power;
pub mod restore;
pub mod sampling;
pub mod snapshot;
