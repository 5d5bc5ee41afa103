//! vllm-prom: Prometheus text-format parsing, a typed view of vLLM's metrics, and window
//! arithmetic.
//!
//! vLLM exposes its state on `GET /metrics` in the Prometheus text exposition format
//! (version 0.0.4). This crate turns that text into data in three layers:
//!
//! - [`parse()`] / [`parse_lenient`] ([`mod@parse`]): text to an [`Exposition`], a list of
//!   metric [`Family`]s, each with its [`Sample`]s. We write our own parser because the
//!   popular `prometheus-parse` crate silently drops metric names with colons, and every
//!   vLLM family is called `vllm:...`.
//! - [`VllmSnapshot`] ([`mod@vllm`]): the families vLLM exports, by `model_name`, with the
//!   names vLLM used in earlier releases accepted too. A family the server did not export
//!   is `None`, never an invented 0.
//! - [`window`]: what happened between two scrapes: [`Histogram::delta`],
//!   [`histogram_quantile`] (Prometheus' exact algorithm), [`counter_increase`],
//!   [`counter_rate`], gauge means. Counter resets (a restarted server) are handled the way
//!   Prometheus' `increase()` handles them.
//!
//! ```
//! use vllm_prom as prom;
//! let text = "# TYPE vllm:num_requests_running gauge\n\
//!             vllm:num_requests_running{engine=\"0\",model_name=\"tiny\"} 2.0\n";
//! let expo = prom::parse(text).unwrap();
//! let snap = prom::VllmSnapshot::from_exposition(&expo);
//! assert_eq!(snap.model("tiny").unwrap().num_requests_running, Some(2.0));
//! ```

pub mod parse;
pub mod vllm;
pub mod window;

pub use parse::{ParseProblem, parse, parse_lenient};
pub use vllm::{CacheConfig, LoraInfo, ModelMetrics, VllmSnapshot};
pub use window::{
    Bucket, Histogram, counter_increase, counter_rate, gauge_mean, gauge_time_weighted_mean,
    histogram_quantile,
};

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// The type a `# TYPE` line declares; [`MetricKind::Untyped`] when there was none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricKind {
    /// The word used on a `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
            MetricKind::Untyped => "untyped",
        }
    }

    /// Whether a sample named `<family><suffix>` belongs to a family of this kind.
    ///
    /// `_created` is accepted for the kinds OpenMetrics gives it to; vLLM (through
    /// prometheus_client) instead declares each `_created` series as a gauge family of its
    /// own, and an exact family name always wins over a suffix (see [`mod@parse`]).
    pub(crate) fn accepts_suffix(self, suffix: &str) -> bool {
        match self {
            MetricKind::Histogram => {
                matches!(suffix, "_bucket" | "_sum" | "_count" | "_created")
            }
            MetricKind::Summary => matches!(suffix, "_sum" | "_count" | "_created"),
            MetricKind::Counter => matches!(suffix, "_total" | "_created"),
            MetricKind::Gauge | MetricKind::Untyped => false,
        }
    }
}

/// The labels of one sample, in the order the exposition gave them.
///
/// Names and values are shared `Arc<str>`: the parser hands the same allocation to every
/// sample that repeats a name or value (`engine="0"`, `model_name="tiny"`), which is most
/// of what makes parsing a 57 KB exposition cheap. Lookups are linear: a sample has a
/// handful of labels (vLLM's `cache_config_info`, the widest, has 37).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Vec<(Arc<str>, Arc<str>)>);

impl Labels {
    /// An empty label set.
    pub fn new() -> Labels {
        Labels(Vec::new())
    }

    /// A label set from `(name, value)` pairs, kept in the given order.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Labels {
        Labels(
            pairs
                .into_iter()
                .map(|(k, v)| (Arc::from(k.as_ref()), Arc::from(v.as_ref())))
                .collect(),
        )
    }

    /// The value of label `name`, if the sample has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, v)| &**v)
    }

    /// `(name, value)` pairs in exposition order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (&**n, &**v))
    }

    /// How many labels there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A copy without label `name` (used to group a histogram's buckets by everything but
    /// `le`).
    pub fn without(&self, name: &str) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(n, _)| &**n != name)
                .cloned()
                .collect(),
        )
    }

    /// Whether both sets hold the same pairs, ignoring label `skip` and the order.
    pub(crate) fn same_except(&self, other: &Labels, skip: &str) -> bool {
        let mine = self.0.iter().filter(|(n, _)| &**n != skip);
        let count = mine.clone().count();
        count == other.0.iter().filter(|(n, _)| &**n != skip).count()
            && mine.into_iter().all(|(n, v)| other.get(n) == Some(&**v))
    }

    pub(crate) fn from_vec(v: Vec<(Arc<str>, Arc<str>)>) -> Labels {
        Labels(v)
    }

    pub(crate) fn as_slice(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.0
    }
}

/// One sample line: `name{labels} value [timestamp_ms]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The full series name as written, e.g. `vllm:e2e_request_latency_seconds_bucket`.
    pub name: Arc<str>,
    pub labels: Labels,
    /// `NaN`, `+Inf` and `-Inf` are kept as such.
    pub value: f64,
    /// Milliseconds since the Unix epoch, when the line had a timestamp (vLLM never sends
    /// one).
    pub timestamp_ms: Option<i64>,
}

/// A metric family: what one `# TYPE` line declares, with every sample that belongs to it
/// (for a histogram: its `_bucket`, `_sum`, `_count` series).
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The name on the `# TYPE` line (or the sample name, for a family without one).
    pub name: Arc<str>,
    /// The `# HELP` text, unescaped; `None` when there was no `# HELP` line.
    pub help: Option<String>,
    pub kind: MetricKind,
    /// In exposition order.
    pub samples: Vec<Sample>,
}

impl Family {
    /// A family with no samples yet.
    pub fn new(name: &str, kind: MetricKind) -> Family {
        Family {
            name: Arc::from(name),
            help: None,
            kind,
            samples: Vec::new(),
        }
    }

    /// The sum of the values of the [value samples](Family::is_value_sample) whose labels
    /// pass `keep`; `None` when no sample passes (so a missing series is never read as 0).
    ///
    /// Meant for counters and gauges split by a label the caller wants to add up, e.g.
    /// several data-parallel `engine`s of one model.
    pub fn sum_where(&self, keep: impl Fn(&Labels) -> bool) -> Option<f64> {
        let mut total = None;
        for s in &self.samples {
            if self.is_value_sample(s) && keep(&s.labels) {
                *total.get_or_insert(0.0) += s.value;
            }
        }
        total
    }

    /// Whether `s` carries the family's value: named like the family, or `<name>_total` in
    /// a counter family declared OpenMetrics-style (without `_total`). Not `_created` (a
    /// timestamp), nor a histogram's or summary's `_sum`/`_count`/`_bucket`.
    pub fn is_value_sample(&self, s: &Sample) -> bool {
        match s.name.strip_prefix(&*self.name) {
            Some("") => true,
            Some("_total") => self.kind == MetricKind::Counter,
            _ => false,
        }
    }

    /// One [`Histogram`] per series (label set without `le`), for a histogram family, in
    /// order of first appearance.
    pub fn histograms(&self) -> Vec<(Labels, Histogram)> {
        let mut out: Vec<(Labels, window::HistogramBuilder)> = Vec::new();
        for s in &self.samples {
            let Some(part) = self.histogram_part(s) else {
                continue;
            };
            let i = match out.iter().position(|(l, _)| l.same_except(&s.labels, "le")) {
                Some(i) => i,
                None => {
                    out.push((s.labels.without("le"), window::HistogramBuilder::default()));
                    out.len() - 1
                }
            };
            out[i].1.add(part, s);
        }
        out.into_iter().map(|(l, b)| (l, b.finish())).collect()
    }

    /// The sum of every histogram series whose labels pass `keep` (buckets added by `le`);
    /// `None` when no `_bucket`, `_sum` or `_count` sample passes.
    ///
    /// Adding series is how several data-parallel engines of one model become one
    /// histogram; quantiles of the sum are what Prometheus' `sum by (le)` would give.
    pub fn histogram_where(&self, keep: impl Fn(&Labels) -> bool) -> Option<Histogram> {
        let mut b = window::HistogramBuilder::default();
        let mut any = false;
        for s in &self.samples {
            if let Some(part) = self.histogram_part(s)
                && keep(&s.labels)
            {
                b.add(part, s);
                any = true;
            }
        }
        any.then(|| b.finish())
    }

    /// Which part of a histogram a sample is, from its name's suffix.
    fn histogram_part(&self, s: &Sample) -> Option<window::Part> {
        let suffix = s.name.strip_prefix(&*self.name)?;
        match suffix {
            "_bucket" => Some(window::Part::Bucket),
            "_sum" => Some(window::Part::Sum),
            "_count" => Some(window::Part::Count),
            _ => None,
        }
    }
}

/// A whole parsed `/metrics` body: families in the order they first appeared.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    families: Vec<Family>,
    index: HashMap<Arc<str>, usize, FxBuildHasher>,
}

impl Exposition {
    /// An exposition from families built by hand (tests, fakes). A later family with the
    /// name of an earlier one is not reachable through [`Exposition::family`].
    pub fn from_families(families: Vec<Family>) -> Exposition {
        let mut index = HashMap::with_capacity_and_hasher(families.len(), FxBuildHasher);
        for (i, f) in families.iter().enumerate() {
            index.entry(f.name.clone()).or_insert(i);
        }
        Exposition { families, index }
    }

    pub(crate) fn from_parts(
        families: Vec<Family>,
        index: HashMap<Arc<str>, usize, FxBuildHasher>,
    ) -> Self {
        Exposition { families, index }
    }

    /// The family named `name` exactly (`vllm:prompt_tokens_total`, not a stem).
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.index.get(name).map(|&i| &self.families[i])
    }

    /// The first of `names` that is present: for metrics vLLM renamed across releases,
    /// give the current name first.
    pub fn first_family(&self, names: &[&str]) -> Option<&Family> {
        names.iter().find_map(|n| self.family(n))
    }

    /// Every family, in exposition order.
    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// The families, by value.
    pub fn into_families(self) -> Vec<Family> {
        self.families
    }

    /// How many samples all families hold together.
    pub fn sample_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    /// Every sample of every family.
    pub fn samples(&self) -> impl Iterator<Item = (&Family, &Sample)> {
        self.families
            .iter()
            .flat_map(|f| f.samples.iter().map(move |s| (f, s)))
    }
}

/// The multiply-rotate hash of rustc (`FxHash`) for metric and label names.
///
/// The default SipHash was a tenth of the parse time. Fx does not resist chosen
/// collisions, which matters only if a scraped server crafts its metric names to slow us
/// down: our servers are vLLM processes we started or were configured with, and a body is
/// bounded by the HTTP client's limit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FxBuildHasher;

impl BuildHasher for FxBuildHasher {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

pub(crate) struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
