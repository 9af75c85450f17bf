//! `ProcessKubelet`: a stand-in for kubelet + container runtime that runs
//! Pods from OCI images as local processes, each inside its image's rootfs
//! (a private mount namespace, an overlay over the unpacked layers, its
//! volumes bind-mounted, `chroot`, the image's or the Pod's user), on a
//! loopback address of the Pod's own.
//!
//! Level-triggered: a reflector keeps every Pod of the cluster in memory and,
//! a few times a second, each Pod is brought to where it should be — bound to
//! this Node, its image pulled from the image store (an OCI layout: see
//! [`images`]), its process started, restarted after a crash (per
//! `restartPolicy`), probed for readiness, reported in `status`, and stopped
//! (SIGTERM, grace period, SIGKILL) when the Pod is deleted. One container
//! per Pod (the first); no init containers.

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde_json::json;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod container;
mod files;
pub mod images;
mod runtime;
mod sandbox;
mod status;
mod sync;
mod unpack;
use sync::{Running, State, lock, reconcile_all, subnet};

/// How often a running Pod's configMap and secret volumes are brought up to
/// date with their objects (a real kubelet: its sync period, about a minute).
const VOLUME_REFRESH: Duration = Duration::from_secs(1);

/// How long a failed pull shows `ErrImagePull` before `ImagePullBackOff`.
const ERR_IMAGE_PULL_SHOWN: Duration = Duration::from_secs(1);

/// The one thing a Pod network namespace would do instead: every Pod here
/// shares the host's network namespace, each on its own loopback address, so
/// a process must bind its Pod IP rather than `0.0.0.0`. For images of
/// `repository` (the last path segment of the image name, e.g.
/// `versa-server` for `ghcr.io/versa-dev/versa-server:0.1.0`), the address
/// `flag` the container is given (else `default`, the binary's own default)
/// is read: a wildcard host becomes the Pod IP, its port kept, in a flag
/// appended to the arguments (later flags win in both binaries' parsers,
/// `args_override_self`); any other host fails the start, as it would leave
/// the process unreachable from other Pods and probes on a real node.
#[derive(Debug, Clone)]
pub struct LoopbackBindArgs {
    pub repository: String,
    /// e.g. `--bind_address`.
    pub flag: String,
    /// The value when the flag is absent, e.g. `0.0.0.0` or `0.0.0.0:8080`.
    pub default: String,
}

impl LoopbackBindArgs {
    /// Versa's two images.
    pub fn versa() -> Vec<Self> {
        let entry = |repository: &str, flag: &str, default: &str| Self {
            repository: repository.into(),
            flag: flag.into(),
            default: default.into(),
        };
        vec![
            entry("versa-server", "--bind_address", "0.0.0.0"),
            entry("versa-operator", "--metrics_address", "0.0.0.0:8080"),
        ]
    }
}

/// How processes reach the API server (for service-account credentials).
#[derive(Debug, Clone)]
pub struct ApiAccess {
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    pub ca_pem: Vec<u8>,
}

impl ApiAccess {
    /// Host and port of [`ApiAccess::server`]: `KUBERNETES_SERVICE_HOST`/`_PORT`.
    fn host_port(&self) -> Option<(String, String)> {
        let rest = self.server.strip_prefix("https://")?.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':')?;
        Some((host.to_owned(), port.to_owned()))
    }
}

#[derive(Debug, Clone)]
pub struct KubeletOptions {
    pub node_name: String,
    /// Where volumes are materialised, rootfs unpacked and process logs written.
    pub workdir: PathBuf,
    /// The OCI image layout Pods' images come from ([`images::default_store`]).
    pub image_store: PathBuf,
    /// See [`LoopbackBindArgs`].
    pub loopback_bind_args: Vec<LoopbackBindArgs>,
    /// Run the build tree's binary named like the image's repository on the
    /// host instead of the image (quick local loops; `VERSA_KUBELET_BUILD_TREE=1`).
    pub build_tree_binaries: bool,
    /// First and longest wait between pulls of an image that failed
    /// (kubelet: 10 s doubling to 300 s).
    pub image_pull_backoff: (Duration, Duration),
    /// How often each Pod is reconciled (and probed).
    pub interval: Duration,
    /// Environment given to every process, before the Pod's own `env`.
    pub extra_env: Vec<(String, String)>,
    /// The API server, for in-cluster credentials.
    pub api: Option<ApiAccess>,
}

impl KubeletOptions {
    /// Defaults: node `process-kubelet`, images from [`images::default_store`],
    /// Versa's [`LoopbackBindArgs`], kubelet's pull back-off, build-tree
    /// binaries if `VERSA_KUBELET_BUILD_TREE=1`.
    pub fn new(workdir: PathBuf) -> Self {
        Self {
            node_name: "process-kubelet".into(),
            workdir,
            image_store: images::default_store(),
            loopback_bind_args: LoopbackBindArgs::versa(),
            build_tree_binaries: std::env::var("VERSA_KUBELET_BUILD_TREE").is_ok_and(|v| v == "1"),
            image_pull_backoff: (Duration::from_secs(10), Duration::from_secs(300)),
            interval: Duration::from_millis(200),
            extra_env: Vec::new(),
            api: None,
        }
    }
}

/// Runs Pods as local processes. Dropping it stops every process it started.
#[derive(Debug)]
pub struct ProcessKubelet {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    pub node_name: String,
}

impl Drop for ProcessKubelet {
    fn drop(&mut self) {
        self.task.abort();
        let running: Vec<Running> = lock(&self.state).running.drain().map(|(_, r)| r).collect();
        drop(running); // each ChildProcess stops on drop
    }
}

impl ProcessKubelet {
    /// Registers the Node and starts reconciling Pods.
    pub async fn start(client: kube::Client, options: KubeletOptions) -> anyhow::Result<Self> {
        if !options.build_tree_binaries {
            can_run_images(&options.image_store)?;
        }
        std::fs::create_dir_all(options.workdir.join("logs"))?;
        register_node(&client, &options.node_name).await?;
        let state =
            Arc::new(Mutex::new(State { next_ip: 2, subnet: subnet(), ..State::default() }));
        let pods: Api<Pod> = Api::all(client.clone());
        let (reader, writer) = reflector::store();
        // Watches end server-side within the client's read timeout.
        let stream = watcher(pods, watcher::Config::default().timeout(20))
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        let node_name = options.node_name.clone();
        let task = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                let mut tick = tokio::time::interval(options.interval);
                loop {
                    tokio::select! {
                        event = stream.next() => if event.is_none() { return },
                        _ = tick.tick() => {
                            let pods = reader.state();
                            reconcile_all(&client, &options, &state, &pods).await;
                        }
                    }
                }
            })
        };
        Ok(Self { state, task, node_name })
    }

    /// Loopback address of a running Pod.
    pub fn pod_ip(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        lock(&self.state)
            .running
            .values()
            .find(|r| r.pod == name && r.namespace == namespace)
            .map(|r| r.ip)
    }

    /// Process id of a Pod's running container (as the host sees it).
    pub fn pod_pid(&self, namespace: &str, name: &str) -> Option<u32> {
        lock(&self.state)
            .running
            .values()
            .find(|r| r.pod == name && r.namespace == namespace)
            .and_then(|r| r.process.as_ref().map(crate::ChildProcess::id))
    }

    /// Kills a Pod's process without telling Kubernetes (a crash).
    pub fn crash(&self, namespace: &str, name: &str) -> bool {
        let state = lock(&self.state);
        let Some(r) = state.running.values().find(|r| r.pod == name && r.namespace == namespace)
        else {
            return false;
        };
        match &r.process {
            Some(p) => {
                crate::process::signal(p.id(), "KILL");
                true
            }
            None => false,
        }
    }
}

/// Running images takes root (mount namespaces, chroot, setuid) and a
/// filled image store: said at once, rather than as every Pod failing.
fn can_run_images(store: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the process's effective user.
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if euid != 0 {
        anyhow::bail!(
            "the process kubelet runs Pods from images as root only (mount namespace, chroot, \
             setuid); euid is {euid}. Run as root, or set VERSA_KUBELET_BUILD_TREE=1 to run \
             the build tree's binaries instead"
        );
    }
    if !store.join("index.json").is_file() {
        anyhow::bail!(
            "no image store at {}: run `make test-images` (or set VERSA_IMAGE_STORE)",
            store.display()
        );
    }
    Ok(())
}

async fn register_node(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(name).await?.is_none() {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "versa.dev/process-kubelet": "true"}},
        }))?;
        nodes.create(&PostParams::default(), &node).await.context("registering the Node")?;
    }
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "ProcessKubeletReady", "message": "process kubelet (test stand-in) is running",
                        "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        "capacity": {"cpu": "2", "memory": "8Gi", "pods": "250"},
        "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "250"},
    }});
    nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
