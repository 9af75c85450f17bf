//! Asking a serving Pod what it serves, as a TF Serving client would.

use anyhow::Context as _;
use versa_proto::serving::model_service_client::ModelServiceClient;
use versa_proto::serving::{GetModelStatusRequest, ModelSpec};

/// The first version `GetModelStatus` reports for `model` on the gRPC port
/// (8500) of `ip`.
pub async fn grpc_model_version(ip: &str, model: &str) -> anyhow::Result<i64> {
    let mut grpc = ModelServiceClient::connect(format!("http://{ip}:8500"))
        .await
        .with_context(|| format!("gRPC on {ip}:8500"))?;
    let request = GetModelStatusRequest {
        model_spec: Some(ModelSpec { name: model.into(), ..ModelSpec::default() }),
    };
    let status = grpc.get_model_status(request).await.context("GetModelStatus")?.into_inner();
    status.model_version_status.first().map(|v| v.version).context("no version reported")
}
