//! Serving: the listener (plain TCP or TLS with rustls), building the shared state from the
//! arguments, and the supervisor that ends the server on shutdown, injected crash or engine death.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::cli::ServeArgs;
use crate::engine::{Engine, EngineConfig};
use crate::env::Settings;
use crate::http::{AppState, Lora, Peer};
use crate::logging;
use crate::model::{ModelInfo, StartFailure};
use crate::stats::{FinishReason, HttpStats};

/// A connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The server's listening socket, with TLS when --ssl-keyfile/--ssl-certfile are given.
pub struct MockListener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl MockListener {
    pub fn new(tcp: TcpListener, tls: Option<TlsAcceptor>) -> MockListener {
        MockListener { tcp, tls }
    }
}

impl Listener for MockListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            let (stream, addr) = match self.tcp.accept().await {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match &self.tls {
                None => return (Conn::Plain(stream), addr),
                Some(acceptor) => {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                    {
                        return (Conn::Tls(Box::new(tls)), addr);
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

impl Connected<IncomingStream<'_, MockListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, MockListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// Loads the PEM certificate chain and key; Err is uvicorn's/ssl's error line.
pub fn tls_acceptor(certfile: &str, keyfile: &str) -> Result<TlsAcceptor, StartFailure> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    for f in [certfile, keyfile] {
        if !std::path::Path::new(f).exists() {
            return Err(StartFailure::Tls {
                text: "FileNotFoundError: [Errno 2] No such file or directory".into(),
            });
        }
    }
    let pem_err = || StartFailure::Tls {
        text: "ssl.SSLError: [SSL] PEM lib (_ssl.c:3900)".into(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certfile)
        .map_err(|_| pem_err())?
        .collect::<Result<_, _>>()
        .map_err(|_| pem_err())?;
    if certs.is_empty() {
        return Err(pem_err());
    }
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|_| pem_err())?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|_| StartFailure::Tls {
            text: "ssl.SSLError: [SSL: KEY_VALUES_MISMATCH] key values mismatch (_ssl.c:3900)"
                .into(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The effective max_model_len, or vLLM's failure when the flag exceeds the model's limit.
pub fn effective_max_model_len(
    args: &ServeArgs,
    model: &ModelInfo,
    settings: &Settings,
) -> Result<u64, StartFailure> {
    let derived = match model.tokenizer_max_len {
        Some(t) if t < model.derived_max_len => t,
        _ => model.derived_max_len,
    };
    match args.max_model_len {
        None => Ok(derived),
        Some(user) if user > derived && !settings.allow_long_max_model_len => {
            Err(StartFailure::MaxLen {
                user,
                derived: model.derived_max_len,
                key: model.derived_key.to_string(),
                tokenizer_max: model.tokenizer_max_len,
            })
        }
        Some(user) => Ok(user),
    }
}

/// `max_new_tokens` from the generation config (model's file per --generation-config, then the override).
fn default_max_tokens(args: &ServeArgs, model: &ModelInfo) -> Option<u64> {
    let from_model = match args.generation_config.as_str() {
        "vllm" => None,
        "auto" => model.generation_config.clone(),
        dir => std::fs::read_to_string(std::path::Path::new(dir).join("generation_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.as_object().cloned()),
    };
    let pick = |m: &serde_json::Map<String, serde_json::Value>| {
        m.get("max_new_tokens")
            .or_else(|| m.get("max_tokens"))
            .and_then(|v| v.as_u64())
    };
    pick(&args.override_generation_config).or_else(|| from_model.as_ref().and_then(pick))
}

fn parse_lora_module(spec: &str, base: &str) -> Option<Lora> {
    if spec.trim_start().starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(spec).ok()?;
        return Some(Lora {
            name: v.get("name")?.as_str()?.to_string(),
            path: v.get("path")?.as_str()?.to_string(),
            base: v
                .get("base_model_name")
                .and_then(|b| b.as_str())
                .unwrap_or(base)
                .to_string(),
        });
    }
    let (name, path) = spec.split_once('=')?;
    Some(Lora {
        name: name.to_string(),
        path: path.to_string(),
        base: base.to_string(),
    })
}

/// Builds the state the handlers share (the engine is created but not yet running).
pub fn build_state(
    args: ServeArgs,
    settings: Settings,
    model: &ModelInfo,
    max_model_len: u64,
) -> Arc<AppState> {
    let served = args.served_model_name.clone();
    let block_size = args.block_size.unwrap_or(128);
    let engine = Engine::new(EngineConfig {
        max_num_seqs: args.max_num_seqs as usize,
        block_size,
        kv_cache_tokens: settings.kv_cache_tokens,
        token_latency: settings.token_latency,
        enable_prefix_caching: args.enable_prefix_caching,
        max_model_len,
        enable_lora: args.enable_lora,
        max_loras: args.max_loras,
    });
    let cache_config = crate::metrics::cache_config_labels(
        block_size,
        args.block_size.is_some(),
        &args.kv_cache_dtype,
        args.enable_prefix_caching,
        args.gpu_memory_utilization,
        settings.kv_cache_tokens,
        max_model_len,
    );
    let loras: Vec<Lora> = args
        .lora_modules
        .iter()
        .filter_map(|m| parse_lora_module(m, &served[0]))
        .collect();
    let fingerprint = format!(
        "vllm-0.32.0-{:08x}",
        crate::tokenizer::fnv(format!("{}|{}", args.model, served[0]).as_bytes()) as u32
    );
    let api_key = args.api_key.clone().or_else(|| settings.api_key.clone());
    let pooling = is_pooling(&args.runner, &model.architecture);
    Arc::new(AppState {
        pooling,
        hidden_size: model.hidden_size,
        default_max_tokens: default_max_tokens(&args, model),
        args,
        settings,
        engine,
        served,
        max_model_len,
        loras: Mutex::new(loras),
        http: Mutex::new(HttpStats::default()),
        created: crate::http::unix_now(),
        api_key,
        dead: Default::default(),
        v1_counter: Default::default(),
        fingerprint,
        cache_config,
    })
}

/// Whether vLLM would run this model with its pooling runner: asked for, or `auto` on an
/// architecture that does not generate (`BertModel`, `...ForSequenceClassification`).
fn is_pooling(runner: &str, architecture: &str) -> bool {
    match runner {
        "pooling" => true,
        "auto" => !architecture.ends_with("ForCausalLM") && !architecture.contains("Generation"),
        _ => false,
    }
}

/// How a serving run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// SIGTERM/SIGINT or `MockHandle::shutdown`: exit 0.
    Shutdown,
    /// `MOCK_VLLM_CRASH_AFTER`: exit 1, abruptly.
    Crash,
    /// The engine (worker) died: 503 for a while, then exit 0.
    EngineDied,
}

/// Serves until `shutdown` resolves, the injected crash fires, or `engine_death` resolves.
/// Returns how it ended (the caller turns it into an exit code and cleans up processes).
pub async fn run_server(
    state: Arc<AppState>,
    listener: MockListener,
    shutdown: impl Future<Output = ()> + Send,
    engine_death: impl Future<Output = ()> + Send,
) -> Ending {
    let engine_task = tokio::spawn(state.engine.clone().run());
    let app = crate::api::router(state.clone());
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let serve = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(|v| *v).await;
        });
    let mut serve_task = tokio::spawn(async move {
        let _ = serve.await;
    });
    let crash = async {
        match state.settings.crash_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(shutdown);
    let ending = tokio::select! {
        _ = &mut shutdown => Ending::Shutdown,
        _ = crash => Ending::Crash,
        _ = engine_death => Ending::EngineDied,
        _ = &mut serve_task => Ending::Shutdown,
    };
    match ending {
        Ending::Crash => {
            logging::stderr(
                "Traceback (most recent call last):\n  File \"/opt/venv/site-packages/vllm/v1/engine/async_llm.py\", line 849, in output_handler\n    outputs = await engine_core.get_output_async()\n              ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\nRuntimeError: mock-vllm: injected crash (MOCK_VLLM_CRASH_AFTER)",
            );
            state.engine.stop(FinishReason::Abort);
            serve_task.abort();
            engine_task.abort();
            return Ending::Crash;
        }
        Ending::EngineDied => {
            state.dead.store(true, Ordering::SeqCst);
            state.engine.stop(FinishReason::Error);
            logging::api_error(
                "async_llm.py:906",
                "AsyncLLM output_handler failed.\nTraceback (most recent call last):\n  File \"/opt/venv/site-packages/vllm/v1/engine/async_llm.py\", line 849, in output_handler\n    outputs = await engine_core.get_output_async()\n              ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n  File \"/opt/venv/site-packages/vllm/v1/engine/core_client.py\", line 1235, in get_output_async\n    raise self._format_exception(outputs) from None\nvllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.",
            );
            tokio::select! {
                _ = tokio::time::sleep(state.settings.death_503) => {}
                _ = &mut shutdown => {}
            }
            logging::api_info(
                "utils.py:628",
                "[shutdown] Process manager: send sigterm to process EngineCore",
            );
        }
        Ending::Shutdown => {
            state.engine.stop(FinishReason::Abort);
        }
    }
    logging::plain("INFO:     Shutting down");
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_millis(800), &mut serve_task)
        .await
        .is_err()
    {
        serve_task.abort();
    }
    engine_task.abort();
    logging::plain("INFO:     Waiting for application shutdown.");
    logging::plain("INFO:     Application shutdown complete.");
    logging::plain(&format!(
        "INFO:     Finished server process [{}]",
        std::process::id()
    ));
    ending
}

/// The "Available routes" lines vLLM logs before serving.
pub fn log_routes(state: &AppState) {
    logging::api_info("launcher.py:186", "Available routes are:");
    let mut routes: Vec<(&str, &str)> = vec![
        ("/openapi.json", "HEAD, GET"),
        ("/docs", "HEAD, GET"),
        ("/docs/oauth2-redirect", "HEAD, GET"),
        ("/redoc", "HEAD, GET"),
        ("/load", "GET"),
        ("/version", "GET"),
        ("/health", "GET"),
        ("/metrics", "GET"),
    ];
    if state.settings.runtime_lora {
        routes.push(("/v1/load_lora_adapter", "POST"));
        routes.push(("/v1/unload_lora_adapter", "POST"));
    }
    routes.extend([
        ("/tokenize", "POST"),
        ("/detokenize", "POST"),
        ("/v1/models", "GET"),
        ("/ping", "GET"),
        ("/ping", "POST"),
    ]);
    if state.settings.dev_mode {
        routes.extend([
            ("/reset_prefix_cache", "POST"),
            ("/server_info", "GET"),
            ("/sleep", "POST"),
            ("/wake_up", "POST"),
            ("/is_sleeping", "GET"),
            ("/is_paused", "GET"),
        ]);
    }
    if state.pooling {
        routes.extend(crate::api::POOLING_ROUTES.iter().map(|r| (*r, "POST")));
    } else {
        routes.extend(crate::api::GENERATE_ROUTES.iter().map(|r| (*r, "POST")));
    }
    for (r, m) in routes {
        logging::api_info("launcher.py:195", &format!("Route: {r}, Methods: {m}"));
    }
}

/// A deadline helper: sleeps until `start + d`.
pub async fn sleep_until(start: Instant, d: Duration) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(start + d)).await;
}
