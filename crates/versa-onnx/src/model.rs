//! A loaded ONNX model: its [`Plans`] (see there for which plan runs which
//! batch size, and where plans are built), the signature clients see, and
//! what its recent runs cost.

use crate::dtype;
use crate::plans::Plans;
use crate::signature::{Signature, TensorSpec};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;
use versa_core::{Code, ServableError};

/// File loaded from each version directory.
pub const MODEL_FILE: &str = "model.onnx";

/// How models are prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOptions {
    /// Batch sizes whose concretely-shaped plan is kept (least recently used
    /// ones are dropped beyond this). 0 always runs the symbolic plan.
    pub plan_cache_size: usize,
    /// At load, time a run of this many rows against a run of one (zeros),
    /// so request batching can be chosen per model (0: do not measure).
    pub batching_probe: usize,
    /// A model builds at most one plan for a new batch size this often.
    pub build_interval: std::time::Duration,
    /// Niceness of the threads plans are built on in the background.
    pub build_niceness: i32,
    /// Runs on zeros at load (warm-up), when warm-up is on.
    pub warm_up_runs: usize,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            plan_cache_size: 8,
            batching_probe: 0,
            build_interval: crate::plans::DEFAULT_BUILD_INTERVAL,
            build_niceness: 0,
            warm_up_runs: 1,
        }
    }
}

/// A model ready to run. `Send + Sync`: shared by every request.
#[derive(Debug)]
pub struct OnnxModel {
    signature: Arc<Signature>,
    plans: Arc<Plans>,
    /// Moving average of recent run times per batch row, nanoseconds (0:
    /// never run). Decides whether a run is short enough to do inline.
    row_nanos: AtomicU64,
    /// Per-row cost of one row over per-row cost of a batch, measured at load.
    batch_speedup: std::sync::OnceLock<(usize, f64)>,
    /// Whether inputs can take shapes the signature does not pin down
    /// beyond the batch dimension: then a failed run may be the input's
    /// fault, otherwise it is the server's.
    free_inner_dims: bool,
}

fn invalid_model(path: &Path, e: impl std::fmt::Display) -> ServableError {
    ServableError::new(
        Code::InvalidArgument,
        format!("cannot prepare ONNX model {}: {e}", path.display()),
    )
}

fn spec_of(name: &str, fact: &TypedFact) -> Result<TensorSpec, String> {
    let dtype = dtype::to_tf(fact.datum_type).ok_or_else(|| {
        format!("'{name}' has type {:?}, which has no TensorFlow dtype", fact.datum_type)
    })?;
    let shape = fact.shape.iter().map(|d| d.to_i64().unwrap_or(-1)).collect();
    Ok(TensorSpec { alias: name.to_owned(), dtype, shape })
}

impl OnnxModel {
    /// Loads `<dir>/model.onnx` and optimises it.
    pub fn load(dir: &Path, options: ModelOptions) -> Result<Self, ServableError> {
        let file = dir.join(MODEL_FILE);
        if !file.is_file() {
            return Err(ServableError::new(
                Code::NotFound,
                format!("no {MODEL_FILE} in version directory {}", dir.display()),
            ));
        }
        let inference = tract_onnx::onnx().model_for_path(&file).map_err(|e| {
            ServableError::new(
                Code::DataLoss,
                format!("cannot read {} as an ONNX model: {e}", file.display()),
            )
        })?;
        let typed = inference
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(|e| invalid_model(&file, e))?;
        let signature = Self::signature_of(&typed).map_err(|e| invalid_model(&file, e))?;
        let batch = Self::batch_symbol(&typed);
        let free_inner_dims =
            signature.inputs.iter().any(|i| i.shape.iter().skip(1).any(|&d| d < 0));
        let mut plans = Plans::new(typed, batch, options);
        // Optimise now, so a model tract cannot prepare fails to load rather
        // than at its first request: the batch-1 plan, or the symbolic one.
        let concrete = match plans.builds_concrete_plans() {
            true => plans.concrete_plan(1),
            false => Err(String::new()),
        };
        if concrete.is_err() {
            plans.generic_plan().map_err(|e| invalid_model(&file, e))?;
        }
        if !plans.builds_concrete_plans() {
            plans.drop_decluttered();
        }
        Ok(Self {
            signature: Arc::new(signature),
            plans: Arc::new(plans),
            row_nanos: AtomicU64::new(0),
            batch_speedup: std::sync::OnceLock::new(),
            free_inner_dims,
        })
    }

    /// Whether the decluttered model is still held (to build more plans).
    pub fn holds_decluttered_model(&self) -> bool {
        self.plans.holds_decluttered_model()
    }

    fn signature_of(typed: &TypedModel) -> Result<Signature, String> {
        let mut inputs = Vec::new();
        for (ix, outlet) in typed.input_outlets().map_err(|e| e.to_string())?.iter().enumerate() {
            let name = typed.node(outlet.node).name.clone();
            inputs.push(spec_of(&name, typed.input_fact(ix).map_err(|e| e.to_string())?)?);
        }
        let mut outputs = Vec::new();
        for (ix, outlet) in typed.output_outlets().map_err(|e| e.to_string())?.iter().enumerate() {
            let name = typed
                .outlet_label(*outlet)
                .map(str::to_owned)
                .unwrap_or_else(|| typed.node(outlet.node).name.clone());
            outputs.push(spec_of(&name, typed.output_fact(ix).map_err(|e| e.to_string())?)?);
        }
        Ok(Signature { inputs, outputs })
    }

    /// The symbol of dimension 0 when every input shares it: the batch.
    fn batch_symbol(typed: &TypedModel) -> Option<Symbol> {
        let facts: Vec<&TypedFact> =
            (0..typed.inputs.len()).filter_map(|ix| typed.input_fact(ix).ok()).collect();
        let first = match facts.first()?.shape.iter().next()? {
            TDim::Sym(s) => s.clone(),
            _ => return None,
        };
        facts
            .iter()
            .all(|f| matches!(f.shape.iter().next(), Some(TDim::Sym(s)) if *s == first))
            .then_some(first)
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The signature, shared: for work that outlives its hold on the model
    /// (a mirrored copy compares with the baseline's answer after letting
    /// the baseline go).
    pub fn shared_signature(&self) -> Arc<Signature> {
        Arc::clone(&self.signature)
    }

    /// Batch sizes with a concretely-shaped plan cached now, most recent last.
    pub fn cached_batch_sizes(&self) -> Vec<usize> {
        self.plans.cached_batch_sizes()
    }

    /// Plans built in the background so far (for new batch sizes).
    pub fn background_plan_builds(&self) -> u64 {
        self.plans.background_builds()
    }

    /// Whether a run of `rows` rows finds a plan ready (no optimisation).
    pub fn plan_ready(&self, rows: usize) -> bool {
        self.plans.ready(rows)
    }

    /// Waits, without using a core, until a run of `rows` rows finds a plan
    /// ready; call it before taking an inference thread.
    pub async fn wait_for_plan(&self, rows: usize) {
        self.plans.wait_ready(rows).await;
    }

    /// Starts building, in the background at the build niceness, the plan
    /// a run of `rows` rows lacks, and returns at once (see
    /// [`OnnxModel::plan_ready`]): for work that must not build it inline
    /// on a low-priority thread, where clients would wait behind it.
    pub fn prepare_plan(&self, rows: usize) {
        self.plans.prepare(rows);
    }

    /// Runs the model on inputs in signature order. Blocking: call it on the
    /// inference pool.
    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, ServableError> {
        let rows = Self::rows_of(&inputs);
        let started = Instant::now();
        let outputs = self.run_unrecorded(inputs)?;
        self.record_run(started.elapsed(), rows);
        Ok(outputs)
    }

    /// Runs the model without counting the run in its expected run time:
    /// for work at another priority (mirrored copies), whose times would
    /// mislead the inline-or-pool choice of requests.
    pub fn run_detached(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, ServableError> {
        self.run_unrecorded(inputs)
    }

    fn run_unrecorded(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, ServableError> {
        let plan = self.plans.for_batch(Self::rows_of(&inputs))?;
        plan.run(inputs).map_err(|e| {
            // Inputs were checked against the signature: unless it leaves
            // dimensions open that the graph may constrain, a failure is ours.
            let code = if self.free_inner_dims { Code::InvalidArgument } else { Code::Internal };
            ServableError::new(code, format!("model run failed: {e:#}"))
        })
    }

    /// Rows of a batch: dimension 0 of the first input (1 for a scalar).
    pub fn rows_of(inputs: &[TValue]) -> usize {
        inputs.first().and_then(|t| t.shape().first().copied()).unwrap_or(1)
    }

    fn record_run(&self, took: Duration, rows: usize) {
        let per_row = (took.as_nanos() / rows.max(1) as u128).min(u128::from(u64::MAX / 8)) as u64;
        let old = self.row_nanos.load(Ordering::Relaxed);
        // Races between threads lose an update now and then; it is an estimate.
        let new = if old == 0 { per_row } else { (old * 7 + per_row) / 8 };
        self.row_nanos.store(new.max(1), Ordering::Relaxed);
    }

    /// How long a run of `rows` rows is expected to take, from recent runs
    /// (`None` before the first run).
    pub fn expected_run_time(&self, rows: usize) -> Option<Duration> {
        match self.row_nanos.load(Ordering::Relaxed) {
            0 => None,
            per_row => Some(Duration::from_nanos(per_row.saturating_mul(rows as u64))),
        }
    }

    /// One run on zeros at batch size 1 (when every other dimension is known),
    /// so the batch-1 plan is built and first requests are not slow.
    pub fn warm_up(&self) -> Result<(), ServableError> {
        let Some(inputs) = self.zeros(1)? else {
            return Ok(()); // a free dimension we cannot guess: skip warm-up
        };
        for _ in 0..self.plans.options().warm_up_runs.max(1) {
            self.run(inputs.clone()).map_err(|e| {
                ServableError::new(e.code, format!("warm-up failed: {}", e.message))
            })?;
        }
        Ok(())
    }

    /// Inputs of zeros with `rows` rows, or `None` when a dimension other
    /// than the batch is free or a dtype has no zero.
    fn zeros(&self, rows: usize) -> Result<Option<TVec<TValue>>, ServableError> {
        let mut inputs = TVec::new();
        for spec in &self.signature.inputs {
            let mut shape = Vec::with_capacity(spec.shape.len());
            for (i, &d) in spec.shape.iter().enumerate() {
                match (i, d) {
                    (0, -1) if self.plans.has_batch_dimension() => shape.push(rows),
                    (_, d) if d >= 0 => shape.push(d as usize),
                    _ => return Ok(None),
                }
            }
            let zeros = match dtype::from_tf(spec.dtype) {
                Some(DatumType::String) => crate::convert::tensor_from_vec(
                    &shape,
                    vec![String::new(); shape.iter().product()],
                ),
                Some(dt) => Tensor::zero_dt(dt, &shape)
                    .map_err(|e| ServableError::new(Code::Internal, format!("zero input: {e}")))?,
                None => return Ok(None),
            };
            inputs.push(zeros.into_tvalue());
        }
        Ok(Some(inputs))
    }

    /// Measures how many times cheaper per row a run of `rows` rows is than
    /// a run of one row (zeros; best of a few runs each, after an untimed
    /// one), remembers it and seeds the expected run time. `None` when the
    /// model has no batch dimension or free dimensions.
    pub fn measure_batch_speedup(&self, rows: usize) -> Result<Option<f64>, ServableError> {
        if !self.plans.has_batch_dimension() || rows < 2 {
            return Ok(None);
        }
        let (Some(one), Some(many)) = (self.zeros(1)?, self.zeros(rows)?) else {
            return Ok(None);
        };
        if self.plans.builds_concrete_plans() {
            // Load time: the batch's own plan, here and now.
            self.plans.concrete_plan(rows).map_err(|e| {
                ServableError::new(Code::Internal, format!("cannot optimise for {rows} rows: {e}"))
            })?;
        }
        let best = |inputs: &TVec<TValue>| -> Result<Duration, ServableError> {
            self.run_unrecorded(inputs.clone())?;
            let mut best = Duration::MAX;
            let started = Instant::now();
            for i in 0.. {
                let t = Instant::now();
                self.run_unrecorded(inputs.clone())?;
                best = best.min(t.elapsed());
                if i >= 2 && (i >= 9 || started.elapsed() > Duration::from_millis(300)) {
                    break;
                }
            }
            Ok(best)
        };
        let single = best(&one)?;
        let batched = best(&many)?;
        self.record_run(single, 1);
        let speedup = single.as_secs_f64() * rows as f64 / batched.as_secs_f64().max(1e-9);
        let _ = self.batch_speedup.set((rows, speedup));
        Ok(Some(speedup))
    }

    /// What [`OnnxModel::measure_batch_speedup`] found: (rows, speedup).
    pub fn batch_speedup(&self) -> Option<(usize, f64)> {
        self.batch_speedup.get().copied()
    }
}
