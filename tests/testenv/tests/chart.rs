//! The Helm chart for real: rendered (Helm as a library, `tests/chart/chart.py`),
//! checked with `kubectl apply --dry-run=server`, installed into the test
//! cluster, and the operator Pods it defines run by the process kubelet with
//! the chart's ServiceAccount credentials — so RBAC is exercised as
//! installed: a missing permission fails these tests.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use versa_testenv::versa::{
    NAMESPACE, VersaEnv, init_test_tracing, is_ready, predict, venv_python,
};

const RELEASE_NAMESPACE: &str = "versa-system";
const STABLE_1: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1]}}, labels: {stable: 1}}]";
const CANARY_2_AT_10: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1, 2]}}, labels: {stable: 1, canary: 2}, traffic: {stable: 90, canary: 10}}]";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `helm template` (templates only) through the chart script.
fn render(values: &str, out: &Path) {
    let python = venv_python();
    assert!(python.exists(), "{} missing: run `make pyenv`", python.display());
    let status = std::process::Command::new(python)
        .arg(repo_root().join("tests/chart/chart.py"))
        .args(["render", &out.display().to_string(), "--set-json", values])
        .args(["--name", "versa", "--namespace", RELEASE_NAMESPACE, "--skip-crds"])
        .status()
        .expect("chart.py");
    assert!(status.success(), "chart render failed");
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

async fn operator_pods(env: &VersaEnv) -> Vec<Pod> {
    Api::<Pod>::namespaced(env.client.clone(), RELEASE_NAMESPACE)
        .list(&ListParams::default().labels("app.kubernetes.io/name=versa-operator"))
        .await
        .expect("pods")
        .items
}

#[tokio::test]
async fn the_installed_chart_runs_the_operator_with_its_own_rbac() {
    init_test_tracing();
    let env = VersaEnv::start_bare(false).await.expect("env");
    let rendered = env.cluster.dir().join("chart.yaml");
    render(
        r#"{"replicas": 2, "networkPolicy": {"enabled": true}, "leaderElection": {"leaseDurationSeconds": 5}, "rollout": {"progressRequeueMs": 200}, "specPolicy": {"allowedVolumeSources": ["hostPath"]}}"#,
        &rendered,
    );
    let file = rendered.display().to_string();
    kubectl_ok(&env, &["create", "namespace", RELEASE_NAMESPACE]);
    // The CRD as Helm installs it, from the chart's crds/. kubectl's
    // client-side schema of a 1.20 server predates CEL and refuses the
    // `x-kubernetes-validations` keys, so that check is off for the CRD only
    // (the 1.20 server itself drops them; 1.25+ clusters enforce them).
    let crd =
        repo_root().join("charts/versa-operator/crds/modeldeployments.serving.versa.dev.yaml");
    let crd = crd.display().to_string();
    kubectl_ok(&env, &["apply", "--dry-run=server", "--validate=false", "-f", &crd]);
    kubectl_ok(&env, &["apply", "--validate=false", "-f", &crd]);
    env.cluster
        .wait_crd_established("modeldeployments.serving.versa.dev", Duration::from_secs(30))
        .await
        .expect("CRD established");
    let dry = kubectl_ok(&env, &["apply", "--dry-run=server", "-f", &file]);
    assert!(dry.contains("deployment.apps/versa-versa-operator created (server dry run)"), "{dry}");
    kubectl_ok(&env, &["apply", "-f", &file]);

    // The GitOps examples are valid ModelDeployments for this API server.
    kubectl_ok(&env, &["create", "namespace", "ml"]);
    let steps = repo_root().join("examples/gitops/steps").display().to_string();
    let dry = kubectl_ok(&env, &["apply", "--dry-run=server", "-f", &steps]);
    assert_eq!(dry.matches("(server dry run)").count(), 5, "{dry}");

    // Least privilege, as the API server sees it.
    let sa = format!("--as=system:serviceaccount:{RELEASE_NAMESPACE}:versa-versa-operator");
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

    // Both operator replicas run (as Pods, with the ServiceAccount's token).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = operator_pods(&env).await;
        if pods.len() == 2 && pods.iter().all(is_ready) {
            break;
        }
        if Instant::now() > deadline {
            let logs = env.cluster.dir().join("kubelet/logs");
            let mut tail = String::new();
            for entry in std::fs::read_dir(&logs).expect("logs").flatten() {
                if entry.file_name().to_string_lossy().starts_with(RELEASE_NAMESPACE) {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    tail.push_str(&lines[lines.len().saturating_sub(10)..].join("\n"));
                }
            }
            panic!(
                "operator pods never became Ready: {pods:?}\n{tail}",
                pods = operator_pods(&env).await.iter().map(|p| &p.status).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The operator does its job with exactly the chart's permissions.
    let http = reqwest::Client::new();
    let g1 = env.apply(&env.manifest("fraud", 2, STABLE_1)).await.expect("apply");
    env.wait_ready("fraud", g1).await.expect("ready");
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
        .get("versa-versa-operator")
        .await
        .expect("lease");
    let holder = lease.spec.and_then(|s| s.holder_identity).expect("holder");
    let names: Vec<String> =
        operator_pods(&env).await.iter().filter_map(|p| p.metadata.name.clone()).collect();
    assert!(names.contains(&holder), "{holder} not one of {names:?}");
}
