//! The Python peer of `--scenario external --peer mlserver`: Seldon MLServer
//! running the same ONNX file with ONNX Runtime through the custom runtime
//! in `bench/mlserver/onnx_runtime.py` (written next to a generated
//! `model-settings.json`), spoken to in the KServe V2 protocol: gRPC
//! `inference.GRPCInferenceService/ModelInfer` (the few messages below,
//! encoded with prost) and REST `POST /v2/models/<name>/infer`.
//!
//! The environment comes from `scripts/bench-peer-setup.sh`.

use crate::procstat::Stat;
use crate::workload::{MODEL_NAME, Workload};
use anyhow::Context as _;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The runtime MLServer imports (`onnx_runtime.OnnxRuntime`).
const RUNTIME: &str = include_str!("../../../bench/mlserver/onnx_runtime.py");

/// The gRPC method the generators call.
pub(crate) const GRPC_PATH: &str = "/inference.GRPCInferenceService/ModelInfer";

/// How the peer runs.
#[derive(Debug, Clone)]
pub(crate) struct PeerOptions {
    /// The virtualenv holding `mlserver` and `onnxruntime`.
    pub(crate) venv: PathBuf,
    /// MLServer's `parallel_workers` (0: inference in the server process).
    pub(crate) workers: usize,
    /// ONNX Runtime's intra-op threads.
    pub(crate) intra_op_threads: usize,
}

impl PeerOptions {
    /// Where `scripts/bench-peer-setup.sh` puts the environment.
    pub(crate) fn default_venv() -> PathBuf {
        let cache = std::env::var_os("VERSA_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/versa")
        });
        cache.join("bench-venv")
    }
}

/// `ModelInferRequest` of KServe's `grpc_predict_v2.proto` (the fields used).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ModelInferRequest {
    #[prost(string, tag = "1")]
    pub(crate) model_name: String,
    #[prost(message, repeated, tag = "5")]
    pub(crate) inputs: Vec<InferInputTensor>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub(crate) raw_input_contents: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct InferInputTensor {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) datatype: String,
    #[prost(int64, repeated, tag = "3")]
    pub(crate) shape: Vec<i64>,
}

/// `ModelInferResponse` (the fields read).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ModelInferResponse {
    #[prost(message, repeated, tag = "5")]
    pub(crate) outputs: Vec<InferOutputTensor>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub(crate) raw_output_contents: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct InferOutputTensor {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(message, optional, tag = "5")]
    pub(crate) contents: Option<InferTensorContents>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct InferTensorContents {
    #[prost(float, repeated, tag = "6")]
    pub(crate) fp32_contents: Vec<f32>,
}

/// The workload's batch-1 input as a V2 gRPC request (little-endian f32 in
/// `raw_input_contents`).
pub(crate) fn grpc_request(w: &Workload) -> ModelInferRequest {
    ModelInferRequest {
        model_name: MODEL_NAME.into(),
        inputs: vec![InferInputTensor {
            name: w.input.clone(),
            datatype: "FP32".into(),
            shape: w.shape().iter().map(|&d| d as i64).collect(),
        }],
        raw_input_contents: vec![w.values().iter().flat_map(|v| v.to_le_bytes()).collect()],
    }
}

/// The same input as a V2 REST body (`data` flat, row-major).
pub(crate) fn rest_body(w: &Workload) -> String {
    let shape: Vec<String> = w.shape().iter().map(ToString::to_string).collect();
    let data: Vec<String> = w.values().iter().map(ToString::to_string).collect();
    format!(
        r#"{{"inputs": [{{"name": "{}", "shape": [{}], "datatype": "FP32", "data": [{}]}}]}}"#,
        w.input,
        shape.join(","),
        data.join(",")
    )
}

/// The first output's values from a V2 gRPC response.
pub(crate) fn grpc_output(response: &ModelInferResponse) -> anyhow::Result<Vec<f32>> {
    if let Some(raw) = response.raw_output_contents.first() {
        return Ok(raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }
    let output = response.outputs.first().context("no output in the V2 response")?;
    Ok(output.contents.as_ref().map(|c| c.fp32_contents.clone()).unwrap_or_default())
}

/// A running MLServer, in a process group of its own (killed whole on drop).
#[derive(Debug)]
pub(crate) struct MlServer {
    child: Child,
    pub(crate) http: u16,
    pub(crate) grpc: u16,
    pub(crate) metrics: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for MlServer {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl MlServer {
    /// Writes the settings (server on 127.0.0.1, free ports; the model
    /// `bench` reading `model_file`), starts `mlserver start` and waits until
    /// the model is ready (bounded by `limit`).
    pub(crate) async fn start(
        options: &PeerOptions,
        model_file: &Path,
        limit: Duration,
    ) -> anyhow::Result<Self> {
        let mlserver = options.venv.join("bin/mlserver");
        anyhow::ensure!(
            mlserver.is_file(),
            "{} not found: run scripts/bench-peer-setup.sh (or pass --peer-venv)",
            mlserver.display()
        );
        let dir = tempfile::tempdir()?;
        let (http, grpc, metrics) = (free_port()?, free_port()?, free_port()?);
        let settings = format!(
            r#"{{"host": "127.0.0.1", "http_port": {http}, "grpc_port": {grpc}, "metrics_port": {metrics}, "parallel_workers": {}, "debug": false, "gzip_enabled": false, "metrics_dir": "{}"}}"#,
            options.workers,
            dir.path().join("metrics").display()
        );
        std::fs::write(dir.path().join("settings.json"), settings)?;
        let model_dir = dir.path().join(MODEL_NAME);
        std::fs::create_dir_all(&model_dir)?;
        std::fs::write(model_dir.join("onnx_runtime.py"), RUNTIME)?;
        let model_settings = format!(
            r#"{{"name": "{MODEL_NAME}", "implementation": "onnx_runtime.OnnxRuntime", "parameters": {{"uri": "{}", "extra": {{"intra_op_threads": {}, "inter_op_threads": 1}}}}}}"#,
            model_file.display(),
            options.intra_op_threads.max(1)
        );
        std::fs::write(model_dir.join("model-settings.json"), model_settings)?;
        let log = dir.path().join("mlserver.log");
        let child = Command::new(&mlserver)
            .arg("start")
            .arg(dir.path())
            .current_dir(dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(dir.path().join("mlserver.err"))?)
            .spawn()
            .with_context(|| format!("starting {}", mlserver.display()))?;
        let mut server = Self { child, http, grpc, metrics, log, _dir: dir };
        server.wait_ready(limit).await?;
        Ok(server)
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        for file in [self.log.clone(), self.log.with_extension("err")] {
            if let Ok(mut f) = std::fs::File::open(file) {
                let _ = f.read_to_string(&mut text);
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{}/v2/models/{MODEL_NAME}/ready", self.http);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("mlserver exited ({status}) before serving:\n{}", self.log_tail());
            }
            let model_ready = http
                .get(&ready)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let grpc_open = std::net::TcpStream::connect(("127.0.0.1", self.grpc)).is_ok();
            let metrics_open = std::net::TcpStream::connect(("127.0.0.1", self.metrics)).is_ok();
            if model_ready && grpc_open && metrics_open {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "mlserver not ready after {limit:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// CPU time (user + system) of the server and every process under it,
    /// reaped children included.
    pub(crate) fn cpu_time(&self) -> anyhow::Result<Duration> {
        let root = self.child.id();
        let mut procs = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // A process may exit between listing and reading.
            if let Ok(stat) = Stat::read(format!("/proc/{pid}/stat")) {
                procs.push((pid, stat.ppid, stat.own_ticks + stat.children_ticks));
            }
        }
        let mut tree = vec![root];
        let mut grew = true;
        while grew {
            grew = false;
            for (pid, ppid, _) in &procs {
                if tree.contains(ppid) && !tree.contains(pid) {
                    tree.push(*pid);
                    grew = true;
                }
            }
        }
        let ticks: u64 = procs.iter().filter(|(p, _, _)| tree.contains(p)).map(|(_, _, t)| t).sum();
        Ok(crate::procstat::ticks(ticks))
    }

    /// How many processes the server runs now.
    pub(crate) fn processes(&self) -> usize {
        let group = self.child.id();
        std::fs::read_dir("/proc")
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| Stat::read(e.path().join("stat")).ok())
                    .filter(|stat| stat.pgrp == group)
                    .count()
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn workload() -> Workload {
        Workload { name: "t".into(), bytes: vec![], input: "x".into(), sample_shape: vec![3] }
    }

    #[test]
    fn v2_requests_carry_the_workload_input() -> anyhow::Result<()> {
        let request = grpc_request(&workload());
        assert_eq!(request.inputs[0].shape, vec![1, 3]);
        assert_eq!(request.raw_input_contents[0].len(), 12);
        let decoded = ModelInferRequest::decode(request.encode_to_vec().as_slice())?;
        assert_eq!(decoded, request);
        assert_eq!(
            rest_body(&workload()),
            r#"{"inputs": [{"name": "x", "shape": [1,3], "datatype": "FP32", "data": [0,0.05882353,0.11764706]}]}"#
        );
        let response = ModelInferResponse {
            outputs: vec![],
            raw_output_contents: vec![
                [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ],
        };
        assert_eq!(grpc_output(&response)?, vec![1.5, -2.0]);
        Ok(())
    }

    #[test]
    fn stat_lines_give_parent_and_cpu() {
        let stat = "42 (py thon) S 7 42 42 0 -1 4194560 1 0 0 0 10 20 3 4 20 0 1 0";
        let parsed = Stat::parse(stat).map(|s| (s.ppid, s.own_ticks + s.children_ticks));
        assert_eq!(parsed, Some((7, 37)));
        assert_eq!(Stat::parse("garbage"), None);
    }
}
