//! `versa-operator`: runs the ModelDeployment controller, with leader
//! election, metrics and health on `--metrics_address`; with
//! `--check_installation`, checks that an installation can work and exits.

use anyhow::Context as _;
use clap::Parser;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;
use versa_operator::check::{self, CheckOptions, LeaseRef};
use versa_operator::controller::{self, Context, Options};
use versa_operator::leader::{self, LeaseOptions};
use versa_operator::metrics::{self, Metrics};
use versa_operator::resources::OperatorPods;
use versa_operator::sidecar::SidecarOptions;
use versa_operator::telemetry::{self, LogFormat};
use versa_operator::validate::SpecPolicy;

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
    /// Seconds a standby waits, after the Lease record last changed, before
    /// it takes the Lease.
    #[arg(long = "lease_duration_seconds", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds the leader keeps acting without a successful renewal; must
    /// be shorter than the lease duration (default: two thirds of it).
    #[arg(long = "lease_renew_deadline_seconds")]
    lease_renew_deadline_seconds: Option<f64>,
    /// How often the Lease is tried, in ms (default: a fifth of the renew deadline).
    #[arg(long = "lease_retry_period_ms")]
    lease_retry_period_ms: Option<u64>,
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
    /// Longest an API server call may take before it counts as failed.
    #[arg(long = "api_timeout_seconds", default_value_t = 60)]
    api_timeout_seconds: u64,
    /// Longest wait between retries of a failing ModelDeployment (retries
    /// back off exponentially from 1 s up to this).
    #[arg(long = "max_retry_backoff_seconds", default_value_t = 300)]
    max_retry_backoff_seconds: u64,
    /// Volume sources a ModelDeployment's model volume may use
    /// (comma-separated Kubernetes field names). hostPath (the node's files)
    /// and secret (any Secret of the namespace) are off unless listed here.
    #[arg(
        long = "allowed_volume_sources",
        value_delimiter = ',',
        default_values_t = versa_operator::validate::DEFAULT_VOLUME_SOURCES.iter().map(|s| (*s).to_owned())
    )]
    allowed_volume_sources: Vec<String>,
    /// Let `spec.server.env` read Secrets (`valueFrom.secretKeyRef`).
    #[arg(long = "allow_secret_env", default_value_t = false, action = clap::ArgAction::Set)]
    allow_secret_env: bool,
    /// Image prefixes serving images must start with (comma-separated;
    /// empty: any image).
    #[arg(long = "allowed_image_prefixes", value_delimiter = ',')]
    allowed_image_prefixes: Vec<String>,
    /// Log format: `text` or `json` (one object per line). `RUST_LOG`
    /// filters either.
    #[arg(long = "log_format", default_value = "text")]
    log_format: LogFormat,
    /// Check, with these flags and credentials, that the installation can
    /// work (the CRD served, RBAC, a live Lease holder), print each check and
    /// exit: 0 when all pass. The chart's `helm test` runs this.
    #[arg(long = "check_installation", default_value_t = false)]
    check_installation: bool,
    /// How long `--check_installation` retries failing checks before it
    /// gives up (a new leader can take a lease duration to appear).
    #[arg(long = "check_timeout_seconds", default_value_t = 30)]
    check_timeout_seconds: u64,
}

impl Flags {
    /// The Lease's namespace: the flag, else the Pod's, else `default`.
    fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into())
    }
}

/// `--check_installation`: every check until all pass or the timeout; the
/// findings of the last round on stdout.
async fn check_installation(client: kube::Client, flags: &Flags) -> anyhow::Result<()> {
    let options = CheckOptions {
        namespace: flags.namespace.clone(),
        lease: flags.leader_elect.then(|| LeaseRef {
            namespace: flags.lease_namespace(),
            name: flags.lease_name.clone(),
            duration: Duration::from_secs(flags.lease_duration_seconds.max(1)),
        }),
        network_policy: flags.network_policy,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(flags.check_timeout_seconds);
    loop {
        let findings = check::run(&client, &options).await;
        let failed = findings.iter().filter(|f| f.problem.is_some()).count();
        if failed == 0 || tokio::time::Instant::now() >= deadline {
            // The report is this mode's output: stdout, which `kubectl logs` shows.
            let mut out = std::io::stdout().lock();
            for finding in &findings {
                writeln!(out, "{finding}")?;
            }
            anyhow::ensure!(failed == 0, "{failed} of {} checks failed", findings.len());
            writeln!(out, "the installation works")?;
            return Ok(());
        }
        tracing::info!(failed, "checks failing; retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    telemetry::init(flags.log_format);
    let identity =
        flags.identity.clone().or_else(|| std::env::var("POD_NAME").ok()).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
    let mut config = kube::Config::infer().await.context("no Kubernetes client configuration")?;
    // No API call may hang a pass (or the Lease) for the default 295 s: a
    // restarting API server can hold a request without answering. Watches
    // end server-side sooner (controller.rs), so they are not cut.
    config.read_timeout = Some(Duration::from_secs(flags.api_timeout_seconds.max(10)));
    let client = kube::Client::try_from(config).context("Kubernetes client")?;
    if flags.check_installation {
        return check_installation(client, &flags).await;
    }
    let metrics = Metrics::new();
    let listener = tokio::net::TcpListener::bind(flags.metrics_address)
        .await
        .with_context(|| format!("cannot bind {}", flags.metrics_address))?;
    tracing::info!(address = %listener.local_addr()?, "metrics and health");
    tokio::spawn(metrics::serve(listener, metrics.clone()));

    let (leadership, mut lost) = if flags.leader_elect {
        let namespace = flags.lease_namespace();
        let duration = Duration::from_secs(flags.lease_duration_seconds.max(1));
        let renew_deadline = match flags.lease_renew_deadline_seconds {
            None => duration * 2 / 3,
            Some(s) if s.is_finite() && s > 0.0 && s < 1e6 => Duration::from_secs_f64(s),
            Some(s) => anyhow::bail!("--lease_renew_deadline_seconds={s} is not a positive number"),
        };
        anyhow::ensure!(
            renew_deadline < duration && !renew_deadline.is_zero(),
            "--lease_renew_deadline_seconds must be above 0 and below --lease_duration_seconds"
        );
        let retry_period = flags
            .lease_retry_period_ms
            .map_or(renew_deadline / 5, Duration::from_millis)
            .max(Duration::from_millis(50));
        anyhow::ensure!(
            retry_period < renew_deadline,
            "--lease_retry_period_ms must be below the renew deadline"
        );
        let options = LeaseOptions {
            namespace,
            name: flags.lease_name.clone(),
            identity: identity.clone(),
            duration,
            renew_deadline,
            retry_period,
        };
        let (leadership, lost) = leader::lead(client.clone(), options).await;
        (Some(leadership), Some(lost))
    } else {
        (None, None)
    };

    let options = Options {
        sidecar: SidecarOptions {
            port: flags.sidecar_port,
            call_timeout: Duration::from_millis(flags.sidecar_timeout_ms),
            ..SidecarOptions::default()
        },
        progress_requeue: Duration::from_millis(flags.progress_requeue_ms),
        max_retry_backoff: Duration::from_secs(flags.max_retry_backoff_seconds.max(1)),
        policy: SpecPolicy {
            volume_sources: flags
                .allowed_volume_sources
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            secret_env: flags.allow_secret_env,
            image_prefixes: flags
                .allowed_image_prefixes
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| versa_operator::validate::image_prefix(s))
                .collect(),
        },
        leadership,
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
