//! `versa-operator`: runs the ModelDeployment controller, with leader
//! election, metrics and health on `--metrics_address`.

use anyhow::Context as _;
use clap::Parser;
use std::sync::Arc;
use std::time::Duration;
use versa_operator::controller::{self, Context, Options};
use versa_operator::leader::{self, LeaseOptions};
use versa_operator::metrics::{self, Metrics};
use versa_operator::resources::OperatorPods;
use versa_operator::sidecar::SidecarOptions;

/// The ModelDeployment operator. Talks to the cluster of `KUBECONFIG`, or
/// the one it runs in.
#[derive(Debug, Parser)]
#[command(version, about, args_override_self = true)]
struct Flags {
    /// Where `/metrics` and `/healthz` are served.
    #[arg(long = "metrics_address", default_value = "0.0.0.0:8080")]
    metrics_address: std::net::SocketAddr,
    /// Watch this namespace only (default: all).
    #[arg(long)]
    namespace: Option<String>,
    /// Act only while holding the Lease (run two replicas safely).
    #[arg(long = "leader_elect", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long = "lease_namespace")]
    lease_namespace: Option<String>,
    #[arg(long = "lease_name", default_value = "versa-operator")]
    lease_name: String,
    /// Seconds a Lease holds without renewal.
    #[arg(long = "lease_duration_seconds", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// This replica's name (default: $POD_NAME, else host name and process id).
    #[arg(long)]
    identity: Option<String>,
    /// The sidecars' ModelService port.
    #[arg(long = "sidecar_port", default_value_t = 8502)]
    sidecar_port: u16,
    /// Deadline of each sidecar call.
    #[arg(long = "sidecar_timeout_ms", default_value_t = 3000)]
    sidecar_timeout_ms: u64,
    /// Give every ModelDeployment a NetworkPolicy that opens the sidecars'
    /// ModelService port to the operator's Pods only.
    #[arg(long = "network_policy", default_value_t = false, action = clap::ArgAction::Set)]
    network_policy: bool,
    /// Labels of the operator's Pods (`k=v,k=v`), for the NetworkPolicy.
    #[arg(long = "operator_pod_labels", default_value = "app.kubernetes.io/name=versa-operator")]
    operator_pod_labels: String,
    /// Requeue interval while a rollout moves.
    #[arg(long = "progress_requeue_ms", default_value_t = 1000)]
    progress_requeue_ms: u64,
    /// Requeue interval when settled (backstop for missed events and drift).
    #[arg(long = "resync_seconds", default_value_t = 30)]
    resync_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn,tower=warn,hyper=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let flags = Flags::parse();
    let identity =
        flags.identity.clone().or_else(|| std::env::var("POD_NAME").ok()).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
    let client = kube::Client::try_default().await.context("no Kubernetes client configuration")?;
    let metrics = Metrics::new();
    let listener = tokio::net::TcpListener::bind(flags.metrics_address)
        .await
        .with_context(|| format!("cannot bind {}", flags.metrics_address))?;
    tracing::info!(address = %listener.local_addr()?, "metrics and health");
    tokio::spawn(metrics::serve(listener, metrics.clone()));

    let mut lost = if flags.leader_elect {
        let namespace = flags
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into());
        let options = LeaseOptions {
            namespace,
            name: flags.lease_name.clone(),
            identity: identity.clone(),
            duration: Duration::from_secs(flags.lease_duration_seconds),
            renew_every: Duration::from_secs((flags.lease_duration_seconds / 3).max(1)),
        };
        Some(leader::lead(client.clone(), options).await)
    } else {
        None
    };

    let options = Options {
        sidecar: SidecarOptions {
            port: flags.sidecar_port,
            call_timeout: Duration::from_millis(flags.sidecar_timeout_ms),
            ..SidecarOptions::default()
        },
        progress_requeue: Duration::from_millis(flags.progress_requeue_ms),
        steady_requeue: Duration::from_secs(flags.resync_seconds),
        namespace: flags.namespace.clone(),
        instance: Some(identity),
        network_policy: flags.network_policy.then(|| OperatorPods {
            namespace: std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into()),
            labels: flags
                .operator_pod_labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        }),
    };
    let ctx = Arc::new(Context::new(client, metrics, options));
    tracing::info!("controller running");
    match lost.as_mut() {
        Some(lost) => {
            tokio::select! {
                () = controller::run(ctx) => Ok(()),
                _ = lost.wait_for(|leading| !leading) => {
                    anyhow::bail!("lost leadership; exiting so a fresh replica can take over")
                }
            }
        }
        None => {
            controller::run(ctx).await;
            Ok(())
        }
    }
}
