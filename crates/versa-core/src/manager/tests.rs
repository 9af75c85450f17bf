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
    AspiredVersionsManager::new(
        TestDoubleLoader::new(),
        options,
        ServableStateMonitor::new(),
    )
}

fn fast_options() -> ManagerOptions {
    ManagerOptions {
        load_retry_interval: Duration::from_millis(1),
        ..ManagerOptions::default()
    }
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
    assert_eq!(
        event.state.state, state,
        "{id} ended in {:?} instead",
        event.state.health
    );
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
    manager
        .serving_map()
        .resolve(model, &VersionChoice::Latest)
        .ok()
        .map(|h| h.id().version)
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
    assert_eq!(
        seen,
        vec![
            (1, Start),
            (1, Loading),
            (1, Available),
            (1, Unloading),
            (1, End)
        ]
    );
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
        manager
            .monitor()
            .version_state(&id("m", 1))
            .expect("known")
            .state
            .state,
        ManagerState::Available
    );
    gate.open();

    let seen = events_until(&mut events, &id("m", 1), ManagerState::End).await;
    use ManagerState::*;
    let v2_available = seen
        .iter()
        .position(|e| *e == (2, Available))
        .expect("v2 available");
    let v1_unloading = seen
        .iter()
        .position(|e| *e == (1, Unloading))
        .expect("v1 unloading");
    assert!(
        v2_available < v1_unloading,
        "new version must serve before the old leaves: {seen:?}"
    );
    assert_eq!(latest(&manager, "m"), Some(2));
    assert_eq!(
        manager.loader().peak_copies(),
        2,
        "both copies were in memory during the swap"
    );
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
    let v2_loading = seen
        .iter()
        .position(|e| *e == (2, Loading))
        .expect("v2 loading");
    assert!(
        v1_end < v2_loading,
        "old must be gone before the new loads: {seen:?}"
    );
    assert_eq!(manager.loader().peak_copies(), 1);
}

#[tokio::test]
async fn a_failed_new_version_leaves_the_old_one_serving() {
    let manager = manager_with(ManagerOptions {
        max_num_load_retries: 2,
        ..fast_options()
    });
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Available).await;
    manager.loader().fail_always(&id("m", 2));
    aspire(&manager, "m", &[2]);
    let end = manager
        .monitor()
        .wait_for_state(&id("m", 2), ManagerState::End, deadline())
        .await
        .expect("ends");
    let error = end.state.health.expect_err("ended in error");
    assert_eq!(error.code, Code::DataLoss);
    assert_eq!(
        manager.loader().attempts(&id("m", 2)),
        3,
        "first attempt + 2 retries"
    );
    assert_eq!(latest(&manager, "m"), Some(1));
    assert_eq!(
        manager
            .monitor()
            .version_state(&id("m", 1))
            .expect("known")
            .state
            .state,
        ManagerState::Available
    );
}

#[tokio::test]
async fn retries_succeed_within_the_limit() {
    let manager = manager_with(ManagerOptions {
        max_num_load_retries: 3,
        ..fast_options()
    });
    manager.loader().fail_times(&id("m", 1), 3);
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Available).await;
    assert_eq!(manager.loader().attempts(&id("m", 1)), 4);
}

#[tokio::test]
async fn zero_retries_means_a_single_attempt() {
    let manager = manager_with(ManagerOptions {
        max_num_load_retries: 0,
        ..fast_options()
    });
    manager.loader().fail_times(&id("m", 1), 1);
    aspire(&manager, "m", &[1]);
    let end = manager
        .monitor()
        .wait_for_state(&id("m", 1), ManagerState::End, deadline())
        .await
        .expect("ends");
    assert!(end.state.health.is_err());
    assert_eq!(manager.loader().attempts(&id("m", 1)), 1);
}

#[tokio::test]
async fn errored_versions_are_not_retried_until_they_disappear_and_come_back() {
    let manager = manager_with(ManagerOptions {
        max_num_load_retries: 0,
        ..fast_options()
    });
    manager.loader().fail_times(&id("m", 1), 1);
    aspire(&manager, "m", &[1]);
    manager
        .monitor()
        .wait_for_state(&id("m", 1), ManagerState::End, deadline())
        .await
        .expect("ends");
    // The source keeps saying the same thing on every poll: no new attempt.
    for _ in 0..5 {
        aspire(&manager, "m", &[1]);
        tokio::task::yield_now().await;
    }
    let settled = manager
        .monitor()
        .wait_until(Instant::now() + Duration::from_millis(300), |_| None::<()>)
        .await;
    assert!(settled.is_err());
    assert_eq!(manager.loader().attempts(&id("m", 1)), 1);
    // It disappears (one poll without it) and comes back: loaded afresh.
    aspire(&manager, "m", &[]);
    manager
        .wait_for_managed(deadline(), |managed| !managed.contains_key("m"))
        .await
        .expect("forgotten");
    let mut events = manager.monitor().subscribe();
    aspire(&manager, "m", &[1]);
    let seen = events_until(&mut events, &id("m", 1), ManagerState::Available).await;
    assert_eq!(seen[0], (1, ManagerState::Start), "managed afresh");
    assert_eq!(manager.loader().attempts(&id("m", 1)), 2);
}

#[tokio::test]
async fn un_aspiring_cancels_pending_retries() {
    // Retries are an hour apart: only cancellation can end this quickly.
    let manager = manager_with(ManagerOptions {
        max_num_load_retries: 5,
        load_retry_interval: Duration::from_secs(3600),
        ..ManagerOptions::default()
    });
    manager.loader().fail_always(&id("m", 1));
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Loading).await;
    assert!(
        manager
            .loader()
            .wait_for_attempts(&id("m", 1), 1, PATIENCE)
            .await,
        "first attempt made"
    );
    aspire(&manager, "m", &[]);
    let end = manager
        .monitor()
        .wait_for_state(&id("m", 1), ManagerState::End, deadline())
        .await
        .expect("ends");
    assert!(end.state.health.is_err());
    assert_eq!(manager.loader().attempts(&id("m", 1)), 1);
}

#[tokio::test]
async fn a_load_that_finishes_after_un_aspiring_is_discarded_as_cancelled() {
    let manager = manager_with(fast_options());
    let gate = manager.loader().gate(&id("m", 1));
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Loading).await;
    aspire(&manager, "m", &[]);
    gate.open();
    let end = manager
        .monitor()
        .wait_for_state(&id("m", 1), ManagerState::End, deadline())
        .await
        .expect("ends");
    assert_eq!(end.state.health, Err(ServableError::load_cancelled()));
    assert_eq!(latest(&manager, "m"), None, "never became routable");
    manager
        .wait_for_managed(deadline(), |_| manager.loader().live_copies() == 0)
        .await
        .expect("the discarded copy is unloaded");
}

#[tokio::test]
async fn a_queued_load_is_cancelled_without_an_attempt() {
    let manager = manager_with(ManagerOptions {
        num_load_threads: 1,
        ..fast_options()
    });
    let gate = manager.loader().gate(&id("a", 1));
    aspire(&manager, "a", &[1]);
    reach(&manager, &id("a", 1), ManagerState::Loading).await;
    aspire(&manager, "b", &[1]);
    manager
        .monitor()
        .wait_until(deadline(), |all| all.get("b").map(|_| ()))
        .await
        .expect("b managed");
    aspire(&manager, "b", &[]);
    let end = manager
        .monitor()
        .wait_for_state(&id("b", 1), ManagerState::End, deadline())
        .await
        .expect("ends");
    assert_eq!(end.state.health, Err(ServableError::load_cancelled()));
    assert_eq!(manager.loader().attempts(&id("b", 1)), 0);
    gate.open();
    reach(&manager, &id("a", 1), ManagerState::Available).await;
}

#[tokio::test]
async fn loads_respect_the_concurrency_limit() {
    let manager = manager_with(ManagerOptions {
        num_load_threads: 2,
        ..fast_options()
    });
    let models = ["a", "b", "c", "d"];
    let gates: Vec<_> = models
        .iter()
        .map(|m| manager.loader().gate(&id(m, 1)))
        .collect();
    for m in models {
        aspire(&manager, m, &[1]);
    }
    let loading = |all: &crate::monitor::AllStates| {
        all.values()
            .flat_map(|v| v.values())
            .filter(|e| e.state.state == ManagerState::Loading)
            .count()
    };
    manager
        .monitor()
        .wait_until(deadline(), |all| (loading(all) == 2).then_some(()))
        .await
        .expect("two loading");
    // Give the manager every chance to start a third; it must not.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(loading(&manager.monitor().all_states()), 2);
    for gate in &gates {
        gate.open();
    }
    for m in models {
        reach(&manager, &id(m, 1), ManagerState::Available).await;
    }
}

#[tokio::test]
async fn several_new_versions_load_one_at_a_time_highest_first() {
    let manager = manager_with(fast_options()); // num_load_threads 0: one at a time
    let mut events = manager.monitor().subscribe();
    aspire(&manager, "m", &[1, 2, 3]);
    let seen = events_until(&mut events, &id("m", 1), ManagerState::Available).await;
    let order: Vec<i64> = seen
        .iter()
        .filter(|(_, s)| *s == ManagerState::Loading)
        .map(|(v, _)| *v)
        .collect();
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
    let order: Vec<i64> = seen
        .iter()
        .filter(|(_, s)| *s == ManagerState::Unloading)
        .map(|(v, _)| *v)
        .collect();
    assert_eq!(order, vec![1, 2, 3]);
    for v in [1, 2, 3] {
        reach(&manager, &id("m", v), ManagerState::End).await;
    }
    // The monitor never forgets: every version is still listed, at END.
    let history = manager.monitor().model_states("m").expect("history kept");
    assert_eq!(history.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(
        history
            .values()
            .all(|e| e.state.state == ManagerState::End && e.state.health.is_ok())
    );
    assert_eq!(latest(&manager, "m"), None);
}

#[tokio::test]
async fn an_unload_waits_for_in_flight_requests() {
    let manager = manager_with(fast_options());
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Available).await;
    let in_flight = manager
        .serving_map()
        .resolve("m", &VersionChoice::Latest)
        .expect("resolves");

    aspire(&manager, "m", &[2]);
    reach(&manager, &id("m", 1), ManagerState::Unloading).await;
    // New requests never see an UNLOADING version...
    assert_eq!(latest(&manager, "m"), Some(2));
    let err = manager
        .serving_map()
        .resolve("m", &VersionChoice::Specific(1))
        .expect_err("gone from the map");
    assert_eq!(
        err.to_string(),
        "Servable not found for request: Specific(m, 1)"
    );
    // ...while the in-flight one completes against it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(in_flight.id, id("m", 1));
    assert_eq!(
        manager
            .monitor()
            .version_state(&id("m", 1))
            .expect("known")
            .state
            .state,
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
    let in_flight = manager
        .serving_map()
        .resolve("m", &VersionChoice::Latest)
        .expect("resolves");
    let mut events = manager.monitor().subscribe();
    aspire(&manager, "m", &[]);
    reach(&manager, &id("m", 1), ManagerState::Unloading).await;
    aspire(&manager, "m", &[1]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        manager
            .monitor()
            .version_state(&id("m", 1))
            .expect("known")
            .state
            .state,
        ManagerState::Unloading
    );
    drop(in_flight);
    reach(&manager, &id("m", 1), ManagerState::Available).await;
    let seen = events_until(&mut events, &id("m", 1), ManagerState::Available).await;
    use ManagerState::*;
    assert_eq!(
        seen,
        vec![
            (1, Unloading),
            (1, End),
            (1, Start),
            (1, Loading),
            (1, Available)
        ]
    );
}

#[tokio::test]
async fn a_newer_aspired_list_replaces_a_pending_one() {
    // Single-threaded runtime: nothing runs between the two calls.
    let manager = manager_with(fast_options());
    aspire(&manager, "m", &[1]);
    aspire(&manager, "m", &[2]);
    reach(&manager, &id("m", 2), ManagerState::Available).await;
    assert!(
        manager.monitor().version_state(&id("m", 1)).is_none(),
        "version 1 was never managed"
    );
}

#[tokio::test]
async fn loads_beyond_the_memory_limit_fail_with_resource_exhausted() {
    let manager = manager_with(ManagerOptions {
        total_model_memory_limit_bytes: Some(1000),
        ..fast_options()
    });
    manager.loader().hold_memory(&id("m", 1), 600);
    manager.loader().hold_memory(&id("m", 2), 600);
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Available).await;
    aspire(&manager, "m", &[2]);
    let end = manager
        .monitor()
        .wait_for_state(&id("m", 2), ManagerState::End, deadline())
        .await
        .expect("ends");
    let error = end.state.health.expect_err("refused");
    assert_eq!(error.code, Code::ResourceExhausted);
    assert_eq!(
        error.message,
        "Insufficient resources to load servable {name: m version: 2}"
    );
    assert_eq!(manager.loader().attempts(&id("m", 2)), 0);
    assert_eq!(latest(&manager, "m"), Some(1));

    // Under ResourcePreserving the old copy's memory is released first, so it fits.
    manager.set_transition_policy("m", TransitionPolicy::ResourcePreserving);
    manager.loader().hold_memory(&id("m", 3), 600);
    aspire(&manager, "m", &[3]);
    reach(&manager, &id("m", 3), ManagerState::Available).await;
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

/// Many request tasks resolve and hold handles while the manager swaps
/// through versions. Returns (requests served, requests that found no version).
async fn swap_under_load(
    policy: TransitionPolicy,
    swaps: i64,
) -> (u64, u64, AspiredVersionsManager<TestDoubleLoader>) {
    let manager = manager_with(fast_options());
    manager.set_transition_policy("m", policy);
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Available).await;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let missing = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (map, stop, served, missing) = (
            Arc::clone(manager.serving_map()),
            stop.clone(),
            served.clone(),
            missing.clone(),
        );
        clients.push(tokio::spawn(async move {
            // Bounded: at most 2 million requests per task, or until stopped.
            for _ in 0..2_000_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match map.resolve("m", &VersionChoice::Latest) {
                    Ok(handle) => {
                        let servable: &TestServable = &handle;
                        assert_eq!(servable.id, *handle.id());
                        tokio::task::yield_now().await; // hold the handle across a yield
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        missing.fetch_add(1, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                    }
                }
            }
        }));
    }
    for next in 2..=swaps {
        aspire(&manager, "m", &[next]);
        reach(&manager, &id("m", next), ManagerState::Available).await;
        reach(&manager, &id("m", next - 1), ManagerState::End).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client task");
    }
    (
        served.load(Ordering::Relaxed),
        missing.load(Ordering::Relaxed),
        manager,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn availability_preserving_swaps_never_leave_the_model_missing() {
    let (served, missing, manager) =
        swap_under_load(TransitionPolicy::AvailabilityPreserving, 12).await;
    assert!(served > 0);
    assert_eq!(
        missing,
        0,
        "{missing} of {} requests found no version",
        served + missing
    );
    assert!(manager.loader().peak_copies() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resource_preserving_swaps_never_hold_two_copies() {
    let (served, _missing, manager) =
        swap_under_load(TransitionPolicy::ResourcePreserving, 12).await;
    assert!(served > 0);
    assert_eq!(manager.loader().peak_copies(), 1);
}
