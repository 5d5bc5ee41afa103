//! Fuzz target: a Crush `messages.parts` cell, as text and as a blob, the way a save reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use vllm_core::crush_db::{check_parts_cell, values};

fuzz_target!(|bytes: &[u8]| {
    let blob = json!({ values::BLOB_KEY: values::b64_encode(bytes) });
    let _ = check_parts_cell(&blob);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = check_parts_cell(&Value::String(text.to_string()));
        // Valid JSON of any shape, as a cell that was decoded already.
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            let _ = check_parts_cell(&v);
        }
    }
});
