//! Closed-loop load: a fixed number of clients, each sending its next request
//! when the previous one answered, bounded in request count and time.

use crate::stats::{Sample, Stats};
use crate::workload::{MODEL_NAME, Workload};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use versa_proto::serving::prediction_service_client::PredictionServiceClient;

/// Bounds of one load run.
#[derive(Debug, Clone)]
pub(crate) struct Bounds {
    pub(crate) concurrency: usize,
    pub(crate) requests: usize,
    pub(crate) limit: Duration,
    /// Ends the run early when set.
    pub(crate) stop: Arc<AtomicBool>,
}

impl Bounds {
    pub(crate) fn new(concurrency: usize, requests: usize, limit: Duration) -> Self {
        Self { concurrency, requests, limit, stop: Arc::default() }
    }
}

/// One request; resolves to whether it succeeded.
pub(crate) trait Call: Clone + Send + Sync + 'static {
    fn call(&self) -> impl Future<Output = bool> + Send;
}

/// A few requests first (connections, plans).
pub(crate) async fn warm_up<C: Call>(call: &C) {
    for _ in 0..20 {
        call.call().await;
    }
}

/// Runs `call` in `bounds.concurrency` loops; every request becomes a
/// [`Sample`] timed from `started`. Returns the samples and the run's length.
pub(crate) async fn run<C: Call>(
    bounds: &Bounds,
    call: C,
    started: Instant,
) -> (Vec<Sample>, Duration) {
    let per_client = bounds.requests.div_ceil(bounds.concurrency);
    let mut tasks = Vec::new();
    for _ in 0..bounds.concurrency {
        let (call, limit, stop) = (call.clone(), bounds.limit, Arc::clone(&bounds.stop));
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_client.min(1 << 20));
            while samples.len() < per_client
                && started.elapsed() < limit
                && !stop.load(Ordering::Relaxed)
            {
                let t = Instant::now();
                let ok = call.call().await;
                samples.push(Sample { started: t - started, latency: t.elapsed(), ok });
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(samples) = t.await {
            all.extend(samples);
        }
    }
    (all, started.elapsed())
}

pub(crate) fn stats<'a>(samples: impl IntoIterator<Item = &'a Sample>, elapsed: Duration) -> Stats {
    let (ok, failed): (Vec<&Sample>, Vec<&Sample>) = samples.into_iter().partition(|s| s.ok);
    Stats::new(ok.iter().map(|s| s.latency).collect(), failed.len(), elapsed)
}

/// gRPC Predict over one shared HTTP/2 channel.
#[derive(Clone, Debug)]
pub(crate) struct GrpcPredict {
    channel: tonic::transport::Channel,
    request: Arc<versa_proto::serving::PredictRequest>,
}

impl GrpcPredict {
    pub(crate) async fn connect(url: String, workload: &Workload) -> anyhow::Result<Self> {
        let channel = tonic::transport::Channel::from_shared(url)?.connect().await?;
        Ok(Self { channel, request: Arc::new(workload.grpc_request()) })
    }
}

impl Call for GrpcPredict {
    async fn call(&self) -> bool {
        let mut client = PredictionServiceClient::new(self.channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        client.predict((*self.request).clone()).await.is_ok()
    }
}

/// REST `:predict` with a row-format body.
#[derive(Clone, Debug)]
pub(crate) struct RestPredict {
    http: reqwest::Client,
    url: Arc<str>,
    body: Arc<str>,
}

impl RestPredict {
    pub(crate) fn new(port: u16, workload: &Workload) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: format!("http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict").into(),
            body: workload.rest_body().into(),
        }
    }
}

impl Call for RestPredict {
    async fn call(&self) -> bool {
        self.http
            .post(&*self.url)
            .body(self.body.to_string())
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

/// gRPC `grpc.health.v1.Health/Check`: the cost of a gRPC round trip with
/// no model work, on the same channel settings.
#[derive(Clone, Debug)]
pub(crate) struct GrpcHealth {
    channel: tonic::transport::Channel,
}

impl GrpcHealth {
    pub(crate) async fn connect(url: String) -> anyhow::Result<Self> {
        Ok(Self { channel: tonic::transport::Channel::from_shared(url)?.connect().await? })
    }
}

impl Call for GrpcHealth {
    async fn call(&self) -> bool {
        let mut client = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok()
    }
}

/// REST `GET /live`: an HTTP round trip with no model work.
#[derive(Clone, Debug)]
pub(crate) struct RestLive {
    http: reqwest::Client,
    url: Arc<str>,
}

impl RestLive {
    pub(crate) fn new(port: u16) -> Self {
        Self { http: reqwest::Client::new(), url: format!("http://127.0.0.1:{port}/live").into() }
    }
}

impl Call for RestLive {
    async fn call(&self) -> bool {
        self.http.get(&*self.url).send().await.is_ok_and(|r| r.status().is_success())
    }
}
