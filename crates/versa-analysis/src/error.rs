//! The crate's one error type: everything here is a validation error of a spec the user
//! must fix, or data the sidecars reported that cannot be combined.

/// Errors of this crate.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A `successCondition` / `failureCondition` does not compile as CEL.
    #[error("{field}: invalid CEL expression `{expression}` at {line}:{column}: {message}")]
    InvalidExpression {
        /// `successCondition` or `failureCondition`.
        field: &'static str,
        /// The expression as written.
        expression: String,
        /// 1-based line of the first error (0 when the parser gave none).
        line: isize,
        /// Column of the first error, as the CEL parser reports it.
        column: isize,
        /// The parser's message(s).
        message: String,
    },
    /// A condition reads a variable that is not one of `result`, `baseline`,
    /// `resultSamples`, `baselineSamples` (a typo would otherwise be an Error at every
    /// measurement, and abort the rollout after `consecutiveErrorLimit`).
    #[error("{field}: `{expression}` reads `{variable}`; known: {known}", known = crate::evaluate::VARIABLES.join(", "))]
    UnknownVariable {
        /// `successCondition` or `failureCondition`.
        field: &'static str,
        /// The expression as written.
        expression: String,
        /// The unknown variable.
        variable: String,
    },
    /// A `thresholdRange` with neither bound, a NaN bound, or `min > max`.
    #[error("thresholdRange: {0}")]
    InvalidThresholdRange(&'static str),
    /// A latency quantile outside `[0, 1]` (or NaN).
    #[error("latency quantile must be within [0, 1], got {0}")]
    InvalidQuantile(f64),
    /// A metric spec that cannot run (e.g. `count: 0` with an interval).
    #[error("metric `{metric}`: {reason}")]
    InvalidMetric {
        /// The metric's name.
        metric: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A canary strategy that cannot run.
    #[error("canary strategy: {0}")]
    InvalidStrategy(String),
    /// Two Pods report the same series with different histogram bucket bounds, so their
    /// buckets cannot be added (e.g. mid-upgrade of the sidecar). The window has no
    /// usable data for that series.
    #[error("model {model} version {version}: histogram bucket bounds differ between Pods")]
    BucketLayoutMismatch {
        /// Model name.
        model: String,
        /// Model version.
        version: i64,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
