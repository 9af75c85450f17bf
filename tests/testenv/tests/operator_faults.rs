//! The operator against a real API server when things are not its own or go
//! wrong: objects with its children's names that somebody else made, unsafe
//! or unusable specs, API errors, a deleted or emptied token Secret, a
//! rollout timed from an older one's start, a frozen leader.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use versa_crd::ModelDeploymentStatus;
use versa_testenv::versa::{
    NAMESPACE, OperatorOptions, StatusLog, VersaEnv, init_test_tracing, predict,
};

const STABLE_1: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1]}}, labels: {stable: 1}}]";
const CANARY_2_AT_10: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1, 2]}}, labels: {stable: 1, canary: 2}, traffic: {stable: 90, canary: 10}}]";

fn degraded(status: Option<&ModelDeploymentStatus>) -> (String, String) {
    status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded" && c.status == "True"))
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

fn kubectl_ok(env: &VersaEnv, args: &[&str]) -> String {
    let out = env.cluster.kubectl(args).expect("kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply_yaml(env: &VersaEnv, yaml: &str) {
    let file = env.cluster.dir().join("object.yaml");
    std::fs::write(&file, yaml).expect("write");
    kubectl_ok(env, &["apply", "-f", &file.display().to_string()]);
}

/// Events recorded on the ModelDeployment `name`: (reason, note).
fn events(env: &VersaEnv, name: &str) -> Vec<(String, String)> {
    let out = kubectl_ok(env, &["get", "events.events.k8s.io", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name)
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e["note"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn wait_degraded(env: &VersaEnv, name: &str, generation: i64, reason: &str) -> String {
    let md = env
        .wait_condition(name, generation, "Degraded", Some(reason), Duration::from_secs(45))
        .await
        .expect("degraded");
    degraded(md.status.as_ref()).1
}

#[tokio::test]
async fn objects_with_derived_names_that_are_not_ours_are_left_intact_and_reported() {
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    // Somebody's Service, ConfigMap and Secret, with the names three
    // ModelDeployments would derive.
    apply_yaml(
        &env,
        "apiVersion: v1\nkind: Service\nmetadata: {name: checkout, namespace: default}\nspec: {selector: {app: checkout}, ports: [{port: 80, protocol: TCP}]}\n",
    );
    apply_yaml(
        &env,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ledger-model-config, namespace: default}\ndata: {settings: keep}\n",
    );
    apply_yaml(
        &env,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: search-reload-token, namespace: default}\nstringData: {token: not-yours}\n",
    );
    let cases = [
        ("checkout", "Service checkout"),
        ("ledger", "ConfigMap ledger-model-config"),
        ("search", "Secret search-reload-token"),
    ];
    for (name, object) in cases {
        let g = env.apply(&env.manifest(name, 1, STABLE_1)).await.expect("apply");
        let message = wait_degraded(&env, name, g, "ResourceConflict").await;
        assert!(message.contains(&format!("{object} already exists")), "{message}");
        assert!(
            events(&env, name).iter().any(|(r, n)| r == "ResourceConflict" && n.contains(object)),
            "a Warning Event names {object}"
        );
        // Nothing else was created for it.
        let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), NAMESPACE);
        assert!(deployments.get_opt(name).await.expect("get").is_none(), "{name}: no Deployment");
    }
    let services: Api<Service> = Api::namespaced(env.client.clone(), NAMESPACE);
    let service = services.get("checkout").await.expect("service");
    assert!(service.metadata.owner_references.is_none(), "not adopted");
    let spec = service.spec.expect("spec");
    assert_eq!(spec.selector, Some([("app".to_owned(), "checkout".to_owned())].into()));
    assert_eq!(spec.ports.expect("ports").len(), 1, "no ports merged in");
    let maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), NAMESPACE);
    let map = maps.get("ledger-model-config").await.expect("config map");
    assert_eq!(map.data, Some([("settings".to_owned(), "keep".to_owned())].into()));
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NAMESPACE);
    let secret = secrets.get("search-reload-token").await.expect("secret");
    assert_eq!(secret.data.expect("data")["token"].0, b"not-yours");

    // Deleting the ModelDeployment leaves them; the garbage collector has
    // nothing of ours to follow.
    kubectl_ok(&env, &["delete", "modeldeployment", "checkout", "--wait=true"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(services.get_opt("checkout").await.expect("get").is_some(), "the Service survives");

    // Once the conflicting object is gone, the retry (backed off, capped)
    // takes over the name.
    secrets.delete("search-reload-token", &DeleteParams::default()).await.expect("delete");
    let g = env.get("search").await.expect("md").metadata.generation.unwrap_or_default();
    env.wait_ready("search", g).await.expect("ready once the name is free");
}

#[tokio::test]
async fn unsafe_or_unusable_specs_are_refused_with_every_problem_named() {
    init_test_tracing();
    // This operator runs with the default volume policy: no hostPath.
    let env = VersaEnv::start_with(&[
        "--resync_seconds=2",
        "--allowed_volume_sources=persistentVolumeClaim,emptyDir,configMap,ephemeral",
    ])
    .await
    .expect("env");
    let g = env.apply(&env.manifest("fraud", 1, STABLE_1)).await.expect("apply");
    let message = wait_degraded(&env, "fraud", g, "InvalidSpec").await;
    assert!(
        message.contains("server.modelVolume uses hostPath, which this operator does not allow"),
        "{message}"
    );
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), NAMESPACE);
    assert!(deployments.get_opt("fraud").await.expect("get").is_none(), "no Pods mount the node");

    // Operator-owned flags in args as well: every problem is named.
    let owned = env.manifest("fraud", 1, STABLE_1).replace(
        "args: [\"--max_num_load_retries=0\"",
        "args: [\"--port=9000\", \"--model_config_file=/x\", \"--max_num_load_retries=0\"",
    );
    let g = env.apply(&owned).await.expect("apply");
    let message = wait_degraded(&env, "fraud", g, "InvalidSpec").await;
    assert!(message.contains("server.args must not set --port, --model_config_file"), "{message}");
    assert!(message.contains("hostPath"), "every problem at once: {message}");

    // A name that fits an object but not a label value.
    let long = "a".repeat(66);
    let g = env.apply(&env.manifest(&long, 1, STABLE_1)).await.expect("apply");
    let message = wait_degraded(&env, &long, g, "InvalidSpec").await;
    assert!(message.contains("metadata.name is 66 characters; at most 63"), "{message}");
    assert!(events(&env, &long).iter().any(|(r, _)| r == "InvalidSpec"), "an Event says so");
}

#[tokio::test]
async fn an_api_error_applying_children_shows_in_status_and_clears_when_fixed() {
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    apply_yaml(
        &env,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: no-services, namespace: default}\nspec: {hard: {services: \"0\"}}\n",
    );
    // Admission enforces a quota once its controller has published it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while kubectl_ok(
        &env,
        &["get", "resourcequota", "no-services", "-o", "jsonpath={.status.hard.services}"],
    ) != "0"
    {
        assert!(Instant::now() < deadline, "the quota controller never published the quota");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let g = env.apply(&env.manifest("fraud", 1, STABLE_1)).await.expect("apply");
    let message = wait_degraded(&env, "fraud", g, "ApplyFailed").await;
    assert!(message.starts_with("cannot apply Service fraud:"), "{message}");
    assert!(message.contains("no-services"), "the API server's message: {message}");
    assert!(
        events(&env, "fraud")
            .iter()
            .any(|(r, n)| r == "ApplyFailed" && n.contains("Service fraud"))
    );
    kubectl_ok(&env, &["delete", "resourcequota", "no-services"]);
    let md = env.wait_ready("fraud", g).await.expect("ready once the quota is gone");
    assert_eq!(degraded(md.status.as_ref()), Default::default());
}

/// Fields of the Deployment, as the operator manages them.
async fn deployment_env_and_managers(env: &VersaEnv, name: &str) -> (Vec<String>, Vec<String>) {
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), NAMESPACE)
        .get(name)
        .await
        .expect("the Deployment");
    let env_names = deployment
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers)
        .into_iter()
        .flatten()
        .flat_map(|c| c.env.unwrap_or_default())
        .map(|e| e.name)
        .collect();
    let managers = deployment
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| format!("{}/{}", m.manager.unwrap_or_default(), m.operation.unwrap_or_default()))
        .collect();
    (env_names, managers)
}

/// Children are created (never applied over what might have appeared since
/// the check), and what the create recorded is handed to server-side apply:
/// a field the spec drops later goes away instead of staying with an
/// "Update" owner.
#[tokio::test]
async fn children_the_operator_created_lose_the_fields_a_later_spec_drops() {
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    let plain = env.manifest("fraud", 1, STABLE_1);
    let with_env =
        plain.replace("  server:\n", "  server:\n    env: [{name: VERSA_PROBE, value: \"1\"}]\n");
    let g = env.apply(&with_env).await.expect("apply");
    env.wait_ready("fraud", g).await.expect("ready");
    let (names, _) = deployment_env_and_managers(&env, "fraud").await;
    assert!(names.contains(&"VERSA_PROBE".to_owned()), "{names:?}");
    let g = env.apply(&plain).await.expect("apply without the variable");
    env.wait_ready("fraud", g).await.expect("ready");
    // A hand-over the controller-manager's own write raced with is
    // retried by the next pass, before that pass applies.
    let (names, managers) = deployment_env_and_managers(&env, "fraud").await;
    assert!(!names.contains(&"VERSA_PROBE".to_owned()), "dropped from the spec, kept: {names:?}");
    assert!(managers.contains(&"versa-operator/Apply".to_owned()), "{managers:?}");
    assert!(!managers.contains(&"versa-operator/Update".to_owned()), "{managers:?}");
}

async fn serving_everywhere(ips: &[Ipv4Addr], target: &str, version: i64, patience: Duration) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + patience;
    loop {
        let mut all = true;
        for ip in ips {
            let a = predict(&http, *ip, "fraud", Some(target)).await.ok();
            all &= a.is_some_and(|a| a.status == 200 && a.version == Some(version));
        }
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "{target} never served {version} on {ips:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_deleted_or_emptied_token_secret_is_recreated_and_rollouts_go_on_without_restarts() {
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    let g1 = env.apply(&env.manifest("fraud", 2, STABLE_1)).await.expect("apply");
    env.wait_ready("fraud", g1).await.expect("ready");
    let ips = env.ready_ips("fraud").await.expect("ips");
    let restarts = env.pod_restarts("fraud").await.expect("pods");
    let first = env.reload_token("fraud").await.expect("token");
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NAMESPACE);

    // Deleted, then a canary.
    secrets.delete("fraud-reload-token", &DeleteParams::default()).await.expect("delete");
    let g2 = env.apply(&env.manifest("fraud", 2, CANARY_2_AT_10)).await.expect("apply");
    env.wait_ready("fraud", g2).await.expect("the canary rolls out with a new token");
    serving_everywhere(&ips, "labels/canary", 2, Duration::from_secs(30)).await;
    let second = env.reload_token("fraud").await.expect("token");
    assert_ne!(first, second, "a new token");
    assert!(events(&env, "fraud").iter().any(|(r, _)| r == "ReloadTokenRecreated"));

    // Emptied, then a rollback.
    let empty = serde_json::json!({"data": {"token": ""}});
    secrets
        .patch("fraud-reload-token", &PatchParams::default(), &Patch::Merge(&empty))
        .await
        .expect("empty it");
    let g3 = env.apply(&env.manifest("fraud", 2, STABLE_1)).await.expect("apply");
    env.wait_ready("fraud", g3).await.expect("the rollback rolls out with a new token");
    let http = reqwest::Client::new();
    for ip in &ips {
        let canary = predict(&http, *ip, "fraud", Some("labels/canary")).await.expect("predict");
        assert_eq!(canary.status, 400, "the canary label is gone on {ip}");
    }
    assert_ne!(env.reload_token("fraud").await.expect("token"), second);
    assert_eq!(env.pod_restarts("fraud").await.expect("pods"), restarts, "no Pod restarted");
}

#[tokio::test]
async fn a_new_spec_after_a_timed_out_rollout_gets_a_fresh_load_clock() {
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    let phases = StatusLog::start(&env, "fraud");
    let quick = |models: &str| {
        env.manifest("fraud", 1, models)
            .replace("versionLoadTimeoutSeconds: 60", "versionLoadTimeoutSeconds: 4")
    };
    let g1 = env.apply(&quick(STABLE_1)).await.expect("apply");
    env.wait_ready("fraud", g1).await.expect("ready");
    // Version 7 does not exist: the rollout times out and stops.
    let missing = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1, 7]}}, labels: {stable: 1, canary: 7}}]";
    let g2 = env.apply(&quick(missing)).await.expect("apply");
    wait_degraded(&env, "fraud", g2, "VersionLoadTimeout").await;
    // Well past the timeout of that rollout, a new one begins; until then
    // the stopped one stays stopped (it does not start its clock over).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stopped = phases.phases_of(g2);
    let first_stop = stopped.iter().position(|p| p == "Stopped").expect("stopped");
    assert_eq!(stopped[first_stop..], ["Stopped".to_owned()], "flapped: {stopped:?}");
    let g3 = env.apply(&quick(CANARY_2_AT_10)).await.expect("apply");
    env.wait_ready("fraud", g3).await.expect("the new rollout completes");
    let seen = phases.phases_through(g3, "Ready").await;
    assert!(!seen.iter().any(|p| p == "Stopped"), "timed from the old rollout: {seen:?}");
}

#[tokio::test]
async fn a_frozen_leader_stops_acting_before_the_standby_takes_over() {
    init_test_tracing();
    let lease = ["--lease_duration_seconds=3", "--lease_renew_deadline_seconds=2"];
    let mut env = VersaEnv::start_with(&lease).await.expect("env");
    env.start_operator(OperatorOptions {
        identity: "operator-1".into(),
        extra_args: lease.iter().map(|s| (*s).to_owned()).collect(),
    })
    .expect("second operator");
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), NAMESPACE);
    let holder = |l: Option<Lease>| l.and_then(|l| l.spec?.holder_identity);
    let g1 = env.apply(&env.manifest("fraud", 2, STABLE_1)).await.expect("apply");
    env.wait_ready("fraud", g1).await.expect("ready");
    let leader = holder(leases.get_opt("versa-operator").await.expect("lease")).expect("a leader");
    let index = env.operators.iter().position(|o| o.name() == leader).expect("leader process");

    // Freeze the leader; the standby takes over and rolls a canary out.
    env.operators[index].signal("STOP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while holder(leases.get_opt("versa-operator").await.expect("lease")).as_deref()
        == Some(leader.as_str())
    {
        assert!(Instant::now() < deadline, "the standby never took the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let g2 = env.apply(&env.manifest("fraud", 2, CANARY_2_AT_10)).await.expect("apply");
    env.wait_ready("fraud", g2).await.expect("ready under the new leader");
    let ips = env.ready_ips("fraud").await.expect("ips");
    serving_everywhere(&ips, "labels/canary", 2, Duration::from_secs(10)).await;

    // Thaw the old leader. Its cache and its queue still hold generation 1:
    // if it acted, it would write that status and push the old config.
    let log = env.operator_log(&leader);
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    env.operators[index].signal("CONT");
    let http = reqwest::Client::new();
    let watch_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < watch_until {
        let md = env.get("fraud").await.expect("md");
        assert_eq!(md.status.and_then(|s| s.observed_generation), Some(g2), "status rewritten");
        for ip in &ips {
            let a = predict(&http, *ip, "fraud", Some("labels/canary")).await.expect("predict");
            assert_eq!((a.status, a.version), (200, Some(2)), "canary removed on {ip}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exited = Instant::now() + Duration::from_secs(10);
    while env.operators[index].exited().is_none() {
        assert!(Instant::now() < exited, "the old leader kept running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = std::fs::read_to_string(&log).unwrap_or_default();
    let woke = &after[before.min(after.len())..];
    assert!(woke.contains("renew deadline") || woke.contains("taken by another replica"), "{woke}");
    // It wrote nothing after it woke: no reload sent, no status written.
    for write in ["reload sent", "status written"] {
        assert!(!woke.contains(write), "the replaced leader acted after waking ({write}):\n{woke}");
    }
}
