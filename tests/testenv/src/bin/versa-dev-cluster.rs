//! `make dev-cluster`: a long-lived local control plane with the process
//! kubelet, for `kubectl` and manual testing. Ctrl-C stops everything.

use std::time::Duration;
use versa_testenv::{ClusterOptions, ImageMapping, KubeletOptions, ProcessKubelet, TestCluster};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let here = std::env::current_exe()?;
    let bin_dir = here.parent().ok_or_else(|| anyhow::anyhow!("no executable directory"))?;
    eprintln!("starting etcd, kube-apiserver and kube-controller-manager on 127.0.0.1 ...");
    let cluster =
        TestCluster::start(ClusterOptions { controller_manager: true, keep_dir: true }).await?;
    let _kubelet = ProcessKubelet::start(
        cluster.client().await?,
        KubeletOptions {
            node_name: "process-kubelet".into(),
            images: vec![ImageMapping {
                image: "versa-server".into(),
                binary: bin_dir.join("versa-server"),
                extra_args: vec!["--bind_address={pod_ip}".into()],
                service_account_credentials: false,
            }],
            workdir: cluster.dir().join("kubelet"),
            interval: Duration::from_millis(250),
            extra_env: vec![],
            api: None,
        },
    )
    .await?;
    eprintln!("cluster ready: {}", cluster.server());
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
