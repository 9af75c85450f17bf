//! Request batching, as TensorFlow Serving's `--enable_batching` does it:
//! concurrent Predict requests for the same loaded version are merged into
//! one tract run of up to `max_batch_size` rows, waiting at most
//! `batch_timeout_micros` for a batch to fill, and split back per request.
//!
//! One queue per loaded version instance (so a version swap never mixes
//! versions in one batch), one shared pool of batch threads. A batch also
//! grows while it waits for a free thread, so under load batches form on
//! their own even with a zero timeout. A full queue answers UNAVAILABLE, a
//! request larger than `max_batch_size` INVALID_ARGUMENT, as upstream.
//!
//! A bad request fails alone: every input's rows are checked before a
//! request joins a queue, and a batch whose run fails is run again one
//! request at a time, so only the request at fault gets the error.

mod options;
mod precise_timer;
pub use options::BatchOptions;

use crate::admission::Ticket;
use crate::error::ServingError;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use versa_core::{Code, ServableError, ServableHandle, ServableId};
use versa_onnx::{InferencePool, OnnxModel, TValue, TVec, Tensor};

/// One request waiting in a queue.
struct Task {
    handle: ServableHandle<OnnxModel>,
    inputs: TVec<TValue>,
    rows: usize,
    reply: oneshot::Sender<Result<TVec<TValue>, ServableError>>,
    /// The request's admission ticket: its inputs stay counted while queued.
    _held: Option<Arc<Ticket>>,
}

impl Task {
    /// Whether nobody waits for the answer any more (the caller went away).
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// Runs one model run, a panic becoming an INTERNAL error of that run.
fn run_caught(
    handle: &ServableHandle<OnnxModel>,
    inputs: TVec<TValue>,
) -> Result<TVec<TValue>, ServableError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle.run(inputs)))
        .unwrap_or_else(|_| Err(ServableError::new(Code::Internal, "the model run panicked")))
}

/// Whether a model can be batched: every input and output has the batch
/// dimension (-1) first.
pub fn batchable(model: &OnnxModel) -> bool {
    let sig = model.signature();
    !sig.inputs.is_empty()
        && sig.inputs.iter().chain(sig.outputs.iter()).all(|t| t.shape.first() == Some(&-1))
}

/// The batching scheduler shared by all models.
#[derive(Debug, Clone)]
pub struct Batcher {
    options: Arc<BatchOptions>,
    pool: InferencePool,
    queues: Arc<Mutex<HashMap<ServableId, mpsc::Sender<Task>>>>,
    /// Batch a model only if a batch runs at least this many times cheaper
    /// per row than one row (measured at load); 0: batch every model.
    min_speedup: f64,
    metrics: Arc<Metrics>,
}

/// The rows of a request: dimension 0, the same in every input.
pub fn rows_of(inputs: &[TValue]) -> Result<usize, ServingError> {
    let mut rows = None;
    for (i, input) in inputs.iter().enumerate() {
        let Some(&n) = input.shape().first() else {
            return Err(ServingError::invalid_argument(format!(
                "input {i} is a scalar: batched requests need a batch dimension in every input"
            )));
        };
        match rows {
            None => rows = Some(n),
            Some(r) if r == n => {}
            Some(r) => {
                return Err(ServingError::invalid_argument(format!(
                    "inputs disagree on the batch size: input 0 has {r} rows, input {i} has {n}"
                )));
            }
        }
    }
    Ok(rows.unwrap_or(0))
}

impl Batcher {
    pub fn new(options: BatchOptions, metrics: Arc<Metrics>) -> Self {
        let pool = InferencePool::new(options.num_batch_threads);
        Self { options: Arc::new(options), pool, queues: Arc::default(), min_speedup: 0.0, metrics }
    }

    /// Batch only models whose measured batch speedup reaches `min_speedup`.
    pub fn with_min_speedup(mut self, min_speedup: f64) -> Self {
        self.min_speedup = min_speedup;
        self
    }

    /// Whether requests to this model go through the batcher: it must be
    /// batchable and, unless every model is batched, measured to gain.
    pub fn wants(&self, model: &OnnxModel) -> bool {
        batchable(model)
            && (self.min_speedup <= 0.0
                || model.batch_speedup().is_some_and(|(_, s)| s >= self.min_speedup))
    }

    /// Batches expected to run within `limit` run on the queue's own task
    /// rather than on a blocking thread (see [`InferencePool::with_inline_limit`]).
    pub fn with_inline_limit(mut self, limit: Duration) -> Self {
        self.pool = self.pool.with_inline_limit(limit);
        self
    }

    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// Queues one request and waits for its share of a batch's outputs.
    /// A request with no rows has nothing to share and runs alone.
    pub async fn run(
        &self,
        handle: ServableHandle<OnnxModel>,
        inputs: TVec<TValue>,
        held: Option<Arc<Ticket>>,
    ) -> Result<TVec<TValue>, ServingError> {
        let rows = rows_of(&inputs)?;
        if rows == 0 {
            return Ok(self.pool.run(move || run_caught(&handle, inputs)).await?);
        }
        if rows > self.options.max_batch_size {
            return Err(ServingError::new(
                Code::InvalidArgument,
                format!(
                    "Task size {rows} is larger than maximum input batch size {}",
                    self.options.max_batch_size
                ),
            ));
        }
        let (reply, answer) = oneshot::channel();
        let task = Task { handle, inputs, rows, reply, _held: held };
        self.queue_for(&task.handle).try_send(task).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ServingError::new(
                Code::Unavailable,
                "The batch scheduling queue to which this task was submitted is full",
            ),
            mpsc::error::TrySendError::Closed(_) => {
                ServingError::new(Code::Unavailable, "the batch queue closed")
            }
        })?;
        let produced =
            answer.await.map_err(|_| ServingError::new(Code::Internal, "the batch was dropped"))?;
        Ok(produced?)
    }

    /// The queue of a loaded version; a new instance of the same version
    /// (unloaded and loaded again) gets a new queue.
    fn queue_for(&self, handle: &ServableHandle<OnnxModel>) -> mpsc::Sender<Task> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues.retain(|_, q| !q.is_closed());
        if let Some(q) = queues.get(handle.id()) {
            return q.clone();
        }
        let capacity = self
            .options
            .max_enqueued_batches
            .saturating_mul(self.options.max_batch_size)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        let (tx, rx) = mpsc::channel(capacity);
        let id = handle.id().clone();
        let worker = Worker {
            options: Arc::clone(&self.options),
            pool: self.pool.clone(),
            metrics: Arc::clone(&self.metrics),
        };
        let queues_ref = Arc::clone(&self.queues);
        tokio::spawn(async move {
            worker.serve(rx).await;
            // Idle: forget the queue so the version's handle can go.
            let mut queues = queues_ref.lock().unwrap_or_else(PoisonError::into_inner);
            if queues.get(&id).is_some_and(mpsc::Sender::is_closed) {
                queues.remove(&id);
            }
        });
        queues.insert(handle.id().clone(), tx.clone());
        tx
    }
}

/// Forms and runs the batches of one queue.
struct Worker {
    options: Arc<BatchOptions>,
    pool: InferencePool,
    metrics: Arc<Metrics>,
}

/// Non-batch dimensions of a task's inputs: tasks join a batch only if these match.
fn inner_shapes(task: &Task) -> Vec<Vec<usize>> {
    task.inputs.iter().map(|t| t.shape().get(1..).unwrap_or_default().to_vec()).collect()
}

impl Worker {
    /// Until the queue has been idle for a while: take tasks into a batch
    /// until it is full, its timeout passes and a thread is free, then run it.
    async fn serve(self, mut rx: mpsc::Receiver<Task>) {
        let idle = Duration::from_secs(30);
        let mut carried: Option<Task> = None;
        loop {
            let first = match carried.take() {
                Some(t) => t,
                None => match tokio::time::timeout(idle, rx.recv()).await {
                    Ok(Some(t)) => t,
                    _ => return,
                },
            };
            if first.abandoned() {
                continue;
            }
            let shapes = inner_shapes(&first);
            let mut rows = first.rows;
            let mut batch = vec![first];
            // 1. Fill until the timeout. With none, take only what is queued
            //    already: the batch then grows while it waits for a thread.
            if self.options.batch_timeout.is_zero() {
                while rows < self.options.max_batch_size {
                    let Ok(task) = rx.try_recv() else { break };
                    if !self.admit(&mut batch, &shapes, &mut rows, task, &mut carried) {
                        break;
                    }
                }
            } else {
                let fill_until = crate::deadline::after(self.options.batch_timeout).into_std();
                let timeout = precise_timer::sleep_until(fill_until);
                tokio::pin!(timeout);
                while rows < self.options.max_batch_size {
                    let next = tokio::select! {
                        biased;
                        t = rx.recv() => t,
                        () = &mut timeout => None,
                    };
                    let Some(task) = next else { break };
                    if !self.admit(&mut batch, &shapes, &mut rows, task, &mut carried) {
                        break;
                    }
                }
            }
            // A new padded size runs on the symbolic plan, built in the
            // background the first time one is needed: wait for it before
            // taking a thread.
            batch[0].handle.wait_for_plan(self.options.padded(rows)).await;
            // 2. Wait for a thread, taking what arrives meanwhile.
            let slot = loop {
                if carried.is_some() || rows >= self.options.max_batch_size {
                    break self.pool.slot().await;
                }
                tokio::select! {
                    biased;
                    slot = self.pool.slot() => break slot,
                    t = rx.recv() => match t {
                        Some(task) => {
                            self.admit(&mut batch, &shapes, &mut rows, task, &mut carried);
                        }
                        None => break self.pool.slot().await,
                    },
                }
            };
            // Callers that went away while queued are not run for.
            batch.retain(|t| !t.abandoned());
            if batch.is_empty() {
                continue;
            }
            let rows: usize = batch.iter().map(|t| t.rows).sum();
            let padded = self.options.padded(rows);
            if !batch[0].handle.plan_ready(padded) {
                // Rare: the batch grew into a size without a plan before the
                // symbolic plan existed.
                batch[0].handle.wait_for_plan(padded).await;
            }
            self.metrics.batch_tasks.observe(batch.len() as f64);
            self.metrics.batch_rows.observe(padded as f64);
            if self.pool.is_short(batch[0].handle.expected_run_time(padded)) {
                // Short: run here (this queue's next batch waits for it anyway).
                let _slot = slot;
                run_batch(batch, padded);
            } else {
                tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    run_batch(batch, padded);
                });
            }
        }
    }

    /// Adds `task` to the batch if it fits there; otherwise keeps it for
    /// the next batch. Whether the batch may take more.
    fn admit(
        &self,
        batch: &mut Vec<Task>,
        shapes: &[Vec<usize>],
        rows: &mut usize,
        task: Task,
        carried: &mut Option<Task>,
    ) -> bool {
        if self.joins(batch, shapes, *rows, &task) {
            *rows += task.rows;
            batch.push(task);
            true
        } else {
            *carried = Some(task);
            false
        }
    }

    fn joins(&self, batch: &[Task], shapes: &[Vec<usize>], rows: usize, task: &Task) -> bool {
        rows.saturating_add(task.rows) <= self.options.max_batch_size
            && batch[0].handle.same_instance(&task.handle)
            && inner_shapes(task) == shapes
    }
}

/// Concatenates the batch's inputs (padded to `padded` rows by repeating the
/// first row), runs the model once, and sends each task its rows.
fn run_batch(batch: Vec<Task>, padded: usize) {
    let rows: usize = batch.iter().map(|t| t.rows).sum();
    let result = (|| -> Result<TVec<TValue>, ServableError> {
        if batch.len() == 1 && padded == rows {
            return Ok(TVec::new());
        }
        let internal = |e: versa_onnx::TractError| {
            ServableError::new(Code::Internal, format!("batching: {e:#}"))
        };
        let inputs = batch[0].inputs.len();
        let mut merged = TVec::with_capacity(inputs);
        for i in 0..inputs {
            let mut parts: Vec<&Tensor> = batch.iter().map(|t| &*t.inputs[i]).collect();
            let pad;
            if padded > rows {
                pad = batch[0].inputs[i].slice(0, 0, 1).map_err(internal)?;
                parts.extend(std::iter::repeat_n(&pad, padded - rows));
            }
            merged.push(Tensor::stack_tensors(0, &parts).map_err(internal)?.into());
        }
        Ok(merged)
    })();
    let mut batch = batch;
    let merged = match result {
        Ok(m) if m.is_empty() => {
            // One task, no padding: run it as it is.
            let task = batch.pop().expect("one task");
            let outcome = run_caught(&task.handle, task.inputs);
            let _ = task.reply.send(outcome);
            return;
        }
        Ok(m) => m,
        Err(_) => return run_one_by_one(batch),
    };
    let outputs = match run_caught(&batch[0].handle, merged) {
        Ok(o) => o,
        Err(_) => return run_one_by_one(batch),
    };
    let mut start = 0;
    for task in batch {
        let end = start + task.rows;
        let mine: Result<TVec<TValue>, ServableError> = outputs
            .iter()
            .map(|o| {
                o.slice(0, start, end).map(TValue::from).map_err(|e| {
                    ServableError::new(
                        Code::Internal,
                        format!("batching: an output has no batch dimension: {e:#}"),
                    )
                })
            })
            .collect();
        let _ = task.reply.send(mine);
        start = end;
    }
}

/// A batch that cannot run together: each request runs alone, so the one
/// at fault gets its own error and every other its answer.
fn run_one_by_one(batch: Vec<Task>) {
    for task in batch {
        let outcome = run_caught(&task.handle, task.inputs);
        let _ = task.reply.send(outcome);
    }
}

#[cfg(test)]
mod tests;
