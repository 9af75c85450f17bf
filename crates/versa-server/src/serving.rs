//! What every API does, whatever the transport: resolve a model spec to a
//! loaded version, check inputs and outputs against its signature, run it on
//! the inference pool, and answer status and metadata queries.

use crate::core::ServerCore;
use crate::error::{ServingError, proto_code};
use crate::metrics::Metrics;
use crate::recorded::{Finished, Sink};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use versa_core::{Code, ManagerState, ServableHandle, VersionChoice};
use versa_onnx::{DEFAULT_SIGNATURE, InferencePool, OnnxModel, Signature};
use versa_proto::serving::{
    GetModelMetadataResponse, GetModelStatusResponse, ModelSpec, ModelVersionStatus,
    SignatureDefMap, StatusProto, model_spec,
};

/// What one request may cost (flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// `--max_request_tensor_bytes`.
    pub max_request_tensor_bytes: usize,
}

/// The value of the `model` label for requests naming a model that is not
/// configured: one series for all of them, whatever names clients send.
pub const UNKNOWN_MODEL: &str = "__unknown__";

/// The server's shared request-handling state.
#[derive(Debug, Clone)]
pub struct Serving {
    pub core: Arc<ServerCore>,
    pub pool: InferencePool,
    pub metrics: Arc<Metrics>,
    /// Shadow traffic: copies of requests run on models' mirror versions.
    pub mirror: Arc<crate::mirror::Mirror>,
    pub admission: crate::admission::Admission,
    pub limits: RequestLimits,
    /// Large REST bodies decoded at once (one per core).
    pub decode_slots: Arc<tokio::sync::Semaphore>,
    /// `--enable_serialization_as_tensor_content`.
    pub tensor_content_outputs: bool,
    /// Request batching (`--enable_batching`), for models with a batch dimension.
    pub batcher: Option<crate::batching::Batcher>,
    /// `--telemetry_min_client_deadline_ms` (zero: off): see
    /// [`crate::telemetry::class_by_wait`].
    pub min_client_deadline: Duration,
}

/// Which model, version and signature a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRequest {
    pub name: String,
    pub choice: VersionChoice,
    /// Empty means `serving_default`.
    pub signature: String,
    /// `x-versa-route-key`: makes a traffic split's choice sticky.
    pub route_key: Option<String>,
}

impl ModelRequest {
    /// From a gRPC `ModelSpec`.
    pub fn from_spec(spec: &ModelSpec) -> Self {
        let choice = match &spec.version_choice {
            Some(model_spec::VersionChoice::Version(v)) => VersionChoice::Specific(*v),
            Some(model_spec::VersionChoice::VersionLabel(l)) => VersionChoice::Label(l.clone()),
            None => VersionChoice::Latest,
        };
        Self {
            name: spec.name.clone(),
            choice,
            signature: spec.signature_name.clone(),
            route_key: None,
        }
    }

    pub fn with_route_key(mut self, key: Option<String>) -> Self {
        self.route_key = key.filter(|k| !k.is_empty());
        self
    }

    pub fn label(&self) -> Option<&str> {
        match &self.choice {
            VersionChoice::Label(l) => Some(l),
            _ => None,
        }
    }
}

/// A request bound to one loaded version (kept alive while this lives).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub handle: ServableHandle<OnnxModel>,
    pub signature_name: String,
    /// The label that led to the version (named, or chosen by a split).
    pub label: Option<String>,
    /// True when the model's traffic split chose the version (the request
    /// named neither a version nor a label).
    pub by_split: bool,
    /// The request's route key (sticky splits and mirror samples).
    pub route_key: Option<String>,
}

/// Who answered a request, for metrics and response headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answered {
    pub version: Option<i64>,
    pub label: Option<String>,
    /// True when the model's traffic split chose the version: such requests
    /// are counted apart from those that named their version or label, so
    /// that a client naming the canary's label cannot weigh in on the
    /// split's canary analysis ([`crate::metrics::SPLIT`]).
    pub split: bool,
}

impl Answered {
    pub fn from(resolved: &Resolved) -> Self {
        Self {
            version: Some(resolved.version()),
            label: resolved.label.clone(),
            split: resolved.by_split,
        }
    }
}

impl Resolved {
    pub fn signature(&self) -> &Signature {
        self.handle.signature()
    }

    pub fn version(&self) -> i64 {
        self.handle.id().version
    }

    /// The `ModelSpec` of a response: name, resolved version, signature.
    pub fn response_spec(&self) -> ModelSpec {
        ModelSpec {
            name: self.handle.id().name.clone(),
            version_choice: Some(model_spec::VersionChoice::Version(self.version())),
            signature_name: self.signature_name.clone(),
        }
    }
}

fn set(names: &BTreeSet<&str>) -> String {
    names.iter().copied().collect::<Vec<_>>().join(",")
}

/// The signature a request names (empty: `serving_default`), if the model has it.
pub fn signature_name(requested: &str) -> Result<String, ServingError> {
    if requested.is_empty() || requested == DEFAULT_SIGNATURE {
        return Ok(DEFAULT_SIGNATURE.to_owned());
    }
    Err(ServingError::failed_precondition(format!(
        "Serving signature key \"{requested}\" not found."
    )))
}

/// The input aliases of a request must be exactly the signature's.
pub fn check_input_names<'a>(
    signature: &Signature,
    provided: impl Iterator<Item = &'a str>,
) -> Result<(), ServingError> {
    let sent: BTreeSet<&str> = provided.collect();
    let expected: BTreeSet<&str> = signature.inputs.iter().map(|s| s.alias.as_str()).collect();
    if sent == expected {
        return Ok(());
    }
    if sent.len() != expected.len() {
        let extra: BTreeSet<&str> = sent.difference(&expected).copied().collect();
        let missing: BTreeSet<&str> = expected.difference(&sent).copied().collect();
        return Err(ServingError::invalid_argument(format!(
            "input size does not match signature: {}!={} len({{{}}}) != len({{{}}}). Sent extra: {{{}}}. Missing but required: {{{}}}.",
            sent.len(),
            expected.len(),
            set(&sent),
            set(&expected),
            set(&extra),
            set(&missing),
        )));
    }
    let unknown = sent.difference(&expected).next().copied().unwrap_or_default();
    Err(ServingError::invalid_argument(format!(
        "input tensor alias not found in signature: {unknown}. Inputs expected to be in the set {{{}}}.",
        set(&expected)
    )))
}

/// The outputs to return, in signature order of the filter (empty filter: all).
pub fn select_outputs(
    signature: &Signature,
    filter: &[String],
) -> Result<Vec<usize>, ServingError> {
    if filter.is_empty() {
        return Ok((0..signature.outputs.len()).collect());
    }
    let mut chosen = Vec::with_capacity(filter.len());
    for alias in filter {
        let Some((ix, _)) = signature.output(alias) else {
            let expected: BTreeSet<&str> =
                signature.outputs.iter().map(|s| s.alias.as_str()).collect();
            return Err(ServingError::invalid_argument(format!(
                "output tensor alias not found in signature: {alias} Outputs expected to be in the set {{{}}}.",
                set(&expected)
            )));
        };
        if chosen.contains(&ix) {
            return Err(ServingError::invalid_argument(format!(
                "duplicate output tensor alias: {alias}"
            )));
        }
        chosen.push(ix);
    }
    Ok(chosen)
}

impl Serving {
    /// Resolves a request to a loaded version — through its model's traffic
    /// split when it names neither version nor label — and counts the split's
    /// choices and fallbacks.
    fn route(&self, request: &ModelRequest) -> Result<versa_core::Routed<OnnxModel>, ServingError> {
        let map = self.core.serving_map();
        let routed =
            map.resolve_routed(&request.name, &request.choice, request.route_key.as_deref())?;
        if routed.by_split {
            let label = routed.label.as_deref().unwrap_or_default();
            self.metrics.routed_by_split.with_label_values(&[request.name.as_str(), label]).inc();
            if let Some(from) = &routed.fell_back_from {
                let model = request.name.as_str();
                self.metrics
                    .split_fallbacks
                    .with_label_values(&[model, from.as_str(), label])
                    .inc();
                tracing::warn!(model, from = %from, to = %label, "split label has no AVAILABLE version: fell back");
            }
        }
        Ok(routed)
    }

    /// Resolves a request to a loaded version and checks its signature name.
    pub fn resolve(&self, request: &ModelRequest) -> Result<Resolved, ServingError> {
        let routed = self.route(request)?;
        let signature_name = signature_name(&request.signature)?;
        Ok(Resolved {
            handle: routed.handle,
            signature_name,
            label: routed.label,
            by_split: routed.by_split,
            route_key: request.route_key.clone(),
        })
    }

    /// `GetModelStatus`: every tracked version, highest first, or one version.
    pub fn model_status(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<GetModelStatusResponse, ServingError> {
        let states = self.core.monitor().model_states(name).unwrap_or_default();
        let status_of = |v: i64, e: &versa_core::ServableStateEvent| ModelVersionStatus {
            version: v,
            state: e.state.state.value(),
            status: Some(match &e.state.health {
                Ok(()) => StatusProto {
                    error_code: proto_code(Code::Ok) as i32,
                    error_message: String::new(),
                },
                Err(err) => StatusProto {
                    error_code: proto_code(err.code) as i32,
                    error_message: err.message.clone(),
                },
            }),
        };
        let statuses: Vec<ModelVersionStatus> = match version {
            Some(v) => {
                let e = states.get(&v).ok_or_else(|| {
                    ServingError::not_found(format!("Could not find version {v} of model {name}"))
                })?;
                vec![status_of(v, e)]
            }
            None => {
                if states.is_empty() {
                    return Err(ServingError::not_found(format!(
                        "Could not find any versions of model {name}"
                    )));
                }
                states.iter().rev().map(|(v, e)| status_of(*v, e)).collect()
            }
        };
        Ok(GetModelStatusResponse { model_version_status: statuses })
    }

    /// `GetModelMetadata` with `signature_def`.
    pub fn metadata(
        &self,
        request: &ModelRequest,
        fields: &[String],
    ) -> Result<GetModelMetadataResponse, ServingError> {
        if fields.is_empty() {
            return Err(ServingError::invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field",
            ));
        }
        if let Some(other) = fields.iter().find(|f| *f != "signature_def") {
            return Err(ServingError::invalid_argument(format!(
                "Metadata field {other} is not supported"
            )));
        }
        // Metadata ignores the signature name of the spec.
        let handle = self.route(request)?.handle;
        let map = SignatureDefMap {
            signature_def: [(DEFAULT_SIGNATURE.to_owned(), handle.signature().to_signature_def())]
                .into_iter()
                .collect(),
        };
        let any = prost_types::Any {
            type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".to_owned(),
            value: prost::Message::encode_to_vec(&map),
        };
        Ok(GetModelMetadataResponse {
            model_spec: Some(ModelSpec {
                name: handle.id().name.clone(),
                version_choice: Some(model_spec::VersionChoice::Version(handle.id().version)),
                signature_name: String::new(),
            }),
            metadata: [("signature_def".to_owned(), any)].into_iter().collect(),
        })
    }

    /// Records one finished request in the TensorFlow Serving and Versa
    /// series. Only configured models get series of their own (a model
    /// name is whatever the client sent); versions and labels come from
    /// the version that answered, so they are configured ones too.
    pub fn record(
        &self,
        model: &str,
        answered: &Answered,
        (api, entrypoint): (&'static str, &'static str),
        code: Code,
        elapsed: Duration,
    ) {
        let finished =
            Finished { model, answered, api, entrypoint, code, elapsed, reclassified: None };
        self.record_finished(&finished);
    }

    /// The state of every version of every model, for readiness reports.
    pub fn states_summary(&self) -> Vec<(String, i64, ManagerState)> {
        self.core
            .monitor()
            .all_states()
            .into_iter()
            .flat_map(|(m, vs)| vs.into_iter().map(move |(v, e)| (m.clone(), v, e.state.state)))
            .collect()
    }
}

impl Sink for Serving {
    fn record_finished(&self, request: &Finished<'_>) {
        let Finished { model, answered, api, entrypoint, code, elapsed, reclassified } = *request;
        let config = self.core.config();
        let model = if config.model(model).is_some() { model } else { UNKNOWN_MODEL };
        let m = &self.metrics;
        m.tf_request_count.with_label_values(&[model, code.name()]).inc();
        m.record_request(model, answered, entrypoint, code, elapsed);
        if let Some(class) = reclassified {
            m.record_reclassified(model, answered, code, class);
        }
        if code == Code::Ok {
            m.tf_request_latency
                .with_label_values(&[model, api, entrypoint])
                .observe(elapsed.as_micros() as f64);
        }
    }

    fn min_client_deadline(&self) -> Duration {
        self.min_client_deadline
    }
}

mod mirrored;
mod run;

#[cfg(test)]
mod tests;
