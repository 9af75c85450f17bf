//! Smoke tests of the test environment: a real API server and controller
//! manager, the process kubelet running Pods from the versa-server image.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::time::{Duration, Instant};
use versa_testenv::versa::{VersaEnv, init_test_tracing, is_ready};
use versa_testenv::{ClusterOptions, ProcessKubelet, TestCluster};

const PATIENCE: Duration = Duration::from_secs(90);

async fn kubelet(cluster: &TestCluster) -> ProcessKubelet {
    let options = VersaEnv::kubelet_options(cluster);
    ProcessKubelet::start(cluster.client().await.expect("client"), options).await.expect("kubelet")
}

fn deployment(models: &std::path::Path, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "serving", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "serving"}},
            "template": {
                "metadata": {"labels": {"app": "serving"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "versa-server",
                        "image": "ghcr.io/versa-dev/versa-server:0.1.0",
                        "args": ["--port=8500", "--rest_api_port=8501", "--model_name=versioned", "--model_base_path=/models/versioned"],
                        "ports": [{"name": "grpc", "containerPort": 8500}, {"name": "http", "containerPort": 8501}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
                        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": true}],
                    }],
                    "volumes": [{"name": "models", "hostPath": {"path": models.display().to_string(), "type": "Directory"}}],
                },
            },
        },
    }))
    .expect("deployment")
}

/// Waits until `n` Pods of the app are Ready; returns them.
async fn ready_pods(pods: &Api<Pod>, n: usize) -> Vec<Pod> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let list = pods.list(&ListParams::default().labels("app=serving")).await.expect("list");
        let ready: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .collect();
        if ready.len() == n {
            return ready;
        }
        assert!(Instant::now() < deadline, "{n} ready pods never appeared (have {})", ready.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn answers(ip: &str) {
    let status =
        reqwest::get(format!("http://{ip}:8501/v1/models/versioned")).await.expect("REST").status();
    assert_eq!(status, 200, "REST on {ip}");
    let version = versa_testenv::serving::grpc_model_version(ip, "versioned").await;
    assert_eq!(version.expect("gRPC status on 8500"), 3);
}

#[tokio::test]
async fn a_deployment_becomes_ready_pods_that_serve_and_deleted_pods_are_replaced() {
    init_test_tracing();
    let started = Instant::now();
    let cluster = TestCluster::start(ClusterOptions::default()).await.expect("cluster");
    eprintln!("control plane ready in {:.1}s", started.elapsed().as_secs_f64());
    let kubelet = kubelet(&cluster).await;
    // Read by the Pods' user (65532) through a hostPath volume.
    let models = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .expect("models");
    versa_testmodels::write_example_repository(models.path()).expect("models");

    let client = cluster.client().await.expect("client");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment(models.path(), 2))
        .await
        .expect("create deployment");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let ready = ready_pods(&pods, 2).await;
    eprintln!("2 pods ready {:.1}s after start", started.elapsed().as_secs_f64());
    let ips: Vec<String> = ready
        .iter()
        .map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("podIP"))
        .collect();
    assert_ne!(ips[0], ips[1], "each pod has its own loopback address");
    for ip in &ips {
        let ip_addr: std::net::Ipv4Addr = ip.parse().expect("IPv4");
        assert!(ip_addr.is_loopback() && ip != "127.0.0.1", "{ip}");
        answers(ip).await;
    }

    // Deleting a pod: the ReplicaSet controller makes a new one, which serves.
    let victim = ready[0].metadata.name.clone().expect("name");
    pods.delete(&victim, &DeleteParams::default()).await.expect("delete");
    let deadline = Instant::now() + PATIENCE;
    let replacement = loop {
        let now_ready = ready_pods(&pods, 2).await;
        if let Some(new) = now_ready.iter().find(|p| {
            p.metadata.name.as_deref() != Some(&victim)
                && !ready.iter().any(|o| o.metadata.name == p.metadata.name)
        }) {
            break new.clone();
        }
        assert!(Instant::now() < deadline, "no replacement pod");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ip = replacement.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("podIP");
    answers(&ip).await;
    // The deleted pod's process is gone: its address refuses connections.
    let old_ip = &ips[0];
    assert!(
        tokio::net::TcpStream::connect(format!("{old_ip}:8501")).await.is_err() || old_ip == &ip,
        "the deleted pod's server still answers"
    );
    drop(kubelet);
}

#[tokio::test]
async fn kubectl_dry_run_validates_against_the_server() {
    init_test_tracing();
    let cluster = TestCluster::start(ClusterOptions {
        controller_manager: false,
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster");
    let dir = tempfile::tempdir().expect("dir");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, serde_yaml::to_string(&deployment(dir.path(), 1)).expect("yaml"))
        .expect("write");
    let out = cluster
        .kubectl(&["apply", "--dry-run=server", "-f", good.to_str().expect("path")])
        .expect("kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created (server dry run)"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec: {replicas: \"three\"}\n").expect("write");
    let out = cluster
        .kubectl(&["apply", "--dry-run=server", "-f", bad.to_str().expect("path")])
        .expect("kubectl");
    assert!(!out.status.success(), "an invalid manifest must be rejected");
    // Nothing was created.
    let deployments: Api<Deployment> =
        Api::namespaced(cluster.client().await.expect("client"), "default");
    assert!(deployments.list(&ListParams::default()).await.expect("list").items.is_empty());
}
