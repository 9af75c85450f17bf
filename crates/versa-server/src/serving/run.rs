//! Running a resolved version: on the request batcher or the inference
//! pool, bounded by the request's deadline, a copy handed to the mirror
//! once the answer exists.

use super::{Resolved, Serving};
use crate::error::ServingError;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use versa_core::Code;
use versa_onnx::{IntoArcTensor, OnnxModel, Signature, TValue, TVec, Tensor};

/// A model run on its way: every output in signature order and, when
/// timed, the CPU time of the run; or why not.
type RunFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<(TVec<TValue>, Option<Duration>), ServingError>>
            + Send,
    >,
>;

/// The outputs a request asked for, with their aliases, out of everything
/// the model produced: shared, not copied (a mirrored copy may hold them
/// too, to compare with its own answer).
pub(super) fn choose(
    signature: &Signature,
    produced: &[TValue],
    outputs: Vec<usize>,
) -> Result<Vec<(String, Arc<Tensor>)>, ServingError> {
    let mut chosen = Vec::with_capacity(outputs.len());
    for ix in outputs {
        let (Some(value), Some(spec)) = (produced.get(ix), signature.outputs.get(ix)) else {
            return Err(ServingError::new(
                Code::Internal,
                format!("the model produced no output {ix}"),
            ));
        };
        chosen.push((spec.alias.clone(), value.clone().into_arc_tensor()));
    }
    Ok(chosen)
}

impl Serving {
    /// Runs a resolved version on inputs in signature order and returns the
    /// chosen outputs with their aliases. Bounded by `deadline`. A batch size
    /// the model has no plan for yet waits for one without holding an
    /// inference thread; a full inference queue sheds the request.
    pub async fn run(
        &self,
        resolved: &Resolved,
        inputs: TVec<TValue>,
        outputs: Vec<usize>,
        deadline: Option<Instant>,
        api: &'static str,
        held: Option<Arc<crate::admission::Ticket>>,
    ) -> Result<Vec<(String, Arc<Tensor>)>, ServingError> {
        let handle = resolved.handle.clone();
        let started = std::time::Instant::now();
        let model = handle.id().name.as_str();
        // A copy keeps the inputs (shared, not copied) and times its original.
        let copying = self.sample_copy(resolved, &inputs);
        let timed = copying.is_some();
        let work: RunFuture = match &self.batcher {
            Some(batcher) if batcher.wants(&handle) => {
                let (batcher, handle) = (batcher.clone(), handle.clone());
                Box::pin(async move { Ok((batcher.run(handle, inputs, held).await?, None)) })
            }
            _ => {
                let (pool, handle) = (self.pool.clone(), handle.clone());
                let rows = OnnxModel::rows_of(&inputs);
                Box::pin(async move {
                    if !handle.plan_ready(rows) {
                        handle.wait_for_plan(rows).await;
                    }
                    let expected = handle.expected_run_time(rows);
                    pool.run_adaptive(expected, move || {
                        let cpu = timed.then(crate::mirror::thread_cpu_time);
                        let produced = handle.run(inputs)?;
                        Ok((
                            produced,
                            cpu.map(|c| crate::mirror::thread_cpu_time().saturating_sub(c)),
                        ))
                    })
                    .await
                    .map_err(ServingError::from)
                })
            }
        };
        let result = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, work)
                .await
                .map_err(|_| ServingError::new(Code::DeadlineExceeded, "Deadline Exceeded")),
            None => Ok(work.await),
        };
        let result = result.and_then(|r| r);
        if let Err(e) = &result
            && e.code == Code::ResourceExhausted
        {
            self.admission.count_shed(crate::admission::ShedReason::InferenceQueue, api);
        }
        self.metrics
            .tf_runtime_latency
            .with_label_values(&[model, "Predict", "TRACT"])
            .observe(started.elapsed().as_micros() as f64);
        let (produced, cpu) = result?;
        let chosen = choose(handle.signature(), &produced, outputs);
        if let Some(copying) = copying {
            self.submit_copy(copying, &handle, produced, cpu);
        }
        chosen
    }
}
