//! The Helm chart for real: installed, tested, upgraded, rolled back and
//! uninstalled by the Helm CLI itself (`$VERSA_VENV/bin/helm`, `make pyenv`)
//! on the test cluster. The operator Pods it defines run from the operator
//! image (`make test-images`) under the process kubelet with the chart's
//! ServiceAccount credentials — so RBAC is exercised as installed: a missing
//! permission fails these tests.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use versa_testenv::helm::{Helm, chart_dir};
use versa_testenv::versa::{NAMESPACE, VersaEnv, init_test_tracing, is_ready, predict};

const RELEASE: &str = "versa";
const RELEASE_NAMESPACE: &str = "versa-system";
const OPERATOR: &str = "versa-versa-operator";
const CRD: &str = "modeldeployments.serving.versa.dev";
/// Helm's own `--timeout`, and the longest a helm process may run.
const HELM_TIMEOUT: &str = "--timeout=180s";
const HELM_LIMIT: Duration = Duration::from_secs(240);
/// The release's values: two replicas (leader election, a
/// PodDisruptionBudget), NetworkPolicies, a host directory as model volume,
/// short leases and requeues, and a short retry window for the installation
/// check (the negative `helm test`).
const VALUES: &str = r#"{
  "replicas": 2,
  "networkPolicy": {"enabled": true},
  "leaderElection": {"leaseDurationSeconds": 5},
  "rollout": {"progressRequeueMs": 200},
  "specPolicy": {"allowedVolumeSources": ["hostPath"]},
  "extraArgs": ["--check_timeout_seconds=8"]
}"#;
const STABLE_1: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1]}}, labels: {stable: 1}}]";
const CANARY_2_AT_10: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1, 2]}}, labels: {stable: 1, canary: 2}, traffic: {stable: 90, canary: 10}}]";
const PROMOTED_2: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [2]}}, labels: {stable: 2}}]";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kubectl_ok(env: &VersaEnv, args: &[&str]) -> String {
    let out = env.cluster.kubectl(args).expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the process kubelet logged for a Pod of the release namespace.
fn pod_log(env: &VersaEnv, pod: &str) -> PathBuf {
    env.cluster.dir().join("kubelet/logs").join(format!("{RELEASE_NAMESPACE}_{pod}.log"))
}

fn log_tails(env: &VersaEnv) -> String {
    let mut tail = String::new();
    let logs = env.cluster.dir().join("kubelet/logs");
    for entry in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(RELEASE_NAMESPACE) {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            tail.push_str(&format!("--- {name}\n"));
            tail.push_str(&lines[lines.len().saturating_sub(10)..].join("\n"));
            tail.push('\n');
        }
    }
    tail
}

/// The operator's Pods that are not being deleted.
async fn operator_pods(env: &VersaEnv) -> Vec<Pod> {
    Api::<Pod>::namespaced(env.client.clone(), RELEASE_NAMESPACE)
        .list(&ListParams::default().labels("app.kubernetes.io/name=versa-operator"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn args_of(pod: &Pod) -> Vec<String> {
    pod.spec.as_ref().and_then(|s| s.containers[0].args.clone()).unwrap_or_default()
}

/// Waits until exactly `n` operator Pods run, all Ready, all with `arg`.
async fn wait_operator_pods(env: &VersaEnv, n: usize, arg: &str) -> Vec<Pod> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pods = operator_pods(env).await;
        if pods.len() == n
            && pods.iter().all(|p| is_ready(p) && args_of(p).iter().any(|a| a == arg))
        {
            return pods;
        }
        if Instant::now() > deadline {
            let seen: Vec<_> = pods.iter().map(|p| (args_of(p), &p.status)).collect();
            panic!("not {n} Ready operator Pods with {arg}: {seen:#?}\n{}", log_tails(env));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn deployment_args(env: &VersaEnv) -> Vec<String> {
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), RELEASE_NAMESPACE)
        .get(OPERATOR)
        .await
        .expect("operator Deployment");
    let spec = deployment.spec.expect("spec").template.spec.expect("pod spec");
    spec.containers[0].args.clone().unwrap_or_default()
}

/// Progress on stderr, so a slow or stuck step is visible in the test's output.
fn step(started: Instant, what: &str) {
    eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

/// `helm install|upgrade|rollback …` waited for with kstatus (Deployments
/// available, old Pods gone).
async fn helm_wait(helm: &Helm, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["-n", RELEASE_NAMESPACE, "--wait=watcher", HELM_TIMEOUT]);
    helm.ok(&all, HELM_LIMIT).await.unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test]
async fn helm_installs_tests_upgrades_rolls_back_and_uninstalls_the_chart() {
    init_test_tracing();
    let started = Instant::now();
    let env = VersaEnv::start_bare(false).await.expect("env");
    step(started, "cluster up; helm install");
    let helm = Helm::new(&env.cluster).expect("helm");
    let chart = chart_dir().display().to_string();
    let values = env.cluster.dir().join("values.json");
    std::fs::write(&values, VALUES).expect("values");
    let values = values.display().to_string();

    // helm install: the CRD from crds/, then every template, waited for.
    // Client-side apply: Helm 4's default server-side apply sends the CRD's
    // `x-kubernetes-validations`, which a server older than 1.23 refuses in a
    // typed patch (its create drops them); upgrades and rollbacks follow the
    // release's method.
    let install = ["install", RELEASE, &chart, "--create-namespace", "-f", &values];
    let out = helm_wait(&helm, &[&install[..], &["--server-side=false"]].concat()).await;
    assert!(out.contains("STATUS: deployed") && out.contains("REVISION: 1"), "{out}");
    assert!(out.contains("helm test versa -n versa-system"), "NOTES.txt printed: {out}");
    env.cluster.wait_crd_established(CRD, Duration::from_secs(30)).await.expect("CRD");
    wait_operator_pods(&env, 2, "--log_format=text").await;

    step(started, "operator Ready; RBAC");
    // Least privilege, as the API server sees it.
    let sa = format!("--as=system:serviceaccount:{RELEASE_NAMESPACE}:{OPERATOR}");
    for (verb, resource, allowed) in [
        ("patch", "modeldeployments.serving.versa.dev --subresource=status", "yes"),
        ("watch", "pods", "yes"),
        ("create", "secrets", "yes"),
        ("create", "networkpolicies.networking.k8s.io", "yes"),
        ("delete", "pods", "no"),
        ("delete", "secrets", "no"),
        ("update", "modeldeployments.serving.versa.dev", "no"),
        ("list", "nodes", "no"),
    ] {
        let mut args = vec!["auth", "can-i", verb];
        args.extend(resource.split(' '));
        args.extend([sa.as_str(), "-n", NAMESPACE]);
        let out = env.cluster.kubectl(&args).expect("kubectl");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), allowed, "{verb} {resource}");
    }

    step(started, "helm test");
    // helm test: the chart's test Pod, the operator image in
    // --check_installation mode, passes.
    let test_log = pod_log(&env, &format!("{OPERATOR}-test"));
    let out = helm
        .ok(&["test", RELEASE, "-n", RELEASE_NAMESPACE, "--timeout=120s"], HELM_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tails(&env)));
    assert!(out.contains(&format!("{OPERATOR}-test")) && out.contains("Succeeded"), "{out}");
    let checked = std::fs::read_to_string(&test_log).expect("test Pod log");
    assert!(checked.contains(&format!("ok    CRD {CRD} Established")), "{checked}");
    assert!(checked.contains("ok    Lease versa-system/versa-versa-operator held"), "{checked}");
    assert!(checked.contains("the installation works"), "{checked}");

    // The GitOps examples are valid ModelDeployments for this API server.
    kubectl_ok(&env, &["create", "namespace", "ml"]);
    let steps = repo_root().join("examples/gitops/steps").display().to_string();
    let dry = kubectl_ok(&env, &["apply", "--dry-run=server", "-f", &steps]);
    let files = std::fs::read_dir(repo_root().join("examples/gitops/steps"))
        .expect("steps")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml")))
        .count();
    assert!(files >= 7, "{files} example steps");
    assert_eq!(dry.matches("(server dry run)").count(), files, "{dry}");

    step(started, "ModelDeployment rollouts");
    // The operator does its job with exactly the chart's permissions.
    let http = reqwest::Client::new();
    let g1 = env.apply(&env.manifest("fraud", 2, STABLE_1)).await.expect("apply");
    env.wait_ready("fraud", g1).await.unwrap_or_else(|e| panic!("{e:#}\n{}", log_tails(&env)));
    let g2 = env.apply(&env.manifest("fraud", 2, CANARY_2_AT_10)).await.expect("apply");
    env.wait_ready("fraud", g2).await.expect("canary ready");
    for ip in env.ready_ips("fraud").await.expect("ips") {
        let answer = predict(&http, ip, "fraud", Some("labels/canary")).await.expect("predict");
        assert_eq!(answer.version, Some(2));
    }
    let policy: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), NAMESPACE);
    let policy = policy.get("fraud-sidecars").await.expect("NetworkPolicy created");
    let rules = policy.spec.and_then(|s| s.ingress).expect("rules");
    assert_eq!(rules.len(), 2);
    let events = kubectl_ok(&env, &["get", "events", "-n", NAMESPACE, "-o", "json"]);
    assert!(events.contains("ShiftingTraffic"), "phase Events recorded with the chart's RBAC");

    // One leader among the two replicas.
    let lease = Api::<Lease>::namespaced(env.client.clone(), RELEASE_NAMESPACE)
        .get(OPERATOR)
        .await
        .expect("lease");
    let holder = lease.spec.and_then(|s| s.holder_identity).expect("holder");
    let names: Vec<String> =
        operator_pods(&env).await.iter().filter_map(|p| p.metadata.name.clone()).collect();
    assert!(names.contains(&holder), "{holder} not one of {names:?}");

    step(started, "helm upgrade");
    // helm upgrade with a changed value: new operator Pods with the new flag,
    // logging JSON, and they carry on rolling out.
    let out = helm_wait(
        &helm,
        &["upgrade", RELEASE, &chart, "--reuse-values", "--set", "logFormat=json"],
    )
    .await;
    assert!(out.contains("REVISION: 2"), "{out}");
    assert!(deployment_args(&env).await.contains(&"--log_format=json".to_owned()));
    let upgraded = wait_operator_pods(&env, 2, "--log_format=json").await;
    assert!(upgraded.iter().all(|p| !names.contains(p.metadata.name.as_ref().expect("name"))));
    let g3 = env.apply(&env.manifest("fraud", 2, PROMOTED_2)).await.expect("apply");
    env.wait_ready("fraud", g3).await.expect("promoted by the upgraded operator");
    for ip in env.ready_ips("fraud").await.expect("ips") {
        let answer = predict(&http, ip, "fraud", None).await.expect("predict");
        assert_eq!(answer.version, Some(2));
    }
    for pod in &upgraded {
        let log = std::fs::read_to_string(pod_log(&env, pod.metadata.name.as_ref().expect("name")))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
        assert!(!lines.is_empty(), "the upgraded operator logged nothing");
        for line in lines {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(event["level"].is_string() && event["fields"].is_object(), "{line}");
        }
    }

    step(started, "helm rollback");
    // helm rollback: revision 1's values again, as revision 3.
    let out = helm_wait(&helm, &["rollback", RELEASE, "1"]).await;
    assert!(out.contains("Rollback was a success"), "{out}");
    assert!(deployment_args(&env).await.contains(&"--log_format=text".to_owned()));
    wait_operator_pods(&env, 2, "--log_format=text").await;
    let history = helm
        .ok(&["history", RELEASE, "-n", RELEASE_NAMESPACE, "-o", "json"], HELM_LIMIT)
        .await
        .expect("helm history");
    let history: Vec<serde_json::Value> = serde_json::from_str(&history).expect("history JSON");
    let revisions: Vec<(i64, &str, &str)> = history
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default();
            (r["revision"].as_i64().unwrap_or_default(), field("status"), field("description"))
        })
        .collect();
    assert_eq!(revisions.len(), 3, "{revisions:?}");
    assert_eq!(revisions[2], (3, "deployed", "Rollback to 1"), "{revisions:?}");

    step(started, "helm test without RBAC");
    // A broken installation fails `helm test`, and the test Pod says why.
    kubectl_ok(&env, &["delete", "clusterrolebinding", OPERATOR]);
    let logged = std::fs::metadata(&test_log).map_or(0, |m| m.len() as usize);
    let out = helm
        .run(&["test", RELEASE, "-n", RELEASE_NAMESPACE, "--timeout=120s"], HELM_LIMIT)
        .await
        .expect("helm test");
    assert!(!out.success, "helm test passed without the operator's RBAC: {}", out.stdout);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains(&format!("{OPERATOR}-test")) && said.contains("failed"), "{said}");
    let checked = std::fs::read_to_string(&test_log).expect("test Pod log");
    let checked = &checked[logged.min(checked.len())..];
    assert!(checked.contains("FAIL  list ModelDeployments: forbidden"), "{checked}");
    assert!(checked.contains("FAIL  may watch modeldeployments.serving.versa.dev"), "{checked}");
    assert!(checked.contains("ok    CRD"), "only what is broken fails: {checked}");

    step(started, "helm uninstall");
    // helm uninstall: the operator goes; the CRD (Helm's crds/ rule), the
    // ModelDeployments and their serving Pods stay.
    let out = helm
        .ok(
            &["uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait=watcher", HELM_TIMEOUT],
            HELM_LIMIT,
        )
        .await
        .expect("helm uninstall");
    assert!(out.contains("release \"versa\" uninstalled"), "{out}");
    let pods = Api::<Pod>::namespaced(env.client.clone(), RELEASE_NAMESPACE);
    let operator = ListParams::default().labels("app.kubernetes.io/name=versa-operator");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pods.list(&operator).await.expect("pods").items.is_empty() {
        assert!(Instant::now() < deadline, "operator Pods still there after helm uninstall");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), RELEASE_NAMESPACE);
    assert!(deployments.get_opt(OPERATOR).await.expect("get").is_none());
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    assert!(crds.get_opt(CRD).await.expect("get").is_some(), "helm uninstall kept the CRD");
    assert!(env.get("fraud").await.is_ok(), "the ModelDeployment outlives the operator");
    for ip in env.ready_ips("fraud").await.expect("ips") {
        let answer = predict(&http, ip, "fraud", None).await.expect("still serving");
        assert_eq!(answer.version, Some(2));
    }
    let left: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(left, [format!("{OPERATOR}-test")], "only the failed test Pod (a hook) is left");
    let releases =
        helm.ok(&["list", "-n", RELEASE_NAMESPACE, "-q"], HELM_LIMIT).await.expect("helm list");
    assert_eq!(releases.trim(), "", "no release left");
}
