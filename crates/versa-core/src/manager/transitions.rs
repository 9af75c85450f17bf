//! Executing the policy's decisions: loads (resource reservation, retries,
//! cancellation) and unloads (waiting for in-flight requests).

use super::{Inner, Phase, Shared, harness};
use crate::serving_map::ReleaseReceiver;
use crate::{Code, Loader, ManagerState, ServableError, ServableId};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;
use tracing::Instrument;

impl<L: Loader> Shared<L> {
    pub(super) fn start_queued_loads(self: &Arc<Self>, inner: &mut Inner<L::Servable>) {
        while inner.active_loads < inner.load_limit {
            let Some(id) = inner.load_queue.pop_front() else {
                break;
            };
            let Some(h) = harness(inner, &id) else {
                continue;
            };
            if h.phase != Phase::LoadQueued {
                continue;
            }
            let path = h.path.clone();
            let cancel = h.cancel.subscribe();
            inner.active_loads += 1;
            let span = tracing::info_span!("load", model = %id.name, version = id.version);
            tokio::spawn(Arc::clone(self).run_load(id, path, cancel).instrument(span));
        }
    }

    /// Reserves resources, loads with retries, and hands the outcome over.
    async fn run_load(
        self: Arc<Self>,
        id: ServableId,
        path: PathBuf,
        cancel: watch::Receiver<bool>,
    ) {
        let outcome = match self.reserve_resources(&id, &path).await {
            Ok(()) => {
                if let Some(h) = harness(&mut self.lock(), &id) {
                    h.phase = Phase::Loading;
                }
                self.monitor.publish_ok(&id, ManagerState::Loading);
                self.load_with_retries(&id, &path, cancel).await
            }
            Err(e) => Err(e),
        };
        self.finish_load(id, outcome);
    }

    async fn reserve_resources(&self, id: &ServableId, path: &Path) -> Result<(), ServableError> {
        let Some(limit) = self.options.total_model_memory_limit_bytes else {
            return Ok(());
        };
        let estimate = {
            let (loader, id, path) = (Arc::clone(&self.loader), id.clone(), path.to_owned());
            off_thread(self.options.load_thread_niceness, move || {
                loader.estimate_resources(&id, &path)
            })
            .await?
        };
        let mut inner = self.lock();
        if inner.reserved_bytes.saturating_add(estimate) > limit {
            return Err(ServableError::new(
                Code::ResourceExhausted,
                format!("Insufficient resources to load servable {id}"),
            ));
        }
        inner.reserved_bytes += estimate;
        if let Some(h) = harness(&mut inner, id) {
            h.reserved_bytes = estimate;
        }
        Ok(())
    }

    async fn load_with_retries(
        &self,
        id: &ServableId,
        path: &Path,
        mut cancel: watch::Receiver<bool>,
    ) -> Result<L::Servable, ServableError> {
        let mut attempt = 0;
        loop {
            let result = {
                let (loader, id, path) = (Arc::clone(&self.loader), id.clone(), path.to_owned());
                off_thread(self.options.load_thread_niceness, move || loader.load(&id, &path)).await
            };
            let error = match result {
                Ok(servable) => return Ok(servable),
                Err(error) => error,
            };
            tracing::warn!(attempt, "Servable {id} cannot be loaded: {error}");
            if attempt >= self.options.max_num_load_retries || *cancel.borrow() {
                return Err(error);
            }
            attempt += 1;
            tokio::select! {
                () = tokio::time::sleep(self.options.load_retry_interval) => {}
                _ = cancel.wait_for(|cancelled| *cancelled) => {
                    tracing::info!("load retries of {id} cancelled: no longer aspired");
                    return Err(error);
                }
            }
        }
    }

    /// Makes a loaded version AVAILABLE, or records why it is not.
    fn finish_load(self: &Arc<Self>, id: ServableId, outcome: Result<L::Servable, ServableError>) {
        let mut inner = self.lock();
        inner.active_loads -= 1;
        let mut discard = None;
        let mut release_bytes = 0;
        if let Some(h) = harness(&mut inner, &id) {
            match outcome {
                Ok(servable) if h.aspired => {
                    h.release = Some(self.serving.insert(id.clone(), servable));
                    h.phase = Phase::Ready;
                    // Published after the map update: AVAILABLE means routable.
                    self.monitor.publish_ok(&id, ManagerState::Available);
                    tracing::info!(model = %id.name, version = id.version, "version available");
                }
                Ok(servable) => {
                    h.phase = Phase::Disabled;
                    release_bytes = std::mem::take(&mut h.reserved_bytes);
                    discard = Some(servable);
                    self.monitor.publish_error(&id, ServableError::load_cancelled());
                }
                Err(error) => {
                    h.phase = Phase::Error;
                    release_bytes = std::mem::take(&mut h.reserved_bytes);
                    self.monitor.publish_error(&id, error);
                }
            }
        }
        inner.reserved_bytes -= release_bytes;
        drop(inner);
        if let Some(servable) = discard {
            let shared = Arc::clone(self);
            tokio::spawn(async move {
                let loader = Arc::clone(&shared.loader);
                let _ = off_thread(shared.options.load_thread_niceness, move || {
                    loader.unload(&id, servable);
                    Ok(())
                })
                .await;
                shared.tick();
            });
        }
        self.tick();
    }

    /// UNLOADING is published before the version leaves the map; the unload
    /// itself waits until no request holds the version.
    pub(super) fn begin_unload(self: &Arc<Self>, inner: &mut Inner<L::Servable>, id: ServableId) {
        let Some(h) = harness(inner, &id) else { return };
        h.phase = Phase::Unloading;
        let release = h.release.take();
        self.monitor.publish_ok(&id, ManagerState::Unloading);
        self.serving.remove(&id);
        let span = tracing::info_span!("unload", model = %id.name, version = id.version);
        tokio::spawn(Arc::clone(self).run_unload(id, release).instrument(span));
    }

    async fn run_unload(
        self: Arc<Self>,
        id: ServableId,
        release: Option<ReleaseReceiver<L::Servable>>,
    ) {
        // Resolves when the last in-flight request drops its handle.
        let servable = match release {
            Some(release) => release.await.ok(),
            None => None,
        };
        if let Some(servable) = servable {
            let _slot = self.unload_slots.acquire().await;
            let (loader, unload_id) = (Arc::clone(&self.loader), id.clone());
            if off_thread(self.options.load_thread_niceness, move || {
                loader.unload(&unload_id, servable);
                Ok(())
            })
            .await
            .is_err()
            {
                tracing::error!("unloading {id} panicked");
            }
        }
        {
            let mut inner = self.lock();
            let mut release_bytes = 0;
            if let Some(h) = harness(&mut inner, &id) {
                h.phase = Phase::Disabled;
                release_bytes = std::mem::take(&mut h.reserved_bytes);
            }
            inner.reserved_bytes -= release_bytes;
            self.monitor.publish_ok(&id, ManagerState::End);
        }
        tracing::info!("version unloaded");
        self.tick();
    }
}

/// Runs blocking loader work on a load thread (see `load_threads`),
/// `niceness` below the serving threads; a panic becomes an INTERNAL error.
async fn off_thread<R: Send + 'static>(
    niceness: i32,
    work: impl FnOnce() -> Result<R, ServableError> + Send + 'static,
) -> Result<R, ServableError> {
    let (done, result) = tokio::sync::oneshot::channel();
    let job: super::load_threads::Job = Box::new(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        Box::new(move || {
            let _ = done.send(outcome);
        })
    });
    if let Err(e) = super::load_threads::submit(niceness, job) {
        return Err(ServableError::new(
            Code::Unavailable,
            format!("cannot start a load thread: {e}"),
        ));
    }
    match result.await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(ServableError::new(Code::Internal, format!("loader panicked: {reason}")))
        }
        Err(_) => Err(ServableError::new(Code::Internal, "load thread ended without a result")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loader_work_runs_on_a_nicer_thread_of_its_own() {
        let serving_nice = rustix::process::getpriority_process(None).expect("priority");
        let (name, nice) = off_thread(5, move || {
            let name = std::thread::current().name().map(str::to_owned);
            Ok((name, rustix::process::getpriority_process(None).expect("priority")))
        })
        .await
        .expect("runs");
        assert_eq!(name.as_deref(), Some("versa-load"));
        assert_eq!(nice, (serving_nice + 5).min(19));
        assert_eq!(
            rustix::process::getpriority_process(None).expect("priority"),
            serving_nice,
            "the caller's priority is unchanged"
        );
    }

    #[tokio::test]
    async fn one_load_after_another_runs_on_the_same_thread() {
        let id = || Ok(std::thread::current().id());
        // Niceness 3 is used by no other test, so this pool is this test's own.
        let first = off_thread(3, id).await.expect("runs");
        let second = off_thread(3, id).await.expect("runs");
        assert_eq!(first, second);
        assert_ne!(first, std::thread::current().id());
    }

    #[tokio::test]
    async fn a_panicking_loader_is_an_internal_error() {
        let err = off_thread(0, || -> Result<(), ServableError> { panic!("bad model") })
            .await
            .expect_err("fails");
        assert_eq!(err.code, Code::Internal);
        assert!(err.message.contains("bad model"), "{}", err.message);
    }
}
