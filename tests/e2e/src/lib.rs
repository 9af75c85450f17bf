//! Support for end-to-end tests: start the real `versa-server` binary on
//! loopback with free ports, wait for it to serve (by reading its own log, not
//! by sleeping), talk to it with real gRPC and HTTP clients, and kill it when
//! the test ends — even when the test panics.

pub mod server;
pub mod soak;

pub use server::{ServerProcess, free_port, server_binary};

use std::time::Duration;
use versa_proto::serving::{
    ModelSpec, PredictRequest, model_service_client::ModelServiceClient, model_spec,
    prediction_service_client::PredictionServiceClient,
};
use versa_proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto};

/// Generous bound for anything a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub type PredictionClient = PredictionServiceClient<tonic::transport::Channel>;
pub type ModelClient = ModelServiceClient<tonic::transport::Channel>;

/// A float tensor of `shape` filled with `values`.
pub fn f32_tensor(shape: &[i64], values: Vec<f32>) -> TensorProto {
    TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: shape
                .iter()
                .map(|&size| tensor_shape_proto::Dim { size, name: String::new() })
                .collect(),
            unknown_rank: false,
        }),
        float_val: values,
        ..TensorProto::default()
    }
}

/// A spec for the latest version, a version, or a label.
pub fn spec(name: &str, choice: Choice<'_>) -> ModelSpec {
    ModelSpec {
        name: name.to_owned(),
        version_choice: match choice {
            Choice::Latest => None,
            Choice::Version(v) => Some(model_spec::VersionChoice::Version(v)),
            Choice::Label(l) => Some(model_spec::VersionChoice::VersionLabel(l.to_owned())),
        },
        signature_name: String::new(),
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Choice<'a> {
    Latest,
    Version(i64),
    Label(&'a str),
}

/// A Predict request for the `versioned` test model (input `x`, [1, 4] zeros):
/// the answer is the version number in every cell.
pub fn versioned_request(name: &str, choice: Choice<'_>) -> PredictRequest {
    PredictRequest {
        model_spec: Some(spec(name, choice)),
        inputs: [("x".to_owned(), f32_tensor(&[1, 4], vec![0.0; 4]))].into_iter().collect(),
        ..PredictRequest::default()
    }
}

/// The sum of every sample of `/metrics` text whose series starts with
/// `series` (a name, optionally with the start of its labels:
/// `versa_shed_requests_total{reason="inference_queue"`).
pub fn metric_sum(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(series))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The server's `/metrics` text.
pub async fn metrics_text(server: &ServerProcess) -> String {
    reqwest::get(server.rest_url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// Writes `request` on a new connection to 127.0.0.1:`port` and returns what
/// the server answers until it closes the connection or `patience` passes.
pub async fn raw_http(port: u16, request: &[u8], patience: Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(patience, stream.read_to_end(&mut answer)).await;
    answer
}

/// Runs `check` until it returns `Some`, at most until `PATIENCE` passes,
/// pausing `every` between tries. For state that lives in another process,
/// where no notification reaches the test.
pub async fn eventually<T, F, Fut>(what: &str, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(every).await;
    }
}
