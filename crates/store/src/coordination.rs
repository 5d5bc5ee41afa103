//! Leases in the store that give singleton duties one owner across server instances.
//!
//! Several processes of each server run at once (one set per Crush session), but
//! some duties must run exactly once per machine: the metrics sampler, the
//! Prometheus listener, the alert webhook, the idle reaper, autostart, the launch
//! queue. Each is a row in the `leases` table; whoever holds an unexpired row owns
//! the duty.
//!
//! A lease is taken ([`try_acquire`]) when it is free, already ours, expired, or
//! held by a process on this host that is gone. That last case is the fast path
//! after a SIGKILL: the dead holder is noticed at once (`kill(pid, 0)` says ESRCH,
//! or the pid now belongs to another process: its start time in `/proc` differs,
//! or the machine rebooted since) instead of waiting for the TTL. A holder on
//! another host can only be outlived (its lease expires); expiry compares wall
//! clocks, so hosts sharing a store must keep them in sync.
//!
//! Async code uses [`LeaseKeeper`], which acquires and renews in the background
//! and says through a `watch` channel whether this process holds the duty now.

use crate::Store;
use crate::error::{Result, StoreError};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// The duties known today. A duty is any string; these are the ones the servers use.
pub mod duties {
    pub const METRICS_SAMPLER: &str = "metrics_sampler";
    pub const PROMETHEUS_LISTENER: &str = "prometheus_listener";
    pub const ALERT_WEBHOOK: &str = "alert_webhook";
    pub const IDLE_REAPER: &str = "idle_reaper";
    pub const AUTOSTART: &str = "autostart";
    pub const LAUNCH_QUEUE: &str = "launch_queue";
    pub const GATEWAY: &str = "gateway";
}

/// Who holds a lease: one process (or, in tests, one contender inside it).
///
/// [`HolderId::for_process`] is the id a server uses for all its duties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderId {
    id: String,
    pid: u32,
    host: String,
    start_time: Option<u64>,
    boot_id: Option<String>,
}

impl HolderId {
    /// A new holder for this process, with a fresh random nonce: two ids from
    /// one process are different holders.
    pub fn new() -> HolderId {
        let pid = std::process::id();
        HolderId {
            id: format!("{}:{pid}:{:016x}", binary_name(), nonce()),
            pid,
            host: hostname(),
            start_time: process_start_time(pid),
            boot_id: boot_id(),
        }
    }

    /// This process's holder id: the same value for every call.
    pub fn for_process() -> &'static HolderId {
        static ID: OnceLock<HolderId> = OnceLock::new();
        ID.get_or_init(HolderId::new)
    }

    /// An id with a given identity, for tests and tools that act for another
    /// process. `start_time` is `/proc/<pid>/stat` field 22; `boot_id` is
    /// `/proc/sys/kernel/random/boot_id`; `None` means unknown (not checked).
    pub fn from_parts(
        id: impl Into<String>,
        pid: u32,
        host: impl Into<String>,
        start_time: Option<u64>,
        boot_id: Option<String>,
    ) -> HolderId {
        HolderId {
            id: id.into(),
            pid,
            host: host.into(),
            start_time,
            boot_id,
        }
    }

    /// `binary:pid:nonce`, the `holder` column.
    pub fn as_str(&self) -> &str {
        &self.id
    }
    pub fn pid(&self) -> u32 {
        self.pid
    }
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn start_time(&self) -> Option<u64> {
        self.start_time
    }
    pub fn boot_id(&self) -> Option<&str> {
        self.boot_id.as_deref()
    }
}

impl Default for HolderId {
    fn default() -> Self {
        HolderId::new()
    }
}

impl std::fmt::Display for HolderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// One row of the `leases` table, for the server-health tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub duty: String,
    pub holder: String,
    pub pid: u32,
    pub host: String,
    /// Unix seconds.
    pub acquired_at: f64,
    pub renewed_at: f64,
    pub expires_at: f64,
    /// `expires_at` has passed: anyone may take it.
    pub expired: bool,
}

struct Row {
    holder: String,
    pid: u32,
    host: String,
    start_time: Option<u64>,
    boot_id: Option<String>,
    expires_at: f64,
}

fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(StoreError::invalid(
            "ttl",
            "a lease needs a positive time to live",
        ));
    }
    Ok(())
}

/// Takes `duty` for `holder` for `ttl` if it is free, expired, already held by
/// `holder` (then it is renewed), or held by a dead process on this host.
/// `Ok(false)` when someone else holds it.
pub fn try_acquire(store: &Store, duty: &str, holder: &HolderId, ttl: Duration) -> Result<bool> {
    check_ttl(ttl)?;
    let taken = store.write(|tx| -> Result<_> {
        let now = crate::time::unix_now();
        let row = tx
            .query_row(
                "SELECT holder, pid, host, start_time, boot_id, expires_at FROM leases WHERE duty = ?1",
                [duty],
                |r| {
                    Ok(Row {
                        holder: r.get(0)?,
                        pid: r.get(1)?,
                        host: r.get(2)?,
                        start_time: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                        boot_id: r.get(4)?,
                        expires_at: r.get(5)?,
                    })
                },
            )
            .optional()?;
        let expires_at = now + ttl.as_secs_f64();
        match row {
            Some(r) if r.holder == holder.id => {
                tx.execute(
                    "UPDATE leases SET renewed_at = ?2, expires_at = ?3 WHERE duty = ?1",
                    params![duty, now, expires_at],
                )?;
                return Ok(Some(false));
            }
            Some(r) if r.expires_at > now && !holder_is_dead(&r, holder) => return Ok(None),
            Some(r) => {
                let why = if r.expires_at <= now { "expired" } else { "holder process is gone" };
                tracing::info!(duty, previous = %r.holder, pid = r.pid, host = %r.host, why, "taking over lease");
            }
            None => {}
        }
        tx.execute(
            "INSERT OR REPLACE INTO leases
                 (duty, holder, pid, host, start_time, boot_id, acquired_at, renewed_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
            params![
                duty,
                holder.id,
                holder.pid,
                holder.host,
                holder.start_time.map(|v| v as i64),
                holder.boot_id,
                now,
                expires_at
            ],
        )?;
        Ok(Some(true))
    })?;
    if taken == Some(true) {
        tracing::info!(duty, holder = %holder, ttl_s = ttl.as_secs_f64(), "lease acquired");
    }
    Ok(taken.is_some())
}

/// Extends `holder`'s lease on `duty` by `ttl` from now. `Ok(false)` when
/// `holder` does not hold it (any more).
pub fn renew(store: &Store, duty: &str, holder: &HolderId, ttl: Duration) -> Result<bool> {
    check_ttl(ttl)?;
    store.write(|tx| {
        let now = crate::time::unix_now();
        let n = tx.execute(
            "UPDATE leases SET renewed_at = ?3, expires_at = ?4 WHERE duty = ?1 AND holder = ?2",
            params![duty, holder.id, now, now + ttl.as_secs_f64()],
        )?;
        Ok(n == 1)
    })
}

/// Gives up `holder`'s lease on `duty`. `Ok(false)` when it did not hold it.
pub fn release(store: &Store, duty: &str, holder: &HolderId) -> Result<bool> {
    let released = store.write(|tx| -> Result<_> {
        Ok(tx.execute(
            "DELETE FROM leases WHERE duty = ?1 AND holder = ?2",
            params![duty, holder.id],
        )? == 1)
    })?;
    if released {
        tracing::info!(duty, holder = %holder, "lease released");
    }
    Ok(released)
}

/// Every lease row, expired ones included, ordered by duty.
pub fn holders(store: &Store) -> Result<Vec<LeaseInfo>> {
    let now = crate::time::unix_now();
    store.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT duty, holder, pid, host, acquired_at, renewed_at, expires_at FROM leases ORDER BY duty",
        )?;
        let rows = stmt.query_map([], |r| {
            let expires_at: f64 = r.get(6)?;
            Ok(LeaseInfo {
                duty: r.get(0)?,
                holder: r.get(1)?,
                pid: r.get(2)?,
                host: r.get(3)?,
                acquired_at: r.get(4)?,
                renewed_at: r.get(5)?,
                expires_at,
                expired: expires_at <= now,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

/// The duties `holder` holds now (unexpired), ordered by name.
pub fn held_by_me(store: &Store, holder: &HolderId) -> Result<Vec<String>> {
    let now = crate::time::unix_now();
    store.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT duty FROM leases WHERE holder = ?1 AND expires_at > ?2 ORDER BY duty",
        )?;
        let rows = stmt.query_map(params![holder.id, now], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
    })
}

/// Whether the process behind `row` is certainly gone. Only decidable on our
/// own host; elsewhere the lease has to expire.
fn holder_is_dead(row: &Row, me: &HolderId) -> bool {
    if row.host != me.host {
        return false;
    }
    if let (Some(theirs), Some(ours)) = (&row.boot_id, &me.boot_id)
        && theirs != ours
    {
        return true; // taken before this machine rebooted
    }
    !process_alive(row.pid, row.start_time)
}

/// Whether process `pid` exists and, if `start_time` is known, is the same
/// process that had that start time (not a later one that reused the pid).
/// A zombie (killed, not yet reaped) counts as dead.
pub fn process_alive(pid: u32, start_time: Option<u64>) -> bool {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid_t <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid_t, 0) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    if rc != 0 && errno == Some(libc::ESRCH) {
        return false;
    }
    // It exists (EPERM also means it exists, owned by someone else).
    match proc_stat(pid) {
        Some((state, start)) => {
            if matches!(state, 'Z' | 'X') {
                return false;
            }
            start_time.is_none_or(|t| t == start)
        }
        // No /proc (not Linux) or it exited just now: trust kill's answer.
        None => rc == 0 || errno == Some(libc::EPERM),
    }
}

/// `/proc/<pid>/stat`: the state (field 3) and start time (field 22).
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?; // fields 4..=21 skipped: 22 is the 20th after ')'
    Some((state, start))
}

/// `/proc/<pid>/stat` field 22: clock ticks after boot at which `pid` started.
pub fn process_start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success
    // (we also stop at the end of the buffer).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !name.is_empty() {
            return name;
        }
    }
    "localhost".to_owned()
}

fn binary_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "vllm-mcp".to_owned())
}

/// 64 random bits: /dev/urandom, or time, pid and a counter when it is unreadable.
fn nonce() -> u64 {
    use std::io::Read;
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok()
    {
        return u64::from_ne_bytes(buf);
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // splitmix64 of the mix, so ids made in the same nanosecond still differ.
    let mut z =
        nanos ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Keeps one duty's lease in the background: tries to acquire or renew it every
/// `ttl / 3` and publishes "this process holds it now" on a `watch` channel.
/// Dropping it (or [`LeaseKeeper::shutdown`]) stops the task, which releases the
/// lease so another process can take it at once. If the process is killed
/// instead, others take the lease over through the dead-pid check or expiry.
///
/// Must be created inside a Tokio runtime.
///
/// ```no_run
/// use std::time::Duration;
/// use vllm_store::coordination::{HolderId, LeaseKeeper, duties};
/// # async fn sample_forever() {}
/// # async fn f(store: vllm_store::Store) {
/// let keeper = LeaseKeeper::spawn(
///     store,
///     duties::METRICS_SAMPLER,
///     HolderId::for_process().clone(),
///     Duration::from_secs(30),
/// );
/// let mut held = keeper.subscribe();
/// loop {
///     // Wait until this process owns the duty, then run it until it does not.
///     if held.wait_for(|h| *h).await.is_err() {
///         break;
///     }
///     tokio::select! {
///         _ = sample_forever() => {}
///         _ = held.wait_for(|h| !*h) => {}
///     }
/// }
/// keeper.shutdown().await;
/// # }
/// ```
#[derive(Debug)]
pub struct LeaseKeeper {
    held: watch::Receiver<bool>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// Starts keeping `duty` for `holder` with leases of `ttl` (at least 3 ms).
    pub fn spawn(
        store: Store,
        duty: impl Into<String>,
        holder: HolderId,
        ttl: Duration,
    ) -> LeaseKeeper {
        let duty = duty.into();
        let ttl = ttl.max(Duration::from_millis(3));
        let (tx, held) = watch::channel(false);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(keep(store, duty, holder, ttl, tx, stopped));
        LeaseKeeper { held, stop, task }
    }

    /// Whether this process holds the duty now.
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// A receiver of "held now" that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.held.clone()
    }

    /// Stops renewing, releases the lease and waits for that to be done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "lease keeper task failed");
        }
    }
}

async fn keep(
    store: Store,
    duty: String,
    holder: HolderId,
    ttl: Duration,
    held: watch::Sender<bool>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the lease we hold was last confirmed, by the monotonic clock.
    let mut confirmed: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let (s, d, h) = (store.clone(), duty.clone(), holder.clone());
        let outcome = tokio::task::spawn_blocking(move || try_acquire(&s, &d, &h, ttl))
            .await
            .unwrap_or_else(|e| Err(StoreError::Internal(format!("lease task panicked: {e}"))));
        let now_held = match outcome {
            Ok(true) => {
                confirmed = Some(started);
                true
            }
            Ok(false) => {
                confirmed = None;
                false
            }
            Err(e) => {
                // A store hiccup: the lease we hold stays ours until it expires,
                // so keep claiming it until a safety margin before that.
                let still = confirmed.is_some_and(|t| t.elapsed() < ttl.mul_f64(0.8));
                tracing::warn!(duty, error = %e, still_held = still, "lease renewal failed");
                still
            }
        };
        held.send_if_modified(|v| std::mem::replace(v, now_held) != now_held);
    }
    held.send_replace(false);
    let outcome = tokio::task::spawn_blocking(move || release(&store, &duty, &holder)).await;
    if let Ok(Err(e)) = outcome {
        tracing::warn!(error = %e, "lease release failed; it will expire");
    }
}
