//! The inference pool: model runs happen on blocking threads, at most one per
//! core at a time (one tract run uses one core), never on the async reactor.

use std::sync::Arc;
use tokio::sync::Semaphore;
use versa_core::{Code, ServableError};

#[derive(Debug, Clone)]
pub struct InferencePool {
    slots: Arc<Semaphore>,
    size: usize,
}

impl InferencePool {
    /// A pool running `threads` inferences at once (0: one per core).
    pub fn new(threads: usize) -> Self {
        let size = if threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            threads
        };
        Self { slots: Arc::new(Semaphore::new(size)), size }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Waits for a free slot; the work that holds it must run on a blocking
    /// thread and drop it when done.
    pub async fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        Arc::clone(&self.slots).acquire_owned().await.expect("the pool's semaphore is never closed")
    }

    /// Runs blocking work once a slot is free. A panic becomes an INTERNAL error.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<R, ServableError> + Send + 'static,
    ) -> Result<R, ServableError> {
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| ServableError::new(Code::Unavailable, "inference pool closed"))?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .unwrap_or_else(|e| {
            Err(ServableError::new(Code::Internal, format!("inference panicked: {e}")))
        })
    }
}
