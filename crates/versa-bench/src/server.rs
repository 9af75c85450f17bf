//! The real `versa-server` binary, started on loopback for one benchmark.

use crate::workload::MODEL_NAME;
use anyhow::Context as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use versa_proto::serving::{
    GetModelStatusRequest, ModelSpec, model_service_client::ModelServiceClient,
};

/// How the server is started.
#[derive(Debug, Default, Clone)]
pub(crate) struct ServerOptions {
    /// `max_batch_size` with `--enable_batching` (0: batching off).
    pub(crate) batching: usize,
    /// `--transition_policy` (empty: the default).
    pub(crate) transition_policy: String,
    /// More flags.
    pub(crate) extra: Vec<String>,
    /// A model config file to serve instead of `base` as model `bench`.
    pub(crate) config_file: Option<std::path::PathBuf>,
}

#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    pub(crate) grpc: u16,
    pub(crate) rest: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    /// Starts `binary` serving `base` as model `bench` and waits until both
    /// ports are open (every initial version loaded).
    pub(crate) fn start(
        binary: &Path,
        base: &Path,
        options: &ServerOptions,
    ) -> anyhow::Result<Self> {
        let (grpc, rest) = (free_port()?, free_port()?);
        let mut flags = options.extra.clone();
        if options.batching > 0 {
            let file = base.with_file_name("batching.config");
            std::fs::write(
                &file,
                format!(
                    "max_batch_size {{ value: {} }} max_enqueued_batches {{ value: 1000 }}",
                    options.batching
                ),
            )?;
            flags.push("--enable_batching".to_owned());
            flags.push(format!("--batching_parameters_file={}", file.display()));
        }
        if !options.transition_policy.is_empty() {
            flags.push(format!("--transition_policy={}", options.transition_policy));
        }
        match &options.config_file {
            Some(file) => flags.push(format!("--model_config_file={}", file.display())),
            None => flags.extend([
                format!("--model_name={MODEL_NAME}"),
                format!("--model_base_path={}", base.display()),
            ]),
        }
        let mut child = Command::new(binary)
            .args(flags)
            .args([
                "--bind_address=127.0.0.1".to_owned(),
                format!("--port={grpc}"),
                format!("--rest_api_port={rest}"),
            ])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn,versa_server=info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let (mut g, mut r) = (false, false);
        while !(g && r) {
            let Some(Ok(line)) = lines.next() else {
                anyhow::bail!("versa-server exited before serving")
            };
            g |= line.contains("Running gRPC ModelServer");
            r |= line.contains("Exporting HTTP/REST API");
        }
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child, grpc, rest })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// Resident and peak resident memory (bytes) from /proc.
    pub(crate) fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid())
    }

    /// CPU time the server has used so far (user + system, every thread).
    pub(crate) fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = crate::procstat::Stat::read(format!("/proc/{}/stat", self.pid()))?;
        Ok(crate::procstat::ticks(stat.own_ticks))
    }

    /// Resets the peak-RSS mark (Linux `clear_refs` 5), so the next peak is
    /// this benchmark's own.
    pub(crate) fn reset_peak(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
            .context("resetting the peak RSS (/proc/<pid>/clear_refs)")
    }

    /// Versions of the model and their states, e.g. `[(2, "AVAILABLE")]`.
    pub(crate) async fn versions(&self) -> anyhow::Result<Vec<(i64, String)>> {
        let mut client = ModelServiceClient::connect(self.grpc_url()).await?;
        let response = client
            .get_model_status(GetModelStatusRequest {
                model_spec: Some(ModelSpec { name: MODEL_NAME.into(), ..ModelSpec::default() }),
            })
            .await?
            .into_inner();
        Ok(response
            .model_version_status
            .iter()
            .map(|s| {
                let state = versa_proto::serving::model_version_status::State::try_from(s.state)
                    .map(|s| s.as_str_name().to_owned())
                    .unwrap_or_else(|_| s.state.to_string());
                (s.version, state)
            })
            .collect())
    }

    /// Waits until the server knows `version` in any state (the source has
    /// seen it), bounded by `limit`.
    pub(crate) async fn wait_seen(&self, version: i64, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while !self.versions().await.unwrap_or_default().iter().any(|(v, _)| *v == version) {
            anyhow::ensure!(
                started.elapsed() < limit,
                "version {version} not seen after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Waits until the model's only live version is `version`, AVAILABLE
    /// (every other version END), bounded by `limit`.
    pub(crate) async fn wait_only(
        &self,
        version: i64,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let versions = self.versions().await.unwrap_or_default();
            let done = versions.iter().all(|(v, state)| {
                if *v == version { state == "AVAILABLE" } else { state == "END" }
            }) && versions.iter().any(|(v, _)| *v == version);
            if done {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "version {version} not the only one after {limit:?}: {versions:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A process's memory as /proc reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    pub(crate) rss: u64,
    pub(crate) peak: u64,
}

impl Memory {
    pub(crate) fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .map(|k| k * 1024)
                .with_context(|| format!("no {key} in /proc/{pid}/status"))
        };
        Ok(Self { rss: kib("VmRSS:")?, peak: kib("VmHWM:")? })
    }
}
