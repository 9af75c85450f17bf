//! The step machine's status (serde, kept in the CRD status so an operator restart
//! resumes), its inputs and its decision.

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::run::{AnalysisPhase, RunState};

/// Why a rollout is paused.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PauseReason {
    /// At a `pause: {}` step, until `promote`.
    PauseStep,
    /// `kubectl versa pause`, until `resume` or `promote`.
    UserPaused,
    /// `paused: true` in the spec (Git), while it stays so.
    SpecPaused,
    /// An analysis run was Inconclusive and `onInconclusive` is Pause.
    InconclusiveAnalysis,
    /// An analysis run was Failed or Error and `onFailure` is Pause.
    FailedAnalysis,
}

/// Why a rollout was aborted.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// `kubectl versa abort`.
    UserAborted,
    /// An analysis run was Failed or Error (`onFailure: Abort`, the default).
    FailedAnalysis,
    /// An analysis run was Inconclusive and `onInconclusive` is Abort.
    InconclusiveAnalysis,
    /// A step's weight (or mirror) was not in force within `progressDeadlineSeconds`.
    ProgressDeadlineExceeded,
}

/// Which analysis run.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AnalysisKind {
    /// The current `analysis` step's run.
    Step,
    /// The background analysis run.
    Background,
}

/// A pause kept in status (pauses of `pause: {}` steps and of the spec are not stored:
/// they follow from the step and the spec).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseState {
    /// Why.
    pub reason: PauseReason,
    /// Since when.
    pub since: Timestamp,
    /// The run that caused it, if an analysis did; resuming starts a fresh one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisKind>,
    /// Details (e.g. the deciding metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An abort kept in status.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortState {
    /// Why.
    pub reason: AbortReason,
    /// When.
    pub at: Timestamp,
    /// Details (e.g. the deciding metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What of a rollout must survive an operator restart.
///
/// Analysis runs are identified by generation numbers: the operator keeps each run's
/// [`MetricStatus`](crate::MetricStatus)es under the generation it was measured for, and
/// starts from empty ones when the generation changes (a new `analysis` step, a resume
/// after an analysis pause, a retry).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// Index of the current step; the number of steps once promoted.
    pub step: u32,
    /// When the current step began.
    pub step_started_at: Timestamp,
    /// When the current step's weight was first seen in force on every Ready Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ready_at: Option<Timestamp>,
    /// When background analysis began, once `startingStep` was reached and in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_started_at: Option<Timestamp>,
    /// Generation of the current step's analysis run.
    #[serde(default)]
    pub step_run: u32,
    /// Generation of the background analysis run.
    #[serde(default)]
    pub background_run: u32,
    /// A stored pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseState>,
    /// The abort, until `retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortState>,
    /// When the rollout was promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
}

impl RolloutState {
    /// A rollout starting at the first step at `now`.
    pub fn start(now: Timestamp) -> Self {
        Self {
            step: 0,
            step_started_at: now,
            step_ready_at: None,
            background_started_at: None,
            step_run: 0,
            background_run: 0,
            pause: None,
            abort: None,
            completed_at: None,
        }
    }
}

/// A request from `kubectl versa`, read from status; the operator clears it when it
/// writes the decision's state back (one status patch, so it applies once).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Lift any pause and skip the current step.
    Promote,
    /// Skip all remaining steps: promote now.
    PromoteFull,
    /// All traffic back to the baseline.
    Abort,
    /// After an abort: start again from the first step.
    Retry,
    /// Pause at the current step.
    Pause,
    /// Lift a stored pause (not a `pause: {}` step: that takes `promote`).
    Resume,
}

/// An analysis run's phase as the operator assessed it
/// ([`assess_run`](crate::run::assess_run)), for the run generation it measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInput {
    /// The generation the statuses belong to; another generation's phase is ignored.
    pub run: u32,
    /// The run's phase and message.
    pub state: RunState,
}

impl RunInput {
    /// `run`'s phase for generation `run`.
    pub fn new(run: u32, phase: AnalysisPhase, message: Option<String>) -> Self {
        Self { run, state: RunState { phase, message } }
    }
}

/// What the operator observed this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Now.
    pub now: Timestamp,
    /// `paused` in the spec.
    pub spec_paused: bool,
    /// A pending `kubectl versa` command.
    pub command: Option<Command>,
    /// The candidate weight every Ready Pod reports in force; `None` when they differ
    /// or are unknown.
    pub weight_in_force: Option<u8>,
    /// The candidate mirror percent every Ready Pod reports in force; `None` when they
    /// differ or are unknown. Read only where the strategy has a `setMirror` step.
    pub mirror_in_force: Option<u8>,
    /// The current step's analysis run, if the step is `analysis`.
    pub step_analysis: Option<RunInput>,
    /// The background analysis run, if any.
    pub background_analysis: Option<RunInput>,
}

impl Observed {
    /// An observation at `now` with nothing else known.
    pub fn at(now: Timestamp) -> Self {
        Self {
            now,
            spec_paused: false,
            command: None,
            weight_in_force: None,
            mirror_in_force: None,
            step_analysis: None,
            background_analysis: None,
        }
    }
}

/// Where the rollout stands after this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Moving through the steps (or waiting on weights, a timed pause, analysis).
    Progressing,
    /// Holding the current weight.
    Paused(PauseReason),
    /// Past the last step: the candidate gets 100 % and becomes the stable version.
    Promoted,
    /// Aborted on this pass: candidate weight 0 now.
    Aborted(AbortReason),
    /// Aborted earlier, still at weight 0 until `retry` or a spec change.
    Degraded(AbortReason),
}

/// An analysis run the operator should measure this pass (each metric when it is due,
/// see [`MetricSpec::next_due`](crate::MetricSpec::next_due)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalysisRequest {
    /// Which run.
    pub kind: AnalysisKind,
    /// Its generation.
    pub run: u32,
    /// When it began (the `initialDelay` reference).
    pub started_at: Timestamp,
}

/// Something that happened on this pass, for Kubernetes Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutEvent {
    /// Step `step` completed.
    StepCompleted {
        /// Its index.
        step: u32,
    },
    /// The rollout paused.
    Paused(PauseReason),
    /// A stored pause was lifted.
    Resumed,
    /// An analysis run began (its weight is in force): a new `analysis` step, background
    /// analysis reaching `startingStep`, or a fresh run after a resume.
    AnalysisRunStarted {
        /// Which run.
        kind: AnalysisKind,
        /// Its generation.
        run: u32,
    },
    /// An analysis run decided against the candidate.
    AnalysisRun {
        /// Which run.
        kind: AnalysisKind,
        /// Failed, Error or Inconclusive.
        phase: AnalysisPhase,
        /// Why.
        message: Option<String>,
    },
    /// The rollout aborted.
    Aborted(AbortReason),
    /// A retry restarted the rollout.
    Retried,
    /// The rollout was promoted.
    Completed,
    /// A `kubectl versa` command that does nothing in this state (it is cleared).
    CommandIgnored {
        /// The command.
        command: Command,
        /// Why it does nothing.
        why: &'static str,
    },
}

impl RolloutEvent {
    /// The Event reason, with the names Argo Rollouts users template on.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::StepCompleted { .. } => "RolloutStepCompleted",
            Self::Paused(_) => "RolloutPaused",
            Self::Resumed => "RolloutResumed",
            Self::AnalysisRunStarted { .. } => "AnalysisRunRunning",
            Self::AnalysisRun { phase: AnalysisPhase::Error, .. } => "AnalysisRunError",
            Self::AnalysisRun { phase: AnalysisPhase::Inconclusive, .. } => {
                "AnalysisRunInconclusive"
            }
            Self::AnalysisRun { .. } => "AnalysisRunFailed",
            Self::Aborted(_) => "RolloutAborted",
            Self::Retried => "RolloutRetried",
            Self::Completed => "RolloutCompleted",
            Self::CommandIgnored { .. } => "RolloutCommandIgnored",
        }
    }
}

/// The next desired state of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The state to write back to status (with the command cleared).
    pub state: RolloutState,
    /// Where the rollout stands.
    pub outcome: Outcome,
    /// The candidate's weight to apply, 0..=100 (the baseline gets the rest).
    pub weight: u8,
    /// The percent of the baseline's requests to copy to the candidate, 0..=100; 0 once
    /// promoted or aborted.
    pub mirror: u8,
    /// Analysis runs to measure now.
    pub analyses: Vec<AnalysisRequest>,
    /// When to look again at the latest, besides analysis due times (a timed pause's
    /// end, the progress deadline).
    pub requeue_at: Option<Timestamp>,
    /// What happened on this pass.
    pub events: Vec<RolloutEvent>,
}
