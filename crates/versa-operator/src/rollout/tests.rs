use super::*;
use crate::strategy::compile;
use std::collections::BTreeMap;
use versa_analysis::MeasurementPhase;

const METRIC: &str = r#"{name: errors, provider: {builtin: {metric: errorRate}}, interval: 30s, count: 2, thresholdRange: {max: 0.05}, minSampleCount: 10}"#;

fn model(stable: i64) -> ModelSpec {
    serde_yaml::from_str(&format!(
        "{{name: fraud, basePath: /m, versionPolicy: {{specific: {{versions: [{stable}]}}}}, labels: {{stable: {stable}}}}}"
    ))
    .expect("model")
}

fn canary(steps: &str) -> CompiledCanary {
    let spec = serde_yaml::from_str(&format!("{{steps: {steps}, unloadDelaySeconds: 300}}"))
        .expect("strategy.canary");
    compile("fraud", &spec).expect("compiles")
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_secs(s)
}

/// The model's status after the Pods confirmed what `r` planned.
fn confirmed(r: &ModelRollout) -> ModelStatus {
    ModelStatus {
        name: "fraud".into(),
        labels: r.planned.labels.clone(),
        traffic: r.planned.traffic.clone(),
        rollout: r.status.clone(),
        ..ModelStatus::default()
    }
}

fn traffic(r: &ModelRollout) -> Vec<(String, u32)> {
    r.planned.traffic.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

fn versions(r: &ModelRollout) -> Vec<i64> {
    r.planned
        .version_policy
        .as_ref()
        .and_then(|p| p.specific.as_ref())
        .map(|s| s.versions.clone())
        .unwrap_or_default()
}

#[test]
fn a_first_deployment_and_an_unmoved_stable_roll_out_directly() {
    let c = canary("[{setWeight: 20}]");
    let first = decide(&model(1), &c, None, at(0));
    assert_eq!((first.start, first.status.is_none()), (Start::Direct, true));
    assert_eq!(first.planned, model(1));
    let again = decide(&model(1), &c, Some(&confirmed(&first)), at(10));
    assert_eq!((again.start, again.planned == model(1)), (Start::Direct, true));
}

#[test]
fn a_moved_stable_walks_the_steps_in_force_and_promotes() {
    let c = canary("[{setWeight: 20}, {pause: {duration: 60s}}, {setWeight: 50}]");
    let before = confirmed(&decide(&model(1), &c, None, at(0)));
    // The commit: stable 1 → 2. The baseline keeps `stable`, the candidate
    // gets 20% under `canary`.
    let s0 = decide(&model(2), &c, Some(&before), at(100));
    assert_eq!(s0.start, Start::Canary { baseline: 1, candidate: 2 });
    assert_eq!(s0.planned.labels, BTreeMap::from([("canary".into(), 2), ("stable".into(), 1)]));
    assert_eq!(traffic(&s0), [("canary".into(), 20), ("stable".into(), 80)]);
    assert_eq!(versions(&s0), [1, 2], "both versions loaded");
    let st = s0.status.as_ref().expect("rollout");
    assert_eq!((st.phase.as_str(), st.state.step, st.weight), ("Progressing", 0, 20));
    assert_eq!(st.summary, "Progressing 0/3 20%");
    // Not yet confirmed: the step waits (the same status again).
    let waiting = decide(
        &model(2),
        &c,
        Some(&ModelStatus { rollout: s0.status.clone(), ..before.clone() }),
        at(101),
    );
    assert_eq!(waiting.status.as_ref().map(|s| s.state.step), Some(0));
    // Confirmed: step 0 completes, the pause begins with its weight in force.
    let s1 = decide(&model(2), &c, Some(&confirmed(&s0)), at(105));
    let st = s1.status.as_ref().expect("rollout");
    assert_eq!((st.state.step, st.state.step_ready_at), (1, Some(at(105))));
    assert_eq!(s1.decision.as_ref().and_then(|d| d.requeue_at), Some(at(165)));
    let s1b = decide(&model(2), &c, Some(&confirmed(&s1)), at(164));
    assert_eq!(s1b.status.as_ref().map(|s| s.state.step), Some(1), "still pausing");
    let s2 = decide(&model(2), &c, Some(&confirmed(&s1b)), at(165));
    assert_eq!(traffic(&s2), [("canary".into(), 50), ("stable".into(), 50)]);
    // 50% confirmed: past the last step, promoted. `stable` names the
    // candidate, the baseline stays loaded for the unload delay.
    let done = decide(&model(2), &c, Some(&confirmed(&s2)), at(170));
    let st = done.status.as_ref().expect("rollout");
    assert_eq!((st.phase.as_str(), st.weight), ("Promoted", 100));
    assert_eq!(done.planned.labels, BTreeMap::from([("stable".into(), 2)]));
    assert_eq!(traffic(&done), [("stable".into(), 100)], "not the latest loaded");
    assert_eq!(versions(&done), [1, 2]);
    let later = decide(&model(2), &c, Some(&confirmed(&done)), at(170 + 300));
    assert_eq!(versions(&later), [2], "the baseline goes after unloadDelaySeconds");
    assert_eq!(later.start, Start::Continue);
}

#[test]
fn moving_back_to_a_loaded_version_is_instant_and_a_third_one_is_a_new_canary() {
    let c = canary("[{setWeight: 20}, {pause: {}}]");
    let before = confirmed(&decide(&model(1), &c, None, at(0)));
    let s0 = decide(&model(2), &c, Some(&before), at(10));
    let s1 = decide(&model(2), &c, Some(&confirmed(&s0)), at(11));
    assert_eq!(s1.status.as_ref().map(|s| s.phase.as_str()), Some("Paused"));
    // Mid-rollout, a commit back to the baseline: no steps.
    let back = decide(&model(1), &c, Some(&confirmed(&s1)), at(12));
    assert_eq!((back.start, back.status.is_none()), (Start::Instant, true));
    assert_eq!(back.planned, model(1));
    // A third version restarts from the same baseline.
    let third = decide(&model(3), &c, Some(&confirmed(&s1)), at(12));
    assert_eq!(third.start, Start::Canary { baseline: 1, candidate: 3 });
    assert_eq!(third.planned.labels.get("stable"), Some(&1));
    // Promoted by command (what `pause: {}` waits for), then rolled back
    // within the unload delay: instant; after it, a canary.
    let mut paused = confirmed(&s1);
    if let Some(r) = paused.rollout.as_mut() {
        r.command = Some(versa_analysis::canary::Command::Promote);
    }
    let promoted = decide(&model(2), &c, Some(&paused), at(20));
    let st = promoted.status.as_ref().expect("rollout");
    assert_eq!((st.phase.as_str(), st.command), ("Promoted", None), "the command is applied once");
    let after = confirmed(&promoted);
    assert_eq!(decide(&model(1), &c, Some(&after), at(319)).start, Start::Instant);
    assert_eq!(
        decide(&model(1), &c, Some(&after), at(320)).start,
        Start::Canary { baseline: 2, candidate: 1 }
    );
}

#[test]
fn a_failed_analysis_aborts_to_the_baseline_and_a_revert_ends_the_rollout() {
    let c = canary(&format!("[{{setWeight: 20}}, {{analysis: {{metrics: [{METRIC}]}}}}]"));
    let before = confirmed(&decide(&model(1), &c, None, at(0)));
    let s0 = decide(&model(2), &c, Some(&before), at(10));
    let s1 = decide(&model(2), &c, Some(&confirmed(&s0)), at(11));
    let d = s1.decision.as_ref().expect("decision");
    assert_eq!(d.analyses.len(), 1, "the analysis step's run is to be measured");
    let mut status = confirmed(&s1);
    let run = status.rollout.as_mut().and_then(|r| r.step_analysis.as_mut()).expect("run");
    assert_eq!((run.run, run.phase.as_str()), (d.analyses[0].run, "Pending"));
    let failed = Measurement {
        phase: MeasurementPhase::Failed,
        finished_at: at(41),
        value: Some(0.5),
        baseline: Some(0.0),
        samples: 40,
        message: Some("0.5 outside thresholdRange".into()),
    };
    record(run, &c.step_metrics[&1], "errors", failed);
    assert_eq!(run.phase, "Failed");
    let aborted = decide(&model(2), &c, Some(&status), at(42));
    let st = aborted.status.as_ref().expect("rollout");
    assert_eq!((st.phase.as_str(), st.weight), ("Aborted", 0));
    assert!(st.message.as_deref().is_some_and(|m| m.contains("errors")), "{:?}", st.message);
    assert_eq!(aborted.planned.labels, BTreeMap::from([("stable".into(), 1)]));
    assert_eq!(traffic(&aborted), [("stable".into(), 100)], "all traffic back on the baseline");
    assert_eq!(versions(&aborted), [1, 2], "the candidate unloads after abortUnloadDelaySeconds");
    // It stays aborted while the spec names the candidate ...
    let still = decide(&model(2), &c, Some(&confirmed(&aborted)), at(100));
    assert_eq!(still.status.as_ref().map(|s| s.phase.as_str()), Some("Aborted"));
    // ... and a revert to the baseline ends it: nothing to roll out.
    let revert = decide(&model(1), &c, Some(&confirmed(&aborted)), at(101));
    assert_eq!((revert.start, revert.status.is_none()), (Start::Direct, true));
}

#[test]
fn pods_confirming_another_candidate_are_not_its_weight() {
    let c = canary("[{setWeight: 20}]");
    let before = confirmed(&decide(&model(1), &c, None, at(0)));
    let s0 = decide(&model(2), &c, Some(&before), at(10));
    let r = s0.status.as_ref().expect("rollout");
    let mut m = confirmed(&s0);
    assert_eq!(weight_in_force(&m, r, "canary"), Some(20));
    m.labels.insert("canary".into(), 7);
    assert_eq!(weight_in_force(&m, r, "canary"), None);
    assert_eq!(weight_in_force(&before, r, "canary"), Some(0), "nothing on the candidate yet");
}

/// `model(stable)` carrying `strategy.canary` with `steps` (and `extra`).
fn with_strategy(stable: i64, steps: &str, extra: &str) -> (ModelSpec, CompiledCanary) {
    let yaml = format!("{{steps: {steps}, unloadDelaySeconds: 300{extra}}}");
    let spec: versa_crd::strategy::CanaryStrategy = serde_yaml::from_str(&yaml).expect("canary");
    let compiled = compile("fraud", &spec).expect("compiles");
    let mut m = model(stable);
    m.strategy = Some(versa_crd::Strategy { canary: Some(spec) });
    (m, compiled)
}

#[test]
fn new_steps_mid_rollout_restart_it_rather_than_reinterpret_the_step_index() {
    let long = "[{setWeight: 10}, {setWeight: 20}, {setWeight: 30}, {pause: {}}, {setWeight: 40}]";
    let (m1, c1) = with_strategy(1, long, "");
    let before = confirmed(&decide(&m1, &c1, None, at(0)));
    let (m2, c2) = with_strategy(2, long, "");
    let mut last = decide(&m2, &c2, Some(&before), at(10));
    for t in 11..20 {
        last = decide(&m2, &c2, Some(&confirmed(&last)), at(t));
    }
    let st = last.status.as_ref().expect("rollout");
    assert_eq!((st.phase.as_str(), st.state.step), ("Paused", 3), "at the pause step");

    // `paused` and the delays may change without a restart.
    let (paused, cp) = with_strategy(2, long, ", paused: true, abortUnloadDelaySeconds: 5");
    let same = decide(&paused, &cp, Some(&confirmed(&last)), at(30));
    assert!(!same.restarted);
    assert_eq!(same.status.as_ref().map(|s| s.state.step), Some(3));

    // A shorter strategy: step 3 is past its end, which must not promote.
    let (short, cs) = with_strategy(2, "[{setWeight: 5}, {pause: {}}]", "");
    let again = decide(&short, &cs, Some(&confirmed(&last)), at(40));
    let st = again.status.as_ref().expect("rollout");
    assert!(again.restarted);
    assert_eq!((st.phase.as_str(), st.state.step, st.weight), ("Progressing", 0, 5));
    assert_ne!(st.state.step_run, last.status.as_ref().map_or(0, |s| s.state.step_run));
    let next = decide(&short, &cs, Some(&confirmed(&again)), at(41));
    assert!(!next.restarted, "restarted once, not on every pass");
}
