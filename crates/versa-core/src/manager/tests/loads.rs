//! Loads: failures, retries, cancellation, concurrency and memory limits.

use super::*;
use crate::Code;

#[tokio::test]
async fn a_failed_new_version_leaves_the_old_one_serving() {
    let manager = manager_with(ManagerOptions { max_num_load_retries: 2, ..fast_options() });
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
    assert_eq!(manager.loader().attempts(&id("m", 2)), 3, "first attempt + 2 retries");
    assert_eq!(latest(&manager, "m"), Some(1));
    assert_eq!(
        manager.monitor().version_state(&id("m", 1)).expect("known").state.state,
        ManagerState::Available
    );
}

#[tokio::test]
async fn retries_succeed_within_the_limit() {
    let manager = manager_with(ManagerOptions { max_num_load_retries: 3, ..fast_options() });
    manager.loader().fail_times(&id("m", 1), 3);
    aspire(&manager, "m", &[1]);
    reach(&manager, &id("m", 1), ManagerState::Available).await;
    assert_eq!(manager.loader().attempts(&id("m", 1)), 4);
}

#[tokio::test]
async fn zero_retries_means_a_single_attempt() {
    let manager = manager_with(ManagerOptions { max_num_load_retries: 0, ..fast_options() });
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
    let manager = manager_with(ManagerOptions { max_num_load_retries: 0, ..fast_options() });
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
        manager.loader().wait_for_attempts(&id("m", 1), 1, PATIENCE).await,
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
    let manager = manager_with(ManagerOptions { num_load_threads: 1, ..fast_options() });
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
    let manager = manager_with(ManagerOptions { num_load_threads: 2, ..fast_options() });
    let models = ["a", "b", "c", "d"];
    let gates: Vec<_> = models.iter().map(|m| manager.loader().gate(&id(m, 1))).collect();
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
    assert_eq!(error.message, "Insufficient resources to load servable {name: m version: 2}");
    assert_eq!(manager.loader().attempts(&id("m", 2)), 0);
    assert_eq!(latest(&manager, "m"), Some(1));

    // Under ResourcePreserving the old copy's memory is released first, so it fits.
    manager.set_transition_policy("m", TransitionPolicy::ResourcePreserving);
    manager.loader().hold_memory(&id("m", 3), 600);
    aspire(&manager, "m", &[3]);
    reach(&manager, &id("m", 3), ManagerState::Available).await;
}
