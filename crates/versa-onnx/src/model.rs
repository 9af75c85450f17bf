//! A loaded ONNX model: the decluttered graph with its batch dimension left
//! symbolic (while more plans may be built from it), runnable plans optimised
//! for each batch size actually seen (bounded cache), and the signature
//! clients see.

use crate::dtype;
use crate::signature::{Signature, TensorSpec};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;
use versa_core::{Code, ServableError};

/// File loaded from each version directory.
pub const MODEL_FILE: &str = "model.onnx";

type Plan = Arc<TypedRunnableModel>;

/// How models are prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOptions {
    /// Batch sizes whose concretely-shaped plan is kept (least recently used
    /// ones are dropped beyond this). 0 always runs the symbolic plan.
    pub plan_cache_size: usize,
    /// At load, time a run of this many rows against a run of one (zeros),
    /// so request batching can be chosen per model (0: do not measure).
    pub batching_probe: usize,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self { plan_cache_size: 8, batching_probe: 0 }
    }
}

/// Plans optimised for a concrete batch size, most recently used last.
#[derive(Debug, Default)]
struct PlanCache {
    plans: Vec<(usize, Plan)>,
}

/// A model ready to run. `Send + Sync`: shared by every request.
#[derive(Debug)]
pub struct OnnxModel {
    signature: Signature,
    /// Decluttered, not optimised; batch dimension symbolic. Kept only while
    /// more plans may be built from it (a batch dimension and a plan cache);
    /// otherwise dropped once the symbolic plan exists, so the model holds
    /// only what its plan needs.
    typed: Option<TypedModel>,
    batch: Option<Symbol>,
    /// Optimised with the batch dimension symbolic: built at load when the
    /// model has no batch dimension (it is then the only plan), otherwise on
    /// first need (a batch size without a concrete plan), so a loaded model
    /// holds one optimised copy of its weights rather than two.
    generic: std::sync::OnceLock<Result<Plan, String>>,
    plans: Mutex<PlanCache>,
    options: ModelOptions,
    /// Moving average of recent run times per batch row, nanoseconds (0:
    /// never run). Decides whether a run is short enough to do inline.
    row_nanos: AtomicU64,
    /// Per-row cost of one row over per-row cost of a batch, measured at load.
    batch_speedup: std::sync::OnceLock<(usize, f64)>,
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
        let mut model = Self {
            signature,
            typed: Some(typed),
            batch,
            generic: std::sync::OnceLock::new(),
            plans: Mutex::default(),
            options,
            row_nanos: AtomicU64::new(0),
            batch_speedup: std::sync::OnceLock::new(),
        };
        // Optimise now, so a model tract cannot prepare fails to load rather
        // than at its first request: the batch-1 plan, or the symbolic one.
        let concrete = match model.builds_concrete_plans() {
            true => model.concrete_plan(1),
            false => Err(String::new()),
        };
        if concrete.is_err() {
            model.generic_plan().map_err(|e| invalid_model(&file, e))?;
        }
        if !model.builds_concrete_plans() {
            model.typed = None;
        }
        Ok(model)
    }

    /// Whether plans for other batch sizes are built (from the decluttered
    /// model) as they are needed; otherwise the symbolic plan runs them all.
    fn builds_concrete_plans(&self) -> bool {
        self.batch.is_some() && self.options.plan_cache_size > 0
    }

    /// Whether the decluttered model is still held (to build more plans).
    pub fn holds_decluttered_model(&self) -> bool {
        self.typed.is_some()
    }

    fn decluttered(&self) -> Result<&TypedModel, String> {
        self.typed.as_ref().ok_or_else(|| "the decluttered model is no longer held".to_owned())
    }

    fn generic_plan(&self) -> Result<Plan, String> {
        self.generic
            .get_or_init(|| {
                self.decluttered()?
                    .clone()
                    .into_optimized()
                    .and_then(|m| m.into_runnable())
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
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

    /// Batch sizes with a concretely-shaped plan cached now, most recent last.
    pub fn cached_batch_sizes(&self) -> Vec<usize> {
        self.plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .plans
            .iter()
            .map(|(n, _)| *n)
            .collect()
    }

    /// The plan for a batch size: a cached concrete one, a newly built one,
    /// or the symbolic plan when the model has no batch dimension or no
    /// concrete plan can be built.
    fn plan_for(&self, batch: usize) -> Result<Plan, ServableError> {
        let concrete = match (&self.batch, self.options.plan_cache_size) {
            (Some(_), 1..) => self.concrete_plan(batch),
            _ => Err(String::new()),
        };
        concrete.or_else(|concrete_error| {
            if !concrete_error.is_empty() {
                tracing::warn!(
                    batch,
                    "no concrete plan for this batch size, running the symbolic one: {concrete_error}"
                );
            }
            self.generic_plan().map_err(|e| {
                ServableError::new(Code::Internal, format!("cannot optimise the model: {e}"))
            })
        })
    }

    /// The plan optimised for `batch` rows, from the cache or built now (and
    /// cached, least recently used dropped beyond the cache size).
    fn concrete_plan(&self, batch: usize) -> Result<Plan, String> {
        let symbol = self.batch.as_ref().ok_or("the model has no batch dimension")?;
        {
            let mut cache = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(pos) = cache.plans.iter().position(|(n, _)| *n == batch) {
                let entry = cache.plans.remove(pos);
                let plan = Arc::clone(&entry.1);
                cache.plans.push(entry);
                return Ok(plan);
            }
        }
        // Built outside the lock: optimising takes a while and other batch
        // sizes must not wait for it.
        let concrete = std::collections::HashMap::from([(symbol.clone(), TDim::Val(batch as i64))]);
        let plan = self
            .decluttered()?
            .set_symbols(&concrete)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("{e:#}"))?;
        let mut cache = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        if !cache.plans.iter().any(|(n, _)| *n == batch) {
            cache.plans.push((batch, Arc::clone(&plan)));
            if cache.plans.len() > self.options.plan_cache_size {
                cache.plans.remove(0);
            }
        }
        Ok(plan)
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

    fn run_unrecorded(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, ServableError> {
        let plan = self.plan_for(Self::rows_of(&inputs))?;
        plan.run(inputs).map_err(|e| {
            ServableError::new(Code::InvalidArgument, format!("model run failed: {e:#}"))
        })
    }

    /// Rows of a batch: dimension 0 of the first input (1 for a scalar).
    pub fn rows_of(inputs: &[TValue]) -> usize {
        inputs.first().and_then(|t| t.shape().first().copied()).unwrap_or(1).max(1)
    }

    fn record_run(&self, took: Duration, rows: usize) {
        let per_row = (took.as_nanos() / rows as u128).min(u128::from(u64::MAX / 8)) as u64;
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
        self.run(inputs)
            .map(|_| ())
            .map_err(|e| ServableError::new(e.code, format!("warm-up failed: {}", e.message)))
    }

    /// Inputs of zeros with `rows` rows, or `None` when a dimension other
    /// than the batch is free or a dtype has no zero.
    fn zeros(&self, rows: usize) -> Result<Option<TVec<TValue>>, ServableError> {
        let mut inputs = TVec::new();
        for spec in &self.signature.inputs {
            let mut shape = Vec::with_capacity(spec.shape.len());
            for (i, &d) in spec.shape.iter().enumerate() {
                match (i, d) {
                    (0, -1) if self.batch.is_some() => shape.push(rows),
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
        if self.batch.is_none() || rows < 2 {
            return Ok(None);
        }
        let (Some(one), Some(many)) = (self.zeros(1)?, self.zeros(rows)?) else {
            return Ok(None);
        };
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
