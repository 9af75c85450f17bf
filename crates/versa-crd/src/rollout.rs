//! `status.models[].rollout`: where a model's automated canary stands. The
//! step machine's own state ([`RolloutState`]) is kept whole, so an
//! operator restart resumes where it was; the rest is what a person (or a
//! GitOps health check) reads: the versions, the weight, the phase and why,
//! and every metric's results.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use versa_analysis::MetricStatus;
use versa_analysis::canary::{Command, RolloutState};

/// One model's rollout from `baseline` to `candidate`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The version `stable` named before the commit: what the candidate is
    /// measured against, and where an abort sends the traffic.
    pub baseline: i64,
    /// The version the spec's `stable` names.
    pub candidate: i64,
    /// `Progressing`, `Paused`, `Promoted`, `Aborted`.
    pub phase: String,
    /// Why it is paused or aborted, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Steps in the strategy.
    #[serde(default)]
    pub step_count: u32,
    /// The candidate's share (percent) of the model's unlabelled requests
    /// that the operator applies now.
    #[serde(default)]
    pub weight: u8,
    /// The candidate's share every Ready Pod confirmed; absent while they
    /// differ or are unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_in_force: Option<u8>,
    /// The percent of the baseline's requests copied to the candidate
    /// (`setMirror`) that the operator applies now.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mirror: u8,
    /// The mirror percent every Ready Pod confirmed; absent while they
    /// differ or are unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_in_force: Option<u8>,
    /// `step/steps weight% analysis`, for `kubectl get`. (No schema
    /// default: an API server of 1.20 refuses an empty-string default.)
    pub summary: String,
    /// The step machine's state (times are Unix milliseconds).
    pub state: RolloutState,
    /// A fingerprint of the strategy's steps and analysis the state was
    /// reached under: a commit changing them restarts a rollout in progress
    /// from its first step (a step index means nothing in other steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy_hash: Option<String>,
    /// The last command the operator took (from the
    /// `serving.versa.dev/rollout-command` annotation, see
    /// [`crate::command`]), and whether it did anything: what `kubectl
    /// versa` reports back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command: Option<CommandOutcome>,
    /// The current `analysis` step's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_analysis: Option<AnalysisRunStatus>,
    /// The background analysis run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_analysis: Option<AnalysisRunStatus>,
}

/// A command the operator took.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandOutcome {
    /// The command.
    pub command: Command,
    /// Its id: a command is applied once per id.
    pub id: String,
    /// When the operator took it (Unix milliseconds).
    pub taken_at: i64,
    /// Why it did nothing, if it did nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

/// One analysis run: its generation, phase and every metric's results.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    /// The run's generation (a new `analysis` step, a resume or a retry
    /// starts a new one).
    pub run: u32,
    /// `Pending`, `Running`, `Successful`, `Failed`, `Error`, `Inconclusive`.
    pub phase: String,
    /// Which metric decided it, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per metric: counts of measurements by verdict, the last few
    /// measurements with the candidate's and the baseline's values.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricStatus>,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}
