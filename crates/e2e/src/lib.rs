//! Helpers of the real-vLLM suite: finding the real setup, a rig that launches it, and the
//! raw HTTP, exposition and JSON-shape views the fidelity checks compare.
//!
//! The suite runs when `VLLM_MCP_REAL_VLLM` names the real `vllm` command (with
//! `VLLM_MCP_REAL_MODEL` and `VLLM_MCP_REAL_LORA` beside it: `eval "$(scripts/real-vllm.sh
//! env)"`). Without it each test says that it skipped; with `CI` set it fails instead, so
//! CI cannot skip it silently. `VLLM_MCP_REAL_VLLM=deferred` is the one explicit way to
//! pass over it (CI's fast step, which runs the suite as a step of its own afterwards).

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vllm_core::prom::{Exposition, parse};
use vllm_mcp_testkit::ServerRig;

/// The real vLLM setup the suite runs against.
pub struct Real {
    /// The `vllm` console script.
    pub vllm: PathBuf,
    /// The tiny Llama's directory (max_position_embeddings 2048).
    pub model: PathBuf,
    /// A rank-8 LoRA adapter of it (q_proj, v_proj).
    pub lora: PathBuf,
}

impl Real {
    /// The setup named by the environment, or `None` when the test should skip (it says
    /// why on stderr). Panics when `CI` is set and the setup is missing or broken.
    pub fn from_env(test: &str) -> Option<Real> {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        let vllm = std::env::var("VLLM_MCP_REAL_VLLM").unwrap_or_default();
        if vllm == "deferred" {
            eprintln!(
                "{test}: deferred (VLLM_MCP_REAL_VLLM=deferred): the real suite runs in its own step"
            );
            return None;
        }
        if vllm.is_empty() {
            let why = "VLLM_MCP_REAL_VLLM is not set: run `scripts/real-vllm.sh setup` and \
                       `eval \"$(scripts/real-vllm.sh env)\"` to run the real-vLLM suite";
            assert!(!ci, "{test}: CI is set and {why}");
            eprintln!("{test}: SKIPPED: {why}");
            return None;
        }
        let path = |var: &str| {
            let p = PathBuf::from(std::env::var(var).unwrap_or_default());
            assert!(
                p.is_absolute() && p.exists(),
                "{test}: {var} ({}) must name the real setup's files: eval \"$(scripts/real-vllm.sh env)\"",
                p.display()
            );
            p
        };
        let real = Real {
            vllm: path("VLLM_MCP_REAL_VLLM"),
            model: path("VLLM_MCP_REAL_MODEL"),
            lora: path("VLLM_MCP_REAL_LORA"),
        };
        Some(real)
    }

    /// `[launcher.env]` of every real server: the CPU KV cache small enough for a busy
    /// machine, runtime LoRA and dev mode on, nothing fetched from the network.
    pub fn launcher_env(tmp: &Path) -> Vec<(String, String)> {
        let tmp = tmp.display().to_string();
        [
            ("VLLM_CPU_KVCACHE_SPACE", "1"),
            ("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True"),
            ("VLLM_SERVER_DEV_MODE", "1"),
            ("HF_HUB_OFFLINE", "1"),
            ("TRANSFORMERS_OFFLINE", "1"),
            ("VLLM_NO_USAGE_STATS", "1"),
            ("DO_NOT_TRACK", "1"),
            ("TMPDIR", &tmp),
            ("VLLM_CACHE_ROOT", &format!("{tmp}/vllm-cache")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A rig whose launcher is the real vLLM (300 s to become healthy, 20 s of grace).
    /// The servers' TMPDIR and caches live in the rig's directory, removed with it.
    pub fn rig(&self, extra: &str) -> ServerRig {
        let rig = ServerRig::with_vllm(extra, &self.vllm, 20.0, 300.0, &[]);
        let tmp = rig.dir.path().join("tmp");
        std::fs::create_dir_all(tmp.join("vllm-cache")).expect("create the servers' TMPDIR");
        let env = Real::launcher_env(&tmp);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        rig.with_launcher_env(&pairs)
    }

    /// The arguments every launch of the tiny model gets (the reference's working start).
    pub fn load_args(&self, model_id: &str) -> Value {
        json!({
            "model_id": model_id,
            "source": self.model.to_str().expect("utf-8 path"),
            "max_model_len": 512,
            "dtype": "float32",
            "enforce_eager": true,
        })
    }
}

/// Prints a phase's duration, so that the suite's log says where its time went.
pub struct Phase {
    name: String,
    started: Instant,
}

impl Phase {
    pub fn start(name: &str) -> Phase {
        eprintln!("[real-vllm] {name} ...");
        Phase {
            name: name.to_string(),
            started: Instant::now(),
        }
    }

    /// Ends the phase; returns its seconds.
    pub fn done(self) -> f64 {
        let s = self.started.elapsed().as_secs_f64();
        eprintln!("[real-vllm] {} done in {s:.1} s", self.name);
        s
    }
}

/// One HTTP answer, raw: status, content type and body.
#[derive(Debug, Clone)]
pub struct Raw {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl Raw {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// An HTTP client for the raw views (no API key: the servers run without one).
pub fn http() -> reqwest::Client {
    vllm_core::vllm::install_tls_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// `method path` on `base` with an optional JSON body.
pub async fn raw(
    c: &reqwest::Client,
    method: &str,
    base: &str,
    path: &str,
    body: Option<&Value>,
) -> Raw {
    let url = format!("{base}{path}");
    let mut req = match method {
        "GET" => c.get(&url),
        "POST" => c.post(&url),
        other => panic!("method {other}"),
    };
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let body = r.text().await.unwrap_or_default();
    Raw {
        status,
        content_type,
        body,
    }
}

/// `/metrics`, parsed strictly (a real vLLM's exposition must parse without a problem).
pub async fn metrics(c: &reqwest::Client, base: &str) -> Exposition {
    let r = raw(c, "GET", base, "/metrics", None).await;
    assert_eq!(r.status, 200, "{base}/metrics: {}", r.body);
    parse(&r.body).unwrap_or_else(|p| panic!("{base}/metrics does not parse: {p}"))
}

/// Every `vllm:` family with the label names its samples carry (the `le` of buckets
/// included), for the fidelity comparison.
pub fn family_labels(e: &Exposition) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in e.families().iter().filter(|f| f.name.starts_with("vllm:")) {
        let labels = out.entry(format!("{} ({:?})", f.name, f.kind)).or_default();
        for s in &f.samples {
            labels.extend(s.labels.iter().map(|(k, _)| k.to_string()));
        }
    }
    out
}

/// The sum over every sample named `name` (a counter's `_total`, a histogram's `_count`).
pub fn sum(e: &Exposition, name: &str) -> f64 {
    e.samples()
        .filter(|(_, s)| &*s.name == name)
        .map(|(_, s)| s.value)
        .sum()
}

/// The cumulative buckets `(le, count)` of histogram `family`, summed over label sets.
pub fn buckets(e: &Exposition, family: &str) -> Vec<(f64, f64)> {
    let name = format!("{family}_bucket");
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (_, s) in e.samples().filter(|(_, s)| *s.name == *name) {
        let le: f64 = match s.labels.get("le") {
            Some("+Inf") => f64::INFINITY,
            Some(v) => v.parse().expect("le"),
            None => continue,
        };
        let slot = by_le.entry(le.to_bits()).or_insert((le, 0.0));
        slot.1 += s.value;
    }
    let mut v: Vec<(f64, f64)> = by_le.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The bucket `(lower, upper]` holding quantile `q` of the observations between two
/// snapshots of the same histogram's cumulative buckets.
pub fn quantile_bucket(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> (f64, f64) {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect();
    let total = delta.last().map_or(0.0, |(_, n)| *n);
    assert!(total > 0.0, "no observations between the snapshots");
    let rank = q * total;
    let mut lower = 0.0;
    for (le, n) in &delta {
        if *n >= rank {
            return (lower, *le);
        }
        lower = *le;
    }
    unreachable!("the +Inf bucket holds every observation")
}

/// A JSON value's shape: objects keep their keys (sorted) with the shapes of their
/// values, arrays the shape of their first element, scalars their type.
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), shape(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
    }
}

/// The paths (`a.b[].c`) where two shapes differ, for a readable assertion.
pub fn shape_differences(real: &Value, mock: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into("", real, mock, &mut out);
    out
}

fn diff_into(at: &str, real: &Value, mock: &Value, out: &mut Vec<String>) {
    match (real, mock) {
        (Value::Object(r), Value::Object(m)) => {
            for (k, rv) in r {
                let path = format!("{at}.{k}");
                match m.get(k) {
                    Some(mv) => diff_into(&path, rv, mv, out),
                    None => out.push(format!("{path}: the mock lacks it (real: {rv})")),
                }
            }
            for k in m.keys().filter(|k| !r.contains_key(*k)) {
                out.push(format!("{at}.{k}: only the mock has it"));
            }
        }
        (Value::Array(r), Value::Array(m)) => match (r.first(), m.first()) {
            (Some(rv), Some(mv)) => diff_into(&format!("{at}[]"), rv, mv, out),
            (None, None) => {}
            _ => out.push(format!("{at}[]: one is empty (real {real}, mock {mock})")),
        },
        (r, m) if r == m => {}
        // A value that is null on one side is a type the other side may well have.
        (r, m) => out.push(format!("{at}: real {r}, mock {m}")),
    }
}

/// What `/health` answered, sampled every 100 ms from now until it answers 200 (or
/// `timeout`): the distinct states in order (`no answer`: refused or silent, or a status code).
pub fn health_sequence(port: u16, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let state = match vllm_mcp_testkit::http_status(port, "/health") {
            Some(code) => code.to_string(),
            None => "no answer".to_string(),
        };
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if state == "200" || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
