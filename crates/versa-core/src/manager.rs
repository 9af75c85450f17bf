//! The aspired-versions manager: takes the aspired versions of each model from
//! a source, asks the model's transition policy what to do next, and loads and
//! unloads versions through the [`Loader`], publishing every state change to
//! the [`ServableStateMonitor`] and every AVAILABLE version to the
//! [`ServingMap`].

use crate::discovery::AspiredVersion;
use crate::labels::LabelRules;
use crate::policy::{Action, TransitionPolicy, VersionPhase, VersionView};
use crate::serving_map::{ReleaseReceiver, ServingMap};
use crate::source::AspiredVersionsSink;
use crate::{Loader, ManagerState, ServableError, ServableId, ServableStateMonitor, WaitTimeout};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

/// How the manager runs loads and unloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerOptions {
    /// Loads running at once. 0 means one at a time (upstream runs them inline
    /// in its manager thread; here other decisions carry on meanwhile).
    pub num_load_threads: usize,
    /// Unloads running at once; 0 means one at a time.
    pub num_unload_threads: usize,
    /// Retries after a failed load; 0 means a single attempt.
    pub max_num_load_retries: u32,
    /// Wait between load attempts.
    pub load_retry_interval: Duration,
    /// Backstop period of the decision loop (it also runs on every event).
    pub manage_state_interval: Duration,
    /// Refuse loads whose estimated size would exceed this many bytes in total
    /// (RESOURCE_EXHAUSTED). `None` is unlimited.
    pub total_model_memory_limit_bytes: Option<u64>,
    /// Label rules of the serving map.
    pub label_rules: LabelRules,
    /// Loads and unloads run on threads of their own with this much extra
    /// niceness (Linux: per thread), so a large model being prepared does
    /// not take cores away from requests being served. 0: same priority.
    pub load_thread_niceness: i32,
}

impl Default for ManagerOptions {
    /// TensorFlow Serving's defaults.
    fn default() -> Self {
        Self {
            num_load_threads: 0,
            num_unload_threads: 0,
            max_num_load_retries: 5,
            load_retry_interval: Duration::from_secs(60),
            manage_state_interval: Duration::from_millis(100),
            total_model_memory_limit_bytes: None,
            label_rules: LabelRules::default(),
            load_thread_niceness: 0,
        }
    }
}

/// Where a managed version is in the manager's own bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Aspired, nothing done (public START).
    New,
    /// Load decided, waiting for a load slot (public START).
    LoadQueued,
    /// Loader running, retries included (public LOADING).
    Loading,
    /// In the serving map (public AVAILABLE).
    Ready,
    /// Out of the serving map, waiting for requests to finish and for the
    /// loader's unload (public UNLOADING).
    Unloading,
    /// Unloaded or cancelled (public END, health OK or CANCELLED).
    Disabled,
    /// Failed to load (public END with the error).
    Error,
}

impl Phase {
    fn for_policy(self) -> VersionPhase {
        match self {
            Phase::New => VersionPhase::New,
            Phase::LoadQueued | Phase::Loading => VersionPhase::Loading,
            Phase::Ready => VersionPhase::Ready,
            Phase::Unloading => VersionPhase::Unloading,
            Phase::Disabled => VersionPhase::Disabled,
            Phase::Error => VersionPhase::Error,
        }
    }
}

/// One managed version.
struct Harness<T> {
    path: PathBuf,
    phase: Phase,
    aspired: bool,
    /// Set to `true` once the version stops being aspired: cancels load retries.
    cancel: watch::Sender<bool>,
    reserved_bytes: u64,
    /// Yields the servable back once it left the map and every handle is gone.
    release: Option<ReleaseReceiver<T>>,
}

/// A managed version as reported by [`AspiredVersionsManager::managed_versions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedVersion {
    pub version: i64,
    pub aspired: bool,
    pub state: ManagerState,
}

struct Inner<T> {
    models: BTreeMap<String, BTreeMap<i64, Harness<T>>>,
    /// Latest aspired list per model not yet applied; a newer list replaces it.
    pending: BTreeMap<String, Vec<AspiredVersion>>,
    policies: HashMap<String, TransitionPolicy>,
    load_queue: VecDeque<ServableId>,
    active_loads: usize,
    load_limit: usize,
    reserved_bytes: u64,
}

struct Shared<L: Loader> {
    loader: Arc<L>,
    options: ManagerOptions,
    monitor: ServableStateMonitor,
    serving: Arc<ServingMap<L::Servable>>,
    inner: Mutex<Inner<L::Servable>>,
    wake: Arc<Notify>,
    unload_slots: Semaphore,
    /// Bumped after every round of decisions.
    ticks: watch::Sender<u64>,
}

/// Manages the versions of every model. Cheap to clone; clones share the state.
/// Must be created inside a Tokio runtime, which runs its decision loop.
pub struct AspiredVersionsManager<L: Loader> {
    shared: Arc<Shared<L>>,
}

impl<L: Loader> Clone for AspiredVersionsManager<L> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<L: Loader> fmt::Debug for AspiredVersionsManager<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AspiredVersionsManager")
            .field("options", &self.shared.options)
            .field("managed", &self.managed_versions())
            .finish()
    }
}

impl<L: Loader> AspiredVersionsSink for AspiredVersionsManager<L> {
    /// Replaces the aspired versions of a model (an empty list unloads it).
    fn set_aspired_versions(&self, model: &str, versions: Vec<AspiredVersion>) {
        self.shared.lock().pending.insert(model.to_owned(), versions);
        self.shared.wake.notify_one();
    }
}

impl<L: Loader> AspiredVersionsManager<L> {
    pub fn new(loader: L, options: ManagerOptions, monitor: ServableStateMonitor) -> Self {
        let shared = Arc::new(Shared {
            loader: Arc::new(loader),
            serving: Arc::new(ServingMap::new(options.label_rules)),
            monitor,
            inner: Mutex::new(Inner {
                models: BTreeMap::new(),
                pending: BTreeMap::new(),
                policies: HashMap::new(),
                load_queue: VecDeque::new(),
                active_loads: 0,
                load_limit: options.num_load_threads.max(1),
                reserved_bytes: 0,
            }),
            wake: Arc::new(Notify::new()),
            unload_slots: Semaphore::new(
                options.num_unload_threads.clamp(1, Semaphore::MAX_PERMITS),
            ),
            ticks: watch::channel(0).0,
            options,
        });
        tokio::spawn(decision_loop(
            Arc::downgrade(&shared),
            Arc::clone(&shared.wake),
            shared.options.manage_state_interval,
        ));
        Self { shared }
    }

    /// Where requests find AVAILABLE versions.
    pub fn serving_map(&self) -> &Arc<ServingMap<L::Servable>> {
        &self.shared.serving
    }

    /// The record of every state change.
    pub fn monitor(&self) -> &ServableStateMonitor {
        &self.shared.monitor
    }

    /// The loader versions are loaded with.
    pub fn loader(&self) -> &Arc<L> {
        &self.shared.loader
    }

    /// Chooses how a model moves between versions (default: availability-preserving).
    pub fn set_transition_policy(&self, model: &str, policy: TransitionPolicy) {
        self.shared.lock().policies.insert(model.to_owned(), policy);
        self.shared.wake.notify_one();
    }

    /// Changes how many loads may run at once (e.g. more during start-up).
    pub fn set_load_threads(&self, threads: usize) {
        self.shared.lock().load_limit = threads.max(1);
        self.shared.tick();
    }

    /// Every version the manager currently manages, per model.
    pub fn managed_versions(&self) -> BTreeMap<String, Vec<ManagedVersion>> {
        let inner = self.shared.lock();
        inner
            .models
            .iter()
            .map(|(model, versions)| {
                let list = versions
                    .iter()
                    .map(|(&version, h)| ManagedVersion {
                        version,
                        aspired: h.aspired,
                        state: match h.phase {
                            Phase::New | Phase::LoadQueued => ManagerState::Start,
                            Phase::Loading => ManagerState::Loading,
                            Phase::Ready => ManagerState::Available,
                            Phase::Unloading => ManagerState::Unloading,
                            Phase::Disabled | Phase::Error => ManagerState::End,
                        },
                    })
                    .collect();
                (model.clone(), list)
            })
            .collect()
    }

    /// Waits until `check` holds for the managed versions, re-checking after
    /// every round of decisions, or until the deadline.
    pub async fn wait_for_managed(
        &self,
        deadline: Instant,
        mut check: impl FnMut(&BTreeMap<String, Vec<ManagedVersion>>) -> bool,
    ) -> Result<(), WaitTimeout> {
        let mut ticks = self.shared.ticks.subscribe();
        loop {
            ticks.borrow_and_update();
            if check(&self.managed_versions()) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, ticks.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(WaitTimeout),
            }
        }
    }

    /// Un-aspires every model and waits (bounded) until every version has ended.
    pub async fn shutdown(&self, deadline: Instant) -> Result<(), WaitTimeout> {
        let ids: Vec<ServableId> = {
            let mut inner = self.shared.lock();
            let models: Vec<String> = inner.models.keys().cloned().collect();
            for model in &models {
                inner.pending.insert(model.clone(), Vec::new());
            }
            inner
                .models
                .iter()
                .flat_map(|(m, vs)| vs.keys().map(move |v| ServableId::new(m.clone(), *v)))
                .collect()
        };
        self.shared.wake.notify_one();
        self.shared
            .monitor
            .wait_until(deadline, |all| {
                ids.iter()
                    .all(|id| {
                        all.get(&id.name)
                            .and_then(|v| v.get(&id.version))
                            .is_some_and(|e| e.state.state == ManagerState::End)
                    })
                    .then_some(())
            })
            .await
    }
}

/// Runs decisions on every wake-up and, as a backstop, every `interval`.
/// Ends when the manager is dropped.
async fn decision_loop<L: Loader>(shared: Weak<Shared<L>>, wake: Arc<Notify>, interval: Duration) {
    loop {
        match shared.upgrade() {
            Some(shared) => shared.tick(),
            None => return,
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
    }
}

impl<L: Loader> Shared<L> {
    fn lock(&self) -> MutexGuard<'_, Inner<L::Servable>> {
        // Never held across an await; a panic inside leaves at most one
        // harness mid-update, which the next tick reconciles.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One round of decisions: forget finished un-aspired versions, apply new
    /// aspired lists, run every model's policy until nothing more is to be
    /// done, start queued loads.
    fn tick(self: &Arc<Self>) {
        let mut inner = self.lock();
        self.flush(&mut inner);
        self.apply_pending(&mut inner);
        loop {
            let mut actions: Vec<(Action, String)> = inner
                .models
                .iter()
                .filter_map(|(model, versions)| {
                    let views: Vec<VersionView> = versions
                        .iter()
                        .map(|(&version, h)| VersionView {
                            version,
                            aspired: h.aspired,
                            phase: h.phase.for_policy(),
                        })
                        .collect();
                    let policy = inner.policies.get(model).copied().unwrap_or_default();
                    policy.next_action(&views).map(|action| (action, model.clone()))
                })
                .collect();
            if actions.is_empty() {
                break;
            }
            // Unloads before loads, as upstream.
            actions.sort();
            for (action, model) in actions {
                match action {
                    Action::Unload(version) => {
                        self.begin_unload(&mut inner, ServableId::new(model, version))
                    }
                    Action::Load(version) => {
                        let id = ServableId::new(model, version);
                        if let Some(h) = harness(&mut inner, &id) {
                            h.phase = Phase::LoadQueued;
                            inner.load_queue.push_back(id);
                        }
                    }
                }
            }
        }
        self.start_queued_loads(&mut inner);
        drop(inner);
        self.ticks.send_modify(|t| *t += 1);
    }

    /// Stops managing versions that are no longer aspired and have nothing
    /// more to do (never loaded, unloaded, or failed).
    fn flush(&self, inner: &mut Inner<L::Servable>) {
        for (model, versions) in &mut inner.models {
            versions.retain(|&version, h| {
                let done =
                    !h.aspired && matches!(h.phase, Phase::New | Phase::Disabled | Phase::Error);
                if done && h.phase == Phase::New {
                    // Never loaded: close its record so it does not stay START forever.
                    self.monitor
                        .publish_ok(&ServableId::new(model.clone(), version), ManagerState::End);
                }
                !done
            });
        }
        inner.models.retain(|_, versions| !versions.is_empty());
    }

    /// Applies pending aspired lists. A list that would re-aspire a version
    /// still on its way out waits until that version is gone (as upstream).
    fn apply_pending(&self, inner: &mut Inner<L::Servable>) {
        let pending = std::mem::take(&mut inner.pending);
        for (model, aspired) in pending {
            let managed = inner.models.entry(model.clone()).or_default();
            let blocked =
                aspired.iter().any(|a| managed.get(&a.version).is_some_and(|h| !h.aspired));
            if blocked {
                inner.pending.insert(model, aspired);
                continue;
            }
            let wanted: BTreeMap<i64, &AspiredVersion> =
                aspired.iter().map(|a| (a.version, a)).collect();
            let mut cancelled = Vec::new();
            for (&version, h) in managed.iter_mut() {
                if h.aspired && !wanted.contains_key(&version) {
                    h.aspired = false;
                    h.cancel.send_replace(true);
                    if h.phase == Phase::LoadQueued {
                        h.phase = Phase::Disabled;
                        cancelled.push(ServableId::new(model.clone(), version));
                    }
                }
            }
            for (&version, a) in &wanted {
                if let std::collections::btree_map::Entry::Vacant(slot) = managed.entry(version) {
                    slot.insert(Harness {
                        path: a.path.clone(),
                        phase: Phase::New,
                        aspired: true,
                        cancel: watch::channel(false).0,
                        reserved_bytes: 0,
                        release: None,
                    });
                    self.monitor
                        .publish_ok(&ServableId::new(model.clone(), version), ManagerState::Start);
                }
            }
            for id in cancelled {
                inner.load_queue.retain(|queued| queued != &id);
                self.monitor.publish_error(&id, ServableError::load_cancelled());
            }
        }
        inner.models.retain(|_, versions| !versions.is_empty());
    }
}

fn harness<'a, T>(inner: &'a mut Inner<T>, id: &ServableId) -> Option<&'a mut Harness<T>> {
    inner.models.get_mut(&id.name)?.get_mut(&id.version)
}

mod load_threads;
pub use load_threads::run_in_background;
mod transitions;

#[cfg(test)]
mod tests;
