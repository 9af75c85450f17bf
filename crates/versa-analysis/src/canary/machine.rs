//! [`next`]: one pass of the step machine.

use super::state::{
    AbortReason, AbortState, AnalysisKind, AnalysisRequest, Command, Decision, Observed, Outcome,
    PauseReason, PauseState, RolloutEvent, RolloutState, RunInput,
};
use super::{CanaryStrategy, Reaction, Step};
use crate::Timestamp;
use crate::run::AnalysisPhase;

/// One pass of the step machine: the next desired state of a rollout.
///
/// Pure and idempotent: called again with the state it returned and the same
/// observation, it returns the same decision with no events. In order:
///
/// 1. **Promoted** stays promoted (weight 100).
/// 2. **Aborted** stays at weight 0 (`Degraded`) unless the command is `retry`, which
///    restarts at the first step with new analysis run generations.
/// 3. **Commands**: `abort` aborts; `promoteFull` promotes; `pause` stores a user pause;
///    `resume` lifts a stored pause; `promote` lifts a stored pause and skips the current
///    step (this is how a `pause: {}` step ends).
/// 4. **Analysis verdicts** of the current run generations only: the current `analysis`
///    step's run and, once started, the background run. Failed or Error → `onFailure`,
///    Inconclusive → `onInconclusive`. Checked even while paused, so a failing candidate
///    is aborted whoever paused it. A Pause reaction does not replace an existing pause.
/// 5. **Pauses**: a stored pause, or `paused` in the spec, holds the current weight; the
///    background run (only) goes on being measured.
/// 6. **Steps**, as many as complete on this pass: a step begins when the previous one
///    completes; its weight must be in force before it can complete or be measured
///    (else the progress deadline, counted from the step's beginning, may abort).
///
/// Resuming from a pause caused by an analysis run starts a fresh run of that kind
/// (generation + 1, started now): the old run's phase is final and would pause again.
pub fn next(strategy: &CanaryStrategy, state: &RolloutState, observed: &Observed) -> Decision {
    let mut pass = Pass {
        strategy,
        observed,
        now: observed.now,
        st: state.clone(),
        events: Vec::new(),
        requeue_at: None,
    };
    if let Some(why) = ignored(&pass.st, observed) {
        let command = observed.command.unwrap_or(Command::Resume);
        pass.events.push(RolloutEvent::CommandIgnored { command, why });
    }
    if pass.st.completed_at.is_some() {
        return pass.finish(Outcome::Promoted, 100);
    }
    if let Some(abort) = &pass.st.abort {
        if observed.command != Some(Command::Retry) {
            let reason = abort.reason;
            return pass.finish(Outcome::Degraded(reason), 0);
        }
        pass.retry();
    }
    match observed.command {
        Some(Command::Abort) => {
            return pass.abort(AbortReason::UserAborted, Some("kubectl versa abort".into()));
        }
        Some(Command::PromoteFull) => return pass.promote(),
        Some(Command::Pause) => pass.pause(PauseReason::UserPaused, None, None),
        Some(Command::Resume) => pass.resume(false),
        Some(Command::Promote) => {
            pass.resume(true);
            pass.advance();
        }
        Some(Command::Retry) | None => {}
    }
    if let Some((reason, message)) = pass.react_to_analysis() {
        return pass.abort(reason, message);
    }
    if let Some(pause) = &pass.st.pause {
        let reason = pause.reason;
        let weight = pass.current_weight();
        return pass.finish(Outcome::Paused(reason), weight);
    }
    if observed.spec_paused {
        let weight = pass.current_weight();
        return pass.finish(Outcome::Paused(PauseReason::SpecPaused), weight);
    }
    pass.walk()
}

/// Why the pending command does nothing in `state`, if it does not.
fn ignored(state: &RolloutState, observed: &Observed) -> Option<&'static str> {
    let command = observed.command?;
    if state.completed_at.is_some() {
        return Some("the rollout is already promoted");
    }
    if state.abort.is_some() {
        return (command != Command::Retry).then_some(
            "the rollout is aborted: `retry` restarts it, a commit moving `stable` ends it",
        );
    }
    match command {
        Command::Retry => Some("nothing to retry: the rollout is not aborted"),
        Command::Resume if state.pause.is_none() && observed.spec_paused => {
            Some("the rollout is paused in the spec: a commit removing `paused` resumes it")
        }
        Command::Resume if state.pause.is_none() => {
            Some("nothing to resume: no stored pause (a `pause: {}` step ends with `promote`)")
        }
        Command::Pause if state.pause.is_some() => Some("the rollout is already paused"),
        _ => None,
    }
}

struct Pass<'a> {
    strategy: &'a CanaryStrategy,
    observed: &'a Observed,
    now: Timestamp,
    st: RolloutState,
    events: Vec<RolloutEvent>,
    requeue_at: Option<Timestamp>,
}

impl Pass<'_> {
    fn index(&self) -> usize {
        usize::try_from(self.st.step).unwrap_or(usize::MAX)
    }

    fn current_step(&self) -> Option<Step> {
        self.strategy.steps.get(self.index()).copied()
    }

    fn current_weight(&self) -> u8 {
        self.strategy.weight_at(self.index())
    }

    /// The observed run's phase if it belongs to generation `run`.
    fn phase_of(input: Option<&RunInput>, run: u32) -> Option<&RunInput> {
        input.filter(|i| i.run == run)
    }

    fn walk(mut self) -> Decision {
        loop {
            let i = self.index();
            let Some(step) = self.current_step() else {
                return self.promote();
            };
            let desired = self.strategy.weight_at(i);
            let mirror = self.strategy.mirror_at(i);
            let mirror_ready =
                !self.strategy.mirrors() || self.observed.mirror_in_force == Some(mirror);
            if self.observed.weight_in_force != Some(desired) || !mirror_ready {
                if let Some(deadline) = self.strategy.progress_deadline {
                    let at = self.st.step_started_at.saturating_add(deadline);
                    if self.now >= at {
                        let what = if self.strategy.mirrors() {
                            format!("weight {desired} and mirror {mirror}")
                        } else {
                            format!("weight {desired}")
                        };
                        let why = format!(
                            "step {i}: {what} not in force {}s after the step began",
                            deadline.as_secs()
                        );
                        return self.abort(AbortReason::ProgressDeadlineExceeded, Some(why));
                    }
                    self.requeue(at);
                }
                return self.finish(Outcome::Progressing, desired);
            }
            let newly_ready = self.st.step_ready_at.is_none();
            let ready = *self.st.step_ready_at.get_or_insert(self.now);
            if let Some(bg) = self.strategy.background
                && i >= bg.starting_step
                && self.st.background_started_at.is_none()
            {
                self.st.background_started_at = Some(self.now);
                self.started(AnalysisKind::Background);
            }
            if newly_ready && step == Step::Analysis {
                self.started(AnalysisKind::Step);
            }
            match step {
                Step::SetWeight(_) | Step::SetMirror(_) => self.advance(),
                Step::Pause(Some(duration)) => {
                    let end = ready.saturating_add(duration);
                    if self.now < end {
                        self.requeue(end);
                        return self.finish(Outcome::Progressing, desired);
                    }
                    self.advance();
                }
                Step::Pause(None) => {
                    if newly_ready {
                        self.events.push(RolloutEvent::Paused(PauseReason::PauseStep));
                    }
                    return self.finish(Outcome::Paused(PauseReason::PauseStep), desired);
                }
                Step::Analysis => {
                    let input =
                        Self::phase_of(self.observed.step_analysis.as_ref(), self.st.step_run);
                    if input.is_some_and(|i| i.state.phase == AnalysisPhase::Successful) {
                        self.advance();
                    } else {
                        return self.finish(Outcome::Progressing, desired);
                    }
                }
            }
        }
    }

    /// Step 4 of [`next`]: applies a Pause reaction, returns an Abort one.
    fn react_to_analysis(&mut self) -> Option<(AbortReason, Option<String>)> {
        let mut runs = Vec::with_capacity(2);
        if self.current_step() == Some(Step::Analysis) {
            runs.push((AnalysisKind::Step, self.st.step_run, self.observed.step_analysis.as_ref()));
        }
        if self.strategy.background.is_some() && self.st.background_started_at.is_some() {
            let input = self.observed.background_analysis.as_ref();
            runs.push((AnalysisKind::Background, self.st.background_run, input));
        }
        for (kind, run, input) in runs {
            let Some(input) = Self::phase_of(input, run) else { continue };
            let phase = input.state.phase;
            let (reaction, abort, pause) = match phase {
                AnalysisPhase::Failed | AnalysisPhase::Error => (
                    self.strategy.on_failure,
                    AbortReason::FailedAnalysis,
                    PauseReason::FailedAnalysis,
                ),
                AnalysisPhase::Inconclusive => (
                    self.strategy.on_inconclusive,
                    AbortReason::InconclusiveAnalysis,
                    PauseReason::InconclusiveAnalysis,
                ),
                _ => continue,
            };
            let message = input.state.message.clone();
            match reaction {
                Reaction::Abort => {
                    self.events.push(RolloutEvent::AnalysisRun {
                        kind,
                        phase,
                        message: message.clone(),
                    });
                    return Some((abort, message));
                }
                Reaction::Pause if self.st.pause.is_none() => {
                    self.events.push(RolloutEvent::AnalysisRun {
                        kind,
                        phase,
                        message: message.clone(),
                    });
                    self.pause(pause, Some(kind), message);
                }
                Reaction::Pause => {}
            }
        }
        None
    }

    fn requeue(&mut self, at: Timestamp) {
        self.requeue_at = Some(self.requeue_at.map_or(at, |r| r.min(at)));
    }

    fn advance(&mut self) {
        self.events.push(RolloutEvent::StepCompleted { step: self.st.step });
        self.st.step = self.st.step.saturating_add(1);
        self.st.step_started_at = self.now;
        self.st.step_ready_at = None;
        self.st.step_run = self.st.step_run.wrapping_add(1);
    }

    fn pause(
        &mut self,
        reason: PauseReason,
        analysis: Option<AnalysisKind>,
        message: Option<String>,
    ) {
        if self.st.pause.is_none() {
            self.st.pause = Some(PauseState { reason, since: self.now, analysis, message });
            self.events.push(RolloutEvent::Paused(reason));
        }
    }

    /// Lifts a stored pause; `skipping_step` when the current step is skipped next (its
    /// analysis run is not restarted then).
    fn resume(&mut self, skipping_step: bool) {
        let Some(pause) = self.st.pause.take() else { return };
        self.events.push(RolloutEvent::Resumed);
        match pause.analysis {
            Some(AnalysisKind::Step) if skipping_step => {}
            Some(AnalysisKind::Step) => {
                self.st.step_run = self.st.step_run.wrapping_add(1);
                if self.st.step_ready_at.is_some() {
                    self.st.step_ready_at = Some(self.now);
                    self.started(AnalysisKind::Step);
                }
            }
            Some(AnalysisKind::Background) => {
                self.st.background_run = self.st.background_run.wrapping_add(1);
                if self.st.background_started_at.is_some() {
                    self.st.background_started_at = Some(self.now);
                    self.started(AnalysisKind::Background);
                }
            }
            None => {}
        }
        if self.st.step_ready_at.is_none() {
            // the deadline does not count the time spent paused
            self.st.step_started_at = self.now;
        }
    }

    fn started(&mut self, kind: AnalysisKind) {
        let run = match kind {
            AnalysisKind::Step => self.st.step_run,
            AnalysisKind::Background => self.st.background_run,
        };
        self.events.push(RolloutEvent::AnalysisRunStarted { kind, run });
    }

    fn retry(&mut self) {
        let (step_run, background_run) = (self.st.step_run, self.st.background_run);
        self.st = RolloutState {
            step_run: step_run.wrapping_add(1),
            background_run: background_run.wrapping_add(1),
            ..RolloutState::start(self.now)
        };
        self.events.push(RolloutEvent::Retried);
    }

    fn abort(mut self, reason: AbortReason, message: Option<String>) -> Decision {
        self.st.pause = None;
        self.st.abort = Some(AbortState { reason, at: self.now, message });
        self.events.push(RolloutEvent::Aborted(reason));
        self.finish(Outcome::Aborted(reason), 0)
    }

    fn promote(mut self) -> Decision {
        self.st.pause = None;
        self.st.step = u32::try_from(self.strategy.steps.len()).unwrap_or(u32::MAX);
        self.st.step_ready_at = None;
        self.st.completed_at = Some(self.now);
        self.events.push(RolloutEvent::Completed);
        self.finish(Outcome::Promoted, 100)
    }

    fn finish(self, outcome: Outcome, weight: u8) -> Decision {
        let mut analyses = Vec::new();
        let live = matches!(outcome, Outcome::Progressing | Outcome::Paused(_));
        let mirror = if live { self.strategy.mirror_at(self.index()) } else { 0 };
        if live && let Some(ready) = self.st.step_ready_at {
            if let Some(started_at) = self.st.background_started_at {
                let run = self.st.background_run;
                analyses.push(AnalysisRequest { kind: AnalysisKind::Background, run, started_at });
            }
            if outcome == Outcome::Progressing && self.current_step() == Some(Step::Analysis) {
                let run = self.st.step_run;
                analyses.push(AnalysisRequest { kind: AnalysisKind::Step, run, started_at: ready });
            }
        }
        Decision {
            state: self.st,
            outcome,
            weight,
            mirror,
            analyses,
            requeue_at: self.requeue_at,
            events: self.events,
        }
    }
}
