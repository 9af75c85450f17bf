//! The request path's side of shadow traffic: before a request runs,
//! whether it is copied (then its inputs are kept, shared, and its run
//! timed); once it has its answer, the copy handed to the mirror.

use super::{Resolved, Serving};
use std::sync::Arc;
use std::time::Duration;
use versa_onnx::{OnnxModel, TValue, TVec};

/// A request chosen for copying, with its inputs (shared with its run).
#[derive(Debug)]
pub(super) struct Copying {
    sampled: crate::mirror::Sampled,
    inputs: TVec<TValue>,
}

impl Serving {
    /// Whether the request `resolved` answers, with `inputs`, is copied.
    pub(super) fn sample_copy(
        &self,
        resolved: &Resolved,
        inputs: &TVec<TValue>,
    ) -> Option<Copying> {
        let sampled = self.mirror.sample(
            &self.core.config(),
            self.core.serving_map(),
            resolved.handle.id().name.as_str(),
            resolved.version(),
            resolved.route_key.as_deref(),
        )?;
        Some(Copying { sampled, inputs: inputs.clone() })
    }

    /// Hands the copy of a request that has its answer (`produced`, every
    /// output in the signature order of `baseline`) to the mirror: shared,
    /// not copied, and holding no version.
    pub(super) fn submit_copy(
        &self,
        copying: Copying,
        baseline: &OnnxModel,
        produced: TVec<TValue>,
        cpu: Option<Duration>,
    ) {
        let original = crate::mirror::Original {
            baseline: baseline.shared_signature(),
            inputs: copying.inputs,
            outputs: produced,
            cpu,
        };
        let versions = Arc::clone(self.core.manager().serving_map());
        self.mirror.submit(copying.sampled, versions, original);
    }
}
