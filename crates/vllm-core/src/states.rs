//! Saved serving states: payload format, compression, checksums, and their rows in the store.
