//! Tidy: the workspace's invariants that the compiler does not check.
//!
//! - every Rust file starts with a `//!` line saying what it is for;
//! - nothing prints to stdout in the libraries and MCP servers (stdout is the protocol);
//! - no `#[ignore]`d tests, no `todo!()`/`unimplemented!()` standing in for a feature.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn all_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates"), &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    files
}

#[test]
fn every_file_starts_with_a_module_doc() {
    let bad: Vec<_> = all_files()
        .into_iter()
        .filter(|p| !std::fs::read_to_string(p).unwrap().starts_with("//!"))
        .collect();
    assert!(bad.is_empty(), "files without a leading //! line: {bad:#?}");
}

#[test]
fn no_stdout_in_libraries_and_servers() {
    // mock-vllm is a stand-in for vLLM (its own process, printing logs like vLLM's);
    // the tour, the benchmark suite and test helpers (the real-vLLM suite's too) talk to
    // a person. Everything else may be an MCP server.
    let exempt = [
        "crates/mock-vllm/",
        "crates/testkit/",
        "crates/e2e/",
        "crates/bench/",
        "/benches/",
        "/tests/",
        "/examples/",
    ];
    let root = workspace_root();
    let mut bad = Vec::new();
    for p in all_files() {
        let rel = p.strip_prefix(&root).unwrap().to_string_lossy().to_string();
        if exempt.iter().any(|e| rel.contains(e)) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if ["println!", "print!(", "dbg!(", "std::io::stdout()"]
                .iter()
                .any(|m| code.contains(m))
                && !line.contains("tidy: allow-stdout")
            {
                bad.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "stdout is the JSON-RPC channel: {bad:#?}");
}

#[test]
fn no_ignored_tests_or_placeholders() {
    let root = workspace_root();
    let mut bad = Vec::new();
    for p in all_files() {
        if p.ends_with("tidy.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, line) in text.lines().enumerate() {
            if ["#[ignore", "todo!(", "unimplemented!("]
                .iter()
                .any(|m| line.contains(m))
            {
                bad.push(format!(
                    "{}:{}: {}",
                    p.strip_prefix(&root).unwrap().display(),
                    i + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
