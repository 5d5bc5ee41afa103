//! The `mock-vllm serve` process and its process tree, like vLLM's: the API server spawns
//! `mock-vllm __engine-core` ("VLLM::EngineCore"), which spawns `mock-vllm __worker`
//! ("VLLM::Worker"); all stay in the caller's process group (no setsid).
//!
//! Lifetime rules, copied from the captures:
//! - SIGTERM/SIGINT to the API server: it stops serving, SIGTERMs the engine core (which SIGTERMs
//!   the worker) and exits 0; each child also exits 0 on its own SIGTERM/SIGINT.
//! - SIGKILL to the API server alone: the children are NOT told; they become orphans and keep
//!   running, as real vLLM's do (sigkill-main-timing.txt). They notice the orphaning (getppid
//!   changes) but only exit after `MOCK_VLLM_ORPHAN_LINGER` seconds (default 600), a safety net so
//!   that test machines do not collect orphans forever.
//! - The worker dying (killed, or `MOCK_VLLM_WORKER_DEATH_AFTER`): the engine core logs the
//!   failure and exits 1; the API server answers /health with 503 for
//!   `MOCK_VLLM_DEATH_503_SECONDS`, then exits 0 (worker-sigkill.txt).
//! - `MOCK_VLLM_CRASH_AFTER`: the API server SIGKILLs its tree and exits 1.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cli::{self, Command, ServeArgs};
use crate::env::{Env, Settings};
use crate::logging::{self, api_info, api_warn, vlog};
use crate::model::{self, StartFailure};
use crate::server::{self, Ending, MockListener};

/// Entry point of the binary: `args` are the process arguments after the program name.
pub fn main_entry(args: Vec<String>) -> i32 {
    match args.first().map(String::as_str) {
        Some("__engine-core") => return child_main(Role::EngineCore, &args[1..]),
        Some("__worker") => return child_main(Role::Worker, &args[1..]),
        _ => {}
    }
    match cli::parse(&args) {
        Command::Print(text) => {
            print!("{text}");
            0
        }
        Command::Fail(text, code) => {
            eprint!("{text}");
            code
        }
        Command::Serve(a) => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("mock-vllm: cannot start the runtime: {e}");
                    return 1;
                }
            };
            let settings = Settings::from_env(&Env::from_process());
            let code = rt.block_on(serve_process(*a, settings));
            rt.shutdown_timeout(Duration::from_millis(100));
            code
        }
    }
}

fn banner(model: &str) {
    api_info("api_utils.py:347", "");
    api_info("api_utils.py:347", "       █     █     █▄   ▄█");
    api_info(
        "api_utils.py:347",
        " ▄▄ ▄█ █     █     █ ▀▄▀ █  version 0.32.0",
    );
    api_info(
        "api_utils.py:347",
        &format!("  █▄█▀ █     █     █     █  model   {model}"),
    );
    api_info("api_utils.py:347", "   ▀▀  ▀▀▀▀▀ ▀▀▀▀▀ ▀     ▀");
    api_info("api_utils.py:347", "");
}

async fn fail(f: &StartFailure, settings: &Settings) -> i32 {
    tokio::time::sleep(settings.fail_delay).await;
    let (text, code) = f.stderr_text();
    logging::stderr(&text);
    code
}

/// Binds (without listening) like vLLM's create_server_socket.
fn bind(host: &str, port: u16) -> Result<tokio::net::TcpSocket, StartFailure> {
    use std::net::ToSocketAddrs;
    let to_failure = |e: std::io::Error| {
        let errno = e.raw_os_error().unwrap_or(98);
        let text = std::io::Error::from_raw_os_error(errno).to_string();
        let text = text.split(" (os error").next().unwrap_or(&text).to_string();
        StartFailure::Bind { errno, text }
    };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|_| StartFailure::Bind {
            errno: -2,
            text: "Name or service not known".into(),
        })?
        .next()
        .ok_or(StartFailure::Bind {
            errno: -2,
            text: "Name or service not known".into(),
        })?;
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(to_failure)?;
    sock.set_reuseaddr(true).map_err(to_failure)?;
    sock.bind(addr).map_err(to_failure)?;
    Ok(sock)
}

/// A spawned engine-core child and the news of its exit.
struct ChildWatch {
    pid: i32,
    exited: watch::Receiver<Option<i32>>,
}

impl ChildWatch {
    fn spawn(args: &[String]) -> std::io::Result<ChildWatch> {
        let exe = std::env::current_exe()?;
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .spawn()?;
        let pid = child.id().map(|p| p as i32).unwrap_or(-1);
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
            let _ = tx.send(Some(code));
        });
        Ok(ChildWatch { pid, exited: rx })
    }

    async fn died(&self) {
        let mut rx = self.exited.clone();
        let _ = rx.wait_for(|v| v.is_some()).await;
    }

    fn signal(&self, sig: i32) {
        if self.pid > 0 && self.exited.borrow().is_none() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    async fn terminate(&self, grace: Duration) {
        self.signal(libc::SIGTERM);
        if tokio::time::timeout(grace, self.died()).await.is_err() {
            self.signal(libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(1), self.died()).await;
        }
    }

    /// SIGKILL the child's own children (found in /proc), then the child.
    fn kill_tree(&self) {
        for pid in children_of(self.pid) {
            // SAFETY: kill(2) on a pid whose parent is our child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        self.signal(libc::SIGKILL);
    }
}

fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

async fn serve_process(args: ServeArgs, settings: Settings) -> i32 {
    let t0 = Instant::now();
    let (Ok(mut sigterm), Ok(mut sigint)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("mock-vllm: cannot install signal handlers");
        return 1;
    };
    if args.used_model_flag {
        api_warn(
            "argparse_utils.py:251",
            "With `vllm serve`, you should provide the model as a positional argument or in a config file instead of via the `--model` option. The `--model` option will be removed in v0.13.",
        );
    }
    banner(&args.model);
    api_info(
        "api_utils.py:286",
        &format!("non-default args: {}", args.non_default_repr),
    );
    let forced = settings.forced_failure.clone();
    let default_len = args.max_model_len.unwrap_or(2048);
    let forced_failure = forced
        .as_deref()
        .and_then(|k| model::forced_failure(k, &args.model, default_len));
    if let Some(f @ StartFailure::Bind { .. }) = &forced_failure {
        return fail(f, &settings).await;
    }
    let host = args.host.clone().unwrap_or_else(|| "0.0.0.0".into());
    let socket = match bind(&host, args.port) {
        Ok(s) => s,
        Err(f) => return fail(&f, &settings).await,
    };
    let model = match model::resolve(&args.model, &settings) {
        Ok(m) => m,
        Err(f) => return fail(&f, &settings).await,
    };
    if let Some(
        f @ (StartFailure::NoModel { .. }
        | StartFailure::EmptyDir { .. }
        | StartFailure::HubUnreachable { .. }
        | StartFailure::HubOffline),
    ) = &forced_failure
    {
        return fail(f, &settings).await;
    }
    api_info(
        "model.py:733",
        &format!("Resolved architecture: {}", model.architecture),
    );
    if let Some(f @ StartFailure::MaxLen { .. }) = &forced_failure {
        return fail(f, &settings).await;
    }
    let max_model_len = match server::effective_max_model_len(&args, &model, &settings) {
        Ok(m) => m,
        Err(f) => return fail(&f, &settings).await,
    };
    if args
        .max_model_len
        .is_some_and(|m| m > model.derived_max_len)
    {
        api_warn(
            "model.py:2163",
            &format!(
                "User-specified max_model_len ({max_model_len}) is greater than the derived max_model_len ({}). Make sure the value is correct and within the model context size.",
                model.derived_max_len
            ),
        );
    }
    api_info(
        "model.py:2152",
        &format!("Using max model len {max_model_len}"),
    );

    let engine_core = match ChildWatch::spawn(&[
        "__engine-core".to_string(),
        args.model.clone(),
        max_model_len.to_string(),
        args.served_model_name[0].clone(),
    ]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mock-vllm: cannot spawn the engine core: {e}");
            return 1;
        }
    };
    if let Some(
        f @ (StartFailure::Oom | StartFailure::KvCache | StartFailure::KvCacheMaxLen { .. }),
    ) = &forced_failure
    {
        tokio::time::sleep(settings.fail_delay).await;
        engine_core.terminate(Duration::from_secs(2)).await;
        let (text, code) = f.stderr_text();
        logging::stderr(&text);
        return code;
    }
    let state = server::build_state(args.clone(), settings.clone(), &model, max_model_len);
    if state.default_max_tokens.is_some() || !args.override_generation_config.is_empty() {
        api_info(
            "serving_chat.py:138",
            "Default sampling parameters have been overridden by the model's Hugging Face generation config recommended from the model creator. If this is not intended, please relaunch vLLM instance with `--generation-config vllm`.",
        );
    }
    api_info("entry.py:136", "Supported tasks: ['generate']");

    // The start delay: bound, not listening, so connections are refused.
    tokio::select! {
        _ = server::sleep_until(t0, settings.start_delay) => {}
        _ = sigterm.recv() => { engine_core.terminate(Duration::from_secs(2)).await; return 0; }
        _ = sigint.recv() => { engine_core.terminate(Duration::from_secs(2)).await; return 0; }
        _ = engine_core.died() => {
            logging::stderr("RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}");
            return 1;
        }
    }
    let tls = match (&args.ssl_certfile, &args.ssl_keyfile) {
        (Some(c), Some(k)) => match server::tls_acceptor(c, k) {
            Ok(a) => Some(a),
            Err(f) => {
                engine_core.terminate(Duration::from_secs(2)).await;
                return fail(&f, &settings).await;
            }
        },
        _ => None,
    };
    let listener = match socket.listen(1024) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("OSError: {e}");
            engine_core.terminate(Duration::from_secs(2)).await;
            return 1;
        }
    };
    let local = listener.local_addr().map(|a| a.port()).unwrap_or(args.port);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let shown_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    api_info(
        "entry.py:140",
        &format!("Starting vLLM server on {scheme}://{shown_host}:{local}"),
    );
    api_info(
        "api_server.py:1912",
        &format!("Starting vLLM API server 0 on {scheme}://{shown_host}:{local}"),
    );
    server::log_routes(&state);
    logging::plain(&format!(
        "INFO:     Started server process [{}]",
        std::process::id()
    ));
    logging::plain("INFO:     Waiting for application startup.");
    logging::plain("INFO:     Application startup complete.");

    if let Some(after) = settings.worker_death_after {
        let pid = engine_core.pid;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            // SAFETY: kill(2) on our engine-core child; it then kills its worker.
            unsafe {
                libc::kill(pid, libc::SIGUSR1);
            }
        });
    }
    let shutdown = async {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
    };
    let ending = server::run_server(
        state,
        MockListener::new(listener, tls),
        shutdown,
        engine_core.died(),
    )
    .await;
    match ending {
        Ending::Crash => {
            engine_core.kill_tree();
            1
        }
        Ending::Shutdown | Ending::EngineDied => {
            engine_core.terminate(Duration::from_millis(1500)).await;
            api_info("core_client.py:777", "[shutdown] MPClient: complete");
            0
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    EngineCore,
    Worker,
}

fn set_process_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// `mock-vllm __engine-core MODEL MAX_MODEL_LEN SERVED` and `mock-vllm __worker MODEL`.
fn child_main(role: Role, args: &[String]) -> i32 {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 1;
    };
    rt.block_on(child_run(role, args))
}

async fn orphan_watch(linger: Duration) {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let mut orphaned_at: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // SAFETY: as above.
        let now_parent = unsafe { libc::getppid() };
        if now_parent != parent && orphaned_at.is_none() {
            orphaned_at = Some(Instant::now());
        }
        if orphaned_at.is_some_and(|t| t.elapsed() >= linger) {
            return;
        }
    }
}

async fn child_run(role: Role, args: &[String]) -> i32 {
    let env = Env::from_process();
    let linger = env
        .secs("MOCK_VLLM_ORPHAN_LINGER")
        .unwrap_or(Duration::from_secs(600));
    let model = args.first().cloned().unwrap_or_default();
    let (Ok(mut sigterm), Ok(mut sigint)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return 1;
    };
    match role {
        Role::Worker => {
            set_process_name("VLLM::Worker");
            vlog(
                "Worker",
                "INFO",
                "cpu_model_runner.py:68",
                &format!("Starting to load model {model}..."),
            );
            vlog(
                "Worker",
                "INFO",
                "default_loader.py:501",
                "Loading weights took 0.01 seconds",
            );
            tokio::select! {
                _ = sigterm.recv() => 0,
                _ = sigint.recv() => 0,
                _ = orphan_watch(linger) => 0,
            }
        }
        Role::EngineCore => {
            set_process_name("VLLM::EngineCore");
            let max_len = args.get(1).cloned().unwrap_or_else(|| "2048".into());
            let served = args.get(2).cloned().unwrap_or_else(|| model.clone());
            vlog(
                "EngineCore",
                "INFO",
                "core.py:133",
                &format!(
                    "Initializing a V1 LLM engine (v0.32.0) with config: model='{model}', speculative_config=None, tokenizer='{model}', skip_tokenizer_init=False, tokenizer_mode=auto, revision=None, max_seq_len={max_len}, served_model_name={served}"
                ),
            );
            let Ok(exe) = std::env::current_exe() else {
                return 1;
            };
            let Ok(mut worker) = tokio::process::Command::new(exe)
                .arg("__worker")
                .arg(&model)
                .stdin(Stdio::null())
                .spawn()
            else {
                return 1;
            };
            let wpid = worker.id().map(|p| p as i32).unwrap_or(-1);
            vlog(
                "EngineCore",
                "INFO",
                "kv_cache_utils.py:2327",
                &format!(
                    "CPU KV cache size: 1,048,576 tokens, Maximum concurrency for {max_len} tokens per request: {:.2}x",
                    1_048_576f64 / max_len.parse::<f64>().unwrap_or(2048.0)
                ),
            );
            let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
                return 1;
            };
            let kill_worker = |sig: i32| {
                if wpid > 0 {
                    // SAFETY: kill(2) on our own worker child.
                    unsafe {
                        libc::kill(wpid, sig);
                    }
                }
            };
            let orphan = orphan_watch(linger);
            tokio::pin!(orphan);
            loop {
                tokio::select! {
                    _ = sigterm.recv() => break,
                    _ = sigint.recv() => break,
                    _ = usr1.recv() => kill_worker(libc::SIGKILL),
                    _ = &mut orphan => break,
                    status = worker.wait() => {
                        let code = status.ok().and_then(|s| s.code()).map(|c| c.to_string()).unwrap_or_else(|| "None".into());
                        vlog("EngineCore", "ERROR", "multiproc_executor.py:315", &format!("Worker proc VllmWorker-0 died unexpectedly (exit code: {code}), shutting down executor."));
                        vlog("EngineCore", "ERROR", "core.py:1512", "EngineCore encountered a fatal error.\nTraceback (most recent call last):\n  File \"/opt/venv/site-packages/vllm/v1/engine/core.py\", line 1702, in _handle_client_request\n    raise RuntimeError(\"Executor failed.\")\nRuntimeError: Executor failed.");
                        logging::stderr("Process EngineCore:\nTraceback (most recent call last):\n  File \"/usr/lib/python3.12/multiprocessing/process.py\", line 314, in _bootstrap\n    self.run()\n  File \"/opt/venv/site-packages/vllm/v1/engine/core.py\", line 1702, in _handle_client_request\n    raise RuntimeError(\"Executor failed.\")\nRuntimeError: Executor failed.");
                        return 1;
                    }
                }
            }
            kill_worker(libc::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(2), worker.wait())
                .await
                .is_err()
            {
                kill_worker(libc::SIGKILL);
                let _ = worker.wait().await;
            }
            0
        }
    }
}
