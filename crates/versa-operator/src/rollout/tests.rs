use super::*;
use crate::strategy::compile;
use std::collections::BTreeMap;
use versa_analysis::MeasurementPhase;
use versa_analysis::canary::Command;
use versa_crd::command::CommandRequest;

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
        mirror: crate::plan::Routing::of(&r.planned).mirror,
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
    let first = decide(&model(1), &c, None, None, at(0));
    assert_eq!((first.start, first.status.is_none()), (Start::Direct, true));
    assert_eq!(first.planned, model(1));
    let again = decide(&model(1), &c, Some(&confirmed(&first)), None, at(10));
    assert_eq!((again.start, again.planned == model(1)), (Start::Direct, true));
}

#[test]
fn a_moved_stable_walks_the_steps_in_force_and_promotes() {
    let c = canary("[{setWeight: 20}, {pause: {duration: 60s}}, {setWeight: 50}]");
    let before = confirmed(&decide(&model(1), &c, None, None, at(0)));
    // The commit: stable 1 → 2. The baseline keeps `stable`, the candidate
    // gets 20% under `canary`.
    let s0 = decide(&model(2), &c, Some(&before), None, at(100));
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
        None,
        at(101),
    );
    assert_eq!(waiting.status.as_ref().map(|s| s.state.step), Some(0));
    // Confirmed: step 0 completes, the pause begins with its weight in force.
    let s1 = decide(&model(2), &c, Some(&confirmed(&s0)), None, at(105));
    let st = s1.status.as_ref().expect("rollout");
    assert_eq!((st.state.step, st.state.step_ready_at), (1, Some(at(105))));
    assert_eq!(s1.decision.as_ref().and_then(|d| d.requeue_at), Some(at(165)));
    let s1b = decide(&model(2), &c, Some(&confirmed(&s1)), None, at(164));
    assert_eq!(s1b.status.as_ref().map(|s| s.state.step), Some(1), "still pausing");
    let s2 = decide(&model(2), &c, Some(&confirmed(&s1b)), None, at(165));
    assert_eq!(traffic(&s2), [("canary".into(), 50), ("stable".into(), 50)]);
    // 50% confirmed: past the last step, promoted. `stable` names the
    // candidate, the baseline stays loaded for the unload delay.
    let done = decide(&model(2), &c, Some(&confirmed(&s2)), None, at(170));
    let st = done.status.as_ref().expect("rollout");
    assert_eq!((st.phase.as_str(), st.weight), ("Promoted", 100));
    assert_eq!(done.planned.labels, BTreeMap::from([("stable".into(), 2)]));
    assert_eq!(traffic(&done), [("stable".into(), 100)], "not the latest loaded");
    assert_eq!(versions(&done), [1, 2]);
    let later = decide(&model(2), &c, Some(&confirmed(&done)), None, at(170 + 300));
    assert_eq!(versions(&later), [2], "the baseline goes after unloadDelaySeconds");
    assert_eq!(later.start, Start::Continue);
}

#[test]
fn moving_back_to_a_loaded_version_is_instant_and_a_third_one_is_a_new_canary() {
    let c = canary("[{setWeight: 20}, {pause: {}}]");
    let before = confirmed(&decide(&model(1), &c, None, None, at(0)));
    let s0 = decide(&model(2), &c, Some(&before), None, at(10));
    let s1 = decide(&model(2), &c, Some(&confirmed(&s0)), None, at(11));
    assert_eq!(s1.status.as_ref().map(|s| s.phase.as_str()), Some("Paused"));
    // Mid-rollout, a commit back to the baseline: no steps.
    let back = decide(&model(1), &c, Some(&confirmed(&s1)), None, at(12));
    assert_eq!((back.start, back.status.is_none()), (Start::Instant, true));
    assert_eq!(back.planned, model(1));
    // A third version restarts from the same baseline.
    let third = decide(&model(3), &c, Some(&confirmed(&s1)), None, at(12));
    assert_eq!(third.start, Start::Canary { baseline: 1, candidate: 3 });
    assert_eq!(third.planned.labels.get("stable"), Some(&1));
    // Promoted by command (what `pause: {}` waits for), then rolled back
    // within the unload delay: instant; after it, a canary.
    let paused = confirmed(&s1);
    let promote =
        CommandRequest { model: "fraud".into(), command: Command::Promote, id: "p".into() };
    let promoted = decide(&model(2), &c, Some(&paused), Some(&promote), at(20));
    let st = promoted.status.as_ref().expect("rollout");
    assert_eq!(st.phase.as_str(), "Promoted");
    assert_eq!(st.last_command.as_ref().map(|l| l.id.as_str()), Some("p"), "taken once");
    let after = confirmed(&promoted);
    assert_eq!(decide(&model(1), &c, Some(&after), None, at(319)).start, Start::Instant);
    assert_eq!(
        decide(&model(1), &c, Some(&after), None, at(320)).start,
        Start::Canary { baseline: 2, candidate: 1 }
    );
}

#[test]
fn a_failed_analysis_aborts_to_the_baseline_and_a_revert_ends_the_rollout() {
    let c = canary(&format!("[{{setWeight: 20}}, {{analysis: {{metrics: [{METRIC}]}}}}]"));
    let before = confirmed(&decide(&model(1), &c, None, None, at(0)));
    let s0 = decide(&model(2), &c, Some(&before), None, at(10));
    let s1 = decide(&model(2), &c, Some(&confirmed(&s0)), None, at(11));
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
    let aborted = decide(&model(2), &c, Some(&status), None, at(42));
    let st = aborted.status.as_ref().expect("rollout");
    assert_eq!((st.phase.as_str(), st.weight), ("Aborted", 0));
    assert!(st.message.as_deref().is_some_and(|m| m.contains("errors")), "{:?}", st.message);
    assert_eq!(aborted.planned.labels, BTreeMap::from([("stable".into(), 1)]));
    assert_eq!(traffic(&aborted), [("stable".into(), 100)], "all traffic back on the baseline");
    assert_eq!(versions(&aborted), [1, 2], "the candidate unloads after abortUnloadDelaySeconds");
    // It stays aborted while the spec names the candidate ...
    let still = decide(&model(2), &c, Some(&confirmed(&aborted)), None, at(100));
    assert_eq!(still.status.as_ref().map(|s| s.phase.as_str()), Some("Aborted"));
    // ... and a revert to the baseline ends it: nothing to roll out.
    let revert = decide(&model(1), &c, Some(&confirmed(&aborted)), None, at(101));
    assert_eq!((revert.start, revert.status.is_none()), (Start::Direct, true));
}

#[test]
fn pods_confirming_another_candidate_are_not_its_weight() {
    let c = canary("[{setWeight: 20}]");
    let before = confirmed(&decide(&model(1), &c, None, None, at(0)));
    let s0 = decide(&model(2), &c, Some(&before), None, at(10));
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
    let before = confirmed(&decide(&m1, &c1, None, None, at(0)));
    let (m2, c2) = with_strategy(2, long, "");
    let mut last = decide(&m2, &c2, Some(&before), None, at(10));
    for t in 11..20 {
        last = decide(&m2, &c2, Some(&confirmed(&last)), None, at(t));
    }
    let st = last.status.as_ref().expect("rollout");
    assert_eq!((st.phase.as_str(), st.state.step), ("Paused", 3), "at the pause step");

    // `paused` and the delays may change without a restart.
    let (paused, cp) = with_strategy(2, long, ", paused: true, abortUnloadDelaySeconds: 5");
    let same = decide(&paused, &cp, Some(&confirmed(&last)), None, at(30));
    assert!(!same.restarted);
    assert_eq!(same.status.as_ref().map(|s| s.state.step), Some(3));

    // A shorter strategy: step 3 is past its end, which must not promote.
    let (short, cs) = with_strategy(2, "[{setWeight: 5}, {pause: {}}]", "");
    let again = decide(&short, &cs, Some(&confirmed(&last)), None, at(40));
    let st = again.status.as_ref().expect("rollout");
    assert!(again.restarted);
    assert_eq!((st.phase.as_str(), st.state.step, st.weight), ("Progressing", 0, 5));
    assert_ne!(st.state.step_run, last.status.as_ref().map_or(0, |s| s.state.step_run));
    let next = decide(&short, &cs, Some(&confirmed(&again)), None, at(41));
    assert!(!next.restarted, "restarted once, not on every pass");

    // Paused by a person, then the steps change: still paused after the restart.
    let pause = CommandRequest { model: "fraud".into(), command: Command::Pause, id: "u".into() };
    let held = decide(&short, &cs, Some(&confirmed(&next)), Some(&pause), at(42));
    assert_eq!(held.status.as_ref().map(|s| s.phase.as_str()), Some("Paused"));
    let (other, co) = with_strategy(2, "[{setWeight: 7}]", "");
    let restarted = decide(&other, &co, Some(&confirmed(&held)), None, at(43));
    assert!(restarted.restarted);
    let st = restarted.status.as_ref().expect("rollout");
    assert_eq!((st.phase.as_str(), st.state.step), ("Paused", 0), "the user's pause holds");
}

#[test]
fn a_command_is_taken_once_per_id_and_not_by_the_next_rollout() {
    let (m1, c) =
        with_strategy(1, "[{setWeight: 10}, {pause: {}}, {pause: {}}, {setWeight: 50}]", "");
    let before = confirmed(&decide(&m1, &c, None, None, at(0)));
    let (m2, _) =
        with_strategy(2, "[{setWeight: 10}, {pause: {}}, {pause: {}}, {setWeight: 50}]", "");
    let mut last = decide(&m2, &c, Some(&before), None, at(1));
    for t in 2..5 {
        last = decide(&m2, &c, Some(&confirmed(&last)), None, at(t));
    }
    assert_eq!(last.status.as_ref().map(|s| s.phase.as_str()), Some("Paused"));
    let promote =
        CommandRequest { model: "fraud".into(), command: Command::Promote, id: "a1".into() };
    let taken = decide(&m2, &c, Some(&confirmed(&last)), Some(&promote), at(10));
    let st = taken.status.as_ref().expect("rollout");
    assert_eq!(st.state.step, 2, "the pause step ended");
    assert_eq!(
        st.last_command.as_ref().map(|l| (l.id.as_str(), l.ignored.is_none())),
        Some(("a1", true))
    );
    // The annotation still there on the next pass (its removal failed): not again.
    let again = decide(&m2, &c, Some(&confirmed(&taken)), Some(&promote), at(11));
    assert_eq!(again.status.as_ref().map(|s| s.state.step), Some(2));
    // Another model's command, and one that does nothing here.
    let other = CommandRequest { model: "other".into(), id: "b2".into(), ..promote.clone() };
    let untouched = decide(&m2, &c, Some(&confirmed(&taken)), Some(&other), at(12));
    assert_eq!(
        untouched.status.as_ref().and_then(|s| s.last_command.as_ref()).map(|l| l.id.as_str()),
        Some("a1")
    );
    let retry = CommandRequest { model: "*".into(), command: Command::Retry, id: "c3".into() };
    let ignored = decide(&m2, &c, Some(&confirmed(&taken)), Some(&retry), at(13));
    let l = ignored.status.as_ref().and_then(|s| s.last_command.clone()).expect("recorded");
    assert!(l.ignored.is_some_and(|why| why.contains("nothing to retry")));
    assert!(
        ignored
            .decision
            .as_ref()
            .is_some_and(|d| d.events.iter().all(|e| e.reason() != "RolloutCommandIgnored")),
        "no Event for every-model commands"
    );
}

#[test]
fn the_strategy_fingerprint_is_pinned_and_another_scheme_is_adopted_not_restarted() {
    let (m, _) = with_strategy(1, "[{setWeight: 10}, {pause: {duration: 1m}}]", "");
    // Pinned: if this changes, bump FINGERPRINT_VERSION (else every live
    // rollout restarts on the upgrade).
    assert_eq!(strategy_fingerprint(&m), PINNED_FINGERPRINT);
    let mut st = fresh(1, 2, at(0));
    st.state.step = 1;
    st.strategy_hash = Some("v0-0123456789abcdef".into());
    assert!(!restart_if_changed(&mut st, &strategy_fingerprint(&m), at(5)));
    assert_eq!(st.state.step, 1);
}

const PINNED_FINGERPRINT: &str = "v1-f34a22d771c596cb";

const AGREEMENT: &str = r#"{name: agreement, provider: {builtin: {metric: mirrorAgreementRate}}, interval: 30s, count: 2, thresholdRange: {min: 0.99}, minSampleCount: 100}"#;

#[test]
fn a_shadow_step_mirrors_to_the_candidate_that_answers_no_one_until_it_is_in_force() {
    let c = canary(&format!(
        "[{{setMirror: {{percent: 50}}}}, {{analysis: {{metrics: [{AGREEMENT}]}}}}, {{setMirror: {{percent: 0}}}}, {{setWeight: 50}}]"
    ));
    let before = confirmed(&decide(&model(1), &c, None, None, at(0)));
    let s0 = decide(&model(2), &c, Some(&before), None, at(10));
    let mirror = s0.planned.mirror.clone().expect("the rollout's mirror");
    assert_eq!((mirror.label.as_deref(), mirror.percent), (Some("canary"), 50));
    assert_eq!(traffic(&s0), [("canary".into(), 0), ("stable".into(), 100)], "no client");
    let st = s0.status.as_ref().expect("rollout");
    assert_eq!(
        (st.mirror, st.mirror_in_force, st.summary.as_str()),
        (50, None, "Progressing 0/4 0% mirror 50%")
    );
    // Weight 0 confirmed but not the mirror: still waiting.
    let weight_only = ModelStatus { mirror: None, ..confirmed(&s0) };
    let waiting = decide(&model(2), &c, Some(&weight_only), None, at(11));
    let st = waiting.status.as_ref().expect("rollout");
    assert_eq!((st.state.step, st.mirror_in_force), (0, Some(0)));
    assert!(st.message.as_deref().is_some_and(|m| m.contains("mirror 50%")), "{:?}", st.message);
    // Both confirmed: on to the analysis, measured under the mirror.
    let s1 = decide(&model(2), &c, Some(&confirmed(&s0)), None, at(12));
    let st = s1.status.as_ref().expect("rollout");
    assert_eq!((st.state.step, st.mirror_in_force), (1, Some(50)));
    assert_eq!(s1.decision.as_ref().map(|d| d.analyses.len()), Some(1));
    // An abort ends the mirror with the rollout: the candidate never answered.
    let abort = CommandRequest::parse("fraud Abort a1").expect("command");
    let aborted = decide(&model(2), &c, Some(&confirmed(&s1)), Some(&abort), at(13));
    assert_eq!(aborted.planned.mirror, None);
    assert_eq!(aborted.planned.labels.get("stable"), Some(&1));
    assert_eq!(aborted.status.as_ref().map(|s| (s.mirror, s.phase.as_str())), Some((0, "Aborted")));
}
