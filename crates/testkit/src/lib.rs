//! Test helpers: spawn our binaries and mock-vllm, and talk MCP to them with rmcp's client.
//!
//! Tests go through what a user's client sees: a real process on stdio, a real MCP
//! handshake, JSON in the text content. Binaries are found next to the test executable
//! (`target/<profile>/`), which `cargo test --workspace` builds before any test runs.

pub mod ray;
pub mod wire;

use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ReadResourceRequestParams, ResourceContents, Tool,
};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries for this test run.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("test binary directory");
    // Integration tests live in target/<profile>/deps; binaries one level up.
    if dir.ends_with("deps") {
        dir.parent().expect("profile directory").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of one of the workspace's binaries; panics with the command to build it.
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` (cargo test --workspace does it)",
        p.display()
    );
    p
}

/// Runs `scripts/<name>` (one of the setup scripts that install a test's tools into a
/// cache outside the checkout: `clients.sh`, `browser.sh`, `ray.sh`) and returns the
/// lines it printed (the tools' paths); `None` when it failed (its stderr is the test's).
pub fn setup_script(name: &str) -> Option<Vec<String>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name);
    let out = std::process::Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{name}: {e}"));
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    })
}

/// [`setup_script`] for a test that may be skipped without its tools: `None` (saying
/// so) when the script failed, except under CI, where a skipped test would pass unseen.
pub fn setup_or_skip(name: &str, tools: &str) -> Option<Vec<String>> {
    let lines = setup_script(name);
    if lines.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "scripts/{name} failed: the tests of {tools} cannot be skipped under CI"
        );
        eprintln!("skipped: scripts/{name} could not install {tools}");
    }
    lines
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What a tool call answered, as a client reading the text content sees it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `isError` was set.
    pub is_error: bool,
    /// The text content parsed as JSON (the project's rule: answers are JSON text).
    pub json: Value,
    /// `structuredContent`, when sent.
    pub structured: Option<Value>,
}

impl Answer {
    /// The error code of a failed answer, `None` for a success.
    pub fn code(&self) -> Option<&str> {
        self.json.pointer("/error/code").and_then(Value::as_str)
    }
}

/// Turns a raw result into an [`Answer`], checking the envelope rules on the way.
pub fn answer_of(r: CallToolResult) -> Answer {
    let text: String = r
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("text content is not JSON ({e}): {text}"));
    let is_error = r.is_error == Some(true);
    assert_eq!(
        json["success"],
        Value::Bool(!is_error),
        "success must mirror isError: {json}"
    );
    if is_error {
        assert!(
            r.structured_content.is_none(),
            "failures carry no structuredContent"
        );
    }
    Answer {
        is_error,
        json,
        structured: r.structured_content,
    }
}

/// An MCP server process with a connected rmcp client.
pub struct McpProcess {
    pub client: RunningService<RoleClient, ()>,
    /// The server's process id.
    pub pid: u32,
}

impl McpProcess {
    /// Spawns `bin` with extra environment and completes the MCP handshake.
    pub async fn spawn(bin: &Path, env: &[(&str, &str)]) -> McpProcess {
        let mut cmd = tokio::process::Command::new(bin);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Test output stays readable: the server's logs go to a null sink unless asked for.
        let stderr = if std::env::var_os("VLLM_MCP_TEST_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let (transport, _) = TokioChildProcess::builder(cmd)
            .stderr(stderr)
            .spawn()
            .expect("spawn the server");
        let pid = transport.id().expect("server pid");
        let client = ().serve(transport).await.expect("MCP handshake");
        McpProcess { client, pid }
    }

    /// Calls a tool and returns what a client sees; panics on a protocol error.
    pub async fn call(&self, tool: &str, args: Value) -> Answer {
        answer_of(self.call_raw(tool, args).await.expect("tools/call"))
    }

    /// Calls a tool, returning protocol errors instead of panicking.
    pub async fn call_raw(&self, tool: &str, args: Value) -> Result<CallToolResult, ServiceError> {
        let mut p = CallToolRequestParams::new(tool.to_string());
        if let Value::Object(o) = args {
            p = p.with_arguments(o);
        }
        self.client.call_tool(p).await
    }

    /// Every tool the server lists.
    pub async fn tools(&self) -> Vec<Tool> {
        self.client.list_all_tools().await.expect("tools/list")
    }

    /// Reads a resource as text.
    pub async fn read(&self, uri: &str) -> Result<String, ServiceError> {
        let r = self
            .client
            .read_resource(ReadResourceRequestParams::new(uri))
            .await?;
        Ok(r.contents
            .into_iter()
            .map(|c| match c {
                ResourceContents::TextResourceContents { text, .. } => text,
                ResourceContents::BlobResourceContents { blob, .. } => blob,
                _ => String::new(),
            })
            .collect())
    }

    /// The concrete resources the server lists.
    pub async fn resource_uris(&self) -> Vec<String> {
        self.client
            .list_all_resources()
            .await
            .expect("resources/list")
            .into_iter()
            .map(|r| r.uri.clone())
            .collect()
    }

    /// Closes stdin and waits for the server to exit.
    pub async fn close(mut self) {
        let _ = self.client.close_with_timeout(Duration::from_secs(5)).await;
    }
}

/// A mock-vllm server process (a process tree in its own process group), killed on drop.
pub struct MockVllm {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
}

impl MockVllm {
    /// Starts `mock-vllm serve <args> --port <free port>` and waits until `/health` answers.
    ///
    /// The port is free when picked but another test may bind it before the mock does;
    /// the mock then exits at once (as vLLM does on a port in use) and is started again
    /// on a new port, up to three times, rather than waited for in vain.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> MockVllm {
        let timeout = Duration::from_secs(20);
        for _ in 0..2 {
            let mut m = MockVllm::spawn(args, env);
            if m.ready_unless_exited(timeout).is_none() {
                return m;
            }
        }
        let mut m = MockVllm::spawn(args, env);
        if let Some(status) = m.ready_unless_exited(timeout) {
            panic!("mock-vllm {args:?} exited before it was ready ({status}), three times");
        }
        m
    }

    /// Waits until `/health` answers 200 (`None`) or the process exits (its status).
    /// Panics when neither happens within `timeout`.
    fn ready_unless_exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if http_status(self.port, "/health") == Some(200) {
                return None;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "mock-vllm on port {} not ready within {timeout:?}",
            self.port
        );
    }

    /// Starts it without waiting.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> MockVllm {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let mut cmd = Command::new(bin("mock-vllm"));
        cmd.arg("serve")
            .args(args)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        cmd.env("MOCK_VLLM_START_DELAY", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().expect("spawn mock-vllm");
        MockVllm {
            child,
            port,
            base_url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Waits until the port accepts connections and `/health` answers 200.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if http_status(self.port, "/health") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "mock-vllm on port {} not ready within {timeout:?}",
            self.port
        );
    }

    /// The process group's id (the API server's pid).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for MockVllm {
    fn drop(&mut self) {
        // SIGKILL the whole group: the mock, like vLLM, runs child processes.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET on loopback returning the status code, for readiness checks.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_status_at([127, 0, 0, 1], port, path)
}

/// [`http_status`] on another loopback address (`127.0.0.3`, a Ray node's).
pub fn http_status_at(ip: [u8; 4], port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(200))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let host = std::net::Ipv4Addr::from(ip);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// A local model directory `parent/name`: a small Llama's config.json and `gib` GiB of
/// weights (a sparse file: the memory estimate reads its size, nothing reads its bytes).
pub fn model_dir(parent: &Path, name: &str, gib: u64) -> String {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).expect("model dir");
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures":["LlamaForCausalLM"],"max_position_embeddings":2048,"hidden_size":64,
            "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "head_dim":32,"vocab_size":1024,"torch_dtype":"float16"}"#,
    )
    .expect("config.json");
    let weights = std::fs::File::create(dir.join("model.safetensors")).expect("weights");
    weights.set_len(gib << 30).expect("sparse weights");
    dir.display().to_string()
}

/// A fresh temporary directory for a server's data.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vllm-mcp-test-")
        .tempdir()
        .expect("temp dir")
}

/// What every server binary must do, checked through a real process: the MCP handshake
/// with `serverInfo.name` = the binary's name and a version no newer than 2025-11-25,
/// `server-health` answering JSON text with a working store, and a prompt exit when
/// stdin closes. Returns the health answer for server-specific checks.
pub async fn check_server_binary(bin: &Path, name: &str) -> Answer {
    let data = temp_dir();
    let data_dir = data.path().to_str().expect("utf-8 temp path").to_string();
    let server = McpProcess::spawn(
        bin,
        &[
            ("VLLM_MCP_DATA_DIR", &data_dir),
            ("VLLM_MCP_FAKE_GPUS", "2"),
        ],
    )
    .await;
    let info = server.client.peer_info().expect("peer info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some(name)
    );
    assert!(
        info.protocol_version.as_str() <= "2025-11-25",
        "{:?}",
        info.protocol_version
    );
    let tools = server.tools().await;
    assert!(tools.iter().any(|t| t.name == "server-health"));
    for t in &tools {
        let mut formats = Vec::new();
        let input = serde_json::Value::Object((*t.input_schema).clone());
        schema_formats(&input, &mut formats);
        if let Some(output) = &t.output_schema {
            schema_formats(&serde_json::Value::Object((**output).clone()), &mut formats);
        }
        formats.retain(|f| {
            ![
                "date-time",
                "uri",
                "email",
                "hostname",
                "ipv4",
                "ipv6",
                "uuid",
            ]
            .contains(&f.as_str())
        });
        assert!(
            formats.is_empty(),
            "{}: formats JSON Schema does not define: {formats:?}",
            t.name
        );
    }
    let health = server.call("server-health", serde_json::json!({})).await;
    assert!(!health.is_error, "{}", health.json);
    assert_eq!(health.json["server"], name);
    assert_eq!(health.json["store"]["ok"], true, "{}", health.json);
    assert_eq!(health.json["nvml"]["gpu_count"], 2);
    assert!(Path::new(&data_dir).join("vllm-mcp.db").exists());
    let pid = server.pid;
    let t = Instant::now();
    server.close().await;
    while process_alive(pid) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !process_alive(pid),
        "the server must exit when stdin closes"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "exit took {:?}",
        t.elapsed()
    );
    health
}

/// Every `format` value in a JSON schema, nested ones too.
pub fn schema_formats(schema: &serde_json::Value, out: &mut Vec<String>) {
    match schema {
        serde_json::Value::Object(o) => {
            if let Some(serde_json::Value::String(f)) = o.get("format") {
                out.push(f.clone());
            }
            o.values().for_each(|v| schema_formats(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| schema_formats(v, out)),
        _ => {}
    }
}

/// True while `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// A `kB` figure of `/proc/<pid>/status` (`"VmRSS:"`, `"VmHWM:"`, ...); 0 when absent.
pub fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds `pid` has spent so far (from `/proc/<pid>/stat`).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15: the 12th and 13th after the name.
    (ticks(11) + ticks(12)) / hz
}

/// The other half of the contract: a server given an invalid config refuses to start
/// with exit code 2, prints nothing on stdout (the protocol channel), and names the key
/// and the file on stderr.
pub fn check_bad_config_refused(bin: &Path) {
    let dir = temp_dir();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[launcher]\nport_range = [9, 1]\n").expect("write config");
    let out = Command::new(bin)
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run the server");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "stdout is the protocol channel");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("launcher.port_range") && err.contains("config.toml"),
        "{err}"
    );
}

/// A server under test with its own world: a data directory, a config file with
/// mock-vllm as the vLLM command and a private port range (so tests run in parallel),
/// and a guard that kills, on drop, every process the rig's servers started.
///
/// Every process a rig spawns carries `VLLM_MCP_TEST_RIG=<its id>` in its environment,
/// and launched vLLM servers inherit it; the guard finds them in `/proc` by that marker,
/// so it needs nothing from the store and cannot miss a server a failed test left.
pub struct ServerRig {
    pub dir: tempfile::TempDir,
    /// The config file; `VLLM_MCP_CONFIG` points at it.
    pub config: PathBuf,
    marker: String,
}

impl ServerRig {
    /// The config holds `data_dir`, then `extra` TOML, then `[launcher]` (mock-vllm,
    /// a 41-port range, short grace and health timeouts) and `[launcher.env]` last, so
    /// [`ServerRig::with_launcher_env`] can add to it.
    pub fn new(extra: &str) -> ServerRig {
        let mock = bin("mock-vllm");
        ServerRig::with_vllm(extra, &mock, 3.0, 60.0, &[("MOCK_VLLM_START_DELAY", "0.3")])
    }

    /// Like [`ServerRig::new`] with another vLLM command (a real `vllm`), its grace and
    /// health timeouts, and `[launcher.env]` entries.
    pub fn with_vllm(
        extra: &str,
        command: &Path,
        grace_seconds: f64,
        health_timeout_seconds: f64,
        env: &[(&str, &str)],
    ) -> ServerRig {
        let dir = temp_dir();
        let base = free_port().clamp(20_000, 60_000);
        let config = dir.path().join("config.toml");
        let marker = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        // The marker is in [launcher.env] too: servers launched by any launcher using
        // this config (a test's own in-process one included) carry it.
        let mut text = format!(
            "data_dir = {data:?}\n{extra}\n[launcher]\ncommand = [{command:?}]\nport_range = [{base}, {hi}]\n\
             grace_period_seconds = {grace_seconds:?}\nhealth_timeout_seconds = {health_timeout_seconds:?}\n\
             [launcher.env]\nVLLM_MCP_TEST_RIG = {marker:?}\n",
            data = dir.path().display().to_string(),
            command = command.display().to_string(),
            hi = base + 40,
        );
        for (k, v) in env {
            text.push_str(&format!("{k} = {v:?}\n"));
        }
        std::fs::write(&config, text).expect("write config");
        ServerRig {
            dir,
            config,
            marker,
        }
    }

    /// Sets `[launcher.env]` entries (replacing ones already there).
    pub fn with_launcher_env(self, pairs: &[(&str, &str)]) -> ServerRig {
        let text: String = std::fs::read_to_string(&self.config)
            .expect("read config")
            .lines()
            .filter(|l| !pairs.iter().any(|(k, _)| l.starts_with(&format!("{k} ="))))
            .map(|l| format!("{l}\n"))
            .collect();
        // Into the [launcher.env] table, wherever later tables were added after it.
        let added: String = pairs
            .iter()
            .map(|(k, v)| format!("{k} = {v:?}\n"))
            .collect();
        let text = text.replacen("[launcher.env]\n", &format!("[launcher.env]\n{added}"), 1);
        std::fs::write(&self.config, text).expect("write config");
        self
    }

    /// Adds `lines` to the `[launcher]` table (`backend = "ray"`), and `tables` (whole
    /// TOML tables such as `[launcher.ray]`) at the end of the config.
    pub fn with_launcher(self, lines: &[&str], tables: &str) -> ServerRig {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let mut text = text.replacen(
            "[launcher]\n",
            &format!("[launcher]\n{}\n", lines.join("\n")),
            1,
        );
        text.push_str(tables);
        text.push('\n');
        std::fs::write(&self.config, text).expect("write config");
        self
    }

    /// The rig with the launcher's Ray backend on the cluster whose dashboard is
    /// `address`; `ray_extra` adds lines to `[launcher.ray]` (`resources = ...`).
    pub fn on_ray(self, address: &str, ray_extra: &str) -> ServerRig {
        self.with_launcher(
            &["backend = \"ray\""],
            &format!("[launcher.ray]\naddress = {address:?}\n{ray_extra}"),
        )
    }

    /// The store file of the rig's servers.
    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("vllm-mcp.db")
    }

    /// The marker variable, for a test that spawns a server itself.
    pub fn marker_env(&self) -> (&str, &str) {
        ("VLLM_MCP_TEST_RIG", &self.marker)
    }

    /// The command of the workspace binary `name` with the rig's config and marker, for
    /// a test that drives it itself (through [`wire::Wire`], say).
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(bin(name));
        let (k, v) = self.marker_env();
        cmd.env("VLLM_MCP_CONFIG", &self.config).env(k, v);
        cmd
    }

    /// `vllm-model-manager --gateway` (the front door as a service) with the rig's config
    /// and marker plus `env`, once it answers `/health` on `port` (the rig's
    /// `[gateway] listen`). Panics when it exits first or takes over 15 s.
    pub fn spawn_door(&self, port: u16, env: &[(&str, &str)]) -> std::process::Child {
        let mut cmd = self.command("vllm-model-manager");
        cmd.arg("--gateway")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn the gateway");
        let t = std::time::Instant::now();
        while http_status(port, "/health") != Some(200) {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("the gateway exited: {s}");
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(15),
                "the gateway never served /health"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child
    }

    /// Spawns `bin` with the rig's config and marker, plus `env`.
    pub async fn spawn(&self, bin: &Path, env: &[(&str, &str)]) -> McpProcess {
        let mut all = vec![
            ("VLLM_MCP_CONFIG", self.config.to_str().expect("utf-8 path")),
            self.marker_env(),
        ];
        all.extend_from_slice(env);
        McpProcess::spawn(bin, &all).await
    }
}

impl ServerRig {
    /// Live processes carrying the rig's marker: its MCP servers and every vLLM server
    /// they launched, with all their children.
    pub fn marked_pids(&self) -> Vec<i32> {
        let needle = format!("VLLM_MCP_TEST_RIG={}", self.marker);
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|environ| environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
            })
            .collect()
    }

    /// The marked processes whose command line (arguments joined by NUL) contains
    /// `needle`: `"mock-vllm"` for every launched mock server and its children,
    /// `"mock-vllm\0serve\0"` for the leaders.
    pub fn marked_running(&self, needle: &str) -> Vec<i32> {
        self.marked_pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmd| cmd.contains(needle))
            })
            .collect()
    }
}

impl Drop for ServerRig {
    fn drop(&mut self) {
        for pid in self.marked_pids() {
            let pgid = unsafe { libc::getpgid(pid) };
            // Never our own group: the test process does not carry the marker, but be sure.
            if pgid > 1 && pgid != unsafe { libc::getpgid(0) } {
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            } else {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// This test binary re-executed to run one `#[test]` function (`entry`) as a child
/// process, for tests that need several real processes on one store. The entry reads
/// its role from `env` and does nothing without it; parent and child talk in lines
/// over the child's stdin and stdout. The child is killed if the parent's test fails.
pub struct TestChild {
    /// The process, for tests that kill it with or without reaping it.
    pub child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl TestChild {
    /// Spawns the child running `entry` with `env` added.
    pub fn spawn(entry: &str, env: &[(&str, &std::ffi::OsStr)]) -> TestChild {
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.args([
            "--exact",
            entry,
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        TestChild {
            child,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The payload of the next stdout line that starts with `tag`.
    pub fn expect_line(&mut self, tag: &str) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("read child stdout");
            assert!(n > 0, "child exited before printing {tag}");
            if let Some(rest) = line.trim_end().strip_prefix(tag) {
                return rest.trim().to_owned();
            }
        }
    }

    /// Sends one line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write child stdin");
        stdin.flush().expect("flush");
    }

    /// Closes stdin and asserts the child exits successfully.
    pub fn wait_success(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait child");
        assert!(status.success(), "child failed: {status}");
    }
}

impl Drop for TestChild {
    fn drop(&mut self) {
        // Never leave a child behind when an assertion fails.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
