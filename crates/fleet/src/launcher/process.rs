//! Detached `vllm serve` process groups: spawn, log, stop, measure.
//!
//! A launched server must outlive the MCP server that started it: MCP clients stop
//! their servers by SIGKILL of the server's process group, and loaded models are
//! adopted by the next instance. So [`spawn_detached`] starts every server in a new
//! **session** (`setsid`), which also makes it the leader of a new process group
//! (pgid = pid) with no controlling terminal: neither a group kill aimed at us nor a
//! terminal hang-up reaches it. Its stdin is `/dev/null` and its stdout and stderr are
//! appended to a per-model log file; it never inherits our stdout, the JSON-RPC
//! channel.
//!
//! `vllm serve` runs three processes (API server, EngineCore, Worker). SIGTERM to
//! the API server takes the others down, but SIGKILL to it alone leaves them
//! running as orphans holding GiBs, still in the group. So everything here signals
//! and observes the **group** ([`stop_group`], [`group_members`]), never one pid.
//!
//! Status is observed, not remembered: whether a group lives is read from `/proc`
//! each time, which works the same for groups this process started and for groups
//! adopted from a previous instance. While this process lives it reaps its own
//! children (a background thread per child) and records each exit in
//! `<log>.exit` ([`exit_status`]), so the exit code survives for whoever asks.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use vllm_core::coordination::{process_alive, process_start_time};
use vllm_core::error::{Error, Result};
use vllm_core::redact::{redact_args, redact_text};

/// Every launch appends one line starting with this to the log before the server's
/// own output. Whatever follows the last such line belongs to the latest run (logs
/// are appended across restarts), which is what start-up failure classification reads.
pub const LOG_HEADER_MARKER: &str = "==== vllm-mcp launch";

/// How long [`stop_group`] waits after SIGKILL for the kernel to finish the
/// processes off. A process in uninterruptible sleep (a GPU driver call tearing down
/// memory) dies only when it leaves the kernel, which can take seconds.
const KILL_SETTLE: Duration = Duration::from_secs(5);

/// What to run, and where its output goes.
///
/// `Debug` shows the arguments redacted and only the names of the environment
/// variables, so a spec may be logged.
#[derive(Clone, Default)]
pub struct SpawnSpec {
    /// The executable: a path, or a name looked up in `PATH` (the child's `PATH`
    /// when `env` sets one).
    pub program: String,
    pub args: Vec<String>,
    /// Variables set in the child, on top of this process's environment.
    pub env: Vec<(String, String)>,
    /// Variables removed from the child's environment. Applied after `env`, so a
    /// name in both is removed.
    pub env_remove: Vec<String>,
    /// The log file stdout and stderr are appended to. Its directory is created.
    pub log_path: PathBuf,
    /// Working directory of the child; this process's when `None`.
    pub cwd: Option<PathBuf>,
}

impl SpawnSpec {
    /// A spec with no environment changes and our working directory.
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
        log_path: impl Into<PathBuf>,
    ) -> SpawnSpec {
        SpawnSpec {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            log_path: log_path.into(),
            ..SpawnSpec::default()
        }
    }
}

impl std::fmt::Debug for SpawnSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpawnSpec")
            .field("program", &redact_text(&self.program))
            .field("args", &redact_args(&self.args))
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("env_remove", &self.env_remove)
            .field("log_path", &self.log_path)
            .field("cwd", &self.cwd)
            .finish()
    }
}

/// A process group started by [`spawn_detached`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawned {
    /// The leader: the process that was exec'd.
    pub pid: u32,
    /// Its process group (and session), always equal to `pid`.
    pub pgid: u32,
    /// `/proc/<pid>/stat` field 22, to tell the leader from a later process that
    /// reuses its pid (see [`group_matches`] and [`vllm_core::coordination::process_alive`]).
    pub start_time: Option<u64>,
    pub log_path: PathBuf,
}

impl Spawned {
    /// Where the exit of the leader is recorded.
    pub fn exit_path(&self) -> PathBuf {
        exit_path(&self.log_path)
    }
}

/// How a leader process ended, as recorded by the process that reaped it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal number, when a signal killed it.
    pub signal: Option<i32>,
    /// The pid it had, to match the record with a [`Spawned`].
    pub pid: Option<u32>,
    /// When it was reaped, RFC 3339.
    pub exited_at: Option<String>,
}

impl ExitInfo {
    /// Exit code 0. For vLLM that does not prove a clean stop: when its Worker
    /// dies the server answers 503 for a while and then exits 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    fn from_status(status: ExitStatus, pid: u32) -> ExitInfo {
        ExitInfo {
            code: status.code(),
            signal: status.signal(),
            pid: Some(pid),
            exited_at: Some(vllm_core::time::now_rfc3339()),
        }
    }

    /// The file's text: the code or `signal:N` on the first line (the part readers
    /// need), then `key=value` lines.
    fn to_file_text(&self) -> String {
        let mut s = match (self.code, self.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(sig)) => format!("signal:{sig}"),
            (None, None) => "unknown".to_owned(),
        };
        s.push('\n');
        if let Some(pid) = self.pid {
            s.push_str(&format!("pid={pid}\n"));
        }
        if let Some(at) = &self.exited_at {
            s.push_str(&format!("exited_at={at}\n"));
        }
        s
    }

    fn parse(text: &str) -> Option<ExitInfo> {
        let mut lines = text.lines();
        let first = lines.next()?.trim();
        let (code, signal) = match first.strip_prefix("signal:") {
            Some(sig) => (None, Some(sig.trim().parse().ok()?)),
            None => (Some(first.parse().ok()?), None),
        };
        let mut info = ExitInfo {
            code,
            signal,
            pid: None,
            exited_at: None,
        };
        for line in lines {
            match line.split_once('=') {
                Some(("pid", v)) => info.pid = v.trim().parse().ok(),
                Some(("exited_at", v)) => info.exited_at = Some(v.trim().to_owned()),
                _ => {}
            }
        }
        Some(info)
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(sig)) => match signal_name(sig) {
                Some(name) => write!(f, "killed by signal {sig} ({name})"),
                None => write!(f, "killed by signal {sig}"),
            },
            (None, None) => f.write_str("unknown exit"),
        }
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// What [`stop_group`] did and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// The group had live members when the stop began.
    pub was_running: bool,
    /// Every member exited after SIGTERM, within the grace period.
    pub terminated_gracefully: bool,
    /// SIGKILL was sent to the group (grace expired, or `force`).
    pub killed: bool,
    /// Members still alive at the end (normally empty; a process stuck in the
    /// kernel, or one we may not signal, stays here).
    pub remaining: Vec<u32>,
    /// Time from the call to the verdict.
    pub took: Duration,
}

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// `R`, `S`, `D`, `T`, `Z` (zombie: exited, not reaped), ...
    pub state: char,
    pub ppid: u32,
    pub pgid: u32,
    /// Session id.
    pub sid: u32,
    /// Threads of the process not yet released (`num_threads`).
    pub threads: u32,
}

impl ProcessInfo {
    /// Not dead: it runs, sleeps or is stopped, and holds its memory and files. A
    /// zombie whose other threads are still exiting is live too: `/proc` shows the
    /// main thread's state, which turns `Z` as soon as that thread ends, while the
    /// others may still hold the listening socket (a sticky port seen taken) and the
    /// memory. Only when the last thread is released is the process gone.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x') || self.threads > 1
    }
}

/// `/proc/<pid>/stat` of `pid`; `None` when it does not exist (or no `/proc`).
pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgid = f.next()?.parse().ok()?;
    let sid = f.next()?.parse().ok()?;
    // Fields 7 to 19 (tty_nr .. nice), then num_threads (field 20).
    let threads = f.nth(13)?.parse().ok()?;
    Some(ProcessInfo {
        pid,
        state,
        ppid,
        pgid,
        sid,
        threads,
    })
}

/// `<log_path>.exit`: where the reaper records the leader's exit.
pub fn exit_path(log_path: &Path) -> PathBuf {
    let mut s = log_path.as_os_str().to_owned();
    s.push(".exit");
    PathBuf::from(s)
}

/// Starts `spec` detached: its own session and process group, stdin from
/// `/dev/null`, stdout and stderr appended to `spec.log_path`.
///
/// Before the start it creates the log's directory, removes a stale exit file of
/// the same log, and appends a header line ([`LOG_HEADER_MARKER`], the time, the
/// command line with secrets redacted, the names of the environment variables set
/// and removed). In the child, between fork and exec, it calls `setsid`, restores
/// the default action of SIGHUP, SIGINT, SIGQUIT and SIGTERM (an ignored signal
/// would otherwise be inherited, and SIGTERM must stop vLLM), and marks every file
/// descriptor above 2 close-on-exec, so that no pipe or socket of ours, inherited
/// without that flag from our own parent, leaks into the server.
///
/// A background thread (a plain `std::thread`, so no Tokio runtime is needed)
/// waits for the leader, so no zombie lingers while we live, and writes
/// `<log>.exit` atomically ([`exit_status`]). If this process dies first, the
/// server is reparented to init and the exit goes unrecorded.
///
/// Blocking, but short (fork and exec, milliseconds); it returns once the program
/// was exec'd, not when it is ready.
///
/// Errors:
/// - [`Error::Config`] with key `launcher.command` when the program cannot be
///   executed (not found on `PATH`, not executable, a missing `#!` interpreter, or
///   empty): the program comes from that setting and the fix is there. A line saying
///   so is also appended to the log.
/// - [`Error::InvalidArgument`] `cwd` when the working directory does not exist.
/// - [`Error::Storage`] when the log cannot be created or written.
/// - [`Error::Internal`] for other failures to fork (out of processes or memory).
pub fn spawn_detached(spec: &SpawnSpec) -> Result<Spawned> {
    if spec.program.trim().is_empty() {
        return Err(command_error("the command is empty".to_owned()));
    }
    if let Some(dir) = &spec.cwd
        && !dir.is_dir()
    {
        return Err(Error::invalid(
            "cwd",
            format!("{} is not a directory", dir.display()),
        ));
    }
    let log = open_log(&spec.log_path)?;
    match std::fs::remove_file(exit_path(&spec.log_path)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(storage_error(&exit_path(&spec.log_path), e)),
    }
    write_log(&log, &spec.log_path, &header_line(spec))?;
    let stderr = log
        .try_clone()
        .map_err(|e| storage_error(&spec.log_path, e))?;

    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| storage_error(&spec.log_path, e))?,
        )
        .stderr(stderr);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    for k in &spec.env_remove {
        cmd.env_remove(k);
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    // Computed before the fork: the child may only make async-signal-safe calls.
    let fd_limit = fd_scan_limit();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (setsid, signal, close_range, fcntl); it
    // allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || detach_in_child(fd_limit));
    }

    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let err = spawn_error(&spec.program, &e);
            // Best effort: the caller gets the error either way.
            let _ = write_log(
                &log,
                &spec.log_path,
                &format!("{LOG_HEADER_MARKER} failed: {err}\n"),
            );
            tracing::warn!(program = %redact_text(&spec.program), error = %e, "launch failed");
            return Err(err);
        }
    };
    let pid = child.id();
    let spawned = Spawned {
        pid,
        // setsid made the child the leader of a new session and group.
        pgid: pid,
        start_time: process_start_time(pid),
        log_path: spec.log_path.clone(),
    };
    tracing::info!(
        pid,
        program = %redact_text(&spec.program),
        log = %spec.log_path.display(),
        "launched detached process group"
    );
    let log_path = spec.log_path.clone();
    if let Err(e) = std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || reap(child, &log_path))
    {
        // The child was moved into the closure that failed to start, so it is
        // dropped unwaited: it becomes a zombie once it exits, until we exit.
        tracing::error!(pid, error = %e, "cannot start the reaper thread");
    }
    Ok(spawned)
}

/// The `pre_exec` hook. Only async-signal-safe calls.
fn detach_in_child(fd_limit: libc::c_int) -> std::io::Result<()> {
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM] {
        // SAFETY: restoring the default action of a catchable signal.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    mark_fds_cloexec(fd_limit);
    Ok(())
}

/// Marks every descriptor from 3 up close-on-exec (not closed: std's own
/// exec-error pipe must stay open until exec, and it is close-on-exec already).
fn mark_fds_cloexec(fd_limit: libc::c_int) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if rc == 0 {
            return;
        }
    }
    // Older kernels: one fcntl per possible descriptor (EBADF for unused ones).
    for fd in 3..fd_limit {
        // SAFETY: setting FD_CLOEXEC on a descriptor number, valid or not.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// The highest descriptor number the fallback of [`mark_fds_cloexec`] visits.
fn fd_scan_limit() -> libc::c_int {
    // SAFETY: sysconf has no preconditions.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    if max <= 0 {
        4096
    } else {
        max.min(65_536) as libc::c_int
    }
}

fn command_error(message: String) -> Error {
    Error::Config {
        path: None,
        key: "launcher.command".into(),
        message,
    }
}

fn spawn_error(program: &str, e: &std::io::Error) -> Error {
    let program = redact_text(program);
    match e.kind() {
        std::io::ErrorKind::NotFound => command_error(format!(
            "`{program}` was not found (not on PATH, or its #! interpreter is missing): {e}"
        )),
        std::io::ErrorKind::PermissionDenied => {
            command_error(format!("`{program}` is not executable: {e}"))
        }
        _ if e.raw_os_error() == Some(libc::ENOEXEC) => {
            command_error(format!("`{program}` is not an executable format: {e}"))
        }
        _ => Error::Internal(format!("starting `{program}` failed: {e}")),
    }
}

fn storage_error(path: &Path, e: std::io::Error) -> Error {
    Error::Storage {
        message: format!("{}: {e}", path.display()),
        path: Some(path.to_owned()),
    }
}

fn open_log(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| storage_error(dir, e))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| storage_error(path, e))
}

fn write_log(mut log: &File, path: &Path, text: &str) -> Result<()> {
    log.write_all(text.as_bytes())
        .map_err(|e| storage_error(path, e))
}

/// The header line; starts on a fresh line even if the previous run was cut off
/// mid-line.
fn header_line(spec: &SpawnSpec) -> String {
    let mut line = String::new();
    if !ends_with_newline(&spec.log_path) {
        line.push('\n');
    }
    line.push_str(LOG_HEADER_MARKER);
    line.push(' ');
    line.push_str(&vllm_core::time::now_rfc3339());
    line.push(':');
    for word in std::iter::once(redact_text(&spec.program)).chain(redact_args(&spec.args)) {
        line.push(' ');
        line.push_str(&shell_quote(&word));
    }
    // Names only: a value may be a secret under an innocent name.
    let mut notes = Vec::new();
    if let Some(dir) = &spec.cwd {
        notes.push(format!("cwd {}", dir.display()));
    }
    if !spec.env.is_empty() {
        let names: Vec<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
        notes.push(format!("env set: {}", names.join(" ")));
    }
    if !spec.env_remove.is_empty() {
        notes.push(format!("env removed: {}", spec.env_remove.join(" ")));
    }
    if !notes.is_empty() {
        line.push_str(&format!(" ({})", notes.join("; ")));
    }
    line.push('\n');
    line
}

fn ends_with_newline(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return true;
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return true;
    };
    if len == 0 {
        return true;
    }
    let mut last = [0u8];
    f.seek(SeekFrom::Start(len - 1)).is_err()
        || f.read_exact(&mut last).is_err()
        || last[0] == b'\n'
}

/// A word as a POSIX shell would need it, so the header can be pasted to a shell.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-*".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The reaper thread: waits for the leader and records how it ended.
fn reap(mut child: Child, log_path: &Path) {
    let pid = child.id();
    let status = match child.wait() {
        Ok(s) => s,
        Err(e) => {
            // ECHILD: someone else reaped it (a waitpid(-1) elsewhere in the process).
            tracing::warn!(pid, error = %e, "cannot wait for launched process");
            return;
        }
    };
    let info = ExitInfo::from_status(status, pid);
    if let Err(e) = write_exit_file(log_path, &info) {
        tracing::warn!(pid, path = %exit_path(log_path).display(), error = %e, "cannot record exit");
    }
    let left = group_members(pid);
    if left.is_empty() {
        tracing::info!(pid, exit = %info, "launched process exited");
    } else {
        // The vLLM case of a SIGKILL to the API server alone.
        tracing::warn!(pid, exit = %info, remaining = ?left, "launched process exited, leaving members of its group running");
    }
}

/// Writes `<log>.exit` through a temporary file and a rename, so a reader sees
/// either nothing or the whole record.
fn write_exit_file(log_path: &Path, info: &ExitInfo) -> std::io::Result<()> {
    let path = exit_path(log_path);
    let mut tmp = path.as_os_str().to_owned();
    // Unique per reaper: two launches on one log may overlap for a moment.
    tmp.push(format!(
        ".tmp{}-{}",
        std::process::id(),
        info.pid.unwrap_or_default()
    ));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, info.to_file_text())?;
    std::fs::rename(&tmp, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// How the leader launched with `log_path` ended, from `<log>.exit`.
///
/// `None` while it runs, and also when it ended after the process that launched it
/// (the only one that can reap it) was gone: then only [`group_alive`] can tell.
/// The file has the exit code or `signal:N` on its first line, then `pid=` and
/// `exited_at=` lines; it is removed when the same log is used for a new launch.
/// [`exit_status_of`] also checks that it is the record of a given leader.
pub fn exit_status(log_path: &Path) -> Option<ExitInfo> {
    let text = std::fs::read_to_string(exit_path(log_path)).ok()?;
    let info = ExitInfo::parse(&text);
    if info.is_none() {
        tracing::debug!(path = %exit_path(log_path).display(), "unreadable exit file");
    }
    info
}

/// [`exit_status`], only when the record is the one of leader `pid`: not that of
/// an earlier launch on the same log whose leader outlived the new launch.
pub fn exit_status_of(log_path: &Path, pid: u32) -> Option<ExitInfo> {
    exit_status(log_path).filter(|e| e.pid.is_none_or(|p| p == pid))
}

/// Every live (not zombie) pid whose process group is `pgid`, ascending, from
/// `/proc/*/stat`. Empty when there is none, for `pgid` 0, or without `/proc`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    if pgid == 0 {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| process_info(pid).is_some_and(|p| p.pgid == pgid && p.is_live()))
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether group `pgid` has a live member. Without `/proc`, whether the group
/// exists at all (zombies included).
pub fn group_alive(pgid: u32) -> bool {
    if Path::new("/proc/self/stat").exists() {
        return !group_members(pgid).is_empty();
    }
    let Ok(g) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    if g <= 1 {
        return false;
    }
    // SAFETY: signal 0 only checks that the group exists.
    let rc = unsafe { libc::kill(-g, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether `pgid` still names the group whose leader had `leader_start_time`
/// ([`Spawned::start_time`]): it has live members and, if its leader still runs,
/// the leader is that same process and not a later one that reuses the pid.
/// Call it before stopping a group known only from a stored record.
///
/// When the leader is gone its orphans are trusted: the kernel does not hand out
/// a pid while a group of that number exists.
pub fn group_matches(pgid: u32, leader_start_time: Option<u64>) -> bool {
    if !group_alive(pgid) {
        return false;
    }
    match (leader_start_time, process_start_time(pgid)) {
        (Some(want), Some(have)) if process_alive(pgid, None) => want == have,
        _ => true,
    }
}

/// The group ids we must never signal: 0 (our own group, for `kill`), 1 (init),
/// our own group, our session's leader's group and our parent's group.
fn check_signalable(pgid: u32) -> Result<libc::pid_t> {
    let refuse = |why: &str| Err(Error::invalid("pgid", format!("{pgid}: {why}")));
    let Ok(g) = libc::pid_t::try_from(pgid) else {
        return refuse("not a process group id");
    };
    if g <= 1 {
        return refuse("0 and 1 are never a launched server's group");
    }
    // SAFETY: these calls have no preconditions.
    let (own, session, parent) = unsafe {
        (
            libc::getpgrp(),
            libc::getsid(0),
            libc::getpgid(libc::getppid()),
        )
    };
    if g == own {
        return refuse("that is this process's own group");
    }
    if g == session {
        return refuse("that is the group of this process's session leader");
    }
    if g == parent {
        return refuse("that is the group of this process's parent");
    }
    Ok(g)
}

/// Sends `sig` to every process of group `pgid`. `Ok(true)` when sent, `Ok(false)`
/// when the group has no process left (ESRCH).
///
/// Errors: [`Error::InvalidArgument`] for a group we never signal (0, 1, our own,
/// our session's or our parent's); [`Error::Internal`] when the kernel refuses
/// (EPERM: the group belongs to another user).
pub fn signal_group(pgid: u32, sig: i32) -> Result<bool> {
    let g = check_signalable(pgid)?;
    // SAFETY: kill with a negative pid signals a process group; no memory involved.
    if unsafe { libc::kill(-g, sig) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        return Ok(false);
    }
    Err(Error::Internal(format!(
        "cannot send signal {sig} to process group {pgid}: {e}"
    )))
}

/// Stops every process of group `pgid`: SIGTERM (and SIGCONT, so stopped members
/// see it), then polls `/proc` until the group is empty or `grace` has passed,
/// then SIGKILL. With `force`, or a zero `grace`, SIGKILL at once. After SIGKILL
/// it waits up to 5 s for the kernel to finish the members off and reports what
/// is left in [`StopReport::remaining`].
///
/// Works on any group, not only our children (adopted groups): it needs nothing
/// but the pgid. vLLM exits 0 within 1 to 5 s of SIGTERM, so a grace of 10 to 30 s
/// loses nothing. A group that is already gone gives `was_running: false`.
///
/// Errors only for a pgid we never signal ([`signal_group`]); a refused signal
/// (EPERM) is logged and shows in `remaining`.
pub async fn stop_group(pgid: u32, grace: Duration, force: bool) -> Result<StopReport> {
    check_signalable(pgid)?;
    let started = Instant::now();
    let mut report = StopReport {
        was_running: group_alive(pgid),
        terminated_gracefully: false,
        killed: false,
        remaining: Vec::new(),
        took: Duration::ZERO,
    };
    if !report.was_running {
        report.took = started.elapsed();
        return Ok(report);
    }
    let send = |sig: i32| match signal_group(pgid, sig) {
        Ok(sent) => sent,
        Err(e) => {
            tracing::warn!(pgid, sig, error = %e, "cannot signal process group");
            false
        }
    };
    if !force && !grace.is_zero() {
        tracing::info!(
            pgid,
            grace_s = grace.as_secs_f64(),
            "stopping process group (SIGTERM)"
        );
        if send(libc::SIGTERM) {
            send(libc::SIGCONT);
        }
        if wait_until_empty(pgid, started + grace).await {
            report.terminated_gracefully = true;
            report.took = started.elapsed();
            tracing::info!(
                pgid,
                took_s = report.took.as_secs_f64(),
                "process group exited after SIGTERM"
            );
            return Ok(report);
        }
        tracing::warn!(pgid, members = ?group_members(pgid), "process group still running after the grace period: SIGKILL");
    } else {
        tracing::info!(pgid, "killing process group (SIGKILL)");
    }
    report.killed = send(libc::SIGKILL);
    if !report.killed && !force {
        // It emptied between the last poll and the SIGKILL: it did exit on SIGTERM.
        report.terminated_gracefully = !group_alive(pgid);
    }
    wait_until_empty(pgid, Instant::now() + KILL_SETTLE).await;
    report.remaining = group_members(pgid);
    report.took = started.elapsed();
    if report.remaining.is_empty() {
        tracing::info!(
            pgid,
            took_s = report.took.as_secs_f64(),
            "process group gone"
        );
    } else {
        tracing::warn!(pgid, remaining = ?report.remaining, "process group members survived SIGKILL");
    }
    Ok(report)
}

/// Polls until group `pgid` has no live member (`true`) or `deadline` passes.
/// Starts fast (processes often exit within milliseconds) and backs off to 200 ms,
/// as each poll reads all of `/proc`.
async fn wait_until_empty(pgid: u32, deadline: Instant) -> bool {
    let mut pause = Duration::from_millis(10);
    loop {
        if !group_alive(pgid) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Resident memory of group `pgid` in MiB, rounded up (so a live group is never 0),
/// 0 when it has no live member. The sum of each member's RSS
/// (`/proc/<pid>/statm`): pages shared between members count once per member.
pub fn group_rss_mb(pgid: u32) -> u64 {
    rss_mb_of(&group_members(pgid))
}

/// Every live process group: pgid → member pids, from one scan of `/proc` (a list of
/// twenty models reads the process table once, not twenty times).
pub fn groups() -> std::collections::HashMap<u32, Vec<u32>> {
    let mut out: std::collections::HashMap<u32, Vec<u32>> = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if let Some(p) = process_info(pid).filter(|p| p.is_live()) {
            out.entry(p.pgid).or_default().push(pid);
        }
    }
    out
}

/// How old the process table behind figures (a model's memory, its GPU share) may be:
/// the supervision round looks at every server once a second too.
pub const FIGURES_MAX_AGE: Duration = Duration::from_secs(1);

/// [`groups`], shared between callers and at most `max_age` old. For figures that
/// every list or info call reads (a model's memory, its GPU share), so that a client
/// calling in a loop does not rescan the process table each time; never for decisions
/// (liveness, stopping), which read `/proc` afresh.
pub fn groups_recent(
    max_age: Duration,
) -> std::sync::Arc<std::collections::HashMap<u32, Vec<u32>>> {
    type Table = std::sync::Arc<std::collections::HashMap<u32, Vec<u32>>>;
    static RECENT: std::sync::Mutex<Option<(Instant, Table)>> = std::sync::Mutex::new(None);
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, table)) = recent.as_ref()
        && at.elapsed() <= max_age
    {
        return table.clone();
    }
    let table: Table = std::sync::Arc::new(groups());
    *recent = Some((Instant::now(), table.clone()));
    table
}

/// Resident memory of these processes, MiB, rounded up (see [`group_rss_mb`]).
pub fn rss_mb_of(pids: &[u32]) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as u64,
        _ => 4096,
    };
    let bytes: u64 = pids
        .iter()
        .filter_map(|pid| {
            let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
            let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
            Some(resident * page)
        })
        .sum();
    bytes.div_ceil(1 << 20)
}

/// Whether a server could listen on `host:port` now.
///
/// Binds a listener on every address `host` resolves to and drops it. Rust's
/// `TcpListener::bind` sets SO_REUSEADDR, as vLLM (and uvicorn) do, so a port
/// with only TIME_WAIT connections counts as free, as it is for vLLM, and one with
/// a listener (on that address or the wildcard) as taken. Then it tries to connect
/// (loopback for a wildcard host, 200 ms at most) and counts an answer as taken:
/// a listener our bind did not collide with. Addresses that cannot be bound at all
/// (`::1` without IPv6) are skipped; a host with no bindable address (not local,
/// or not resolving) has no free port, nor has a port we may not bind (below 1024). The answer can be stale by the time vLLM binds; a
/// lost race shows as a `PORT_IN_USE` start failure.
pub fn port_is_free(host: &str, port: u16) -> bool {
    if port == 0 {
        return false;
    }
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    let mut bound = 0;
    for addr in addrs {
        match TcpListener::bind(addr) {
            Ok(_) => bound += 1,
            // `localhost` may resolve to ::1 on a host without IPv6: that
            // address cannot be used by anyone, it does not make the port taken.
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable
                    || e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
            {
                continue;
            }
            // In use, or not ours to use (EACCES below 1024).
            Err(_) => return false,
        }
        let probe = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)
            }
            _ => addr,
        };
        if TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
            return false;
        }
    }
    bound > 0
}

/// A port for a new server on `host`: `preferred` when it is free and not
/// excluded (sticky ports: a model keeps its port across restarts, wherever it
/// is), else the first free port of the inclusive `range` not in `exclude`
/// (ports of servers that are starting and not listening yet). `None` when none is.
pub fn pick_port(
    host: &str,
    range: (u16, u16),
    preferred: Option<u16>,
    exclude: &HashSet<u16>,
) -> Option<u16> {
    if let Some(p) = preferred
        && !exclude.contains(&p)
        && port_is_free(host, p)
    {
        return Some(p);
    }
    let (lo, hi) = range;
    (lo.max(1)..=hi).find(|p| !exclude.contains(p) && port_is_free(host, *p))
}

/// The last `lines` lines of the file at `path`, reading at most `max_bytes`
/// from its end (logs can be gigabytes). A line cut by that limit is dropped,
/// unless it is the only one (then its end is returned). Lines are joined with
/// `\n`, without a final newline; a `\r` before a newline is dropped and invalid
/// UTF-8 is replaced.
pub fn tail(path: &Path, lines: usize, max_bytes: u64) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if lines == 0 || max_bytes == 0 || len == 0 {
        return Ok(String::new());
    }
    let start = len.saturating_sub(max_bytes);
    // One byte more before the window tells whether it starts on a line boundary.
    let from = start.saturating_sub(1);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    // `take`: the file may grow while we read.
    f.take(len - from).read_to_end(&mut buf)?;
    let mut text: &[u8] = &buf;
    if start > 0 {
        text = match text.iter().position(|&b| b == b'\n') {
            Some(i) => &text[i + 1..],
            None => &text[1..],
        };
    }
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let text = String::from_utf8_lossy(text);
    let all: Vec<&str> = text.split('\n').collect();
    let keep = &all[all.len().saturating_sub(lines)..];
    Ok(keep
        .iter()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Memory available for new processes, in MiB: `MemAvailable` of
/// `/proc/meminfo` (sysinfo where there is none). It is the machine's figure: a
/// container's cgroup limit is not taken into account.
pub fn available_memory_mb() -> u64 {
    let from_proc = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    if let Some(kb) = from_proc {
        return kb / 1024;
    }
    match sysinfo::System::new() {
        Ok(mut s) => {
            s.refresh_memory();
            s.available_memory() / (1 << 20)
        }
        Err(_) => 0,
    }
}
