//! The analysis run: Argo Rollouts' per-metric state machine, resumable from status.
//!
//! A metric is measured first at `runStart + initialDelay`, then every `interval` after
//! its last measurement (10 s after a measurement that was an Error, as Argo retries),
//! until it is decided. Each measurement is recorded into a [`MetricStatus`] with
//! [`MetricStatus::record`]; the status keeps the counts (not only the last few
//! measurements), so the phase is a pure function of (spec, status) and the due time of
//! (spec, status, run start): an operator restarted mid-run resumes from status.
//!
//! A metric's phase ([`MetricSpec::assess`]):
//! * `Pending`: nothing measured yet;
//! * `Failed`: `failed > failureLimit` (default 0: the first Failed measurement fails the
//!   metric; a negative limit disables it);
//! * `Inconclusive`: `inconclusive > inconclusiveLimit` (default 0);
//! * `Error`: `consecutiveErrors > consecutiveErrorLimit` (default 4: the fifth Error in a
//!   row; any other outcome resets the streak);
//! * `Successful`: `count` measurements taken, Errors not counted (without `count` and
//!   `interval`, one measurement; with `interval` and no `count`, the metric runs until the
//!   run is stopped, e.g. background analysis until promotion);
//! * otherwise `Running`.
//!
//! Phases other than Pending and Running are final: further measurements are not recorded.
//!
//! The run's phase ([`assess_run`]) is decided by the non-`dryRun` metrics only; a dry-run
//! metric is measured and recorded like any other but never decides. Precedence, worst
//! first, as Argo's: Failed > Error > Inconclusive > Successful. Unlike Argo, which waits
//! for every metric to complete, the run is decided as soon as one deciding metric is
//! Failed, Error or Inconclusive: phases are final, so waiting would only keep traffic on
//! a candidate already judged (the phase is the worst of the metrics decided so far).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, Timestamp};

/// The delay before measuring again after a measurement that was an Error.
pub const ERROR_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// How many recent measurements a [`MetricStatus`] keeps (the counts cover all).
pub const MEASUREMENT_HISTORY: usize = 10;

/// The verdict of one measurement.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeasurementPhase {
    /// The criteria passed.
    Successful,
    /// The criteria failed.
    Failed,
    /// No verdict: too few samples, or neither condition held.
    Inconclusive,
    /// The measurement could not be taken or evaluated.
    Error,
}

/// The phase of a metric or of a whole analysis run.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AnalysisPhase {
    /// Nothing measured yet.
    #[default]
    Pending,
    /// Measuring, not decided.
    Running,
    /// Passed.
    Successful,
    /// Failed: a rollout aborts (or pauses, with `onFailure: Pause`).
    Failed,
    /// Too many consecutive errors: treated like Failed by the rollout.
    Error,
    /// Too many inconclusive measurements: a rollout pauses (or aborts).
    Inconclusive,
}

/// A metric's phase.
pub type MetricPhase = AnalysisPhase;
/// A run's phase.
pub type RunPhase = AnalysisPhase;

impl AnalysisPhase {
    /// Whether the phase is final.
    pub fn is_completed(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }

    /// Argo's order of completed phases, best to worst.
    fn badness(self) -> u8 {
        match self {
            Self::Successful => 0,
            Self::Running => 1,
            Self::Pending => 2,
            Self::Inconclusive => 3,
            Self::Error => 4,
            Self::Failed => 5,
        }
    }
}

/// One recorded measurement.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// Its verdict.
    pub phase: MeasurementPhase,
    /// When it was taken.
    pub finished_at: Timestamp,
    /// The candidate's value (`None` when NaN or not measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The baseline's value in the same window, if measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// Samples behind `value`.
    #[serde(default)]
    pub samples: u64,
    /// Why, unless a plain pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Measurement {
    /// A measurement that could not be taken (the sidecars could not be read, their
    /// histograms could not be merged, ...): an Error, retried after
    /// [`ERROR_RETRY_INTERVAL`] and counted towards `consecutiveErrorLimit`.
    pub fn error(now: Timestamp, message: impl Into<String>) -> Self {
        Self {
            phase: MeasurementPhase::Error,
            finished_at: now,
            value: None,
            baseline: None,
            samples: 0,
            message: Some(message.into()),
        }
    }

    /// A window with nothing to judge (no Ready Pod: scaled to zero,
    /// drained): Inconclusive, like a quiet service, never Failed or Error.
    pub fn inconclusive(now: Timestamp, message: impl Into<String>) -> Self {
        Self { phase: MeasurementPhase::Inconclusive, ..Self::error(now, message) }
    }
}

/// Longest `message` of a measurement kept in status (bytes): with many
/// Pods and metrics, unbounded messages would push the object past the
/// API server's size limit and freeze every status write.
pub const MAX_MEASUREMENT_MESSAGE: usize = 256;

/// `message` cut to [`MAX_MEASUREMENT_MESSAGE`] bytes at a character, with
/// an ellipsis when cut.
pub fn bounded_message(message: &str) -> String {
    if message.len() <= MAX_MEASUREMENT_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_MEASUREMENT_MESSAGE - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// A metric's progress, as kept in status.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MetricStatus {
    /// The metric's phase after the last recorded measurement.
    pub phase: MetricPhase,
    /// Measurements that count towards `count` (all but Errors).
    pub count: u32,
    /// Successful measurements.
    pub successful: u32,
    /// Failed measurements.
    pub failed: u32,
    /// Inconclusive measurements.
    pub inconclusive: u32,
    /// Error measurements.
    pub error: u32,
    /// Errors in a row, up to the last measurement.
    pub consecutive_error: u32,
    /// The last [`MEASUREMENT_HISTORY`] measurements, oldest first.
    pub measurements: Vec<Measurement>,
}

/// One metric of an analysis: when to measure and how many outcomes it tolerates.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// The metric's name.
    pub name: String,
    /// Time between measurements; `None` with no `count` means one measurement.
    pub interval: Option<Duration>,
    /// Measurements to take (Errors excluded); `None`: one without `interval`,
    /// unbounded with it.
    pub count: Option<u32>,
    /// Delay from the run's start to the first measurement.
    pub initial_delay: Option<Duration>,
    /// Failed measurements tolerated (default 0); negative: unlimited.
    pub failure_limit: i32,
    /// Errors in a row tolerated (default 4).
    pub consecutive_error_limit: u32,
    /// Inconclusive measurements tolerated (default 0).
    pub inconclusive_limit: u32,
    /// Measured and recorded, never deciding the run.
    pub dry_run: bool,
}

impl MetricSpec {
    /// A metric with Argo's defaults: one measurement, `failureLimit: 0`,
    /// `consecutiveErrorLimit: 4`, `inconclusiveLimit: 0`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            interval: None,
            count: None,
            initial_delay: None,
            failure_limit: 0,
            consecutive_error_limit: 4,
            inconclusive_limit: 0,
            dry_run: false,
        }
    }

    /// Checks the spec can run.
    ///
    /// # Errors
    /// [`Error::InvalidMetric`] for `count: 0`, a zero `interval`, or `count > 1`
    /// without an `interval`.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason| Err(Error::InvalidMetric { metric: self.name.clone(), reason });
        match (self.count, self.interval) {
            (Some(0), _) => invalid("count must be at least 1"),
            (_, Some(i)) if i.is_zero() => invalid("interval must be positive"),
            (Some(n), None) if n > 1 => invalid("count > 1 needs an interval"),
            _ => Ok(()),
        }
    }

    /// Measurements after which the metric is Successful; `None`: unbounded.
    pub fn effective_count(&self) -> Option<u32> {
        match (self.count, self.interval) {
            (Some(n), _) => Some(n),
            (None, None) => Some(1),
            (None, Some(_)) => None,
        }
    }

    /// The metric's phase from its counts; see the [module docs](self).
    pub fn assess(&self, status: &MetricStatus) -> MetricPhase {
        if status.count == 0 && status.error == 0 {
            return AnalysisPhase::Pending;
        }
        let failure_limit = u32::try_from(self.failure_limit).ok();
        if failure_limit.is_some_and(|limit| status.failed > limit) {
            AnalysisPhase::Failed
        } else if status.inconclusive > self.inconclusive_limit {
            AnalysisPhase::Inconclusive
        } else if status.consecutive_error > self.consecutive_error_limit {
            AnalysisPhase::Error
        } else if self.effective_count().is_some_and(|n| status.count >= n) {
            AnalysisPhase::Successful
        } else {
            AnalysisPhase::Running
        }
    }

    /// When the next measurement is due, or `None` when the metric is decided.
    /// `run_started_at` is when the analysis run began (e.g. when the step's weight
    /// was first in force).
    pub fn next_due(&self, status: &MetricStatus, run_started_at: Timestamp) -> Option<Timestamp> {
        if self.assess(status).is_completed() {
            return None;
        }
        let Some(last) = status.measurements.last() else {
            return Some(run_started_at.saturating_add(self.initial_delay.unwrap_or_default()));
        };
        let wait = match (last.phase, self.interval) {
            (MeasurementPhase::Error, _) => ERROR_RETRY_INTERVAL,
            (_, Some(interval)) => interval,
            // a count reached without interval is completed above; this is a retry
            (_, None) => ERROR_RETRY_INTERVAL,
        };
        Some(last.finished_at.saturating_add(wait))
    }

    /// Whether a measurement is due at `now`.
    pub fn is_due(&self, status: &MetricStatus, run_started_at: Timestamp, now: Timestamp) -> bool {
        self.next_due(status, run_started_at).is_some_and(|due| due <= now)
    }
}

impl MetricStatus {
    /// Records a measurement and updates the counts and the phase; returns `false`
    /// (status unchanged) when the metric was already decided.
    pub fn record(&mut self, spec: &MetricSpec, mut measurement: Measurement) -> bool {
        if spec.assess(self).is_completed() {
            return false;
        }
        measurement.message = measurement.message.as_deref().map(bounded_message);
        match measurement.phase {
            MeasurementPhase::Error => {
                self.error += 1;
                self.consecutive_error += 1;
            }
            phase => {
                self.count += 1;
                self.consecutive_error = 0;
                match phase {
                    MeasurementPhase::Successful => self.successful += 1,
                    MeasurementPhase::Failed => self.failed += 1,
                    _ => self.inconclusive += 1,
                }
            }
        }
        self.measurements.push(measurement);
        let excess = self.measurements.len().saturating_sub(MEASUREMENT_HISTORY);
        self.measurements.drain(..excess);
        self.phase = spec.assess(self);
        true
    }
}

/// The run's phase and, when decided against the candidate, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    /// The run's phase.
    pub phase: RunPhase,
    /// Which metric decided it, and how.
    pub message: Option<String>,
}

/// The run's phase from its metrics; see the [module docs](self). A run without metrics
/// is Successful.
pub fn assess_run<'a>(
    metrics: impl IntoIterator<Item = (&'a MetricSpec, &'a MetricStatus)>,
) -> RunState {
    let mut worst: Option<(&MetricSpec, &MetricStatus, MetricPhase)> = None;
    let (mut all_completed, mut all_pending) = (true, true);
    for (spec, status) in metrics {
        let phase = spec.assess(status);
        all_completed &= phase.is_completed();
        all_pending &= phase == AnalysisPhase::Pending;
        if spec.dry_run || !phase.is_completed() || phase == AnalysisPhase::Successful {
            continue;
        }
        if worst.is_none_or(|(_, _, w)| phase.badness() > w.badness()) {
            worst = Some((spec, status, phase));
        }
    }
    if let Some((spec, status, phase)) = worst {
        return RunState { phase, message: Some(decided_because(spec, status, phase)) };
    }
    let phase = if all_completed {
        AnalysisPhase::Successful
    } else if all_pending {
        AnalysisPhase::Pending
    } else {
        AnalysisPhase::Running
    };
    RunState { phase, message: None }
}

fn decided_because(spec: &MetricSpec, status: &MetricStatus, phase: MetricPhase) -> String {
    let why = match phase {
        AnalysisPhase::Failed => {
            format!("failed ({}) > failureLimit ({})", status.failed, spec.failure_limit)
        }
        AnalysisPhase::Inconclusive => format!(
            "inconclusive ({}) > inconclusiveLimit ({})",
            status.inconclusive, spec.inconclusive_limit
        ),
        _ => format!(
            "consecutiveErrors ({}) > consecutiveErrorLimit ({})",
            status.consecutive_error, spec.consecutive_error_limit
        ),
    };
    let last = status.measurements.last().and_then(|m| m.message.as_deref());
    match last {
        Some(last) => format!("metric `{}` assessed {phase:?}: {why}: {last}", spec.name),
        None => format!("metric `{}` assessed {phase:?}: {why}", spec.name),
    }
}

/// The earliest due time of the run's undecided metrics, for requeueing.
pub fn run_next_due<'a>(
    metrics: impl IntoIterator<Item = (&'a MetricSpec, &'a MetricStatus)>,
    run_started_at: Timestamp,
) -> Option<Timestamp> {
    metrics.into_iter().filter_map(|(spec, status)| spec.next_due(status, run_started_at)).min()
}

#[cfg(test)]
mod tests;
