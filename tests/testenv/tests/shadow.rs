//! Shadow-first canaries on a real API server: a commit moving `stable`
//! starts a rollout whose first step copies the baseline's live requests
//! to the candidate (`setMirror`) and judges the candidate's answers
//! against the baseline's with the `mirror*` metrics, before the
//! candidate answers a single client. One candidate agrees and is
//! promoted; one disagrees and is aborted without ever having answered.
//! The serving Pods are real versa-server processes (process kubelet), the
//! operator a real process.

use std::time::Duration;
use versa_crd::{ModelDeployment, RolloutStatus};
use versa_testenv::load::Load;
use versa_testenv::versa::{StatusLog, VersaEnv, ZEROS, init_test_tracing};

fn models(versions: &str, stable: i64, strategy: &str) -> String {
    format!(
        "[{{name: fraud, basePath: ROOT/fraud, versionPolicy: {{specific: {{versions: [{versions}]}}}}, labels: {{stable: {stable}}}, strategy: {{canary: {strategy}}}}}]"
    )
}

fn rollout(md: &ModelDeployment) -> Option<&RolloutStatus> {
    md.status.as_ref()?.models.first()?.rollout.as_ref()
}

/// Shadow every request, judge agreement and errors over two 3 s windows,
/// stop shadowing, then take real traffic.
fn shadow_first() -> String {
    let agreement = "{name: agreement, provider: {builtin: {metric: mirrorAgreementRate}}, interval: 3s, count: 2, thresholdRange: {min: 0.99}, minSampleCount: 20}";
    let errors = "{name: mirror-errors, provider: {builtin: {metric: mirrorErrorRate}}, interval: 3s, count: 2, thresholdRange: {max: 0.01}, minSampleCount: 20}";
    let ratio = "{name: cpu-ratio, provider: {builtin: {metric: mirrorLatencyRatio}}, interval: 3s, count: 2, thresholdRange: {max: 100}, dryRun: true}";
    format!(
        "{{steps: [{{setMirror: {{percent: 100}}}}, {{analysis: {{metrics: [{agreement}, {errors}, {ratio}]}}}}, {{setMirror: {{percent: 0}}}}, {{setWeight: 50}}, {{pause: {{duration: 2s}}}}], mirror: {{maxInFlight: 64, timeoutMs: 5000}}, abortUnloadDelaySeconds: 3}}"
    )
}

/// Rows whose argmax is the last column: `x + v` keeps it there, a
/// candidate negating that column moves it.
const LAST_COLUMN_WINS: &str = r#"{"instances": [[0.1, 0.2, 0.3, 0.9], [0.4, 0.1, 0.2, 0.8]]}"#;

async fn serving_v1(steps: &str) -> (VersaEnv, Vec<std::net::Ipv4Addr>) {
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    let g = env.apply(&env.manifest("fraud", 2, &models("1", 1, steps))).await.expect("apply");
    env.wait_ready("fraud", g).await.expect("ready");
    let ips = env.ready_ips("fraud").await.expect("ips");
    (env, ips)
}

/// The (mirror percent in force, candidate weight in force) pairs the
/// status went through, in order, without repeats.
fn in_force(log: &StatusLog) -> Vec<(Option<u8>, Option<u8>)> {
    let mut seen: Vec<(Option<u8>, Option<u8>)> = Vec::new();
    for e in log.entries() {
        let Some(r) = e.status.models.first().and_then(|m| m.rollout.as_ref()) else { continue };
        let pair = (r.mirror_in_force, r.weight_in_force);
        if seen.last() != Some(&pair) {
            seen.push(pair);
        }
    }
    seen
}

#[tokio::test]
async fn a_shadowed_candidate_that_agrees_is_promoted_after_answering_no_one_in_the_shadow() {
    let steps = shadow_first();
    let (env, ips) = serving_v1(&steps).await;
    let log = StatusLog::start(&env, "fraud");
    let load = Load::start_with(
        ips.clone(),
        "fraud",
        &[ZEROS, LAST_COLUMN_WINS],
        Duration::from_millis(3),
        Duration::from_secs(150),
    );
    // Version 2 of `versioned` is `x + 2`: every argmax as version 1's.
    let since = std::time::Instant::now();
    let g = env.apply(&env.manifest("fraud", 2, &models("2", 2, &steps))).await.expect("apply");
    let md = env
        .wait_for("fraud", "rollout Promoted", Duration::from_secs(120), |md| {
            rollout(md).is_some_and(|r| r.phase == "Promoted")
                && md.status.as_ref().is_some_and(|s| s.observed_generation == Some(g))
        })
        .await
        .expect("promoted");
    let took = since.elapsed();
    let r = rollout(&md).expect("rollout");
    let run = r.step_analysis.as_ref().expect("the shadow analysis");
    for (name, m) in &run.metrics {
        eprintln!("shadow analysis {name}: {:?}", m.measurements);
    }
    let agreement = &run.metrics["agreement"];
    assert_eq!((agreement.successful, agreement.failed), (2, 0), "{agreement:?}");
    assert!(
        agreement.measurements.iter().all(|m| m.value == Some(1.0) && m.samples >= 20),
        "every compared copy agreed: {agreement:?}"
    );
    assert!(agreement.measurements.iter().all(|m| m.baseline.is_none()), "no baseline value");
    let errors = &run.metrics["mirror-errors"];
    assert!(errors.measurements.iter().all(|m| m.value == Some(0.0)), "{errors:?}");
    let pairs = in_force(&log);
    eprintln!("shadow-first rollout promoted in {took:?}; (mirror, weight) in force: {pairs:?}");
    let shadowing = pairs.iter().position(|p| *p == (Some(100), Some(0)));
    let serving = pairs.iter().position(|p| *p == (Some(0), Some(50)));
    assert!(
        shadowing.zip(serving).is_some_and(|(a, b)| a < b),
        "100% shadow at weight 0 in force, then weight 50 without the mirror: {pairs:?}"
    );
    let md = env.wait_ready("fraud", g).await.expect("Ready once promoted");
    let model = &md.status.as_ref().expect("status").models[0];
    assert_eq!(model.mirror, None, "promotion ends the mirror");
    let tally = load.finish().await;
    eprintln!("requests: {:?} ok by version, {} failed", tally.ok, tally.failed);
    assert_eq!(tally.failed, 0, "{:?}", tally.errors);
}

#[tokio::test]
async fn a_shadowed_candidate_that_disagrees_is_aborted_without_ever_answering_a_client() {
    let steps = shadow_first();
    let (env, ips) = serving_v1(&steps).await;
    // Version 6 negates the last column: the argmax of every row of
    // LAST_COLUMN_WINS moves. It never fails a request.
    let fraud = env.models_root().join("fraud");
    versa_testmodels::write_version(&fraud, 6, &versa_testmodels::scaled([1.0, 1.0, 1.0, -1.0]))
        .expect("write v6");
    let load = Load::start_with(
        ips.clone(),
        "fraud",
        &[LAST_COLUMN_WINS],
        Duration::from_millis(3),
        Duration::from_secs(150),
    );
    let log = StatusLog::start(&env, "fraud");
    let g = env.apply(&env.manifest("fraud", 2, &models("6", 6, &steps))).await.expect("apply");
    let md = env
        .wait_condition("fraud", g, "Degraded", Some("RolloutAborted"), Duration::from_secs(90))
        .await
        .expect("aborted");
    let r = rollout(&md).expect("rollout");
    assert_eq!((r.phase.as_str(), r.weight, r.mirror, r.candidate), ("Aborted", 0, 0, 6));
    let message = r.message.clone().unwrap_or_default();
    assert!(message.contains("FailedAnalysis") && message.contains("agreement"), "{message}");
    let agreement = &r.step_analysis.as_ref().expect("run").metrics["agreement"];
    eprintln!("disagreeing candidate: agreement {:?}", agreement.measurements);
    assert!(
        agreement.measurements.iter().any(|m| m.value == Some(0.0) && m.samples >= 20),
        "every compared copy disagreed: {agreement:?}"
    );
    env.wait_for("fraud", "mirror off", Duration::from_secs(30), |md| {
        md.status.as_ref().is_some_and(|s| s.models[0].mirror.is_none())
            && rollout(md).and_then(|r| r.weight_in_force) == Some(0)
    })
    .await
    .expect("the abort in force: no mirror, weight 0");
    let tally = load.finish().await;
    eprintln!("during the shadow: {:?} ok by version, {} failed", tally.ok, tally.failed);
    assert_eq!(tally.failed, 0, "{:?}", tally.errors);
    assert_eq!(
        tally.ok.keys().copied().collect::<Vec<_>>(),
        [1],
        "the candidate never answered a client: {:?}",
        tally.ok
    );
    assert!(
        in_force(&log).iter().all(|(_, weight)| weight.is_none_or(|w| w == 0)),
        "no weight but 0 was ever in force: {:?}",
        in_force(&log)
    );
    let reasons: Vec<String> =
        env.events("fraud").await.expect("events").into_iter().map(|e| e.0).collect();
    for reason in ["AnalysisRunFailed", "RolloutAborted"] {
        assert!(reasons.iter().any(|r| r == reason), "Event {reason}: {reasons:?}");
    }
}
