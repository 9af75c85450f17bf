//! `spec.models[].strategy`: how a change of a model's `stable` label rolls
//! out. With `canary`, the commit that moves `stable` to a new version starts
//! a rollout: the new version is loaded beside the old one under the
//! transient `canaryLabel`, its share of the traffic walks the steps, and
//! analysis of the sidecars' own per-version metrics (candidate against the
//! baseline version, same Pods, same window) promotes or aborts it. The
//! operator never writes spec: progress, the transient label and the weights
//! live in the sidecars' config and in `status` only.
//!
//! The vocabulary is Argo Rollouts' (`steps`, `setWeight`, `pause`,
//! `analysis`, `successCondition`, `failureLimit`, …) with Flagger's
//! `stepWeights` shorthand.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A Go-style duration: `30s`, `5m`, `1h30m`, `500ms`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// How the model's new versions are rolled out. Without it, labels and
/// traffic apply as written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// An automated canary, judged by the sidecars' metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,
}

/// The canary: weighted steps, analysis, and what to do when it fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!(has(self.steps) && size(self.steps) > 0 && has(self.stepWeights) && size(self.stepWeights) > 0)").message("set steps or stepWeights, not both"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.stepWeights) || size(self.stepWeights) == 0 || has(self.interval)").message("stepWeights needs an interval"))]
pub struct CanaryStrategy {
    /// The label the candidate version is served under while it rolls out
    /// (clients may ask for it by name). Default `canary`.
    #[serde(default = "default_canary_label")]
    #[schemars(length(min = 1, max = 63))]
    pub canary_label: String,
    /// The steps, in order; the end of the steps is promotion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
    /// Flagger's shorthand instead of `steps`: for each weight, set it and
    /// hold it for `interval` under the background `analysis`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_weights: Vec<u8>,
    /// How long each of `stepWeights` is held, e.g. `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub interval: Option<String>,
    /// Analysis that runs in the background over the whole rollout (from
    /// `startingStep`); it fails the rollout whenever it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<BackgroundAnalysis>,
    /// When an analysis cannot decide (too few requests, no data):
    /// `Pause` (default) holds the weight for a person; `Abort` rolls back.
    #[serde(default = "pause")]
    pub on_inconclusive: Reaction,
    /// When an analysis fails or errors: `Abort` (default) sends all
    /// traffic back to the baseline at once; `Pause` holds the weight.
    #[serde(default = "abort")]
    pub on_failure: Reaction,
    /// How long the previous stable version stays loaded after a promotion,
    /// so a rollback to it is instant. Default 300.
    #[serde(default = "default_unload_delay")]
    pub unload_delay_seconds: u64,
    /// How long an aborted candidate stays loaded (serving nothing), for
    /// debugging. Default 30.
    #[serde(default = "default_abort_unload_delay")]
    pub abort_unload_delay_seconds: u64,
    /// A step whose weight is not in force on every Ready Pod within this
    /// many seconds aborts the rollout. Default 600.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: u64,
    /// How the `setMirror` steps sample, bound and compare the copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<crate::mirror::MirrorSettings>,
    /// Holds the rollout where it is (a pause visible in Git).
    #[serde(default)]
    pub paused: bool,
}

fn default_canary_label() -> String {
    "canary".to_owned()
}
fn pause() -> Reaction {
    Reaction::Pause
}
fn abort() -> Reaction {
    Reaction::Abort
}
fn default_unload_delay() -> u64 {
    300
}
fn default_abort_unload_delay() -> u64 {
    30
}
fn default_progress_deadline() -> u64 {
    600
}

/// What the rollout does when an analysis is not Successful.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum Reaction {
    /// Hold the current weight until promoted, resumed or aborted.
    #[default]
    Pause,
    /// All traffic back to the baseline; the model is Degraded until the
    /// spec changes or the rollout is retried.
    Abort,
}

/// One step: exactly one of `setWeight`, `setMirror`, `pause`, `analysis`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("(has(self.setWeight) ? 1 : 0) + (has(self.setMirror) ? 1 : 0) + (has(self.pause) ? 1 : 0) + (has(self.analysis) ? 1 : 0) == 1").message("a step is exactly one of setWeight, setMirror, pause, analysis"))]
pub struct CanaryStep {
    /// Percent of the model's unlabelled requests the candidate answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub set_weight: Option<u8>,
    /// Copy this percent of the requests the baseline answers to the
    /// candidate and compare its answers (shadow traffic, judged by the
    /// `mirror*` metrics); clients never see them. Holds until the next
    /// `setMirror`; promotion and abort end it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_mirror: Option<SetMirror>,
    /// Hold the weight: for `duration`, or with `{}` until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
    /// Measure, and go on only when the analysis is Successful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
}

/// A `setMirror` step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetMirror {
    /// Percent of the baseline's requests copied to the candidate, 0–100.
    #[schemars(range(max = 100))]
    pub percent: u8,
}

/// A pause step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// How long, e.g. `10m`; absent: until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub duration: Option<String>,
}

/// An analysis step: its metrics, measured until each completes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// The metrics; the analysis fails when any deciding metric fails.
    #[schemars(length(min = 1))]
    pub metrics: Vec<AnalysisMetric>,
}

/// Background analysis over the rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundAnalysis {
    /// The step index (from 0) it starts at. Default 0.
    #[serde(default)]
    pub starting_step: u32,
    /// The metrics.
    #[schemars(length(min = 1))]
    pub metrics: Vec<AnalysisMetric>,
}

/// One metric: what is measured, how often, and what passes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.successCondition) || has(self.failureCondition) || has(self.thresholdRange)").message("a metric needs successCondition, failureCondition or thresholdRange"))]
#[x_kube(validation = kube::core::Rule::new("!(has(self.thresholdRange) && (has(self.successCondition) || has(self.failureCondition)))").message("set thresholdRange or conditions, not both"))]
pub struct AnalysisMetric {
    /// Unique within its analysis.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Where the value comes from.
    pub provider: MetricProvider,
    /// Time between measurements (the window of each), e.g. `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub interval: Option<String>,
    /// Measurements before the metric completes; absent: until the step
    /// (or, in the background, the rollout) ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<u32>,
    /// Wait before the first measurement, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub initial_delay: Option<String>,
    /// A CEL expression over `result` and `baseline` (the same metric on
    /// the baseline version, same window; doubles) and `resultSamples`,
    /// `baselineSamples` (ints): true is Successful, e.g.
    /// `result <= baseline * 1.2 + 0.005`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub success_condition: Option<String>,
    /// As `successCondition`; true is Failed (checked first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub failure_condition: Option<String>,
    /// Successful inside `[min, max]`, Failed outside (Flagger's form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    /// Failed measurements tolerated before the metric fails (default 0;
    /// negative: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<i32>,
    /// Errors in a row tolerated before the metric errors (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<u32>,
    /// Inconclusive measurements tolerated (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<u32>,
    /// Fewer requests than this in a window is Inconclusive, never Failed
    /// (a quiet service does not roll back). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sample_count: Option<u64>,
    /// Measured and shown, never deciding: try a new check safely.
    #[serde(default)]
    pub dry_run: bool,
}

/// `[min, max]`; either bound may be absent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// Exactly one provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("(has(self.builtin) ? 1 : 0) + (has(self.prometheus) ? 1 : 0) == 1").message("set exactly one provider: builtin or prometheus"))]
pub struct MetricProvider {
    /// Read from the serving Pods themselves: no Prometheus needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinMetric>,
    /// A Prometheus query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusMetric>,
}

/// A metric the sidecars count per (model, version), summed over Ready
/// Pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuiltinMetric {
    /// `requestCount`, `errorRate`, `latency` (seconds, at `quantile`),
    /// `meanLatency` (seconds), or from the candidate's shadow copies
    /// (`setMirror`): `mirrorAgreementRate` (copies whose every output
    /// agreed / copies compared), `mirrorErrorRate` (copies that failed or
    /// timed out / copies run; shed copies are not the candidate's fault
    /// and do not count), `mirrorLatencyRatio` (the candidate's CPU time
    /// over the baseline's on the same input, at `quantile`, default 0.5),
    /// `mirrorNonFiniteRate` (compared copies with NaN or an infinity).
    /// The mirror metrics have no `baseline` (the baseline's requests are
    /// what is copied): a condition naming it is an Error.
    pub metric: BuiltinMetricName,
    /// For `latency` (default 0.99) and `mirrorLatencyRatio` (default
    /// 0.5): the quantile, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// For `errorRate`: which errors count — `server` (the server's fault:
    /// internal, unavailable, overloaded, timed out), `model` (the model
    /// failed on the input), `client` (the request was wrong). Default
    /// `[server, model]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_classes: Vec<ErrorClassName>,
}

/// The built-in metrics.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum BuiltinMetricName {
    RequestCount,
    #[default]
    ErrorRate,
    Latency,
    MeanLatency,
    MirrorAgreementRate,
    MirrorErrorRate,
    MirrorLatencyRatio,
    MirrorNonFiniteRate,
}

/// Error classes of `errorRate`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ErrorClassName {
    Server,
    Model,
    Client,
}

/// A Prometheus instant query; `{{model}}`, `{{version}}`, `{{label}}` and
/// `{{namespace}}` are replaced (the candidate's version for `result`, the
/// baseline's for `baseline`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusMetric {
    /// e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1))]
    pub address: String,
    /// A query whose result is one scalar or a one-element vector.
    #[schemars(length(min = 1))]
    pub query: String,
}
