//! The REST API (TensorFlow Serving's `/v1/models/...`), plus `/live`,
//! `/ready` and the Prometheus endpoints.

pub mod json;
mod routes;
pub mod tensors;

use crate::error::ServingError;
use crate::serving::{Answered, ModelRequest, Serving, select_outputs};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use prost_reflect::DynamicMessage;
use routes::{Route, parse_route};
use std::time::Duration;
use tokio::time::Instant;
use versa_core::Code;
use versa_onnx::{IntoTValue, TVec};

/// How the REST server behaves.
#[derive(Debug, Clone)]
pub struct RestOptions {
    pub timeout: Duration,
    pub cors: bool,
    /// Where Prometheus metrics are also served in TensorFlow Serving's
    /// place (`--monitoring_config_file`); `/metrics` always serves them.
    pub monitoring_path: Option<String>,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone)]
struct App {
    serving: Serving,
    options: RestOptions,
}

/// The whole REST router.
pub fn router(serving: Serving, options: RestOptions) -> axum::Router {
    let limit = options.max_body_bytes;
    axum::Router::new()
        .route("/live", axum::routing::get(|| async { "live\n" }))
        .route("/ready", axum::routing::get(ready))
        .route("/metrics", axum::routing::get(metrics))
        .fallback(dispatch)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(App { serving, options })
}

fn json_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
        .into_response()
}

/// `{ "error": "<message>" }` with the status of the error's code.
fn error_response(e: &ServingError) -> Response {
    let mut body = String::from("{ \"error\": ");
    json::write_string(&mut body, &e.message);
    body.push_str(" }");
    json_response(e.http_status(), body)
}

async fn ready(State(app): State<App>) -> Response {
    let missing = app.serving.core.unavailable_models();
    if missing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: no AVAILABLE version of {}\n", missing.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(app): State<App>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.serving.metrics.render())
        .into_response()
}

fn with_cors(mut response: Response, cors: bool) -> Response {
    if cors {
        let h = response.headers_mut();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert("access-control-allow-methods", HeaderValue::from_static("POST, GET"));
        h.insert("access-control-allow-headers", HeaderValue::from_static("Content-Type"));
    }
    response
}

async fn dispatch(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let path = uri.path();
    if let Some(monitoring) = &app.options.monitoring_path
        && path == monitoring
        && method == Method::GET
    {
        return metrics(State(app)).await;
    }
    if !path.to_ascii_lowercase().starts_with("/v1/") && !path.eq_ignore_ascii_case("/v1") {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let cors = app.options.cors;
    if method == Method::OPTIONS && cors {
        let origin_ok = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| o.starts_with("http://") || o.starts_with("https://"));
        return with_cors(
            if origin_ok {
                json_response(200, String::new())
            } else {
                error_response(&ServingError::failed_precondition(
                    "Origin header is missing in CORS preflight",
                ))
            },
            true,
        );
    }
    let started = std::time::Instant::now();
    let route_key =
        headers.get(crate::ROUTE_KEY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let response = match parse_route(&method, path) {
        Err(e) => error_response(&e),
        Ok(Route::Status { name, version }) => match app.serving.model_status(&name, version) {
            Ok(status) => {
                json_response(200, proto_json(&status, "tensorflow.serving.GetModelStatusResponse"))
            }
            Err(e) => error_response(&e),
        },
        Ok(Route::Metadata(request)) => {
            let request = request.with_route_key(route_key);
            match app.serving.metadata(&request, &["signature_def".to_owned()]) {
                Ok(metadata) => json_response(200, metadata_json(&metadata)),
                Err(e) => error_response(&e),
            }
        }
        Ok(Route::Predict(request)) => {
            let body = match body {
                Ok(b) => b,
                Err(rejection) => {
                    let e = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ServingError::new(
                            Code::ResourceExhausted,
                            format!(
                                "request body larger than {} bytes",
                                app.options.max_body_bytes
                            ),
                        )
                    } else {
                        ServingError::invalid_argument(rejection.body_text())
                    };
                    return with_cors(error_response(&e), cors);
                }
            };
            predict(&app, request.with_route_key(route_key), body, started).await
        }
        Ok(Route::Unimplemented { method: api, request }) => {
            let e = ServingError::new(
                Code::Unimplemented,
                format!(
                    "{api} needs a TensorFlow classify/regress signature; ONNX models served by versa-server have only the predict signature: use :predict"
                ),
            );
            let answered = Answered { version: None, label: request.label().map(str::to_owned) };
            app.serving.record(&request.name, &answered, api, "REST", e.code, started.elapsed());
            error_response(&e)
        }
    };
    with_cors(response, cors)
}

async fn predict(
    app: &App,
    request: ModelRequest,
    body: Bytes,
    started: std::time::Instant,
) -> Response {
    let deadline = Instant::now() + app.options.timeout;
    let mut answered = Answered::default();
    let result = predict_json(app, &request, body, deadline, &mut answered).await;
    let code = result.as_ref().map_or_else(|e| e.code, |_| Code::Ok);
    app.serving.record(&request.name, &answered, "predict", "REST", code, started.elapsed());
    match result {
        Ok(body) => {
            let mut response = json_response(200, body);
            if let Some(version) = answered.version
                && let Ok(v) = HeaderValue::from_str(&version.to_string())
            {
                response.headers_mut().insert(crate::VERSION_HEADER, v);
            }
            if let Some(label) = &answered.label
                && let Ok(v) = HeaderValue::from_str(label)
            {
                response.headers_mut().insert(crate::LABEL_HEADER, v);
            }
            response
        }
        Err(e) => error_response(&e),
    }
}

/// Bodies at least this large are decoded on a blocking thread rather than
/// on the async worker that received them: a MobileNet-sized image (1.5 MB
/// of JSON) takes ≈2 ms to decode, which would stall every other request on
/// that worker.
const DECODE_OFF_WORKER_BYTES: usize = 256 * 1024;

/// A decoded predict body: the request's format, the version that answers
/// and its inputs.
type Decoded = (tensors::Format, crate::serving::Resolved, Vec<versa_onnx::Tensor>);

/// Parses `body`, resolves the version it asks for and builds its inputs.
/// `answered` is set as soon as the version is known, also on later errors.
fn decode(
    serving: &Serving,
    request: &ModelRequest,
    body: &[u8],
    answered: &mut Answered,
) -> Result<Decoded, ServingError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        ServingError::invalid_argument("JSON Parse error: Invalid encoding in string")
    })?;
    let json = json::parse(text).map_err(|e| ServingError::invalid_argument(e.to_string()))?;
    let parsed = tensors::predict_body(&json)?;
    let request = ModelRequest { signature: parsed.signature_name.clone(), ..request.clone() };
    let resolved = serving.resolve(&request)?;
    *answered = Answered::from(&resolved);
    let inputs = tensors::input_tensors(resolved.signature(), &parsed)?;
    Ok((parsed.format, resolved, inputs))
}

async fn predict_json(
    app: &App,
    request: &ModelRequest,
    body: Bytes,
    deadline: Instant,
    answered: &mut Answered,
) -> Result<String, ServingError> {
    let (format, resolved, inputs) = if body.len() < DECODE_OFF_WORKER_BYTES {
        decode(&app.serving, request, &body, answered)?
    } else {
        // A blocking thread of its own, not an inference slot: holding a
        // slot would take that share of the bounded inference pool.
        let (serving, request) = (app.serving.clone(), request.clone());
        let (decoded, known) = tokio::task::spawn_blocking(move || {
            let mut known = Answered::default();
            (decode(&serving, &request, &body, &mut known), known)
        })
        .await
        .map_err(|e| {
            ServingError::new(Code::Internal, format!("decoding the request panicked: {e}"))
        })?;
        *answered = known;
        decoded?
    };
    let outputs = select_outputs(resolved.signature(), &[])?;
    let inputs: TVec<_> = inputs.into_iter().map(IntoTValue::into_tvalue).collect();
    let produced = app.serving.run(&resolved, inputs, outputs, Some(deadline)).await?;
    tensors::response_body(format, &produced)
}

/// A message as proto3 JSON with TensorFlow Serving's options: original field
/// names, default values printed, int64 as strings, enums by name.
fn proto_json_value<M: prost::Message>(message: &M, full_name: &str) -> serde_json::Value {
    let descriptor = crate::config::descriptor(full_name);
    let options = prost_reflect::SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .ok()
        .and_then(|dynamic| {
            dynamic.serialize_with_options(serde_json::value::Serializer, &options).ok()
        })
        .unwrap_or(serde_json::Value::Null)
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn proto_json<M: prost::Message>(message: &M, full_name: &str) -> String {
    pretty(&proto_json_value(message, full_name))
}

/// Metadata JSON: the `Any` holding the SignatureDefMap is printed unpacked.
fn metadata_json(response: &versa_proto::serving::GetModelMetadataResponse) -> String {
    let spec = response.model_spec.clone().unwrap_or_default();
    let mut map = serde_json::Map::new();
    if let Some(any) = response.metadata.get("signature_def") {
        let defs: versa_proto::serving::SignatureDefMap =
            prost::Message::decode(any.value.as_slice()).unwrap_or_default();
        map.insert(
            "signature_def".to_owned(),
            proto_json_value(&defs, "tensorflow.serving.SignatureDefMap"),
        );
    }
    let value = serde_json::json!({
        "model_spec": proto_json_value(&spec, "tensorflow.serving.ModelSpec"),
        "metadata": map,
    });
    pretty(&value)
}
