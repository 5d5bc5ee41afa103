//! The monitor's history in the store: `metric_samples` and `gpu_samples` (migration 4).
//!
//! # Layout
//! One `metric_samples` row per endpoint, served model and scrape. The figures a window
//! scans are columns (counters, gauges, histogram counts and the e2e sum, the server's
//! start time), so a window of an hour of 5 s samples for 8 models (5 760 rows) is one
//! indexed range scan of small rows. Histogram buckets, requests by `finished_reason`
//! and the KV-cache configuration are a JSON blob in `metric_sample_details` (a table of
//! its own, so a scan never pages through blobs), read only for the rows a
//! window needs them from: the first and last row of each run without a counter reset
//! (see [`super::window::detail_rows`]), so normally two blobs per series.
//!
//! # Retention and downsampling
//! [`maintain`] (run by the sampler once a minute) deletes rows older than the retention
//! (`monitor.retention_hours`) and keeps full resolution for the last hour only: older
//! rows are thinned to the last row of each minute of each series. Counters are totals, so
//! thinning loses nothing of an increase unless a server restarted inside a thinned
//! minute (then what it counted between the previous kept row and the restart is lost,
//! as for Prometheus with a one-minute scrape interval). GPU rows are thinned alike.

use super::sample::{Sample, SampleDetail};
use super::window;
use crate::error::Result;
use crate::gpu::GpuSnapshot;
use crate::store::Store;
use crate::store::rusqlite::{self, Row, params};
use std::collections::HashMap;

/// Rows younger than this keep every sample.
pub const FULL_RESOLUTION_SECONDS: f64 = 3_600.0;
/// Older rows keep one sample per series per this many seconds.
pub const DOWNSAMPLED_STEP_SECONDS: f64 = 60.0;

/// One GPU at one sampling round.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuRow {
    pub ts: f64,
    pub gpu: u32,
    pub utilization: Option<f64>,
    pub memory_used_mb: Option<u64>,
    pub memory_total_mb: Option<u64>,
    pub temperature_c: Option<u32>,
    pub power_w: Option<f64>,
}

/// Where an endpoint stood at its last sample.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub base_url: String,
    pub up: bool,
    pub last_sample_at: f64,
    pub error: Option<String>,
    /// The last sample that answered, if any is kept.
    pub last_up_at: Option<f64>,
    /// The first sample of the current run of failed ones, when the last one failed.
    pub down_since: Option<f64>,
}

const COLUMNS: &str = "id, ts, endpoint, base_url, model, up, error, start_time, prompt_tokens, \
    generation_tokens, requests_finished, requests_failed, preemptions, running, waiting, \
    kv_cache_usage, e2e_count, e2e_sum, ttft_count, itl_count, queue_count";

/// Writes one sampling round (every sample and every GPU) in one transaction.
pub fn insert(store: &Store, samples: &[Sample], gpus: &[GpuSnapshot], ts: f64) -> Result<()> {
    store.write(|tx| {
        let mut st = tx.prepare_cached(
            "INSERT INTO metric_samples (ts, endpoint, base_url, model, up, error, start_time, \
             prompt_tokens, generation_tokens, requests_finished, requests_failed, preemptions, \
             running, waiting, kv_cache_usage, e2e_count, e2e_sum, ttft_count, itl_count, \
             queue_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
             ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
        )?;
        let mut d =
            tx.prepare_cached("INSERT INTO metric_sample_details (id, detail) VALUES (?1, ?2)")?;
        for s in samples {
            let detail = s
                .detail
                .as_ref()
                .filter(|d| ***d != SampleDetail::default())
                .and_then(|d| serde_json::to_string(d).ok());
            st.execute(params![
                s.ts,
                s.endpoint,
                s.base_url,
                s.model,
                s.up,
                s.error,
                s.start_time,
                s.prompt_tokens,
                s.generation_tokens,
                s.requests_finished,
                s.requests_failed,
                s.preemptions,
                s.running,
                s.waiting,
                s.kv_cache_usage,
                s.e2e_count,
                s.e2e_sum,
                s.ttft_count,
                s.itl_count,
                s.queue_count,
            ])?;
            if let Some(detail) = detail {
                d.execute(params![tx.last_insert_rowid(), detail])?;
            }
        }
        let mut g = tx.prepare_cached(
            "INSERT OR REPLACE INTO gpu_samples (ts, gpu, utilization, memory_used_mb, \
             memory_total_mb, temperature_c, power_w) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for s in gpus {
            g.execute(params![
                ts,
                s.index,
                s.utilization_gpu,
                s.memory_used_mb.map(|v| v as i64),
                s.memory_total_mb.map(|v| v as i64),
                s.temperature_c,
                s.power_w,
            ])?;
        }
        Ok(())
    })
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<(i64, Sample)> {
    Ok((
        r.get(0)?,
        Sample {
            ts: r.get(1)?,
            endpoint: r.get(2)?,
            base_url: r.get(3)?,
            model: r.get(4)?,
            up: r.get(5)?,
            error: r.get(6)?,
            start_time: r.get(7)?,
            prompt_tokens: r.get(8)?,
            generation_tokens: r.get(9)?,
            requests_finished: r.get(10)?,
            requests_failed: r.get(11)?,
            preemptions: r.get(12)?,
            running: r.get(13)?,
            waiting: r.get(14)?,
            kv_cache_usage: r.get(15)?,
            e2e_count: r.get(16)?,
            e2e_sum: r.get(17)?,
            ttft_count: r.get(18)?,
            itl_count: r.get(19)?,
            queue_count: r.get(20)?,
            detail: None,
        },
    ))
}

/// Every sample with `since <= ts <= until`, grouped by series (endpoint, model) in time
/// order, with the detail blob read only for the rows the window arithmetic needs it
/// from ([`window::detail_rows`]).
pub fn read_window(store: &Store, since: f64, until: f64) -> Result<Vec<Vec<Sample>>> {
    read_window_picking(store, since, until, window::detail_rows)
}

/// Every sample with `since <= ts <= until`, grouped by series as [`read_window`] does,
/// with the detail blob of the rows `pick` names (indices into one series in time order,
/// failed samples included): a chart needs more of them than a window's figures.
pub fn read_window_picking(
    store: &Store,
    since: f64,
    until: f64,
    pick: impl Fn(&[&Sample]) -> Vec<usize>,
) -> Result<Vec<Vec<Sample>>> {
    store.read(|c| {
        // In time order along the ts index (no sort), grouped into series here.
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM metric_samples WHERE ts >= ?1 AND ts <= ?2 ORDER BY ts, id"
        ))?;
        // A fleet has a handful of series: finding a row's series by comparing its
        // borrowed names is cheaper than hashing owned keys, row after row.
        let mut series: Vec<Vec<(i64, Sample)>> = Vec::new();
        let mut rows = st.query(params![since, until])?;
        while let Some(r) = rows.next()? {
            let (id, s) = from_row(r)?;
            match series
                .iter_mut()
                .find(|ser| ser[0].1.endpoint == s.endpoint && ser[0].1.model == s.model)
            {
                Some(ser) => ser.push((id, s)),
                None => series.push(vec![(id, s)]),
            }
        }
        drop(rows);
        series.sort_by(|a, b| {
            (&a[0].1.endpoint, &a[0].1.model).cmp(&(&b[0].1.endpoint, &b[0].1.model))
        });
        let mut wanted: Vec<i64> = Vec::new();
        for ser in &series {
            let plain: Vec<&Sample> = ser.iter().map(|(_, s)| s).collect();
            wanted.extend(pick(&plain).into_iter().map(|i| ser[i].0));
        }
        let mut details = read_details(c, &wanted)?;
        Ok(series
            .into_iter()
            .map(|ser| {
                ser.into_iter()
                    .map(|(id, mut s)| {
                        s.detail = details.remove(&id).map(Box::new);
                        s
                    })
                    .collect()
            })
            .collect())
    })
}

fn read_details(c: &rusqlite::Connection, ids: &[i64]) -> Result<HashMap<i64, SampleDetail>> {
    let mut out = HashMap::with_capacity(ids.len());
    // In chunks: SQLite limits the number of bound parameters.
    for chunk in ids.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(",");
        let mut st = c.prepare(&format!(
            "SELECT id, detail FROM metric_sample_details WHERE id IN ({marks})"
        ))?;
        let rows = st.query_map(rusqlite::params_from_iter(chunk.iter()), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        for row in rows {
            let (id, text) = row?;
            // A blob that does not decode is treated as absent: its figures are null.
            let d = text
                .and_then(|t| serde_json::from_str::<SampleDetail>(&t).ok())
                .unwrap_or_default();
            out.insert(id, d);
        }
    }
    Ok(out)
}

/// The newest `limit` samples with `ts >= since`, every series together, newest first,
/// without their detail blobs (for saving them elsewhere; bounded by `limit`).
pub fn read_recent(store: &Store, since: f64, limit: usize) -> Result<Vec<Sample>> {
    store.read(|c| {
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM metric_samples WHERE ts >= ?1 ORDER BY ts DESC, id DESC LIMIT ?2"
        ))?;
        let rows = st.query_map(params![since, limit as i64], |r| Ok(from_row(r)?.1))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

/// The newest sample of every series with `ts >= since`, with its detail.
pub fn latest(store: &Store, since: f64) -> Result<Vec<Sample>> {
    store.read(|c| {
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLUMNS}, (SELECT detail FROM metric_sample_details d WHERE d.id = s.id) \
             FROM metric_samples s WHERE id IN \
             (SELECT max(id) FROM metric_samples WHERE ts >= ?1 GROUP BY endpoint, model) \
             ORDER BY endpoint, model"
        ))?;
        let rows = st.query_map([since], |r| {
            let (_, mut s) = from_row(r)?;
            let text: Option<String> = r.get(21)?;
            s.detail = text.and_then(|t| serde_json::from_str(&t).ok());
            Ok(s)
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

/// Where each endpoint stood at its newest sample.
pub fn endpoint_status(store: &Store) -> Result<Vec<EndpointStatus>> {
    store.read(|c| {
        // SQLite gives the bare columns of the row holding max(ts).
        let mut st = c.prepare_cached(
            "SELECT endpoint, base_url, up, error, max(ts) FROM metric_samples GROUP BY endpoint \
             ORDER BY endpoint",
        )?;
        let mut out = st
            .query_map([], |r| {
                Ok(EndpointStatus {
                    endpoint: r.get(0)?,
                    base_url: r.get(1)?,
                    up: r.get(2)?,
                    error: r.get(3)?,
                    last_sample_at: r.get(4)?,
                    last_up_at: None,
                    down_since: None,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut up =
            c.prepare_cached("SELECT max(ts) FROM metric_samples WHERE endpoint = ?1 AND up = 1")?;
        let mut since = c.prepare_cached(
            "SELECT min(ts) FROM metric_samples WHERE endpoint = ?1 AND up = 0 AND ts > ?2",
        )?;
        for e in &mut out {
            e.last_up_at = up.query_row([&e.endpoint], |r| r.get(0))?;
            if !e.up {
                e.down_since = since.query_row(
                    params![e.endpoint, e.last_up_at.unwrap_or(f64::NEG_INFINITY)],
                    |r| r.get(0),
                )?;
            }
        }
        Ok(out)
    })
}

/// GPU rows with `since <= ts <= until`, by GPU then time.
pub fn gpu_window(store: &Store, since: f64, until: f64) -> Result<Vec<GpuRow>> {
    store.read(|c| {
        let mut st = c.prepare_cached(
            "SELECT ts, gpu, utilization, memory_used_mb, memory_total_mb, temperature_c, power_w \
             FROM gpu_samples WHERE ts >= ?1 AND ts <= ?2 ORDER BY gpu, ts",
        )?;
        let rows = st.query_map(params![since, until], |r| {
            Ok(GpuRow {
                ts: r.get(0)?,
                gpu: r.get(1)?,
                utilization: r.get(2)?,
                memory_used_mb: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                memory_total_mb: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                temperature_c: r.get(5)?,
                power_w: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

/// Deletes what is past the retention and thins what is older than an hour; returns the
/// number of rows deleted.
pub fn maintain(store: &Store, now: f64, retention_seconds: f64) -> Result<usize> {
    let oldest = now - retention_seconds;
    let cutoff = now - FULL_RESOLUTION_SECONDS;
    store.write(|tx| {
        let mut n = tx.execute("DELETE FROM metric_samples WHERE ts < ?1", [oldest])?;
        n += tx.execute("DELETE FROM gpu_samples WHERE ts < ?1", [oldest])?;
        n += tx.execute(
            "DELETE FROM metric_samples WHERE ts < ?1 AND id NOT IN (
                 SELECT max(id) FROM metric_samples WHERE ts < ?1
                 GROUP BY endpoint, model, CAST(ts / ?2 AS INTEGER))",
            params![cutoff, DOWNSAMPLED_STEP_SECONDS],
        )?;
        n += tx.execute(
            "DELETE FROM gpu_samples WHERE ts < ?1 AND (gpu, ts) NOT IN (
                 SELECT gpu, max(ts) FROM gpu_samples WHERE ts < ?1
                 GROUP BY gpu, CAST(ts / ?2 AS INTEGER))",
            params![cutoff, DOWNSAMPLED_STEP_SECONDS],
        )?;
        Ok(n)
    })
}

/// How many metric samples the store holds for `endpoint` (all when `None`).
pub fn count(store: &Store, endpoint: Option<&str>) -> Result<u64> {
    store.read(|c| {
        let n: i64 = match endpoint {
            Some(e) => c.query_row(
                "SELECT count(*) FROM metric_samples WHERE endpoint = ?1",
                [e],
                |r| r.get(0),
            )?,
            None => c.query_row("SELECT count(*) FROM metric_samples", [], |r| r.get(0))?,
        };
        Ok(n as u64)
    })
}
