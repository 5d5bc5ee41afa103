//! The lifecycle of launched models: launch, observe, stop — over the store's records.
//!
//! [`Launcher`] is shared by the model manager (its tools) and the state-persistence
//! server (restoring saved models). Every decision that must hold across server
//! instances is made inside one store transaction: the model limit, the port, and the
//! record of the spawned process. Status is observed on every look (process group alive?
//! `/health` 200? `/v1/models` lists the served name?) and written back with a
//! compare-and-set, so a restarted manager tells the truth about processes that died
//! while it was away, and adopts the ones still running.

use super::classify;
use super::process::{self, SpawnSpec};
use super::ray::{JobLook, RayBackend, Submission};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vllm_core::config::Config;
use vllm_core::error::{Error, LoadFailure, Result};
use vllm_core::estimate::{self, MemoryCheck, MemoryEstimate};
use vllm_core::gpu::{GpuSnapshot, Gpus};
use vllm_core::launch_args::{CommandSpec, LaunchArgs, command_line, validate_model_id};
use vllm_core::model_files::{self, ConfigCache};
use vllm_core::models::{
    self, FailureReason, ModelRecord, ModelStatus, RayJob, RecordedError, RestartMode,
    RestartPolicy,
};
use vllm_core::store::Store;
use vllm_core::store::rusqlite::OptionalExtension;
use vllm_core::vllm::{EndpointSpec, Health, VllmClient};

/// How often [`Launcher::wait_settled`] looks at a loading model.
pub const SETTLE_POLL: Duration = Duration::from_millis(250);

/// What a caller asks of a launch.
#[derive(Debug, Clone, Default)]
pub struct LaunchRequest {
    /// The served name and identity.
    pub model_id: String,
    /// What to load when it is not `model_id` itself (a directory or another repo).
    pub source: Option<String>,
    pub args: LaunchArgs,
    /// GPUs to use; `None`: those with the most free memory.
    pub gpu_ids: Option<Vec<u32>>,
    /// Launch even when the memory check says it will not fit.
    pub force: bool,
    /// Relaunch a running model whose arguments differ.
    pub replace: bool,
    /// Answer with the memory check only.
    pub dry_run: bool,
    pub restart_policy: Option<RestartPolicy>,
    pub idle_ttl_seconds: Option<f64>,
}

impl LaunchRequest {
    /// The launch that made `r`: its source, arguments, GPUs and policies.
    pub fn again(r: &ModelRecord) -> LaunchRequest {
        LaunchRequest {
            model_id: r.model_id.clone(),
            source: Some(r.source.clone()),
            args: r.args.clone(),
            gpu_ids: (!r.gpu_ids.is_empty()).then(|| r.gpu_ids.clone()),
            restart_policy: r.restart_policy.clone(),
            idle_ttl_seconds: r.idle_ttl_seconds,
            ..LaunchRequest::default()
        }
    }
}

/// The memory check made before a launch.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    pub estimate: MemoryEstimate,
    /// `None` when nothing was known to check against (no local weights or config).
    pub check: Option<MemoryCheck>,
    /// The GPUs chosen (empty on the CPU platform).
    pub gpu_ids: Vec<u32>,
    pub estimated_load_seconds: u64,
}

/// What [`Launcher::launch`] did.
#[derive(Debug, Clone)]
pub enum LaunchOutcome {
    /// A process was started.
    Started {
        record: ModelRecord,
        preflight: Preflight,
    },
    /// The same model with the same arguments is already loading or loaded.
    AlreadyRunning { record: ModelRecord },
    /// The model runs with other arguments and `replace` was not given.
    Differs {
        record: ModelRecord,
        differences: Map<String, Value>,
    },
    /// `dry_run`: the check alone.
    DryRun {
        preflight: Preflight,
        source: String,
    },
    /// Another model is loading on the same GPUs: this launch waits in the queue and
    /// the lease holder starts it when they are free. `ahead` loads go first.
    Queued {
        record: ModelRecord,
        preflight: Preflight,
        ahead: usize,
    },
}

/// Where [`Launcher::place`] put a launch.
#[derive(Debug, Clone)]
pub enum Placed {
    Spawned(ModelRecord),
    Queued(ModelRecord, usize),
}

/// What a look at a launch decided: the status to move to, and why when it failed.
type Observed = (ModelStatus, Option<RecordedError>);

/// What to place: the request and what the preflight decided. Owned, so a placement
/// can run on the blocking pool.
struct Plan {
    req: LaunchRequest,
    source: String,
    args: LaunchArgs,
    gpu_ids: Vec<u32>,
    memory_mb: Option<u64>,
    /// A port that just failed (in use): not taken again.
    avoid_port: Option<u16>,
    /// `Some`: set the restart count; `None`: keep the record's.
    restarts: Option<u32>,
    /// When this launch joined the queue, if it is already queued: its place in line.
    queued_since: Option<f64>,
    /// With the Ray backend: where it runs and what it reserves.
    on_ray: OnRay,
}

/// A launch's place on the Ray cluster (empty with the local backend).
#[derive(Debug, Clone, Default)]
struct OnRay {
    /// The node named by the launch's `node`, resolved to an alive one.
    node: Option<vllm_ray::Node>,
    /// GPUs to reserve (none on a CPU-only cluster).
    gpus: Option<u32>,
}

/// What a placement started: what to stop when its record cannot be written.
enum Started {
    Group(u32),
    Job(RayJob),
}

/// An active record, as the placement transaction sees it.
struct Active {
    model_id: String,
    port: Option<u16>,
    memory_mb: Option<i64>,
    loading: bool,
    /// Asleep: its weights are off the GPU (level 1) or gone (level 2).
    sleeping: bool,
    /// `None` for a queued launch (no process or job yet).
    pid: Option<i64>,
    gpu_ids: Vec<u32>,
    /// For a queued launch: when it joined the queue.
    since: f64,
}

/// What [`Launcher::stop`] did.
#[derive(Debug, Clone, Serialize)]
pub struct StopOutcome {
    pub model_id: String,
    /// It was running when asked.
    pub was_running: bool,
    /// Memory given back, measured: NVML on GPUs, resident memory on CPU.
    pub memory_freed_mb: u64,
    pub terminated_gracefully: bool,
    /// Pids of the group still alive afterwards (empty unless something is badly wrong).
    pub remaining_pids: Vec<u32>,
    pub seconds: f64,
}

/// What places launches: the configuration and the store. A placement holds a write
/// transaction and forks `vllm serve` inside it, so it runs on the blocking pool.
#[derive(Clone)]
struct Placer {
    config: Arc<Config>,
    store: Store,
    ray: Option<RayBackend>,
}

/// Launches, observes and stops `vllm serve` processes. Cheap to share behind an `Arc`.
pub struct Launcher {
    config: Arc<Config>,
    store: Store,
    gpus: Gpus,
    configs: ConfigCache,
    /// One pooled client per launched server, by base URL.
    clients: Mutex<HashMap<String, VllmClient>>,
    /// The Ray cluster of `[launcher] backend = "ray"`, or why it cannot be used.
    ray: std::result::Result<Option<RayBackend>, String>,
    /// When the cluster was last asked for models to adopt, and whether it answered.
    adopted: Mutex<Option<(std::time::Instant, bool)>>,
}

/// How often lists look for models to adopt on the Ray cluster.
const ADOPT_EVERY: Duration = Duration::from_secs(1);
/// How long lists stop asking a cluster that did not answer (its timeout each time).
const ADOPT_AFTER_FAILURE: Duration = Duration::from_secs(15);

impl Launcher {
    pub fn new(config: Arc<Config>, store: Store, gpus: Gpus) -> Launcher {
        let ttl = Duration::from_secs_f64(config.http.metadata_ttl_seconds.max(1.0));
        let ray = RayBackend::from_config(&config).map_err(|e| e.to_string());
        Launcher {
            configs: ConfigCache::new(ttl),
            config,
            store,
            gpus,
            clients: Mutex::new(HashMap::new()),
            ray,
            adopted: Mutex::new(None),
        }
    }

    /// The Ray backend, when launches go to a Ray cluster.
    pub fn ray(&self) -> Option<&RayBackend> {
        self.ray.as_ref().ok().and_then(Option::as_ref)
    }

    /// Where a launch goes on the Ray cluster: its node resolved, its GPUs counted.
    async fn on_ray(&self, args: &LaunchArgs) -> Result<OnRay> {
        let ray = match &self.ray {
            Ok(Some(ray)) => ray,
            Ok(None) => return Ok(OnRay::default()),
            Err(why) => {
                return Err(Error::ClusterUnavailable {
                    address: self.ray_address(),
                    message: why.clone(),
                });
            }
        };
        let (node, has_gpus) = ray.placement(args.node.as_deref()).await?;
        // With vLLM's own Ray executor, vLLM places its workers across the nodes (a
        // placement group of its own): the command itself reserves no GPU.
        let gpus = (!self.own_ray_executor() && has_gpus).then(|| args.gpus_needed());
        Ok(OnRay { node, gpus })
    }

    /// The configured Ray dashboard's address (empty without `[launcher.ray]`).
    fn ray_address(&self) -> String {
        self.config
            .launcher
            .ray
            .as_ref()
            .map(|r| r.address.clone())
            .unwrap_or_default()
    }

    /// Whether vLLM's own Ray executor places a model's workers (multi-node TP/PP).
    fn own_ray_executor(&self) -> bool {
        self.config.launcher.distributed_executor_backend.as_deref() == Some("ray")
    }

    /// Runs store work on the blocking pool: a write may wait for another process's
    /// write lock (up to the busy timeout), which must not hold a runtime thread.
    pub async fn on_store<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::Internal(format!("store task failed: {e}")))?
    }

    /// Places a launch on the blocking pool (see [`Placer`]).
    async fn place(&self, plan: Plan) -> Result<Placed> {
        let placer = Placer {
            config: self.config.clone(),
            store: self.store.clone(),
            ray: self.ray().cloned(),
        };
        tokio::task::spawn_blocking(move || placer.place(&plan))
            .await
            .map_err(|e| Error::Internal(format!("placement task failed: {e}")))?
    }

    /// The store the records live in; from async code, go through [`Launcher::on_store`].
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `config.json` of a source, when it is on local disk.
    pub fn config_json(&self, source: &str) -> Option<Value> {
        self.configs.config_json(source)
    }

    /// The context window of a model launched from `source`: `max_model_len` when one
    /// is given, else what its local `config.json` says.
    pub fn context_window(&self, source: &str, max_model_len: Option<u64>) -> Option<u64> {
        max_model_len.or_else(|| {
            self.config_json(source)
                .as_ref()
                .and_then(estimate::model_max_len)
        })
    }

    /// The hub cache directory.
    pub fn hub_cache(&self) -> Option<&std::path::Path> {
        self.configs.hub_cache()
    }

    /// The client for a launched server (API key from `launcher.api_key_env`).
    pub fn client_for(&self, record: &ModelRecord) -> Option<VllmClient> {
        let url = record.base_url()?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&url) {
            return Some(c.clone());
        }
        let mut spec = EndpointSpec::launched(&record.model_id, &url, &self.config);
        // Launched servers are polled while they start: short timeouts keep a look cheap.
        spec.request_timeout = spec.request_timeout.min(Duration::from_secs(5));
        spec.metadata_ttl = Duration::ZERO;
        let c = VllmClient::new(spec).ok()?;
        clients.insert(url, c.clone());
        Some(c)
    }

    /// The GPUs' figures this launcher places by.
    pub fn gpus(&self) -> &Gpus {
        &self.gpus
    }

    /// Resolves a catalog alias: (source, args with the catalog's presets).
    pub fn resolve(&self, req: &LaunchRequest) -> (String, LaunchArgs) {
        match self.config.catalog.get(&req.model_id) {
            Some(entry) => (
                req.source.clone().unwrap_or_else(|| entry.source.clone()),
                req.args.clone().or(&entry.args),
            ),
            None => (
                req.source.clone().unwrap_or_else(|| req.model_id.clone()),
                req.args.clone(),
            ),
        }
    }

    /// Validates a request before anything happens.
    pub fn validate(&self, req: &LaunchRequest) -> Result<(String, LaunchArgs)> {
        validate_model_id("model_id", &req.model_id)?;
        if let Some(s) = &req.source {
            validate_model_id("source", s)?;
        }
        let (source, args) = self.resolve(req);
        args.validate()?;
        self.config.security.check_allowed(&req.model_id, &source)?;
        self.config.security.check_remote_code(&args.extra_args)?;
        if let (Some(max), Some(len)) = (self.config.limits.max_model_len, args.max_model_len)
            && len > max
        {
            return Err(Error::LimitExceeded {
                limit: "limits.max_model_len".into(),
                message: format!("max_model_len {len} is above the configured maximum of {max}"),
            });
        }
        let on_ray = self.config.launcher.backend == vllm_core::config::LauncherBackend::Ray;
        if args.node.is_some() && !on_ray {
            return Err(Error::invalid(
                "node",
                "a node is for the Ray backend: set [launcher] backend = \"ray\" or leave node out",
            ));
        }
        if req.gpu_ids.is_some() && on_ray {
            return Err(Error::invalid(
                "gpu_ids",
                "with the Ray backend, Ray places GPUs: name a node instead, or leave gpu_ids out",
            ));
        }
        if let Some(ids) = &req.gpu_ids {
            if ids.is_empty() {
                return Err(Error::invalid(
                    "gpu_ids",
                    "give at least one GPU id, or leave it out",
                ));
            }
            if ids.len() as u32 != args.gpus_needed() {
                return Err(Error::invalid(
                    "gpu_ids",
                    format!(
                        "{} GPU(s) given but tensor_parallel_size × pipeline_parallel_size is {}",
                        ids.len(),
                        args.gpus_needed()
                    ),
                ));
            }
        }
        Ok((source, args))
    }

    /// The memory check, GPU placement and load-time estimate for a request.
    pub async fn preflight(
        &self,
        model_id: &str,
        source: &str,
        args: &LaunchArgs,
        gpu_ids: Option<&[u32]>,
    ) -> Result<Preflight> {
        let dir = model_files::resolve_dir(source, self.configs.hub_cache());
        let config = self.configs.config_json(source);
        let weights_bytes = dir.as_deref().and_then(model_files::weights_bytes);
        let est = estimate::estimate(estimate::EstimateInput {
            config: config.as_ref(),
            weights_bytes,
            dtype: args.dtype.as_deref(),
            quantization: args.quantization.as_deref(),
            kv_cache_dtype: None,
            tensor_parallel_size: args.tensor_parallel_size.unwrap_or(1),
            pipeline_parallel_size: args.pipeline_parallel_size.unwrap_or(1),
            max_model_len: args.max_model_len,
        });
        if let (Some(limit), Some(len)) = (
            config.as_ref().and_then(estimate::model_max_len),
            args.max_model_len,
        ) && len > limit
            && !self
                .config
                .launcher
                .env
                .contains_key("VLLM_ALLOW_LONG_MAX_MODEL_LEN")
        {
            let mut details = Map::new();
            details.insert("limit".into(), json!(limit));
            details.insert("requested".into(), json!(len));
            return Err(Error::ModelLoadFailed {
                model: model_id.to_string(),
                reason: LoadFailure::MaxModelLenTooLarge,
                message: format!("max_model_len {len} is above the model's limit of {limit}"),
                details,
            });
        }
        let id = model_id.to_string();
        let past = self
            .on_store(move |s| models::past_loads(s, &id))
            .await
            .unwrap_or_default();
        let estimated_load_seconds = estimate::estimated_load_seconds(est.weights_mb, &past);
        let needed = args.gpus_needed() as usize;
        if let Some(ray) = self.ray() {
            // The cluster's nodes, not this host's GPUs, hold a Ray launch.
            let check = self.check_on_cluster(ray, &est, args).await?;
            return Ok(Preflight {
                estimate: est,
                check,
                gpu_ids: Vec::new(),
                estimated_load_seconds,
            });
        }
        let (check, chosen) = match self.gpus.snapshots() {
            Ok(all) if !all.is_empty() => {
                let chosen = choose_gpus(
                    &all,
                    gpu_ids,
                    needed,
                    self.config.launcher.distributed_executor_backend.is_some(),
                )?;
                let picked: Vec<GpuSnapshot> = all
                    .into_iter()
                    .filter(|g| chosen.contains(&g.index))
                    .collect();
                let util = args.gpu_memory_utilization.unwrap_or(0.9);
                (Some(estimate::check_gpus(&est, &picked, util)), chosen)
            }
            Ok(_) | Err(_) => {
                if gpu_ids.is_some() {
                    return Err(Error::GpuUnavailable(
                        "gpu_ids were given but no GPU is visible to this process".into(),
                    ));
                }
                let check = estimate::check_cpu(
                    self.cpu_kv_cache_gib(),
                    estimate::CPU_RUNTIME_OVERHEAD_MB,
                    est.weights_mb,
                    process::available_memory_mb(),
                );
                (Some(check), Vec::new())
            }
        };
        Ok(Preflight {
            estimate: est,
            check,
            gpu_ids: chosen,
            estimated_load_seconds,
        })
    }

    /// The KV cache a CPU server takes (`VLLM_CPU_KVCACHE_SPACE`, GiB; vLLM's 4 unset).
    fn cpu_kv_cache_gib(&self) -> f64 {
        self.config
            .launcher
            .env
            .get("VLLM_CPU_KVCACHE_SPACE")
            .and_then(|v| v.parse::<f64>().ok())
            .or_else(|| {
                std::env::var("VLLM_CPU_KVCACHE_SPACE")
                    .ok()
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(4.0)
    }

    /// The memory check of a Ray launch against the nodes it may land on, by what their
    /// agents report now: the named node, else the best of those offering the configured
    /// resources (the one where it fits with the most free memory). GPU nodes are checked
    /// like local GPUs (the ones with the most free memory), CPU nodes by their available
    /// memory. `None` when no node can be judged, or with vLLM's own Ray executor (its
    /// workers spread over the nodes).
    async fn check_on_cluster(
        &self,
        ray: &RayBackend,
        est: &MemoryEstimate,
        args: &LaunchArgs,
    ) -> Result<Option<MemoryCheck>> {
        if self.own_ray_executor() {
            return Ok(None);
        }
        let needed = args.gpus_needed() as usize;
        let util = args.gpu_memory_utilization.unwrap_or(0.9);
        let mut best: Option<MemoryCheck> = None;
        for n in ray.candidates(args.node.as_deref()).await? {
            let mut check = if n.gpus.is_empty() {
                estimate::check_cpu(
                    self.cpu_kv_cache_gib(),
                    estimate::CPU_RUNTIME_OVERHEAD_MB,
                    est.weights_mb,
                    n.mem_available_mb,
                )
            } else {
                let mut gpus: Vec<GpuSnapshot> = n.gpus.iter().map(snapshot_of).collect();
                gpus.sort_by_key(|g| std::cmp::Reverse(g.memory_free_mb));
                if gpus.len() < needed {
                    continue;
                }
                gpus.truncate(needed);
                estimate::check_gpus(est, &gpus, util)
            };
            check
                .notes
                .push(format!("on the Ray node {} ({})", n.ip, n.hostname));
            if best
                .as_ref()
                .is_none_or(|b| (check.fits, check.available_mb) > (b.fits, b.available_mb))
            {
                best = Some(check);
            }
        }
        Ok(best)
    }

    /// Launches a model (or reports why not). See [`LaunchOutcome`].
    pub async fn launch(&self, req: &LaunchRequest) -> Result<LaunchOutcome> {
        let (source, args) = self.validate(req)?;
        let id = req.model_id.clone();
        if let Some(existing) = self.on_store(move |s| models::get(s, &id)).await? {
            let existing = self.observe(existing).await;
            if existing.status.is_active() {
                let differences = existing.args.differences(&args)?;
                let same_source = existing.source == source;
                if differences.is_empty() && same_source {
                    return Ok(LaunchOutcome::AlreadyRunning { record: existing });
                }
                if !req.replace && !req.dry_run {
                    let mut differences = differences;
                    if !same_source {
                        differences.insert(
                            "source".into(),
                            json!({"current": existing.source, "requested": source}),
                        );
                    }
                    return Ok(LaunchOutcome::Differs {
                        record: existing,
                        differences,
                    });
                }
                if req.replace && !req.dry_run {
                    self.stop(&req.model_id, true).await?;
                }
            }
        }
        let preflight = self
            .preflight(&req.model_id, &source, &args, req.gpu_ids.as_deref())
            .await?;
        if req.dry_run {
            return Ok(LaunchOutcome::DryRun { preflight, source });
        }
        if let Some(check) = &preflight.check
            && !check.fits
            && !req.force
        {
            let mut details = Map::new();
            details.insert("required_mb".into(), json!(check.required_mb));
            details.insert("available_mb".into(), json!(check.available_mb));
            details.insert("platform".into(), json!(check.platform));
            details.insert("gpu_ids".into(), json!(preflight.gpu_ids));
            return Err(Error::ModelLoadFailed {
                model: req.model_id.clone(),
                reason: LoadFailure::InsufficientGpuMemory,
                message: "Insufficient GPU memory to load model".into(),
                details,
            });
        }
        let on_ray = self.on_ray(&args).await?;
        let placed = self
            .place(Plan {
                on_ray,
                req: req.clone(),
                source,
                args,
                gpu_ids: preflight.gpu_ids.clone(),
                memory_mb: preflight
                    .check
                    .as_ref()
                    .map(|c| c.required_mb)
                    .or(preflight.estimate.total_mb),
                avoid_port: None,
                restarts: None,
                queued_since: None,
            })
            .await?;
        Ok(match placed {
            Placed::Spawned(record) => LaunchOutcome::Started { record, preflight },
            Placed::Queued(record, ahead) => LaunchOutcome::Queued {
                record,
                preflight,
                ahead,
            },
        })
    }

    /// Launches a record again with its stored request: after a crash (restart policy),
    /// a port conflict (`avoid_port`), or when it waited in the queue.
    pub async fn relaunch(
        &self,
        r: &ModelRecord,
        avoid_port: Option<u16>,
        restarts: u32,
    ) -> Result<Placed> {
        let queued = r.is_queued();
        let on_ray = self.on_ray(&r.args).await?;
        self.place(Plan {
            on_ray,
            req: LaunchRequest::again(r),
            source: r.source.clone(),
            args: r.args.clone(),
            gpu_ids: r.gpu_ids.clone(),
            memory_mb: r.memory_estimate_mb,
            avoid_port,
            restarts: Some(restarts),
            queued_since: queued.then_some(r.updated_at),
        })
        .await
    }

    /// Observes a record's real state and writes any transition back. Never fails: an
    /// observation that cannot be made leaves the record as it was.
    pub async fn observe(&self, record: ModelRecord) -> ModelRecord {
        if !record.status.is_active() {
            return record;
        }
        let (record, next) = match (record.job.clone(), record.pid) {
            (Some(job), _) => self.look_at_job(record, job).await,
            (None, Some(pid)) => {
                let next = self.look_at_group(&record, pid).await;
                (record, next)
            }
            (None, None) => return record,
        };
        match next {
            Some(next) => self.keep_observation(record, next).await,
            None => record,
        }
    }

    /// A local launch: its process group alive, then its server's health.
    async fn look_at_group(&self, record: &ModelRecord, pid: u32) -> Option<Observed> {
        if vllm_core::coordination::process_alive(pid, record.start_time) {
            return self.look_at_health(record).await;
        }
        if record.status == ModelStatus::Stopping {
            return Some((ModelStatus::Unloaded, None));
        }
        // The API server is gone: its engine and worker may linger as orphans
        // holding memory; they are in its group, so end them. A live process
        // with the leader's pid in the group means the pid was recycled by an
        // unrelated group leader, which must never be signalled.
        if !process::group_members(pid).contains(&pid) {
            let _ = process::stop_group(pid, Duration::from_secs(2), true).await;
        }
        Some((ModelStatus::Error, Some(self.failure_of(record).await)))
    }

    /// A launch on the Ray cluster: its job's state (and node), then its server's health.
    /// The record comes back with the node the job landed on, once Ray placed it.
    async fn look_at_job(
        &self,
        record: ModelRecord,
        job: RayJob,
    ) -> (ModelRecord, Option<Observed>) {
        let Some(ray) = self.ray() else {
            // Launched on Ray by a manager configured otherwise: not ours to judge.
            return (record, None);
        };
        let look = match ray.look(&job).await {
            Ok(look) => look,
            Err(e) => {
                tracing::warn!(model = %record.model_id, error = %e, "cannot look at the model's Ray job");
                return (record, None);
            }
        };
        let ended = |failure: RecordedError| {
            if record.status == ModelStatus::Stopping {
                Some((ModelStatus::Unloaded, None))
            } else {
                Some((ModelStatus::Error, Some(failure)))
            }
        };
        match look {
            JobLook::Gone => {
                let next = ended(RecordedError {
                    reason: LoadFailure::ProcessExited.into(),
                    message: format!(
                        "the Ray job {} no longer exists on the cluster at {}",
                        job.submission_id,
                        ray.address()
                    ),
                    details: json!({"job": job.submission_id}),
                });
                (record, next)
            }
            // Stopped through Ray (another manager's unload, `ray job stop`): unloaded.
            JobLook::Ended {
                status: vllm_ray::JobStatus::Stopped,
                ..
            } => (record, Some((ModelStatus::Unloaded, None))),
            JobLook::Ended {
                message, exit_code, ..
            } => {
                let failure = ray.failure(&job, &message, exit_code).await;
                let next = ended(failure);
                (record, next)
            }
            JobLook::Pending => {
                let next = self.maybe_timed_out(&record).await;
                (record, next)
            }
            JobLook::Running { node } => {
                let record = self.placed_on(record, &job, node).await;
                let next = self.look_at_health(&record).await;
                (record, next)
            }
        }
    }

    /// Records the node a job runs on, and serves from its address, when Ray chose it.
    async fn placed_on(
        &self,
        mut record: ModelRecord,
        job: &RayJob,
        node: Option<(String, String)>,
    ) -> ModelRecord {
        let Some((ip, id)) = node.filter(|(ip, id)| {
            job.node_ip.as_ref() != Some(ip) || job.node_id.as_ref() != Some(id)
        }) else {
            return record;
        };
        let mut placed = job.clone();
        placed.node_ip = Some(ip.clone());
        placed.node_id = Some(id);
        let (model, host, kept) = (record.model_id.clone(), ip.clone(), placed.clone());
        match self
            .on_store(move |s| models::set_placement(s, &model, &host, &kept))
            .await
        {
            Ok(_) => {
                record.host = ip;
                record.job = Some(placed);
            }
            Err(e) => {
                tracing::warn!(model = %record.model_id, error = %e, "cannot record the job's node")
            }
        }
        record
    }

    /// A running server: `/health`, then whether `/v1/models` serves the model.
    async fn look_at_health(&self, record: &ModelRecord) -> Option<Observed> {
        let client = self.client_for(record)?;
        match client.health().await {
            Ok(Health::Ready) => match client.models_fresh().await {
                Ok(cards) if cards.iter().any(|c| c.id == record.model_id) => {
                    (record.status == ModelStatus::Loading).then_some((ModelStatus::Loaded, None))
                }
                _ => self.maybe_timed_out(record).await,
            },
            Ok(Health::Unhealthy(code)) => {
                // vLLM answers 503 once its engine died, then exits 0.
                self.end_server(record).await;
                Some((
                    ModelStatus::Error,
                    Some(RecordedError {
                        reason: FailureReason::EngineDied,
                        message: format!(
                            "/health answered {code}: the engine process died; see the log resource"
                        ),
                        details: json!({"log_excerpt": self.log_tail(record, 20).await}),
                    }),
                ))
            }
            Err(_) => self.maybe_timed_out(record).await,
        }
    }

    /// Ends a server judged dead or hung: its process group, or its Ray job.
    async fn end_server(&self, record: &ModelRecord) {
        match (&record.job, record.pid, self.ray()) {
            (Some(job), _, Some(ray)) => {
                if let Err(e) = ray.stop(job, Duration::ZERO).await {
                    tracing::warn!(model = %record.model_id, error = %e, "cannot stop the Ray job");
                }
            }
            (None, Some(pid), _) => {
                let _ = process::stop_group(pid, Duration::from_secs(2), true).await;
            }
            _ => {}
        }
    }

    /// Writes an observed transition (compare-and-set), relaunches after a port
    /// conflict, and answers the record as it now is.
    async fn keep_observation(&self, record: ModelRecord, next: Observed) -> ModelRecord {
        let (to, error) = next;
        let job = record.job.as_ref().map(|j| j.submission_id.clone());
        let pid = record.pid;
        let settled = (to == ModelStatus::Error && record.status == ModelStatus::Loading)
            || to == ModelStatus::Loaded;
        let took = vllm_core::time::unix_now() - record.launched_at.unwrap_or_default();
        let (id, from, recorded) = (record.model_id.clone(), record.status, error.clone());
        let written = self
            .on_store(move |store| {
                if settled {
                    // The load-time history is a hint for estimates: not worth failing on.
                    let _ = models::record_load(store, &id, took, to == ModelStatus::Loaded);
                }
                let instance = match &job {
                    Some(job) => models::Instance::Job(job),
                    None => models::Instance::Group(pid),
                };
                models::transition_of(store, &id, from, instance, to, recorded.as_ref())
            })
            .await;
        // A lost race is `false`; a store that cannot be written is an observation
        // that could not be kept: said, and the record is answered as it was read.
        let won = written.unwrap_or_else(|e| {
            tracing::warn!(model = %record.model_id, error = %e, "cannot record the observed status");
            false
        });
        // A port taken between our check and vLLM's bind: start again elsewhere, at
        // once and a few times at most. Only the instance whose transition won does it.
        if won
            && to == ModelStatus::Error
            && error
                .as_ref()
                .is_some_and(|e| e.reason == FailureReason::Start(LoadFailure::PortInUse))
            && record.restarts < PORT_RETRIES
            && let Ok(Some(current)) = self.record(&record.model_id).await
        {
            match self
                .relaunch(&current, record.port, record.restarts + 1)
                .await
            {
                Ok(_) => {
                    tracing::info!(model = %record.model_id, port = ?record.port, "port in use; relaunched on another port")
                }
                Err(e) => {
                    tracing::warn!(model = %record.model_id, error = %e, "relaunch after a port conflict failed")
                }
            }
        }
        match self.record(&record.model_id).await {
            Ok(Some(now)) => now,
            Ok(None) => record,
            Err(e) => {
                tracing::warn!(model = %record.model_id, error = %e, "cannot read the record back");
                record
            }
        }
    }

    /// The stored record of `model_id`, as it is (not observed).
    async fn record(&self, model_id: &str) -> Result<Option<ModelRecord>> {
        let id = model_id.to_string();
        self.on_store(move |s| models::get(s, &id)).await
    }

    async fn maybe_timed_out(&self, record: &ModelRecord) -> Option<Observed> {
        let age = vllm_core::time::unix_now() - record.launched_at.unwrap_or_default();
        if record.status == ModelStatus::Loading
            && age > self.config.launcher.health_timeout_seconds
        {
            self.end_server(record).await;
            return Some((
                ModelStatus::Error,
                Some(RecordedError {
                    reason: FailureReason::StartTimeout,
                    message: format!(
                        "not serving after {age:.0} s (launcher.health_timeout_seconds = {})",
                        self.config.launcher.health_timeout_seconds
                    ),
                    details: json!({"log_excerpt": self.log_tail(record, 20).await}),
                }),
            ));
        }
        None
    }

    async fn failure_of(&self, record: &ModelRecord) -> RecordedError {
        let tail = self.log_tail(record, 200).await;
        // The exit record of this launch only: the log file is reused by relaunches.
        let exit_info = record
            .log_path
            .as_deref()
            .zip(record.pid)
            .and_then(|(log, pid)| process::exit_status_of(log, pid));
        let exit = exit_info.as_ref().and_then(|e| e.code);
        let c = classify::classify(&tail, exit);
        // Nothing in the log, and a signal ended it: say so rather than "no
        // recognisable start-up error" (a server killed after it loaded, say).
        if c.reason == LoadFailure::Unknown
            && let Some(sig) = exit_info.as_ref().and_then(|e| e.signal)
        {
            let mut details = c.details;
            details.insert("signal".into(), json!(sig));
            return RecordedError {
                reason: LoadFailure::ProcessExited.into(),
                message: format!(
                    "the vLLM server was killed by signal {sig}{}",
                    if sig == libc::SIGKILL {
                        " (SIGKILL: the OOM killer, or someone's kill -9)"
                    } else {
                        ""
                    }
                ),
                details: Value::Object(details),
            };
        }
        RecordedError {
            reason: c.reason.into(),
            message: c.message,
            details: Value::Object(c.details),
        }
    }

    /// The last `lines` of a model's log (its Ray job's, on Ray), secrets redacted.
    pub async fn log_tail(&self, record: &ModelRecord, lines: usize) -> String {
        if let (Some(job), Some(ray)) = (&record.job, self.ray()) {
            return vllm_core::redact::redact_text(&ray.log_tail(job, lines).await);
        }
        record
            .log_path
            .as_deref()
            .and_then(|p| process::tail(p, lines, 4 * 1024 * 1024).ok())
            .map(|t| vllm_core::redact::redact_text(&t))
            .unwrap_or_default()
    }

    /// Takes in the models our managers started on the Ray cluster that this store does
    /// not hold as active (an empty data directory, another host's manager): their
    /// records are written from the jobs' metadata, as `loading`, and the next look
    /// observes their real status. Returns how many were taken in; 0 off Ray.
    pub async fn adopt(&self) -> Result<usize> {
        let Some(ray) = self.ray() else {
            return Ok(0);
        };
        let found = ray.ours().await;
        *self.adopted.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), found.is_ok()));
        let found = found?;
        let records: Vec<ModelRecord> = found.into_iter().filter_map(adopted_record).collect();
        if records.is_empty() {
            return Ok(0);
        }
        self.on_store(move |s| {
            let mut taken = 0;
            for r in &records {
                if models::adopt(s, r)? {
                    tracing::info!(model = %r.model_id, job = ?r.job, "adopted from the Ray cluster");
                    taken += 1;
                }
            }
            Ok(taken)
        })
        .await
    }

    /// [`Launcher::adopt`] for a list: at most every [`ADOPT_EVERY`], and not again for
    /// [`ADOPT_AFTER_FAILURE`] after the cluster did not answer, so that a cluster that
    /// is down does not slow every list by its timeout.
    async fn adopt_for_list(&self) {
        let last = *self.adopted.lock().unwrap_or_else(|e| e.into_inner());
        let due = match last {
            None => true,
            Some((at, true)) => at.elapsed() >= ADOPT_EVERY,
            Some((at, false)) => at.elapsed() >= ADOPT_AFTER_FAILURE,
        };
        if due && let Err(e) = self.adopt().await {
            tracing::warn!(error = %e, "cannot look for models on the Ray cluster");
        }
    }

    /// Every record, observed now.
    pub async fn list(&self) -> Result<Vec<ModelRecord>> {
        self.adopt_for_list().await;
        // Concurrently: each look is two loopback requests.
        let records = self.on_store(models::list).await?;
        Ok(futures_util::future::join_all(records.into_iter().map(|r| self.observe(r))).await)
    }

    /// Every record, observed cheaply: a loaded or sleeping model whose server process
    /// is alive is taken as it is (the supervision round checks its HTTP health every
    /// second); loading ones and dead ones get the full look. For answers that list
    /// many models and must stay fast.
    pub async fn list_quick(&self) -> Result<Vec<ModelRecord>> {
        self.adopt_for_list().await;
        let records = self.on_store(models::list).await?;
        let looks = records.into_iter().map(|r| async move {
            let settled = matches!(r.status, ModelStatus::Loaded | ModelStatus::Sleeping);
            if settled && r.job.is_some() {
                // A server on the cluster: the supervision round looks at its job.
                return r;
            }
            match r.pid {
                Some(pid)
                    if settled && vllm_core::coordination::process_alive(pid, r.start_time) =>
                {
                    r
                }
                _ => self.observe(r).await,
            }
        });
        Ok(futures_util::future::join_all(looks).await)
    }

    /// One record, observed now.
    pub async fn get(&self, model_id: &str) -> Result<Option<ModelRecord>> {
        match self.record(model_id).await? {
            Some(r) => Ok(Some(self.observe(r).await)),
            None => Ok(None),
        }
    }

    /// Waits until the model is loaded or failed, or `timeout` passes; calls `tick` with
    /// the seconds waited after each look (for progress notifications). Looks every
    /// [`SETTLE_POLL`].
    pub async fn wait_settled(
        &self,
        model_id: &str,
        timeout: Duration,
        tick: impl FnMut(f64),
    ) -> Result<ModelRecord> {
        self.wait_settled_every(model_id, timeout, SETTLE_POLL, tick)
            .await
    }

    /// [`Launcher::wait_settled`], looking every `poll`: a caller holding requests for
    /// the model (the front door) looks more often, so the first look that sees the
    /// server healthy ends their wait.
    pub async fn wait_settled_every(
        &self,
        model_id: &str,
        timeout: Duration,
        poll: Duration,
        mut tick: impl FnMut(f64),
    ) -> Result<ModelRecord> {
        let started = std::time::Instant::now();
        loop {
            let r = self
                .get(model_id)
                .await?
                .ok_or_else(|| Error::ModelNotFound(model_id.to_string()))?;
            if r.status != ModelStatus::Loading || started.elapsed() >= timeout {
                return Ok(r);
            }
            tick(started.elapsed().as_secs_f64());
            tokio::time::sleep(poll.min(timeout.saturating_sub(started.elapsed()))).await;
        }
    }

    /// Stops a launched model: SIGTERM to its group, a grace period, SIGKILL (at once
    /// with `force`), then checks no process of the group is left. Refuses with
    /// `MODEL_BUSY` while requests run, unless `force`, after waiting up to the grace period.
    pub async fn stop(&self, model_id: &str, force: bool) -> Result<StopOutcome> {
        let started = std::time::Instant::now();
        let record = self
            .get(model_id)
            .await?
            .ok_or_else(|| Error::ModelNotFound(model_id.to_string()))?;
        let not_running = || StopOutcome {
            model_id: model_id.to_string(),
            was_running: false,
            memory_freed_mb: 0,
            terminated_gracefully: true,
            remaining_pids: Vec::new(),
            seconds: started.elapsed().as_secs_f64(),
        };
        if record.is_queued() {
            // Still waiting in the launch queue: leaving it is the whole unload.
            let (from, to) = (ModelStatus::Loading, ModelStatus::Unloaded);
            self.transition(model_id, from, None, to).await?;
            return Ok(not_running());
        }
        if !record.status.is_active() {
            return Ok(not_running());
        }
        let grace = Duration::from_secs_f64(self.config.launcher.grace_period_seconds);
        if let Some(job) = record.job.clone() {
            return self.stop_job(record, job, force, grace, started).await;
        }
        let Some(pid) = record.pid else {
            return Ok(not_running());
        };
        if !force {
            self.wait_idle(&record, grace).await?;
        }
        let members = process::group_members(pid);
        let gpu_before = self.gpu_used_by(&members);
        let rss_before = process::group_rss_mb(pid);
        let stopping = ModelStatus::Stopping;
        self.transition(model_id, record.status, Some(pid), stopping)
            .await?;
        let report = process::stop_group(pid, grace, force).await?;
        let gpu_after = self.gpu_used_by(&members);
        let memory_freed_mb = match (gpu_before, gpu_after) {
            (Some(b), Some(a)) if b > 0 => b.saturating_sub(a),
            _ => rss_before.saturating_sub(process::group_rss_mb(pid)),
        };
        let (from, to) = (ModelStatus::Stopping, ModelStatus::Unloaded);
        self.transition(model_id, from, Some(pid), to).await?;
        Ok(StopOutcome {
            model_id: model_id.to_string(),
            was_running: true,
            memory_freed_mb,
            terminated_gracefully: report.terminated_gracefully,
            remaining_pids: report.remaining,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// [`Launcher::stop`] for a model on the Ray cluster: the job is stopped (Ray signals
    /// its command, then kills it) and watched until it ended. A job still running after
    /// the grace period leaves the model `stopping`; the next look that sees the job
    /// ended moves it on.
    async fn stop_job(
        &self,
        record: ModelRecord,
        job: RayJob,
        force: bool,
        grace: Duration,
        started: std::time::Instant,
    ) -> Result<StopOutcome> {
        let ray = self.ray().ok_or_else(|| Error::ClusterUnavailable {
            address: self.ray_address(),
            message: format!(
                "{} runs as the Ray job {}, and this manager's backend is not ray",
                record.model_id, job.submission_id
            ),
        })?;
        if !force {
            self.wait_idle(&record, grace).await?;
        }
        let id = record.model_id.as_str();
        self.transition(id, record.status, None, ModelStatus::Stopping)
            .await?;
        let ended = ray
            .stop(&job, if force { Duration::ZERO } else { grace })
            .await?;
        if ended {
            self.transition(id, ModelStatus::Stopping, None, ModelStatus::Unloaded)
                .await?;
        }
        Ok(StopOutcome {
            model_id: record.model_id.clone(),
            was_running: true,
            // Freed on the node: what the launch was reckoned to take.
            memory_freed_mb: if ended {
                record.memory_estimate_mb.unwrap_or(0)
            } else {
                0
            },
            terminated_gracefully: ended,
            remaining_pids: Vec::new(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// A compare-and-set of a record's status (no error recorded), off the runtime.
    async fn transition(
        &self,
        model_id: &str,
        from: ModelStatus,
        pid: Option<u32>,
        to: ModelStatus,
    ) -> Result<bool> {
        let id = model_id.to_string();
        self.on_store(move |s| models::transition(s, &id, from, pid, to, None))
            .await
    }

    /// Waits up to `grace` for running requests to finish; `MODEL_BUSY` if they do not.
    async fn wait_idle(&self, record: &ModelRecord, grace: Duration) -> Result<()> {
        let client = self.client_for(record);
        let started = std::time::Instant::now();
        loop {
            let running = match &client {
                Some(c) => match c.metrics_text().await {
                    Ok(text) => running_requests(&text),
                    // A server that cannot answer has no requests worth waiting for.
                    Err(_) => return Ok(()),
                },
                None => 0,
            };
            // Requests a front door passes on, whichever instance serves it.
            let id = record.model_id.clone();
            let door = self
                .on_store(move |s| vllm_core::door_use::of_model(s, &id))
                .await?
                .map_or(0, |u| u.in_flight);
            if running == 0 && door == 0 {
                return Ok(());
            }
            if started.elapsed() >= grace {
                return Err(Error::ModelBusy {
                    model: record.model_id.clone(),
                    reason: format!(
                        "{} request(s) still running after {:.0} s ({door} through the front door)",
                        running.max(u64::from(door)),
                        grace.as_secs_f64()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// MiB of GPU memory NVML attributes to these pids; `None` without NVML.
    fn gpu_used_by(&self, pids: &[u32]) -> Option<u64> {
        let gpus = self.gpus.snapshots().ok()?;
        Some(vllm_core::gpu::memory_used_by(&gpus, pids).unwrap_or(0))
    }
}

/// A GPU a Ray node's agent reports, as the memory check reads a local one.
fn snapshot_of(g: &vllm_ray::NodeGpu) -> GpuSnapshot {
    GpuSnapshot {
        index: g.index,
        name: g.name.clone(),
        uuid: g.uuid.clone(),
        memory_total_mb: g.memory_total,
        memory_used_mb: g.memory_used,
        memory_free_mb: g
            .memory_total
            .zip(g.memory_used)
            .map(|(t, u)| t.saturating_sub(u)),
        utilization_gpu: g.utilization_gpu.map(|p| p / 100.0),
        temperature_c: g.temperature_c,
        ..GpuSnapshot::default()
    }
}

/// The record of a job found on the cluster, from its metadata; `None` when the
/// metadata is not ours to read (no launch, a bad model id).
fn adopted_record(f: super::ray::Found) -> Option<ModelRecord> {
    validate_model_id("model_id", &f.model_id).ok()?;
    let launch = &f.launch;
    let args: LaunchArgs = serde_json::from_value(launch.get("args")?.clone()).ok()?;
    let now = vllm_core::time::unix_now();
    Some(ModelRecord {
        model_id: f.model_id,
        source: launch.get("source")?.as_str()?.to_string(),
        status: ModelStatus::Loading,
        host: f
            .job
            .node_ip
            .clone()
            .or_else(|| launch.get("host")?.as_str().map(str::to_string))?,
        port: launch.get("port")?.as_u64().map(|p| p as u16),
        pid: None,
        start_time: None,
        args,
        argv: vllm_core::redact::redact_args(
            &f.entrypoint
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        ),
        env_names: Vec::new(),
        gpu_ids: Vec::new(),
        log_path: None,
        launched_at: f.started_at.or(Some(now)),
        loaded_at: None,
        stopped_at: None,
        error: None,
        restart_policy: launch
            .get("restart_policy")
            .and_then(|p| serde_json::from_value(p.clone()).ok()),
        restarts: 0,
        idle_ttl_seconds: launch.get("idle_ttl_seconds").and_then(Value::as_f64),
        memory_estimate_mb: None,
        updated_at: now,
        job: Some(f.job),
    })
}

/// Relaunches after a port conflict before the model is left in `error`.
pub const PORT_RETRIES: u32 = 3;
/// A model serving this long has its restart count forgiven.
pub const RESTARTS_FORGIVEN_AFTER_SECONDS: f64 = 300.0;

/// Which leased duties this process holds for one [`Launcher::tick`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Duties {
    /// The launch queue and restart policies (`duties::LAUNCH_QUEUE`).
    pub queue: bool,
    /// Unloading models idle past their TTL (`duties::IDLE_REAPER`).
    pub reaper: bool,
    /// Starting the configured autostart models (`duties::AUTOSTART`).
    pub autostart: bool,
}

/// What the duty holder remembers between ticks (lost, harmlessly, when the lease moves:
/// idle clocks restart, so a model is never unloaded early).
#[derive(Debug, Default)]
pub struct DutyState {
    /// Per model: a figure that changes whenever it serves, and when it last changed.
    activity: HashMap<String, (f64, std::time::Instant)>,
    autostart_done: bool,
}

impl Launcher {
    /// One round of the singleton duties this process holds. Also observes every model,
    /// so deaths are noticed (and port conflicts retried) even when nobody asks.
    pub async fn tick(&self, duties: Duties, state: &mut DutyState) -> Result<()> {
        let records = self.list().await?;
        let now = vllm_core::time::unix_now();
        if duties.queue {
            self.run_queue(&records).await?;
            self.apply_restart_policies(&records, now).await?;
        }
        if duties.reaper {
            self.reap_idle(&records, state).await;
        }
        if duties.autostart && !state.autostart_done {
            state.autostart_done = true;
            self.autostart(&records).await?;
        }
        Ok(())
    }

    /// Starts queued launches, oldest first, whose GPUs are free of loading models.
    async fn run_queue(&self, records: &[ModelRecord]) -> Result<()> {
        let mut queued: Vec<&ModelRecord> = records.iter().filter(|r| r.is_queued()).collect();
        queued.sort_by(|a, b| a.updated_at.total_cmp(&b.updated_at));
        for r in queued {
            match self.relaunch(r, None, r.restarts).await {
                Ok(Placed::Spawned(n)) => {
                    tracing::info!(model = %n.model_id, pid = ?n.pid, "started from the launch queue")
                }
                Ok(Placed::Queued(..)) => {}
                Err(e) => {
                    let err = RecordedError {
                        reason: LoadFailure::ProcessExited.into(),
                        message: format!("could not start from the launch queue: {e}"),
                        details: e.to_value(),
                    };
                    let id = r.model_id.clone();
                    let (from, to) = (ModelStatus::Loading, ModelStatus::Error);
                    self.on_store(move |s| models::transition(s, &id, from, None, to, Some(&err)))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// `on-failure` policies: relaunch with exponential backoff up to the maximum, and
    /// forgive the count after a long healthy run.
    async fn apply_restart_policies(&self, records: &[ModelRecord], now: f64) -> Result<()> {
        for r in records {
            let on_failure = |p: &&RestartPolicy| p.mode == RestartMode::OnFailure;
            let Some(policy) = r.restart_policy.as_ref().filter(on_failure) else {
                continue;
            };
            if r.status == ModelStatus::Error && r.restarts < policy.max_restarts {
                let wait = policy.backoff_seconds * 2f64.powi(r.restarts as i32);
                if now - r.stopped_at.unwrap_or(now) >= wait {
                    tracing::info!(model = %r.model_id, restart = r.restarts + 1, "restart policy: relaunching");
                    if let Err(e) = self.relaunch(r, None, r.restarts + 1).await {
                        tracing::warn!(model = %r.model_id, error = %e, "restart failed");
                    }
                }
            } else if r.status == ModelStatus::Loaded
                && r.restarts > 0
                && now - r.loaded_at.unwrap_or(now) > RESTARTS_FORGIVEN_AFTER_SECONDS
            {
                let id = r.model_id.clone();
                self.on_store(move |s| models::set_restarts(s, &id, 0))
                    .await?;
            }
        }
        Ok(())
    }

    /// Unloads loaded models that served nothing for their idle TTL. A model that is not
    /// loaded now (asleep, stopped) loses its clock: woken or launched again, its idle
    /// time counts from then, not from before its sleep.
    async fn reap_idle(&self, records: &[ModelRecord], state: &mut DutyState) {
        state.activity.retain(|id, _| {
            records
                .iter()
                .any(|r| &r.model_id == id && r.status == ModelStatus::Loaded)
        });
        for r in records.iter().filter(|r| r.status == ModelStatus::Loaded) {
            let Some(ttl) = r.idle_ttl_seconds else {
                continue;
            };
            let Some(client) = self.client_for(r) else {
                continue;
            };
            let Ok(text) = client.metrics_text().await else {
                continue;
            };
            let (figure, busy) = activity_of(&text);
            let entry = state
                .activity
                .entry(r.model_id.clone())
                .or_insert((figure, std::time::Instant::now()));
            if busy || entry.0 != figure {
                *entry = (figure, std::time::Instant::now());
            } else if entry.1.elapsed().as_secs_f64() >= ttl {
                tracing::info!(model = %r.model_id, idle_seconds = ttl, "idle TTL reached: unloading");
                match self.stop(&r.model_id, false).await {
                    Ok(_) => {
                        state.activity.remove(&r.model_id);
                    }
                    Err(e) => tracing::warn!(model = %r.model_id, error = %e, "idle unload failed"),
                }
            }
        }
    }

    /// Starts the configured autostart models, once per machine boot: a model the user
    /// unloaded stays unloaded when another manager instance takes the duty over.
    async fn autostart(&self, records: &[ModelRecord]) -> Result<()> {
        let boot = vllm_core::coordination::HolderId::for_process()
            .boot_id()
            .unwrap_or("unknown")
            .to_string();
        for id in &self.config.launcher.autostart {
            let key = format!("autostart:{id}");
            let k = key.clone();
            let done = self.on_store(move |s| Ok(s.meta_get(&k)?)).await?;
            if done.as_deref() == Some(boot.as_str()) {
                continue;
            }
            if !records
                .iter()
                .any(|r| &r.model_id == id && r.status.is_active())
            {
                let req = LaunchRequest {
                    model_id: id.clone(),
                    ..LaunchRequest::default()
                };
                match self.launch(&req).await {
                    Ok(_) => tracing::info!(model = %id, "autostarted"),
                    Err(e) => tracing::warn!(model = %id, error = %e, "autostart failed"),
                }
            }
            let b = boot.clone();
            self.on_store(move |s| Ok(s.meta_set(&key, &b)?)).await?;
        }
        Ok(())
    }
}

impl Placer {
    /// Checks the limits, then either queues the launch (another model is loading on
    /// one of its GPUs) or picks the port and spawns — all inside one store
    /// transaction, so instances launching at once cannot both take the last slot, the
    /// same port, or the same GPUs while they load.
    fn place(&self, plan: &Plan) -> Result<Placed> {
        let req = &plan.req;
        let sampling = models::sampling(&self.store, &req.model_id)?;
        // The process is spawned (the job submitted) inside the transaction; when the
        // transaction then fails (a full store), it must not outlive it unrecorded.
        let mut started: Option<Started> = None;
        let placed = self.store.write(|tx| {
            let rows = active_rows(tx)?;
            let others: Vec<&Active> = rows.iter().filter(|a| a.model_id != req.model_id).collect();
            check_limits(&self.config, plan, &others)?;
            let mut record = self.new_record(tx, plan)?;
            let ahead = queue_ahead(plan, &others, record.updated_at);
            if ahead > 0 {
                if plan.queued_since.is_none() {
                    models::put(tx, &record)?;
                }
                return Ok(Placed::Queued(record, ahead));
            }
            started = Some(self.spawn(plan, &sampling, &others, &mut record)?);
            models::put(tx, &record)?;
            Ok(Placed::Spawned(record))
        });
        if let Err(e) = &placed {
            self.undo(&req.model_id, started, e);
        }
        placed
    }

    /// Stops what a placement started when its record could not be written.
    fn undo(&self, model_id: &str, started: Option<Started>, e: &Error) {
        match started {
            None => {}
            Some(Started::Group(pgid)) => {
                tracing::warn!(model = %model_id, pgid, error = %e, "the launch was not recorded; stopping the process it started");
                if let Err(kill) = process::signal_group(pgid, libc::SIGKILL) {
                    tracing::error!(pgid, error = %kill, "cannot stop the unrecorded launch");
                }
            }
            Some(Started::Job(job)) => {
                tracing::warn!(model = %model_id, job = %job.submission_id, error = %e, "the launch was not recorded; stopping its Ray job");
                if let Some(ray) = &self.ray {
                    let stopped =
                        tokio::runtime::Handle::current().block_on(ray.stop(&job, Duration::ZERO));
                    if let Err(stop) = stopped {
                        tracing::error!(job = %job.submission_id, error = %stop, "cannot stop the unrecorded job");
                    }
                }
            }
        }
    }

    /// The record a placement writes: the sticky port and the restart count of the
    /// previous launch of the model, if any.
    fn new_record(&self, tx: &rusqlite::Transaction<'_>, plan: &Plan) -> Result<ModelRecord> {
        let (cfg, req) = (&self.config, &plan.req);
        let previous: Option<(Option<i64>, i64)> = tx
            .query_row(
                "SELECT port, restarts FROM models WHERE model_id = ?1",
                [&req.model_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let restarts = plan
            .restarts
            .unwrap_or_else(|| previous.as_ref().map(|(_, r)| *r as u32).unwrap_or(0));
        Ok(ModelRecord {
            model_id: req.model_id.clone(),
            source: plan.source.clone(),
            status: ModelStatus::Loading,
            host: cfg.launcher.host.clone(),
            port: previous.as_ref().and_then(|(p, _)| p.map(|p| p as u16)),
            pid: None,
            start_time: None,
            args: plan.args.clone(),
            argv: Vec::new(),
            env_names: Vec::new(),
            gpu_ids: plan.gpu_ids.clone(),
            log_path: Some(self.log_path(&req.model_id)),
            launched_at: None,
            loaded_at: None,
            stopped_at: None,
            error: None,
            restart_policy: req.restart_policy.clone(),
            restarts,
            idle_ttl_seconds: req.idle_ttl_seconds,
            memory_estimate_mb: plan.memory_mb,
            updated_at: vllm_core::time::unix_now(),
            job: None,
        })
    }

    /// Picks the port (the record's sticky one when free) and spawns `vllm serve` (or
    /// submits it to the Ray cluster), filling the record in; returns what it started.
    fn spawn(
        &self,
        plan: &Plan,
        sampling: &vllm_core::launch_args::SamplingDefaults,
        others: &[&Active],
        record: &mut ModelRecord,
    ) -> Result<Started> {
        let (cfg, req) = (&self.config, &plan.req);
        let exclude: std::collections::HashSet<u16> = others
            .iter()
            .filter_map(|a| a.port)
            .chain(plan.avoid_port)
            .collect();
        let preferred = record.port.filter(|p| Some(*p) != plan.avoid_port);
        let [lo, hi] = cfg.launcher.port_range;
        let host = match &self.ray {
            Some(ray) => ray.bind_host(plan.on_ray.node.as_ref()),
            None => cfg.launcher.host.clone(),
        };
        let port = match &self.ray {
            // The node's ports cannot be probed from here: a taken one fails the start
            // with PORT_IN_USE, and the launch moves on to the next port.
            Some(_) => preferred
                .filter(|p| !exclude.contains(p))
                .or_else(|| (lo..=hi).find(|p| !exclude.contains(p))),
            None => process::pick_port(&host, (lo, hi), preferred, &exclude),
        }
        .ok_or_else(|| Error::LimitExceeded {
            limit: "launcher.port_range".into(),
            message: format!("no free port in {lo}..={hi}"),
        })?;
        let (program, argv) = command_line(&CommandSpec {
            command: &cfg.launcher.command,
            source: &plan.source,
            model_id: &req.model_id,
            host: &host,
            port,
            args: &plan.args,
            sampling,
            executor_backend: cfg.launcher.distributed_executor_backend.as_deref(),
        });
        let (env, env_remove) = self.child_env(&plan.gpu_ids);
        let started = match &self.ray {
            Some(ray) => {
                let launch = json!({
                    "source": plan.source, "args": plan.args, "host": host, "port": port,
                    "restart_policy": req.restart_policy, "idle_ttl_seconds": req.idle_ttl_seconds,
                });
                let job = tokio::runtime::Handle::current().block_on(ray.submit(&Submission {
                    model_id: &req.model_id,
                    program: &program,
                    argv: &argv,
                    env: &env,
                    node: plan.on_ray.node.as_ref(),
                    gpus: plan.on_ray.gpus,
                    launch,
                }))?;
                record.host = job.node_ip.clone().unwrap_or_else(|| host.clone());
                record.log_path = None;
                record.job = Some(job.clone());
                Started::Job(job)
            }
            None => {
                let spawned = process::spawn_detached(&SpawnSpec {
                    program: program.clone(),
                    args: argv.clone(),
                    env: env.clone(),
                    env_remove,
                    log_path: self.log_path(&req.model_id),
                    cwd: None,
                })?;
                record.pid = Some(spawned.pid);
                record.start_time = spawned.start_time;
                Started::Group(spawned.pid)
            }
        };
        let mut full = vec![program];
        full.extend(argv);
        record.port = Some(port);
        record.argv = vllm_core::redact::redact_args(&full);
        record.env_names = env.iter().map(|(k, _)| k.clone()).collect();
        record.launched_at = Some(record.updated_at);
        Ok(started)
    }

    /// The launched server's environment: ours, plus the configured extra variables, the
    /// API key (never on the command line), and `CUDA_VISIBLE_DEVICES` for the chosen GPUs.
    /// An inherited `VLLM_API_KEY` is not passed on unless configured.
    fn child_env(&self, gpu_ids: &[u32]) -> (Vec<(String, String)>, Vec<String>) {
        let mut env: Vec<(String, String)> = self
            .config
            .launcher
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut remove = vec!["VLLM_API_KEY".to_string()];
        if let Some(key) = launch_api_key(&self.config) {
            env.push(("VLLM_API_KEY".into(), key));
            remove.clear();
        }
        if !gpu_ids.is_empty() {
            let ids: Vec<String> = gpu_ids.iter().map(u32::to_string).collect();
            env.push(("CUDA_VISIBLE_DEVICES".into(), ids.join(",")));
        }
        (env, remove)
    }

    fn log_path(&self, model_id: &str) -> PathBuf {
        let safe: String = model_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.config.log_dir().join(format!("{safe}.log"))
    }
}

/// The models that hold (or wait for) a slot, GPUs or a port: every active record.
fn active_rows(tx: &rusqlite::Transaction<'_>) -> Result<Vec<Active>> {
    let mut st = tx.prepare(
        "SELECT model_id, port, memory_estimate_mb, status, gpu_ids, \
         CASE WHEN pid IS NOT NULL OR job IS NOT NULL THEN 1 END, updated_at FROM models \
         WHERE status IN ('loading','loaded','stopping','sleeping')",
    )?;
    let rows = st.query_map([], |r| {
        Ok(Active {
            model_id: r.get(0)?,
            port: r.get::<_, Option<i64>>(1)?.map(|p| p as u16),
            memory_mb: r.get(2)?,
            loading: r.get::<_, String>(3)? == ModelStatus::Loading.as_str(),
            sleeping: r.get::<_, String>(3)? == ModelStatus::Sleeping.as_str(),
            // An unreadable list is an error, never "no GPU" (two loads on one GPU).
            gpu_ids: vllm_core::store::json_column(r, 4)?,
            pid: r.get(5)?,
            since: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// `limits.max_models` and `limits.gpu_memory_budget_mb` against the other launches.
fn check_limits(cfg: &Config, plan: &Plan, others: &[&Active]) -> Result<()> {
    if others.len() as u32 >= cfg.limits.max_models {
        return Err(Error::LimitExceeded {
            limit: "limits.max_models".into(),
            message: format!(
                "{} models are already launched (the maximum is {})",
                others.len(),
                cfg.limits.max_models
            ),
        });
    }
    if let (Some(budget), Some(need)) = (cfg.limits.gpu_memory_budget_mb, plan.memory_mb)
        && !plan.gpu_ids.is_empty()
    {
        // A sleeping server gave its GPU memory back (what the front door's sleep swap
        // relies on); it still holds a place under max_models.
        let used: i64 = others
            .iter()
            .filter(|a| !a.sleeping)
            .filter_map(|a| a.memory_mb)
            .sum();
        if used as u64 + need > budget {
            return Err(Error::LimitExceeded {
                limit: "limits.gpu_memory_budget_mb".into(),
                message: format!(
                    "launched models take {used} MiB; this one needs {need} MiB more; the budget is {budget} MiB"
                ),
            });
        }
    }
    Ok(())
}

/// Loads ahead of this one on its GPUs: those with a process (loading now), and the
/// queued ones (no process yet) that joined the queue before it (`now` for a new one).
fn queue_ahead(plan: &Plan, others: &[&Active], now: f64) -> usize {
    let since = plan.queued_since.unwrap_or(now);
    others
        .iter()
        .filter(|a| a.loading && a.gpu_ids.iter().any(|g| plan.gpu_ids.contains(g)))
        .filter(|a| a.pid.is_some() || a.since < since)
        .count()
}

/// The key launched servers get (`launcher.api_key_env`), when set.
fn launch_api_key(config: &Config) -> Option<String> {
    let var = config.launcher.api_key_env.as_ref()?;
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// A figure that grows with every request served, and whether requests run or wait now.
fn activity_of(metrics: &str) -> (f64, bool) {
    let exp = vllm_core::prom::parse_lenient(metrics).0;
    let sum = |name: &str| {
        exp.family(name)
            .and_then(|f| f.sum_where(|_| true))
            .unwrap_or(0.0)
    };
    let served = sum("vllm:prompt_tokens_total") + sum("vllm:generation_tokens_total");
    let busy = sum("vllm:num_requests_running") + sum("vllm:num_requests_waiting") > 0.0;
    (served, busy)
}

/// `vllm:num_requests_running` summed over models, 0 when absent.
pub fn running_requests(metrics: &str) -> u64 {
    vllm_core::prom::parse_lenient(metrics)
        .0
        .family("vllm:num_requests_running")
        .and_then(|f| f.sum_where(|_| true))
        .unwrap_or(0.0) as u64
}

/// Picks GPUs: the given ones (checked to exist), else the `needed` with the most free memory.
fn choose_gpus(
    all: &[GpuSnapshot],
    given: Option<&[u32]>,
    needed: usize,
    distributed: bool,
) -> Result<Vec<u32>> {
    if let Some(ids) = given {
        for id in ids {
            if !all.iter().any(|g| g.index == *id) {
                return Err(Error::invalid(
                    "gpu_ids",
                    format!(
                        "GPU {id} does not exist: {} visible (ids 0..{})",
                        all.len(),
                        all.len()
                    ),
                ));
            }
        }
        return Ok(ids.to_vec());
    }
    if needed > all.len() {
        if distributed {
            // A Ray cluster supplies the rest; place what we can here.
            return Ok(all.iter().map(|g| g.index).collect());
        }
        return Err(Error::invalid(
            "tensor_parallel_size",
            format!(
                "tensor_parallel_size × pipeline_parallel_size = {needed} but only {} GPU(s) are visible; \
                 configure launcher.distributed_executor_backend = \"ray\" for multi-node",
                all.len()
            ),
        ));
    }
    let mut by_free: Vec<&GpuSnapshot> = all.iter().collect();
    by_free.sort_by_key(|g| std::cmp::Reverse(g.memory_free_mb.unwrap_or(0)));
    let mut ids: Vec<u32> = by_free.iter().take(needed).map(|g| g.index).collect();
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vllm_core::gpu::FakeGpus;

    #[test]
    fn gpu_choice_prefers_free_memory_and_checks_ids() {
        let g = FakeGpus::uniform(4, 81_920);
        g.update(0, |s| s.memory_free_mb = Some(1000));
        g.update(2, |s| s.memory_free_mb = Some(2000));
        let all = vllm_core::gpu::GpuSource::snapshots(&g).unwrap();
        assert_eq!(choose_gpus(&all, None, 2, false).unwrap(), [1, 3]);
        assert_eq!(choose_gpus(&all, Some(&[2]), 1, false).unwrap(), [2]);
        assert_eq!(
            choose_gpus(&all, Some(&[7]), 1, false).unwrap_err().code(),
            "INVALID_ARGUMENT"
        );
        assert_eq!(
            choose_gpus(&all, None, 8, false).unwrap_err().code(),
            "INVALID_ARGUMENT"
        );
        assert_eq!(choose_gpus(&all, None, 8, true).unwrap().len(), 4);
    }

    #[tokio::test]
    async fn an_unreadable_gpu_list_fails_the_placement_not_the_gpus() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("vllm-mcp.db")).unwrap();
        // A loaded model whose stored GPU list no longer decodes: read as "no GPU" it
        // would let the next launch share its GPUs.
        store
            .write(|tx| -> Result<_> {
                tx.execute(
                    "INSERT INTO models (model_id, source, status, host, args, argv, env_names, \
                     gpu_ids, updated_at) VALUES ('other', 'org/m', 'loaded', '127.0.0.1', '{}', \
                     '[]', '[]', 'not json', 0)",
                    [],
                )?;
                Ok(())
            })
            .unwrap();
        let mut config = Config::default();
        config.launcher.command = vec!["/nonexistent/vllm".into()];
        config.data_dir = dir.path().to_path_buf();
        let gpus: Gpus = Arc::new(FakeGpus::uniform(1, 81_920));
        let launcher = Launcher::new(Arc::new(config), store, gpus);
        let req = LaunchRequest {
            model_id: "m".into(),
            source: Some("org/m".into()),
            force: true,
            ..LaunchRequest::default()
        };
        let e = launcher.launch(&req).await.unwrap_err();
        assert_eq!(e.code(), "STORAGE_ERROR", "{e}");
        assert!(
            e.to_string()
                .contains("`gpu_ids` holds JSON that does not decode"),
            "{e}"
        );
        assert!(
            models::get(launcher.store(), "m").unwrap().is_none(),
            "nothing placed"
        );
    }

    #[test]
    fn running_requests_from_metrics() {
        let text = "# TYPE vllm:num_requests_running gauge\n\
                    vllm:num_requests_running{engine=\"0\",model_name=\"a\"} 2.0\n\
                    vllm:num_requests_running{engine=\"0\",model_name=\"b\"} 1.0\n";
        assert_eq!(running_requests(text), 3);
        assert_eq!(running_requests(""), 0);
    }
}
