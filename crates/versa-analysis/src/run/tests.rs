use super::*;
use MeasurementPhase as M;

const T0: Timestamp = Timestamp::from_secs(1000);

fn m(phase: MeasurementPhase, at_secs: i64) -> Measurement {
    Measurement {
        phase,
        finished_at: Timestamp::from_secs(at_secs),
        value: Some(0.5),
        baseline: None,
        samples: 100,
        message: None,
    }
}

fn every(secs: u64) -> MetricSpec {
    MetricSpec { interval: Some(Duration::from_secs(secs)), ..MetricSpec::new("error-rate") }
}

fn recorded(spec: &MetricSpec, phases: &[MeasurementPhase]) -> MetricStatus {
    let mut status = MetricStatus::default();
    for (i, &p) in phases.iter().enumerate() {
        status.record(spec, m(p, 1000 + 60 * i as i64));
    }
    status
}

#[test]
fn defaults_are_argos() {
    let s = MetricSpec::new("x");
    assert_eq!((s.failure_limit, s.consecutive_error_limit, s.inconclusive_limit), (0, 4, 0));
    assert_eq!(s.effective_count(), Some(1));
    assert_eq!(every(60).effective_count(), None);
}

#[test]
fn pending_then_running_then_successful_at_count() {
    let spec = MetricSpec { count: Some(3), ..every(60) };
    assert_eq!(spec.assess(&MetricStatus::default()), AnalysisPhase::Pending);
    assert_eq!(recorded(&spec, &[M::Successful, M::Successful]).phase, AnalysisPhase::Running);
    assert_eq!(
        recorded(&spec, &[M::Successful, M::Successful, M::Successful]).phase,
        AnalysisPhase::Successful
    );
}

#[test]
fn failure_limit_zero_fails_on_the_first_failure_and_n_tolerates_n() {
    let spec = MetricSpec { count: Some(5), ..every(60) };
    assert_eq!(recorded(&spec, &[M::Successful, M::Failed]).phase, AnalysisPhase::Failed);
    let tolerant = MetricSpec { failure_limit: 2, ..spec.clone() };
    assert_eq!(recorded(&tolerant, &[M::Failed, M::Failed]).phase, AnalysisPhase::Running);
    assert_eq!(recorded(&tolerant, &[M::Failed; 3]).phase, AnalysisPhase::Failed);
    // tolerated failures do not stop the count from succeeding
    let s =
        recorded(&tolerant, &[M::Failed, M::Successful, M::Failed, M::Successful, M::Successful]);
    assert_eq!(s.phase, AnalysisPhase::Successful);
    let unlimited = MetricSpec { failure_limit: -1, ..spec };
    assert_eq!(recorded(&unlimited, &[M::Failed; 4]).phase, AnalysisPhase::Running);
}

#[test]
fn consecutive_error_limit_is_exceeded_on_the_fifth_error_not_the_fourth() {
    let spec = every(60);
    assert_eq!(recorded(&spec, &[M::Error; 4]).phase, AnalysisPhase::Running);
    assert_eq!(recorded(&spec, &[M::Error; 5]).phase, AnalysisPhase::Error);
}

#[test]
fn any_other_outcome_resets_the_error_streak() {
    let spec = every(60);
    let mut phases = vec![M::Error; 4];
    phases.push(M::Successful);
    phases.extend([M::Error; 4]);
    let s = recorded(&spec, &phases);
    assert_eq!((s.error, s.consecutive_error, s.phase), (8, 4, AnalysisPhase::Running));
}

#[test]
fn errors_do_not_count_towards_count() {
    let spec = MetricSpec { count: Some(2), ..every(60) };
    let s = recorded(&spec, &[M::Successful, M::Error]);
    assert_eq!((s.count, s.phase), (1, AnalysisPhase::Running));
}

#[test]
fn inconclusive_limit() {
    let spec = every(60);
    assert_eq!(recorded(&spec, &[M::Inconclusive]).phase, AnalysisPhase::Inconclusive);
    let tolerant = MetricSpec { inconclusive_limit: 2, ..every(60) };
    assert_eq!(recorded(&tolerant, &[M::Inconclusive; 2]).phase, AnalysisPhase::Running);
    assert_eq!(recorded(&tolerant, &[M::Inconclusive; 3]).phase, AnalysisPhase::Inconclusive);
}

#[test]
fn decided_metrics_record_nothing_more() {
    let spec = every(60);
    let mut s = recorded(&spec, &[M::Failed]);
    assert!(!s.record(&spec, m(M::Successful, 2000)));
    assert_eq!((s.successful, s.phase), (0, AnalysisPhase::Failed));
    assert_eq!(spec.next_due(&s, T0), None);
}

#[test]
fn history_is_bounded_but_counts_are_not() {
    let spec = every(60);
    let s = recorded(&spec, &[M::Successful; 25]);
    assert_eq!(s.measurements.len(), MEASUREMENT_HISTORY);
    assert_eq!(s.successful, 25);
    assert_eq!(
        s.measurements.last().expect("test fixture").finished_at,
        Timestamp::from_secs(1000 + 60 * 24)
    );
}

#[test]
fn schedule_initial_delay_interval_and_error_retry() {
    let spec = MetricSpec { initial_delay: Some(Duration::from_secs(30)), ..every(60) };
    let empty = MetricStatus::default();
    assert_eq!(spec.next_due(&empty, T0), Some(Timestamp::from_secs(1030)));
    assert!(!spec.is_due(&empty, T0, Timestamp::from_secs(1029)));
    assert!(spec.is_due(&empty, T0, Timestamp::from_secs(1030)));
    let mut s = MetricStatus::default();
    s.record(&spec, m(M::Successful, 1030));
    assert_eq!(spec.next_due(&s, T0), Some(Timestamp::from_secs(1090)));
    s.record(&spec, m(M::Error, 1090));
    assert_eq!(spec.next_due(&s, T0), Some(Timestamp::from_secs(1100)));
    let once = MetricSpec::new("once");
    assert_eq!(once.next_due(&empty, T0), Some(T0));
}

#[test]
fn status_round_trips_through_json_so_a_restart_resumes() {
    let spec = MetricSpec { count: Some(3), ..every(60) };
    let s = recorded(&spec, &[M::Successful, M::Error]);
    let json = serde_json::to_string(&s).expect("test fixture");
    let back: MetricStatus = serde_json::from_str(&json).expect("test fixture");
    assert_eq!(back, s);
    assert_eq!(spec.next_due(&back, T0), spec.next_due(&s, T0));
    assert!(json.contains("\"consecutiveError\":1"), "{json}");
}

#[test]
fn validation() {
    assert!(MetricSpec { count: Some(0), ..every(60) }.validate().is_err());
    assert!(MetricSpec { count: Some(3), ..MetricSpec::new("x") }.validate().is_err());
    assert!(every(0).validate().is_err());
    assert!(MetricSpec { count: Some(1), ..MetricSpec::new("x") }.validate().is_ok());
}

fn run(metrics: &[(MetricSpec, MetricStatus)]) -> RunState {
    assess_run(metrics.iter().map(|(a, b)| (a, b)))
}

#[test]
fn run_phase_worst_of_deciding_metrics() {
    let a = MetricSpec { name: "a".into(), count: Some(2), ..every(60) };
    let b = MetricSpec { name: "b".into(), ..a.clone() };
    let done = recorded(&a, &[M::Successful; 2]);
    let running = recorded(&a, &[M::Successful]);
    let failed = recorded(&a, &[M::Failed]);
    let errored = recorded(&a, &[M::Error; 5]);
    let inconclusive = recorded(&a, &[M::Inconclusive]);
    assert_eq!(run(&[]).phase, AnalysisPhase::Successful);
    assert_eq!(run(&[(a.clone(), MetricStatus::default())]).phase, AnalysisPhase::Pending);
    assert_eq!(
        run(&[(a.clone(), done.clone()), (b.clone(), running.clone())]).phase,
        AnalysisPhase::Running
    );
    assert_eq!(
        run(&[(a.clone(), done.clone()), (b.clone(), done.clone())]).phase,
        AnalysisPhase::Successful
    );
    // decided as soon as one metric fails, while the other still runs
    let r = run(&[(a.clone(), failed.clone()), (b.clone(), running)]);
    assert_eq!(r.phase, AnalysisPhase::Failed);
    assert!(r.message.expect("test fixture").contains("failed (1) > failureLimit (0)"));
    // precedence: Failed > Error > Inconclusive
    assert_eq!(
        run(&[(a.clone(), errored.clone()), (b.clone(), failed)]).phase,
        AnalysisPhase::Failed
    );
    assert_eq!(
        run(&[(a.clone(), inconclusive.clone()), (b.clone(), errored)]).phase,
        AnalysisPhase::Error
    );
    assert_eq!(run(&[(a, inconclusive), (b, done)]).phase, AnalysisPhase::Inconclusive);
}

#[test]
fn dry_run_metrics_are_recorded_but_never_decide() {
    let real = MetricSpec { name: "real".into(), count: Some(1), ..every(60) };
    let dry = MetricSpec { name: "dry".into(), dry_run: true, ..real.clone() };
    let failed = recorded(&dry, &[M::Failed]);
    assert_eq!(failed.phase, AnalysisPhase::Failed); // recorded as it is
    let r =
        run(&[(real.clone(), recorded(&real, &[M::Successful])), (dry.clone(), failed.clone())]);
    assert_eq!(r, RunState { phase: AnalysisPhase::Successful, message: None });
    // a dry-run metric alone never fails the run either
    assert_eq!(run(&[(dry.clone(), failed)]).phase, AnalysisPhase::Successful);
    // but the run waits for it to complete, like Argo
    let r =
        run(&[(real.clone(), recorded(&real, &[M::Successful])), (dry, MetricStatus::default())]);
    assert_eq!(r.phase, AnalysisPhase::Running);
}

#[test]
fn run_next_due_is_the_earliest_undecided_metric() {
    let fast = every(30);
    let slow = every(300);
    let decided = recorded(&fast, &[M::Failed]);
    let s_fast = recorded(&fast, &[M::Successful]); // last at 1000 → 1030
    let s_slow = recorded(&slow, &[M::Successful]); // → 1300
    let due = run_next_due([(&slow, &s_slow), (&fast, &s_fast), (&fast, &decided)], T0);
    assert_eq!(due, Some(Timestamp::from_secs(1030)));
    assert_eq!(run_next_due([(&fast, &decided)], T0), None);
}

#[test]
fn a_long_measurement_message_is_cut_before_it_reaches_status() {
    let spec = MetricSpec::new("errors");
    let mut status = MetricStatus::default();
    let long = "pod-é: unreachable; ".repeat(100);
    assert!(status.record(&spec, Measurement::error(Timestamp(1), long)));
    let kept = status.measurements[0].message.as_deref().unwrap_or_default();
    assert!(kept.len() <= MAX_MEASUREMENT_MESSAGE && kept.ends_with('…'), "{}", kept.len());
    assert_eq!(bounded_message("short"), "short");
}

#[test]
fn no_pod_to_measure_is_inconclusive_never_an_error() {
    let m = Measurement::inconclusive(Timestamp(5), "no Ready Pod to measure");
    assert_eq!((m.phase, m.samples), (MeasurementPhase::Inconclusive, 0));
}
