use super::*;
use std::time::Duration;
use versa_core::Code;
use versa_proto::versa::v1::{ErrorCounts, SeriesCounters};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
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
        metrics.record_request("fraud", (Some(1), Some("stable")), "GRPC", Code::Ok, ms(2));
    }
    metrics.record_request("fraud", (Some(1), Some("stable")), "REST", Code::Ok, ms(4));
    metrics.record_request("fraud", (Some(1), Some("stable")), "REST", Code::Internal, ms(1));
    metrics.record_request(
        "fraud",
        (Some(1), Some("stable")),
        "GRPC",
        Code::ResourceExhausted,
        ms(1),
    );
    metrics.record_request(
        "fraud",
        (Some(1), Some("stable")),
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
    metrics.record_request("fraud", (Some(2), Some("canary")), "GRPC", Code::Ok, ms(1));
    metrics.record_request("fraud", (Some(1), Some("stable")), "GRPC", Code::Ok, ms(1));
    metrics.record_request("fraud", (Some(1), None), "REST", Code::Ok, ms(1));
    metrics.record_request("aaa", (Some(7), None), "REST", Code::Ok, ms(1));
    // No version answered these: an unknown version, an unknown model.
    metrics.record_request("fraud", (None, None), "GRPC", Code::NotFound, ms(1));
    metrics.record_request(
        crate::serving::UNKNOWN_MODEL,
        (None, None),
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
    metrics.record_request("fraud", (Some(2), Some("canary")), "GRPC", Code::Unavailable, ms(1));
    let first = snapshot(&metrics, 1);
    let s = find(&first.series, "fraud", 2, "canary");
    assert_eq!(s.errors, Some(ErrorCounts { server: 1, model: 0, client: 0 }));
    let latency = s.latency.clone().expect("latency");
    assert_eq!(latency.count, 0);
    let bounds: Vec<f64> = latency.buckets.iter().map(|b| b.le_seconds).collect();
    assert_eq!(bounds, request_duration_buckets());
    assert!(latency.buckets.iter().all(|b| b.count == 0));
    // Once it succeeds, the bounds are the same: a window can be taken across.
    metrics.record_request("fraud", (Some(2), Some("canary")), "GRPC", Code::Ok, ms(1));
    let second = snapshot(&metrics, 2);
    let later = find(&second.series, "fraud", 2, "canary").latency.clone().expect("latency");
    assert_eq!(later.buckets.iter().map(|b| b.le_seconds).collect::<Vec<_>>(), bounds);
    assert_eq!(later.count, 1);
}

#[test]
fn snapshots_agree_with_the_prometheus_text_and_are_cumulative() {
    let metrics = Metrics::new();
    metrics.record_request("fraud", (Some(1), None), "GRPC", Code::Ok, ms(1));
    let first = snapshot(&metrics, 1);
    metrics.record_request("fraud", (Some(1), None), "GRPC", Code::Ok, ms(1));
    metrics.record_request("fraud", (Some(1), None), "GRPC", Code::DeadlineExceeded, ms(1));
    let second = snapshot(&metrics, 2);
    assert_eq!(first.process_start_unix_ms, second.process_start_unix_ms);
    assert_eq!(find(&first.series, "fraud", 1, "").requests, 1);
    let s = find(&second.series, "fraud", 1, "");
    assert_eq!(s.requests, 3);
    let text = metrics.render();
    assert!(
        text.contains(
            r#"versa_request_duration_seconds_count{label="",model="fraud",version="1"} 2"#
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
        &["model", "version", "label", "status", "entrypoint"],
    )
    .expect("counter");
    vec.with_label_values(&["m", "1", "", "SOMETHING", "GRPC"]).inc();
    vec.with_label_values(&["m", "not-a-number", "", "OK", "GRPC"]).inc();
    let series = assemble(&vec.collect(), &[], &[0.5, 1.0]);
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].errors, Some(ErrorCounts { server: 1, model: 0, client: 0 }));
    let latency = series[0].latency.as_ref().expect("latency");
    assert_eq!(latency.buckets.len(), 2);
}
