//! One request of each kind to each server, before any timed run: both
//! servers must compute the same thing, and the bodies the generators send
//! must be right.

use crate::peer::{self, MlServer};
use crate::server::Server;
use crate::workload::Workload;
use anyhow::Context as _;
use versa_proto::serving::prediction_service_client::PredictionServiceClient;

/// Values of every number in a JSON value, depth first.
fn numbers(value: &serde_json::Value, out: &mut Vec<f32>) {
    match value {
        serde_json::Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN) as f32),
        serde_json::Value::Array(items) => items.iter().for_each(|v| numbers(v, out)),
        _ => {}
    }
}

pub(crate) async fn rest_output(url: &str, body: &str, key: &str) -> anyhow::Result<Vec<f32>> {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "POST {url}: {status}: {text}");
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let value = match key {
        "predictions" => &json["predictions"],
        _ => &json["outputs"][0]["data"],
    };
    let mut out = Vec::new();
    numbers(value, &mut out);
    Ok(out)
}

/// The first output of versa-server's gRPC Predict for the workload.
pub(crate) async fn versa_grpc_output(server: &Server, w: &Workload) -> anyhow::Result<Vec<f32>> {
    let mut client = PredictionServiceClient::connect(server.grpc_url()).await?;
    let response = client.predict(w.grpc_request()).await?.into_inner();
    let tensor = response.outputs.values().next().context("no output in PredictResponse")?;
    if tensor.tensor_content.is_empty() {
        return Ok(tensor.float_val.clone());
    }
    Ok(tensor
        .tensor_content
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

pub(crate) async fn mlserver_grpc_output(
    server: &MlServer,
    w: &Workload,
) -> anyhow::Result<Vec<f32>> {
    let url = format!("http://127.0.0.1:{}", server.grpc);
    let channel = tonic::transport::Channel::from_shared(url)?.connect().await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let codec =
        tonic_prost::ProstCodec::<peer::ModelInferRequest, peer::ModelInferResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(peer::GRPC_PATH);
    let response = grpc.unary(tonic::Request::new(peer::grpc_request(w)), path, codec).await?;
    peer::grpc_output(response.get_ref())
}

/// Fails unless `got` is `want` within 1e-4 (relative for values above 1).
pub(crate) fn same_output(what: &str, got: &[f32], want: &[f32]) -> anyhow::Result<()> {
    anyhow::ensure!(
        got.len() == want.len() && !want.is_empty(),
        "{what}: {} values, versa-server gRPC gave {}",
        got.len(),
        want.len()
    );
    let worst =
        got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0.0f32, f32::max);
    anyhow::ensure!(worst <= 1e-4, "{what} differs from versa-server gRPC by up to {worst:e}");
    Ok(())
}
