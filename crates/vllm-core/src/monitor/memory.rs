//! What a vLLM log says about a model's memory: the weights' size once loaded.
//!
//! vLLM logs it at start-up, with wording that changed across releases:
//! - `Model loading took 14.9904 GiB memory and 5.236 seconds` (V1 GPU model runner),
//! - `Loading model weights took 14.9888 GB` (older releases; computed in GiB despite the
//!   `GB`, so read as GiB),
//! - `model weights took 14.99GiB` / `model weights take 14.99GiB` (the memory profiling
//!   summary).
//!
//! The CPU backend logs none of these (see `tests/data/vllm-reference/startup-success.log`),
//! so a CPU server's weights are unknown here. The last such line wins: after a restart
//! the log holds both launches.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The phrases after which vLLM writes the weights' size.
const MARKERS: &[&str] = &[
    "Model loading took",
    "Loading model weights took",
    "model weights took",
    "model weights take",
];

/// The weights' size in MiB from the last line of `text` that states it.
pub fn weights_mb_from_log(text: &str) -> Option<u64> {
    text.lines().rev().find_map(|line| {
        MARKERS.iter().find_map(|m| {
            let at = line.find(m)?;
            size_mb(&line[at + m.len()..])
        })
    })
}

/// `" 14.99 GiB memory ..."` → MiB.
fn size_mb(rest: &str) -> Option<u64> {
    let rest = rest.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let n: f64 = rest[..end].parse().ok()?;
    let unit = rest[end..].trim_start();
    let mib = if unit.starts_with("GiB") || unit.starts_with("GB") {
        n * 1024.0
    } else if unit.starts_with("MiB") || unit.starts_with("MB") {
        n
    } else {
        return None;
    };
    Some(mib.round() as u64)
}

/// Reads the start and the end of a log (at most 4 MiB of each: start-up lines are at the
/// start of each launch) and looks for the weights' size.
pub fn weights_mb_from_log_file(path: &Path) -> Option<u64> {
    const PART: u64 = 4 << 20;
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut head = Vec::new();
    (&mut f).take(PART).read_to_end(&mut head).ok()?;
    let mut text = String::from_utf8_lossy(&head).into_owned();
    if len > PART {
        f.seek(SeekFrom::Start(len.saturating_sub(PART).max(PART)))
            .ok()?;
        let mut tail = Vec::new();
        f.take(PART).read_to_end(&mut tail).ok()?;
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(&tail));
    }
    weights_mb_from_log(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wording() {
        let cases = [
            (
                "(EngineCore_DP0 pid=1) INFO 05-01 [gpu_model_runner.py:2000] Model loading took 14.9904 GiB memory and 5.236 seconds",
                Some(15350),
            ),
            ("INFO Loading model weights took 14.9888 GB", Some(15349)),
            (
                "INFO Memory profiling takes 5.2 seconds ... model weights took 2.5GiB; non_torch_memory takes 0.1GiB",
                Some(2560),
            ),
            ("model weights take 512 MiB", Some(512)),
            ("Loading weights took 0.01 seconds", None),
            ("Checkpoint size: 0.00 GiB", None),
        ];
        for (line, want) in cases {
            assert_eq!(weights_mb_from_log(line), want, "{line}");
        }
        let two = "Model loading took 1.0 GiB memory\nrestart\nModel loading took 2.0 GiB memory\n";
        assert_eq!(weights_mb_from_log(two), Some(2048));
    }

    #[test]
    fn the_cpu_capture_has_none() {
        let text = include_str!("../../../../tests/data/vllm-reference/startup-success.log");
        assert_eq!(weights_mb_from_log(text), None);
    }
}
