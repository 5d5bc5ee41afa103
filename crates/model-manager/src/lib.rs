//! vllm-model-manager: loads, unloads and inspects vLLM models.
//!
//! The library holds the server so tests can run it in-process; `main.rs` only starts it.
//! - one file per tool, its parameters (what the model reads in the input schema), its
//!   answer and its handler: [`list`], [`load`], [`unload`] (with [`batch`], what the
//!   two share), [`info`], [`set_config`];
//! - the runtime tools, on a server [`target`] finds: [`lora`] (load-lora-adapter,
//!   unload-lora-adapter), [`sleep`] (sleep-model, wake-model), [`chat`];
//! - [`gateway`]: the front door (`vllm_gateway`), embedded or as `--gateway`;
//! - [`resources`]: `vllm://model/{id}/config`, `vllm://model/{id}/logs`,
//!   `vllm://crush/provider-config`.
//!
//! The lifecycle itself (locate, load, unload) is `vllm_fleet::lifecycle`, over the
//! launcher shared with the state-persistence server.

pub mod batch;
pub mod chat;
pub mod gateway;
pub mod info;
pub mod list;
pub mod load;
pub mod lora;
pub mod resources;
pub mod set_config;
pub mod sleep;
pub mod target;
pub mod unload;

use info::Performance;
use list::ModelSummary;
use rmcp::model::{Resource, ResourceTemplate};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vllm_core::launch_args::SamplingDefaults;
use vllm_core::models::ModelRecord;
use vllm_core::monitor::{Sample, SeriesWindow, WindowFigures};
use vllm_core::prom::{self, VllmSnapshot};
use vllm_core::vllm::VllmClient;
use vllm_core::{Error, Result};
use vllm_fleet::launcher::process;
use vllm_fleet::launcher::supervisor::Launcher;
use vllm_fleet::lifecycle::Fleet;
use vllm_mcp_kit::{Kit, ResourceBody, Service, Toolbox};

/// The binary's name, also `serverInfo.name`.
pub const NAME: &str = "vllm-model-manager";

/// Scrapes older than this are not used as the start of a performance window.
const WINDOW: Duration = Duration::from_secs(60);

/// Kept scrapes are at least this far apart: a client calling get-model-info in a loop
/// replaces the newest one instead of growing the list (at most 26 per server).
const SCRAPE_SPACING: Duration = Duration::from_secs(5);

/// One `/metrics` scrape of a server, as its typed view, and when it was taken.
type Scrape = (Instant, Arc<VllmSnapshot>);

/// The server's state.
pub struct ModelManager {
    kit: Arc<Kit>,
    /// `None` when the store could not be opened (every tool then answers STORAGE_ERROR).
    launcher: Option<Arc<Launcher>>,
    /// Recent `/metrics` scrapes per server, as typed views, to compute rates over the
    /// last minute.
    scrapes: Mutex<HashMap<String, Vec<Scrape>>>,
}

impl ModelManager {
    /// The launcher, or why it is unavailable.
    pub fn launcher(&self) -> Result<&Launcher> {
        match &self.launcher {
            Some(l) => Ok(l),
            None => Err(self
                .kit
                .store()
                .err()
                .unwrap_or_else(|| Error::storage("the store is not available"))),
        }
    }

    /// The launcher and the attached endpoints, for the lifecycle operations. Without a
    /// store it has no launcher: what attached endpoints serve is still found.
    pub fn fleet(&self) -> Fleet<'_> {
        Fleet {
            launcher: self.launcher.as_deref(),
            endpoints: &self.kit.endpoints,
            config: &self.kit.config,
        }
    }

    /// [`ModelManager::fleet`] for an operation that needs the store: without one, the
    /// reason the store could not be opened.
    pub fn managed_fleet(&self) -> Result<Fleet<'_>> {
        self.launcher()?;
        Ok(self.fleet())
    }

    /// Memory the serving processes of a record use now: NVML when it attributes memory
    /// to them, else their resident memory.
    pub fn memory_usage_mb(&self, r: &ModelRecord) -> Option<u64> {
        let pid = r.pid.filter(|_| r.status.is_active())?;
        let groups = process::groups_recent(process::FIGURES_MAX_AGE);
        self.memory_of_members(groups.get(&pid).map(Vec::as_slice).unwrap_or(&[]))
    }

    /// Memory of a model's processes: NVML's figure when it attributes GPU memory to
    /// them, else their resident memory.
    pub fn memory_of_members(&self, members: &[u32]) -> Option<u64> {
        let gpus = self.kit.gpus.snapshots().unwrap_or_default();
        match vllm_core::gpu::memory_used_by(&gpus, members) {
            Some(used) if used > 0 => Some(used),
            _ => Some(process::rss_mb_of(members)),
        }
    }

    /// `list-models`' view of a launched model; `groups` is one scan of the process
    /// table, `sampling` every model's sampling defaults.
    pub fn summary_of_record(
        &self,
        r: &ModelRecord,
        groups: &HashMap<u32, Vec<u32>>,
        sampling: &HashMap<String, SamplingDefaults>,
    ) -> ModelSummary {
        let window = match self.launcher() {
            Ok(l) => l.context_window(&r.source, r.args.max_model_len),
            Err(_) => r.args.max_model_len,
        };
        let sampling_max = sampling
            .get(&r.model_id)
            .and_then(|s| s.get("max_tokens").and_then(serde_json::Value::as_u64));
        ModelSummary {
            id: r.model_id.clone(),
            name: vllm_core::models::display_name(&r.model_id),
            status: r.status,
            origin: vllm_fleet::lifecycle::Origin::Launched,
            source: Some(r.source.clone()),
            memory_usage_mb: match r.pid.filter(|_| r.status.is_active()) {
                Some(pid) => {
                    self.memory_of_members(groups.get(&pid).map(Vec::as_slice).unwrap_or(&[]))
                }
                // On another node: not measured from here.
                None if r.job.is_some() && r.status.is_active() => None,
                None => Some(0),
            },
            context_window: window,
            max_tokens: sampling_max.or(window),
            tensor_parallel_size: r.args.tensor_parallel_size.unwrap_or(1),
            pipeline_parallel_size: r.args.pipeline_parallel_size.unwrap_or(1),
            base_url: r.base_url(),
            node: r.job.as_ref().and_then(|j| j.node_ip.clone()),
            endpoint: None,
            error: r.error.clone(),
            front_door: None,
        }
    }

    /// Performance of a launched, loaded model over (up to) the last minute.
    pub async fn performance(&self, r: &ModelRecord) -> Performance {
        let Some(client) = self.launcher().ok().and_then(|l| l.client_for(r)) else {
            return Performance::default();
        };
        let mut p = self.performance_window(&client, &r.model_id).await;
        p.memory_usage_mb = self.memory_usage_mb(r);
        if let Some(pid) = r.pid {
            p.gpu_utilization = self.gpu_utilization(pid);
        }
        p
    }

    /// Performance of a model on an attached endpoint (no process figures).
    pub async fn performance_of_endpoint(
        &self,
        client: &VllmClient,
        model_id: &str,
    ) -> Performance {
        let mut p = self.performance_window(client, model_id).await;
        let extra =
            "memory and GPU figures of an attached endpoint's processes are not visible here";
        p.note = Some(match p.note {
            Some(n) => format!("{n}; {extra}"),
            None => extra.into(),
        });
        p
    }

    fn gpu_utilization(&self, pgid: u32) -> Option<f64> {
        let groups = process::groups_recent(process::FIGURES_MAX_AGE);
        let members = groups.get(&pgid).map(Vec::as_slice).unwrap_or(&[]);
        let gpus = self.kit.gpus.snapshots().ok()?;
        let used: Vec<f64> = gpus
            .iter()
            .filter(|g| {
                g.processes
                    .iter()
                    .flatten()
                    .any(|p| members.contains(&p.pid))
            })
            .filter_map(|g| g.utilization_gpu)
            .collect();
        (!used.is_empty()).then(|| used.iter().sum::<f64>() / used.len() as f64)
    }

    async fn scrape(&self, client: &VllmClient) -> Option<Arc<VllmSnapshot>> {
        let text = client.metrics_text().await.ok()?;
        let (exp, _) = prom::parse_lenient(&text);
        let snap = Arc::new(VllmSnapshot::from_exposition(&exp));
        let mut scrapes = self.scrapes.lock().unwrap_or_else(|e| e.into_inner());
        let list = scrapes.entry(client.base_url().to_string()).or_default();
        list.retain(|(t, _)| t.elapsed() < WINDOW * 2);
        // Consecutive entries, but for the newest, stay SCRAPE_SPACING apart.
        let n = list.len();
        if n >= 2 && list[n - 1].0.duration_since(list[n - 2].0) < SCRAPE_SPACING {
            list.pop();
        }
        list.push((Instant::now(), snap.clone()));
        Some(snap)
    }

    /// Rates between the oldest scrape of the last minute and now. Without an earlier
    /// scrape, one is taken, then another a second later: a short window, but measured.
    async fn performance_window(&self, client: &VllmClient, model_id: &str) -> Performance {
        let earlier = {
            let scrapes = self.scrapes.lock().unwrap_or_else(|e| e.into_inner());
            scrapes.get(client.base_url()).and_then(|l| {
                l.iter()
                    .filter(|(t, _)| {
                        t.elapsed() <= WINDOW && t.elapsed() >= Duration::from_millis(500)
                    })
                    .min_by_key(|(t, _)| *t)
                    .map(|(t, e)| (*t, Arc::clone(e)))
            })
        };
        let (t0, e0) = match earlier {
            Some(x) => x,
            None => {
                let Some(e0) = self.scrape(client).await else {
                    return Performance {
                        note: Some("the server's /metrics did not answer".into()),
                        ..Performance::default()
                    };
                };
                tokio::time::sleep(Duration::from_secs(1)).await;
                (Instant::now() - Duration::from_secs(1), e0)
            }
        };
        let Some(e1) = self.scrape(client).await else {
            return Performance {
                note: Some("the server's /metrics did not answer".into()),
                ..Performance::default()
            };
        };
        let window = t0.elapsed().as_secs_f64();
        // The two scrapes as two samples of the model's series, so the window's arithmetic
        // (counter resets, histogram increases) is the monitor's own.
        let sample = |snap: &VllmSnapshot, ts: f64| {
            Sample::from_snapshot(ts, "", client.base_url(), snap, None)
                .into_iter()
                .find(|s| s.model == model_id)
        };
        let Some(s1) = sample(&e1, window) else {
            return Performance {
                window_seconds: Some(window),
                note: Some(format!(
                    "the server's metrics have no series for `{model_id}`"
                )),
                ..Performance::default()
            };
        };
        let rows: Vec<Sample> = sample(&e0, 0.0).into_iter().chain([s1.clone()]).collect();
        let f = WindowFigures {
            series: vec![SeriesWindow::compute(&rows)],
        }
        .figures();
        let round = |v: f64| (v * 100.0).round() / 100.0;
        let ms = |v: Option<f64>| v.map(|s| round(s * 1000.0));
        Performance {
            memory_usage_mb: None,
            throughput_tokens_per_second: f.generation_tokens_per_second.map(round),
            latency_ms: ms(f.e2e.avg),
            time_to_first_token_ms: ms(f.ttft.avg),
            gpu_utilization: None,
            kv_cache_usage: s1.kv_cache_usage,
            requests_running: s1.running,
            requests_waiting: s1.waiting,
            window_seconds: Some(round(window)),
            note: f
                .e2e
                .avg
                .is_none()
                .then(|| "no request finished in the window: latency is null".to_string()),
        }
    }
}

impl Service for ModelManager {
    fn kit(&self) -> &Kit {
        &self.kit
    }

    fn instructions(&self) -> String {
        "Manages vLLM models: list-models shows what is launched, served, configured or cached; load-model starts \
         a vLLM server for a model (use dry_run to check memory first, wait_seconds to wait until it is served); \
         unload-model stops it; get-model-info and set-model-config inspect and tune it; chat tries a loaded model; \
         load-lora-adapter and unload-lora-adapter manage runtime LoRA adapters; sleep-model and wake-model use \
         vLLM's sleep mode. Resources vllm://model/{id}/config and vllm://model/{id}/logs show a model's \
         configuration and log; vllm://crush/provider-config gives Crush provider blocks for the loaded models."
            .into()
    }

    async fn resources(&self) -> Vec<Resource> {
        resources::list(self).await
    }

    fn resource_templates(&self) -> Vec<ResourceTemplate> {
        resources::templates()
    }

    async fn read_resource(&self, uri: &str) -> Option<Result<ResourceBody>> {
        resources::read(self, uri).await
    }
}

/// How often the duty holder looks at every model (deaths, queue, restarts, idle TTLs).
pub const SUPERVISE_INTERVAL: Duration = Duration::from_secs(1);
/// Lease time of the supervision duties: a killed holder is replaced at once on this host
/// (dead pid), elsewhere after this.
const DUTY_TTL: Duration = Duration::from_secs(15);

/// Runs the singleton duties this process holds: every instance keeps the leases, one
/// holds each, and any may take over when the holder dies.
pub(crate) async fn supervise(launcher: Arc<Launcher>, store: vllm_core::store::Store) {
    use vllm_core::coordination::{HolderId, LeaseKeeper, duties};
    use vllm_fleet::launcher::supervisor::{Duties, DutyState};
    let holder = HolderId::for_process().clone();
    let keep = |duty| LeaseKeeper::spawn(store.clone(), duty, holder.clone(), DUTY_TTL);
    let (queue, reaper, autostart) = (
        keep(duties::LAUNCH_QUEUE),
        keep(duties::IDLE_REAPER),
        keep(duties::AUTOSTART),
    );
    let mut state = DutyState::default();
    let mut every = tokio::time::interval(SUPERVISE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let held = Duties {
            queue: queue.is_held(),
            reaper: reaper.is_held(),
            autostart: autostart.is_held(),
        };
        if !(held.queue || held.reaper || held.autostart) {
            continue;
        }
        if let Err(e) = launcher.tick(held, &mut state).await {
            tracing::warn!(error = %e, "supervision round failed");
        }
    }
}

/// Builds the server and its tools over a kit.
pub fn build(kit: Arc<Kit>) -> Result<(ModelManager, Toolbox<ModelManager>)> {
    let launcher = kit.store().ok().map(|s| {
        Arc::new(Launcher::new(
            kit.config.clone(),
            s.clone(),
            kit.gpus.clone(),
        ))
    });
    if let (Some(l), Ok(store)) = (&launcher, kit.store())
        && tokio::runtime::Handle::try_current().is_ok()
    {
        tokio::spawn(supervise(l.clone(), store.clone()));
        if let Some(listen) = kit.config.gateway.listen.clone() {
            let (kit, l, store) = (kit.clone(), l.clone(), store.clone());
            tokio::spawn(gateway::embedded(kit, l, store, listen));
        }
    }
    let mut t = Toolbox::default();
    vllm_mcp_kit::health::add_health_tool(&mut t);
    list::register(&mut t);
    load::register(&mut t);
    unload::register(&mut t);
    info::register(&mut t);
    set_config::register(&mut t);
    lora::register(&mut t);
    sleep::register(&mut t);
    chat::register(&mut t);
    Ok((
        ModelManager {
            kit,
            launcher,
            scrapes: Mutex::new(HashMap::new()),
        },
        t,
    ))
}
