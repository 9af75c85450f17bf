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
#![forbid(unsafe_code)]

pub mod canary;
pub mod counters;
mod error;
pub mod evaluate;
pub mod metrics;
pub mod run;
mod time;

pub use counters::{
    Bucket, ErrorClass, ErrorCounts, Histogram, PodWindow, ResetReason, SeriesCounters, SeriesKey,
    Snapshot, WindowTotals, delta,
};
pub use error::{Error, Result};
pub use evaluate::{Condition, Criteria, Evaluator, ThresholdRange, Verdict};
pub use metrics::{BuiltinMetric, ErrorClasses, Observation, Sample};
pub use run::{
    Measurement, MeasurementPhase, MetricPhase, MetricSpec, MetricStatus, RunPhase, RunState,
};
pub use time::Timestamp;
