//! Shadow traffic: `spec.models[].mirror` (a standing mirror, a dark launch
//! without a rollout) and `strategy.canary.mirror` (how the `setMirror`
//! steps of a rollout copy and compare). The sidecars run a sampled copy of
//! each request on the mirror version after answering it, compare the two
//! answers output by output, and count the outcome; the copy's answer is
//! never returned. Both versions must be loaded at once, so a mirror is
//! refused for `ResourcePreserving` models.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest `maxInFlight`.
pub const MAX_IN_FLIGHT: u32 = 1024;
/// Largest `timeoutMs`.
pub const MAX_TIMEOUT_MS: u32 = 60_000;
/// Largest `logDisagreementsPerMinute`.
pub const MAX_LOGGED_PER_MINUTE: u32 = 600;

/// A standing mirror: `percent` of the model's requests answered by another
/// version are also run on the version `label` (or `version`) names.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("(has(self.label) ? 1 : 0) + (has(self.version) ? 1 : 0) == 1").message("a mirror names exactly one of label, version"))]
pub struct Mirror {
    /// The label whose version runs the copies (one of the model's labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub label: Option<String>,
    /// The version that runs the copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub version: Option<i64>,
    /// Percent of the requests copied, 0–100.
    #[schemars(range(max = 100))]
    pub percent: u8,
    /// How copies are sampled and compared.
    #[serde(default, flatten)]
    pub settings: MirrorSettings,
}

/// How copies are sampled, bounded and compared.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorSettings {
    /// `RouteKey` (default): the same route keys are always copied, random
    /// for requests without one. `Random`: every request by chance.
    #[serde(default)]
    pub sampling: MirrorSampling,
    /// Copies in flight per model per Pod; more are shed, never queued.
    /// Default 8, at most 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_in_flight: Option<u32>,
    /// A copy not finished this long after its request was answered is a
    /// timeout. Default 1000, at most 60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub timeout_ms: Option<u32>,
    /// Output alias → how it is compared; the rest follow the signature
    /// (floats with a last axis ≥ 2: `classes`; other floats: `scores`;
    /// the rest: `exact`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, OutputComparison>,
    /// Disagreements logged per minute with their route key (default 0:
    /// payloads may be private), at most 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 600))]
    pub log_disagreements_per_minute: Option<u32>,
}

/// How requests are chosen for copying.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum MirrorSampling {
    #[default]
    RouteKey,
    Random,
}

/// One output's comparison: exactly one of `classes`, `scores`, `exact`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("(has(self.classes) ? 1 : 0) + (has(self.scores) ? 1 : 0) + (has(self.exact) ? 1 : 0) == 1").message("an output comparison is exactly one of classes, scores, exact"))]
pub struct OutputComparison {
    /// Argmax along the last axis must agree; top-k overlap is measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<ClassesComparison>,
    /// Every value within `absTol + relTol × |baseline|`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<ScoresComparison>,
    /// Every value equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<ExactComparison>,
}

/// `classes`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassesComparison {
    /// The k of the top-k overlap. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub top_k: Option<u32>,
}

/// `scores`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScoresComparison {
    /// Absolute tolerance. Default (and 0) 1e-5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub abs_tol: Option<f64>,
    /// Relative tolerance. Default (and 0) 1e-3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub rel_tol: Option<f64>,
}

/// `exact`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
pub struct ExactComparison {}

/// A mirror in force on every Ready Pod (`status.models[].mirror`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorInForce {
    /// The label whose version runs the copies, if a label was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The version, if a version was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Percent of the requests copied.
    pub percent: u8,
}
