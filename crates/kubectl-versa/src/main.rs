//! `kubectl versa`: read and steer a ModelDeployment's automated canary.
//!
//! `status` prints every model's rollout with its analysis; `promote`
//! (`--full`), `abort`, `retry`, `pause` and `resume` write a command to
//! `status.models[i].rollout.command`, which the operator applies once and
//! clears. The patch is conditional on the object as read, so a command is
//! never written over another or onto the wrong model; the plugin then
//! waits for the operator to take it and says what it did.

#![allow(clippy::print_stdout)] // a command-line tool: stdout is its output

mod render;
mod target;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use kube::api::Api;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;
use std::time::Duration;
use target::{Target, check_not_pending, choose, command_patch};
use versa_analysis::canary::Command;
use versa_crd::ModelDeployment;

#[derive(Parser, Debug)]
#[command(name = "kubectl versa", version, about = "Read and steer Versa rollouts")]
struct Cli {
    #[command(subcommand)]
    action: Action,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Kubeconfig context.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Every model's phase, labels, weights, rollout and analysis.
    Status {
        name: String,
        /// `text` or `json` (the status subresource as it is).
        #[arg(short = 'o', long, default_value = "text")]
        output: String,
    },
    /// Lift a pause and skip the current step (ends a `pause: {}` step);
    /// with --full, skip every remaining step.
    Promote {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        full: bool,
    },
    /// All traffic back to the baseline now.
    Abort(TargetArgs),
    /// After an abort: start again from the first step.
    Retry(TargetArgs),
    /// Hold the current weight.
    Pause(TargetArgs),
    /// Lift a `pause` (not a `pause: {}` step: that takes `promote`).
    Resume(TargetArgs),
}

#[derive(clap::Args, Debug)]
struct TargetArgs {
    /// The ModelDeployment.
    name: String,
    /// The model (default: the only one with a rollout).
    #[arg(long)]
    model: Option<String>,
    /// Return once written, without waiting for the operator to take it.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the operator.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    timeout: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = config(cli).await?;
    let namespace = cli.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("a client from the kubeconfig")?;
    let api = Api::<ModelDeployment>::namespaced(client.clone(), &namespace);
    let (args, command) = match &cli.action {
        Action::Status { name, output } => {
            let md = api.get(name).await.with_context(|| format!("ModelDeployment {name}"))?;
            match output.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&md.status)?),
                "text" => print!("{}", render::status(&md)),
                other => bail!("unknown output {other:?}: text or json"),
            }
            return Ok(());
        }
        Action::Promote { target, full: false } => (target, Command::Promote),
        Action::Promote { target, full: true } => (target, Command::PromoteFull),
        Action::Abort(t) => (t, Command::Abort),
        Action::Retry(t) => (t, Command::Retry),
        Action::Pause(t) => (t, Command::Pause),
        Action::Resume(t) => (t, Command::Resume),
    };
    send(&client, &api, &namespace, args, command).await
}

async fn config(cli: &Cli) -> anyhow::Result<Config> {
    let options = KubeConfigOptions { context: cli.context.clone(), ..Default::default() };
    Ok(match (&cli.kubeconfig, &cli.context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options).await?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await?,
        (None, None) => Config::infer().await?,
    })
}

/// Writes the command (retrying when the object changed between read and
/// write), then waits for the operator to take it.
async fn send(
    client: &kube::Client,
    api: &Api<ModelDeployment>,
    namespace: &str,
    args: &TargetArgs,
    command: Command,
) -> anyhow::Result<()> {
    let name = &args.name;
    let mut attempt = 0;
    let target = loop {
        attempt += 1;
        let md = api.get(name).await.with_context(|| format!("ModelDeployment {name}"))?;
        let target = choose(&md, args.model.as_deref())?;
        check_not_pending(&md, &target)?;
        let version = md.metadata.resource_version.clone().unwrap_or_default();
        match patch_status(client, namespace, name, &command_patch(&version, &target, command))
            .await
        {
            Ok(()) => break target,
            // The object changed since it was read (a `test` failed).
            Err(kube::Error::Api(s)) if (s.code == 409 || s.code == 422) && attempt < 5 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context(format!("writing {command:?} to {name}")),
        }
    };
    println!("{command:?} sent to model {} of {name}", target.model);
    if args.no_wait {
        return Ok(());
    }
    let md = taken(api, name, &target, Duration::from_secs(args.timeout)).await?;
    let rollout = md
        .status
        .as_ref()
        .and_then(|s| s.models.get(target.index))
        .and_then(|m| m.rollout.as_ref());
    let Some(r) = rollout else {
        bail!("the rollout of model {} ended before the operator took {command:?}", target.model)
    };
    if let Some(why) = r.last_command.as_ref().and_then(|c| c.ignored.as_deref()) {
        bail!("the operator ignored {command:?}: {why}");
    }
    let why = r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
    println!("rollout {} ({}){why}", r.phase, r.summary);
    Ok(())
}

/// Polls until the operator cleared the command.
async fn taken(
    api: &Api<ModelDeployment>,
    name: &str,
    target: &Target,
    limit: Duration,
) -> anyhow::Result<ModelDeployment> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let md = api.get(name).await?;
        if check_not_pending(&md, target).is_ok() {
            return Ok(md);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the operator has not taken the command within {}s; it stays pending (is the operator running and leading?)",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn patch_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<(), kube::Error> {
    let path = format!(
        "/apis/serving.versa.dev/v1alpha1/namespaces/{namespace}/modeldeployments/{name}/status"
    );
    let request = http::Request::patch(path)
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(serde_json::to_vec(patch).map_err(kube::Error::SerdeError)?)
        .map_err(kube::Error::HttpError)?;
    client.request::<ModelDeployment>(request).await.map(|_| ())
}
