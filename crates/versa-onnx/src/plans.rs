//! The runnable plans of one loaded model, and where they are built.
//!
//! tract runs fastest on a plan optimised for one concrete batch size, and
//! optimising takes as long as a load. So a request never waits for one:
//! a batch size without a cached plan runs on the symbolic plan (one plan
//! for every batch size), and its own plan is built in the background, on
//! a nice load thread, one at a time per model and at most one per
//! `build_interval` — a client cycling through batch sizes costs a bounded
//! share of one low-priority core, not an optimisation per request. Build
//! jobs hold the plans weakly (an unloaded version is not kept for them)
//! and a build that panics is logged and given up, never left pending. The symbolic plan
//! itself is built on first need, also in the background: the request that
//! needs it first waits for it without holding an inference thread
//! ([`Plans::wait_ready`]).

use crate::model::ModelOptions;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;
use versa_core::{Code, ServableError};

pub(crate) type Plan = Arc<TypedRunnableModel>;

/// Plans optimised for a concrete batch size, most recently used last.
#[derive(Debug, Default)]
struct PlanCache {
    plans: Vec<(usize, Plan)>,
}

/// Background builds: what is on its way, and when the last one started.
#[derive(Debug, Default)]
struct Builds {
    /// The one concrete build on its way, if any.
    pending: Option<usize>,
    generic_pending: bool,
    /// The symbolic plan's build panicked: waiting for it is pointless.
    generic_failed: bool,
    last_started: Option<Instant>,
    built: u64,
}

#[derive(Debug)]
pub(crate) struct Plans {
    /// Decluttered, not optimised; batch dimension symbolic. Kept only while
    /// more plans may be built from it.
    typed: Option<TypedModel>,
    batch: Option<Symbol>,
    /// Optimised with the batch dimension symbolic: built at load when the
    /// model has no batch dimension (it is then the only plan), otherwise on
    /// first need, so a loaded model holds one optimised copy of its
    /// weights rather than two until another batch size shows up.
    generic: OnceLock<Result<Plan, String>>,
    generic_built: tokio::sync::Notify,
    cache: Mutex<PlanCache>,
    builds: Mutex<Builds>,
    options: ModelOptions,
}

impl Plans {
    pub(crate) fn new(typed: TypedModel, batch: Option<Symbol>, options: ModelOptions) -> Self {
        Self {
            typed: Some(typed),
            batch,
            generic: OnceLock::new(),
            generic_built: tokio::sync::Notify::new(),
            cache: Mutex::default(),
            builds: Mutex::default(),
            options,
        }
    }

    /// Whether plans for other batch sizes are built (from the decluttered
    /// model) as they are needed; otherwise the symbolic plan runs them all.
    pub(crate) fn builds_concrete_plans(&self) -> bool {
        self.batch.is_some() && self.options.plan_cache_size > 0
    }

    pub(crate) fn options(&self) -> &ModelOptions {
        &self.options
    }

    pub(crate) fn has_batch_dimension(&self) -> bool {
        self.batch.is_some()
    }

    /// Drops the decluttered model (no more plans will be built from it).
    pub(crate) fn drop_decluttered(&mut self) {
        self.typed = None;
    }

    pub(crate) fn holds_decluttered_model(&self) -> bool {
        self.typed.is_some()
    }

    fn decluttered(&self) -> Result<&TypedModel, String> {
        self.typed.as_ref().ok_or_else(|| "the decluttered model is no longer held".to_owned())
    }

    /// The symbolic plan, built here and now if it is not yet.
    pub(crate) fn generic_plan(&self) -> Result<Plan, String> {
        let plan = self
            .generic
            .get_or_init(|| {
                self.decluttered()?
                    .clone()
                    .into_optimized()
                    .and_then(|m| m.into_runnable())
                    .map_err(|e| format!("{e:#}"))
            })
            .clone();
        self.generic_built.notify_waiters();
        plan
    }

    fn cached(&self, batch: usize) -> Option<Plan> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let pos = cache.plans.iter().position(|(n, _)| *n == batch)?;
        let entry = cache.plans.remove(pos);
        let plan = Arc::clone(&entry.1);
        cache.plans.push(entry);
        Some(plan)
    }

    /// Batch sizes with a concrete plan cached now, most recent last.
    pub(crate) fn cached_batch_sizes(&self) -> Vec<usize> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.plans.iter().map(|(n, _)| *n).collect()
    }

    /// Plans built in the background so far.
    pub(crate) fn background_builds(&self) -> u64 {
        self.builds.lock().unwrap_or_else(PoisonError::into_inner).built
    }

    /// Builds the plan for `batch` here and now and caches it (load time:
    /// the warm-up and batching probe).
    pub(crate) fn concrete_plan(&self, batch: usize) -> Result<Plan, String> {
        if let Some(plan) = self.cached(batch) {
            return Ok(plan);
        }
        let symbol = self.batch.as_ref().ok_or("the model has no batch dimension")?;
        let concrete = std::collections::HashMap::from([(
            symbol.clone(),
            TDim::Val(i64::try_from(batch).map_err(|e| e.to_string())?),
        )]);
        let plan = self
            .decluttered()?
            .set_symbols(&concrete)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("{e:#}"))?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if !cache.plans.iter().any(|(n, _)| *n == batch) {
            cache.plans.push((batch, Arc::clone(&plan)));
            if cache.plans.len() > self.options.plan_cache_size {
                cache.plans.remove(0);
            }
        }
        Ok(plan)
    }

    /// Whether a run of `batch` rows finds a plan without optimising.
    pub(crate) fn ready(&self, batch: usize) -> bool {
        !self.builds_concrete_plans()
            || self.generic.get().is_some()
            || (batch > 0 && self.has_cached(batch))
    }

    fn has_cached(&self, batch: usize) -> bool {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.plans.iter().any(|(n, _)| *n == batch)
    }

    /// Waits until a run of `batch` rows finds a plan, having the symbolic
    /// plan built in the background if that is what it lacks.
    pub(crate) async fn wait_ready(self: &Arc<Self>, batch: usize) {
        loop {
            let notified = self.generic_built.notified();
            if self.ready(batch) || self.generic_failed() {
                return;
            }
            self.build_generic_in_background();
            // A build that fails (or panics) still notifies; the run then
            // reports the error.
            notified.await;
            if self.generic.get().is_some_and(Result::is_err) {
                return;
            }
        }
    }

    /// Has what a run of `batch` rows lacks (the symbolic plan) built in
    /// the background, at the build niceness, and returns at once: for a
    /// caller that will not wait (a mirrored copy is dropped instead).
    pub(crate) fn prepare(self: &Arc<Self>, batch: usize) {
        if !self.ready(batch) && !self.generic_failed() {
            self.build_generic_in_background();
        }
    }

    fn generic_failed(&self) -> bool {
        self.builds.lock().unwrap_or_else(PoisonError::into_inner).generic_failed
    }

    fn build_generic_in_background(self: &Arc<Self>) {
        {
            let mut builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
            if builds.generic_pending || builds.generic_failed {
                return;
            }
            builds.generic_pending = true;
        }
        let plans = Arc::downgrade(self);
        let submitted = versa_core::run_in_background(self.options.build_niceness, move || {
            let Some(plans) = Weak::upgrade(&plans) else { return };
            let built =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| plans.generic_plan()));
            let mut builds = plans.builds.lock().unwrap_or_else(PoisonError::into_inner);
            builds.generic_pending = false;
            match built {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!("cannot optimise the model for any batch size: {e}"),
                Err(_) => {
                    builds.generic_failed = true;
                    // Never again, on any thread: every run reports it.
                    let _ = plans.generic.set(Err("optimising the model panicked".to_owned()));
                    tracing::error!("optimising the model for any batch size panicked");
                }
            }
            drop(builds);
            plans.generic_built.notify_waiters();
        });
        if let Err(e) = submitted {
            tracing::warn!("no thread to optimise the model on, doing it here: {e}");
            let built =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.generic_plan()));
            if built.is_err() {
                let _ = self.generic.set(Err("optimising the model panicked".to_owned()));
            }
            self.builds.lock().unwrap_or_else(PoisonError::into_inner).generic_pending = false;
            self.generic_built.notify_waiters();
        }
    }

    /// Asks for a plan for `batch` to be built in the background, unless a
    /// build is on its way or the model started one too recently.
    fn request_concrete(self: &Arc<Self>, batch: usize) {
        {
            let mut builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let too_soon = builds
                .last_started
                .is_some_and(|t| now.duration_since(t) < self.options.build_interval);
            if too_soon || builds.pending.is_some() {
                return;
            }
            builds.pending = Some(batch);
            builds.last_started = Some(now);
        }
        let plans = Arc::downgrade(self);
        let submitted = versa_core::run_in_background(self.options.build_niceness, move || {
            let Some(plans) = Weak::upgrade(&plans) else { return };
            let started = Instant::now();
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                plans.concrete_plan(batch)
            }));
            match built {
                Ok(Ok(_)) => tracing::debug!(
                    batch,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "built a plan for a new batch size"
                ),
                Ok(Err(e)) => tracing::warn!(batch, "cannot build a plan for this batch size: {e}"),
                Err(_) => tracing::error!(batch, "building a plan for this batch size panicked"),
            }
            let mut builds = plans.builds.lock().unwrap_or_else(PoisonError::into_inner);
            builds.pending = None;
            builds.built += 1;
        });
        if let Err(e) = submitted {
            tracing::warn!(batch, "no thread to build a plan on: {e}");
            self.builds.lock().unwrap_or_else(PoisonError::into_inner).pending = None;
        }
    }

    /// The plan a run of `batch` rows uses now: its own cached one, else
    /// the symbolic one while its own is built in the background. Only when
    /// the symbolic plan does not exist yet (a caller that did not
    /// [`Plans::wait_ready`]) is it built here.
    pub(crate) fn for_batch(self: &Arc<Self>, batch: usize) -> Result<Plan, ServableError> {
        // No rows: nothing worth a plan of its own.
        if self.builds_concrete_plans() && batch > 0 {
            if let Some(plan) = self.cached(batch) {
                return Ok(plan);
            }
            self.request_concrete(batch);
        }
        self.generic_plan().map_err(|e| {
            ServableError::new(Code::Internal, format!("cannot optimise the model: {e}"))
        })
    }
}

/// How long a model waits between two background plan builds by default.
pub const DEFAULT_BUILD_INTERVAL: Duration = Duration::from_secs(1);
