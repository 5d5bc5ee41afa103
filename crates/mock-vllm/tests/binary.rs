//! The `mock-vllm` binary as a process: command line, start-up failures (stderr and exit code as
//! captured in tests/data/vllm-reference/startup-failures), start delay, signals and the process
//! tree.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mock-vllm");
const REF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/vllm-reference"
);

fn capture(name: &str) -> String {
    std::fs::read_to_string(format!("{REF}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn model_dir(max_pos: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"architectures":["LlamaForCausalLM"],"max_position_embeddings":{max_pos}}}"#),
    )
    .unwrap();
    dir
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("VLLM_API_KEY")
        .env_remove("HF_HUB_OFFLINE")
        .env("MOCK_VLLM_FAIL_DELAY", "0.05")
        .env("MOCK_VLLM_ORPHAN_LINGER", "20")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Runs to completion (with a deadline): (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut child = command(args, env).spawn().expect("spawn");
    let code = wait_exit(&mut child, Duration::from_secs(20)).expect("exits");
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, out, err)
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stdout lines as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for "Starting vLLM server on http://127.0.0.1:PORT"; returns PORT and the lines seen.
fn wait_serving(rx: &mpsc::Receiver<String>) -> (u16, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut port = None;
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        if let Some(rest) = line
            .split("Starting vLLM server on http://127.0.0.1:")
            .nth(1)
        {
            port = rest.trim().parse().ok();
        }
        let done = line.contains("Application startup complete.");
        seen.push(line);
        if done {
            return (port.expect("port"), seen);
        }
    }
    panic!("server did not start: {seen:?}");
}

/// GET over a raw socket: None when the connection is refused.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut f = rest.split_whitespace();
    let state = f.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    f.next()?.parse().ok()
}

fn alive(pid: i32) -> bool {
    ppid_of(pid).is_some()
}

/// Every live descendant of `root`.
fn descendants(root: i32) -> Vec<i32> {
    let all: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| Some((p, ppid_of(p)?)))
        .collect();
    let mut out = vec![];
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &all {
            if *pp == p {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a process this test started.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// SIGTERMs a server this test started if the test ends early (a failed assertion).
struct TermOnDrop(i32);

impl Drop for TermOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            signal(self.0, libc::SIGTERM);
        }
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn unknown_flag_exits_2_with_argparse_text() {
    let (code, out, err) = run(&["serve", "/models/x", "--no-such-flag"], &[]);
    assert_eq!(code, 2);
    assert_eq!(out, "");
    let captured = capture("startup-failures/fail-bad-flag.stderr");
    // The capture starts with a Triton warning printed by Python imports.
    let expected = captured.split_once('\n').unwrap().1;
    assert_eq!(err, expected);
    assert!(capture("startup-failures/fail-bad-flag.rc").contains("rc=2"));
    let (code, _, err) = run(&["serve", "/models/x", "--dtype", "float64"], &[]);
    assert_eq!(code, 2);
    assert!(err.ends_with("vllm serve: error: argument --dtype: invalid choice: 'float64' (choose from 'auto', 'half', 'float16', 'bfloat16', 'float', 'float32')\n"), "{err}");
    let (code, _, err) = run(&["serve", "/models/x", "--port", "abc"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("argument --port: invalid int value: 'abc'"));
}

#[test]
fn startup_failures_print_the_captured_text() {
    let fails = |name: &str| {
        let stderr = capture(&format!("startup-failures/{name}.stderr"));
        let rc = capture(&format!("startup-failures/{name}.rc"));
        assert!(rc.contains("rc=1"));
        stderr
    };
    let common = [
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--served-model-name",
        "tiny",
    ];
    // missing model path
    let (code, out, err) = run(
        &[&["serve", "/models/no-such-model"][..], &common].concat(),
        &[],
    );
    assert_eq!((code, err.as_str()), (1, fails("fail-no-model").as_str()));
    assert!(out.contains("non-default args: {'model_tag': '/models/no-such-model'"));
    // empty directory
    let empty = tempfile::tempdir().unwrap();
    let p = empty.path().to_str().unwrap();
    let (code, _, err) = run(&[&["serve", p][..], &common].concat(), &[]);
    assert_eq!(
        (code, err),
        (1, fails("fail-empty-dir").replace("/models/empty-dir", p))
    );
    // max_model_len above the model's
    let dir = model_dir(2048);
    let p = dir.path().to_str().unwrap();
    let (code, out, err) = run(
        &[&["serve", p, "--max-model-len", "4096"][..], &common].concat(),
        &[],
    );
    assert_eq!(
        (code, err.as_str()),
        (1, fails("fail-maxlen-too-big").as_str())
    );
    assert!(out.contains("Resolved architecture: LlamaForCausalLM"));
    // hub id, hub unreachable / offline
    let hub = "nonexistent-org/nonexistent-model";
    let (code, _, err) = run(
        &[&["serve", hub][..], &common].concat(),
        &[("MOCK_VLLM_HUB", "unreachable")],
    );
    assert_eq!((code, err.as_str()), (1, fails("fail-hub-repo").as_str()));
    let (code, _, err) = run(
        &[&["serve", hub][..], &common].concat(),
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert_eq!(
        (code, err.as_str()),
        (1, fails("fail-hub-repo-offline").as_str())
    );
    // port in use, detected for real
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, _, err) = run(&["serve", p, "--host", "127.0.0.1", "--port", &port], &[]);
    assert_eq!(
        (code, err.as_str()),
        (1, fails("fail-port-in-use").as_str())
    );
    // forced engine failures
    let (code, _, err) = run(
        &[&["serve", p][..], &common].concat(),
        &[("MOCK_VLLM_FAIL", "oom")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"));
    let (code, _, err) = run(
        &[&["serve", p][..], &common].concat(),
        &[("MOCK_VLLM_FAIL", "kv-cache")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine."));
}

#[test]
fn refuses_connections_during_start_delay_then_serves() {
    let dir = model_dir(2048);
    let port = free_port();
    let ps = port.to_string();
    let t0 = Instant::now();
    let mut child = command(
        &[
            "serve",
            dir.path().to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            &ps,
        ],
        &[("MOCK_VLLM_START_DELAY", "1.0")],
    )
    .spawn()
    .unwrap();
    let _guard = TermOnDrop(child.id() as i32);
    // While starting: refused (the port is bound, not listening).
    std::thread::sleep(Duration::from_millis(300));
    assert!(http(port, "GET", "/health", "").is_none());
    assert!(wait_until(Duration::from_secs(10), || http(
        port, "GET", "/health", ""
    )
    .is_some_and(|r| r.0 == 200)));
    assert!(t0.elapsed() >= Duration::from_millis(900));
    signal(child.id() as i32, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), Some(0));
}

#[test]
fn sigterm_exits_0_and_leaves_no_child() {
    let dir = model_dir(2048);
    let mut child = command(
        &[
            "serve",
            dir.path().to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--api-key",
            "s3cret",
            "--served-model-name",
            "tiny",
        ],
        &[("MOCK_VLLM_START_DELAY", "0.1")],
    )
    .spawn()
    .unwrap();
    let _guard = TermOnDrop(child.id() as i32);
    let rx = lines(&mut child);
    let (port, seen) = wait_serving(&rx);
    assert!(
        seen.iter().any(|l| l.contains("'api_key': '***'")),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|l| l.contains("s3cret")));
    assert_eq!(http(port, "GET", "/health", "").map(|r| r.0), Some(200));
    let pid = child.id() as i32;
    let tree = descendants(pid);
    assert_eq!(tree.len(), 2, "engine core and worker");
    let names: Vec<String> = tree.iter().map(|p| comm(*p)).collect();
    assert!(
        names.contains(&"VLLM::EngineCor".to_string())
            && names.contains(&"VLLM::Worker".to_string()),
        "{names:?}"
    );
    // Same process group as the server.
    // SAFETY: getpgid has no preconditions.
    let pgid = unsafe { libc::getpgid(pid) };
    assert!(tree.iter().all(|p| unsafe { libc::getpgid(*p) } == pgid));
    let t = Instant::now();
    signal(pid, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), Some(0));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        wait_until(Duration::from_secs(2), || tree.iter().all(|p| !alive(*p))),
        "children left"
    );
}

#[test]
fn sigkill_leaves_orphans_like_vllm() {
    let dir = model_dir(2048);
    let mut child = command(
        &[
            "serve",
            dir.path().to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        &[("MOCK_VLLM_START_DELAY", "0.1")],
    )
    .spawn()
    .unwrap();
    let _guard = TermOnDrop(child.id() as i32);
    let rx = lines(&mut child);
    wait_serving(&rx);
    let tree = descendants(child.id() as i32);
    assert_eq!(tree.len(), 2);
    child.kill().unwrap();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        tree.iter().all(|p| alive(*p)),
        "children survive their parent's SIGKILL"
    );
    for p in &tree {
        signal(*p, libc::SIGTERM);
    }
    assert!(wait_until(Duration::from_secs(5), || tree
        .iter()
        .all(|p| !alive(*p))));
}

#[test]
fn worker_death_gives_503_then_exit_0() {
    let dir = model_dir(2048);
    let mut child = command(
        &[
            "serve",
            dir.path().to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        &[
            ("MOCK_VLLM_START_DELAY", "0.1"),
            ("MOCK_VLLM_WORKER_DEATH_AFTER", "0.5"),
            ("MOCK_VLLM_DEATH_503_SECONDS", "1.5"),
        ],
    )
    .spawn()
    .unwrap();
    let _guard = TermOnDrop(child.id() as i32);
    let rx = lines(&mut child);
    let (port, _) = wait_serving(&rx);
    let tree = descendants(child.id() as i32);
    assert_eq!(http(port, "GET", "/health", "").map(|r| r.0), Some(200));
    assert!(wait_until(Duration::from_secs(5), || http(
        port, "GET", "/health", ""
    )
    .is_some_and(|r| r.0 == 503)));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
    assert!(wait_until(Duration::from_secs(3), || tree
        .iter()
        .all(|p| !alive(*p))));
}

#[test]
fn killing_the_worker_for_real_gives_503_then_exit_0() {
    let dir = model_dir(2048);
    let mut child = command(
        &[
            "serve",
            dir.path().to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        &[
            ("MOCK_VLLM_START_DELAY", "0.1"),
            ("MOCK_VLLM_DEATH_503_SECONDS", "1"),
        ],
    )
    .spawn()
    .unwrap();
    let _guard = TermOnDrop(child.id() as i32);
    let rx = lines(&mut child);
    let (port, _) = wait_serving(&rx);
    let tree = descendants(child.id() as i32);
    let worker = *tree
        .iter()
        .find(|p| comm(**p) == "VLLM::Worker")
        .expect("worker");
    signal(worker, libc::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), || http(
        port, "GET", "/health", ""
    )
    .is_some_and(|r| r.0 == 503)));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
}

#[test]
fn crash_after_exits_1_with_the_tree() {
    let dir = model_dir(2048);
    let mut child = command(
        &[
            "serve",
            dir.path().to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        &[
            ("MOCK_VLLM_START_DELAY", "0.1"),
            ("MOCK_VLLM_CRASH_AFTER", "0.5"),
        ],
    )
    .spawn()
    .unwrap();
    let _guard = TermOnDrop(child.id() as i32);
    let rx = lines(&mut child);
    wait_serving(&rx);
    let tree = descendants(child.id() as i32);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(1));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("Traceback (most recent call last):"));
    assert!(wait_until(Duration::from_secs(3), || tree
        .iter()
        .all(|p| !alive(*p))));
}

#[test]
fn serves_completions_with_model_flag_and_override() {
    let dir = model_dir(2048);
    let mut child = command(
        &[
            "serve",
            "--model",
            dir.path().to_str().unwrap(),
            "--host=127.0.0.1",
            "--port",
            "0",
            "--served-model-name",
            "tiny",
            "alias",
            "--override-generation-config",
            r#"{"max_new_tokens": 3, "temperature": 0.0}"#,
        ],
        &[("MOCK_VLLM_START_DELAY", "0")],
    )
    .spawn()
    .unwrap();
    let _guard = TermOnDrop(child.id() as i32);
    let rx = lines(&mut child);
    let (port, seen) = wait_serving(&rx);
    assert!(
        seen.iter().any(|l| l
            .contains("'override_generation_config': {'max_new_tokens': 3, 'temperature': 0.0}")),
        "{seen:?}"
    );
    let (s, body) = http(
        port,
        "POST",
        "/v1/completions",
        r#"{"model":"alias","prompt":"def"}"#,
    )
    .unwrap();
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["model"], "alias");
    signal(child.id() as i32, libc::SIGINT);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), Some(0));
}
