//! Window arithmetic on scraped values: histogram deltas and quantiles, counter increases
//! and rates, gauge means.
//!
//! # Counter resets
//! A counter (or a histogram's buckets, sum and count) only goes up while its process
//! lives. A value lower than the one before means the server restarted and counted again
//! from 0, so the lower value is itself the increase since the restart. That is how
//! Prometheus' `increase()` and `rate()` treat resets, and what every function here does.
//!
//! # No extrapolation
//! Prometheus' `rate()` and `increase()` extrapolate the first and last samples to the
//! edges of the query's range, so `increase()` of an integer counter can be 2.7. We do
//! not: [`counter_increase`] is exactly how much the counter grew between the first and
//! the last point given, and [`counter_rate`] divides that by the time between those two
//! points. Our windows are "between these two scrapes", and what tools report ("served
//! 27 requests") must be an exact count of what happened in that window.

use crate::Sample;

/// One cumulative bucket: `count` observations were at most `le`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The inclusive upper bound; the last bucket of a well-formed histogram is `+Inf`.
    pub le: f64,
    /// Cumulative: every observation `<= le`.
    pub count: f64,
}

/// A classic Prometheus histogram at one instant (or the difference of two).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// Cumulative buckets, sorted by `le`.
    pub buckets: Vec<Bucket>,
    /// The sum of all observations; `NaN` when the exposition had no `_sum`.
    pub sum: f64,
    /// The number of observations (the `_count` series, or the `+Inf` bucket when there
    /// was no `_count`; `NaN` when there was neither).
    pub count: f64,
}

impl Histogram {
    /// A histogram from cumulative `(le, count)` pairs (sorted here) and its sum and count.
    pub fn new(buckets: impl IntoIterator<Item = (f64, f64)>, sum: f64, count: f64) -> Histogram {
        let mut buckets: Vec<Bucket> = buckets
            .into_iter()
            .map(|(le, count)| Bucket { le, count })
            .collect();
        buckets.sort_by(|a, b| a.le.total_cmp(&b.le));
        Histogram {
            buckets,
            sum,
            count,
        }
    }

    /// What was observed between `earlier` and `later`: bucket by bucket, sum and count,
    /// `later - earlier`.
    ///
    /// When `later` is a reset of `earlier` (see [`Histogram::is_reset_of`]), the server
    /// restarted in between and `later` itself is what was observed since: it is returned
    /// unchanged. Observations made before the restart but after `earlier` are lost, as
    /// they are for Prometheus.
    pub fn delta(later: &Histogram, earlier: &Histogram) -> Histogram {
        if later.is_reset_of(earlier) {
            return later.clone();
        }
        Histogram {
            buckets: later
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(l, e)| Bucket {
                    le: l.le,
                    count: l.count - e.count,
                })
                .collect(),
            sum: later.sum - earlier.sum,
            count: later.count - earlier.count,
        }
    }

    /// Whether `self`, scraped after `earlier`, cannot be a continuation of it: its count
    /// or any bucket went down, or its bucket bounds differ (bounds only change when the
    /// server is restarted with another configuration).
    ///
    /// The histogram is judged as a whole, not series by series as Prometheus' `rate()` on
    /// `_bucket` would: a restart resets every series at once, and mixing reset and
    /// non-reset buckets would give a histogram whose buckets do not add up.
    pub fn is_reset_of(&self, earlier: &Histogram) -> bool {
        self.count < earlier.count
            || self.buckets.len() != earlier.buckets.len()
            || self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .any(|(l, e)| l.le != e.le || l.count < e.count)
    }

    /// What was observed over a series of scrapes in time order, surviving any number of
    /// restarts: the sum of [`Histogram::delta`] of each consecutive pair. `None` with
    /// fewer than two scrapes.
    pub fn increase(series: &[Histogram]) -> Option<Histogram> {
        let mut pairs = series.windows(2);
        let first = pairs.next()?;
        let mut total = Histogram::delta(&first[1], &first[0]);
        for pair in pairs {
            total.add(&Histogram::delta(&pair[1], &pair[0]));
        }
        Some(total)
    }

    /// Adds `other`'s observations to `self` (several engines of one model, or several
    /// windows).
    ///
    /// With equal bucket bounds this is exact. With different bounds the result has the
    /// union of both, and at a bound only one side has, the other side counts what it
    /// knows to be at or below it: its count at its own largest bound not above. That
    /// keeps the buckets cumulative and never over-counts.
    pub fn add(&mut self, other: &Histogram) {
        let same_bounds = self.buckets.len() == other.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&other.buckets)
                .all(|(a, b)| a.le == b.le);
        if same_bounds {
            for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                a.count += b.count;
            }
        } else {
            let mut bounds: Vec<f64> = self
                .buckets
                .iter()
                .chain(&other.buckets)
                .map(|b| b.le)
                .collect();
            bounds.sort_by(f64::total_cmp);
            bounds.dedup();
            self.buckets = bounds
                .into_iter()
                .map(|le| Bucket {
                    le,
                    count: self.cumulative_at(le) + other.cumulative_at(le),
                })
                .collect();
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// The count of observations known to be `<= le`: the count of the largest bucket
    /// bound not above `le` (0 when there is none).
    pub fn cumulative_at(&self, le: f64) -> f64 {
        self.buckets
            .iter()
            .take_while(|b| b.le <= le)
            .last()
            .map_or(0.0, |b| b.count)
    }

    /// The `q`-quantile by Prometheus' `histogram_quantile` (see [`histogram_quantile`]).
    pub fn quantile(&self, q: f64) -> f64 {
        histogram_quantile(q, &self.buckets)
    }

    /// The mean observation, `sum / count`; `None` when there were no observations (or no
    /// `_sum`).
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0 && !self.sum.is_nan()).then(|| self.sum / self.count)
    }
}

/// The relative difference under which two neighbouring bucket counts are taken as equal,
/// as Prometheus does (`smallDeltaTolerance`): counts computed by rates or sums of floats
/// pick up noise in the last digits that must not read as non-monotonic buckets.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// The `q`-quantile of cumulative `buckets`, computed as Prometheus' `histogram_quantile`
/// does for classic histograms (`BucketQuantile` in `promql/quantile.go`).
///
/// In order:
/// - `q` NaN gives NaN; `q < 0` gives `-Inf`; `q > 1` gives `+Inf` (even with no buckets).
/// - No buckets, or a highest bound (after sorting by `le`) that is not `+Inf`: NaN.
/// - Buckets with the same bound are merged by adding their counts (`le="0.2"` and
///   `le="2e-1"` are one bucket).
/// - Neighbouring counts whose relative difference is below 1e-12 are made equal, in
///   either direction (float noise); then any count lower than the one before is raised
///   to it (the "envelope"), so the counts are monotonic.
/// - Fewer than 2 buckets left, or a `+Inf` count of 0: NaN.
/// - rank = q × the `+Inf` count; the answer lies in the first bucket whose count reaches
///   the rank, searched among all buckets but `+Inf`. If none does (the rank falls in the
///   `+Inf` bucket), the bound of the second-highest bucket is returned.
/// - If it is the lowest bucket and that bucket's bound is `<= 0`, that bound is returned.
/// - Otherwise linear interpolation inside the bucket, from the previous bucket's bound
///   (0 for the lowest bucket) to this bucket's bound, at
///   `(rank - previous count) / (this count - previous count)`.
pub fn histogram_quantile(q: f64, buckets: &[Bucket]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut b: Vec<Bucket> = buckets.to_vec();
    // total_cmp: a total order, so a NaN bound cannot make the sort panic (it sorts last
    // and the result is NaN below, since the last bound is then not +Inf).
    b.sort_by(|x, y| x.le.total_cmp(&y.le));
    match b.last() {
        Some(last) if last.le == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    coalesce(&mut b);
    make_monotonic(&mut b);
    let n = b.len();
    if n < 2 {
        return f64::NAN;
    }
    let observations = b[n - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let rank = q * observations;
    // The first of the finite buckets whose count reaches the rank (n - 1 if none): the
    // counts are monotonic now, so a binary search is valid.
    let i = b[..n - 1].partition_point(|x| x.count < rank);
    if i == n - 1 {
        return b[n - 2].le;
    }
    if i == 0 && b[0].le <= 0.0 {
        return b[0].le;
    }
    let end = b[i].le;
    let (start, count, rank) = if i > 0 {
        (
            b[i - 1].le,
            b[i].count - b[i - 1].count,
            rank - b[i - 1].count,
        )
    } else {
        (0.0, b[i].count, rank)
    };
    start + (end - start) * (rank / count)
}

/// Merges neighbours with the same bound (the input is sorted) by adding their counts.
fn coalesce(b: &mut Vec<Bucket>) {
    let mut out = 0;
    for i in 1..b.len() {
        if b[i].le == b[out].le {
            b[out].count += b[i].count;
        } else {
            out += 1;
            b[out] = b[i];
        }
    }
    b.truncate(out + 1);
}

/// Prometheus' `ensureMonotonicAndIgnoreSmallDeltas`: tiny differences are flattened in
/// either direction, then decreases are raised to the running maximum. `prev` does not
/// move on a flattened or raised bucket.
fn make_monotonic(b: &mut [Bucket]) {
    let mut prev = b[0].count;
    for bucket in b.iter_mut().skip(1) {
        let curr = bucket.count;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, SMALL_DELTA_TOLERANCE) || curr < prev {
            bucket.count = prev;
            continue;
        }
        prev = curr;
    }
}

/// Prometheus' `almost.Equal`: relative to the sum of magnitudes, with an absolute floor
/// near 0; two NaNs are equal.
fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < epsilon * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// How much a counter grew over `points` (`(t_seconds, value)` in time order), surviving
/// resets: the sum of every rise between consecutive points, and after a drop the new
/// value (the increase since the restart). `NaN` values are skipped. `None` with fewer than
/// two usable points.
///
/// Exact, not extrapolated to window edges: see the module documentation.
pub fn counter_increase(points: &[(f64, f64)]) -> Option<f64> {
    let mut usable = points.iter().filter(|(_, v)| !v.is_nan());
    let (_, mut prev) = *usable.next()?;
    let mut total = 0.0;
    let mut pairs = 0;
    for &(_, v) in usable {
        total += if v >= prev { v - prev } else { v };
        prev = v;
        pairs += 1;
    }
    (pairs > 0).then_some(total)
}

/// [`counter_increase`] per second: divided by the time between the first and the last
/// usable point. `None` with fewer than two usable points or when no time passed.
pub fn counter_rate(points: &[(f64, f64)]) -> Option<f64> {
    let increase = counter_increase(points)?;
    let mut times = points.iter().filter(|(_, v)| !v.is_nan()).map(|(t, _)| *t);
    let first = times.next()?;
    let last = times.next_back()?;
    let span = last - first;
    (span > 0.0).then(|| increase / span)
}

/// The plain average of a gauge's values (as Prometheus' `avg_over_time`), `NaN` values
/// skipped; `None` when there are none.
///
/// Right when the samples are evenly spaced (our scraper's case); see
/// [`gauge_time_weighted_mean`] otherwise.
pub fn gauge_mean(points: &[(f64, f64)]) -> Option<f64> {
    let (sum, n) = points
        .iter()
        .filter(|(_, v)| !v.is_nan())
        .fold((0.0, 0usize), |(s, n), (_, v)| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The time-weighted average of a gauge over `points` (`(t_seconds, value)` in time
/// order): each value holds from its time until the next point's (a step function, which
/// is what a scraped gauge tells us), so the last point carries no weight. `NaN` values
/// skipped. With one usable point, or none of the time passing, the plain mean is
/// returned; `None` when there are no usable points.
pub fn gauge_time_weighted_mean(points: &[(f64, f64)]) -> Option<f64> {
    let usable: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_nan())
        .collect();
    let (first, last) = (usable.first()?.0, usable.last()?.0);
    let span = last - first;
    if span.is_nan() || span <= 0.0 {
        return gauge_mean(&usable);
    }
    let weighted: f64 = usable.windows(2).map(|w| w[0].1 * (w[1].0 - w[0].0)).sum();
    Some(weighted / span)
}

/// Which series of a histogram family a sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Bucket,
    Sum,
    Count,
}

/// Collects `_bucket`, `_sum` and `_count` samples (of one or several series, added) into
/// a [`Histogram`].
#[derive(Debug, Default)]
pub(crate) struct HistogramBuilder {
    buckets: Vec<Bucket>,
    sum: Option<f64>,
    count: Option<f64>,
}

impl HistogramBuilder {
    pub(crate) fn add(&mut self, part: Part, s: &Sample) {
        match part {
            Part::Bucket => {
                // A bucket without a readable `le` cannot be placed: it is left out, and
                // histogram_quantile then sees what remains.
                let Some(le) = s.labels.get("le").and_then(|v| v.parse::<f64>().ok()) else {
                    return;
                };
                // A linear search: a vLLM histogram has at most about 30 bounds.
                match self.buckets.iter_mut().find(|b| b.le == le) {
                    Some(b) => b.count += s.value,
                    None => self.buckets.push(Bucket { le, count: s.value }),
                }
            }
            Part::Sum => *self.sum.get_or_insert(0.0) += s.value,
            Part::Count => *self.count.get_or_insert(0.0) += s.value,
        }
    }

    pub(crate) fn finish(mut self) -> Histogram {
        self.buckets.sort_by(|a, b| a.le.total_cmp(&b.le));
        let inf_count = self
            .buckets
            .last()
            .filter(|b| b.le == f64::INFINITY)
            .map(|b| b.count);
        Histogram {
            buckets: self.buckets,
            sum: self.sum.unwrap_or(f64::NAN),
            count: self.count.or(inf_count).unwrap_or(f64::NAN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_equal_bounds() {
        let mut b = vec![
            Bucket {
                le: 0.1,
                count: 1.0,
            },
            Bucket {
                le: 0.2,
                count: 1.0,
            },
            Bucket {
                le: 0.2,
                count: 2.0,
            },
            Bucket {
                le: f64::INFINITY,
                count: 4.0,
            },
        ];
        coalesce(&mut b);
        assert_eq!(b.len(), 3);
        assert_eq!(b[1].count, 3.0);
    }

    #[test]
    fn almost_equal_matches_prometheus() {
        assert!(almost_equal(15.0, 15.00000000001, 1e-12));
        assert!(!almost_equal(15.0, 15.0001, 1e-12));
        assert!(!almost_equal(0.0, 1e-300, 1e-12));
        assert!(almost_equal(f64::NAN, f64::NAN, 1e-12));
    }
}
