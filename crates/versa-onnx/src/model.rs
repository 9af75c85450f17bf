//! A loaded ONNX model: the decluttered graph with its batch dimension left
//! symbolic, runnable plans optimised for each batch size actually seen
//! (bounded cache), and the signature clients see.

use crate::dtype;
use crate::signature::{Signature, TensorSpec};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
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
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self { plan_cache_size: 8 }
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
    /// Decluttered, not optimised; batch dimension symbolic.
    typed: TypedModel,
    batch: Option<Symbol>,
    /// Optimised with the batch dimension symbolic.
    generic: Plan,
    plans: Mutex<PlanCache>,
    options: ModelOptions,
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
        let generic = typed
            .clone()
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| invalid_model(&file, e))?;
        Ok(Self { signature, typed, batch, generic, plans: Mutex::default(), options })
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
    /// or the symbolic plan when the model has no batch dimension.
    fn plan_for(&self, batch: usize) -> Plan {
        let Some(symbol) = &self.batch else {
            return Arc::clone(&self.generic);
        };
        if self.options.plan_cache_size == 0 {
            return Arc::clone(&self.generic);
        }
        {
            let mut cache = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(pos) = cache.plans.iter().position(|(n, _)| *n == batch) {
                let entry = cache.plans.remove(pos);
                let plan = Arc::clone(&entry.1);
                cache.plans.push(entry);
                return plan;
            }
        }
        // Built outside the lock: optimising takes a while and other batch
        // sizes must not wait for it.
        let concrete = std::collections::HashMap::from([(symbol.clone(), TDim::Val(batch as i64))]);
        let built = self
            .typed
            .set_symbols(&concrete)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable());
        match built {
            Ok(plan) => {
                let mut cache = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
                if !cache.plans.iter().any(|(n, _)| *n == batch) {
                    cache.plans.push((batch, Arc::clone(&plan)));
                    if cache.plans.len() > self.options.plan_cache_size {
                        cache.plans.remove(0);
                    }
                }
                plan
            }
            Err(e) => {
                tracing::warn!(
                    batch,
                    "no concrete plan for this batch size, running the symbolic one: {e}"
                );
                Arc::clone(&self.generic)
            }
        }
    }

    /// Runs the model on inputs in signature order. Blocking: call it on the
    /// inference pool.
    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, ServableError> {
        let batch = inputs.first().and_then(|t| t.shape().first().copied()).unwrap_or(1);
        let plan = self.plan_for(batch);
        plan.run(inputs).map_err(|e| {
            ServableError::new(Code::InvalidArgument, format!("model run failed: {e:#}"))
        })
    }

    /// One run on zeros at batch size 1 (when every other dimension is known),
    /// so the batch-1 plan is built and first requests are not slow.
    pub fn warm_up(&self) -> Result<(), ServableError> {
        let mut inputs = TVec::new();
        for spec in &self.signature.inputs {
            let mut shape = Vec::with_capacity(spec.shape.len());
            for (i, &d) in spec.shape.iter().enumerate() {
                match (i, d) {
                    (0, -1) if self.batch.is_some() => shape.push(1),
                    (_, d) if d >= 0 => shape.push(d as usize),
                    _ => return Ok(()), // a free dimension we cannot guess: skip warm-up
                }
            }
            let zeros = match dtype::from_tf(spec.dtype) {
                Some(DatumType::String) => crate::convert::tensor_from_vec(
                    &shape,
                    vec![String::new(); shape.iter().product()],
                ),
                Some(dt) => Tensor::zero_dt(dt, &shape).map_err(|e| {
                    ServableError::new(Code::Internal, format!("warm-up input: {e}"))
                })?,
                None => return Ok(()),
            };
            inputs.push(zeros.into_tvalue());
        }
        self.run(inputs)
            .map(|_| ())
            .map_err(|e| ServableError::new(e.code, format!("warm-up failed: {}", e.message)))
    }
}
