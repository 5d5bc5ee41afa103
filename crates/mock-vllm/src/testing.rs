//! The in-process mock for other crates' tests: [`spawn_for_test`] runs the same HTTP server,
//! engine and metrics in the calling tokio runtime on 127.0.0.1:0, without child processes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::cli::{self, Command};
use crate::env::{Env, Settings};
use crate::model;
use crate::server::{self, Ending, MockListener};

/// Why [`spawn_for_test`] could not start a server: what `mock-vllm serve` would have printed on
/// stderr, and its exit code (2 for a bad command line, 1 for a failed start-up).
#[derive(Debug, Clone)]
pub struct StartError {
    pub stderr: String,
    pub exit_code: i32,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mock-vllm failed to start (exit code {}): {}",
            self.exit_code, self.stderr
        )
    }
}

impl std::error::Error for StartError {}

/// A running in-process mock server. Dropping it stops the server.
pub struct MockHandle {
    addr: SocketAddr,
    base_url: String,
    model: String,
    shutdown: Option<oneshot::Sender<()>>,
    kill_engine: Arc<Notify>,
    task: Option<JoinHandle<i32>>,
}

impl MockHandle {
    /// The address the server listens on (always 127.0.0.1, port chosen by the OS).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or `https://` when --ssl-certfile/--ssl-keyfile were given).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The first served model name (the `id` of /v1/models' first entry).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Simulates the worker process dying: /health answers 503 for `MOCK_VLLM_DEATH_503_SECONDS`
    /// (from the env given to [`spawn_for_test`], default 2 s), then the server stops by itself
    /// (exit code 0, see [`MockHandle::wait`]).
    pub fn kill_engine(&self) {
        self.kill_engine.notify_one();
    }

    /// Stops the server as SIGTERM would (in-flight streams end with `finish_reason: "abort"`);
    /// returns the exit code the process would have had (0).
    pub async fn shutdown(mut self) -> i32 {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.join().await
    }

    /// Waits until the server stops by itself (injected crash: 1, engine death: 0).
    pub async fn wait(mut self) -> i32 {
        self.join().await
    }

    async fn join(&mut self) -> i32 {
        match self.task.take() {
            Some(t) => t.await.unwrap_or(1),
            None => 0,
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts an in-process mock vLLM on 127.0.0.1 with an OS-chosen port.
///
/// `args` is the `vllm serve` command line without the program name, e.g.
/// `&["tiny-model", "--served-model-name", "tiny", "--max-model-len", "512"]` (a leading
/// `"serve"` is accepted; `--host`/`--port` are ignored). `env` stands in for the process
/// environment: the same `MOCK_VLLM_*` and `VLLM_*` variables the binary reads (e.g.
/// `("VLLM_SERVER_DEV_MODE", "1")`, `("MOCK_VLLM_TOKEN_LATENCY_MS", "0")`); the real process
/// environment is not read. Start-up delay and child processes do not apply; start-up failures
/// (bad flags, missing model directory, ...) are returned as [`StartError`]. Logs are silent
/// unless `env` holds `MOCK_VLLM_LOG=1`.
pub async fn spawn_for_test(args: &[&str], env: &[(&str, &str)]) -> Result<MockHandle, StartError> {
    let env = Env::from_pairs(env);
    crate::logging::set_quiet(!env.truthy("MOCK_VLLM_LOG"));
    let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if argv.first().map(String::as_str) != Some("serve") {
        argv.insert(0, "serve".into());
    }
    let args = match cli::parse(&argv) {
        Command::Serve(a) => *a,
        Command::Print(text) => {
            return Err(StartError {
                stderr: text,
                exit_code: 0,
            });
        }
        Command::Fail(text, code) => {
            return Err(StartError {
                stderr: text,
                exit_code: code,
            });
        }
    };
    let settings = Settings::from_env(&env);
    let err = |f: model::StartFailure| {
        let (stderr, exit_code) = f.stderr_text();
        StartError { stderr, exit_code }
    };
    if let Some(f) = settings
        .forced_failure
        .as_deref()
        .and_then(|k| model::forced_failure(k, &args.model, args.max_model_len.unwrap_or(2048)))
    {
        return Err(err(f));
    }
    let model = model::resolve(&args.model, &settings).map_err(err)?;
    let max_model_len = server::effective_max_model_len(&args, &model, &settings).map_err(err)?;
    let tls = match (&args.ssl_certfile, &args.ssl_keyfile) {
        (Some(c), Some(k)) => Some(server::tls_acceptor(c, k).map_err(err)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| StartError {
            stderr: format!("OSError: {e}"),
            exit_code: 1,
        })?;
    let addr = listener.local_addr().map_err(|e| StartError {
        stderr: e.to_string(),
        exit_code: 1,
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let state = server::build_state(args, settings.clone(), &model, max_model_len);
    let served = state.served[0].clone();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let kill = Arc::new(Notify::new());
    let kill2 = kill.clone();
    if let Some(after) = settings.worker_death_after {
        let k = kill.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            k.notify_one();
        });
    }
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = shutdown_rx.await;
        };
        let death = async move { kill2.notified().await };
        match server::run_server(state, MockListener::new(listener, tls), shutdown, death).await {
            Ending::Crash => 1,
            Ending::Shutdown | Ending::EngineDied => 0,
        }
    });
    Ok(MockHandle {
        addr,
        base_url: format!("{scheme}://{addr}"),
        model: served,
        shutdown: Some(shutdown_tx),
        kill_engine: kill,
        task: Some(task),
    })
}
