//! The gRPC API: `tensorflow.serving.PredictionService` and
//! `tensorflow.serving.ModelService`, as TensorFlow Serving answers them.

pub mod channel_args;
pub mod guard;

use crate::admission::Ticket;
use crate::core::ReloadOutcome;
use crate::error::{ServingError, proto_code};
use crate::recorded::Recorded;
use crate::serving::{Answered, ModelRequest, Serving, check_input_names, select_outputs};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use versa_core::Code;
use versa_onnx::convert::{TensorBudget, tensor_from_proto, tensor_to_proto};
use versa_onnx::{IntoTValue, TVec};
use versa_proto::serving::{
    ClassificationRequest, ClassificationResponse, GetModelMetadataRequest,
    GetModelMetadataResponse, GetModelStatusRequest, GetModelStatusResponse, Metric,
    MultiInferenceRequest, MultiInferenceResponse, PredictRequest, PredictResponse,
    RegressionRequest, RegressionResponse, ReloadConfigRequest, ReloadConfigResponse, StatusProto,
    metric, model_service_server::ModelService, model_spec,
    prediction_service_server::PredictionService,
};

pub use versa_proto::headers::{
    LEADER_EPOCH as LEADER_EPOCH_HEADER, RELOAD_OUTCOME as RELOAD_OUTCOME_HEADER,
};

/// The deadline a gRPC client set (`grpc-timeout` header), if any. The
/// value has at most 8 digits (gRPC's wire spec); anything else is ignored.
pub fn deadline_of<T>(request: &Request<T>) -> Option<Instant> {
    timeout_of(request).map(crate::deadline::after)
}

/// The `grpc-timeout` a client set, as [`deadline_of`] reads it: how long
/// after its arrival the request must be answered.
pub fn timeout_of<T>(request: &Request<T>) -> Option<Duration> {
    let raw = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (value, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if value.is_empty() || value.len() > 8 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = value.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    };
    Some(timeout)
}

/// The `x-versa-route-key` request metadata: makes a split's choice sticky.
pub fn route_key<T>(request: &Request<T>) -> Option<String> {
    request.metadata().get(crate::ROUTE_KEY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Response metadata naming the version (and label) that answered.
fn tell_client(metadata: &mut tonic::metadata::MetadataMap, answered: &Answered) {
    if let Some(version) = answered.version
        && let Ok(v) = version.to_string().parse()
    {
        metadata.insert(crate::VERSION_HEADER, v);
    }
    if let Some(label) = &answered.label
        && let Ok(v) = label.parse()
    {
        metadata.insert(crate::LABEL_HEADER, v);
    }
}

fn missing_spec() -> Status {
    ServingError::invalid_argument("Missing ModelSpec").into()
}

fn unimplemented(api: &str) -> Status {
    Status::unimplemented(format!(
        "{api} takes tf.Example inputs and needs a TensorFlow classify/regress signature; ONNX models served by versa-server have only the predict signature: use Predict"
    ))
}

#[tonic::async_trait]
impl PredictionService for Serving {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let started = std::time::Instant::now();
        let timeout = timeout_of(&request);
        let deadline = timeout.map(crate::deadline::after);
        let key = route_key(&request);
        let ticket = request.extensions().get::<guard::TicketHandle>().map(|t| Arc::clone(&t.0));
        if let Some(ticket) = &ticket {
            // Admitted as its body ended; a request without one is admitted here.
            ticket.admit()?;
        }
        let body = request.into_inner();
        let Some(spec) = body.model_spec.as_ref() else { return Err(missing_spec()) };
        let model = ModelRequest::from_spec(spec).with_route_key(key);
        let mut recorded = Recorded::new(self, &model.name, ("Predict", "GRPC"), started, deadline)
            .with_client_timeout(timeout);
        let result =
            self.predict_proto(&model, body, deadline, &mut recorded.answered, ticket).await;
        let code = result.as_ref().map_or_else(|e| e.code, |_| Code::Ok);
        let answered = recorded.answered.clone();
        recorded.finish(code);
        let mut response = Response::new(result?);
        tell_client(response.metadata_mut(), &answered);
        Ok(response)
    }

    async fn get_model_metadata(
        &self,
        request: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        let key = route_key(&request);
        let body = request.into_inner();
        let Some(spec) = body.model_spec.as_ref() else { return Err(missing_spec()) };
        let model = ModelRequest::from_spec(spec).with_route_key(key);
        Ok(Response::new(self.metadata(&model, &body.metadata_field)?))
    }

    async fn classify(
        &self,
        _: Request<ClassificationRequest>,
    ) -> Result<Response<ClassificationResponse>, Status> {
        Err(unimplemented("Classify"))
    }

    async fn regress(
        &self,
        _: Request<RegressionRequest>,
    ) -> Result<Response<RegressionResponse>, Status> {
        Err(unimplemented("Regress"))
    }

    async fn multi_inference(
        &self,
        _: Request<MultiInferenceRequest>,
    ) -> Result<Response<MultiInferenceResponse>, Status> {
        Err(unimplemented("MultiInference"))
    }
}

impl Serving {
    /// Converts the request's inputs (each reserved with the request's
    /// ticket before it is built), drops the decoded message, and runs.
    async fn predict_proto(
        &self,
        model: &ModelRequest,
        body: PredictRequest,
        deadline: Option<Instant>,
        answered: &mut Answered,
        held: Option<Arc<Ticket>>,
    ) -> Result<PredictResponse, ServingError> {
        let ticket = held.as_deref();
        let resolved = self.resolve(model)?;
        *answered = Answered::from(&resolved);
        let signature = resolved.signature();
        check_input_names(signature, body.inputs.keys().map(String::as_str))?;
        let outputs = select_outputs(signature, &body.output_filter)?;
        let message_bytes = ticket.map_or(0, Ticket::reserved);
        let inputs = {
            let reserve = |n: usize| match ticket {
                Some(t) => t.reserve(n).map_err(|e| e.message),
                None => Ok(()),
            };
            let limit = self.limits.max_request_tensor_bytes;
            let mut budget =
                TensorBudget::new(limit, "--max_request_tensor_bytes").reserving(&reserve);
            let mut inputs = TVec::with_capacity(signature.inputs.len());
            for spec in &signature.inputs {
                let proto = body.inputs.get(&spec.alias).ok_or_else(|| {
                    ServingError::invalid_argument(format!("missing input {}", spec.alias))
                })?;
                inputs.push(tensor_from_proto(proto, spec, &mut budget)?.into_tvalue());
            }
            inputs
        };
        // Only the inputs are held from here on.
        drop(body);
        if let Some(ticket) = ticket {
            ticket.release(message_bytes);
        }
        let produced = self.run(&resolved, inputs, outputs, deadline, "grpc", held).await?;
        let mut response =
            PredictResponse { model_spec: Some(resolved.response_spec()), ..Default::default() };
        for (alias, tensor) in produced {
            let proto = tensor_to_proto(&alias, &tensor, self.tensor_content_outputs)?;
            response.outputs.insert(alias, proto);
        }
        Ok(response)
    }
}

/// Metric names as the reload API takes them (`/tensorflow/cc/...`) map to
/// exposition names by replacing every character outside `[a-zA-Z0-9_]`.
pub fn exposition_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { ':' }).collect()
}

#[tonic::async_trait]
impl ModelService for Serving {
    async fn get_model_status(
        &self,
        request: Request<GetModelStatusRequest>,
    ) -> Result<Response<GetModelStatusResponse>, Status> {
        let body = request.into_inner();
        let Some(spec) = body.model_spec.as_ref() else {
            return Err(missing_spec());
        };
        // Only an explicit version narrows the answer; a label is ignored (as upstream).
        let version = match &spec.version_choice {
            Some(model_spec::VersionChoice::Version(v)) => Some(*v),
            _ => None,
        };
        Ok(Response::new(self.model_status(&spec.name, version)?))
    }

    async fn handle_reload_config_request(
        &self,
        request: Request<ReloadConfigRequest>,
    ) -> Result<Response<ReloadConfigResponse>, Status> {
        let deadline = deadline_of(&request);
        let epoch = match request.metadata().get(LEADER_EPOCH_HEADER) {
            None => None,
            Some(v) => {
                Some(v.to_str().ok().and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{LEADER_EPOCH_HEADER} must be an unsigned integer"
                    ))
                })?)
            }
        };
        let body = request.into_inner();
        let before: Vec<(String, Option<i64>)> = body
            .metric_names
            .iter()
            .map(|n| (n.clone(), self.metrics.value_of(&exposition_name(n))))
            .collect();
        let config = body.config.unwrap_or_default();
        let outcome = match self.core.reload_fenced(&config, deadline, epoch).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!("reload rejected: {e}");
                return Err(e.into());
            }
        };
        let metric = before
            .into_iter()
            .map(|(name, before)| {
                let after = self.metrics.value_of(&exposition_name(&name));
                let increase = match (before, after) {
                    (Some(b), Some(a)) => a - b,
                    (None, Some(a)) => a,
                    _ => 0,
                };
                Metric {
                    name,
                    value_increase: Some(metric::ValueIncrease::Int64ValueIncrease(increase)),
                }
            })
            .collect();
        // OK always means the config is in force; the message and the
        // outcome header say whether added models are still loading.
        let (outcome_name, message) = match &outcome {
            ReloadOutcome::Applied => ("applied", String::new()),
            ReloadOutcome::Loading(models) => {
                ("loading", format!("config in force; still loading: {}", models.join(", ")))
            }
        };
        let mut response = Response::new(ReloadConfigResponse {
            status: Some(StatusProto {
                error_code: proto_code(Code::Ok) as i32,
                error_message: message,
            }),
            metric,
        });
        response.metadata_mut().insert(
            RELOAD_OUTCOME_HEADER,
            tonic::metadata::MetadataValue::from_static(outcome_name),
        );
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let mut request = Request::new(());
        request.metadata_mut().insert("grpc-timeout", "250m".parse().expect("ascii"));
        let deadline = deadline_of(&request).expect("deadline");
        let left = deadline - Instant::now();
        assert!(left <= Duration::from_millis(250) && left > Duration::from_millis(200));
        assert_eq!(timeout_of(&request), Some(Duration::from_millis(250)));
        request.metadata_mut().insert("grpc-timeout", "1n".parse().expect("ascii"));
        assert_eq!(timeout_of(&request), Some(Duration::from_nanos(1)));
        request.metadata_mut().insert("grpc-timeout", "bogus".parse().expect("ascii"));
        assert!(deadline_of(&request).is_none());
        // The largest the spec allows, in hours: far ahead, no overflow.
        request.metadata_mut().insert("grpc-timeout", "99999999H".parse().expect("ascii"));
        assert!(deadline_of(&request).expect("far") > Instant::now());
        for absurd in ["18446744073709551615H", "123456789S", "-1S", "+5S", "é"] {
            if let Ok(v) = absurd.parse() {
                request.metadata_mut().insert("grpc-timeout", v);
                assert!(deadline_of(&request).is_none(), "{absurd}");
            }
        }
    }

    #[test]
    fn metric_names_map_to_exposition_names() {
        assert_eq!(
            exposition_name("/tensorflow/cc/saved_model/load_attempt_count"),
            ":tensorflow:cc:saved_model:load_attempt_count"
        );
    }
}
