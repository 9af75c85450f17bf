//! The tower layer in front of every gRPC service. A PredictionService
//! call's bytes are reserved ([`Admission`]) as they arrive, and the
//! estimated size of the message decoded from them; its body must arrive
//! within `--request_read_timeout_seconds`; once it has, the call takes its
//! place among the requests in flight or is shed with RESOURCE_EXHAUSTED;
//! its response holds the bytes until sent. A panic in any handler becomes
//! INTERNAL for that call alone (counted), never a dropped connection.

use crate::admission::{Admission, Ticket};
use crate::held_body::HeldBody;
use crate::metrics::Metrics;
use futures::FutureExt as _;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::Status;

/// The admitted request's ticket, for the handler to reserve its inputs' bytes.
#[derive(Debug, Clone)]
pub struct TicketHandle(pub Arc<Ticket>);

/// Services whose calls go through admission.
const ADMITTED_PREFIX: &str = "/tensorflow.serving.PredictionService/";

#[derive(Debug, Clone)]
pub struct GuardLayer {
    admission: Admission,
    metrics: Arc<Metrics>,
    read_timeout: Option<Duration>,
}

impl GuardLayer {
    pub fn new(
        admission: Admission,
        metrics: Arc<Metrics>,
        read_timeout: Option<Duration>,
    ) -> Self {
        Self { admission, metrics, read_timeout }
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, layer: self.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

impl<S> tower_service::Service<Request> for Guard<S>
where
    S: tower_service::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone that was made ready handles this call (tower's convention).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = Arc::clone(&self.layer.metrics);
        let path = request.uri().path().to_owned();
        let mut ticket = None;
        let request = if path.starts_with(ADMITTED_PREFIX) {
            let held = Arc::new(self.layer.admission.ticket("grpc"));
            let (parts, body) = request.into_parts();
            let body = ReservedBody::new(body, Arc::clone(&held), self.layer.read_timeout);
            let mut request = http::Request::from_parts(parts, tonic::body::Body::new(body));
            request.extensions_mut().insert(TicketHandle(Arc::clone(&held)));
            ticket = Some(held);
            request
        } else {
            request
        };
        let call = inner.call(request);
        let call: Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>> = match &ticket {
            Some(held) => {
                let held = Arc::clone(held);
                let reserve: versa_proto::codec::ReserveDecoded =
                    Arc::new(move |n| held.reserve(n).map_err(|e| e.message));
                Box::pin(versa_proto::codec::reserving_decoded(reserve, call))
            }
            None => Box::pin(call),
        };
        Box::pin(async move {
            let outcome = std::panic::AssertUnwindSafe(call).catch_unwind().await;
            // The response holds the request's bytes (and place) until sent.
            let outcome = outcome.map(|r| {
                r.map(|response| {
                    let response = too_large_is_resource_exhausted(response);
                    match ticket {
                        Some(t) => response.map(|b| tonic::body::Body::new(HeldBody::new(b, t))),
                        None => response,
                    }
                })
            });
            outcome.unwrap_or_else(|panic| {
                let what = crate::panics::describe(panic.as_ref());
                metrics.handler_panics.with_label_values(&["grpc"]).inc();
                tracing::error!(%path, "a gRPC handler panicked: {what}");
                Ok(Status::internal(format!("the server failed handling this request: {what}"))
                    .into_http())
            })
        })
    }
}

/// tonic refuses a message over the receive limit with OUT_OF_RANGE; gRPC
/// (and so TensorFlow Serving) says RESOURCE_EXHAUSTED, and names the setting.
fn too_large_is_resource_exhausted(response: Response) -> Response {
    match Status::from_header_map(response.headers()) {
        Some(status)
            if status.code() == tonic::Code::OutOfRange
                && status.message().starts_with("Error, decoded message length too large") =>
        {
            Status::resource_exhausted(format!(
                "{} (grpc.max_receive_message_length of --grpc_channel_arguments)",
                status.message()
            ))
            .into_http()
        }
        _ => response,
    }
}

/// A request body whose bytes are reserved with the request's ticket as
/// they arrive, and which must end within the read timeout.
struct ReservedBody {
    inner: tonic::body::Body,
    ticket: Arc<Ticket>,
    deadline: Option<(Pin<Box<tokio::time::Sleep>>, Duration)>,
}

impl ReservedBody {
    fn new(inner: tonic::body::Body, ticket: Arc<Ticket>, timeout: Option<Duration>) -> Self {
        let deadline = timeout.map(|t| (Box::pin(tokio::time::sleep(t)), t));
        Self { inner, ticket, deadline }
    }
}

impl Body for ReservedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Status>>> {
        if let Some((sleep, timeout)) = &mut self.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            let message = format!(
                "the request did not arrive within {} s (--request_read_timeout_seconds)",
                timeout.as_secs()
            );
            self.deadline = None;
            return Poll::Ready(Some(Err(Status::deadline_exceeded(message))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(e) = self.ticket.reserve(data.len())
                {
                    return Poll::Ready(Some(Err(e.into())));
                }
                // The last of the request (its last data, or trailers): it
                // takes its place now, before the message is decoded.
                if (frame.is_trailers() || self.inner.is_end_stream())
                    && let Err(e) = self.ticket.admit()
                {
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                self.deadline = None;
                // The whole request is in: now it takes its place, or is shed.
                match self.ticket.admit() {
                    Ok(()) => Poll::Ready(None),
                    Err(e) => Poll::Ready(Some(Err(e.into()))),
                }
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::AdmissionLimits;
    use tower_layer::Layer as _;
    use tower_service::Service as _;

    /// A service whose calls panic.
    #[derive(Clone)]
    struct Panics;

    impl tower_service::Service<Request> for Panics {
        type Response = Response;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> Self::Future {
            Box::pin(async { panic!("handler bug") })
        }
    }

    fn guard(max_requests: usize) -> (Guard<Panics>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let admission =
            Admission::new(AdmissionLimits { max_requests, max_bytes: 1 << 20 }, &metrics);
        (GuardLayer::new(admission, Arc::clone(&metrics), None).layer(Panics), metrics)
    }

    fn call(path: &str) -> Request {
        http::Request::builder().uri(path).body(tonic::body::Body::empty()).expect("request")
    }

    fn status(response: &Response) -> Option<Status> {
        Status::from_header_map(response.headers())
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_is_counted() {
        let (mut guard, metrics) = guard(8);
        for path in [
            "/tensorflow.serving.PredictionService/Predict",
            "/tensorflow.serving.ModelService/GetModelStatus",
        ] {
            let response = guard.call(call(path)).await.expect("answered");
            let status = status(&response).expect("a gRPC status");
            assert_eq!(status.code(), tonic::Code::Internal, "{path}");
            assert!(status.message().contains("handler bug"), "{}", status.message());
        }
        assert_eq!(metrics.handler_panics.with_label_values(&["grpc"]).get(), 2);
        assert_eq!(metrics.inflight_requests.get(), 0, "the panicked request's place came back");
    }

    #[tokio::test]
    async fn a_prediction_takes_its_place_once_its_body_is_in_or_is_shed() {
        use http_body_util::BodyExt as _;
        let metrics = Arc::new(Metrics::new());
        let admission =
            Admission::new(AdmissionLimits { max_requests: 0, max_bytes: 100 }, &metrics);
        let body = |bytes: &'static [u8]| {
            let full = http_body_util::Full::new(bytes::Bytes::from_static(bytes));
            tonic::body::Body::new(full.map_err(|e| match e {}))
        };
        let ticket = Arc::new(admission.ticket("grpc"));
        let mut reading = ReservedBody::new(body(b"0123456789"), Arc::clone(&ticket), None);
        // Its last data: held, then shed before it could be decoded.
        let last = reading.frame().await.expect("a frame").expect_err("shed");
        assert_eq!(last.code(), tonic::Code::ResourceExhausted);
        assert_eq!(ticket.reserved(), 10, "its bytes were held as they arrived");
        assert_eq!(
            metrics.shed_requests.with_label_values(&["concurrent_requests", "grpc"]).get(),
            1
        );
        // Too many bytes: refused as they arrive.
        let ticket = Arc::new(admission.ticket("grpc"));
        let mut big = ReservedBody::new(body(&[0; 200]), ticket, None);
        let err = big.frame().await.expect("a frame").expect_err("over the byte bound");
        assert!(err.message().contains("--max_inflight_request_bytes"), "{}", err.message());
    }
}
