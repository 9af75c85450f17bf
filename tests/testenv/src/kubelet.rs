//! `ProcessKubelet`: a stand-in for kubelet + container runtime that runs the
//! real process an image maps to, on a loopback address of the Pod's own.
//!
//! Level-triggered: a reflector keeps every Pod of the cluster in memory and,
//! a few times a second, each Pod is brought to where it should be — bound to
//! this Node, its process started, restarted after a crash (per
//! `restartPolicy`), probed for readiness, reported in `status`, and stopped
//! (SIGTERM, grace period, SIGKILL) when the Pod is deleted.

use crate::process::ChildProcess;
use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod files;
use files::{refresh_volumes, rewrite, service_account_kubeconfig, volumes};

/// How often a running Pod's configMap and secret volumes are brought up to
/// date with their objects (a real kubelet: its sync period, about a minute).
const VOLUME_REFRESH: Duration = Duration::from_secs(1);

/// An image this kubelet can "run": the binary that stands for it.
#[derive(Debug, Clone)]
pub struct ImageMapping {
    /// Repository name matched against a Pod's image with tag and registry
    /// ignored: `versa-server` matches `ghcr.io/versa/versa-server:0.1`.
    pub image: String,
    pub binary: PathBuf,
    /// Arguments appended to the Pod's; `{pod_ip}` is replaced with the Pod's address.
    pub extra_args: Vec<String>,
    /// Give the process in-cluster credentials of the Pod's ServiceAccount:
    /// a token from the TokenRequest API in a kubeconfig (`KUBECONFIG`),
    /// which stands in for the mounted service-account token.
    pub service_account_credentials: bool,
}

/// How processes reach the API server (for service-account credentials).
#[derive(Debug, Clone)]
pub struct ApiAccess {
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    pub ca_pem: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct KubeletOptions {
    pub node_name: String,
    pub images: Vec<ImageMapping>,
    /// Where volumes are materialised and process logs written.
    pub workdir: PathBuf,
    /// How often each Pod is reconciled (and probed).
    pub interval: Duration,
    /// Environment given to every process (e.g. in-cluster API settings).
    pub extra_env: Vec<(String, String)>,
    /// The API server, for images with `service_account_credentials`.
    pub api: Option<ApiAccess>,
}

/// One Pod's process.
#[derive(Debug)]
struct Running {
    pod: String,
    namespace: String,
    ip: Ipv4Addr,
    process: Option<ChildProcess>,
    restarts: i32,
    ready: bool,
    started_at: String,
    /// The last status sent, to patch only on change.
    reported: Option<serde_json::Value>,
    terminating: bool,
    next_restart: Option<Instant>,
    finished: Option<i32>,
    /// When its configMap and secret volumes were last brought up to date.
    volumes_refreshed: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// By Pod UID.
    running: HashMap<String, Running>,
    /// Second and third octets of this kubelet's 127.a.b.0/24: unique per
    /// process and instance, so tests running side by side never share an
    /// address (every Pod uses the same container ports).
    subnet: (u8, u8),
    next_ip: u8,
}

/// A /24 inside 127.0.0.0/8 for one kubelet: from the process id and a
/// per-process counter.
fn subnet() -> (u8, u8) {
    static INSTANCES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let instance = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let n = (std::process::id().wrapping_mul(31).wrapping_add(instance.wrapping_mul(7919)))
        % (255 * 256);
    // Skip 127.0.0.0/24, where tests bind 127.0.0.1.
    let n = n + 1;
    let [_, _, a, b] = n.to_be_bytes();
    (a, b)
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
        let running: Vec<Running> = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .running
            .drain()
            .map(|(_, r)| r)
            .collect();
        drop(running); // each ChildProcess stops on drop
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ProcessKubelet {
    /// Registers the Node and starts reconciling Pods.
    pub async fn start(client: kube::Client, options: KubeletOptions) -> anyhow::Result<Self> {
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

fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

fn mapping<'a>(options: &'a KubeletOptions, pod: &Pod) -> Option<(&'a ImageMapping, Container)> {
    let spec = pod.spec.as_ref()?;
    spec.containers.iter().find_map(|c| {
        let image = c.image.as_deref()?;
        options.images.iter().find(|m| repository(image) == m.image).map(|m| (m, c.clone()))
    })
}

async fn reconcile_all(
    client: &kube::Client,
    options: &KubeletOptions,
    state: &Arc<Mutex<State>>,
    pods: &[Arc<Pod>],
) {
    let mut seen = Vec::new();
    for pod in pods {
        let Some(uid) = pod.metadata.uid.clone() else { continue };
        seen.push(uid.clone());
        if let Err(e) = reconcile(client, options, state, pod, &uid).await {
            tracing::warn!(pod = ?pod.metadata.name, "process kubelet: {e:#}");
        }
    }
    // Pods that vanished (deleted without grace): stop their processes.
    let gone: Vec<Running> = {
        let mut s = lock(state);
        let ids: Vec<String> = s.running.keys().filter(|id| !seen.contains(id)).cloned().collect();
        ids.into_iter().filter_map(|id| s.running.remove(&id)).collect()
    };
    if !gone.is_empty() {
        tokio::task::spawn_blocking(move || drop(gone));
    }
}

async fn reconcile(
    client: &kube::Client,
    options: &KubeletOptions,
    state: &Arc<Mutex<State>>,
    pod: &Pod,
    uid: &str,
) -> anyhow::Result<()> {
    let Some((image, container)) = mapping(options, pod) else { return Ok(()) };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let spec = pod.spec.clone().unwrap_or_default();

    match spec.node_name.as_deref() {
        None if pod.metadata.deletion_timestamp.is_none() => {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": options.node_name},
            });
            let bound = api
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await;
            match bound {
                // Bound already: this pass saw the Pod before its last update.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                other => {
                    other.context("binding")?;
                }
            }
            return Ok(());
        }
        Some(node) if node == options.node_name => {}
        _ => return Ok(()),
    }

    if pod.metadata.deletion_timestamp.is_some() {
        let grace = Duration::from_secs(
            pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64,
        );
        let taken = {
            let mut s = lock(state);
            match s.running.get_mut(uid) {
                Some(r) if r.terminating => return Ok(()),
                Some(r) => {
                    r.terminating = true;
                    r.process.take()
                }
                None => None,
            }
        };
        let (api, name, uid_owned, state) =
            (api.clone(), name.clone(), uid.to_owned(), Arc::clone(state));
        tokio::spawn(async move {
            if let Some(mut process) = taken {
                let _ = tokio::task::spawn_blocking(move || process.stop(grace)).await;
            }
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid_owned.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let _ = api.delete(&name, &params).await;
            lock(&state).running.remove(&uid_owned);
        });
        return Ok(());
    }

    let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let needs_start = {
        let mut s = lock(state);
        if !s.running.contains_key(uid) {
            let ip = allocate_ip(&mut s);
            s.running.insert(
                uid.to_owned(),
                Running {
                    pod: name.clone(),
                    namespace: namespace.clone(),
                    ip,
                    process: None,
                    restarts: 0,
                    ready: false,
                    started_at: now(),
                    reported: None,
                    terminating: false,
                    next_restart: Some(Instant::now()),
                    finished: None,
                    volumes_refreshed: Instant::now(),
                },
            );
        }
        let r = s.running.get_mut(uid).expect("inserted");
        // A crashed process: restart per policy, after a short back-off.
        if let Some(p) = r.process.as_mut()
            && let Some(status) = p.exited()
        {
            r.process = None;
            r.ready = false;
            let code = status.code().unwrap_or(137);
            let restart = match restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            if restart {
                r.restarts += 1;
                r.next_restart = Some(Instant::now() + Duration::from_millis(500));
            } else {
                r.finished = Some(code);
            }
        }
        r.process.is_none()
            && r.finished.is_none()
            && r.next_restart.is_some_and(|t| Instant::now() >= t)
    };

    if needs_start {
        let ip = lock(state).running.get(uid).map(|r| r.ip).expect("allocated");
        let process =
            start_process(client, options, image, &container, pod, &namespace, &name, ip).await?;
        let mut s = lock(state);
        if let Some(r) = s.running.get_mut(uid) {
            r.process = Some(process);
            r.next_restart = None;
            r.started_at = now();
        }
    }

    let (ip, alive, restarts, started_at, finished) = {
        let s = lock(state);
        let r = s.running.get(uid).expect("present");
        (r.ip, r.process.is_some(), r.restarts, r.started_at.clone(), r.finished)
    };
    let refresh_due = {
        let mut s = lock(state);
        let r = s.running.get_mut(uid).expect("present");
        let due = alive && r.volumes_refreshed.elapsed() >= VOLUME_REFRESH;
        if due {
            r.volumes_refreshed = Instant::now();
        }
        due
    };
    if refresh_due {
        refresh_volumes(client, options, pod, &namespace).await.context("volume refresh")?;
    }
    let ready = alive && probe(&container, ip).await;
    let status = pod_status(&container, ip, alive, ready, restarts, &started_at, finished);
    let changed = {
        let mut s = lock(state);
        let r = s.running.get_mut(uid).expect("present");
        r.ready = ready;
        let changed = r.reported.as_ref() != Some(&status);
        if changed {
            r.reported = Some(status.clone());
        }
        changed
    };
    if changed {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .context("status")?;
    }
    Ok(())
}

fn allocate_ip(state: &mut State) -> Ipv4Addr {
    let in_use: Vec<Ipv4Addr> = state.running.values().map(|r| r.ip).collect();
    loop {
        let candidate = Ipv4Addr::new(127, state.subnet.0, state.subnet.1, state.next_ip);
        state.next_ip = if state.next_ip >= 254 { 2 } else { state.next_ip + 1 };
        if !in_use.contains(&candidate) {
            return candidate;
        }
    }
}

fn pod_status(
    container: &Container,
    ip: Ipv4Addr,
    alive: bool,
    ready: bool,
    restarts: i32,
    started_at: &str,
    finished: Option<i32>,
) -> serde_json::Value {
    let flag = |b: bool| if b { "True" } else { "False" };
    let phase = match finished {
        Some(0) => "Succeeded",
        Some(_) => "Failed",
        None => "Running",
    };
    let state = if alive {
        json!({"running": {"startedAt": started_at}})
    } else if let Some(code) = finished {
        json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}})
    } else {
        json!({"waiting": {"reason": "CrashLoopBackOff"}})
    };
    json!({
        "phase": phase,
        "hostIP": "127.0.0.1",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "startTime": started_at,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": flag(ready)},
            {"type": "Ready", "status": flag(ready)},
        ],
        "containerStatuses": [{
            "name": container.name,
            "image": container.image,
            "imageID": "",
            "ready": ready,
            "started": alive,
            "restartCount": restarts,
            "state": state,
        }],
    })
}

/// The readiness probe (HTTP GET on the Pod's address); no probe means ready.
async fn probe(container: &Container, ip: Ipv4Addr) -> bool {
    let Some(http) = container.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()) else {
        return true;
    };
    let port = match &http.port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    };
    let Some(port) = port else { return false };
    let path = http.path.clone().unwrap_or_else(|| "/".into());
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        let code: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt).await.ok().flatten().unwrap_or(false)
}

#[allow(clippy::too_many_arguments)]
async fn start_process(
    client: &kube::Client,
    options: &KubeletOptions,
    image: &ImageMapping,
    container: &Container,
    pod: &Pod,
    namespace: &str,
    name: &str,
    ip: Ipv4Addr,
) -> anyhow::Result<ChildProcess> {
    let mounts = volumes(client, options, pod, container, namespace).await?;
    let mut args: Vec<String> = container.command.iter().flatten().skip(1).cloned().collect();
    args.extend(container.args.iter().flatten().cloned());
    let mut args: Vec<String> = args.iter().map(|a| rewrite(a, &mounts)).collect();
    args.extend(image.extra_args.iter().map(|a| a.replace("{pod_ip}", &ip.to_string())));
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => rewrite(v, &mounts),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("status.podIP") => ip.to_string(),
                Some("metadata.name") => name.to_owned(),
                Some("metadata.namespace") => namespace.to_owned(),
                _ => continue,
            },
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    env.insert("POD_IP".into(), ip.to_string());
    env.insert("POD_NAME".into(), name.to_owned());
    env.insert("POD_NAMESPACE".into(), namespace.to_owned());
    for (k, v) in &options.extra_env {
        env.insert(k.clone(), v.clone());
    }
    if image.service_account_credentials {
        let kubeconfig = service_account_kubeconfig(client, options, pod, namespace).await?;
        env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
    }
    let mut command = Command::new(&image.binary);
    command.args(&args).envs(&env).env("NO_COLOR", "1");
    let log = options.workdir.join("logs").join(format!("{namespace}_{name}.log"));
    tracing::info!(pod = name, %ip, ?args, "process kubelet: starting {}", image.binary.display());
    Ok(ChildProcess::spawn(name, command, &log)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_match_without_registry_and_tag() {
        assert_eq!(repository("ghcr.io/versa/versa-server:0.1.0"), "versa-server");
        assert_eq!(repository("versa-server"), "versa-server");
        assert_eq!(repository("localhost:5000/versa-server@sha256:abc"), "versa-server");
    }

    #[test]
    fn addresses_are_unique_while_in_use() {
        let mut state = State { next_ip: 254, subnet: (3, 4), ..State::default() };
        let a = allocate_ip(&mut state);
        let b = allocate_ip(&mut state);
        assert_eq!((a, b), (Ipv4Addr::new(127, 3, 4, 254), Ipv4Addr::new(127, 3, 4, 2)));
        let (x, y) = (subnet(), subnet());
        assert_ne!(x, y, "two kubelets of one process get different subnets");
        assert_ne!(x, (0, 0));
    }
}
