//! One measurement's verdict: conditions (CEL) or a threshold range, and `minSampleCount`.
//!
//! Checked in this order, so that a quiet service never rolls back:
//!
//! 1. **Too few samples → Inconclusive, never Failed.** `result` with fewer than
//!    `minSampleCount` samples, or with none at all (whatever `minSampleCount` is), is
//!    Inconclusive; so is `baseline` when a condition references it.
//! 2. **NaN with samples → Error.** A built-in metric is NaN only without observations
//!    (handled above) or when the data cannot give a value (a histogram with no finite
//!    buckets): that is broken data, not a verdict on the candidate. A condition that
//!    references `baseline` when no baseline is measured is an Error too.
//! 3. **The criteria**, with Argo Rollouts' semantics (`utils/evaluate/evaluate.go`):
//!    * neither condition → Successful;
//!    * only `successCondition` → Successful if true, else Failed;
//!    * only `failureCondition` → Failed if true, else Successful;
//!    * both → Failed if the failure condition is true (it wins over a true success
//!      condition), else Successful if the success condition is true, else Inconclusive;
//!    * `thresholdRange {min, max}` (Flagger) → Successful if `min <= result <= max`
//!      (either bound optional), else Failed.
//!
//!    A condition that fails to evaluate, or yields anything but a bool, is an Error.
//!
//! Conditions see four variables: `result` and `baseline` (doubles: the candidate's and
//! the baseline version's value in the same window), `resultSamples` and
//! `baselineSamples` (ints), e.g. `result <= baseline * 1.2 || result < 0.05`.

use std::sync::Arc;

use cel::{Context, Program, Value};

use crate::metrics::{Observation, Sample};
use crate::run::{Measurement, MeasurementPhase};
use crate::{Error, Result, Timestamp};

/// The variables a condition can read.
pub const VARIABLES: [&str; 4] = ["result", "baseline", "resultSamples", "baselineSamples"];

/// A compiled `successCondition` or `failureCondition`. Compile once, evaluate often.
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    program: Arc<Program>,
    uses_baseline: bool,
}

impl Condition {
    /// Compiles `source`; `field` names it in errors (`successCondition`, ...).
    ///
    /// # Errors
    /// [`Error::InvalidExpression`] with the parser's position and message;
    /// [`Error::UnknownVariable`] for a variable not in [`VARIABLES`].
    pub fn compile(field: &'static str, source: &str) -> Result<Self> {
        let refuse = |column: usize, message: String| Error::InvalidExpression {
            column: isize::try_from(column).unwrap_or(isize::MAX),
            field,
            expression: source.chars().take(80).collect(),
            line: 1,
            message,
        };
        if source.len() > MAX_CONDITION_BYTES {
            return Err(refuse(
                MAX_CONDITION_BYTES,
                format!("longer than {MAX_CONDITION_BYTES} bytes (the condition length limit)"),
            ));
        }
        let program = Program::compile(source).map_err(|e| {
            let (line, column) = e.errors.first().map(|p| p.pos).unwrap_or((0, 0));
            let message = e.errors.iter().map(|p| p.msg.as_str()).collect::<Vec<_>>().join("; ");
            Error::InvalidExpression { field, expression: source.to_owned(), line, column, message }
        })?;
        if has_comprehension(program.expression()) {
            return Err(refuse(
                0,
                "comprehensions (map, filter, all, exists, existsOne) are not allowed: a condition compares numbers, and one nested in another can run for hours".into(),
            ));
        }
        let references = program.references();
        let mut variables = references.variables();
        variables.sort_unstable();
        if let Some(unknown) = variables.iter().find(|v| !VARIABLES.contains(v)) {
            return Err(Error::UnknownVariable {
                field,
                expression: source.to_owned(),
                variable: (*unknown).to_owned(),
            });
        }
        let uses_baseline =
            references.has_variable("baseline") || references.has_variable("baselineSamples");
        Ok(Self { source: source.to_owned(), program: Arc::new(program), uses_baseline })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression reads `baseline` or `baselineSamples`.
    pub fn uses_baseline(&self) -> bool {
        self.uses_baseline
    }

    fn eval(&self, obs: &Observation) -> Result<bool, String> {
        let mut context = Context::default();
        context.add_variable_from_value("result", obs.result.value);
        context.add_variable_from_value("resultSamples", clamp_i64(obs.result.samples));
        if let Some(baseline) = obs.baseline {
            context.add_variable_from_value("baseline", baseline.value);
            context.add_variable_from_value("baselineSamples", clamp_i64(baseline.samples));
        }
        match self.program.execute(&context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("`{}` gave {other:?}, not a bool", self.source)),
            Err(e) => Err(format!("could not evaluate `{}`: {e}", self.source)),
        }
    }
}

/// Longest condition accepted, in bytes.
pub const MAX_CONDITION_BYTES: usize = 1024;

/// Whether the parsed expression holds a comprehension (what every macro
/// like `map`, `all`, `exists`, `existsOne` or `filter` expands to): read
/// from the syntax tree that is evaluated, so no spelling, comment or
/// string trick hides one.
fn has_comprehension(e: &cel::IdedExpr) -> bool {
    use cel::common::ast::{EntryExpr, Expr};
    match &e.expr {
        Expr::Comprehension(_) => true,
        Expr::Call(call) => {
            call.target.as_deref().is_some_and(has_comprehension)
                || call.args.iter().any(has_comprehension)
        }
        Expr::List(list) => list.elements.iter().any(has_comprehension),
        Expr::Map(map) => map.entries.iter().any(|entry| match &entry.expr {
            EntryExpr::MapEntry(m) => has_comprehension(&m.key) || has_comprehension(&m.value),
            EntryExpr::StructField(f) => has_comprehension(&f.value),
        }),
        Expr::Struct(st) => st.entries.iter().any(|entry| match &entry.expr {
            EntryExpr::MapEntry(m) => has_comprehension(&m.key) || has_comprehension(&m.value),
            EntryExpr::StructField(f) => has_comprehension(&f.value),
        }),
        Expr::Select(select) => has_comprehension(&select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => false,
    }
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Flagger's `thresholdRange`: the value must lie within `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdRange {
    min: Option<f64>,
    max: Option<f64>,
}

impl ThresholdRange {
    /// A range with at least one bound.
    ///
    /// # Errors
    /// [`Error::InvalidThresholdRange`] with no bound, a NaN bound, or `min > max`.
    pub fn new(min: Option<f64>, max: Option<f64>) -> Result<Self> {
        match (min, max) {
            (None, None) => Err(Error::InvalidThresholdRange("needs min or max")),
            (Some(v), _) | (_, Some(v)) if v.is_nan() => {
                Err(Error::InvalidThresholdRange("bounds must be numbers"))
            }
            (Some(lo), Some(hi)) if lo > hi => {
                Err(Error::InvalidThresholdRange("min must not exceed max"))
            }
            _ => Ok(Self { min, max }),
        }
    }

    /// Whether `value` lies within the range, bounds included.
    pub fn contains(&self, value: f64) -> bool {
        self.min.is_none_or(|lo| value >= lo) && self.max.is_none_or(|hi| value <= hi)
    }
}

/// How a measurement is judged.
#[derive(Debug, Clone)]
pub enum Criteria {
    /// Argo's conditions; both `None` means every measurement succeeds.
    Conditions {
        /// `successCondition`.
        success: Option<Condition>,
        /// `failureCondition`.
        failure: Option<Condition>,
    },
    /// Flagger's `thresholdRange`.
    Range(ThresholdRange),
}

impl Criteria {
    fn uses_baseline(&self) -> bool {
        match self {
            Self::Conditions { success, failure } => {
                success.iter().chain(failure).any(Condition::uses_baseline)
            }
            Self::Range(_) => false,
        }
    }
}

/// A measurement's verdict and, unless Successful, why.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Successful, Failed, Inconclusive or Error.
    pub phase: MeasurementPhase,
    /// A one-line reason for anything but a plain pass.
    pub message: Option<String>,
}

impl Verdict {
    fn new(phase: MeasurementPhase, message: impl Into<Option<String>>) -> Self {
        Self { phase, message: message.into() }
    }

    /// The measurement to record: this verdict with the observed values (NaN → `None`).
    pub fn into_measurement(self, obs: &Observation, now: Timestamp) -> Measurement {
        let finite = |v: f64| (!v.is_nan()).then_some(v);
        Measurement {
            phase: self.phase,
            finished_at: now,
            value: finite(obs.result.value),
            baseline: obs.baseline.and_then(|b| finite(b.value)),
            samples: obs.result.samples,
            message: self.message,
        }
    }
}

/// Judges observations: [`Criteria`] plus `minSampleCount`; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Evaluator {
    criteria: Criteria,
    min_sample_count: u64,
}

impl Evaluator {
    /// An evaluator for `criteria` that needs `min_sample_count` samples.
    pub fn new(criteria: Criteria, min_sample_count: u64) -> Self {
        Self { criteria, min_sample_count }
    }

    /// The verdict on one window's observation.
    pub fn evaluate(&self, obs: &Observation) -> Verdict {
        use MeasurementPhase::{Error, Failed, Inconclusive, Successful};
        let uses_baseline = self.criteria.uses_baseline();
        if let Some(why) = self.too_few("result", &obs.result) {
            return Verdict::new(Inconclusive, why);
        }
        if uses_baseline {
            match &obs.baseline {
                None => {
                    return Verdict::new(
                        Error,
                        "a condition reads `baseline`, none measured".to_owned(),
                    );
                }
                Some(b) => {
                    if let Some(why) = self.too_few("baseline", b) {
                        return Verdict::new(Inconclusive, why);
                    }
                }
            }
        }
        if obs.result.value.is_nan() {
            return Verdict::new(Error, "result is NaN".to_owned());
        }
        if uses_baseline && obs.baseline.is_some_and(|b| b.value.is_nan()) {
            return Verdict::new(Error, "baseline is NaN".to_owned());
        }
        match &self.criteria {
            Criteria::Range(range) => {
                if range.contains(obs.result.value) {
                    Verdict::new(Successful, None)
                } else {
                    Verdict::new(Failed, format!("{} outside thresholdRange", obs.result.value))
                }
            }
            Criteria::Conditions { success, failure } => {
                let run = |c: &Option<Condition>| c.as_ref().map(|c| c.eval(obs)).transpose();
                let (s, f) = match (run(success), run(failure)) {
                    (Ok(s), Ok(f)) => (s, f),
                    (Err(e), _) | (_, Err(e)) => return Verdict::new(Error, e),
                };
                let (s, f) = match (s, f) {
                    (None, None) => return Verdict::new(Successful, None),
                    (Some(s), None) => (s, !s),
                    (None, Some(f)) => (!f, f),
                    (Some(s), Some(f)) => (s, f),
                };
                if f {
                    Verdict::new(Failed, "failure condition met".to_owned())
                } else if s {
                    Verdict::new(Successful, None)
                } else {
                    Verdict::new(Inconclusive, "neither condition met".to_owned())
                }
            }
        }
    }

    fn too_few(&self, what: &str, sample: &Sample) -> Option<String> {
        (sample.samples == 0 || sample.samples < self.min_sample_count).then(|| {
            format!("{what}: {} samples < minSampleCount {}", sample.samples, self.min_sample_count)
        })
    }
}

#[cfg(test)]
mod tests;
