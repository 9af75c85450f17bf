//! `make demo`: a local cluster with Versa installed from its Helm chart by
//! the Helm CLI (`helm install`, then `helm test`), the example
//! ModelDeployment and example models, and a walk through the GitOps steps
//! (canary → 50% → promote → roll back) with `kubectl get md` and the share of
//! traffic per version printed at each step; then two automated canaries
//! (one commit each, `strategy.canary`): a good version the operator
//! promotes by itself and a bad one it aborts, with every step and analysis
//! measurement printed as it happens. Every Pod runs from Versa's
//! images (`make test-images`). The cluster stays up for exploring until
//! Ctrl-C (or exits with `--exit-when-done`).

use anyhow::{Context as _, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use versa_testenv::helm::Helm;
use versa_testenv::load::Load;
use versa_testenv::versa::{NAMESPACE, VersaEnv, ZEROS, is_ready, predict};

/// The demo's values: its models are a host directory, so `hostPath` is
/// allowed (the chart's default leaves it out), and rollouts requeue fast.
const DEMO_VALUES: &str = "\
# make demo: the models are a directory of this machine (hostPath, which the
# chart's default policy leaves out), and rollouts requeue every 250 ms.
specPolicy:
  allowedVolumeSources: [hostPath, persistentVolumeClaim, emptyDir]
rollout:
  progressRequeueMs: 250
";
const HELM_LIMIT: Duration = Duration::from_secs(240);

struct Args {
    chart: PathBuf,
    steps: PathBuf,
    exit_when_done: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut chart = None;
    let mut steps = None;
    let mut exit_when_done = false;
    for arg in std::env::args().skip(1) {
        match arg.split_once('=') {
            Some(("--chart", v)) => chart = Some(PathBuf::from(v)),
            Some(("--steps", v)) => steps = Some(PathBuf::from(v)),
            None if arg == "--exit-when-done" => exit_when_done = true,
            _ => bail!(
                "unknown argument {arg}; usage: versa-demo --chart=DIR --steps=DIR [--exit-when-done]"
            ),
        }
    }
    Ok(Args {
        chart: chart.context("--chart=<charts/versa-operator>")?,
        steps: steps.context("--steps=<examples/gitops/steps>")?,
        exit_when_done,
    })
}

struct Clock(Instant);

impl Clock {
    fn say(&self, what: &str) {
        eprintln!("[{:>5.1}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

fn kubectl(env: &VersaEnv, args: &[&str]) -> anyhow::Result<String> {
    let out = env.cluster.kubectl(args)?;
    if !out.status.success() {
        bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An example step, pointed at this machine's model directory and the
/// demo's namespace.
fn localise(step: &Path, models: &Path) -> anyhow::Result<String> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(step)?)?;
    let root = models.display().to_string();
    doc["metadata"]["namespace"] = NAMESPACE.into();
    let server = &mut doc["spec"]["server"];
    server["modelMountPath"] = root.clone().into();
    server["modelVolume"] = serde_yaml::from_str(&format!(
        "{{name: models, hostPath: {{path: '{root}', type: Directory}}}}"
    ))?;
    if let Some(models) = doc["spec"]["models"].as_sequence_mut() {
        for model in models {
            let base = model["basePath"].as_str().unwrap_or_default().to_owned();
            let rest = base.strip_prefix("/models").unwrap_or(&base);
            model["basePath"] = format!("{root}{rest}").into();
        }
    }
    Ok(serde_yaml::to_string(&doc)?)
}

/// Waits for the rollout, printing each phase as it begins.
async fn follow(env: &VersaEnv, clock: &Clock, generation: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    loop {
        let md = env.get("fraud").await?;
        if let Some(status) =
            md.status.as_ref().filter(|s| s.observed_generation == Some(generation))
        {
            let phase = status.phase.clone().unwrap_or_default();
            if phase != last {
                clock.say(&format!("  phase {phase}"));
                last = phase;
            }
            let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                return Ok(());
            }
            if let Some(c) =
                status.conditions.iter().find(|c| c.type_ == "Degraded" && c.status == "True")
            {
                bail!("rollout stopped: {}: {}", c.reason, c.message);
            }
        }
        if Instant::now() > deadline {
            bail!("rollout not Ready after 120 s; see `kubectl describe md fraud`");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Follows an automated canary until it ends by itself, printing each
/// change of its summary and every analysis measurement (candidate against
/// baseline) as the operator records it. Returns the final phase.
async fn follow_canary(env: &VersaEnv, clock: &Clock, generation: i64) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut summary = String::new();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let md = env.get("fraud").await?;
        let status = md.status.as_ref().filter(|s| s.observed_generation == Some(generation));
        if let Some(r) = status.and_then(|s| s.models.first()).and_then(|m| m.rollout.as_ref()) {
            if r.summary != summary {
                let in_force = r.weight_in_force.map_or("-".to_owned(), |w| format!("{w}%"));
                clock.say(&format!("  rollout {}   (weight in force {in_force})", r.summary));
                summary.clone_from(&r.summary);
            }
            let measured: Vec<String> = r
                .step_analysis
                .iter()
                .flat_map(|run| {
                    let run_id = run.run;
                    run.metrics.iter().flat_map(move |(name, m)| {
                        m.measurements.iter().map(move |x| (run_id, name, x))
                    })
                })
                .filter(|(run_id, name, x)| {
                    seen.insert((r.candidate, *run_id, (*name).clone(), x.finished_at))
                })
                .map(|(_, name, x)| {
                    let value = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
                    format!(
                        "  analysis {name}: v{} {} vs baseline v{} {} over {} requests → {:?}",
                        r.candidate,
                        value(x.value),
                        r.baseline,
                        value(x.baseline),
                        x.samples,
                        x.phase
                    )
                })
                .collect();
            for line in &measured {
                clock.say(line);
            }
            let ready = status.is_some_and(|s| {
                s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            });
            match r.phase.as_str() {
                "Promoted" if ready => return Ok(r.phase.clone()),
                "Aborted" if r.weight_in_force == Some(0) => {
                    let why = r.message.clone().unwrap_or_default();
                    clock.say(&format!("  aborted: {why}; all traffic back on v{}", r.baseline));
                    return Ok(r.phase.clone());
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            bail!("the automated canary did not end in 180 s; see `kubectl versa status fraud`");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 400 unversioned predictions across the Pods: the share per version.
async fn traffic(env: &VersaEnv) -> anyhow::Result<String> {
    let ips = env.ready_ips("fraud").await?;
    let http = reqwest::Client::new();
    let mut by_version: BTreeMap<i64, u32> = BTreeMap::new();
    let mut failed = 0;
    for i in 0..400 {
        match predict(&http, ips[i % ips.len()], "fraud", None).await {
            Ok(a) if a.status == 200 => {
                *by_version.entry(a.version.unwrap_or(-1)).or_default() += 1
            }
            _ => failed += 1,
        }
    }
    let shares: Vec<String> =
        by_version.iter().map(|(v, n)| format!("v{v} {:.1}%", f64::from(*n) / 4.0)).collect();
    Ok(format!(
        "400 unversioned requests over {} Pods: {} ({failed} failed)",
        ips.len(),
        shares.join(", ")
    ))
}

/// `helm install` (the CRD from the chart's crds/, then the operator,
/// waited for), then `helm test`.
async fn install(env: &VersaEnv, clock: &Clock, chart: &Path) -> anyhow::Result<()> {
    let helm = Helm::new(&env.cluster)?;
    let values = env.cluster.dir().join("demo-values.yaml");
    std::fs::write(&values, DEMO_VALUES)?;
    let (chart, values) = (chart.display().to_string(), values.display().to_string());
    let install = [
        "install",
        "versa",
        &chart,
        "-n",
        "versa-system",
        "--create-namespace",
        "-f",
        &values,
        "--wait=watcher",
        "--timeout=180s",
        // Client-side apply: a server older than 1.23 refuses the CRD's
        // `x-kubernetes-validations` in Helm 4's default server-side apply.
        "--server-side=false",
    ];
    clock.say(&format!("helm {}", install.join(" ")));
    let out = helm.ok(&install, HELM_LIMIT).await?;
    let status = out.lines().find(|l| l.starts_with("STATUS:")).unwrap_or_default();
    clock.say(&format!("  the CRD from crds/, then the operator: {status}"));
    env.cluster
        .wait_crd_established("modeldeployments.serving.versa.dev", Duration::from_secs(60))
        .await?;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(env.client.clone(), "versa-system");
    let operator = kube::api::ListParams::default().labels("app.kubernetes.io/name=versa-operator");
    if !pods.list(&operator).await?.items.iter().any(is_ready) {
        bail!("helm install returned, but no operator Pod is Ready");
    }
    clock.say("helm test versa -n versa-system   (the chart's test Pod: versa-operator --check_installation)");
    let out =
        helm.ok(&["test", "versa", "-n", "versa-system", "--timeout=120s"], HELM_LIMIT).await?;
    let phase = out.lines().find(|l| l.starts_with("Phase:")).unwrap_or_default();
    clock.say(&format!("  {}", phase.split_whitespace().collect::<Vec<_>>().join(" ")));
    clock.say("operator running, installation checked");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let clock = Clock(Instant::now());
    clock.say("starting etcd, kube-apiserver, kube-controller-manager and the process kubelet on 127.0.0.1");
    let env = VersaEnv::start_bare(false).await?;
    clock.say(&format!("cluster up: {}", env.cluster.server()));

    install(&env, &clock, &args.chart).await?;
    // Version 4 for the automated canary that must fail: it loads and
    // answers, but fails every request with an input above 0.5.
    let fraud = env.models_root().join("fraud");
    versa_testmodels::write_version(&fraud, 4, &versa_testmodels::failing(4))?;

    let mut steps: Vec<PathBuf> = std::fs::read_dir(&args.steps)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    steps.sort();
    let manifests = env.cluster.dir().join("demo");
    std::fs::create_dir_all(&manifests)?;
    let mut first_pods: Option<BTreeMap<String, i32>> = None;
    for step in &steps {
        let title = std::fs::read_to_string(step)?
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .to_owned();
        eprintln!();
        clock.say(&format!("{title}  (kubectl apply -f {})", step.display()));
        let file = manifests.join(step.file_name().context("file name")?);
        std::fs::write(&file, localise(step, env.models_root())?)?;
        let automated = std::fs::read_to_string(step)?.contains("strategy:");
        // Live traffic for the analysis to judge: half of it inputs a broken
        // version fails on.
        let load = if automated {
            let ips = env.ready_ips("fraud").await?;
            let bodies = [ZEROS, r#"{"instances": [[1, 1, 1, 1]]}"#];
            let limit = Duration::from_secs(200);
            Some(Load::start_with(ips, "fraud", &bodies, Duration::from_millis(2), limit))
        } else {
            None
        };
        let started = Instant::now();
        kubectl(&env, &["apply", "-f", &file.display().to_string()])?;
        let generation = env.get("fraud").await?.metadata.generation.unwrap_or_default();
        if let Some(load) = load {
            let phase = follow_canary(&env, &clock, generation).await?;
            let secs = started.elapsed().as_secs_f64();
            let tally = load.finish().await;
            clock.say(&format!(
                "  {phase} by itself {secs:.1}s after the commit; live requests meanwhile: {:?} ok by version, {:?} failed by version",
                tally.ok, tally.failed_by_version
            ));
        } else {
            follow(&env, &clock, generation).await?;
            clock.say(&format!("  Ready {:.2}s after apply", started.elapsed().as_secs_f64()));
        }
        eprint!("{}", kubectl(&env, &["get", "modeldeployments"])?);
        clock.say(&format!("  {}", traffic(&env).await?));
        let pods = env.pod_restarts("fraud").await?;
        first_pods.get_or_insert(pods);
    }
    let restarted = first_pods.as_ref() != Some(&env.pod_restarts("fraud").await?);

    eprintln!();
    if restarted {
        bail!("a serving Pod restarted or was replaced during the walk-through");
    }
    clock.say(
        "done: canary → 50% → promote → rollback, then an automated canary promoted and one aborted; the same 3 Pods throughout, none restarted",
    );
    if args.exit_when_done {
        return Ok(());
    }
    eprintln!("The cluster stays up. In another terminal:");
    eprintln!("  export KUBECONFIG={}", env.cluster.kubeconfig().display());
    eprintln!("  kubectl get modeldeployments,pods -A");
    eprintln!("  helm status versa -n versa-system; helm history versa -n versa-system");
    eprintln!(
        "  helm upgrade versa {} -n versa-system --reuse-values --set logLevel=debug --wait",
        args.chart.display()
    );
    eprintln!("  kubectl describe md fraud");
    eprintln!(
        "  PATH=$PATH:{} kubectl versa status fraud   # the rollout plugin",
        versa_testenv::workspace_binary("versa-demo")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    eprintln!(
        "  kubectl apply -f {}/02-canary-10.yaml   # manifests pointed at this machine's models",
        manifests.display()
    );
    if let Some(ip) = env.ready_ips("fraud").await.ok().and_then(|ips| ips.first().copied()) {
        eprintln!(
            "  curl -s -X POST {ip}:8501/v1/models/fraud:predict -d '{{\"instances\": [[0,0,0,0]]}}'"
        );
    }
    eprintln!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping ...");
    Ok(())
}
