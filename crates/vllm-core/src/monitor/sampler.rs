//! The sampler: every interval, scrape `/metrics` of every known vLLM server at once and
//! write what it said (or that it did not answer) to the store.
//!
//! Targets are the attached endpoints (the config's `[[endpoints]]`) and every launched
//! model whose status says a process should be serving (`loading`, `loaded`, `sleeping`);
//! a launched model at the URL of an attached endpoint is scraped once, under the
//! endpoint's name. Each scrape has its own timeout, so one stuck server delays nothing.
//!
//! With `monitor.source = "prometheus"` Prometheus scrapes the servers and the sampler
//! records only the GPUs (NVML is local; Prometheus does not have it).
//!
//! Only one process samples: [`run`] keeps the `metrics_sampler` lease and samples while
//! it holds it. Every instance runs `run`; when the holder dies another takes over.

use super::history;
use super::sample::Sample;
use crate::config::Config;
use crate::coordination::{HolderId, LeaseKeeper, duties};
use crate::error::{Error, Result};
use crate::gpu::Gpus;
use crate::models::{self, ModelStatus};
use crate::prom::{self, VllmSnapshot};
use crate::store::Store;
use crate::vllm::{EndpointSpec, VllmClient};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the holder prunes and downsamples the history.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

/// One server to scrape.
#[derive(Debug, Clone)]
pub struct Target {
    /// An attached endpoint's name, or a launched model's id.
    pub name: String,
    pub base_url: String,
    pub client: VllmClient,
    /// Launched by us (else attached).
    pub launched: bool,
}

/// Scrapes and records; shared by the sampling loop and tests.
#[derive(Debug)]
pub struct Sampler {
    config: Arc<Config>,
    store: Store,
    gpus: Gpus,
    attached: Vec<VllmClient>,
    /// Clients of launched servers by base URL, kept so their connections are reused.
    launched: Mutex<HashMap<String, VllmClient>>,
}

impl Sampler {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        gpus: Gpus,
        attached: Vec<VllmClient>,
    ) -> Sampler {
        Sampler {
            config,
            store,
            gpus,
            attached,
            launched: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds between rounds (`monitor.sample_interval_seconds`).
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.config.monitor.sample_interval_seconds.max(0.01))
    }

    /// The store the samples go to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every server to scrape now. Reads the store (blocking). None when the vLLM
    /// figures come from Prometheus (`monitor.source = "prometheus"`): the rounds then
    /// record only the GPUs.
    pub fn targets(&self) -> Result<Vec<Target>> {
        if self.config.monitor.source == crate::config::MetricsSource::Prometheus {
            return Ok(Vec::new());
        }
        let mut out: Vec<Target> = self
            .attached
            .iter()
            .map(|c| Target {
                name: c.name().to_string(),
                base_url: c.base_url().to_string(),
                client: c.clone(),
                launched: false,
            })
            .collect();
        let records = models::list(&self.store)?;
        let mut clients = self.launched.lock().unwrap_or_else(|e| e.into_inner());
        for r in records {
            if !matches!(
                r.status,
                ModelStatus::Loading | ModelStatus::Loaded | ModelStatus::Sleeping
            ) {
                continue;
            }
            let Some(url) = r.base_url() else { continue };
            if out.iter().any(|t| t.base_url == url) {
                continue;
            }
            let client = match clients.get(&url) {
                Some(c) => c.clone(),
                None => {
                    let spec = EndpointSpec::launched(&r.model_id, &url, &self.config);
                    let c = VllmClient::new(spec)?;
                    clients.insert(url.clone(), c.clone());
                    c
                }
            };
            let name = if out.iter().any(|t| t.name == r.model_id) {
                format!("{}@{url}", r.model_id)
            } else {
                r.model_id.clone()
            };
            out.push(Target {
                name,
                base_url: url,
                client,
                launched: true,
            });
        }
        Ok(out)
    }

    /// Scrapes one target: one sample per served model, or one failed sample.
    pub async fn scrape(target: &Target, timeout: Duration) -> Vec<Sample> {
        let result = tokio::time::timeout(timeout, target.client.metrics_text()).await;
        let ts = crate::time::unix_now();
        let down = |code: &str| vec![Sample::down(ts, &target.name, &target.base_url, code)];
        let text = match result {
            Err(_) => return down("BACKEND_TIMEOUT"),
            Ok(Err(e)) => return down(e.code()),
            Ok(Ok(t)) => t,
        };
        let (expo, problems) = prom::parse_lenient(&text);
        let snap = VllmSnapshot::from_exposition(&expo);
        if snap.models.is_empty() && !problems.is_empty() {
            // An answer that is not metrics (an HTML page, a cut body): not up.
            return down("BACKEND_ERROR");
        }
        let start_time = expo
            .family("process_start_time_seconds")
            .and_then(|f| f.sum_where(|_| true));
        Sample::from_snapshot(ts, &target.name, &target.base_url, &snap, start_time)
    }

    /// One round: every target scraped concurrently, the GPUs read, all written in one
    /// transaction. Returns the samples written.
    pub async fn round(self: &Arc<Self>) -> Result<Vec<Sample>> {
        let me = self.clone();
        let targets = tokio::task::spawn_blocking(move || me.targets())
            .await
            .map_err(|e| Error::Internal(format!("sampler task failed: {e}")))??;
        let timeout = self
            .interval()
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        let mut set = tokio::task::JoinSet::new();
        for (i, t) in targets.into_iter().enumerate() {
            set.spawn(async move { (i, Sampler::scrape(&t, timeout).await) });
        }
        let mut results = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                results.push(r);
            }
        }
        results.sort_by_key(|(i, _)| *i);
        let samples: Vec<Sample> = results.into_iter().flat_map(|(_, s)| s).collect();
        let gpus = self.gpus.clone();
        let store = self.store.clone();
        let written = samples.clone();
        tokio::task::spawn_blocking(move || {
            let ts = crate::time::unix_now();
            // No GPU (or NVML failing) is not a reason to lose the metrics.
            let snaps = gpus.snapshots().unwrap_or_default();
            history::insert(&store, &written, &snaps, ts)
        })
        .await
        .map_err(|e| Error::Internal(format!("sampler task failed: {e}")))??;
        Ok(samples)
    }

    /// Prunes past the retention and downsamples past an hour.
    pub async fn maintain(&self) -> Result<usize> {
        let store = self.store.clone();
        let retention = self.config.monitor.retention_hours * 3600.0;
        tokio::task::spawn_blocking(move || {
            let n = history::maintain(&store, crate::time::unix_now(), retention)?;
            if n > 0 {
                store.incremental_vacuum()?;
            }
            Ok(n)
        })
        .await
        .map_err(|e| Error::Internal(format!("sampler task failed: {e}")))?
    }
}

/// The lease time of the sampler duty: a killed holder on this host is replaced at the
/// next renewal attempt of another instance (dead pid), elsewhere after this.
pub fn lease_ttl(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(15))
}

/// Samples for as long as the process lives, while it holds the sampler lease.
pub async fn run(sampler: Arc<Sampler>, holder: HolderId) {
    let interval = sampler.interval();
    let keeper = LeaseKeeper::spawn(
        sampler.store().clone(),
        duties::METRICS_SAMPLER,
        holder,
        lease_ttl(interval),
    );
    let mut held = keeper.subscribe();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_maintenance: Option<Instant> = None;
    loop {
        if held.wait_for(|h| *h).await.is_err() {
            break;
        }
        tick.tick().await;
        if !*held.borrow() {
            continue;
        }
        if let Err(e) = sampler.round().await {
            tracing::warn!(error = %e, "metrics sampling round failed");
        }
        super::alerts::after_round(&sampler.config, sampler.store()).await;
        if last_maintenance.is_none_or(|t| t.elapsed() >= MAINTENANCE_INTERVAL) {
            last_maintenance = Some(Instant::now());
            match sampler.maintain().await {
                Ok(n) if n > 0 => tracing::debug!(rows = n, "metric history pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "metric history maintenance failed"),
            }
        }
    }
    keeper.shutdown().await;
}
