//! `make demo`'s driver, run to the end so the README's main command cannot
//! rot: the chart installed by `helm install` and checked by `helm test`, the
//! five GitOps steps applied, every rollout Ready, traffic answered, no Pod
//! restarted.

use std::path::Path;

#[test]
fn the_demo_walks_through_every_gitops_step() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let out = std::process::Command::new(versa_testenv::workspace_binary("versa-demo"))
        .arg(format!("--chart={}", root.join("charts/versa-operator").display()))
        .arg(format!("--steps={}", root.join("examples/gitops/steps").display()))
        .arg("--exit-when-done")
        .output()
        .expect("versa-demo");
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{log}");
    assert!(out.status.success(), "the demo failed");
    assert!(log.contains("helm install versa"), "installed by Helm");
    assert!(log.contains("STATUS: deployed"), "helm install succeeded");
    assert!(log.contains("Phase: Succeeded"), "helm test passed");
    assert_eq!(log.matches("s after apply").count(), 5, "five rollouts Ready");
    let traffic: Vec<&str> = log.lines().filter(|l| l.contains("unversioned requests")).collect();
    assert_eq!(traffic.len(), 7);
    assert!(traffic.iter().all(|l| l.contains("(0 failed)")), "{traffic:?}");
    assert!(traffic[0].contains("v1 100.0%") && traffic[3].contains("v2 100.0%"), "{traffic:?}");
    // The automated canaries: v3 promoted itself, v4 was aborted back to v3.
    assert!(log.contains("Promoted by itself"), "the good candidate promoted");
    assert!(log.contains("Aborted by itself"), "the bad candidate aborted");
    assert!(log.contains("analysis errors: v3") && log.contains("analysis errors: v4"));
    assert!(traffic[5].contains("v3 100.0%") && traffic[6].contains("v3 100.0%"), "{traffic:?}");
    let meanwhile: Vec<&str> =
        log.lines().filter(|l| l.contains("live requests meanwhile")).collect();
    assert_eq!(meanwhile.len(), 2);
    assert!(
        meanwhile[0].contains("{} failed by version"),
        "nothing failed on the good canary: {meanwhile:?}"
    );
    assert!(
        meanwhile[1]
            .split("ok by version,")
            .nth(1)
            .is_some_and(|failed| failed.contains("{4:") && !failed.contains("3:")),
        "only v4 failed requests, never the baseline: {meanwhile:?}"
    );
    assert!(log.contains("none restarted"));
}
