//! The versa-server image on its own, as a TensorFlow Serving user runs
//! `tensorflow/serving`:
//!
//! ```sh
//! docker run -p 8500:8500 -p 8501:8501 \
//!   -v "$PWD/models/versioned:/models/versioned" -e MODEL_NAME=versioned \
//!   ghcr.io/versa-dev/versa-server:0.1.0
//! ```
//!
//! A Pod with no command and no args — only the image's entrypoint, the
//! model mounted under /models and `MODEL_NAME` — run by the process kubelet
//! from the image store `make images` fills.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};
use versa_testenv::versa::{VersaEnv, init_test_tracing, is_ready};
use versa_testenv::{ClusterOptions, ProcessKubelet, TestCluster};

fn pod(models: &std::path::Path, extra: serde_json::Value) -> Pod {
    let mut container = serde_json::json!({
        "name": "serving",
        "image": "ghcr.io/versa-dev/versa-server:0.1.0",
        "env": [{"name": "MODEL_NAME", "value": "versioned"}],
        "volumeMounts": [{"name": "model", "mountPath": "/models/versioned", "readOnly": true}],
    });
    if let (Some(c), Some(e)) = (container.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "tf-serving-style", "namespace": "default"},
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
    init_test_tracing();
    let cluster = TestCluster::start(ClusterOptions::default()).await.expect("cluster");
    let client = cluster.client().await.expect("client");
    let kubelet = ProcessKubelet::start(client.clone(), VersaEnv::kubelet_options(&cluster))
        .await
        .expect("kubelet");
    // Read through the mount by the image's user (65532).
    let models = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .expect("models");
    versa_testmodels::write_example_repository(models.path()).expect("models");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(&PostParams::default(), &pod(models.path(), serde_json::json!({})))
        .await
        .expect("create pod");
    let ip = running_ip(&pods, "tf-serving-style").await;

    // REST on 8501 and gRPC on 8500, the model named by MODEL_NAME.
    let (status, body) = rest(&ip, "/v1/models/versioned", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"version\": \"3\"") || body.contains("\"version\":\"3\""), "{body}");
    let (status, body) =
        rest(&ip, "/v1/models/versioned:predict", Some(r#"{"instances": [[0, 0, 0, 0]]}"#)).await;
    assert_eq!(status, 200, "{body}");
    let mut grpc = versa_proto::serving::model_service_client::ModelServiceClient::connect(
        format!("http://{ip}:8500"),
    )
    .await
    .expect("gRPC on 8500");
    let status = grpc
        .get_model_status(versa_proto::serving::GetModelStatusRequest {
            model_spec: Some(versa_proto::serving::ModelSpec {
                name: "versioned".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("gRPC status")
        .into_inner();
    assert_eq!(status.model_version_status[0].version, 3);

    // The process is the image's entrypoint, inside the image's root, as 65532.
    let pid = kubelet.pod_pid("default", "tf-serving-style").expect("a process");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let argv: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    assert_eq!(
        argv[..4],
        ["/usr/local/bin/versa-server", "--port=8500", "--rest_api_port=8501", "--model_from_env"],
        "{argv:?}"
    );
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid = proc_status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
    assert!(uid.split_whitespace().nth(1) == Some("65532"), "{uid}");
    drop(kubelet);
}
