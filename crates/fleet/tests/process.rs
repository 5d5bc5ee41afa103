//! Process supervision against real processes: detached groups, logs, exit files,
//! graceful and forced stops, orphans, adopted groups, environment, ports, tails.
//!
//! Trees are made with `sh` and `sleep` to look like `vllm serve` (a leader with
//! children in its group). Every group a test starts is SIGKILLed by a drop guard,
//! so a failing test leaves nothing behind. Waits poll with deadlines.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vllm_core::Error;
use vllm_fleet::launcher::process::{
    LOG_HEADER_MARKER, SpawnSpec, Spawned, available_memory_mb, exit_path, exit_status,
    exit_status_of, group_alive, group_matches, group_members, group_rss_mb, pick_port,
    port_is_free, process_info, signal_group, spawn_detached, stop_group, tail,
};

/// SIGKILLs a process group when dropped, whatever happened in the test.
struct GroupGuard(u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.0 > 1 {
            // SAFETY: signalling a group this test started; ESRCH when gone is fine.
            unsafe { libc::kill(-(self.0 as i32), libc::SIGKILL) };
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sh(script: &str, log: &Path) -> SpawnSpec {
    SpawnSpec::new("/bin/sh", ["-c", script], log)
}

fn start(spec: &SpawnSpec) -> (Spawned, GroupGuard) {
    let s = spawn_detached(spec).expect("spawn");
    let guard = GroupGuard(s.pgid);
    (s, guard)
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_log(path: &Path, needle: &str) {
    wait_for(
        &format!("`{needle}` in the log"),
        Duration::from_secs(10),
        || log_text(path).contains(needle),
    );
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Waits until a tree is fully up: the leader printed `up:<pid>` (not a bare word,
/// which the log header would already hold) and both children exec'd `sleep`. A
/// TERM that lands while a child of `sh` is between fork and exec can be swallowed
/// by the copy of the parent's trap handler, leaving that sleep running.
fn wait_tree(s: &Spawned) {
    wait_log(&s.log_path, &format!("up:{}", s.pid));
    wait_for("the leader and two sleeps", Duration::from_secs(10), || {
        let m = group_members(s.pgid);
        m.len() == 3 && m.iter().filter(|&&p| comm(p) == "sleep").count() == 2
    });
}

fn wait_exit(log: &Path) -> vllm_fleet::launcher::process::ExitInfo {
    let mut info = None;
    wait_for("the exit file", Duration::from_secs(10), || {
        info = exit_status(log);
        info.is_some()
    });
    info.unwrap()
}

/// A tree like vLLM's: on TERM the leader kills its children and exits 0.
const VLLM_LIKE: &str = "trap 'kill $a $b 2>/dev/null; exit 0' TERM; \
     sleep 300 & a=$!; sleep 300 & b=$!; echo up:$$; wait";

/// A tree where nothing obeys TERM (ignored signals are inherited by the children).
const IGNORES_TERM: &str = "trap '' TERM; sleep 300 & sleep 300 & echo up:$$; wait";

fn log_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join("logs").join(name)
}

#[test]
fn spawn_detached_makes_its_own_session_and_group_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "tree.log");
    let mut spec = sh(VLLM_LIKE, &log);
    spec.args
        .extend(["sh".into(), "--api-key".into(), "sekrit-value".into()]);
    let (s, _g) = start(&spec);

    assert_eq!(s.pid, s.pgid);
    assert!(s.start_time.is_some());
    let info = process_info(s.pid).expect("child in /proc");
    assert_eq!(info.pgid, s.pid, "leader of its own group");
    assert_eq!(info.sid, s.pid, "leader of its own session");
    // SAFETY: plain getters.
    let (our_pgrp, our_sid) = unsafe { (libc::getpgrp(), libc::getsid(0)) };
    assert_ne!(info.pgid as i32, our_pgrp);
    assert_ne!(info.sid as i32, our_sid);

    wait_tree(&s);
    let members = group_members(s.pgid);
    assert!(members.contains(&s.pid));
    assert!(group_alive(s.pgid));
    assert!(group_matches(s.pgid, s.start_time));
    assert!(!group_matches(s.pgid, s.start_time.map(|t| t + 1)));

    let text = log_text(&log);
    let header = text.lines().next().unwrap();
    assert!(header.starts_with(LOG_HEADER_MARKER), "{header}");
    assert!(header.contains("/bin/sh -c"), "{header}");
    assert!(
        header.contains("--api-key '***'") || header.contains("--api-key ***"),
        "{header}"
    );
    assert!(
        !text.contains("sekrit"),
        "the secret reached the log: {text}"
    );

    // The child's stdio: /dev/null and the log, never our stdout.
    let fd = |n: u32| std::fs::read_link(format!("/proc/{}/fd/{n}", s.pid)).unwrap();
    let canon_log = log.canonicalize().unwrap();
    assert_eq!(fd(0), Path::new("/dev/null"));
    assert_eq!(fd(1), canon_log);
    assert_eq!(fd(2), canon_log);
    if let Ok(ours) = std::fs::read_link("/proc/self/fd/1") {
        assert_ne!(fd(1), ours);
    }
    // No descriptor of ours beyond stdio leaked into it.
    let extra: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", s.pid))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&n| n > 2)
        .collect();
    assert!(extra.is_empty(), "leaked descriptors: {extra:?}");
    assert!(exit_status(&log).is_none(), "still running");
}

#[tokio::test]
async fn stop_group_graceful_when_term_is_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "graceful.log");
    let (s, _g) = start(&sh(VLLM_LIKE, &log));
    wait_tree(&s);

    let r = stop_group(s.pgid, Duration::from_secs(20), false)
        .await
        .unwrap();
    assert!(r.was_running);
    assert!(r.terminated_gracefully, "{r:?}");
    assert!(!r.killed);
    assert!(r.remaining.is_empty());
    assert!(r.took < Duration::from_secs(10), "{r:?}");
    assert!(group_members(s.pgid).is_empty());
    assert!(!group_alive(s.pgid));

    let exit = wait_exit(&log);
    assert_eq!(exit.code, Some(0), "{exit:?}");
    assert!(exit.success());
    assert_eq!(exit.pid, Some(s.pid));
    assert!(exit.exited_at.is_some());

    // A second stop finds nothing.
    let again = stop_group(s.pgid, Duration::from_secs(1), false)
        .await
        .unwrap();
    assert!(!again.was_running && !again.killed && again.remaining.is_empty());
}

#[tokio::test]
async fn stop_group_kills_after_grace_when_term_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "stubborn.log");
    let (s, _g) = start(&sh(IGNORES_TERM, &log));
    wait_tree(&s);

    let grace = Duration::from_millis(800);
    let r = stop_group(s.pgid, grace, false).await.unwrap();
    assert!(r.was_running);
    assert!(!r.terminated_gracefully, "{r:?}");
    assert!(r.killed);
    assert!(r.remaining.is_empty(), "{r:?}");
    assert!(r.took >= grace, "{r:?}");
    assert!(group_members(s.pgid).is_empty());
    assert_eq!(wait_exit(&log).signal, Some(libc::SIGKILL));
}

#[tokio::test]
async fn stop_group_force_kills_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "force.log");
    let (s, _g) = start(&sh(IGNORES_TERM, &log));
    wait_tree(&s);

    let r = stop_group(s.pgid, Duration::from_secs(60), true)
        .await
        .unwrap();
    assert!(
        r.was_running && r.killed && !r.terminated_gracefully,
        "{r:?}"
    );
    assert!(r.remaining.is_empty());
    assert!(r.took < Duration::from_secs(5), "{r:?}");
    assert_eq!(wait_exit(&log).signal, Some(libc::SIGKILL));
}

#[tokio::test]
async fn sigkill_of_the_leader_leaves_orphans_that_stop_group_removes() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "orphans.log");
    let (s, _g) = start(&sh("sleep 300 & sleep 300 & echo up:$$; wait", &log));
    wait_tree(&s);

    // What a SIGKILL to vLLM's API server alone does.
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(s.pid as i32, libc::SIGKILL) }, 0);
    assert_eq!(wait_exit(&log).signal, Some(libc::SIGKILL));
    let orphans = group_members(s.pgid);
    assert_eq!(orphans.len(), 2, "{orphans:?}");
    assert!(!orphans.contains(&s.pid));
    for pid in &orphans {
        let info = process_info(*pid).unwrap();
        assert_eq!(info.pgid, s.pgid, "still in the group");
        assert_ne!(info.ppid, s.pid, "reparented");
    }
    assert!(group_alive(s.pgid));
    assert!(group_matches(s.pgid, s.start_time), "orphans are trusted");

    let r = stop_group(s.pgid, Duration::from_secs(10), false)
        .await
        .unwrap();
    assert!(r.was_running && r.terminated_gracefully, "{r:?}");
    assert!(r.remaining.is_empty());
    assert!(!group_alive(s.pgid));
}

#[tokio::test]
async fn an_adopted_group_is_stopped_by_pgid_alone() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // The group is started by a grandchild that is reparented away from us: all we
    // have is its pgid, as a new MCP server instance adopting a running vLLM.
    let script = format!(
        "setsid sh -c 'echo $$ > {p}.tmp; mv {p}.tmp {p}; sleep 300 & exec sleep 300' \
         </dev/null >/dev/null 2>&1 &",
        p = pidfile.display()
    );
    let status = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("the pid file", Duration::from_secs(10), || pidfile.exists());
    let pgid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _g = GroupGuard(pgid);
    wait_for("two members", Duration::from_secs(10), || {
        group_members(pgid).len() == 2
    });
    let leader = process_info(pgid).unwrap();
    assert_ne!(leader.ppid, std::process::id(), "not our child");

    let r = stop_group(pgid, Duration::from_secs(10), false)
        .await
        .unwrap();
    assert!(r.was_running && r.terminated_gracefully, "{r:?}");
    assert!(r.remaining.is_empty());
    assert!(group_members(pgid).is_empty());
}

#[test]
fn exit_file_records_codes_and_signals() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "exit.log");
    let (s, _g) = start(&sh("echo bye; exit 3", &log));
    let e = wait_exit(&log);
    assert_eq!((e.code, e.signal, e.pid), (Some(3), None, Some(s.pid)));
    assert!(!e.success());
    assert_eq!(e.to_string(), "exit code 3");
    assert_eq!(exit_status_of(&log, s.pid), Some(e.clone()));
    assert_eq!(
        exit_status_of(&log, s.pid + 1),
        None,
        "another launch's record"
    );
    assert!(
        std::fs::read_to_string(exit_path(&log))
            .unwrap()
            .starts_with("3\n")
    );

    // The same log for a new launch: the stale record goes, the log is appended.
    let (_s2, _g2) = start(&sh("kill -9 $$", &log));
    let e = wait_exit(&log);
    assert_eq!((e.code, e.signal), (None, Some(9)));
    assert_eq!(e.to_string(), "killed by signal 9 (SIGKILL)");
    assert!(
        std::fs::read_to_string(exit_path(&log))
            .unwrap()
            .starts_with("signal:9\n")
    );
    let text = log_text(&log);
    assert_eq!(text.matches(LOG_HEADER_MARKER).count(), 2, "{text}");
    assert!(text.contains("bye"));
    // No temporary file left beside it.
    let names: Vec<String> = std::fs::read_dir(log.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn environment_is_set_and_removed() {
    // A variable the test process certainly has.
    let inherited = ["CARGO_MANIFEST_DIR", "HOME", "PATH"]
        .into_iter()
        .find(|k| std::env::var_os(k).is_some())
        .expect("some variable");
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "env.log");
    let mut spec = sh(
        &format!(
            "echo X=${{VLLM_MCP_TEST_X-unset}}; echo Y=${{VLLM_MCP_TEST_Y-unset}}; \
             echo I=${{{inherited}-unset}}; echo KEEP=${{VLLM_MCP_TEST_K-unset}}"
        ),
        &log,
    );
    spec.env = vec![
        ("VLLM_MCP_TEST_X".into(), "hello world".into()),
        ("VLLM_MCP_TEST_Y".into(), "set then removed".into()),
        ("VLLM_MCP_TEST_K".into(), "kept".into()),
    ];
    spec.env_remove = vec!["VLLM_MCP_TEST_Y".into(), inherited.into()];
    spec.cwd = Some(dir.path().to_owned());
    let (_s, _g) = start(&spec);
    assert_eq!(wait_exit(&log).code, Some(0));
    let text = log_text(&log);
    assert!(text.contains("X=hello world"), "{text}");
    assert!(text.contains("Y=unset"), "removal wins over env: {text}");
    assert!(
        text.contains("I=unset"),
        "{inherited} was inherited: {text}"
    );
    assert!(text.contains("KEEP=kept"), "{text}");
    // The header names the variables but shows no value.
    let header = text.lines().next().unwrap();
    assert!(header.contains("env set: VLLM_MCP_TEST_X"), "{header}");
    assert!(!header.contains("hello"), "{header}");
}

#[test]
fn a_missing_executable_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "missing.log");
    let spec = SpawnSpec::new("/nonexistent/vllm", ["serve", "m"], &log);
    match spawn_detached(&spec) {
        Err(Error::Config { key, message, .. }) => {
            assert_eq!(key, "launcher.command");
            assert!(message.contains("/nonexistent/vllm"), "{message}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    let text = log_text(&log);
    assert!(text.contains("failed"), "{text}");

    let named = SpawnSpec::new("vllm-mcp-no-such-program", ["serve"], &log);
    assert!(matches!(spawn_detached(&named), Err(Error::Config { .. })));
    let empty = SpawnSpec::new("", Vec::<String>::new(), &log);
    assert!(matches!(spawn_detached(&empty), Err(Error::Config { .. })));
    let mut bad_cwd = sh("true", &log);
    bad_cwd.cwd = Some(dir.path().join("nope"));
    assert!(matches!(
        spawn_detached(&bad_cwd),
        Err(Error::InvalidArgument { .. })
    ));
}

#[tokio::test]
async fn rss_is_counted_while_the_group_lives() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "rss.log");
    let (s, _g) = start(&sh(VLLM_LIKE, &log));
    wait_tree(&s);
    assert!(group_rss_mb(s.pgid) > 0);
    stop_group(s.pgid, Duration::from_secs(10), false)
        .await
        .unwrap();
    assert_eq!(group_rss_mb(s.pgid), 0);
    assert!(available_memory_mb() > 0);
}

#[test]
fn ports_with_a_listener_are_skipped_and_free_preferred_ports_kept() {
    let host = "127.0.0.1";
    let taken = TcpListener::bind((host, 0)).unwrap();
    let p = taken.local_addr().unwrap().port();
    assert!(!port_is_free(host, p));
    assert!(!port_is_free("0.0.0.0", p), "a wildcard bind collides too");
    assert!(!port_is_free(host, 0));

    // A port that was free a moment ago (bound then released).
    let q = {
        let l = TcpListener::bind((host, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    assert!(port_is_free(host, q));
    assert!(port_is_free("localhost", q), "with or without IPv6");
    assert!(!port_is_free("localhost", p));
    assert!(!port_is_free("no-such-host.invalid", q));
    let none = HashSet::new();
    assert_eq!(pick_port(host, (p, p), Some(q), &none), Some(q), "sticky");
    assert_eq!(
        pick_port(host, (p, p), None, &none),
        None,
        "only a taken port"
    );
    assert_eq!(pick_port(host, (p, p), Some(p), &none), None);
    let excluded = HashSet::from([q]);
    assert_eq!(pick_port(host, (q, q), Some(q), &excluded), None);

    let lo = p.saturating_sub(10).max(1024);
    let got = pick_port(host, (p, p.saturating_add(20)), None, &none).unwrap();
    assert_ne!(got, p);
    assert!(port_is_free(host, got));
    let got_low = pick_port(host, (lo, p), Some(p), &HashSet::from([lo])).unwrap();
    assert!(got_low != p && got_low != lo && (lo..=p).contains(&got_low));
    assert_eq!(pick_port(host, (10, 5), None, &none), None);
    drop(taken);
}

#[test]
fn tail_reads_only_the_end_of_a_big_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.log");
    let mut text = String::with_capacity(5 << 20);
    let mut n = 0;
    while text.len() < 5 << 20 {
        text.push_str(&format!("line {n:08} of a long log\n"));
        n += 1;
    }
    std::fs::write(&path, &text).unwrap();

    let t = tail(&path, 3, 64 * 1024).unwrap();
    let want: Vec<String> = (n - 3..n)
        .map(|i| format!("line {i:08} of a long log"))
        .collect();
    assert_eq!(t, want.join("\n"));

    // The byte limit wins over the line count, and no cut line is returned.
    let t = tail(&path, 1_000_000, 100).unwrap();
    assert!(t.len() <= 100, "{}", t.len());
    assert!(t.starts_with("line "), "{t}");
    assert!(t.ends_with(&format!("line {:08} of a long log", n - 1)));
    let line_len = "line 00000000 of a long log\n".len();
    assert_eq!(t.lines().count(), 100 / line_len);

    // A window starting exactly on a line boundary keeps that line.
    let t = tail(&path, 10, line_len as u64 * 2).unwrap();
    assert_eq!(t.lines().count(), 2);

    // No final newline, CRLF, one huge line, empty file.
    let other = dir.path().join("other.log");
    std::fs::write(&other, "a\r\nb\r\nc").unwrap();
    assert_eq!(tail(&other, 2, 1024).unwrap(), "b\nc");
    assert_eq!(tail(&other, 0, 1024).unwrap(), "");
    std::fs::write(&other, "x".repeat(1000)).unwrap();
    assert_eq!(tail(&other, 5, 10).unwrap(), "x".repeat(10));
    std::fs::write(&other, "").unwrap();
    assert_eq!(tail(&other, 5, 10).unwrap(), "");
    assert!(tail(&dir.path().join("absent"), 5, 10).is_err());
}

#[tokio::test]
async fn our_own_groups_are_never_signalled() {
    // SAFETY: plain getters.
    let (own, session) = unsafe { (libc::getpgrp() as u32, libc::getsid(0) as u32) };
    for pgid in [0, 1, own, session, u32::MAX] {
        let r = stop_group(pgid, Duration::from_secs(1), true).await;
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{pgid}: {r:?}"
        );
        assert!(signal_group(pgid, 0).is_err(), "{pgid}");
    }
    // Still alive, obviously.
    assert!(group_alive(own));
}

/// Set for the copy of this test binary that plays the MCP server in
/// `a_launched_group_survives_the_sigkill_of_its_launchers_group`.
const HELPER_ENV: &str = "VLLM_MCP_PROCESS_TEST_HELPER_DIR";

/// Not a test on its own: the launcher half of the next test, run in a copy of
/// this binary. Without the variable it does nothing.
#[test]
fn helper_launcher() {
    let Some(dir) = std::env::var_os(HELPER_ENV).map(PathBuf::from) else {
        return;
    };
    let s = spawn_detached(&sh(VLLM_LIKE, &dir.join("logs/survivor.log"))).unwrap();
    std::fs::write(dir.join("pid.tmp"), s.pid.to_string()).unwrap();
    std::fs::rename(dir.join("pid.tmp"), dir.join("pid")).unwrap();
    // Until the test kills us, as an MCP client kills its servers.
    std::thread::sleep(Duration::from_secs(120));
}

#[tokio::test]
async fn a_launched_group_survives_the_sigkill_of_its_launchers_group() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_launcher", "--test-threads=1"])
        .env(HELPER_ENV, dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let helper_group = GroupGuard(helper.id());
    let pidfile = dir.path().join("pid");
    wait_for("the launched pid", Duration::from_secs(20), || {
        pidfile.exists()
    });
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    let _g = GroupGuard(pid);
    let log = dir.path().join("logs/survivor.log");
    let s = Spawned {
        pid,
        pgid: pid,
        start_time: vllm_core::coordination::process_start_time(pid),
        log_path: log.clone(),
    };
    wait_tree(&s);
    assert_eq!(process_info(pid).unwrap().ppid, helper.id());

    // What Crush does to an MCP server on exit: SIGKILL to its process group.
    drop(helper_group);
    helper.wait().unwrap();
    wait_for(
        "the leader to be reparented",
        Duration::from_secs(10),
        || process_info(pid).is_some_and(|p| p.ppid != helper.id()),
    );
    assert_eq!(group_members(pid).len(), 3, "the launched tree survives");
    assert!(group_matches(pid, s.start_time));
    assert!(exit_status(&log).is_none());

    // The next instance adopts it by pgid.
    let r = stop_group(pid, Duration::from_secs(10), false)
        .await
        .unwrap();
    assert!(r.was_running && r.terminated_gracefully, "{r:?}");
    assert!(r.remaining.is_empty());
    // Its reaper died with the launcher: the exit goes unrecorded.
    assert!(exit_status(&log).is_none());
}

/// A server whose main thread has ended while another thread still listens: what a
/// multi-threaded `vllm serve` (or mock-vllm) is for a moment after SIGKILL.
const LEADER_ENDS_FIRST: &str = r#"
import ctypes, os, socket, sys, threading, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
def hold():
    time.sleep(1.5)
    os._exit(0)
threading.Thread(target=hold).start()
print("listening", flush=True)
# SYS_exit ends only the calling thread (exit_group would end them all).
ctypes.CDLL(None).syscall({"x86_64": 60, "aarch64": 93}[os.uname().machine], 0)
"#;

#[test]
fn a_group_whose_leader_thread_ended_is_alive_while_its_threads_hold_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "threads.log");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = SpawnSpec::new(
        "python3",
        [
            "-c".to_string(),
            LEADER_ENDS_FIRST.to_string(),
            port.to_string(),
        ],
        &log,
    );
    let (s, _g) = start(&spec);
    wait_log(&log, "listening");
    wait_for("the main thread to end", Duration::from_secs(10), || {
        process_info(s.pid).is_some_and(|p| p.state == 'Z')
    });
    let info = process_info(s.pid).unwrap();
    assert!(info.threads > 1, "{info:?}");
    assert!(!port_is_free("127.0.0.1", port), "the other thread listens");
    // What stop_group waits on: the group is not gone while its port is held.
    assert!(info.is_live(), "{info:?}");
    assert!(group_alive(s.pgid));
    assert_eq!(group_members(s.pgid), vec![s.pid]);
    wait_for("the last thread to end", Duration::from_secs(10), || {
        !group_alive(s.pgid)
    });
    assert!(
        port_is_free("127.0.0.1", port),
        "gone means the port is free"
    );
}
