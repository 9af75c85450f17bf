//! Pods run from Versa's images by the process kubelet, from the image
//! store `make images` fills — first the versa-server image on its own, as
//! a TensorFlow Serving user runs `tensorflow/serving`:
//!
//! ```sh
//! docker run -p 8500:8500 -p 8501:8501 \
//!   -v "$PWD/models/versioned:/models/versioned" -e MODEL_NAME=versioned \
//!   ghcr.io/versa-dev/versa-server:0.1.0
//! ```
//!
//! A Pod with no command and no args — only the image's entrypoint, the
//! model mounted under /models and `MODEL_NAME` — run by the process kubelet
//! from the image store. Then what a kubelet reports when it cannot run an
//! image: a missing image (`ErrImagePull`, `ImagePullBackOff`) and a user
//! the Pod's `runAsNonRoot` refuses (`CreateContainerConfigError`); and the
//! Pod's `runAsUser` winning over the image's `USER`.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use std::time::{Duration, Instant};
use versa_testenv::versa::{VersaEnv, init_test_tracing, is_ready};
use versa_testenv::{ClusterOptions, ProcessKubelet, TestCluster};

const SERVER_IMAGE: &str = "ghcr.io/versa-dev/versa-server:0.1.0";

fn pod(name: &str, models: &std::path::Path, extra: serde_json::Value) -> Pod {
    let mut container = serde_json::json!({
        "name": "serving",
        "image": SERVER_IMAGE,
        "env": [{"name": "MODEL_NAME", "value": "versioned"}],
        "volumeMounts": [{"name": "model", "mountPath": "/models/versioned", "readOnly": true}],
    });
    if let (Some(c), Some(e)) = (container.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [container],
            "volumes": [{"name": "model", "hostPath": {"path": models.join("versioned").display().to_string(), "type": "Directory"}}],
        },
    }))
    .expect("pod")
}

async fn running_ip(pods: &Api<Pod>, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod = pods.get(name).await.expect("pod");
        if is_ready(&pod)
            && let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone())
        {
            return ip;
        }
        assert!(Instant::now() < deadline, "{name} never became Ready: {:?}", pod.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the REST port answers (the Pod has no readiness probe).
async fn rest(ip: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = match body {
            Some(b) => http.post(format!("http://{ip}:8501{path}")).body(b.to_owned()),
            None => http.get(format!("http://{ip}:8501{path}")),
        };
        match request.timeout(Duration::from_secs(5)).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                if status == 200 || Instant::now() > deadline {
                    return (status, text);
                }
            }
            Err(e) => assert!(Instant::now() < deadline, "REST on {ip}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_server_image_serves_a_mounted_model_like_tensorflow_servings_image() {
    let f = Fixture::start().await;
    f.create(pod("tf-serving-style", f.models.path(), serde_json::json!({}))).await;
    let ip = running_ip(&f.pods, "tf-serving-style").await;

    // REST on 8501 and gRPC on 8500, the model named by MODEL_NAME.
    let (status, body) = rest(&ip, "/v1/models/versioned", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"version\": \"3\"") || body.contains("\"version\":\"3\""), "{body}");
    let (status, body) =
        rest(&ip, "/v1/models/versioned:predict", Some(r#"{"instances": [[0, 0, 0, 0]]}"#)).await;
    assert_eq!(status, 200, "{body}");
    let version = versa_testenv::serving::grpc_model_version(&ip, "versioned").await;
    assert_eq!(version.expect("gRPC status on 8500"), 3);

    // The process is the image's entrypoint, inside the image's root, as 65532.
    let pid = f.kubelet.pod_pid("default", "tf-serving-style").expect("a process");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(
        argv[..4],
        ["/usr/local/bin/versa-server", "--port=8500", "--rest_api_port=8501", "--model_from_env"],
        "{argv:?}"
    );
    assert_eq!(uid(pid), 65532);
    // Its root is the image's: the binary, and no shell.
    let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    assert!(root.join("usr/local/bin/versa-server").is_file());
    assert!(!root.join("bin/sh").exists(), "a shell in the image root");
    // What a runtime adds: the default devices and /proc.
    use std::os::unix::fs::FileTypeExt as _;
    for device in ["dev/null", "dev/urandom"] {
        let kind = std::fs::metadata(root.join(device)).map(|m| m.file_type().is_char_device());
        assert!(kind.unwrap_or(false), "{device} is no character device");
    }
    assert!(root.join("proc/self/status").is_file(), "no /proc");
    let pod = f.pods.get("tf-serving-style").await.expect("pod");
    let image_id = pod.status.and_then(|s| s.container_statuses).map(|c| c[0].image_id.clone());
    let image_id = image_id.unwrap_or_default();
    assert!(image_id.starts_with("ghcr.io/versa-dev/versa-server@sha256:"), "imageID {image_id:?}");
}

#[tokio::test]
async fn an_image_missing_from_the_store_is_err_image_pull_then_image_pull_back_off() {
    let f = Fixture::start().await;
    let missing = "ghcr.io/versa-dev/versa-server:0.0.0-never-built";
    f.create(pod("missing", f.models.path(), serde_json::json!({"image": missing}))).await;
    let (reason, message) = f.wait_waiting("missing", "ErrImagePull").await;
    assert!(message.contains(missing), "{reason}: {message}");
    let (_, message) = f.wait_waiting("missing", "ImagePullBackOff").await;
    assert!(message.contains(missing), "{message}");
    assert!(f.kubelet.pod_pid("default", "missing").is_none(), "a process without an image");
    let events = Api::<Event>::namespaced(f.client.clone(), "default")
        .list(&ListParams::default().fields("involvedObject.name=missing"))
        .await
        .expect("events");
    let reasons: Vec<_> = events.items.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(
        reasons.iter().any(|r| r == "Failed") && reasons.iter().any(|r| r == "BackOff"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn run_as_non_root_refuses_uid_0_and_run_as_user_overrides_the_images_user() {
    let f = Fixture::start().await;
    let root = serde_json::json!({"securityContext": {"runAsUser": 0, "runAsNonRoot": true}});
    f.create(pod("as-root", f.models.path(), root)).await;
    let (_, message) = f.wait_waiting("as-root", "CreateContainerConfigError").await;
    assert!(message.starts_with("container's runAsUser breaks non-root policy"), "{message}");
    assert!(f.kubelet.pod_pid("default", "as-root").is_none(), "it ran as root");

    let other = serde_json::json!({"securityContext": {"runAsUser": 4242, "runAsGroup": 4343}});
    f.create(pod("as-4242", f.models.path(), other)).await;
    running_ip(&f.pods, "as-4242").await;
    let pid = f.kubelet.pod_pid("default", "as-4242").expect("a process");
    assert_eq!((uid(pid), id(pid, "Gid:")), (4242, 4343));
}

/// A cluster, a process kubelet running Pods from the image store, and the
/// example model repository (readable by any user, as the Pods read it).
struct Fixture {
    models: tempfile::TempDir,
    pods: Api<Pod>,
    client: kube::Client,
    kubelet: ProcessKubelet,
    _cluster: TestCluster,
}

impl Fixture {
    async fn start() -> Self {
        init_test_tracing();
        let cluster = TestCluster::start(ClusterOptions::default()).await.expect("cluster");
        let client = cluster.client().await.expect("client");
        let kubelet = ProcessKubelet::start(client.clone(), VersaEnv::kubelet_options(&cluster))
            .await
            .expect("kubelet");
        let models = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .tempdir()
            .expect("models");
        versa_testmodels::write_example_repository(models.path()).expect("models");
        let pods = Api::namespaced(client.clone(), "default");
        Self { models, pods, client, kubelet, _cluster: cluster }
    }

    async fn create(&self, pod: Pod) {
        self.pods.create(&PostParams::default(), &pod).await.expect("create pod");
    }

    /// Waits until the Pod's container is waiting with `reason`; its message.
    async fn wait_waiting(&self, name: &str, reason: &str) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pod = self.pods.get(name).await.expect("pod");
            let waiting = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.clone());
            if let Some(w) = &waiting
                && w.reason.as_deref() == Some(reason)
            {
                return (reason.to_owned(), w.message.clone().unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "{name} never waited with {reason}: {waiting:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The real user id of a process.
fn uid(pid: u32) -> u32 {
    id(pid, "Uid:")
}

/// The real id on a `Uid:` or `Gid:` line of a process's status.
fn id(pid: u32, line: &str) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let found = status.lines().find(|l| l.starts_with(line)).expect("an id line");
    found.split_whitespace().nth(1).and_then(|u| u.parse().ok()).expect("an id")
}
