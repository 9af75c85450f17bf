//! The operator against a real API server: ModelDeployments applied with
//! `kubectl apply`, the operator and every serving Pod's `versa-server`
//! running as real processes (Pods through the process kubelet).

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use versa_crd::ModelDeploymentStatus;
use versa_testenv::load::{Load, Tally};
use versa_testenv::versa::{
    NAMESPACE, OperatorOptions, StatusLog, VersaEnv, assert_phases_in_order, init_test_tracing,
    predict,
};

const STABLE_1: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1]}}, labels: {stable: 1}}]";
const CANARY_2_AT_10: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1, 2]}}, labels: {stable: 1, canary: 2}, traffic: {stable: 90, canary: 10}}]";
const PROMOTED_2: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [2]}}, labels: {stable: 2}}]";

fn condition<'a>(status: &'a ModelDeploymentStatus, type_: &str) -> (&'a str, &'a str) {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map_or(("", ""), |c| (c.status.as_str(), c.reason.as_str()))
}

/// Waits until every one of `ips` answers `target` with `version`.
/// A fresh environment with ModelDeployment `fraud` (2 replicas, `models`)
/// applied and Ready: the environment, an HTTP client and the Ready Pods' IPs.
async fn fraud_ready(models: &str) -> (VersaEnv, reqwest::Client, Vec<Ipv4Addr>) {
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    let generation = env.apply(&env.manifest("fraud", 2, models)).await.expect("apply");
    env.wait_ready("fraud", generation).await.expect("ready");
    let ips = env.ready_ips("fraud").await.expect("ips");
    (env, reqwest::Client::new(), ips)
}

async fn serving(http: &reqwest::Client, ips: &[Ipv4Addr], target: &str, version: i64) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        let mut all = true;
        for ip in ips {
            let answer = predict(http, *ip, "fraud", Some(target)).await.ok();
            all &= answer.as_ref().is_some_and(|a| a.status == 200 && a.version == Some(version));
        }
        if all {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{target} never served version {version} on all of {ips:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn canary_promote_and_rollback_move_by_reloads_in_phases_without_restarting_pods() {
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    let http = reqwest::Client::new();
    let phases = StatusLog::start(&env, "fraud");

    // v1 stable on three Pods.
    let started = Instant::now();
    let g1 = env.apply(&env.manifest("fraud", 3, STABLE_1)).await.expect("apply");
    let md = env.wait_ready("fraud", g1).await.expect("ready");
    eprintln!("apply → Ready on 3 new pods: {:.1}s", started.elapsed().as_secs_f64());
    let status = md.status.expect("status");
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert_eq!(status.models[0].labels, BTreeMap::from([("stable".to_owned(), 1)]));
    let v1 = status.models[0].versions.iter().find(|v| v.version == 1).expect("v1");
    assert_eq!((v1.available, v1.failed), (3, 0));
    assert_eq!(condition(&status, "Progressing"), ("False", "RolloutComplete"));
    assert_eq!(condition(&status, "Degraded"), ("False", "AsExpected"));
    let ips = env.ready_ips("fraud").await.expect("ips");
    assert_eq!(ips.len(), 3);
    serving(&http, &ips, "labels/stable", 1).await;
    let pods_before = env.pod_restarts("fraud").await.expect("pods");
    assert!(pods_before.values().all(|r| *r == 0), "{pods_before:?}");
    let load =
        Load::start(ips.clone(), "fraud", Duration::from_millis(5), Duration::from_secs(150));

    // Canary v2 at 10%.
    let started = Instant::now();
    let g2 = env.apply(&env.manifest("fraud", 3, CANARY_2_AT_10)).await.expect("apply");
    serving(&http, &ips, "labels/canary", 2).await;
    let to_label = started.elapsed();
    let md = env.wait_ready("fraud", g2).await.expect("canary ready");
    eprintln!(
        "canary: apply → canary label served on 3 pods {:.2}s, Ready {:.2}s",
        to_label.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_phases_in_order(
        &phases.phases_through(g2, "Ready").await,
        &["LoadingVersions", "MovingLabels", "ShiftingTraffic", "Ready"],
    );
    let status = md.status.expect("status");
    assert_eq!(
        status.models[0].traffic,
        BTreeMap::from([("stable".to_owned(), 90), ("canary".to_owned(), 10)])
    );
    let mut to_canary = 0;
    for i in 0..300 {
        let a = predict(&http, ips[i % 3], "fraud", None).await.expect("predict");
        assert_eq!(a.status, 200);
        to_canary += usize::from(a.version == Some(2));
    }
    assert!(
        (10..=60).contains(&to_canary),
        "{to_canary} of 300 unkeyed requests went to the canary at 10%"
    );

    // Promote v2.
    let g3 = env.apply(&env.manifest("fraud", 3, PROMOTED_2)).await.expect("apply");
    let md = env.wait_ready("fraud", g3).await.expect("promoted");
    assert_phases_in_order(
        &phases.phases_through(g3, "Ready").await,
        &["MovingLabels", "ShiftingTraffic", "UnloadingVersions", "Ready"],
    );
    serving(&http, &ips, "labels/stable", 2).await;
    let status = md.status.expect("status");
    assert!(status.models[0].traffic.is_empty());
    assert!(
        status.models[0].versions.iter().all(|v| v.version == 2 || v.available == 0),
        "{status:?}"
    );
    for ip in &ips {
        let old = predict(&http, *ip, "fraud", Some("versions/1")).await.expect("predict");
        assert_eq!(old.status, 404, "v1 unloaded on {ip}");
    }

    // Roll back: the first manifest again, as a GitOps revert does.
    let g4 = env.apply(&env.manifest("fraud", 3, STABLE_1)).await.expect("apply");
    env.wait_ready("fraud", g4).await.expect("rolled back");
    assert_phases_in_order(
        &phases.phases_through(g4, "Ready").await,
        &["LoadingVersions", "MovingLabels", "UnloadingVersions", "Ready"],
    );
    serving(&http, &ips, "labels/stable", 1).await;

    // What `kubectl get` shows: the printer columns.
    let out = env.cluster.kubectl(&["get", "modeldeployments"]).expect("kubectl");
    let table = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "MODEL", "STABLE", "CANARY", "CANARY%", "ROLLOUT", "PHASE", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    // No canary after the rollback: those two columns are empty.
    assert_eq!(row[..5], ["fraud", "3/3", "fraud", "1", "Ready"], "{table}");

    let Tally { ok, failed, errors, .. } = load.finish().await;
    let ok: u64 = ok.values().sum();
    eprintln!("unversioned requests during canary, promote, rollback: {ok} ok, {failed} failed");
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    assert!(ok > 20, "the load ran ({ok})");
    assert_eq!(
        env.pod_restarts("fraud").await.expect("pods"),
        pods_before,
        "no Pod restarted or replaced"
    );
}

#[tokio::test]
async fn a_corrupt_canary_stops_degraded_while_stable_serves_and_bad_specs_change_nothing() {
    let (env, http, ips) = fraud_ready(STABLE_1).await;

    // The reload RPC is closed to anyone without the token, and not on the
    // serving port at all.
    let config = versa_proto::serving::ReloadConfigRequest::default();
    for ip in &ips {
        let mut serving_port =
            versa_proto::serving::model_service_client::ModelServiceClient::connect(format!(
                "http://{ip}:8500"
            ))
            .await
            .expect("connect");
        let err =
            serving_port.handle_reload_config_request(config.clone()).await.expect_err("absent");
        assert_eq!(err.code(), tonic::Code::Unimplemented);
        let mut grpc = versa_proto::serving::model_service_client::ModelServiceClient::connect(
            format!("http://{ip}:8502"),
        )
        .await
        .expect("connect");
        let err = grpc.handle_reload_config_request(config.clone()).await.expect_err("no token");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let mut wrong = tonic::Request::new(config.clone());
        wrong.metadata_mut().insert("authorization", "Bearer guess".parse().expect("ascii"));
        let err = grpc.handle_reload_config_request(wrong).await.expect_err("wrong token");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
    serving(&http, &ips, "labels/stable", 1).await;

    // Weights that do not sum to 100: this API server (1.20) does not run
    // CEL, so the operator must refuse it and say why.
    let bad = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1, 2]}}, labels: {stable: 1, canary: 2}, traffic: {stable: 80, canary: 10}}]";
    let g2 = env.apply(&env.manifest("fraud", 2, bad)).await.expect("apply");
    let md = env
        .wait_condition("fraud", g2, "Degraded", Some("InvalidSpec"), Duration::from_secs(30))
        .await
        .expect("refused");
    let status = md.status.expect("status");
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").expect("Degraded");
    assert!(degraded.message.contains("traffic weights sum to 90"), "{}", degraded.message);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for ip in &ips {
        let canary = predict(&http, *ip, "fraud", Some("labels/canary")).await.expect("predict");
        assert_eq!(canary.status, 400, "no canary label from the refused spec on {ip}");
        let v2 = predict(&http, *ip, "fraud", Some("versions/2")).await.expect("predict");
        assert_eq!(v2.status, 404, "version 2 not loaded on {ip}");
    }

    // A canary whose model file is corrupt: stops, Degraded, stable serves on.
    let corrupt = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1, 9]}}, labels: {stable: 1, canary: 9}, traffic: {stable: 90, canary: 10}}]";
    let g3 = env.apply(&env.manifest("fraud", 2, corrupt)).await.expect("apply");
    let md = env
        .wait_condition("fraud", g3, "Degraded", Some("VersionLoadFailed"), Duration::from_secs(60))
        .await
        .expect("stopped");
    let status = md.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Stopped"));
    assert_eq!(condition(&status, "Progressing"), ("False", "RolloutStopped"));
    let message = status.models[0].message.clone().expect("message");
    assert!(message.contains("version 9 failed to load on pod fraud-"), "{message}");
    assert_eq!(
        status.models[0].labels,
        BTreeMap::from([("stable".to_owned(), 1)]),
        "labels in force unchanged"
    );
    // Unlabelled requests held on stable while 9 was loading: not on 9.
    assert_eq!(status.models[0].traffic, BTreeMap::from([("stable".to_owned(), 100)]));
    let v9 = status.models[0].versions.iter().find(|v| v.version == 9).expect("v9");
    assert!(v9.failed >= 1 && v9.last_error.is_some(), "{v9:?}");
    for i in 0..50 {
        let a = predict(&http, ips[i % ips.len()], "fraud", None).await.expect("predict");
        assert_eq!((a.status, a.version), (200, Some(1)), "stable keeps serving");
    }
    let events = env.cluster.kubectl(&["get", "events", "-o", "json"]).expect("kubectl");
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("VersionLoadFailed"), "a Warning Event was recorded");

    // Fixing the spec resumes.
    let g4 = env.apply(&env.manifest("fraud", 2, CANARY_2_AT_10)).await.expect("apply");
    let md = env.wait_ready("fraud", g4).await.expect("resumed");
    assert_eq!(condition(md.status.as_ref().expect("status"), "Degraded"), ("False", "AsExpected"));
    serving(&http, &ips, "labels/canary", 2).await;
}

#[tokio::test]
async fn crashed_sidecars_drift_and_new_pods_get_the_config_back() {
    let (env, http, ips) = fraud_ready(CANARY_2_AT_10).await;
    serving(&http, &ips, "labels/canary", 2).await;

    // Kill one sidecar: the kubelet restarts it with an empty process; it
    // must serve the canary again.
    let pods = env.pods("fraud").await.expect("pods");
    let victim = pods[0].metadata.name.clone().expect("name");
    assert!(env.kubelet.crash(NAMESPACE, &victim));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let restarted = env.pod_restarts("fraud").await.expect("pods").values().sum::<i32>() == 1;
        let ready = env.ready_ips("fraud").await.expect("ips").len() == 2;
        if restarted && ready {
            break;
        }
        assert!(Instant::now() < deadline, "the crashed sidecar never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serving(&http, &ips, "labels/canary", 2).await;
    serving(&http, &ips, "labels/stable", 1).await;

    // Drift: someone with the token reloads a Pod with another config; the
    // next pass puts the ModelDeployment's back.
    let token = env.reload_token("fraud").await.expect("token");
    let drift = versa_testenv::versa::predict(&http, ips[1], "fraud", Some("labels/canary"))
        .await
        .expect("predict");
    assert_eq!(drift.version, Some(2));
    let text = format!(
        "model_config_list {{ config {{ name: \"fraud\" base_path: \"{}/fraud\" model_platform: \"onnx\" model_version_policy {{ specific {{ versions: 1 }} }} }} }}",
        env.models_root().display()
    );
    let config: versa_proto::serving::ModelServerConfig =
        versa_proto::text_format::parse_text("tensorflow.serving.ModelServerConfig", &text)
            .expect("config");
    let mut grpc = versa_proto::serving::model_service_client::ModelServiceClient::connect(
        format!("http://{}:8502", ips[1]),
    )
    .await
    .expect("connect");
    let mut request = tonic::Request::new(versa_proto::serving::ReloadConfigRequest {
        config: Some(config),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    grpc.handle_reload_config_request(request).await.expect("drift reload");
    let repaired = serving(&http, &ips[1..2], "labels/canary", 2).await;
    eprintln!("drift repaired in {:.2}s", repaired.as_secs_f64());

    // Scale up mid-flight: the new Pod boots with the config and serves.
    let g2 = env.apply(&env.manifest("fraud", 3, CANARY_2_AT_10)).await.expect("apply");
    let md = env.wait_ready("fraud", g2).await.expect("scaled");
    assert_eq!(md.status.as_ref().map(|s| s.ready_replicas), Some(3));
    let ips = env.ready_ips("fraud").await.expect("ips");
    assert_eq!(ips.len(), 3);
    serving(&http, &ips, "labels/canary", 2).await;
}

#[tokio::test]
async fn two_operators_one_leader_and_the_other_takes_over() {
    init_test_tracing();
    let mut env = VersaEnv::start_with(&["--lease_duration_seconds=3"]).await.expect("env");
    env.start_operator(OperatorOptions {
        identity: "operator-1".into(),
        extra_args: vec!["--lease_duration_seconds=3".into()],
    })
    .expect("second operator");
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), NAMESPACE);
    let holder = |lease: &Lease| lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        if let Some(h) =
            leases.get_opt("versa-operator").await.expect("lease").as_ref().and_then(holder)
        {
            break h;
        }
        assert!(Instant::now() < deadline, "nobody took the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let g1 = env.apply(&env.manifest("fraud", 1, STABLE_1)).await.expect("apply");
    env.wait_ready("fraud", g1).await.expect("ready");

    // Stop the leader; the other replica takes the Lease and carries on.
    let index = env.operators.iter().position(|o| o.name() == leader).expect("leader process");
    env.operators[index].stop(Duration::from_secs(5));
    let started = Instant::now();
    let g2 = env.apply(&env.manifest("fraud", 1, CANARY_2_AT_10)).await.expect("apply");
    env.wait_ready("fraud", g2).await.expect("ready under the new leader");
    let lease = leases.get("versa-operator").await.expect("lease");
    assert_ne!(holder(&lease).as_deref(), Some(leader.as_str()));
    assert_eq!(lease.spec.and_then(|s| s.lease_transitions), Some(1));
    eprintln!("failover and rollout: {:.1}s", started.elapsed().as_secs_f64());
}

/// Time from `kubectl apply` to every Pod serving a moved label, for 3 and
/// 20 Pods. Printed for the record; bounded by the usual patience.
#[tokio::test]
async fn time_from_apply_to_every_pod_serving_the_new_label() {
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    let http = reqwest::Client::new();
    for (name, replicas) in [("small", 3), ("large", 20)] {
        let started = Instant::now();
        let g1 = env.apply(&env.manifest(name, replicas, STABLE_1)).await.expect("apply");
        env.wait_ready(name, g1).await.expect("ready");
        let boot = started.elapsed();
        let ips = env.ready_ips(name).await.expect("ips");
        assert_eq!(ips.len(), usize::try_from(replicas).expect("count"));

        let started = Instant::now();
        env.apply(&env.manifest(name, replicas, CANARY_2_AT_10)).await.expect("apply");
        serving(&http, &ips, "labels/canary", 2).await;
        let canary = started.elapsed();

        let started = Instant::now();
        let g3 = env.apply(&env.manifest(name, replicas, PROMOTED_2)).await.expect("apply");
        serving(&http, &ips, "labels/stable", 2).await;
        let promoted = started.elapsed();
        env.wait_ready(name, g3).await.expect("promoted");
        let settled = started.elapsed();
        eprintln!(
            "{replicas} pods: new Pods Ready {:.2}s; apply → canary label (new version) on all {:.2}s; \
             apply → stable moved on all {:.2}s, Ready {:.2}s",
            boot.as_secs_f64(),
            canary.as_secs_f64(),
            promoted.as_secs_f64(),
            settled.as_secs_f64()
        );
    }
}
