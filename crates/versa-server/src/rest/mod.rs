//! The REST API (TensorFlow Serving's `/v1/models/...`), plus `/live`,
//! `/ready` and the Prometheus endpoints.

mod body;
pub mod json;
mod routes;
pub mod server;
pub mod tensors;

use crate::admission::Ticket;
use crate::error::ServingError;
use crate::recorded::Recorded;
use crate::serving::{Answered, ModelRequest, Serving, select_outputs};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost_reflect::DynamicMessage;
use routes::{Route, parse_route};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use versa_core::Code;
use versa_onnx::convert::TensorBudget;
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
    /// How long a client may take to send the body (`None`: no bound).
    pub read_timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
struct App {
    serving: Serving,
    options: RestOptions,
}

/// The whole REST router.
pub fn router(serving: Serving, options: RestOptions) -> axum::Router {
    let panics = serving.metrics.handler_panics.with_label_values(&["rest"]);
    let routes = axum::Router::new()
        .route("/live", axum::routing::get(|| async { "live\n" }))
        .route("/ready", axum::routing::get(ready))
        .route("/metrics", axum::routing::get(metrics))
        .fallback(dispatch);
    with_panic_guard(routes, panics).with_state(App { serving, options })
}

/// `router`, each of whose requests answers 500 if its handler panics.
fn with_panic_guard<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    panics: prometheus::IntCounter,
) -> axum::Router<S> {
    router.layer(axum::middleware::from_fn(move |request, next| {
        catch_panics(panics.clone(), request, next)
    }))
}

/// A panic while handling one request answers that request with 500 (and
/// is counted); the connection and every other request go on.
async fn catch_panics(
    panics: prometheus::IntCounter,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use futures::FutureExt as _;
    let path = request.uri().path().to_owned();
    match std::panic::AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            panics.inc();
            let what = crate::panics::describe(panic.as_ref());
            tracing::error!(%path, "a REST handler panicked: {what}");
            error_response(&ServingError::new(
                Code::Internal,
                format!("the server failed handling this request: {what}"),
            ))
        }
    }
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

async fn dispatch(State(app): State<App>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let (method, headers) = (parts.method, parts.headers);
    let path = parts.uri.path();
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
            predict(&app, request.with_route_key(route_key), &headers, body, started).await
        }
        Ok(Route::Unimplemented { method: api, request }) => {
            let e = ServingError::new(
                Code::Unimplemented,
                format!(
                    "{api} needs a TensorFlow classify/regress signature; ONNX models served by versa-server have only the predict signature: use :predict"
                ),
            );
            app.serving.record(
                &request.name,
                &Answered::default(),
                (api, "REST"),
                e.code,
                started.elapsed(),
            );
            error_response(&e)
        }
    };
    with_cors(response, cors)
}

/// A predict that failed: the error, and the HTTP status when it is not
/// the one TensorFlow Serving's table gives its code.
#[derive(Debug)]
struct Failure {
    error: ServingError,
    status: Option<u16>,
}

impl From<ServingError> for Failure {
    fn from(error: ServingError) -> Self {
        Self { error, status: None }
    }
}

impl From<body::BodyError> for Failure {
    fn from(e: body::BodyError) -> Self {
        let status = e.status();
        let error = match e {
            body::BodyError::Refused(error) => error,
            other => {
                let code = match other {
                    body::BodyError::TooSlow { .. } => Code::DeadlineExceeded,
                    _ => Code::InvalidArgument,
                };
                ServingError::new(code, other.message())
            }
        };
        Self { error, status: Some(status) }
    }
}

async fn predict(
    app: &App,
    request: ModelRequest,
    headers: &HeaderMap,
    body: axum::body::Body,
    started: std::time::Instant,
) -> Response {
    let deadline = crate::deadline::after(app.options.timeout);
    let mut recorded =
        Recorded::new(&app.serving, &request.name, ("predict", "REST"), started, Some(deadline));
    let result = predict_json(app, &request, headers, body, deadline, &mut recorded.answered).await;
    let code = result.as_ref().map_or_else(|f| f.error.code, |_| Code::Ok);
    let answered = recorded.answered.clone();
    recorded.finish(code);
    let mut response = match result {
        Ok((body, ticket)) => {
            // The answer holds the request's bytes until it is sent.
            let body = axum::body::Body::new(crate::held_body::HeldBody::new(
                http_body_util::Full::new(axum::body::Bytes::from(body)),
                ticket,
            ));
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(Failure { error, status }) => {
            let mut response = error_response(&error);
            if let Some(status) = status.and_then(|s| StatusCode::from_u16(s).ok()) {
                *response.status_mut() = status;
            }
            response
        }
    };
    // Failures too name the version (and label) they were routed to, once
    // known: which side of a canary failed is the client's first question.
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

/// Bodies at least this large are decoded on a blocking thread rather than
/// on the async worker that received them: a MobileNet-sized image (1.5 MB
/// of JSON) takes ≈2 ms to decode, which would stall every other request on
/// that worker. At most one such decode per core runs at once.
const DECODE_OFF_WORKER_BYTES: usize = 256 * 1024;

/// A decoded predict body: the request's format and its inputs.
type Decoded = (tensors::Format, Vec<versa_onnx::Tensor>);

/// Parses `body` for the version `resolved` and builds its inputs, every
/// tensor reserved with `ticket` before it is built.
fn decode(
    serving: &Serving,
    resolved: &mut crate::serving::Resolved,
    body: &[u8],
    ticket: &Ticket,
) -> Result<Decoded, ServingError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        ServingError::invalid_argument("JSON Parse error: Invalid encoding in string")
    })?;
    let limit = serving.limits.max_request_tensor_bytes;
    let budget = json::ParseBudget::for_body(body.len(), limit, "--max_request_tensor_bytes");
    let json = json::parse_within(text, budget)
        .map_err(|e| ServingError::invalid_argument(e.to_string()))?;
    let parsed = tensors::predict_body(&json)?;
    resolved.signature_name = crate::serving::signature_name(&parsed.signature_name)?;
    let reserve = |n: usize| ticket.reserve(n).map_err(|e| e.message);
    let mut budget = TensorBudget::new(limit, "--max_request_tensor_bytes").reserving(&reserve);
    let inputs = tensors::input_tensors(resolved.signature(), &parsed, &mut budget)?;
    Ok((parsed.format, inputs))
}

async fn predict_json(
    app: &App,
    request: &ModelRequest,
    headers: &HeaderMap,
    body: axum::body::Body,
    deadline: Instant,
    answered: &mut Answered,
) -> Result<(String, Arc<Ticket>), Failure> {
    // The version answering is known before a byte of the body is read: a
    // request for a model that does not exist costs nothing.
    let mut resolved = app.serving.resolve(request)?;
    *answered = Answered::from(&resolved);
    let ticket = Arc::new(app.serving.admission.ticket("rest"));
    let read_timeout = app.options.read_timeout;
    let mut body =
        body::read(body, headers, app.options.max_body_bytes, &ticket, read_timeout).await?;
    // The body is in: only now does the request take a place among those in flight.
    ticket.admit()?;
    let body_bytes = ticket.reserved();
    let (format, inputs) =
        if body.len() < DECODE_OFF_WORKER_BYTES {
            decode(&app.serving, &mut resolved, &body, &ticket)?
        } else {
            // A blocking thread of its own, not an inference slot: holding a
            // slot would take that share of the bounded inference pool.
            let slot =
                app.serving.decode_slots.clone().acquire_owned().await.map_err(|_| {
                    ServingError::new(Code::Unavailable, "the server is shutting down")
                })?;
            let (serving, ticket) = (app.serving.clone(), Arc::clone(&ticket));
            let body = std::mem::take(&mut body);
            let (decoded, back) = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                let decoded = decode(&serving, &mut resolved, &body, &ticket);
                (decoded, resolved)
            })
            .await
            .map_err(|e| {
                ServingError::new(Code::Internal, format!("decoding the request panicked: {e}"))
            })?;
            resolved = back;
            decoded?
        };
    // The body is decoded and dropped: only the inputs are held now.
    drop(body);
    ticket.release(body_bytes);
    let outputs = select_outputs(resolved.signature(), &[])?;
    let inputs: TVec<_> = inputs.into_iter().map(IntoTValue::into_tvalue).collect();
    let produced = app
        .serving
        .run(&resolved, inputs, outputs, Some(deadline), "rest", Some(Arc::clone(&ticket)))
        .await?;
    Ok((tensors::response_body(format, &produced)?, ticket))
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

#[cfg(test)]
mod panic_tests {
    use super::*;
    use tower_service::Service as _;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_next_request_is_served() {
        let panics = prometheus::IntCounter::new("panics", "panics").expect("counter");
        let routes = axum::Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    if true {
                        panic!("handler bug")
                    }
                }),
            )
            .route("/fine", axum::routing::get(|| async { "fine" }));
        let mut app = with_panic_guard(routes, panics.clone());
        let get = |path: &str| {
            axum::http::Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        let response = app.call(get("/boom")).await.expect("answered");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(panics.get(), 1);
        let response = app.call(get("/fine")).await.expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
