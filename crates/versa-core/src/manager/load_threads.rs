//! Threads for loader work (loads, unloads, size estimates): nicer than the
//! serving threads, and kept between jobs. The next job goes to the thread
//! idle for the shortest time, so in steady state one thread does every load
//! and unload. That matters for memory: the allocator gives each thread an
//! arena, and a version loaded after another was unloaded reuses the freed
//! memory only if it is allocated from the same arena; a fresh thread per
//! load can land on another arena and leave two copies resident.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// Loader work; returns how to report its outcome, which the thread calls
/// once it is idle again, so the next job (sent on that report) finds it.
pub(super) type Job = Box<dyn FnOnce() -> Report + Send>;
pub(super) type Report = Box<dyn FnOnce() + Send>;

/// A thread stays this long without work before it ends.
const IDLE_LIMIT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Pool {
    /// Idle threads, most recently idle last: (id, its job channel).
    idle: Mutex<Vec<(u64, mpsc::Sender<Job>)>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// One pool per niceness (a thread's niceness can only go up).
fn pool(niceness: i32) -> Arc<Pool> {
    static POOLS: OnceLock<Mutex<HashMap<i32, Arc<Pool>>>> = OnceLock::new();
    let mut pools =
        POOLS.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(pools.entry(niceness).or_default())
}

/// Runs `job` on a load thread of this niceness.
pub(super) fn submit(niceness: i32, job: Job) -> std::io::Result<()> {
    let pool = pool(niceness);
    let mut job = job;
    loop {
        let idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let Some((_, sender)) = idle else {
            return spawn(&pool, niceness, job);
        };
        // A thread that ended after its idle limit drops its channel: try the next.
        match sender.send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::SendError(returned)) => job = returned,
        }
    }
}

/// Runs `work` on a load thread of this niceness: work that must not take
/// cores from serving, such as preparing a model for a new input shape.
pub fn run_in_background(
    niceness: i32,
    work: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    submit(
        niceness,
        Box::new(move || {
            work();
            Box::new(|| {})
        }),
    )
}

fn spawn(pool: &Arc<Pool>, niceness: i32, first: Job) -> std::io::Result<()> {
    let id = pool.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (sender, jobs) = mpsc::channel::<Job>();
    let pool = Arc::clone(pool);
    std::thread::Builder::new().name("versa-load".into()).spawn(move || {
        if niceness != 0 {
            // Linux applies nice to the calling thread only.
            if let Err(e) = rustix::process::nice(niceness) {
                tracing::debug!("cannot lower the load thread's priority: {e}");
            }
        }
        let mut report = first();
        loop {
            pool.idle.lock().unwrap_or_else(PoisonError::into_inner).push((id, sender.clone()));
            report();
            match jobs.recv_timeout(IDLE_LIMIT) {
                Ok(job) => report = job(),
                Err(_) => {
                    let mut idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
                    match idle.iter().position(|(i, _)| *i == id) {
                        Some(pos) => {
                            idle.remove(pos);
                            return;
                        }
                        // Taken by a submitter right now: its job is on the way.
                        None => {
                            drop(idle);
                            match jobs.recv() {
                                Ok(job) => report = job(),
                                Err(_) => return,
                            }
                        }
                    }
                }
            }
        }
    })?;
    Ok(())
}
