//! The suite keeps working: a short run of the whole-process and in-process sections
//! prints a row with a figure for each server and each read tool.

use std::process::Command;

#[test]
fn a_short_run_prints_every_row() {
    let out = Command::new(env!("CARGO_BIN_EXE_vllm-mcp-bench"))
        .args([
            "--only",
            "start,trips,parse",
            "--runs",
            "3",
            "--calls",
            "20",
        ])
        .output()
        .expect("run vllm-mcp-bench");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for server in [
        "vllm-model-manager",
        "vllm-state-persistence",
        "vllm-perf-monitor",
    ] {
        let start =
            format!("| servers | {server}: spawn to `initialize` answer | < 15 ms | median ");
        assert!(
            table.contains(&start),
            "no start-up row for {server}:\n{table}"
        );
        assert!(
            table.contains(&format!("| servers | {server}: resident memory idle")),
            "no memory row for {server}:\n{table}"
        );
    }
    for tool in [
        "list-models",
        "get-model-info",
        "get-metrics",
        "get-gpu-stats",
        "server-health",
        "resources/read vllm://state/sessions",
    ] {
        let row = table
            .lines()
            .find(|l| l.contains(&format!("| `{tool}")))
            .unwrap_or_else(|| panic!("no round-trip row for {tool}:\n{table}"));
        assert!(row.contains("(n=20)"), "{row}");
    }
    assert!(
        table.contains("| parse | Prometheus parse of metrics_after_load.txt | < 250 µs | "),
        "{table}"
    );
    // Without --peer the peer rows say how to get them, instead of inventing figures.
    assert!(table.contains("not run: pass --peer"), "{table}");
}
