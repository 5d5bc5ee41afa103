//! Saving the serving state: what a save gathers (the launched models with their exact
//! arguments, sampling defaults and vLLM versions; the monitor's recent samples) and how
//! it is written (the parts encoded, the conversation streamed from Crush's database,
//! one store transaction with the retention). The counterpart of [`crate::restore`].
//!
//! [`recent_metrics`] and [`write`] block (SQLite, zstd): call them off the async threads.

use crate::launcher::supervisor::Launcher;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use vllm_core::crush_db::CrushDb;
use vllm_core::error::{Error, Result};
use vllm_core::models::{self, ModelRecord};
use vllm_core::monitor::history;
use vllm_core::states::{
    self, Configurations, EncodedPart, IndexedModel, MetricsInfo, ModelsPart, PartKind,
    SavedMetrics, SavedModel, StateMeta,
};
use vllm_core::store::Store;

/// The window of monitor samples a save records.
pub const METRICS_WINDOW_SECONDS: f64 = 3_600.0;
/// The most monitor samples a save records (the newest of the window).
pub const METRICS_MAX_SAMPLES: usize = 5_000;
/// How long a save waits for a server's `/version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(2);

/// The models part: every launched model (or none, when only metrics are saved), the
/// sampling defaults, and the digest of the configuration in force.
pub async fn models_part(launcher: &Launcher, include_models: bool) -> Result<ModelsPart> {
    let records = if include_models {
        launcher.list().await?
    } else {
        Vec::new()
    };
    // At once: one at a time would wait VERSION_TIMEOUT per unreachable server.
    let saved = futures_util::future::join_all(records.iter().map(|r| saved_model(launcher, r)))
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let sampling = saved
        .iter()
        .filter(|m| !m.sampling.is_empty())
        .map(|m| (m.model_id.clone(), m.sampling.clone()))
        .collect();
    Ok(ModelsPart {
        configurations: Configurations {
            sampling,
            config_digest: states::config_digest(launcher.config())?,
        },
        models: saved,
        ..ModelsPart::default()
    })
}

/// A model record as saved, with its sampling defaults and the serving vLLM's version.
async fn saved_model(launcher: &Launcher, r: &ModelRecord) -> Result<SavedModel> {
    let id = r.model_id.clone();
    let sampling = launcher.on_store(move |s| models::sampling(s, &id)).await?;
    let vllm_version = match (r.status.is_active(), launcher.client_for(r)) {
        (true, Some(c)) => tokio::time::timeout(VERSION_TIMEOUT, c.version())
            .await
            .ok()
            .and_then(|v| v.ok()),
        _ => None,
    };
    Ok(SavedModel {
        model_id: r.model_id.clone(),
        source: r.source.clone(),
        status: r.status.as_str().into(),
        args: r.args.clone(),
        argv: r.argv.clone(),
        env_names: r.env_names.clone(),
        gpu_ids: r.gpu_ids.clone(),
        sampling,
        vllm_version,
        restart_policy: r.restart_policy.clone(),
        idle_ttl_seconds: r.idle_ttl_seconds,
    })
}

/// The monitor's samples a save records, and what they are.
#[derive(Debug)]
pub struct RecentMetrics {
    /// The samples; `None` when the monitor has never sampled (nothing is invented).
    pub saved: Option<SavedMetrics>,
    /// What was saved, for the person reading the answer.
    pub note: String,
    /// The state's row of them.
    pub info: MetricsInfo,
}

/// The monitor's samples of the last hour (the newest [`METRICS_MAX_SAMPLES`]), from
/// the store. Blocking.
pub fn recent_metrics(store: &Store, now: f64) -> Result<RecentMetrics> {
    let since = now - METRICS_WINDOW_SECONDS;
    let mut recent = history::read_recent(store, since, METRICS_MAX_SAMPLES + 1)?;
    let ever = !recent.is_empty() || history::count(store, None)? > 0;
    let truncated = recent.len() > METRICS_MAX_SAMPLES;
    recent.truncate(METRICS_MAX_SAMPLES);
    let limit = METRICS_MAX_SAMPLES as u64;
    let saved = SavedMetrics::from_samples(METRICS_WINDOW_SECONDS, now, limit, truncated, recent);
    let note = if !ever {
        "metrics: the performance monitor has never sampled (its history in the store is empty; \
         is vllm-perf-monitor running?): none saved, nothing was invented"
            .to_string()
    } else if saved.samples == 0 {
        "metrics: the performance monitor has no sample from the last hour: none saved".to_string()
    } else {
        let span = saved.last_ts.unwrap_or(now) - saved.first_ts.unwrap_or(now);
        let cut = if truncated {
            format!("; the newest {METRICS_MAX_SAMPLES} only, older ones left out")
        } else {
            String::new()
        };
        format!(
            "metrics: {} sample(s) of {} series (endpoint, model) from the last hour saved, {span:.0} s \
             from the oldest to the newest{cut}",
            saved.samples,
            saved.series.len(),
        )
    };
    let info = if ever {
        saved.info(Some(note.clone()))
    } else {
        MetricsInfo {
            note: Some(note.clone()),
            ..MetricsInfo::default()
        }
    };
    Ok(RecentMetrics {
        saved: ever.then_some(saved),
        note,
        info,
    })
}

/// What to write as one state.
pub struct Snapshot {
    pub session_id: String,
    pub models: Option<ModelsPart>,
    /// Crush's database and the session whose conversation to stream from it.
    pub conversation: Option<(CrushDb, String)>,
    pub metrics: Option<MetricsInfo>,
    pub compress: bool,
    /// States kept per session; older ones are pruned in the same transaction.
    pub keep: usize,
}

/// What [`write`] stored.
#[derive(Debug)]
pub struct Written {
    pub meta: StateMeta,
    /// Older states of the session deleted by the retention.
    pub pruned: Vec<String>,
    /// What Crush's database held that could not be read (noted, not fatal).
    pub skipped: Vec<String>,
}

/// Encodes and stores a snapshot. The conversation goes row by row from Crush's
/// database into the encoder, so it is never all in memory. Nothing to store (no models
/// part and no conversation found) is `INVALID_ARGUMENT`. Blocking.
pub fn write(store: &Store, snapshot: Snapshot, now: f64) -> Result<Written> {
    let mut parts: Vec<EncodedPart> = Vec::new();
    let mut meta = new_meta(snapshot.session_id, now, snapshot.metrics);
    if let Some(m) = &snapshot.models {
        index_models(&mut meta, m);
        parts.push(states::encode_part(PartKind::Models, m, snapshot.compress)?);
    }
    drop(snapshot.models);
    let mut skipped = Vec::new();
    if let Some((db, session)) = snapshot.conversation {
        let (part, summary) =
            states::encode_part_with(PartKind::Conversations, snapshot.compress, |w| {
                Ok(db.export_to(&session, w)?)
            })?;
        // Gone between the check and the read (Crush deleted it): nothing saved of it.
        if let Some(c) = summary {
            meta.title = c.title;
            meta.session_count = c.session_count as u64;
            meta.message_count = c.message_count as u64;
            skipped = c.skipped;
            parts.push(part);
        }
    }
    if parts.is_empty() {
        return Err(nothing_to_save());
    }
    meta.parts = states::part_infos(&parts);
    let pruned = states::insert(store, &meta, &parts, snapshot.keep)?;
    Ok(Written {
        meta,
        pruned,
        skipped,
    })
}

/// The refusal of a save that would store nothing.
pub fn nothing_to_save() -> Error {
    Error::invalid(
        "include_models",
        "nothing to save: models are excluded and no conversation was found for this session",
    )
}

fn new_meta(session_id: String, now: f64, metrics: Option<MetricsInfo>) -> StateMeta {
    StateMeta {
        state_id: states::new_state_id(),
        session_id,
        created_at: now,
        timestamp: vllm_core::time::format_rfc3339(now as i64),
        format_version: states::FORMAT_VERSION,
        vllm_versions: Vec::new(),
        title: None,
        model_count: 0,
        session_count: 0,
        message_count: 0,
        models_index: BTreeMap::new(),
        note: None,
        metrics,
        parts: Vec::new(),
    }
}

/// The state row's summary of its models: count, vLLM versions, and an index a listing
/// reads without decoding the part.
fn index_models(meta: &mut StateMeta, part: &ModelsPart) {
    meta.model_count = part.models.len() as u64;
    meta.vllm_versions = part
        .models
        .iter()
        .filter_map(|x| x.vllm_version.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    meta.models_index = part
        .models
        .iter()
        .map(|x| {
            let indexed = IndexedModel {
                source: x.source.clone(),
                status: x.status.clone(),
                args: x.args.clone(),
            };
            (x.model_id.clone(), indexed)
        })
        .collect();
}
