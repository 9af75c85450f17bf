//! Versa on the test cluster: the ModelDeployment CRD installed, a process
//! kubelet running Pods from Versa's images (`make images`), the operator
//! running as a real process with the cluster's kubeconfig, and a model
//! repository on disk.
//!
//! ModelDeployments are applied with `kubectl apply`, as a user would.

use crate::{ApiAccess, ChildProcess, ClusterOptions, KubeletOptions, ProcessKubelet, TestCluster};
use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;
use kube::api::{Api, ListParams, PostParams};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use versa_crd::ModelDeployment;

/// Namespace the tests use.
pub const NAMESPACE: &str = "default";

/// The whole stack on one test cluster. Dropping it stops everything.
pub struct VersaEnv {
    pub operators: Vec<ChildProcess>,
    pub kubelet: ProcessKubelet,
    pub client: kube::Client,
    /// Model repository: `fraud/1..3` (`y = x + v`), `fraud/9` (corrupt).
    pub models: tempfile::TempDir,
    pub cluster: TestCluster,
}

impl std::fmt::Debug for VersaEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersaEnv")
            .field("cluster", &self.cluster.server())
            .field("models", &self.models.path())
            .finish_non_exhaustive()
    }
}

/// Options of the operator processes a test starts.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    pub identity: String,
    pub extra_args: Vec<String>,
}

impl VersaEnv {
    /// Starts the cluster, installs the CRD, starts the kubelet and one
    /// operator, and writes the model repository.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&["--resync_seconds=2"]).await
    }

    /// As [`VersaEnv::start`], with extra operator flags.
    pub async fn start_with(operator_args: &[&str]) -> anyhow::Result<Self> {
        let mut env = Self::start_bare(true).await?;
        let args: Vec<String> = operator_args.iter().map(|a| (*a).to_owned()).collect();
        env.start_operator(OperatorOptions { identity: "operator-0".into(), extra_args: args })?;
        Ok(env)
    }

    /// The cluster, the kubelet and the model repository; the CRD if
    /// `install_crd`; no operator process. The kubelet runs Pods from the
    /// image store (the `versa-operator` image too: the chart's Pods, with
    /// the Pod's ServiceAccount token mounted), pulls retried after 1 s
    /// doubling to 10 s.
    pub async fn start_bare(install_crd_now: bool) -> anyhow::Result<Self> {
        let cluster = TestCluster::start(ClusterOptions::default()).await?;
        let client = cluster.client().await?;
        if install_crd_now {
            install_crd(&client).await?;
        }
        let kubelet =
            ProcessKubelet::start(client.clone(), Self::kubelet_options(&cluster)).await?;
        // Pods read it as their own user (65532), through a hostPath volume.
        let models = tempfile::Builder::new()
            .prefix("versa-models-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .tempdir()?;
        let fraud = models.path().join("fraud");
        for v in [1, 2, 3] {
            versa_testmodels::write_version(&fraud, v, &versa_testmodels::versioned(v))?;
        }
        versa_testmodels::write_version(&fraud, 9, &versa_testmodels::corrupt())?;
        Ok(Self { operators: Vec::new(), kubelet, client, models, cluster })
    }

    /// The process kubelet as the tests run it: images from the store,
    /// short pull back-off, the cluster's API server for in-cluster
    /// credentials.
    pub fn kubelet_options(cluster: &TestCluster) -> KubeletOptions {
        KubeletOptions {
            image_pull_backoff: (Duration::from_secs(1), Duration::from_secs(10)),
            api: Some(ApiAccess {
                server: cluster.server().to_owned(),
                ca_pem: cluster.ca_pem().to_vec(),
            }),
            ..KubeletOptions::new(cluster.dir().join("kubelet"))
        }
    }

    /// Starts one more operator process (leader election on, Lease in
    /// [`NAMESPACE`]).
    pub fn start_operator(&mut self, options: OperatorOptions) -> anyhow::Result<()> {
        let mut command = Command::new(crate::workspace_binary("versa-operator"));
        command
            .env("KUBECONFIG", self.cluster.kubeconfig())
            .env(
                "RUST_LOG",
                std::env::var("VERSA_OPERATOR_LOG")
                    .unwrap_or_else(|_| "info,versa_operator=debug,kube=warn".into()),
            )
            .args([
                "--metrics_address=127.0.0.1:0".to_owned(),
                format!("--lease_namespace={NAMESPACE}"),
                format!("--identity={}", options.identity),
                "--progress_requeue_ms=200".to_owned(),
                "--sidecar_timeout_ms=2000".to_owned(),
                "--max_retry_backoff_seconds=4".to_owned(),
            ])
            .args(&options.extra_args);
        // The model repository is a host directory here (list flags add up,
        // so this goes only where a test did not set its own).
        if !options.extra_args.iter().any(|a| a.starts_with("--allowed_volume_sources")) {
            command.arg("--allowed_volume_sources=hostPath,persistentVolumeClaim,emptyDir");
        }
        let log = self.operator_log(&options.identity);
        self.operators.push(ChildProcess::spawn(&options.identity, command, &log)?);
        Ok(())
    }

    pub fn operator_log(&self, identity: &str) -> PathBuf {
        self.cluster.dir().join("logs").join(format!("{identity}.log"))
    }

    /// The model repository's root: mounted into Pods at the same path, so
    /// base paths mean the same inside and outside.
    pub fn models_root(&self) -> &Path {
        self.models.path()
    }

    /// A ModelDeployment manifest: `replicas` Pods of `versa-server` with
    /// the model repository mounted, serving `models` (a YAML list in which
    /// `ROOT` stands for [`VersaEnv::models_root`]).
    pub fn manifest(&self, name: &str, replicas: i32, models: &str) -> String {
        let root = self.models_root().display().to_string();
        format!(
            r#"apiVersion: serving.versa.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: {name}
  namespace: {NAMESPACE}
spec:
  replicas: {replicas}
  server:
    image: ghcr.io/versa-dev/versa-server:0.1.0
    args: ["--max_num_load_retries=0", "--file_system_poll_wait_seconds=1"]
    modelMountPath: {root}
    modelVolume:
      name: models
      hostPath: {{path: {root}, type: Directory}}
  rollout:
    versionLoadTimeoutSeconds: 60
  models: {models}
"#,
            models = models.replace("ROOT", &root)
        )
    }

    /// `kubectl apply -f` of a manifest; returns the object's new generation.
    pub async fn apply(&self, manifest: &str) -> anyhow::Result<i64> {
        let file = self.cluster.dir().join("applied.yaml");
        std::fs::write(&file, manifest)?;
        let out = self.cluster.kubectl(&["apply", "-f", &file.display().to_string()])?;
        if !out.status.success() {
            bail!("kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let md: ModelDeployment = serde_yaml::from_str(manifest)?;
        let name = md.metadata.name.context("manifest has a name")?;
        Ok(self.get(&name).await?.metadata.generation.unwrap_or_default())
    }

    pub fn api(&self) -> Api<ModelDeployment> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    pub async fn get(&self, name: &str) -> anyhow::Result<ModelDeployment> {
        Ok(self.api().get(name).await?)
    }

    /// Polls the ModelDeployment until `done` holds; fails with its status
    /// and the operator's log tail after `patience`.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        patience: Duration,
        done: impl Fn(&ModelDeployment) -> bool,
    ) -> anyhow::Result<ModelDeployment> {
        let deadline = Instant::now() + patience;
        loop {
            let md = self.get(name).await?;
            if done(&md) {
                return Ok(md);
            }
            if Instant::now() > deadline {
                bail!(
                    "{name}: {what} not reached in {patience:?}; status: {}\nPods:\n{}operator log tail:\n{}",
                    serde_json::to_string_pretty(&md.status).unwrap_or_default(),
                    self.pod_states(name).await,
                    self.operator_log_tail(15)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until generation `generation` is observed and `Ready` is True.
    pub async fn wait_ready(&self, name: &str, generation: i64) -> anyhow::Result<ModelDeployment> {
        self.wait_condition(name, generation, "Ready", None, Duration::from_secs(90)).await
    }

    /// Waits until generation `generation` is observed with condition
    /// `type_` True (and its reason `reason`, when given).
    pub async fn wait_condition(
        &self,
        name: &str,
        generation: i64,
        type_: &str,
        reason: Option<&str>,
        patience: Duration,
    ) -> anyhow::Result<ModelDeployment> {
        let what = format!("{type_}{}", reason.map(|r| format!("/{r}")).unwrap_or_default());
        self.wait_for(name, &what, patience, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.observed_generation == Some(generation)
                    && s.conditions.iter().any(|c| {
                        c.type_ == type_
                            && c.status == "True"
                            && reason.is_none_or(|r| c.reason == r)
                    })
            })
        })
        .await
    }

    /// Events recorded on the ModelDeployment `name`, oldest first:
    /// (reason, note).
    pub async fn events(&self, name: &str) -> anyhow::Result<Vec<(String, String)>> {
        use k8s_openapi::api::events::v1::Event;
        let api: Api<Event> = Api::namespaced(self.client.clone(), NAMESPACE);
        let mut events: Vec<Event> = api
            .list(&kube::api::ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        Ok(events
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect())
    }

    /// One line per Pod of the ModelDeployment: its phase and its
    /// container's state, for failure messages.
    pub async fn pod_states(&self, name: &str) -> String {
        let pods = self.pods(name).await.unwrap_or_default();
        let mut out = String::new();
        for pod in pods {
            let status = pod.status.unwrap_or_default();
            let container = status.container_statuses.unwrap_or_default().into_iter().next();
            let state = container.and_then(|c| c.state).map(|s| serde_json::to_string(&s));
            out.push_str(&format!(
                "  {} {}: {}\n",
                pod.metadata.name.unwrap_or_default(),
                status.phase.unwrap_or_default(),
                state.and_then(Result::ok).unwrap_or_default()
            ));
        }
        out
    }

    pub fn operator_log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for op in &self.operators {
            let text = std::fs::read_to_string(self.operator_log(op.name())).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            for line in &all[all.len().saturating_sub(lines)..] {
                out.extend(line.chars().take(400));
                out.push('\n');
            }
        }
        out
    }

    /// The ModelDeployment's Pods that are not being deleted.
    pub async fn pods(&self, name: &str) -> anyhow::Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let selector = format!("versa.dev/model-deployment={name}");
        Ok(pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect())
    }

    /// The loopback addresses of the ModelDeployment's Ready Pods.
    pub async fn ready_ips(&self, name: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
        Ok(self
            .pods(name)
            .await?
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(|p| p.status.as_ref()?.pod_ip.as_ref()?.parse().ok())
            .collect())
    }

    /// Serving Pod UID → container restarts, to prove no Pod restarted or
    /// was replaced.
    pub async fn pod_restarts(
        &self,
        name: &str,
    ) -> anyhow::Result<std::collections::BTreeMap<String, i32>> {
        Ok(self
            .pods(name)
            .await?
            .iter()
            .map(|p| {
                let restarts = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
                (p.metadata.uid.clone().unwrap_or_default(), restarts)
            })
            .collect())
    }

    /// The reload token the operator created for a ModelDeployment.
    pub async fn reload_token(&self, name: &str) -> anyhow::Result<String> {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client.clone(), NAMESPACE);
        let secret = secrets.get(&format!("{name}-reload-token")).await?;
        let bytes = secret.data.and_then(|d| d.get("token").cloned()).context("token")?;
        Ok(String::from_utf8(bytes.0)?)
    }
}

/// Installs the generated CRD and waits until it is Established.
pub async fn install_crd(client: &kube::Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ModelDeployment::crd();
    let name = crd.metadata.name.clone().context("CRD name")?;
    crds.create(&PostParams::default(), &crd).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let crd = crds.get(&name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("CRD {name} never became Established");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What one REST predict answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `x-versa-model-version`.
    pub version: Option<i64>,
    /// `x-versa-model-label`.
    pub label: Option<String>,
}

/// REST predict of zeros on one Pod; `label` or `version` pick the target.
pub async fn predict(
    http: &reqwest::Client,
    ip: Ipv4Addr,
    model: &str,
    target: Option<&str>,
) -> anyhow::Result<Answer> {
    predict_body(http, ip, model, target, ZEROS).await
}

/// The body of [`predict`]: one instance of four zeros.
pub const ZEROS: &str = r#"{"instances": [[0, 0, 0, 0]]}"#;

/// [`predict`] with a REST `:predict` body of the caller's.
pub async fn predict_body(
    http: &reqwest::Client,
    ip: Ipv4Addr,
    model: &str,
    target: Option<&str>,
    body: &'static str,
) -> anyhow::Result<Answer> {
    let path = match target {
        Some(t) => format!("/v1/models/{model}/{t}:predict"),
        None => format!("/v1/models/{model}:predict"),
    };
    let response = http
        .post(format!("http://{ip}:8501{path}"))
        .timeout(Duration::from_secs(5))
        .body(body)
        .send()
        .await?;
    let header = |name: &str| {
        response.headers().get(name).and_then(|v| v.to_str().ok()).map(ToOwned::to_owned)
    };
    Ok(Answer {
        status: response.status().as_u16(),
        version: header("x-versa-model-version").and_then(|v| v.parse().ok()),
        label: header("x-versa-model-label"),
    })
}

/// One status write of a ModelDeployment, as a watch saw it.
#[derive(Debug, Clone)]
pub struct StatusEntry {
    pub at: Instant,
    pub generation: i64,
    /// The first model's phase.
    pub phase: String,
    pub status: versa_crd::ModelDeploymentStatus,
}

/// Every status write of one ModelDeployment, from a watch (each write is
/// an event), kept while the log lives.
#[derive(Debug)]
pub struct StatusLog {
    entries: std::sync::Arc<std::sync::Mutex<Vec<StatusEntry>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusLog {
    pub fn start(env: &VersaEnv, name: &str) -> Self {
        use futures::StreamExt as _;
        use kube::runtime::{WatchStreamExt as _, watcher};
        let entries: std::sync::Arc<std::sync::Mutex<Vec<StatusEntry>>> = Default::default();
        let stream = watcher(
            env.api(),
            watcher::Config::default().fields(&format!("metadata.name={name}")).timeout(20),
        )
        .applied_objects();
        let task = {
            let entries = std::sync::Arc::clone(&entries);
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(Ok(md)) = stream.next().await {
                    let Some(status) = md.status else { continue };
                    let (Some(generation), Some(model)) =
                        (status.observed_generation, status.models.first())
                    else {
                        continue;
                    };
                    let phase = model.phase.clone();
                    let entry = StatusEntry { at: Instant::now(), generation, phase, status };
                    entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(entry);
                }
            })
        };
        Self { entries, task }
    }

    pub fn entries(&self) -> Vec<StatusEntry> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The phases generation `generation` went through, repeats collapsed.
    pub fn phases_of(&self, generation: i64) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in self.entries().into_iter().filter(|e| e.generation == generation) {
            if out.last() != Some(&e.phase) {
                out.push(e.phase);
            }
        }
        out
    }

    /// [`Self::phases_of`] once the log holds `last` for `generation`. The
    /// watch can deliver a status write after a read of the object already
    /// saw it (as `wait_ready` does), so this waits for it, up to 10 s.
    pub async fn phases_through(&self, generation: i64, last: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let phases = self.phases_of(generation);
            if phases.iter().any(|p| p == last) || Instant::now() >= deadline {
                return phases;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// When each phase of `generation` was first seen.
    pub fn phase_times(&self, generation: i64) -> Vec<(String, Instant)> {
        let mut out: Vec<(String, Instant)> = Vec::new();
        for e in self.entries().into_iter().filter(|e| e.generation == generation) {
            if out.last().map(|(p, _)| p) != Some(&e.phase) {
                out.push((e.phase, e.at));
            }
        }
        out
    }
}

impl Drop for StatusLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Asserts `phases` visits `expected` in this order and never goes back.
pub fn assert_phases_in_order(phases: &[String], expected: &[&str]) {
    let order = [
        "Stopped",
        "LoadingVersions",
        "MovingLabels",
        "ShiftingTraffic",
        "UnloadingVersions",
        "Ready",
    ];
    let rank = |p: &str| order.iter().position(|o| *o == p).expect("known phase");
    for pair in phases.windows(2) {
        assert!(rank(&pair[0]) < rank(&pair[1]), "phases went back: {phases:?}");
    }
    for e in expected {
        assert!(phases.iter().any(|p| p == e), "phase {e} never seen: {phases:?}");
    }
}

/// The Python of the chart tools' environment (`make pyenv`):
/// `$VERSA_VENV/bin/python`, by default `~/.cache/versa/venv/bin/python`.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var("VERSA_VENV").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/versa/venv")
    });
    venv.join("bin/python")
}

/// Test logging from `RUST_LOG` (default: warnings; the API client's own
/// errors off, since tests poll through expected failures).
pub fn init_test_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .with_test_writer()
        .try_init();
}
