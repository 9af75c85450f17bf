//! Prometheus metrics: TensorFlow Serving's series under their exact names
//! (so existing dashboards keep working), and Versa's own per-model/version
//! series. The `prometheus` crate is used rather than `prometheus-client`
//! because the latter renames counters (`_total`) and cannot keep
//! TensorFlow Serving's `:tensorflow:serving:*` names.

use crate::serving::Answered;
use crate::telemetry::ErrorClass;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use versa_core::{Code, Loader, ServableError, ServableId, ServableStateMonitor};
use versa_onnx::{OnnxLoader, OnnxModel};

/// Every metric the server exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `:tensorflow:serving:request_count{model_name, status}`
    pub tf_request_count: IntCounterVec,
    /// `:tensorflow:serving:request_latency{model_name, API, entrypoint}` (µs)
    pub tf_request_latency: HistogramVec,
    /// `:tensorflow:serving:runtime_latency{model_name, API, runtime}` (µs)
    pub tf_runtime_latency: HistogramVec,
    /// `:tensorflow:cc:saved_model:load_attempt_count{model_path, status}`
    pub tf_load_attempt_count: IntCounterVec,
    /// `:tensorflow:cc:saved_model:load_latency{model_path}` (µs)
    pub tf_load_latency: IntCounterVec,
    /// `versa_requests_total{model, version, label, split, status, entrypoint}`
    pub requests: IntCounterVec,
    /// `versa_request_duration_seconds{model, version, label, split}`, buckets
    /// [`request_duration_buckets`]
    pub request_duration: HistogramVec,
    /// `versa_requests_reclassified_total{model, version, label, split,
    /// status, class}`: failed requests that Telemetry counts in another
    /// error class than their status's ([`crate::telemetry::class_by_wait`]).
    pub reclassified: IntCounterVec,
    /// `versa_model_version_state{model, version}`: 10 START … 50 END
    pub version_state: IntGaugeVec,
    /// `versa_model_load_duration_seconds{model, status}`
    pub load_duration: HistogramVec,
    /// `versa_routed_by_split_total{model, label}`
    pub routed_by_split: IntCounterVec,
    /// `versa_split_fallbacks_total{model, from, to}`
    pub split_fallbacks: IntCounterVec,
    /// `versa_inflight_requests`: prediction requests admitted and not done.
    pub inflight_requests: IntGauge,
    /// `versa_inflight_request_bytes`: bytes those requests hold.
    pub inflight_request_bytes: IntGauge,
    /// `versa_shed_requests_total{reason, api}`
    pub shed_requests: IntCounterVec,
    /// `versa_handler_panics_total{api}`
    pub handler_panics: IntCounterVec,
    /// `versa_refused_connections_total{port}`
    pub refused_connections: IntCounterVec,
    /// `versa_batch_requests`: requests per batched run.
    pub batch_tasks: Histogram,
    /// `versa_batch_rows`: rows per batched run, padding included.
    pub batch_rows: Histogram,
    /// `versa_model_service_unauthenticated_total`: ModelService and
    /// Telemetry calls refused for a missing or wrong bearer token.
    pub unauthenticated: IntCounter,
    /// `versa_mirror_*`: shadow traffic.
    pub mirror: crate::mirror::MirrorMetrics,
    /// When these counters started, in milliseconds since the Unix epoch:
    /// the registry is made once, at start-up, so this is the process start
    /// that [`crate::telemetry`] reports.
    pub started_at_unix_ms: i64,
}

/// The upper bounds, in seconds, of `versa_request_duration_seconds`:
/// 0.1 ms × 2^i, 20 of them (up to about 52 s).
pub fn request_duration_buckets() -> Vec<f64> {
    (0..20).map(|i| 0.0001 * f64::from(1u32 << i)).collect()
}

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_millis_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The label of Versa's per-version series that tells requests the
/// model's traffic split routed (`"true"`) from those that named their
/// version or label, or asked for the latest of a model without a split
/// (`"false"`): a canary analysis measures the former only.
pub const SPLIT: &str = "split";

/// The `version`, `label` and `split` label values of a request's series.
fn series_labels(answered: &Answered) -> (String, &str, &'static str) {
    let version = answered.version.map(|v| v.to_string()).unwrap_or_default();
    let label = answered.label.as_deref().unwrap_or_default();
    (version, label, if answered.split { "true" } else { "false" })
}

/// TensorFlow Serving's latency buckets: 10 × 1.8^i µs, 33 of them.
fn tf_latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(10.0, 1.8, 33).expect("valid buckets")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("registered once");
            h
        };
        let version_state = IntGaugeVec::new(
            Opts::new("versa_model_version_state", "State of each model version: 10 START, 20 LOADING, 30 AVAILABLE, 40 UNLOADING, 50 END"),
            &["model", "version"],
        )
        .expect("valid gauge");
        registry.register(Box::new(version_state.clone())).expect("registered once");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let sizes = |name: &str, help: &str| {
            let buckets = prometheus::exponential_buckets(1.0, 2.0, 12).expect("valid buckets");
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("registered once");
            h
        };
        Self {
            inflight_requests: gauge(
                "versa_inflight_requests",
                "Prediction requests admitted and not finished.",
            ),
            inflight_request_bytes: gauge(
                "versa_inflight_request_bytes",
                "Bytes held by prediction requests in flight (bodies as they arrive, decoded inputs).",
            ),
            shed_requests: counter(
                "versa_shed_requests_total",
                "Requests refused at once because the server was at a bound, by bound and API.",
                &["reason", "api"],
            ),
            handler_panics: counter(
                "versa_handler_panics_total",
                "Requests whose handler panicked (answered INTERNAL / 500).",
                &["api"],
            ),
            refused_connections: counter(
                "versa_refused_connections_total",
                "Connections closed on accept because --max_connections were open, by port.",
                &["port"],
            ),
            batch_tasks: sizes("versa_batch_requests", "Requests merged into each batched run."),
            batch_rows: sizes("versa_batch_rows", "Rows of each batched run, padding included."),
            tf_request_count: counter(
                ":tensorflow:serving:request_count",
                "The total number of requests.",
                &["model_name", "status"],
            ),
            tf_request_latency: histogram(
                ":tensorflow:serving:request_latency",
                "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
                &["model_name", "API", "entrypoint"],
                tf_latency_buckets(),
            ),
            tf_runtime_latency: histogram(
                ":tensorflow:serving:runtime_latency",
                "Distribution of wall time (in microseconds) for Tensorflow runtime.",
                &["model_name", "API", "runtime"],
                tf_latency_buckets(),
            ),
            tf_load_attempt_count: counter(
                ":tensorflow:cc:saved_model:load_attempt_count",
                "The number of times a SavedModel was successfully loaded.",
                &["model_path", "status"],
            ),
            tf_load_latency: counter(
                ":tensorflow:cc:saved_model:load_latency",
                "Latency in microseconds for SavedModels that were successfully loaded.",
                &["model_path"],
            ),
            requests: counter(
                "versa_requests_total",
                "Requests by model, version, label, split (\"true\": the model's traffic split chose the version), status and entry point.",
                &["model", "version", "label", SPLIT, "status", "entrypoint"],
            ),
            request_duration: histogram(
                "versa_request_duration_seconds",
                "Request latency by model, version, label and split (successful requests).",
                &["model", "version", "label", SPLIT],
                request_duration_buckets(),
            ),
            reclassified: counter(
                "versa_requests_reclassified_total",
                "Failed requests counted by Telemetry in another error class than their status's: DEADLINE_EXCEEDED under a client deadline shorter than --telemetry_min_client_deadline_ms (class client), CANCELLED after waiting at least that long (class server).",
                &["model", "version", "label", SPLIT, "status", "class"],
            ),
            version_state,
            routed_by_split: counter(
                "versa_routed_by_split_total",
                "Requests naming neither version nor label that a traffic split sent to a label.",
                &["model", "label"],
            ),
            split_fallbacks: counter(
                "versa_split_fallbacks_total",
                "Split choices whose label had no AVAILABLE version, served by another label instead.",
                &["model", "from", "to"],
            ),
            load_duration: histogram(
                "versa_model_load_duration_seconds",
                "Time to load a model version, by outcome.",
                &["model", "status"],
                prometheus::exponential_buckets(0.001, 2.0, 20).expect("valid buckets"),
            ),
            unauthenticated: {
                let c = IntCounter::new(
                    "versa_model_service_unauthenticated_total",
                    "ModelService and Telemetry calls refused for a missing or wrong bearer token.",
                )
                .expect("valid counter");
                registry.register(Box::new(c.clone())).expect("registered once");
                c
            },
            mirror: crate::mirror::MirrorMetrics::register(&registry),
            started_at_unix_ms: unix_millis_now(),
            registry,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::error!("cannot encode metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The first value of a counter or gauge named `name` (for reload's
    /// `metric_names`), summed over label sets; `None` if no such metric.
    pub fn value_of(&self, name: &str) -> Option<i64> {
        let family = self.registry.gather().into_iter().find(|f| f.name() == name)?;
        let total: f64 = family
            .get_metric()
            .iter()
            .map(|m| match family.get_field_type() {
                prometheus::proto::MetricType::GAUGE => m.get_gauge().get_value(),
                _ => m.get_counter().get_value(),
            })
            .sum();
        Some(total as i64)
    }

    /// Records one finished request in Versa's per-version series:
    /// `versa_requests_total`, and `versa_request_duration_seconds` when it
    /// succeeded. The one place they are counted; `/metrics` and the
    /// Telemetry snapshot ([`crate::telemetry`]) both read them. `model`
    /// must be a configured model (or [`crate::serving::UNKNOWN_MODEL`]),
    /// `answered` the version that answered, the label that led to it and
    /// whether the split chose it.
    pub fn record_request(
        &self,
        model: &str,
        answered: &Answered,
        entrypoint: &str,
        code: Code,
        elapsed: Duration,
    ) {
        let (version, label, split) = series_labels(answered);
        self.requests
            .with_label_values(&[model, version.as_str(), label, split, code.name(), entrypoint])
            .inc();
        if code == Code::Ok {
            self.request_duration
                .with_label_values(&[model, version.as_str(), label, split])
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Counts a failed request, already recorded by [`record_request`]
    /// with `code`, as one Telemetry puts in `class` instead of the code's.
    ///
    /// [`record_request`]: Self::record_request
    pub fn record_reclassified(
        &self,
        model: &str,
        answered: &Answered,
        code: Code,
        class: ErrorClass,
    ) {
        let (version, label, split) = series_labels(answered);
        self.reclassified
            .with_label_values(&[model, version.as_str(), label, split, code.name(), class.name()])
            .inc();
    }

    /// Keeps `versa_model_version_state` up to date from the monitor.
    pub fn follow_states(&self, monitor: &ServableStateMonitor) {
        let mut events = monitor.subscribe();
        let gauge = self.version_state.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        let id = &event.state.id;
                        gauge
                            .with_label_values(&[id.name.as_str(), id.version.to_string().as_str()])
                            .set(i64::from(event.state.state.value()));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "state gauge fell behind");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The ONNX loader, counting load attempts and their latency under
/// TensorFlow Serving's metric names.
#[derive(Debug)]
pub struct MetricsLoader {
    pub inner: OnnxLoader,
    pub metrics: Arc<Metrics>,
}

impl Loader for MetricsLoader {
    type Servable = OnnxModel;

    fn estimate_resources(&self, id: &ServableId, path: &Path) -> Result<u64, ServableError> {
        self.inner.estimate_resources(id, path)
    }

    fn load(&self, id: &ServableId, path: &Path) -> Result<OnnxModel, ServableError> {
        let started = Instant::now();
        let result = self.inner.load(id, path);
        let elapsed = started.elapsed();
        let model_path = path.display().to_string();
        let status = if result.is_ok() { "success" } else { "fail" };
        self.metrics.tf_load_attempt_count.with_label_values(&[model_path.as_str(), status]).inc();
        if result.is_ok() {
            self.metrics
                .tf_load_latency
                .with_label_values(&[model_path.as_str()])
                .inc_by(elapsed.as_micros() as u64);
        }
        self.metrics
            .load_duration
            .with_label_values(&[id.name.as_str(), status])
            .observe(elapsed.as_secs_f64());
        result
    }

    fn unload(&self, id: &ServableId, servable: OnnxModel) {
        self.inner.unload(id, servable);
    }
}
