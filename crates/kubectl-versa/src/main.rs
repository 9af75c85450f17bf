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
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;
use std::time::Duration;
use target::{Progress, annotation_patch, choose, progress};
use versa_analysis::canary::Command;
use versa_crd::ModelDeployment;
use versa_crd::command::{COMMAND_ANNOTATION, CommandRequest};

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
                "text" => print!("{}", printable(&render::status(&md))),
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
    send(&api, args, command).await
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

/// Writes the command annotation, then waits for the operator to take it.
async fn send(
    api: &Api<ModelDeployment>,
    args: &TargetArgs,
    command: Command,
) -> anyhow::Result<()> {
    let name = &args.name;
    let md = api.get(name).await.with_context(|| format!("ModelDeployment {name}"))?;
    let target = choose(&md, args.model.as_deref())?;
    if let Some(pending) = md.annotations().get(COMMAND_ANNOTATION) {
        println!("replacing a command not taken yet: {}", printable(pending));
    }
    let request = CommandRequest { model: target.model.clone(), command, id: new_id() };
    api.patch(name, &PatchParams::default(), &Patch::Merge(annotation_patch(&request)))
        .await
        .with_context(|| format!("writing {command:?} to {name}"))?;
    println!("{command:?} sent to model {} of {name}", target.model);
    if args.no_wait {
        return Ok(());
    }
    let limit = Duration::from_secs(args.timeout);
    let deadline = tokio::time::Instant::now() + limit;
    let md = loop {
        let md = api.get(name).await?;
        match progress(&md, &request) {
            Progress::Taken { ignored: Some(why) } => {
                bail!("the operator ignored {command:?}: {why}")
            }
            Progress::Taken { ignored: None } => break md,
            Progress::Dropped { annotation } => bail!(
                "{command:?} was not taken: {}",
                annotation.map_or(
                    "the rollout ended, or another command replaced it and was taken".into(),
                    |a| format!("replaced by {}", printable(&a))
                )
            ),
            Progress::Pending if tokio::time::Instant::now() >= deadline => bail!(
                "the operator has not taken {command:?} within {}s; it stays pending (is the operator running and leading?), a newer command replaces it",
                limit.as_secs()
            ),
            Progress::Pending => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let rollout = md
        .status
        .as_ref()
        .and_then(|s| s.models.iter().find(|m| m.name == target.model))
        .and_then(|m| m.rollout.as_ref());
    if let Some(r) = rollout {
        let why = r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        println!("rollout {} ({}){}", r.phase, r.summary, printable(&why));
    }
    Ok(())
}

/// A fresh command id: the time and this process.
fn new_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{ms}-{}", std::process::id())
}

/// `text` without control characters (status is printed to a terminal).
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control() || *c == '\n').collect()
}
