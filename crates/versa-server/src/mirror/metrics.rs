//! The series of shadow traffic: every copy's outcome, how far its answer
//! was from the one the client got, and what it cost next to it.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// `versa_mirror_*`: `version` is the mirror target's, `baseline_version`
/// the version that answered the client.
#[derive(Debug, Clone)]
pub struct MirrorMetrics {
    /// `versa_mirror_requests_total{model, version, baseline_version, result}`
    pub requests: IntCounterVec,
    /// `versa_mirror_output_difference{model, version, baseline_version, output}`:
    /// the largest absolute difference of an output's elements.
    pub difference: HistogramVec,
    /// `versa_mirror_top_k_overlap{model, version, baseline_version, output}`
    pub top_k_overlap: HistogramVec,
    /// `versa_mirror_latency_ratio{model, version, baseline_version}`:
    /// the candidate's CPU time on a copy over the baseline's on the original.
    pub latency_ratio: HistogramVec,
    /// `versa_mirror_non_finite_total{model, version, baseline_version}`:
    /// copies whose answer held NaN or an infinity.
    pub non_finite: IntCounterVec,
    /// `versa_mirror_in_flight{model}`
    pub in_flight: IntGaugeVec,
}

/// Bounds of `versa_mirror_latency_ratio`: 2^(i/2) for i in -8..=8 (1/16 to 16).
pub fn latency_ratio_buckets() -> Vec<f64> {
    (-8..=8).map(|i| 2f64.powf(f64::from(i) / 2.0)).collect()
}

/// Bounds of `versa_mirror_output_difference`: 1e-9 to 1e3, a decade apart.
fn difference_buckets() -> Vec<f64> {
    (-9..=3).map(|e| 10f64.powi(e)).collect()
}

/// The labels of a copy's series.
pub const LABELS: [&str; 3] = ["model", "version", "baseline_version"];

impl MirrorMetrics {
    pub fn register(registry: &Registry) -> Self {
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
        let with_output = ["model", "version", "baseline_version", "output"];
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "versa_mirror_in_flight",
                "Mirrored copies waiting for or running on a mirror thread, by model.",
            ),
            &["model"],
        )
        .expect("valid gauge");
        registry.register(Box::new(in_flight.clone())).expect("registered once");
        Self {
            requests: counter(
                "versa_mirror_requests_total",
                "Copies of requests run on a model's mirror version, by outcome: agree, disagree, error (the mirror failed), timeout, shed (over max_in_flight, --max_mirror_in_flight or --max_mirror_bytes), unavailable (the mirror version not AVAILABLE, or its plan for the copy's batch size still being built).",
                &[LABELS[0], LABELS[1], LABELS[2], "result"],
            ),
            difference: histogram(
                "versa_mirror_output_difference",
                "Largest absolute difference between an output of the mirror's answer and the baseline's.",
                &with_output,
                difference_buckets(),
            ),
            top_k_overlap: histogram(
                "versa_mirror_top_k_overlap",
                "Class outputs: mean over rows of the share of the baseline's top-k classes also in the mirror's.",
                &with_output,
                (1..=10).map(|i| f64::from(i) / 10.0).collect(),
            ),
            latency_ratio: histogram(
                "versa_mirror_latency_ratio",
                "The mirror's CPU time on a copy over the baseline's on the same input.",
                &LABELS,
                latency_ratio_buckets(),
            ),
            non_finite: counter(
                "versa_mirror_non_finite_total",
                "Copies whose answer held NaN or an infinite value.",
                &LABELS,
            ),
            in_flight,
        }
    }
}
