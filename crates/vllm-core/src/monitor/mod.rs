//! The performance monitor's data: scraping every vLLM server we know, keeping the
//! samples in the store, and computing figures over a window of them.
//!
//! - [`sample`]: [`Sample`], what one scrape says about one served model (counters,
//!   gauges, histograms, the KV-cache size), compact enough to keep a day of.
//! - [`sampler`]: [`Sampler`], one round of concurrent scrapes of every target (the
//!   attached endpoints and the launched models that should be serving), and
//!   [`sampler::run`], the loop that only the holder of the `metrics_sampler` lease runs.
//! - [`history`]: the `metric_samples` and `gpu_samples` tables: writing a round,
//!   reading a window, pruning past the retention and downsampling past an hour.
//! - [`figures`]: [`Figures`], a window's figures whichever source computed them.
//! - [`window`]: figures over a window of the stored samples (rates, request counts,
//!   latency quantiles, gauge means, time series), counter resets included.
//! - [`charts`]: per model and per GPU series on one time axis, binned for the page.
//! - [`duration`]: `90s`, `5m`, `1h30m`, `1d` or plain seconds, bounded by the retention.
//! - [`export`]: the monitor's own metrics in Prometheus text format (the listener's body).
//! - [`promql`]: `source = "prometheus"`, the same [`Figures`] read from a Prometheus server.
//! - [`memory`]: what a model's vLLM log says its weights took.
//!
//! One process samples for all: the sampler runs only while its process holds
//! [`crate::coordination::duties::METRICS_SAMPLER`], and every reader (any server
//! instance, even one started a second ago) computes its answers from the store.

pub mod alerts;
pub mod charts;
pub mod duration;
pub mod export;
pub mod figures;
pub mod history;
pub mod memory;
pub mod promql;
pub mod sample;
pub mod sampler;
pub mod window;

pub use duration::parse_duration;
pub use figures::{Figures, LatencyFigures};
pub use sample::{HistData, Sample, SampleDetail};
pub use sampler::{Sampler, Target};
pub use window::{SeriesWindow, WindowFigures};
