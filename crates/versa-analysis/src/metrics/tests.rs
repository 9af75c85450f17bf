use super::*;
use crate::counters::{Bucket, ErrorCounts, SeriesKey};

fn hist(buckets: &[(f64, u64)], count: u64, sum: f64) -> Histogram {
    Histogram {
        buckets: buckets.iter().map(|&(le, count)| Bucket { le, count }).collect(),
        count,
        sum,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn quantile_interpolates_linearly_within_the_bucket() {
    // 100 observations: 20 <= 0.1, 80 <= 0.2, 100 <= 0.4
    let h = hist(&[(0.1, 20), (0.2, 80), (0.4, 100)], 100, 0.0);
    // rank 50 → bucket (0.1, 0.2], 30 of its 60 → 0.15
    assert!(close(histogram_quantile(0.5, &h), 0.15));
    // rank 90 → bucket (0.2, 0.4], 10 of its 20 → 0.3
    assert!(close(histogram_quantile(0.9, &h), 0.3));
    // rank 10 in the first bucket, lower bound 0 → 0.05
    assert!(close(histogram_quantile(0.1, &h), 0.05));
    assert!(close(histogram_quantile(1.0, &h), 0.4));
}

#[test]
fn quantile_in_the_inf_bucket_is_the_largest_finite_bound() {
    let h = hist(&[(0.1, 50), (0.5, 60)], 100, 0.0);
    assert_eq!(histogram_quantile(0.99, &h), 0.5);
    assert!(histogram_quantile(0.5, &h) <= 0.1);
}

#[test]
fn quantile_edges() {
    assert!(histogram_quantile(0.5, &hist(&[(0.1, 0)], 0, 0.0)).is_nan());
    assert!(histogram_quantile(0.5, &hist(&[], 10, 1.0)).is_nan());
    // q = 0: the lower bound of the first non-empty bucket, not NaN from 0/0
    let h = hist(&[(0.1, 0), (0.2, 10)], 10, 0.0);
    assert!(close(histogram_quantile(0.0, &h), 0.1));
    assert_eq!(histogram_quantile(0.5, &hist(&[(0.0, 5), (1.0, 10)], 10, 0.0)), 0.0);
    // a non-monotonic bucket does not produce a value below the previous bound
    let bad = hist(&[(0.1, 50), (0.2, 40), (0.4, 100)], 100, 0.0);
    let v = histogram_quantile(0.6, &bad);
    assert!(v > 0.2 && v <= 0.4, "{v}");
}

#[test]
fn latency_constructor_validates_the_quantile() {
    assert!(BuiltinMetric::latency(0.99).is_ok());
    assert_eq!(BuiltinMetric::latency(1.5), Err(Error::InvalidQuantile(1.5)));
    assert!(BuiltinMetric::latency(f64::NAN).is_err());
}

fn counters(requests: u64, errors: ErrorCounts, h: Histogram) -> SeriesCounters {
    SeriesCounters { requests, errors, latency: h, ..SeriesCounters::default() }
}

#[test]
fn error_rate_excludes_client_errors_by_default() {
    let c = counters(100, ErrorCounts { server: 2, model: 3, client: 20 }, Histogram::default());
    // 5 of the 80 requests that were not the client's fault
    let default = BuiltinMetric::ErrorRate(ErrorClasses::default()).sample(&c);
    assert!(close(default.value, 5.0 / 80.0), "{}", default.value);
    assert_eq!(default.samples, 80);
    let all = ErrorClasses { client: true, ..ErrorClasses::default() };
    assert!(close(BuiltinMetric::ErrorRate(all).sample(&c).value, 0.25));
    let server_only = ErrorClasses { server: true, model: false, client: false };
    assert!(close(BuiltinMetric::ErrorRate(server_only).sample(&c).value, 2.0 / 77.0));
}

#[test]
fn junk_requests_do_not_dilute_a_failing_candidate() {
    // 20 % of the real requests fail; nine times as many invalid ones are added
    let honest =
        counters(100, ErrorCounts { server: 0, model: 20, client: 0 }, Histogram::default());
    let diluted =
        counters(1000, ErrorCounts { server: 0, model: 20, client: 900 }, Histogram::default());
    let rate = BuiltinMetric::ErrorRate(ErrorClasses::default());
    assert!(close(rate.sample(&honest).value, 0.2));
    assert!(close(rate.sample(&diluted).value, 0.2));
}

#[test]
fn no_requests_is_nan_with_zero_samples_not_zero_errors() {
    let c = SeriesCounters::default();
    for m in [
        BuiltinMetric::ErrorRate(ErrorClasses::default()),
        BuiltinMetric::Latency { quantile: 0.9 },
        BuiltinMetric::MeanLatency,
    ] {
        let s = m.sample(&c);
        assert!(s.value.is_nan(), "{m:?}");
        assert_eq!(s.samples, 0);
    }
    assert_eq!(BuiltinMetric::RequestCount.sample(&c), Sample { value: 0.0, samples: 0 });
}

#[test]
fn mean_latency_and_request_count() {
    let c = counters(8, ErrorCounts::default(), hist(&[(1.0, 8)], 8, 2.0));
    assert_eq!(BuiltinMetric::MeanLatency.sample(&c), Sample { value: 0.25, samples: 8 });
    assert_eq!(BuiltinMetric::RequestCount.sample(&c), Sample { value: 8.0, samples: 8 });
}

#[test]
fn observe_measures_candidate_and_baseline_in_the_same_window() {
    let mut totals = WindowTotals { pods: 2, ..WindowTotals::default() };
    let e = |server| ErrorCounts { server, model: 0, client: 0 };
    totals.series.insert(SeriesKey::new("m", 1), counters(900, e(9), Histogram::default()));
    totals.series.insert(SeriesKey::new("m", 2), counters(100, e(5), Histogram::default()));
    totals.series.insert(SeriesKey::new("other", 2), counters(100, e(50), Histogram::default()));
    let o = BuiltinMetric::ErrorRate(ErrorClasses::default())
        .observe(&totals, "m", 2, Some(1))
        .expect("two Pods contributed");
    assert!(close(o.result.value, 0.05));
    let b = o.baseline.expect("test fixture");
    assert!(close(b.value, 0.01));
    assert_eq!(b.samples, 900);
    let none = BuiltinMetric::RequestCount.observe(&totals, "m", 2, None).expect("data");
    assert_eq!(none.baseline, None);
}

#[test]
fn a_window_no_pod_contributed_to_is_no_observation_but_a_quiet_one_is() {
    // every Pod a baseline (operator just restarted) or reset: nothing to measure
    let nothing = WindowTotals::default();
    assert_eq!(BuiltinMetric::RequestCount.observe(&nothing, "m", 2, Some(1)), None);
    // Pods reported, but no requests: an observation with zero samples
    let quiet = WindowTotals { pods: 3, ..WindowTotals::default() };
    let o = BuiltinMetric::ErrorRate(ErrorClasses::default()).observe(&quiet, "m", 2, Some(1));
    assert_eq!(o.map(|o| o.result.samples), Some(0));
}

fn mirrored(m: crate::counters::MirrorCounts) -> WindowTotals {
    let mirror = crate::counters::Mirrors([(41, m)].into());
    let counters = SeriesCounters { mirror, ..SeriesCounters::default() };
    WindowTotals { pods: 1, series: [(SeriesKey::new("fraud", 42), counters)].into() }
}

#[test]
fn mirror_metrics_count_only_the_copies_that_say_something_about_the_candidate() {
    let m = crate::counters::MirrorCounts {
        agree: 95,
        disagree: 5,
        error: 3,
        timeout: 2,
        shed: 1_000,
        unavailable: 50,
        non_finite: 4,
        latency_ratio: hist(&[(1.0, 60), (2.0, 100)], 100, 120.0),
    };
    let totals = mirrored(m);
    let at = |metric: BuiltinMetric| metric.observe(&totals, "fraud", 42, Some(41)).expect("pods");
    let agree = at(BuiltinMetric::MirrorAgreementRate);
    assert_eq!((agree.result.samples, agree.baseline), (100, None), "no baseline for mirrors");
    assert!(close(agree.result.value, 0.95));
    let errors = at(BuiltinMetric::MirrorErrorRate).result;
    assert_eq!(errors.samples, 105, "shed and unavailable copies never ran");
    assert!(close(errors.value, 5.0 / 105.0));
    let non_finite = at(BuiltinMetric::MirrorNonFiniteRate).result;
    assert!(close(non_finite.value, 0.04) && non_finite.samples == 100);
    let ratio = at(BuiltinMetric::mirror_latency_ratio(0.5).expect("valid")).result;
    assert!(close(ratio.value, 50.0 / 60.0), "{}", ratio.value);
    assert!(BuiltinMetric::mirror_latency_ratio(2.0).is_err());
    let quiet = mirrored(crate::counters::MirrorCounts::default());
    let none = BuiltinMetric::MirrorAgreementRate.observe(&quiet, "fraud", 42, None).expect("pods");
    assert!(none.result.value.is_nan() && none.result.samples == 0, "no copies: Inconclusive");
    assert!(!BuiltinMetric::MeanLatency.is_mirror() && BuiltinMetric::MirrorErrorRate.is_mirror());
    let other = BuiltinMetric::MirrorAgreementRate.observe(&totals, "fraud", 42, Some(30));
    assert_eq!(
        other.expect("pods").result.samples,
        0,
        "copies of another version's requests do not judge the candidate"
    );
}
