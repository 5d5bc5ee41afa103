//! A listener served by one instance of many: the holder of a duty's lease binds the
//! address and serves it until the lease is lost (then another instance takes over and
//! binds the same address). The Prometheus export and the front door are served so.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use vllm_core::coordination::{HolderId, LeaseKeeper};
use vllm_core::store::Store;

/// How long a holder's lease lasts without renewal (a dead holder on this host is
/// replaced at once; elsewhere after this).
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// Wait between tries when the address cannot be bound.
pub const BIND_RETRY: Duration = Duration::from_secs(2);

/// Completes when the lease is lost: the served listener shuts down gracefully.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A listener to serve.
pub struct Listen<'a> {
    pub store: Store,
    pub duty: &'static str,
    pub holder: HolderId,
    /// `host:port`.
    pub address: &'a str,
    /// What is served, for the log ("the front door").
    pub what: &'a str,
    /// Logged as a warning when the address is not loopback; `None`: no warning.
    pub beyond_loopback: Option<&'a str>,
}

/// Serves `l.address` with `serve` while this process holds the lease, for the
/// process's life. A bind that fails (the port is taken by something else) is retried,
/// logged, and never stops the caller.
pub async fn serve_while_held<F, Fut>(l: Listen<'_>, mut serve: F)
where
    F: FnMut(tokio::net::TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = std::io::Result<()>>,
{
    let keeper = LeaseKeeper::spawn(l.store, l.duty, l.holder, LEASE_TTL);
    let mut held = keeper.subscribe();
    let (address, what) = (l.address, l.what);
    loop {
        if held.wait_for(|h| *h).await.is_err() {
            break;
        }
        let listener = match tokio::net::TcpListener::bind(address).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%address, error = %e, "{what} could not bind; retrying");
                tokio::time::sleep(BIND_RETRY).await;
                continue;
            }
        };
        if let (Some(warning), Ok(addr)) = (l.beyond_loopback, listener.local_addr())
            && !addr.ip().is_loopback()
        {
            tracing::warn!(%addr, "{warning}");
        }
        tracing::info!(%address, "serving {what}");
        let mut lost = held.clone();
        let shutdown: Shutdown = Box::pin(async move {
            let _ = lost.wait_for(|h| !*h).await;
        });
        if let Err(e) = serve(listener, shutdown).await {
            tracing::warn!(error = %e, "{what} stopped");
        }
        tracing::info!(%address, "{what} closed (lease lost)");
    }
    keeper.shutdown().await;
}
