use super::*;

fn out<'a>(shape: &'a [usize], values: &'a [f64]) -> Output<'a> {
    Output { dtype: DType::F32, shape, values: Values::Float(values) }
}

fn ints<'a>(shape: &'a [usize], values: &'a [i64]) -> Output<'a> {
    Output { dtype: DType::I64, shape, values: Values::Int(values) }
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
    assert_eq!(r.reason, Some(Reason::NonFinite { elements: 3 }), "NaN matches nothing");
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
    assert!(matches!(
        compare(Kind::Exact, out(&[2], &[1.0, 2.0]), ints(&[2], &[1, 2])).reason,
        Some(Reason::DType { .. })
    ));
    let r = compare(SCORES, out(&[3], &[1.0, 2.0]), out(&[3], &[1.0, 2.0]));
    assert_eq!(r.reason, Some(Reason::Malformed));
    let huge: &[usize] = &[usize::MAX, 2];
    assert_eq!(compare(SCORES, out(huge, &[]), out(huge, &[])).reason, Some(Reason::Malformed));
}

#[test]
fn exact_outputs_are_equal_or_not() {
    let (b, c) = (ints(&[3], &[1, 2, 3]), ints(&[3], &[1, 2, 4]));
    assert_eq!(compare(Kind::Exact, b, c).reason, Some(Reason::Values { elements: 1 }));
}

#[test]
fn defaults_come_from_the_signature() {
    assert_eq!(default_kind(DType::F32, Some(10)), Kind::Classes { top_k: 5 });
    assert_eq!(default_kind(DType::F64, Some(3)), Kind::Classes { top_k: 3 });
    assert!(matches!(default_kind(DType::F16, Some(1)), Kind::Scores { .. }));
    assert!(matches!(default_kind(DType::F32, None), Kind::Scores { .. }));
    assert_eq!(default_kind(DType::I64, Some(10)), Kind::Exact);
    assert_eq!(default_kind(DType::String, Some(10)), Kind::Exact);
    assert_eq!(default_kind(DType::Bool, None), Kind::Exact);
}

#[test]
fn ties_go_to_the_lowest_index() {
    assert_eq!(argmax(&[0.5, 0.5, 0.1]), Some(0));
    assert_eq!(top_k(&[0.2, 0.5, 0.5, f64::NAN], 3), [1, 2, 0]);
    assert_eq!(argmax::<f64>(&[]), None);
}

#[test]
fn dtypes_must_be_exactly_equal() {
    let f64s = Output { dtype: DType::F64, shape: &[2], values: Values::Float(&[1.0, 2.0]) };
    let r = compare(SCORES, out(&[2], &[1.0, 2.0]), f64s);
    assert_eq!(r.reason, Some(Reason::DType { baseline: DType::F32, candidate: DType::F64 }));
    let i32s = Output { dtype: DType::I32, shape: &[2], values: Values::Int(&[1, 2]) };
    assert!(matches!(
        compare(Kind::Exact, ints(&[2], &[1, 2]), i32s).reason,
        Some(Reason::DType { .. })
    ));
    // Values of another family than the dtype are malformed, not compared.
    let lying = Output { dtype: DType::F32, shape: &[2], values: Values::Int(&[1, 2]) };
    assert_eq!(compare(Kind::Exact, lying, lying).reason, Some(Reason::Malformed));
}

#[test]
fn integers_beyond_2_pow_53_compare_as_integers() {
    let big = 1i64 << 53;
    let r = compare(Kind::Exact, ints(&[2], &[big + 1, -big - 1]), ints(&[2], &[big, -big - 1]));
    assert_eq!(r.reason, Some(Reason::Values { elements: 1 }), "{r:?}");
    assert_eq!(r.max_abs_diff, 1.0);
    assert!(compare(Kind::Exact, ints(&[1], &[i64::MAX]), ints(&[1], &[i64::MAX])).agree);
    let r = compare(Kind::Exact, ints(&[1], &[i64::MIN]), ints(&[1], &[i64::MAX]));
    assert_eq!((r.agree, r.max_abs_diff), (false, 2f64.powi(64) - 1.0));
    let u = |v: &'static [u64]| Output { dtype: DType::U64, shape: &[1], values: Values::UInt(v) };
    assert!(!compare(Kind::Exact, u(&[u64::MAX]), u(&[u64::MAX - 1])).agree);
    assert!(compare(Kind::Exact, u(&[u64::MAX]), u(&[u64::MAX])).agree);
}

#[test]
fn non_finite_class_scores_never_match() {
    let classes = Kind::Classes { top_k: 2 };
    // The same argmax, an infinity that flips sign elsewhere in the row.
    let r = compare(
        classes,
        out(&[1, 3], &[9.0, 1.0, f64::NEG_INFINITY]),
        out(&[1, 3], &[9.0, 1.0, f64::INFINITY]),
    );
    assert!(!r.agree, "{r:?}");
    assert_eq!(r.reason, Some(Reason::NonFinite { elements: 1 }));
    // Even the same infinity in a class output, on either side.
    let inf = [f64::INFINITY, 1.0, 0.0];
    assert!(!compare(classes, out(&[1, 3], &inf), out(&[1, 3], &inf)).agree);
    let r = compare(classes, out(&[1, 3], &inf), out(&[1, 3], &[5.0, 1.0, 0.0]));
    assert_eq!((r.agree, r.argmax_agreed), (false, 0));
    let nan = [f64::NAN, 1.0, 0.0];
    assert!(!compare(classes, out(&[1, 3], &nan), out(&[1, 3], &nan)).agree);
    // Scores: only the same infinity matches.
    assert!(compare(SCORES, out(&[1], &[f64::INFINITY]), out(&[1], &[f64::INFINITY])).agree);
    let r = compare(SCORES, out(&[1], &[f64::INFINITY]), out(&[1], &[f64::NEG_INFINITY]));
    assert_eq!(r.reason, Some(Reason::NonFinite { elements: 1 }));
    let r = compare(SCORES, out(&[1], &[f64::INFINITY]), out(&[1], &[1e300]));
    assert_eq!(r.reason, Some(Reason::NonFinite { elements: 1 }));
}

#[test]
fn strings_and_booleans_compare_exactly_whatever_the_kind() {
    let s = |v: &'static [&'static [u8]]| Output {
        dtype: DType::String,
        shape: &[2],
        values: Values::Bytes(v),
    };
    let loose = Kind::Scores { abs_tol: 10.0, rel_tol: 10.0 };
    let r = compare(loose, s(&[b"caf\xc3\xa9", b"x"]), s(&[b"cafe", b"x"]));
    assert_eq!(r.reason, Some(Reason::Values { elements: 1 }));
    assert!(compare(Kind::Classes { top_k: 1 }, s(&[b"a", b"\0"]), s(&[b"a", b"\0"])).agree);
    let b =
        |v: &'static [bool]| Output { dtype: DType::Bool, shape: &[2], values: Values::Bool(v) };
    assert!(!compare(loose, b(&[true, false]), b(&[true, true])).agree);
}
