//! A sidecar's `versa.v1.Telemetry/Snapshot` answer as the decision core
//! reads it: cumulative counters per (model, version), summed over the
//! labels that reached the version. Pure; the answer is checked, since the
//! serving image is the ModelDeployment author's: a malformed one is an
//! error for that Pod's window, never data.
//!
//! Only the series the model's traffic split routed count (`split`):
//! requests that named the version or the label themselves are left out,
//! so a client calling `version_label: canary` directly can neither dilute
//! nor poison the candidate's numbers. Bounds: at most [`MAX_SERIES`]
//! series, model names of at most [`MAX_MODEL_NAME`] bytes and at most
//! [`MAX_BUCKETS`] latency buckets per series; more is an error naming the
//! limit.

use std::collections::BTreeMap;
use versa_analysis::{
    Bucket, ErrorCounts, Histogram, MirrorCounts, SeriesCounters, SeriesKey, Snapshot, Timestamp,
};
use versa_proto::versa::v1::{LatencyHistogram, MirrorCounters, RatioHistogram, SnapshotResponse};

/// Most series one answer may hold.
pub const MAX_SERIES: usize = 4096;
/// Longest model name in an answer, in bytes.
pub const MAX_MODEL_NAME: usize = 256;
/// Most latency buckets one series may hold.
pub const MAX_BUCKETS: usize = 64;

/// Why an answer cannot be read as counters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("{model} v{version}: latency buckets are not in ascending order of bound")]
    UnorderedBuckets { model: String, version: i64 },
    #[error("{model} v{version}: a latency bucket holds more than the histogram's count")]
    BucketOverCount { model: String, version: i64 },
    #[error("{model} v{version}: latency sum is not a finite, non-negative number")]
    BadSum { model: String, version: i64 },
    #[error("{model} v{version}: its labels report different latency buckets")]
    MixedBuckets { model: String, version: i64 },
    #[error("{model} v{version}: more errors or latency observations than requests")]
    MoreThanRequests { model: String, version: i64 },
    #[error("{series} series: more than the limit of {MAX_SERIES}")]
    TooManySeries { series: usize },
    #[error("{model} v{version}: its shadow copies' latency ratios are not a valid histogram")]
    BadMirrorRatios { model: String, version: i64 },
    #[error("model name {prefix:?}… longer than the limit of {MAX_MODEL_NAME} bytes")]
    ModelNameTooLong { prefix: String },
    #[error("{model} v{version}: {buckets} latency buckets, more than the limit of {MAX_BUCKETS}")]
    TooManyBuckets { model: String, version: i64, buckets: usize },
}

/// The decision core's [`Snapshot`] of one answer.
pub fn to_snapshot(answer: &SnapshotResponse) -> Result<Snapshot, SnapshotError> {
    if answer.series.len() > MAX_SERIES {
        return Err(SnapshotError::TooManySeries { series: answer.series.len() });
    }
    let mut series: BTreeMap<SeriesKey, SeriesCounters> = BTreeMap::new();
    for s in answer.series.iter().filter(|s| s.split) {
        check_model_name(&s.model)?;
        let (model, version) = (s.model.clone(), s.version);
        let buckets = s.latency.as_ref().map_or(0, |l| l.buckets.len());
        if buckets > MAX_BUCKETS {
            return Err(SnapshotError::TooManyBuckets { model, version, buckets });
        }
        let latency = histogram(s.latency.as_ref(), &model, version)?;
        let errors = s.errors.unwrap_or_default();
        let errors =
            ErrorCounts { server: errors.server, model: errors.model, client: errors.client };
        let failed = errors.server.saturating_add(errors.model).saturating_add(errors.client);
        // Latency covers the successful requests only.
        if failed.saturating_add(latency.count) > s.requests {
            return Err(SnapshotError::MoreThanRequests { model, version });
        }
        let entry = series.entry(SeriesKey::new(model.clone(), version)).or_default();
        let counters =
            SeriesCounters { requests: s.requests, errors, latency, ..Default::default() };
        add(entry, &counters)
            .ok_or_else(|| SnapshotError::MixedBuckets { model: model.clone(), version })?;
        // Finite sums can add up to infinity, which later subtracts to NaN.
        if !entry.latency.sum.is_finite() {
            return Err(SnapshotError::BadSum { model, version });
        }
    }
    if answer.mirrors.len() > MAX_SERIES {
        return Err(SnapshotError::TooManySeries { series: answer.mirrors.len() });
    }
    for m in &answer.mirrors {
        check_model_name(&m.model)?;
        let counts = mirror_counts(m)?;
        let entry = series.entry(SeriesKey::new(m.model.clone(), m.version)).or_default();
        // Kept per baseline: a rollout reads its own baseline's copies.
        let added = entry.mirror.add_baseline(m.baseline_version, &counts);
        if !added || !entry.mirror.of(Some(m.baseline_version)).latency_ratio.sum.is_finite() {
            return Err(SnapshotError::BadMirrorRatios {
                model: m.model.clone(),
                version: m.version,
            });
        }
    }
    Ok(Snapshot {
        process_start: Timestamp::from_millis(answer.process_start_unix_ms),
        taken_at: Timestamp::from_millis(answer.taken_at_unix_ms),
        series,
    })
}

fn check_model_name(model: &str) -> Result<(), SnapshotError> {
    if model.len() > MAX_MODEL_NAME {
        let end = (0..=32).rev().find(|i| model.is_char_boundary(*i)).unwrap_or(0);
        return Err(SnapshotError::ModelNameTooLong { prefix: model[..end].to_owned() });
    }
    Ok(())
}

/// One (mirror version, baseline version)'s copies. Counts are not checked
/// against each other: the sidecar updates them one by one, so a snapshot
/// may catch a copy in some and not yet in others.
fn mirror_counts(m: &MirrorCounters) -> Result<MirrorCounts, SnapshotError> {
    let bad = || SnapshotError::BadMirrorRatios { model: m.model.clone(), version: m.version };
    let latency_ratio = match &m.latency_ratio {
        None => Histogram::default(),
        Some(h) => ratio_histogram(h).ok_or_else(bad)?,
    };
    Ok(MirrorCounts {
        agree: m.agree,
        disagree: m.disagree,
        error: m.error,
        timeout: m.timeout,
        shed: m.shed,
        unavailable: m.unavailable,
        non_finite: m.non_finite,
        latency_ratio,
    })
}

/// A ratio histogram with at most [`MAX_BUCKETS`] finite, ascending,
/// cumulative buckets and a finite non-negative sum; `None` otherwise.
fn ratio_histogram(h: &RatioHistogram) -> Option<Histogram> {
    let valid = h.buckets.len() <= MAX_BUCKETS
        && h.buckets.windows(2).all(|w| w[0].le < w[1].le && w[0].count <= w[1].count)
        && h.buckets.iter().all(|b| b.le.is_finite())
        && h.buckets.last().is_none_or(|b| b.count <= h.count)
        && h.sum.is_finite()
        && h.sum >= 0.0;
    valid.then(|| Histogram {
        buckets: h.buckets.iter().map(|b| Bucket { le: b.le, count: b.count }).collect(),
        count: h.count,
        sum: h.sum,
    })
}

fn histogram(
    h: Option<&LatencyHistogram>,
    model: &str,
    version: i64,
) -> Result<Histogram, SnapshotError> {
    let Some(h) = h else { return Ok(Histogram::default()) };
    let err = |e: fn(String, i64) -> SnapshotError| e(model.to_owned(), version);
    let ascending = h.buckets.windows(2).all(|w| w[0].le_seconds < w[1].le_seconds)
        && h.buckets.iter().all(|b| b.le_seconds.is_finite());
    if !ascending {
        return Err(err(|model, version| SnapshotError::UnorderedBuckets { model, version }));
    }
    let cumulative = h.buckets.windows(2).all(|w| w[0].count <= w[1].count);
    if !cumulative || h.buckets.last().is_some_and(|b| b.count > h.count) {
        return Err(err(|model, version| SnapshotError::BucketOverCount { model, version }));
    }
    if !(h.sum_seconds.is_finite() && h.sum_seconds >= 0.0) {
        return Err(err(|model, version| SnapshotError::BadSum { model, version }));
    }
    Ok(Histogram {
        buckets: h.buckets.iter().map(|b| Bucket { le: b.le_seconds, count: b.count }).collect(),
        count: h.count,
        sum: h.sum_seconds,
    })
}

/// Adds one label's counters to a version's; `None` when their buckets differ.
fn add(total: &mut SeriesCounters, more: &SeriesCounters) -> Option<()> {
    let first = total.latency.buckets.is_empty() && total.latency.count == 0;
    if !first {
        let same = total.latency.buckets.len() == more.latency.buckets.len()
            && total.latency.buckets.iter().zip(&more.latency.buckets).all(|(a, b)| a.le == b.le);
        if !same {
            return None;
        }
    }
    total.requests = total.requests.saturating_add(more.requests);
    total.errors.server = total.errors.server.saturating_add(more.errors.server);
    total.errors.model = total.errors.model.saturating_add(more.errors.model);
    total.errors.client = total.errors.client.saturating_add(more.errors.client);
    if first {
        total.latency.buckets = more.latency.buckets.clone();
    } else {
        for (mine, theirs) in total.latency.buckets.iter_mut().zip(&more.latency.buckets) {
            mine.count = mine.count.saturating_add(theirs.count);
        }
    }
    total.latency.count = total.latency.count.saturating_add(more.latency.count);
    total.latency.sum += more.latency.sum;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use versa_proto::versa::v1 as pb;

    fn series(
        label: &str,
        requests: u64,
        server: u64,
        buckets: &[(f64, u64)],
    ) -> pb::SeriesCounters {
        let count = requests - server;
        pb::SeriesCounters {
            model: "fraud".into(),
            version: 42,
            label: label.into(),
            requests,
            split: true,
            errors: Some(pb::ErrorCounts { server, model: 0, client: 0 }),
            latency: Some(pb::LatencyHistogram {
                buckets: buckets
                    .iter()
                    .map(|(le, c)| pb::Bucket { le_seconds: *le, count: *c })
                    .collect(),
                count,
                sum_seconds: 0.5,
            }),
        }
    }

    fn answer(series: Vec<pb::SeriesCounters>) -> SnapshotResponse {
        SnapshotResponse {
            process_start_unix_ms: 1_000,
            taken_at_unix_ms: 5_000,
            series,
            mirrors: vec![],
        }
    }

    #[test]
    fn labels_of_one_version_are_summed_into_its_series() {
        let a = answer(vec![
            series("stable", 10, 2, &[(0.01, 3), (0.1, 8)]),
            series("", 5, 0, &[(0.01, 1), (0.1, 5)]),
        ]);
        let s = to_snapshot(&a).expect("valid");
        assert_eq!(
            (s.process_start, s.taken_at),
            (Timestamp::from_millis(1_000), Timestamp::from_millis(5_000))
        );
        let c = &s.series[&SeriesKey::new("fraud", 42)];
        assert_eq!((c.requests, c.errors.server, c.errors.client), (15, 2, 0));
        assert_eq!(c.latency.count, 13);
        assert_eq!(c.latency.buckets.iter().map(|b| b.count).collect::<Vec<_>>(), [4, 13]);
        assert!((c.latency.sum - 1.0).abs() < 1e-9);
    }

    #[test]
    fn malformed_answers_are_errors_not_data() {
        let bad = |s: pb::SeriesCounters| to_snapshot(&answer(vec![s])).expect_err("malformed");
        assert!(matches!(
            bad(series("", 10, 0, &[(0.1, 3), (0.01, 5)])),
            SnapshotError::UnorderedBuckets { .. }
        ));
        assert!(matches!(
            bad(series("", 10, 0, &[(0.1, 11)])),
            SnapshotError::BucketOverCount { .. }
        ));
        assert!(matches!(
            bad(series("", 10, 0, &[(0.1, 5), (1.0, 4)])),
            SnapshotError::BucketOverCount { .. }
        ));
        let mut nan = series("", 10, 0, &[(0.1, 5)]);
        nan.latency.as_mut().expect("latency").sum_seconds = f64::NAN;
        assert!(matches!(bad(nan), SnapshotError::BadSum { .. }));
        let mut over = series("", 3, 0, &[]);
        over.errors = Some(pb::ErrorCounts { server: 2, model: 1, client: 1 });
        assert!(matches!(bad(over), SnapshotError::MoreThanRequests { .. }));
        let mut huge = series("a", 10, 0, &[(0.1, 5)]);
        huge.latency.as_mut().expect("latency").sum_seconds = f64::MAX;
        let overflow = answer(vec![huge.clone(), huge]);
        assert!(matches!(to_snapshot(&overflow), Err(SnapshotError::BadSum { .. })), "inf sum");
        let mut both = series("", 10, 4, &[(0.1, 5)]);
        both.latency.as_mut().expect("latency").count = 7;
        assert!(matches!(bad(both), SnapshotError::MoreThanRequests { .. }), "4 errors + 7 > 10");
        let mixed = answer(vec![series("a", 5, 0, &[(0.1, 1)]), series("b", 5, 0, &[(0.2, 1)])]);
        assert!(matches!(to_snapshot(&mixed), Err(SnapshotError::MixedBuckets { .. })));
    }

    #[test]
    fn only_the_split_counts_a_client_naming_the_candidate_does_not() {
        let mut direct = series("canary", 1_000, 1_000, &[(0.1, 0)]);
        direct.split = false;
        let a = answer(vec![series("canary", 10, 1, &[(0.1, 9)]), direct]);
        let c = &to_snapshot(&a).expect("valid").series[&SeriesKey::new("fraud", 42)];
        assert_eq!((c.requests, c.errors.server), (10, 1), "the direct 1,000 failures left out");
    }

    fn mirror(baseline: i64, agree: u64, ratios: &[(f64, u64)]) -> pb::MirrorCounters {
        pb::MirrorCounters {
            model: "fraud".into(),
            version: 42,
            baseline_version: baseline,
            agree,
            disagree: 1,
            shed: 7,
            latency_ratio: Some(pb::RatioHistogram {
                buckets: ratios
                    .iter()
                    .map(|(le, c)| pb::RatioBucket { le: *le, count: *c })
                    .collect(),
                count: agree + 1,
                sum: 1.0,
            }),
            ..pb::MirrorCounters::default()
        }
    }

    #[test]
    fn mirror_counters_are_kept_per_baseline_in_the_mirror_versions_series() {
        let mut a = answer(vec![]);
        a.mirrors =
            vec![mirror(40, 10, &[(1.0, 5), (2.0, 11)]), mirror(41, 20, &[(1.0, 1), (2.0, 21)])];
        let s = to_snapshot(&a).expect("valid");
        let mirrors = &s.series[&SeriesKey::new("fraud", 42)].mirror;
        let m = mirrors.of(None);
        assert_eq!((m.agree, m.disagree, m.shed), (30, 2, 14));
        assert_eq!((m.latency_ratio.count, m.latency_ratio.buckets[0].count), (32, 6));
        assert_eq!(mirrors.of(Some(41)).agree, 20, "only 41's copies");
        a.mirrors.push(mirror(43, 1, &[(2.0, 1), (1.0, 2)]));
        assert!(matches!(to_snapshot(&a), Err(SnapshotError::BadMirrorRatios { .. })), "unordered");
        a.mirrors = vec![mirror(40, 1, &[(1.0, 1)]), mirror(40, 1, &[(3.0, 1)])];
        assert!(matches!(to_snapshot(&a), Err(SnapshotError::BadMirrorRatios { .. })), "mixed");
        let mut nan = mirror(40, 1, &[]);
        nan.latency_ratio.as_mut().expect("ratios").sum = f64::NAN;
        a.mirrors = vec![nan];
        assert!(to_snapshot(&a).is_err(), "NaN sum");
        a.mirrors = vec![pb::MirrorCounters { model: "m".repeat(300), ..mirror(40, 1, &[]) }];
        assert!(matches!(to_snapshot(&a), Err(SnapshotError::ModelNameTooLong { .. })));
    }

    #[test]
    fn oversized_answers_are_refused_naming_the_limit() {
        let many = answer(vec![series("", 1, 0, &[]); MAX_SERIES + 1]);
        let err = to_snapshot(&many).expect_err("too many");
        assert!(err.to_string().contains("4096"), "{err}");
        let mut long = series("", 1, 0, &[]);
        long.model = "é".repeat(200);
        let err = to_snapshot(&answer(vec![long])).expect_err("long name");
        assert!(
            matches!(err, SnapshotError::ModelNameTooLong { ref prefix } if prefix.len() <= 32)
        );
        let buckets: Vec<(f64, u64)> = (0..=MAX_BUCKETS).map(|i| (i as f64 + 1.0, 0)).collect();
        let err = to_snapshot(&answer(vec![series("", 1, 0, &buckets)])).expect_err("buckets");
        assert!(err.to_string().contains("limit of 64"), "{err}");
    }
}
