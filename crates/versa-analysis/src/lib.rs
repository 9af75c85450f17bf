//! The pure decision core of automated canaries (issue 19).
//!
//! No Kubernetes, no I/O, no async: plain data in, plain data out, so that every
//! decision is a function of (spec, status, measurements, now) and the operator can
//! resume from `status` after a restart. The pipeline, one module per stage:
//!
//! 1. [`counters`]: a [`Snapshot`] of one Pod's cumulative per-(model, version)
//!    counters; [`delta`] of two snapshots of the same Pod is a window, a baseline or a
//!    detected counter reset (never negative or huge deltas); [`WindowTotals::merge`]
//!    sums the windows of all Pods.
//! 2. [`metrics`]: the built-in metrics (`requestCount`, `errorRate`, `latency` at a
//!    quantile, `meanLatency`) computed from merged window totals, for the candidate
//!    (`result`) and for the baseline version in the same window (`baseline`).
//! 3. [`evaluate`]: one measurement's verdict from `successCondition` /
//!    `failureCondition` (CEL) or a `thresholdRange`, with `minSampleCount`.
//! 4. [`run`]: Argo's analysis-run state machine per metric (`interval`, `count`,
//!    `initialDelay`, `failureLimit`, `consecutiveErrorLimit`, `inconclusiveLimit`,
//!    `dryRun`) and the run's overall phase.
//! 5. [`canary`]: the step machine (`setWeight`, `pause`, `analysis`, Flagger's
//!    `stepWeights`), a pure [`canary::next`] returning the next [`canary::Decision`].
//!
//! # One operator pass
//!
//! ```text
//! decision = canary::next(strategy, status.rollout, observed)   // weight, runs to measure
//! for each run in decision.analyses, each metric with spec.is_due(status, run.started_at, now):
//!     windows  = for each Ready Pod: delta(previous snapshot, snapshot now)   // keep "now"
//!     totals   = WindowTotals::merge(windows)            // Err → Measurement::error
//!     obs      = metric.observe(totals, model, candidate, Some(baseline))
//!                // None (no Pod had a window): record nothing, measure at the next poll
//!     status.record(spec, evaluator.evaluate(obs).into_measurement(obs, now))
//! observed.step_analysis / background_analysis = RunInput { run, assess_run(metrics) }
//! write decision.state (+ metric statuses) to status, clear the command, apply the weight,
//! emit decision.events, requeue at min(decision.requeue_at, run_next_due(..))
//! ```
//!
//! Snapshots are kept per (Pod, metric) in memory only: after an operator restart
//! the first poll is a baseline, and the next one a window. Take the run's first
//! snapshots when it starts (the step's weight in force), so no window mixes weights.
#![forbid(unsafe_code)]

pub mod canary;
pub mod counters;
mod error;
pub mod evaluate;
pub mod metrics;
pub mod run;
mod time;

pub use counters::{
    Bucket, ErrorClass, ErrorCounts, Histogram, MirrorCounts, Mirrors, PodWindow, ResetReason,
    SeriesCounters, SeriesKey, Snapshot, WindowTotals, delta,
};
pub use error::{Error, Result};
pub use evaluate::{Condition, Criteria, Evaluator, ThresholdRange, Verdict};
pub use metrics::{BuiltinMetric, ErrorClasses, Observation, Sample};
pub use run::{
    Measurement, MeasurementPhase, MetricPhase, MetricSpec, MetricStatus, RunPhase, RunState,
};
pub use time::Timestamp;
