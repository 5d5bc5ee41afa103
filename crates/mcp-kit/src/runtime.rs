//! Process plumbing for the server binaries: flags, tracing to stderr, stdio until EOF.
//!
//! stdout is the JSON-RPC channel, so every log line goes to stderr. The process exits
//! as soon as stdin closes or SIGTERM arrives, without waiting for background work:
//! every write is already durable when its call returned.

use crate::context::Kit;
use crate::server::{McpServer, Service};
use crate::tool::Toolbox;
use clap::Parser;
use rmcp::ServiceExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vllm_core::Result;
use vllm_core::config::Config;

/// Flags every server binary takes.
#[derive(Debug, Parser)]
pub struct Args {
    /// TOML configuration file (else VLLM_MCP_CONFIG, else $XDG_CONFIG_HOME/vllm-mcp/config.toml).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log at debug level on stderr (VLLM_MCP_LOG or RUST_LOG set a filter instead).
    #[arg(long)]
    pub debug: bool,
    /// Log as JSON lines on stderr.
    #[arg(long)]
    pub log_json: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Sets up tracing on stderr. Idempotent.
pub fn init_tracing(debug: bool, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("VLLM_MCP_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(if debug { "debug" } else { "info" }));
    // Below info, rmcp logs every request and answer raw, and the HTTP crates log
    // headers: arguments and keys would reach the log unredacted. They stay at info
    // whatever the filter asks; our own targets log redacted values at every level.
    let filter = [
        "rmcp=info",
        "hyper=info",
        "hyper_util=info",
        "h2=info",
        "reqwest=info",
        "rustls=info",
    ]
    .into_iter()
    .filter_map(|d| d.parse().ok())
    .fold(filter, |f, d| f.add_directive(d));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(filter);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The whole life of a server binary: `build` makes the service and its tools from the kit.
pub fn main<S, F>(server: &'static str, version: &'static str, build: F) -> ExitCode
where
    S: Service,
    F: FnOnce(Arc<Kit>) -> Result<(S, Toolbox<S>)>,
{
    let args = Args::parse();
    init_tracing(args.debug, args.log_json);
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(code = e.code(), "{e}. {}", e.suggestion());
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        // The one place a server writes to stdout, on request, instead of serving MCP.
        match toml_of(&config) {
            Ok(t) => {
                use std::io::Write;
                let _ = std::io::stdout().write_all(t.as_bytes()); // tidy: allow-stdout (--print-config, no MCP)
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async move {
        match serve(server, version, config, build).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(code = e.code(), "{e}");
                ExitCode::FAILURE
            }
        }
    });
    // Do not wait for background tasks (a scrape in flight, a blocking store call):
    // stdin closed means the client is gone and every write already committed.
    rt.shutdown_timeout(Duration::from_millis(100));
    code
}

/// Keeps the audit log to `security.audit_retention_days` (0 keeps it all): soon after
/// start, then hourly. Every server does it; deleting what another already deleted
/// costs an index lookup.
async fn prune_audit_log(kit: Arc<Kit>) {
    let days = kit.config.security.audit_retention_days;
    if days == 0 {
        return;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    loop {
        let before = vllm_core::time::unix_now() - f64::from(days) * 86_400.0;
        match kit.with_store(move |s| s.prune_audit(before)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, days, "audit log pruned"),
            Err(e) => tracing::warn!(error = %e, "cannot prune the audit log"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

fn toml_of(config: &Config) -> std::result::Result<String, String> {
    toml::to_string_pretty(config).map_err(|e| format!("cannot print the configuration: {e}"))
}

async fn serve<S, F>(
    server: &'static str,
    version: &'static str,
    config: Config,
    build: F,
) -> Result<()>
where
    S: Service,
    F: FnOnce(Arc<Kit>) -> Result<(S, Toolbox<S>)>,
{
    let gpus = vllm_core::gpu::from_env()?;
    let kit = Arc::new(Kit::new(server, version, config, gpus)?);
    tracing::info!(
        server,
        version,
        data_dir = %kit.config.data_dir.display(),
        endpoints = kit.endpoints.len(),
        "serving MCP on stdio"
    );
    tokio::spawn(prune_audit_log(kit.clone()));
    let (service, tools) = build(kit)?;
    let mcp = McpServer::new(Arc::new(service), tools);
    let running = mcp
        .serve(crate::framing::guard(
            tokio::io::stdin(),
            tokio::io::stdout(),
        ))
        .await
        .map_err(|e| vllm_core::Error::Internal(format!("MCP handshake failed: {e}")))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| vllm_core::Error::Internal(format!("cannot watch SIGTERM: {e}")))?;
    tokio::select! {
        r = running.waiting() => {
            if let Err(e) = r {
                tracing::warn!("MCP session ended with an error: {e}");
            }
            tracing::info!("stdin closed; exiting");
        }
        _ = term.recv() => tracing::info!("SIGTERM; exiting"),
    }
    Ok(())
}

/// Largest allocation served from glibc's heaps; bigger ones are mmapped, and unmapped
/// (given back to the OS) when freed.
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`] for this process.
///
/// By default glibc raises the threshold to the size of the largest mmapped block
/// freed (a state save's compressed frame, ~5 MB for a 20 MB conversation; the rows of
/// a long metrics window) and its trim threshold to twice that; from then on such
/// blocks come from the heap of the thread's
/// arena, and each blocking-pool thread's arena keeps up to that trim threshold (~10 MB)
/// of free memory resident, which `malloc_trim` does not give back (it trims the top of
/// the main arena only). Measured in the benches: RSS after a state save grew by ~9.6 MiB
/// per blocking thread used (10 → 41 MiB over five saves), and a 24 h get-metrics window
/// peaked at 46 MiB (32 MiB fixed). A fixed threshold turns the dynamic adjustment off.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes the allocator's parameters.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        });
    }
}
