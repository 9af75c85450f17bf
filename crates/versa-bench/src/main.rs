//! `versa-bench`: how much does serving cost beyond the model itself?
//!
//! 1. Loads the model in-process with tract and times raw inference (the
//!    floor every server figure is compared with).
//! 2. Starts the real `versa-server` binary on loopback with the same model.
//! 3. Drives gRPC Predict and REST predict at a fixed concurrency, bounded in
//!    request count and duration, and reports requests/s and latency
//!    percentiles — each as a ratio to the raw in-process cost.
//!
//! Everything runs on this machine, on 127.0.0.1 only.

#![allow(clippy::print_stdout)] // a report tool: the table on stdout is its output

use anyhow::Context as _;
use clap::Parser;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use versa_onnx::{IntoTValue, ModelOptions, OnnxModel, TVec};
use versa_proto::serving::{
    ModelSpec, PredictRequest, prediction_service_client::PredictionServiceClient,
};
use versa_proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto};

#[derive(Debug, Parser)]
#[command(about = "Benchmark versa-server against raw in-process tract")]
struct Args {
    /// Model: mlp (784→512→256→10).
    #[arg(long, default_value = "mlp")]
    model: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Requests per protocol (upper bound).
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Time limit per protocol, seconds (upper bound).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// The versa-server binary (default: next to this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Serve with request batching: `--enable_batching` with this
    /// max_batch_size (0: off). batch_timeout_micros is 0: batches form while
    /// the batch threads are busy.
    #[arg(long, default_value_t = 0)]
    batching: usize,
}

/// Latency statistics of one run.
#[derive(Debug)]
struct Stats {
    count: usize,
    failed: usize,
    elapsed: Duration,
    sorted: Vec<Duration>,
}

impl Stats {
    fn new(mut latencies: Vec<Duration>, failed: usize, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        Self { count: latencies.len(), failed, elapsed, sorted: latencies }
    }

    fn pct(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let ix = ((self.sorted.len() as f64 - 1.0) * p).round() as usize;
        self.sorted[ix]
    }

    fn rps(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Workload {
    bytes: Vec<u8>,
    input: String,
    width: usize,
}

fn workload(name: &str) -> anyhow::Result<Workload> {
    match name {
        "mlp" => Ok(Workload {
            bytes: versa_testmodels::mlp(&[784, 512, 256, 10]),
            input: "input".into(),
            width: 784,
        }),
        other => anyhow::bail!("unknown model {other}"),
    }
}

/// Raw tract: batch-1 runs on one thread, no serving around them.
fn raw_baseline(
    dir: &Path,
    w: &Workload,
    requests: usize,
    limit: Duration,
) -> anyhow::Result<Stats> {
    let model =
        OnnxModel::load(dir, ModelOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let input = versa_onnx::convert::tensor_from_vec(&[1, w.width], vec![0.5f32; w.width]);
    for _ in 0..50 {
        model
            .run(TVec::from_iter([input.clone().into_tvalue()]))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mut latencies = Vec::with_capacity(requests);
    let started = Instant::now();
    while latencies.len() < requests && started.elapsed() < limit {
        let t = Instant::now();
        let inputs = TVec::from_iter([input.clone().into_tvalue()]);
        model.run(inputs).map_err(|e| anyhow::anyhow!("{e}"))?;
        latencies.push(t.elapsed());
    }
    Ok(Stats::new(latencies, 0, started.elapsed()))
}

/// Raw tract on every core at once (one thread per core, batch 1): the
/// most requests per second the model allows on this machine.
fn raw_parallel(dir: &Path, w: &Workload, requests: usize) -> anyhow::Result<f64> {
    let model = std::sync::Arc::new(
        OnnxModel::load(dir, ModelOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let input = versa_onnx::convert::tensor_from_vec(&[1, w.width], vec![0.5f32; w.width]);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (model, input) = (model.clone(), input.clone());
            scope.spawn(move || {
                for _ in 0..requests / threads {
                    let _ = model.run(TVec::from_iter([input.clone().into_tvalue()]));
                }
            });
        }
    });
    Ok((requests / threads * threads) as f64 / started.elapsed().as_secs_f64())
}

struct Server {
    child: Child,
    grpc: u16,
    rest: u16,
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

fn start_server(binary: &Path, base: &Path, batching: usize) -> anyhow::Result<Server> {
    let (grpc, rest) = (free_port()?, free_port()?);
    let mut extra = Vec::new();
    if batching > 0 {
        let file = base.with_file_name("batching.config");
        std::fs::write(
            &file,
            format!(
                "max_batch_size {{ value: {batching} }} max_enqueued_batches {{ value: 1000 }}"
            ),
        )?;
        extra.push("--enable_batching".to_owned());
        extra.push(format!("--batching_parameters_file={}", file.display()));
    }
    let mut child = Command::new(binary)
        .args(extra)
        .args([
            "--bind_address=127.0.0.1".to_owned(),
            format!("--port={grpc}"),
            format!("--rest_api_port={rest}"),
            "--model_name=bench".to_owned(),
            format!("--model_base_path={}", base.display()),
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
    Ok(Server { child, grpc, rest })
}

fn request(w: &Workload) -> PredictRequest {
    let tensor = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: [1, w.width as i64]
                .iter()
                .map(|&size| tensor_shape_proto::Dim { size, name: String::new() })
                .collect(),
            unknown_rank: false,
        }),
        float_val: vec![0.5; w.width],
        ..TensorProto::default()
    };
    PredictRequest {
        model_spec: Some(ModelSpec { name: "bench".into(), ..ModelSpec::default() }),
        inputs: [(w.input.clone(), tensor)].into_iter().collect(),
        ..PredictRequest::default()
    }
}

async fn load_test<F, Fut>(concurrency: usize, requests: usize, limit: Duration, make: F) -> Stats
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    // Warm-up (plans, connections).
    for _ in 0..50 {
        make().await;
    }
    let per_client = requests.div_ceil(concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            let mut failed = 0;
            while latencies.len() + failed < per_client && started.elapsed() < limit {
                let t = Instant::now();
                if make().await {
                    latencies.push(t.elapsed());
                } else {
                    failed += 1;
                }
            }
            (latencies, failed)
        }));
    }
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((l, f)) = t.await {
            all.extend(l);
            failed += f;
        }
    }
    Stats::new(all, failed, started.elapsed())
}

fn row(name: &str, s: &Stats, raw_p50: Duration) -> String {
    format!(
        "| {name} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}× (+{:.0} µs) |",
        s.count,
        s.failed,
        s.rps(),
        us(s.pct(0.5)),
        us(s.pct(0.9)),
        us(s.pct(0.99)),
        us(s.pct(1.0)),
        us(s.pct(0.5)) / us(raw_p50),
        us(s.pct(0.5)) - us(raw_p50),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let w = workload(&args.model)?;
    let limit = Duration::from_secs(args.duration);
    let root = tempfile::tempdir()?;
    let base = root.path().join("bench");
    let dir = versa_testmodels::write_version(&base, 1, &w.bytes)?;

    let raw = raw_baseline(&dir, &w, args.requests, limit)?;
    let raw_all_cores = raw_parallel(&dir, &w, args.requests)?;
    let binary = match args.server {
        Some(b) => b,
        None => std::env::current_exe()?.parent().context("exe dir")?.join("versa-server"),
    };
    let server = start_server(&binary, &base, args.batching)?;

    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", server.grpc))?
            .connect()
            .await?;
    let grpc_request = request(&w);
    let grpc = load_test(args.concurrency, args.requests, limit, move || {
        let mut client = PredictionServiceClient::new(channel.clone());
        let request = grpc_request.clone();
        async move { client.predict(request).await.is_ok() }
    })
    .await;

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/v1/models/bench:predict", server.rest);
    let body = format!("{{\"instances\": [[{}]]}}", vec!["0.5"; w.width].join(","));
    let rest = load_test(args.concurrency, args.requests, limit, move || {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            http.post(&url)
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;

    let raw_p50 = raw.pct(0.5);
    println!(
        "model: {} · concurrency: {} · cores: {} · batching: {}",
        args.model,
        args.concurrency,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        if args.batching > 0 { format!("max_batch_size {}", args.batching) } else { "off".into() }
    );
    println!("raw tract on every core at once, batch 1: {raw_all_cores:.0} req/s");
    println!();
    println!(
        "| path | ok | failed | req/s | p50 µs | p90 µs | p99 µs | max µs | p50 vs raw tract |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!("{}", row("raw tract, in-process, batch 1", &raw, raw_p50));
    println!("{}", row("gRPC Predict", &grpc, raw_p50));
    println!("{}", row("REST :predict (instances)", &rest, raw_p50));
    drop(server);
    Ok(())
}
