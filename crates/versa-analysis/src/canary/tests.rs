use std::time::Duration;

use super::*;
use crate::Timestamp;
use crate::run::AnalysisPhase;

const MIN: Duration = Duration::from_secs(60);

fn t(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn seen(now: i64, weight: Option<u8>) -> Observed {
    Observed { weight_in_force: weight, ..Observed::at(t(now)) }
}

fn with_command(now: i64, weight: u8, command: Command) -> Observed {
    Observed { command: Some(command), ..seen(now, Some(weight)) }
}

fn reasons(d: &Decision) -> Vec<&'static str> {
    d.events.iter().map(RolloutEvent::reason).collect()
}

fn strategy() -> CanaryStrategy {
    CanaryStrategy::new(vec![
        Step::SetWeight(10),
        Step::Pause(Some(MIN)),
        Step::Analysis,
        Step::SetWeight(50),
        Step::Pause(None),
    ])
}

fn background(starting_step: usize) -> CanaryStrategy {
    CanaryStrategy { background: Some(BackgroundAnalysis { starting_step }), ..strategy() }
}

#[test]
fn weight_at_is_the_last_set_weight_and_100_past_the_end() {
    let s = strategy();
    let weights: Vec<u8> = (0..6).map(|i| s.weight_at(i)).collect();
    assert_eq!(weights, [10, 10, 10, 50, 50, 100]);
    assert_eq!(CanaryStrategy::new(vec![Step::Pause(None)]).weight_at(0), 0);
}

#[test]
fn step_weights_expand_to_set_weight_pause_and_background_analysis() {
    let s = CanaryStrategy::from_step_weights(&[5, 25, 50], MIN).expect("valid");
    assert_eq!(
        s.steps,
        [5, 25, 50]
            .iter()
            .flat_map(|&w| [Step::SetWeight(w), Step::Pause(Some(MIN))])
            .collect::<Vec<_>>()
    );
    assert_eq!(s.background, Some(BackgroundAnalysis { starting_step: 0 }));
    assert_eq!((s.on_inconclusive, s.on_failure), (Reaction::Pause, Reaction::Abort));
    let linear = CanaryStrategy::from_step_weight(20, 50, MIN).expect("valid");
    assert_eq!(linear.steps.iter().filter(|s| matches!(s, Step::SetWeight(_))).count(), 2);
    assert_eq!(linear.steps[2], Step::SetWeight(40));
    for bad in [&[][..], &[5, 5], &[50, 25], &[50, 101]] {
        assert!(CanaryStrategy::from_step_weights(bad, MIN).is_err(), "{bad:?}");
    }
    assert!(CanaryStrategy::from_step_weights(&[5], Duration::ZERO).is_err());
    assert!(CanaryStrategy::from_step_weight(0, 50, MIN).is_err());
}

#[test]
fn validation() {
    assert!(strategy().validate().is_ok());
    assert!(CanaryStrategy::new(vec![Step::SetWeight(101)]).validate().is_err());
    assert!(background(5).validate().is_err());
    assert!(background(4).validate().is_ok());
    let zero = CanaryStrategy { progress_deadline: Some(Duration::ZERO), ..strategy() };
    assert!(zero.validate().is_err());
}

#[test]
fn walks_weights_waits_for_them_and_times_pauses_from_when_in_force() {
    let s = strategy();
    let st = RolloutState::start(t(0));
    // weight 10 asked, not yet in force: nothing completes
    let d = next(&s, &st, &seen(5, Some(0)));
    assert_eq!((d.outcome, d.weight, d.state.step), (Outcome::Progressing, 10, 0));
    // in force at 20: setWeight completes, the pause runs from 20
    let d = next(&s, &d.state, &seen(20, Some(10)));
    assert_eq!((d.state.step, d.state.step_ready_at), (1, Some(t(20))));
    assert_eq!(d.requeue_at, Some(t(80)));
    assert_eq!(reasons(&d), ["RolloutStepCompleted"]);
    let d = next(&s, &d.state, &seen(79, Some(10)));
    assert_eq!(d.state.step, 1);
    assert!(d.events.is_empty());
    let d = next(&s, &d.state, &seen(80, Some(10)));
    assert_eq!(d.state.step, 2); // at the analysis step
    assert_eq!(reasons(&d), ["RolloutStepCompleted", "AnalysisRunRunning"]);
    // every completed step starts a new step-run generation
    assert_eq!(
        d.analyses,
        [AnalysisRequest { kind: AnalysisKind::Step, run: 2, started_at: t(80) }]
    );
}

#[test]
fn passes_are_idempotent() {
    let s = strategy();
    let d1 = next(&s, &RolloutState::start(t(0)), &seen(20, Some(10)));
    let d2 = next(&s, &d1.state, &seen(20, Some(10)));
    assert_eq!(d2.state, d1.state);
    assert!(d2.events.is_empty());
}

fn at_analysis_step(s: &CanaryStrategy) -> Decision {
    let d = next(s, &RolloutState::start(t(0)), &seen(0, Some(10)));
    let d = next(s, &d.state, &seen(60, Some(10)));
    assert_eq!(d.state.step, 2);
    d
}

fn analysis(now: i64, step: Option<RunInput>, bg: Option<RunInput>) -> Observed {
    Observed { step_analysis: step, background_analysis: bg, ..seen(now, Some(10)) }
}

#[test]
fn analysis_step_blocks_until_its_own_run_is_successful() {
    let s = strategy();
    let d = at_analysis_step(&s);
    let run = d.state.step_run;
    let running = next(
        &s,
        &d.state,
        &analysis(90, Some(RunInput::new(run, AnalysisPhase::Running, None)), None),
    );
    assert_eq!((running.outcome, running.state.step), (Outcome::Progressing, 2));
    // a Successful phase of another generation (an earlier run) does not complete it
    let stale = RunInput::new(run.wrapping_sub(1), AnalysisPhase::Successful, None);
    assert_eq!(next(&s, &d.state, &analysis(90, Some(stale), None)).state.step, 2);
    let ok = next(
        &s,
        &d.state,
        &analysis(90, Some(RunInput::new(run, AnalysisPhase::Successful, None)), None),
    );
    assert_eq!((ok.state.step, ok.weight), (3, 50));
    assert!(ok.analyses.is_empty(), "weight 50 not in force yet: nothing measured");
}

#[test]
fn failed_analysis_aborts_to_weight_zero_then_degraded_until_retry() {
    let s = strategy();
    let d = at_analysis_step(&s);
    let failed =
        RunInput::new(d.state.step_run, AnalysisPhase::Failed, Some("metric `errors`".into()));
    let aborted = next(&s, &d.state, &analysis(90, Some(failed), None));
    assert_eq!(
        (aborted.outcome, aborted.weight),
        (Outcome::Aborted(AbortReason::FailedAnalysis), 0)
    );
    assert_eq!(reasons(&aborted), ["AnalysisRunFailed", "RolloutAborted"]);
    assert!(aborted.analyses.is_empty());
    let later = next(&s, &aborted.state, &seen(100, Some(0)));
    assert_eq!((later.outcome, later.weight), (Outcome::Degraded(AbortReason::FailedAnalysis), 0));
    assert!(later.events.is_empty());
    // promote does not revive an aborted rollout; retry does, from step 0 with new runs
    assert_eq!(next(&s, &aborted.state, &with_command(100, 0, Command::Promote)).weight, 0);
    let retried = next(&s, &aborted.state, &with_command(200, 0, Command::Retry));
    assert_eq!(
        (retried.outcome, retried.weight, retried.state.step),
        (Outcome::Progressing, 10, 0)
    );
    assert!(retried.state.abort.is_none());
    assert_ne!(retried.state.step_run, aborted.state.step_run);
    assert_eq!(reasons(&retried), ["RolloutRetried"]);
}

#[test]
fn error_is_treated_like_failed() {
    let s = strategy();
    let d = at_analysis_step(&s);
    let error = RunInput::new(d.state.step_run, AnalysisPhase::Error, None);
    let d = next(&s, &d.state, &analysis(90, Some(error), None));
    assert_eq!(d.outcome, Outcome::Aborted(AbortReason::FailedAnalysis));
    assert_eq!(reasons(&d)[0], "AnalysisRunError");
}

#[test]
fn inconclusive_pauses_by_default_and_resume_starts_a_fresh_run() {
    let s = strategy();
    let d = at_analysis_step(&s);
    let run = d.state.step_run;
    let inconclusive = Some(RunInput::new(run, AnalysisPhase::Inconclusive, None));
    let paused = next(&s, &d.state, &analysis(90, inconclusive.clone(), None));
    assert_eq!(
        (paused.outcome, paused.weight),
        (Outcome::Paused(PauseReason::InconclusiveAnalysis), 10)
    );
    assert_eq!(reasons(&paused), ["AnalysisRunInconclusive", "RolloutPaused"]);
    // still paused, no repeated events
    let again = next(&s, &paused.state, &analysis(100, inconclusive.clone(), None));
    assert_eq!(again.outcome, Outcome::Paused(PauseReason::InconclusiveAnalysis));
    assert!(again.events.is_empty());
    // resume: a new generation, so the old Inconclusive phase no longer pauses
    let resume = Observed { command: Some(Command::Resume), ..analysis(200, inconclusive, None) };
    let resumed = next(&s, &paused.state, &resume);
    assert_eq!(resumed.outcome, Outcome::Progressing);
    assert_eq!(resumed.state.step_run, run + 1);
    assert_eq!(reasons(&resumed), ["RolloutResumed", "AnalysisRunRunning"]);
    assert_eq!(
        resumed.analyses,
        [AnalysisRequest { kind: AnalysisKind::Step, run: run + 1, started_at: t(200) }]
    );
}

#[test]
fn reactions_are_configurable() {
    let pause_on_failure = CanaryStrategy { on_failure: Reaction::Pause, ..strategy() };
    let d = at_analysis_step(&pause_on_failure);
    let failed = Some(RunInput::new(d.state.step_run, AnalysisPhase::Failed, None));
    let d = next(&pause_on_failure, &d.state, &analysis(90, failed, None));
    assert_eq!((d.outcome, d.weight), (Outcome::Paused(PauseReason::FailedAnalysis), 10));
    let abort_on_inconclusive = CanaryStrategy { on_inconclusive: Reaction::Abort, ..strategy() };
    let d = at_analysis_step(&abort_on_inconclusive);
    let inconclusive = Some(RunInput::new(d.state.step_run, AnalysisPhase::Inconclusive, None));
    let d = next(&abort_on_inconclusive, &d.state, &analysis(90, inconclusive, None));
    assert_eq!(d.outcome, Outcome::Aborted(AbortReason::InconclusiveAnalysis));
}

#[test]
fn background_analysis_starts_at_its_step_once_in_force_and_aborts_even_when_paused() {
    let s = background(1);
    let d = next(&s, &RolloutState::start(t(0)), &seen(0, Some(0)));
    assert!(d.analyses.is_empty());
    let d = next(&s, &d.state, &seen(10, Some(10)));
    // step 0 completed, step 1 (pause) reached: background starts now
    assert_eq!(d.state.background_started_at, Some(t(10)));
    assert_eq!(reasons(&d), ["RolloutStepCompleted", "AnalysisRunRunning"]);
    assert_eq!(
        d.analyses,
        [AnalysisRequest { kind: AnalysisKind::Background, run: 0, started_at: t(10) }]
    );
    let paused = next(&s, &d.state, &with_command(20, 10, Command::Pause));
    assert_eq!(paused.outcome, Outcome::Paused(PauseReason::UserPaused));
    assert_eq!(paused.analyses.len(), 1, "background goes on being measured while paused");
    let failed = Some(RunInput::new(0, AnalysisPhase::Failed, None));
    let d =
        next(&s, &paused.state, &Observed { background_analysis: failed, ..seen(30, Some(10)) });
    assert_eq!(d.outcome, Outcome::Aborted(AbortReason::FailedAnalysis));
}

#[test]
fn background_not_started_yet_cannot_decide() {
    let s = background(3);
    let d = next(&s, &RolloutState::start(t(0)), &seen(0, Some(10)));
    let failed = Some(RunInput::new(0, AnalysisPhase::Failed, None));
    let d = next(&s, &d.state, &Observed { background_analysis: failed, ..seen(5, Some(10)) });
    assert_eq!(d.outcome, Outcome::Progressing);
    assert!(d.analyses.is_empty());
}

#[test]
fn indefinite_pause_holds_until_promote_not_resume() {
    let s = CanaryStrategy::new(vec![Step::SetWeight(30), Step::Pause(None), Step::SetWeight(60)]);
    let d = next(&s, &RolloutState::start(t(0)), &seen(0, Some(30)));
    assert_eq!(d.outcome, Outcome::Paused(PauseReason::PauseStep));
    assert_eq!(reasons(&d), ["RolloutStepCompleted", "RolloutPaused"]);
    let d = next(&s, &d.state, &seen(9999, Some(30)));
    assert_eq!((d.outcome, d.state.step), (Outcome::Paused(PauseReason::PauseStep), 1));
    assert!(d.events.is_empty());
    let resumed = next(&s, &d.state, &with_command(10_000, 30, Command::Resume));
    assert_eq!(resumed.outcome, Outcome::Paused(PauseReason::PauseStep));
    let promoted = next(&s, &d.state, &with_command(10_000, 30, Command::Promote));
    assert_eq!(
        (promoted.outcome, promoted.weight, promoted.state.step),
        (Outcome::Progressing, 60, 2)
    );
}

#[test]
fn spec_pause_holds_the_weight_without_advancing() {
    let s = strategy();
    let d = next(&s, &RolloutState::start(t(0)), &seen(0, Some(10)));
    let paused = Observed { spec_paused: true, ..seen(500, Some(10)) };
    let p = next(&s, &d.state, &paused);
    assert_eq!(
        (p.outcome, p.weight, p.state.step),
        (Outcome::Paused(PauseReason::SpecPaused), 10, 1)
    );
    assert_eq!(p.state, d.state, "a spec pause is not stored");
    assert_eq!(next(&s, &p.state, &seen(500, Some(10))).state.step, 2);
}

#[test]
fn progress_deadline_aborts_a_step_whose_weight_never_comes_into_force() {
    let s = CanaryStrategy { progress_deadline: Some(Duration::from_secs(600)), ..strategy() };
    let d = next(&s, &RolloutState::start(t(0)), &seen(100, None));
    assert_eq!((d.outcome, d.requeue_at), (Outcome::Progressing, Some(t(600))));
    let d = next(&s, &d.state, &seen(600, Some(0)));
    assert_eq!((d.outcome, d.weight), (Outcome::Aborted(AbortReason::ProgressDeadlineExceeded), 0));
    // a step waiting on its pause or analysis is not late
    let waiting = at_analysis_step(&s);
    assert_eq!(next(&s, &waiting.state, &seen(5000, Some(10))).outcome, Outcome::Progressing);
}

#[test]
fn abort_and_promote_full_commands() {
    let s = strategy();
    let st = RolloutState::start(t(0));
    let d = next(&s, &st, &with_command(1, 10, Command::Abort));
    assert_eq!((d.outcome, d.weight), (Outcome::Aborted(AbortReason::UserAborted), 0));
    let d = next(&s, &st, &with_command(1, 10, Command::PromoteFull));
    assert_eq!((d.outcome, d.weight), (Outcome::Promoted, 100));
    assert_eq!(reasons(&d), ["RolloutCompleted"]);
    let after = next(&s, &d.state, &with_command(2, 100, Command::Abort));
    assert_eq!((after.outcome, after.weight), (Outcome::Promoted, 100));
    assert_eq!(reasons(&after), ["RolloutCommandIgnored"], "a late abort is said to do nothing");
}

#[test]
fn a_command_that_does_nothing_is_reported_not_dropped() {
    let s = strategy();
    let st = RolloutState::start(t(0));
    for command in [Command::Retry, Command::Resume] {
        let d = next(&s, &st, &with_command(1, 0, command));
        assert_eq!(reasons(&d), ["RolloutCommandIgnored"], "{command:?} while progressing");
        assert_eq!(d.outcome, Outcome::Progressing);
    }
    let aborted = next(&s, &st, &with_command(1, 10, Command::Abort));
    for command in [Command::Promote, Command::Resume, Command::Pause] {
        let d = next(&s, &aborted.state, &with_command(2, 0, command));
        assert_eq!(reasons(&d), ["RolloutCommandIgnored"], "{command:?} while aborted");
        assert!(matches!(d.outcome, Outcome::Degraded(_)));
    }
    let paused = next(&s, &st, &with_command(1, 10, Command::Pause));
    assert_eq!(reasons(&paused), ["RolloutPaused"]);
    let again = next(&s, &paused.state, &with_command(2, 10, Command::Pause));
    assert_eq!(reasons(&again), ["RolloutCommandIgnored"]);
    let resumed = next(&s, &paused.state, &with_command(2, 10, Command::Resume));
    assert!(!reasons(&resumed).contains(&"RolloutCommandIgnored"));
}

#[test]
fn an_operator_restart_resumes_from_serialized_status() {
    let s = background(0);
    let d = next(&s, &RolloutState::start(t(0)), &seen(0, Some(10)));
    let json = serde_json::to_string(&d.state).expect("serializes");
    let restored: RolloutState = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(restored, d.state);
    let obs = seen(30, Some(10));
    assert_eq!(next(&s, &restored, &obs), next(&s, &d.state, &obs));
    assert!(json.contains("\"stepReadyAt\":0"), "{json}");
}

/// Drives a Flagger-style rollout as the operator would: the weight asked is in force on
/// the next pass, background analysis is Running throughout.
#[test]
fn flagger_step_weights_walk_to_promotion() {
    let s = CanaryStrategy::from_step_weights(&[5, 25, 50], MIN).expect("valid");
    let mut state = RolloutState::start(t(0));
    let mut in_force = 0;
    let mut weights = vec![];
    for now in (0..=400).step_by(10) {
        let bg = Some(RunInput::new(state.background_run, AnalysisPhase::Running, None));
        let d =
            next(&s, &state, &Observed { background_analysis: bg, ..seen(now, Some(in_force)) });
        if weights.last() != Some(&d.weight) {
            weights.push(d.weight);
        }
        in_force = d.weight;
        state = d.state;
        if d.outcome == Outcome::Promoted {
            assert!(now >= 180, "three intervals of 60 s at least, promoted at {now}");
            assert_eq!(weights, [5, 25, 50, 100]);
            return;
        }
    }
    panic!("not promoted: {state:?}");
}

#[cfg(feature = "schema")]
#[test]
fn status_types_have_a_json_schema_for_the_crd() {
    let schema = schemars::schema_for!(RolloutState);
    let json = serde_json::to_string(&schema).expect("serializes");
    assert!(json.contains("stepReadyAt") && json.contains("InconclusiveAnalysis"), "{json}");
    let metric = serde_json::to_string(&schemars::schema_for!(crate::MetricStatus)).expect("ok");
    assert!(metric.contains("consecutiveError"), "{metric}");
}

fn shadow_first() -> CanaryStrategy {
    CanaryStrategy::new(vec![
        Step::SetMirror(50),
        Step::Analysis,
        Step::SetMirror(0),
        Step::SetWeight(20),
        Step::Pause(Some(MIN)),
    ])
}

fn seen_mirror(now: i64, weight: u8, mirror: Option<u8>) -> Observed {
    Observed { mirror_in_force: mirror, ..seen(now, Some(weight)) }
}

#[test]
fn mirror_at_holds_until_the_next_set_mirror_and_is_0_past_the_end() {
    let s = shadow_first();
    let mirrors: Vec<u8> = (0..6).map(|i| s.mirror_at(i)).collect();
    assert_eq!(mirrors, [50, 50, 0, 0, 0, 0]);
    assert!(s.mirrors() && !strategy().mirrors());
    let over = CanaryStrategy::new(vec![Step::SetMirror(101)]).validate().expect_err("over 100");
    assert!(over.to_string().contains("setMirror 101 exceeds 100"), "{over}");
}

#[test]
fn a_set_mirror_step_completes_only_once_its_mirror_is_in_force() {
    let s = shadow_first();
    let st = RolloutState::start(t(0));
    let d = next(&s, &st, &seen_mirror(1, 0, Some(0)));
    assert_eq!((d.outcome, d.weight, d.mirror), (Outcome::Progressing, 0, 50));
    assert_eq!(d.state.step, 0, "mirror 0 in force, 50 wanted: waiting");
    assert!(d.analyses.is_empty(), "nothing measured before the mirror is in force");
    let d = next(&s, &d.state, &seen_mirror(2, 0, None));
    assert_eq!(d.state.step, 0, "unknown (Pods differ) is not in force");
    let d = next(&s, &d.state, &seen_mirror(3, 0, Some(50)));
    assert_eq!(d.state.step, 1, "on to the analysis step under the mirror");
    assert_eq!((d.weight, d.mirror), (0, 50));
    assert_eq!(d.analyses.len(), 1, "the analysis runs while the mirror is in force");
    let ok = Observed {
        step_analysis: Some(RunInput::new(d.state.step_run, AnalysisPhase::Successful, None)),
        ..seen_mirror(4, 0, Some(50))
    };
    let d = next(&s, &d.state, &ok);
    assert_eq!((d.state.step, d.weight, d.mirror), (2, 0, 0), "setMirror 0 wanted");
    let d = next(&s, &d.state, &seen_mirror(5, 0, Some(0)));
    assert_eq!((d.state.step, d.weight, d.mirror), (3, 20, 0));
}

#[test]
fn a_failed_shadow_analysis_aborts_with_no_weight_and_no_mirror() {
    let s = shadow_first();
    let d = next(&s, &RolloutState::start(t(0)), &seen_mirror(1, 0, Some(50)));
    assert_eq!(d.state.step, 1);
    let failed = Observed {
        step_analysis: Some(RunInput::new(
            d.state.step_run,
            AnalysisPhase::Failed,
            Some("agreement 0.93 < 0.99".into()),
        )),
        ..seen_mirror(2, 0, Some(50))
    };
    let d = next(&s, &d.state, &failed);
    assert_eq!(d.outcome, Outcome::Aborted(AbortReason::FailedAnalysis));
    assert_eq!((d.weight, d.mirror), (0, 0), "the candidate never answered, and stops shadowing");
    let d = next(&s, &d.state, &seen_mirror(3, 0, Some(0)));
    assert_eq!((d.outcome, d.mirror), (Outcome::Degraded(AbortReason::FailedAnalysis), 0));
}

#[test]
fn a_mirror_never_in_force_hits_the_progress_deadline() {
    let s = CanaryStrategy { progress_deadline: Some(MIN), ..shadow_first() };
    let st = RolloutState::start(t(0));
    let d = next(&s, &st, &seen_mirror(59, 0, Some(0)));
    assert_eq!(d.outcome, Outcome::Progressing);
    let d = next(&s, &d.state, &seen_mirror(60, 0, Some(0)));
    assert_eq!(d.outcome, Outcome::Aborted(AbortReason::ProgressDeadlineExceeded));
    let why = d.state.abort.as_ref().and_then(|a| a.message.clone()).unwrap_or_default();
    assert!(why.contains("mirror 50"), "{why}");
}

#[test]
fn promotion_ends_the_mirror() {
    let s = CanaryStrategy::new(vec![Step::SetMirror(100)]);
    let d = next(&s, &RolloutState::start(t(0)), &seen_mirror(1, 0, Some(100)));
    assert_eq!((d.outcome, d.weight, d.mirror), (Outcome::Promoted, 100, 0));
}
