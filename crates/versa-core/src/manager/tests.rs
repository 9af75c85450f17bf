//! Scenario tests of the manager with the test-double loader: state order,
//! both transition policies, retries, cancellation, concurrency limits,
//! resource limits, in-flight handles and history.

use super::*;
use crate::test_double::{TestDoubleLoader, TestServable};
use crate::{ServableStateEvent, VersionChoice};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::broadcast;

const PATIENCE: Duration = Duration::from_secs(20);

fn deadline() -> Instant {
    Instant::now() + PATIENCE
}

fn id(model: &str, version: i64) -> ServableId {
    ServableId::new(model, version)
}

fn manager_with(options: ManagerOptions) -> AspiredVersionsManager<TestDoubleLoader> {
    AspiredVersionsManager::new(TestDoubleLoader::new(), options, ServableStateMonitor::new())
}

fn fast_options() -> ManagerOptions {
    ManagerOptions { load_retry_interval: Duration::from_millis(1), ..ManagerOptions::default() }
}

fn aspire(manager: &AspiredVersionsManager<TestDoubleLoader>, model: &str, versions: &[i64]) {
    let list = versions
        .iter()
        .map(|&version| AspiredVersion {
            version,
            path: PathBuf::from(format!("/models/{model}/{version}")),
        })
        .collect();
    manager.set_aspired_versions(model, list);
}

async fn reach(
    manager: &AspiredVersionsManager<TestDoubleLoader>,
    id: &ServableId,
    state: ManagerState,
) -> ServableStateEvent {
    let event = manager
        .monitor()
        .wait_for_state(id, state, deadline())
        .await
        .expect("state reached in time");
    assert_eq!(event.state.state, state, "{id} ended in {:?} instead", event.state.health);
    event
}

/// Events from a subscription until `last` is seen for `until`.
async fn events_until(
    events: &mut broadcast::Receiver<ServableStateEvent>,
    until: &ServableId,
    last: ManagerState,
) -> Vec<(i64, ManagerState)> {
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let event = events.recv().await.expect("event stream open");
            seen.push((event.state.id.version, event.state.state));
            if &event.state.id == until && event.state.state == last {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never saw {until} reach {last:?}; saw {seen:?}"));
    seen
}

fn latest(manager: &AspiredVersionsManager<TestDoubleLoader>, model: &str) -> Option<i64> {
    manager.serving_map().resolve(model, &VersionChoice::Latest).ok().map(|h| h.id().version)
}

#[tokio::test]
async fn a_version_goes_through_every_state_in_order() {
    let manager = manager_with(fast_options());
    let mut events = manager.monitor().subscribe();
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Available).await;
    aspire(&manager, "m", &[]);
    let seen = events_until(&mut events, &id("m", 1), ManagerState::End).await;
    use ManagerState::*;
    assert_eq!(seen, vec![(1, Start), (1, Loading), (1, Available), (1, Unloading), (1, End)]);
    assert_eq!(manager.loader().live_copies(), 0);
}

#[tokio::test]
async fn availability_preserving_loads_the_new_version_before_unloading_the_old() {
    let manager = manager_with(fast_options());
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Available).await;

    let gate = manager.loader().gate(&id("m", 2));
    let mut events = manager.monitor().subscribe();
    aspire(&manager, "m", &[2]);
    reach(&manager, &id("m", 2), ManagerState::Loading).await;
    // While the new version loads, the old one keeps serving.
    assert_eq!(latest(&manager, "m"), Some(1));
    assert_eq!(
        manager.monitor().version_state(&id("m", 1)).expect("known").state.state,
        ManagerState::Available
    );
    gate.open();

    let seen = events_until(&mut events, &id("m", 1), ManagerState::End).await;
    use ManagerState::*;
    let v2_available = seen.iter().position(|e| *e == (2, Available)).expect("v2 available");
    let v1_unloading = seen.iter().position(|e| *e == (1, Unloading)).expect("v1 unloading");
    assert!(v2_available < v1_unloading, "new version must serve before the old leaves: {seen:?}");
    assert_eq!(latest(&manager, "m"), Some(2));
    assert_eq!(manager.loader().peak_copies(), 2, "both copies were in memory during the swap");
}

#[tokio::test]
async fn resource_preserving_unloads_the_old_version_before_loading_the_new() {
    let manager = manager_with(fast_options());
    manager.set_transition_policy("m", TransitionPolicy::ResourcePreserving);
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Available).await;
    let mut events = manager.monitor().subscribe();
    aspire(&manager, "m", &[2]);
    let seen = events_until(&mut events, &id("m", 2), ManagerState::Available).await;
    use ManagerState::*;
    let v1_end = seen.iter().position(|e| *e == (1, End)).expect("v1 ended");
    let v2_loading = seen.iter().position(|e| *e == (2, Loading)).expect("v2 loading");
    assert!(v1_end < v2_loading, "old must be gone before the new loads: {seen:?}");
    assert_eq!(manager.loader().peak_copies(), 1);
}

#[tokio::test]
async fn several_new_versions_load_one_at_a_time_highest_first() {
    let manager = manager_with(fast_options()); // num_load_threads 0: one at a time
    let mut events = manager.monitor().subscribe();
    aspire(&manager, "m", &[1, 2, 3]);
    let seen = events_until(&mut events, &id("m", 1), ManagerState::Available).await;
    let order: Vec<i64> =
        seen.iter().filter(|(_, s)| *s == ManagerState::Loading).map(|(v, _)| *v).collect();
    assert_eq!(order, vec![3, 2, 1]);
    // One at a time: each LOADING comes after the previous AVAILABLE.
    let pos = |e| seen.iter().position(|x| *x == e).expect("seen");
    assert!(pos((3, ManagerState::Available)) < pos((2, ManagerState::Loading)));
    assert!(pos((2, ManagerState::Available)) < pos((1, ManagerState::Loading)));
}

#[tokio::test]
async fn removing_a_model_unloads_every_version_lowest_first_and_keeps_history() {
    let manager = manager_with(fast_options());
    aspire(&manager, "m", &[1, 2, 3]);
    for v in [1, 2, 3] {
        reach(&manager, &id("m", v), ManagerState::Available).await;
    }
    let mut events = manager.monitor().subscribe();
    aspire(&manager, "m", &[]);
    let seen = events_until(&mut events, &id("m", 3), ManagerState::Unloading).await;
    let order: Vec<i64> =
        seen.iter().filter(|(_, s)| *s == ManagerState::Unloading).map(|(v, _)| *v).collect();
    assert_eq!(order, vec![1, 2, 3]);
    for v in [1, 2, 3] {
        reach(&manager, &id("m", v), ManagerState::End).await;
    }
    // The monitor never forgets: every version is still listed, at END.
    let history = manager.monitor().model_states("m").expect("history kept");
    assert_eq!(history.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(history.values().all(|e| e.state.state == ManagerState::End && e.state.health.is_ok()));
    assert_eq!(latest(&manager, "m"), None);
}

#[tokio::test]
async fn an_unload_waits_for_in_flight_requests() {
    let manager = manager_with(fast_options());
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Available).await;
    let in_flight = manager.serving_map().resolve("m", &VersionChoice::Latest).expect("resolves");

    aspire(&manager, "m", &[2]);
    reach(&manager, &id("m", 1), ManagerState::Unloading).await;
    // New requests never see an UNLOADING version...
    assert_eq!(latest(&manager, "m"), Some(2));
    let err = manager
        .serving_map()
        .resolve("m", &VersionChoice::Specific(1))
        .expect_err("gone from the map");
    assert_eq!(err.to_string(), "Servable not found for request: Specific(m, 1)");
    // ...while the in-flight one completes against it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(in_flight.id, id("m", 1));
    assert_eq!(
        manager.monitor().version_state(&id("m", 1)).expect("known").state.state,
        ManagerState::Unloading
    );
    assert_eq!(manager.loader().live_copies(), 2);
    drop(in_flight);
    reach(&manager, &id("m", 1), ManagerState::End).await;
    assert_eq!(manager.loader().live_copies(), 1);
}

#[tokio::test]
async fn re_aspiring_a_version_on_its_way_out_waits_until_it_is_gone() {
    let manager = manager_with(fast_options());
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Available).await;
    let in_flight = manager.serving_map().resolve("m", &VersionChoice::Latest).expect("resolves");
    let mut events = manager.monitor().subscribe();
    aspire(&manager, "m", &[]);
    reach(&manager, &id("m", 1), ManagerState::Unloading).await;
    aspire(&manager, "m", &[1]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        manager.monitor().version_state(&id("m", 1)).expect("known").state.state,
        ManagerState::Unloading
    );
    drop(in_flight);
    reach(&manager, &id("m", 1), ManagerState::Available).await;
    let seen = events_until(&mut events, &id("m", 1), ManagerState::Available).await;
    use ManagerState::*;
    assert_eq!(seen, vec![(1, Unloading), (1, End), (1, Start), (1, Loading), (1, Available)]);
}

#[tokio::test]
async fn a_newer_aspired_list_replaces_a_pending_one() {
    // Single-threaded runtime: nothing runs between the two calls.
    let manager = manager_with(fast_options());
    aspire(&manager, "m", &[1]);
    aspire(&manager, "m", &[2]);
    reach(&manager, &id("m", 2), ManagerState::Available).await;
    assert!(manager.monitor().version_state(&id("m", 1)).is_none(), "version 1 was never managed");
}

#[tokio::test]
async fn shutdown_unloads_everything() {
    let manager = manager_with(fast_options());
    aspire(&manager, "a", &[1, 2]);
    aspire(&manager, "b", &[7]);
    for i in [id("a", 1), id("a", 2), id("b", 7)] {
        reach(&manager, &i, ManagerState::Available).await;
    }
    manager.shutdown(deadline()).await.expect("all unloaded");
    assert_eq!(manager.loader().live_copies(), 0);
    assert!(manager.serving_map().available().is_empty());
}

mod loads;
mod swaps;
