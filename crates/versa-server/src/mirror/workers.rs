//! The threads that run mirrored copies: started on the first copy, at the
//! lowest priority (nice 19), so a copy only takes CPU time the serving
//! threads leave idle. The queue is bounded by the permits copies hold
//! (see [`super::Mirror`]), never by blocking a sender.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// A copy's work.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// Lowest priority there is for a normal thread.
const NICENESS: i32 = 19;

#[derive(Debug)]
pub(super) struct Workers {
    threads: usize,
    sender: OnceLock<Option<mpsc::Sender<Job>>>,
}

impl Workers {
    /// `threads` mirror threads (0: one per core), started on first use.
    pub(super) fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        Self { threads, sender: OnceLock::new() }
    }

    fn start(&self) -> Option<mpsc::Sender<Job>> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut started = 0;
        for i in 0..self.threads {
            let receiver = Arc::clone(&receiver);
            let spawned =
                std::thread::Builder::new().name(format!("versa-mirror-{i}")).spawn(move || {
                    // Linux applies nice to the calling thread only.
                    if let Err(e) = rustix::process::nice(NICENESS) {
                        tracing::warn!("cannot lower the mirror thread's priority: {e}");
                    }
                    loop {
                        let job = receiver.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(job) = job else { return };
                        job();
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!("cannot start a mirror thread: {e}"),
            }
        }
        (started > 0).then_some(sender)
    }

    /// Queues a job; false (the job dropped) if no mirror thread could start.
    pub(super) fn submit(&self, job: Job) -> bool {
        match self.sender.get_or_init(|| self.start()) {
            Some(sender) => sender.send(job).is_ok(),
            None => false,
        }
    }
}
