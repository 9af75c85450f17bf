//! The whole pipeline as the operator will drive it, on simulated sidecars: snapshots →
//! deltas → merge → metric → verdict → metric status → run phase → step decision.

use std::collections::BTreeMap;
use std::time::Duration;

use versa_analysis::canary::{
    self, AnalysisKind, CanaryStrategy, Decision, Observed, Outcome, PauseReason, RolloutState,
    RunInput, Step,
};
use versa_analysis::run::assess_run;
use versa_analysis::{
    BuiltinMetric, Condition, Criteria, ErrorClasses, ErrorCounts, Evaluator, MetricSpec,
    MetricStatus, PodWindow, SeriesCounters, SeriesKey, Snapshot, Timestamp, WindowTotals, delta,
};

const BASELINE: i64 = 1;
const CANDIDATE: i64 = 2;

/// A sidecar: cumulative counters per version, restarted on demand.
struct Pod {
    start: i64,
    counters: BTreeMap<i64, SeriesCounters>,
}

impl Pod {
    fn new() -> Self {
        Self { start: 0, counters: BTreeMap::new() }
    }

    /// Serves `requests` at `weight`% to the candidate, with the given error ratios.
    fn serve(&mut self, requests: u64, weight: u8, candidate_errors: f64) {
        let to_candidate = requests * u64::from(weight) / 100;
        for (version, n, ratio) in
            [(CANDIDATE, to_candidate, candidate_errors), (BASELINE, requests - to_candidate, 0.0)]
        {
            let c = self.counters.entry(version).or_default();
            c.requests += n;
            c.errors.server += (n as f64 * ratio).round() as u64;
        }
    }

    fn restart(&mut self, at: i64) {
        self.start = at;
        self.counters.clear();
    }

    fn snapshot(&self, now: i64) -> Snapshot {
        Snapshot {
            process_start: Timestamp::from_secs(self.start),
            taken_at: Timestamp::from_secs(now),
            series: self
                .counters
                .iter()
                .map(|(v, c)| (SeriesKey::new("fraud", *v), c.clone()))
                .collect(),
        }
    }
}

struct Operator {
    strategy: CanaryStrategy,
    spec: MetricSpec,
    evaluator: Evaluator,
    state: RolloutState,
    metric: MetricStatus,
    previous: Vec<Option<Snapshot>>,
    weight_in_force: u8,
}

impl Operator {
    fn new(pods: usize, min_samples: u64) -> Self {
        let success = Condition::compile("successCondition", "result <= baseline + 0.01")
            .expect("test fixture");
        Self {
            strategy: CanaryStrategy {
                background: Some(canary::BackgroundAnalysis { starting_step: 0 }),
                ..CanaryStrategy::new(vec![
                    Step::SetWeight(20),
                    Step::Pause(Some(Duration::from_secs(120))),
                    Step::SetWeight(50),
                    Step::Pause(Some(Duration::from_secs(120))),
                ])
            },
            spec: MetricSpec {
                interval: Some(Duration::from_secs(30)),
                failure_limit: 1,
                ..MetricSpec::new("error-rate")
            },
            evaluator: Evaluator::new(
                Criteria::Conditions { success: Some(success), failure: None },
                min_samples,
            ),
            state: RolloutState::start(Timestamp::from_secs(0)),
            metric: MetricStatus::default(),
            previous: vec![None; pods],
            weight_in_force: 0,
        }
    }

    /// One reconcile pass at `now`.
    fn pass(&mut self, pods: &[Pod], now: i64) -> Decision {
        let t = Timestamp::from_secs(now);
        let run = RunInput {
            run: self.state.background_run,
            state: assess_run([(&self.spec, &self.metric)]),
        };
        let observed = Observed {
            weight_in_force: Some(self.weight_in_force),
            background_analysis: Some(run),
            ..Observed::at(t)
        };
        let d = canary::next(&self.strategy, &self.state, &observed);
        for request in &d.analyses {
            assert_eq!(request.kind, AnalysisKind::Background);
            if !self.spec.is_due(&self.metric, request.started_at, t) {
                continue;
            }
            let windows: Vec<PodWindow> = pods
                .iter()
                .zip(&mut self.previous)
                .map(|(pod, previous)| {
                    let now = pod.snapshot(now);
                    let w = delta(previous.as_ref(), &now);
                    *previous = Some(now);
                    w
                })
                .collect();
            let totals = WindowTotals::merge(&windows).expect("test fixture");
            let metric = BuiltinMetric::ErrorRate(ErrorClasses::default());
            if let Some(obs) = metric.observe(&totals, "fraud", CANDIDATE, Some(BASELINE)) {
                let verdict = self.evaluator.evaluate(&obs);
                self.metric.record(&self.spec, verdict.into_measurement(&obs, t));
            }
        }
        self.state = d.state.clone();
        self.weight_in_force = d.weight; // the sidecars apply it before the next pass
        d
    }
}

/// Runs a rollout for up to `secs`, `rps` requests per second per Pod, every 10 s.
fn rollout(
    op: &mut Operator,
    pods: &mut [Pod],
    rps: u64,
    errors: f64,
    secs: i64,
    mut each: impl FnMut(i64, &mut [Pod]),
) -> Decision {
    let mut last = op.pass(pods, 0);
    for now in (10..=secs).step_by(10) {
        for pod in pods.iter_mut() {
            pod.serve(rps * 10, op.weight_in_force, errors);
        }
        each(now, pods);
        last = op.pass(pods, now);
        if matches!(last.outcome, Outcome::Promoted | Outcome::Aborted(_) | Outcome::Paused(_)) {
            return last;
        }
    }
    last
}

#[test]
fn good_candidate_walks_every_step_and_is_promoted() {
    let mut op = Operator::new(3, 50);
    let mut pods = [Pod::new(), Pod::new(), Pod::new()];
    let d = rollout(&mut op, &mut pods, 20, 0.0, 1000, |_, _| {});
    assert_eq!((d.outcome, d.weight), (Outcome::Promoted, 100));
    assert!(op.metric.successful >= 6, "{:?}", op.metric);
    assert_eq!(op.metric.failed + op.metric.inconclusive + op.metric.error, 0);
}

#[test]
fn failing_candidate_is_aborted_by_analysis() {
    let mut op = Operator::new(3, 50);
    let mut pods = [Pod::new(), Pod::new(), Pod::new()];
    let d = rollout(&mut op, &mut pods, 20, 0.2, 1000, |_, _| {});
    assert_eq!((d.outcome, d.weight), (Outcome::Aborted(canary::AbortReason::FailedAnalysis), 0));
    assert_eq!(op.metric.failed, 2, "failureLimit 1 tolerates one failed window");
}

#[test]
fn quiet_model_pauses_as_inconclusive_instead_of_rolling_back() {
    let mut op = Operator::new(3, 50);
    let mut pods = [Pod::new(), Pod::new(), Pod::new()];
    // 1 request per 10 s per Pod, half of them failing on the candidate
    let d = rollout(&mut op, &mut pods, 0, 0.5, 1000, |_, pods| {
        for pod in pods.iter_mut() {
            pod.serve(1, 100, 0.5);
        }
    });
    assert_eq!(d.outcome, Outcome::Paused(PauseReason::InconclusiveAnalysis));
    assert_eq!(op.metric.failed, 0);
    assert_eq!(op.weight_in_force, 20, "the weight is held, not rolled back");
}

#[test]
fn a_sidecar_restart_mid_rollout_is_not_read_as_data() {
    let mut op = Operator::new(2, 50);
    op.spec.failure_limit = 0;
    let mut pods = [Pod::new(), Pod::new()];
    let d = rollout(&mut op, &mut pods, 20, 0.0, 1000, |now, pods| {
        if now == 100 {
            // the restarted Pod's new counters exceed its old ones and hold errors (from
            // before this window): read as a delta, they would fail the canary
            pods[0].restart(95);
            pods[0].serve(50_000, 20, 0.5);
        }
    });
    assert_eq!(d.outcome, Outcome::Promoted, "{:?}", op.metric);
}

#[test]
fn an_operator_restart_mid_rollout_resumes_from_status() {
    let mut op = Operator::new(2, 50);
    let mut pods = [Pod::new(), Pod::new()];
    let _ = rollout(&mut op, &mut pods, 20, 0.0, 150, |_, _| {});
    let (state, metric) = (op.state.clone(), op.metric.clone());
    let json = serde_json::to_string(&(state, metric)).expect("test fixture");
    // a new operator: status from the API server, no snapshots in memory
    let mut fresh = Operator::new(2, 50);
    (fresh.state, fresh.metric) = serde_json::from_str(&json).expect("test fixture");
    fresh.weight_in_force = op.weight_in_force;
    let step_before = fresh.state.step;
    let measured_before = fresh.metric.count;
    let mut now = 150;
    let d = loop {
        now += 10;
        for pod in &mut pods {
            pod.serve(200, fresh.weight_in_force, 0.0);
        }
        let d = fresh.pass(&pods, now);
        if d.outcome == Outcome::Promoted || now > 2000 {
            break d;
        }
    };
    assert_eq!(d.outcome, Outcome::Promoted);
    assert!(fresh.state.step >= step_before);
    assert!(fresh.metric.count > measured_before);
    assert_eq!(fresh.metric.inconclusive, 0, "the first poll after the restart is a baseline");
}

#[test]
fn error_counts_fixture_is_plain_data() {
    // guards the simulated sidecar itself: 20% of 100 requests at weight 50 → 10 errors
    let mut pod = Pod::new();
    pod.serve(100, 50, 0.2);
    assert_eq!(pod.counters[&CANDIDATE].errors, ErrorCounts { server: 10, model: 0, client: 0 });
    assert_eq!(pod.counters[&BASELINE].requests, 50);
}
