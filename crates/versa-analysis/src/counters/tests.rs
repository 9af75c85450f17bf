use super::*;

fn hist(counts: &[u64], count: u64, sum: f64) -> Histogram {
    let les = [0.01, 0.1, 1.0];
    Histogram {
        buckets: les.iter().zip(counts).map(|(&le, &count)| Bucket { le, count }).collect(),
        count,
        sum,
    }
}

fn series(requests: u64, server: u64, client: u64, h: Histogram) -> SeriesCounters {
    SeriesCounters {
        requests,
        errors: ErrorCounts { server, model: 0, client },
        latency: h,
        ..SeriesCounters::default()
    }
}

fn snap(start: i64, at: i64, entries: &[(i64, SeriesCounters)]) -> Snapshot {
    Snapshot {
        process_start: Timestamp::from_secs(start),
        taken_at: Timestamp::from_secs(at),
        series: entries.iter().map(|(v, c)| (SeriesKey::new("m", *v), c.clone())).collect(),
    }
}

fn data(w: PodWindow) -> WindowTotals {
    match w {
        PodWindow::Data(t) => t,
        other => panic!("expected data, got {other:?}"),
    }
}

#[test]
fn first_snapshot_is_only_a_baseline() {
    let s = snap(1, 100, &[(1, series(1000, 5, 1, hist(&[10, 500, 990], 1000, 90.0)))]);
    assert_eq!(delta(None, &s), PodWindow::Baseline);
}

#[test]
fn delta_is_the_increase_of_every_counter() {
    let a = snap(1, 100, &[(1, series(100, 2, 1, hist(&[10, 50, 99], 100, 9.0)))]);
    let b = snap(1, 130, &[(1, series(160, 5, 1, hist(&[12, 90, 158], 160, 15.0)))]);
    let t = data(delta(Some(&a), &b));
    assert_eq!(t.pods, 1);
    let s = t.get("m", 1);
    assert_eq!(s.requests, 60);
    assert_eq!(s.errors, ErrorCounts { server: 3, model: 0, client: 0 });
    assert_eq!(s.latency, hist(&[2, 40, 59], 60, 6.0));
}

#[test]
fn restarted_process_is_a_reset_not_data() {
    // same-looking bigger counters after a restart must not be read as an increase
    let a = snap(1, 100, &[(1, series(100, 0, 0, hist(&[0, 100, 100], 100, 5.0)))]);
    let b = snap(120, 130, &[(1, series(150, 0, 0, hist(&[0, 150, 150], 150, 7.0)))]);
    assert_eq!(delta(Some(&a), &b), PodWindow::Reset(ResetReason::ProcessRestarted));
}

#[test]
fn any_decreasing_counter_is_a_reset() {
    let base = series(100, 3, 1, hist(&[10, 50, 99], 100, 9.0));
    let a = snap(1, 100, &[(1, base.clone()), (2, base.clone())]);
    let cases = [
        series(50, 3, 1, hist(&[10, 50, 99], 100, 9.0)), // requests
        series(100, 2, 1, hist(&[10, 50, 99], 100, 9.0)), // server errors
        series(100, 3, 0, hist(&[10, 50, 99], 100, 9.0)), // client errors
        series(100, 3, 1, hist(&[10, 49, 99], 100, 9.0)), // one bucket
        series(100, 3, 1, hist(&[10, 50, 99], 99, 9.0)), // +Inf
        series(100, 3, 1, hist(&[10, 50, 99], 100, 8.0)), // sum
    ];
    for case in cases {
        let b = snap(1, 130, &[(1, base.clone()), (2, case.clone())]);
        assert_eq!(
            delta(Some(&a), &b),
            PodWindow::Reset(ResetReason::CounterDecreased(SeriesKey::new("m", 2))),
            "{case:?}"
        );
    }
}

#[test]
fn changed_bucket_bounds_are_a_reset() {
    let a = snap(1, 100, &[(1, series(1, 0, 0, hist(&[1, 1, 1], 1, 0.001)))]);
    let mut h = hist(&[1, 2, 2], 2, 0.002);
    h.buckets[1].le = 0.2;
    let b = snap(1, 130, &[(1, series(2, 0, 0, h))]);
    assert!(matches!(delta(Some(&a), &b), PodWindow::Reset(ResetReason::CounterDecreased(_))));
}

#[test]
fn clock_not_advancing_is_no_data() {
    let a = snap(1, 100, &[(1, series(1, 0, 0, Histogram::default()))]);
    let b = snap(1, 100, &[(1, series(2, 0, 0, Histogram::default()))]);
    assert_eq!(delta(Some(&a), &b), PodWindow::Reset(ResetReason::ClockNotAdvancing));
}

#[test]
fn new_series_counts_from_zero_and_vanished_series_contribute_nothing() {
    let a = snap(1, 100, &[(1, series(100, 0, 0, Histogram::default()))]);
    let b = snap(1, 130, &[(2, series(7, 1, 0, Histogram::default()))]);
    let t = data(delta(Some(&a), &b));
    assert_eq!(t.get("m", 2).requests, 7);
    assert_eq!(t.get("m", 1), SeriesCounters::default());
}

#[test]
fn merge_sums_pods_and_skips_baselines_and_resets() {
    let p1 = PodWindow::Data(WindowTotals {
        pods: 1,
        series: [(SeriesKey::new("m", 1), series(10, 1, 0, hist(&[1, 5, 10], 10, 1.0)))].into(),
    });
    let p2 = PodWindow::Data(WindowTotals {
        pods: 1,
        series: [(SeriesKey::new("m", 1), series(30, 2, 4, hist(&[3, 20, 29], 30, 2.5)))].into(),
    });
    let merged = WindowTotals::merge([
        &p1,
        &PodWindow::Baseline,
        &PodWindow::Reset(ResetReason::ProcessRestarted),
        &p2,
    ])
    .expect("test fixture");
    assert_eq!(merged.pods, 2);
    let s = merged.get("m", 1);
    assert_eq!(s.requests, 40);
    assert_eq!(s.errors, ErrorCounts { server: 3, model: 0, client: 4 });
    assert_eq!(s.latency, hist(&[4, 25, 39], 40, 3.5));
}

#[test]
fn merge_adopts_layout_when_the_first_pod_had_no_observations() {
    let empty = PodWindow::Data(WindowTotals {
        pods: 1,
        series: [(SeriesKey::new("m", 1), series(0, 0, 0, Histogram::default()))].into(),
    });
    let full = PodWindow::Data(WindowTotals {
        pods: 1,
        series: [(SeriesKey::new("m", 1), series(3, 0, 0, hist(&[0, 3, 3], 3, 0.2)))].into(),
    });
    let merged = WindowTotals::merge([&empty, &full, &empty]).expect("test fixture");
    assert_eq!(merged.get("m", 1).latency, hist(&[0, 3, 3], 3, 0.2));
}

#[test]
fn merge_refuses_different_bucket_bounds() {
    let mut other = hist(&[0, 3, 3], 3, 0.2);
    other.buckets[0].le = 0.02;
    let p1 = PodWindow::Data(WindowTotals {
        pods: 1,
        series: [(SeriesKey::new("m", 1), series(3, 0, 0, hist(&[0, 3, 3], 3, 0.2)))].into(),
    });
    let p2 = PodWindow::Data(WindowTotals {
        pods: 1,
        series: [(SeriesKey::new("m", 1), series(3, 0, 0, other))].into(),
    });
    assert_eq!(
        WindowTotals::merge([&p1, &p2]),
        Err(Error::BucketLayoutMismatch { model: "m".into(), version: 1 })
    );
}

#[test]
fn one_models_window_ignores_another_models_series() {
    let mut a = snap(1, 100, &[(1, series(100, 0, 0, hist(&[10, 50, 99], 100, 9.0)))]);
    let mut b = snap(1, 130, &[(1, series(160, 3, 0, hist(&[12, 90, 158], 160, 15.0)))]);
    // Another model's counter goes down (or its buckets differ) in the same Pod.
    a.series.insert(SeriesKey::new("other", 1), series(50, 0, 0, hist(&[1, 2, 3], 3, 1.0)));
    let odd = Histogram { buckets: vec![Bucket { le: 5.0, count: 1 }], count: 1, sum: 1.0 };
    b.series.insert(SeriesKey::new("other", 1), series(10, 0, 0, odd));
    assert!(matches!(delta(Some(&a), &b), PodWindow::Reset(ResetReason::CounterDecreased(_))));
    let w = data(delta(Some(&a.of_model("m")), &b.of_model("m")));
    assert_eq!(w.series.keys().map(|k| k.model.as_str()).collect::<Vec<_>>(), ["m"]);
    assert_eq!(w.series[&SeriesKey::new("m", 1)].requests, 60);
}

fn with_mirror(agree: u64, shed: u64) -> SeriesCounters {
    let mirror = MirrorCounts {
        agree,
        shed,
        latency_ratio: hist(&[agree, agree], agree, agree as f64),
        ..MirrorCounts::default()
    };
    SeriesCounters {
        mirror: Mirrors([(41, mirror)].into()),
        ..series(0, 0, 0, Histogram::default())
    }
}

#[test]
fn mirror_counts_are_windowed_and_merged_like_requests() {
    let before = snap(1, 10, &[(42, with_mirror(10, 1))]);
    let after = snap(1, 20, &[(42, with_mirror(30, 4))]);
    let w = data(delta(Some(&before), &after));
    let m = &w.series[&SeriesKey::new("m", 42)].mirror.of(Some(41));
    assert_eq!((m.agree, m.shed, m.latency_ratio.count), (20, 3, 20));
    let merged = WindowTotals::merge(&[PodWindow::Data(w.clone()), PodWindow::Data(w)])
        .expect("same layout");
    assert_eq!(merged.get("m", 42).mirror.of(None).agree, 40);
    let fewer = snap(1, 30, &[(42, with_mirror(5, 4))]);
    assert!(
        matches!(delta(Some(&after), &fewer), PodWindow::Reset(ResetReason::CounterDecreased(_))),
        "a mirror counter going down is a reset, not a negative window"
    );
}

#[test]
fn a_histogram_created_before_its_first_observation_subtracts_as_zero() {
    let empty = snap(1, 10, &[(42, series(0, 0, 0, Histogram::default()))]);
    let first = snap(1, 20, &[(42, series(3, 0, 0, hist(&[1, 2, 3], 3, 0.1)))]);
    let w = data(delta(Some(&empty), &first));
    assert_eq!(w.get("m", 42).latency.count, 3, "not a reset: the Pod's window counts");
}
