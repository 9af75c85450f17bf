//! `versa.v1.Telemetry`: the cumulative request counters of every model
//! version, for the operator's canary analysis (issue 19), served on the
//! ModelService port behind the same bearer token as reloads.
//!
//! Nothing is counted here: a snapshot reads the request metrics that
//! `/metrics` exports ([`Metrics::requests`], [`Metrics::request_duration`]),
//! so the two never disagree. The operator subtracts two snapshots with the
//! same `process_start_unix_ms` to get a window; a changed start time means
//! the counters were reset.
//!
//! # Split and direct requests
//! Requests the model's traffic split routed (naming neither version nor
//! label) and requests that named their version or label are counted in
//! separate series (`split`): the canary analysis reads the former only,
//! so a client naming `version_label: canary` cannot dilute or poison it.
//!
//! # Whose fault
//! A failed request's class follows its status ([`error_class`]), except
//! where how long its client waited says otherwise ([`class_by_wait`],
//! `--telemetry_min_client_deadline_ms`): those requests are also counted
//! in `versa_requests_reclassified_total`, and moved between classes here.
//!
//! # Bounded
//! A response holds one series per (model, version, label, split) that
//! answered a request since the process started: at most the model
//! versions served × (the labels configured for them + one for requests
//! naming the version) × 2, each with a fixed number of buckets. Nothing a client sends becomes a
//! series: a model name is a series only when it is configured, versions
//! and labels are those of the version that answered, requests no version
//! answered are left out, and route keys (`x-versa-route-key`) are never
//! labels.

mod class;
mod mirrors;
mod snapshot;

pub use class::{ALL_CODES, ErrorClass, class_by_wait, code_named, error_class};
pub use mirrors::{MirrorFamilies, assemble_mirrors};
pub use snapshot::{Families, assemble};

use crate::metrics::{Metrics, request_duration_buckets, unix_millis_now};
use prometheus::core::Collector as _;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use versa_proto::versa::v1::telemetry_server::Telemetry;
use versa_proto::versa::v1::{SnapshotRequest, SnapshotResponse};

/// The snapshot of `metrics` taken at `taken_at_unix_ms`.
///
/// A request is counted in `versa_requests_total` before it is timed or
/// reclassified, so the families are read in the other order: whatever
/// observation or reclassification a snapshot sees, it sees its request
/// too, and `errors + latency.count <= requests` holds even while requests
/// are recorded.
pub fn snapshot(metrics: &Metrics, taken_at_unix_ms: i64) -> SnapshotResponse {
    let reclassified = metrics.reclassified.collect();
    let durations = metrics.request_duration.collect();
    let requests = metrics.requests.collect();
    let families =
        Families { requests: &requests, durations: &durations, reclassified: &reclassified };
    // Copies are counted after their ratio and non-finite observations:
    // read the counts last, so every observation has its copy counted.
    let mirror = &metrics.mirror;
    let (latency_ratio, non_finite) = (mirror.latency_ratio.collect(), mirror.non_finite.collect());
    let mirror_requests = mirror.requests.collect();
    let mirrors = assemble_mirrors(&MirrorFamilies {
        requests: &mirror_requests,
        non_finite: &non_finite,
        latency_ratio: &latency_ratio,
    });
    SnapshotResponse {
        process_start_unix_ms: metrics.started_at_unix_ms,
        taken_at_unix_ms,
        series: assemble(&families, &request_duration_buckets()),
        mirrors,
    }
}

/// The Telemetry service over the server's metrics.
#[derive(Debug, Clone)]
pub struct TelemetryService {
    metrics: Arc<Metrics>,
}

impl TelemetryService {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

#[tonic::async_trait]
impl Telemetry for TelemetryService {
    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let span = tracing::debug_span!("telemetry_snapshot", series = tracing::field::Empty);
        let _entered = span.enter();
        let response = snapshot(&self.metrics, unix_millis_now());
        span.record("series", response.series.len());
        for s in &response.series {
            tracing::trace!(model = %s.model, version = s.version, label = %s.label, requests = s.requests, "series");
        }
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests;
