//! Saved serving states: payload format, compression, checksums, and their rows in the store.
//!
//! # Format (version [`FORMAT_VERSION`])
//!
//! A state is one row of `states` (what summaries need: counts, title, the models'
//! arguments, and in its `note` column a [`MetricsInfo`] when metrics were saved) and one **frame** per part in `state_parts`: `models` (models,
//! configurations, metrics) and `conversations` (Crush sessions). Parts are separate so
//! clear-state can drop one and keep the other. A frame is self-checking, so a part
//! copied out (export) or read back can be verified on its own:
//!
//! ```text
//! offset size  field
//! 0      4     magic "VMST"
//! 4      2     format version, u16 little-endian
//! 6      1     codec: 0 none, 1 zstd
//! 7      1     part: 1 models, 2 conversations
//! 8      8     raw length: the JSON payload's length before compression, u64 LE
//! 16     4     CRC-32C (Castagnoli) of bytes 0..16 and of the body, u32 LE
//! 20     ...   body: the payload as JSON, zstd-compressed (level 3, with zstd's own
//!              content checksum) when the codec says so
//! ```
//!
//! The payload is JSON: Crush's rows are JSON objects of arbitrary columns already, so a
//! binary encoding would only re-encode them, and zstd takes most of JSON's redundancy
//! away. It is serialized *into* the compressor ([`encode_part`]): the uncompressed
//! JSON never exists in memory as a whole, so saving holds the values plus the
//! compressed bytes. A conversation is not even held as values: [`encode_part_with`]
//! lets `CrushDb::export_to` stream Crush's rows into the compressor one at a time,
//! writing the same JSON as a serialized `Conversation` (so the format is one).
//!
//! Decoding checks, in order: the magic and length (`STATE_CORRUPTED`), the version
//! (`STATE_INCOMPATIBLE` when newer than this binary's), the CRC (`STATE_CORRUPTED`),
//! then decompression to exactly the raw length and JSON decoding (`STATE_CORRUPTED`).
//!
//! # Transactions
//!
//! [`insert`] writes the state row, its parts and the retention pruning of older states
//! of the session in one `BEGIN IMMEDIATE` transaction: a process killed at any moment
//! leaves the whole state or none. [`clear`] deletes in one transaction too, then
//! checkpoints the WAL and runs `incremental_vacuum` so the space freed is measured on
//! disk.
//!
//! # Retention
//!
//! Each session keeps its newest `[state] keep_per_session` states (default
//! [`crate::config::KEEP_PER_SESSION`], at least 1); older ones are deleted by the save (or import) that
//! makes them surplus.

use crate::error::{Error, Result};
use crate::launch_args::LaunchArgs;
use crate::store::Store;
use crate::store::rusqlite::{self, OptionalExtension, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The payload format this binary writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
/// The first bytes of every frame.
pub const MAGIC: [u8; 4] = *b"VMST";
/// The first bytes of an exported state file.
pub const EXPORT_MAGIC: [u8; 4] = *b"VMSX";
/// zstd level: 3 compresses Crush's JSON 5 to 8 times at a few hundred MB/s.
pub const ZSTD_LEVEL: i32 = 3;
/// Bytes before a frame's body.
pub const HEADER_LEN: usize = 20;
/// Largest raw payload accepted when decoding (a sanity bound against absurd headers).
pub const MAX_RAW_LEN: u64 = 4 << 30;

/// CRC-32C (Castagnoli, the iSCSI polynomial) of frames and export files, from the
/// `crc` crate, slicing 16 bytes per step.
pub mod crc32c {
    use crc::{CRC_32_ISCSI, Crc, Table};

    static CRC: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

    /// The CRC-32C of `data`.
    pub fn checksum(data: &[u8]) -> u32 {
        CRC.checksum(data)
    }

    /// The CRC-32C of the pieces one after another, as of their concatenation.
    pub fn of_pieces(pieces: &[&[u8]]) -> u32 {
        let mut digest = CRC.digest();
        for piece in pieces {
            digest.update(piece);
        }
        digest.finalize()
    }
}

/// Which part of a state a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartKind {
    /// Models, configurations (sampling defaults, config digest) and metrics.
    Models,
    /// Crush sessions with their messages and files.
    Conversations,
}

impl PartKind {
    /// The name stored in `state_parts.part`.
    pub fn as_str(self) -> &'static str {
        match self {
            PartKind::Models => "models",
            PartKind::Conversations => "conversations",
        }
    }

    fn code(self) -> u8 {
        match self {
            PartKind::Models => 1,
            PartKind::Conversations => 2,
        }
    }

    fn from_code(c: u8) -> Option<PartKind> {
        match c {
            1 => Some(PartKind::Models),
            2 => Some(PartKind::Conversations),
            _ => None,
        }
    }

    fn parse(s: &str) -> Option<PartKind> {
        match s {
            "models" => Some(PartKind::Models),
            "conversations" => Some(PartKind::Conversations),
            _ => None,
        }
    }
}

/// One encoded part, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPart {
    pub kind: PartKind,
    pub compressed: bool,
    /// The JSON payload's length before compression.
    pub raw_len: u64,
    /// The whole frame: header and body.
    pub frame: Vec<u8>,
}

impl EncodedPart {
    /// `zstd` or `none`.
    pub fn codec(&self) -> &'static str {
        if self.compressed { "zstd" } else { "none" }
    }
}

/// Counts what passes through, so the raw length is known without keeping the raw bytes.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The size of a job zstd hands its worker.
const ZSTD_JOB_SIZE: u32 = 1 << 20;

/// zstd worker threads for compressing a part: 1 where there are two cores or more, else
/// none (compression then runs on the calling thread).
fn compression_workers() -> u32 {
    static WORKERS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *WORKERS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        u32::from(cores >= 2)
    })
}

fn io_internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("encoding a state part: {e}"))
}

/// Serializes `value` as JSON straight into the frame (through zstd when `compress`).
pub fn encode_part<T: Serialize + ?Sized>(
    kind: PartKind,
    value: &T,
    compress: bool,
) -> Result<EncodedPart> {
    encode_part_with(kind, compress, |w| {
        serde_json::to_writer(w, value).map_err(io_internal)
    })
    .map(|(p, ())| p)
}

/// Like [`encode_part`], but the payload's JSON is written by `write` (for payloads
/// streamed from elsewhere, e.g. [`crate::crush_db::CrushDb::export_to`], so they never
/// exist in memory as values). `write` must write one JSON value; what it returns is
/// handed back beside the part.
pub fn encode_part_with<R>(
    kind: PartKind,
    compress: bool,
    write: impl FnOnce(&mut dyn Write) -> Result<R>,
) -> Result<(EncodedPart, R)> {
    let mut frame = Vec::with_capacity(64 * 1024);
    frame.extend_from_slice(&[0u8; HEADER_LEN]);
    let (mut frame, raw_len, out) = if compress {
        let mut enc = zstd::stream::Encoder::new(frame, ZSTD_LEVEL).map_err(io_internal)?;
        enc.include_checksum(true).map_err(io_internal)?;
        // One zstd worker where there is a second core: it compresses one 1 MiB job
        // while this thread reads and serializes the next (save-state speed,
        // PERFORMANCE.md). Small jobs keep the memory this costs to a few MiB.
        if compression_workers() > 0 {
            enc.multithread(compression_workers())
                .map_err(io_internal)?;
            enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))
                .map_err(io_internal)?;
        }
        // serde_json writes in small pieces; a buffer keeps zstd calls large.
        let mut w = Counting {
            inner: std::io::BufWriter::with_capacity(256 * 1024, enc),
            n: 0,
        };
        let out = write(&mut w)?;
        let n = w.n;
        let enc = w.inner.into_inner().map_err(|e| io_internal(e.error()))?;
        (enc.finish().map_err(io_internal)?, n, out)
    } else {
        let before = frame.len();
        let out = write(&mut frame)?;
        let n = (frame.len() - before) as u64;
        (frame, n, out)
    };
    frame.shrink_to_fit();
    frame[0..4].copy_from_slice(&MAGIC);
    frame[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    frame[6] = u8::from(compress);
    frame[7] = kind.code();
    frame[8..16].copy_from_slice(&raw_len.to_le_bytes());
    let crc = crc32c::of_pieces(&[&frame[0..16], &frame[HEADER_LEN..]]);
    frame[16..20].copy_from_slice(&crc.to_le_bytes());
    Ok((
        EncodedPart {
            kind,
            compressed: compress,
            raw_len,
            frame,
        },
        out,
    ))
}

/// A frame's header, read and checked (magic, version, checksum) but not decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub version: u16,
    pub compressed: bool,
    pub kind: PartKind,
    pub raw_len: u64,
}

/// Checks a frame's header and checksum. `state` names the state in errors.
pub fn check_frame(state: &str, frame: &[u8]) -> Result<FrameHeader> {
    let corrupted = |reason: String| Error::StateCorrupted {
        state: state.to_string(),
        reason,
    };
    if frame.len() < HEADER_LEN || frame[0..4] != MAGIC {
        return Err(corrupted(format!(
            "not a state frame ({} bytes, bad magic or too short)",
            frame.len()
        )));
    }
    let version = u16::from_le_bytes([frame[4], frame[5]]);
    if version > FORMAT_VERSION {
        return Err(Error::StateIncompatible {
            state: state.to_string(),
            reason: format!(
                "written with state format {version}; this vllm-mcp reads up to {FORMAT_VERSION}"
            ),
        });
    }
    let stored = u32::from_le_bytes([frame[16], frame[17], frame[18], frame[19]]);
    let crc = crc32c::of_pieces(&[&frame[0..16], &frame[HEADER_LEN..]]);
    if crc != stored {
        return Err(corrupted(format!(
            "checksum mismatch (CRC-32C {crc:08x}, stored {stored:08x})"
        )));
    }
    let compressed = match frame[6] {
        0 => false,
        1 => true,
        c => return Err(corrupted(format!("unknown codec {c}"))),
    };
    let kind = PartKind::from_code(frame[7])
        .ok_or_else(|| corrupted(format!("unknown part {}", frame[7])))?;
    let raw_len = u64::from_le_bytes(frame[8..16].try_into().unwrap_or_default());
    if raw_len > MAX_RAW_LEN {
        return Err(corrupted(format!("raw length {raw_len} is implausible")));
    }
    Ok(FrameHeader {
        version,
        compressed,
        kind,
        raw_len,
    })
}

/// Checks and decodes a frame into `T`. Errors are `STATE_CORRUPTED` or
/// `STATE_INCOMPATIBLE`; nothing is returned unless the whole part decoded.
pub fn decode_part<T: DeserializeOwned>(
    state: &str,
    expected: PartKind,
    frame: &[u8],
) -> Result<T> {
    let h = check_frame(state, frame)?;
    let corrupted = |reason: String| Error::StateCorrupted {
        state: state.to_string(),
        reason,
    };
    if h.kind != expected {
        return Err(corrupted(format!(
            "the frame holds part `{}`, not `{}`",
            h.kind.as_str(),
            expected.as_str()
        )));
    }
    let body = &frame[HEADER_LEN..];
    let raw: std::borrow::Cow<'_, [u8]> = if h.compressed {
        let out = zstd::bulk::decompress(body, h.raw_len as usize)
            .map_err(|e| corrupted(format!("zstd: {e}")))?;
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(body)
    };
    if raw.len() as u64 != h.raw_len {
        return Err(corrupted(format!(
            "decoded {} bytes, the header says {}",
            raw.len(),
            h.raw_len
        )));
    }
    serde_json::from_slice(&raw).map_err(|e| corrupted(format!("payload does not decode: {e}")))
}

/// A model as saved: enough to relaunch it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedModel {
    pub model_id: String,
    pub source: String,
    /// Its status when saved (`loaded`, `unloaded`, ...).
    pub status: String,
    pub args: LaunchArgs,
    /// The full command line it ran with, secrets removed.
    pub argv: Vec<String>,
    /// Names (never values) of the environment variables it got.
    pub env_names: Vec<String>,
    pub gpu_ids: Vec<u32>,
    /// Its sampling defaults (`set-model-config`).
    pub sampling: BTreeMap<String, Value>,
    /// `/version` of the server, when it answered.
    pub vllm_version: Option<String>,
    #[serde(default)]
    pub restart_policy: Option<crate::models::RestartPolicy>,
    #[serde(default)]
    pub idle_ttl_seconds: Option<f64>,
}

/// Configurations in a state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Configurations {
    /// Sampling defaults by model id.
    pub sampling: BTreeMap<String, BTreeMap<String, Value>>,
    /// SHA-256 (hex) of the effective configuration as TOML: tells whether it changed.
    pub config_digest: String,
}

/// The `models` part.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelsPart {
    pub models: Vec<SavedModel>,
    pub configurations: Configurations,
    /// Present only when metrics were asked for and the monitor has sampled: its recent
    /// samples ([`SavedMetrics`]). `null` otherwise (and in states saved before metrics
    /// were recorded); `metrics_note` says why.
    #[serde(default)]
    pub metrics: Option<SavedMetrics>,
    /// Why `metrics` is what it is.
    #[serde(default)]
    pub metrics_note: Option<String>,
}

/// The monitor's recent samples, as saved in the `models` part: every sample of the
/// window (newest [`SavedMetrics::limit`] at most), by series in time order. Only the
/// columns the monitor scans are kept (counters, gauges, histogram counts and the e2e
/// sum); the histogram buckets stay in the monitor's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedMetrics {
    /// The window asked for, in seconds back from `until`.
    pub window_seconds: f64,
    /// Unix seconds: the window is `until - window_seconds ..= until`.
    pub until: f64,
    /// The most samples saved; the oldest are left out beyond it (`truncated`).
    pub limit: u64,
    pub truncated: bool,
    /// Samples saved, every series together.
    pub samples: u64,
    /// Oldest and newest sample saved (Unix seconds); `None` when there is none.
    pub first_ts: Option<f64>,
    pub last_ts: Option<f64>,
    pub series: Vec<SavedSeries>,
}

/// One endpoint and served model's samples, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedSeries {
    pub endpoint: String,
    pub model: String,
    pub samples: Vec<crate::monitor::Sample>,
}

impl SavedMetrics {
    /// Groups samples (any order) into series by (endpoint, model), each in time order.
    pub fn from_samples(
        window_seconds: f64,
        until: f64,
        limit: u64,
        truncated: bool,
        samples: Vec<crate::monitor::Sample>,
    ) -> SavedMetrics {
        let n = samples.len() as u64;
        let first_ts = samples.iter().map(|s| s.ts).reduce(f64::min);
        let last_ts = samples.iter().map(|s| s.ts).reduce(f64::max);
        let mut by: BTreeMap<(String, String), Vec<crate::monitor::Sample>> = BTreeMap::new();
        for s in samples {
            by.entry((s.endpoint.clone(), s.model.clone()))
                .or_default()
                .push(s);
        }
        let series = by
            .into_iter()
            .map(|((endpoint, model), mut samples)| {
                samples.sort_by(|a, b| a.ts.total_cmp(&b.ts));
                SavedSeries {
                    endpoint,
                    model,
                    samples,
                }
            })
            .collect();
        SavedMetrics {
            window_seconds,
            until,
            limit,
            truncated,
            samples: n,
            first_ts,
            last_ts,
            series,
        }
    }

    /// What a state row keeps of it.
    pub fn info(&self, note: Option<String>) -> MetricsInfo {
        MetricsInfo {
            samples: self.samples,
            series: self.series.len() as u64,
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            truncated: self.truncated,
            note,
        }
    }
}

/// What a state's row says of its metrics (summaries read it without decoding the part).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsInfo {
    /// Samples saved (0 when the monitor had none in the window or never sampled).
    pub samples: u64,
    /// Series (endpoint, model) they belong to.
    pub series: u64,
    /// Oldest and newest sample saved, Unix seconds.
    pub first_ts: Option<f64>,
    pub last_ts: Option<f64>,
    /// The bound left older samples of the window out.
    #[serde(default)]
    pub truncated: bool,
    /// Why the metrics are what they are.
    pub note: Option<String>,
}

/// The `note` column: a plain note, or, when the state recorded metrics, this as JSON.
#[derive(Serialize, Deserialize)]
struct NoteColumn {
    #[serde(default)]
    text: Option<String>,
    metrics: MetricsInfo,
}

fn note_to_column(meta: &StateMeta) -> Option<String> {
    match &meta.metrics {
        None => meta.note.clone(),
        Some(m) => serde_json::to_string(&NoteColumn {
            text: meta.note.clone(),
            metrics: m.clone(),
        })
        .ok(),
    }
}

fn note_from_column(col: Option<String>) -> (Option<String>, Option<MetricsInfo>) {
    match col {
        Some(t) if t.starts_with('{') => match serde_json::from_str::<NoteColumn>(&t) {
            Ok(n) => (n.text, Some(n.metrics)),
            Err(_) => (Some(t), None),
        },
        other => (other, None),
    }
}

/// A model as a summary sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexedModel {
    pub source: String,
    pub status: String,
    pub args: LaunchArgs,
}

/// One part's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartInfo {
    pub part: PartKind,
    pub codec: String,
    pub raw_size: u64,
    pub stored_size: u64,
}

/// A state's row and its parts' sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateMeta {
    pub state_id: String,
    pub session_id: String,
    /// Unix seconds.
    pub created_at: f64,
    /// RFC 3339 UTC.
    pub timestamp: String,
    pub format_version: u16,
    pub vllm_versions: Vec<String>,
    pub title: Option<String>,
    pub model_count: u64,
    pub session_count: u64,
    pub message_count: u64,
    pub models_index: BTreeMap<String, IndexedModel>,
    pub note: Option<String>,
    /// What the state recorded of the monitor's samples; `None` when metrics were not
    /// asked for (stored in the row's `note` column, see [`MetricsInfo`]).
    #[serde(default)]
    pub metrics: Option<MetricsInfo>,
    pub parts: Vec<PartInfo>,
}

impl StateMeta {
    /// Bytes stored: every frame.
    pub fn size_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.stored_size).sum()
    }

    /// Bytes before compression.
    pub fn raw_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.raw_size).sum()
    }

    /// Raw size over stored size (1.0 for an empty state).
    pub fn compression_ratio(&self) -> f64 {
        let s = self.size_bytes();
        if s == 0 {
            1.0
        } else {
            self.raw_bytes() as f64 / s as f64
        }
    }

    pub fn has(&self, part: PartKind) -> bool {
        self.parts.iter().any(|p| p.part == part)
    }
}

/// Checks a session id: `current`, or 1 to 128 of letters, digits and `._-:`.
/// It names rows and appears in URIs and answers, so nothing else passes.
pub fn validate_session_id(field: &str, id: &str) -> Result<()> {
    validate_id(field, id, 128)
}

/// Checks a state id (same alphabet as session ids).
pub fn validate_state_id(field: &str, id: &str) -> Result<()> {
    validate_id(field, id, 128)
}

fn validate_id(field: &str, id: &str, max: usize) -> Result<()> {
    if id.is_empty() || id.len() > max {
        return Err(Error::invalid(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
    {
        return Err(Error::invalid(
            field,
            format!("character {c:?} is not allowed (letters, digits and ._-: only)"),
        ));
    }
    Ok(())
}

/// A new state id: time-ordered and unique across processes (`st-<ms>-<pid>-<n>`).
pub fn new_state_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let ms = (crate::time::unix_now() * 1000.0) as u64;
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("st-{ms:013}-{:x}-{n:x}", std::process::id())
}

const META_COLUMNS: &str = "state_id, session_id, created_at, created_text, format_version, vllm_versions, \
     title, model_count, session_count, message_count, models_index, note";

fn meta_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StateMeta> {
    let (note, metrics) = note_from_column(r.get(11)?);
    Ok(StateMeta {
        state_id: r.get(0)?,
        session_id: r.get(1)?,
        created_at: r.get(2)?,
        timestamp: r.get(3)?,
        format_version: r.get::<_, i64>(4)? as u16,
        vllm_versions: crate::store::json_column(r, 5)?,
        title: r.get(6)?,
        model_count: r.get::<_, i64>(7)? as u64,
        session_count: r.get::<_, i64>(8)? as u64,
        message_count: r.get::<_, i64>(9)? as u64,
        models_index: crate::store::json_column(r, 10)?,
        note,
        metrics,
        parts: Vec::new(),
    })
}

fn load_parts(c: &rusqlite::Connection, metas: &mut [StateMeta]) -> Result<()> {
    let mut st = c.prepare_cached(
        "SELECT part, codec, raw_size, stored_size FROM state_parts WHERE state_id = ?1 ORDER BY part",
    )?;
    for m in metas.iter_mut() {
        let rows = st.query_map([&m.state_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (part, codec, raw, stored) = row?;
            if let Some(part) = PartKind::parse(&part) {
                m.parts.push(PartInfo {
                    part,
                    codec,
                    raw_size: raw as u64,
                    stored_size: stored as u64,
                });
            }
        }
    }
    Ok(())
}

fn query_metas(
    c: &rusqlite::Connection,
    where_sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<StateMeta>> {
    let mut st = c.prepare(&format!("SELECT {META_COLUMNS} FROM states {where_sql}"))?;
    let mut metas = st
        .query_map(args, meta_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    load_parts(c, &mut metas)?;
    Ok(metas)
}

/// A JSON column's text; a value that does not serialise fails the save rather than
/// storing an empty stand-in.
fn to_json_text<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::Internal(format!("a state's index does not serialise: {e}")))
}

fn insert_rows(
    tx: &rusqlite::Transaction<'_>,
    meta: &StateMeta,
    parts: &[EncodedPart],
) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO states ({META_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        ),
        params![
            meta.state_id,
            meta.session_id,
            meta.created_at,
            meta.timestamp,
            i64::from(meta.format_version),
            to_json_text(&meta.vllm_versions)?,
            meta.title,
            meta.model_count as i64,
            meta.session_count as i64,
            meta.message_count as i64,
            to_json_text(&meta.models_index)?,
            note_to_column(meta),
        ],
    )?;
    let mut st = tx.prepare_cached(
        "INSERT INTO state_parts (state_id, part, codec, raw_size, stored_size, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for p in parts {
        st.execute(params![
            meta.state_id,
            p.kind.as_str(),
            p.codec(),
            p.raw_len as i64,
            p.frame.len() as i64,
            p.frame,
        ])?;
    }
    Ok(())
}

/// Fills a meta's `parts` from encoded parts.
pub fn part_infos(parts: &[EncodedPart]) -> Vec<PartInfo> {
    parts
        .iter()
        .map(|p| PartInfo {
            part: p.kind,
            codec: p.codec().into(),
            raw_size: p.raw_len,
            stored_size: p.frame.len() as u64,
        })
        .collect()
}

/// Stores a state and prunes its session to the newest `keep`, in one transaction.
/// Returns the ids of the states pruned.
pub fn insert(
    store: &Store,
    meta: &StateMeta,
    parts: &[EncodedPart],
    keep: usize,
) -> Result<Vec<String>> {
    store.write(|tx| {
        insert_rows(tx, meta, parts)?;
        let pruned: Vec<String> = {
            let mut st = tx.prepare(
                "SELECT state_id FROM states WHERE session_id = ?1 \
                 ORDER BY created_at DESC, state_id DESC LIMIT -1 OFFSET ?2",
            )?;
            st.query_map(params![meta.session_id, keep.max(1) as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for id in &pruned {
            tx.execute("DELETE FROM states WHERE state_id = ?1", [id])?;
        }
        Ok(pruned)
    })
}

/// One state's row, or `None`.
pub fn get(store: &Store, state_id: &str) -> Result<Option<StateMeta>> {
    store.read(|c| {
        Ok(query_metas(c, "WHERE state_id = ?1", &[&state_id])?
            .into_iter()
            .next())
    })
}

/// The newest state of a session.
pub fn newest(store: &Store, session_id: &str) -> Result<Option<StateMeta>> {
    store.read(|c| {
        Ok(query_metas(
            c,
            "WHERE session_id = ?1 ORDER BY created_at DESC, state_id DESC LIMIT 1",
            &[&session_id],
        )?
        .into_iter()
        .next())
    })
}

/// A session's states, newest first.
pub fn list_states(store: &Store, session_id: &str) -> Result<Vec<StateMeta>> {
    store.read(|c| {
        query_metas(
            c,
            "WHERE session_id = ?1 ORDER BY created_at DESC, state_id DESC",
            &[&session_id],
        )
    })
}

/// The newest `limit` states of every session together, newest first.
pub fn list_recent(store: &Store, limit: usize) -> Result<Vec<StateMeta>> {
    let limit = limit as i64;
    store.read(|c| {
        query_metas(
            c,
            "ORDER BY created_at DESC, state_id DESC LIMIT ?1",
            &[&limit],
        )
    })
}

/// A session that has saved states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session_id: String,
    pub state_count: u64,
    /// RFC 3339 UTC of the newest state.
    pub newest: String,
    pub newest_state_id: String,
    pub title: Option<String>,
    pub size_bytes: u64,
}

/// Every session with saved states, the most recently saved first.
pub fn list_sessions(store: &Store) -> Result<Vec<SessionSummary>> {
    store.read(|c| {
        let mut st = c.prepare(
            "SELECT s.session_id, COUNT(DISTINCT s.state_id), MAX(s.created_at),
                    (SELECT state_id FROM states n WHERE n.session_id = s.session_id ORDER BY created_at DESC, state_id DESC LIMIT 1),
                    (SELECT title FROM states n WHERE n.session_id = s.session_id AND title IS NOT NULL ORDER BY created_at DESC LIMIT 1),
                    (SELECT COALESCE(SUM(p.stored_size), 0) FROM state_parts p JOIN states q ON q.state_id = p.state_id WHERE q.session_id = s.session_id)
             FROM states s GROUP BY s.session_id ORDER BY MAX(s.created_at) DESC, s.session_id",
        )?;
        let rows = st
            .query_map([], |r| {
                let newest: f64 = r.get(2)?;
                Ok(SessionSummary {
                    session_id: r.get(0)?,
                    state_count: r.get::<_, i64>(1)? as u64,
                    newest: crate::time::format_rfc3339(newest as i64),
                    newest_state_id: r.get(3)?,
                    title: r.get(4)?,
                    size_bytes: r.get::<_, i64>(5)? as u64,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
}

/// The state a load or export names: `state_id` (which must belong to `session` when
/// one is given), else the session's newest.
pub fn find(store: &Store, session: Option<&str>, state_id: Option<&str>) -> Result<StateMeta> {
    match state_id {
        Some(id) => {
            let m = get(store, id)?.ok_or_else(|| Error::StateNotFound(id.to_string()))?;
            if let Some(sess) = session
                && m.session_id != sess
            {
                return Err(Error::StateNotFound(format!("{id} (of session {sess})")));
            }
            Ok(m)
        }
        None => {
            let sess = session.unwrap_or_default();
            newest(store, sess)?.ok_or_else(|| Error::StateNotFound(format!("session {sess}")))
        }
    }
}

/// A state read back: every part checked, the ones asked for decoded.
#[derive(Debug)]
pub struct Opened {
    pub meta: StateMeta,
    pub models: Option<ModelsPart>,
    pub conversation: Option<crate::crush_db::Conversation>,
}

/// Reads the state of `meta`, decoding the parts in `decode`: a newer format than this
/// build reads is `STATE_INCOMPATIBLE`; every part is checked, even one not decoded, so a
/// damaged state is reported as such (`STATE_CORRUPTED`) before anything is restored.
pub fn open(store: &Store, meta: StateMeta, decode: &[PartKind]) -> Result<Opened> {
    if meta.format_version > FORMAT_VERSION {
        return Err(Error::StateIncompatible {
            state: meta.state_id.clone(),
            reason: format!(
                "written with state format {}; this vllm-mcp reads up to {FORMAT_VERSION}",
                meta.format_version
            ),
        });
    }
    let mut opened = Opened {
        meta,
        models: None,
        conversation: None,
    };
    let id = opened.meta.state_id.clone();
    for part in opened.meta.parts.iter().map(|p| p.part) {
        let frame = read_frame(store, &id, part)?.ok_or_else(|| Error::StateCorrupted {
            state: id.clone(),
            reason: format!("part `{}` is listed but missing", part.as_str()),
        })?;
        match part {
            _ if !decode.contains(&part) => {
                check_frame(&id, &frame)?;
            }
            PartKind::Models => {
                opened.models = Some(decode_part(&id, part, &frame)?);
            }
            PartKind::Conversations => {
                opened.conversation = Some(decode_part(&id, part, &frame)?);
            }
        }
    }
    Ok(opened)
}

/// A part's frame as stored, or `None` when the state has no such part.
pub fn read_frame(store: &Store, state_id: &str, part: PartKind) -> Result<Option<Vec<u8>>> {
    store.read(|c| {
        Ok(c.query_row(
            "SELECT data FROM state_parts WHERE state_id = ?1 AND part = ?2",
            params![state_id, part.as_str()],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()?)
    })
}

/// Which states a clear applies to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    pub session_id: Option<String>,
    /// Only states saved before this (Unix seconds).
    pub before: Option<f64>,
}

/// What a clear did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClearReport {
    /// States deleted or trimmed.
    pub cleared_items: u64,
    pub states_deleted: Vec<String>,
    /// States that lost a part but keep another.
    pub states_trimmed: Vec<String>,
    pub parts_removed: u64,
    /// Stored bytes of the parts removed (the payload figure, also given on a dry run).
    pub payload_bytes: u64,
    /// Measured: database and WAL file sizes before minus after, after a checkpoint and
    /// `incremental_vacuum`. On a dry run, the payload bytes that would go.
    pub space_freed_bytes: u64,
}

/// The states a selection matches, oldest first.
pub fn select(store: &Store, sel: &Selection) -> Result<Vec<StateMeta>> {
    store.read(|c| {
        let session = sel.session_id.clone();
        let before = sel.before;
        query_metas(
            c,
            "WHERE (?1 IS NULL OR session_id = ?1) AND (?2 IS NULL OR created_at < ?2) ORDER BY created_at, state_id",
            &[&session, &before],
        )
    })
}

fn files_len(path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    len(path) + len(Path::new(&wal))
}

/// Checkpoints the store's WAL into the database file and truncates it, through a
/// connection of our own (the store's connection is idle between calls). Best effort:
/// another process reading holds back part of the WAL, which is then measured as is.
pub fn checkpoint(store: &Store) {
    if let Ok(c) = rusqlite::Connection::open(store.path()) {
        let _ = c.busy_timeout(std::time::Duration::from_secs(2));
        let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
}

/// Removes the chosen parts of the selected states (a state left with no part is
/// deleted) in one transaction, then gives the space back and measures it.
pub fn clear(
    store: &Store,
    sel: &Selection,
    parts: &[PartKind],
    dry_run: bool,
) -> Result<ClearReport> {
    let matched = select(store, sel)?;
    let mut report = ClearReport::default();
    let mut trims: Vec<(String, Vec<PartKind>)> = Vec::new();
    for m in &matched {
        let removed: Vec<&PartInfo> = m.parts.iter().filter(|p| parts.contains(&p.part)).collect();
        let kept = m.parts.len() - removed.len();
        if removed.is_empty() && kept > 0 {
            continue;
        }
        report.parts_removed += removed.len() as u64;
        report.payload_bytes += removed.iter().map(|p| p.stored_size).sum::<u64>();
        if kept == 0 {
            report.states_deleted.push(m.state_id.clone());
        } else {
            report.states_trimmed.push(m.state_id.clone());
            trims.push((m.state_id.clone(), removed.iter().map(|p| p.part).collect()));
        }
    }
    report.cleared_items = (report.states_deleted.len() + report.states_trimmed.len()) as u64;
    if dry_run || report.cleared_items == 0 {
        report.space_freed_bytes = if dry_run { report.payload_bytes } else { 0 };
        return Ok(report);
    }
    checkpoint(store);
    let before = files_len(store.path());
    store.write(|tx| -> Result<_> {
        let mut del = tx.prepare_cached("DELETE FROM states WHERE state_id = ?1")?;
        for id in &report.states_deleted {
            del.execute([id])?;
        }
        let mut trim =
            tx.prepare_cached("DELETE FROM state_parts WHERE state_id = ?1 AND part = ?2")?;
        for (id, kinds) in &trims {
            for k in kinds {
                trim.execute(params![id, k.as_str()])?;
            }
            if kinds.contains(&PartKind::Conversations) {
                tx.execute(
                    "DELETE FROM restored_conversations WHERE state_id = ?1",
                    [id],
                )?;
            }
        }
        Ok(())
    })?;
    store.incremental_vacuum()?;
    checkpoint(store);
    let after = files_len(store.path());
    report.space_freed_bytes = before.saturating_sub(after);
    Ok(report)
}

/// Records that the sessions of a state's conversation are readable from it.
pub fn mark_restored(store: &Store, state_id: &str, session_ids: &[String]) -> Result<()> {
    let now = crate::time::unix_now();
    store.write(|tx| {
        let mut st = tx.prepare_cached(
            "INSERT OR REPLACE INTO restored_conversations (session_id, state_id, restored_at) VALUES (?1, ?2, ?3)",
        )?;
        for s in session_ids {
            st.execute(params![s, state_id, now])?;
        }
        Ok(())
    })
}

/// The state a restored session is read from.
pub fn restored_from(store: &Store, session_id: &str) -> Result<Option<String>> {
    store.read(|c| {
        Ok(c.query_row(
            "SELECT state_id FROM restored_conversations WHERE session_id = ?1",
            [session_id],
            |r| r.get(0),
        )
        .optional()?)
    })
}

/// Restored sessions, the most recent first (at most `limit`).
pub fn restored_sessions(store: &Store, limit: usize) -> Result<Vec<(String, String)>> {
    store.read(|c| {
        let mut st = c.prepare(
            "SELECT session_id, state_id FROM restored_conversations ORDER BY restored_at DESC, session_id LIMIT ?1",
        )?;
        let rows = st
            .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
}

/// Writes a state to one portable file: `"VMSX"`, the format version (u16 LE), the
/// row as JSON (u32 LE length first), the part count (u8), each frame (u64 LE length
/// first), and a CRC-32C (u32 LE) of everything before it. Written to a temporary file
/// beside `path`, synced, then renamed: the file is whole or absent.
pub fn write_export(path: &Path, meta: &StateMeta, frames: &[Vec<u8>]) -> Result<u64> {
    let mut buf: Vec<u8> = Vec::new();
    buf.extend_from_slice(&EXPORT_MAGIC);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let head = serde_json::to_vec(meta).map_err(io_internal)?;
    buf.extend_from_slice(&(head.len() as u32).to_le_bytes());
    buf.extend_from_slice(&head);
    buf.push(frames.len() as u8);
    for f in frames {
        buf.extend_from_slice(&(f.len() as u64).to_le_bytes());
        buf.extend_from_slice(f);
    }
    let crc = crc32c::checksum(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let io = |e: std::io::Error| Error::Storage {
        message: format!("cannot write the export: {e}"),
        path: Some(path.to_path_buf()),
    };
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)?;
    Ok(buf.len() as u64)
}

/// Reads and fully checks an exported file: the whole-file CRC, then every frame
/// (header and checksum; decoding is the caller's, which knows the types).
pub fn read_export(path: &Path) -> Result<(StateMeta, Vec<Vec<u8>>)> {
    let label = path.display().to_string();
    let corrupted = |reason: String| Error::StateCorrupted {
        state: label.clone(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| Error::Storage {
        message: format!("cannot read the file: {e}"),
        path: Some(path.to_path_buf()),
    })?;
    if data.len() < 4 + 2 + 4 + 1 + 4 || data[0..4] != EXPORT_MAGIC {
        return Err(corrupted(
            "not an exported state (bad magic or too short)".into(),
        ));
    }
    let version = u16::from_le_bytes([data[4], data[5]]);
    if version > FORMAT_VERSION {
        return Err(Error::StateIncompatible {
            state: label.clone(),
            reason: format!(
                "exported with state format {version}; this vllm-mcp reads up to {FORMAT_VERSION}"
            ),
        });
    }
    let (body, tail) = data.split_at(data.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().unwrap_or_default());
    if crc32c::checksum(body) != stored {
        return Err(corrupted("file checksum mismatch".into()));
    }
    let mut at = 6usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
        let s = body
            .get(*at..*at + n)
            .ok_or_else(|| corrupted("truncated".into()))?;
        *at += n;
        Ok(s)
    };
    let head_len = u32::from_le_bytes(take(&mut at, 4)?.try_into().unwrap_or_default()) as usize;
    let meta: StateMeta = serde_json::from_slice(take(&mut at, head_len)?)
        .map_err(|e| corrupted(format!("header does not decode: {e}")))?;
    let n = take(&mut at, 1)?[0] as usize;
    let mut frames = Vec::with_capacity(n);
    for _ in 0..n {
        let len = u64::from_le_bytes(take(&mut at, 8)?.try_into().unwrap_or_default()) as usize;
        let f = take(&mut at, len)?.to_vec();
        check_frame(&meta.state_id, &f)?;
        frames.push(f);
    }
    if at != body.len() {
        return Err(corrupted("trailing bytes".into()));
    }
    Ok((meta, frames))
}

/// Stores an imported state: under its own id when free, else a new one. Returns the id.
pub fn import(
    store: &Store,
    mut meta: StateMeta,
    frames: Vec<Vec<u8>>,
    keep: usize,
) -> Result<StateMeta> {
    let mut parts = Vec::with_capacity(frames.len());
    for f in frames {
        let h = check_frame(&meta.state_id, &f)?;
        parts.push(EncodedPart {
            kind: h.kind,
            compressed: h.compressed,
            raw_len: h.raw_len,
            frame: f,
        });
    }
    if get(store, &meta.state_id)?.is_some() {
        meta.state_id = new_state_id();
    }
    meta.parts = part_infos(&parts);
    insert(store, &meta, &parts, keep)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_values() {
        // RFC 3720 B.4 test vectors.
        assert_eq!(crc32c::checksum(b""), 0);
        assert_eq!(crc32c::checksum(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c::checksum(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c::checksum(&[0xffu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c::checksum(&inc), 0x46DD_794E);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(
            crc32c::of_pieces(&[&data[..333], &data[333..]]),
            crc32c::checksum(&data)
        );
    }

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let v = serde_json::json!({"a": "x".repeat(10_000), "b": [1, 2, 3]});
        for compress in [false, true] {
            let p = encode_part(PartKind::Models, &v, compress).unwrap();
            assert_eq!(p.raw_len, serde_json::to_vec(&v).unwrap().len() as u64);
            let back: Value = decode_part("s", PartKind::Models, &p.frame).unwrap();
            assert_eq!(back, v);
            let e = decode_part::<Value>("s", PartKind::Conversations, &p.frame).unwrap_err();
            assert_eq!(e.code(), "STATE_CORRUPTED");
            for at in [0, 7, 9, 17, HEADER_LEN + 3, p.frame.len() - 1] {
                let mut bad = p.frame.clone();
                bad[at] ^= 0x10;
                let e = decode_part::<Value>("s", PartKind::Models, &bad).unwrap_err();
                assert_eq!(e.code(), "STATE_CORRUPTED", "flip at {at}: {e}");
            }
            let mut newer = p.frame.clone();
            newer[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
            let e = decode_part::<Value>("s", PartKind::Models, &newer).unwrap_err();
            assert_eq!(e.code(), "STATE_INCOMPATIBLE");
            let e = decode_part::<Value>("s", PartKind::Models, &p.frame[..10]).unwrap_err();
            assert_eq!(e.code(), "STATE_CORRUPTED");
        }
        let p = encode_part(PartKind::Models, &v, true).unwrap();
        assert!(p.frame.len() * 20 < p.raw_len as usize, "compressed");
    }

    #[test]
    fn ids() {
        for ok in ["current", "abc-123", "a.b_c:d", &"x".repeat(128)] {
            assert!(validate_session_id("session_id", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "x'; DROP TABLE states;--",
            "../etc",
            "a/b",
            &"x".repeat(129),
            "é",
        ] {
            let e = validate_session_id("session_id", bad).unwrap_err();
            assert_eq!(e.code(), "INVALID_ARGUMENT", "{bad}");
        }
        assert_ne!(new_state_id(), new_state_id());
    }

    fn meta(id: &str, session: &str, at: f64) -> StateMeta {
        StateMeta {
            state_id: id.into(),
            session_id: session.into(),
            created_at: at,
            timestamp: crate::time::format_rfc3339(at as i64),
            format_version: FORMAT_VERSION,
            vllm_versions: vec!["0.32.0".into()],
            title: Some("t".into()),
            model_count: 0,
            session_count: 1,
            message_count: 2,
            models_index: BTreeMap::new(),
            note: None,
            metrics: None,
            parts: Vec::new(),
        }
    }

    #[test]
    fn a_damaged_index_row_is_a_storage_error_not_an_empty_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_dir(dir.path()).unwrap();
        let parts = vec![encode_part(PartKind::Models, &ModelsPart::default(), true).unwrap()];
        let mut m = meta("s1", "a", 1000.0);
        m.parts = part_infos(&parts);
        insert(&store, &m, &parts, 3).unwrap();
        assert!(list_states(&store, "a").is_ok());
        for column in ["models_index", "vllm_versions"] {
            store
                .write(|tx| -> Result<_> {
                    tx.execute(&format!("UPDATE states SET {column} = '{{broken'"), [])?;
                    Ok(())
                })
                .unwrap();
            let e = list_states(&store, "a").unwrap_err();
            assert_eq!(e.code(), "STORAGE_ERROR", "{column}: {e}");
            store
                .write(|tx| -> Result<_> {
                    tx.execute(
                        "UPDATE states SET models_index = '{}', vllm_versions = '[]'",
                        [],
                    )?;
                    Ok(())
                })
                .unwrap();
        }
    }

    #[test]
    fn the_newest_states_of_every_session_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_dir(dir.path()).unwrap();
        let parts = vec![encode_part(PartKind::Models, &ModelsPart::default(), true).unwrap()];
        for (id, session, at) in [("s1", "a", 1.0), ("s2", "b", 3.0), ("s3", "a", 2.0)] {
            let mut m = meta(id, session, 1000.0 + at);
            m.parts = part_infos(&parts);
            insert(&store, &m, &parts, 20).unwrap();
        }
        let ids = |v: Vec<StateMeta>| v.into_iter().map(|m| m.state_id).collect::<Vec<_>>();
        assert_eq!(ids(list_recent(&store, 2).unwrap()), ["s2", "s3"]);
        assert_eq!(ids(list_recent(&store, 10).unwrap()), ["s2", "s3", "s1"]);
    }

    #[test]
    fn store_rows_retention_clear_and_export() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_dir(dir.path()).unwrap();
        let big = serde_json::json!({"x": "y".repeat(200_000)});
        let parts = vec![
            encode_part(PartKind::Models, &ModelsPart::default(), true).unwrap(),
            encode_part(PartKind::Conversations, &big, false).unwrap(),
        ];
        for i in 0..5 {
            let mut m = meta(&format!("s{i}"), "a", 1000.0 + f64::from(i));
            m.parts = part_infos(&parts);
            if i == 4 {
                m.metrics = Some(MetricsInfo {
                    samples: 3,
                    series: 1,
                    first_ts: Some(1.0),
                    last_ts: Some(2.0),
                    truncated: false,
                    note: Some("n".into()),
                });
            }
            let pruned = insert(&store, &m, &parts, 3).unwrap();
            assert_eq!(pruned.len(), usize::from(i >= 3), "{i}");
        }
        let listed = list_states(&store, "a").unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|m| m.state_id.as_str())
                .collect::<Vec<_>>(),
            ["s4", "s3", "s2"]
        );
        assert_eq!(listed[0].parts.len(), 2);
        // Metrics info goes through the note column and back; the plain note stays.
        assert_eq!(listed[0].metrics.as_ref().unwrap().samples, 3);
        assert_eq!(listed[0].note.as_deref(), None);
        assert_eq!(listed[1].metrics, None);
        assert_eq!(newest(&store, "a").unwrap().unwrap().state_id, "s4");
        assert_eq!(list_sessions(&store).unwrap()[0].state_count, 3);

        // Export and import round trip.
        let frames: Vec<Vec<u8>> = [PartKind::Conversations, PartKind::Models]
            .iter()
            .map(|k| read_frame(&store, "s4", *k).unwrap().unwrap())
            .collect();
        let file = dir.path().join("s4.vmsx");
        write_export(&file, &listed[0], &frames).unwrap();
        let (m, f) = read_export(&file).unwrap();
        assert_eq!(m.state_id, "s4");
        let imported = import(&store, m, f, 10).unwrap();
        assert_ne!(imported.state_id, "s4", "taken ids get a new one");
        let mut bytes = std::fs::read(&file).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(read_export(&file).unwrap_err().code(), "STATE_CORRUPTED");

        // Conversations only: states keep their models part.
        mark_restored(&store, "s3", &["sess".into()]).unwrap();
        let sel = Selection {
            session_id: Some("a".into()),
            before: None,
        };
        let dry = clear(&store, &sel, &[PartKind::Conversations], true).unwrap();
        assert_eq!(dry.cleared_items, 4);
        assert_eq!(list_states(&store, "a").unwrap()[0].parts.len(), 2);
        let r = clear(&store, &sel, &[PartKind::Conversations], false).unwrap();
        assert_eq!(r.states_trimmed.len(), 4);
        assert!(r.space_freed_bytes > 100_000, "{r:?}");
        assert_eq!(restored_from(&store, "sess").unwrap(), None);
        let r = clear(&store, &sel, &[PartKind::Models], false).unwrap();
        assert_eq!(r.states_deleted.len(), 4);
        assert!(list_states(&store, "a").unwrap().is_empty());
        assert!(store.integrity_check().unwrap());
    }
}

/// SHA-256 (hex) of the effective configuration serialized as TOML: two states with the
/// same digest ran under the same configuration. A configuration that does not
/// serialise is an internal error: hashing nothing would make any two such equal.
pub fn config_digest(config: &crate::config::Config) -> Result<String> {
    let text = toml::to_string(config)
        .map_err(|e| Error::Internal(format!("the configuration does not serialise: {e}")))?;
    Ok(sha256_hex(text.as_bytes()))
}

/// SHA-256 from ring, which the HTTPS stack already links.
fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod digest_tests {
    #[test]
    fn sha256_known_value() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
