//! Version swaps under concurrent request load.

use super::*;

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
        let (map, stop, served, missing) =
            (Arc::clone(manager.serving_map()), stop.clone(), served.clone(), missing.clone());
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
    (served.load(Ordering::Relaxed), missing.load(Ordering::Relaxed), manager)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn availability_preserving_swaps_never_leave_the_model_missing() {
    let (served, missing, manager) =
        swap_under_load(TransitionPolicy::AvailabilityPreserving, 12).await;
    assert!(served > 0);
    assert_eq!(missing, 0, "{missing} of {} requests found no version", served + missing);
    assert!(manager.loader().peak_copies() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resource_preserving_swaps_never_hold_two_copies() {
    let (served, _missing, manager) =
        swap_under_load(TransitionPolicy::ResourcePreserving, 12).await;
    assert!(served > 0);
    assert_eq!(manager.loader().peak_copies(), 1);
}
