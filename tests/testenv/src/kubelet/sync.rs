//! One pass over one Pod: bind it, start or restart its container (with
//! kubelet's back-off after failed pulls), stop it when the Pod goes, keep
//! its volumes fresh, probe it and report its status.

use super::runtime::{self, StartError, Target};
use super::status::{Observed, Waiting, pod_status, probe, warn};
use super::{ERR_IMAGE_PULL_SHOWN, KubeletOptions, VOLUME_REFRESH, files, now};
use crate::process::ChildProcess;
use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One Pod's container.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) pod: String,
    pub(super) namespace: String,
    pub(super) ip: Ipv4Addr,
    pub(super) process: Option<ChildProcess>,
    restarts: i32,
    started_at: String,
    /// The container ran at least once.
    ever_started: bool,
    /// Why it is not running, when a start failed.
    waiting: Option<Waiting>,
    image_id: String,
    /// Failed pulls in a row, and when the last one failed.
    pull_failures: u32,
    pull_failed_at: Option<Instant>,
    /// Starts so far (each gets a fresh writable layer).
    runs: u32,
    /// The last status sent, to patch only on change.
    reported: Option<serde_json::Value>,
    terminating: bool,
    next_start: Option<Instant>,
    finished: Option<i32>,
    /// When its configMap and secret volumes were last brought up to date.
    volumes_refreshed: Instant,
}

#[derive(Debug, Default)]
pub(super) struct State {
    /// By Pod UID.
    pub(super) running: HashMap<String, Running>,
    /// Second and third octets of this kubelet's 127.a.b.0/24: unique per
    /// process and instance, so tests running side by side never share an
    /// address (every Pod uses the same container ports).
    pub(super) subnet: (u8, u8),
    pub(super) next_ip: u8,
}

/// A /24 inside 127.0.0.0/8 for one kubelet: from the process id and a
/// per-process counter.
pub(super) fn subnet() -> (u8, u8) {
    static INSTANCES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let instance = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let n = (std::process::id().wrapping_mul(31).wrapping_add(instance.wrapping_mul(7919)))
        % (255 * 256);
    // Skip 127.0.0.0/24, where tests bind 127.0.0.1.
    let n = n + 1;
    let [_, _, a, b] = n.to_be_bytes();
    (a, b)
}

pub(super) fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) async fn reconcile_all(
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
    let spec = pod.spec.clone().unwrap_or_default();
    let Some(container) = spec.containers.first() else { return Ok(()) };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);

    match spec.node_name.as_deref() {
        None if pod.metadata.deletion_timestamp.is_none() => {
            return bind(&api, &name, &namespace, &options.node_name).await;
        }
        Some(node) if node == options.node_name => {}
        _ => return Ok(()),
    }
    if pod.metadata.deletion_timestamp.is_some() {
        stop(state, api, pod, uid);
        return Ok(());
    }

    let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let (needs_start, ip, run) = {
        let mut s = lock(state);
        if !s.running.contains_key(uid) {
            let ip = allocate_ip(&mut s);
            s.running.insert(uid.to_owned(), fresh(&name, &namespace, ip));
        }
        let r = s.running.get_mut(uid).expect("inserted");
        observe_exit(r, &restart_policy);
        let due = r.process.is_none()
            && r.finished.is_none()
            && r.next_start.is_some_and(|t| Instant::now() >= t);
        (due, r.ip, r.runs)
    };
    if needs_start {
        let target = Target { pod, container, namespace: &namespace, name: &name, ip, run };
        let outcome = runtime::start(client, options, &target).await;
        record_start(client, options, state, pod, uid, outcome).await;
    }
    back_off_pull(client, options, state, pod, uid).await;

    let (alive, refresh_due) = {
        let mut s = lock(state);
        let r = s.running.get_mut(uid).expect("present");
        let alive = r.process.is_some();
        let due = alive && r.volumes_refreshed.elapsed() >= VOLUME_REFRESH;
        if due {
            r.volumes_refreshed = Instant::now();
        }
        (alive, due)
    };
    if refresh_due {
        files::refresh_volumes(client, options, pod, &namespace).await.context("volume refresh")?;
    }
    let ready = alive && probe(container, ip).await;
    let status = {
        let s = lock(state);
        let r = s.running.get(uid).expect("present");
        let status = pod_status(&Observed {
            container,
            ip,
            alive,
            ready,
            restarts: r.restarts,
            started_at: &r.started_at,
            finished: r.finished,
            ever_started: r.ever_started,
            waiting: r.waiting.as_ref(),
            image_id: &r.image_id,
        });
        (r.reported.as_ref() != Some(&status)).then_some(status)
    };
    if let Some(status) = status {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .context("status")?;
        if let Some(r) = lock(state).running.get_mut(uid) {
            r.reported = Some(status);
        }
    }
    Ok(())
}

fn fresh(name: &str, namespace: &str, ip: Ipv4Addr) -> Running {
    Running {
        pod: name.to_owned(),
        namespace: namespace.to_owned(),
        ip,
        process: None,
        restarts: 0,
        started_at: now(),
        ever_started: false,
        waiting: None,
        image_id: String::new(),
        pull_failures: 0,
        pull_failed_at: None,
        runs: 0,
        reported: None,
        terminating: false,
        next_start: Some(Instant::now()),
        finished: None,
        volumes_refreshed: Instant::now(),
    }
}

async fn bind(api: &Api<Pod>, name: &str, namespace: &str, node: &str) -> anyhow::Result<()> {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let bound = api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await;
    match bound {
        // Bound already: this pass saw the Pod before its last update.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        other => other.map(drop).context("binding"),
    }
}

/// A deleted Pod: SIGTERM, its grace period, SIGKILL; then the Pod object goes.
fn stop(state: &Arc<Mutex<State>>, api: Api<Pod>, pod: &Pod, uid: &str) {
    let grace =
        Duration::from_secs(pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64);
    let taken = {
        let mut s = lock(state);
        match s.running.get_mut(uid) {
            Some(r) if r.terminating => return,
            Some(r) => {
                r.terminating = true;
                r.process.take()
            }
            None => None,
        }
    };
    let (name, uid, state) =
        (pod.metadata.name.clone().unwrap_or_default(), uid.to_owned(), Arc::clone(state));
    tokio::spawn(async move {
        if let Some(mut process) = taken {
            let _ = tokio::task::spawn_blocking(move || process.stop(grace)).await;
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
            ..DeleteParams::default()
        };
        let _ = api.delete(&name, &params).await;
        lock(&state).running.remove(&uid);
    });
}

/// A process that ended: restart per policy, after a short back-off.
fn observe_exit(r: &mut Running, restart_policy: &str) {
    let Some(status) = r.process.as_mut().and_then(ChildProcess::exited) else { return };
    r.process = None;
    let code = status.code().unwrap_or(137);
    let restart = match restart_policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    };
    if restart {
        r.restarts += 1;
        r.next_start = Some(Instant::now() + Duration::from_millis(500));
    } else {
        r.finished = Some(code);
    }
}

/// Records a start's outcome; a failure waits (pulls: kubelet's doubling
/// back-off) and is told in an Event when it is new.
async fn record_start(
    client: &kube::Client,
    options: &KubeletOptions,
    state: &Arc<Mutex<State>>,
    pod: &Pod,
    uid: &str,
    outcome: Result<runtime::Started, StartError>,
) {
    let event = {
        let mut s = lock(state);
        let Some(r) = s.running.get_mut(uid) else { return };
        match outcome {
            Ok(started) => {
                r.process = Some(started.process);
                r.image_id = started.image_id;
                r.runs += 1;
                r.next_start = None;
                r.started_at = now();
                r.ever_started = true;
                r.waiting = None;
                r.pull_failures = 0;
                None
            }
            Err(e) => {
                let waiting = e.waiting();
                let delay = match &e {
                    StartError::Pull(_) => {
                        r.pull_failures += 1;
                        r.pull_failed_at = Some(Instant::now());
                        pull_backoff(options.image_pull_backoff, r.pull_failures)
                    }
                    _ => Duration::from_secs(1),
                };
                r.next_start = Some(Instant::now() + delay);
                let new = r.waiting.as_ref().is_none_or(|w| w.message != waiting.message)
                    || matches!(e, StartError::Pull(_));
                r.waiting = Some(waiting.clone());
                new.then_some(waiting)
            }
        }
    };
    if let Some(w) = event {
        warn(client, pod, &options.node_name, "Failed", &w.message).await;
        warn(client, pod, &options.node_name, "Failed", &format!("Error: {}", w.reason)).await;
    }
}

/// A failed pull shows `ErrImagePull` for a moment, then `ImagePullBackOff`
/// until the next attempt.
async fn back_off_pull(
    client: &kube::Client,
    options: &KubeletOptions,
    state: &Arc<Mutex<State>>,
    pod: &Pod,
    uid: &str,
) {
    let image = pod.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone());
    let message = format!("Back-off pulling image \"{}\"", image.unwrap_or_default());
    let backing_off = {
        let mut s = lock(state);
        let Some(r) = s.running.get_mut(uid) else { return };
        let shown = r.pull_failed_at.is_some_and(|t| t.elapsed() >= ERR_IMAGE_PULL_SHOWN);
        let due = shown && r.waiting.as_ref().is_some_and(|w| w.reason == "ErrImagePull");
        if due {
            r.waiting = Some(Waiting { reason: "ImagePullBackOff", message: message.clone() });
        }
        due
    };
    if backing_off {
        warn(client, pod, &options.node_name, "BackOff", &message).await;
    }
}

/// kubelet's image back-off: `initial`, doubling per failure, at most `max`.
fn pull_backoff((initial, max): (Duration, Duration), failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    initial.saturating_mul(factor).min(max)
}

pub(super) fn allocate_ip(state: &mut State) -> Ipv4Addr {
    let in_use: Vec<Ipv4Addr> = state.running.values().map(|r| r.ip).collect();
    loop {
        let candidate = Ipv4Addr::new(127, state.subnet.0, state.subnet.1, state.next_ip);
        state.next_ip = if state.next_ip >= 254 { 2 } else { state.next_ip + 1 };
        if !in_use.contains(&candidate) {
            return candidate;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn pulls_back_off_like_kubelet() {
        let kubelet = (Duration::from_secs(10), Duration::from_secs(300));
        let waits: Vec<u64> = (1..=7).map(|n| pull_backoff(kubelet, n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
    }
}
