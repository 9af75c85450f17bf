use super::*;
use crate::serving::Answered;
use std::time::Duration;
use versa_core::Code;
use versa_proto::versa::v1::{ErrorCounts, SeriesCounters};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A request that named its version or label (or asked for the latest).
fn direct(version: Option<i64>, label: Option<&str>) -> Answered {
    Answered { version, label: label.map(str::to_owned), split: false }
}

/// A request the model's traffic split sent to `label`'s `version`.
fn split(version: i64, label: &str) -> Answered {
    Answered { version: Some(version), label: Some(label.to_owned()), split: true }
}

fn find<'a>(
    series: &'a [SeriesCounters],
    model: &str,
    version: i64,
    label: &str,
) -> &'a SeriesCounters {
    series
        .iter()
        .find(|s| s.model == model && s.version == version && s.label == label)
        .unwrap_or_else(|| panic!("no series {model}/{version}/{label:?} in {series:#?}"))
}

#[test]
fn requests_are_summed_over_status_and_entry_point_and_errors_split_by_class() {
    let metrics = Metrics::new();
    for _ in 0..3 {
        metrics.record_request("fraud", &direct(Some(1), Some("stable")), "GRPC", Code::Ok, ms(2));
    }
    metrics.record_request("fraud", &direct(Some(1), Some("stable")), "REST", Code::Ok, ms(4));
    metrics.record_request(
        "fraud",
        &direct(Some(1), Some("stable")),
        "REST",
        Code::Internal,
        ms(1),
    );
    metrics.record_request(
        "fraud",
        &direct(Some(1), Some("stable")),
        "GRPC",
        Code::ResourceExhausted,
        ms(1),
    );
    metrics.record_request(
        "fraud",
        &direct(Some(1), Some("stable")),
        "GRPC",
        Code::InvalidArgument,
        ms(1),
    );
    let taken = snapshot(&metrics, 1234);
    assert_eq!(taken.process_start_unix_ms, metrics.started_at_unix_ms);
    assert_eq!(taken.taken_at_unix_ms, 1234);
    assert_eq!(taken.series.len(), 1);
    let s = find(&taken.series, "fraud", 1, "stable");
    assert_eq!(s.requests, 7);
    assert_eq!(s.errors, Some(ErrorCounts { server: 2, model: 0, client: 1 }));
    let latency = s.latency.as_ref().expect("latency");
    assert_eq!(latency.count, 4, "only the successful requests are timed");
    assert!((latency.sum_seconds - 0.010).abs() < 1e-9, "{}", latency.sum_seconds);
    assert_eq!(latency.buckets.len(), request_duration_buckets().len());
    let at = |le: f64| {
        latency.buckets.iter().find(|b| (b.le_seconds - le).abs() < 1e-12).map(|b| b.count)
    };
    assert_eq!(at(0.0016), Some(0), "nothing under 1.6 ms");
    assert_eq!(at(0.0032), Some(3), "the three 2 ms requests");
    assert_eq!(at(0.0064), Some(4), "cumulative: and the 4 ms one");
}

#[test]
fn series_are_per_version_and_label_sorted_and_unanswered_requests_left_out() {
    let metrics = Metrics::new();
    metrics.record_request("fraud", &direct(Some(2), Some("canary")), "GRPC", Code::Ok, ms(1));
    metrics.record_request("fraud", &direct(Some(1), Some("stable")), "GRPC", Code::Ok, ms(1));
    metrics.record_request("fraud", &direct(Some(1), None), "REST", Code::Ok, ms(1));
    metrics.record_request("aaa", &direct(Some(7), None), "REST", Code::Ok, ms(1));
    // No version answered these: an unknown version, an unknown model.
    metrics.record_request("fraud", &direct(None, None), "GRPC", Code::NotFound, ms(1));
    metrics.record_request(
        crate::serving::UNKNOWN_MODEL,
        &direct(None, None),
        "GRPC",
        Code::NotFound,
        ms(1),
    );
    let series = snapshot(&metrics, 1).series;
    let keys: Vec<(&str, i64, &str)> =
        series.iter().map(|s| (s.model.as_str(), s.version, s.label.as_str())).collect();
    assert_eq!(
        keys,
        [("aaa", 7, ""), ("fraud", 1, ""), ("fraud", 1, "stable"), ("fraud", 2, "canary")]
    );
    assert!(series.iter().all(|s| s.requests == 1));
}

#[test]
fn a_series_with_only_failures_has_the_full_bucket_layout_at_zero() {
    let metrics = Metrics::new();
    metrics.record_request(
        "fraud",
        &direct(Some(2), Some("canary")),
        "GRPC",
        Code::Unavailable,
        ms(1),
    );
    let first = snapshot(&metrics, 1);
    let s = find(&first.series, "fraud", 2, "canary");
    assert_eq!(s.errors, Some(ErrorCounts { server: 1, model: 0, client: 0 }));
    let latency = s.latency.clone().expect("latency");
    assert_eq!(latency.count, 0);
    let bounds: Vec<f64> = latency.buckets.iter().map(|b| b.le_seconds).collect();
    assert_eq!(bounds, request_duration_buckets());
    assert!(latency.buckets.iter().all(|b| b.count == 0));
    // Once it succeeds, the bounds are the same: a window can be taken across.
    metrics.record_request("fraud", &direct(Some(2), Some("canary")), "GRPC", Code::Ok, ms(1));
    let second = snapshot(&metrics, 2);
    let later = find(&second.series, "fraud", 2, "canary").latency.clone().expect("latency");
    assert_eq!(later.buckets.iter().map(|b| b.le_seconds).collect::<Vec<_>>(), bounds);
    assert_eq!(later.count, 1);
}

#[test]
fn snapshots_agree_with_the_prometheus_text_and_are_cumulative() {
    let metrics = Metrics::new();
    metrics.record_request("fraud", &direct(Some(1), None), "GRPC", Code::Ok, ms(1));
    let first = snapshot(&metrics, 1);
    metrics.record_request("fraud", &direct(Some(1), None), "GRPC", Code::Ok, ms(1));
    metrics.record_request("fraud", &direct(Some(1), None), "GRPC", Code::DeadlineExceeded, ms(1));
    let second = snapshot(&metrics, 2);
    assert_eq!(first.process_start_unix_ms, second.process_start_unix_ms);
    assert_eq!(find(&first.series, "fraud", 1, "").requests, 1);
    let s = find(&second.series, "fraud", 1, "");
    assert_eq!(s.requests, 3);
    let text = metrics.render();
    assert!(
        text.contains(
            r#"versa_request_duration_seconds_count{label="",model="fraud",split="false",version="1"} 2"#
        ),
        "{text}"
    );
    assert_eq!(s.latency.as_ref().map(|l| l.count), Some(2));
}

#[test]
fn the_request_duration_buckets_are_those_of_the_metric() {
    let bounds = request_duration_buckets();
    assert_eq!(bounds.len(), 20);
    assert_eq!(bounds.first(), Some(&0.0001));
    assert!(bounds.windows(2).all(|w| w[0] < w[1]));
    let expected = prometheus::exponential_buckets(0.0001, 2.0, 20).expect("valid");
    assert_eq!(bounds, expected);
}

#[test]
fn an_unknown_status_label_counts_as_a_server_error() {
    let vec = prometheus::IntCounterVec::new(
        prometheus::Opts::new("versa_requests_total", "x"),
        &["model", "version", "label", "split", "status", "entrypoint"],
    )
    .expect("counter");
    vec.with_label_values(&["m", "1", "", "false", "SOMETHING", "GRPC"]).inc();
    vec.with_label_values(&["m", "not-a-number", "", "false", "OK", "GRPC"]).inc();
    let families = Families { requests: &vec.collect(), durations: &[], reclassified: &[] };
    let series = assemble(&families, &[0.5, 1.0]);
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].errors, Some(ErrorCounts { server: 1, model: 0, client: 0 }));
    let latency = series[0].latency.as_ref().expect("latency");
    assert_eq!(latency.buckets.len(), 2);
}

#[test]
fn split_routed_and_direct_requests_to_one_label_are_separate_series() {
    let metrics = Metrics::new();
    for _ in 0..3 {
        metrics.record_request("fraud", &split(2, "canary"), "GRPC", Code::Ok, ms(2));
    }
    // A client naming the canary's label, or its version, failing on purpose.
    for _ in 0..5 {
        metrics.record_request(
            "fraud",
            &direct(Some(2), Some("canary")),
            "GRPC",
            Code::Internal,
            ms(1),
        );
    }
    metrics.record_request("fraud", &direct(Some(2), None), "REST", Code::Internal, ms(1));
    let series = snapshot(&metrics, 1).series;
    let keys: Vec<(&str, i64, &str, bool)> =
        series.iter().map(|s| (s.model.as_str(), s.version, s.label.as_str(), s.split)).collect();
    assert_eq!(
        keys,
        [("fraud", 2, "", false), ("fraud", 2, "canary", false), ("fraud", 2, "canary", true)]
    );
    let by_split = &series[2];
    assert_eq!(by_split.requests, 3);
    assert_eq!(by_split.errors, Some(ErrorCounts::default()), "the direct failures stay out");
    assert_eq!(by_split.latency.as_ref().map(|l| l.count), Some(3));
    let named = &series[1];
    assert_eq!(named.requests, 5);
    assert_eq!(named.errors, Some(ErrorCounts { server: 5, model: 0, client: 0 }));
    // /metrics says which is which.
    let text = metrics.render();
    for line in [
        r#"versa_requests_total{entrypoint="GRPC",label="canary",model="fraud",split="true",status="OK",version="2"} 3"#,
        r#"versa_requests_total{entrypoint="GRPC",label="canary",model="fraud",split="false",status="INTERNAL",version="2"} 5"#,
        r#"versa_request_duration_seconds_count{label="canary",model="fraud",split="true",version="2"} 3"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[test]
fn reclassified_requests_move_between_classes_and_their_total_stays() {
    let metrics = Metrics::new();
    let canary = split(2, "canary");
    for code in [Code::DeadlineExceeded, Code::DeadlineExceeded] {
        metrics.record_request("fraud", &canary, "GRPC", code, ms(1));
    }
    for _ in 0..3 {
        metrics.record_request("fraud", &canary, "GRPC", Code::Cancelled, ms(1));
    }
    // One deadline the client set below the floor; two cancels after it.
    metrics.record_reclassified("fraud", &canary, Code::DeadlineExceeded, ErrorClass::Client);
    metrics.record_reclassified("fraud", &canary, Code::Cancelled, ErrorClass::Server);
    metrics.record_reclassified("fraud", &canary, Code::Cancelled, ErrorClass::Server);
    let first = snapshot(&metrics, 1);
    let s = &first.series[0];
    assert_eq!(s.requests, 5);
    assert_eq!(s.errors, Some(ErrorCounts { server: 1 + 2, model: 0, client: 1 + 1 }));
    // The status stays what the client was told.
    let text = metrics.render();
    assert!(
        text.contains(r#"versa_requests_total{entrypoint="GRPC",label="canary",model="fraud",split="true",status="CANCELLED",version="2"} 3"#),
        "{text}"
    );
    // Never more moved than the status's class holds, and no success moves.
    for _ in 0..4 {
        metrics.record_reclassified("fraud", &canary, Code::Cancelled, ErrorClass::Server);
    }
    metrics.record_reclassified("fraud", &canary, Code::Ok, ErrorClass::Server);
    let second = snapshot(&metrics, 2);
    let s = &second.series[0];
    // 2 DEADLINE_EXCEEDED, 1 of them the client's; all 3 CANCELLED the server's.
    assert_eq!(s.errors, Some(ErrorCounts { server: 1 + 3, model: 0, client: 1 }));
    assert_eq!(s.requests, 5);
}
