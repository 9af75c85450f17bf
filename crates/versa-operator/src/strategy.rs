//! A model's `strategy.canary` as the decision core runs it: durations
//! parsed, CEL conditions compiled once, Flagger's shorthand expanded, the
//! metrics of each analysis step and of the background analysis with their
//! evaluators. Pure: a spec in, a [`CompiledCanary`] or every problem out
//! (the messages are what `validate` reports).

use std::collections::BTreeMap;
use std::time::Duration;
use versa_analysis::canary::{self, Step};
use versa_analysis::{
    BuiltinMetric, Condition, Criteria, ErrorClasses, Evaluator, MetricSpec, ThresholdRange,
};
use versa_crd::strategy::{
    AnalysisMetric, BuiltinMetricName, CanaryStep, CanaryStrategy, ErrorClassName, Reaction,
};

#[cfg(test)]
mod tests;

/// Where a metric's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The sidecars' own counters.
    Builtin(BuiltinMetric),
    /// A Prometheus instant query.
    Prometheus { address: String, query: String },
}

/// One metric, ready to measure.
#[derive(Debug, Clone)]
pub struct CompiledMetric {
    pub spec: MetricSpec,
    pub source: Source,
    pub evaluator: Evaluator,
}

/// A model's canary, ready to run.
#[derive(Debug, Clone)]
pub struct CompiledCanary {
    pub canary_label: String,
    pub strategy: canary::CanaryStrategy,
    /// The metrics of each `analysis` step, by step index.
    pub step_metrics: BTreeMap<usize, Vec<CompiledMetric>>,
    /// The background analysis's metrics (empty: none).
    pub background: Vec<CompiledMetric>,
    pub unload_delay: Duration,
    pub abort_unload_delay: Duration,
    pub paused: bool,
    /// How the `setMirror` steps sample and compare.
    pub mirror: versa_crd::MirrorSettings,
}

/// Compiles `model`'s canary; every problem is named with its field path.
pub fn compile(model: &str, spec: &CanaryStrategy) -> Result<CompiledCanary, Vec<String>> {
    let mut problems = Vec::new();
    let at = |field: &str| format!("model {model}: strategy.canary.{field}");
    let mut step_metrics = BTreeMap::new();
    let strategy = if !spec.step_weights.is_empty() {
        if !spec.steps.is_empty() {
            problems.push(format!("{}: set steps or stepWeights, not both", at("stepWeights")));
        }
        let interval = match spec.interval.as_deref().map(parse_duration) {
            Some(Some(d)) => d,
            Some(None) => {
                problems.push(format!("{}: not a duration like 30s, 5m or 1h", at("interval")));
                Duration::from_secs(60)
            }
            None => {
                problems.push(format!("{}: stepWeights needs an interval", at("interval")));
                Duration::from_secs(60)
            }
        };
        canary::CanaryStrategy::from_step_weights(&spec.step_weights, interval).unwrap_or_else(
            |e| {
                problems.push(format!("{}: {e}", at("stepWeights")));
                canary::CanaryStrategy::new(Vec::new())
            },
        )
    } else {
        let mut steps = Vec::new();
        for (i, step) in spec.steps.iter().enumerate() {
            let field = at(&format!("steps[{i}]"));
            match compile_step(&field, step, &mut problems) {
                Some((step, metrics)) => {
                    if let Some(metrics) = metrics {
                        step_metrics.insert(i, metrics);
                    }
                    steps.push(step);
                }
                None => steps.push(Step::Pause(None)),
            }
        }
        canary::CanaryStrategy::new(steps)
    };
    let mut background = Vec::new();
    let mut background_start = None;
    if let Some(analysis) = &spec.analysis {
        background = compile_metrics(&at("analysis"), &analysis.metrics, &mut problems);
        background_start = Some(analysis.starting_step as usize);
    } else if !spec.step_weights.is_empty() {
        problems.push(format!(
            "{}: stepWeights are judged by the background analysis: add analysis.metrics",
            at("analysis")
        ));
    }
    let strategy = canary::CanaryStrategy {
        background: background_start
            .map(|starting_step| canary::BackgroundAnalysis { starting_step })
            .or(strategy.background),
        on_inconclusive: reaction(spec.on_inconclusive),
        on_failure: reaction(spec.on_failure),
        progress_deadline: Some(Duration::from_secs(spec.progress_deadline_seconds)),
        ..strategy
    };
    mirror_metrics_have_copies(&strategy, &step_metrics, &background, &at, &mut problems);
    if let Err(e) = strategy.validate() {
        problems.push(format!("model {model}: strategy.canary: {e}"));
    }
    if strategy.steps.is_empty() {
        problems.push(format!("{}: at least one step", at("steps")));
    }
    if spec.canary_label.is_empty() || spec.canary_label == "stable" {
        problems.push(format!(
            "{}: {:?} cannot name the candidate",
            at("canaryLabel"),
            spec.canary_label
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(CompiledCanary {
        canary_label: spec.canary_label.clone(),
        strategy,
        step_metrics,
        background,
        unload_delay: Duration::from_secs(spec.unload_delay_seconds),
        abort_unload_delay: Duration::from_secs(spec.abort_unload_delay_seconds),
        paused: spec.paused,
        mirror: spec.mirror.clone().unwrap_or_default(),
    })
}

/// A mirror metric measures the candidate's shadow copies: in an `analysis`
/// step where no `setMirror` is in force, or in a background analysis of a
/// strategy that never mirrors, it could only ever be Inconclusive.
fn mirror_metrics_have_copies(
    strategy: &canary::CanaryStrategy,
    step_metrics: &BTreeMap<usize, Vec<CompiledMetric>>,
    background: &[CompiledMetric],
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<String>,
) {
    let is_mirror = |m: &CompiledMetric| matches!(&m.source, Source::Builtin(b) if b.is_mirror());
    for (i, metrics) in step_metrics {
        if strategy.mirror_at(*i) > 0 {
            continue;
        }
        for m in metrics.iter().filter(|m| is_mirror(m)) {
            problems.push(format!(
                "{}: metric {} measures shadow copies, but no setMirror above 0 is in force at this step",
                at(&format!("steps[{i}].analysis")),
                m.spec.name
            ));
        }
    }
    let from = strategy.background.map_or(0, |b| b.starting_step);
    if let Some(quiet) = (from..strategy.steps.len()).find(|i| strategy.mirror_at(*i) == 0) {
        for m in background.iter().filter(|m| is_mirror(m)) {
            problems.push(format!(
                "{}: metric {} measures shadow copies, but step {quiet} has no setMirror above 0 in force (the background analysis runs from startingStep to the end)",
                at("analysis"),
                m.spec.name
            ));
        }
    }
}

fn reaction(r: Reaction) -> canary::Reaction {
    match r {
        Reaction::Pause => canary::Reaction::Pause,
        Reaction::Abort => canary::Reaction::Abort,
    }
}

type CompiledStep = (Step, Option<Vec<CompiledMetric>>);

fn compile_step(
    field: &str,
    step: &CanaryStep,
    problems: &mut Vec<String>,
) -> Option<CompiledStep> {
    let set = [
        step.set_weight.is_some(),
        step.set_mirror.is_some(),
        step.pause.is_some(),
        step.analysis.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        problems.push(format!(
            "{field}: a step is exactly one of setWeight, setMirror, pause, analysis"
        ));
        return None;
    }
    if let Some(m) = &step.set_mirror {
        if m.percent > 100 {
            problems.push(format!("{field}.setMirror.percent: {} exceeds 100", m.percent));
        }
        return Some((Step::SetMirror(m.percent), None));
    }
    if let Some(w) = step.set_weight {
        if w > 100 {
            problems.push(format!("{field}.setWeight: {w} exceeds 100"));
        }
        return Some((Step::SetWeight(w), None));
    }
    if let Some(pause) = &step.pause {
        return match pause.duration.as_deref().map(parse_duration) {
            None => Some((Step::Pause(None), None)),
            Some(Some(d)) => Some((Step::Pause(Some(d)), None)),
            Some(None) => {
                problems.push(format!("{field}.pause.duration: not a duration like 30s or 5m"));
                None
            }
        };
    }
    let analysis = step.analysis.as_ref()?;
    let metrics = compile_metrics(&format!("{field}.analysis"), &analysis.metrics, problems);
    if analysis.metrics.is_empty() {
        problems.push(format!("{field}.analysis.metrics: at least one metric"));
    }
    for m in analysis.metrics.iter().filter(|m| m.interval.is_some() && m.count.is_none()) {
        problems.push(format!(
            "{field}.analysis.metrics[{}]: an analysis step needs a count (with an interval alone the metric measures forever and the step never ends; use the background analysis for that)",
            m.name
        ));
    }
    Some((Step::Analysis, Some(metrics)))
}

fn compile_metrics(
    field: &str,
    metrics: &[AnalysisMetric],
    problems: &mut Vec<String>,
) -> Vec<CompiledMetric> {
    let mut names = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for metric in metrics {
        let field = format!("{field}.metrics[{}]", metric.name);
        if !names.insert(metric.name.as_str()) {
            problems.push(format!("{field}: metric names must be unique"));
        }
        if let Some(m) = compile_metric(&field, metric, problems) {
            out.push(m);
        }
    }
    out
}

fn compile_metric(
    field: &str,
    m: &AnalysisMetric,
    problems: &mut Vec<String>,
) -> Option<CompiledMetric> {
    let before = problems.len();
    let mut duration = |name: &str, value: &Option<String>| {
        value.as_deref().and_then(|v| {
            let d = parse_duration(v);
            if d.is_none() {
                problems.push(format!("{field}.{name}: {v:?} is not a duration like 30s or 5m"));
            }
            d
        })
    };
    let spec = MetricSpec {
        interval: duration("interval", &m.interval),
        initial_delay: duration("initialDelay", &m.initial_delay),
        count: m.count,
        failure_limit: m.failure_limit.unwrap_or(0),
        consecutive_error_limit: m.consecutive_error_limit.unwrap_or(4),
        inconclusive_limit: m.inconclusive_limit.unwrap_or(0),
        dry_run: m.dry_run,
        ..MetricSpec::new(&m.name)
    };
    if let Err(e) = spec.validate() {
        problems.push(format!("{field}: {e}"));
    }
    let criteria = criteria(field, m, problems);
    let source = source(field, m, problems);
    if matches!(source, Some(Source::Builtin(_)))
        && spec.interval.is_none()
        && spec.initial_delay.is_none()
    {
        problems.push(format!(
            "{field}: a builtin metric measures the requests of a window: set interval (or initialDelay for one measurement)"
        ));
    }
    if problems.len() > before {
        return None;
    }
    let evaluator = Evaluator::new(criteria?, m.min_sample_count.unwrap_or(1));
    Some(CompiledMetric { spec, source: source?, evaluator })
}

fn criteria(field: &str, m: &AnalysisMetric, problems: &mut Vec<String>) -> Option<Criteria> {
    let conditions = m.success_condition.is_some() || m.failure_condition.is_some();
    match (&m.threshold_range, conditions) {
        (Some(_), true) => {
            problems.push(format!("{field}: set thresholdRange or conditions, not both"));
            None
        }
        (Some(range), false) => match ThresholdRange::new(range.min, range.max) {
            Ok(r) => Some(Criteria::Range(r)),
            Err(e) => {
                problems.push(format!("{field}.thresholdRange: {e}"));
                None
            }
        },
        (None, false) => {
            problems.push(format!(
                "{field}: needs successCondition, failureCondition or thresholdRange"
            ));
            None
        }
        (None, true) => {
            let mut compile = |name: &'static str, source: &Option<String>| match source {
                None => Some(None),
                Some(s) => match Condition::compile(name, s) {
                    Ok(c) => Some(Some(c)),
                    Err(e) => {
                        problems.push(format!("{field}.{name}: {e}"));
                        None
                    }
                },
            };
            let success = compile("successCondition", &m.success_condition);
            let failure = compile("failureCondition", &m.failure_condition);
            Some(Criteria::Conditions { success: success?, failure: failure? })
        }
    }
}

fn source(field: &str, m: &AnalysisMetric, problems: &mut Vec<String>) -> Option<Source> {
    match (&m.provider.builtin, &m.provider.prometheus) {
        (Some(b), None) => {
            let metric = match b.metric {
                BuiltinMetricName::RequestCount => BuiltinMetric::RequestCount,
                BuiltinMetricName::MeanLatency => BuiltinMetric::MeanLatency,
                BuiltinMetricName::ErrorRate => {
                    BuiltinMetric::ErrorRate(error_classes(&b.error_classes))
                }
                BuiltinMetricName::MirrorAgreementRate => BuiltinMetric::MirrorAgreementRate,
                BuiltinMetricName::MirrorErrorRate => BuiltinMetric::MirrorErrorRate,
                BuiltinMetricName::MirrorNonFiniteRate => BuiltinMetric::MirrorNonFiniteRate,
                name @ (BuiltinMetricName::Latency | BuiltinMetricName::MirrorLatencyRatio) => {
                    let mirror = name == BuiltinMetricName::MirrorLatencyRatio;
                    let q = b.quantile.unwrap_or(if mirror { 0.5 } else { 0.99 });
                    let metric = if mirror {
                        BuiltinMetric::mirror_latency_ratio(q)
                    } else {
                        BuiltinMetric::latency(q)
                    };
                    match metric {
                        Ok(m) if q > 0.0 => m,
                        _ => {
                            problems.push(format!(
                                "{field}.provider.builtin.quantile: {q} is not in (0, 1]"
                            ));
                            return None;
                        }
                    }
                }
            };
            Some(Source::Builtin(metric))
        }
        (None, Some(p)) => {
            if !(p.address.starts_with("http://") || p.address.starts_with("https://")) {
                problems.push(format!(
                    "{field}.provider.prometheus.address: {:?} must be an http(s) URL",
                    p.address
                ));
                return None;
            }
            // Refused rather than run as an ever-failing measurement: a
            // rollout would abort on it after consecutiveErrorLimit errors.
            problems.push(format!(
                "{field}.provider.prometheus: not measured by this version of the operator yet; use provider.builtin"
            ));
            None
        }
        _ => {
            problems.push(format!("{field}.provider: set exactly one of builtin, prometheus"));
            None
        }
    }
}

fn error_classes(classes: &[ErrorClassName]) -> ErrorClasses {
    if classes.is_empty() {
        return ErrorClasses::default();
    }
    ErrorClasses {
        server: classes.contains(&ErrorClassName::Server),
        model: classes.contains(&ErrorClassName::Model),
        client: classes.contains(&ErrorClassName::Client),
    }
}

/// A Go-style duration: one or more `<number><unit>` with units `ms`, `s`,
/// `m`, `h` (`1h30m`, `1.5s`, `500ms`); `None` otherwise, or past a year.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0.0_f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let (unit, tail) = if let Some(t) = tail.strip_prefix("ms") {
            (0.001, t)
        } else if let Some(t) = tail.strip_prefix('s') {
            (1.0, t)
        } else if let Some(t) = tail.strip_prefix('m') {
            (60.0, t)
        } else if let Some(t) = tail.strip_prefix('h') {
            (3600.0, t)
        } else {
            return None;
        };
        total += value * unit;
        rest = tail;
    }
    (total <= 366.0 * 86_400.0).then(|| Duration::from_secs_f64(total))
}
