//! A bare JSON-RPC client over a child's stdio: one line per message, no SDK in between.
//!
//! The benchmark suite times servers through it, so it does as little as it can:
//! blocking writes and reads on the calling thread, one `serde_json` parse per line. It
//! speaks to any MCP server on stdio (ours and the Python peer alike), and lets a test
//! send what no SDK would: lines that are not JSON, unknown methods, huge messages.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The protocol version the suite asks for: one that every server measured supports.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// A spawned MCP server and the two ends of its stdio.
pub struct Wire {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
    line: String,
    /// Messages read while waiting for an answer that were not it.
    skipped: Vec<Value>,
}

impl Wire {
    /// Spawns `cmd` in a process group of its own, stdout piped, stderr discarded.
    pub fn spawn(cmd: Command) -> Wire {
        Wire::spawn_with_stderr(cmd, Stdio::null())
    }

    /// [`Wire::spawn`] with the server's stderr (its logs) sent to `stderr`.
    pub fn spawn_with_stderr(mut cmd: Command, stderr: Stdio) -> Wire {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Wire {
            child,
            stdin,
            stdout,
            next_id: 1,
            line: String::new(),
            skipped: Vec::new(),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one message.
    pub fn send(&mut self, msg: &Value) {
        let mut text = msg.to_string();
        text.push('\n');
        self.send_raw(text.as_bytes());
    }

    /// Writes raw bytes as they are (a test's malformed line).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.write(bytes).expect("write to the server");
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().ok_or(std::io::ErrorKind::BrokenPipe)?;
        stdin.write_all(bytes)?;
        stdin.flush()
    }

    /// The next message the server writes; `None` when it closed stdout.
    pub fn next_message(&mut self) -> Option<Value> {
        loop {
            self.line.clear();
            if self.stdout.read_line(&mut self.line).ok()? == 0 {
                return None;
            }
            if let Ok(v) = serde_json::from_str(&self.line) {
                return Some(v);
            }
        }
    }

    /// Sends a request and returns the whole answer (`result` or `error`), skipping
    /// notifications; `None` when the server is gone (a test that kills it mid-call).
    pub fn try_request_raw(&mut self, method: &str, params: Value) -> Option<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut text =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        text.push('\n');
        self.write(text.as_bytes()).ok()?;
        loop {
            let msg = self.next_message()?;
            if msg.get("id") == Some(&json!(id)) {
                return Some(msg);
            }
            // Notifications and errors to other lines; kept for a test to look at,
            // at most the last 64.
            if self.skipped.len() == 64 {
                self.skipped.remove(0);
            }
            self.skipped.push(msg);
        }
    }

    /// [`Wire::try_request_raw`] that panics when the server is gone.
    pub fn request_raw(&mut self, method: &str, params: Value) -> Value {
        self.try_request_raw(method, params)
            .unwrap_or_else(|| panic!("the server closed stdout while {method} was pending"))
    }

    /// The messages skipped while waiting for answers since the last call.
    pub fn take_skipped(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.skipped)
    }

    /// Sends a request and returns its `result`; panics on an error answer.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let msg = self.request_raw(method, params);
        if let Some(e) = msg.get("error") {
            panic!("{method}: {e}");
        }
        msg.get("result").cloned().unwrap_or(Value::Null)
    }

    /// The MCP handshake: `initialize`, then `notifications/initialized`.
    pub fn initialize(&mut self) -> Value {
        let r = self.request(
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "vllm-mcp-wire", "version": env!("CARGO_PKG_VERSION")}
            }),
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        r
    }

    /// `tools/call`, returning the result (its `isError` is the caller's to check).
    pub fn call(&mut self, tool: &str, args: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": args}))
    }

    /// `resources/read`.
    pub fn read(&mut self, uri: &str) -> Value {
        self.request("resources/read", json!({"uri": uri}))
    }

    /// Closes stdin and waits for the exit (the way a client leaves), killing the group
    /// after `grace`; returns how long the exit took.
    pub fn close(mut self, grace: Duration) -> Duration {
        let t = Instant::now();
        drop(self.stdin.take());
        while t.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        t.elapsed()
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill only sends a signal to the group this Wire started.
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// The text content of a `tools/call` result, parsed as JSON when it is JSON.
pub fn text_of(result: &Value) -> Value {
    let text: String = result["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str())
        .collect();
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}
