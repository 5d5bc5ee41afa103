//! The records of launched models in the store, and how their status is observed.
//!
//! A record is written when a launch starts and kept after unload (the model keeps its
//! port, and its arguments can be restored). Its `status` is the last *observed* state:
//! every reader that looks at a model checks the process group and the server's HTTP
//! answers and writes the transition back with a compare-and-set, so several server
//! instances agree and a restarted manager tells the truth about processes that died
//! while it was away.

use crate::error::{Error, LoadFailure, Result};
use crate::launch_args::{LaunchArgs, SamplingDefaults};
use crate::store::Store;
use crate::store::rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;

/// Where a model stands.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    /// Launched; `/health` or `/v1/models` not yet answering for it.
    Loading,
    /// Serving.
    Loaded,
    /// Failed to start, or died; `error` says why.
    Error,
    /// Stopped by us (or never started).
    #[default]
    Unloaded,
    /// Being stopped.
    Stopping,
    /// vLLM sleep mode: weights offloaded, process alive.
    Sleeping,
}

impl ModelStatus {
    /// Every status, for a caller that accepts a model in any.
    pub const ALL: [ModelStatus; 6] = [
        ModelStatus::Loading,
        ModelStatus::Loaded,
        ModelStatus::Error,
        ModelStatus::Unloaded,
        ModelStatus::Stopping,
        ModelStatus::Sleeping,
    ];

    /// The lowercase name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Loading => "loading",
            ModelStatus::Loaded => "loaded",
            ModelStatus::Error => "error",
            ModelStatus::Unloaded => "unloaded",
            ModelStatus::Stopping => "stopping",
            ModelStatus::Sleeping => "sleeping",
        }
    }

    /// The status a stored or saved name means; `None` for a name this build does not
    /// know.
    pub fn from_name(s: &str) -> Option<ModelStatus> {
        ModelStatus::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// A stored status (the column only ever holds known names; anything else reads as
    /// `error`, which a model in it must be).
    fn parse(s: &str) -> ModelStatus {
        ModelStatus::from_name(s).unwrap_or(ModelStatus::Error)
    }

    /// A process is (or should be) running.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ModelStatus::Loading
                | ModelStatus::Loaded
                | ModelStatus::Stopping
                | ModelStatus::Sleeping
        )
    }
}

/// Why a model is in `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordedError {
    pub reason: FailureReason,
    pub message: String,
    /// Context (`log_tail`, `exit_code`, `signal`, ...), as in a `MODEL_LOAD_FAILED` error.
    #[serde(default)]
    pub details: Value,
}

/// Why a launched model went to `error`: a start-up failure as classified from its log,
/// or what became of a server that had started. Written as one stable string
/// (`PORT_IN_USE`, `ENGINE_DIED`, ...); a string this build does not know is a storage
/// error naming the column, never a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The start failed, classified from the log ([`LoadFailure`]'s string).
    Start(LoadFailure),
    /// A server that had loaded is gone (`ENGINE_DIED`).
    EngineDied,
    /// The server did not answer its health check within the start timeout (`START_TIMEOUT`).
    StartTimeout,
}

impl FailureReason {
    /// The stable string.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Start(f) => f.as_str(),
            FailureReason::EngineDied => "ENGINE_DIED",
            FailureReason::StartTimeout => "START_TIMEOUT",
        }
    }

    /// Every reason, start-up classifications first.
    pub fn all() -> impl Iterator<Item = FailureReason> {
        LoadFailure::ALL
            .into_iter()
            .map(FailureReason::Start)
            .chain([FailureReason::EngineDied, FailureReason::StartTimeout])
    }

    /// The reason named by its stable string.
    pub fn from_name(s: &str) -> Option<FailureReason> {
        FailureReason::all().find(|r| r.as_str() == s)
    }

    /// The classification a `MODEL_LOAD_FAILED` error carries: the start-up failure, or
    /// `PROCESS_EXITED` for a server that died or never became healthy (the caller adds
    /// this reason as `details.cause`).
    pub fn load_failure(self) -> LoadFailure {
        match self {
            FailureReason::Start(f) => f,
            FailureReason::EngineDied | FailureReason::StartTimeout => LoadFailure::ProcessExited,
        }
    }
}

impl From<LoadFailure> for FailureReason {
    fn from(f: LoadFailure) -> FailureReason {
        FailureReason::Start(f)
    }
}

impl Serialize for FailureReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FailureReason::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown failure reason `{s}`")))
    }
}

/// A string schema listing every reason, inline (Crush drops `$defs`).
impl schemars::JsonSchema for FailureReason {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FailureReason".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = FailureReason::all().map(FailureReason::as_str).collect();
        schemars::json_schema!({
            "type": "string",
            "enum": names,
            "description": "A start-up failure as classified from the log, ENGINE_DIED \
                            (a loaded server is gone) or START_TIMEOUT."
        })
    }
}

/// When a restart policy relaunches a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RestartMode {
    /// After the server dies or fails to start (the only policy besides none).
    #[serde(rename = "on-failure")]
    OnFailure,
}

/// A restart policy for a launched model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub mode: RestartMode,
    /// Most restarts before the model stays in `error`.
    pub max_restarts: u32,
    /// Seconds before the first restart; doubled each time.
    pub backoff_seconds: f64,
}

/// One launched model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The served name and identity.
    pub model_id: String,
    /// What `vllm serve` loads.
    pub source: String,
    pub status: ModelStatus,
    pub host: String,
    /// The port, kept after unload so a reload gets it back.
    pub port: Option<u16>,
    /// The API server's pid, which is also its process group id.
    pub pid: Option<u32>,
    /// The leader's start time, so a recycled pid is not taken for it.
    pub start_time: Option<u64>,
    pub args: LaunchArgs,
    /// The full command line, secrets removed.
    pub argv: Vec<String>,
    /// Names (never values) of the environment variables we set.
    pub env_names: Vec<String>,
    pub gpu_ids: Vec<u32>,
    pub log_path: Option<PathBuf>,
    pub launched_at: Option<f64>,
    pub loaded_at: Option<f64>,
    pub stopped_at: Option<f64>,
    pub error: Option<RecordedError>,
    pub restart_policy: Option<RestartPolicy>,
    pub restarts: u32,
    pub idle_ttl_seconds: Option<f64>,
    pub memory_estimate_mb: Option<u64>,
    pub updated_at: f64,
    /// The Ray job serving it, when the launcher's backend is `ray` (`pid` is then empty).
    #[serde(default)]
    pub job: Option<RayJob>,
}

/// A launch placed on a Ray cluster: its job and the node the job runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RayJob {
    /// The job's submission id (ours: `vllm-mcp-<model>-<time>`).
    pub submission_id: String,
    /// The node the job was pinned to or placed on, once known (its address).
    pub node_ip: Option<String>,
    /// Ray's id of that node.
    pub node_id: Option<String>,
}

impl ModelRecord {
    /// Waiting in the launch queue: loading, with nothing started yet.
    pub fn is_queued(&self) -> bool {
        self.status == ModelStatus::Loading && self.pid.is_none() && self.job.is_none()
    }

    /// `http://host:port` of the server, when it has a port.
    pub fn base_url(&self) -> Option<String> {
        let host = if self.host == "0.0.0.0" {
            "127.0.0.1"
        } else {
            &self.host
        };
        self.port.map(|p| format!("http://{host}:{p}"))
    }
}

const COLUMNS: &str = "model_id, source, status, host, port, pid, start_time, args, argv, env_names, gpu_ids, \
     log_path, launched_at, loaded_at, stopped_at, error, restart_policy, restarts, idle_ttl_seconds, \
     memory_estimate_mb, updated_at, job";

use crate::store::json_column as json_col;

fn opt_json_col<T: for<'de> Deserialize<'de>>(
    row: &Row<'_>,
    i: usize,
) -> crate::store::rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(i)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn from_row(row: &Row<'_>) -> crate::store::rusqlite::Result<ModelRecord> {
    Ok(ModelRecord {
        model_id: row.get(0)?,
        source: row.get(1)?,
        status: ModelStatus::parse(&row.get::<_, String>(2)?),
        host: row.get(3)?,
        port: row.get::<_, Option<i64>>(4)?.map(|p| p as u16),
        pid: row.get::<_, Option<i64>>(5)?.map(|p| p as u32),
        start_time: row.get::<_, Option<i64>>(6)?.map(|t| t as u64),
        args: json_col(row, 7)?,
        argv: json_col(row, 8)?,
        env_names: json_col(row, 9)?,
        gpu_ids: json_col(row, 10)?,
        log_path: row.get::<_, Option<String>>(11)?.map(PathBuf::from),
        launched_at: row.get(12)?,
        loaded_at: row.get(13)?,
        stopped_at: row.get(14)?,
        error: opt_json_col(row, 15)?,
        restart_policy: opt_json_col(row, 16)?,
        restarts: row.get::<_, i64>(17)? as u32,
        idle_ttl_seconds: row.get(18)?,
        memory_estimate_mb: row.get::<_, Option<i64>>(19)?.map(|m| m as u64),
        updated_at: row.get(20)?,
        job: opt_json_col(row, 21)?,
    })
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Reads one record.
pub fn get(store: &Store, model_id: &str) -> Result<Option<ModelRecord>> {
    store.read(|c| {
        Ok(c.query_row(
            &format!("SELECT {COLUMNS} FROM models WHERE model_id = ?1"),
            [model_id],
            from_row,
        )
        .optional()?)
    })
}

/// Every record, by model id.
pub fn list(store: &Store) -> Result<Vec<ModelRecord>> {
    store.read(|c| {
        let mut st = c.prepare(&format!("SELECT {COLUMNS} FROM models ORDER BY model_id"))?;
        let rows = st
            .query_map([], from_row)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    })
}

/// Inserts or replaces a record inside a write transaction.
pub fn put(tx: &crate::store::rusqlite::Transaction<'_>, r: &ModelRecord) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT OR REPLACE INTO models ({COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
        ),
        params![
            r.model_id,
            r.source,
            r.status.as_str(),
            r.host,
            r.port.map(i64::from),
            r.pid.map(i64::from),
            r.start_time.map(|t| t as i64),
            to_json(&r.args),
            to_json(&r.argv),
            to_json(&r.env_names),
            to_json(&r.gpu_ids),
            r.log_path.as_ref().map(|p| p.display().to_string()),
            r.launched_at,
            r.loaded_at,
            r.stopped_at,
            r.error.as_ref().map(to_json),
            r.restart_policy.as_ref().map(to_json),
            i64::from(r.restarts),
            r.idle_ttl_seconds,
            r.memory_estimate_mb.map(|m| m as i64),
            crate::time::unix_now(),
            r.job.as_ref().map(to_json),
        ],
    )?;
    Ok(())
}

/// Moves a record from one of `from` to `to`, only if its status and pid are still what
/// the caller observed (compare-and-set): two instances observing the same death write
/// one transition. Returns whether this call made the change.
pub fn transition(
    store: &Store,
    model_id: &str,
    from: ModelStatus,
    pid: Option<u32>,
    to: ModelStatus,
    error: Option<&RecordedError>,
) -> Result<bool> {
    transition_of(store, model_id, from, Instance::Group(pid), to, error)
}

/// The server a transition is about: the process group observed (`None` for a launch
/// with none yet), or the Ray job.
#[derive(Debug, Clone, Copy)]
pub enum Instance<'a> {
    Group(Option<u32>),
    Job(&'a str),
}

impl Instance<'_> {
    /// The instance of a record: its job on Ray, else its process group.
    pub fn of(r: &ModelRecord) -> Instance<'_> {
        match &r.job {
            Some(job) => Instance::Job(&job.submission_id),
            None => Instance::Group(r.pid),
        }
    }
}

/// [`transition`] for either kind of server: a late look at an old Ray job cannot write
/// over the status of the job a relaunch started since.
pub fn transition_of(
    store: &Store,
    model_id: &str,
    from: ModelStatus,
    instance: Instance<'_>,
    to: ModelStatus,
    error: Option<&RecordedError>,
) -> Result<bool> {
    let now = crate::time::unix_now();
    let (same, key): (&str, crate::store::rusqlite::types::Value) = match instance {
        Instance::Group(pid) => ("pid IS ?6", pid.map(i64::from).into()),
        Instance::Job(id) => (
            "json_extract(job, '$.submission_id') IS ?6",
            id.to_string().into(),
        ),
    };
    store.write(|tx| {
        let n = tx.execute(
            &format!(
                "UPDATE models SET status = ?1, updated_at = ?2,
                 error = CASE WHEN ?3 IS NULL THEN (CASE WHEN ?1 = 'error' THEN error ELSE NULL END) ELSE ?3 END,
                 loaded_at = CASE WHEN ?1 = 'loaded' THEN ?2 ELSE loaded_at END,
                 stopped_at = CASE WHEN ?1 IN ('unloaded', 'error') THEN ?2 ELSE stopped_at END
                 WHERE model_id = ?4 AND status = ?5 AND {same}"
            ),
            params![
                to.as_str(),
                now,
                error.map(to_json),
                model_id,
                from.as_str(),
                key
            ],
        )?;
        Ok(n == 1)
    })
}

/// Writes a record found running elsewhere (a Ray job another manager started) unless
/// this store holds the model as active already; returns whether it was written.
pub fn adopt(store: &Store, r: &ModelRecord) -> Result<bool> {
    store.write(|tx| {
        let active: Option<String> = tx
            .query_row(
                "SELECT status FROM models WHERE model_id = ?1 \
                 AND status IN ('loading','loaded','stopping','sleeping')",
                [&r.model_id],
                |row| row.get(0),
            )
            .optional()?;
        if active.is_some() {
            return Ok(false);
        }
        put(tx, r)?;
        Ok(true)
    })
}

/// Records where Ray placed a model's job: the node's address becomes the record's host.
/// Only the same job's record changes (a relaunch meanwhile has a job of its own).
pub fn set_placement(store: &Store, model_id: &str, host: &str, job: &RayJob) -> Result<bool> {
    store.write(|tx| {
        let n = tx.execute(
            "UPDATE models SET host = ?1, job = ?2, updated_at = ?3
             WHERE model_id = ?4 AND json_extract(job, '$.submission_id') = ?5",
            params![
                host,
                to_json(job),
                crate::time::unix_now(),
                model_id,
                job.submission_id
            ],
        )?;
        Ok(n == 1)
    })
}

/// Sets a record's restart count (forgiven after a long healthy run).
pub fn set_restarts(store: &Store, model_id: &str, restarts: u32) -> Result<()> {
    store.write(|tx| {
        tx.execute(
            "UPDATE models SET restarts = ?1, updated_at = ?2 WHERE model_id = ?3",
            params![i64::from(restarts), crate::time::unix_now(), model_id],
        )?;
        Ok(())
    })
}

/// Ports of records that are active, to keep launches from colliding.
pub fn active_ports(store: &Store) -> Result<HashSet<u16>> {
    Ok(list(store)?
        .into_iter()
        .filter(|r| r.status.is_active())
        .filter_map(|r| r.port)
        .collect())
}

/// The sampling defaults of a model (empty when none were set).
/// Every model's sampling defaults, by model id (those without any are absent).
pub fn all_sampling(store: &Store) -> Result<std::collections::HashMap<String, SamplingDefaults>> {
    store.read(|c| {
        let mut st = c.prepare_cached("SELECT model_id, sampling FROM model_sampling")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, crate::store::json_column(r, 1)?))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    })
}

pub fn sampling(store: &Store, model_id: &str) -> Result<SamplingDefaults> {
    store.read(|c| {
        let text: Option<String> = c
            .query_row(
                "SELECT sampling FROM model_sampling WHERE model_id = ?1",
                [model_id],
                |r| r.get(0),
            )
            .optional()?;
        match text {
            None => Ok(SamplingDefaults::new()),
            Some(t) => serde_json::from_str(&t)
                .map_err(|e| Error::storage(format!("sampling of {model_id}: {e}"))),
        }
    })
}

/// Replaces the sampling defaults of a model.
pub fn set_sampling(store: &Store, model_id: &str, sampling: &SamplingDefaults) -> Result<()> {
    store.write(|tx| {
        tx.execute(
            "INSERT OR REPLACE INTO model_sampling (model_id, sampling, updated_at) VALUES (?1, ?2, ?3)",
            params![model_id, to_json(sampling), crate::time::unix_now()],
        )?;
        Ok(())
    })
}

/// Records how long a launch took to be served (or to fail).
pub fn record_load(store: &Store, model_id: &str, seconds: f64, ok: bool) -> Result<()> {
    store.write(|tx| {
        tx.execute(
            "INSERT INTO load_history (model_id, seconds, ok, at) VALUES (?1, ?2, ?3, ?4)",
            params![model_id, seconds, ok as i64, crate::time::unix_now()],
        )?;
        Ok(())
    })
}

/// The most recent successful load times of a model, newest first (at most 20).
pub fn past_loads(store: &Store, model_id: &str) -> Result<Vec<f64>> {
    store.read(|c| {
        let mut st = c.prepare(
            "SELECT seconds FROM load_history WHERE model_id = ?1 AND ok = 1 ORDER BY at DESC LIMIT 20",
        )?;
        let v = st
            .query_map([model_id], |r| r.get::<_, f64>(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(v)
    })
}

/// A readable name from an id: `meta-llama/Llama-3.1-8B-Instruct` → `Llama 3.1 8B Instruct`.
pub fn display_name(id: &str) -> String {
    let last = id.trim_end_matches('/').rsplit('/').next().unwrap_or(id);
    last.replace(['-', '_'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons_are_their_stable_strings_and_unknown_ones_are_refused() {
        let all: Vec<FailureReason> = FailureReason::all().collect();
        assert_eq!(all.len(), LoadFailure::ALL.len() + 2);
        for r in &all {
            let v = serde_json::to_value(r).unwrap();
            assert_eq!(v, r.as_str());
            assert_eq!(serde_json::from_value::<FailureReason>(v).unwrap(), *r);
        }
        assert_eq!(
            serde_json::to_value(FailureReason::EngineDied).unwrap(),
            "ENGINE_DIED"
        );
        let e = serde_json::from_value::<FailureReason>("ENGINE_EXPLODED".into()).unwrap_err();
        assert!(e.to_string().contains("ENGINE_EXPLODED"), "{e}");
        // What a MODEL_LOAD_FAILED carries: the classification, or PROCESS_EXITED.
        assert_eq!(
            FailureReason::Start(LoadFailure::PortInUse).load_failure(),
            LoadFailure::PortInUse
        );
        assert_eq!(
            FailureReason::StartTimeout.load_failure(),
            LoadFailure::ProcessExited
        );
    }

    fn record(id: &str, status: ModelStatus, pid: Option<u32>, port: u16) -> ModelRecord {
        ModelRecord {
            model_id: id.into(),
            source: "/models/tiny".into(),
            status,
            host: "127.0.0.1".into(),
            port: Some(port),
            pid,
            start_time: None,
            args: LaunchArgs {
                max_model_len: Some(512),
                ..LaunchArgs::default()
            },
            argv: vec!["serve".into(), "/models/tiny".into()],
            env_names: vec!["VLLM_API_KEY".into()],
            gpu_ids: vec![0],
            log_path: None,
            launched_at: Some(1.0),
            loaded_at: None,
            stopped_at: None,
            error: None,
            restart_policy: None,
            restarts: 0,
            idle_ttl_seconds: None,
            memory_estimate_mb: Some(10),
            updated_at: 0.0,
            job: None,
        }
    }

    #[test]
    fn records_round_trip_and_transitions_are_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_dir(dir.path()).unwrap();
        let r = record("tiny", ModelStatus::Loading, Some(42), 8100);
        store.write(|tx| put(tx, &r)).unwrap();
        let mut back = get(&store, "tiny").unwrap().unwrap();
        back.updated_at = 0.0;
        assert_eq!(back, r);
        assert_eq!(active_ports(&store).unwrap(), HashSet::from([8100]));

        // A stale observer (other pid) changes nothing.
        assert!(
            !transition(
                &store,
                "tiny",
                ModelStatus::Loading,
                Some(7),
                ModelStatus::Loaded,
                None
            )
            .unwrap()
        );
        assert!(
            transition(
                &store,
                "tiny",
                ModelStatus::Loading,
                Some(42),
                ModelStatus::Loaded,
                None
            )
            .unwrap()
        );
        assert!(
            !transition(
                &store,
                "tiny",
                ModelStatus::Loading,
                Some(42),
                ModelStatus::Error,
                None
            )
            .unwrap()
        );
        let now = get(&store, "tiny").unwrap().unwrap();
        assert_eq!(now.status, ModelStatus::Loaded);
        assert!(now.loaded_at.is_some());

        // On Ray the job is the instance: a look at an older job changes nothing.
        let mut j = record("ray", ModelStatus::Loading, None, 8101);
        j.job = Some(RayJob {
            submission_id: "vllm-mcp-ray-2".into(),
            node_ip: None,
            node_id: None,
        });
        store.write(|tx| put(tx, &j)).unwrap();
        let (loading, error) = (ModelStatus::Loading, ModelStatus::Error);
        let old = Instance::Job("vllm-mcp-ray-1");
        assert!(!transition_of(&store, "ray", loading, old, error, None).unwrap());
        let current = Instance::of(&j);
        assert!(transition_of(&store, "ray", loading, current, error, None).unwrap());

        let err = RecordedError {
            reason: FailureReason::EngineDied,
            message: "the engine died".into(),
            details: Value::Null,
        };
        assert!(
            transition(
                &store,
                "tiny",
                ModelStatus::Loaded,
                Some(42),
                ModelStatus::Error,
                Some(&err)
            )
            .unwrap()
        );
        let now = get(&store, "tiny").unwrap().unwrap();
        assert_eq!(now.error.as_ref(), Some(&err));
        assert!(active_ports(&store).unwrap().is_empty());
    }

    #[test]
    fn sampling_and_load_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_dir(dir.path()).unwrap();
        assert!(sampling(&store, "m").unwrap().is_empty());
        let mut s = SamplingDefaults::new();
        s.insert("temperature".into(), 0.7.into());
        set_sampling(&store, "m", &s).unwrap();
        assert_eq!(sampling(&store, "m").unwrap(), s);
        record_load(&store, "m", 70.0, true).unwrap();
        record_load(&store, "m", 5.0, false).unwrap();
        record_load(&store, "m", 80.0, true).unwrap();
        assert_eq!(past_loads(&store, "m").unwrap(), [80.0, 70.0]);
    }
}
