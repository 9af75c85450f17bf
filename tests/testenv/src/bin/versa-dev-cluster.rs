//! `make dev-cluster`: a long-lived local control plane with the process
//! kubelet, for `kubectl` and manual testing. Ctrl-C stops everything.

use std::time::Duration;
use versa_testenv::{ApiAccess, ClusterOptions, KubeletOptions, ProcessKubelet, TestCluster};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    eprintln!("starting etcd, kube-apiserver and kube-controller-manager on 127.0.0.1 ...");
    let cluster =
        TestCluster::start(ClusterOptions { controller_manager: true, keep_dir: true }).await?;
    let _kubelet = ProcessKubelet::start(
        cluster.client().await?,
        KubeletOptions {
            interval: Duration::from_millis(250),
            api: Some(ApiAccess {
                server: cluster.server().to_owned(),
                ca_pem: cluster.ca_pem().to_vec(),
            }),
            ..KubeletOptions::new(cluster.dir().join("kubelet"))
        },
    )
    .await?;
    eprintln!("cluster ready: {}", cluster.server());
    eprintln!("  images from {}", versa_testenv::kubelet::images::default_store().display());
    eprintln!("  export KUBECONFIG={}", cluster.kubeconfig().display());
    eprintln!("  kubectl get nodes,pods -A");
    eprintln!(
        "logs: {}/logs and {}/kubelet/logs",
        cluster.dir().display(),
        cluster.dir().display()
    );
    eprintln!("Ctrl-C stops the cluster.");
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping ...");
    Ok(())
}
