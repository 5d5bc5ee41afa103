//! The alert engine on hand-written sample series in a temporary store: each rule goes
//! pending when its condition starts to hold, fires only after `for_seconds`, resolves
//! once the condition is gone from its window, and every transition is recorded once.

use vllm_core::config::{AlertRule, Config};
use vllm_core::gpu::{FakeGpus, GpuSnapshot};
use vllm_core::monitor::alerts::{self, Event};
use vllm_core::monitor::sample::{HistData, SampleDetail};
use vllm_core::monitor::{Sample, history};
use vllm_core::store::Store;

const T0: f64 = 1_700_000_000.0;
const FOR: f64 = 3.0;
const WINDOW: f64 = 2.0;
/// The condition holds for samples with `BAD_FROM <= t < BAD_TO` (seconds after T0).
const BAD_FROM: f64 = 5.0;
const BAD_TO: f64 = 15.0;

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("vllm-mcp.db")).unwrap();
    (dir, store)
}

/// Only `name` enabled, with short `for` and window.
fn rules(name: &str) -> Vec<AlertRule> {
    AlertRule::defaults()
        .into_iter()
        .map(|mut r| {
            r.enabled = r.name.as_str() == name;
            r.for_seconds = FOR;
            r.window_seconds = WINDOW;
            r
        })
        .collect()
}

fn up(ts: f64) -> Sample {
    Sample {
        ts,
        endpoint: "ep".into(),
        base_url: "http://127.0.0.1:1".into(),
        model: "m".into(),
        up: true,
        start_time: Some(T0 - 100.0),
        requests_finished: Some(0.0),
        requests_failed: Some(0.0),
        preemptions: Some(0.0),
        running: Some(0.0),
        waiting: Some(0.0),
        kv_cache_usage: Some(0.1),
        ..Sample::default()
    }
}

fn gpu(temp: u32, used_mb: u64) -> GpuSnapshot {
    let mut g = FakeGpus::idle(0, 10_000);
    g.temperature_c = Some(temp);
    g.memory_used_mb = Some(used_mb);
    g
}

/// What happened: (seconds after T0 when first seen pending, events as (t, kind)).
struct Run {
    pending_at: Option<f64>,
    events: Vec<(f64, String)>,
    all: Vec<Event>,
}

/// Feeds one round a second for 25 s (`make(t, bad)` gives the round's samples and GPUs)
/// and evaluates after each.
fn run(
    store: &Store,
    rules: &[AlertRule],
    make: impl Fn(f64, bool) -> (Vec<Sample>, Vec<GpuSnapshot>),
) -> Run {
    let mut out = Run {
        pending_at: None,
        events: Vec::new(),
        all: Vec::new(),
    };
    for i in 0..25 {
        let t = i as f64;
        let (samples, gpus) = make(T0 + t, (BAD_FROM..BAD_TO).contains(&t));
        history::insert(store, &samples, &gpus, T0 + t).unwrap();
        let ev = alerts::evaluate(store, rules, T0 + t).unwrap();
        for e in &ev {
            out.events.push((t, e.kind.as_str().to_string()));
        }
        out.all.extend(ev);
        let act = alerts::active(store).unwrap();
        if out.pending_at.is_none() && act.iter().any(|a| a.state.as_str() == "pending") {
            out.pending_at = Some(t);
        }
    }
    out
}

/// The common checks: pending first, firing exactly `FOR` later, resolved within a
/// window after the condition ended, one transition of each kind.
fn check(r: &Run, rule: &str) {
    let p = r
        .pending_at
        .unwrap_or_else(|| panic!("{rule}: never pending"));
    assert!(
        (BAD_FROM..=BAD_FROM + WINDOW + 1.0).contains(&p),
        "{rule}: pending at {p}"
    );
    assert_eq!(r.events.len(), 2, "{rule}: {:?}", r.events);
    let (fired, kind) = &r.events[0];
    assert_eq!(kind, "firing", "{rule}");
    assert_eq!(*fired, p + FOR, "{rule}: fired at {fired}, pending at {p}");
    let (resolved, kind) = &r.events[1];
    assert_eq!(kind, "resolved", "{rule}");
    assert!(
        (BAD_TO..=BAD_TO + WINDOW + 1.0).contains(resolved),
        "{rule}: resolved at {resolved}"
    );
    for e in &r.all {
        assert_eq!(e.alert.rule.as_str(), rule);
    }
    let fired_alert = &r.all[0].alert;
    assert_eq!(fired_alert.state.as_str(), "firing");
    assert_eq!(fired_alert.fired_at, Some(T0 + fired));
    assert_eq!(fired_alert.pending_since, T0 + p);
    assert!(!fired_alert.summary.is_empty());
    let res = &r.all[1].alert;
    assert_eq!(res.resolved_at, Some(T0 + resolved));
}

fn finish(store: &Store, rule: &str) {
    assert!(alerts::active(store).unwrap().is_empty());
    let h = alerts::history(store, 10).unwrap();
    assert_eq!(h.len(), 1, "{rule}: {h:?}");
    assert_eq!(h[0].rule.as_str(), rule);
    assert_eq!(h[0].state.as_str(), "resolved");
    // Every instance tails the same two events.
    let ev = alerts::events_after(store, 0).unwrap();
    assert_eq!(
        ev.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["firing", "resolved"]
    );
    assert_eq!(alerts::last_event_id(store).unwrap(), ev[1].id);
    assert!(alerts::events_after(store, ev[1].id).unwrap().is_empty());
}

fn scenario(rule: &str, make: impl Fn(f64, bool) -> (Vec<Sample>, Vec<GpuSnapshot>)) -> Run {
    let (_dir, store) = temp_store();
    let r = run(&store, &rules(rule), make);
    check(&r, rule);
    finish(&store, rule);
    r
}

#[test]
fn gpu_temperature_fires_after_for_seconds_and_resolves() {
    let r = scenario("gpu_temperature", |_, bad| {
        (vec![], vec![gpu(if bad { 90 } else { 60 }, 1_000)])
    });
    let a = &r.all[0].alert;
    assert_eq!(a.target.get("gpu").map(String::as_str), Some("0"));
    assert_eq!(a.threshold, 80.0);
    assert!(a.value.unwrap() >= 80.0);
}

#[test]
fn gpu_memory_fires_and_resolves() {
    let r = scenario("gpu_memory", |_, bad| {
        (vec![], vec![gpu(50, if bad { 9_900 } else { 5_000 })])
    });
    assert!(r.all[0].alert.value.unwrap() >= 0.95);
}

#[test]
fn kv_cache_usage_fires_and_resolves() {
    let r = scenario("kv_cache_usage", |t, bad| {
        let mut s = up(t);
        s.kv_cache_usage = Some(if bad { 0.97 } else { 0.2 });
        (vec![s], vec![])
    });
    let a = &r.all[0].alert;
    assert_eq!(a.target.get("endpoint").map(String::as_str), Some("ep"));
    assert_eq!(a.target.get("model").map(String::as_str), Some("m"));
}

#[test]
fn error_rate_is_computed_from_window_deltas() {
    // Before the trouble the counters are already high (failures long ago): only the
    // increase inside the window counts.
    let r = scenario("error_rate", |t, bad| {
        let i = t - T0;
        let mut s = up(t);
        s.requests_finished = Some(1_000.0 + 10.0 * i);
        let failed_before = 50.0;
        let failed =
            failed_before + (i.min(BAD_TO) - BAD_FROM).max(0.0) + if bad { 1.0 } else { 0.0 };
        s.requests_failed = Some(failed);
        (vec![s], vec![])
    });
    let v = r.all[0].alert.value.unwrap();
    assert!((0.01..=0.2).contains(&v), "{v}");
}

fn e2e(fast: f64, slow: f64) -> SampleDetail {
    SampleDetail {
        e2e: Some(HistData {
            le: vec![0.5, 60.0],
            c: vec![fast, fast + slow],
            inf: fast + slow,
            sum: Some(fast * 0.1 + slow * 50.0),
            count: fast + slow,
        }),
        ..SampleDetail::default()
    }
}

#[test]
fn p99_latency_comes_from_the_histogram_increase() {
    let r = scenario("p99_latency_ms", |t, _| {
        let i = t - T0;
        // 10 fast requests a second; 10 slow ones a second while bad.
        let slow = 10.0 * ((i.min(BAD_TO - 1.0) - BAD_FROM + 1.0).max(0.0));
        let mut s = up(t);
        let d = e2e(10.0 * i, slow);
        s.e2e_count = d.e2e.as_ref().map(|h| h.count);
        s.detail = Some(Box::new(d));
        (vec![s], vec![])
    });
    assert!(r.all[0].alert.value.unwrap() > 30_000.0);
}

#[test]
fn requests_waiting_needs_every_sample_of_the_window() {
    scenario("requests_waiting", |t, bad| {
        let mut s = up(t);
        s.waiting = Some(if bad { 3.0 } else { 0.0 });
        (vec![s], vec![])
    });
}

#[test]
fn rising_preemptions_fire_and_resolve() {
    scenario("preemptions", |t, _| {
        let i = t - T0;
        let mut s = up(t);
        s.preemptions = Some(7.0 + (i.min(BAD_TO - 1.0) - BAD_FROM + 1.0).max(0.0));
        (vec![s], vec![])
    });
}

#[test]
fn endpoint_down_fires_and_resolves() {
    let r = scenario("endpoint_down", |t, bad| {
        let s = if bad {
            Sample::down(t, "ep", "http://127.0.0.1:1", "BACKEND_UNREACHABLE")
        } else {
            up(t)
        };
        (vec![s], vec![])
    });
    let a = &r.all[0].alert;
    assert_eq!(a.target.get("endpoint").map(String::as_str), Some("ep"));
    assert!(a.summary.contains("BACKEND_UNREACHABLE"), "{}", a.summary);
}

#[test]
fn a_condition_shorter_than_for_seconds_never_fires() {
    let (_dir, store) = temp_store();
    let rs = rules("gpu_temperature");
    for i in 0..12 {
        let t = i as f64;
        let hot = (3.0..5.0).contains(&t);
        history::insert(&store, &[], &[gpu(if hot { 95 } else { 40 }, 0)], T0 + t).unwrap();
        assert!(
            alerts::evaluate(&store, &rs, T0 + t).unwrap().is_empty(),
            "at {t}"
        );
    }
    assert!(alerts::active(&store).unwrap().is_empty());
    assert!(alerts::history(&store, 10).unwrap().is_empty());
}

#[test]
fn disabled_rules_do_not_fire_and_state_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vllm-mcp.db");
    let store = Store::open(&path).unwrap();
    let config = Config::from_toml(
        "[monitor.alerts.gpu_temperature]\nenabled = false\n\
         [monitor.alerts.gpu_memory]\nfor_seconds = 0\nwindow_seconds = 1\n",
        None,
        &|_| None,
    )
    .unwrap();
    let rs = config.alert_rules();
    history::insert(&store, &[], &[gpu(99, 9_999)], T0).unwrap();
    let ev = alerts::evaluate(&store, &rs, T0).unwrap();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].alert.rule.as_str(), "gpu_memory");
    assert_eq!(ev[0].kind.as_str(), "firing");
    drop(store);
    // A restart keeps the alert; evaluating again records no second transition.
    let store = Store::open(&path).unwrap();
    let act = alerts::active(&store).unwrap();
    assert_eq!(act.len(), 1);
    assert_eq!(act[0].state.as_str(), "firing");
    history::insert(&store, &[], &[gpu(99, 9_999)], T0 + 0.5).unwrap();
    assert!(alerts::evaluate(&store, &rs, T0 + 0.5).unwrap().is_empty());
    assert_eq!(alerts::active(&store).unwrap()[0].last_evaluated, T0 + 0.5);
}

#[test]
fn the_webhook_payload_is_alertmanager_shaped() {
    let (_dir, store) = temp_store();
    let mut rs = rules("gpu_temperature");
    rs.iter_mut().for_each(|r| r.for_seconds = 0.0);
    history::insert(&store, &[], &[gpu(99, 0)], T0).unwrap();
    let fired = alerts::evaluate(&store, &rs, T0).unwrap();
    history::insert(&store, &[], &[gpu(20, 0)], T0 + 10.0).unwrap();
    let resolved = alerts::evaluate(&store, &rs, T0 + 10.0).unwrap();
    let p = alerts::alertmanager_payload(&fired);
    let a = &p[0];
    assert_eq!(a["labels"]["alertname"], "gpu_temperature");
    assert_eq!(a["labels"]["severity"], "warning");
    assert_eq!(a["labels"]["gpu"], "0");
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("GPU 0")
    );
    assert!(a["annotations"]["description"].is_string());
    assert!(a["startsAt"].as_str().unwrap().ends_with('Z'));
    assert!(a.get("endsAt").is_none());
    assert_eq!(a["generatorURL"], alerts::GENERATOR_URL);
    let p = alerts::alertmanager_payload(&resolved);
    assert_eq!(p[0]["labels"]["alertname"], "gpu_temperature");
    assert!(p[0]["endsAt"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn damaged_alert_targets_stay_apart_and_resolve() {
    let (_dir, store) = temp_store();
    let rs = rules("gpu_temperature");
    let mut t = T0;
    for _ in 0..5 {
        history::insert(&store, &[], &[gpu(95, 0)], t).unwrap();
        alerts::evaluate(&store, &rs, t).unwrap();
        t += 1.0;
    }
    let firing = alerts::active(&store).unwrap();
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0].state.as_str(), "firing");
    // Two rows of the rule whose targets no longer decode (a damaged store).
    store
        .write(|tx| -> vllm_core::Result<_> {
            tx.execute("UPDATE alerts SET target = 'not json'", [])?;
            tx.execute(
                "INSERT INTO alerts SELECT rule, '{\"gpu\":', state, severity, pending_since, \
                 fired_at, value, threshold, summary, last_evaluated FROM alerts",
                [],
            )?;
            Ok(())
        })
        .unwrap();
    let damaged = alerts::active(&store).unwrap();
    let mut texts: Vec<&str> = damaged
        .iter()
        .map(|a| a.target["unreadable_target"].as_str())
        .collect();
    texts.sort();
    assert_eq!(texts, ["not json", "{\"gpu\":"], "each its own alert");

    // The GPU is still hot: its alert starts again under its real target, and the two
    // damaged ones resolve on their own (not merged into one, not left forever).
    history::insert(&store, &[], &[gpu(95, 0)], t).unwrap();
    let events = alerts::evaluate(&store, &rs, t).unwrap();
    let resolved: Vec<_> = events
        .iter()
        .filter(|e| e.kind.as_str() == "resolved")
        .collect();
    assert_eq!(resolved.len(), 2, "{events:?}");
    let now = alerts::active(&store).unwrap();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0].target.get("gpu").map(String::as_str), Some("0"));
    assert_eq!(now[0].state.as_str(), "pending");
    assert_eq!(alerts::history(&store, 10).unwrap().len(), 2);
}

/// Rules and severities are typed: a stored row naming one this build does not know (a
/// damaged row, a newer build's rule) is a storage error naming the column, not an alert
/// of some other rule or severity, and the evaluator drops it rather than stopping.
#[test]
fn an_unknown_stored_rule_or_severity_is_a_storage_error_naming_the_column() {
    let (_dir, store) = temp_store();
    let rs = rules("gpu_temperature");
    let mut t = T0;
    for _ in 0..5 {
        history::insert(&store, &[], &[gpu(95, 0)], t).unwrap();
        alerts::evaluate(&store, &rs, t).unwrap();
        t += 1.0;
    }
    let firing = alerts::active(&store).unwrap();
    assert_eq!(
        firing[0].rule,
        vllm_core::config::AlertRuleName::GpuTemperature
    );
    assert_eq!(firing[0].severity, vllm_core::config::Severity::Warning);
    // (The state column is CHECKed by the schema: it cannot hold anything else.)
    for (column, text) in [("severity", "fatal"), ("rule", "gpu_melting")] {
        store
            .write(|tx| -> vllm_core::Result<_> {
                tx.execute(&format!("UPDATE alerts SET {column} = ?1"), [text])?;
                Ok(())
            })
            .unwrap();
        let e = alerts::active(&store).unwrap_err();
        assert_eq!(e.code(), "STORAGE_ERROR");
        let m = e.to_string();
        assert!(m.contains(column) && m.contains(text), "{m}");
        // The engine goes on: the next evaluation drops the row it cannot read, and the
        // GPU, still hot, is pending again under its own rule.
        history::insert(&store, &[], &[gpu(95, 0)], t).unwrap();
        alerts::evaluate(&store, &rs, t).unwrap();
        t += 1.0;
        let now = alerts::active(&store).unwrap();
        assert_eq!(now.len(), 1, "{now:?}");
        assert_eq!(now[0].state.as_str(), "pending");
        assert_eq!(now[0].severity, vllm_core::config::Severity::Warning);
    }
}
