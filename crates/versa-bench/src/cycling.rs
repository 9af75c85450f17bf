//! `--scenario cycling`: a client that sends every batch size from 1 to
//! `--sizes` in turn, against one that always sends batch 1 — what a client
//! cycling batch sizes costs the server (its CPU per request and its
//! latency), now that a new batch size runs on the symbolic plan while its
//! own plan is built in the background, at most one per model per
//! `--plan_build_interval_ms`.

use crate::load::{self, Bounds, Call};
use crate::scenarios::Setup;
use crate::server::{Server, ServerOptions};
use crate::stats::us;
use crate::workload::{MODEL_NAME, Workload};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use versa_proto::serving::prediction_service_client::PredictionServiceClient;
use versa_proto::serving::{ModelSpec, PredictRequest};
use versa_proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto};

/// gRPC Predict whose batch size goes 1, 2, …, `sizes`, 1, 2, …
#[derive(Clone, Debug)]
struct Cycling {
    channel: tonic::transport::Channel,
    requests: Arc<Vec<PredictRequest>>,
    next: Arc<AtomicUsize>,
}

fn request(workload: &Workload, rows: usize) -> PredictRequest {
    let dims = std::iter::once(rows).chain(workload.sample_shape.iter().copied());
    let tensor = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: dims
                .map(|size| tensor_shape_proto::Dim { size: size as i64, name: String::new() })
                .collect(),
            unknown_rank: false,
        }),
        float_val: vec![0.5; rows * workload.sample_len()],
        ..TensorProto::default()
    };
    PredictRequest {
        model_spec: Some(ModelSpec { name: MODEL_NAME.into(), ..ModelSpec::default() }),
        inputs: [(workload.input.clone(), tensor)].into(),
        ..PredictRequest::default()
    }
}

impl Call for Cycling {
    async fn call(&self) -> bool {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.requests.len();
        let mut client = PredictionServiceClient::new(self.channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        client.predict(self.requests[n].clone()).await.is_ok()
    }
}

pub(crate) async fn cycling(setup: &Setup, sizes: usize) -> anyhow::Result<()> {
    let w = &setup.workload;
    let root = tempfile::tempdir()?;
    let base = root.path().join("model");
    versa_testmodels::write_version(&base, 1, &w.bytes)?;
    println!(
        "model: {} · batch sizes 1..={sizes} in turn vs batch 1 · concurrency {} · flags {:?}",
        w.name, setup.concurrency, setup.server_flags
    );
    println!();
    println!(
        "| client | requests | req/s | p50 µs | p99 µs | rows/s | server CPU per request µs | per row µs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, cycle) in [("batch 1 always", 1usize), ("sizes cycling", sizes.max(1))] {
        let options =
            ServerOptions { extra: setup.server_flags.clone(), ..ServerOptions::default() };
        let server = Server::start(&setup.server, &base, &options)?;
        let channel = tonic::transport::Channel::from_shared(server.grpc_url())?.connect().await?;
        let requests: Vec<PredictRequest> = (1..=cycle).map(|rows| request(w, rows)).collect();
        let rows_per_cycle: usize = (1..=cycle).sum();
        let call = Cycling { channel, requests: Arc::new(requests), next: Arc::default() };
        let bounds = Bounds::new(setup.concurrency, setup.requests, setup.limit);
        let cpu_before = server.cpu_time()?;
        let (samples, elapsed) = load::run(&bounds, call, Instant::now()).await;
        let cpu = server.cpu_time()?.saturating_sub(cpu_before);
        let stats = load::stats(&samples, elapsed);
        let done = (stats.count + stats.failed).max(1);
        let rows = done as f64 * rows_per_cycle as f64 / cycle as f64;
        println!(
            "| {name} | {} ({} failed) | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
            stats.count,
            stats.failed,
            stats.rps(),
            us(stats.pct(0.5)),
            us(stats.pct(0.99)),
            rows / elapsed.as_secs_f64(),
            us(cpu / done as u32),
            cpu.as_secs_f64() * 1e6 / rows.max(1.0),
        );
        drop(server);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
