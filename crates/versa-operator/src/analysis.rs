//! Measuring a rollout's analysis runs from the sidecars' own counters.
//!
//! Each built-in metric of a run measures a window: the increase of every
//! Ready Pod's cumulative counters between two snapshots. The first
//! snapshots of a window are taken when the run's metric is first asked
//! for (its step's weight in force), and a measurement is taken once the
//! metric is due *and* its window is at least one window length old
//! (`interval`, else `initialDelay`): so after an operator restart, whose
//! memory of snapshots is gone, the first poll only opens a window and a
//! full window later the metric is measured — never over a few seconds'
//! traffic. Counter resets (a Pod restarted, a new Pod) are detected per
//! Pod and contribute nothing.
//!
//! The decisions ([`action`], [`measure`]) are pure; [`Windows`] is the
//! operator's memory of snapshots, kept per (ModelDeployment, model, run,
//! metric) and dropped with the run.

use crate::strategy::{CompiledMetric, Source};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use versa_analysis::canary::AnalysisKind;
use versa_analysis::{Measurement, MetricSpec, MetricStatus, PodWindow, Snapshot, Timestamp};
use versa_analysis::{WindowTotals, delta};

/// Window length of a metric with neither `interval` nor `initialDelay`
/// (validation asks for one of them for built-in metrics).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// Most windows kept in memory over every ModelDeployment; past it the
/// oldest are forgotten (their metrics open a new window).
pub const MAX_WINDOWS: usize = 4096;

/// Whose window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowKey {
    /// The ModelDeployment's uid.
    pub deployment: String,
    pub model: String,
    pub kind: AnalysisKind,
    pub run: u32,
    pub metric: String,
}

/// The start of a window: when, and each Pod's snapshot then.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub started_at: Timestamp,
    pub pods: BTreeMap<String, Snapshot>,
    /// Windows in a row before this one in which no Pod had data (every
    /// Pod new or restarted).
    pub empty_before: u32,
}

/// Windows in a row without data from any Pod that make an Error: Pods
/// that keep restarting (a candidate crashing them) must not leave a run
/// waiting for ever without a word.
pub const MAX_EMPTY_WINDOWS: u32 = 3;

/// What to do for one metric this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Take snapshots: the start of its first window.
    Open,
    /// Measure the window since the last snapshots, and start the next.
    Measure,
}

/// The window length of `spec`.
pub fn window_length(spec: &MetricSpec) -> Duration {
    spec.interval.or(spec.initial_delay).unwrap_or(DEFAULT_WINDOW)
}

/// What `metric` needs at `now`, and when to look again (`None`: the
/// metric is decided, nothing more to measure).
pub fn action(
    spec: &MetricSpec,
    status: &MetricStatus,
    run_started_at: Timestamp,
    window: Option<&Window>,
    now: Timestamp,
) -> (Option<Action>, Option<Timestamp>) {
    let Some(due) = spec.next_due(status, run_started_at) else {
        return (None, None);
    };
    let Some(window) = window else {
        // Opened one window length before it is due, not earlier: with an
        // `initialDelay` longer than the window, the warm-up stays out.
        let length = i64::try_from(window_length(spec).as_millis()).unwrap_or(i64::MAX);
        let open_at = Timestamp(due.as_millis().saturating_sub(length));
        if now < open_at {
            return (None, Some(open_at));
        }
        let ready = due.max(now.saturating_add(window_length(spec)));
        return (Some(Action::Open), Some(ready));
    };
    let ready = due.max(window.started_at.saturating_add(window_length(spec)));
    if now >= ready {
        (Some(Action::Measure), Some(now.saturating_add(window_length(spec))))
    } else {
        (None, Some(ready))
    }
}

/// The Ready Pods' counters at the end of a window.
#[derive(Debug, Clone, Copy)]
pub struct PodsRead<'a> {
    /// Ready Pods that answered, and their snapshots.
    pub pods: &'a BTreeMap<String, Snapshot>,
    /// Ready Pods that did not answer, with why.
    pub unread: &'a [String],
    /// Pods the spec asks for.
    pub desired: i32,
}

/// The measurement of `metric` over `window` up to the snapshots `read`,
/// for the candidate against the baseline. `None` when no Pod had a window
/// (every Pod new or reset): nothing to record, the next window is measured.
pub fn measure(
    metric: &CompiledMetric,
    window: &Window,
    read: PodsRead<'_>,
    versions: (i64, i64),
    model: &str,
    now: Timestamp,
) -> Option<Measurement> {
    let (baseline, candidate) = versions;
    let Source::Builtin(builtin) = &metric.source else {
        return Some(Measurement::error(now, "the prometheus provider is not supported"));
    };
    let (now_pods, unread, desired) = (read.pods, read.unread, read.desired);
    if now_pods.is_empty() {
        // Scaled to zero is a quiet service: Inconclusive, never a reason
        // to roll back. Pods desired but none Ready (a candidate crashing
        // them), or Pods that do not answer, are an Error.
        if !unread.is_empty() {
            let why = format!("no Ready Pod's counters could be read: {}", unread.join("; "));
            return Some(Measurement::error(now, why));
        }
        if desired > 0 {
            let why = format!("no Ready Pod of the {desired} desired (crashing, or not started?)");
            return Some(Measurement::error(now, why));
        }
        return Some(Measurement::inconclusive(now, "no Ready Pod to measure (replicas: 0)"));
    }
    let windows: Vec<PodWindow> =
        now_pods.iter().map(|(pod, snap)| delta(window.pods.get(pod), snap)).collect();
    let totals = match WindowTotals::merge(&windows) {
        Ok(t) => t,
        Err(e) => return Some(Measurement::error(now, e.to_string())),
    };
    let observation = builtin.observe(&totals, model, candidate, Some(baseline))?;
    Some(metric.evaluator.evaluate(&observation).into_measurement(&observation, now))
}

/// After the `in_a_row`-th window in a row without data: an Error once
/// there are [`MAX_EMPTY_WINDOWS`] (and the count starts again), else
/// nothing to record. Returns the measurement and the count to keep.
pub fn after_empty_window(in_a_row: u32, now: Timestamp) -> (Option<Measurement>, u32) {
    if in_a_row < MAX_EMPTY_WINDOWS {
        return (None, in_a_row);
    }
    let why = format!(
        "no Pod had data over {in_a_row} windows in a row: every Pod was new or restarted (are they crashing?)"
    );
    (Some(Measurement::error(now, why)), 0)
}

/// The operator's memory of windows.
#[derive(Debug, Default)]
pub struct Windows {
    inner: Mutex<HashMap<WindowKey, Window>>,
}

impl Windows {
    pub fn get(&self, key: &WindowKey) -> Option<Window> {
        self.lock().get(key).cloned()
    }

    pub fn put(&self, key: WindowKey, window: Window) {
        let mut map = self.lock();
        if map.len() >= MAX_WINDOWS && !map.contains_key(&key) {
            let oldest = map.iter().min_by_key(|(_, w)| w.started_at).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                tracing::warn!(
                    deployment = %oldest.deployment, model = %oldest.model, metric = %oldest.metric,
                    limit = MAX_WINDOWS,
                    "analysis window forgotten: more open windows than the limit; the metric opens a new one"
                );
                map.remove(&oldest);
            }
        }
        map.insert(key, window);
    }

    /// Forgets the windows of `deployment` not in `keep` (runs that ended).
    pub fn retain(&self, deployment: &str, keep: &[WindowKey]) {
        self.lock().retain(|k, _| k.deployment != deployment || keep.contains(k));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WindowKey, Window>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use versa_analysis::{BuiltinMetric, ErrorClasses, ErrorCounts};
    use versa_analysis::{Criteria, Evaluator, SeriesCounters, SeriesKey, ThresholdRange};

    fn spec(interval: u64) -> MetricSpec {
        MetricSpec { interval: Some(Duration::from_secs(interval)), ..MetricSpec::new("errors") }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_secs(s)
    }

    #[test]
    fn a_window_opens_first_and_is_measured_a_full_length_later() {
        let s = spec(60);
        let empty = MetricStatus::default();
        assert_eq!(action(&s, &empty, at(100), None, at(100)), (Some(Action::Open), Some(at(160))));
        let w = Window { started_at: at(100), pods: BTreeMap::new(), empty_before: 0 };
        assert_eq!(action(&s, &empty, at(100), Some(&w), at(130)), (None, Some(at(160))));
        assert_eq!(
            action(&s, &empty, at(100), Some(&w), at(160)),
            (Some(Action::Measure), Some(at(220)))
        );
        // After an operator restart mid-run, long overdue: open, and wait a
        // whole window, not a few seconds.
        assert_eq!(
            action(&s, &empty, at(100), None, at(1_000)),
            (Some(Action::Open), Some(at(1_060)))
        );
    }

    #[test]
    fn pods_that_keep_restarting_make_an_error_not_an_endless_wait() {
        assert_eq!(after_empty_window(1, at(5)), (None, 1));
        assert_eq!(after_empty_window(2, at(5)), (None, 2));
        let (m, next) = after_empty_window(3, at(5));
        assert_eq!(m.map(|m| m.phase), Some(versa_analysis::MeasurementPhase::Error));
        assert_eq!(next, 0);
    }

    #[test]
    fn with_a_long_initial_delay_the_first_window_leaves_the_warm_up_out() {
        // initialDelay 5m, interval 1m: the first measurement is due at 400
        // and covers 340..400, never the start of the run.
        let s = MetricSpec { initial_delay: Some(Duration::from_secs(300)), ..spec(60) };
        let empty = MetricStatus::default();
        assert_eq!(action(&s, &empty, at(100), None, at(100)), (None, Some(at(340))));
        assert_eq!(action(&s, &empty, at(100), None, at(339)), (None, Some(at(340))));
        assert_eq!(action(&s, &empty, at(100), None, at(340)), (Some(Action::Open), Some(at(400))));
    }

    fn pod(start: i64, taken: i64, requests: u64, errors: (u64, u64)) -> Snapshot {
        let series = |v: i64, (r, e): (u64, u64)| {
            (
                SeriesKey::new("fraud", v),
                SeriesCounters {
                    requests: r,
                    errors: ErrorCounts { server: e, ..ErrorCounts::default() },
                    ..SeriesCounters::default()
                },
            )
        };
        Snapshot {
            process_start: at(start),
            taken_at: at(taken),
            series: [series(1, (requests, 0)), series(2, errors)].into(),
        }
    }

    fn error_rate_below(max: f64) -> CompiledMetric {
        CompiledMetric {
            spec: spec(60),
            source: Source::Builtin(BuiltinMetric::ErrorRate(ErrorClasses::default())),
            evaluator: Evaluator::new(
                Criteria::Range(ThresholdRange::new(None, Some(max)).expect("range")),
                10,
            ),
        }
    }

    #[test]
    fn the_candidate_fails_on_its_own_window_and_restarted_pods_give_no_data() {
        let metric = error_rate_below(0.05);
        let then: BTreeMap<String, Snapshot> =
            [("a".into(), pod(0, 100, 1_000, (100, 0))), ("b".into(), pod(0, 100, 0, (0, 0)))]
                .into();
        let window = Window { started_at: at(100), pods: then, empty_before: 0 };
        // Pod a: 20 more candidate requests, 10 failed (errors counted
        // since the window began only). Pod b restarted: no data.
        let now: BTreeMap<String, Snapshot> =
            [("a".into(), pod(0, 160, 1_900, (120, 10))), ("b".into(), pod(150, 160, 5, (5, 5)))]
                .into();
        let read = |pods, unread, desired| PodsRead { pods, unread, desired };
        let m = measure(&metric, &window, read(&now, &[], 2), (1, 2), "fraud", at(160))
            .expect("window");
        assert_eq!(m.phase, versa_analysis::MeasurementPhase::Failed);
        assert_eq!((m.value, m.samples), (Some(0.5), 20));
        assert_eq!(m.baseline, Some(0.0));
        // Only new or restarted Pods: no window at all, nothing recorded.
        let fresh: BTreeMap<String, Snapshot> = [("c".into(), pod(0, 160, 5, (5, 5)))].into();
        assert_eq!(measure(&metric, &window, read(&fresh, &[], 2), (1, 2), "fraud", at(160)), None);
        // No Pod could be read: an Error, which consecutiveErrorLimit counts.
        let nobody = BTreeMap::new();
        let refused = ["a: refused".to_owned()];
        let none = measure(&metric, &window, read(&nobody, &refused, 2), (1, 2), "fraud", at(160))
            .expect("error");
        assert_eq!(none.phase, versa_analysis::MeasurementPhase::Error);
        // No Ready Pod at all (scaled to zero): Inconclusive, never rolled back for it.
        let empty = measure(&metric, &window, read(&nobody, &[], 0), (1, 2), "fraud", at(160))
            .expect("inconclusive");
        assert_eq!(empty.phase, versa_analysis::MeasurementPhase::Inconclusive);
        // Pods desired but none Ready (a candidate crashing them): an Error.
        let crashing = measure(&metric, &window, read(&nobody, &[], 2), (1, 2), "fraud", at(160))
            .expect("error");
        assert_eq!(crashing.phase, versa_analysis::MeasurementPhase::Error);
    }

    #[test]
    fn memory_is_bounded_and_forgets_ended_runs() {
        let windows = Windows::default();
        let key = |d: &str, run| WindowKey {
            deployment: d.into(),
            model: "m".into(),
            kind: AnalysisKind::Step,
            run,
            metric: "x".into(),
        };
        let w = |s| Window { started_at: at(s), pods: BTreeMap::new(), empty_before: 0 };
        windows.put(key("a", 1), w(1));
        windows.put(key("a", 2), w(2));
        windows.put(key("b", 1), w(3));
        windows.retain("a", &[key("a", 2)]);
        assert!(windows.get(&key("a", 1)).is_none());
        assert!(windows.get(&key("a", 2)).is_some() && windows.get(&key("b", 1)).is_some());
        for i in 0..u32::try_from(MAX_WINDOWS).expect("fits") + 10 {
            windows.put(key("c", i), w(10 + i64::from(i)));
        }
        assert_eq!(windows.lock().len(), MAX_WINDOWS);
    }
}
