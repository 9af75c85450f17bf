//! Automated canaries on a real API server: a commit moving `stable` starts
//! a rollout the operator walks by itself — weighted steps, timed pauses,
//! analysis measured from the sidecars' own counters — and promotes or
//! aborts without another commit, with zero failed requests on the
//! baseline. The serving Pods are real versa-server processes (process
//! kubelet), the operator a real process.

use std::time::Duration;
use versa_crd::{ModelDeployment, RolloutStatus};
use versa_testenv::load::Load;
use versa_testenv::versa::{StatusLog, VersaEnv, ZEROS, init_test_tracing, predict};

fn models(versions: &str, stable: i64, strategy: &str) -> String {
    format!(
        "[{{name: fraud, basePath: ROOT/fraud, versionPolicy: {{specific: {{versions: [{versions}]}}}}, labels: {{stable: {stable}}}, strategy: {{canary: {strategy}}}}}]"
    )
}

fn rollout(md: &ModelDeployment) -> Option<&RolloutStatus> {
    md.status.as_ref()?.models.first()?.rollout.as_ref()
}

fn phase(md: &ModelDeployment) -> &str {
    rollout(md).map_or("", |r| r.phase.as_str())
}

/// Prints when each rollout summary (step, weight, analysis) was first
/// written, from `since`: the time per step the figures report.
fn print_steps(log: &StatusLog, since: std::time::Instant) {
    let mut last = String::new();
    for e in log.entries() {
        let Some(r) = e.status.models.first().and_then(|m| m.rollout.as_ref()) else { continue };
        if r.summary != last {
            let at = e.at.saturating_duration_since(since).as_secs_f64();
            eprintln!("  +{at:5.1}s  {}  (weight in force {:?})", r.summary, r.weight_in_force);
            last.clone_from(&r.summary);
        }
    }
}

const ERRORS_UNDER_5_PERCENT: &str = "{name: errors, provider: {builtin: {metric: errorRate}}, interval: 3s, count: 2, thresholdRange: {max: 0.05}, minSampleCount: 20}";

/// A cluster with `replicas` Pods serving v1 as `stable` under `steps`.
async fn serving_v1(replicas: i32, steps: &str) -> (VersaEnv, Vec<std::net::Ipv4Addr>) {
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    let g =
        env.apply(&env.manifest("fraud", replicas, &models("1", 1, steps))).await.expect("apply");
    env.wait_ready("fraud", g).await.expect("ready");
    let ips = env.ready_ips("fraud").await.expect("ips");
    (env, ips)
}

async fn started() -> (VersaEnv, Vec<std::net::Ipv4Addr>, String) {
    let steps = format!(
        "{{steps: [{{setWeight: 25}}, {{pause: {{duration: 3s}}}}, {{analysis: {{metrics: [{ERRORS_UNDER_5_PERCENT}]}}}}, {{setWeight: 60}}, {{pause: {{duration: 2s}}}}], unloadDelaySeconds: 120, abortUnloadDelaySeconds: 3}}"
    );
    let (env, ips) = serving_v1(2, &steps).await;
    (env, ips, steps)
}

#[tokio::test]
async fn a_moved_stable_walks_its_steps_judged_by_the_sidecars_and_promotes_itself() {
    let (env, ips, steps) = started().await;
    let log = StatusLog::start(&env, "fraud");
    let load =
        Load::start(ips.clone(), "fraud", Duration::from_millis(3), Duration::from_secs(150));

    // One commit: stable 1 → 2. Nothing else is committed.
    let since = std::time::Instant::now();
    let g = env.apply(&env.manifest("fraud", 2, &models("2", 2, &steps))).await.expect("apply");
    let md = env
        .wait_for("fraud", "rollout Promoted", Duration::from_secs(120), |md| {
            phase(md) == "Promoted"
                && md.status.as_ref().is_some_and(|s| s.observed_generation == Some(g))
        })
        .await
        .expect("promoted");
    print_steps(&log, since);
    let r = rollout(&md).expect("rollout");
    assert_eq!((r.baseline, r.candidate, r.weight), (1, 2, 100));
    let run = r.step_analysis.as_ref().expect("the analysis step's run");
    let errors = &run.metrics["errors"];
    assert_eq!((run.phase.as_str(), errors.successful, errors.failed), ("Successful", 2, 0));
    assert!(
        errors.measurements.iter().all(|m| m.samples >= 20 && m.baseline == Some(0.0)),
        "each window measured the candidate against the baseline: {errors:?}"
    );
    let md = env.wait_ready("fraud", g).await.expect("Ready once promoted");
    assert_eq!(
        md.status.as_ref().map(|s| s.models[0].labels.clone()),
        Some([("stable".to_owned(), 2)].into())
    );

    // Every step's weight was in force on every Pod on the way.
    let weights: Vec<u8> = log
        .entries()
        .iter()
        .filter_map(|e| e.status.models.first()?.rollout.as_ref()?.weight_in_force)
        .collect();
    for w in [25, 60, 100] {
        assert!(weights.contains(&w), "weight {w} in force at some point: {weights:?}");
    }
    let tally = load.finish().await;
    eprintln!(
        "requests during the automated canary: {:?} ok by version, {} failed",
        tally.ok, tally.failed
    );
    assert_eq!(tally.failed, 0, "{:?}", tally.errors);
    assert!(
        tally.ok.get(&2).is_some_and(|n| *n > 100),
        "the candidate took traffic: {:?}",
        tally.ok
    );
    let reasons: Vec<String> =
        env.events("fraud").await.expect("events").into_iter().map(|e| e.0).collect();
    for reason in ["RolloutStepCompleted", "AnalysisRunRunning", "RolloutCompleted"] {
        assert!(reasons.iter().any(|r| r == reason), "Event {reason}: {reasons:?}");
    }

    // A commit back to v1 within unloadDelaySeconds: v1 is still loaded,
    // the rollback skips the steps.
    let g = env.apply(&env.manifest("fraud", 2, &models("1", 1, &steps))).await.expect("apply");
    let md = env.wait_ready("fraud", g).await.expect("rolled back");
    assert!(rollout(&md).is_none(), "no rollout after an instant rollback");
    let http = reqwest::Client::new();
    for ip in &ips {
        let a = predict(&http, *ip, "fraud", None).await.expect("predict");
        assert_eq!((a.status, a.version), (200, Some(1)));
    }
    let reasons: Vec<String> =
        env.events("fraud").await.expect("events").into_iter().map(|e| e.0).collect();
    assert!(reasons.iter().any(|r| r == "RolloutRolledBack"), "{reasons:?}");
}

#[tokio::test]
async fn a_candidate_failing_its_error_rate_is_aborted_and_the_baseline_serves_on() {
    let (env, ips, steps) = started().await;
    // Version 4 loads and warms up, but fails every request with an input
    // above 0.5: half of this load's.
    let fraud = env.models_root().join("fraud");
    versa_testmodels::write_version(&fraud, 4, &versa_testmodels::failing(4)).expect("write v4");
    let bodies = [ZEROS, r#"{"instances": [[1, 1, 1, 1]]}"#];
    let load = Load::start_with(
        ips.clone(),
        "fraud",
        &bodies,
        Duration::from_millis(3),
        Duration::from_secs(150),
    );

    let (log, since) = (StatusLog::start(&env, "fraud"), std::time::Instant::now());
    let g = env.apply(&env.manifest("fraud", 2, &models("4", 4, &steps))).await.expect("apply");
    let md = env
        .wait_condition("fraud", g, "Degraded", Some("RolloutAborted"), Duration::from_secs(90))
        .await
        .expect("aborted");
    print_steps(&log, since);
    eprintln!(
        "errors: {:?}",
        rollout(&md).and_then(|r| r.step_analysis.as_ref()).map(|a| &a.metrics)
    );
    let r = rollout(&md).expect("rollout");
    assert_eq!((r.phase.as_str(), r.weight, r.baseline, r.candidate), ("Aborted", 0, 1, 4));
    let message = r.message.clone().unwrap_or_default();
    assert!(message.contains("FailedAnalysis") && message.contains("errors"), "{message}");
    let status = md.status.as_ref().expect("status");
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False"));
    let during = load.finish().await;
    eprintln!("during the failing canary: {:?} ok by version, {} failed", during.ok, during.failed);
    assert!(during.failed > 0, "the candidate did fail requests (that is what was judged)");
    assert_eq!(
        during.failed_by_version.keys().copied().collect::<Vec<_>>(),
        [4],
        "only the candidate failed, never the baseline: {:?}",
        during.errors
    );
    assert_eq!(during.failed, during.failed_by_version[&4], "every failure named v4");

    // After the abort every request is on the baseline, none fails.
    env.wait_for("fraud", "weight 0 in force", Duration::from_secs(30), |md| {
        rollout(md).and_then(|r| r.weight_in_force) == Some(0)
    })
    .await
    .expect("abort in force");
    let after = Load::start_with(
        ips.clone(),
        "fraud",
        &bodies,
        Duration::from_millis(3),
        Duration::from_secs(3),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = after.finish().await;
    assert_eq!(after.failed, 0, "{:?}", after.errors);
    assert_eq!(after.ok.keys().copied().collect::<Vec<_>>(), [1], "{:?}", after.ok);
    let reasons: Vec<String> =
        env.events("fraud").await.expect("events").into_iter().map(|e| e.0).collect();
    for reason in ["AnalysisRunFailed", "RolloutAborted"] {
        assert!(reasons.iter().any(|r| r == reason), "Event {reason}: {reasons:?}");
    }

    // The revert commit ends it: Ready on v1, no rollout.
    let g = env.apply(&env.manifest("fraud", 2, &models("1", 1, &steps))).await.expect("apply");
    let md = env.wait_ready("fraud", g).await.expect("reverted");
    assert!(rollout(&md).is_none());
}

#[tokio::test]
async fn a_slow_candidate_is_aborted_on_its_latency_against_the_baseline() {
    let p90 = "{name: p90, provider: {builtin: {metric: latency, quantile: 0.9}}, interval: 3s, count: 2, successCondition: 'result <= baseline * 2.0 + 0.001', minSampleCount: 10}";
    let steps = format!(
        "{{steps: [{{setWeight: 30}}, {{analysis: {{metrics: [{p90}, {ERRORS_UNDER_5_PERCENT}]}}}}, {{setWeight: 100}}], abortUnloadDelaySeconds: 3}}"
    );
    let (env, ips) = serving_v1(1, &steps).await;
    // Version 5 answers exactly what version 5 of `versioned` would, after
    // 8 × 256³ multiply-adds per request: milliseconds, not microseconds.
    let fraud = env.models_root().join("fraud");
    versa_testmodels::write_version(&fraud, 5, &versa_testmodels::slow(5, 256)).expect("write v5");
    let load = Load::start(ips, "fraud", Duration::from_millis(3), Duration::from_secs(150));

    let (log, started) = (StatusLog::start(&env, "fraud"), std::time::Instant::now());
    let g = env.apply(&env.manifest("fraud", 1, &models("5", 5, &steps))).await.expect("apply");
    let md = env
        .wait_condition("fraud", g, "Degraded", Some("RolloutAborted"), Duration::from_secs(90))
        .await
        .expect("aborted");
    let aborted_after = started.elapsed();
    print_steps(&log, started);
    let r = rollout(&md).expect("rollout");
    assert_eq!((r.phase.as_str(), r.baseline, r.candidate), ("Aborted", 1, 5));
    let run = r.step_analysis.as_ref().expect("the analysis step's run");
    let p90 = &run.metrics["p90"];
    let last = p90.measurements.last().expect("a p90 measurement");
    eprintln!(
        "slow candidate aborted after {aborted_after:?}: p90 {:?} s vs baseline {:?} s over {} samples; errors {:?}",
        last.value,
        last.baseline,
        last.samples,
        run.metrics["errors"].measurements.last()
    );
    assert_eq!(p90.failed, 1, "{p90:?}");
    assert!(
        last.value.zip(last.baseline).is_some_and(|(v, b)| v > 2.0 * b + 0.001),
        "judged slower than the baseline in the same window: {last:?}"
    );
    let message = r.message.clone().unwrap_or_default();
    assert!(message.contains("FailedAnalysis") && message.contains("p90"), "{message}");
    let tally = load.finish().await;
    eprintln!("during the slow canary: {:?} ok by version, {} failed", tally.ok, tally.failed);
    assert_eq!(tally.failed, 0, "slow is not failing: {:?}", tally.errors);
    assert!(tally.ok.get(&5).is_some_and(|n| *n > 10), "{:?}", tally.ok);
}

#[tokio::test]
async fn a_quiet_model_pauses_inconclusive_and_is_never_rolled_back_for_it() {
    let steps = format!(
        "{{steps: [{{setWeight: 40}}, {{analysis: {{metrics: [{ERRORS_UNDER_5_PERCENT}]}}}}, {{setWeight: 100}}]}}"
    );
    let (env, _) = serving_v1(1, &steps).await;

    // No load at all: every window has fewer than minSampleCount requests.
    let (log, since) = (StatusLog::start(&env, "fraud"), std::time::Instant::now());
    let g = env.apply(&env.manifest("fraud", 1, &models("2", 2, &steps))).await.expect("apply");
    let md = env
        .wait_for("fraud", "paused inconclusive", Duration::from_secs(60), |md| {
            rollout(md).is_some_and(|r| r.phase == "Paused")
        })
        .await
        .expect("paused");
    print_steps(&log, since);
    let r = rollout(&md).expect("rollout");
    let message = r.message.clone().unwrap_or_default();
    assert!(message.contains("InconclusiveAnalysis"), "{message}");
    let run = r.step_analysis.as_ref().expect("run");
    assert_eq!(run.phase, "Inconclusive");
    let errors = &run.metrics["errors"];
    assert_eq!((errors.inconclusive, errors.failed), (1, 0), "{errors:?}");
    assert!(errors.measurements.iter().all(|m| m.samples < 20), "{errors:?}");
    let status = md.status.as_ref().expect("status");
    assert_eq!(status.observed_generation, Some(g));
    assert!(
        status.conditions.iter().any(|c| c.type_ == "Degraded" && c.status == "False"),
        "a pause is not a failure: {:?}",
        status.conditions
    );
    // It stays paused at its weight: never aborted for being quiet.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let md = env.get("fraud").await.expect("get");
    let r = rollout(&md).expect("rollout");
    assert_eq!((r.phase.as_str(), r.weight, r.weight_in_force), ("Paused", 40, Some(40)));
    let reasons: Vec<String> =
        env.events("fraud").await.expect("events").into_iter().map(|e| e.0).collect();
    assert!(reasons.iter().any(|r| r == "AnalysisRunInconclusive"), "{reasons:?}");
    assert!(!reasons.iter().any(|r| r == "RolloutAborted"), "{reasons:?}");
}
