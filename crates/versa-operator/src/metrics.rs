//! Reconcile metrics on one registry, served on `/metrics` beside `/healthz`.

use prometheus::{
    Encoder as _, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};
use std::time::Instant;

/// The operator's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounter,
    pub failures: IntCounterVec,
    pub duration: Histogram,
    pub sidecar_calls: IntCounterVec,
    /// The rollout metrics, named as Argo Rollouts users know them
    /// (`versa_rollout_*`, `versa_analysis_*`: no operator prefix).
    rollouts: Registry,
    pub rollout_step: IntGaugeVec,
    pub rollout_weight: IntGaugeVec,
    pub rollout_aborts: IntCounterVec,
    pub analysis_values: GaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("versa_operator".into()), None)
            .expect("a static prefix is valid");
        let reconciles =
            IntCounter::new("reconcile_runs_total", "Reconcile passes started").expect("valid");
        let failures = IntCounterVec::new(
            Opts::new("reconcile_failures_total", "Reconcile passes that failed, by error kind"),
            &["error"],
        )
        .expect("valid");
        let duration = Histogram::with_opts(
            HistogramOpts::new("reconcile_duration_seconds", "Duration of reconcile passes")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid");
        let sidecar_calls = IntCounterVec::new(
            Opts::new("sidecar_calls_total", "Calls to serving sidecars, by call and result"),
            &["call", "result"],
        )
        .expect("valid");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(sidecar_calls.clone()),
        ] {
            registry.register(c).expect("names are unique");
        }
        let rollouts = Registry::new();
        let md = ["namespace", "name", "model"];
        let rollout_step = IntGaugeVec::new(
            Opts::new(
                "versa_rollout_step",
                "Index of the current canary step (steps count once promoted)",
            ),
            &md,
        )
        .expect("valid");
        let rollout_weight = IntGaugeVec::new(
            Opts::new(
                "versa_rollout_weight",
                "Percent of unlabelled requests the canary's candidate gets",
            ),
            &md,
        )
        .expect("valid");
        let rollout_aborts = IntCounterVec::new(
            Opts::new("versa_rollout_aborts_total", "Canary rollouts aborted, by reason"),
            &["namespace", "name", "model", "reason"],
        )
        .expect("valid");
        let analysis_values = GaugeVec::new(
            Opts::new(
                "versa_analysis_value",
                "Last measured value of an analysis metric, per version",
            ),
            &["namespace", "name", "model", "metric", "version"],
        )
        .expect("valid");
        for c in [
            Box::new(rollout_step.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rollout_weight.clone()),
            Box::new(rollout_aborts.clone()),
            Box::new(analysis_values.clone()),
        ] {
            rollouts.register(c).expect("names are unique");
        }
        Self {
            registry,
            reconciles,
            failures,
            duration,
            sidecar_calls,
            rollouts,
            rollout_step,
            rollout_weight,
            rollout_aborts,
            analysis_values,
        }
    }

    /// Sets `versa_analysis_value` of `version` (NaN when not measured).
    pub fn analysis_value(&self, at: [&str; 3], metric: &str, version: i64, value: Option<f64>) {
        let [namespace, name, model] = at;
        self.analysis_values
            .with_label_values(&[namespace, name, model, metric, &version.to_string()])
            .set(value.unwrap_or(f64::NAN));
    }

    /// Counts a pass and times it until the guard drops.
    pub fn pass(&self) -> PassTimer<'_> {
        self.reconciles.inc();
        PassTimer { metrics: self, started: Instant::now() }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.rollouts.gather());
        let _ = prometheus::TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Observes a pass's duration when dropped.
#[derive(Debug)]
pub struct PassTimer<'a> {
    metrics: &'a Metrics,
    started: Instant,
}

impl Drop for PassTimer<'_> {
    fn drop(&mut self) {
        self.metrics.duration.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Serves `/metrics` and `/healthz` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Metrics) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_failures_and_durations_are_exposed() {
        let m = Metrics::new();
        drop(m.pass());
        m.failures.with_label_values(&["kube"]).inc();
        let text = m.render();
        assert!(text.contains("versa_operator_reconcile_runs_total 1"), "{text}");
        assert!(
            text.contains("versa_operator_reconcile_failures_total{error=\"kube\"} 1"),
            "{text}"
        );
        assert!(text.contains("versa_operator_reconcile_duration_seconds_count 1"), "{text}");
    }
}
