//! The front door's page: what its charts cost to read (a day of history for 8 models,
//! in-process, as `GET /ui/api/charts` computes them) and, with a browser, the page's
//! weight and first paint in Chromium against the release door (tests/browser/page.py
//! in its `measure` mode, scripts/browser.sh supplies the browser).

use crate::table::{Row, Samples, ms};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vllm_core::monitor::charts;
use vllm_core::store::Store;
use vllm_mcp_testkit::{bin, free_port, http_status, temp_dir};

/// The browser the page is measured in.
#[derive(Debug, Clone)]
pub struct Browser {
    /// A python with Playwright.
    pub python: PathBuf,
    /// Debian's chromium.
    pub chromium: PathBuf,
}

/// The section's rows.
pub async fn rows(browser: Option<&Browser>) -> Vec<Row> {
    let mut out = charts_rows();
    match browser {
        Some(b) => out.extend(browser_rows(b)),
        None => out.push(Row::info(
            "the page in Chromium",
            "skipped: no browser (scripts/browser.sh installs one)".into(),
        )),
    }
    out
}

/// `charts::read` over 5 m and 24 h of a day of history for 8 models.
fn charts_rows() -> Vec<Row> {
    eprintln!("page: writing 24 h of history for 8 models");
    let dir = temp_dir();
    let store = Store::open(&dir.path().join("bench.db")).expect("store");
    let urls: Vec<String> = (0..8)
        .map(|i| format!("http://127.0.0.1:{}", 9000 + i))
        .collect();
    let now = vllm_core::time::unix_now();
    crate::fleet::day_of_history(&store, &urls, now);
    let time = |span: f64, bins: usize, runs: usize| {
        let mut v = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let c = charts::read(&store, now - span, now, bins).expect("charts");
            assert_eq!(c.models.len(), 8);
            v.push(t.elapsed());
        }
        Samples::new(v)
    };
    let day = time(86_400.0, 144, 10);
    let five = time(300.0, 60, 50);
    vec![
        Row::target(
            "page charts, 24 h of 8 models (1 h at 5 s, 23 h at 1 min), read and binned in 144 bins",
            "< 250 ms",
            format!(
                "median {:.1} ms, max {:.1} ms",
                ms(day.median()),
                ms(day.quantile(1.0))
            ),
            ms(day.median()) < 250.0,
        ),
        Row::target(
            "page charts, the last 5 m of 8 models (480 rows)",
            "< 20 ms",
            format!("median {:.2} ms", ms(five.median())),
            ms(five.median()) < 20.0,
        ),
    ]
}

/// The page's weight and first contentful paint, in Chromium, from the release door.
fn browser_rows(b: &Browser) -> Vec<Row> {
    let dir = temp_dir();
    let port = free_port();
    let config = door_config(dir.path(), port);
    let mut door = Command::new(bin("vllm-model-manager"))
        .arg("--gateway")
        .env("VLLM_MCP_CONFIG", &config)
        .env("VLLM_MCP_BENCH_DOOR_KEY", "bench-key")
        .env("VLLM_MCP_FAKE_GPUS", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the door");
    let t = Instant::now();
    while http_status(port, "/health") != Some(200) && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/page.py");
    let out = Command::new(&b.python)
        .arg(script)
        .args(["measure", &format!("http://127.0.0.1:{port}"), "bench-key"])
        .arg(dir.path())
        .arg(&b.chromium)
        .output();
    let _ = door.kill();
    let _ = door.wait();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).to_string(),
        Ok(o) => panic!(
            "the page's measure failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run {}: {e}", b.python.display()),
    };
    let figure = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("figure {name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no figure {name} in:\n{text}"))
    };
    let gz = figure("page_gzip_bytes");
    let fcp = figure("first_contentful_paint_ms_median");
    vec![
        Row::target(
            "the page and its assets, gzipped (as served)",
            "< 150 KB",
            format!(
                "{:.1} KB ({:.1} KB)",
                gz / 1000.0,
                figure("page_bytes") / 1000.0
            ),
            gz < 150_000.0,
        ),
        Row::target(
            "first contentful paint in Chromium, loopback (median of 20 loads)",
            "< 200 ms",
            format!(
                "median {fcp:.0} ms, max {:.0} ms",
                figure("first_contentful_paint_ms_max")
            ),
            fcp < 200.0,
        ),
    ]
}

fn door_config(dir: &Path, port: u16) -> PathBuf {
    let mock = bin("mock-vllm");
    let base = free_port();
    let text = format!(
        "data_dir = {data:?}\n[launcher]\ncommand = [{mock:?}]\nport_range = [{base}, {hi}]\n\
         [gateway]\nlisten = \"127.0.0.1:{port}\"\napi_key_env = \"VLLM_MCP_BENCH_DOOR_KEY\"\n\
         [catalog.tiny]\nsource = \"mock/tiny\"\n[catalog.other]\nsource = \"mock/other\"\n",
        data = dir.join("data").display().to_string(),
        mock = mock.display().to_string(),
        hi = base.saturating_add(20),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("config");
    path
}
