//! A snapshot's series, assembled from the request metrics themselves
//! (`versa_requests_total` and `versa_request_duration_seconds`), so that
//! the Telemetry snapshot and `/metrics` always agree: every request is
//! counted once, in the Prometheus registry, and both read it there.

use super::class::{ErrorClass, code_named, error_class};
use prometheus::proto::{Metric, MetricFamily};
use std::collections::BTreeMap;
use versa_proto::versa::v1::{Bucket, ErrorCounts, LatencyHistogram, SeriesCounters};

/// A series: model, version, label.
type Key = (String, i64, String);

/// The value of label `name` of a metric.
fn label<'a>(metric: &'a Metric, name: &str) -> Option<&'a str> {
    metric.get_label().iter().find(|pair| pair.name() == name).map(|pair| pair.value())
}

/// The series a metric belongs to; `None` for requests no version answered
/// (an unknown model, version or label: their `version` label is empty).
fn key(metric: &Metric) -> Option<Key> {
    let model = label(metric, "model")?;
    let version = label(metric, "version")?.parse::<i64>().ok()?;
    let route = label(metric, "label").unwrap_or_default();
    Some((model.to_owned(), version, route.to_owned()))
}

/// A histogram with no observation, in the bounds `layout` (seconds).
fn empty_histogram(layout: &[f64]) -> LatencyHistogram {
    LatencyHistogram {
        buckets: layout.iter().map(|&le| Bucket { le_seconds: le, count: 0 }).collect(),
        count: 0,
        sum_seconds: 0.0,
    }
}

/// The counters of series `key`, created at zero when it is new.
fn entry<'a>(
    series: &'a mut BTreeMap<Key, SeriesCounters>,
    key: Key,
    layout: &[f64],
) -> &'a mut SeriesCounters {
    let (model, version, route) = key.clone();
    series.entry(key).or_insert_with(|| SeriesCounters {
        model,
        version,
        label: route,
        requests: 0,
        errors: Some(ErrorCounts::default()),
        latency: Some(empty_histogram(layout)),
    })
}

/// A counter's value as a count (counters are whole and never negative).
fn count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 { value.round() as u64 } else { 0 }
}

/// The series of a snapshot: for every (model, version, label) in
/// `requests` (the families of `versa_requests_total`, summed over status
/// and entry point), the requests answered, the failed ones by
/// [`error_class`], and the latency histogram from `durations` (those of
/// `versa_request_duration_seconds`, successful requests only), with every
/// bucket of `layout` at zero for a series that has none yet — the bounds
/// of a series never change between snapshots.
///
/// Requests that no version answered are left out: they belong to no
/// version. Sorted by model, version, label. A status label that names no
/// code (never written by this server) counts as a server error rather
/// than vanish.
pub fn assemble(
    requests: &[MetricFamily],
    durations: &[MetricFamily],
    layout: &[f64],
) -> Vec<SeriesCounters> {
    let mut series: BTreeMap<Key, SeriesCounters> = BTreeMap::new();
    for metric in requests.iter().flat_map(MetricFamily::get_metric) {
        let Some(key) = key(metric) else { continue };
        let n = count(metric.get_counter().get_value());
        let counters = entry(&mut series, key, layout);
        counters.requests = counters.requests.saturating_add(n);
        let class = match label(metric, "status").and_then(code_named) {
            Some(code) => error_class(code),
            None => Some(ErrorClass::Server),
        };
        let errors = counters.errors.get_or_insert_default();
        let slot = match class {
            None => continue,
            Some(ErrorClass::Server) => &mut errors.server,
            Some(ErrorClass::Model) => &mut errors.model,
            Some(ErrorClass::Client) => &mut errors.client,
        };
        *slot = slot.saturating_add(n);
    }
    for metric in durations.iter().flat_map(MetricFamily::get_metric) {
        let Some(key) = key(metric) else { continue };
        let histogram = metric.get_histogram();
        let counters = entry(&mut series, key, layout);
        counters.latency = Some(LatencyHistogram {
            buckets: histogram
                .get_bucket()
                .iter()
                .filter(|b| b.upper_bound().is_finite())
                .map(|b| Bucket { le_seconds: b.upper_bound(), count: b.cumulative_count() })
                .collect(),
            count: histogram.get_sample_count(),
            sum_seconds: histogram.get_sample_sum(),
        });
    }
    series.into_values().collect()
}
