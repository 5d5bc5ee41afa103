//! vLLM-like log lines (`(APIServer pid=N) INFO 11-24 05:00:40 [file.py:123] message`) on stdout.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silences every log line of this process (used by the in-process test server).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// `MM-DD HH:MM:SS` in local time, as vLLM's formatter prints it.
pub fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r only writes into the provided struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe {
        libc::localtime_r(&now, &mut tm);
    }
    format!(
        "{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// One vLLM log line: `(ROLE pid=PID) LEVEL MM-DD HH:MM:SS [SRC] MSG`; every line of a
/// multi-line message gets the prefix, as vLLM's formatter does.
pub fn vlog(role: &str, level: &str, src: &str, msg: &str) {
    if is_quiet() {
        return;
    }
    let pid = std::process::id();
    let ts = timestamp();
    let mut out = std::io::stdout().lock();
    for line in msg.split('\n') {
        let _ = writeln!(out, "({role} pid={pid}) {level} {ts} [{src}] {line}");
    }
    let _ = out.flush();
}

/// A plain line on stdout (uvicorn's `INFO:     ...` lines).
pub fn plain(line: &str) {
    if is_quiet() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Text on stderr, as Python tracebacks go there.
pub fn stderr(text: &str) {
    if is_quiet() {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = err.write_all(b"\n");
    }
    let _ = err.flush();
}

/// `(APIServer pid=N) INFO ...`
pub fn api_info(src: &str, msg: &str) {
    vlog("APIServer", "INFO", src, msg);
}

pub fn api_warn(src: &str, msg: &str) {
    vlog("APIServer", "WARNING", src, msg);
}

pub fn api_error(src: &str, msg: &str) {
    vlog("APIServer", "ERROR", src, msg);
}
