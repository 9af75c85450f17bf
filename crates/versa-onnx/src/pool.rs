//! The inference pool: at most one model run per core at a time (one tract
//! run uses one core). Long runs go to blocking threads; runs expected to be
//! short (a small model at a small batch) run where the request already is,
//! when a slot is free right away: handing a 50 µs run to another thread
//! costs about as much as the run itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use versa_core::{Code, ServableError};

#[derive(Debug, Clone)]
pub struct InferencePool {
    slots: Arc<Semaphore>,
    size: usize,
    inline_limit: Duration,
    /// Runs waiting for a slot now, and how many may.
    waiting: Arc<AtomicUsize>,
    queue_limit: usize,
    /// What sets the queue limit (a flag), for errors.
    queue_setting: &'static str,
}

/// Counts a run as waiting while it lives.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InferencePool {
    /// A pool running `threads` inferences at once (0: one per core), every
    /// one on a blocking thread.
    pub fn new(threads: usize) -> Self {
        let size = if threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            threads.min(Semaphore::MAX_PERMITS)
        };
        Self {
            slots: Arc::new(Semaphore::new(size)),
            size,
            inline_limit: Duration::ZERO,
            waiting: Arc::default(),
            queue_limit: usize::MAX,
            queue_setting: "",
        }
    }

    /// At most `limit` runs wait for a slot; a run beyond it fails at once
    /// with RESOURCE_EXHAUSTED naming `setting`.
    pub fn with_queue_limit(mut self, limit: usize, setting: &'static str) -> Self {
        self.queue_limit = limit;
        self.queue_setting = setting;
        self
    }

    /// Runs waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A slot now, or a place in the queue for one (or why not).
    async fn slot_or_queue(&self) -> Result<OwnedSemaphorePermit, ServableError> {
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(slot);
        }
        let limit = self.queue_limit;
        let queued = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .is_ok();
        if !queued {
            return Err(ServableError::new(
                Code::ResourceExhausted,
                format!(
                    "{limit} model runs are already waiting for an inference thread{}; retry later",
                    if self.queue_setting.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", self.queue_setting)
                    }
                ),
            ));
        }
        let _waiting = Waiting(Arc::clone(&self.waiting));
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| ServableError::new(Code::Unavailable, "inference pool closed"))
    }

    /// Runs expected to take at most `limit` run inline (on the calling
    /// task's thread) when a slot is free; zero turns that off.
    pub fn with_inline_limit(mut self, limit: Duration) -> Self {
        self.inline_limit = limit;
        self
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether a run expected to take `expected` (`None`: unknown) is short
    /// enough to run inline.
    pub fn is_short(&self, expected: Option<Duration>) -> bool {
        matches!(expected, Some(t) if t <= self.inline_limit)
    }

    /// A slot if one is free now.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// Runs `work` inline when `expected` is short and a slot is free now,
    /// otherwise like [`InferencePool::run`].
    pub async fn run_adaptive<R: Send + 'static>(
        &self,
        expected: Option<Duration>,
        work: impl FnOnce() -> Result<R, ServableError> + Send + 'static,
    ) -> Result<R, ServableError> {
        if self.is_short(expected)
            && let Some(_slot) = self.try_slot()
        {
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|_| Err(ServableError::new(Code::Internal, "inference panicked")));
        }
        self.run(work).await
    }

    /// Waits for a free slot; the work that holds it must run on a blocking
    /// thread and drop it when done.
    pub async fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        Arc::clone(&self.slots).acquire_owned().await.expect("the pool's semaphore is never closed")
    }

    /// Runs blocking work once a slot is free (waiting in the bounded
    /// queue). A panic becomes an INTERNAL error.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<R, ServableError> + Send + 'static,
    ) -> Result<R, ServableError> {
        let slot = self.slot_or_queue().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn thread() -> std::thread::ThreadId {
        std::thread::current().id()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn short_runs_stay_inline_long_and_unknown_ones_go_to_a_blocking_thread() {
        let pool = InferencePool::new(1).with_inline_limit(Duration::from_micros(300));
        let here = thread();
        let short = pool.run_adaptive(Some(Duration::from_micros(50)), move || Ok(thread()));
        assert_eq!(short.await.expect("runs"), here);
        let long = pool.run_adaptive(Some(Duration::from_millis(5)), move || Ok(thread()));
        assert_ne!(long.await.expect("runs"), here);
        let unknown = pool.run_adaptive(None, move || Ok(thread()));
        assert_ne!(unknown.await.expect("runs"), here);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_short_run_waits_for_a_slot_off_thread_when_none_is_free() {
        let pool = InferencePool::new(1).with_inline_limit(Duration::from_micros(300));
        let held = pool.slot().await;
        let waiting = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run_adaptive(Some(Duration::from_micros(10)), || Ok(thread())).await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "must wait for the held slot");
        drop(held);
        let ran_on = waiting.await.expect("joins").expect("runs");
        assert_ne!(ran_on, thread());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_beyond_the_queue_limit_are_refused_at_once() {
        let pool = InferencePool::new(1).with_queue_limit(2, "--max_queued_inferences");
        let held = pool.slot().await;
        let mut queued = Vec::new();
        for _ in 0..2 {
            let pool = pool.clone();
            queued.push(tokio::spawn(async move { pool.run(|| Ok(1)).await }));
        }
        while pool.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        let err = pool.run(|| Ok(1)).await.expect_err("queue full");
        assert_eq!(err.code, Code::ResourceExhausted);
        assert!(err.message.contains("--max_queued_inferences"), "{}", err.message);
        drop(held);
        for q in queued {
            assert_eq!(q.await.expect("joins").expect("runs"), 1);
        }
        assert_eq!(pool.waiting(), 0);
    }

    #[tokio::test]
    async fn a_panic_inline_is_an_internal_error() {
        let pool = InferencePool::new(1).with_inline_limit(Duration::from_micros(300));
        let err = pool
            .run_adaptive(Some(Duration::from_micros(1)), || -> Result<(), ServableError> {
                panic!("boom")
            })
            .await
            .expect_err("fails");
        assert_eq!(err.code, Code::Internal);
    }
}
