//! The mirror entries of a snapshot, assembled from the `versa_mirror_*`
//! families themselves (as the request series are from theirs).

use prometheus::proto::{Metric, MetricFamily};
use std::collections::BTreeMap;
use versa_proto::versa::v1::{MirrorCounters, RatioBucket, RatioHistogram};

/// (model, mirror version, baseline version).
type Key = (String, i64, i64);

fn label<'a>(metric: &'a Metric, name: &str) -> Option<&'a str> {
    metric.get_label().iter().find(|pair| pair.name() == name).map(|pair| pair.value())
}

fn key(metric: &Metric) -> Option<Key> {
    Some((
        label(metric, "model")?.to_owned(),
        label(metric, "version")?.parse().ok()?,
        label(metric, "baseline_version")?.parse().ok()?,
    ))
}

fn count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 { value.round() as u64 } else { 0 }
}

fn entry(entries: &mut BTreeMap<Key, MirrorCounters>, key: Key) -> &mut MirrorCounters {
    let (model, version, baseline_version) = key.clone();
    entries.entry(key).or_insert_with(|| MirrorCounters {
        model,
        version,
        baseline_version,
        latency_ratio: Some(RatioHistogram::default()),
        ..MirrorCounters::default()
    })
}

/// The families a mirror entry is assembled from.
#[derive(Debug, Clone, Copy)]
pub struct MirrorFamilies<'a> {
    /// `versa_mirror_requests_total`.
    pub requests: &'a [MetricFamily],
    /// `versa_mirror_non_finite_total`.
    pub non_finite: &'a [MetricFamily],
    /// `versa_mirror_latency_ratio`.
    pub latency_ratio: &'a [MetricFamily],
}

/// One entry per (model, mirror version, baseline version) the families
/// hold, sorted; results other than the six known are left out.
pub fn assemble_mirrors(families: &MirrorFamilies<'_>) -> Vec<MirrorCounters> {
    let mut entries = BTreeMap::new();
    for metric in families.requests.iter().flat_map(MetricFamily::get_metric) {
        let Some(key) = key(metric) else { continue };
        let n = count(metric.get_counter().get_value());
        let e = entry(&mut entries, key);
        let slot = match label(metric, "result") {
            Some("agree") => &mut e.agree,
            Some("disagree") => &mut e.disagree,
            Some("error") => &mut e.error,
            Some("timeout") => &mut e.timeout,
            Some("shed") => &mut e.shed,
            Some("unavailable") => &mut e.unavailable,
            _ => continue,
        };
        *slot = slot.saturating_add(n);
    }
    for metric in families.non_finite.iter().flat_map(MetricFamily::get_metric) {
        let Some(key) = key(metric) else { continue };
        let e = entry(&mut entries, key);
        e.non_finite = e.non_finite.saturating_add(count(metric.get_counter().get_value()));
    }
    for metric in families.latency_ratio.iter().flat_map(MetricFamily::get_metric) {
        let Some(key) = key(metric) else { continue };
        let h = metric.get_histogram();
        entry(&mut entries, key).latency_ratio = Some(RatioHistogram {
            buckets: h
                .get_bucket()
                .iter()
                .filter(|b| b.upper_bound().is_finite())
                .map(|b| RatioBucket { le: b.upper_bound(), count: b.cumulative_count() })
                .collect(),
            count: h.get_sample_count(),
            sum: h.get_sample_sum(),
        });
    }
    entries.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::MirrorMetrics;
    use prometheus::core::Collector as _;

    #[test]
    fn mirror_entries_carry_every_outcome_and_the_ratio_histogram() {
        let metrics = MirrorMetrics::register(&prometheus::Registry::new());
        for (result, n) in [("agree", 5), ("disagree", 2), ("shed", 3), ("bogus", 7)] {
            metrics.requests.with_label_values(&["m", "2", "1", result]).inc_by(n);
        }
        metrics.requests.with_label_values(&["m", "3", "1", "timeout"]).inc();
        metrics.non_finite.with_label_values(&["m", "2", "1"]).inc();
        metrics.latency_ratio.with_label_values(&["m", "2", "1"]).observe(1.5);
        let (requests, non_finite, latency_ratio) = (
            metrics.requests.collect(),
            metrics.non_finite.collect(),
            metrics.latency_ratio.collect(),
        );
        let entries = assemble_mirrors(&MirrorFamilies {
            requests: &requests,
            non_finite: &non_finite,
            latency_ratio: &latency_ratio,
        });
        assert_eq!(entries.len(), 2);
        let e = &entries[0];
        assert_eq!((e.version, e.baseline_version), (2, 1));
        assert_eq!((e.agree, e.disagree, e.shed, e.error, e.non_finite), (5, 2, 3, 0, 1));
        let ratio = e.latency_ratio.clone().expect("histogram");
        assert_eq!((ratio.count, ratio.sum), (1, 1.5));
        assert_eq!(ratio.buckets.len(), crate::mirror::latency_ratio_buckets().len());
        assert!(ratio.buckets.iter().all(|b| b.count == u64::from(b.le >= 1.5)));
        assert_eq!((entries[1].version, entries[1].timeout), (3, 1));
        assert_eq!(entries[1].latency_ratio.clone().expect("empty").count, 0);
    }
}
