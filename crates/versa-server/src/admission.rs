//! Admission control: how many prediction requests may be in flight at once
//! and how many bytes they may hold together (bodies as they arrive, decoded
//! messages and input tensors, responses until sent). A request beyond
//! either bound is shed at once — RESOURCE_EXHAUSTED over gRPC, 429 over
//! REST — never queued, so overload costs neither unbounded memory nor
//! unbounded latency.
//!
//! A request holds bytes from its first byte ([`Admission::ticket`]) but
//! takes its place among the requests in flight only once its body has
//! arrived ([`Ticket::admit`]): clients that send slowly hold what they
//! sent, not the places of requests ready to run.

use crate::error::ServingError;
use prometheus::{IntCounterVec, IntGauge};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use versa_core::Code;

/// The bounds, from flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// `--max_concurrent_requests`.
    pub max_requests: usize,
    /// `--max_inflight_request_bytes`.
    pub max_bytes: usize,
}

/// The shared counters every prediction request goes through.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: AdmissionLimits,
    requests: AtomicUsize,
    bytes: AtomicUsize,
    requests_gauge: IntGauge,
    bytes_gauge: IntGauge,
    shed: IntCounterVec,
}

/// Why a request was shed; the `reason` label of `versa_shed_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// `--max_concurrent_requests` requests already in flight.
    Requests,
    /// In-flight requests already hold `--max_inflight_request_bytes`.
    Bytes,
    /// `--max_queued_inferences` runs already wait for an inference slot.
    InferenceQueue,
}

impl ShedReason {
    pub fn label(self) -> &'static str {
        match self {
            ShedReason::Requests => "concurrent_requests",
            ShedReason::Bytes => "inflight_bytes",
            ShedReason::InferenceQueue => "inference_queue",
        }
    }
}

/// Tries to add `n` to `counter` without passing `limit`.
fn try_add(counter: &AtomicUsize, n: usize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            now.checked_add(n).filter(|&total| total <= limit)
        })
        .is_ok()
}

impl Admission {
    pub fn new(limits: AdmissionLimits, metrics: &crate::metrics::Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                requests: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
                requests_gauge: metrics.inflight_requests.clone(),
                bytes_gauge: metrics.inflight_request_bytes.clone(),
                shed: metrics.shed_requests.clone(),
            }),
        }
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.inner.limits
    }

    /// Counts a shed request under `api` (`grpc` or `rest`).
    pub fn count_shed(&self, reason: ShedReason, api: &str) {
        self.inner.shed.with_label_values(&[reason.label(), api]).inc();
    }

    /// A ticket for one request's bytes; not yet admitted.
    pub fn ticket(&self, api: &'static str) -> Ticket {
        Ticket {
            admission: self.clone(),
            api,
            bytes: AtomicUsize::new(0),
            admitted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A ticket already admitted, or why not.
    pub fn admit(&self, api: &'static str) -> Result<Ticket, ServingError> {
        let ticket = self.ticket(api);
        ticket.admit()?;
        Ok(ticket)
    }

    /// Bytes held by requests in flight now.
    pub fn bytes_in_flight(&self) -> usize {
        self.inner.bytes.load(Ordering::Acquire)
    }

    /// Requests in flight now.
    pub fn requests_in_flight(&self) -> usize {
        self.inner.requests.load(Ordering::Acquire)
    }
}

/// One admitted request: holds its place and the bytes it reserved until
/// dropped. Shared (`&self`) so a body and a handler can both reserve.
#[derive(Debug)]
pub struct Ticket {
    admission: Admission,
    api: &'static str,
    bytes: AtomicUsize,
    admitted: std::sync::atomic::AtomicBool,
}

impl Ticket {
    /// Takes this request's place among those in flight (once; again is a
    /// no-op), or sheds it when `--max_concurrent_requests` are.
    pub fn admit(&self) -> Result<(), ServingError> {
        if self.admitted.load(Ordering::Acquire) {
            return Ok(());
        }
        let inner = &self.admission.inner;
        let limit = inner.limits.max_requests;
        if !try_add(&inner.requests, 1, limit) {
            self.admission.count_shed(ShedReason::Requests, self.api);
            return Err(ServingError::new(
                Code::ResourceExhausted,
                format!(
                    "the server is handling {limit} requests already (--max_concurrent_requests); retry later"
                ),
            ));
        }
        if self.admitted.swap(true, Ordering::AcqRel) {
            // Admitted meanwhile by another holder: give the extra place back.
            inner.requests.fetch_sub(1, Ordering::AcqRel);
        } else {
            inner.requests_gauge.inc();
        }
        Ok(())
    }

    /// Holds `n` more bytes whatever the bound (what is already built and
    /// must be sent, such as a response): later requests are shed instead.
    pub fn hold(&self, n: usize) {
        let inner = &self.admission.inner;
        inner.bytes.fetch_add(n, Ordering::AcqRel);
        self.bytes.fetch_add(n, Ordering::AcqRel);
        inner.bytes_gauge.add(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Reserves `n` more bytes for this request, or sheds it when requests
    /// in flight already hold the byte bound.
    pub fn reserve(&self, n: usize) -> Result<(), ServingError> {
        if n == 0 {
            return Ok(());
        }
        let inner = &self.admission.inner;
        let limit = inner.limits.max_bytes;
        if !try_add(&inner.bytes, n, limit) {
            self.admission.count_shed(ShedReason::Bytes, self.api);
            return Err(ServingError::new(
                Code::ResourceExhausted,
                format!(
                    "requests in flight already hold close to {limit} bytes (--max_inflight_request_bytes); retry later"
                ),
            ));
        }
        self.bytes.fetch_add(n, Ordering::AcqRel);
        inner.bytes_gauge.add(i64::try_from(n).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Gives back `n` of the bytes this request reserved (what it no
    /// longer holds, such as a body once decoded).
    pub fn release(&self, n: usize) {
        let released = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| Some(held.saturating_sub(n)))
            .map_or(0, |held| held.min(n));
        let inner = &self.admission.inner;
        inner.bytes.fetch_sub(released, Ordering::AcqRel);
        inner.bytes_gauge.sub(i64::try_from(released).unwrap_or(i64::MAX));
    }

    /// Bytes this request holds.
    pub fn reserved(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let inner = &self.admission.inner;
        let bytes = *self.bytes.get_mut();
        inner.bytes.fetch_sub(bytes, Ordering::AcqRel);
        inner.bytes_gauge.sub(i64::try_from(bytes).unwrap_or(i64::MAX));
        if *self.admitted.get_mut() {
            inner.requests.fetch_sub(1, Ordering::AcqRel);
            inner.requests_gauge.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_requests: usize, max_bytes: usize) -> Admission {
        Admission::new(AdmissionLimits { max_requests, max_bytes }, &crate::metrics::Metrics::new())
    }

    #[test]
    fn requests_beyond_the_bound_are_shed_and_their_places_come_back() {
        let a = admission(2, 1 << 20);
        let first = a.admit("grpc").expect("first");
        let _second = a.admit("grpc").expect("second");
        let err = a.admit("rest").expect_err("third");
        assert_eq!(err.code, Code::ResourceExhausted);
        assert!(err.message.contains("--max_concurrent_requests"), "{}", err.message);
        drop(first);
        assert!(a.admit("grpc").is_ok(), "a finished request frees its place");
    }

    #[test]
    fn a_ticket_holds_bytes_before_it_takes_a_place() {
        let a = admission(1, 100);
        let slow = a.ticket("rest");
        slow.reserve(10).expect("bytes before admission");
        let ready = a.admit("rest").expect("the slow one holds no place");
        assert_eq!(a.requests_in_flight(), 1);
        assert!(slow.admit().is_err(), "no place left once its body is in");
        drop(ready);
        slow.admit().expect("admitted");
        slow.admit().expect("twice is once");
        assert_eq!(a.requests_in_flight(), 1);
        slow.hold(1000);
        assert_eq!(a.bytes_in_flight(), 1010, "held past the bound");
        drop(slow);
        assert_eq!((a.requests_in_flight(), a.bytes_in_flight()), (0, 0));
    }

    #[test]
    fn bytes_are_bounded_across_requests_and_released_on_drop() {
        let a = admission(10, 100);
        let one = a.admit("rest").expect("admitted");
        let two = a.admit("rest").expect("admitted");
        one.reserve(60).expect("fits");
        let err = two.reserve(41).expect_err("over");
        assert!(err.message.contains("--max_inflight_request_bytes"), "{}", err.message);
        two.reserve(40).expect("exactly fits");
        assert_eq!(a.bytes_in_flight(), 100);
        two.release(30);
        assert_eq!(a.bytes_in_flight(), 70);
        two.release(1000);
        assert_eq!((two.reserved(), a.bytes_in_flight()), (0, 60), "never more than it holds");
        two.reserve(40).expect("fits again");
        drop(one);
        assert_eq!(a.bytes_in_flight(), 40);
        assert_eq!(a.requests_in_flight(), 1);
        drop(two);
        assert_eq!((a.bytes_in_flight(), a.requests_in_flight()), (0, 0));
    }
}
