//! The gateway's own Prometheus families on `GET /metrics`: requests answered by model and
//! status, requests in flight and waiting, starts on demand and their duration, swaps.

use crate::swap::Swapped;
use crate::usage::{ModelUse, Usage};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters kept since the gateway started.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    /// (model, status) → requests answered (by the model's server or the gateway).
    answered: BTreeMap<(String, u16), u64>,
    /// (model, result) → starts on demand.
    starts: BTreeMap<(String, &'static str), u64>,
    /// model → seconds spent in starts that succeeded.
    start_seconds: BTreeMap<String, f64>,
    /// (model, action) → swaps out.
    swaps: BTreeMap<(String, &'static str), u64>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A request for `model` was answered with `status`.
    pub fn answered(&self, model: &str, status: u16) {
        self.with(|c| *c.answered.entry((model.to_string(), status)).or_default() += 1);
    }

    /// A start on demand of `model` ended.
    pub fn start_ended<E>(&self, model: &str, result: &Result<(), E>, took: Duration) {
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.with(|c| {
            *c.starts.entry((model.to_string(), outcome)).or_default() += 1;
            if result.is_ok() {
                *c.start_seconds.entry(model.to_string()).or_default() += took.as_secs_f64();
            }
        });
    }

    /// `model` was swapped out.
    pub fn swapped(&self, model: &str, how: Swapped) {
        self.with(|c| {
            *c.swaps
                .entry((model.to_string(), how.as_str()))
                .or_default() += 1
        });
    }

    /// The exposition: these counters and `usage`'s gauges.
    pub fn render(&self, usage: &Usage) -> String {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let o = &mut out;
        head(
            o,
            "vllm_gateway_requests_total",
            "counter",
            "Requests answered, by model and HTTP status.",
        );
        for ((m, s), n) in &c.answered {
            let _ = writeln!(
                o,
                "vllm_gateway_requests_total{{model=\"{}\",status=\"{s}\"}} {n}",
                esc(m)
            );
        }
        let all = usage.all();
        let gauges: [Gauge; 2] = [
            (
                "vllm_gateway_requests_in_flight",
                "Requests passed on and not yet answered in full.",
                |u| u.in_flight,
            ),
            (
                "vllm_gateway_requests_waiting",
                "Requests waiting for their model to start or drain.",
                |u| u.waiting,
            ),
        ];
        for (name, help, get) in gauges {
            head(o, name, "gauge", help);
            for (m, u) in &all {
                let _ = writeln!(o, "{name}{{model=\"{}\"}} {}", esc(m), get(u));
            }
        }
        head(
            o,
            "vllm_gateway_model_starts_total",
            "counter",
            "Starts on demand, by model and result.",
        );
        for ((m, r), n) in &c.starts {
            let _ = writeln!(
                o,
                "vllm_gateway_model_starts_total{{model=\"{}\",result=\"{r}\"}} {n}",
                esc(m)
            );
        }
        head(
            o,
            "vllm_gateway_model_start_seconds_total",
            "counter",
            "Seconds spent in starts on demand that succeeded.",
        );
        for (m, s) in &c.start_seconds {
            let _ = writeln!(
                o,
                "vllm_gateway_model_start_seconds_total{{model=\"{}\"}} {s}",
                esc(m)
            );
        }
        head(
            o,
            "vllm_gateway_swaps_total",
            "counter",
            "Models swapped out to make room, by model and action.",
        );
        for ((m, a), n) in &c.swaps {
            let _ = writeln!(
                o,
                "vllm_gateway_swaps_total{{model=\"{}\",action=\"{a}\"}} {n}",
                esc(m)
            );
        }
        out
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A gauge per model: its name, its help and how to read it.
type Gauge = (&'static str, &'static str, fn(&ModelUse) -> u32);

/// A label value escaped as the text format asks.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
