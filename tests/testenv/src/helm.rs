//! The Helm CLI against a [`TestCluster`]: `$VERSA_VENV/bin/helm` (v4,
//! installed by `make pyenv`), with the cluster's kubeconfig and Helm's own
//! cache/config/data directories inside the cluster's directory, so a test
//! reads and writes nothing of the user's Helm setup.
//!
//! Every call is asynchronous and bounded in time: the process kubelet runs
//! on the caller's runtime, so a `helm install --wait` that blocked the
//! thread would wait for Pods nobody starts.

use crate::TestCluster;
use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// `$VERSA_VENV/bin/helm`, by default `~/.cache/versa/venv/bin/helm`.
pub fn helm_binary() -> PathBuf {
    crate::versa::venv_python().with_file_name("helm")
}

/// This repository's chart, `charts/versa-operator`.
pub fn chart_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/versa-operator");
    dir.canonicalize().unwrap_or(dir)
}

/// The Helm CLI, talking to one cluster.
#[derive(Debug, Clone)]
pub struct Helm {
    binary: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

/// What one `helm` run printed.
#[derive(Debug, Clone)]
pub struct HelmOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Helm {
    /// Helm for `cluster`; fails when the binary is missing (`make pyenv`).
    pub fn new(cluster: &TestCluster) -> anyhow::Result<Self> {
        let binary = helm_binary();
        if !binary.exists() {
            bail!("{} missing: run `make pyenv` (tests/chart/setup.sh)", binary.display());
        }
        let home = cluster.dir().join("helm");
        std::fs::create_dir_all(&home)?;
        Ok(Self { binary, kubeconfig: cluster.kubeconfig().to_owned(), home })
    }

    /// Runs `helm ARGS`; killed, and an error, after `limit`.
    pub async fn run(&self, args: &[&str], limit: Duration) -> anyhow::Result<HelmOutput> {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("HELM_NAMESPACE")
            .env_remove("HELM_KUBECONTEXT")
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("{}", self.binary.display()))?;
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .with_context(|| format!("helm {} still running after {limit:?}", args.join(" ")))??;
        Ok(HelmOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// `helm ARGS`, which must succeed: what it printed on stdout.
    pub async fn ok(&self, args: &[&str], limit: Duration) -> anyhow::Result<String> {
        let out = self.run(args, limit).await?;
        if !out.success {
            bail!("helm {} failed: {}{}", args.join(" "), out.stdout, out.stderr);
        }
        Ok(out.stdout)
    }
}
