//! Process plumbing for the server binaries: flags, tracing to stderr, stdio until EOF.
//!
//! stdout is the JSON-RPC channel, so every log line goes to stderr. The process exits
//! as soon as stdin closes or SIGTERM arrives, without waiting for background work:
//! every write is already durable when its call returned.

use crate::context::Kit;
use crate::server::McpServer;
use crate::service::Service;
use crate::tool::Toolbox;
use rmcp::ServiceExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::filter::{LevelFilter, Targets};
use vllm_core::Result;
use vllm_core::config::Config;

/// Flags every server binary takes.
///
/// Parsed by hand: four flags do not need an argument-parsing crate, and leaving one out
/// spares every server its code (the servers' resident memory is mostly their own code,
/// PERFORMANCE.md).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// TOML configuration file (else VLLM_MCP_CONFIG, else $XDG_CONFIG_HOME/vllm-mcp/config.toml).
    pub config: Option<PathBuf>,
    /// Log at debug level on stderr (VLLM_MCP_LOG or RUST_LOG set a filter instead).
    pub debug: bool,
    /// Log as JSON lines on stderr.
    pub log_json: bool,
    /// Print the effective configuration as TOML and exit.
    pub print_config: bool,
    /// The service mode asked for (its flag), instead of MCP on stdio.
    pub mode: Option<&'static str>,
}

/// A future a service mode runs until it ends or a signal stops it.
pub type ServiceFuture = std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// A way a server binary runs as a long-lived service instead of MCP on stdio, chosen
/// by a flag (the model manager's `--gateway`).
#[derive(Clone, Copy)]
pub struct Mode {
    pub flag: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    /// The service: runs until it ends, SIGTERM or SIGINT.
    pub run: fn(Arc<Kit>) -> ServiceFuture,
}

/// What a command line asks for besides serving.
#[derive(Debug, PartialEq, Eq)]
pub enum NotServing {
    /// `--help` or `-h`: the usage text, for stdout.
    Help(String),
    /// `--version` or `-V`: the version line, for stdout.
    Version(String),
    /// A flag that does not exist or lacks its value: the message, for stderr.
    Bad(String),
}

impl Args {
    /// The usage text of `server`.
    pub fn usage(server: &str) -> String {
        Args::usage_with(server, &[])
    }

    /// The usage text of `server` with its service `modes`.
    pub fn usage_with(server: &str, modes: &[Mode]) -> String {
        let mut text = format!(
            "An MCP server on stdio ({server}).\n\n\
             Usage: {server} [OPTIONS]\n\n\
             Options:\n\
             \x20     --config <PATH>  TOML configuration file (else VLLM_MCP_CONFIG, else\n\
             \x20                      $XDG_CONFIG_HOME/vllm-mcp/config.toml)\n\
             \x20     --debug          Log at debug level on stderr (VLLM_MCP_LOG or RUST_LOG\n\
             \x20                      set a filter instead)\n\
             \x20     --log-json       Log as JSON lines on stderr\n\
             \x20     --print-config   Print the effective configuration as TOML and exit\n\
             \x20 -h, --help           Print help\n\
             \x20 -V, --version        Print version\n"
        );
        for m in modes {
            text.push_str(&format!("      {:<17}{}\n", m.flag, m.help));
        }
        text
    }

    /// Parses the arguments after the program name.
    pub fn parse_from<I, T>(server: &str, version: &str, args: I) -> Result<Args, NotServing>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        Args::parse_with(server, version, &[], args)
    }

    /// Parses the arguments after the program name, `modes`' flags included.
    pub fn parse_with<I, T>(
        server: &str,
        version: &str,
        modes: &[Mode],
        args: I,
    ) -> Result<Args, NotServing>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        let mut out = Args::default();
        let mut args = args.into_iter().map(Into::into);
        let bad = |m: String| {
            NotServing::Bad(format!("error: {m}\n\nFor more information, try '--help'."))
        };
        while let Some(arg) = args.next() {
            let Some(text) = arg.to_str() else {
                return Err(bad(format!(
                    "unexpected argument '{}'",
                    arg.to_string_lossy()
                )));
            };
            match text {
                "--debug" => out.debug = true,
                "--log-json" => out.log_json = true,
                "--print-config" => out.print_config = true,
                "-h" | "--help" => return Err(NotServing::Help(Args::usage_with(server, modes))),
                _ if modes.iter().any(|m| m.flag == text) => {
                    out.mode = modes.iter().find(|m| m.flag == text).map(|m| m.flag);
                }
                "-V" | "--version" => {
                    return Err(NotServing::Version(format!("{server} {version}\n")));
                }
                "--config" => match args.next() {
                    Some(path) if !path.is_empty() => out.config = Some(PathBuf::from(path)),
                    _ => return Err(bad("a value is required for '--config <PATH>'".into())),
                },
                _ => match text.strip_prefix("--config=") {
                    Some(path) if !path.is_empty() => out.config = Some(PathBuf::from(path)),
                    Some(_) => return Err(bad("a value is required for '--config <PATH>'".into())),
                    None => return Err(bad(format!("unexpected argument '{text}'"))),
                },
            }
        }
        Ok(out)
    }
}

/// Targets that log at info at most, whatever the filter asks: below info, rmcp logs
/// every request and answer raw, and the HTTP crates log headers, so arguments and keys
/// would reach the log unredacted. Our own targets log redacted values at every level.
const QUIET_TARGETS: [&str; 6] = ["rmcp", "hyper", "hyper_util", "h2", "reqwest", "rustls"];

/// The log filter: `spec` (VLLM_MCP_LOG or RUST_LOG, `target=level` directives separated
/// by commas, as `info,vllm_core=debug`), else debug or info. A spec that does not parse
/// is ignored. [`QUIET_TARGETS`] and their modules are held to info.
pub fn log_filter(spec: Option<&str>, debug: bool) -> Targets {
    let fallback = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    let asked = spec
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(fallback));
    let quiet = |t: &str| {
        QUIET_TARGETS.iter().any(|q| {
            t.strip_prefix(q)
                .is_some_and(|r| r.is_empty() || r.starts_with("::"))
        })
    };
    let mut filter = Targets::new();
    if let Some(level) = asked.default_level() {
        filter = filter.with_default(level);
    }
    for (target, level) in &asked {
        let level = if quiet(target) {
            level.min(LevelFilter::INFO)
        } else {
            level
        };
        filter = filter.with_target(target, level);
    }
    // Unnamed, a quiet target follows the default, but no further than info: naming it
    // at info would raise it above a quieter default (`warn` would still log rmcp's
    // info lines).
    let held = asked
        .default_level()
        .unwrap_or(LevelFilter::OFF)
        .min(LevelFilter::INFO);
    for q in QUIET_TARGETS {
        if !asked.iter().any(|(t, _)| t == q) {
            filter = filter.with_target(q, held);
        }
    }
    filter
}

/// Sets up tracing on stderr. Idempotent.
pub fn init_tracing(debug: bool, json: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let spec = std::env::var("VLLM_MCP_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok();
    let filter = log_filter(spec.as_deref(), debug);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = if json {
        builder.json().finish().with(filter).try_init()
    } else {
        builder.finish().with(filter).try_init()
    };
}

/// The whole life of a server binary: `build` makes the service and its tools from the kit.
pub fn main<S, F>(server: &'static str, version: &'static str, build: F) -> ExitCode
where
    S: Service,
    F: FnOnce(Arc<Kit>) -> Result<(S, Toolbox<S>)>,
{
    main_with_modes(server, version, &[], build)
}

/// [`main`] for a binary that also runs as a service (`modes`) when its flag is given.
pub fn main_with_modes<S, F>(
    server: &'static str,
    version: &'static str,
    modes: &[Mode],
    build: F,
) -> ExitCode
where
    S: Service,
    F: FnOnce(Arc<Kit>) -> Result<(S, Toolbox<S>)>,
{
    let args = match Args::parse_with(server, version, modes, std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(NotServing::Bad(m)) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{m}");
            return ExitCode::from(2);
        }
        // Asked for, instead of MCP: the one other time a server writes to stdout.
        Err(NotServing::Help(t) | NotServing::Version(t)) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(t.as_bytes()); // tidy: allow-stdout (--help, --version)
            return ExitCode::SUCCESS;
        }
    };
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
    let mode = modes.iter().find(|m| Some(m.flag) == args.mode).copied();
    // A service serves many clients at once: one worker per core. MCP on stdio is one
    // client: one thread.
    let rt = match mode {
        Some(_) => tokio::runtime::Builder::new_multi_thread(),
        None => tokio::runtime::Builder::new_current_thread(),
    };
    let rt = match { rt }.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async move {
        let served = match mode {
            Some(m) => run_service(server, version, config, m).await,
            None => serve(server, version, config, build).await,
        };
        match served {
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
        match kit.with_store(move |s| Ok(s.prune_audit(before)?)).await {
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

/// Runs a service mode until it ends, SIGTERM or SIGINT.
async fn run_service(
    server: &'static str,
    version: &'static str,
    config: Config,
    mode: Mode,
) -> Result<()> {
    let gpus = vllm_core::gpu::from_env()?;
    let kit = Arc::new(Kit::new(server, version, config, gpus)?);
    tracing::info!(server, version, mode = mode.flag, data_dir = %kit.config.data_dir.display(), "serving as a service");
    tokio::spawn(prune_audit_log(kit.clone()));
    let signal = |kind| {
        tokio::signal::unix::signal(kind)
            .map_err(|e| vllm_core::Error::Internal(format!("cannot watch signals: {e}")))
    };
    let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        r = (mode.run)(kit) => r,
        _ = term.recv() => {
            tracing::info!("SIGTERM; exiting");
            Ok(())
        }
        _ = int.recv() => {
            tracing::info!("SIGINT; exiting");
            Ok(())
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::filter::Targets;

    fn parse(args: &[&str]) -> std::result::Result<Args, NotServing> {
        Args::parse_from("vllm-x", "1.2.3", args.iter().copied())
    }

    #[test]
    fn flags_parse_in_both_spellings() {
        assert_eq!(parse(&[]), Ok(Args::default()));
        let a = parse(&[
            "--config",
            "a b.toml",
            "--debug",
            "--log-json",
            "--print-config",
        ]);
        assert_eq!(
            a,
            Ok(Args {
                config: Some("a b.toml".into()),
                debug: true,
                log_json: true,
                print_config: true,
                mode: None,
            })
        );
        assert_eq!(
            parse(&["--config=c.toml"]).map(|a| a.config),
            Ok(Some("c.toml".into()))
        );
    }

    #[test]
    fn a_service_mode_is_a_flag_of_its_own_server_only() {
        fn never(_: Arc<Kit>) -> ServiceFuture {
            Box::pin(async { Ok(()) })
        }
        let modes = [Mode {
            flag: "--gateway",
            help: "Serve the front door",
            run: never,
        }];
        let a = Args::parse_with("vllm-x", "1.0", &modes, ["--gateway", "--debug"]).unwrap();
        assert_eq!((a.mode, a.debug), (Some("--gateway"), true));
        let Err(NotServing::Help(h)) = Args::parse_with("vllm-x", "1.0", &modes, ["-h"]) else {
            panic!("no help")
        };
        assert!(
            h.contains("--gateway") && h.contains("Serve the front door"),
            "{h}"
        );
        assert!(matches!(parse(&["--gateway"]), Err(NotServing::Bad(_))));
    }

    #[test]
    fn help_and_version_are_answers_and_bad_flags_are_refused() {
        let Err(NotServing::Help(h)) = parse(&["--debug", "-h"]) else {
            panic!("no help")
        };
        assert!(h.contains("Usage: vllm-x [OPTIONS]") && h.contains("--print-config"));
        assert_eq!(
            parse(&["--version"]),
            Err(NotServing::Version("vllm-x 1.2.3\n".into()))
        );
        for bad in [
            &["--cofnig", "x"][..],
            &["--config"],
            &["--config="],
            &["serve"],
        ] {
            let Err(NotServing::Bad(m)) = parse(bad) else {
                panic!("{bad:?} accepted")
            };
            assert!(m.starts_with("error: ") && m.contains("--help"), "{m}");
        }
    }

    fn enabled(f: &Targets, target: &str, level: Level) -> bool {
        f.would_enable(target, &level)
    }

    #[test]
    fn the_filter_follows_the_spec_and_holds_quiet_targets_to_info() {
        let f = log_filter(None, false);
        assert!(enabled(&f, "vllm_core::store", Level::INFO));
        assert!(!enabled(&f, "vllm_core::store", Level::DEBUG));
        let f = log_filter(None, true);
        assert!(enabled(&f, "vllm_core::store", Level::DEBUG));
        assert!(!enabled(&f, "rmcp::service", Level::DEBUG));

        let f = log_filter(
            Some("warn,vllm_core=trace,rmcp=trace,hyper::proto=debug"),
            false,
        );
        assert!(!enabled(&f, "vllm_mcp_kit", Level::INFO));
        assert!(enabled(&f, "vllm_core::monitor", Level::TRACE));
        assert!(enabled(&f, "rmcp::service", Level::INFO));
        assert!(!enabled(&f, "rmcp::service", Level::DEBUG));
        assert!(!enabled(&f, "hyper::proto::h1", Level::DEBUG));
        assert!(!enabled(&f, "reqwest::connect", Level::DEBUG));
        // A quieter default quiets them too.
        let f = log_filter(Some("warn"), false);
        assert!(!enabled(&f, "rmcp::service", Level::INFO));
        assert!(enabled(&f, "rmcp::service", Level::WARN));
        assert!(!enabled(&f, "vllm_core", Level::INFO));
        let f = log_filter(Some("off"), false);
        assert!(!enabled(&f, "rmcp::service", Level::ERROR));
        // A crate whose name only starts like a quiet one is not held.
        let f = log_filter(Some("rmcpx=trace"), false);
        assert!(enabled(&f, "rmcpx", Level::TRACE));

        // A spec that does not parse is ignored, as if unset.
        let f = log_filter(Some("vllm_core=loud"), false);
        assert!(enabled(&f, "vllm_core", Level::INFO));
        assert!(!enabled(&f, "vllm_core", Level::DEBUG));
    }
}
