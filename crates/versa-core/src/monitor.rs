//! The servable state monitor: the last published state of every (model,
//! version) ever managed, kept for good (END entries included, as upstream),
//! with a subscription to every event and waits that always take a deadline.

use crate::{ManagerState, ServableError, ServableId, ServableState, ServableStateEvent};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// What the monitor knows of one version: its last event.
pub type VersionStates = BTreeMap<i64, ServableStateEvent>;

/// Every model's versions and their last events.
pub type AllStates = BTreeMap<String, VersionStates>;

/// A wait on the monitor ran past its deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out waiting for servable states")]
pub struct WaitTimeout;

/// Records servable state events. Cheap to clone; clones share the record.
#[derive(Debug, Clone)]
pub struct ServableStateMonitor {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    states: Mutex<AllStates>,
    events: broadcast::Sender<ServableStateEvent>,
    /// Bumped on every event; waits watch it.
    generation: watch::Sender<u64>,
}

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BUFFER: usize = 4096;

impl Default for ServableStateMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl ServableStateMonitor {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (generation, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared { states: Mutex::new(AllStates::new()), events, generation }),
        }
    }

    fn states(&self) -> MutexGuard<'_, AllStates> {
        // A panic while holding this lock cannot leave the map half-updated
        // (each update is one insert), so a poisoned lock is still usable.
        self.shared.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a state and tells subscribers and waiters.
    pub fn publish(&self, state: ServableState) {
        let event = ServableStateEvent { state, at: SystemTime::now() };
        let mut states = self.states();
        tracing::debug!(
            model = %event.state.id.name,
            version = event.state.id.version,
            state = event.state.state.name(),
            "servable state"
        );
        states
            .entry(event.state.id.name.clone())
            .or_default()
            .insert(event.state.id.version, event.clone());
        // Sent while the lock is held so subscribers see events in publication order.
        let _ = self.shared.events.send(event);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Convenience: publish a state with OK health.
    pub fn publish_ok(&self, id: &ServableId, state: ManagerState) {
        self.publish(ServableState { id: id.clone(), state, health: Ok(()) });
    }

    /// Convenience: publish END with an error.
    pub fn publish_error(&self, id: &ServableId, error: ServableError) {
        self.publish(ServableState {
            id: id.clone(),
            state: ManagerState::End,
            health: Err(error),
        });
    }

    /// The last event of one version.
    pub fn version_state(&self, id: &ServableId) -> Option<ServableStateEvent> {
        self.states().get(&id.name)?.get(&id.version).cloned()
    }

    /// The last event of every version of a model (`None` if never seen).
    pub fn model_states(&self, model: &str) -> Option<VersionStates> {
        self.states().get(model).cloned()
    }

    /// Everything the monitor knows.
    pub fn all_states(&self) -> AllStates {
        self.states().clone()
    }

    /// Versions of a model whose last state is AVAILABLE.
    pub fn available_versions(&self, model: &str) -> Vec<i64> {
        self.states()
            .get(model)
            .map(|versions| {
                versions
                    .iter()
                    .filter(|(_, e)| e.state.state == ManagerState::Available)
                    .map(|(v, _)| *v)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every event from now on, in publication order. A subscriber that falls
    /// more than a few thousand events behind gets `Lagged` and continues.
    pub fn subscribe(&self) -> broadcast::Receiver<ServableStateEvent> {
        self.shared.events.subscribe()
    }

    /// Waits until `check` returns `Some` for the current states, or the
    /// deadline passes. `check` runs once now and again after every event.
    pub async fn wait_until<R>(
        &self,
        deadline: Instant,
        mut check: impl FnMut(&AllStates) -> Option<R>,
    ) -> Result<R, WaitTimeout> {
        let mut changes = self.shared.generation.subscribe();
        loop {
            // Mark the current generation seen *before* checking, so an event
            // published after the check wakes us.
            changes.borrow_and_update();
            if let Some(result) = check(&self.states()) {
                return Ok(result);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives as long as `self`, so this cannot close.
                Ok(Err(_)) | Err(_) => return Err(WaitTimeout),
            }
        }
    }

    /// Waits until one version's last state is `state` (or END, which no
    /// version leaves); returns the event that ended the wait.
    pub async fn wait_for_state(
        &self,
        id: &ServableId,
        state: ManagerState,
        deadline: Instant,
    ) -> Result<ServableStateEvent, WaitTimeout> {
        self.wait_until(deadline, |all| {
            let event = all.get(&id.name)?.get(&id.version)?;
            (event.state.state == state || event.state.state == ManagerState::End)
                .then(|| event.clone())
        })
        .await
    }

    /// Waits until each model has settled: some version AVAILABLE, or every
    /// tracked version at END. Returns, per model, the AVAILABLE versions
    /// (empty when the model settled on END only). This is what a config
    /// reload waits for — here always bounded by `deadline`.
    ///
    /// Only END events published at or after `since` count, so versions that
    /// ended earlier (say, under a previous config) do not settle a model that
    /// was just added again.
    pub async fn wait_until_models_settled(
        &self,
        models: &[String],
        since: SystemTime,
        deadline: Instant,
    ) -> Result<BTreeMap<String, Vec<i64>>, WaitTimeout> {
        self.wait_until(deadline, |all| {
            let mut settled = BTreeMap::new();
            for model in models {
                let versions = all.get(model)?;
                let available: Vec<i64> = versions
                    .iter()
                    .filter(|(_, e)| e.state.state == ManagerState::Available)
                    .map(|(v, _)| *v)
                    .collect();
                let all_ended = !versions.is_empty()
                    && versions
                        .values()
                        .all(|e| e.state.state == ManagerState::End && e.at >= since);
                if available.is_empty() && !all_ended {
                    return None;
                }
                settled.insert(model.clone(), available);
            }
            Some(settled)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;
    use std::time::Duration;

    fn id(v: i64) -> ServableId {
        ServableId::new("m", v)
    }

    #[test]
    fn keeps_the_last_event_per_version_forever() {
        let monitor = ServableStateMonitor::new();
        for state in [ManagerState::Start, ManagerState::Loading, ManagerState::Available] {
            monitor.publish_ok(&id(1), state);
        }
        monitor.publish_ok(&id(2), ManagerState::Start);
        monitor.publish_error(&id(2), ServableError::new(Code::Unknown, "corrupt"));
        for state in [ManagerState::Unloading, ManagerState::End] {
            monitor.publish_ok(&id(1), state);
        }
        let states = monitor.model_states("m").expect("model known");
        assert_eq!(states.len(), 2);
        assert_eq!(states[&1].state.state, ManagerState::End);
        assert_eq!(states[&1].state.health, Ok(()));
        assert_eq!(states[&2].state.state, ManagerState::End);
        assert_eq!(states[&2].state.health.as_ref().expect_err("failed").message, "corrupt");
        assert!(monitor.model_states("other").is_none());
    }

    #[tokio::test]
    async fn subscribers_see_events_in_order() {
        let monitor = ServableStateMonitor::new();
        let mut events = monitor.subscribe();
        let order = [ManagerState::Start, ManagerState::Loading, ManagerState::Available];
        for state in order {
            monitor.publish_ok(&id(1), state);
        }
        for expected in order {
            assert_eq!(events.recv().await.expect("event").state.state, expected);
        }
    }

    #[tokio::test]
    async fn waits_end_on_the_event_or_the_deadline() {
        let monitor = ServableStateMonitor::new();
        let waiter = {
            let monitor = monitor.clone();
            tokio::spawn(async move {
                monitor
                    .wait_for_state(
                        &id(3),
                        ManagerState::Available,
                        Instant::now() + Duration::from_secs(30),
                    )
                    .await
            })
        };
        tokio::task::yield_now().await;
        monitor.publish_ok(&id(3), ManagerState::Loading);
        monitor.publish_ok(&id(3), ManagerState::Available);
        let event = waiter.await.expect("task").expect("no timeout");
        assert_eq!(event.state.state, ManagerState::Available);

        let timed_out = monitor
            .wait_for_state(
                &id(4),
                ManagerState::Available,
                Instant::now() + Duration::from_millis(20),
            )
            .await;
        assert_eq!(timed_out, Err(WaitTimeout));
    }

    #[tokio::test]
    async fn models_settle_on_available_or_all_end() {
        let monitor = ServableStateMonitor::new();
        let deadline = || Instant::now() + Duration::from_millis(50);
        let models = vec!["a".to_owned(), "b".to_owned()];
        // b ended before the wait began: that END does not settle it.
        monitor.publish_ok(&ServableId::new("b", 9), ManagerState::End);
        let since = SystemTime::now();
        monitor.publish_ok(&ServableId::new("a", 1), ManagerState::Available);
        let settled = monitor.wait_until_models_settled(&models, since, deadline()).await;
        assert_eq!(settled, Err(WaitTimeout));
        monitor.publish_ok(&ServableId::new("b", 9), ManagerState::Start);
        monitor.publish_ok(&ServableId::new("b", 9), ManagerState::End);
        monitor.publish_ok(&ServableId::new("b", 1), ManagerState::Loading);
        let settled = monitor.wait_until_models_settled(&models, since, deadline()).await;
        assert_eq!(settled, Err(WaitTimeout));
        monitor.publish_error(&ServableId::new("b", 1), ServableError::new(Code::Unknown, "x"));
        let settled =
            monitor.wait_until_models_settled(&models, since, deadline()).await.expect("settled");
        assert_eq!(settled["a"], vec![1]);
        assert!(settled["b"].is_empty());
    }
}
