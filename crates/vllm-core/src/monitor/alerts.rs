//! The alert engine: every rule of [`Config::alert_rules`] evaluated against the stored
//! samples after each sampling round, with its state in the store (migration 5).
//!
//! # Rules and targets
//! Model rules are evaluated per series (endpoint and served model), GPU rules per GPU,
//! `endpoint_down` per endpoint. Each rule's figure is computed over its
//! `window_seconds` of samples ending now (counter increases and histograms across
//! restarts through [`super::window`]):
//!
//! | rule | figure | condition |
//! |---|---|---|
//! | `gpu_temperature` | mean °C over the window | `>= threshold` |
//! | `gpu_memory` | mean used / total | `>= threshold` |
//! | `kv_cache_usage` | time-weighted mean usage | `>= threshold` |
//! | `error_rate` | failed / finished requests (finished > 0) | `>= threshold` |
//! | `p99_latency_ms` | p99 of the e2e latency histogram's increase | `> threshold` |
//! | `requests_waiting` | the least `num_requests_waiting` of the window | `> threshold` |
//! | `preemptions` | increase of `num_preemptions_total` | `> threshold` |
//! | `endpoint_down` | 1 when the newest scrape in the window failed | `> threshold` |
//!
//! # States
//! A condition that starts to hold makes a `pending` alert (`pending_since`); once it has
//! held `for_seconds` the alert is `firing` (`fired_at`), a transition recorded once: an
//! `alert_events` row, and the webhook. When it stops holding (or the rule is disabled,
//! or the target is no longer sampled) a firing alert is resolved: moved to
//! `alert_history` with `resolved_at`, and a `resolved` event; a pending one is dropped.
//! Only the holder of the sampler lease evaluates ([`after_round`]); every server
//! instance reads the alerts and tails the events from the store.

use super::history;
use super::sample::Sample;
use super::window::{Counter, Latency, SeriesWindow};
use crate::config::{AlertRule, AlertRuleName, Config, Severity};
use crate::error::Result;
use crate::store::Store;
use crate::store::rusqlite::{self, Row, params};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Resolved alerts kept in `alert_history` (oldest dropped first).
pub const HISTORY_KEPT: usize = 1_000;
/// Events older than this are pruned (every reader tails them within seconds).
pub const EVENTS_KEPT_SECONDS: f64 = 3_600.0;
/// Timeout of one webhook delivery.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// `generatorURL` of webhook alerts.
pub const GENERATOR_URL: &str = "vllm://alerts/active";

/// Target labels: `endpoint` and `model`, `endpoint`, or `gpu`.
pub type Labels = BTreeMap<String, String>;

/// Where an alert is in its life; also the kind of a transition ([`Event::kind`]: firing
/// or resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds, not yet for the rule's `for_seconds`.
    Pending,
    /// It has held long enough.
    Firing,
    /// It no longer holds (the history).
    Resolved,
}

impl AlertState {
    /// `pending`, `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    /// The state of that name.
    pub fn from_name(name: &str) -> Option<AlertState> {
        [
            AlertState::Pending,
            AlertState::Firing,
            AlertState::Resolved,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for AlertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert: pending, firing, or (in the history) resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub rule: AlertRuleName,
    pub target: Labels,
    pub state: AlertState,
    pub severity: Severity,
    /// When the condition started to hold.
    pub pending_since: f64,
    /// When it had held `for_seconds` (none while pending).
    pub fired_at: Option<f64>,
    pub resolved_at: Option<f64>,
    /// The rule's figure at the last evaluation (the last one before resolving).
    pub value: Option<f64>,
    pub threshold: f64,
    pub summary: String,
    pub last_evaluated: f64,
}

impl Alert {
    /// Since when the alert is in its state: fired_at when firing, else pending_since.
    pub fn since(&self) -> f64 {
        self.fired_at.unwrap_or(self.pending_since)
    }
}

/// A recorded transition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub ts: f64,
    /// `firing` or `resolved`.
    pub kind: AlertState,
    pub alert: Alert,
}

/// One condition holding now.
#[derive(Debug, Clone)]
struct Hit {
    rule: AlertRuleName,
    target: Labels,
    severity: Severity,
    value: f64,
    threshold: f64,
    summary: String,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn target_key(t: &Labels) -> String {
    serde_json::to_string(t).unwrap_or_default()
}

fn describe(t: &Labels) -> String {
    if let Some(g) = t.get("gpu") {
        return format!("GPU {g}");
    }
    match (t.get("endpoint"), t.get("model")) {
        (Some(e), Some(m)) => format!("model {m} on {e}"),
        (Some(e), None) => format!("endpoint {e}"),
        _ => target_key(t),
    }
}

fn fmt(v: f64) -> String {
    let r = (v * 1000.0).round() / 1000.0;
    format!("{r}")
}

/// The conditions holding at `now` for every enabled rule. The store's windows are read
/// once per window length, whatever the number of rules over them.
fn conditions(store: &Store, rules: &[AlertRule], now: f64) -> Result<Vec<Hit>> {
    let mut hits = Vec::new();
    let mut series_cache: HashMap<u64, Vec<Vec<Sample>>> = HashMap::new();
    let mut gpu_cache: HashMap<u64, Vec<history::GpuRow>> = HashMap::new();
    for rule in rules.iter().filter(|r| r.enabled) {
        let w = rule.window_seconds.max(0.0);
        let key = w.to_bits();
        match rule.name {
            AlertRuleName::GpuTemperature | AlertRuleName::GpuMemory => {
                if let std::collections::hash_map::Entry::Vacant(e) = gpu_cache.entry(key) {
                    e.insert(history::gpu_window(store, now - w, now)?);
                }
                hits.extend(gpu_hits(rule, &gpu_cache[&key]));
            }
            name => {
                if let std::collections::hash_map::Entry::Vacant(e) = series_cache.entry(key) {
                    e.insert(history::read_window(store, now - w, now)?);
                }
                let all = &series_cache[&key];
                if name == AlertRuleName::EndpointDown {
                    hits.extend(endpoint_down_hits(rule, all));
                } else {
                    hits.extend(all.iter().filter_map(|ser| series_hit(rule, ser)));
                }
            }
        }
    }
    Ok(hits)
}

/// A hit of `rule` on `target`.
fn hit(rule: &AlertRule, target: Labels, value: f64, summary: String) -> Hit {
    Hit {
        rule: rule.name,
        target,
        severity: rule.severity,
        value,
        threshold: rule.threshold,
        summary,
    }
}

/// `gpu_temperature` and `gpu_memory`: each GPU's mean over the window.
fn gpu_hits(rule: &AlertRule, rows: &[history::GpuRow]) -> Vec<Hit> {
    let temperature = rule.name == AlertRuleName::GpuTemperature;
    let mut by_gpu: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for r in rows {
        let v = if temperature {
            r.temperature_c.map(f64::from)
        } else {
            match (r.memory_used_mb, r.memory_total_mb) {
                (Some(u), Some(t)) if t > 0 => Some(u as f64 / t as f64),
                _ => None,
            }
        };
        if let Some(v) = v {
            by_gpu.entry(r.gpu).or_default().push(v);
        }
    }
    let mut hits = Vec::new();
    for (gpu, vals) in by_gpu {
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        if mean >= rule.threshold {
            let g = gpu.to_string();
            let what = if temperature {
                format!("temperature {} °C", fmt(mean))
            } else {
                format!("memory {}% used", fmt(mean * 100.0))
            };
            let summary = format!(
                "GPU {g} {what} (threshold {}) over the last {}s",
                fmt(rule.threshold),
                fmt(rule.window_seconds.max(0.0))
            );
            hits.push(hit(rule, labels(&[("gpu", &g)]), mean, summary));
        }
    }
    hits
}

/// `endpoint_down`: the newest sample of each endpoint, over its series, is down.
fn endpoint_down_hits(rule: &AlertRule, all: &[Vec<Sample>]) -> Vec<Hit> {
    let mut newest: BTreeMap<&str, &Sample> = BTreeMap::new();
    for s in all.iter().filter_map(|ser| ser.last()) {
        let e = newest.entry(s.endpoint.as_str()).or_insert(s);
        if s.ts > e.ts {
            *e = s;
        }
    }
    let mut hits = Vec::new();
    for (ep, s) in newest {
        if !s.up && 1.0 > rule.threshold {
            let summary = format!(
                "endpoint {ep} ({}) does not answer /metrics: {}",
                s.base_url,
                s.error.as_deref().unwrap_or("no answer")
            );
            hits.push(hit(rule, labels(&[("endpoint", ep)]), 1.0, summary));
        }
    }
    hits
}

/// A model series' rule (KV cache, error rate, p99 latency, waiting, preemptions) over
/// the window, when it holds.
fn series_hit(rule: &AlertRule, ser: &[Sample]) -> Option<Hit> {
    let first = ser.iter().find(|s| s.up && !s.model.is_empty())?;
    let t = labels(&[("endpoint", &first.endpoint), ("model", &first.model)]);
    let who = describe(&t);
    let sw = SeriesWindow::compute(ser);
    let ws = fmt(rule.window_seconds.max(0.0));
    let th = fmt(rule.threshold);
    let found = match rule.name {
        AlertRuleName::KvCacheUsage => sw
            .kv_cache_usage_mean
            .or(sw.kv_cache_usage_last)
            .filter(|v| *v >= rule.threshold)
            .map(|v| {
                (v, format!("{who}: KV-cache usage {}% (threshold {}%) over the last {ws}s", fmt(v * 100.0), fmt(rule.threshold * 100.0)))
            }),
        AlertRuleName::ErrorRate => match (sw.requests_failed, sw.requests_finished) {
            (Some(f), Some(n)) if n > 0.0 && f / n >= rule.threshold => {
                let v = f / n;
                Some((v, format!("{who}: error rate {}% ({} of {} requests failed, threshold {}%) over the last {ws}s", fmt(v * 100.0), fmt(f), fmt(n), fmt(rule.threshold * 100.0))))
            }
            _ => None,
        },
        AlertRuleName::P99LatencyMs => Latency::of(sw.e2e.as_ref())
            .p99_ms
            .filter(|v| *v > rule.threshold)
            .map(|v| {
                (v, format!("{who}: p99 end-to-end latency {} ms (threshold {th} ms) over the last {ws}s", fmt(v)))
            }),
        AlertRuleName::RequestsWaiting => ser
            .iter()
            .filter(|s| s.up)
            .map(|s| s.waiting)
            .collect::<Option<Vec<f64>>>()
            .filter(|v| !v.is_empty())
            .map(|v| v.into_iter().fold(f64::INFINITY, f64::min))
            .filter(|v| *v > rule.threshold)
            .map(|v| {
                (v, format!("{who}: at least {} requests waiting at every sample of the last {ws}s (threshold {th})", fmt(v)))
            }),
        AlertRuleName::Preemptions => sw
            .increase(Counter::Preemptions)
            .filter(|v| *v > rule.threshold)
            .map(|v| {
                (v, format!("{who}: {} preemptions in the last {ws}s (threshold {th})", fmt(v)))
            }),
        // Evaluated per GPU or per endpoint, not per series.
        AlertRuleName::GpuTemperature | AlertRuleName::GpuMemory | AlertRuleName::EndpointDown => {
            None
        }
    };
    found.map(|(v, summary)| hit(rule, t, v, summary))
}

const ALERT_COLUMNS: &str = "rule, target, state, severity, pending_since, fired_at, value, \
    threshold, summary, last_evaluated";

/// The labels of a stored target. Text that does not decode (a damaged row) is kept as
/// the one label `unreadable_target`, never an empty target: keyed by its own text, such
/// an alert is never merged with another, and the next evaluation resolves it.
fn target_of(text: &str) -> Labels {
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::warn!(target = text, error = %e, "an alert row's target does not decode");
        Labels::from([("unreadable_target".to_string(), text.to_string())])
    })
}

/// A text column holding one of the names `parse` knows. Any other text (a damaged row,
/// or a newer build's rule) is SQLite's conversion error naming the column, never a guess.
fn named<T>(r: &Row<'_>, i: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    parse(&text).ok_or_else(|| {
        let column = r.as_ref().column_name(i).unwrap_or("?");
        let why = format!("`{column}` holds `{text}`, which this build does not know");
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, why.into())
    })
}

fn alert_from_row(r: &Row<'_>) -> rusqlite::Result<Alert> {
    let target: String = r.get(1)?;
    Ok(Alert {
        rule: named(r, 0, AlertRuleName::from_name)?,
        target: target_of(&target),
        state: named(r, 2, AlertState::from_name)?,
        severity: named(r, 3, Severity::from_name)?,
        pending_since: r.get(4)?,
        fired_at: r.get(5)?,
        resolved_at: None,
        value: r.get(6)?,
        threshold: r.get(7)?,
        summary: r.get(8)?,
        last_evaluated: r.get(9)?,
    })
}

fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    ts: f64,
    kind: AlertState,
    a: &Alert,
) -> Result<i64> {
    let alert = serde_json::to_string(a).unwrap_or_default();
    tx.execute(
        "INSERT INTO alert_events (ts, kind, alert) VALUES (?1, ?2, ?3)",
        params![ts, kind.as_str(), alert],
    )?;
    Ok(tx.last_insert_rowid())
}

/// The alerts in the store by (rule, stored target text). The text is `target_key` of
/// the labels for every row this code wrote; a damaged one stays apart under its own.
/// A row this build cannot read (a rule or severity it does not know) is deleted, with a
/// warning, so the engine goes on; readers of the alerts see it as a storage error until
/// then.
fn current_alerts(
    tx: &rusqlite::Transaction<'_>,
) -> Result<HashMap<(AlertRuleName, String), Alert>> {
    let mut st = tx.prepare_cached(&format!("SELECT {ALERT_COLUMNS} FROM alerts"))?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            alert_from_row(r),
        ))
    })?;
    let mut current = HashMap::new();
    let mut unreadable = Vec::new();
    for row in rows {
        match row? {
            (_, stored_target, Ok(a)) => {
                current.insert((a.rule, stored_target), a);
            }
            (rule, stored_target, Err(e)) => {
                tracing::warn!(rule, error = %e, "an alert row this build cannot read is dropped");
                unreadable.push((rule, stored_target));
            }
        }
    }
    for (rule, target) in unreadable {
        tx.execute(
            "DELETE FROM alerts WHERE rule = ?1 AND target = ?2",
            params![rule, target],
        )?;
    }
    Ok(current)
}

/// One evaluation at `now`: computes every enabled rule's conditions from the stored
/// samples and records the transitions in one transaction. Returns the transitions
/// (firing and resolved events), oldest first.
pub fn evaluate(store: &Store, rules: &[AlertRule], now: f64) -> Result<Vec<Event>> {
    let hits = conditions(store, rules, now)?;
    let for_of: HashMap<AlertRuleName, f64> = rules
        .iter()
        .map(|r| (r.name, r.for_seconds.max(0.0)))
        .collect();
    store.write(|tx| {
        let mut current = current_alerts(tx)?;
        let mut events = Vec::new();
        for h in hits {
            let key = (h.rule, target_key(&h.target));
            let prev = current.remove(&key);
            let mut a = prev.unwrap_or_else(|| Alert {
                rule: h.rule,
                target: h.target.clone(),
                state: AlertState::Pending,
                severity: h.severity,
                pending_since: now,
                fired_at: None,
                resolved_at: None,
                value: None,
                threshold: h.threshold,
                summary: String::new(),
                last_evaluated: now,
            });
            a.value = Some(h.value);
            a.threshold = h.threshold;
            a.severity = h.severity;
            a.summary = h.summary;
            a.last_evaluated = now;
            let hold = for_of.get(&h.rule).copied().unwrap_or(0.0);
            if a.state == AlertState::Pending && now - a.pending_since >= hold {
                a.state = AlertState::Firing;
                a.fired_at = Some(now);
                let id = insert_event(tx, now, AlertState::Firing, &a)?;
                events.push(Event {
                    id,
                    ts: now,
                    kind: AlertState::Firing,
                    alert: a.clone(),
                });
            }
            tx.execute(
                &format!(
                    "INSERT OR REPLACE INTO alerts ({ALERT_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    a.rule.as_str(),
                    key.1,
                    a.state.as_str(),
                    a.severity.as_str(),
                    a.pending_since,
                    a.fired_at,
                    a.value,
                    a.threshold,
                    a.summary,
                    a.last_evaluated
                ],
            )?;
        }
        // What no longer holds: firing alerts resolve, pending ones are dropped.
        let mut gone: Vec<_> = current.into_iter().collect();
        gone.sort_by(|(a, _), (b, _)| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        for ((rule, target), mut a) in gone {
            tx.execute(
                "DELETE FROM alerts WHERE rule = ?1 AND target = ?2",
                params![rule.as_str(), target],
            )?;
            if a.state != AlertState::Firing {
                continue;
            }
            a.state = AlertState::Resolved;
            a.resolved_at = Some(now);
            a.last_evaluated = now;
            tx.execute(
                "INSERT INTO alert_history (rule, target, severity, pending_since, fired_at, \
                 resolved_at, value, threshold, summary) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    a.rule.as_str(),
                    target,
                    a.severity.as_str(),
                    a.pending_since,
                    a.fired_at,
                    now,
                    a.value,
                    a.threshold,
                    a.summary
                ],
            )?;
            let id = insert_event(tx, now, AlertState::Resolved, &a)?;
            events.push(Event {
                id,
                ts: now,
                kind: AlertState::Resolved,
                alert: a,
            });
        }
        if !events.is_empty() {
            tx.execute(
                "DELETE FROM alert_history WHERE id NOT IN \
                 (SELECT id FROM alert_history ORDER BY resolved_at DESC, id DESC LIMIT ?1)",
                [HISTORY_KEPT as i64],
            )?;
        }
        tx.execute(
            "DELETE FROM alert_events WHERE ts < ?1",
            [now - EVENTS_KEPT_SECONDS],
        )?;
        Ok(events)
    })
}

/// Pending and firing alerts: firing first, then by rule and target.
pub fn active(store: &Store) -> Result<Vec<Alert>> {
    store.read(|c| {
        let mut st = c.prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts \
             ORDER BY state = 'pending', rule, target"
        ))?;
        let rows = st.query_map([], alert_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

/// Resolved alerts, newest first, at most `limit`.
pub fn history(store: &Store, limit: usize) -> Result<Vec<Alert>> {
    store.read(|c| {
        let mut st = c.prepare_cached(
            "SELECT rule, target, severity, pending_since, fired_at, resolved_at, value, \
             threshold, summary FROM alert_history ORDER BY resolved_at DESC, id DESC LIMIT ?1",
        )?;
        let rows = st.query_map([limit as i64], |r| {
            let target: String = r.get(1)?;
            let resolved_at: f64 = r.get(5)?;
            Ok(Alert {
                rule: named(r, 0, AlertRuleName::from_name)?,
                target: target_of(&target),
                state: AlertState::Resolved,
                severity: named(r, 2, Severity::from_name)?,
                pending_since: r.get(3)?,
                fired_at: r.get(4)?,
                resolved_at: Some(resolved_at),
                value: r.get(6)?,
                threshold: r.get(7)?,
                summary: r.get(8)?,
                last_evaluated: resolved_at,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

/// The newest event's id (0 with none): where a reader that just started tails from.
pub fn last_event_id(store: &Store) -> Result<i64> {
    store.read(|c| {
        Ok(
            c.query_row("SELECT coalesce(max(id), 0) FROM alert_events", [], |r| {
                r.get(0)
            })?,
        )
    })
}

/// Events with an id above `after`, oldest first.
pub fn events_after(store: &Store, after: i64) -> Result<Vec<Event>> {
    store.read(|c| {
        let mut st = c.prepare_cached(
            "SELECT id, ts, kind, alert FROM alert_events WHERE id > ?1 ORDER BY id",
        )?;
        let rows = st.query_map([after], |r| {
            let text: String = r.get(3)?;
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, text))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, ts, kind, text): (i64, f64, String, String) = row?;
            // An event this build cannot read (a newer build's) is not one to report.
            let (Some(alert), Some(kind)) = (parse_alert(&text), AlertState::from_name(&kind))
            else {
                continue;
            };
            out.push(Event {
                id,
                ts,
                kind,
                alert,
            });
        }
        Ok(out)
    })
}

fn parse_alert(text: &str) -> Option<Alert> {
    let v: Value = serde_json::from_str(text).ok()?;
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Some(Alert {
        rule: AlertRuleName::from_name(&s("rule")?)?,
        target: serde_json::from_value(v.get("target")?.clone()).ok()?,
        state: AlertState::from_name(&s("state")?)?,
        severity: Severity::from_name(&s("severity")?)?,
        pending_since: f("pending_since")?,
        fired_at: f("fired_at"),
        resolved_at: f("resolved_at"),
        value: f("value"),
        threshold: f("threshold")?,
        summary: s("summary")?,
        last_evaluated: f("last_evaluated")?,
    })
}

/// An alert as the `vllm://alerts/*` resources (and the front door's page) show it.
pub fn to_json(a: &Alert) -> Value {
    let round2 = |v: f64| (v * 100.0).round() / 100.0;
    json!({
        "rule": a.rule,
        "severity": a.severity,
        "state": a.state,
        "target": a.target,
        "since": rfc3339_ms(a.since()),
        "pending_since": rfc3339_ms(a.pending_since),
        "fired_at": a.fired_at.map(rfc3339_ms),
        "resolved_at": a.resolved_at.map(rfc3339_ms),
        "value": a.value.map(round2),
        "threshold": a.threshold,
        "summary": a.summary,
        "last_evaluated": rfc3339_ms(a.last_evaluated),
    })
}

/// `vllm://alerts/active`: the firing alerts, the pending ones, and the rules in force.
pub fn active_json(store: &Store, config: &Config) -> Result<Value> {
    let all = active(store)?;
    let (firing, pending): (Vec<&Alert>, Vec<&Alert>) =
        all.iter().partition(|a| a.state == AlertState::Firing);
    let rules: Vec<Value> = config
        .alert_rules()
        .into_iter()
        .map(|r| {
            json!({
                "rule": r.name,
                "enabled": r.enabled,
                "threshold": r.threshold,
                "for_seconds": r.for_seconds,
                "window_seconds": r.window_seconds,
                "severity": r.severity,
            })
        })
        .collect();
    Ok(json!({
        "timestamp": crate::time::now_rfc3339(),
        "alerts": firing.into_iter().map(to_json).collect::<Vec<_>>(),
        "pending": pending.into_iter().map(to_json).collect::<Vec<_>>(),
        "rules": rules,
    }))
}

/// `vllm://alerts/history`: resolved alerts, newest first, at most `limit`.
pub fn history_json(store: &Store, limit: usize) -> Result<Value> {
    let h = history(store, limit)?;
    Ok(json!({
        "timestamp": crate::time::now_rfc3339(),
        "limit": limit,
        "alerts": h.iter().map(to_json).collect::<Vec<_>>(),
    }))
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339_ms(t: f64) -> String {
    let secs = t.floor();
    let ms = ((t - secs) * 1000.0).round().min(999.0) as u32;
    let base = crate::time::format_rfc3339(secs as i64);
    match base.strip_suffix('Z') {
        Some(b) => format!("{b}.{ms:03}Z"),
        None => base,
    }
}

/// The Alertmanager-compatible payload (the `POST /api/v2/alerts` body) of transitions.
pub fn alertmanager_payload(events: &[Event]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| {
                let a = &e.alert;
                let mut labels = serde_json::Map::new();
                labels.insert("alertname".into(), json!(a.rule));
                labels.insert("severity".into(), json!(a.severity));
                for (k, v) in &a.target {
                    labels.insert(k.clone(), json!(v));
                }
                let mut o = json!({
                    "labels": labels,
                    "annotations": {
                        "summary": a.summary,
                        "description": format!(
                            "{} {} on {}: value {}, threshold {}",
                            a.rule,
                            e.kind,
                            describe(&a.target),
                            a.value.map(fmt).unwrap_or_else(|| "none".into()),
                            fmt(a.threshold)
                        ),
                    },
                    "startsAt": rfc3339_ms(a.since()),
                    "generatorURL": GENERATOR_URL,
                });
                if let Some(r) = a.resolved_at {
                    o["endsAt"] = json!(rfc3339_ms(r));
                }
                o
            })
            .collect(),
    )
}

/// POSTs the payload of `events` to `url` with [`WEBHOOK_TIMEOUT`].
pub async fn post_webhook(url: &str, events: &[Event]) -> Result<()> {
    let body = serde_json::to_vec(&alertmanager_payload(events))
        .map_err(|e| crate::Error::Internal(e.to_string()))?;
    let client = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .build()
        .map_err(|e| crate::Error::Internal(format!("webhook client: {e}")))?;
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| crate::Error::Internal(format!("webhook {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(crate::Error::Internal(format!(
            "webhook {url} answered {}",
            resp.status()
        )));
    }
    Ok(())
}

/// After a sampling round, in the sampler's lease holder: evaluates every rule and
/// hands the transitions to the webhook on a task of their own (sampling never waits
/// for it). Failures are logged.
pub async fn after_round(config: &Arc<Config>, store: &Store) {
    let rules = config.alert_rules();
    let st = store.clone();
    let now = crate::time::unix_now();
    let events = match tokio::task::spawn_blocking(move || evaluate(&st, &rules, now)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "alert evaluation failed");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "alert evaluation task failed");
            return;
        }
    };
    for e in &events {
        tracing::info!(rule = %e.alert.rule, kind = %e.kind, summary = %e.alert.summary, "alert");
    }
    if let (Some(url), false) = (config.monitor.webhook_url.clone(), events.is_empty()) {
        tokio::spawn(async move {
            if let Err(e) = post_webhook(&url, &events).await {
                tracing::warn!(error = %e, "alert webhook failed");
            }
        });
    }
}
