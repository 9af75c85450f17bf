//! The built-in metrics, computed from the merged window totals of all Ready Pods.
//!
//! Every metric yields a [`Sample`]: a value and the number of observations behind it.
//! [`BuiltinMetric::observe`] measures the candidate (`result`) and the baseline version
//! in the very same window (`baseline`), so a condition can compare the two.
//!
//! With no observations, a value is NaN with `samples: 0`; `minSampleCount` then makes
//! the measurement Inconclusive (see [`crate::evaluate`]).

use crate::counters::{ErrorClass, Histogram, SeriesCounters, WindowTotals};
use crate::{Error, Result};

/// Which error classes count as errors in `errorRate`.
///
/// The default counts the server's and the model's faults and excludes client errors:
/// a client sending bad requests to the canary says nothing about the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorClasses {
    /// Count [`ErrorClass::Server`].
    pub server: bool,
    /// Count [`ErrorClass::Model`].
    pub model: bool,
    /// Count [`ErrorClass::Client`].
    pub client: bool,
}

impl Default for ErrorClasses {
    fn default() -> Self {
        Self { server: true, model: true, client: false }
    }
}

impl ErrorClasses {
    fn counts(&self, class: ErrorClass) -> bool {
        match class {
            ErrorClass::Server => self.server,
            ErrorClass::Model => self.model,
            ErrorClass::Client => self.client,
        }
    }
}

/// A built-in metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BuiltinMetric {
    /// `requestCount`: requests answered in the window; samples = requests.
    RequestCount,
    /// `errorRate`: errors of the chosen classes / requests, in `[0, 1]`;
    /// samples = requests.
    ErrorRate(ErrorClasses),
    /// `latency` at a quantile in `[0, 1]`, in seconds, from the merged histogram
    /// (see [`histogram_quantile`]); samples = observations in the histogram.
    Latency {
        /// The quantile, e.g. 0.99.
        quantile: f64,
    },
    /// `meanLatency`: latency sum / count, in seconds; samples = observations.
    MeanLatency,
    /// `mirrorAgreementRate`: shadow copies whose every output agreed with the
    /// baseline's answer / copies compared; samples = copies compared.
    MirrorAgreementRate,
    /// `mirrorErrorRate`: copies the candidate failed on or did not finish in time /
    /// copies run; samples = copies run. Shed and unavailable copies never ran: they
    /// say nothing about the candidate and count in neither.
    MirrorErrorRate,
    /// `mirrorLatencyRatio` at a quantile: the candidate's CPU time over the
    /// baseline's on the same input; samples = observations.
    MirrorLatencyRatio {
        /// The quantile, e.g. 0.5.
        quantile: f64,
    },
    /// `mirrorNonFiniteRate`: compared copies whose answer held NaN or an infinity /
    /// copies compared; samples = copies compared.
    MirrorNonFiniteRate,
}

impl BuiltinMetric {
    /// `latency` at `quantile`.
    ///
    /// # Errors
    /// [`Error::InvalidQuantile`] unless `0 <= quantile <= 1`.
    pub fn latency(quantile: f64) -> Result<Self> {
        if (0.0..=1.0).contains(&quantile) {
            Ok(Self::Latency { quantile })
        } else {
            Err(Error::InvalidQuantile(quantile))
        }
    }

    /// `mirrorLatencyRatio` at `quantile`.
    ///
    /// # Errors
    /// [`Error::InvalidQuantile`] unless `0 <= quantile <= 1`.
    pub fn mirror_latency_ratio(quantile: f64) -> Result<Self> {
        Self::latency(quantile).map(|_| Self::MirrorLatencyRatio { quantile })
    }

    /// Whether the metric is measured on the candidate's shadow copies: there is no
    /// baseline value then (the baseline's requests are what is copied).
    pub fn is_mirror(&self) -> bool {
        matches!(
            self,
            Self::MirrorAgreementRate
                | Self::MirrorErrorRate
                | Self::MirrorLatencyRatio { .. }
                | Self::MirrorNonFiniteRate
        )
    }

    /// The metric on one series' window counters; a mirror metric on the copies of
    /// every baseline's requests (see [`sample_against`](Self::sample_against)).
    pub fn sample(&self, counters: &SeriesCounters) -> Sample {
        self.sample_against(counters, None)
    }

    /// [`sample`](Self::sample), a mirror metric on the copies of `baseline`'s
    /// requests only (of every baseline's when `None`).
    pub fn sample_against(&self, counters: &SeriesCounters, baseline: Option<i64>) -> Sample {
        let mirror = || counters.mirror.of(baseline);
        match *self {
            Self::RequestCount => {
                Sample { value: counters.requests as f64, samples: counters.requests }
            }
            Self::ErrorRate(classes) => {
                // Requests that failed in a class not counted leave the
                // denominator too: junk requests (client errors by default)
                // neither dilute a failing candidate nor count against it.
                let (mut errors, mut excluded) = (0u64, 0u64);
                for class in [ErrorClass::Server, ErrorClass::Model, ErrorClass::Client] {
                    let n = counters.errors.get(class);
                    if classes.counts(class) {
                        errors = errors.saturating_add(n);
                    } else {
                        excluded = excluded.saturating_add(n);
                    }
                }
                Sample::ratio(errors, counters.requests.saturating_sub(excluded))
            }
            Self::Latency { quantile } => Sample {
                value: histogram_quantile(quantile, &counters.latency),
                samples: counters.latency.count,
            },
            Self::MeanLatency => {
                let h = &counters.latency;
                let value = if h.count == 0 { f64::NAN } else { h.sum / h.count as f64 };
                Sample { value, samples: h.count }
            }
            Self::MirrorAgreementRate => {
                let m = mirror();
                Sample::ratio(m.agree, m.compared())
            }
            Self::MirrorErrorRate => {
                let m = mirror();
                Sample::ratio(m.error.saturating_add(m.timeout), m.run())
            }
            Self::MirrorLatencyRatio { quantile } => {
                let m = mirror();
                Sample {
                    value: histogram_quantile(quantile, &m.latency_ratio),
                    samples: m.latency_ratio.count,
                }
            }
            Self::MirrorNonFiniteRate => {
                let m = mirror();
                Sample::ratio(m.non_finite, m.compared())
            }
        }
    }

    /// The metric for the candidate and, when given, the baseline version of `model`,
    /// from the same window (never a baseline for the mirror metrics).
    ///
    /// `None` when no Pod contributed data to the window (every Pod was a first snapshot
    /// or a counter reset): that is no window at all, so take no measurement and measure
    /// again at the next poll. Recording it (as Inconclusive) would pause every rollout
    /// after an operator restart, whose first poll is only a baseline. A window with
    /// Pods but no requests is data: a quiet service, Inconclusive by `minSampleCount`.
    pub fn observe(
        &self,
        totals: &WindowTotals,
        model: &str,
        candidate: i64,
        baseline: Option<i64>,
    ) -> Option<Observation> {
        if self.is_mirror() {
            // The candidate's copies of the baseline's requests; no baseline value.
            return (totals.pods > 0).then(|| Observation {
                result: self.sample_against(&totals.get(model, candidate), baseline),
                baseline: None,
            });
        }
        (totals.pods > 0).then(|| Observation {
            result: self.sample(&totals.get(model, candidate)),
            baseline: baseline.map(|v| self.sample(&totals.get(model, v))),
        })
    }
}

/// A metric value and how many observations it rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The value; NaN when there were no observations.
    pub value: f64,
    /// Observations behind the value (requests, or histogram observations).
    pub samples: u64,
}

impl Sample {
    fn ratio(numerator: u64, denominator: u64) -> Self {
        // Counters read one by one may catch a copy in one and not yet the
        // other: a rate is never above 1.
        let numerator = numerator.min(denominator);
        let value = if denominator == 0 { f64::NAN } else { numerator as f64 / denominator as f64 };
        Self { value, samples: denominator }
    }
}

/// One window's measurement input: the candidate's sample and the baseline's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The candidate version (`result` in conditions).
    pub result: Sample,
    /// The baseline version in the same window (`baseline` in conditions), if any.
    pub baseline: Option<Sample>,
}

/// The `q`-quantile of a cumulative histogram, as Prometheus' `histogram_quantile`.
///
/// The rank `q * count` is located in the first bucket whose cumulative count reaches it,
/// and the value is interpolated linearly between that bucket's lower bound (the previous
/// bucket's `le`, or 0 for the first bucket) and its upper bound. Edges:
///
/// * no observations, or no finite buckets → NaN (nothing to interpolate);
/// * the rank falls in the implicit `+Inf` bucket → the largest finite `le`: the
///   quantile is known only to be at least that, so a `latency < X` condition with `X`
///   above the largest bound cannot pass on it while one below can still fail;
/// * `q = 0` → the lower bound of the first non-empty bucket;
/// * a first bucket with `le <= 0` → its `le`;
/// * non-monotonic buckets (inconsistent data) are read as monotonic (running maximum).
pub fn histogram_quantile(q: f64, h: &Histogram) -> f64 {
    if h.count == 0 || h.buckets.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    let rank = q.clamp(0.0, 1.0) * h.count as f64;
    let mut previous_le = 0.0;
    let mut previous_count = 0u64;
    for (i, bucket) in h.buckets.iter().enumerate() {
        let count = bucket.count.max(previous_count).min(h.count);
        if count > 0 && count as f64 >= rank {
            if i == 0 && bucket.le <= 0.0 {
                return bucket.le;
            }
            let in_bucket = (count - previous_count) as f64;
            let into = rank - previous_count as f64;
            return previous_le + (bucket.le - previous_le) * (into / in_bucket);
        }
        previous_le = bucket.le;
        previous_count = count;
    }
    previous_le
}

#[cfg(test)]
mod tests;
