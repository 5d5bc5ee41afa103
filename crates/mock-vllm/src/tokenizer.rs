//! A deterministic stand-in tokenizer and "model": one token per whitespace-separated word of a
//! prompt, and generated tokens taken from a fixed word list, so tests can predict every count.
//!
//! Rules (documented for test writers):
//! - completion prompt: `prompt_tokens` = number of whitespace-separated words;
//! - chat prompt: 1 (BOS) + for each message (1 role token + words of its content) + 1 when
//!   `add_generation_prompt` (default true);
//! - each generated token is `" " + word`, the words taken from [`WORDS`] in an order that
//!   depends only on the prompt and the request's seed (the same request gives the same text).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The words the mock "model" generates.
pub const WORDS: &[&str] = &[
    "one", "given", "data", "option", "start", "context", "member", "size", "case", "object",
    "value", "return", "list", "error", "string", "model", "token", "cache", "request", "server",
    "engine", "batch", "layer", "weight", "vector", "index", "buffer", "stream", "result", "input",
    "output", "config", "memory", "device", "kernel", "thread", "queue", "block", "page", "state",
];

pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
const FIRST_WORD_ID: u32 = 3;
const VOCAB: u32 = 32_000;

fn learned() -> &'static Mutex<HashMap<u32, String>> {
    static MAP: OnceLock<Mutex<HashMap<u32, String>>> = OnceLock::new();
    MAP.get_or_init(|| Mutex::new(HashMap::new()))
}

/// 64-bit FNV-1a.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The id of one word (stable across runs).
pub fn word_id(word: &str) -> u32 {
    if let Some(i) = WORDS.iter().position(|w| *w == word) {
        return FIRST_WORD_ID + i as u32;
    }
    let base = FIRST_WORD_ID + WORDS.len() as u32;
    let id = base + (fnv(word.as_bytes()) % (VOCAB - base) as u64) as u32;
    if let Ok(mut m) = learned().lock() {
        m.entry(id).or_insert_with(|| word.to_string());
    }
    id
}

/// The text of one token id.
pub fn id_text(id: u32) -> String {
    match id {
        PAD => "<|pad|>".into(),
        BOS => "<|bos|>".into(),
        EOS => "<|eos|>".into(),
        id if id < FIRST_WORD_ID + WORDS.len() as u32 => {
            WORDS[(id - FIRST_WORD_ID) as usize].into()
        }
        id => learned()
            .lock()
            .ok()
            .and_then(|m| m.get(&id).cloned())
            .unwrap_or_else(|| format!("<|tok{id}|>")),
    }
}

/// Token ids of a text: one per whitespace-separated word.
pub fn encode(text: &str) -> Vec<u32> {
    text.split_whitespace().map(word_id).collect()
}

/// Text of token ids: words joined by single spaces (special tokens glued, as the capture shows).
pub fn decode(ids: &[u32]) -> String {
    let mut out = String::new();
    for (i, id) in ids.iter().enumerate() {
        let special = *id <= EOS;
        if i > 0 && !special && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&id_text(*id));
    }
    out
}

/// Token ids of a chat conversation (see the module rules).
pub fn encode_chat(messages: &[(String, String)], add_generation_prompt: bool) -> Vec<u32> {
    let mut ids = vec![BOS];
    for (role, content) in messages {
        ids.push(word_id(&format!("<|{role}|>")));
        ids.extend(encode(content));
    }
    if add_generation_prompt {
        ids.push(word_id("<|assistant|>"));
    }
    ids
}

/// The deterministic generator for one request.
#[derive(Debug, Clone)]
pub struct Generator {
    start: u64,
    step: u64,
}

impl Generator {
    pub fn new(prompt: &[u32], seed: u64) -> Generator {
        let mut bytes: Vec<u8> = prompt.iter().flat_map(|t| t.to_le_bytes()).collect();
        bytes.extend(seed.to_le_bytes());
        let h = fnv(&bytes);
        Generator {
            start: h % WORDS.len() as u64,
            step: 0,
        }
    }

    /// The next token: (id, text).
    pub fn next_token(&mut self) -> (u32, String) {
        let idx = ((self.start + self.step * 7) % WORDS.len() as u64) as usize;
        self.step += 1;
        (FIRST_WORD_ID + idx as u32, format!(" {}", WORDS[idx]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ids = encode("hello one world");
        assert_eq!(ids.len(), 3);
        assert_eq!(decode(&ids), "hello one world");
        assert_eq!(decode(&[BOS, EOS, word_id("b")]), "<|bos|><|eos|> b");
    }
}
