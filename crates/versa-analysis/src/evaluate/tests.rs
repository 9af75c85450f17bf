use super::*;
use MeasurementPhase::{Error as E, Failed, Inconclusive, Successful};

fn cond(src: &str) -> Option<Condition> {
    Some(Condition::compile("successCondition", src).expect("test fixture"))
}

fn obs(value: f64, samples: u64) -> Observation {
    Observation { result: Sample { value, samples }, baseline: None }
}

fn with_baseline(value: f64, samples: u64, b: f64, b_samples: u64) -> Observation {
    Observation {
        result: Sample { value, samples },
        baseline: Some(Sample { value: b, samples: b_samples }),
    }
}

fn conditions(success: Option<&str>, failure: Option<&str>) -> Criteria {
    Criteria::Conditions { success: success.and_then(cond), failure: failure.and_then(cond) }
}

fn phase(e: &Evaluator, o: &Observation) -> MeasurementPhase {
    e.evaluate(o).phase
}

#[test]
fn argo_semantics_of_success_and_failure_conditions() {
    let o = obs(0.02, 100);
    let cases = [
        (None, None, Successful),
        (Some("result < 0.05"), None, Successful),
        (Some("result < 0.01"), None, Failed), // only success: false means Failed
        (None, Some("result > 0.01"), Failed),
        (None, Some("result > 0.05"), Successful), // only failure: false means Successful
        (Some("result < 0.05"), Some("result > 0.01"), Failed), // failure wins
        (Some("result < 0.05"), Some("result > 0.05"), Successful),
        (Some("result < 0.01"), Some("result > 0.05"), Inconclusive), // neither
    ];
    for (s, f, want) in cases {
        let e = Evaluator::new(conditions(s, f), 1);
        assert_eq!(phase(&e, &o), want, "success {s:?} failure {f:?}");
    }
}

#[test]
fn too_few_samples_is_inconclusive_never_failed() {
    let e = Evaluator::new(conditions(Some("result < 0.01"), None), 50);
    // the value would fail, but 49 samples are not enough to say so
    let v = e.evaluate(&obs(0.5, 49));
    assert_eq!(v.phase, Inconclusive);
    assert!(v.message.expect("test fixture").contains("minSampleCount"));
    assert_eq!(phase(&e, &obs(0.5, 50)), Failed);
}

#[test]
fn no_data_is_inconclusive_even_with_min_sample_count_zero() {
    let e = Evaluator::new(conditions(Some("result < 0.01"), None), 0);
    assert_eq!(phase(&e, &obs(f64::NAN, 0)), Inconclusive);
    let r = Evaluator::new(
        Criteria::Range(ThresholdRange::new(None, Some(0.5)).expect("test fixture")),
        0,
    );
    assert_eq!(phase(&r, &obs(f64::NAN, 0)), Inconclusive);
}

#[test]
fn nan_with_samples_is_an_error_not_a_verdict() {
    let e = Evaluator::new(conditions(None, Some("result > 0.5")), 1);
    // NaN > 0.5 is false: without the NaN check this would pass as Successful
    assert_eq!(phase(&e, &obs(f64::NAN, 10)), E);
}

#[test]
fn baseline_comparison_in_the_same_window() {
    let e = Evaluator::new(conditions(Some("result <= baseline * 1.5"), None), 10);
    assert_eq!(phase(&e, &with_baseline(0.12, 100, 0.1, 900)), Successful);
    assert_eq!(phase(&e, &with_baseline(0.2, 100, 0.1, 900)), Failed);
    // the baseline's samples count too when the condition reads it
    assert_eq!(phase(&e, &with_baseline(0.2, 100, 0.1, 3)), Inconclusive);
    // a condition reading baseline with no baseline measured is an error
    assert_eq!(phase(&e, &obs(0.1, 100)), E);
    assert_eq!(phase(&e, &with_baseline(0.1, 100, f64::NAN, 100)), E);
    // a condition not reading baseline ignores its sample count
    let own = Evaluator::new(conditions(Some("result < 0.5"), None), 10);
    assert_eq!(phase(&own, &with_baseline(0.1, 100, 0.1, 0)), Successful);
}

#[test]
fn sample_counts_are_visible_to_conditions() {
    let e = Evaluator::new(
        conditions(Some("resultSamples >= 100 && baselineSamples > resultSamples"), None),
        1,
    );
    assert_eq!(phase(&e, &with_baseline(1.0, 100, 1.0, 900)), Successful);
    assert_eq!(phase(&e, &with_baseline(1.0, 99, 1.0, 900)), Failed);
}

#[test]
fn non_bool_results_and_evaluation_errors_are_measurement_errors() {
    let e = Evaluator::new(conditions(Some("result + 1.0"), None), 1);
    let v = e.evaluate(&obs(0.1, 10));
    assert_eq!(v.phase, E);
    assert!(v.message.expect("test fixture").contains("not a bool"));
    let unknown = Evaluator::new(conditions(Some("result < 1.0 && 1 / 0 == 1"), None), 1);
    assert_eq!(phase(&unknown, &obs(0.1, 10)), E);
}

#[test]
fn int_literals_compare_with_double_results() {
    let e = Evaluator::new(conditions(Some("result < 1"), None), 1);
    assert_eq!(phase(&e, &obs(0.5, 10)), Successful);
}

#[test]
fn compile_errors_carry_the_position_and_message() {
    let err = Condition::compile("failureCondition", "result <").expect_err("must fail");
    match err {
        Error::InvalidExpression { field, expression, line, message, .. } => {
            assert_eq!(field, "failureCondition");
            assert_eq!(expression, "result <");
            assert_eq!(line, 1);
            assert!(!message.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(Condition::compile("successCondition", "result < 0.1").is_ok());
}

#[test]
fn threshold_range_is_inclusive_and_validated() {
    let r = ThresholdRange::new(Some(0.99), None).expect("test fixture");
    let e = Evaluator::new(Criteria::Range(r), 1);
    assert_eq!(phase(&e, &obs(0.99, 10)), Successful);
    assert_eq!(phase(&e, &obs(0.98, 10)), Failed);
    let both = ThresholdRange::new(Some(0.1), Some(0.5)).expect("test fixture");
    assert!(both.contains(0.1) && both.contains(0.5) && !both.contains(0.51));
    assert!(ThresholdRange::new(None, None).is_err());
    assert!(ThresholdRange::new(Some(2.0), Some(1.0)).is_err());
    assert!(ThresholdRange::new(Some(f64::NAN), None).is_err());
}

#[test]
fn compiled_conditions_can_be_shared_across_tasks() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Condition>();
    send_sync::<Evaluator>();
}

#[test]
fn a_verdict_becomes_a_measurement_without_nan() {
    let e = Evaluator::new(conditions(Some("result < 0.5"), None), 1);
    let o = with_baseline(0.1, 10, f64::NAN, 0);
    let m = e.evaluate(&o).into_measurement(&o, crate::Timestamp::from_secs(7));
    assert_eq!(m.phase, Successful);
    assert_eq!((m.value, m.baseline, m.samples), (Some(0.1), None, 10));
    assert_eq!(m.finished_at, crate::Timestamp::from_secs(7));
    let err = crate::Measurement::error(crate::Timestamp::from_secs(8), "sidecar unreachable");
    assert_eq!((err.phase, err.message.as_deref()), (E, Some("sidecar unreachable")));
}

#[test]
fn unknown_variables_are_refused_at_compile_time() {
    let err = Condition::compile("successCondition", "reslt < 0.1").expect_err("typo");
    assert_eq!(
        err,
        Error::UnknownVariable {
            field: "successCondition",
            expression: "reslt < 0.1".into(),
            variable: "reslt".into()
        }
    );
    assert!(err.to_string().contains("known: result, baseline"), "{err}");
    let all = "result < baseline && resultSamples > 0 && baselineSamples > 0";
    assert!(Condition::compile("successCondition", all).is_ok());
}

#[test]
fn comprehensions_and_huge_conditions_are_refused_at_compile() {
    for src in [
        "[1, 2].map(result, result * 2).size() > 0",
        "[1,2,3].all(x, [1,2,3].exists(y, x < y)) || result > 0",
        "[1] .exists_one (x, x > 0)",
        "[1].filter(x, true).size() == 1 && result < 1.0",
        "[0,0].existsOne(result, true) || result > 0.0",
        "[0].// a comment\nall(a, true) || result > 0.0",
        "result < 1.0 // don't\n|| [0].map(a, a).size() > 0",
        "r\"\\\" == 'x' || [0].exists(a, true) || result > 0.0",
        "{'k': [0].all(a, true)}['k'] || result > 0.0",
    ] {
        let err = Condition::compile("successCondition", src).expect_err(src).to_string();
        assert!(err.contains("comprehensions"), "{src}: {err}");
    }
    // The words inside strings, and ordinary functions, are fine.
    assert!(Condition::compile("successCondition", "'.map(' != 'x' && result < 1.0").is_ok());
    assert!(Condition::compile("successCondition", "result < 1.0 && resultSamples > 10").is_ok());
    let long = format!("result < {}", "1.0 + ".repeat(200) + "1.0");
    let err = Condition::compile("successCondition", &long).expect_err("too long").to_string();
    assert!(err.contains("1024 bytes"), "{err}");
}
