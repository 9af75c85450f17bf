use super::*;

fn out<'a>(shape: &'a [usize], values: &'a [f64]) -> Output<'a> {
    Output { dtype: DType::Float, shape, values }
}

const SCORES: Kind = Kind::Scores { abs_tol: 1e-5, rel_tol: 1e-3 };

#[test]
fn identical_outputs_agree_under_every_kind() {
    let v = [0.1, 0.7, 0.2, 0.5, 0.25, 0.25];
    for kind in [Kind::Classes { top_k: 2 }, SCORES, Kind::Exact] {
        let c = compare(kind, out(&[2, 3], &v), out(&[2, 3], &v));
        assert!(c.agree && c.reason.is_none(), "{kind:?}: {c:?}");
        assert_eq!((c.max_abs_diff, c.non_finite), (0.0, 0));
    }
    let c = compare(Kind::Classes { top_k: 2 }, out(&[2, 3], &v), out(&[2, 3], &v));
    assert_eq!((c.rows, c.argmax_agreed, c.top_k_overlap), (2, 2, Some(1.0)));
}

#[test]
fn classes_count_rows_whose_argmax_flips_and_the_top_k_overlap() {
    let b = [0.1, 0.7, 0.2, /**/ 0.6, 0.3, 0.1];
    let c = [0.1, 0.6, 0.3, /**/ 0.3, 0.6, 0.1];
    let r = compare(Kind::Classes { top_k: 2 }, out(&[2, 3], &b), out(&[2, 3], &c));
    assert_eq!((r.rows, r.argmax_agreed), (2, 1));
    assert_eq!(r.reason, Some(Reason::Argmax { rows: 1 }));
    assert_eq!(r.top_k_overlap, Some(1.0), "the same two classes lead in both rows");
    assert!((r.max_abs_diff - 0.3).abs() < 1e-12);
    // Scores move, the winner does not: classes still agree.
    let small = [0.1, 0.65, 0.25, 0.55, 0.35, 0.1];
    assert!(compare(Kind::Classes { top_k: 1 }, out(&[2, 3], &b), out(&[2, 3], &small)).agree);
}

#[test]
fn scores_agree_within_either_tolerance_like_isclose() {
    let b = [1000.0, 0.0, -2.0];
    let near = [1000.9, 0.000_009, -2.001_9];
    assert!(compare(SCORES, out(&[3], &b), out(&[3], &near)).agree);
    let far = [1001.1, 0.0, -2.0];
    let r = compare(SCORES, out(&[3], &b), out(&[3], &far));
    assert_eq!(r.reason, Some(Reason::Values { elements: 1 }));
    assert!((r.max_rel_diff - 1.1e-3).abs() < 1e-9, "{}", r.max_rel_diff);
}

#[test]
fn non_finite_candidate_values_are_counted_and_disagree_where_the_baseline_is_finite() {
    let b = [0.5, f64::NAN, 1.0];
    let c = [f64::NAN, f64::NAN, f64::INFINITY];
    let r = compare(SCORES, out(&[3], &b), out(&[3], &c));
    assert_eq!(r.non_finite, 3);
    assert_eq!(r.reason, Some(Reason::NonFinite { elements: 2 }));
    // A NaN row has no argmax: never an agreement.
    let r = compare(
        Kind::Classes { top_k: 1 },
        out(&[1, 2], &[0.2, 0.8]),
        out(&[1, 2], &[f64::NAN, 0.9]),
    );
    assert_eq!((r.argmax_agreed, r.agree), (0, false));
}

#[test]
fn shape_dtype_and_malformed_outputs_disagree_before_any_value() {
    let r = compare(SCORES, out(&[2], &[1.0, 2.0]), out(&[1, 2], &[1.0, 2.0]));
    assert!(matches!(r.reason, Some(Reason::Shape { .. })) && !r.agree);
    let ints = Output { dtype: DType::Int, shape: &[2], values: &[1.0, 2.0] };
    assert!(matches!(
        compare(Kind::Exact, out(&[2], &[1.0, 2.0]), ints).reason,
        Some(Reason::DType { .. })
    ));
    let r = compare(SCORES, out(&[3], &[1.0, 2.0]), out(&[3], &[1.0, 2.0]));
    assert_eq!(r.reason, Some(Reason::Malformed));
    let huge: &[usize] = &[usize::MAX, 2];
    assert_eq!(compare(SCORES, out(huge, &[]), out(huge, &[])).reason, Some(Reason::Malformed));
}

#[test]
fn exact_outputs_are_equal_or_not() {
    let b = Output { dtype: DType::Int, shape: &[3], values: &[1.0, 2.0, 3.0] };
    let c = Output { dtype: DType::Int, shape: &[3], values: &[1.0, 2.0, 4.0] };
    assert_eq!(compare(Kind::Exact, b, c).reason, Some(Reason::Values { elements: 1 }));
}

#[test]
fn defaults_come_from_the_signature() {
    assert_eq!(default_kind(DType::Float, Some(10)), Kind::Classes { top_k: 5 });
    assert_eq!(default_kind(DType::Float, Some(3)), Kind::Classes { top_k: 3 });
    assert!(matches!(default_kind(DType::Float, Some(1)), Kind::Scores { .. }));
    assert!(matches!(default_kind(DType::Float, None), Kind::Scores { .. }));
    assert_eq!(default_kind(DType::Int, Some(10)), Kind::Exact);
    assert_eq!(default_kind(DType::Bool, None), Kind::Exact);
}

#[test]
fn ties_go_to_the_lowest_index() {
    assert_eq!(argmax(&[0.5, 0.5, 0.1]), Some(0));
    assert_eq!(top_k(&[0.2, 0.5, 0.5, f64::NAN], 3), [1, 2, 0]);
    assert_eq!(argmax(&[]), None);
}
