//! Fuzz target: the Prometheus text parser, strict and lenient, on any UTF-8 input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = vllm_core::prom::parse(text);
    let (expo, _) = vllm_core::prom::parse_lenient(text);
    let _ = vllm_core::prom::VllmSnapshot::from_exposition(&expo);
});
