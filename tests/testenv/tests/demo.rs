//! `make demo`'s driver, run to the end so the README's main command cannot
//! rot: chart installed, the five GitOps steps applied, every rollout Ready,
//! traffic answered, no Pod restarted.

use std::path::Path;

#[test]
fn the_demo_walks_through_every_gitops_step() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("chart.yaml");
    let rendered = std::process::Command::new(versa_testenv::versa::venv_python())
        .arg(root.join("tests/chart/chart.py"))
        .args(["render", "--skip-crds", "--set-json", r#"{"rollout": {"progressRequeueMs": 250}, "specPolicy": {"allowedVolumeSources": ["hostPath", "persistentVolumeClaim", "emptyDir"]}}"#])
        .arg(&chart)
        .status()
        .expect("chart.py (run `make pyenv`)");
    assert!(rendered.success());
    let out = std::process::Command::new(versa_testenv::workspace_binary("versa-demo"))
        .arg(format!("--chart={}", chart.display()))
        .arg(format!(
            "--crd={}",
            root.join("charts/versa-operator/crds/modeldeployments.serving.versa.dev.yaml")
                .display()
        ))
        .arg(format!("--steps={}", root.join("examples/gitops/steps").display()))
        .arg("--exit-when-done")
        .output()
        .expect("versa-demo");
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{log}");
    assert!(out.status.success(), "the demo failed");
    assert_eq!(log.matches("s after apply").count(), 5, "five rollouts Ready");
    let traffic: Vec<&str> = log.lines().filter(|l| l.contains("unversioned requests")).collect();
    assert_eq!(traffic.len(), 5);
    assert!(traffic.iter().all(|l| l.contains("(0 failed)")), "{traffic:?}");
    assert!(traffic[0].contains("v1 100.0%") && traffic[3].contains("v2 100.0%"), "{traffic:?}");
    assert!(log.contains("none restarted"));
}
