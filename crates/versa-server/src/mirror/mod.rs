//! Shadow traffic: a sample of a model's requests also runs on its mirror
//! version once the client's answer is produced. The copy's answer is
//! compared with the client's, counted and thrown away; it never delays
//! the request (copies run on their own lowest-priority threads, and a copy
//! over a bound is shed, never queued).

mod bounds;
mod inputs;
mod judge;
mod metrics;
mod sampling;
mod workers;

pub use judge::{JudgeError, OutputVerdict, Verdict, judge};
pub use metrics::{LABELS, MirrorMetrics, latency_ratio_buckets};
pub use sampling::is_sampled;

use crate::config::{MirrorSpec, MirrorTarget, ServingConfig};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use versa_compare::Reason;
use versa_core::{ServableHandle, ServingMap, VersionChoice};
use versa_onnx::{OnnxModel, Signature, TValue, TVec};

/// What became of a copy (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Agree,
    Disagree,
    Error,
    Timeout,
    Shed,
    Unavailable,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Agree => "agree",
            Self::Disagree => "disagree",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Shed => "shed",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A request chosen for copying (decided before its own run, so that its
/// inputs are kept).
#[derive(Debug, Clone)]
pub struct Sampled {
    model: String,
    spec: Arc<MirrorSpec>,
    target: i64,
    baseline: i64,
    route_key: Option<String>,
}

/// What a copy needs of the request it copies: not the baseline version
/// itself (a queued copy must not keep a version loaded), only its
/// signature.
#[derive(Debug)]
pub struct Original {
    pub baseline: Arc<Signature>,
    pub inputs: TVec<TValue>,
    /// Every output of the client's answer, in signature order.
    pub outputs: TVec<TValue>,
    /// CPU time of the client's run, when it ran alone (not batched).
    pub cpu: Option<Duration>,
}

/// Where a copy finds the mirror version: the serving map (tests: a
/// fixed set).
pub trait Versions: Send + Sync {
    /// The AVAILABLE instance of this version, if any.
    fn find(&self, model: &str, version: i64) -> Option<ServableHandle<OnnxModel>>;
}

impl Versions for ServingMap<OnnxModel> {
    fn find(&self, model: &str, version: i64) -> Option<ServableHandle<OnnxModel>> {
        self.resolve(model, &VersionChoice::Specific(version)).ok()
    }
}

/// Events allowed per period, per key.
#[derive(Debug, Default)]
struct RateLimit {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimit {
    fn allow(&self, key: &str, per: Duration, limit: u32) -> bool {
        if limit == 0 {
            return false;
        }
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let window = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(window.0) >= per {
            *window = (now, 0);
        }
        window.1 += 1;
        window.1 <= limit
    }
}

/// CPU time of the calling thread so far.
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// The shadow-traffic engine every request path shares.
#[derive(Debug)]
pub struct Mirror {
    workers: workers::Workers,
    pub metrics: MirrorMetrics,
    bounds: bounds::Bounds,
    per_model: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    logged: RateLimit,
}

impl Mirror {
    /// `threads` mirror threads (0: one per core); at most `max_total`
    /// copies (`--max_mirror_in_flight`) holding `max_bytes` bytes of
    /// tensors (`--max_mirror_bytes`) at once.
    pub fn new(threads: usize, max_total: usize, max_bytes: usize, metrics: MirrorMetrics) -> Self {
        Self {
            workers: workers::Workers::new(threads),
            metrics,
            bounds: bounds::Bounds::new(max_total, max_bytes),
            per_model: Mutex::default(),
            logged: RateLimit::default(),
        }
    }

    /// Whether the request `version` of `model` answers is copied, and to
    /// which version: not when the model has no active mirror, the mirror
    /// is the version answering, or the request is not in the sample.
    pub fn sample(
        &self,
        config: &ServingConfig,
        map: &ServingMap<OnnxModel>,
        model: &str,
        version: i64,
        route_key: Option<&str>,
    ) -> Option<Sampled> {
        let spec = config.model(model)?.mirror.as_ref().filter(|m| m.is_active())?;
        let target = match &spec.target {
            MirrorTarget::Version(v) => *v,
            MirrorTarget::Label(label) => map.label_target(model, label).ok()?,
        };
        if target == version
            || !is_sampled(
                spec.percent,
                spec.sampling,
                route_key,
                versa_core::routing::uniform_draw(),
            )
        {
            return None;
        }
        Some(Sampled {
            model: model.to_owned(),
            spec: Arc::clone(spec),
            target,
            baseline: version,
            route_key: route_key.map(str::to_owned),
        })
    }

    fn count(&self, sampled: &Sampled, outcome: Outcome) {
        let (target, baseline) = (sampled.target.to_string(), sampled.baseline.to_string());
        self.metrics
            .requests
            .with_label_values(&[sampled.model.as_str(), &target, &baseline, outcome.label()])
            .inc();
    }

    /// Queues the copy of a request that has its answer: shed when over a
    /// bound, unavailable when the mirror version is not loaded or has no
    /// plan for the copy's rows yet. That plan is never built on a mirror
    /// thread: at nice 19 it would hold up every client of the version
    /// waiting for the same plan. Its build starts here, in the background
    /// at the niceness of client-triggered builds, and later copies run.
    /// A queued copy holds no version: it finds the mirror version again
    /// in `versions` when it starts (unavailable if it is gone by then).
    pub fn submit(
        self: &Arc<Self>,
        sampled: Sampled,
        versions: Arc<dyn Versions>,
        original: Original,
    ) {
        let rows = OnnxModel::rows_of(&original.inputs);
        match versions.find(&sampled.model, sampled.target) {
            None => return self.count(&sampled, Outcome::Unavailable),
            Some(candidate) if !candidate.plan_ready(rows) => {
                candidate.prepare_plan(rows);
                tracing::debug!(model = %sampled.model, version = sampled.target, rows, "the mirror version's plan for these rows is being built: copy not run");
                return self.count(&sampled, Outcome::Unavailable);
            }
            Some(_) => {}
        }
        let model_counter = Arc::clone(
            self.per_model
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(sampled.model.clone())
                .or_default(),
        );
        // What the copy keeps alive: the request's inputs and the answer.
        let bytes = bounds::bytes_of(original.inputs.iter().chain(&original.outputs));
        let gauge = self.metrics.in_flight.with_label_values(&[sampled.model.as_str()]);
        let place = match self.bounds.take(model_counter, sampled.spec.max_in_flight, bytes, gauge)
        {
            Ok(place) => place,
            Err(over) => {
                if over == bounds::Over::Bytes
                    && self.logged.allow("bytes", Duration::from_secs(10), 1)
                {
                    tracing::warn!(
                        model = %sampled.model,
                        bytes,
                        "mirrored copies would hold more than --max_mirror_bytes={}: copy shed",
                        self.bounds.max_bytes()
                    );
                }
                return self.count(&sampled, Outcome::Shed);
            }
        };
        let deadline = Instant::now() + sampled.spec.timeout;
        let unsent = sampled.clone();
        let this = Arc::clone(self);
        let job = Box::new(move || {
            let _place = place;
            let span = tracing::debug_span!("mirror", model = %sampled.model, version = sampled.target, baseline_version = sampled.baseline);
            let _entered = span.enter();
            let outcome = match versions.find(&sampled.model, sampled.target) {
                None => Outcome::Unavailable,
                Some(candidate) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    this.run_copy(&sampled, &candidate, original, deadline)
                }))
                .unwrap_or_else(|_| {
                    tracing::error!("a mirrored copy panicked");
                    Outcome::Error
                }),
            };
            this.count(&sampled, outcome);
        });
        if !self.workers.submit(job) {
            // The job (and its place) were dropped unrun.
            tracing::error!("no mirror thread is running: copies are dropped");
            self.count(&unsent, Outcome::Error);
        }
    }

    /// Runs one copy and judges it (on a mirror thread).
    fn run_copy(
        &self,
        sampled: &Sampled,
        candidate: &ServableHandle<OnnxModel>,
        original: Original,
        deadline: Instant,
    ) -> Outcome {
        if Instant::now() > deadline {
            return Outcome::Timeout;
        }
        let inputs = match inputs::for_mirror(
            &original.baseline,
            candidate.signature(),
            original.inputs,
        ) {
            Ok(inputs) => inputs,
            Err(e) => {
                if self.logged.allow(
                    &format!("inputs/{}", sampled.model),
                    Duration::from_secs(10),
                    1,
                ) {
                    tracing::warn!(error = %e, "a mirrored copy cannot run on the mirror version");
                }
                return Outcome::Error;
            }
        };
        let rows = OnnxModel::rows_of(&inputs);
        if !candidate.plan_ready(rows) {
            // Never built here (see `submit`): a version reloaded since.
            candidate.prepare_plan(rows);
            return Outcome::Unavailable;
        }
        let started = thread_cpu_time();
        let answer = candidate.run_detached(inputs);
        let cpu = thread_cpu_time().saturating_sub(started);
        if Instant::now() > deadline {
            return Outcome::Timeout;
        }
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                if self.logged.allow(
                    &format!("error/{}", sampled.model),
                    Duration::from_secs(10),
                    1,
                ) {
                    tracing::warn!(error = %e.message, "the mirror version failed on a copy");
                }
                return Outcome::Error;
            }
        };
        let verdict = match judge(
            &original.baseline,
            &original.outputs,
            candidate.signature(),
            &answer,
            &sampled.spec.outputs,
        ) {
            Ok(verdict) => verdict,
            Err(e) => {
                if self.logged.allow(
                    &format!("judge/{}", sampled.model),
                    Duration::from_secs(10),
                    1,
                ) {
                    tracing::warn!(error = %e, "a mirrored copy cannot be compared");
                }
                return Outcome::Error;
            }
        };
        self.record_verdict(sampled, &verdict, original.cpu, cpu);
        if verdict.agrees() {
            return Outcome::Agree;
        }
        let per_minute = sampled.spec.log_per_minute;
        if self.logged.allow(
            &format!("disagree/{}", sampled.model),
            Duration::from_secs(60),
            per_minute,
        ) {
            let shown = |outputs: &[TValue]| -> Vec<String> {
                outputs.iter().map(|t| judge::preview(t, 16)).collect()
            };
            tracing::info!(
                route_key = sampled.route_key.as_deref().unwrap_or(""),
                why = verdict.first_disagreement().unwrap_or_default(),
                baseline = ?shown(&original.outputs),
                mirror = ?shown(&answer),
                "mirror disagrees"
            );
        }
        Outcome::Disagree
    }

    fn record_verdict(
        &self,
        sampled: &Sampled,
        verdict: &Verdict,
        baseline_cpu: Option<Duration>,
        cpu: Duration,
    ) {
        let (target, baseline) = (sampled.target.to_string(), sampled.baseline.to_string());
        let labels = [sampled.model.as_str(), target.as_str(), baseline.as_str()];
        for (alias, output) in &verdict.outputs {
            let OutputVerdict::Compared(c) = output else { continue };
            let with_output = [labels[0], labels[1], labels[2], alias.as_str()];
            let values_compared = !matches!(
                c.reason,
                Some(Reason::Shape { .. } | Reason::DType { .. } | Reason::Malformed)
            );
            if values_compared {
                self.metrics.difference.with_label_values(&with_output).observe(c.max_abs_diff);
            }
            if let Some(overlap) = c.top_k_overlap {
                self.metrics.top_k_overlap.with_label_values(&with_output).observe(overlap);
            }
        }
        if verdict.non_finite() > 0 {
            self.metrics.non_finite.with_label_values(&labels).inc();
        }
        if let Some(base) = baseline_cpu.filter(|b| !b.is_zero()) {
            let ratio = cpu.as_secs_f64() / base.as_secs_f64();
            self.metrics.latency_ratio.with_label_values(&labels).observe(ratio);
        }
    }
}

impl Sampled {
    pub fn target(&self) -> i64 {
        self.target
    }
}

#[cfg(test)]
mod tests;
