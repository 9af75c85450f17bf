//! The canary step machine: spec + status + observations + now → the next decision.
//!
//! A [`CanaryStrategy`] is a list of [`Step`]s walked in order (Argo's vocabulary), with
//! optional background analysis from `startingStep`. [`next`] is a pure function of the
//! strategy, the [`RolloutState`] kept in status, and what the operator [`Observed`] this
//! pass; it returns a [`Decision`]: the candidate's weight, which analysis runs to
//! measure, the [`Outcome`], the new state to write back, and the events of this pass.
//!
//! Semantics (see [`next`] for the order in which they apply):
//! * `setWeight: N` completes once every Ready Pod reports weight N in force;
//! * `setMirror: N` (shadow traffic: N percent of the baseline's requests also run on
//!   the candidate, whose answers are compared, never returned) completes once every
//!   Ready Pod reports mirror N in force; the mirror holds until the next `setMirror`,
//!   and is 0 once promoted or aborted. A step's "in force" is both its weight and its
//!   mirror (the mirror only where the strategy has a `setMirror` step);
//! * `pause: {duration}` completes `duration` after the step's weight was first in force;
//!   `pause: {}` holds (Paused, reason `PauseStep`) until `promote`;
//! * `analysis` blocks until its run is Successful;
//! * past the last step the rollout is Promoted (candidate weight 100);
//! * nothing is measured before the current step's weight is in force, so a window never
//!   mixes two weights' traffic;
//! * a Failed or Error run (step or background) → `onFailure` (default Abort), an
//!   Inconclusive one → `onInconclusive` (default Pause);
//! * Aborted: candidate weight 0 at once; Degraded on every later pass until `retry`,
//!   which restarts from the first step with fresh analysis runs;
//! * `progressDeadlineSeconds`: a step whose weight is not in force that long after the
//!   step began aborts the rollout (`ProgressDeadlineExceeded`): the sidecars are not
//!   applying the split, and the safe state is all traffic on the baseline. Time in a
//!   stored pause (user, analysis) does not count; time under `paused: true` in the spec
//!   does, as that pause is not stored (a pass that wrote status on every call would
//!   wake its own watch forever).
//! * a spec change naming another candidate is a new rollout: [`RolloutState::start`].

mod machine;
mod state;

use std::time::Duration;

pub use machine::next;
pub use state::{
    AbortReason, AbortState, AnalysisKind, AnalysisRequest, Command, Decision, Observed, Outcome,
    PauseReason, PauseState, RolloutEvent, RolloutState, RunInput,
};

use crate::{Error, Result};

/// One step of a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Route `N` percent of the model's unlabelled traffic to the candidate.
    SetWeight(u8),
    /// Copy `N` percent of the baseline's requests to the candidate (shadow traffic).
    SetMirror(u8),
    /// Hold the weight for a duration, or until promoted (`None`).
    Pause(Option<Duration>),
    /// Run the step's analysis and wait until it is Successful. The operator maps the
    /// step's index to its analysis spec.
    Analysis,
}

/// What to do when analysis is not Successful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Hold the current weight for a person (`resume` / `promote` / `abort`).
    Pause,
    /// All traffic back to the baseline.
    Abort,
}

/// Background analysis: measured throughout the rollout from `starting_step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackgroundAnalysis {
    /// The index of the first step during which it is measured.
    pub starting_step: usize,
}

/// A canary rollout's strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryStrategy {
    /// The steps, in order; end of steps = promotion.
    pub steps: Vec<Step>,
    /// Background analysis, if any.
    pub background: Option<BackgroundAnalysis>,
    /// Reaction to an Inconclusive run (default Pause).
    pub on_inconclusive: Reaction,
    /// Reaction to a Failed or Error run (default Abort).
    pub on_failure: Reaction,
    /// How long a step may wait for its weight to be in force before aborting.
    pub progress_deadline: Option<Duration>,
}

impl CanaryStrategy {
    /// A strategy of `steps` with the defaults: no background analysis,
    /// `onInconclusive: Pause`, `onFailure: Abort`, no progress deadline.
    pub fn new(steps: Vec<Step>) -> Self {
        Self {
            steps,
            background: None,
            on_inconclusive: Reaction::Pause,
            on_failure: Reaction::Abort,
            progress_deadline: None,
        }
    }

    /// Flagger's shorthand `stepWeights: [5, 25, 50]` + `interval`: for each weight, a
    /// `setWeight` then a `pause` of `interval`, with background analysis over every step.
    ///
    /// # Errors
    /// [`Error::InvalidStrategy`] when `weights` is empty, not strictly increasing, over
    /// 100, or `interval` is zero.
    pub fn from_step_weights(weights: &[u8], interval: Duration) -> Result<Self> {
        if weights.is_empty() {
            return Err(Error::InvalidStrategy("stepWeights must not be empty".into()));
        }
        if weights.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::InvalidStrategy("stepWeights must increase".into()));
        }
        if interval.is_zero() {
            return Err(Error::InvalidStrategy("interval must be positive".into()));
        }
        let steps = weights.iter().flat_map(|&w| [Step::SetWeight(w), Step::Pause(Some(interval))]);
        let strategy = Self {
            background: Some(BackgroundAnalysis { starting_step: 0 }),
            ..Self::new(steps.collect())
        };
        strategy.validate()?;
        Ok(strategy)
    }

    /// Flagger's linear shorthand `stepWeight` + `maxWeight`: weights `s, 2s, ...` up to
    /// `maxWeight`, expanded as [`from_step_weights`](Self::from_step_weights).
    ///
    /// # Errors
    /// [`Error::InvalidStrategy`] when `step_weight` is 0 or exceeds `max_weight`, or
    /// `max_weight` exceeds 100.
    pub fn from_step_weight(step_weight: u8, max_weight: u8, interval: Duration) -> Result<Self> {
        if step_weight == 0 || step_weight > max_weight {
            return Err(Error::InvalidStrategy("stepWeight must be in 1..=maxWeight".into()));
        }
        let weights: Vec<u8> = (1..=max_weight / step_weight).map(|i| i * step_weight).collect();
        Self::from_step_weights(&weights, interval)
    }

    /// Checks the strategy can run.
    ///
    /// # Errors
    /// [`Error::InvalidStrategy`] for a weight over 100, a background `startingStep`
    /// past the last step, or a zero progress deadline.
    pub fn validate(&self) -> Result<()> {
        if let Some((i, what, n)) = self.steps.iter().enumerate().find_map(|(i, s)| match s {
            Step::SetWeight(w) if *w > 100 => Some((i, "setWeight", *w)),
            Step::SetMirror(m) if *m > 100 => Some((i, "setMirror", *m)),
            _ => None,
        }) {
            return Err(Error::InvalidStrategy(format!("steps[{i}]: {what} {n} exceeds 100")));
        }
        if let Some(bg) = self.background
            && bg.starting_step > 0
            && bg.starting_step >= self.steps.len()
        {
            return Err(Error::InvalidStrategy(format!(
                "analysis.startingStep {} is past the last step ({} steps)",
                bg.starting_step,
                self.steps.len()
            )));
        }
        if self.progress_deadline.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidStrategy("progressDeadlineSeconds must be positive".into()));
        }
        Ok(())
    }

    /// The candidate's mirror percent at step `index`: the last `setMirror` at or before
    /// it (0 before any); 0 past the last step (promoted: nothing left to shadow).
    pub fn mirror_at(&self, index: usize) -> u8 {
        if index >= self.steps.len() {
            return 0;
        }
        self.steps[..=index]
            .iter()
            .rev()
            .find_map(|s| match s {
                Step::SetMirror(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Whether any step mirrors: only then is the mirror in force part of a step's
    /// readiness.
    pub fn mirrors(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::SetMirror(_)))
    }

    /// The candidate's weight at step `index`: the last `setWeight` at or before it (0
    /// before any); 100 past the last step.
    pub fn weight_at(&self, index: usize) -> u8 {
        if index >= self.steps.len() {
            return 100;
        }
        self.steps[..=index]
            .iter()
            .rev()
            .find_map(|s| match s {
                Step::SetWeight(w) => Some(*w),
                _ => None,
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
