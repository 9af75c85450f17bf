//! A snapshot's series, assembled from the request metrics themselves
//! (`versa_requests_total` and `versa_request_duration_seconds`), so that
//! the Telemetry snapshot and `/metrics` always agree: every request is
//! counted once, in the Prometheus registry, and both read it there.

use super::class::{ErrorClass, code_named, error_class};
use crate::metrics::SPLIT;
use prometheus::proto::{Metric, MetricFamily};
use std::collections::BTreeMap;
use versa_proto::versa::v1::{Bucket, ErrorCounts, LatencyHistogram, SeriesCounters};

/// A series: model, version, label, split.
type Key = (String, i64, String, bool);

/// The families a snapshot is assembled from.
#[derive(Debug, Clone, Copy)]
pub struct Families<'a> {
    /// `versa_requests_total`.
    pub requests: &'a [MetricFamily],
    /// `versa_request_duration_seconds`.
    pub durations: &'a [MetricFamily],
    /// `versa_requests_reclassified_total`.
    pub reclassified: &'a [MetricFamily],
}

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
    let split = label(metric, SPLIT) == Some("true");
    Some((model.to_owned(), version, route.to_owned(), split))
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
    let (model, version, route, split) = key.clone();
    series.entry(key).or_insert_with(|| SeriesCounters {
        model,
        version,
        label: route,
        requests: 0,
        errors: Some(ErrorCounts::default()),
        latency: Some(empty_histogram(layout)),
        split,
    })
}

/// A counter's value as a count (counters are whole and never negative).
fn count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 { value.round() as u64 } else { 0 }
}

/// The class of the requests of `metric` by their `status` label; `None`
/// for `OK`. A status label that names no code (never written by this
/// server) is a server error rather than vanish.
fn status_class(metric: &Metric) -> Option<ErrorClass> {
    match label(metric, "status").and_then(code_named) {
        Some(code) => error_class(code),
        None => Some(ErrorClass::Server),
    }
}

/// The counter of `class` in `errors`.
fn class_count(errors: &mut ErrorCounts, class: ErrorClass) -> &mut u64 {
    match class {
        ErrorClass::Server => &mut errors.server,
        ErrorClass::Model => &mut errors.model,
        ErrorClass::Client => &mut errors.client,
    }
}

/// The series of a snapshot: for every (model, version, label, split) in
/// `families.requests` (the families of `versa_requests_total`, summed
/// over status and entry point), the requests answered, the failed ones by
/// [`error_class`] — but those of `families.reclassified` moved to the
/// class they name — and the latency histogram from `families.durations`
/// (those of `versa_request_duration_seconds`, successful requests only),
/// with every bucket of `layout` at zero for a series that has none yet:
/// the bounds of a series never change between snapshots.
///
/// Requests that no version answered are left out: they belong to no
/// version. Sorted by model, version, label, split. Moving requests
/// between classes never changes their total, so `errors + latency.count
/// <= requests` holds whatever the families say.
pub fn assemble(families: &Families<'_>, layout: &[f64]) -> Vec<SeriesCounters> {
    let mut series: BTreeMap<Key, SeriesCounters> = BTreeMap::new();
    // Requests of each series by status: what reclassifications draw on.
    let mut by_status: BTreeMap<(Key, &str), u64> = BTreeMap::new();
    for metric in families.requests.iter().flat_map(MetricFamily::get_metric) {
        let Some(key) = key(metric) else { continue };
        let n = count(metric.get_counter().get_value());
        if let Some(status) = label(metric, "status") {
            let failed = by_status.entry((key.clone(), status)).or_default();
            *failed = failed.saturating_add(n);
        }
        let counters = entry(&mut series, key, layout);
        counters.requests = counters.requests.saturating_add(n);
        if let Some(class) = status_class(metric) {
            let errors = counters.errors.get_or_insert_default();
            let slot = class_count(errors, class);
            *slot = slot.saturating_add(n);
        }
    }
    for metric in families.reclassified.iter().flat_map(MetricFamily::get_metric) {
        let (Some(key), Some(status)) = (key(metric), label(metric, "status")) else { continue };
        let to = label(metric, "class").and_then(ErrorClass::named);
        let (Some(from), Some(to)) = (status_class(metric), to) else { continue };
        let (Some(counters), Some(left)) =
            (series.get_mut(&key), by_status.get_mut(&(key, status)))
        else {
            continue;
        };
        // Never more than the series has requests of that status: those
        // are all in `from`, whatever else moved.
        let n = count(metric.get_counter().get_value()).min(*left);
        *left -= n;
        let errors = counters.errors.get_or_insert_default();
        let slot = class_count(errors, from);
        *slot = slot.saturating_sub(n);
        let slot = class_count(errors, to);
        *slot = slot.saturating_add(n);
    }
    for metric in families.durations.iter().flat_map(MetricFamily::get_metric) {
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
