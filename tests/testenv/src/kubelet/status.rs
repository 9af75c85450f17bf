//! What the kubelet reports: the Pod's status (phase, conditions, the
//! container's state with kubelet's reasons), readiness probes, and Events.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Why the container is not running: a kubelet reason and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Waiting {
    pub(super) reason: &'static str,
    pub(super) message: String,
}

/// What the status is computed from.
#[derive(Debug)]
pub(super) struct Observed<'a> {
    pub(super) container: &'a Container,
    pub(super) ip: Ipv4Addr,
    pub(super) alive: bool,
    pub(super) ready: bool,
    pub(super) restarts: i32,
    pub(super) started_at: &'a str,
    pub(super) finished: Option<i32>,
    /// The container ran at least once (else the Pod is Pending).
    pub(super) ever_started: bool,
    pub(super) waiting: Option<&'a Waiting>,
    pub(super) image_id: &'a str,
}

pub(super) fn pod_status(o: &Observed<'_>) -> serde_json::Value {
    let flag = |b: bool| if b { "True" } else { "False" };
    let phase = match o.finished {
        Some(0) => "Succeeded",
        Some(_) => "Failed",
        None if o.ever_started => "Running",
        None => "Pending",
    };
    let state = if o.alive {
        json!({"running": {"startedAt": o.started_at}})
    } else if let Some(code) = o.finished {
        json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}})
    } else if let Some(w) = o.waiting {
        json!({"waiting": {"reason": w.reason, "message": w.message}})
    } else if o.ever_started {
        json!({"waiting": {"reason": "CrashLoopBackOff"}})
    } else {
        json!({"waiting": {"reason": "ContainerCreating"}})
    };
    json!({
        "phase": phase,
        "hostIP": "127.0.0.1",
        "podIP": o.ip.to_string(),
        "podIPs": [{"ip": o.ip.to_string()}],
        "startTime": o.started_at,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": flag(o.ready)},
            {"type": "Ready", "status": flag(o.ready)},
        ],
        "containerStatuses": [{
            "name": o.container.name,
            "image": o.container.image,
            "imageID": o.image_id,
            "ready": o.ready,
            "started": o.alive,
            "restartCount": o.restarts,
            "state": state,
        }],
    })
}

/// The readiness probe (HTTP GET on the Pod's address); no probe means ready.
pub(super) async fn probe(container: &Container, ip: Ipv4Addr) -> bool {
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

/// A Warning Event about the Pod's container, from this kubelet (best effort).
pub(super) async fn warn(
    client: &kube::Client,
    pod: &Pod,
    node: &str,
    reason: &str,
    message: &str,
) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let container = pod.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.clone());
    let now = k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{unique:x}"), "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod", "name": name, "namespace": namespace,
            "uid": pod.metadata.uid,
            "fieldPath": container.map(|c| format!("spec.containers{{{c}}}")),
        },
        "type": "Warning", "reason": reason, "message": message,
        "source": {"component": "kubelet", "host": node},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    let Ok(event) = serde_json::from_value::<k8s_openapi::api::core::v1::Event>(event) else {
        return;
    };
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(client.clone(), &namespace);
    if let Err(e) = events.create(&PostParams::default(), &event).await {
        tracing::debug!("process kubelet: event not recorded: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_that_never_started_leaves_the_pod_pending_with_its_reason() {
        let container: Container =
            serde_json::from_value(json!({"name": "c", "image": "app:1"})).expect("container");
        let waiting =
            Waiting { reason: "ErrImagePull", message: "app:1 is not in the store".into() };
        let status = pod_status(&Observed {
            container: &container,
            ip: Ipv4Addr::new(127, 1, 1, 2),
            alive: false,
            ready: false,
            restarts: 0,
            started_at: "t",
            finished: None,
            ever_started: false,
            waiting: Some(&waiting),
            image_id: "",
        });
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["conditions"][3], json!({"type": "Ready", "status": "False"}));
        let state = &status["containerStatuses"][0]["state"]["waiting"];
        assert_eq!(state["reason"], "ErrImagePull");
        assert_eq!(state["message"], "app:1 is not in the store");
    }
}
