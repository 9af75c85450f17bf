//! The planner from YAML fixtures: every phase, failures, timeouts,
//! scale-up and rollback mid-rollout.

use super::*;
use serde::Deserialize;
use versa_crd::MirrorInForce;

fn spec(models: &str) -> ModelDeploymentSpec {
    serde_yaml::from_str(&format!(
        "replicas: 2\nserver: {{image: versa-server, modelVolume: {{name: m, emptyDir: {{}}}}}}\nrollout: {{versionLoadTimeoutSeconds: 600}}\nmodels: {models}"
    ))
    .expect("spec parses")
}

#[derive(Deserialize)]
struct PodFixture {
    name: String,
    #[serde(default = "yes")]
    ready: bool,
    /// model → version → "Available" | "Loading" | "Unloading" | "Ended" | "Failed: <error>"; absent: unreachable
    models: Option<BTreeMap<String, BTreeMap<i64, String>>>,
}

fn yes() -> bool {
    true
}

fn pods(yaml: &str) -> Vec<PodView> {
    let fixtures: Vec<PodFixture> = serde_yaml::from_str(yaml).expect("pods parse");
    fixtures
        .into_iter()
        .map(|f| PodView {
            name: f.name,
            ready: f.ready,
            models: f.models.map(|models| {
                models
                    .into_iter()
                    .map(|(m, versions)| {
                        let states = versions
                            .into_iter()
                            .map(|(v, s)| {
                                let state = match s.as_str() {
                                    "Available" => VersionState::Available,
                                    "Loading" => VersionState::Loading,
                                    "Unloading" => VersionState::Unloading,
                                    "Ended" => VersionState::Ended,
                                    other => VersionState::Failed(
                                        other.trim_start_matches("Failed: ").to_owned(),
                                    ),
                                };
                                (v, state)
                            })
                            .collect();
                        (m, states)
                    })
                    .collect()
            }),
        })
        .collect()
}

fn routing(labels: &[(&str, i64)], traffic: &[(&str, u32)]) -> Routing {
    Routing {
        labels: labels.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        traffic: traffic.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        mirror: None,
    }
}

fn previous(phase: Phase, since: Timestamp, in_force: Routing) -> BTreeMap<String, PreviousModel> {
    [(
        "fraud".to_owned(),
        PreviousModel {
            phase: Some(phase),
            phase_since: Some(since),
            in_force,
            rollout_changed: false,
        },
    )]
    .into_iter()
    .collect()
}

fn now() -> Timestamp {
    "2026-11-25T12:00:00Z".parse().expect("time")
}

fn versions_of(config: &ModelServerConfig) -> Vec<i64> {
    let Some(model_server_config::Config::ModelConfigList(list)) = &config.config else {
        panic!("list")
    };
    match list.config[0].model_version_policy.as_ref().and_then(|p| p.policy_choice.as_ref()) {
        Some(policy::PolicyChoice::Specific(s)) => s.versions.clone(),
        other => panic!("specific expected, got {other:?}"),
    }
}

fn model_config_of(config: &ModelServerConfig) -> &ModelConfig {
    let Some(model_server_config::Config::ModelConfigList(list)) = &config.config else {
        panic!("list")
    };
    &list.config[0]
}

const STABLE_ONLY: &str = "[{name: fraud, basePath: /models/fraud, versionPolicy: {specific: {versions: [41]}}, labels: {stable: 41}}]";
const CANARY_10: &str = "[{name: fraud, basePath: /models/fraud, versionPolicy: {specific: {versions: [41, 42]}}, labels: {stable: 41, canary: 42}, traffic: {stable: 90, canary: 10}}]";
const PROMOTED: &str = "[{name: fraud, basePath: /models/fraud, versionPolicy: {specific: {versions: [42]}}, labels: {stable: 42}}]";

#[test]
fn a_new_deployment_loads_then_labels() {
    // No Pod Ready yet: load the versions, no labels.
    let p = plan(
        &spec(STABLE_ONLY),
        &pods("[{name: p1, ready: false, models: {}}]"),
        &BTreeMap::new(),
        now(),
    );
    assert_eq!(p.models[0].phase, Phase::LoadingVersions);
    assert_eq!(versions_of(&p.boot_config), vec![41]);
    assert!(model_config_of(&p.boot_config).version_labels.is_empty());

    // Loaded everywhere: the label moves.
    let loaded = pods(
        "[{name: p1, models: {fraud: {41: Available}}}, {name: p2, models: {fraud: {41: Available}}}]",
    );
    let p = plan(
        &spec(STABLE_ONLY),
        &loaded,
        &previous(Phase::LoadingVersions, now(), Routing::default()),
        now(),
    );
    assert_eq!(p.models[0].phase, Phase::MovingLabels);
    assert_eq!(p.models[0].routing, routing(&[("stable", 41)], &[]));
    assert!(p.routing_whole_for("p1") && p.routing_whole_for("p2"));

    // Labels in force: done.
    let p = plan(
        &spec(STABLE_ONLY),
        &loaded,
        &previous(Phase::MovingLabels, now(), routing(&[("stable", 41)], &[])),
        now(),
    );
    assert_eq!(p.models[0].phase, Phase::Ready);
}

#[test]
fn a_canary_goes_through_every_phase_in_order() {
    let stable = routing(&[("stable", 41)], &[]);
    let only_41 = pods(
        "[{name: p1, models: {fraud: {41: Available}}}, {name: p2, models: {fraud: {41: Available}}}]",
    );
    // 1. Load: union of wanted and labelled versions; labels and weights unchanged.
    let p = plan(&spec(CANARY_10), &only_41, &previous(Phase::Ready, now(), stable.clone()), now());
    assert_eq!(p.models[0].phase, Phase::LoadingVersions);
    // Unlabelled requests are held on stable's 41 by a split: without it
    // each sidecar would send them to 42 the moment 42 loads there.
    let held = routing(&[("stable", 41)], &[("stable", 100)]);
    assert_eq!(p.models[0].routing, held);
    assert_eq!(versions_of(&p.pod_configs["p1"]), vec![41, 42]);
    // Still loading on one Pod.
    let half = pods(
        "[{name: p1, models: {fraud: {41: Available, 42: Available}}}, {name: p2, models: {fraud: {41: Available, 42: Loading}}}]",
    );
    let p = plan(
        &spec(CANARY_10),
        &half,
        &previous(Phase::LoadingVersions, now(), stable.clone()),
        now(),
    );
    assert_eq!(p.models[0].phase, Phase::LoadingVersions);
    assert_eq!(p.models[0].routing, held, "41 is the highest version every Pod serves");
    assert_eq!(
        p.models[0].versions[&42],
        VersionSummary { available: 1, loading: 1, failed: 0, last_error: None }
    );
    // 2. Move labels once 42 is AVAILABLE on every Ready Pod.
    let both = pods(
        "[{name: p1, models: {fraud: {41: Available, 42: Available}}}, {name: p2, models: {fraud: {41: Available, 42: Available}}}]",
    );
    let p = plan(
        &spec(CANARY_10),
        &both,
        &previous(Phase::LoadingVersions, now(), stable.clone()),
        now(),
    );
    assert_eq!(p.models[0].phase, Phase::MovingLabels);
    assert_eq!(p.models[0].routing, routing(&[("canary", 42), ("stable", 41)], &[]));
    // 3. Shift weights.
    let labelled = routing(&[("canary", 42), ("stable", 41)], &[]);
    let p = plan(&spec(CANARY_10), &both, &previous(Phase::MovingLabels, now(), labelled), now());
    assert_eq!(p.models[0].phase, Phase::ShiftingTraffic);
    assert_eq!(
        p.models[0].routing,
        routing(&[("canary", 42), ("stable", 41)], &[("canary", 10), ("stable", 90)])
    );
    assert_eq!(model_config_of(&p.pod_configs["p2"]).traffic_split.get("canary"), Some(&10));
    // 4. Everything in force, nothing extra: Ready.
    let full = routing(&[("canary", 42), ("stable", 41)], &[("canary", 10), ("stable", 90)]);
    let p = plan(&spec(CANARY_10), &both, &previous(Phase::ShiftingTraffic, now(), full), now());
    assert_eq!(p.models[0].phase, Phase::Ready);
    assert_eq!(versions_of(&p.boot_config), vec![41, 42]);
}

#[test]
fn promotion_moves_labels_keeps_routed_labels_then_unloads() {
    let both = pods(
        "[{name: p1, models: {fraud: {41: Available, 42: Available}}}, {name: p2, models: {fraud: {41: Available, 42: Available}}}]",
    );
    let canary = routing(&[("canary", 42), ("stable", 41)], &[("canary", 10), ("stable", 90)]);
    // Labels first; `canary` stays while the weights in force still route to it, and 41 stays loaded.
    let p = plan(&spec(PROMOTED), &both, &previous(Phase::Ready, now(), canary), now());
    assert_eq!(p.models[0].phase, Phase::MovingLabels);
    assert_eq!(
        p.models[0].routing,
        routing(&[("canary", 42), ("stable", 42)], &[("canary", 10), ("stable", 90)])
    );
    assert_eq!(versions_of(&p.boot_config), vec![41, 42]);
    // Then the weights.
    let moved = routing(&[("canary", 42), ("stable", 42)], &[("canary", 10), ("stable", 90)]);
    let p = plan(&spec(PROMOTED), &both, &previous(Phase::MovingLabels, now(), moved), now());
    assert_eq!(p.models[0].phase, Phase::ShiftingTraffic);
    assert_eq!(p.models[0].routing, routing(&[("stable", 42)], &[]));
    assert_eq!(versions_of(&p.boot_config), vec![41, 42], "nothing unloads before phase 4");
    // Then unload 41.
    let p = plan(
        &spec(PROMOTED),
        &both,
        &previous(Phase::ShiftingTraffic, now(), routing(&[("stable", 42)], &[])),
        now(),
    );
    assert_eq!(p.models[0].phase, Phase::UnloadingVersions);
    assert_eq!(versions_of(&p.boot_config), vec![42]);
    // Gone: Ready.
    let only_42 = pods(
        "[{name: p1, models: {fraud: {41: Ended, 42: Available}}}, {name: p2, models: {fraud: {41: Ended, 42: Available}}}]",
    );
    let p = plan(
        &spec(PROMOTED),
        &only_42,
        &previous(Phase::UnloadingVersions, now(), routing(&[("stable", 42)], &[])),
        now(),
    );
    assert_eq!(p.models[0].phase, Phase::Ready);
}

#[test]
fn rollback_mid_rollout_goes_through_the_same_phases() {
    // The canary's labels and weights are in force; the spec is reverted to stable only.
    let both = pods(
        "[{name: p1, models: {fraud: {41: Available, 42: Available}}}, {name: p2, models: {fraud: {41: Available, 42: Available}}}]",
    );
    let canary = routing(&[("canary", 42), ("stable", 41)], &[("canary", 10), ("stable", 90)]);
    let p =
        plan(&spec(STABLE_ONLY), &both, &previous(Phase::ShiftingTraffic, now(), canary), now());
    // Labels already cover what the weights route to: weights go first, then 42 unloads.
    assert_eq!(p.models[0].phase, Phase::ShiftingTraffic);
    assert_eq!(p.models[0].routing, routing(&[("stable", 41)], &[]));
    assert_eq!(
        versions_of(&p.boot_config),
        vec![41, 42],
        "42 stays loaded while weights still route to it"
    );
    let p = plan(
        &spec(STABLE_ONLY),
        &both,
        &previous(Phase::ShiftingTraffic, now(), routing(&[("stable", 41)], &[])),
        now(),
    );
    assert_eq!(p.models[0].phase, Phase::UnloadingVersions);
    assert_eq!(versions_of(&p.boot_config), vec![41]);
}

#[test]
fn a_failed_version_stops_the_rollout_with_old_versions_serving() {
    let stable = routing(&[("stable", 41)], &[]);
    let failed = pods(
        "[{name: p1, models: {fraud: {41: Available, 42: Available}}}, {name: p2, models: {fraud: {41: Available, 42: 'Failed: cannot read model.onnx'}}}]",
    );
    let p = plan(
        &spec(CANARY_10),
        &failed,
        &previous(Phase::LoadingVersions, now(), stable.clone()),
        now(),
    );
    assert_eq!(p.models[0].phase, Phase::Stopped);
    let stop = p.models[0].stop.as_ref().expect("stopped");
    assert_eq!(stop.reason, "VersionLoadFailed");
    assert_eq!(stop.message, "version 42 failed to load on pod p2: cannot read model.onnx");
    assert_eq!(
        p.models[0].routing,
        routing(&[("stable", 41)], &[("stable", 100)]),
        "labels stay as they were, unlabelled requests held on stable (not on p1's 42)"
    );
    assert_eq!(versions_of(&p.boot_config), vec![41, 42]);
    assert_eq!(p.models[0].versions[&42].last_error.as_deref(), Some("p2: cannot read model.onnx"));
    // Fixing the spec (dropping 42) resumes: nothing required is failed any more.
    let p = plan(&spec(STABLE_ONLY), &failed, &previous(Phase::Stopped, now(), stable), now());
    assert_eq!(p.models[0].phase, Phase::UnloadingVersions);
}

#[test]
fn loading_too_long_stops_with_a_timeout() {
    let stable = routing(&[("stable", 41)], &[]);
    let loading = pods("[{name: p1, models: {fraud: {41: Available, 42: Loading}}}]");
    let started: Timestamp = "2026-11-25T11:45:00Z".parse().expect("time"); // 15 minutes ago
    let p = plan(
        &spec(CANARY_10),
        &loading,
        &previous(Phase::LoadingVersions, started, stable.clone()),
        now(),
    );
    assert_eq!(p.models[0].phase, Phase::Stopped);
    let stop = p.models[0].stop.as_ref().expect("stopped");
    assert_eq!(stop.reason, "VersionLoadTimeout");
    assert_eq!(stop.message, "versions [42] not AVAILABLE on pods [p1] after 600s");
    assert_eq!(p.models[0].phase_since, now(), "a new phase starts now");
    // Within the timeout it keeps loading, and the phase keeps its start time.
    let recent: Timestamp = "2026-11-25T11:59:00Z".parse().expect("time");
    let p =
        plan(&spec(CANARY_10), &loading, &previous(Phase::LoadingVersions, recent, stable), now());
    assert_eq!((p.models[0].phase, p.models[0].phase_since), (Phase::LoadingVersions, recent));
}

#[test]
fn scale_up_mid_rollout_waits_for_the_new_pod_and_filters_its_labels() {
    let labelled = routing(&[("canary", 42), ("stable", 41)], &[]);
    let with_new = pods(
        "[{name: p1, models: {fraud: {41: Available, 42: Available}}}, {name: p3, models: {fraud: {41: Available, 42: Loading}}}]",
    );
    let p =
        plan(&spec(CANARY_10), &with_new, &previous(Phase::MovingLabels, now(), labelled), now());
    assert_eq!(p.models[0].phase, Phase::LoadingVersions, "the new Ready Pod lacks 42");
    // p3 gets only labels whose versions it has, and no split (it would be partial).
    let p3 = model_config_of(&p.pod_configs["p3"]);
    assert_eq!(p3.version_labels.keys().collect::<Vec<_>>(), vec!["stable"]);
    assert!(p3.traffic_split.is_empty());
    assert!(!p.routing_whole_for("p3"));
    assert!(p.routing_whole_for("p1"));
}

#[test]
fn unreachable_and_unready_pods_do_not_count() {
    let stable = routing(&[("stable", 41)], &[]);
    let mixed = pods(
        "[{name: p1, models: {fraud: {41: Available, 42: Available}}}, {name: p2, ready: false, models: {fraud: {41: Available}}}, {name: p3}]",
    );
    let p = plan(&spec(CANARY_10), &mixed, &previous(Phase::LoadingVersions, now(), stable), now());
    assert_eq!(p.models[0].phase, Phase::MovingLabels, "only Ready, observed Pods decide");
    assert!(p.pod_configs.contains_key("p2"), "a booting Pod still gets its config");
    assert!(!p.pod_configs.contains_key("p3"), "an unreachable sidecar gets nothing");
}

#[test]
fn latest_policies_pass_through_and_label_when_loaded() {
    let s = spec(
        "[{name: fraud, basePath: /models/fraud, versionPolicy: {latest: {numVersions: 2}}, labels: {stable: 3}}]",
    );
    let p =
        plan(&s, &pods("[{name: p1, models: {fraud: {3: Available}}}]"), &BTreeMap::new(), now());
    assert_eq!(p.models[0].phase, Phase::MovingLabels);
    let config = model_config_of(&p.boot_config);
    assert!(matches!(
        config.model_version_policy.as_ref().and_then(|v| v.policy_choice.as_ref()),
        Some(policy::PolicyChoice::Latest(policy::Latest { num_versions: 2 }))
    ));
}

#[test]
fn configs_carry_platform_transition_and_base_path() {
    let s = spec("[{name: fraud, basePath: /models/fraud, transition: ResourcePreserving}]");
    let p = plan(&s, &[], &BTreeMap::new(), now());
    let config = model_config_of(&p.boot_config);
    assert_eq!(config.model_platform, "onnx");
    assert_eq!(config.base_path, "/models/fraud");
    assert_eq!(config.transition_policy, VersaTransitionPolicy::ResourcePreserving as i32);
    assert_eq!(p.models[0].phase, Phase::Ready, "nothing to load or label");
}

#[test]
fn resource_preserving_never_holds_old_and_new_together() {
    let spec = spec(
        "[{name: fraud, basePath: /models/fraud, transition: ResourcePreserving, versionPolicy: {specific: {versions: [42]}}, labels: {stable: 42}}]",
    );
    let before = routing(&[("stable", 41)], &[]);
    // Old version still up: the config already serves only the new one, and
    // the label on the old one is dropped rather than left dangling.
    let old = pods("[{name: p1, models: {fraud: {41: Available}}}]");
    let p = plan(&spec, &old, &previous(Phase::Ready, now(), before.clone()), now());
    assert_eq!(p.models[0].phase, Phase::LoadingVersions);
    assert_eq!(versions_of(&p.boot_config), vec![42]);
    assert!(model_config_of(&p.pod_configs["p1"]).version_labels.is_empty());
    assert!(p.models[0].in_force_if_accepted.labels.is_empty());
    // New one loaded: the label moves to it.
    let new = pods("[{name: p1, models: {fraud: {41: Ended, 42: Available}}}]");
    let p = plan(&spec, &new, &previous(Phase::LoadingVersions, now(), Routing::default()), now());
    assert_eq!(p.models[0].phase, Phase::MovingLabels);
    assert_eq!(model_config_of(&p.pod_configs["p1"]).version_labels["stable"], 42);
}

#[test]
fn a_new_spec_restarts_the_load_clock() {
    // v2 timed out long ago and the rollout stopped; now the spec asks for v3.
    let stable = routing(&[("stable", 41)], &[]);
    let to_43 = "[{name: fraud, basePath: /models/fraud, versionPolicy: {specific: {versions: [41, 43]}}, labels: {stable: 41, canary: 43}}]";
    let loading =
        pods("[{name: p1, models: {fraud: {41: Available, 42: 'Failed: bad', 43: Loading}}}]");
    let stopped_at: Timestamp = "2026-11-25T11:48:20Z".parse().expect("time"); // 700 s ago
    let mut previous = previous(Phase::Stopped, stopped_at, stable);
    let same_spec = plan(&spec(to_43), &loading, &previous, now());
    assert_eq!(same_spec.models[0].phase, Phase::Stopped, "the same rollout is still timed out");
    // Stopped a moment ago: it stays stopped, it does not restart its clock.
    let just_stopped = self::previous(Phase::Stopped, now(), routing(&[("stable", 41)], &[]));
    let p = plan(&spec(to_43), &loading, &just_stopped, now());
    assert_eq!(p.models[0].phase, Phase::Stopped, "no flapping back to LoadingVersions");
    // Its versions arriving resumes it.
    let arrived = pods("[{name: p1, models: {fraud: {41: Available, 43: Available}}}]");
    let p = plan(&spec(to_43), &arrived, &just_stopped, now());
    assert_eq!(p.models[0].phase, Phase::MovingLabels);
    previous.get_mut("fraud").expect("fraud").rollout_changed = true;
    let p = plan(&spec(to_43), &loading, &previous, now());
    assert_eq!(p.models[0].phase, Phase::LoadingVersions, "{:?}", p.models[0].stop);
    assert_eq!(p.models[0].phase_since, now());
}

#[test]
fn versions_that_ended_and_are_not_wanted_leave_the_status() {
    let stable = routing(&[("stable", 42)], &[]);
    let after = pods(
        "[{name: p1, models: {fraud: {40: 'Failed: old', 41: Ended, 42: Available}}}, {name: p2, models: {fraud: {41: Unloading, 42: Available}}}]",
    );
    let p = plan(&spec(PROMOTED), &after, &previous(Phase::Ready, now(), stable), now());
    assert_eq!(p.models[0].versions.keys().copied().collect::<Vec<_>>(), [42]);
    // A wanted version that failed stays visible.
    let failing = pods("[{name: p1, models: {fraud: {41: Available, 42: 'Failed: bad'}}}]");
    let p = plan(
        &spec(CANARY_10),
        &failing,
        &previous(Phase::Ready, now(), routing(&[("stable", 41)], &[])),
        now(),
    );
    assert_eq!(p.models[0].versions[&42].failed, 1);
}

const SHADOW_42: &str = "[{name: fraud, basePath: /models/fraud, versionPolicy: {specific: {versions: [41, 42]}}, labels: {stable: 41, next: 42}, mirror: {label: next, percent: 25, timeoutMs: 300}}]";

#[test]
fn a_mirror_goes_out_with_the_weights_and_only_where_its_label_is_served() {
    let both = pods(
        "[{name: p1, models: {fraud: {41: Available, 42: Available}}}, {name: p2, models: {fraud: {41: Available, 42: Available}}}]",
    );
    let labels = routing(&[("stable", 41), ("next", 42)], &[]);
    let p = plan(&spec(SHADOW_42), &both, &previous(Phase::MovingLabels, now(), labels), now());
    assert_eq!(
        p.models[0].phase,
        Phase::ShiftingTraffic,
        "labels first, the mirror with the weights"
    );
    let mirror = model_config_of(&p.boot_config).mirror.clone().expect("mirror pushed");
    assert_eq!((mirror.percent, mirror.timeout_ms), (25, 300));
    // A dark launch keeps every unlabelled request on stable: without a
    // split the sidecar would send them all to 42, the latest.
    assert_eq!(model_config_of(&p.boot_config).traffic_split.get("stable"), Some(&100));
    let in_force = p.models[0].in_force_if_accepted.clone();
    assert_eq!(in_force.mirror.as_ref().map(|m| m.percent), Some(25));
    let p =
        plan(&spec(SHADOW_42), &both, &previous(Phase::ShiftingTraffic, now(), in_force), now());
    assert_eq!(p.models[0].phase, Phase::Ready);

    // A Pod that does not serve 42 yet gets neither the label nor the
    // mirror naming it (its sidecar would refuse the config).
    let one = pods(
        "[{name: p1, models: {fraud: {41: Available, 42: Available}}}, {name: p2, models: {fraud: {41: Available, 42: Loading}}}]",
    );
    let p = plan(&spec(SHADOW_42), &one, &BTreeMap::new(), now());
    assert_eq!(model_config_of(&p.pod_configs["p2"]).mirror, None);
    assert!(!model_config_of(&p.pod_configs["p2"]).version_labels.contains_key("next"));
}

#[test]
fn a_label_the_mirror_in_force_names_goes_with_the_mirror_in_one_push() {
    let both = pods("[{name: p1, models: {fraud: {41: Available, 42: Available}}}]");
    let mut in_force = routing(&[("stable", 41), ("next", 42)], &[]);
    in_force.mirror =
        Some(MirrorInForce { label: Some("next".into()), version: None, percent: 25 });
    let p = plan(&spec(STABLE_ONLY), &both, &previous(Phase::Ready, now(), in_force), now());
    // Not MovingLabels first without it: a config naming the mirror's
    // label but not the label would be refused by the sidecar.
    assert_eq!(p.models[0].phase, Phase::ShiftingTraffic);
    assert_eq!(p.models[0].routing, routing(&[("stable", 41)], &[]));
    assert_eq!(model_config_of(&p.boot_config).mirror, None);
}

#[test]
fn a_resource_preserving_model_never_gets_a_mirror_pushed() {
    let rp = "[{name: fraud, basePath: /models/fraud, transition: ResourcePreserving, versionPolicy: {specific: {versions: [41]}}, labels: {stable: 41}}]";
    let on = pods("[{name: p1, models: {fraud: {41: Available}}}]");
    let mut in_force = routing(&[("stable", 41)], &[]);
    in_force.mirror = Some(MirrorInForce { label: None, version: Some(42), percent: 10 });
    let p = plan(&spec(rp), &on, &previous(Phase::Ready, now(), in_force), now());
    assert_eq!(model_config_of(&p.boot_config).mirror, None, "the sidecar would refuse it");
    assert_eq!(model_config_of(&p.pod_configs["p1"]).mirror, None);
}

#[test]
fn a_label_moving_to_a_new_version_takes_no_weight_until_the_weights_move() {
    // A rollout restarted to 43 while 42 had 50%: 43 must not inherit it.
    let third = "[{name: fraud, basePath: /models/fraud, versionPolicy: {specific: {versions: [41, 43]}}, labels: {stable: 41, canary: 43}, traffic: {stable: 100, canary: 0}}]";
    let all = pods("[{name: p1, models: {fraud: {41: Available, 42: Available, 43: Available}}}]");
    let mut in_force =
        routing(&[("canary", 42), ("stable", 41)], &[("canary", 50), ("stable", 50)]);
    in_force.mirror =
        Some(MirrorInForce { label: Some("canary".into()), version: None, percent: 5 });
    let p = plan(&spec(third), &all, &previous(Phase::Ready, now(), in_force), now());
    assert_eq!(p.models[0].phase, Phase::MovingLabels);
    assert_eq!(
        p.models[0].routing,
        routing(&[("canary", 43), ("stable", 41)], &[("canary", 0), ("stable", 100)])
    );
    // A promotion moves stable onto a version already served: unchanged.
    let both = pods("[{name: p1, models: {fraud: {41: Available, 42: Available}}}]");
    let canary = routing(&[("canary", 42), ("stable", 41)], &[("canary", 10), ("stable", 90)]);
    let p = plan(&spec(PROMOTED), &both, &previous(Phase::Ready, now(), canary), now());
    assert_eq!(p.models[0].routing.traffic, canary_traffic());
}

fn canary_traffic() -> BTreeMap<String, u32> {
    [("canary".to_owned(), 10), ("stable".to_owned(), 90)].into()
}

#[test]
fn unlabelled_requests_already_on_a_higher_version_are_not_moved_back_while_loading() {
    let spec3 = "[{name: fraud, basePath: /models/fraud, versionPolicy: {specific: {versions: [1, 2, 3]}}, labels: {stable: 1}}]";
    let on = pods("[{name: p1, models: {fraud: {1: Available, 2: Available}}}]");
    let in_force = routing(&[("stable", 1)], &[]);
    let p = plan(&spec(spec3), &on, &previous(Phase::Ready, now(), in_force.clone()), now());
    assert_eq!(p.models[0].phase, Phase::LoadingVersions);
    assert_eq!(p.models[0].routing, in_force, "2 answers them now: no hold back to 1");
    let latest = "[{name: fraud, basePath: /models/fraud, versionPolicy: {latest: {numVersions: 1}}, labels: {stable: 2}}]";
    let loading = pods("[{name: p1, models: {fraud: {1: Available, 2: Loading}}}]");
    let held = plan(
        &spec(latest),
        &loading,
        &previous(Phase::Ready, now(), routing(&[("stable", 1)], &[])),
        now(),
    );
    assert!(held.models[0].routing.traffic.is_empty(), "not under latest: it may unload 1");
}

#[test]
fn a_canary_model_sends_unlabelled_requests_to_stable_even_with_another_version_loaded() {
    // An instant rollback to 41 while the candidate 42 is still loaded: a
    // sidecar without a split would send every unlabelled request to 42.
    let rolled_back = "[{name: fraud, basePath: /models/fraud, versionPolicy: {specific: {versions: [41, 42]}}, labels: {stable: 41}, strategy: {canary: {steps: [{setMirror: {percent: 100}}]}}}]";
    let both = pods("[{name: p1, models: {fraud: {41: Available, 42: Available}}}]");
    let in_force = routing(&[("canary", 42), ("stable", 41)], &[("canary", 0), ("stable", 100)]);
    let p = plan(&spec(rolled_back), &both, &previous(Phase::Ready, now(), in_force), now());
    let stable_only: BTreeMap<String, u32> = [("stable".to_owned(), 100)].into();
    assert_eq!(p.models[0].routing.traffic, stable_only);
    assert_eq!(model_config_of(&p.boot_config).traffic_split.get("stable"), Some(&100));
    // Without a strategy or a mirror the spec's (empty) traffic stands.
    let plain = plan(
        &spec(STABLE_ONLY),
        &both,
        &previous(Phase::Ready, now(), routing(&[("stable", 41)], &[])),
        now(),
    );
    assert!(plain.models[0].routing.traffic.is_empty());
}
