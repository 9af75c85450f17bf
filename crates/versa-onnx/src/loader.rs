//! The ONNX `Loader` the version manager drives.

use crate::model::{MODEL_FILE, ModelOptions, OnnxModel};
use std::path::Path;
use versa_core::{Loader, ServableError, ServableId};

/// Loads `<version dir>/model.onnx` with tract.
#[derive(Debug, Clone, Default)]
pub struct OnnxLoader {
    pub model: ModelOptions,
    /// Run the model once on zeros before it becomes AVAILABLE.
    pub warm_up: bool,
    /// Give the load's large buffers their own mappings, returned as soon
    /// as they are freed ([`versa_malloc::LargeBlocksMapped`]): a lower
    /// peak while loading, slower large allocations (other models'
    /// inference included) meanwhile. For ResourcePreserving swaps.
    pub low_peak_loads: bool,
}

impl Loader for OnnxLoader {
    type Servable = OnnxModel;

    /// The model file's size: weights dominate what a loaded model holds.
    fn estimate_resources(&self, _id: &ServableId, path: &Path) -> Result<u64, ServableError> {
        Ok(std::fs::metadata(path.join(MODEL_FILE)).map(|m| m.len()).unwrap_or(0))
    }

    fn load(&self, id: &ServableId, path: &Path) -> Result<OnnxModel, ServableError> {
        let mapped = self.low_peak_loads.then(versa_malloc::LargeBlocksMapped::hold);
        let result = self.prepare(id, path);
        drop(mapped);
        // Parsing, optimising and warming up freed several times the
        // model's size in transient buffers: give them back now rather
        // than leave them resident until some later allocation reuses them.
        versa_malloc::release_free_memory();
        result
    }

    fn unload(&self, id: &ServableId, servable: OnnxModel) {
        drop(servable);
        let released = versa_malloc::release_free_memory();
        tracing::debug!(model = %id.name, version = id.version, released, "unloaded");
    }
}

impl OnnxLoader {
    /// Loads, warms up and probes batching: everything `load` does but
    /// handing memory back.
    fn prepare(&self, id: &ServableId, path: &Path) -> Result<OnnxModel, ServableError> {
        let started = std::time::Instant::now();
        let model = OnnxModel::load(path, self.model.clone())?;
        if self.warm_up {
            model.warm_up()?;
        }
        if self.model.batching_probe > 1 {
            // A model that cannot run a batch still serves; it is just not batched.
            match model.measure_batch_speedup(self.model.batching_probe) {
                Ok(Some(speedup)) => tracing::info!(
                    model = %id.name,
                    version = id.version,
                    rows = self.model.batching_probe,
                    speedup = format!("{speedup:.2}"),
                    "a batch runs this many times cheaper per row than one row"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    model = %id.name,
                    version = id.version,
                    "cannot time a batch, so requests will not be batched: {}",
                    e.message
                ),
            }
        }
        tracing::info!(model = %id.name, version = id.version, elapsed_ms = started.elapsed().as_millis() as u64, "loaded");
        Ok(model)
    }
}
