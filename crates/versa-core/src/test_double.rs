//! `TestDoubleLoader`: a stand-in for a real model loader, for tests only. It
//! can be told to fail, to block until released (a slow load), or to hold
//! memory, and it counts how many loaded copies exist at once.

use crate::{Code, Loader, ServableError, ServableId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Blocks loads of one version until opened.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl Gate {
    /// Lets every waiting and future load through.
    pub fn open(&self) {
        let (open, changed) = &*self.inner;
        *open.lock().unwrap_or_else(PoisonError::into_inner) = true;
        changed.notify_all();
    }

    fn wait(&self) {
        let (open, changed) = &*self.inner;
        let mut guard = open.lock().unwrap_or_else(PoisonError::into_inner);
        while !*guard {
            guard = changed.wait(guard).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Script {
    /// Attempts that fail before one succeeds (`u32::MAX`: every attempt).
    failures: u32,
    gate: Option<Gate>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Counters {
    live: AtomicUsize,
    peak: AtomicUsize,
}

/// What the test double "loads": which version it is and the memory it holds.
#[derive(Debug)]
pub struct TestServable {
    pub id: ServableId,
    pub path: PathBuf,
    _memory: Vec<u8>,
    counters: Arc<Counters>,
}

impl Drop for TestServable {
    fn drop(&mut self) {
        self.counters.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A scriptable loader for tests.
#[derive(Debug, Default)]
pub struct TestDoubleLoader {
    scripts: Mutex<HashMap<ServableId, Script>>,
    attempts: Mutex<HashMap<ServableId, u32>>,
    /// Bumped on every load attempt.
    attempt_made: tokio::sync::watch::Sender<u64>,
    counters: Arc<Counters>,
}

impl TestDoubleLoader {
    pub fn new() -> Self {
        Self::default()
    }

    fn script(&self, id: &ServableId, edit: impl FnOnce(&mut Script)) {
        edit(
            self.scripts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id.clone())
                .or_default(),
        );
    }

    /// Every load attempt of `id` fails.
    pub fn fail_always(&self, id: &ServableId) {
        self.script(id, |s| s.failures = u32::MAX);
    }

    /// The first `n` load attempts of `id` fail, later ones succeed.
    pub fn fail_times(&self, id: &ServableId, n: u32) {
        self.script(id, |s| s.failures = n);
    }

    /// Loads of `id` block until the returned gate is opened.
    pub fn gate(&self, id: &ServableId) -> Gate {
        let gate = Gate::default();
        self.script(id, |s| s.gate = Some(gate.clone()));
        gate
    }

    /// A loaded `id` holds (and touches) this many bytes.
    pub fn hold_memory(&self, id: &ServableId, bytes: usize) {
        self.script(id, |s| s.bytes = bytes);
    }

    /// Loaded copies alive now (loaded and not yet dropped).
    pub fn live_copies(&self) -> usize {
        self.counters.live.load(Ordering::SeqCst)
    }

    /// Most loaded copies alive at once so far.
    pub fn peak_copies(&self) -> usize {
        self.counters.peak.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `id` has seen at least `n` load attempts.
    pub async fn wait_for_attempts(
        &self,
        id: &ServableId,
        n: u32,
        timeout: std::time::Duration,
    ) -> bool {
        let mut made = self.attempt_made.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                made.borrow_and_update();
                if self.attempts(id) >= n {
                    return;
                }
                if made.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }

    /// Load attempts made for `id`.
    pub fn attempts(&self, id: &ServableId) -> u32 {
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner).get(id).copied().unwrap_or(0)
    }
}

impl Loader for TestDoubleLoader {
    type Servable = TestServable;

    fn estimate_resources(&self, id: &ServableId, _path: &Path) -> Result<u64, ServableError> {
        let scripts = self.scripts.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(scripts.get(id).map_or(0, |s| s.bytes as u64))
    }

    fn load(&self, id: &ServableId, path: &Path) -> Result<TestServable, ServableError> {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
            let n = attempts.entry(id.clone()).or_default();
            *n += 1;
            *n
        };
        self.attempt_made.send_modify(|made| *made += 1);
        let script = self
            .scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .unwrap_or_default();
        if let Some(gate) = &script.gate {
            gate.wait();
        }
        if attempt <= script.failures {
            return Err(ServableError::new(
                Code::DataLoss,
                format!("test double: load attempt {attempt} of {id} fails"),
            ));
        }
        let live = self.counters.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.counters.peak.fetch_max(live, Ordering::SeqCst);
        Ok(TestServable {
            id: id.clone(),
            path: path.to_owned(),
            // vec![1; n] touches every page, so the memory is really resident.
            _memory: vec![1; script.bytes],
            counters: Arc::clone(&self.counters),
        })
    }
}
