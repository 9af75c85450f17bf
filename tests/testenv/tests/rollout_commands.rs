//! `kubectl versa` steering an automated canary on a real API server: the
//! plugin is found by kubectl on PATH, reads the rollout, and writes
//! commands (the rollout-command annotation) the operator (a real process)
//! takes once — a `pause: {}` step
//! ends with `promote`, `abort` sends all traffic back, `retry` starts
//! again, `promote --full` ends it, and a command that does nothing is
//! said to, with a non-zero exit. A load runs throughout: no request fails.

use std::process::Output;
use std::time::Duration;
use versa_crd::command::COMMAND_ANNOTATION;
use versa_crd::{ModelDeployment, RolloutStatus};
use versa_testenv::load::Load;
use versa_testenv::versa::{NAMESPACE, VersaEnv, init_test_tracing};

const STEPS: &str = "{steps: [{setWeight: 20}, {pause: {}}, {setWeight: 50}, {pause: {}}, {setWeight: 80}], unloadDelaySeconds: 60}";

fn models(versions: &str, stable: i64) -> String {
    format!(
        "[{{name: fraud, basePath: ROOT/fraud, versionPolicy: {{specific: {{versions: [{versions}]}}}}, labels: {{stable: {stable}}}, strategy: {{canary: {STEPS}}}}}]"
    )
}

fn rollout(md: &ModelDeployment) -> Option<&RolloutStatus> {
    md.status.as_ref()?.models.first()?.rollout.as_ref()
}

/// `kubectl versa ARGS`, the plugin found on PATH as kubectl finds any.
async fn kubectl_versa(env: &VersaEnv, args: &[&str]) -> Output {
    let plugin = versa_testenv::workspace_binary("kubectl-versa");
    let dir = plugin.parent().expect("the plugin's directory");
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let run = tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", env.cluster.kubeconfig())
        .env("PATH", path)
        .arg("versa")
        .args(args)
        .args(["-n", NAMESPACE])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("kubectl versa within 60 s")
        .expect("kubectl runs");
    eprintln!(
        "$ kubectl versa {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn paused_at(env: &VersaEnv, weight: u8) -> ModelDeployment {
    env.wait_for("fraud", &format!("paused at {weight}%"), Duration::from_secs(60), |md| {
        rollout(md).is_some_and(|r| r.phase == "Paused" && r.weight_in_force == Some(weight))
    })
    .await
    .expect("paused")
}

#[tokio::test]
async fn kubectl_versa_promotes_aborts_and_retries_a_rollout_and_says_when_a_command_does_nothing()
{
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    let g = env.apply(&env.manifest("fraud", 1, &models("1", 1))).await.expect("apply");
    env.wait_ready("fraud", g).await.expect("ready");
    let ips = env.ready_ips("fraud").await.expect("ips");
    let load = Load::start(ips, "fraud", Duration::from_millis(5), Duration::from_secs(150));

    let none = kubectl_versa(&env, &["promote", "fraud"]).await;
    assert!(!none.status.success() && text(&none).contains("no rollout"), "{}", text(&none));

    env.apply(&env.manifest("fraud", 1, &models("2", 2))).await.expect("apply");
    paused_at(&env, 20).await;
    let status = kubectl_versa(&env, &["status", "fraud"]).await;
    assert!(status.status.success());
    assert!(
        text(&status).contains("Rollout:   Paused v1 → v2, step 1/5, weight 20% (in force: 20%)"),
        "{}",
        text(&status)
    );

    // `resume` does not end a `pause: {}` step: said so, nothing moves.
    let resume = kubectl_versa(&env, &["resume", "fraud"]).await;
    assert!(!resume.status.success() && text(&resume).contains("nothing to resume"));
    let md = env.get("fraud").await.expect("get");
    assert_eq!(rollout(&md).map(|r| r.state.step), Some(1));
    let annotations = md.metadata.annotations.clone().unwrap_or_default();
    assert!(!annotations.contains_key(COMMAND_ANNOTATION), "taken and removed: {annotations:?}");

    let promote = kubectl_versa(&env, &["promote", "fraud"]).await;
    assert!(promote.status.success(), "{}", text(&promote));
    paused_at(&env, 50).await;

    let abort = kubectl_versa(&env, &["abort", "fraud"]).await;
    assert!(abort.status.success(), "{}", text(&abort));
    let md = env
        .wait_for("fraud", "aborted, weight 0 in force", Duration::from_secs(30), |md| {
            rollout(md).is_some_and(|r| r.phase == "Aborted" && r.weight_in_force == Some(0))
        })
        .await
        .expect("aborted");
    let message = rollout(&md).and_then(|r| r.message.clone()).unwrap_or_default();
    assert!(message.contains("UserAborted"), "{message}");
    let status = md.status.as_ref().expect("status");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "RolloutAborted")
    );

    let retry = kubectl_versa(&env, &["retry", "fraud"]).await;
    assert!(retry.status.success(), "{}", text(&retry));
    paused_at(&env, 20).await;

    let full = kubectl_versa(&env, &["promote", "fraud", "--full"]).await;
    assert!(full.status.success(), "{}", text(&full));
    let md = env
        .wait_for("fraud", "promoted", Duration::from_secs(60), |md| {
            rollout(md).is_some_and(|r| r.phase == "Promoted")
                && md.status.as_ref().is_some_and(|s| {
                    s.models[0].labels == [("stable".to_owned(), 2)].into()
                        && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                })
        })
        .await
        .expect("promoted");
    assert_eq!(rollout(&md).map(|r| r.weight), Some(100));

    let late = kubectl_versa(&env, &["abort", "fraud"]).await;
    assert!(!late.status.success() && text(&late).contains("already promoted"), "{}", text(&late));
    let reasons: Vec<String> =
        env.events("fraud").await.expect("events").into_iter().map(|e| e.0).collect();
    for reason in ["RolloutPaused", "RolloutAborted", "RolloutRetried", "RolloutCompleted"] {
        assert!(reasons.iter().any(|r| r == reason), "Event {reason}: {reasons:?}");
    }
    assert!(reasons.iter().any(|r| r == "RolloutCommandIgnored"), "{reasons:?}");

    let tally = load.finish().await;
    eprintln!("requests while steered: {:?} ok by version, {} failed", tally.ok, tally.failed);
    assert_eq!(tally.failed, 0, "{:?}", tally.errors);
    assert!(tally.ok.contains_key(&1) && tally.ok.contains_key(&2), "{:?}", tally.ok);
}
